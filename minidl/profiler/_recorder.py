"""What a running profiler does while it records: one ``Recorder`` installed as
``minidl.autograd._profiler_hook`` opens and closes timed ranges (ops, backward nodes, user
ranges) and keeps them as ``FunctionEvent``s.

The hot paths only look at that global: ``Function.apply`` and the backward engine call
``forward``/``backward`` here when it is set, and run as before when it is None. Nothing else
in minidl imports this module on a hot path.
"""
from __future__ import annotations

import functools
import os
import sys
import threading
import time

from .. import autograd, backend
from ..utils.flop_counter import op_flops
from .events import FunctionEvent, finish

_perf_ns = time.perf_counter_ns
_get_ident = threading.get_ident

# the open profile() session (between start() and stop()), whatever its schedule says now:
# a DataLoader iterator made while one is open times its batches when the recorder records
session = None


def active():
    """The recording Recorder, or None."""
    return autograd._profiler_hook


def _counters_below(hook):
    """The FlopCounterModes stacked from ``hook`` down, and what lies beneath the last one."""
    from ..utils.flop_counter import FlopCounterMode

    chain = []
    while isinstance(hook, FlopCounterMode):
        chain.append(hook)
        hook = hook._prev
    return chain, hook


def install(recorder):
    """Start ``recorder``; under running FlopCounterModes it goes beneath them (they pass every
    op on to it), so a profile (or its schedule's next recording) can start inside a counter."""
    chain, beneath = _counters_below(autograd._profiler_hook)
    if beneath is not None:
        raise RuntimeError("profiler: another profiler is already recording; minidl records "
                           "with one profiler at a time (stop the other one first)")
    if chain:
        chain[-1]._prev = recorder
    else:
        autograd._profiler_hook = recorder


def uninstall(recorder):
    """Stop ``recorder``, wherever it is in the stack of hooks (a FlopCounterMode entered after
    it may still be running)."""
    if autograd._profiler_hook is recorder:
        autograd._profiler_hook = None
        return
    chain, _ = _counters_below(autograd._profiler_hook)
    for counter in chain:
        if counter._prev is recorder:
            counter._prev = None


def _array_bytes(value):
    """(host bytes, device bytes) of the arrays in ``value`` (an array, a tuple or None)."""
    if value is None:
        return 0, 0
    if isinstance(value, (tuple, list)):
        host = dev = 0
        for v in value:
            h, d = _array_bytes(v)
            host, dev = host + h, dev + d
        return host, dev
    nbytes = getattr(value, "nbytes", None)
    if nbytes is None:
        return 0, 0
    if backend.device_of(value) == "cuda":
        return 0, int(nbytes)
    return int(nbytes), 0


_HERE = os.path.dirname(os.path.abspath(__file__))
_AUTOGRAD = os.path.abspath(autograd.__file__)


def _python_stack():
    """The Python call stack of the current op, innermost first, as torch's ``with_stack``:
    ``"path(line): function"``, without the profiler's own frames."""
    frames = []
    f = sys._getframe(1)
    while f is not None:
        path = f.f_code.co_filename
        if not (path.startswith(_HERE) or path == _AUTOGRAD):
            frames.append(f"{path}({f.f_lineno}): {f.f_code.co_name}")
        f = f.f_back
    return frames


class Recorder:
    """The events of one recording (one schedule cycle, or one ``with profile()`` block)."""

    def __init__(self, record_shapes=False, profile_memory=False, with_stack=False,
                 with_modules=False, cuda=None, origin_ns=None, with_flops=False):
        self.record_shapes = record_shapes
        self.with_flops = with_flops
        self.profile_memory = profile_memory
        self.with_stack = with_stack
        self.with_modules = with_modules
        self.cuda = cuda  # the cupy module when CUDA activity is profiled, else None
        self.origin_ns = _perf_ns() if origin_ns is None else origin_ns
        self.events = []  # every range, in the order they opened
        self._stacks = {}  # thread -> its open ranges, innermost last
        self._base = None  # a CUDA event recorded when the recording started
        self._base_us = 0.0

    # ---- the recording's life -----------------------------------------------------------
    def start(self):
        if self.cuda is not None:
            self._base = self.cuda.cuda.Event()
            self._base.record()
            self._base_us = (_perf_ns() - self.origin_ns) / 1000.0
        install(self)

    def stop(self):
        """Stop recording: ranges still open are closed now; CUDA times are read."""
        uninstall(self)
        now = _perf_ns()
        for stack in self._stacks.values():
            while stack:
                self._close(stack.pop(), now)
        self._stacks = {}
        origin = self.origin_ns
        for ev in self.events:
            start = ev._start_ns
            ev.time_range.start = (start - origin) / 1000.0
            ev.time_range.end = max(ev._end_ns - origin, start - origin) / 1000.0
        if self.cuda is not None:
            self._read_cuda_times()
        finish(self.events)

    def _read_cuda_times(self):
        timed = [ev for ev in self.events if ev._cuda is not None]
        if not timed:
            return
        last = self.cuda.cuda.Event()
        last.record()
        last.synchronize()  # recorded after every other event on the stream: all are done
        elapsed = self.cuda.cuda.get_elapsed_time
        base = self._base
        for ev in timed:
            begin, end = ev._cuda
            ev.device_time_total = max(float(elapsed(begin, end)), 0.0) * 1000.0
            ev.device_start = self._base_us + max(float(elapsed(base, begin)), 0.0) * 1000.0
            ev._cuda = None

    # ---- ranges -------------------------------------------------------------------------
    def begin(self, name, kind="user_annotation", shapes=None, on_device=True):
        """Open a range on this thread; returns its event, for ``end``. ``on_device``: whether
        the range is timed on the GPU as well (when CUDA activity is profiled)."""
        thread = _get_ident()
        stack = self._stacks.get(thread)
        if stack is None:
            stack = self._stacks[thread] = []
        parent = stack[-1] if stack else None
        ev = FunctionEvent(len(self.events), name, thread, kind, parent)
        if parent is not None:
            parent.cpu_children.append(ev)
        if shapes is not None:
            ev.input_shapes = shapes
        if self.with_stack:
            ev.stack = _python_stack()
        self.events.append(ev)
        stack.append(ev)
        if on_device and self.cuda is not None:
            begin = self.cuda.cuda.Event()
            begin.record()
            ev._cuda = [begin, None]
        ev._start_ns = _perf_ns()
        return ev

    def _close(self, ev, now):
        ev._end_ns = now
        if ev._cuda is not None and ev._cuda[1] is None:
            end = self.cuda.cuda.Event()
            end.record()
            ev._cuda[1] = end

    def end(self, ev, outputs=None):
        now = _perf_ns()
        stack = self._stacks.get(_get_ident())
        if not stack or ev not in stack:
            return  # closed already (the recording stopped inside the range)
        while stack:  # a range entered inside this one and never exited closes with it
            top = stack.pop()
            self._close(top, now)
            if top is ev:
                break
        if self.profile_memory and outputs is not None:
            ev._own_bytes = _array_bytes(outputs)

    def run(self, name, fn, /, *args, **kwargs):
        """``fn(*args, **kwargs)`` inside a range called ``name``."""
        ev = self.begin(name)
        try:
            return fn(*args, **kwargs)
        finally:
            self.end(ev)

    # ---- the hooks Function.apply and the backward engine call ----------------------------
    def _on_gpu(self, array):
        return self.cuda is not None and backend.device_of(array) == "cuda"

    def forward(self, fn, tensors, kwargs):
        """``fn.forward`` on the tensors' arrays, inside a range named after the op."""
        arrays = [t.data for t in tensors]
        shapes = [list(a.shape) for a in arrays] if self.record_shapes else None
        ev = self.begin(type(fn).__name__, "cpu_op", shapes,
                        bool(arrays) and self._on_gpu(arrays[0]))
        out = None
        try:
            out = fn.forward(*arrays, **kwargs)
            return out
        finally:
            self.end(ev, out)
            if self.with_flops and out is not None:
                first = out[0] if isinstance(out, tuple) else out
                ev.flops = op_flops(fn, [a.shape for a in arrays], first.shape)[1]

    def custom_forward(self, cls, ctx, args, kwargs):
        """A PyTorch-style custom Function's ``forward(ctx, *args)``: the ops it runs on
        Tensors are recorded inside its range."""
        shapes = ([list(a.shape) if hasattr(a, "shape") else [] for a in args]
                  if self.record_shapes else None)
        ev = self.begin(cls.__name__, "cpu_op", shapes)
        out = None
        try:
            out = autograd.run_custom_forward(cls, ctx, args, kwargs)
            return out
        finally:
            self.end(ev, getattr(out, "data", None) if not isinstance(out, tuple)
                     else tuple(getattr(o, "data", None) for o in out))

    def backward(self, ctx, grad):
        """``ctx.backward(grad)`` inside a range named as the node (``Conv2dBackward``)."""
        shapes = [list(grad.shape)] if self.record_shapes else None
        ev = self.begin(ctx.name(), "cpu_op", shapes, self._on_gpu(grad))
        out = None
        try:
            out = ctx.backward(grad)
            return out
        finally:
            self.end(ev, out)
            if self.with_flops:
                ev.flops = op_flops(ctx, [t.shape for t in ctx.inputs], grad.shape, True)[1]

    def module_call(self, module, call, args, kwargs):
        """A Module call inside an ``nn.Module: ClassName`` range (with_modules=True)."""
        if not self.with_modules:
            return call(*args, **kwargs)
        return self.run(f"nn.Module: {type(module).__name__}", call, *args, **kwargs)


class record_function:
    """A named range in the profile, as ``torch.profiler.record_function``: a context manager
    (``with record_function("loss"):``) or a decorator (``@record_function("step")``). It
    costs one global read where no profiler records."""

    def __init__(self, name, args=None):
        if not isinstance(name, str):
            raise TypeError(f"record_function: name must be a str, got {type(name).__name__}")
        if args is not None and not isinstance(args, str):
            raise TypeError(f"record_function: args must be a str or None, got "
                            f"{type(args).__name__}")
        self.name, self.args = name, args
        self._recorder = self._event = None

    def __enter__(self):
        rec = autograd._profiler_hook
        if rec is not None:
            self._recorder = rec
            self._event = rec.begin(self.name)
            if self.args is not None:
                self._event.args = self.args
        return self

    def __exit__(self, *exc):
        rec, self._recorder = self._recorder, None
        if rec is not None:
            rec.end(self._event)
            self._event = None
        return False

    def __call__(self, fn):
        if not callable(fn):
            raise TypeError(f"record_function: decorates a callable, got {type(fn).__name__}")
        name, args = self.name, self.args

        @functools.wraps(fn)
        def in_range(*a, **k):
            rec = autograd._profiler_hook
            if rec is None:
                return fn(*a, **k)
            with record_function(name, args):
                return fn(*a, **k)
        return in_range


class ProfiledIterator:
    """A DataLoader iterator whose ``__next__`` is a range while a profiler records (torch's
    ``enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__``)."""

    def __init__(self, iterator, name):
        self._it, self._name = iterator, name

    def __iter__(self):
        return self

    def __next__(self):
        rec = autograd._profiler_hook
        if rec is None:
            return next(self._it)
        return rec.run(self._name, next, self._it)

    def __len__(self):
        return len(self._it)

    def __getattr__(self, name):  # the worker iterator's other methods (shutdown, ...)
        if name == "_it":
            raise AttributeError(name)
        return getattr(self._it, name)


def profile_iterator(iterator, workers):
    """``iterator`` timed per batch when a profiler session is open, else itself."""
    if session is None:
        return iterator
    kind = "_MultiProcessingDataLoaderIter" if workers else "_SingleProcessDataLoaderIter"
    return ProfiledIterator(iterator, f"enumerate(DataLoader)#{kind}.__next__")
