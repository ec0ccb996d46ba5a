"""Data loading, minidl's DataLoader against PyTorch's on the same dataset: one epoch over 96
JPEG photos (decoded and resized by PIL, made CHW float32 by NumPy, the same code for both), in
batches of 16, in this process and in two worker processes (persistent, so the timing is the
loading and not the start of the workers)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from minidl.data import DataLoader

FRAMEWORKS = ["minidl", "torch"]
PHOTOS, SIDE, OUT = 96, 320, 224


class Photos:
    """Item i: (the i-th JPEG resized to OUT x OUT as CHW float32 in [0, 1], i)."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as im:
            pixels = np.asarray(im.convert("RGB").resize((OUT, OUT), Image.BILINEAR))
        return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32) / 255.0, i


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(PHOTOS):
        base = rng.integers(0, 256, (SIDE // 8, SIDE // 8, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((SIDE, SIDE), Image.BICUBIC)
        paths.append(str(folder / f"{i}.jpg"))
        image.save(paths[-1], quality=90)
    return Photos(paths)


def _loader(request, fw, dataset, workers):
    if fw == "torch":
        torch = request.getfixturevalue("torch")
        return torch.utils.data.DataLoader(dataset, batch_size=16, num_workers=workers,
                                           persistent_workers=workers > 0)
    return DataLoader(dataset, batch_size=16, num_workers=workers,
                      persistent_workers=workers > 0)


def _epoch(loader):
    def run():
        n = 0
        for x, _ in loader:
            n += len(x)
        assert n == PHOTOS
    run()  # the workers started, and one pass made, before the timing
    return run


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("workers", [0, 2])
def test_photo_epoch(benchmark, request, photos, fw, workers):
    benchmark.group = f"photo-loading-{PHOTOS}x{OUT}-b16-workers{workers}"
    benchmark(_epoch(_loader(request, fw, photos, workers)))


def test_both_loaders_give_the_same_batches(request, photos):
    torch = request.getfixturevalue("torch")
    ours = [(x.numpy(), i.numpy()) for x, i in _loader(request, "minidl", photos, 2)]
    theirs = [(x.numpy(), i.numpy()) for x, i in
              torch.utils.data.DataLoader(photos, batch_size=16, num_workers=2)]
    assert len(ours) == len(theirs) == PHOTOS // 16
    for (a, ia), (b, ib) in zip(ours, theirs):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(a, b)
