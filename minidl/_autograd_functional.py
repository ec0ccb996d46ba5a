"""``torch.autograd.functional`` for minidl: vjp, jvp, jacobian, hessian, vhp and hvp of a
function of Tensors, built on double backward (``grad(..., create_graph=True)``).

Arguments and results follow PyTorch's: ``inputs`` is a Tensor or a tuple of them, results
come back in the same structure, ``create_graph=True`` keeps them differentiable, and
``strict=True`` refuses an output that does not depend on an input (else its entries are 0).
jvp and hvp use the double-vjp construction: the vector-Jacobian product with respect to a
dummy ``u`` is linear in ``u``, and differentiating it with respect to ``u`` gives the
Jacobian-vector product, so forward mode is not needed.
"""
from __future__ import annotations

from . import autograd
from .backend import get_array_module

__all__ = ["vjp", "jvp", "jacobian", "hessian", "vhp", "hvp"]


class VectorShapeError(ValueError, RuntimeError):
    """A ``v`` that does not fit: a RuntimeError as PyTorch raises, and a ValueError as minidl's
    other argument errors."""


def _as_tuple(x, what, fn_name):
    """(was it a tuple, the tuple of Tensors)."""
    Tensor = autograd.Tensor
    if isinstance(x, Tensor):
        return False, (x,)
    if isinstance(x, (tuple, list)) and all(isinstance(t, Tensor) for t in x):
        return True, tuple(x)
    raise TypeError(f"{fn_name}: the {what} must be a Tensor or a tuple of Tensors, got "
                    f"{type(x).__name__}")


def _filled(like, value):
    """A Tensor of ``like``'s shape, dtype and device, every element ``value``."""
    data = like.data
    return autograd.Tensor(get_array_module(data).full(data.shape, value, dtype=data.dtype))


def _structure(result, is_tuple):
    return result if is_tuple else result[0]


def _leaves(inputs, create_graph):
    """The inputs as tensors the function is differentiated at: new leaves, or, with
    create_graph, views that keep the inputs' own graph (as PyTorch's view_as)."""
    out = []
    for t in inputs:
        if create_graph and t.requires_grad:
            out.append(t.view_as(t))
        else:
            out.append(t.detach().requires_grad_(True))
    return tuple(out)


def _finish(tensors, create_graph):
    return tuple(t if create_graph else t.detach() for t in tensors)


def _check_v(v, like, fn_name, what):
    is_tuple, v = _as_tuple(v, "v", fn_name)
    if len(v) != len(like):
        raise VectorShapeError(f"{fn_name}: v has {len(v)} Tensors, the {what} {len(like)}")
    for i, (a, b) in enumerate(zip(v, like)):
        if tuple(a.shape) != tuple(b.shape):
            raise VectorShapeError(f"{fn_name}: v[{i}] has shape {tuple(a.shape)}, the "
                                   f"{what}[{i}] {tuple(b.shape)}; they must match")
    return v


def _grad(outputs, inputs, grad_outputs, create_graph, strict, fn_name, what="output"):
    """Gradients of ``outputs`` (seeded by ``grad_outputs``) with respect to each input; 0
    where an input does not reach the outputs, or an error with ``strict``."""
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o.requires_grad]
    if pairs:
        found = autograd.grad([o for o, _ in pairs], list(inputs), [g for _, g in pairs],
                              retain_graph=True, create_graph=create_graph, allow_unused=True)
    else:
        found = (None,) * len(inputs)
    result = []
    for i, (g, t) in enumerate(zip(found, inputs)):
        if g is None:
            if strict:
                raise RuntimeError(f"{fn_name}: the {what} does not depend on input {i} "
                                   "(strict=True refuses that; strict=False gives zeros)")
            g = _filled(t, 0)
        result.append(g)
    return tuple(result)


def _single_output(out, fn_name):
    is_tuple, outs = _as_tuple(out, "output of func", fn_name)
    if is_tuple or outs[0].numel() != 1:
        raise RuntimeError(f"{fn_name}: func must return a Tensor with a single element, got "
                           f"{'a tuple' if is_tuple else f'shape {tuple(outs[0].shape)}'}")
    return outs[0]


def vjp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(inputs), v^T J)``: the vector-Jacobian product at ``inputs``. ``v`` may be left
    out where func returns one single-element Tensor."""
    with autograd.enable_grad():
        in_tuple, inputs = _as_tuple(inputs, "inputs", "vjp")
        inputs = _leaves(inputs, create_graph)
        out_tuple, outputs = _as_tuple(func(*inputs), "output of func", "vjp")
        if v is None:
            if out_tuple or outputs[0].numel() != 1:
                raise RuntimeError("vjp: v can be left out only where func returns one Tensor "
                                   "with a single element")
            v = (_filled(outputs[0], 1),)
        else:
            v = _check_v(v, outputs, "vjp", "outputs")
        grads = _grad(outputs, inputs, v, create_graph, strict, "vjp")
    return (_structure(_finish(outputs, create_graph), out_tuple),
            _structure(_finish(grads, create_graph), in_tuple))


def jvp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(inputs), J v)``: the Jacobian-vector product at ``inputs``, by the double-vjp
    construction. ``v`` may be left out where ``inputs`` is one single-element Tensor."""
    with autograd.enable_grad():
        in_tuple, inputs = _as_tuple(inputs, "inputs", "jvp")
        inputs = _leaves(inputs, create_graph)
        if v is None:
            if in_tuple or inputs[0].numel() != 1:
                raise RuntimeError("jvp: v can be left out only where inputs is one Tensor with "
                                   "a single element")
            v = (_filled(inputs[0], 1),)
        else:
            v = _check_v(v, inputs, "jvp", "inputs")
        out_tuple, outputs = _as_tuple(func(*inputs), "output of func", "jvp")
        dummies = tuple(_filled(o, 0).requires_grad_(True) for o in outputs)
        # u -> u^T J, linear in u; its derivative along v with respect to u is J v
        vjps = _grad(outputs, inputs, dummies, True, strict, "jvp")
        result = _grad(vjps, dummies, v, create_graph, strict, "jvp", what="Jacobian")
    return (_structure(_finish(outputs, create_graph), out_tuple),
            _structure(_finish(result, create_graph), out_tuple))


def _basis_rows(out):
    """The one-hot grad_outputs that pick each element of ``out`` in turn."""
    xp = get_array_module(out.data)
    for j in range(out.numel()):
        e = xp.zeros(out.data.size, dtype=out.data.dtype)
        e[j] = 1
        yield autograd.Tensor(e.reshape(out.data.shape))


def jacobian_blocks(outputs, inputs, create_graph, strict, forward, fn_name):
    """``blocks[i][k]``, the Jacobian of ``outputs[i]`` with respect to ``inputs[k]`` (of shape
    out_i.shape + in_k.shape): one vjp per output element, or with ``forward`` one jvp per
    input element (the double-vjp construction). Shared with minidl.func's jacrev/jacfwd."""
    blocks = [[None] * len(inputs) for _ in outputs]
    if not forward:
        for i, out in enumerate(outputs):
            rows = [[] for _ in inputs]
            for e in _basis_rows(out):
                for k, g in enumerate(_grad((out,), inputs, (e,), create_graph, strict,
                                            fn_name)):
                    rows[k].append(g)
            for k, inp in enumerate(inputs):
                blocks[i][k] = _stack(rows[k], tuple(out.shape) + tuple(inp.shape), inp)
        return blocks
    dummies = tuple(_filled(o, 0).requires_grad_(True) for o in outputs)
    vjps = _grad(outputs, inputs, dummies, True, strict, fn_name)
    for k, inp in enumerate(inputs):
        cols = [[] for _ in outputs]
        for e in _basis_rows(inp):
            for i, c in enumerate(_grad((vjps[k],), dummies, (e,), create_graph, strict,
                                        fn_name, what="Jacobian")):
                cols[i].append(c)
        for i, out in enumerate(outputs):
            col = _stack(cols[i], tuple(inp.shape) + tuple(out.shape), out)
            # (input dims, output dims) -> (output dims, input dims)
            n_in = len(inp.shape)
            axes = tuple(range(n_in, col.ndim)) + tuple(range(n_in))
            blocks[i][k] = col.permute(*axes) if col.ndim else col
    return blocks


def jacobian(func, inputs, create_graph=False, strict=False, vectorize=False,
             strategy="reverse-mode"):
    """The Jacobian of ``func`` at ``inputs``: for an output of shape S and an input of shape
    T, a Tensor of shape S + T; a tuple (over outputs, then over inputs) where func returns a
    tuple or inputs is one. ``strategy`` is 'reverse-mode' (one vjp per output element) or
    'forward-mode' (one jvp per input element), the same numbers; ``vectorize`` is accepted
    and changes nothing (minidl has no vmap; both run a loop)."""
    if strategy not in ("reverse-mode", "forward-mode"):
        raise ValueError(f"jacobian: strategy must be 'reverse-mode' or 'forward-mode', got "
                         f"{strategy!r}")
    if strict and vectorize:
        raise RuntimeError("jacobian: strict=True and vectorize=True are not supported together, "
                           "as in PyTorch; set one of them to False")
    if strategy == "forward-mode" and not vectorize:
        raise ValueError("jacobian: strategy='forward-mode' needs vectorize=True, as in PyTorch")
    with autograd.enable_grad():
        in_tuple, inputs = _as_tuple(inputs, "inputs", "jacobian")
        inputs = _leaves(inputs, create_graph)
        out_tuple, outputs = _as_tuple(func(*inputs), "output of func", "jacobian")
        blocks = jacobian_blocks(outputs, inputs, create_graph, strict,
                                 strategy == "forward-mode", "jacobian")
        blocks = [[b if create_graph else b.detach() for b in row] for row in blocks]
    if out_tuple and in_tuple:
        return tuple(tuple(row) for row in blocks)
    if out_tuple:
        return tuple(row[0] for row in blocks)
    if in_tuple:
        return tuple(blocks[0])
    return blocks[0][0]


def _stack(parts, shape, like):
    from .ops import stack

    if not parts:
        data = like.data
        return autograd.Tensor(get_array_module(data).zeros(shape, dtype=data.dtype))
    return stack(parts).reshape(shape)


def hessian(func, inputs, create_graph=False, strict=False, vectorize=False,
            outer_jacobian_strategy="reverse-mode"):
    """The Hessian of ``func`` (which returns one single-element Tensor) at ``inputs``: for an
    input of shape T a Tensor of shape T + T; for a tuple of inputs a tuple of tuples (block
    [i][j] of shape T_i + T_j)."""
    in_tuple, inputs = _as_tuple(inputs, "inputs", "hessian")

    def gradient(*xs):
        out = _single_output(func(*xs), "hessian").reshape(())
        return _grad((out,), xs, (_filled(out, 1),), True, strict, "hessian")

    result = jacobian(gradient, inputs, create_graph=create_graph, strict=strict,
                      vectorize=vectorize, strategy=outer_jacobian_strategy)
    return result if in_tuple else result[0][0]


def vhp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(inputs), v^T H)`` for ``func`` returning one single-element Tensor."""
    with autograd.enable_grad():
        in_tuple, inputs = _as_tuple(inputs, "inputs", "vhp")
        inputs = _leaves(inputs, create_graph)
        out = _single_output(func(*inputs), "vhp")
        v = _hessian_v(v, inputs, in_tuple, "vhp")
        ones = _filled(out, 1)
        grads = _grad((out,), inputs, (ones,), True, strict, "vhp")
        result = _grad(grads, inputs, v, create_graph, strict, "vhp", what="gradient")
    return _finish((out,), create_graph)[0], _structure(_finish(result, create_graph), in_tuple)


def hvp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(inputs), H v)`` for ``func`` returning one single-element Tensor, by the
    double-vjp construction (H v itself, without relying on H's symmetry)."""
    with autograd.enable_grad():
        in_tuple, inputs = _as_tuple(inputs, "inputs", "hvp")
        inputs = _leaves(inputs, create_graph)
        out = _single_output(func(*inputs), "hvp")
        v = _hessian_v(v, inputs, in_tuple, "hvp")
        ones = _filled(out, 1)
        grads = _grad((out,), inputs, (ones,), True, strict, "hvp")
        dummies = tuple(_filled(t, 0).requires_grad_(True) for t in inputs)
        back = _grad(grads, inputs, dummies, True, strict, "hvp", what="gradient")
        result = _grad(back, dummies, v, create_graph, strict, "hvp", what="gradient")
    return _finish((out,), create_graph)[0], _structure(_finish(result, create_graph), in_tuple)


def _hessian_v(v, inputs, in_tuple, fn_name):
    if v is None:
        if in_tuple or inputs[0].numel() != 1:
            raise RuntimeError(f"{fn_name}: v can be left out only where inputs is one Tensor "
                               "with a single element")
        return (_filled(inputs[0], 1),)
    return _check_v(v, inputs, fn_name, "inputs")
