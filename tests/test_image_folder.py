"""ImageFolder on small synthetic folders written with Pillow."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minidl.data import DataLoader, random_split
from minidl.datasets import ImageFolder
from minidl.vision.transforms import ImageReadError, preprocess

LOGGER = "minidl.datasets.image_folder"


def _save(path, mode, size, colour, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, fmt)
    return path


@pytest.fixture
def photo_folder(tmp_path):
    root = tmp_path / "photos"
    # written out of alphabetical order: labels must come from sorted names, not listing order
    _save(root / "zebra" / "z1.png", "RGB", (40, 30), (250, 250, 250))
    _save(root / "zebra" / "nested" / "z2.jpg", "RGB", (30, 40), (10, 10, 10))
    _save(root / "apple" / "a1.jpg", "RGB", (64, 48), (200, 20, 20))
    _save(root / "apple" / "a2.PNG", "L", (50, 50), 128)            # grayscale, upper-case ext
    _save(root / "apple" / "a3.png", "RGBA", (32, 32), (0, 255, 0, 100))
    _save(root / "mango" / "m1.jpeg", "RGB", (300, 200), (250, 180, 0))
    (root / "mango" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    (root / "mango" / "notes.txt").write_text("bought on tuesday\n")
    (root / "mango" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (root / ".hidden_dir").mkdir()
    _save(root / ".hidden_dir" / "x.png", "RGB", (8, 8), (1, 2, 3))  # not a class
    return root


def test_classes_labels_and_samples(photo_folder, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ds = ImageFolder(photo_folder)
    assert ds.classes == ["apple", "mango", "zebra"]
    assert ds.class_to_idx == {"apple": 0, "mango": 1, "zebra": 2}
    names = [(p.split("photos/")[1], y) for p, y in ds.samples]
    assert names == [("apple/a1.jpg", 0), ("apple/a2.PNG", 0), ("apple/a3.png", 0),
                     ("mango/m1.jpeg", 1), ("zebra/z1.png", 2), ("zebra/nested/z2.jpg", 2)]
    assert ds.targets == [0, 0, 0, 1, 2, 2]
    assert len(ds) == 6


def test_non_images_and_corrupt_images_are_skipped_with_one_warning_each(photo_folder, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ds = ImageFolder(photo_folder)
    skipped = sorted(p.split("photos/")[1] for p, _ in ds.skipped)
    assert skipped == ["mango/.DS_Store", "mango/broken.jpg", "mango/notes.txt"]
    records = [r for r in caplog.records if r.name == LOGGER]
    assert len(records) == 3
    for name in ("/.DS_Store", "/notes.txt", "/broken.jpg"):
        lines = [r.getMessage() for r in records if name in r.getMessage()]
        assert len(lines) == 1 and "\n" not in lines[0] and "skipping" in lines[0]
    assert "Pillow cannot read" in next(r.getMessage() for r in records if "broken.jpg" in r.getMessage())


def test_items_are_preprocessed_like_imagenet(photo_folder):
    ds = ImageFolder(photo_folder)
    for i in (1, 2):  # grayscale and RGBA both come out as 3 channels
        x, y = ds[i]
        assert x.shape == (3, 224, 224) and x.dtype == np.float32 and y == 0
        np.testing.assert_array_equal(x, preprocess(ds.samples[i][0]))
    # a solid red picture stays red after normalisation: R channel high, G and B low
    x, _ = ds[0]
    assert x[0].mean() > 1.0 and x[1].mean() < -1.0


def test_transform_gets_an_rgb_pil_image(photo_folder):
    seen = []

    def transform(img):
        seen.append((img.mode, img.size))
        return np.asarray(img, dtype=np.float32).mean()

    ds = ImageFolder(photo_folder, transform=transform)
    x, y = ds[1]
    assert seen == [("RGB", (50, 50))] and y == 0
    assert x == pytest.approx(128.0)


def test_works_with_random_split_and_dataloader(photo_folder):
    ds = ImageFolder(photo_folder)
    train, test = random_split(ds, 0.8, seed=2)
    assert len(train) + len(test) == len(ds) and len(test) >= 1
    assert not set(train.indices) & set(test.indices)
    xb, yb = next(iter(DataLoader(train, batch_size=2)))
    assert xb.shape == (2, 3, 224, 224) and yb.dtype == np.int64


def test_truncated_image_is_caught_at_scan_time_or_else_at_load_naming_the_file(tmp_path, caplog):
    root = tmp_path / "f"
    good = _save(root / "a" / "ok.jpg", "RGB", (64, 64), (1, 2, 3))
    data = good.read_bytes()
    bad = root / "a" / "cut.jpg"
    bad.write_bytes(data[: len(data) // 2])  # header intact, pixels missing
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert [p for p, _ in ImageFolder(root).samples] == [str(good)]
    assert any("cut.jpg" in r.getMessage() for r in caplog.records)
    unchecked = ImageFolder(root, verify=False)  # only extensions checked: the load must fail
    assert [p for p, _ in unchecked.samples] == [str(bad), str(good)]
    with pytest.raises(ImageReadError, match="cut.jpg"):
        unchecked[0]


def test_files_outside_class_folders_are_skipped(tmp_path, caplog):
    root = tmp_path / "f"
    _save(root / "only" / "x.png", "RGB", (8, 8), (1, 2, 3))
    (root / "README.txt").write_text("hi")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ds = ImageFolder(root)
    assert ds.classes == ["only"] and len(ds) == 1
    assert [r.getMessage() for r in caplog.records if "README.txt" in r.getMessage()]


def test_empty_or_missing_folders_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        ImageFolder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no class sub-folders"):
        ImageFolder(tmp_path / "empty")
    (tmp_path / "text" / "a").mkdir(parents=True)
    (tmp_path / "text" / "a" / "x.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no readable images"):
        ImageFolder(tmp_path / "text")


# ---- symbolic links: no loops, no leaving the class folder, no photo twice ---------------------
def _two_classes(tmp_path):
    root = tmp_path / "photos"
    for cls, colour in (("a", (200, 0, 0)), ("b", (0, 0, 200))):
        for i in range(3):
            _save(root / cls / f"{cls}{i}.png", "RGB", (8, 8), colour)
    return root


def _labelled(ds, root):
    return sorted((str(Path(p).relative_to(root)), ds.classes[y])
                  for p, y in ds.samples)


def test_a_link_loop_is_not_followed(tmp_path, caplog):
    root = _two_classes(tmp_path)
    (root / "a" / "loop").symlink_to(".")
    (root / "a" / "deeper").mkdir()
    (root / "a" / "deeper" / "back").symlink_to("..")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ds = ImageFolder(root, verify=False)
    assert len(ds) == 6  # 6 photos, not 126
    assert ds.targets.count(0) == 3 and ds.targets.count(1) == 3
    assert any("loop" in p for p, _ in ds.skipped)


def test_a_link_to_the_parent_or_another_class_does_not_relabel_photos(tmp_path):
    root = _two_classes(tmp_path)
    (root / "a" / "up").symlink_to("..")
    (root / "a" / "other").symlink_to("../b")
    (root / "a" / "b1_again.png").symlink_to("../b/b1.png")
    ds = ImageFolder(root, verify=False)
    assert _labelled(ds, root) == [(f"{c}/{c}{i}.png", c) for c in "ab" for i in range(3)]
    assert {p.rsplit("/", 1)[-1] for p, _ in ds.skipped} == {"up", "other", "b1_again.png"}


def test_links_inside_the_class_folder_count_once_and_class_folders_may_be_links(tmp_path):
    root = _two_classes(tmp_path)
    _save(root / "a" / "sub" / "s.png", "RGB", (8, 8), (1, 1, 1))
    (root / "a" / "sub_link").symlink_to("sub")              # the same folder twice
    (root / "a" / "a0_copy.png").symlink_to("a0.png")         # the same file twice
    outside = _save(tmp_path / "elsewhere" / "c" / "c0.png", "RGB", (8, 8), (0, 200, 0)).parent
    (root / "c").symlink_to(outside)                          # a class folder kept elsewhere
    (root / "d").symlink_to("a")                              # a second name for class a
    ds = ImageFolder(root, verify=False)
    assert ds.classes == ["a", "b", "c", "d"]
    assert [ds.classes[y] for y in ds.targets].count("a") == 4
    assert [ds.classes[y] for y in ds.targets].count("c") == 1
    assert [ds.classes[y] for y in ds.targets].count("d") == 0
    assert len({os.path.realpath(p) for p, _ in ds.samples}) == len(ds) == 8
