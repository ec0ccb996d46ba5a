"""``minidl.cpu``: torch.cpu's names, so that device-agnostic code written against
``getattr(torch, device_type)`` runs for ``"cpu"`` as for ``"cuda"``. The CPU has one device,
no streams to wait for and no memory pool; ``get_capabilities()`` reports the instruction sets
the processor has (from /proc/cpuinfo on Linux, as torch's cpuinfo does)."""
from __future__ import annotations

from .backend.capabilities import get_capabilities

__all__ = ["is_available", "is_initialized", "synchronize", "current_device", "current_stream",
           "stream", "set_device", "device_count", "Stream", "StreamContext", "Event",
           "get_capabilities"]

def is_available() -> bool:
    """Always True."""
    return True


def is_initialized() -> bool:
    """Always True."""
    return True


def synchronize(device=None) -> None:
    """Nothing to wait for: the CPU's work is done when its call returns."""
    _check_device(device, "synchronize")


def device_count() -> int:
    """Always 1."""
    return 1


def current_device() -> str:
    """Always ``"cpu"``."""
    return "cpu"


def set_device(device) -> None:
    """A no-op, as torch's (there is one CPU device)."""
    _check_device(device, "set_device")


def _check_device(device, name):
    if device is None or isinstance(device, int):
        return
    from .backend import device as _device

    if _device(device).type != "cpu":
        raise ValueError(f"minidl.cpu.{name}: expected a CPU device, got {device!r}")


class Stream:
    """A stand-in so that stream code runs on the CPU; waiting on it does nothing."""

    def __init__(self, priority: int = -1) -> None:
        self.priority = priority

    def wait_stream(self, stream) -> None:
        pass

    def record_event(self) -> None:
        pass

    def wait_event(self, event) -> None:
        pass


class Event:
    """A stand-in: always complete."""

    def query(self) -> bool:
        return True

    def record(self, stream=None) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def wait(self, stream=None) -> None:
        pass


_default_stream = Stream()
_current = [_default_stream]


def current_stream(device=None) -> Stream:
    """The stream selected by ``with minidl.cpu.stream(s):`` (else the default one)."""
    return _current[0]


class StreamContext:
    """``with minidl.cpu.stream(s):`` makes ``s`` the current stream inside."""

    def __init__(self, stream):
        self.stream, self.prev_stream = stream, _default_stream

    def __enter__(self):
        if self.stream is not None:
            self.prev_stream, _current[0] = _current[0], self.stream

    def __exit__(self, *exc_info):
        if self.stream is not None:
            _current[0] = self.prev_stream


def stream(stream) -> StreamContext:
    return StreamContext(stream)


class _Amp:
    """``torch.cpu.amp``'s deprecated names: ``autocast(...)`` is ``minidl.autocast("cpu",
    ...)``, ``GradScaler(...)`` is ``minidl.amp.GradScaler("cpu", ...)``, each with torch's
    FutureWarning."""

    @staticmethod
    def autocast(enabled=True, dtype=None, cache_enabled=True):
        from .amp.deprecated import device_autocast

        return device_autocast("cpu", enabled, dtype)  # bfloat16 by default, as torch's

    @staticmethod
    def GradScaler(init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,  # noqa: N802
                   growth_interval=2000, enabled=True):
        from .amp.deprecated import device_grad_scaler

        return device_grad_scaler("cpu", init_scale, growth_factor, backoff_factor,
                                  growth_interval, enabled)


amp = _Amp()
