"""``torch.autograd.forward_ad``: forward-mode derivatives through ``dual_level``,
``make_dual`` and ``unpack_dual``.

minidl has no forward-mode kernels; tangents come from reverse mode by the double-vjp
construction (the one ``minidl.func.jvp`` uses). ``make_dual(primal, tangent)`` records a
root for ``primal`` (a new leaf, or an alias keeping primal's graph where it requires grad),
notes its tangent in the current level, and returns an alias of the root (it requires grad,
where torch's dual tensor need not): an in-place op on the dual, or on a view of it, then
changes the dual's node and never the root's, so tangents follow it as torch's do. ``unpack_dual(y)`` then computes y's tangent,
the sum over the level's dual tensors x_i of J_i t_i: with u a zero cotangent that requires
grad, g_i = vjp(y, x_i, u) recorded (create_graph), and the tangent is the gradient of
sum_i <g_i, t_i> with respect to u. It is cached per output (until y changes in place), and
None where y does not depend on a dual tensor of the level, as torch's.

Limits, from the construction: the ops between the dual tensors and y must be recorded (not
under no_grad) and have a differentiable gradient (``graph_backward``; docs/autograd.md lists
the ops without), and each unpack_dual of a new output costs two backward passes.
"""
from __future__ import annotations

import weakref
from collections import namedtuple

from .. import autograd as _ag
from ..backend.dtypes import is_differentiable

__all__ = ["dual_level", "enter_dual_level", "exit_dual_level", "make_dual", "unpack_dual",
           "UnpackedDualTensor"]

UnpackedDualTensor = namedtuple("UnpackedDualTensor", ["primal", "tangent"])


class _Level:
    def __init__(self, index):
        self.index = index
        self.duals = []                   # (root, tangent), in the order they were made
        self.tangent_of = {}              # id(root) -> tangent
        self.own = {}                     # id(dual) -> (its node at make_dual, tangent, outer)
        self.cache = {}                   # id(y) -> (weakref to y, its version, tangent)


_levels = []  # the levels entered and not yet exited (at most one: no nesting, as torch's)


def enter_dual_level():
    """Enter a new forward-AD level and return its index (0); nesting is refused, as torch's."""
    if _levels:
        raise RuntimeError("Nested forward mode AD is not supported at the moment")
    _levels.append(_Level(len(_levels)))
    _ag._forward_ad_level = True
    return _levels[-1].index


def exit_dual_level(*, level=None):
    """Exit the current level (``level``: its index): its dual tensors lose their tangents."""
    if level is None:
        level = _levels[-1].index if _levels else -1
    if level < 0:
        raise RuntimeError("Dual level must be a positive number.")
    if not _levels or level != _levels[-1].index:
        raise RuntimeError("Trying to exit a forward AD level that was not the last one that was "
                           "created. This is not supported.")
    gone = _levels.pop()
    _ag._forward_ad_level = bool(_levels)
    gone.duals.clear()
    gone.tangent_of.clear()
    gone.own.clear()
    gone.cache.clear()


class dual_level:
    """``with dual_level():`` a forward-AD level: make_dual inside, unpack_dual to read
    tangents; on exit every tangent of the level is dropped."""

    def __enter__(self):
        return enter_dual_level()

    def __exit__(self, *exc):
        exit_dual_level()
        return False


def _current(level, what):
    if level is None:
        if not _levels:
            raise RuntimeError("Trying to create a dual Tensor for forward AD but no level "
                               "exists, make sure to enter_dual_level() first.")
        return _levels[-1]
    for lv in _levels:
        if lv.index == level:
            return lv
    raise RuntimeError(f"{what}: forward AD level {level} has not been entered (or has exited)")


def make_dual(tensor, tangent, *, level=None):
    """``tensor`` as a dual tensor whose tangent is ``tangent`` (same shape), in the current
    level: ops on it give outputs whose tangent unpack_dual reads."""
    Tensor = _ag.Tensor
    lv = _current(level, "make_dual")
    if not isinstance(tensor, Tensor) or not isinstance(tangent, Tensor):
        raise TypeError(f"make_dual: expected Tensors, got {type(tensor).__name__} and "
                        f"{type(tangent).__name__}")
    if not is_differentiable(tensor.data.dtype):
        raise ValueError(f"Expected primal to be floating point or complex, but got: "
                         f"{tensor.dtype}")
    if not is_differentiable(tangent.data.dtype):
        raise ValueError(f"Expected tangent to be floating point or complex, but got: "
                         f"{tangent.dtype}")
    if tuple(tensor.shape) != tuple(tangent.shape):
        raise RuntimeError("Trying to set a forward gradient that has a different size than "
                           "that of the original Tensor, this is not supported. Tensor is of "
                           f"size {list(tensor.shape)} while the given forward gradient is of "
                           f"size {list(tangent.shape)}.")
    if tensor.device != tangent.device:
        raise RuntimeError(f"make_dual: the tangent is on {tangent.device}, the primal on "
                           f"{tensor.device}")
    if tensor.requires_grad and (_own(tensor, lv) is not None or _depends(tensor, lv)[0]):
        raise RuntimeError(f"Making a dual Tensor based on a Tensor that already has a forward "
                           f"gradient at the same level {lv.index} is not supported.")
    with _ag.enable_grad():
        # a root the graph records, which the tangents are taken against: an alias keeping the
        # primal's own graph where it requires grad (reverse mode through a dual tensor works
        # as in torch), else a new leaf; the dual is an alias of it, so that an in-place op on
        # the dual (or a view of it) changes the dual's node, never the root's
        outer = tensor.requires_grad
        root = _alias(tensor) if outer else tensor.detach().requires_grad_(True)
        dual = _alias(root)
    if tangent.data.dtype != tensor.data.dtype:
        tangent = tangent.to(tensor.data.dtype)
    lv.duals.append((root, tangent))
    lv.tangent_of[id(root)] = tangent
    lv.own[id(dual)] = (dual._ctx, tangent, outer, weakref.ref(dual))
    return dual


def _alias(t):
    return _ag.Alias.apply(t)


def _own(tensor, lv):
    """(tangent, outer) of a dual tensor of ``lv`` that has not changed since make_dual."""
    held = lv.own.get(id(tensor))
    if held is None or held[3]() is not tensor or tensor._ctx is not held[0]:
        return None
    return held[1], held[2]


def _depends(y, lv):
    """Whether y's graph reaches a dual tensor of ``lv``, and whether it reaches a tensor that
    requires grad other than them (then its primal and tangent keep the graph)."""
    order, seen, stack = [], set(), [y]  # every tensor above y that requires grad
    lost = []  # ops whose saved values a backward pass freed (a tangent through one: refused)
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        order.append(node)
        if node._ctx is not None:
            refusal = getattr(node._ctx, "refusal", None)  # (tensor.RefusedView's)
            if refusal is not None:
                raise RuntimeError(refusal)
            if node._ctx.freed and node._ctx.inputs == () and node._ctx.edges is not None:
                _ag.relink(node._ctx)  # an op that saved nothing, freed by a backward pass
            if node._ctx.freed and id(node) not in lv.tangent_of:
                lost.append(node)
            stack.extend(p for p in node._ctx.inputs if p.requires_grad)
    mine = lv.tangent_of
    reached = outer = False
    for node in order:
        if id(node) in mine:
            reached = True
            if node._ctx is not None:  # a view of a primal that requires grad
                outer = True
        elif node._ctx is None and node.requires_grad:
            outer = True
    freed = next((n for n in lost if _reaches(n, mine)), None) if reached else None
    if freed is not None:  # the tangent would go through it
        raise RuntimeError(
            f"unpack_dual: the graph of this tensor (shape {tuple(y.shape)}) was freed by a "
            f"backward pass (at {type(freed._ctx).__name__}), so its tangent cannot be read; "
            "read it before backward(), or pass retain_graph=True to backward()")
    return reached, outer


def _reaches(node, mine):
    """Whether the graph above ``node`` (itself excluded) holds a tensor whose id is in
    ``mine``."""
    seen, stack = set(), list(node._ctx.inputs)
    while stack:
        t = stack.pop()
        if id(t) in seen or not t.requires_grad:
            continue
        seen.add(id(t))
        if id(t) in mine:
            return True
        if t._ctx is not None:
            stack.extend(t._ctx.inputs)
    return False


def unpack_dual(tensor, *, level=None):
    """``UnpackedDualTensor(primal, tangent)`` of ``tensor`` in the current level: the tangent
    is None where it does not depend on a dual tensor (or no level is active)."""
    Tensor = _ag.Tensor
    if not isinstance(tensor, Tensor):
        return UnpackedDualTensor(tensor, None)
    if level is None and not _levels:  # no level: no tangent, as torch's
        return UnpackedDualTensor(tensor, None)
    lv = _current(level, "unpack_dual")  # a level that is not there is refused, as torch's
    if not tensor.requires_grad:
        if tensor.__dict__.get("_no_grad_of_graph"):
            raise RuntimeError(
                f"unpack_dual: this tensor (shape {tuple(tensor.shape)}) was computed under "
                "no_grad() from tensors that require grad (a dual tensor, or what was made from "
                "one); minidl's forward AD reads tangents through the recorded graph, so its "
                "tangent is unknown. Compute it with grad enabled (torch's forward AD ignores "
                "no_grad)")
        return UnpackedDualTensor(tensor, None)
    own = _own(tensor, lv)
    if own is not None:
        # an alias of a primal that requires grad keeps its graph; of a new leaf, does not
        return UnpackedDualTensor(tensor if own[1] else tensor.detach(), own[0])
    version = tensor._version
    held = lv.cache.get(id(tensor))
    if held is not None and held[0]() is tensor and held[1] == version:  # read before a backward
        return UnpackedDualTensor(tensor if held[3] else tensor.detach(), held[2])
    reached, outer = _depends(tensor, lv)
    primal = tensor if outer else tensor.detach()
    if not reached:
        return UnpackedDualTensor(primal, None)
    tangent = _tangent(tensor, lv, outer)
    lv.cache[id(tensor)] = (weakref.ref(tensor), version, tangent, outer)
    return UnpackedDualTensor(primal, tangent)


def _tangent(y, lv, keep):
    """sum_i J_i t_i for y by the double-vjp construction (see the module docstring)."""
    duals = [d for d, _ in lv.duals]
    tangents = [t for _, t in lv.duals]
    keep = keep or any(t.requires_grad for t in tangents)
    with _ag.enable_grad():
        u = _zeros(y).requires_grad_(True)
        vjps = _ag.grad([y], duals, [u], retain_graph=True, create_graph=True,
                        allow_unused=True)
        terms = [(g * t).sum() for g, t in zip(vjps, tangents)
                 if g is not None and g.requires_grad]
        if not terms:  # y is constant in the duals (through ops whose gradient is constant)
            return _zeros(y)
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        (tangent,) = _ag.grad([total], [u], retain_graph=True, create_graph=keep,
                              allow_unused=True)
    if tangent is None:
        return _zeros(y)
    return tangent if keep else tangent.detach()


def _zeros(y):
    return _ag.Tensor(_ag.get_array_module(y.data).zeros_like(y.data), dtype=y.data.dtype)
