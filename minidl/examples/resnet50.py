"""Classify photos with ResNet-50: the top classes of ImageNet's 1,000, with probabilities.

    python -m minidl.examples.resnet50 cat.jpg dog.png --weights resnet50.npz
    python -m minidl.examples.resnet50 photos/*.jpg --weights resnet50.npz --topk 3 --batch-size 8
    python -m minidl.examples.resnet50 cat.jpg --weights random      # plumbing check only

minidl downloads no weights. ``--weights`` takes torchvision's checkpoint (read without torch),
a ``.npz`` converted from it once (``python -m minidl.models.convert resnet50-0676ba61.pth
resnet50.npz``), a ``.safetensors`` file with torchvision's names, or ``IMAGENET1K_V1`` /
``IMAGENET1K_V2``, which use torchvision's downloaded file in ``$TORCH_HOME/hub/checkpoints``
(default ``~/.cache/torch``). ``--weights random`` runs a randomly initialised
network and prints a warning that its predictions are meaningless. Images Pillow cannot read
are reported and skipped; the exit status is then 1.
"""
from __future__ import annotations

import argparse
import pickle
import sys

import numpy as np

import minidl
import minidl.nn.functional as F
from minidl.examples import device_arg, seed_arg
from minidl.models.imagenet import imagenet_classes
from minidl.vision.classifier import RANDOM, build_backbone, file_sha1, resolve_weights  # noqa: F401
from minidl.vision.transforms import ImageReadError, preprocess


def load_backbone(weights, device="cpu", seed=0, what="predictions"):
    """-> (ResNet-50 in eval mode on ``device``, weights id); see vision.classifier.resolve_weights."""
    source, weights_id = resolve_weights(weights, seed, what)
    return build_backbone(source, device, seed), weights_id


def read_batches(paths, batch_size):
    """Yield (paths, float32 batch) of readable images; unreadable ones are reported and left out."""
    batch_paths, arrays, failed = [], [], []
    for path in paths:
        try:
            arrays.append(preprocess(path))
            batch_paths.append(path)
        except (ImageReadError, FileNotFoundError) as e:
            print(f"warning: skipping {path}: {e}", file=sys.stderr)
            failed.append(path)
        if len(arrays) == batch_size:
            yield batch_paths, np.stack(arrays), failed
            batch_paths, arrays, failed = [], [], []
    if arrays or failed:
        yield batch_paths, (np.stack(arrays) if arrays else None), failed


def predict_topk(model, batch, k, device="cpu"):
    """(N, 3, H, W) float32 -> (indices (N, k), probabilities (N, k)), most likely first."""
    with minidl.no_grad():
        probs = F.softmax(model(minidl.tensor(batch, device=device)), dim=1).numpy()
    idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(probs, idx, axis=1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m minidl.examples.resnet50", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--weights", required=True,
                   help="torchvision .pth, converted .npz, .safetensors, IMAGENET1K_V1/IMAGENET1K_V2 "
                        "(torchvision's cached file), or 'random' (meaningless output)")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", type=device_arg, default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of --weights random")
    args = p.parse_args(argv)
    if not 1 <= args.topk <= 1000 or args.batch_size < 1:
        p.error("--topk must be in 1..1000 and --batch-size >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        model, _ = load_backbone(args.weights, args.device, args.seed)
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as e:  # a refused pickle too
        print(f"error: {e}", file=sys.stderr)
        return 2
    names = imagenet_classes()
    width = max(len(names[i]) for i in range(len(names)))
    n_failed = 0
    for paths, batch, failed in read_batches(args.images, args.batch_size):
        n_failed += len(failed)
        if batch is None:
            continue
        idx, probs = predict_topk(model, batch, args.topk, args.device)
        for path, row_idx, row_p in zip(paths, idx, probs):
            print(path)
            for rank, (i, pr) in enumerate(zip(row_idx, row_p), 1):
                print(f"  {rank}. {names[i]:<{min(width, 30)}} {100 * pr:6.2f}%  (class {i})")
        sys.stdout.flush()
    if args.weights == RANDOM:
        print("(random weights: the classes above are meaningless)", file=sys.stderr)
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
