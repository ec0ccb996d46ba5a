"""torchvision-style datasets (minidl.vision.datasets), make_grid/save_image, and a torchvision
training script's data part end to end: MNIST -> transforms -> DataLoader -> a model."""
import gzip
import io
import logging
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest
from PIL import Image

import minidl
from minidl import Tensor, nn, optim
from minidl.data import DataLoader
from minidl.datasets import load_mnist_sample
from minidl.vision import datasets, transforms, utils


# ---- MNIST family -------------------------------------------------------------------------------
def _write_idx(path, array, gz=False):
    header = struct.pack(">I", 0x800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        data = gzip.compress(data)
        path = str(path) + ".gz"
    with open(path, "wb") as f:
        f.write(data)


def _fake_mnist(folder, n=5, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    os.makedirs(folder, exist_ok=True)
    for prefix in ("train", "t10k"):
        _write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte"), images, gz)
        _write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte"), labels, gz)
    return images, labels


def test_mnist_sample_gives_pil_images_and_int_labels():
    ds = datasets.MNIST.sample()
    raw = load_mnist_sample(train=True, normalize=False)
    assert len(ds) == 6000
    img, label = ds[3]
    assert isinstance(img, Image.Image) and img.mode == "L" and img.size == (28, 28)
    assert type(label) is int and label == int(raw.labels[3])
    np.testing.assert_array_equal(np.asarray(img), raw.images[3])
    assert ds.data.dtype == np.uint8 and ds.data.shape == (6000, 28, 28)
    assert ds.targets.dtype == np.int64
    assert ds.classes[7] == "7 - seven" and ds.class_to_idx["7 - seven"] == 7
    test = datasets.MNIST.sample(train=False, transform=transforms.ToTensor(),
                                 target_transform=lambda y: y + 100)
    x, y = test[0]
    assert len(test) == 1000 and x.shape == (1, 28, 28) and x.dtype == np.float32
    assert y == int(load_mnist_sample(train=False).labels[0]) + 100
    assert "Split: Test" in repr(test) and "Transform: ToTensor()" in repr(test)


@pytest.mark.parametrize("layout", ["MNIST/raw", "MNIST", "mnist", ""])
def test_mnist_reads_idx_files_in_torchvisions_and_minidls_layouts(tmp_path, layout):
    images, labels = _fake_mnist(tmp_path / layout, gz=layout == "MNIST/raw")
    ds = datasets.MNIST(tmp_path, train=False)
    assert len(ds) == 5
    img, label = ds[4]
    np.testing.assert_array_equal(np.asarray(img), images[4])
    assert label == labels[4]
    np.testing.assert_array_equal(ds.targets.numpy(), labels)


def test_fashion_mnist_uses_its_own_folder_and_classes(tmp_path):
    images, labels = _fake_mnist(tmp_path / "FashionMNIST" / "raw", seed=1)
    ds = datasets.FashionMNIST(str(tmp_path), train=True, transform=transforms.ToTensor())
    x, y = ds[2]
    np.testing.assert_array_equal(x.numpy()[0], images[2] / np.float32(255))
    assert y == labels[2] and ds.classes[9] == "Ankle boot"
    with pytest.raises(datasets.DatasetNotFoundError, match="MNIST/raw"):
        datasets.MNIST(tmp_path)  # FashionMNIST's files are not MNIST's
    with pytest.raises(RuntimeError, match="fashion-mnist"):  # no network: says where to get them
        datasets.FashionMNIST(tmp_path / "elsewhere", download=True)
    with pytest.raises(FileNotFoundError, match="KMNIST"):
        datasets.KMNIST(tmp_path)


def test_mnist_from_minidl_data():
    root = os.environ.get("MINIDL_DATA")
    if not root or not any(os.path.isdir(os.path.join(root, d)) for d in ("mnist", "MNIST")):
        pytest.skip("$MINIDL_DATA is not set or holds no mnist/ folder with the full MNIST files")
    ds = datasets.MNIST(root, train=False)
    assert len(ds) == 10000
    img, label = ds[0]
    assert img.size == (28, 28) and 0 <= label <= 9


# ---- CIFAR ----------------------------------------------------------------------------------------
def _write_batch(path, entry):
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def _fake_cifar10(root, per_batch=2):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    everything = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        _write_batch(folder / name, {"batch_label": name, "data": data, "labels": labels,
                                     "filenames": [f"{name}_{i}.png" for i in range(per_batch)]})
        everything[name] = (data, labels)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    _write_batch(folder / "batches.meta", {"label_names": names, "num_vis": 3072})
    return everything


def test_cifar10_reads_the_python_batches(tmp_path):
    batches = _fake_cifar10(tmp_path)
    ds = datasets.CIFAR10(tmp_path, train=True)
    assert len(ds) == 10 and ds.data.shape == (10, 32, 32, 3) and ds.data.dtype == np.uint8
    data3, labels3 = batches["data_batch_3"]
    img, label = ds[5]  # the second image of the third batch
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (32, 32)
    np.testing.assert_array_equal(np.asarray(img), data3[1].reshape(3, 32, 32).transpose(1, 2, 0))
    assert label == labels3[1] and isinstance(ds.targets, list)
    assert ds.classes[3] == "cat" and ds.class_to_idx["truck"] == 9
    test = datasets.CIFAR10(tmp_path, train=False, transform=transforms.ToTensor())
    x, y = test[0]
    assert len(test) == 2 and x.shape == (3, 32, 32) and y == batches["test_batch"][1][0]


def test_cifar_without_files_says_where_to_get_them(tmp_path):
    with pytest.raises(RuntimeError, match="cifar-10-batches-py") as e:
        datasets.CIFAR10(tmp_path, download=True)
    assert "cifar-10-python.tar.gz" in str(e.value)
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        datasets.CIFAR100(tmp_path, train=False)


def test_cifar_download_unpacks_an_archive_already_in_root(tmp_path):
    src = tmp_path / "src"
    _fake_cifar10(src)
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    assert len(datasets.CIFAR10(root, train=False, download=True)) == 2


def test_cifar100_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data = np.arange(3 * 3072, dtype=np.int64).reshape(3, 3072).astype(np.uint8)
    _write_batch(folder / "train", {"data": data, "fine_labels": [5, 99, 0],
                                    "coarse_labels": [1, 2, 3]})
    _write_batch(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)],
                                   "coarse_label_names": [f"k{i}" for i in range(20)]})
    ds = datasets.CIFAR100(tmp_path)
    assert ds.targets == [5, 99, 0] and len(ds.classes) == 100
    np.testing.assert_array_equal(ds.data[1], data[1].reshape(3, 32, 32).transpose(1, 2, 0))


def test_cifar_refuses_bad_batch_files(tmp_path):
    _fake_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo hacked",))

    _write_batch(path, {"data": Evil(), "labels": [0]})
    with pytest.raises(ValueError, match="test_batch.*not allowed"):
        datasets.CIFAR10(tmp_path, train=False)
    _write_batch(path, {"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]})
    with pytest.raises(ValueError, match=r"test_batch.*\(N, 3072\)"):
        datasets.CIFAR10(tmp_path, train=False)
    path.write_bytes(b"\x80\x02}q")  # truncated
    with pytest.raises(ValueError, match="test_batch"):
        datasets.CIFAR10(tmp_path, train=False)


# ---- folders ----------------------------------------------------------------------------------------
def _photo_tree(root):
    rng = np.random.default_rng(0)
    for cls, n in (("cat", 2), ("dog", 3)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(
                root / cls / f"{i}.png")
    (root / "dog" / "notes.txt").write_text("not an image")


def test_image_folder_like_torchvision(tmp_path, caplog):
    _photo_tree(tmp_path)
    with caplog.at_level(logging.WARNING):
        ds = datasets.ImageFolder(tmp_path, transform=transforms.ToTensor(),
                                  target_transform=lambda y: -y)
    assert ds.classes == ["cat", "dog"] and ds.class_to_idx == {"cat": 0, "dog": 1}
    assert [os.path.basename(p) for p, _ in ds.samples] == ["0.png", "1.png", "0.png", "1.png",
                                                            "2.png"]
    assert ds.targets == [0, 0, 1, 1, 1] and ds.imgs is ds.samples
    assert "notes.txt" in caplog.text  # skipped with a warning, as minidl's ImageFolder does
    x, y = ds[2]
    assert x.shape == (3, 6, 5) and y == -1
    np.testing.assert_array_equal(
        x.numpy(), transforms.ToTensor()(Image.open(tmp_path / "dog" / "0.png")).numpy())
    raw = datasets.ImageFolder(tmp_path)
    assert isinstance(raw[0][0], Image.Image) and raw[0][0].mode == "RGB"
    only_zero = datasets.ImageFolder(tmp_path, is_valid_file=lambda p: p.endswith("0.png"))
    assert len(only_zero) == 2 and only_zero.targets == [0, 1]
    assert "Root location" in repr(ds)


def test_dataset_folder_loader_extensions_and_empty_classes(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        np.save(tmp_path / cls / "x.npy", np.full(3, ord(cls)))
    ds = datasets.DatasetFolder(tmp_path, loader=np.load, extensions=(".npy",))
    x, y = ds[1]
    np.testing.assert_array_equal(x, [98, 98, 98])
    assert y == 1
    with pytest.raises(ValueError, match="Both extensions and is_valid_file"):
        datasets.DatasetFolder(tmp_path, np.load)
    with pytest.raises(ValueError, match="Both extensions and is_valid_file"):
        datasets.DatasetFolder(tmp_path, np.load, extensions=".npy", is_valid_file=bool)
    (tmp_path / "c").mkdir()
    with pytest.raises(FileNotFoundError, match="no valid file for the classes c"):
        datasets.DatasetFolder(tmp_path, np.load, extensions=".npy")
    assert len(datasets.DatasetFolder(tmp_path, np.load, extensions=".npy",
                                      allow_empty=True).classes) == 3
    with pytest.raises(FileNotFoundError, match="class"):
        datasets.ImageFolder(tmp_path / "c")
    assert datasets.find_classes(tmp_path)[1] == {"a": 0, "b": 1, "c": 2}


def test_image_folder_skips_links_out_of_their_class(tmp_path):
    _photo_tree(tmp_path / "data")
    os.symlink(tmp_path / "data" / "cat" / "0.png", tmp_path / "data" / "dog" / "stray.png")
    ds = datasets.ImageFolder(tmp_path / "data")
    assert len(ds) == 5 and all("stray" not in p for p, _ in ds.samples)
    assert any("stray" in p for p, _ in ds.skipped)


def test_image_folder_verify_skips_unreadable_images(tmp_path):
    _photo_tree(tmp_path)
    (tmp_path / "cat" / "broken.png").write_bytes(b"not a png")
    assert len(datasets.ImageFolder(tmp_path)) == 6  # not opened at scan time by default
    checked = datasets.ImageFolder(tmp_path, verify=True)
    assert len(checked) == 5 and any("broken" in p for p, _ in checked.skipped)


# ---- make_grid / save_image -----------------------------------------------------------------------
def test_make_grid_layout_and_padding():
    x = np.random.default_rng(0).random((5, 3, 4, 6), dtype=np.float32)
    grid = utils.make_grid(Tensor(x), nrow=3, padding=2, pad_value=0.5).numpy()
    assert grid.shape == (3, 2 * (4 + 2) + 2, 3 * (6 + 2) + 2)
    for k in range(5):
        y0, x0 = (k // 3) * 6 + 2, (k % 3) * 8 + 2
        np.testing.assert_array_equal(grid[:, y0:y0 + 4, x0:x0 + 6], x[k])
    assert (grid[:, :2] == 0.5).all() and (grid[:, 8:14, 18:] == 0.5).all()  # border, 6th slot
    one_channel = utils.make_grid([Tensor(x[0, :1]), Tensor(x[1, :1])], padding=0)
    np.testing.assert_array_equal(one_channel.numpy()[2], np.concatenate([x[0, 0], x[1, 0]], 1))
    single = utils.make_grid(Tensor(x[0]))  # one image: returned without padding
    np.testing.assert_array_equal(single.numpy(), x[0])
    normed = utils.make_grid(Tensor(x * 4 - 1), normalize=True, padding=0).numpy()
    assert normed.min() == 0 and normed.max() == 1
    ranged = utils.make_grid(Tensor(x), normalize=True, value_range=(0, 0.5), padding=0)
    np.testing.assert_allclose(ranged.numpy()[:, :4, :6], np.clip(x[0], 0, 0.5) / 0.5)
    with pytest.raises(ValueError, match="differ in shape"):
        utils.make_grid([Tensor(x[0]), Tensor(x[0, :, :2])])


def test_save_image_writes_the_grid(tmp_path):
    x = np.random.default_rng(1).random((4, 3, 5, 5), dtype=np.float32)
    utils.save_image(Tensor(x), tmp_path / "grid.png", nrow=2)
    with Image.open(tmp_path / "grid.png") as img:
        saved = np.asarray(img)
    expected = np.clip(utils.make_grid(Tensor(x), nrow=2).numpy() * 255 + 0.5, 0, 255)
    np.testing.assert_array_equal(saved, expected.astype(np.uint8).transpose(1, 2, 0))
    buf = io.BytesIO()
    utils.save_image(Tensor(x[0]), buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        utils.save_image(Tensor(x), tmp_path / "missing" / "grid.png")


# ---- a torchvision script's data part, end to end -------------------------------------------------
def _run(steps=15):
    minidl.manual_seed(0)
    transform = transforms.Compose([transforms.RandomCrop(28, padding=2), transforms.ToTensor(),
                                    transforms.Normalize((0.1307,), (0.3081,))])
    train = datasets.MNIST.sample(train=True, transform=transform)
    loader = DataLoader(train, batch_size=32, shuffle=True)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    losses, first = [], None
    for step, (x, y) in enumerate(loader):
        if step == 0:
            first = x.numpy().copy()
            assert x.shape == (32, 1, 28, 28) and x.dtype == np.float32
            assert y.shape == (32,) and y.dtype == np.int64
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step + 1 == steps:
            break
    return losses, first


def test_mnist_transforms_dataloader_train_end_to_end():
    losses, first = _run()
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.75 * losses[0], losses
    # normalised pixels: the background (0) becomes -0.1307/0.3081
    assert np.isclose(first.min(), -0.1307 / 0.3081, atol=1e-6)
    losses2, first2 = _run()  # manual_seed makes crops, shuffling and init repeat
    np.testing.assert_array_equal(first, first2)
    assert losses == losses2


def test_dataloader_refuses_pil_images_as_torch_does():
    loader = DataLoader(datasets.MNIST.sample(train=False), batch_size=4)
    with pytest.raises(TypeError, match="PIL.Image.*ToTensor"):
        next(iter(loader))


def test_fake_data_repeats_per_index():
    ds = datasets.FakeData(size=6, image_size=(3, 8, 10), num_classes=4,
                           transform=transforms.ToTensor())
    x, y = ds[2]
    assert len(ds) == 6 and x.shape == (3, 8, 10) and 0 <= y < 4
    x2, y2 = ds[2]
    np.testing.assert_array_equal(x.numpy(), x2.numpy())
    assert y == y2
    assert not np.array_equal(ds[3][0].numpy(), x.numpy())
    assert isinstance(datasets.FakeData(2, (1, 4, 4))[0][0], Image.Image)
    with pytest.raises(IndexError, match="out of range"):
        ds[6]
