"""MNIST dataset: IDX reading and validation, search order, download, embedded sample.

Real data is read from $MINIDL_DATA/mnist (or ../shared/data/mnist beside the repository);
tests that need it are skipped when it is absent. Nothing here touches the network: downloads
are pointed at file:// URLs.
"""
import gzip
import hashlib
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from minidl.data.dataset import Subset
from minidl.datasets import MNIST, MNISTNotFound, load_mnist_sample
from minidl.datasets import mnist as mnist_module

REPO = Path(__file__).resolve().parent.parent
DATA_ROOT = Path(os.environ.get("MINIDL_DATA") or REPO.parent / "shared" / "data")
MNIST_DIR = DATA_ROOT / "mnist"
TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
needs_data = pytest.mark.skipif(
    not (MNIST_DIR / "t10k-labels-idx1-ubyte.gz").exists()
    and not (MNIST_DIR / "t10k-labels-idx1-ubyte").exists(),
    reason=f"MNIST data not found at {MNIST_DIR}; set MINIDL_DATA",
)


def write_idx(path, array, magic=None, gz=False):
    """Write ``array`` (uint8) as an IDX file; ``magic`` overrides the correct one."""
    array = np.asarray(array, dtype=np.uint8)
    magic = (0x800 | array.ndim) if magic is None else magic
    data = struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_split(directory, marker, n=5, train=False, gz=False):
    """A tiny valid split whose pixels and labels all equal ``marker``, to tell copies apart."""
    directory.mkdir(parents=True, exist_ok=True)
    images_name, labels_name = mnist_module.SPLITS[train]
    suffix = ".gz" if gz else ""
    write_idx(directory / (images_name + suffix), np.full((n, 28, 28), marker), gz=gz)
    write_idx(directory / (labels_name + suffix), np.full(n, marker), gz=gz)
    return directory


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No $MINIDL_DATA, an empty HOME, and mirrors that cannot be reached."""
    monkeypatch.delenv("MINIDL_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(mnist_module, "MIRRORS", [(tmp_path / "no-mirror").as_uri() + "/"])
    return tmp_path


@pytest.fixture(scope="module")
def train_set():
    return MNIST(root=MNIST_DIR, train=True, normalize=False)


# ---- the real files -------------------------------------------------------------------------

@needs_data
def test_real_train_and_test_sets(train_set):
    test_set = MNIST(root=MNIST_DIR, train=False)
    assert len(train_set) == 60000 and len(test_set) == 10000
    assert train_set.images.shape == (60000, 28, 28) and train_set.images.dtype == np.uint8
    assert train_set.labels.dtype == np.int64
    assert train_set.labels.min() == 0 and train_set.labels.max() == 9
    assert np.bincount(train_set.labels).min() > 5000  # every digit is well represented
    assert train_set.labels[0] == 5 and test_set.labels[0] == 7
    assert train_set.source == str(MNIST_DIR) and not train_set.is_sample
    # The md5s of the uncompressed files are the published ones.
    assert hashlib.md5(gzip.open(MNIST_DIR / "t10k-labels-idx1-ubyte.gz").read()).hexdigest() \
        == mnist_module.MD5["t10k-labels-idx1-ubyte"]


@needs_data
def test_gz_and_raw_read_the_same(tmp_path):
    for name in TEST_FILES:
        (tmp_path / name).write_bytes(gzip.open(MNIST_DIR / (name + ".gz")).read())
    raw, gz = MNIST(root=tmp_path, train=False), MNIST(root=MNIST_DIR, train=False)
    np.testing.assert_array_equal(raw.images, gz.images)
    np.testing.assert_array_equal(raw.labels, gz.labels)


@needs_data
def test_normalisation_of_the_real_set(train_set):
    x, _ = MNIST(root=MNIST_DIR, train=True).get_batch(np.arange(60000))
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3


# ---- item, batch, normalisation -------------------------------------------------------------

def test_getitem_and_get_batch():
    ds = MNIST.sample(normalize=False)
    x, y = ds[3]
    assert x.shape == (1, 28, 28) and x.dtype == np.float32 and isinstance(y, int)
    np.testing.assert_allclose(x[0], ds.images[3] / 255, rtol=1e-6)
    X, Y = ds.get_batch([3, 0, 7])
    assert X.shape == (3, 1, 28, 28) and X.dtype == np.float32
    assert Y.shape == (3,) and Y.dtype == np.int64
    np.testing.assert_array_equal(X[0], x)
    assert 0 <= X.min() and X.max() <= 1

    norm = MNIST.sample(normalize=True)
    Xn, Yn = norm.get_batch([3, 0, 7])
    np.testing.assert_allclose(Xn, (X - 0.1307) / 0.3081, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(Yn, Y)
    np.testing.assert_array_equal(norm[0][0], Xn[1])
    # Subset (and so random_split and DataLoader) go through get_batch.
    Xs, Ys = Subset(norm, [7, 3]).get_batch([1, 0])
    np.testing.assert_array_equal(Xs, Xn[[0, 2]])


# ---- embedded sample ------------------------------------------------------------------------

def test_sample():
    assert mnist_module.SAMPLE_PATH.stat().st_size < 1.5e6
    train, test = MNIST.sample(), load_mnist_sample(train=False)
    assert len(train) == 6000 and len(test) == 1000
    assert train.is_sample and train.source == "embedded sample (6000 images)"
    assert train.images.dtype == np.uint8 and train.images.shape == (6000, 28, 28)
    assert train.labels.dtype == np.int64 and set(np.unique(train.labels)) == set(range(10))
    assert train.labels[0] == 5 and test.labels[0] == 7


@needs_data
def test_sample_is_the_start_of_the_real_set(train_set):
    sample = MNIST.sample()
    np.testing.assert_array_equal(sample.images, train_set.images[:6000])
    np.testing.assert_array_equal(sample.labels, train_set.labels[:6000])
    real_test = MNIST(root=MNIST_DIR, train=False)
    np.testing.assert_array_equal(load_mnist_sample(False).images, real_test.images[:1000])


# ---- bad files ------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("cut", [-1, +3])  # one byte short, three bytes too many
def test_wrong_size_names_the_file(tmp_path, gz, cut):
    write_split(tmp_path, 1, gz=gz)
    path = tmp_path / ("t10k-images-idx3-ubyte" + (".gz" if gz else ""))
    data = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    data = data[:cut] if cut < 0 else data + b"\0" * cut
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(ValueError, match=str(path)) as info:
        MNIST(root=tmp_path, train=False)
    assert str(16 + 5 * 28 * 28) in str(info.value)  # the size the header promises
    assert str(16 + 5 * 28 * 28 + cut) in str(info.value)  # the size found


def test_truncated_gzip_names_the_file(tmp_path):
    write_split(tmp_path, 1, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match=f"{path}.*gzip"):
        MNIST(root=tmp_path, train=False)


@pytest.mark.parametrize("name, magic", [("t10k-images-idx3-ubyte", 0x801),
                                         ("t10k-labels-idx1-ubyte", 0x803)])
def test_bad_magic_names_the_file(tmp_path, name, magic):
    write_split(tmp_path, 1)
    array = np.zeros((5, 28, 28) if "images" in name else (5,))
    write_idx(tmp_path / name, array, magic=magic)
    with pytest.raises(ValueError, match=f"{tmp_path / name}.*magic"):
        MNIST(root=tmp_path, train=False)


def test_image_and_label_counts_must_agree(tmp_path):
    write_split(tmp_path, 1)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.ones(4))
    with pytest.raises(ValueError, match="5 images.*4 labels"):
        MNIST(root=tmp_path, train=False)


# ---- where the files are looked for ---------------------------------------------------------

def test_explicit_root_missing_files_does_not_fall_back(clean_env, monkeypatch):
    tmp = clean_env
    monkeypatch.setenv("MINIDL_DATA", str(write_split(tmp / "env" / "mnist", 2).parent))
    (tmp / "empty").mkdir()
    (tmp / "empty" / "t10k-labels-idx1-ubyte").write_bytes(b"")  # one present, one missing
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte") as info:
        MNIST(root=tmp / "empty", train=False)
    assert "t10k-labels" not in str(info.value).split("lacks")[1].split("(")[0]
    # root may name the folder of the files or the one above it
    assert MNIST(root=tmp / "env", train=False).labels[0] == 2


def test_search_order(clean_env, monkeypatch):
    tmp = clean_env
    write_split(tmp / "root", 1)
    write_split(tmp / "env" / "mnist", 2)
    write_split(tmp / "home" / ".cache" / "minidl" / "mnist", 3, gz=True)
    monkeypatch.setenv("MINIDL_DATA", str(tmp / "env"))

    assert MNIST(root=tmp / "root", train=False, download=False).labels[0] == 1
    ds = MNIST(train=False, download=False)
    assert ds.labels[0] == 2 and ds.source == str(tmp / "env" / "mnist")
    monkeypatch.setenv("MINIDL_DATA", str(tmp / "env" / "mnist"))  # the mnist folder itself
    assert MNIST(train=False, download=False).labels[0] == 2
    monkeypatch.setenv("MINIDL_DATA", str(tmp / "nothing-here"))
    assert MNIST(train=False, download=False).labels[0] == 3
    monkeypatch.delenv("MINIDL_DATA")
    assert MNIST(train=False, download=False).labels[0] == 3
    # The train split is in none of them, so it is not found, and the message says where it looked.
    with pytest.raises(MNISTNotFound) as info:
        MNIST(train=True, download=True)
    message = str(info.value)
    for expected in ("train-images-idx3-ubyte", str(tmp / "home" / ".cache" / "minidl" / "mnist"),
                     "no-mirror", "--data DIR", "$MINIDL_DATA", "network"):
        assert expected in message


def test_not_found_without_download(clean_env):
    with pytest.raises(MNISTNotFound, match="download=False"):
        MNIST(train=False, download=False)
    assert issubclass(MNISTNotFound, FileNotFoundError)


# ---- download -------------------------------------------------------------------------------

@pytest.fixture
def mirror(tmp_path):
    """A file:// mirror serving the gzipped test split (real files if present, else synthetic)."""
    directory = tmp_path / "mirror"
    if (MNIST_DIR / "t10k-labels-idx1-ubyte.gz").exists():
        directory.mkdir()
        for name in TEST_FILES:
            shutil.copy(MNIST_DIR / (name + ".gz"), directory)
        md5s = {}
    else:
        write_split(directory, 4, gz=True)
        md5s = {name: hashlib.md5(gzip.open(directory / (name + ".gz")).read()).hexdigest()
                for name in TEST_FILES}
    return directory, md5s


def test_download_checks_md5_and_renames_atomically(clean_env, mirror, monkeypatch):
    tmp = clean_env
    directory, md5s = mirror
    monkeypatch.setattr(mnist_module, "MD5", {**mnist_module.MD5, **md5s})
    # The first mirror is missing, so the second one is used.
    monkeypatch.setattr(mnist_module, "MIRRORS", [(tmp / "gone").as_uri() + "/",
                                                  directory.as_uri() + "/"])
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(mnist_module.os, "replace",
                        lambda src, dst: (renames.append((Path(src), Path(dst))),
                                          real_replace(src, dst)))

    ds = MNIST(train=False)
    cache = tmp / "home" / ".cache" / "minidl" / "mnist"
    assert ds.source == str(cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted(TEST_FILES)  # no leftovers
    assert [dst for _, dst in renames] == [cache / name for name in TEST_FILES]
    assert all(src.parent == cache and src.name.endswith(".part") for src, _ in renames)
    for name in TEST_FILES:  # stored uncompressed
        assert (cache / name).read_bytes() == gzip.open(directory / (name + ".gz")).read()
    # Found in the cache the next time, with no download.
    assert MNIST(train=False, download=False).source == str(cache)


def test_download_with_wrong_md5_leaves_no_file(clean_env, mirror, monkeypatch):
    tmp = clean_env
    directory, md5s = mirror
    monkeypatch.setattr(mnist_module, "MD5", {**mnist_module.MD5, **md5s,
                                              "t10k-images-idx3-ubyte": "0" * 32})
    monkeypatch.setattr(mnist_module, "MIRRORS", [directory.as_uri() + "/"])
    with pytest.raises(MNISTNotFound, match="md5"):
        MNIST(train=False)
    cache = tmp / "home" / ".cache" / "minidl" / "mnist"
    assert list(cache.iterdir()) == []
