"""Ready-made datasets: MNIST (IDX files, or the embedded sample) and image folders."""
from .mnist import MNIST, MNISTNotFound, load_mnist_sample

__all__ = ["MNIST", "MNISTNotFound", "load_mnist_sample"]

# Image folders live in their own module, which may not exist yet in every checkout. Only its
# absence is tolerated: an ImportError raised inside image_folder.py itself must not be hidden.
try:
    from .image_folder import ImageFolder  # noqa: F401
except ModuleNotFoundError as e:
    if e.name != f"{__name__}.image_folder":
        raise
else:
    __all__.append("ImageFolder")
