"""torchvision's datasets (``torchvision.datasets``) with its constructors: MNIST, FashionMNIST,
KMNIST, CIFAR10, CIFAR100, DatasetFolder and ImageFolder.

Samples are what torchvision gives, ``(PIL image, int)``, unless ``transform`` /
``target_transform`` change them; ``minidl.vision.transforms.ToTensor()`` makes the image a
Tensor that ``minidl.data.DataLoader`` batches. Nothing is fetched from the network except
MNIST's own files (``download=True``, from the mirrors ``minidl.datasets`` uses); for the
others, ``download=True`` unpacks the archive when it lies in ``root`` and otherwise says where
to get it.
"""
from __future__ import annotations

import importlib
import os
import pickle
import tarfile

import numpy as np
from PIL import Image

from ..data.dataset import Dataset
from ..datasets import mnist as _mnist
from ..datasets.image_folder import ImageFolder as _ScannedFolder
from ..datasets.image_folder import _is_readable_image
from ..tensor import Tensor
from .transforms import load_image
from .transforms.functional import to_pil_image

__all__ = ["VisionDataset", "FakeData", "MNIST", "FashionMNIST", "KMNIST", "CIFAR10", "CIFAR100",
           "DatasetFolder", "ImageFolder", "DatasetNotFoundError", "IMG_EXTENSIONS",
           "default_loader", "has_file_allowed_extension", "find_classes"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class DatasetNotFoundError(FileNotFoundError, RuntimeError):
    """A dataset's files are not where they were looked for. A RuntimeError, as torchvision
    raises, and a FileNotFoundError, as minidl's other datasets do."""


class VisionDataset(Dataset):
    """The common part: ``root``, ``transform``, ``target_transform`` and the repr."""

    _repr_indent = 4

    def __init__(self, root, transform=None, target_transform=None):
        if root is not None:
            root = os.path.expanduser(os.fspath(root))
        self.root = root
        for name, fn in (("transform", transform), ("target_transform", target_transform)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{type(self).__name__}: {name} should be callable, got {fn!r}")
        self.transform, self.target_transform = transform, target_transform

    def _apply(self, img, target):
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"Number of datapoints: {len(self)}"]
        if self.root is not None:
            lines.append(f"Root location: {self.root}")
        lines += [line for line in self.extra_repr().splitlines() if line]
        for name in ("transform", "target_transform"):
            fn = getattr(self, name)
            if fn is not None:
                text = repr(fn).splitlines()
                label = "Transform: " if name == "transform" else "Target transform: "
                lines += [label + text[0]] + [" " * len(label) + t for t in text[1:]]
        pad = " " * self._repr_indent
        return "\n".join([f"Dataset {type(self).__name__}"] + [pad + line for line in lines])


class FakeData(VisionDataset):
    """Random images, ``ds[i] -> (PIL image, int label)``: the same pair for the same index
    (drawn from a generator seeded by ``index + random_offset``), for trying a pipeline out.
    ``image_size`` is (C, H, W); pixels are standard normal values taken as [0, 1] by
    ToPILImage, as torchvision's."""

    def __init__(self, size=1000, image_size=(3, 224, 224), num_classes=10, transform=None,
                 target_transform=None, random_offset=0):
        super().__init__(None, transform, target_transform)
        if len(image_size) != 3 or image_size[0] not in (1, 3, 4):
            raise ValueError(f"FakeData: image_size should be (C, H, W) with 1, 3 or 4 "
                             f"channels, got {image_size}")
        self.size, self.num_classes = int(size), int(num_classes)
        self.image_size, self.random_offset = tuple(image_size), int(random_offset)

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        if not -self.size <= index < self.size:
            raise IndexError(f"{type(self).__name__} index out of range: {index} for "
                             f"{self.size} items")
        index %= self.size
        gen = np.random.default_rng(index + self.random_offset)
        pixels = gen.standard_normal(self.image_size).astype(np.float32)
        target = int(gen.integers(0, self.num_classes))
        return self._apply(to_pil_image(Tensor(pixels)), target)


# ---- the MNIST family (IDX files) --------------------------------------------------------------
class MNIST(VisionDataset):
    """MNIST digits: ``ds[i] -> (PIL image of mode "L", 28x28; int label)``.

    The IDX files (raw or ``.gz``) are looked for in ``root/MNIST/raw`` (torchvision's layout),
    ``root/MNIST``, ``root/mnist`` and ``root`` itself; ``root=None`` searches
    ``$MINIDL_DATA/mnist`` and ``~/.cache/minidl/mnist`` as ``minidl.datasets.MNIST`` does.
    ``data`` (uint8 Tensor (N, 28, 28)) and ``targets`` (int64 Tensor (N,)) hold the split.
    ``MNIST.sample()`` is the subset shipped inside minidl (6,000 training / 1,000 test images).
    """

    classes = ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six",
               "7 - seven", "8 - eight", "9 - nine"]
    download_hint = "minidl downloads MNIST itself with download=True"

    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        super().__init__(root, transform, target_transform)
        self.train = bool(train)
        directory = self._find(download)
        images, labels = _mnist.load_split(directory, self.train)
        self._set(images, labels, str(directory))

    @classmethod
    def sample(cls, train=True, transform=None, target_transform=None):
        """The MNIST sample embedded in minidl (the first 6,000 training or 1,000 test images
        of the real set), as an MNIST dataset that needs no files."""
        if cls is not MNIST:
            raise TypeError(f"{cls.__name__}.sample: only MNIST ships an embedded sample")
        ds = cls.__new__(cls)
        VisionDataset.__init__(ds, None, transform, target_transform)
        ds.train = bool(train)
        split = "train" if train else "test"
        with np.load(_mnist.SAMPLE_PATH) as f:
            ds._set(f[f"{split}_images"], f[f"{split}_labels"], "embedded sample")
        return ds

    def _set(self, images, labels, source):
        self._images, self._labels = images, labels.astype(np.int64)
        self.data, self.targets = Tensor(self._images), Tensor(self._labels)
        self.source = source

    @property
    def raw_folder(self):
        return os.path.join(self.root, type(self).__name__, "raw")

    @property
    def class_to_idx(self):
        return {name: i for i, name in enumerate(self.classes)}

    def _candidates(self):
        name = type(self).__name__
        return [self.raw_folder, os.path.join(self.root, name),
                os.path.join(self.root, name.lower()), self.root]

    def _find(self, download):
        if self.root is None and type(self) is MNIST:
            return _mnist.find_mnist(None, self.train, download)
        if self.root is None:
            raise TypeError(f"{type(self).__name__}: root must be a folder, got None")
        candidates = self._candidates()
        for directory in candidates:
            if not _mnist._missing(directory, self.train):
                return directory
        if download and type(self) is MNIST:
            os.makedirs(self.raw_folder, exist_ok=True)
            for name in _mnist._missing(self.raw_folder, self.train):
                _mnist.download_file(name, self.raw_folder)
            return self.raw_folder
        names = ", ".join(f"{n}[.gz]" for n in _mnist.SPLITS[self.train])
        raise DatasetNotFoundError(
            f"{type(self).__name__}: dataset not found: no {names} in "
            f"{' or '.join(candidates)}. Put the four IDX files in {self.raw_folder} "
            f"({self.download_hint}).")

    def __len__(self):
        return len(self._images)

    def __getitem__(self, index):
        img = Image.fromarray(self._images[index], mode="L")
        return self._apply(img, int(self._labels[index]))

    def extra_repr(self):
        return f"Split: {'Train' if self.train else 'Test'}"


class FashionMNIST(MNIST):
    """Zalando's Fashion-MNIST: MNIST's format and sizes, clothes instead of digits; files in
    ``root/FashionMNIST/raw``."""

    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot"]
    download_hint = ("no network here: download them from "
                     "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/")


class KMNIST(MNIST):
    """Kuzushiji-MNIST: files in ``root/KMNIST/raw``."""

    classes = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]
    download_hint = ("no network here: download them from "
                     "https://github.com/rois-codh/kmnist")


# ---- CIFAR (python pickles) ---------------------------------------------------------------------
_PICKLE_GLOBALS = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
                   ("numpy.core.multiarray", "_reconstruct"),
                   ("numpy._core.multiarray", "_reconstruct"),
                   ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                   ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}


class _BatchUnpickler(pickle.Unpickler):
    """Reads the CIFAR batch files: dicts, lists, strings and numpy arrays, and nothing that
    could run code."""

    def find_class(self, module, name):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch file")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core."):]  # NumPy 2's name for it
        return getattr(importlib.import_module(module), name)


def _load_batch(path):
    try:
        with open(path, "rb") as f:
            entry = _BatchUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a readable CIFAR batch file ({type(e).__name__}: {e})") \
            from e
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: not a CIFAR batch file (holds a {type(entry).__name__}, "
                         "expected a dict)")
    return entry


class CIFAR10(VisionDataset):
    """CIFAR-10 from the python version's batch files in ``root/cifar-10-batches-py``:
    ``ds[i] -> (PIL RGB image 32x32, int label)``; ``data`` is uint8 (N, 32, 32, 3) and
    ``targets`` a list of ints, as in torchvision."""

    base_folder = "cifar-10-batches-py"
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    filename = "cifar-10-python.tar.gz"
    train_list = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"]
    test_list = ["test_batch"]
    meta = {"filename": "batches.meta", "key": "label_names"}
    labels_key = "labels"

    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        super().__init__(root, transform, target_transform)
        if self.root is None:
            raise TypeError(f"{type(self).__name__}: root must be a folder, got None")
        self.train = bool(train)
        folder = os.path.join(self.root, self.base_folder)
        names = self.train_list if self.train else self.test_list
        if download and self._missing(folder, names):
            self._extract()
        missing = self._missing(folder, names)
        if missing:
            raise DatasetNotFoundError(
                f"{type(self).__name__}: dataset not found: {folder} lacks "
                f"{', '.join(missing)}. There is no network here: download {self.url} "
                f"and unpack it into {self.root} (tar xzf {self.filename}), or put the archive "
                f"in {self.root} and pass download=True.")
        data, targets = [], []
        for name in names:
            path = os.path.join(folder, name)
            entry = _load_batch(path)
            if "data" not in entry or self.labels_key not in entry:
                raise ValueError(f"{path}: a CIFAR batch needs the keys 'data' and "
                                 f"{self.labels_key!r}, found {sorted(entry)}")
            x = np.asarray(entry["data"], dtype=np.uint8)
            if x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
                raise ValueError(f"{path}: 'data' has shape {x.shape}, expected (N, 3072)")
            labels = [int(v) for v in entry[self.labels_key]]
            if len(labels) != len(x):
                raise ValueError(f"{path}: {len(x)} images but {len(labels)} labels")
            data.append(x)
            targets += labels
        self.data = np.vstack(data).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
        self.targets = targets
        self._load_meta(folder)
        if targets and not 0 <= min(targets) <= max(targets) < len(self.classes):
            raise ValueError(f"{folder}: labels run from {min(targets)} to {max(targets)}, "
                             f"outside the {len(self.classes)} classes")

    @staticmethod
    def _missing(folder, names):
        return [n for n in names if not os.path.isfile(os.path.join(folder, n))]

    def _extract(self):
        archive = os.path.join(self.root, self.filename)
        if not os.path.isfile(archive):
            return  # the error that follows says where to get it
        with tarfile.open(archive, "r:gz") as tar:
            try:
                tar.extractall(self.root, filter="data")  # no links or paths out of root
            except TypeError:  # Python before 3.10.12 has no filter
                tar.extractall(self.root)

    def _load_meta(self, folder):
        path = os.path.join(folder, self.meta["filename"])
        if not os.path.isfile(path):
            raise DatasetNotFoundError(f"{type(self).__name__}: {path} (the class names) is "
                                       f"missing; it comes with the batches in {self.url}")
        entry = _load_batch(path)
        if self.meta["key"] not in entry:
            raise ValueError(f"{path}: no {self.meta['key']!r} entry (found {sorted(entry)})")
        self.classes = [str(c) for c in entry[self.meta["key"]]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        return self._apply(Image.fromarray(self.data[index]), self.targets[index])

    def extra_repr(self):
        return f"Split: {'Train' if self.train else 'Test'}"


class CIFAR100(CIFAR10):
    """CIFAR-100 (the 100 fine labels) from ``root/cifar-100-python``."""

    base_folder = "cifar-100-python"
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    filename = "cifar-100-python.tar.gz"
    train_list = ["train"]
    test_list = ["test"]
    meta = {"filename": "meta", "key": "fine_label_names"}
    labels_key = "fine_labels"


# ---- folders of files ---------------------------------------------------------------------------
def default_loader(path):
    """An image file as an upright RGB PIL image (``minidl.vision.transforms.load_image``:
    unlike torchvision's pil_loader, the EXIF orientation is applied)."""
    return load_image(path)


def has_file_allowed_extension(filename, extensions):
    exts = extensions if isinstance(extensions, str) else tuple(extensions)
    return filename.lower().endswith(exts)


def find_classes(directory):
    """(sorted class folder names, {name: index}); hidden folders are left out."""
    classes = sorted(e.name for e in os.scandir(directory)
                     if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
    return classes, {name: i for i, name in enumerate(classes)}


class DatasetFolder(_ScannedFolder, VisionDataset):
    """``root/<class>/**/<file>``, as torchvision's: ``ds[i] -> (loader(path), class index)``.

    Files are taken by ``extensions`` or by ``is_valid_file(path)`` (exactly one of the two).
    The scan is ``minidl.datasets.ImageFolder``'s: classes are the sorted sub-folders (hidden
    ones left out), links may not lead out of their class folder or repeat a file, files with
    another extension are skipped with one warning each (files refused by ``is_valid_file``
    silently), and ``verify=True`` also opens each image once to skip unreadable ones.
    A class without files raises FileNotFoundError unless ``allow_empty``.
    Attributes: ``classes``, ``class_to_idx``, ``samples`` ((path, index) pairs), ``targets``,
    ``skipped`` ((path, reason) pairs).
    """

    def __init__(self, root, loader, extensions=None, transform=None, target_transform=None,
                 is_valid_file=None, allow_empty=False, *, verify=False):
        VisionDataset.__init__(self, root, transform, target_transform)
        if (extensions is None) == (is_valid_file is None):
            raise ValueError("Both extensions and is_valid_file cannot be None or not None at "
                             "the same time")
        if not callable(loader):
            raise TypeError(f"{type(self).__name__}: loader should be callable, got {loader!r}")
        if is_valid_file is not None and not callable(is_valid_file):
            raise TypeError(f"{type(self).__name__}: is_valid_file should be callable, got "
                            f"{is_valid_file!r}")
        self.loader = loader
        self.extensions = None if extensions is None else (
            (extensions,) if isinstance(extensions, str) else tuple(extensions))
        self.is_valid_file = is_valid_file
        self._scan(self.root, verify, allow_empty=True)
        counts = {c: 0 for c in self.classes}
        for _, label in self.samples:
            counts[self.classes[label]] += 1
        empty = [c for c, n in counts.items() if n == 0]
        if empty and not allow_empty:
            msg = f"Found no valid file for the classes {', '.join(empty)}. "
            if self.extensions is not None:
                msg += f"Supported extensions are: {', '.join(self.extensions)}"
            raise FileNotFoundError(msg)

    @staticmethod
    def find_classes(directory):
        return find_classes(directory)

    def _file_problem(self, path, verify):
        if self.is_valid_file is not None:
            return "" if self.is_valid_file(path) else None
        if not has_file_allowed_extension(path, self.extensions):
            return f"not a {'/'.join(self.extensions)} file"
        problem = _is_readable_image(path) if verify else ""
        return f"Pillow cannot read it ({problem})" if problem else ""

    def __getitem__(self, index):
        path, target = self.samples[index]
        return self._apply(self.loader(path), target)

    def __len__(self):
        return len(self.samples)

    __repr__ = VisionDataset.__repr__


class ImageFolder(DatasetFolder):
    """Images in ``root/<class>/**/<file>`` (torchvision's extensions), loaded as RGB PIL
    images; ``imgs`` is ``samples``."""

    def __init__(self, root, transform=None, target_transform=None, loader=default_loader,
                 is_valid_file=None, allow_empty=False, *, verify=False):
        super().__init__(root, loader, IMG_EXTENSIONS if is_valid_file is None else None,
                         transform=transform, target_transform=target_transform,
                         is_valid_file=is_valid_file, allow_empty=allow_empty, verify=verify)
        self.imgs = self.samples
