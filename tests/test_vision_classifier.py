"""minidl.vision.ImageClassifier on a tiny generated photo folder, with a random ResNet-50.

Features are computed once per module (a shared cache): after the first fit every call reads
them from disk, which keeps this file to seconds.
"""
from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from helpers import make_photo_folder
from minidl.vision import ImageClassifier
from minidl.vision import classifier as clf_module
from minidl.vision.transforms import ImageReadError


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_photo_folder(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def fitted(photos, cache):
    return ImageClassifier.fit(photos, "random", epochs=15, batch_size=6, cache_dir=cache, progress=False)


def test_fit_splits_80_20_and_trains(fitted, photos):
    assert fitted.classes == ["red_stripes", "teal_checks"]
    assert len(fitted.train_paths) == 10 and len(fitted.test_paths) == 2
    assert not set(fitted.train_paths) & set(fitted.test_paths)
    assert fitted.feature_counts["images"] == 12
    assert fitted.weights_id == "random-seed0"
    assert fitted.layer.weight.shape == (2, 2048)
    # a classifier fits its own training photos
    labels = [label for label, _ in fitted.predict(fitted.train_paths)]
    truth = [os.path.basename(os.path.dirname(p)) for p in fitted.train_paths]
    assert labels == truth


def test_evaluate_reports_accuracy_confusion_per_class_and_mistakes(fitted, photos):
    r = fitted.evaluate()
    assert r["classes"] == fitted.classes and r["images"] == 2
    m = r["confusion_matrix"]
    assert m.shape == (2, 2) and m.sum() == 2
    assert r["accuracy"] == pytest.approx(np.trace(m) / 2)
    assert len(r["misclassified"]) == 2 - np.trace(m)
    assert sum(s["support"] for s in r["per_class"].values()) == 2

    whole = fitted.evaluate(photos)  # another folder: every photo, labels by folder name
    assert whole["images"] == 12
    assert whole["accuracy"] >= 10 / 12  # at least the ten training photos are right
    for name, k in (("red_stripes", 0), ("teal_checks", 1)):
        s = whole["per_class"][name]
        m = whole["confusion_matrix"]
        assert s["support"] == 6 == m[k].sum()
        assert s["recall"] == pytest.approx(m[k, k] / 6)
        assert s["precision"] == pytest.approx(m[k, k] / m[:, k].sum())
    for path, true, pred, p in whole["misclassified"]:
        assert os.path.basename(os.path.dirname(path)) == true != pred and 0.5 <= p <= 1


def test_predict_and_predict_proba(fitted, photos):
    paths = ImageClassifier.image_paths(photos)  # a folder: its images, sorted
    assert len(paths) == 12 and paths == sorted(paths)
    probs = fitted.predict_proba(photos)
    assert probs.shape == (12, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    preds = fitted.predict(photos)
    assert [lab for lab, _ in preds] == [fitted.classes[k] for k in probs.argmax(1)]
    assert [p for _, p in preds] == pytest.approx(probs.max(1).tolist())
    one = fitted.predict(paths[0])  # a single path
    assert one == [preds[0]]
    # a list may hold folders too: each stands for its images, in its place
    mixed = fitted.predict([paths[0], photos / "teal_checks"])
    teal = ImageClassifier.image_paths(photos / "teal_checks")
    assert len(mixed) == 1 + len(teal) and mixed[0] == preds[0]
    assert mixed[1:] == [preds[paths.index(p)] for p in teal]


def test_predict_bad_files(fitted, photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    good = str(photos / "red_stripes" / "1.jpg")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        fitted.predict([good, broken])
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        fitted.predict([good, tmp_path / "nope.jpg"])
    res = fitted.predict([good, broken, tmp_path / "nope.jpg"], skip_unreadable=True)
    assert res[0][0] == "red_stripes" and res[1][0] is None and math.isnan(res[2][1])


def test_save_load_gives_identical_predictions(fitted, photos, cache, tmp_path):
    fitted.evaluate()
    npz, sidecar = fitted.save(tmp_path / "clf")
    meta = json.loads(open(sidecar).read())
    assert meta["classes"] == fitted.classes and meta["weights"] == "random-seed0"
    assert len(meta["test_split"]) == 2 and "test_accuracy" in meta
    loaded = ImageClassifier.load(tmp_path / "clf", "random", cache_dir=cache, progress=False)
    np.testing.assert_array_equal(loaded.predict_proba(photos), fitted.predict_proba(photos))
    assert loaded.predict(photos) == fitted.predict(photos)
    a, b = loaded.evaluate(), fitted.evaluate()  # the held-out split travels with it
    assert a["accuracy"] == b["accuracy"]
    np.testing.assert_array_equal(a["confusion_matrix"], b["confusion_matrix"])
    # other backbone weights give other features: refused, naming both
    with pytest.raises(ValueError, match="random-seed0.*random-seed3"):
        ImageClassifier.load(tmp_path / "clf", "random", seed=3, cache_dir=cache)
    with pytest.raises(FileNotFoundError, match="classifier.npz"):
        ImageClassifier.load(tmp_path / "nothing", "random", cache_dir=cache)


def test_second_fit_reads_every_feature_from_the_cache(photos, cache, monkeypatch, fitted):
    def no_network(*args, **kwargs):
        raise AssertionError("ResNet-50 built although every feature was cached")

    monkeypatch.setattr(clf_module, "build_backbone", no_network)
    again = ImageClassifier.fit(photos, "random", epochs=15, batch_size=6, cache_dir=cache, progress=False)
    assert again.feature_counts["cached"] == 12
    np.testing.assert_array_equal(again.layer.weight.numpy(), fitted.layer.weight.numpy())


def test_contact_sheet(fitted, photos, tmp_path):
    fitted.evaluate(photos)
    path = fitted.contact_sheet(tmp_path / "sheets" / "missed.png")
    assert Image.open(path).format == "PNG"


def test_folders_that_cannot_train_a_classifier(photos, cache, tmp_path):
    one = tmp_path / "one"
    shutil.copytree(photos / "red_stripes", one / "red_stripes")
    with pytest.raises(ValueError, match="one class folder.*red_stripes.*at least two"):
        ImageClassifier.fit(one, "random", cache_dir=cache, progress=False)
    (one / "empty_class").mkdir()
    with pytest.raises(ValueError, match="empty_class"):
        ImageClassifier.fit(one, "random", cache_dir=cache, progress=False)
    (one / "empty_class" / "notes.txt").write_text("no photos here")
    with pytest.raises(ValueError, match="empty_class"):
        ImageClassifier.fit(one, "random", cache_dir=cache, progress=False)
    with pytest.raises(ValueError, match="test_fraction"):
        ImageClassifier.fit(photos, "random", test_fraction=1.0, cache_dir=cache)
    with pytest.raises(ValueError, match="lr"):
        ImageClassifier.fit(photos, "random", lr=0, cache_dir=cache)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        ImageClassifier.fit(photos, tmp_path / "missing.pth", cache_dir=cache)


def test_evaluate_refuses_unknown_classes(fitted, photos, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(photos / "red_stripes", other / "zebras")
    with pytest.raises(ValueError, match="zebras"):
        fitted.evaluate(other)


def test_photos_decoded_in_workers_give_the_same_features_and_warnings(photos, tmp_path, capsys):
    """num_workers=2 decodes in worker processes; the features, the failures and their warning
    lines are those of decoding here. The backbone is a ResNet-18 (decoding does not depend on
    it, and it runs the photos twice in about a third of ResNet-50's time)."""
    from minidl.models import resnet18

    folder = tmp_path / "mixed"
    shutil.copytree(photos, folder)
    (folder / "red_stripes" / "zz_broken.jpg").write_bytes(b"not an image")
    paths = sorted(str(p) for p in folder.rglob("*.jpg"))
    net = resnet18(weights=None).eval()
    results = []
    for workers in (0, 2):
        cache = clf_module.FeatureCache(tmp_path / f"cache{workers}", "random-resnet18-seed0",
                                        dim=512)
        feats, ok, counts = clf_module.extract_features(net, paths, cache, batch_size=5,
                                                        progress=False, num_workers=workers)
        results.append((feats, ok, counts, capsys.readouterr().err))
    (f0, ok0, c0, err0), (f2, ok2, c2, err2) = results
    np.testing.assert_array_equal(f0, f2)
    np.testing.assert_array_equal(ok0, ok2)
    assert c0 == c2 and c0["failed"] == 1 and c0["computed"] == len(paths) - 1
    assert err0 == err2 and "zz_broken.jpg" in err0
    with pytest.raises(ValueError, match="num_workers must be an integer >= 0"):
        ImageClassifier.fit(photos, "random", num_workers=-1)


def test_a_resnet18_backbone_gives_512_features_and_round_trips(photos, tmp_path):
    """arch="resnet18": 512-d features, cached apart from ResNet-50's (even for the same seed),
    saved with the classifier and read back by load."""
    cache = tmp_path / "cache18"
    clf = ImageClassifier.fit(photos, "random", epochs=5, batch_size=6, cache_dir=cache,
                              progress=False, arch="resnet18")
    assert clf.arch == "resnet18" and clf.layer.weight.shape == (2, 512)
    assert clf.weights_id == "random-resnet18-seed0"
    entries = list((cache / "features").iterdir())
    assert len(entries) == 1 and entries[0].name.startswith("random-resnet18-seed0-")
    assert all(np.load(p).shape == (512,) for p in entries[0].iterdir())
    clf.save(tmp_path / "clf18")
    meta = json.loads((tmp_path / "clf18" / "classifier.json").read_text())
    assert meta["arch"] == "resnet18" and meta["features"] == 512
    loaded = ImageClassifier.load(tmp_path / "clf18", "random", cache_dir=cache, progress=False)
    assert loaded.arch == "resnet18"
    np.testing.assert_array_equal(loaded.predict_proba(photos), clf.predict_proba(photos))
    with pytest.raises(ValueError, match="arch must be one of"):
        ImageClassifier.fit(photos, "random", arch="mobilenet_v2", cache_dir=cache)


def test_classifiers_saved_before_arch_load_as_resnet50(fitted, photos, cache, tmp_path):
    fitted.save(tmp_path / "old")
    sidecar = tmp_path / "old" / "classifier.json"
    meta = json.loads(sidecar.read_text())
    del meta["arch"]
    sidecar.write_text(json.dumps(meta))
    loaded = ImageClassifier.load(tmp_path / "old", "random", cache_dir=cache, progress=False)
    assert loaded.arch == "resnet50" and loaded.layer.weight.shape[1] == 2048
