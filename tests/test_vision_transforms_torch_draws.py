"""minidl.vision.transforms' random transforms draw their parameters with the torch calls
torchvision's v1 transforms make, in torchvision's order, so after the same manual_seed an
augmentation pipeline makes torchvision's choices. torchvision is not installed: each
reference below writes out torchvision's get_params/forward draws with torch calls."""
import math

import numpy as np
import pytest

import minidl
from minidl.vision import transforms as T

SEEDS = range(60)


def _image(c=3, h=20, w=24):
    return minidl.tensor(np.arange(c * h * w, dtype=np.float32).reshape(c, h, w) / (c * h * w))


def _both(seed, minidl_fn, torch_fn):
    """Each framework's result after manual_seed(seed), and a float32 draw after it (so the
    number of draws is compared too)."""
    torch = pytest.importorskip("torch")
    minidl.manual_seed(seed)
    got = minidl_fn()
    got_next = minidl.rand(1).item()
    torch.manual_seed(seed)
    want = torch_fn(torch)
    want_next = torch.rand(1).item()
    return got, want, got_next, want_next


def _check(minidl_fn, torch_fn):
    for seed in SEEDS:
        got, want, got_next, want_next = _both(seed, minidl_fn, torch_fn)
        assert got == want, seed
        assert got_next == want_next, seed


def test_random_crop_params():
    def ref(torch):  # RandomCrop.get_params on a 20x24 image, size (8, 10)
        i = torch.randint(0, 20 - 8 + 1, size=(1,)).item()
        j = torch.randint(0, 24 - 10 + 1, size=(1,)).item()
        return i, j, 8, 10

    _check(lambda: tuple(T.RandomCrop.get_params(_image(), (8, 10))), ref)


@pytest.mark.parametrize("p", [0.5, 0.1, 0.9])
def test_random_flips_and_grayscale_decisions(p):
    img = _image()
    for cls, op in ((T.RandomHorizontalFlip, minidl.vision.transforms.functional.hflip),
                    (T.RandomVerticalFlip, minidl.vision.transforms.functional.vflip),
                    (T.RandomGrayscale, None)):
        def got(cls=cls):
            out = cls(p)(img)
            return not np.array_equal(out.numpy(), img.numpy())

        _check(got, lambda torch: bool(torch.rand(1) < p))
    del op


def _resized_crop_ref(torch, height, width, scale, ratio):
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = torch.randint(0, height - h + 1, size=(1,)).item()
            j = torch.randint(0, width - w + 1, size=(1,)).item()
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@pytest.mark.parametrize("scale,ratio", [((0.08, 1.0), (3 / 4, 4 / 3)),
                                         ((0.5, 1.0), (0.2, 5.0)),
                                         ((0.9, 1.0), (2.0, 3.0))])  # (often) the fallback
def test_random_resized_crop_params(scale, ratio):
    _check(lambda: tuple(T.RandomResizedCrop.get_params(_image(), scale, ratio)),
           lambda torch: _resized_crop_ref(torch, 20, 24, scale, ratio))


def test_color_jitter_params():
    ranges = ((0.6, 1.4), (0.7, 1.3), None, (-0.1, 0.1))

    def got():
        order, *factors = T.ColorJitter.get_params(*ranges)
        return [int(i) for i in order], factors

    def ref(torch):
        order = torch.randperm(4).tolist()
        factors = [None if r is None else float(torch.empty(1).uniform_(r[0], r[1]))
                   for r in ranges]
        return order, factors

    _check(got, ref)
    jitter = T.ColorJitter(brightness=0.4, contrast=0.3, hue=0.1)
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == ranges


def test_random_rotation_and_blur_params():
    _check(lambda: T.RandomRotation.get_params([-30.0, 30.0]),
           lambda torch: float(torch.empty(1).uniform_(-30.0, 30.0).item()))
    _check(lambda: T.GaussianBlur.get_params(0.1, 2.0),
           lambda torch: torch.empty(1).uniform_(0.1, 2.0).item())


def test_random_affine_params():
    def got():
        angle, (tx, ty), scale, (sx, sy) = T.RandomAffine.get_params(
            [-10.0, 10.0], [0.1, 0.2], [0.8, 1.2], [-5.0, 5.0, -3.0, 3.0], [24, 20])
        return angle, tx, ty, scale, sx, sy

    def ref(torch):
        angle = float(torch.empty(1).uniform_(-10.0, 10.0).item())
        max_dx, max_dy = float(0.1 * 24), float(0.2 * 20)
        tx = int(round(torch.empty(1).uniform_(-max_dx, max_dx).item()))
        ty = int(round(torch.empty(1).uniform_(-max_dy, max_dy).item()))
        scale = float(torch.empty(1).uniform_(0.8, 1.2).item())
        sx = float(torch.empty(1).uniform_(-5.0, 5.0).item())
        sy = float(torch.empty(1).uniform_(-3.0, 3.0).item())
        return angle, tx, ty, scale, sx, sy

    _check(got, ref)


def _erasing_ref(torch, img_c, img_h, img_w, p, scale, ratio, value):
    if not torch.rand(1) < p:
        return None
    area = img_h * img_w
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        erase_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        h = int(round(math.sqrt(erase_area * aspect)))
        w = int(round(math.sqrt(erase_area / aspect)))
        if not (h < img_h and w < img_w):
            continue
        if value is None:
            v = torch.empty([img_c, h, w], dtype=torch.float32).normal_()
        else:
            v = torch.tensor(value)[:, None, None].expand(img_c, h, w)
        i = torch.randint(0, img_h - h + 1, size=(1,)).item()
        j = torch.randint(0, img_w - w + 1, size=(1,)).item()
        return i, j, h, w, v.numpy()
    return "missed"


@pytest.mark.parametrize("value", [0.0, "random"])
@pytest.mark.parametrize("scale", [(0.02, 0.33), (0.5, 0.95)])
def test_random_erasing_matches(value, scale):
    torch = pytest.importorskip("torch")
    img = _image(3, 20, 24)
    erasing = T.RandomErasing(p=0.7, scale=scale, ratio=(0.3, 3.3), value=value)
    for seed in SEEDS:
        minidl.manual_seed(seed)
        out = erasing(img).numpy()
        got_next = minidl.rand(1).item()
        torch.manual_seed(seed)
        ref = _erasing_ref(torch, 3, 20, 24, 0.7, scale, (0.3, 3.3),
                           None if value == "random" else [value])
        want_next = torch.rand(1).item()
        assert got_next == want_next, seed
        want = img.numpy().copy()
        if isinstance(ref, tuple):
            i, j, h, w, v = ref
            want[:, i:i + h, j:j + w] = v
        # randn float32: torch's AVX2 normal is within 2 ulps of minidl's
        np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6, err_msg=str(seed))


def test_random_apply_and_single_ops_decisions():
    img = _image()
    apply = T.RandomApply([T.RandomInvert(p=1.0)], p=0.3)

    def ref(torch):
        applied = not bool(0.3 < torch.rand(1))
        if applied:
            torch.rand(1)  # the RandomInvert inside draws too
        return applied

    _check(lambda: not np.array_equal(apply(img).numpy(), img.numpy()), ref)
    invert = T.RandomInvert(p=0.4)
    _check(lambda: not np.array_equal(invert(img).numpy(), img.numpy()),
           lambda torch: torch.rand(1).item() < 0.4)


def test_pipeline_after_seed_repeats_without_torch():
    pipeline = T.Compose([T.RandomResizedCrop(12), T.RandomHorizontalFlip(),
                          T.ColorJitter(0.3, 0.3, 0.3, 0.05), T.RandomErasing(p=0.9)])
    minidl.manual_seed(7)
    a = pipeline(_image()).numpy()
    minidl.manual_seed(7)
    b = pipeline(_image()).numpy()
    assert a.shape == (3, 12, 12) and np.array_equal(a, b)


def _augment_ref(torch, space, bin_index=None):
    """torchvision's TrivialAugmentWide/RandAugment draw of one op over ``space``."""
    names = list(space)
    name = names[int(torch.randint(len(names), (1,)).item())]
    magnitudes, signed = space[name]
    if magnitudes is None:  # torchvision: a 0-d magnitudes tensor, no draw
        magnitude = 0.0
    elif bin_index is None:
        magnitude = float(magnitudes[int(torch.randint(len(magnitudes), (1,)).item())])
    else:
        magnitude = float(magnitudes[bin_index])
    if signed and torch.randint(2, (1,)):
        magnitude *= -1.0
    return name, magnitude


def test_trivial_augment_and_rand_augment_draws():
    wide = T.TrivialAugmentWide()
    space = wide._augmentation_space(31)
    assert list(space)[:6] == ["Identity", "ShearX", "ShearY", "TranslateX", "TranslateY",
                               "Rotate"]

    def twice(draw):
        return lambda *a: (draw(*a), draw(*a))

    _check(lambda: twice(wide._draw)(space), lambda torch: twice(_augment_ref)(torch, space))
    rand = T.RandAugment(num_ops=2, magnitude=9)
    rspace = rand._augmentation_space(31, (20, 24))
    _check(lambda: twice(rand._draw)(rspace, 9),
           lambda torch: twice(_augment_ref)(torch, rspace, 9))
