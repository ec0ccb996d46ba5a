"""Vision: image loading and ImageNet preprocessing (``minidl.vision.transforms``)."""
from . import transforms

__all__ = ["transforms"]
