"""Vision: image loading and ImageNet preprocessing (``minidl.vision.transforms``) and the
photo-folder ``ImageClassifier`` (``minidl.vision.classifier``).

The classifier is imported on first use: ``minidl.datasets`` reads images through
``vision.transforms``, and must not pull in the models that the classifier needs.
"""
from . import transforms

__all__ = ["transforms", "ImageClassifier"]


def __getattr__(name):
    if name == "ImageClassifier":
        from .classifier import ImageClassifier

        return ImageClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
