"""ImageFolder: a folder of photos with one sub-folder per class, read with Pillow.

    root/
      cats/  a.jpg  b.png  notes.txt      <- notes.txt: skipped, one warning
      dogs/  c.jpeg d/e.jpg               <- nested folders count for their top-level class

Classes are the sorted names of the sub-folders of ``root`` (hidden ones, like ``.git``, are
left out), so label numbers do not depend on the order the file system lists them in.

Symbolic links: a class folder may itself be a link. Inside it, a link (to a folder or a file)
is followed only when its real path lies inside the same class folder, and every real folder
and file is visited once, so a link loop (``a/loop -> .``) or a link to the parent or to another
class (``a/up -> ..``) cannot duplicate photos or give one photo two labels; such links are
skipped with a warning like any other skipped entry.

Files are checked once, when the folder is scanned: a name without an image extension, or an
image file that Pillow cannot identify (``Image.open(...).verify()``: header, and for PNG the
checksums), is skipped with one warning line each, logged on ``minidl.datasets.image_folder``
(printed to stderr when logging is not configured). verify() does not decode pixels, so a file
whose header is fine but whose data is truncated still passes; reading it later raises
``minidl.vision.transforms.ImageReadError`` naming the file.
"""
from __future__ import annotations

import logging
import os

from ..data.dataset import Dataset

__all__ = ["ImageFolder", "IMG_EXTENSIONS"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".gif", ".tif",
                  ".tiff", ".webp")
log = logging.getLogger(__name__)


def _is_readable_image(path):
    """'' when Pillow recognises the file as an image, else why not."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as e:  # UnidentifiedImageError, SyntaxError, struct.error, OSError, ...
        return f"{type(e).__name__}: {e}"
    return ""


class ImageFolder(Dataset):
    """Labelled images from ``root/<class>/**/<file>``.

    ``ds[i]`` is ``(x, label)``: ``x`` is the image preprocessed for ImageNet models (float32,
    3 x 224 x 224, see ``minidl.vision.transforms.preprocess``), or ``transform(image)`` of the
    RGB ``PIL.Image`` when a transform is given.

    Attributes: ``classes`` (sorted names), ``class_to_idx``, ``samples`` (list of
    ``(path, label)``), ``targets`` (the labels alone), ``skipped`` (list of ``(path, reason)``).
    ``verify=False`` skips the Pillow check at scan time (only extensions are checked).
    """

    def __init__(self, root, transform=None, verify=True):
        self.transform = transform
        self._scan(root, verify)

    def _scan(self, root, verify, allow_empty=False):
        """Find the classes and the files (the attributes above); shared with the torchvision-
        style folders of ``minidl.vision.datasets``, which decide per file in ``_file_problem``."""
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"ImageFolder: {self.root} is not a directory")
        self.skipped = []
        entries = sorted(os.scandir(self.root), key=lambda e: e.name)
        self.classes = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
        if not self.classes:
            raise FileNotFoundError(f"ImageFolder: {self.root} has no class sub-folders "
                                    f"(expected {self.root}/<class name>/<image files>)")
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        for e in entries:
            if e.is_file():
                self._skip(e.path, "not inside a class folder")
        self.samples = []
        self._seen = set()  # real paths of the folders and files already visited
        for name in self.classes:
            found = self._scan_class(os.path.join(self.root, name), self.class_to_idx[name], verify)
            if not found:
                log.warning("ImageFolder: class folder %s holds no readable images",
                            os.path.join(self.root, name))
        if not self.samples and not allow_empty:
            raise FileNotFoundError(f"ImageFolder: no readable images under {self.root} "
                                    f"(extensions: {', '.join(IMG_EXTENSIONS)})")
        self.targets = [label for _, label in self.samples]

    def _skip(self, path, reason):
        self.skipped.append((path, reason))
        log.warning("ImageFolder: skipping %s: %s", path, reason)

    def _inside(self, path, real_folder):
        """(real path, whether it may be visited): inside ``real_folder`` and not seen yet."""
        real = os.path.realpath(path)
        if os.path.commonpath([real, real_folder]) != real_folder:
            self._skip(path, f"a link that leads out of its class folder (to {real})")
            return real, False
        if real in self._seen:
            self._skip(path, f"already included (it is {real})")
            return real, False
        return real, True

    def _scan_class(self, folder, label, verify):
        count = 0
        real_folder = os.path.realpath(folder)
        if real_folder in self._seen:  # a class folder that links to another class
            self._skip(folder, f"already included (it is {real_folder})")
            return 0
        self._seen.add(real_folder)
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            keep = []
            for d in sorted(d for d in dirnames if not d.startswith(".")):
                real, ok = self._inside(os.path.join(dirpath, d), real_folder)
                if ok:
                    self._seen.add(real)
                    keep.append(d)
            dirnames[:] = keep
            for fname in sorted(filenames):
                path = os.path.join(dirpath, fname)
                real, ok = self._inside(path, real_folder)
                if not ok:
                    continue
                self._seen.add(real)
                problem = self._file_problem(path, verify)
                if problem is None:  # left out on purpose (an is_valid_file said no): no warning
                    continue
                if problem:
                    self._skip(path, problem)
                    continue
                self.samples.append((path, label))
                count += 1
        return count

    def _file_problem(self, path, verify):
        """'' to take the file, else why it is skipped (None: skipped without a warning)."""
        if not path.lower().endswith(IMG_EXTENSIONS):
            return "not an image file (by its extension)"
        problem = _is_readable_image(path) if verify else ""
        return f"Pillow cannot read it ({problem})" if problem else ""

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        from ..vision.transforms import load_image, preprocess

        path, label = self.samples[index]
        if self.transform is None:
            return preprocess(path), label
        return self.transform(load_image(path)), label

    def __repr__(self):
        return (f"ImageFolder({self.root!r}: {len(self.samples)} images in {len(self.classes)} "
                f"classes, {len(self.skipped)} files skipped)")
