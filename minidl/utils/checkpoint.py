"""Activation checkpointing, as ``torch.utils.checkpoint``: trade compute for memory.

``checkpoint(fn, *args)`` runs ``fn`` and keeps none of the activations inside it for
backward: only its inputs. When backward reaches its outputs, ``fn`` runs again on the same
inputs (with the random state, grad mode and autocast state of the first run, so dropout draws
the same masks), and the gradients flow through that second graph, which is dropped at once.
A network split into k checkpointed segments holds about 1/k of its activations (plus one
segment's while it is recomputed), for about one more forward pass of compute.

How it is built here: the first run records ``fn``'s graph as usual, only to find the tensors
that require grad it read (the parameters of the layers inside, whatever closure or module
holds them); the graph is then dropped, and one node stands for ``fn`` with the inputs and
those tensors as its inputs. So parameters get their gradients even when no input requires
grad, as with PyTorch's ``use_reentrant=False``, and through the normal backward (hooks,
DistributedDataParallel, GradScaler all see them). The first run holds one segment's
activations at a time, which is the recompute's peak anyway.

BatchNorm in training mode updates its running statistics on both runs, as in PyTorch.
"""
from __future__ import annotations

import contextlib

from .. import autograd
from ..tensor import Tensor

__all__ = ["checkpoint", "checkpoint_sequential"]


@contextlib.contextmanager
def _recording_nodes(created):
    """While active, the id of every graph node made (by any Function's apply) goes into
    ``created``: what ``function`` builds in its first run, told apart from the graph it found."""
    original = autograd.Function.__dict__["apply"]

    def apply(cls, *inputs, **kwargs):
        out = original.__func__(cls, *inputs, **kwargs)
        outs = [o for o in (out if isinstance(out, tuple) else (out,)) if isinstance(o, Tensor)]
        for o in outs:
            if o._ctx is not None:
                created.add(id(o._ctx))
        if cls._on_tensors:
            # a custom function's outputs are views (recorded above) of one packed tensor
            # whose node is made outside apply: find it below them
            stack = [(o, 0) for o in outs]
            while stack:
                t, depth = stack.pop()
                ctx = t._ctx
                if ctx is None or depth > 3:
                    continue
                if isinstance(ctx, autograd._TensorStyle):
                    created.add(id(ctx))
                elif id(ctx) in created:
                    stack.extend((i, depth + 1) for i in ctx.inputs if isinstance(i, Tensor))
        return out

    autograd.Function.apply = classmethod(apply)
    try:
        yield
    finally:
        autograd.Function.apply = original


def _graph_leaves(outputs, skip, created=None):
    """The tensors that require grad that ``outputs`` were computed from without a node in
    ``created`` behind them: parameters and other leaves, and tensors with a graph of their own
    made before the run (a closure's ``h = layer(x)``: its gradient goes on into that graph),
    in first-seen order, excluding those in ``skip``."""
    seen, found, stack = set(skip), [], []
    for out in outputs:
        stack.append(out)
    visited = set()
    while stack:
        t = stack.pop()
        if id(t) in visited:
            continue
        visited.add(id(t))
        ctx = t._ctx
        if ctx is None or (created is not None and id(ctx) not in created):
            if t.requires_grad and id(t) not in seen:
                seen.add(id(t))
                found.append(t)
            continue
        stack.extend(x for x in ctx.inputs if isinstance(x, Tensor))
    return found


class _RandomState:
    """The random state of minidl's generators at the first run, put back for the second."""

    def __init__(self, tensors):
        from .. import backend

        self.cupy = None
        on_gpu = [t for t in tensors if t.device.startswith("cuda")]
        if on_gpu:
            # CuPy's generator has no readable state: both runs draw from a generator of
            # their own, seeded alike from minidl's
            self.cupy = backend.get_array_module(on_gpu[0].data)
            self.cupy_seed = int(backend.rng().integers(0, 2**63 - 1))
        self.numpy = backend.default_generator._state_array()  # with the cached normal

    @contextlib.contextmanager
    def _cupy_fork(self):
        if self.cupy is None:
            yield
            return
        previous = self.cupy.random.get_random_state()
        self.cupy.random.set_random_state(self.cupy.random.RandomState(self.cupy_seed))
        try:
            yield
        finally:
            self.cupy.random.set_random_state(previous)

    def first_run(self):
        """The first run: NumPy's stream moves on as without checkpoint; CuPy's is forked."""
        return self._cupy_fork()

    @contextlib.contextmanager
    def again(self):
        """The recompute: both streams as they were at the first run, then put back."""
        from .. import backend

        now = backend.default_generator._state_array()
        backend.default_generator._load_state_array(self.numpy)
        try:
            with self._cupy_fork():
                yield
        finally:
            backend.default_generator._load_state_array(now)


def _autocast_state():
    from ..amp.autocast import _state

    return dict(_state)


@contextlib.contextmanager
def _autocast_as(state):
    from ..amp.autocast import autocast

    with contextlib.ExitStack() as stack:
        for device, (enabled, dtype) in state.items():
            stack.enter_context(autocast(device, dtype=dtype, enabled=enabled))
        yield


def _as_tuple(out, where):
    """The Tensors ``function`` returned, in order: itself, or those inside its tuples, lists
    and dicts, however nested (other values there pass through, as in PyTorch)."""
    if not isinstance(out, (Tensor, tuple, list, dict)):
        raise TypeError(f"{where}: the function must return a Tensor or a tuple of Tensors (or a "
                        f"list or dict holding Tensors beside other values), got "
                        f"{type(out).__name__}")
    # an explicit stack, not a recursive closure: a closure that refers to itself is a cycle,
    # which would keep the first run's outputs (and their whole graph) until the collector ran
    found, stack = [], [out]
    while stack:
        o = stack.pop()
        if isinstance(o, Tensor):
            found.append(o)
        elif isinstance(o, (tuple, list)):
            stack.extend(reversed(o))
        elif isinstance(o, dict):
            stack.extend(reversed(list(o.values())))
    return tuple(found)


def _rebuild(out, tensors):
    """``out`` with its Tensors replaced, in order, by ``tensors``."""
    return _build(out, iter((tensors,) if isinstance(tensors, Tensor) else tuple(tensors)))


def _build(o, it):
    if isinstance(o, Tensor):
        return next(it)
    if isinstance(o, dict):
        return type(o)((k, _build(v, it)) for k, v in o.items())
    if isinstance(o, (tuple, list)):
        items = [_build(x, it) for x in o]
        return type(o)(*items) if hasattr(o, "_fields") else type(o)(items)
    return o


class _Checkpoint(autograd.Function):
    """One node for a checkpointed function: its inputs are the function's Tensor arguments
    and the tensors requiring grad it read; its backward runs the function again."""

    @staticmethod
    def forward(ctx, run, outs, n_args, *tensors):
        ctx.run, ctx.n_args = run, n_args
        ctx.shapes = [(o.shape, o.dtype) for o in outs]
        ctx.save_for_backward(*tensors[:n_args])
        ctx.leaves = tensors[n_args:]
        return tuple(o.detach() for o in outs)

    @staticmethod
    def backward(ctx, *grads):
        inputs = ctx.saved_tensors
        # grad mode is on here only in a backward with create_graph=True (double backward):
        # the recompute then runs on the inputs themselves, not on detached copies, and its
        # gradients are taken with create_graph, so that they stay functions of the inputs
        # and of the parameters and can be differentiated again
        create_graph = autograd.is_grad_enabled()
        detached = []
        for t in inputs:
            if create_graph:
                detached.append(t)
                continue
            d = t.detach()
            d.requires_grad = t.requires_grad
            detached.append(d)
        # a tensor with a graph of its own made before the first run (a closure's h) is a leaf
        # of the recompute: its gradient is returned here and goes on through its own graph in
        # the outer backward (not twice, not through a graph the recompute would free); so is
        # an input used as it is (create_graph)
        cut = list(ctx.leaves) + (list(inputs) if create_graph else [])
        outer, seen = [], set()
        for t in cut:
            if t._ctx is not None and id(t) not in seen:
                seen.add(id(t))
                outer.append((t, t._ctx))
        try:
            for t, _ in outer:
                t._ctx = None
            outs = ctx.run(detached)
            got = [(o.shape, o.dtype) for o in outs]
            if got != ctx.shapes:
                raise RuntimeError(f"checkpoint: the function gave outputs {got} when run again "
                                   f"for backward, but {ctx.shapes} the first time; a "
                                   "checkpointed function must compute the same thing both "
                                   "times")
            pairs = [(o, g) for o, g in zip(outs, grads) if o.requires_grad]
            wanted = [d for d in detached if d.requires_grad] + list(ctx.leaves)
            found = autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                  allow_unused=True, create_graph=create_graph) \
                if pairs and wanted else [None] * len(wanted)
        finally:
            for t, node in outer:
                t._ctx = node
        found = iter(found)
        input_grads = [next(found) if d.requires_grad else None for d in detached]
        return (None, None, None, *input_grads, *found)


def checkpoint(function, *args, use_reentrant=None, context_fn=None, determinism_check="default",
               debug=False, preserve_rng_state=True, **kwargs):
    """``function(*args, **kwargs)`` without keeping its activations for backward: they are
    recomputed when backward reaches it (see the module's docstring). ``function`` returns a
    Tensor or a tuple of Tensors. ``use_reentrant`` is accepted for PyTorch's sake; both
    values give PyTorch's ``use_reentrant=False`` behaviour (parameters inside get gradients
    even when no input requires grad). ``preserve_rng_state=False`` lets the recompute draw
    new random numbers (dropout masks then differ between the two runs)."""
    if use_reentrant not in (None, True, False):
        raise ValueError(f"checkpoint: use_reentrant must be True, False or None, got "
                         f"{use_reentrant!r}")
    if context_fn is not None:
        raise NotImplementedError("checkpoint: context_fn (selective activation checkpointing) "
                                  "is not supported")
    if determinism_check not in ("default", "none"):
        raise ValueError(f"checkpoint: determinism_check must be 'default' or 'none', got "
                         f"{determinism_check!r}")
    del debug
    if not callable(function):
        raise TypeError(f"checkpoint: function must be callable, got {function!r}")
    if use_reentrant and kwargs:  # PyTorch's reentrant variant passes none on
        raise ValueError(f"checkpoint: Unexpected keyword arguments: {', '.join(kwargs)} "
                         f"(use_reentrant=True takes none; pass use_reentrant=False)")
    if not autograd.is_grad_enabled():
        return function(*args, **kwargs)
    positions = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
    tensors = [args[i] for i in positions]
    rng = _RandomState(tensors) if preserve_rng_state else None
    autocast_state = _autocast_state()

    def call(inputs):  # the recompute, from backward
        full = list(args)
        for i, t in zip(positions, inputs):
            full[i] = t
        with contextlib.ExitStack() as stack:
            if rng is not None:
                stack.enter_context(rng.again())
            stack.enter_context(_autocast_as(autocast_state))
            stack.enter_context(autograd.enable_grad())
            return _as_tuple(function(*full, **kwargs), "checkpoint")

    created = set()
    with rng.first_run() if rng is not None else contextlib.nullcontext(), \
            _recording_nodes(created):
        out = function(*args, **kwargs)
    outs = _as_tuple(out, "checkpoint")
    if not any(o.requires_grad for o in outs):
        return out  # nothing inside requires grad: there is no graph to drop
    leaves = _graph_leaves(outs, skip=[id(t) for t in tensors], created=created)
    results = _Checkpoint.apply(call, outs, len(tensors), *tensors, *leaves)
    return _rebuild(out, results)


def checkpoint_sequential(functions, segments, input, use_reentrant=None, **kwargs):
    """Run ``functions`` (an ``nn.Sequential`` or a list of modules/functions) in order, in
    ``segments`` chunks, each but the last checkpointed: about 1/segments of the activations
    are kept, as ``torch.utils.checkpoint.checkpoint_sequential``."""
    from ..nn import Sequential

    if isinstance(functions, Sequential):
        functions = list(functions.children())
    try:
        functions = list(functions)
    except TypeError:
        raise TypeError(f"checkpoint_sequential: functions must be an nn.Sequential or a list "
                        f"of modules/functions, got {type(functions).__name__}") from None
    for i, f in enumerate(functions):
        if not callable(f):
            raise TypeError(f"checkpoint_sequential: functions[{i}] is a {type(f).__name__}, "
                            f"not a module or function")
    if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
        raise ValueError(f"checkpoint_sequential: segments must be a positive integer, got "
                         f"{segments!r}")
    size = len(functions) // segments if segments <= len(functions) else 1

    def run(start, end):
        def forward(x):
            for f in functions[start:end]:
                x = f(x)
            return x
        return forward

    end = -1
    for start in range(0, size * (segments - 1), size):
        end = start + size - 1
        input = checkpoint(run(start, end + 1), input, use_reentrant=use_reentrant, **kwargs)
    return run(end + 1, len(functions))(input)
