"""Vision: torchvision's everyday data API and the photo-folder classifier.

- ``minidl.vision.transforms``: image loading and ImageNet preprocessing (``load_image``,
  ``preprocess``), torchvision's transform classes (``Compose``, ``ToTensor``, ``Normalize``,
  ``RandomCrop``, ...) and ``transforms.functional``;
- ``minidl.vision.datasets``: MNIST, FashionMNIST, KMNIST, CIFAR10, CIFAR100, DatasetFolder,
  ImageFolder with torchvision's constructors;
- ``minidl.vision.utils``: ``make_grid`` and ``save_image``;
- ``minidl.vision.ops``: torchvision.ops' box ops, box losses, NMS and RoI poolings;
- ``ImageClassifier`` (``minidl.vision.classifier``).

The classifier is imported on first use: ``minidl.datasets`` reads images through
``vision.transforms``, and must not pull in the models that the classifier needs.
"""
from . import datasets, transforms, utils

__all__ = ["transforms", "datasets", "utils", "ops", "ImageClassifier"]


def __getattr__(name):
    if name == "ops":  # imported on first use: it needs nn, which the data API does not
        import importlib

        return importlib.import_module(__name__ + ".ops")
    if name == "ImageClassifier":
        from .classifier import ImageClassifier

        return ImageClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
