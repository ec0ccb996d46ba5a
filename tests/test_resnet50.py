"""ResNet-50: torchvision's names and shapes, and PyTorch parity of a converted checkpoint.

torchvision is not a dependency, so the reference is a plain-torch ResNet-50 with torchvision's
module names (tests/_torch_reference.py, shared with the benchmarks), with random weights scaled to behave like trained ones.
"""
from __future__ import annotations

import numpy as np
import pytest

import minidl
from minidl.models import ResNet, resnet50
from minidl.models.convert import convert, main as convert_main, save_npz

from _torch_reference import randomised_torch_resnet50, torch_resnet50

TORCHVISION_RESNET50_PARAMS = 25_557_032  # torchvision.models.resnet50(): sum of p.numel()


@pytest.fixture(scope="module")
def torch_checkpoint(tmp_path_factory):
    """(torch model, path of its .pth, path of the .npz made by the converter CLI)."""
    torch = pytest.importorskip("torch", reason="torch is needed to write PyTorch checkpoints")
    model = randomised_torch_resnet50()
    d = tmp_path_factory.mktemp("resnet50")
    pth, npz = d / "resnet50_random.pth", d / "resnet50_random.npz"
    torch.save(model.state_dict(), pth)
    assert convert_main([str(pth), str(npz), "--arch", "resnet50"]) == 0
    return model, pth, npz


@pytest.fixture(scope="module")
def converted_model(torch_checkpoint):
    """minidl's ResNet-50 loaded from the converted .npz, in eval mode (tests must not train it)."""
    return resnet50(weights=torch_checkpoint[2]).eval()


@pytest.fixture(scope="module")
def default_model():
    """A default resnet50(), built once for the tests that only read it (building and
    initialising 25.6M parameters takes most of a second)."""
    return resnet50()


@pytest.fixture(scope="module")
def default_state(default_model):
    """Its state as arrays, without num_batches_tracked; tests change a copy (``dict(...)``)."""
    return {k: v.numpy() for k, v in default_model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def _inputs(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _torch_logits(model, x):
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _minidl_logits(model, x):
    model.eval()
    with minidl.no_grad():
        return model(minidl.tensor(x)).numpy()


def _assert_logits_match(got, want):
    assert got.shape == want.shape
    assert np.isfinite(got).all()
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert rel <= 1e-4, f"max |diff| / max |logit| = {rel:.2e}"
    np.testing.assert_array_equal(got.argmax(1), want.argmax(1))


# ---- names and shapes --------------------------------------------------------------------
def test_parameter_names_follow_torchvision(default_model):
    model = default_model
    state = model.state_dict()
    params = dict(model.named_parameters())
    assert sum(p.numel() for p in params.values()) == TORCHVISION_RESNET50_PARAMS
    assert state["conv1.weight"].shape == (64, 3, 7, 7)
    assert state["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert state["layer1.0.downsample.1.running_var"].shape == (256,)
    assert state["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)  # v1.5: stride on the 3x3
    assert model.layer2[0].conv2.stride == (2, 2) and model.layer2[0].conv1.stride == (1, 1)
    assert state["layer4.2.bn3.weight"].shape == (2048,)
    assert state["fc.weight"].shape == (1000, 2048) and state["fc.bias"].shape == (1000,)
    assert "layer1.1.downsample.0.weight" not in state  # only each stage's first block has one
    assert [len(getattr(model, f"layer{i}")) for i in (1, 2, 3, 4)] == [3, 4, 6, 3]
    assert all("conv" not in k or not k.endswith(".bias") for k in params)  # convs have no bias


def test_state_dict_equals_torch_layout(default_model):
    tmodel = torch_resnet50()
    want = [(k, tuple(v.shape)) for k, v in tmodel.state_dict().items()]
    got = [(k, tuple(v.shape)) for k, v in default_model.state_dict().items()]
    assert got == want  # names, shapes and order, num_batches_tracked included


def test_num_classes_sets_the_head():
    model = resnet50(num_classes=7)
    assert model.fc.weight.shape == (7, 2048)
    with pytest.raises(ValueError, match="num_classes"):
        ResNet(num_classes=0)


# ---- PyTorch parity of converted weights ---------------------------------------------------
def test_converted_checkpoint_matches_torch_at_224(torch_checkpoint, converted_model):
    tmodel = torch_checkpoint[0]
    x = _inputs((2, 3, 224, 224), seed=1)
    want = _torch_logits(tmodel, x)
    # the reference itself must be a fair test: logits of order 1-10 and a clear winner
    assert 1.0 < np.abs(want).max() < 100.0
    top2 = np.sort(want, axis=1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0]).min() > 1e-3 * np.abs(want).max()
    _assert_logits_match(_minidl_logits(converted_model, x), want)


def test_converted_checkpoint_matches_torch_on_small_non_square_inputs(torch_checkpoint,
                                                                       converted_model):
    x = _inputs((4, 3, 72, 104), seed=2)  # not multiples of 32: exercises the floor rules
    _assert_logits_match(_minidl_logits(converted_model, x), _torch_logits(torch_checkpoint[0], x))


def test_pth_loads_directly(torch_checkpoint, converted_model):
    tmodel, pth, _ = torch_checkpoint
    from_pth, from_npz = resnet50(weights=pth).state_dict(), converted_model.state_dict()
    tstate = tmodel.state_dict()
    assert list(from_pth) == list(from_npz)
    for k in from_pth:
        if k.endswith("num_batches_tracked"):
            continue  # not stored in the .npz, and irrelevant to inference
        np.testing.assert_array_equal(from_pth[k].numpy(), from_npz[k].numpy(), err_msg=k)
        np.testing.assert_array_equal(from_pth[k].numpy(), tstate[k].numpy(), err_msg=k)


def test_features_are_the_pooled_embedding(torch_checkpoint, converted_model):
    import torch

    tmodel, model = torch_checkpoint[0], converted_model
    x = _inputs((2, 3, 64, 64), seed=3)
    with minidl.no_grad():
        feats = model.features(minidl.tensor(x))
        logits = model.fc(feats).numpy()
        np.testing.assert_allclose(logits, model(minidl.tensor(x)).numpy(), rtol=1e-5, atol=1e-5)
    assert feats.shape == (2, 2048)
    trunk = torch.nn.Sequential(*list(tmodel.children())[:-1])
    with torch.no_grad():
        want = torch.flatten(trunk(torch.from_numpy(x)), 1).numpy()
    np.testing.assert_allclose(feats.numpy(), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_train_mode_forward_and_backward_match_torch(torch_checkpoint):
    """Fine-tuning path: batch statistics, running-stat updates and every gradient.

    In float64: train-mode BatchNorm over a batch of 2 small images (8 values per channel in
    layer4) amplifies float32 rounding to ~1% in the early gradients in both frameworks alike,
    which would hide a real error; in float64 they agree to ~1e-12.
    """
    import copy

    import torch

    tmodel, _, npz = torch_checkpoint
    tmodel = copy.deepcopy(tmodel).double().train()  # a private copy: train mode changes buffers
    for m in tmodel.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    model = resnet50(weights=npz).double().train()
    x = _inputs((2, 3, 40, 56), seed=4).astype(np.float64)  # layer4 sees 2x2
    target = np.array([3, 977])

    tlogits = tmodel(torch.from_numpy(x))
    torch.nn.functional.cross_entropy(tlogits, torch.from_numpy(target)).backward()
    logits = model(minidl.tensor(x, dtype="float64"))
    assert logits.dtype == np.float64
    minidl.nn.functional.cross_entropy(logits, minidl.tensor(target)).backward()

    np.testing.assert_allclose(logits.numpy(), tlogits.detach().numpy(), rtol=1e-9, atol=1e-9)
    tstate = tmodel.state_dict()
    for name in ("bn1.running_mean", "layer3.2.bn2.running_mean", "layer4.0.downsample.1.running_var"):
        np.testing.assert_allclose(model.state_dict()[name].numpy(), tstate[name].numpy(),
                                   rtol=1e-9, atol=1e-12, err_msg=name)
    tparams = dict(tmodel.named_parameters())
    for name, p in model.named_parameters():
        ref = tparams[name].grad.numpy()
        err = np.abs(p.grad.numpy() - ref).max() / np.abs(ref).max()
        assert err <= 1e-8, f"{name}: gradient off by {err:.2e} relative to its max"


# ---- loading errors ------------------------------------------------------------------------
def _minidl_state_arrays(num_classes=1000):
    return {k: v.numpy() for k, v in resnet50(num_classes=num_classes).state_dict().items()
            if not k.endswith("num_batches_tracked")}


def test_num_classes_mismatch_is_a_clear_error(tmp_path, default_state):
    path = tmp_path / "w.npz"
    save_npz(default_state, path)
    with pytest.raises(ValueError, match=r"1000 classes.*num_classes=10"):
        resnet50(weights=path, num_classes=10)


def test_weights_for_another_head_size_load(tmp_path):
    state = _minidl_state_arrays(num_classes=10)
    path = tmp_path / "w10.npz"
    save_npz(state, path)
    model = resnet50(weights=path, num_classes=10)
    np.testing.assert_array_equal(model.fc.weight.numpy(), state["fc.weight"])
    np.testing.assert_array_equal(model.layer3[4].bn2.running_var.numpy(),
                                  state["layer3.4.bn2.running_var"])


def test_convert_lists_wrong_shapes_and_missing_keys(tmp_path, default_state):
    state = dict(default_state)
    del state["layer2.0.bn1.running_mean"]
    state["layer3.1.conv2.weight"] = np.zeros((256, 256, 1, 1), np.float32)
    state["head.extra"] = np.zeros(3, np.float32)
    src, dst = tmp_path / "bad.npz", tmp_path / "out.npz"
    save_npz(state, src)
    with pytest.raises(ValueError) as info:
        convert(src, dst, arch="resnet50")
    msg = str(info.value)
    assert "layer2.0.bn1.running_mean" in msg
    assert "layer3.1.conv2.weight" in msg and "(256, 256, 1, 1)" in msg and "(256, 256, 3, 3)" in msg
    assert "head.extra" in msg
    assert not dst.exists()
    assert convert_main([str(src), str(dst)]) == 2


def test_loading_a_checkpoint_that_does_not_fit_lists_the_problems(tmp_path, default_state):
    state = dict(default_state)
    del state["layer4.0.downsample.1.weight"]
    state["layer1.0.conv1.weight"] = np.zeros((64, 64, 3, 3), np.float32)
    path = tmp_path / "bad.npz"
    save_npz(state, path)
    with pytest.raises(ValueError) as info:
        resnet50(weights=path)
    assert "layer4.0.downsample.1.weight" in str(info.value)
    assert "layer1.0.conv1.weight" in str(info.value)


def test_bad_weights_arguments(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # a machine with torchvision's file cached must not find it
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        resnet50(weights="nope.npz")
    with pytest.raises(FileNotFoundError, match="resnet50-11ad3fa6.pth"):  # DEFAULT is IMAGENET1K_V2
        resnet50(weights="DEFAULT")
    with pytest.raises(TypeError, match="weights"):
        resnet50(weights=3)


def test_weights_accepts_a_state_dict():
    source = resnet50(num_classes=5)
    model = resnet50(weights=source.state_dict(), num_classes=5)
    np.testing.assert_array_equal(model.layer1[2].conv3.weight.numpy(),
                                  source.layer1[2].conv3.weight.numpy())


def test_forward_rejects_wrong_input_shape(default_model):
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        default_model.features(minidl.tensor(np.zeros((1, 1, 32, 32), np.float32)))


# ---- python -m minidl.examples.resnet50 -------------------------------------------------------
def _write_photos(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(5)
    paths = []
    for i, size in enumerate([(300, 200), (180, 260)]):
        img = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        paths.append(tmp_path / f"photo{i}.{'jpg' if i == 0 else 'png'}")
        Image.fromarray(img).save(paths[-1])
    return paths


def test_cli_prints_the_torch_models_top_classes(torch_checkpoint, tmp_path, capsys):
    import torch

    from minidl.examples import resnet50 as cli
    from minidl.models.imagenet import imagenet_classes
    from minidl.vision.transforms import preprocess_batch

    tmodel, _, npz = torch_checkpoint
    photos = _write_photos(tmp_path)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    code = cli.main([str(p) for p in photos] + [str(tmp_path / "broken.jpg"), "--weights", str(npz),
                                                "--topk", "3", "--batch-size", "2"])
    out, err = capsys.readouterr()
    assert code == 1 and "broken.jpg" in err  # reported, skipped, and the exit status says so
    with torch.no_grad():
        probs = torch.softmax(tmodel(torch.from_numpy(preprocess_batch(photos))), 1).numpy()
    names = imagenet_classes()
    blocks = out.strip().split(str(photos[1]))
    for path, block, p in zip(photos, blocks, probs):
        lines = [ln for ln in block.splitlines() if ln.strip().startswith(("1.", "2.", "3."))]
        assert len(lines) == 3
        want = np.argsort(-p)[:3]
        for line, k in zip(lines, want):
            assert f"(class {k})" in line and names[k] in line
        shown = float(lines[0].split("%")[0].split()[-1])
        assert shown == pytest.approx(100 * p[want[0]], abs=0.01)


def test_cli_random_weights_warn_loudly(tmp_path, capsys):
    from minidl.examples import resnet50 as cli

    photo = _write_photos(tmp_path)[0]
    assert cli.main([str(photo), "--weights", "random", "--topk", "2"]) == 0
    out, err = capsys.readouterr()
    assert "RANDOM weights" in err and "MEANINGLESS" in err
    assert out.splitlines()[0] == str(photo) and out.splitlines()[1].strip().startswith("1. ")
    assert cli.main([str(photo), "--weights", str(tmp_path / "nope.npz")]) == 2
    assert "nope.npz" in capsys.readouterr().err
