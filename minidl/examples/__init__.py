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


class CompileNotice:
    """One line printed if the first training step is still running after ``after`` seconds.

    On a fresh install numba compiles minidl's CPU kernels on their first use (about half a
    minute on a 2-core machine) and saves them to its cache; without a word the pause reads as
    a hang. ``done()`` (after the first step) cancels the line; a step that finishes in time
    prints nothing, so a warm cache stays silent."""

    MESSAGE = ("(the first step is compiling minidl's CPU kernels with numba: about half a minute, "
               "once; later runs load them from numba's cache)")

    def __init__(self, device, after=3.0, stream=None):
        import sys
        import threading

        self._timer = None
        if str(device).startswith("cpu"):
            out = stream or sys.stdout
            self._timer = threading.Timer(after, lambda: print(self.MESSAGE, file=out, flush=True))
            self._timer.daemon = True
            self._timer.start()

    def done(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
