"""ImageNet's 1000 class names, in the order of ResNet-50's outputs.

Image loading and the ImageNet preprocessing live in ``minidl.vision.transforms``.
"""
from __future__ import annotations

import functools
import os

__all__ = ["imagenet_classes", "imagenet_class_table"]

_CLASSES_TSV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "imagenet_classes.tsv")


@functools.lru_cache(maxsize=None)
def _read_class_table():
    rows = []
    with open(_CLASSES_TSV, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            index, wnid, names = line.rstrip("\n").split("\t")
            if int(index) != len(rows):
                raise ValueError(f"{_CLASSES_TSV}: expected class index {len(rows)}, found {index}")
            rows.append((wnid, names))
    if len(rows) != 1000:
        raise ValueError(f"{_CLASSES_TSV}: expected 1000 classes, found {len(rows)}")
    return tuple(rows)


def imagenet_class_table():
    """[(wordnet_id, all names)] by class index, e.g. ('n01440764', 'tench, Tinca tinca')."""
    return list(_read_class_table())


def imagenet_classes():
    """One readable name per class index (the first name of each synset): 0 -> 'tench'."""
    return [names.split(", ")[0] for _, names in _read_class_table()]
