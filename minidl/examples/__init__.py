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
    """One line printed when numba starts compiling one of minidl's CPU kernels.

    On a fresh install numba compiles minidl's CPU kernels on their first use (about half a
    minute on a 2-core machine) and saves them to its cache; without a word the pause reads as
    a hang. The notice listens to numba's own "numba:compile" event, which fires only on a
    cache miss, so a warm cache stays silent however slow the step, and the line comes as the
    compiling starts rather than after a guessed delay. It speaks at most once; ``done()`` stops
    listening (a ``with`` block does it on exit). CUDA runs never print it."""

    MESSAGE = ("(numba is compiling minidl's CPU kernels: about half a minute, once; later runs "
               "load them from numba's cache)")

    def __init__(self, device, stream=None):
        self._stream, self._spoken, self._listener = stream, False, None
        if not str(device).startswith("cpu"):
            return
        try:
            from numba.core import event
        except ImportError:  # numba without its event API: say nothing rather than fail
            return
        notice = self

        class _Listener(event.Listener):
            def on_start(self, ev):
                dispatcher = (ev.data or {}).get("dispatcher")
                module = getattr(getattr(dispatcher, "py_func", None), "__module__", "") or ""
                if module.startswith("minidl"):
                    notice._speak()

            def on_end(self, ev):
                pass

        self._listener = _Listener()
        event.register("numba:compile", self._listener)

    def _speak(self):
        if not self._spoken:
            import sys

            self._spoken = True
            print(self.MESSAGE, file=self._stream or sys.stdout, flush=True)

    def done(self):
        if self._listener is not None:
            from numba.core import event

            event.unregister("numba:compile", self._listener)
            self._listener = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.done()
