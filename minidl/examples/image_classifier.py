"""Teach ResNet-50 new classes from a folder of photos: a linear classifier on its features.

A command-line layer over ``minidl.vision.ImageClassifier`` (the same workflow from Python).

Train (``train`` may be left out when the first argument is the folder):

    python -m minidl.examples.image_classifier PHOTOS --weights resnet50.npz
    python -m minidl.examples.image_classifier train PHOTOS --weights resnet50.npz \\
        [--epochs 40] [--lr 0.5] [--batch-size 32] [--out DIR] [--cache-dir DIR] \\
        [--seed 0] [--split-seed 2] [--device cpu|cuda] [--workers N] [--arch resnet18] \\
        [--no-progress]

Label new photos with a trained classifier:

    python -m minidl.examples.image_classifier predict IMG [IMG ...] --weights resnet50.npz \\
        --classifier DIR [--cache-dir DIR] [--device cpu|cuda]

PHOTOS holds one sub-folder per class (``PHOTOS/cats/*.jpg``, ``PHOTOS/dogs/*.png``); files that
are not images are skipped with a warning. Each photo becomes ResNet-50's 2048-d pooled feature
vector, computed in batches and cached on disk under the sha1 of the file's bytes and of the
weights (``--cache-dir``, default ``$MINIDL_CACHE`` or ``~/.cache/minidl``, then
``features/``), so later runs skip the network. The photos are split 80/20 with
``random_split(..., 0.8, seed=2)``; a softmax classifier (``nn.Linear(2048, classes)``) is trained
on the training features by minibatch SGD with momentum, and the run prints the test accuracy,
a confusion matrix, precision and recall per class and the misclassified files.

``--weights`` takes a torchvision ``.pth``, a converted ``.npz``, a ``.safetensors`` file with
torchvision's names, or ``IMAGENET1K_V1``/``IMAGENET1K_V2``: torchvision's downloaded file
under ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch``).

Written to ``--out`` (default ``image_classifier_out``):

    classifier.npz     the nn.Linear state_dict (minidl.save); features are used raw
    classifier.json    class names (index order), weights identity, test accuracy, test split
    misclassified.png  contact sheet of the misclassified test photos, predicted vs true

``--weights random`` runs on a random network (warned loudly): the code path works end to end,
but the features mean little, so expect poor accuracy on real photos.
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from contextlib import nullcontext

import minidl
from minidl.backend import normalize_device
from minidl.examples import CompileNotice, device_arg, seed_arg
from minidl.vision import classifier as _classifier
from minidl.vision.classifier import (ARCHES, RANDOM, FeatureCache, ImageClassifier,  # noqa: F401
                                      confusion_matrix,
                                      contact_sheet, default_cache_dir, extract_features,
                                      format_confusion, format_per_class, predict_proba,
                                      train_classifier)


# ---- commands ----------------------------------------------------------------------------------
def train(args):
    t0 = time.perf_counter()
    sheet = os.path.join(args.out, "misclassified.png")
    _classifier.check_output_dir(args.out)  # before the long part, not after it
    with CompileNotice(args.device):  # a cold numba cache: the first batch compiles kernels
        clf = ImageClassifier.fit(args.folder, args.weights, test_fraction=0.2,
                                  split_seed=args.split_seed, epochs=args.epochs, lr=args.lr,
                                  batch_size=args.batch_size, device=args.device,
                                  cache_dir=args.cache_dir, progress=not args.no_progress,
                                  seed=args.seed, log=print, num_workers=args.workers,
                                  arch=args.arch)
    missed = []
    if clf.test_paths:
        report = clf.evaluate()
        n = report["images"]
        correct = n - len(report["misclassified"])
        print(f"test accuracy: {100 * correct / n:.1f}% ({correct}/{n})")
        print("confusion matrix (rows: true class, columns: predicted class):")
        print(format_confusion(report["confusion_matrix"], clf.classes))
        print("per class (test images):")
        print(format_per_class(report["per_class"]))
        missed = report["misclassified"]
        print(f"misclassified test images ({len(missed)}):")
        for path, true_name, pred_name, p in missed:
            print(f"  {path}: true {true_name}, predicted {pred_name} ({100 * p:.1f}%)")
    else:
        print("test accuracy: no test images (too few photos for an 80/20 split)")
    contact_sheet([(p, [os.path.basename(p), f"pred: {pn} ({100 * pr:.0f}%)", f"true: {tn}"])
                   for p, tn, pn, pr in missed], sheet)
    npz, sidecar = clf.save(args.out)
    print(f"wrote {npz}, {sidecar} and {sheet} in {time.perf_counter() - t0:.1f} s")
    if args.weights == RANDOM:
        print("(random backbone weights: this accuracy says nothing about real ResNet-50 features)",
              file=sys.stderr)
    return 0


def predict(args):
    clf = ImageClassifier.load(args.classifier, args.weights, device=args.device,
                               cache_dir=args.cache_dir, batch_size=args.batch_size,
                               progress=not args.no_progress, seed=args.seed,
                               num_workers=args.workers)
    paths = clf.image_paths(args.images)  # a folder stands for the images in it
    with CompileNotice(args.device):
        results = clf.predict(paths, skip_unreadable=True)  # one warning line per bad file
    for path, (label, p) in zip(paths, results):
        if label is not None:
            print(f"{path}: {label} ({100 * p:.1f}%)")
    return 0 if all(label is not None for label, _ in results) else 1


def build_parser():
    p = argparse.ArgumentParser(prog="python -m minidl.examples.image_classifier", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--weights", required=True,
                        help="ResNet-50 weights: torchvision .pth, converted .npz, .safetensors, "
                             "IMAGENET1K_V1/IMAGENET1K_V2 (torchvision's cached file), or 'random'")
        sp.add_argument("--batch-size", type=int, default=16,
                        help="images per ResNet-50 batch, and per SGD step when training (default 16)")
        sp.add_argument("--cache-dir", default=default_cache_dir(),
                        help="feature cache root (default $MINIDL_CACHE or ~/.cache/minidl)")
        sp.add_argument("--device", type=device_arg, default="cpu", help="cpu or cuda")
        sp.add_argument("--seed", type=seed_arg, default=None,
                        help="seed of the classifier's shuffling (and of --weights random); "
                             "predict: default the one it was trained with")
        sp.add_argument("--no-progress", action="store_true", help="no progress bar")
        sp.add_argument("--workers", type=seed_arg, default=0, metavar="N",
                        help="decode the photos in N worker processes while the network runs "
                             "(default 0: in this process)")
        sp.add_argument("--amp", choices=["off", "fp16", "bf16"], default="off",
                        help="run ResNet-50 (and the classifier) under autocast in float16 or "
                             "bfloat16; their features are cached apart from float32 ones")

    t = sub.add_parser("train", help="train a classifier on PHOTOS/<class>/<images>")
    t.add_argument("folder", metavar="PHOTOS")
    common(t)
    t.add_argument("--epochs", type=int, default=40)
    t.add_argument("--lr", type=float, default=0.5, help="SGD learning rate on standardised features")
    t.add_argument("--out", default="image_classifier_out", help="output folder")
    t.add_argument("--split-seed", type=seed_arg, default=2, help="seed of the 80/20 split")
    t.add_argument("--arch", choices=ARCHES, default="resnet50",
                   help="the backbone whose features are used, with --weights of that arch "
                        "(default resnet50; resnet18 is about 2.9x faster on a CPU); predict reads "
                        "it from the saved classifier")

    q = sub.add_parser("predict", help="label images with a trained classifier")
    q.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of them")
    q.add_argument("--classifier", required=True,
                   help="the --out folder written by train (or its classifier.npz)")
    common(q)
    return p


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in ("train", "predict") and not argv[0].startswith("-"):
        argv.insert(0, "train")  # `image_classifier PHOTOS ...` means train
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1 or (args.command == "train" and (
            args.epochs < 0 or not 0 < args.lr < float("inf"))):
        parser.error("--batch-size must be >= 1, --epochs >= 0 and --lr > 0")
    if args.command == "train" and args.seed is None:
        args.seed = 0
    amp = {"fp16": "float16", "bf16": "bfloat16"}.get(args.amp)
    if amp:  # 16-bit features differ from float32 ones in the last digits: a cache of their own
        args.cache_dir = os.path.join(args.cache_dir, f"amp-{args.amp}")
    try:
        with minidl.autocast(normalize_device(args.device), dtype=amp) if amp else nullcontext():
            return train(args) if args.command == "train" else predict(args)
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as e:  # a refused pickle too
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
