"""Runnable examples: python -m minidl.examples.mnist, ... .resnet50, ... .image_classifier."""

import argparse


def seed_arg(text):
    """argparse type of a --seed option: a non-negative integer (NumPy's generators take no
    other), so a bad value is one ``error: argument --seed: ...`` line, before any work."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {value}")
    return value


def device_arg(text):
    """argparse type of a --device option: 'cpu' or 'cuda' (checked before any work)."""
    from minidl.backend import normalize_device

    try:
        normalize_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text
