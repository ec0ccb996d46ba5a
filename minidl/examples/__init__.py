"""Runnable examples: python -m minidl.examples.mnist, ... .resnet50, ... .image_classifier."""
