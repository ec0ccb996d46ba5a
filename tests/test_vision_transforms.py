"""torchvision's transform classes in minidl.vision.transforms, checked against hand-computed
expectations (numpy slicing, Pillow's own operations, the documented formulas) and, where torch
has the same operation (interpolate, the colour formulas), against torch itself."""
import colorsys

import numpy as np
import pytest
from PIL import Image

import minidl
from minidl import Tensor
from minidl.vision import transforms as T
from minidl.vision.transforms import functional as TF

import _fake_gpu


def _rgb(h=6, w=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _pil(h=6, w=8, seed=0):
    return Image.fromarray(_rgb(h, w, seed))


def _chw(h=6, w=8, seed=0, c=3):
    return np.random.default_rng(seed).random((c, h, w), dtype=np.float32)


# ---- conversions ------------------------------------------------------------------------------
def test_to_tensor_is_chw_float32_divided_by_255_exactly():
    a = _rgb()
    t = T.ToTensor()(Image.fromarray(a))
    assert isinstance(t, Tensor) and t.dtype == np.float32 and t.shape == (3, 6, 8)
    np.testing.assert_array_equal(t.numpy(), a.transpose(2, 0, 1).astype(np.float32)
                                  / np.float32(255))
    np.testing.assert_array_equal(T.ToTensor()(a).numpy(), t.numpy())  # HWC uint8 ndarray
    gray = T.ToTensor()(Image.fromarray(a[..., 0]))  # mode L
    assert gray.shape == (1, 6, 8)
    np.testing.assert_array_equal(gray.numpy()[0], a[..., 0] / np.float32(255))
    assert T.ToTensor()(a[..., 0]).shape == (1, 6, 8)  # 2-D ndarray
    f = np.full((2, 2, 1), 3.5, np.float32)  # non-uint8 arrays are not scaled, as torchvision
    np.testing.assert_array_equal(T.ToTensor()(f).numpy(), np.full((1, 2, 2), 3.5))
    binary = Image.fromarray(np.array([[0, 1]], np.uint8) * 255).convert("1")
    np.testing.assert_array_equal(T.ToTensor()(binary).numpy(), [[[0.0, 1.0]]])
    with pytest.raises(TypeError, match="PIL Image or ndarray"):
        T.ToTensor()([1, 2, 3])


def test_pil_to_tensor_and_to_pil_image():
    a = _rgb()
    t = T.PILToTensor()(Image.fromarray(a))
    assert t.dtype == np.uint8
    np.testing.assert_array_equal(t.numpy(), a.transpose(2, 0, 1))
    back = T.ToPILImage()(t)
    assert back.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(back), a)
    # a float tensor: torch's mul(255).byte(), i.e. truncated
    torch = pytest.importorskip("torch")
    x = _chw()
    expected = torch.from_numpy(x).mul(255).byte().permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(np.asarray(T.ToPILImage()(Tensor(x))), expected)
    assert T.ToPILImage()(Tensor(x[:1])).mode == "L"
    assert T.ToPILImage()(Tensor(np.zeros((4, 2, 2), np.float32))).mode == "RGBA"
    with pytest.raises(ValueError, match="channels"):
        T.ToPILImage()(Tensor(np.zeros((5, 2, 2), np.float32)))


def test_normalize_values_exactly_and_its_errors():
    x = _chw()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = T.Normalize(mean, std)(Tensor(x))
    m, s = np.float32(mean)[:, None, None], np.float32(std)[:, None, None]
    np.testing.assert_array_equal(out.numpy(), (x - m) / s)
    assert out.dtype == np.float32
    torch = pytest.importorskip("torch")
    ref = torch.from_numpy(x.copy()).sub_(torch.tensor(mean)[:, None, None]) \
        .div_(torch.tensor(std)[:, None, None])
    np.testing.assert_array_equal(out.numpy(), ref.numpy())
    batch = T.Normalize(mean, std)(Tensor(np.stack([x, x])))  # (N, C, H, W) too
    np.testing.assert_array_equal(batch.numpy()[1], out.numpy())
    t = Tensor(x.copy())
    assert T.Normalize(mean, std, inplace=True)(t) is t
    np.testing.assert_array_equal(t.numpy(), out.numpy())
    np.testing.assert_array_equal(x, _chw())  # not inplace: the input is untouched
    with pytest.raises(TypeError, match="Tensor"):
        T.Normalize(mean, std)(_pil())
    with pytest.raises(TypeError, match="float"):
        T.Normalize(mean, std)(Tensor(np.zeros((3, 2, 2), np.uint8)))
    with pytest.raises(ValueError, match="std evaluated to zero"):
        T.Normalize(mean, (1.0, 0.0, 1.0))(Tensor(x))
    with pytest.raises(ValueError, match="2 values for an image of 3 channels"):
        T.Normalize((0.5, 0.5), (1.0, 1.0))(Tensor(x))
    assert repr(T.Normalize((0.1307,), (0.3081,))) == "Normalize(mean=(0.1307,), std=(0.3081,))"


# ---- resize ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("size,w,h,expected", [
    (15, 40, 30, (20, 15)),   # landscape: height is the shorter side
    (20, 33, 50, (20, 30)),   # portrait: int(20 * 50 / 33) = 30, truncated
    ([12, 7], 40, 30, (7, 12)),  # (h, w) exactly
    ([15], 40, 30, (20, 15)),
])
def test_resize_pil_matches_pillows_resize(size, w, h, expected):
    img = _pil(h, w)
    for mode, pil in [(T.InterpolationMode.BILINEAR, Image.BILINEAR),
                      (T.InterpolationMode.BICUBIC, Image.BICUBIC),
                      (T.InterpolationMode.NEAREST, Image.NEAREST)]:
        out = T.Resize(size, interpolation=mode)(img)
        assert out.size == expected
        np.testing.assert_array_equal(np.asarray(out), np.asarray(img.resize(expected, pil)))


def test_resize_same_size_returns_the_image_and_max_size():
    img = _pil(10, 20)
    assert T.Resize(10)(img) is img
    assert T.Resize(10, max_size=15)(img).size == (15, 7)  # the longer side capped
    with pytest.raises(ValueError, match="max_size"):
        T.Resize(10, max_size=10)(img)
    with pytest.raises(ValueError, match="max_size"):
        T.Resize((5, 5), max_size=10)(img)
    with pytest.raises(TypeError, match="size"):
        T.Resize("big")
    assert repr(T.Resize(256)) == ("Resize(size=256, interpolation=bilinear, max_size=None, "
                                   "antialias=True)")


@pytest.mark.parametrize("out_hw", [(5, 7), (13, 29), (24, 6)])
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_resize_tensor_antialiased_matches_pillow_on_float_images(out_hw, mode):
    x = _chw(12, 16, c=2)
    out = T.Resize(list(out_hw), interpolation=T.InterpolationMode(mode))(Tensor(x))
    assert out.shape == (2,) + out_hw and out.dtype == np.float32
    pil = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[mode]
    for c in range(2):
        ref = np.asarray(Image.fromarray(x[c], "F").resize(out_hw[::-1], pil))
        np.testing.assert_allclose(out.numpy()[c], ref, atol=2e-5)


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize("out_hw", [(5, 7), (20, 30), (12, 9)])
def test_resize_tensor_matches_torch_interpolate(mode, antialias, out_hw):
    torch = pytest.importorskip("torch")
    x = _chw(12, 16, c=3)
    if mode == "nearest":
        antialias = False
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(x)[None], size=out_hw, mode=mode, antialias=antialias,
        **({} if mode == "nearest" else {"align_corners": False}))[0].numpy()
    out = T.Resize(list(out_hw), interpolation=T.InterpolationMode(mode),
                   antialias=antialias)(Tensor(x))
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-5)
    # uint8 tensors: rounded and clamped back to uint8
    u = Tensor((x * 255).astype(np.uint8))
    ru = T.Resize(list(out_hw), interpolation=T.InterpolationMode(mode),
                  antialias=antialias)(u)
    assert ru.dtype == np.uint8 and ru.shape == (3,) + out_hw


# ---- crops, flips, pads -------------------------------------------------------------------------
def test_center_crop_is_slicing_and_pads_when_larger():
    a = _rgb(9, 12)
    out = np.asarray(T.CenterCrop(4)(Image.fromarray(a)))
    top, left = int(round((9 - 4) / 2)), int(round((12 - 4) / 2))
    np.testing.assert_array_equal(out, a[top:top + 4, left:left + 4])
    np.testing.assert_array_equal(T.CenterCrop((4, 6))(Tensor(a.transpose(2, 0, 1))).numpy(),
                                  a.transpose(2, 0, 1)[:, 2:6, 3:9])
    big = T.CenterCrop((11, 13))(Tensor(a.transpose(2, 0, 1)))  # padded by (0/1, 1/1) zeros
    assert big.shape == (3, 11, 13)
    expected = np.zeros((3, 11, 13), np.uint8)
    expected[:, 1:10, 0:12] = a.transpose(2, 0, 1)
    np.testing.assert_array_equal(big.numpy(), expected)
    np.testing.assert_array_equal(np.asarray(T.CenterCrop((11, 13))(Image.fromarray(a))),
                                  expected.transpose(1, 2, 0))


def _find_box(big, small):
    """Every (i, j) where ``small`` (H, W, ...) sits in ``big``."""
    h, w = small.shape[:2]
    return [(i, j) for i in range(big.shape[0] - h + 1) for j in range(big.shape[1] - w + 1)
            if np.array_equal(big[i:i + h, j:j + w], small)]


def test_random_crop_is_a_box_of_the_padded_image_and_repeats_under_manual_seed():
    a = _rgb(10, 12)
    crop = T.RandomCrop(8, padding=2)
    padded = np.pad(a, ((2, 2), (2, 2), (0, 0)))
    minidl.manual_seed(3)
    outs = [np.asarray(crop(Image.fromarray(a))) for _ in range(20)]
    assert all(o.shape == (8, 8, 3) and _find_box(padded, o) for o in outs)
    assert len({_find_box(padded, o)[0] for o in outs}) > 3  # it does move
    minidl.manual_seed(3)
    again = [np.asarray(crop(Image.fromarray(a))) for _ in range(20)]
    assert all(np.array_equal(x, y) for x, y in zip(outs, again))
    minidl.manual_seed(3)  # the tensor path draws the same boxes
    t_outs = [crop(Tensor(a.transpose(2, 0, 1))).numpy().transpose(1, 2, 0) for _ in range(20)]
    assert all(np.array_equal(x, y) for x, y in zip(outs, t_outs))
    for _ in range(50):
        i, j, h, w = T.RandomCrop.get_params(Image.fromarray(a), (7, 5))
        assert (h, w) == (7, 5) and 0 <= i <= 10 - 7 and 0 <= j <= 12 - 5


def test_random_crop_padding_modes_fill_and_pad_if_needed():
    a = _rgb(4, 5)
    for mode, np_mode in [("edge", "edge"), ("reflect", "reflect"), ("symmetric", "symmetric")]:
        out = T.RandomCrop((8, 9), padding=2, padding_mode=mode)(Image.fromarray(a))
        np.testing.assert_array_equal(np.asarray(out), np.pad(a, ((2, 2), (2, 2), (0, 0)),
                                                              mode=np_mode))
    out = T.RandomCrop((6, 7), padding=1, fill=(10, 20, 30))(Image.fromarray(a))
    got = np.asarray(out)
    np.testing.assert_array_equal(got[0, 0], [10, 20, 30])
    np.testing.assert_array_equal(got[1:5, 1:6], a)
    needed = T.RandomCrop((6, 9), pad_if_needed=True)(Tensor(a.transpose(2, 0, 1)))
    assert needed.shape == (3, 6, 9)
    assert _find_box(np.pad(a, ((2, 2), (4, 4), (0, 0))), needed.numpy().transpose(1, 2, 0))
    with pytest.raises(ValueError, match="larger than input image size"):
        T.RandomCrop(6)(Image.fromarray(a))
    assert repr(T.RandomCrop(32, padding=4)) == "RandomCrop(size=(32, 32), padding=4)"


def test_flips_are_slicing():
    a = _rgb()
    chw = a.transpose(2, 0, 1)
    np.testing.assert_array_equal(np.asarray(T.RandomHorizontalFlip(p=1)(Image.fromarray(a))),
                                  a[:, ::-1])
    np.testing.assert_array_equal(np.asarray(T.RandomVerticalFlip(p=1)(Image.fromarray(a))),
                                  a[::-1])
    np.testing.assert_array_equal(T.RandomHorizontalFlip(1.0)(Tensor(chw)).numpy(),
                                  chw[:, :, ::-1])
    np.testing.assert_array_equal(T.RandomVerticalFlip(1.0)(Tensor(chw)).numpy(), chw[:, ::-1])
    img = Image.fromarray(a)
    assert T.RandomHorizontalFlip(p=0)(img) is img
    minidl.manual_seed(0)
    flips = [T.RandomHorizontalFlip()(img) is not img for _ in range(200)]
    assert 60 < sum(flips) < 140
    assert repr(T.RandomVerticalFlip(0.3)) == "RandomVerticalFlip(p=0.3)"


def test_random_resized_crop_boxes_in_bounds_and_repeatable():
    img = _pil(30, 50)
    minidl.manual_seed(7)
    boxes = [T.RandomResizedCrop.get_params(img, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(300)]
    for i, j, h, w in boxes:
        assert 0 <= i and 0 <= j and 0 < h and 0 < w and i + h <= 30 and j + w <= 50
    assert len(set(boxes)) > 100
    minidl.manual_seed(7)
    assert boxes == [T.RandomResizedCrop.get_params(img, (0.08, 1.0), (3 / 4, 4 / 3))
                     for _ in range(300)]
    # no box of the asked area fits: the central crop of the nearest allowed ratio
    assert T.RandomResizedCrop.get_params(img, (5.0, 6.0), (1.0, 1.2)) == (0, 7, 30, 36)
    out = T.RandomResizedCrop(16)(img)
    assert out.size == (16, 16)
    minidl.manual_seed(1)
    i, j, h, w = T.RandomResizedCrop.get_params(img, (0.08, 1.0), (3 / 4, 4 / 3))
    expected = img.crop((j, i, j + w, i + h)).resize((12, 10), Image.BILINEAR)
    minidl.manual_seed(1)
    np.testing.assert_array_equal(np.asarray(T.RandomResizedCrop((10, 12))(img)),
                                  np.asarray(expected))
    t = T.RandomResizedCrop(8)(Tensor(_chw(30, 50)))
    assert t.shape == (3, 8, 8) and t.dtype == np.float32
    with pytest.warns(UserWarning, match="min, max"):
        T.RandomResizedCrop(8, scale=(1.0, 0.5))


def test_pad_int_pairs_and_quadruples():
    a = _rgb(3, 4)
    chw = a.transpose(2, 0, 1)
    cases = [(1, ((1, 1), (1, 1))), ((1, 2), ((2, 2), (1, 1))), ((1, 2, 3, 4), ((2, 4), (1, 3)))]
    for padding, widths in cases:
        np.testing.assert_array_equal(np.asarray(T.Pad(padding, fill=7)(Image.fromarray(a))),
                                      np.pad(a, widths + ((0, 0),), constant_values=7))
        np.testing.assert_array_equal(T.Pad(padding, fill=7)(Tensor(chw)).numpy(),
                                      np.pad(chw, ((0, 0),) + widths, constant_values=7))
        np.testing.assert_array_equal(
            T.Pad(padding, padding_mode="symmetric")(Tensor(chw)).numpy(),
            np.pad(chw, ((0, 0),) + widths, mode="symmetric"))
    np.testing.assert_array_equal(  # negative padding crops
        T.Pad((-1, 0, 0, -1))(Tensor(chw)).numpy(), chw[:, :2, 1:])
    gray = Image.fromarray(a[..., 0])
    np.testing.assert_array_equal(np.asarray(T.Pad(2, padding_mode="edge")(gray)),
                                  np.pad(a[..., 0], 2, mode="edge"))
    with pytest.raises(ValueError, match="padding_mode"):
        T.Pad(1, padding_mode="wrap")
    with pytest.raises(ValueError, match="padding"):
        T.Pad((1, 2, 3))
    assert repr(T.Pad(2)) == "Pad(padding=2, fill=0, padding_mode=constant)"


# ---- colour ------------------------------------------------------------------------------------------
def test_grayscale_pil_and_tensor():
    a = _rgb()
    img = Image.fromarray(a)
    np.testing.assert_array_equal(np.asarray(T.Grayscale()(img)), np.asarray(img.convert("L")))
    three = T.Grayscale(num_output_channels=3)(img)
    assert three.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(three)[..., 2], np.asarray(img.convert("L")))
    x = _chw()
    g = T.Grayscale()(Tensor(x))
    assert g.shape == (1, 6, 8)
    np.testing.assert_allclose(g.numpy()[0], 0.2989 * x[0] + 0.587 * x[1] + 0.114 * x[2],
                               rtol=1e-6)
    assert T.Grayscale(3)(Tensor(x)).shape == (3, 6, 8)
    gu = T.Grayscale()(Tensor(a.transpose(2, 0, 1)))  # integer images: truncated, as torch's .to
    torch = pytest.importorskip("torch")
    ta = torch.from_numpy(a.transpose(2, 0, 1).copy())
    np.testing.assert_array_equal(gu.numpy()[0],
                                  (0.2989 * ta[0] + 0.587 * ta[1] + 0.114 * ta[2]).to(torch.uint8))
    with pytest.raises(ValueError, match="1 or 3"):
        T.Grayscale(2)
    minidl.manual_seed(0)
    assert T.RandomGrayscale(p=1.0)(img).mode == "RGB"


def test_color_adjustments_follow_torchs_formulas():
    torch = pytest.importorskip("torch")
    x = _chw(4, 5)
    tx = torch.from_numpy(x)
    # torchvision: _blend(img1, img2, r) = (r * img1 + (1 - r) * img2).clamp(0, 1)
    gray = (0.2989 * tx[0] + 0.587 * tx[1] + 0.114 * tx[2])[None]
    expected = {
        "brightness": (1.4 * tx).clamp(0, 1),
        "contrast": (1.4 * tx + (1 - 1.4) * gray.mean()).clamp(0, 1),
        "saturation": (0.3 * tx + (1 - 0.3) * gray).clamp(0, 1),
    }
    got = {"brightness": TF.adjust_brightness(Tensor(x), 1.4),
           "contrast": TF.adjust_contrast(Tensor(x), 1.4),
           "saturation": TF.adjust_saturation(Tensor(x), 0.3)}
    for name in expected:
        np.testing.assert_allclose(got[name].numpy(), expected[name].numpy(), atol=1e-6,
                                   err_msg=name)
        assert got[name].dtype == np.float32
    # uint8: clamped to 0..255 and truncated back
    u = (x * 255).astype(np.uint8)
    tu = torch.from_numpy(u)
    for f in (0.3, 1.5, 1.7):
        np.testing.assert_array_equal(TF.adjust_brightness(Tensor(u), f).numpy(),
                                      (f * tu).clamp(0, 255).to(torch.uint8).numpy())
        gray_u = (0.2989 * tu[0] + 0.587 * tu[1] + 0.114 * tu[2]).to(torch.uint8)[None]
        np.testing.assert_array_equal(
            TF.adjust_saturation(Tensor(u), f).numpy(),
            (f * tu + (1 - f) * gray_u).clamp(0, 255).to(torch.uint8).numpy())
        np.testing.assert_array_equal(
            TF.adjust_contrast(Tensor(u), f).numpy(),
            (f * tu + (1 - f) * gray_u.float().mean()).clamp(0, 255).to(torch.uint8).numpy())
    # hue: a turn of the HSV hue (colorsys is the reference)
    h = TF.adjust_hue(Tensor(x), 0.25).numpy()
    for i, j in [(0, 0), (1, 3), (3, 4)]:
        hh, s, v = colorsys.rgb_to_hsv(*x[:, i, j].astype(np.float64))
        np.testing.assert_allclose(h[:, i, j], colorsys.hsv_to_rgb((hh + 0.25) % 1.0, s, v),
                                   atol=1e-5)
    with pytest.raises(ValueError, match="hue_factor"):
        TF.adjust_hue(Tensor(x), 0.7)
    # PIL images: Pillow's ImageEnhance, as torchvision
    from PIL import ImageEnhance

    img = _pil()
    np.testing.assert_array_equal(np.asarray(TF.adjust_contrast(img, 0.5)),
                                  np.asarray(ImageEnhance.Contrast(img).enhance(0.5)))
    assert TF.adjust_hue(img, 0.0).size == img.size


def test_color_jitter_ranges_order_and_repeatability():
    cj = T.ColorJitter(brightness=0.4, contrast=(0.5, 1.5), saturation=0, hue=0.1)
    assert cj.brightness == (0.6, 1.4) and cj.contrast == (0.5, 1.5)
    assert cj.saturation is None and cj.hue == (-0.1, 0.1)
    assert T.ColorJitter(brightness=2).brightness == (0.0, 3.0)  # clipped at zero
    minidl.manual_seed(5)
    for _ in range(50):
        order, b, c, s, h = T.ColorJitter.get_params(cj.brightness, cj.contrast, cj.saturation,
                                                     cj.hue)
        assert sorted(order) == [0, 1, 2, 3]
        assert 0.6 <= b <= 1.4 and 0.5 <= c <= 1.5 and s is None and -0.1 <= h <= 0.1
    img = _pil()
    minidl.manual_seed(9)
    first = np.asarray(cj(img))
    minidl.manual_seed(9)
    np.testing.assert_array_equal(np.asarray(cj(img)), first)
    assert T.ColorJitter(0.2, 0.2, 0.2)(Tensor(_chw())).shape == (3, 6, 8)
    with pytest.raises(ValueError, match="non negative"):
        T.ColorJitter(brightness=-0.1)
    with pytest.raises(ValueError, match="hue"):
        T.ColorJitter(hue=0.6)
    assert repr(T.ColorJitter(hue=0.1)) == ("ColorJitter(brightness=None, contrast=None, "
                                            "saturation=None, hue=(-0.1, 0.1))")


def test_random_rotation_pil_and_tensor():
    img = _pil(9, 9)
    minidl.manual_seed(2)
    angle = T.RandomRotation.get_params([-30.0, 30.0])
    assert -30 <= angle <= 30
    minidl.manual_seed(2)
    out = T.RandomRotation(30)(img)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(img.rotate(angle, Image.NEAREST)))
    x = _chw(5, 5)
    r90 = TF.rotate(Tensor(x), 90.0)  # counter-clockwise, like np.rot90
    np.testing.assert_allclose(r90.numpy(), np.rot90(x, 1, axes=(1, 2)), atol=1e-6)
    assert T.RandomRotation((10, 20), fill=1.0)(Tensor(x)).shape == (3, 5, 5)
    assert T.RandomRotation(45, expand=True)(img).size[0] > 9
    with pytest.raises(ValueError, match="positive"):
        T.RandomRotation(-5)


# ---- composition and erasing --------------------------------------------------------------------
def test_lambda_random_apply_choice_order():
    img = _pil()
    assert T.Lambda(lambda im: im.size)(img) == (8, 6)
    with pytest.raises(TypeError, match="callable"):
        T.Lambda(3)
    flip = T.RandomHorizontalFlip(p=1.0)
    np.testing.assert_array_equal(np.asarray(T.RandomApply([flip], p=1.0)(img)),
                                  np.asarray(img)[:, ::-1])
    assert T.RandomApply([flip], p=0.0)(img) is img
    picks = T.RandomChoice([T.Lambda(lambda _: 0), T.Lambda(lambda _: 1)], p=[0.0, 1.0])
    assert {picks(img) for _ in range(10)} == {1}
    minidl.manual_seed(4)
    uniform = [T.RandomChoice([T.Lambda(lambda _: 0), T.Lambda(lambda _: 1)])(img)
               for _ in range(100)]
    assert 20 < sum(uniform) < 80
    with pytest.raises(ValueError, match="Length of p"):
        T.RandomChoice([flip], p=[0.5, 0.5])
    seen = []
    T.RandomOrder([T.Lambda(lambda v: seen.append("a") or v),
                   T.Lambda(lambda v: seen.append("b") or v)])(img)
    assert sorted(seen) == ["a", "b"]


def test_random_erasing_sets_one_box():
    x = _chw(16, 16) + 1.0  # no zeros in the image
    minidl.manual_seed(0)
    out = T.RandomErasing(p=1.0)(Tensor(x)).numpy()
    zero = np.argwhere((out == 0).all(axis=0))
    assert len(zero) > 0
    (i0, j0), (i1, j1) = zero.min(axis=0), zero.max(axis=0)
    assert (out[:, i0:i1 + 1, j0:j1 + 1] == 0).all()  # one rectangle
    assert (out != 0).sum() == x.size - 3 * (i1 - i0 + 1) * (j1 - j0 + 1)
    np.testing.assert_array_equal(x, _chw(16, 16) + 1.0)  # not in place
    minidl.manual_seed(0)
    np.testing.assert_array_equal(T.RandomErasing(p=1.0)(Tensor(x)).numpy(), out)
    per_channel = T.RandomErasing(p=1.0, value=(1.5, 2.5, 3.5))(Tensor(x)).numpy()
    assert (per_channel[1] == 2.5).any() and not (per_channel[0] == 2.5).any()
    t = Tensor(x)
    assert T.RandomErasing(p=0.0)(t) is t
    noisy = T.RandomErasing(p=1.0, value="random")(Tensor(x)).numpy()
    assert (noisy < 0).any()  # normal noise goes below the image's values
    with pytest.raises(TypeError, match="Tensor"):
        T.RandomErasing(p=1.0)(_pil())
    with pytest.raises(ValueError, match="number of input channels"):
        T.RandomErasing(p=1.0, value=(1, 2))(Tensor(x))


def test_compose_repr_and_the_imagenet_pipeline_equals_preprocess():
    pipe = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                      T.Normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)])
    img = _pil(300, 400, seed=3)
    np.testing.assert_allclose(pipe(img).numpy(), T.preprocess(img), rtol=1e-6, atol=1e-6)
    assert repr(T.Compose([T.ToTensor(), T.RandomHorizontalFlip()])) == (
        "Compose(\n    ToTensor()\n    RandomHorizontalFlip(p=0.5)\n)")


def test_tensor_transforms_stay_on_the_fake_gpu(monkeypatch):
    _fake_gpu.install(monkeypatch, None)  # no kernels are needed: array-module code only
    x = _chw(10, 12)
    on_gpu = Tensor(x).to("cuda")
    assert on_gpu.device == "cuda"
    pipe = [T.Normalize((0.5, 0.5, 0.5), (0.2, 0.2, 0.2)), T.Resize(5), T.CenterCrop(4),
            T.RandomHorizontalFlip(1.0), T.Pad(1, padding_mode="reflect"),
            T.ColorJitter(0.3, 0.3, 0.3)]
    minidl.manual_seed(0)
    cpu_out = T.Compose(pipe)(Tensor(x)).numpy()
    minidl.manual_seed(0)
    gpu_out = T.Compose(pipe)(on_gpu)
    assert gpu_out.device == "cuda"
    np.testing.assert_allclose(gpu_out.numpy(), cpu_out, rtol=1e-6)


# ---- affine, blur, multi-crops, dtype, the ImageOps family ---------------------------------------
def test_affine_translation_is_a_shift_and_rotation_matches_rotate():
    a = _rgb(7, 9)
    out = np.asarray(TF.affine(Image.fromarray(a), angle=0.0, translate=[2, 1], scale=1.0,
                               shear=0.0))
    expected = np.zeros_like(a)
    expected[1:, 2:] = a[:-1, :-2]  # out[y, x] = in[y - ty, x - tx], zeros elsewhere
    np.testing.assert_array_equal(out, expected)
    chw = Tensor(a.transpose(2, 0, 1))
    shifted = TF.affine(chw, 0.0, [2, 1], 1.0, 0.0)
    assert shifted.dtype == np.uint8
    np.testing.assert_array_equal(shifted.numpy(), expected.transpose(2, 0, 1))
    sq = Image.fromarray(_rgb(8, 8))
    np.testing.assert_array_equal(np.asarray(TF.affine(sq, 90.0, [0, 0], 1.0, 0.0)),
                                  np.asarray(TF.rotate(sq, -90.0)))  # affine turns clockwise
    with pytest.raises(ValueError, match="scale"):
        TF.affine(sq, 0.0, [0, 0], 0.0, 0.0)


def test_random_affine_params_in_range_and_repeatable():
    minidl.manual_seed(11)
    draws = [T.RandomAffine.get_params([-10.0, 10.0], (0.1, 0.2), (0.8, 1.2), [-5.0, 5.0, 0, 3],
                                       [50, 40]) for _ in range(100)]
    for angle, (tx, ty), scale, (sx, sy) in draws:
        assert -10 <= angle <= 10 and abs(tx) <= 5 and abs(ty) <= 8 and 0.8 <= scale <= 1.2
        assert -5 <= sx <= 5 and 0 <= sy <= 3 and isinstance(tx, int)
    minidl.manual_seed(11)
    assert draws[0] == T.RandomAffine.get_params([-10.0, 10.0], (0.1, 0.2), (0.8, 1.2),
                                                 [-5.0, 5.0, 0, 3], [50, 40])
    ra = T.RandomAffine(15, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=5)
    assert ra.degrees == [-15.0, 15.0] and ra.shear == [-5.0, 5.0]
    assert ra(_pil(12, 10)).size == (10, 12)
    assert ra(Tensor(_chw(12, 10))).shape == (3, 12, 10)
    assert repr(T.RandomAffine(10)) == "RandomAffine(degrees=[-10.0, 10.0])"
    with pytest.raises(ValueError, match="between 0 and 1"):
        T.RandomAffine(0, translate=(1.5, 0))


def test_gaussian_blur_matches_torch_conv2d_with_reflect_padding():
    torch = pytest.importorskip("torch")
    x = _chw(9, 11)
    out = TF.gaussian_blur(Tensor(x), [5, 3], [1.5, 0.7])

    def k1(size, sigma):
        t = torch.linspace(-(size - 1) / 2, (size - 1) / 2, size, dtype=torch.float64)
        pdf = torch.exp(-0.5 * (t / sigma) ** 2)
        return pdf / pdf.sum()

    kernel = torch.outer(k1(3, 0.7), k1(5, 1.5)).float()  # (ky, kx)
    padded = torch.nn.functional.pad(torch.from_numpy(x)[None], [2, 2, 1, 1], mode="reflect")
    ref = torch.nn.functional.conv2d(padded, kernel.expand(3, 1, 3, 5), groups=3)[0]
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-6)
    u = (x * 255).astype(np.uint8)
    ou = TF.gaussian_blur(Tensor(u), 3, 1.0)
    assert ou.dtype == np.uint8
    pil = TF.gaussian_blur(Image.fromarray(u.transpose(1, 2, 0)), 3, 1.0)
    np.testing.assert_array_equal(np.asarray(pil), ou.numpy().transpose(1, 2, 0))
    minidl.manual_seed(0)
    assert T.GaussianBlur(3, sigma=(0.5, 1.0))(Tensor(x)).shape == (3, 9, 11)
    with pytest.raises(ValueError, match="odd and positive"):
        T.GaussianBlur(4)
    assert repr(T.GaussianBlur(3)) == "GaussianBlur(kernel_size=(3, 3), sigma=(0.1, 2.0))"


def test_five_and_ten_crop_are_slices():
    a = _chw(7, 9)
    tl, tr, bl, br, c = T.FiveCrop((3, 4))(Tensor(a))
    for got, want in [(tl, a[:, :3, :4]), (tr, a[:, :3, 5:]), (bl, a[:, 4:, :4]),
                      (br, a[:, 4:, 5:]), (c, a[:, 2:5, 2:6])]:
        np.testing.assert_array_equal(got.numpy(), want)
    ten = T.TenCrop(3)(Image.fromarray(_rgb(7, 9)))
    assert len(ten) == 10
    np.testing.assert_array_equal(np.asarray(ten[5]), _rgb(7, 9)[:3, ::-1][:, :3])
    with pytest.raises(ValueError, match="bigger than input size"):
        T.FiveCrop(8)(Tensor(a))


def test_convert_image_dtype():
    u = np.array([[[0, 1, 128, 255]]], np.uint8)
    f = T.ConvertImageDtype(np.float32)(Tensor(u))
    np.testing.assert_array_equal(f.numpy(), u / np.float32(255))
    back = T.ConvertImageDtype(np.uint8)(f)  # x * 255.999, truncated: a round trip
    np.testing.assert_array_equal(back.numpy(), u)
    np.testing.assert_array_equal(TF.convert_image_dtype(Tensor(u), np.int32).numpy(),
                                  u.astype(np.int32) * 2 ** 23)


def test_imageops_family_tensor_matches_pillow():
    a = _rgb(6, 7, seed=5)
    img, t = Image.fromarray(a), Tensor(a.transpose(2, 0, 1))
    from PIL import ImageEnhance, ImageOps

    cases = [(TF.invert, ImageOps.invert, 0), (lambda x: TF.posterize(x, 3),
                                               lambda x: ImageOps.posterize(x, 3), 0),
             (lambda x: TF.solarize(x, 100), lambda x: ImageOps.solarize(x, 100), 0),
             (TF.equalize, ImageOps.equalize, 0), (TF.autocontrast, ImageOps.autocontrast, 1),
             (lambda x: TF.adjust_sharpness(x, 2.0),
              lambda x: ImageEnhance.Sharpness(x).enhance(2.0), 1)]
    for ours, pillow, tol in cases:
        ref = np.asarray(pillow(img)).astype(int)
        np.testing.assert_array_equal(np.asarray(ours(img)), ref)  # PIL path: Pillow's own
        diff = np.abs(ours(t).numpy().transpose(1, 2, 0).astype(int) - ref)
        assert diff.max() <= tol, (ours, diff.max())
    x = _chw()
    np.testing.assert_allclose(TF.invert(Tensor(x)).numpy(), 1 - x)
    np.testing.assert_allclose(TF.solarize(Tensor(x), 0.5).numpy(), np.where(x >= 0.5, 1 - x, x))
    ac = TF.autocontrast(Tensor(x)).numpy()
    np.testing.assert_allclose(ac.min(axis=(1, 2)), 0, atol=1e-6)
    np.testing.assert_allclose(ac.max(axis=(1, 2)), 1, atol=1e-6)
    assert T.RandomInvert(p=0.0)(img) is img
    np.testing.assert_array_equal(np.asarray(T.RandomInvert(p=1.0)(img)), 255 - a)
    with pytest.raises(TypeError, match="uint8"):
        TF.posterize(Tensor(x), 2)
    assert repr(T.RandomSolarize(128)) == "RandomSolarize(threshold=128,p=0.5)"


def test_batched_tensor_images():
    x = np.random.default_rng(3).random((2, 3, 12, 16), dtype=np.float32)
    out = T.Resize((6, 8))(Tensor(x))
    assert out.shape == (2, 3, 6, 8)
    np.testing.assert_allclose(out.numpy()[1], T.Resize((6, 8))(Tensor(x[1])).numpy(), atol=1e-6)
    np.testing.assert_array_equal(T.CenterCrop(4)(Tensor(x)).numpy(), x[..., 4:8, 6:10])
    np.testing.assert_array_equal(T.Grayscale()(Tensor(x)).numpy()[0],
                                  T.Grayscale()(Tensor(x[0])).numpy())


def test_make_grid_on_the_fake_gpu(monkeypatch):
    from minidl.vision import utils

    _fake_gpu.install(monkeypatch, None)
    x = _chw(4, 5)
    batch = Tensor(np.stack([x, x[::-1]])).to("cuda")
    grid = utils.make_grid(batch, nrow=2, normalize=True)
    assert grid.device == "cuda"
    np.testing.assert_allclose(
        grid.numpy(), utils.make_grid(Tensor(np.stack([x, x[::-1]])), nrow=2,
                                      normalize=True).numpy())


OPS = ["Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
       "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
       "Invert"]


@pytest.mark.parametrize("op", OPS)
def test_augmentation_ops_agree_between_pil_and_uint8_tensors(op):
    from minidl.vision.transforms.transforms import _apply_op

    a = _rgb(10, 12, seed=8)
    magnitude = {"ShearX": 0.3, "ShearY": -0.2, "TranslateX": 3.0, "TranslateY": -2.0,
                 "Rotate": 20.0, "Posterize": 4, "Solarize": 128.0}.get(op, 0.5)
    pil = np.asarray(_apply_op(Image.fromarray(a), op, magnitude, T.InterpolationMode.NEAREST,
                               None)).astype(int)
    ten = _apply_op(Tensor(a.transpose(2, 0, 1)), op, magnitude, T.InterpolationMode.NEAREST,
                    [0.0, 0.0, 0.0])
    assert ten.dtype == np.uint8 and ten.shape == (3, 10, 12)
    assert np.abs(ten.numpy().transpose(1, 2, 0).astype(int) - pil).max() <= 1
    if op == "TranslateX":  # +3 pixels to the right, zeros coming in
        np.testing.assert_array_equal(pil[:, 3:], a[:, :-3])
        assert (pil[:, :3] == 0).all()
    if op == "Identity":
        np.testing.assert_array_equal(pil, a)


def test_trivial_augment_and_rand_augment():
    img = _pil(16, 16)
    minidl.manual_seed(0)
    outs = [np.asarray(T.TrivialAugmentWide()(img)) for _ in range(30)]
    assert all(o.shape == (16, 16, 3) for o in outs)
    assert sum(not np.array_equal(o, np.asarray(img)) for o in outs) > 15
    minidl.manual_seed(0)
    again = [np.asarray(T.TrivialAugmentWide()(img)) for _ in range(30)]
    assert all(np.array_equal(x, y) for x, y in zip(outs, again))
    u = Tensor(_rgb(16, 16).transpose(2, 0, 1))
    for _ in range(20):
        r = T.RandAugment(num_ops=2, magnitude=9)(u)
        assert r.dtype == np.uint8 and r.shape == (3, 16, 16)
    space = T.RandAugment()._augmentation_space(31, (16, 16))
    assert space["Posterize"][0][0] == 8 and space["Posterize"][0][-1] == 4
    assert space["Rotate"][0][-1] == 30.0 and len(space) == 14
    wide = T.TrivialAugmentWide()._augmentation_space(31)
    assert wide["Posterize"][0][-1] == 2 and wide["TranslateX"][0][-1] == 32.0
    with pytest.raises(ValueError, match="magnitude"):
        T.RandAugment(magnitude=31)


def test_normalize_is_differentiable_and_other_tensor_ops_refuse_grad():
    torch = pytest.importorskip("torch")
    x = _chw(4, 4).astype(np.float64)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.4)
    t = Tensor(x, requires_grad=True)
    out = T.Normalize(mean, std)(t)
    (out * out).sum().backward()
    tt = torch.from_numpy(x).requires_grad_()
    ref = (tt - torch.tensor(mean, dtype=torch.float64)[:, None, None]) \
        / torch.tensor(std, dtype=torch.float64)[:, None, None]
    (ref * ref).sum().backward()
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(t.grad.numpy(), tt.grad.numpy(), rtol=1e-12)
    with pytest.raises(RuntimeError, match="not differentiable.*detach"):
        T.RandomHorizontalFlip(1.0)(t)
    with minidl.no_grad():
        assert T.RandomHorizontalFlip(1.0)(t).shape == (3, 4, 4)
    assert T.RandomHorizontalFlip(1.0)(t.detach()).shape == (3, 4, 4)


def test_adjust_gamma():
    x = _chw()
    np.testing.assert_allclose(TF.adjust_gamma(Tensor(x), 2.0, gain=0.5).numpy(),
                               np.clip(0.5 * x ** 2, 0, 1), rtol=1e-6)
    a = _rgb()
    pil = np.asarray(TF.adjust_gamma(Image.fromarray(a), 0.5)).astype(int)
    np.testing.assert_array_equal(pil, (255.999 * (a / 255.0) ** 0.5).astype(int))
    ten = TF.adjust_gamma(Tensor(a.transpose(2, 0, 1)), 0.5).numpy().transpose(1, 2, 0)
    assert np.abs(ten.astype(int) - pil).max() <= 1
    with pytest.raises(ValueError, match="non-negative"):
        TF.adjust_gamma(Tensor(x), -1.0)
