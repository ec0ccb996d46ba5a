"""ResNet-50 weights from where users keep them: torchvision .pth, converted .npz, .safetensors
with torchvision's names, and the names IMAGENET1K_V1/V2 found in torch.hub's cache. Every
source must give PyTorch's logits (to 1e-4 of the largest) on the same inputs."""
from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest
from _torch_reference import randomised_torch_resnet50

import minidl
from minidl.models import resnet50
from minidl.models.convert import load_torch_checkpoint, main as convert_main
from minidl.models.weights import checkpoints_dir, torch_home

torch = pytest.importorskip("torch", reason="torch writes the reference checkpoints and logits")
safetensors_torch = pytest.importorskip("safetensors.torch", reason="the safetensors extra writes .safetensors")

X = np.random.default_rng(3).standard_normal((2, 3, 64, 80)).astype(np.float32)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(torch logits of X, folder with resnet50.pth / .npz / .safetensors of the same weights)."""
    model = randomised_torch_resnet50(seed=7)
    d = tmp_path_factory.mktemp("weights")
    state = model.state_dict()
    torch.save(state, d / "resnet50.pth")
    # timm's and Hugging Face's files: torchvision's names, contiguous tensors, no pickle
    safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, str(d / "resnet50.safetensors"))
    assert convert_main([str(d / "resnet50.pth"), str(d / "resnet50.npz")]) == 0
    with torch.no_grad():
        logits = model(torch.from_numpy(X)).numpy()
    return logits, d


def _logits(model):
    with minidl.no_grad():
        return model.eval()(minidl.tensor(X)).numpy()


def _assert_matches_torch(got, want):
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert rel <= 1e-4, f"max |diff| / max |logit| = {rel:.2e}"
    np.testing.assert_array_equal(got.argmax(1), want.argmax(1))


@pytest.mark.parametrize("fname", ["resnet50.pth", "resnet50.npz", "resnet50.safetensors"])
def test_each_file_format_gives_torchs_logits(reference, fname):
    want, d = reference
    _assert_matches_torch(_logits(resnet50(weights=d / fname)), want)


@pytest.mark.parametrize("name,fname", [("IMAGENET1K_V1", "resnet50-0676ba61.pth"),
                                        ("IMAGENET1K_V2", "resnet50-11ad3fa6.pth"),
                                        ("DEFAULT", "resnet50-11ad3fa6.pth")])
def test_torchvision_names_find_the_cached_file(reference, tmp_path, monkeypatch, capsys, name, fname):
    want, d = reference
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    folder = tmp_path / "th" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    os.symlink(d / "resnet50.pth", folder / fname)
    _assert_matches_torch(_logits(resnet50(weights=name)), want)
    assert str(folder / fname) in capsys.readouterr().err  # says which file it used


def test_default_torch_home_and_the_missing_file_message(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert torch_home() == os.path.join(str(tmp_path), ".cache", "torch")
    expected = os.path.join(str(tmp_path), ".cache", "torch", "hub", "checkpoints")
    assert checkpoints_dir() == expected
    with pytest.raises(FileNotFoundError) as info:
        resnet50(weights="IMAGENET1K_V1")
    msg = str(info.value)
    assert expected in msg and "resnet50-0676ba61.pth" in msg
    assert "torchvision.models.resnet50(weights='IMAGENET1K_V1')" in msg  # how to fetch it
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in msg
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match="elsewhere.*resnet50-11ad3fa6.pth|resnet50-11ad3fa6.pth.*elsewhere"):
        resnet50(weights="IMAGENET1K_V2")
    with pytest.raises(ValueError, match="IMAGENET1K_V3"):
        from minidl.models.weights import find_pretrained
        find_pretrained("IMAGENET1K_V3")


def test_safetensors_bfloat16_is_widened_and_bad_files_are_named(tmp_path):
    a = torch.randn(3, 4).to(torch.bfloat16)
    safetensors_torch.save_file({"w": a, "b": torch.arange(3.0)}, str(tmp_path / "bf16.safetensors"))
    state = load_torch_checkpoint(tmp_path / "bf16.safetensors")
    assert state["w"].dtype == np.float32
    np.testing.assert_array_equal(state["w"], a.float().numpy())
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(ValueError, match="bad.safetensors"):
        load_torch_checkpoint(bad)


def test_safetensors_without_the_package_says_how_to_install(reference, monkeypatch):
    _, d = reference
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(RuntimeError, match=r"pip install 'minidl\[safetensors\]'"):
        resnet50(weights=d / "resnet50.safetensors")


def test_converter_and_classifier_accept_the_new_sources(reference, tmp_path, monkeypatch, capsys):
    from minidl.vision.classifier import resolve_weights

    want, d = reference
    assert convert_main([str(d / "resnet50.safetensors"), str(tmp_path / "from_st.npz")]) == 0
    _assert_matches_torch(_logits(resnet50(weights=tmp_path / "from_st.npz")), want)
    # a name and the path of the file it finds are the same weights: same cache, same classifier
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    (tmp_path / "th" / "hub" / "checkpoints").mkdir(parents=True)
    shutil.copy(d / "resnet50.pth", tmp_path / "th" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth")
    by_name = resolve_weights("IMAGENET1K_V2")
    by_path = resolve_weights(d / "resnet50.pth")
    assert by_name[1] == by_path[1] and by_name[0].endswith("resnet50-11ad3fa6.pth")


def test_resnet50_cli_takes_a_weights_name(reference, tmp_path, monkeypatch, capsys):
    from PIL import Image

    from minidl.examples import resnet50 as cli

    _, d = reference
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    (tmp_path / "th" / "hub" / "checkpoints").mkdir(parents=True)
    os.symlink(d / "resnet50.safetensors", tmp_path / "th" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth")
    photo = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(photo)
    # the cached file's content is sniffed, not its name: a safetensors file under a .pth name loads too
    assert cli.main([str(photo), "--weights", "IMAGENET1K_V2", "--topk", "1"]) == 0
    out, err = capsys.readouterr()
    assert "resnet50-11ad3fa6.pth" in err and out.splitlines()[0] == str(photo)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    assert cli.main([str(photo), "--weights", "IMAGENET1K_V1"]) == 2
    assert "resnet50-0676ba61.pth" in capsys.readouterr().err
