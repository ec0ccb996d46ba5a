"""ImageNet preprocessing (torchvision's Resize(256) + CenterCrop(224) + Normalize) and class names."""

import numpy as np
import pytest
from PIL import Image

from minidl.models.imagenet import imagenet_class_table, imagenet_classes
from minidl.vision.transforms import (IMAGENET_MEAN, IMAGENET_STD, ImageReadError, load_image, preprocess,
                                      preprocess_batch)

MEAN = np.array(IMAGENET_MEAN, np.float32)[:, None, None]
STD = np.array(IMAGENET_STD, np.float32)[:, None, None]


def gradient_rgb(w, h, seed=0):
    """A smooth but asymmetric picture, so flips, rotations and off-by-one crops all show."""
    y, x = np.mgrid[0:h, 0:w]
    noise = np.random.default_rng(seed).integers(0, 30, (h, w, 3))
    a = np.stack([x * 200 // w, y * 200 // h, (x + 2 * y) % 200], -1) + noise
    return Image.fromarray(a.astype(np.uint8), "RGB")


def constant(rgb):
    """What a flat image of colour `rgb` must preprocess to."""
    return np.broadcast_to((np.array(rgb, np.float32)[:, None, None] / 255 - MEAN) / STD, (3, 224, 224))


def test_shape_dtype_and_values(tmp_path):
    path = tmp_path / "flat.png"
    Image.new("RGB", (300, 260), (10, 20, 30)).save(path)
    x = preprocess(path)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x, constant((10, 20, 30)), rtol=0, atol=1e-5)
    assert preprocess(path, resize=64, crop=32).shape == (3, 32, 32)
    with pytest.raises(ValueError, match="crop"):
        preprocess(path, resize=200, crop=224)


@pytest.mark.parametrize("w, h, resized, box", [
    (512, 384, (341, 256), (58, 16)),   # landscape; (341 - 224) / 2 = 58.5 rounds to even, like torchvision
    (384, 512, (256, 341), (16, 58)),   # portrait
    (256, 300, (256, 300), (16, 38)),   # shorter side already 256: no resampling at all
    (100, 90, (284, 256), (30, 16)),    # upscaling
])
def test_matches_resize_and_centre_crop_by_hand(tmp_path, w, h, resized, box):
    img = gradient_rgb(w, h)
    left, top = box
    expected = np.asarray(img.resize(resized, Image.BILINEAR) if resized != (w, h) else img)
    expected = expected[top:top + 224, left:left + 224].astype(np.float32)
    expected = (expected.transpose(2, 0, 1) / 255 - MEAN) / STD
    np.testing.assert_allclose(preprocess(img), expected, rtol=0, atol=1e-5)


def test_to_tensor_and_normalize_match_torch():
    torch = pytest.importorskip("torch", reason="torch is the reference for ToTensor/Normalize")
    img = gradient_rgb(256, 256)
    t = torch.from_numpy(np.asarray(img)[16:240, 16:240].copy()).permute(2, 0, 1).float() / 255
    t = (t - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    np.testing.assert_allclose(preprocess(img), t.numpy(), rtol=0, atol=1e-6)


def save_mode(tmp_path, name, img, **kwargs):
    path = tmp_path / name
    img.save(path, **kwargs)
    return path


@pytest.mark.parametrize("name, make, expected_rgb", [
    ("gray.png", lambda: Image.new("L", (300, 240), 128), (128, 128, 128)),
    ("bilevel.png", lambda: Image.new("1", (300, 240), 1), (255, 255, 255)),
    ("gray16.png", lambda: Image.fromarray(np.full((240, 300), 128 * 257, np.uint16)), (128, 128, 128)),
    ("gray32.tif", lambda: Image.fromarray(np.full((240, 300), 65535, np.int32)), (255, 255, 255)),
    ("float.tif", lambda: Image.fromarray(np.full((240, 300), 0.5, np.float32)), (128, 128, 128)),
    ("palette.png", lambda: Image.new("RGB", (300, 240), (200, 10, 40)).quantize(4), (200, 10, 40)),
    ("cmyk.jpg", lambda: Image.new("CMYK", (300, 240), (0, 0, 0, 0)), (255, 255, 255)),
    ("cmyk.tif", lambda: Image.new("CMYK", (300, 240), (0, 255, 255, 0)), (255, 0, 0)),
    # fully transparent red must come out as the white it is composited onto, not red
    ("rgba.png", lambda: Image.new("RGBA", (300, 240), (255, 0, 0, 0)), (255, 255, 255)),
    ("half.png", lambda: Image.new("RGBA", (300, 240), (0, 0, 0, 128)), (127, 127, 127)),
    ("la.png", lambda: Image.new("LA", (300, 240), (0, 0)), (255, 255, 255)),
])
def test_image_modes_become_rgb(tmp_path, name, make, expected_rgb):
    path = save_mode(tmp_path, name, make())
    assert load_image(path).mode == "RGB"
    x = preprocess(path)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    np.testing.assert_allclose(x, constant(expected_rgb), rtol=0, atol=1.5 / 255 / 0.224)


GREY90 = Image.new("RGB", (300, 240), (90, 90, 90))


@pytest.mark.parametrize("img", [
    GREY90.convert("YCbCr"), GREY90.convert("LAB"), GREY90.convert("HSV"),
    Image.fromarray(np.full((240, 300), 90 * 257, np.uint16)),   # I;16
    Image.fromarray(np.full((240, 300), 90 / 255, np.float32)),  # F, in 0..1
], ids=lambda img: img.mode)
def test_in_memory_images_of_any_mode(img):
    np.testing.assert_allclose(preprocess(img), constant((90, 90, 90)), rtol=0, atol=1.5 / 255 / 0.224)


def test_palette_transparency_goes_on_white(tmp_path):
    img = Image.new("P", (300, 240), 0)
    img.putpalette([255, 0, 0] + [0, 0, 255] * 255)
    path = save_mode(tmp_path, "ptrans.png", img, transparency=0)
    np.testing.assert_allclose(preprocess(path), constant((255, 255, 255)), atol=1e-5)


def test_exif_orientation_is_applied(tmp_path):
    img = gradient_rgb(320, 240)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; show rotated 90 degrees clockwise
    path = save_mode(tmp_path, "sideways.jpg", img, exif=exif, quality=95)
    with Image.open(path) as raw:
        assert raw.size == (320, 240)
        # rebuilt from the pixels so it carries no orientation tag that would rotate it again
        upright = Image.fromarray(np.asarray(raw.convert("RGB").transpose(Image.Transpose.ROTATE_270)))
    loaded = load_image(path)
    assert loaded.size == (240, 320)
    assert np.array_equal(np.asarray(loaded), np.asarray(upright))
    np.testing.assert_array_equal(preprocess(path), preprocess(upright))
    with Image.open(path) as raw:  # an opened PIL image gets the same treatment as a path
        np.testing.assert_array_equal(preprocess(raw), preprocess(upright))


def test_unreadable_files_name_themselves(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(ImageReadError, match="notes.jpg"):
        load_image(text)
    with pytest.raises(ValueError, match="notes.jpg"):  # also a ValueError and an OSError
        preprocess(text)
    good = save_mode(tmp_path, "cut.jpg", gradient_rgb(300, 300))
    cut = tmp_path / "cut_short.jpg"
    cut.write_bytes(good.read_bytes()[:600])
    with pytest.raises(OSError, match="cut_short.jpg"):
        load_image(cut)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")


def test_preprocess_batch(tmp_path):
    paths = [save_mode(tmp_path, f"{i}.png", gradient_rgb(300 + 40 * i, 260, seed=i)) for i in range(3)]
    batch = preprocess_batch(paths)
    assert batch.shape == (3, 3, 224, 224) and batch.dtype == np.float32
    for i, p in enumerate(paths):
        np.testing.assert_array_equal(batch[i], preprocess(p))


def test_class_names():
    names = imagenet_classes()
    assert len(names) == 1000 and all(names)
    assert names[0] == "tench" and names[1] == "goldfish" and names[999] == "toilet tissue"
    table = imagenet_class_table()
    assert len(table) == 1000
    assert table[0] == ("n01440764", "tench, Tinca tinca")
    assert len({wnid for wnid, _ in table}) == 1000
