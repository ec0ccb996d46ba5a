"""Time the photo-folder workflow through minidl.vision.ImageClassifier, cold and warm cache.

    python tools/bench_image_classifier.py [--photos 200] [--weights IMAGENET1K_V2|PATH|random]
                                           [--workdir DIR] [--keep]

Generates a folder of ``--photos`` 400x300 JPEGs in four classes (distinct colours and
textures), then times ``ImageClassifier.fit(folder, weights)`` followed by ``evaluate()``:
once with an empty feature cache (cold: every photo through ResNet-50) and once more with the
cache the first run filled (warm: no network at all). The README's targets, on 2 CPU cores:
cold < 3 min, warm < 2 s. Pin the cores with e.g. ``taskset -c 0,1`` and run on a quiet machine.

``--weights`` defaults to torchvision's IMAGENET1K_V2 file when it is in $TORCH_HOME's cache,
else to a random network (same cost per photo; the accuracy then means nothing).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def make_folder(root, n, size=(400, 300), seed=0):
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    classes = {
        "red_stripes": np.where((yy // 12) % 2, 1.0, 0.45)[..., None] * [220, 50, 40],
        "teal_checks": np.where((yy // 16 + xx // 16) % 2, 1.0, 0.3)[..., None] * [30, 170, 190],
        "yellow_rings": np.where((np.hypot(yy - h / 2, xx - w / 2) // 14) % 2, 1.0, 0.4)[..., None]
        * [230, 210, 60],
        "grey_noise": np.full((h, w, 1), 0.6) * [150, 150, 150],
    }
    names = list(classes)
    for name in names:
        os.makedirs(os.path.join(root, name), exist_ok=True)
    for i in range(n):
        name = names[i % len(names)]
        img = classes[name] * (0.75 + 0.5 * rng.random()) + rng.normal(0, 18, (h, w, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
            os.path.join(root, name, f"img_{i:04d}.jpg"), quality=90)


def main(argv=None):
    from minidl.models.weights import PRETRAINED, checkpoints_dir
    from minidl.vision import ImageClassifier

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=200)
    p.add_argument("--weights", default=None)
    p.add_argument("--workdir", default=None, help="default: a temporary folder, removed afterwards")
    p.add_argument("--keep", action="store_true", help="keep the workdir")
    args = p.parse_args(argv)
    weights = args.weights
    if weights is None:
        cached = os.path.join(checkpoints_dir(), PRETRAINED["IMAGENET1K_V2"])
        weights = "IMAGENET1K_V2" if os.path.isfile(cached) else "random"
    work = args.workdir or tempfile.mkdtemp(prefix="bench-image-classifier-")
    folder, cache = os.path.join(work, "photos"), os.path.join(work, "cache")
    shutil.rmtree(cache, ignore_errors=True)
    try:
        make_folder(folder, args.photos)
        print(f"{args.photos} photos (400x300 JPEG) in {folder}; weights {weights}; "
              f"threads: NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'default')}, "
              f"CPUs allowed {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'}")
        times = []
        for label in ("cold", "warm"):
            t0 = time.perf_counter()
            clf = ImageClassifier.fit(folder, weights, cache_dir=cache, progress=False)
            report = clf.evaluate()
            times.append(time.perf_counter() - t0)
            print(f"{label} cache: {times[-1]:.2f} s (fit + evaluate; features {clf.feature_counts}); "
                  f"held-out accuracy {report['accuracy']:.1%}", flush=True)
        print(f"RESULT cold {times[0]:.1f} s (target < 180 s), warm {times[1]:.2f} s (target < 2 s)")
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
