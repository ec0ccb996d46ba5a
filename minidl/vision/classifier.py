"""Teach ResNet-50 new classes from a folder of photos: a linear classifier on its features.

    from minidl.vision import ImageClassifier

    clf = ImageClassifier.fit("photos/", weights="IMAGENET1K_V2")   # photos/<class>/<images>
    report = clf.evaluate()            # the held-out 20%: accuracy, confusion matrix, ...
    clf.contact_sheet("missed.png")    # the photos it got wrong
    clf.predict(["new.jpg"])           # [("cats", 0.97)]
    clf.save("my_classifier/")
    clf = ImageClassifier.load("my_classifier/", weights="IMAGENET1K_V2")

Each photo becomes ResNet-50's 2048-d pooled feature vector, computed in batches and cached on
disk under the sha1 of the file's bytes and of the weights (``cache_dir``, default
``$MINIDL_CACHE`` or ``~/.cache/minidl``, then ``features/``), so a second run skips the
network and never even loads the weights. The photos are split with
``random_split(..., 1 - test_fraction, seed=split_seed)``, and a softmax classifier
(``nn.Linear(2048, classes)``) is trained on the training features by minibatch SGD with
momentum.

``weights`` is what ``minidl.models.resnet50(weights=...)`` takes (a ``.pth``, ``.npz`` or
``.safetensors`` path, or "IMAGENET1K_V1"/"IMAGENET1K_V2" for torchvision's cached files), or
"random": a seeded random network, announced loudly, whose features mean little.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile

import numpy as np

import minidl
import minidl.nn.functional as F
from minidl import nn, optim
from minidl.data import DataLoader, Dataset, TensorDataset, random_split
from minidl.models import get_model
from minidl.models.weights import resolve_weights_path
from minidl.serialization import new_temporary

from .transforms import ImageReadError, load_image, preprocess

__all__ = ["ImageClassifier", "FeatureCache", "extract_features", "train_classifier",
           "confusion_matrix", "per_class_scores", "format_confusion", "format_per_class",
           "contact_sheet", "resolve_weights", "build_backbone", "RANDOM", "ARCHES",
           "feature_dim"]

RANDOM = "random"
PREPROCESS_TAG = "resize256-crop224-v1"  # part of the cache key: change it if preprocess changes
FEATURES = 2048  # ResNet-50's (the default arch); ResNet-18 and -34 give 512
# the backbones whose pooled features the classifier can use: torchvision's ResNet family
ARCHES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
          "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2")


def check_arch(arch):
    if arch not in ARCHES:
        raise ValueError(f"ImageClassifier: arch must be one of {', '.join(ARCHES)}, got {arch!r}")
    return arch


def feature_dim(arch):
    """The length of ``arch``'s pooled feature vector: 512 for ResNet-18/34, 2048 otherwise."""
    return 512 if check_arch(arch) in ("resnet18", "resnet34") else FEATURES


# ---- the backbone ------------------------------------------------------------------------------
def file_sha1(path, chunk=1 << 20):
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


_ARCH_TITLES = {"resnet50": "ResNet-50"}


def warn_random_weights(seed, what="predictions", arch="resnet50"):
    line = "!" * 100
    title = _ARCH_TITLES.get(arch, arch)
    print(f"{line}\n!!! WARNING: --weights random: {title} runs on RANDOM weights (seed {seed}); "
          f"its {what} are MEANINGLESS.\n!!! Use real weights: a torchvision .pth, a converted .npz, "
          f"a .safetensors file, or IMAGENET1K_V2 (torchvision's cached download).\n{line}",
          file=sys.stderr, flush=True)


def resolve_weights(weights, seed=0, what="predictions", arch="resnet50"):
    """Check ``weights`` without loading it -> (source, id). ``source`` is a file path or
    "random"; the id names the weights in caches and saved classifiers: the sha1 of the file's
    bytes, or "random-seed<N>" ("random-<arch>-seed<N>" for another arch than ResNet-50)
    after a loud warning. A weights name ("IMAGENET1K_V1") is ``arch``'s."""
    if isinstance(weights, str) and weights == RANDOM:
        warn_random_weights(seed, what, arch)
        return RANDOM, f"random-seed{seed}" if arch == "resnet50" else f"random-{arch}-seed{seed}"
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be a file path, a torchvision weights name or 'random', "
                        f"got {type(weights).__name__}")
    path = resolve_weights_path(weights, arch=arch)  # a name says which cached file it found
    return path, "sha1-" + file_sha1(path)


def build_backbone(source, device="cpu", seed=0, arch="resnet50"):
    """The ``arch`` network (ResNet-50 by default) in eval mode on ``device``, from a weights
    path or "random" (seeded)."""
    if source == RANDOM:
        minidl.manual_seed(seed)
        model = get_model(check_arch(arch))
    else:
        model = get_model(check_arch(arch), weights=source)
    return model.eval().to(device)


# ---- feature cache -----------------------------------------------------------------------------
def default_cache_dir():
    return os.environ.get("MINIDL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "minidl")


class FeatureCache:
    """One ``.npy`` per image under ``<root>/features/<weights id>-<preprocessing>/<sha1>.npy``.

    Keyed by content, not by path: renaming or moving photos keeps their features, and an edited
    photo gets new ones.
    """

    def __init__(self, root, weights_id, dim=FEATURES):
        self.dim = dim
        self.dir = os.path.join(os.fspath(root), "features", f"{weights_id}-{PREPROCESS_TAG}")
        os.makedirs(self.dir, exist_ok=True)

    @staticmethod
    def key(path):
        return file_sha1(path)

    def _path(self, key):
        return os.path.join(self.dir, key + ".npy")

    def get(self, key):
        try:
            a = np.load(self._path(key), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None  # absent, or a damaged entry: recompute it
        return a if a.shape == (self.dim,) and a.dtype == np.float32 else None

    def put(self, key, feature):
        # temp file + rename: an interrupted run never leaves a half-written entry
        tmp, f = new_temporary(self.dir, ".tmp-", ".npy")
        try:
            with f:
                np.save(f, np.asarray(feature, dtype=np.float32))
            os.replace(tmp, self._path(key))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


class _Photos(Dataset):
    """(row, preprocessed image or None, the decoding error or "") of each path: decoding can
    run in DataLoader workers while the network runs here."""

    def __init__(self, rows, paths):
        self.rows, self.paths = rows, paths

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, k):
        try:
            return self.rows[k], preprocess(self.paths[k]), ""
        except ImageReadError as e:
            return self.rows[k], None, str(e)


def extract_features(model, paths, cache, batch_size=16, device="cpu", progress=True,
                     num_workers=0):
    """ResNet-50 features of each image -> (features (N, 2048) float32, ok (N,) bool, counts).

    ``model`` is the network, or a function that builds it: it is then called only when some
    image is not in the cache, so a fully cached run never loads the weights. Images that fail
    to decode are warned about once and marked not ok (their row is zero). ``num_workers`` > 0
    decodes and resizes the photos in that many worker processes (a DataLoader's) while the
    network runs, which is what keeps a GPU busy.
    """
    from tqdm import tqdm

    feats = np.zeros((len(paths), cache.dim), dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    todo = []  # (row, key) of images the cache does not have
    for i, path in enumerate(paths):
        key = cache.key(path)
        hit = cache.get(key)
        if hit is None:
            todo.append((i, key))
        else:
            feats[i], ok[i] = hit, True
    counts = {"images": len(paths), "cached": len(paths) - len(todo), "computed": 0, "failed": 0}
    if todo and not isinstance(model, nn.Module):
        model = model()
    keys = dict(todo)
    photos = _Photos([i for i, _ in todo], [paths[i] for i, _ in todo])
    # seed=0: the loader does not shuffle, and drawing a seed would move minidl's generator
    loader = DataLoader(photos, batch_size=batch_size, collate_fn=list, seed=0,
                        num_workers=num_workers)
    # disable=None: drawn on a terminal only, so a log file gets no bar (as in the mnist example)
    bar = tqdm(total=len(todo), unit="img", desc="ResNet-50 features",
               disable=True if not progress or not todo else None, file=sys.stderr)
    with minidl.no_grad():
        for batch in (loader if todo else ()):
            rows, arrays = [], []
            for i, array, error in batch:
                if array is None:
                    print(f"warning: skipping {paths[i]}: {error}", file=sys.stderr)
                    counts["failed"] += 1
                    continue
                rows.append(i)
                arrays.append(array)
            if arrays:
                out = model.features(minidl.tensor(np.stack(arrays), device=device)).numpy()
                for i, f in zip(rows, out):
                    feats[i], ok[i] = f, True
                    cache.put(keys[i], f)
                counts["computed"] += len(rows)
            bar.update(len(batch))
    bar.close()
    return feats, ok, counts


# ---- the linear classifier ---------------------------------------------------------------------
def train_classifier(x, y, n_classes, epochs=40, lr=0.5, batch_size=32, momentum=0.9,
                     weight_decay=1e-4, seed=0, device="cpu", log=print):
    """Softmax regression on features by minibatch SGD -> nn.Linear on raw features.

    Training runs on standardised features (centred, then one common scale so an average
    vector has unit length): SGD's step size then does not depend on the backbone's feature
    scale, which differs by orders of magnitude between trained and random weights. The
    standardisation is folded into the layer afterwards, so the saved layer takes raw features.
    """
    mean = x.mean(axis=0)
    scale = float(np.sqrt(((x - mean) ** 2).sum(axis=1).mean())) or 1.0
    xs = ((x - mean) / scale).astype(np.float32)
    minidl.manual_seed(seed)
    layer = nn.Linear(x.shape[1], n_classes).to(device)
    nn.init.zeros_(layer.weight)  # convex problem: a zero start is as good as any, and reproducible
    nn.init.zeros_(layer.bias)
    opt = optim.SGD(layer.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    loader = DataLoader(TensorDataset(xs, y.astype(np.int64)), batch_size=batch_size, shuffle=True,
                        seed=seed, device=device)
    for epoch in range(1, epochs + 1):
        total, seen = 0.0, 0
        for xb, yb in loader:
            loss = F.cross_entropy(layer(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(yb)
            seen += len(yb)
        if epoch == 1 or epoch == epochs or epoch % 10 == 0:
            log(f"epoch {epoch:3d}/{epochs}: training loss {total / max(seen, 1):.4f}")
    # fold: W (x - m) / s + b  ==  (W / s) x + (b - (W / s) m)
    w = layer.weight.numpy() / scale
    b = layer.bias.numpy() - w @ mean
    folded = nn.Linear(x.shape[1], n_classes)
    folded.load_state_dict({"weight": w, "bias": b})
    return folded.to(device)


def predict_proba(layer, x, device="cpu"):
    with minidl.no_grad():
        return F.softmax(layer(minidl.tensor(x, device=device)), dim=1).numpy()


# ---- reports -----------------------------------------------------------------------------------
def confusion_matrix(y_true, y_pred, n_classes):
    """Counts with rows the true class and columns the predicted one."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return m


def per_class_scores(m, classes):
    """{class: {precision, recall, support}} from a confusion matrix. A class never predicted
    has precision 0.0, a class with no images recall 0.0 (scikit-learn's zero_division=0)."""
    out = {}
    for k, name in enumerate(classes):
        tp, predicted, support = int(m[k, k]), int(m[:, k].sum()), int(m[k].sum())
        out[name] = {"precision": tp / predicted if predicted else 0.0,
                     "recall": tp / support if support else 0.0, "support": support}
    return out


def _short(name, width):
    return name if len(name) <= width else name[:width - 1] + "~"


def format_confusion(m, classes, max_width=12):
    """Rows are the true classes, columns the predicted ones, both labelled by name."""
    short = [_short(c, max_width) for c in classes]
    corner = "true \\ predicted"
    row_w = max(len(s) for s in short + [corner])
    col_w = max(max(len(s) for s in short), len(str(m.max())), 3)
    lines = [f"{corner:<{row_w}}  " + " ".join(f"{s:>{col_w}}" for s in short)]
    for name, row in zip(short, m):
        lines.append(f"{name:<{row_w}}  " + " ".join(f"{v:>{col_w}}" for v in row))
    return "\n".join(lines)


def format_per_class(per_class, max_width=24):
    """One row per class: precision, recall (percent) and support."""
    names = [_short(c, max_width) for c in per_class]
    w = max(len(s) for s in names + ["class"])
    lines = [f"{'class':<{w}}  precision  recall  support"]
    for short, s in zip(names, per_class.values()):
        lines.append(f"{short:<{w}}  {100 * s['precision']:8.1f}%  {100 * s['recall']:5.1f}%  "
                     f"{s['support']:7d}")
    return "\n".join(lines)


def contact_sheet(items, path, thumb=128, columns=6):
    """Write a PNG grid of (image path, caption lines) with the captions under each picture."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    line_h, pad = 12, 6
    n_lines = max((len(c) for _, c in items), default=1)
    cell_w, cell_h = thumb + 2 * pad, thumb + 2 * pad + n_lines * line_h
    if not items:
        sheet = Image.new("RGB", (420, 40), "white")
        ImageDraw.Draw(sheet).text((pad, 14), "no misclassified test images", fill="black", font=font)
    else:
        cols = min(columns, len(items))
        rows = -(-len(items) // cols)
        sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), "white")
        draw = ImageDraw.Draw(sheet)
        for k, (img_path, caption) in enumerate(items):
            x0, y0 = (k % cols) * cell_w + pad, (k // cols) * cell_h + pad
            try:
                img = load_image(img_path)
                img.thumbnail((thumb, thumb))
                sheet.paste(img, (x0 + (thumb - img.width) // 2, y0 + (thumb - img.height) // 2))
            except (ImageReadError, OSError):
                draw.rectangle([x0, y0, x0 + thumb, y0 + thumb], outline="red")
            for j, text in enumerate(caption):
                draw.text((x0, y0 + thumb + 2 + j * line_h), _fit(draw, text, font, thumb + pad),
                          fill="red" if text.startswith("pred") else "black", font=font)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sheet.save(path)
    return sheet


def _fit(draw, text, font, width):
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


# ---- argument checks ---------------------------------------------------------------------------
def _check_positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"ImageClassifier: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_output_dir(directory):
    directory = os.fspath(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"ImageClassifier: output {directory} exists and is not a directory")
    parent = os.path.dirname(os.path.abspath(directory))
    while not os.path.exists(parent):  # the first existing ancestor must be a writable folder
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise ValueError(f"ImageClassifier: cannot create {directory}: {parent} is not a writable folder")
    # os.access says yes to root everywhere, /proc included: a probe file tells for certain
    probe_dir = directory if os.path.isdir(directory) else parent
    try:
        with tempfile.TemporaryFile(dir=probe_dir):
            pass
    except OSError as exc:
        raise ValueError(f"ImageClassifier: cannot write in {probe_dir} "
                         f"({exc.strerror or exc})") from None
    return directory


def _image_files(folder):
    """Every image file under ``folder`` (by extension), sorted, hidden entries left out."""
    from minidl.datasets.image_folder import IMG_EXTENSIONS

    found = []
    for dirpath, dirnames, filenames in os.walk(folder):  # no followlinks: a link loop cannot trap it
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [os.path.join(dirpath, f) for f in sorted(filenames)
                  if not f.startswith(".") and f.lower().endswith(IMG_EXTENSIONS)]
    return found


def _silent(_msg):
    pass


def _split_sizes(labels, classes, folder, what):
    counts = np.bincount(labels, minlength=len(classes))
    empty = [classes[k] for k in np.flatnonzero(counts == 0)]
    if empty:
        raise ValueError(
            f"ImageClassifier.fit: {what} for class{'es' if len(empty) > 1 else ''} "
            + ", ".join(os.path.join(folder, c) for c in empty)
            + "; every class folder needs photos (remove the empty folder or add images)")
    return counts


# ---- the API -----------------------------------------------------------------------------------
class ImageClassifier:
    """A linear classifier on ResNet features (ResNet-50's by default, ``arch``), trained with
    :meth:`fit` on a photo folder.

    Attributes: ``classes`` (sorted class names, index order), ``arch``, ``layer`` (the
    ``nn.Linear`` on the raw pooled features: 2048-d, 512-d for ResNet-18/34), ``weights_id`` (sha1 of the weights file, or "random-seed<N>"),
    ``weights_source`` (the file used, or "random"), ``train_paths``, ``test_paths``,
    ``test_labels`` (the held-out split), ``feature_counts`` (images cached/computed/failed),
    ``history`` (the log lines of training).
    """

    def __init__(self, layer, classes, weights_source, weights_id, *, device="cpu", cache_dir=None,
                 batch_size=16, seed=0, progress=True, meta=None, num_workers=0, arch="resnet50"):
        if layer.weight.shape[0] != len(classes):
            raise ValueError(f"ImageClassifier: the layer has {layer.weight.shape[0]} outputs for "
                             f"{len(classes)} classes")
        self.arch = check_arch(arch)
        if layer.weight.shape[1] != feature_dim(arch):
            raise ValueError(f"ImageClassifier: the layer takes {layer.weight.shape[1]} features, "
                             f"but {arch} gives {feature_dim(arch)}")
        self.layer = layer.to(device)
        self.classes = list(classes)
        self.weights_source, self.weights_id = weights_source, weights_id
        self.device, self.batch_size, self.seed, self.progress = device, batch_size, seed, progress
        self.num_workers = _check_positive_int("num_workers", num_workers, minimum=0)
        self.cache_dir = os.fspath(cache_dir) if cache_dir is not None else default_cache_dir()
        self.meta = dict(meta or {})
        self.train_paths, self.test_paths, self.test_labels = [], [], np.zeros(0, np.int64)
        self._test_features = None
        self.feature_counts, self.history = {}, []
        self._backbone = None
        self._last_report = None
        self._split_accuracy = None  # of the last evaluate() on the held-out split
        self._cache = None

    def __repr__(self):
        return (f"ImageClassifier({len(self.classes)} classes: {', '.join(self.classes)}; "
                f"{self.arch}, weights {self.weights_id})")

    # -- features
    def _features(self, paths):
        if self._cache is None:
            self._cache = FeatureCache(self.cache_dir, self.weights_id, feature_dim(self.arch))

        def backbone():
            if self._backbone is None:
                self._backbone = build_backbone(self.weights_source, self.device, self.seed,
                                                self.arch)
            return self._backbone

        return extract_features(backbone, paths, self._cache, self.batch_size, self.device,
                                progress=self.progress, num_workers=self.num_workers)

    def _proba(self, feats):
        return predict_proba(self.layer, feats, self.device)

    # -- training
    @classmethod
    def fit(cls, folder, weights, test_fraction=0.2, split_seed=2, epochs=40, lr=0.5, batch_size=16,
            device="cpu", cache_dir=None, progress=True, seed=0, log=None, num_workers=0,
            arch="resnet50"):
        """Train on ``folder/<class>/<images>``; ``test_fraction`` of the photos is held out.

        ``arch`` is the backbone whose features are used: ResNet-50 (the default) or another of
        torchvision's ResNets (``ARCHES``; "resnet18" computes its features about 2.9x faster), with
        ``weights`` of that arch.

        ``batch_size`` is the number of images per ResNet-50 batch and per SGD step; ``seed``
        seeds the classifier's shuffling (and the network for ``weights="random"``); ``log`` is
        called with each status line (``print`` to see them); ``num_workers`` > 0 decodes the
        photos in that many worker processes.
        """
        from minidl.datasets import ImageFolder

        log = log or _silent
        if (isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float))
                or not 0.0 <= test_fraction < 1.0):
            raise ValueError(f"ImageClassifier.fit: test_fraction must be in [0, 1), got {test_fraction!r}")
        epochs = _check_positive_int("epochs", epochs, minimum=0)
        batch_size = _check_positive_int("batch_size", batch_size)
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"ImageClassifier.fit: lr must be a finite number > 0, got {lr!r}")
        folder = os.fspath(folder)
        dataset = ImageFolder(folder)  # skips non-images, one warning each
        classes = dataset.classes
        if len(classes) < 2:
            raise ValueError(f"ImageClassifier.fit: {folder} has one class folder ({classes[0]}); a "
                             f"classifier needs at least two, one sub-folder of photos per class")
        labels = np.asarray(dataset.targets, dtype=np.int64)
        _split_sizes(labels, classes, folder, "no readable images")
        log(f"{folder}: {len(dataset)} images in {len(classes)} classes: {', '.join(classes)}")

        check_arch(arch)
        source, weights_id = resolve_weights(weights, seed, what="features", arch=arch)
        clf = cls(nn.Linear(feature_dim(arch), len(classes)), classes, source, weights_id,
                  arch=arch, device=device,
                  cache_dir=cache_dir, batch_size=batch_size, seed=seed, progress=progress,
                  num_workers=num_workers)
        paths = [p for p, _ in dataset.samples]
        feats, ok, counts = clf._features(paths)
        clf.feature_counts = counts
        log(f"features: {counts['images']} images, {counts['cached']} from cache, "
            f"{counts['computed']} computed, {counts['failed']} unreadable (cache: {clf._cache.dir})")
        paths = [p for p, good in zip(paths, ok) if good]
        feats, labels = feats[ok], labels[ok]
        _split_sizes(labels, classes, folder, "every image is unreadable")

        if test_fraction > 0:
            train_set, test_set = random_split(TensorDataset(feats, labels), 1.0 - test_fraction,
                                               seed=split_seed)
            tr, te = np.asarray(train_set.indices), np.asarray(test_set.indices)
        else:
            tr, te = np.arange(len(paths)), np.zeros(0, np.int64)
        no_train = [classes[k] for k in range(len(classes)) if not (labels[tr] == k).any()]
        if no_train:
            raise ValueError(
                f"ImageClassifier.fit: after the {1 - test_fraction:.0%}/{test_fraction:.0%} split "
                f"(seed {split_seed}) no training images are left for {', '.join(no_train)}; add "
                f"photos to {'these classes' if len(no_train) > 1 else 'that class'} or lower test_fraction")
        log(f"split: {len(tr)} training, {len(te)} test images (random_split seed {split_seed})")

        def log_and_keep(line):
            clf.history.append(line)
            log(line)

        clf.layer = train_classifier(feats[tr], labels[tr], len(classes), epochs=epochs, lr=lr,
                                     batch_size=batch_size, seed=seed, device=device, log=log_and_keep)
        clf.train_paths = [paths[i] for i in tr]
        clf.test_paths = [paths[i] for i in te]
        clf.test_labels = labels[te]
        clf._test_features = feats[te]
        clf.meta = {"train_images": int(len(tr)), "test_images": int(len(te)),
                    "test_fraction": float(test_fraction), "split_seed": int(split_seed),
                    "epochs": int(epochs), "lr": float(lr), "seed": int(seed)}
        return clf

    # -- evaluation
    def evaluate(self, folder=None):
        """Accuracy and errors on the held-out split, or on ``folder/<class>/<images>``.

        Returns a dict: ``accuracy``, ``classes``, ``confusion_matrix`` ((C, C) int array, rows
        true, columns predicted), ``per_class`` ({class: {precision, recall, support}}),
        ``misclassified`` (list of (path, true label, predicted label, probability)) and
        ``images`` (how many were evaluated).
        """
        if folder is None:
            if not self.test_paths:
                raise ValueError("ImageClassifier.evaluate: no held-out images (fit with "
                                 "test_fraction > 0 on a folder big enough to split, or pass a folder)")
            paths, labels = list(self.test_paths), np.asarray(self.test_labels, np.int64)
            if self._test_features is None or len(self._test_features) != len(paths):
                present = [os.path.isfile(p) for p in paths]
                for p, here in zip(paths, present):
                    if not here:
                        print(f"warning: skipping held-out {p}: no such file", file=sys.stderr)
                paths = [p for p, here in zip(paths, present) if here]
                labels = labels[np.asarray(present, bool)]
                feats, ok, _ = self._features(paths)
                self._test_features = None  # recomputed next time if files went missing
                if len(paths) == len(self.test_paths) and ok.all():
                    self._test_features = feats
            else:
                feats, ok = self._test_features, np.ones(len(paths), bool)
        else:
            from minidl.datasets import ImageFolder

            dataset = ImageFolder(os.fspath(folder))
            unknown = [c for c in dataset.classes if c not in self.classes]
            if unknown:
                raise ValueError(f"ImageClassifier.evaluate: {os.fspath(folder)} has class folders the "
                                 f"classifier does not know: {', '.join(unknown)} (it knows "
                                 f"{', '.join(self.classes)})")
            index = {c: k for k, c in enumerate(self.classes)}
            paths = [p for p, _ in dataset.samples]
            labels = np.asarray([index[dataset.classes[t]] for t in dataset.targets], np.int64)
            feats, ok, _ = self._features(paths)
        paths = [p for p, good in zip(paths, ok) if good]
        feats, labels = feats[ok], labels[ok]
        if not paths:
            raise ValueError("ImageClassifier.evaluate: no readable images to evaluate")
        probs = self._proba(feats)
        pred = probs.argmax(axis=1)
        m = confusion_matrix(labels, pred, len(self.classes))
        wrong = np.flatnonzero(pred != labels)
        report = {
            "accuracy": float((pred == labels).mean()),
            "classes": list(self.classes),
            "confusion_matrix": m,
            "per_class": per_class_scores(m, self.classes),
            "misclassified": [(paths[j], self.classes[labels[j]], self.classes[pred[j]],
                               float(probs[j, pred[j]])) for j in wrong],
            "images": len(paths),
        }
        self._last_report = report
        if folder is None:
            self._split_accuracy = report["accuracy"]
        return report

    def contact_sheet(self, path, report=None, thumb=128, columns=6):
        """A PNG of the misclassified photos (predicted vs true) of ``report``, by default the
        last ``evaluate()`` (the held-out split's when none ran yet). Returns ``path``."""
        path = os.fspath(path)
        parent = os.path.dirname(os.path.abspath(path))
        if os.path.exists(parent) and not os.path.isdir(parent):
            raise ValueError(f"ImageClassifier.contact_sheet: {parent} is not a directory")
        if report is None:
            report = self._last_report if self._last_report is not None else self.evaluate()
        contact_sheet([(p, [os.path.basename(p), f"pred: {pn} ({100 * pr:.0f}%)", f"true: {tn}"])
                       for p, tn, pn, pr in report["misclassified"]], path, thumb=thumb, columns=columns)
        return path

    # -- prediction
    @staticmethod
    def image_paths(paths_or_folder):
        """The images ``predict`` labels, in its order: each folder's image files (sorted,
        recursively) in its place, and files as they are; one path or a list of them."""
        if isinstance(paths_or_folder, (str, os.PathLike)):
            paths_or_folder = [paths_or_folder]
        if not isinstance(paths_or_folder, (list, tuple)) and not hasattr(paths_or_folder, "__iter__"):
            raise TypeError(f"ImageClassifier.predict: paths_or_folder must be an image path, a "
                            f"folder or a list of them, got {type(paths_or_folder).__name__}")
        out = []
        for p in paths_or_folder:
            if not isinstance(p, (str, os.PathLike)):
                raise TypeError(f"ImageClassifier.predict: paths_or_folder holds a "
                                f"{type(p).__name__} ({p!r}), not a path")
            p = os.fspath(p)
            if os.path.isdir(p):
                found = _image_files(p)
                if not found:
                    raise ValueError(f"ImageClassifier.predict: no image files under {p}")
                out += found
            else:
                out.append(p)
        return out

    def predict_proba(self, paths_or_folder, skip_unreadable=False):
        """(N, classes) float32 probabilities, one row per image of ``image_paths``.

        A file that is missing or not a readable image raises an error naming it; with
        ``skip_unreadable=True`` it gets one warning line and a row of NaN instead.
        """
        paths = self.image_paths(paths_or_folder)
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing and not skip_unreadable:
            raise FileNotFoundError(f"ImageClassifier.predict: no such file: {', '.join(missing[:5])}"
                                    + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        for p in missing:
            print(f"warning: skipping {p}: no such file", file=sys.stderr)
        present = [p for p in paths if os.path.isfile(p)]
        feats, ok, _ = self._features(present)
        if not ok.all() and not skip_unreadable:
            bad = [p for p, good in zip(present, ok) if not good]
            raise ImageReadError(f"ImageClassifier.predict: cannot read image {', '.join(bad)}")
        out = np.full((len(paths), len(self.classes)), np.nan, dtype=np.float32)
        rows = [i for i, p in enumerate(paths) if os.path.isfile(p)]
        if ok.any():
            out[np.asarray(rows)[ok]] = self._proba(feats[ok])
        return out

    def predict(self, paths_or_folder, skip_unreadable=False):
        """[(label, probability)] per image of ``image_paths``, the most likely class each
        (``(None, nan)`` for an image skipped with ``skip_unreadable=True``)."""
        probs = self.predict_proba(paths_or_folder, skip_unreadable=skip_unreadable)
        out = []
        for row in probs:
            if np.isnan(row).any():
                out.append((None, float("nan")))
            else:
                k = int(row.argmax())
                out.append((self.classes[k], float(row[k])))
        return out

    # -- persistence
    def save(self, directory):
        """Write ``classifier.npz`` (the nn.Linear state_dict) and ``classifier.json`` (classes,
        weights id, held-out split, settings) into ``directory``; returns both paths."""
        directory = check_output_dir(directory)
        if not os.path.isdir(directory) and directory.lower().endswith((".npz", ".json")):
            raise ValueError(f"ImageClassifier.save: {directory} looks like a file name; save "
                             f"takes a folder (it writes classifier.npz and classifier.json "
                             f"into it), e.g. {os.path.splitext(directory)[0]}/")
        os.makedirs(directory, exist_ok=True)
        npz = os.path.join(directory, "classifier.npz")
        sidecar = os.path.join(directory, "classifier.json")
        meta = {"classes": self.classes, "arch": self.arch, "features": feature_dim(self.arch),
                "weights": self.weights_id,
                **self.meta,
                "test_split": [[p, self.classes[int(k)]] for p, k in zip(self.test_paths, self.test_labels)]}
        if self._split_accuracy is not None:
            meta["test_accuracy"] = self._split_accuracy
        text = json.dumps(meta, indent=2)  # checked before anything is written
        minidl.save(self.layer.state_dict(), npz)
        tmp, f = new_temporary(directory, ".classifier-", ".json.tmp", binary=False)
        try:
            with f:
                f.write(text)
            os.replace(tmp, sidecar)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return npz, sidecar

    @classmethod
    def load(cls, directory, weights, device="cpu", cache_dir=None, batch_size=16, progress=True,
             seed=None, num_workers=0):
        """A classifier written by :meth:`save` (``directory``, or its ``classifier.npz``).

        ``weights`` must be the backbone weights it was trained on (the same file's bytes, or
        the same seed for "random"): other weights give other features, so they are refused.
        The arch comes from the saved description (ResNet-50 for files written before it).
        """
        directory = os.fspath(directory)
        npz = directory if directory.endswith(".npz") else os.path.join(directory, "classifier.npz")
        sidecar = os.path.splitext(npz)[0] + ".json"
        if not os.path.isfile(npz):
            raise FileNotFoundError(f"ImageClassifier.load: {npz} does not exist")
        if not os.path.isfile(sidecar):
            raise FileNotFoundError(f"classifier {npz}: its class list {sidecar} is missing")
        try:
            with open(sidecar, encoding="utf-8") as f:
                meta = json.load(f)
            classes = list(meta["classes"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"classifier {sidecar} is not a classifier description: {e!r}") from e
        state = minidl.load(npz)
        if "weight" not in state or np.ndim(state["weight"]) != 2 or "bias" not in state:
            raise ValueError(f"classifier {npz}: expected an nn.Linear state_dict (weight, bias)")
        arch = meta.get("arch", "resnet50")  # classifiers saved before arch= were ResNet-50's
        if arch not in ARCHES:
            raise ValueError(f"classifier {sidecar} names arch {arch!r}, not one of {ARCHES}")
        n_classes, n_features = state["weight"].shape
        if n_classes != len(classes) or n_features != feature_dim(arch):
            raise ValueError(f"classifier {npz} maps {n_features} features to {n_classes} outputs, but "
                             f"{sidecar} names {len(classes)} classes of {feature_dim(arch)}-d "
                             f"{arch} features")
        if seed is None:
            seed = int(meta.get("seed", 0))
        source, weights_id = resolve_weights(weights, seed, what="features", arch=arch)
        trained_on = meta.get("weights")
        if trained_on is not None and trained_on != weights_id:
            raise ValueError(f"classifier {npz} was trained on features of weights {trained_on}, but "
                             f"the weights given ({weights if source == RANDOM else source}) are "
                             f"{weights_id}; load it with the weights it was trained on")
        layer = nn.Linear(n_features, n_classes)
        layer.load_state_dict(state)
        clf = cls(layer, classes, source, weights_id, device=device, cache_dir=cache_dir,
                  batch_size=batch_size, seed=seed, progress=progress, num_workers=num_workers,
                  arch=arch, meta={k: v for k, v in meta.items()
                                   if k not in ("classes", "arch", "features", "weights",
                                                "test_split")})
        split = meta.get("test_split") or []
        index = {c: k for k, c in enumerate(classes)}
        clf.test_paths = [p for p, _ in split]
        clf.test_labels = np.asarray([index[c] for _, c in split], np.int64)
        return clf

