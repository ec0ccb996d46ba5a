"""Classify photos with ResNet-50: the top classes of ImageNet's 1,000, with probabilities.

    python -m minidl.examples.resnet50 cat.jpg dog.png --weights resnet50.npz
    python -m minidl.examples.resnet50 photos/*.jpg --weights resnet50.npz --topk 3 --batch-size 8
    python -m minidl.examples.resnet50 cat.jpg --weights random      # plumbing check only

minidl downloads no weights. Convert torchvision's checkpoint once (it is read without torch):

    python -m minidl.models.convert resnet50-0676ba61.pth resnet50.npz

``--weights`` also takes the ``.pth`` itself. ``--weights random`` runs a randomly initialised
network and prints a warning that its predictions are meaningless. Images Pillow cannot read
are reported and skipped; the exit status is then 1.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys

import numpy as np

import minidl
import minidl.nn.functional as F
from minidl.models import resnet50
from minidl.models.imagenet import imagenet_classes
from minidl.vision.transforms import ImageReadError, preprocess

RANDOM = "random"


def file_sha1(path, chunk=1 << 20):
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def warn_random_weights(seed, what="predictions"):
    line = "!" * 100
    print(f"{line}\n!!! WARNING: --weights random: ResNet-50 runs on RANDOM weights (seed {seed}); "
          f"its {what} are MEANINGLESS.\n!!! Convert real weights with "
          f"`python -m minidl.models.convert resnet50.pth resnet50.npz`.\n{line}",
          file=sys.stderr, flush=True)


def resolve_weights(weights, seed=0, what="predictions"):
    """Check ``weights`` (a path or "random") and name it for caches, without loading it:
    the sha1 of the file's bytes, or "random-seed<N>" (after a loud warning)."""
    if weights == RANDOM:
        warn_random_weights(seed, what)
        return f"random-seed{seed}"
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"weights file {weights} does not exist (convert a torchvision "
                                f"checkpoint with `python -m minidl.models.convert`, or pass "
                                f"--weights random to test the plumbing)")
    return "sha1-" + file_sha1(weights)


def build_backbone(weights, device="cpu", seed=0):
    """ResNet-50 in eval mode on ``device``, from a weights path or "random" (seeded)."""
    if weights == RANDOM:
        minidl.manual_seed(seed)
        model = resnet50()
    else:
        model = resnet50(weights=weights)
    return model.eval().to(device)


def load_backbone(weights, device="cpu", seed=0, what="predictions"):
    """-> (ResNet-50 in eval mode on ``device``, weights id); see resolve_weights."""
    weights_id = resolve_weights(weights, seed, what)
    return build_backbone(weights, device, seed), weights_id


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
                   help="converted .npz (or a torchvision .pth), or 'random' (meaningless output)")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0, help="seed of --weights random")
    args = p.parse_args(argv)
    if not 1 <= args.topk <= 1000 or args.batch_size < 1:
        p.error("--topk must be in 1..1000 and --batch-size >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        model, _ = load_backbone(args.weights, args.device, args.seed)
    except (OSError, ValueError, RuntimeError) as e:
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
