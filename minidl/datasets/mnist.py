"""MNIST: the IDX-file reader, where the files are looked for, the download, the embedded sample.

``MNIST(train=True)`` looks in ``root`` (if given), then ``$MINIDL_DATA/mnist``, then
``~/.cache/minidl/mnist``, and finally downloads into the cache. ``MNIST.sample()`` needs no
files: it is the first 6,000 training (1,000 test) images, shipped inside the package.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import sys
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from ..data.dataset import Dataset
from ..serialization import new_temporary

SPLITS = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# md5 of the uncompressed files
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]
TIMEOUT_S = 15  # per socket operation, not for the whole file
MEAN, STD = 0.1307, 0.3081
SAMPLE_PATH = Path(__file__).parent / "_sample" / "mnist_sample.npz"
GZIP_MAGIC = b"\x1f\x8b"

HOW_TO_FIX = (
    "To fix: pass --data DIR (or MNIST(root=DIR)) pointing at a folder holding the four IDX files "
    "(gzipped or not), set $MINIDL_DATA to a folder that contains mnist/, or connect to the "
    "network so they can be downloaded to ~/.cache/minidl/mnist. "
    "MNIST.sample() gives an embedded 6,000-image subset that needs no files."
)


class MNISTNotFound(FileNotFoundError):
    """The MNIST files are in none of the places searched and could not be downloaded."""


def read_idx(path, ndim):
    """Read an IDX file of unsigned bytes with ``ndim`` dimensions (gzipped or raw) as uint8."""
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read()
    gzipped = path.suffix == ".gz" or data[:2] == GZIP_MAGIC
    if gzipped:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path}: corrupt or truncated gzip file ({e})") from e

    # Header: magic 0x0000 | type (0x08 = unsigned byte) | ndim, then ndim big-endian uint32 sizes.
    expected_magic = 0x800 | ndim
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: {len(data)} bytes, too short for an IDX header "
                         f"of {header} bytes")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise ValueError(f"{path}: bad magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
                         f"(IDX file of unsigned bytes with {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(dims)  # exact: np.prod wraps around past 2**63
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(f"{path}: {what}: header says shape {dims}, i.e. {expected} bytes, "
                         f"but found {len(data)} bytes{' after decompression' if gzipped else ''}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def load_split(directory, train=True):
    """(images uint8 (N,28,28), labels int64 (N,)) from the IDX files in ``directory``."""
    image_name, label_name = SPLITS[bool(train)]
    image_path, label_path = _locate(directory, image_name), _locate(directory, label_name)
    images, labels = read_idx(image_path, 3), read_idx(label_path, 1)
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{image_path}: images are {images.shape[1]}x{images.shape[2]}, "
                         "expected 28x28")
    if len(images) != len(labels):
        raise ValueError(f"{image_path} has {len(images)} images but {label_path} has "
                         f"{len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{label_path}: label {labels.max()} is outside 0..9")
    return images, labels.astype(np.int64)


def _locate(directory, name):
    """The path of ``name`` (raw preferred, since it loads faster) or ``name.gz``; None if absent."""
    for candidate in (Path(directory) / name, Path(directory) / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _missing(directory, train):
    return [name for name in SPLITS[bool(train)] if _locate(directory, name) is None]


def find_mnist(root=None, train=True, download=True):
    """The directory holding this split's files, searched (and downloaded) as the module says."""
    names = ", ".join(f"{n}[.gz]" for n in SPLITS[bool(train)])
    if root is not None:
        # An explicit root is a promise: a typo must not silently fall back to another copy.
        # DIR and DIR/mnist are both accepted, so --data can name either level.
        root = Path(root).expanduser()
        for directory in (root, root / "mnist"):
            if not _missing(directory, train):
                return directory
        raise MNISTNotFound(f"MNIST: {root} lacks {', '.join(_missing(root, train))} "
                            f"(each may be gzipped; also looked in {root / 'mnist'}). {HOW_TO_FIX}")

    tried = []
    if os.environ.get("MINIDL_DATA"):
        env = Path(os.environ["MINIDL_DATA"]).expanduser()
        # the data root (holding mnist/), or, as --data allows, the mnist folder itself
        tried += [(env / "mnist", "$MINIDL_DATA/mnist"), (env, "$MINIDL_DATA")]
    cache = Path.home() / ".cache" / "minidl" / "mnist"
    tried.append((cache, "cache"))
    for directory, _ in tried:
        if not _missing(directory, train):
            return directory
    lines = [f"  {d} ({why}): missing {', '.join(_missing(d, train))}" for d, why in tried]

    if download:
        try:
            cache.mkdir(parents=True, exist_ok=True)
            for name in _missing(cache, train):
                download_file(name, cache)
            return cache
        except OSError as e:  # MNISTNotFound from download_file, or an unwritable cache
            lines.append(f"  download into {cache}: {e}")
    else:
        lines.append("  download: not tried (download=False)")
    raise MNISTNotFound(f"MNIST not found: looked for {names} in\n" + "\n".join(lines)
                        + f"\n{HOW_TO_FIX}")


def download_file(name, directory):
    """Download ``name``.gz from the first mirror that works, store it uncompressed in
    ``directory`` after checking its md5, and return its path.

    Written to a temporary file in the same directory and renamed, so an interrupted or failed
    download never leaves a partial file under the real name.
    """
    directory = Path(directory)
    errors = []
    for mirror in MIRRORS:
        url = mirror + name + ".gz"
        print(f"minidl: downloading {url}", file=sys.stderr)
        tmp = None
        try:
            tmp, out_file = new_temporary(directory, f".{name}.", ".part")
            md5 = hashlib.md5()
            with out_file as out, \
                    urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, \
                    gzip.GzipFile(fileobj=response) as stream:
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    md5.update(chunk)
                    out.write(chunk)
            if md5.hexdigest() != MD5[name]:
                raise ValueError(f"md5 {md5.hexdigest()} does not match the expected {MD5[name]}")
            os.replace(tmp, directory / name)
            tmp = None
            return directory / name
        except (OSError, EOFError, zlib.error, ValueError) as e:
            errors.append(f"{url}: {e}")
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
    raise MNISTNotFound(f"could not download {name}: " + "; ".join(errors))


class MNIST(Dataset):
    """The MNIST digits: ``ds[i] -> (float32 (1,28,28), int label)``.

    ``.images`` (uint8 (N,28,28)) and ``.labels`` (int64 (N,)) hold the raw data; pixels become
    floats per item or batch (x/255, then standardised with the usual MNIST mean and std when
    ``normalize``), which keeps a float copy of all 60,000 images (188 MB) out of memory.
    """

    def __init__(self, root=None, train=True, download=True, normalize=True):
        directory = find_mnist(root, train, download)
        images, labels = load_split(directory, train)
        self._setup(images, labels, train, normalize, source=str(directory), is_sample=False)

    @classmethod
    def sample(cls, train=True, normalize=True):
        """The embedded sample: the first 6,000 training or 1,000 test images of the real set."""
        split = "train" if train else "test"
        with np.load(SAMPLE_PATH) as f:
            images, labels = f[f"{split}_images"], f[f"{split}_labels"]
        ds = cls.__new__(cls)
        ds._setup(images, labels.astype(np.int64), train, normalize,
                  source=f"embedded sample ({len(images)} images)", is_sample=True)
        return ds

    def _setup(self, images, labels, train, normalize, source, is_sample):
        self.images, self.labels = images, labels
        self.train, self.normalize = bool(train), bool(normalize)
        self.source, self.is_sample = source, is_sample
        # One multiply-add per pixel: (x/255 - mean)/std == x*scale - shift.
        if normalize:
            self._scale, self._shift = np.float32(1 / (255 * STD)), np.float32(MEAN / STD)
        else:
            self._scale, self._shift = np.float32(1 / 255), np.float32(0)

    def _to_float(self, pixels):
        return pixels.astype(np.float32) * self._scale - self._shift

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self._to_float(self.images[index][None]), int(self.labels[index])

    def get_batch(self, indices):
        indices = np.asarray(indices)
        return self._to_float(self.images[indices][:, None]), self.labels[indices]

    def __repr__(self):
        split = "train" if self.train else "test"
        return f"MNIST({split}, {len(self)} images, source={self.source!r})"


def load_mnist_sample(train=True, normalize=True):
    """The embedded MNIST sample (see ``MNIST.sample``)."""
    return MNIST.sample(train=train, normalize=normalize)
