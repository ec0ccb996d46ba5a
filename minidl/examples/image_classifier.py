"""Teach ResNet-50 new classes from a folder of photos: a linear classifier on its features.

Train (``train`` may be left out when the first argument is the folder):

    python -m minidl.examples.image_classifier PHOTOS --weights resnet50.npz
    python -m minidl.examples.image_classifier train PHOTOS --weights resnet50.npz \\
        [--epochs 40] [--lr 0.5] [--batch-size 32] [--out DIR] [--cache-dir DIR] \\
        [--seed 0] [--split-seed 2] [--device cpu|cuda] [--no-progress]

Label new photos with a trained classifier:

    python -m minidl.examples.image_classifier predict IMG [IMG ...] --weights resnet50.npz \\
        --classifier DIR/classifier.npz [--cache-dir DIR] [--device cpu|cuda]

PHOTOS holds one sub-folder per class (``PHOTOS/cats/*.jpg``, ``PHOTOS/dogs/*.png``); files that
are not images are skipped with a warning. Each photo becomes ResNet-50's 2048-d pooled feature
vector, computed in batches and cached on disk under the sha1 of the file's bytes and of the
weights (``--cache-dir``, default ``$MINIDL_CACHE`` or ``~/.cache/minidl``, then
``features/``), so later runs skip the network. The photos are split 80/20 with
``random_split(..., 0.8, seed=2)``; a softmax classifier (``nn.Linear(2048, classes)``) is trained
on the training features by minibatch SGD with momentum, and the run prints the test accuracy,
a confusion matrix and the misclassified files.

Written to ``--out`` (default ``image_classifier_out``):

    classifier.npz     the nn.Linear state_dict (minidl.save); features are used raw
    classifier.json    class names (index order), weights identity, test accuracy
    misclassified.png  contact sheet of the misclassified test photos, predicted vs true

``--weights random`` runs on a random network (warned loudly): the code path works end to end,
but the features mean little, so expect poor accuracy on real photos.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time

import numpy as np

import minidl
import minidl.nn.functional as F
from minidl import nn, optim
from minidl.data import DataLoader, TensorDataset, random_split
from minidl.examples.resnet50 import RANDOM, build_backbone, resolve_weights
from minidl.vision.transforms import ImageReadError, preprocess

PREPROCESS_TAG = "resize256-crop224-v1"  # part of the cache key: change it if preprocess changes
FEATURES = 2048


# ---- feature cache ---------------------------------------------------------------------------
def default_cache_dir():
    return os.environ.get("MINIDL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "minidl")


class FeatureCache:
    """One ``.npy`` per image under ``<root>/features/<weights id>-<preprocessing>/<sha1>.npy``.

    Keyed by content, not by path: renaming or moving photos keeps their features, and an edited
    photo gets new ones.
    """

    def __init__(self, root, weights_id):
        self.dir = os.path.join(os.fspath(root), "features", f"{weights_id}-{PREPROCESS_TAG}")
        os.makedirs(self.dir, exist_ok=True)

    @staticmethod
    def key(path):
        h = hashlib.sha1()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def _path(self, key):
        return os.path.join(self.dir, key + ".npy")

    def get(self, key):
        try:
            a = np.load(self._path(key), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None  # absent, or a damaged entry: recompute it
        return a if a.shape == (FEATURES,) and a.dtype == np.float32 else None

    def put(self, key, feature):
        # temp file + rename: an interrupted run never leaves a half-written entry
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=".npy")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.asarray(feature, dtype=np.float32))
            os.replace(tmp, self._path(key))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def extract_features(model, paths, cache, batch_size=16, device="cpu", progress=True):
    """ResNet-50 features of each image -> (features (N, 2048) float32, ok (N,) bool, counts).

    ``model`` is the network, or a function that builds it: it is then called only when some
    image is not in the cache, so a fully cached run never loads the weights. Images that fail
    to decode are warned about once and marked not ok (their row is zero).
    """
    from tqdm import tqdm

    feats = np.zeros((len(paths), FEATURES), dtype=np.float32)
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
    bar = tqdm(total=len(todo), unit="img", desc="ResNet-50 features", disable=not progress or not todo,
               file=sys.stderr)
    with minidl.no_grad():
        for start in range(0, len(todo), batch_size):
            rows, keys, arrays = [], [], []
            for i, key in todo[start:start + batch_size]:
                try:
                    arrays.append(preprocess(paths[i]))
                except ImageReadError as e:
                    print(f"warning: skipping {paths[i]}: {e}", file=sys.stderr)
                    counts["failed"] += 1
                    continue
                rows.append(i)
                keys.append(key)
            if arrays:
                out = model.features(minidl.tensor(np.stack(arrays), device=device)).numpy()
                for i, key, f in zip(rows, keys, out):
                    feats[i], ok[i] = f, True
                    cache.put(key, f)
                counts["computed"] += len(rows)
            bar.update(len(todo[start:start + batch_size]))
    bar.close()
    return feats, ok, counts


# ---- the classifier ----------------------------------------------------------------------------
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


def confusion_matrix(y_true, y_pred, n_classes):
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def format_confusion(m, classes, max_width=12):
    """Rows are the true classes, columns the predicted ones, both labelled by name."""
    short = [c if len(c) <= max_width else c[:max_width - 1] + "~" for c in classes]
    corner = "true \\ predicted"
    row_w = max(len(s) for s in short + [corner])
    col_w = max(max(len(s) for s in short), len(str(m.max())), 3)
    lines = [f"{corner:<{row_w}}  " + " ".join(f"{s:>{col_w}}" for s in short)]
    for name, row in zip(short, m):
        lines.append(f"{name:<{row_w}}  " + " ".join(f"{v:>{col_w}}" for v in row))
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
                from minidl.vision.transforms import load_image

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


def save_classifier(layer, classes, out_dir, meta):
    os.makedirs(out_dir, exist_ok=True)
    npz = os.path.join(out_dir, "classifier.npz")
    minidl.save(layer.state_dict(), npz)
    sidecar = os.path.splitext(npz)[0] + ".json"
    tmp = sidecar + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"classes": list(classes), "features": FEATURES, **meta}, f, indent=2)
    os.replace(tmp, sidecar)
    return npz, sidecar


def load_classifier(path):
    """-> (nn.Linear, metadata dict with 'classes') from classifier.npz and its .json sidecar."""
    path = os.fspath(path)
    sidecar = os.path.splitext(path)[0] + ".json"
    if not os.path.isfile(sidecar):
        raise FileNotFoundError(f"classifier {path}: its class list {sidecar} is missing")
    with open(sidecar, encoding="utf-8") as f:
        meta = json.load(f)
    state = minidl.load(path)
    if "weight" not in state or state["weight"].ndim != 2:
        raise ValueError(f"classifier {path}: expected an nn.Linear state_dict (weight, bias)")
    n_classes, n_features = state["weight"].shape
    if n_classes != len(meta["classes"]):
        raise ValueError(f"classifier {path} has {n_classes} outputs but {sidecar} names "
                         f"{len(meta['classes'])} classes")
    layer = nn.Linear(n_features, n_classes)
    layer.load_state_dict(state)
    return layer, meta


# ---- commands ----------------------------------------------------------------------------------
def train(args):
    from minidl.datasets import ImageFolder

    t0 = time.perf_counter()
    dataset = ImageFolder(args.folder)  # skips non-images, one warning each
    classes = dataset.classes
    print(f"{args.folder}: {len(dataset)} images in {len(classes)} classes: {', '.join(classes)}")
    weights_id = resolve_weights(args.weights, args.seed, what="features")
    cache = FeatureCache(args.cache_dir, weights_id)
    paths = [p for p, _ in dataset.samples]
    feats, ok, counts = extract_features(lambda: build_backbone(args.weights, args.device, args.seed),
                                         paths, cache, args.batch_size, args.device,
                                         progress=not args.no_progress)
    print(f"features: {counts['images']} images, {counts['cached']} from cache, "
          f"{counts['computed']} computed, {counts['failed']} unreadable (cache: {cache.dir})")
    labels = np.asarray(dataset.targets, dtype=np.int64)
    paths = [p for p, good in zip(paths, ok) if good]
    feats, labels = feats[ok], labels[ok]
    train_set, test_set = random_split(TensorDataset(feats, labels), 0.8, seed=args.split_seed)
    tr, te = train_set.indices, test_set.indices
    if len(tr) == 0:
        print("error: no training images", file=sys.stderr)
        return 2
    print(f"split: {len(tr)} training, {len(te)} test images (random_split seed {args.split_seed})")
    layer = train_classifier(feats[tr], labels[tr], len(classes), epochs=args.epochs, lr=args.lr,
                             batch_size=args.batch_size, seed=args.seed, device=args.device)
    meta = {"weights": weights_id, "train_images": int(len(tr)), "test_images": int(len(te))}
    missed = []
    if len(te):
        probs = predict_proba(layer, feats[te], args.device)
        pred = probs.argmax(axis=1)
        truth = labels[te]
        correct = int((pred == truth).sum())
        meta["test_accuracy"] = correct / len(te)
        print(f"test accuracy: {100 * correct / len(te):.1f}% ({correct}/{len(te)})")
        print("confusion matrix (rows: true class, columns: predicted class):")
        print(format_confusion(confusion_matrix(truth, pred, len(classes)), classes))
        for j in np.flatnonzero(pred != truth):
            missed.append((paths[te[j]], classes[truth[j]], classes[pred[j]], float(probs[j, pred[j]])))
        print(f"misclassified test images ({len(missed)}):")
        for path, true_name, pred_name, p in missed:
            print(f"  {path}: true {true_name}, predicted {pred_name} ({100 * p:.1f}%)")
    else:
        print("test accuracy: no test images (too few photos for an 80/20 split)")
    sheet = os.path.join(args.out, "misclassified.png")
    contact_sheet([(p, [os.path.basename(p), f"pred: {pn} ({100 * pr:.0f}%)", f"true: {tn}"])
                   for p, tn, pn, pr in missed], sheet)
    npz, sidecar = save_classifier(layer, classes, args.out, meta)
    print(f"wrote {npz}, {sidecar} and {sheet} in {time.perf_counter() - t0:.1f} s")
    if args.weights == RANDOM:
        print("(random backbone weights: this accuracy says nothing about real ResNet-50 features)",
              file=sys.stderr)
    return 0


def predict(args):
    layer, meta = load_classifier(args.classifier)
    weights_id = resolve_weights(args.weights, args.seed, what="features")
    if meta.get("weights") not in (None, weights_id):
        print(f"WARNING: the classifier was trained on features of weights {meta['weights']}, "
              f"but --weights gives {weights_id}; its labels will be unreliable", file=sys.stderr)
    layer.to(args.device)
    cache = FeatureCache(args.cache_dir, weights_id)
    missing = [p for p in args.images if not os.path.isfile(p)]
    for p in missing:
        print(f"warning: skipping {p}: no such file", file=sys.stderr)
    paths = [p for p in args.images if os.path.isfile(p)]
    feats, ok, _ = extract_features(lambda: build_backbone(args.weights, args.device, args.seed),
                                    paths, cache, args.batch_size, args.device,
                                    progress=not args.no_progress)
    classes = meta["classes"]
    if ok.any():
        probs = predict_proba(layer, feats[ok], args.device)
        for path, row in zip([p for p, good in zip(paths, ok) if good], probs):
            k = int(row.argmax())
            print(f"{path}: {classes[k]} ({100 * row[k]:.1f}%)")
    return 0 if ok.all() and not missing else 1


def build_parser():
    p = argparse.ArgumentParser(prog="python -m minidl.examples.image_classifier", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--weights", required=True,
                        help="ResNet-50 weights: converted .npz or torchvision .pth, or 'random'")
        sp.add_argument("--batch-size", type=int, default=16,
                        help="images per ResNet-50 batch, and per SGD step when training (default 16)")
        sp.add_argument("--cache-dir", default=default_cache_dir(),
                        help="feature cache root (default $MINIDL_CACHE or ~/.cache/minidl)")
        sp.add_argument("--device", default="cpu", help="cpu or cuda")
        sp.add_argument("--seed", type=int, default=0,
                        help="seed of the classifier's shuffling (and of --weights random)")
        sp.add_argument("--no-progress", action="store_true", help="no progress bar")

    t = sub.add_parser("train", help="train a classifier on PHOTOS/<class>/<images>")
    t.add_argument("folder", metavar="PHOTOS")
    common(t)
    t.add_argument("--epochs", type=int, default=40)
    t.add_argument("--lr", type=float, default=0.5, help="SGD learning rate on standardised features")
    t.add_argument("--out", default="image_classifier_out", help="output folder")
    t.add_argument("--split-seed", type=int, default=2, help="seed of the 80/20 split")

    q = sub.add_parser("predict", help="label images with a trained classifier")
    q.add_argument("images", nargs="+", metavar="IMAGE")
    q.add_argument("--classifier", required=True, help="classifier.npz written by train")
    common(q)
    return p


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in ("train", "predict") and not argv[0].startswith("-"):
        argv.insert(0, "train")  # `image_classifier PHOTOS ...` means train
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1 or (args.command == "train" and (args.epochs < 0 or args.lr <= 0)):
        parser.error("--batch-size must be >= 1, --epochs >= 0 and --lr > 0")
    try:
        return train(args) if args.command == "train" else predict(args)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
