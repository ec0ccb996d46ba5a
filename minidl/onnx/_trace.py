"""Recording a model's ops for the exporter: a ``Tracer`` installed as
``minidl.autograd._profiler_hook`` (the slot the profiler and FlopCounterMode use) sees every
op as ``Function.apply`` runs it and keeps its Function, input arrays, keywords, output and the
path of the module that called it. Arrays are named by identity; the tracer keeps each one it
saw alive until the export is done, so that no id is reused meanwhile."""
from __future__ import annotations

import numpy as np

from .. import autograd


class Record:
    __slots__ = ("cls", "fn", "inputs", "kwargs", "out", "path", "module")

    def __init__(self, cls, fn, inputs, kwargs, out, path, module):
        self.cls, self.fn, self.inputs, self.kwargs = cls, fn, inputs, kwargs
        self.out, self.path, self.module = out, path, module


class Tracer(autograd.ChainedHook):
    """The hook: runs each op as it would run (through any hook installed beneath it) and
    records it."""

    # comparisons, logical ops and argmax run outside the graph, and in-place ops write into
    # arrays: while a hook with this flag is installed, Tensor's operators run the first as
    # recorded ops (ops.Compare, ops.ArgMaxMin) and the second out of place
    # (tensor._traced_in_place)
    traces_untracked_ops = True

    def __init__(self, root):
        self.records = []
        self._root = root
        self._names = {id(m): n for n, m in root.named_modules()}
        self._stack = []  # (path, module) of the modules being called, innermost last
        self._prev = None

    def __enter__(self):
        self._prev = autograd._profiler_hook
        autograd._profiler_hook = self
        return self

    def __exit__(self, *exc):
        if autograd._profiler_hook is self:
            autograd._profiler_hook = self._prev
        self._prev = None
        return False

    def _where(self):
        if self._stack:
            return self._stack[-1]
        return "", self._root

    # ---- the hook interface (see minidl.profiler._recorder) ------------------------------
    def forward(self, fn, tensors, kwargs):
        out = super().forward(fn, tensors, kwargs)
        if isinstance(out, np.generic):  # as Function.apply makes it: a 0-d array (the very
            out = np.array(out)  # object the output Tensor holds, so that it is known by id)
        path, module = self._where()
        self.records.append(Record(type(fn), fn, [t.data for t in tensors], dict(kwargs), out,
                                   path, module))
        return out

    def module_call(self, module, call, args, kwargs):
        name = self._names.get(id(module))
        if name is None:  # a module outside the exported one: named under its caller
            name = (self._where()[0] + "." if self._stack else "") + type(module).__name__
        self._stack.append((name, module))
        try:
            return super().module_call(module, call, args, kwargs)
        finally:
            self._stack.pop()
