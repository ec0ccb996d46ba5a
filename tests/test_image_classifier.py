"""The photo-folder classifier: its pieces on synthetic features, and the CLI end to end on a
tiny synthetic folder with a random ResNet-50 (no pretrained weights exist offline)."""
from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import minidl
from minidl import nn
from minidl.data import random_split
from minidl.examples import image_classifier as ic
from minidl.vision import classifier as classifier_module

from helpers import PHOTO_PATTERNS, make_photo_folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = make_photo_folder(tmp_path_factory.mktemp("photos"))
    (root / "red_stripes" / "notes.txt").write_text("not a photo")
    (root / "teal_checks" / ".DS_Store").write_bytes(bytes(64))
    return root


# ---- pieces -------------------------------------------------------------------------------------
def test_train_classifier_learns_and_folds_standardisation_into_the_layer():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (3, 2048)).astype(np.float32)
    y = rng.integers(0, 3, 150)
    # features on a scale of thousands with a large common offset, as a random backbone gives
    x = (1000 * (centres[y] + 0.8 * rng.normal(0, 1, (150, 2048))) + 5000).astype(np.float32)
    layer = ic.train_classifier(x[:120], y[:120], 3, epochs=15, lr=0.5, batch_size=32, log=lambda s: None)
    assert isinstance(layer, nn.Linear) and layer.weight.shape == (3, 2048)
    probs = ic.predict_proba(layer, x[120:])
    assert (probs.argmax(1) == y[120:]).mean() >= 0.95
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)


def test_train_classifier_is_reproducible():
    rng = np.random.default_rng(1)
    x, y = rng.normal(0, 1, (40, 2048)).astype(np.float32), np.arange(40) % 2
    a = ic.train_classifier(x, y, 2, epochs=3, seed=5, log=lambda s: None)
    b = ic.train_classifier(x, y, 2, epochs=3, seed=5, log=lambda s: None)
    np.testing.assert_array_equal(a.weight.numpy(), b.weight.numpy())


def test_confusion_matrix_and_its_labels():
    m = ic.confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    np.testing.assert_array_equal(m, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    text = ic.format_confusion(m, ["cat", "dog", "a_very_long_class_name"])
    lines = text.splitlines()
    assert "cat" in lines[0] and "dog" in lines[0] and "a_very_long~" in lines[0]
    assert lines[1].split() == ["cat", "1", "1", "0"]
    assert lines[3].split() == ["a_very_long~", "1", "0", "2"]


def test_contact_sheet_draws_thumbnails_and_captions(tmp_path, photos):
    files = sorted((photos / "red_stripes").glob("*.jpg"))[:3]
    items = [(str(f), [f.name, "pred: teal_checks (71%)", "true: red_stripes"]) for f in files]
    path = tmp_path / "sheet" / "m.png"
    ic.contact_sheet(items, path, thumb=64, columns=2)
    sheet = np.asarray(Image.open(path).convert("RGB")).astype(int)
    cell_w, cell_h = 64 + 12, 64 + 12 + 3 * 12
    assert sheet.shape == (2 * cell_h, 2 * cell_w, 3)
    first_thumb = sheet[6:70, 6:70]
    assert (first_thumb[..., 0] - first_thumb[..., 2]).mean() > 50  # the red photo is pasted
    caption = sheet[6 + 64:cell_h, :cell_w]
    assert ((caption[..., 0] > 150) & (caption[..., 1] < 100)).any()  # red "predicted" line
    assert (sheet[cell_h:, cell_w:] == 255).all()  # the fourth cell is empty
    ic.contact_sheet([], tmp_path / "none.png")
    assert Image.open(tmp_path / "none.png").size[0] > 0


def test_feature_cache_is_keyed_by_content(tmp_path, photos):
    cache = ic.FeatureCache(tmp_path / "c", "random-seed0")
    src = photos / "red_stripes" / "1.jpg"
    copy = tmp_path / "renamed.jpg"
    shutil.copy(src, copy)
    key = cache.key(src)
    assert cache.key(copy) == key and cache.key(photos / "red_stripes" / "2.jpg") != key
    assert cache.get(key) is None
    f = np.arange(2048, dtype=np.float32)
    cache.put(key, f)
    np.testing.assert_array_equal(cache.get(cache.key(copy)), f)
    other = ic.FeatureCache(tmp_path / "c", "sha1-0123")
    assert other.get(key) is None  # other weights, other features
    with open(cache._path(key), "wb") as fh:
        fh.write(b"garbage")
    assert cache.get(key) is None  # a damaged entry is recomputed, not trusted


# ---- the CLI ------------------------------------------------------------------------------------
def _run(capsys, argv):
    code = ic.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_train_cache_and_predict(photos, tmp_path, capsys, caplog):
    cache, out_dir = tmp_path / "cache", tmp_path / "out"
    argv = [photos, "--weights", "random", "--cache-dir", cache, "--out", out_dir,
            "--epochs", 15, "--batch-size", 6, "--no-progress"]
    with caplog.at_level(logging.WARNING, logger="minidl.datasets.image_folder"):
        code, out, err = _run(capsys, argv)
    assert code == 0, err
    assert "RANDOM weights" in err and "MEANINGLESS" in err
    skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skipped) == 2 and any("notes.txt" in s for s in skipped)
    assert any(".DS_Store" in s for s in skipped)
    assert "12 images, 0 from cache, 12 computed" in out
    assert "split: 10 training, 2 test images" in out
    assert "test accuracy:" in out and "confusion matrix" in out and "misclassified test images" in out
    assert "precision  recall  support" in out  # the per-class table
    table = out[out.index("precision  recall  support"):].splitlines()[1:3]
    assert [row.split()[0] for row in table] == ["red_stripes", "teal_checks"]
    assert len(list((cache / "features").glob("*/*.npy"))) == 12

    # outputs: an nn.Linear state_dict, its class list, the contact sheet
    state = minidl.load(out_dir / "classifier.npz")
    layer = nn.Linear(2048, 2)
    layer.load_state_dict(state)
    meta = json.loads((out_dir / "classifier.json").read_text())
    assert meta["classes"] == ["red_stripes", "teal_checks"] and meta["weights"] == "random-seed0"
    assert Image.open(out_dir / "misclassified.png").format == "PNG"

    # second run: every feature from the cache, so the network is never even built
    def no_network(*args, **kwargs):
        raise AssertionError("ResNet-50 built although every feature was cached")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(classifier_module, "build_backbone", no_network)
        code, out2, _ = _run(capsys, ["train"] + argv)
    assert code == 0
    assert "12 images, 12 from cache, 0 computed" in out2
    np.testing.assert_array_equal(minidl.load(out_dir / "classifier.npz")["weight"], state["weight"])

    # predict: the classifier fits its training photos, so it labels them correctly
    names = sorted(PHOTO_PATTERNS)
    samples = [(str(photos / n / f), k) for k, n in enumerate(names)
               for f in sorted(os.listdir(photos / n)) if f.endswith((".jpg", ".png"))]
    train_idx = random_split(list(range(len(samples))), 0.8, seed=2)[0].indices
    chosen = [samples[i] for i in train_idx]
    code, out3, err3 = _run(capsys, ["predict", *[p for p, _ in chosen], "--weights", "random",
                                     "--classifier", out_dir / "classifier.npz",
                                     "--cache-dir", cache, "--no-progress"])
    assert code == 0, err3
    lines = out3.strip().splitlines()
    assert len(lines) == len(chosen)
    for line, (path, label) in zip(lines, chosen):
        assert line.startswith(f"{path}: {names[label]} (")


def test_cli_predict_refuses_other_backbone_weights(photos, tmp_path, capsys):
    cache, out_dir = tmp_path / "cache", tmp_path / "out"
    layer = nn.Linear(2048, 2)
    clf = classifier_module.ImageClassifier(layer, ["red_stripes", "teal_checks"], "random", "sha1-abc")
    clf.save(out_dir)
    img = photos / "teal_checks" / "1.jpg"
    code, out, err = _run(capsys, ["predict", img, "--weights", "random", "--seed", 1,
                                   "--classifier", out_dir, "--cache-dir", cache, "--no-progress"])
    assert code == 2 and out == ""
    assert "trained on features of weights sha1-abc" in err and "random-seed1" in err


def test_cli_errors(photos, tmp_path, capsys):
    code, _, err = _run(capsys, [photos, "--weights", tmp_path / "missing.npz", "--cache-dir", tmp_path])
    assert code == 2 and "missing.npz" in err and "does not exist" in err
    (tmp_path / "lonely.npz").write_bytes(b"")
    code, _, err = _run(capsys, ["predict", photos / "red_stripes" / "1.jpg", "--weights", "random",
                                 "--classifier", tmp_path / "lonely.npz", "--cache-dir", tmp_path])
    assert code == 2 and "lonely.json" in err
    code, _, err = _run(capsys, [photos, "--weights", "random", "--out", photos / "red_stripes" / "1.jpg",
                                 "--cache-dir", tmp_path])
    assert code == 2 and "1.jpg exists and is not a directory" in err  # checked before any work
    with pytest.raises(SystemExit):
        ic.main(["predict", "x.jpg"])  # --weights and --classifier are required
    capsys.readouterr()


def test_the_80_20_split_has_exact_sizes():
    # 1 - 0.8 is 0.19999999999999996 in floating point; 200 photos must still split 160/40
    for n, want in ((200, [160, 40]), (12, [10, 2]), (1000, [800, 200])):
        assert [len(s) for s in random_split(list(range(n)), 0.8, seed=2)] == want


# ---- misuse: bad paths and a file name as the save folder -------------------------------------

def _tiny_classifier():
    from minidl.vision import classifier

    layer = minidl.nn.Linear(classifier.feature_dim("resnet50"), 2)
    return classifier.ImageClassifier(layer, ["cats", "dogs"], "random", "random-seed0",
                                      progress=False)


@pytest.mark.parametrize("bad, named", [(None, "got NoneType"), (5, "got int"),
                                        ([None], r"holds a NoneType \(None\)")])
def test_classifier_predict_bad_paths_argument_named(bad, named):
    with pytest.raises(TypeError, match=f"paths_or_folder .*{named}"):
        _tiny_classifier().predict(bad)


def test_classifier_save_to_a_file_name_is_refused_before_writing(tmp_path):
    clf = _tiny_classifier()
    with pytest.raises(ValueError, match=r"model\.npz looks like a file name; save takes a folder"):
        clf.save(tmp_path / "model.npz")
    assert not (tmp_path / "model.npz").exists()
    (tmp_path / "kept.npz").write_bytes(b"old")  # an existing file is refused, and kept
    with pytest.raises(ValueError, match=r"kept\.npz exists and is not a directory"):
        clf.save(tmp_path / "kept.npz")
    assert (tmp_path / "kept.npz").read_bytes() == b"old"
    npz, sidecar = clf.save(tmp_path / "out")
    assert npz.endswith("classifier.npz") and sidecar.endswith("classifier.json")


def test_random_weights_warning_names_the_arch_in_use(capsys):
    from minidl.vision.classifier import resolve_weights

    assert resolve_weights("random", arch="resnet18")[1] == "random-resnet18-seed0"
    err = capsys.readouterr().err
    assert "resnet18 runs on RANDOM weights" in err and "ResNet-50" not in err
    resolve_weights("random")
    assert "ResNet-50 runs on RANDOM weights" in capsys.readouterr().err
