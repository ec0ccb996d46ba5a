"""Write minidl/datasets/_sample/mnist_sample.npz: the first 6,000 training and 1,000 test
images and labels of MNIST, as uint8, for MNIST.sample().

    python tools/make_mnist_sample.py [--src DIR_WITH_IDX_FILES] [--out PATH]

--src defaults to $MINIDL_DATA/mnist, else ../shared/data/mnist beside the repository.
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from minidl.datasets.mnist import SAMPLE_PATH, load_split  # noqa: E402

N_TRAIN, N_TEST = 6000, 1000


def default_src():
    if os.environ.get("MINIDL_DATA"):
        return Path(os.environ["MINIDL_DATA"]) / "mnist"
    return REPO.parent / "shared" / "data" / "mnist"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=default_src())
    parser.add_argument("--out", type=Path, default=SAMPLE_PATH)
    args = parser.parse_args()

    train_images, train_labels = load_split(args.src, train=True)
    test_images, test_labels = load_split(args.src, train=False)
    arrays = {
        "train_images": train_images[:N_TRAIN], "train_labels": train_labels[:N_TRAIN],
        "test_images": test_images[:N_TEST], "test_labels": test_labels[:N_TEST],
    }
    arrays = {k: np.ascontiguousarray(v, dtype=np.uint8) for k, v in arrays.items()}

    # Temporary file and rename, so a failed run never leaves a broken sample in the package.
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, args.out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"wrote {args.out}: {args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
