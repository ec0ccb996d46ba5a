"""``minidl.func``: torch.func's function transforms on minidl's autograd.

``grad``, ``grad_and_value``, ``vjp``, ``jvp``, ``linearize``, ``jacrev``, ``jacfwd``, ``hessian``
and ``vmap``
take a function and return a function, with torch.func's arguments (``argnums``, ``has_aux``,
``in_dims``, ``out_dims``, ``randomness``), and they compose: ``grad(grad(f))``,
``vmap(grad(loss), in_dims=(None, 0, 0))`` for per-sample gradients, ``jacfwd(jacrev(f))``.
They run on double backward: a transform records its gradients as ops
(``create_graph=True``) when what it returns is itself differentiated, which is the case where
an argument or a tensor the function closes over requires grad (an outer transform, or a
model's parameters). ``vmap`` runs the function once per sample and stacks the results: the
same numbers as a batched rule, at a loop's speed. ``functional_call`` and
``stack_module_state`` run a module with substituted (or stacked) parameters.
"""
from __future__ import annotations

import numpy as np

from . import _autograd_functional as _af, autograd
from .nn._stateless import functional_call

__all__ = ["functional_call", "grad", "grad_and_value", "vjp", "jvp", "linearize", "jacrev",
           "jacfwd", "hessian", "vmap", "stack_module_state"]


class TransformArgumentError(ValueError, RuntimeError):
    """An argument a transform cannot take (argnums, a cotangent or tangent of the wrong
    shape): a RuntimeError as torch.func raises, and a ValueError as minidl's other argument
    errors."""


# ---- containers of Tensors (torch.func's pytrees: tuples, lists and dicts) ---------------------
def _flatten(tree):
    """The Tensors of ``tree`` in order, and a function that rebuilds the tree from a list."""
    Tensor = autograd.Tensor
    if isinstance(tree, Tensor):
        return [tree], lambda leaves: leaves[0]
    if isinstance(tree, (tuple, list)):
        parts = [_flatten(x) for x in tree]
        kind = type(tree)

        def rebuild(leaves):
            out, start = [], 0
            for flat, build in parts:
                out.append(build(leaves[start:start + len(flat)]))
                start += len(flat)
            return kind(out) if kind in (tuple, list) else kind(*out)  # a namedtuple too
        return [t for flat, _ in parts for t in flat], rebuild
    if isinstance(tree, dict):
        keys = list(tree)
        parts = [_flatten(tree[k]) for k in keys]

        def rebuild_dict(leaves):
            out, start = {}, 0
            for k, (flat, build) in zip(keys, parts):
                out[k] = build(leaves[start:start + len(flat)])
                start += len(flat)
            return out
        return [t for flat, _ in parts for t in flat], rebuild_dict
    return [], lambda leaves: tree  # a number, a string, None: passed through as it is


def _argnums(argnums, n, name):
    single = isinstance(argnums, int)
    nums = (argnums,) if single else tuple(argnums)
    if not nums or not all(isinstance(i, int) and -n <= i < n for i in nums):
        raise TransformArgumentError(f"{name}: argnums {argnums!r} must be an int or a tuple "
                                     f"of ints in "
                         f"[{-n}, {n}) for a function called with {n} positional arguments")
    nums = tuple(i % n for i in nums)
    if len(set(nums)) != len(nums):
        raise TransformArgumentError(f"{name}: argnums {argnums!r} repeats an argument")
    return single, nums


def _track(args, nums):
    """The arguments with those at ``nums`` replaced by tensors the gradient is taken at: a
    view where the original requires grad (its graph kept for an outer transform), else a new
    leaf. Returns (args, tracked leaves per argnum, the rebuilders)."""
    args = list(args)
    tracked, builders = [], []
    for i in nums:
        flat, build = _flatten(args[i])
        if not flat:
            raise TypeError(f"argument {i} holds no Tensor to differentiate with respect to")
        new = [t.view_as(t) if t.requires_grad else t.detach().requires_grad_(True)
               for t in flat]
        args[i] = build(new)
        tracked.append(new)
        builders.append(build)
    return args, tracked, builders


def _outer_dependence(outputs, tracked):
    """Whether ``outputs`` depend on a tensor that requires grad other than the tracked
    leaves: an outer transform or a model's parameters, which then need the result recorded."""
    from .tensor import _graph_order

    roots = [o for o in outputs if o.requires_grad]
    if not roots:
        return False
    mine = {id(t) for t in tracked}
    order, _ = _graph_order(roots)
    for node in order:
        if id(node) in mine:
            continue
        if node._ctx is None and node.requires_grad:
            return True
    return False


def _gradients(outputs, seeds, inputs, create_graph):
    """d(outputs)/d(inputs) seeded by ``seeds``, zeros where an input is not reached."""
    return list(_af._grad(outputs, inputs, seeds, create_graph, False, "func"))


def _zeros_like(t):
    return _af._filled(t, 0)


def _check_reverse_outputs(outputs, name):
    """Reverse mode differentiates floating-point (or complex) outputs only: an integer or
    bool output has no gradient, and torch.func refuses it rather than giving zeros."""
    from .backend.dtypes import is_differentiable

    for o in outputs:
        if not is_differentiable(o.dtype):
            raise RuntimeError(f"{name}(f, ...): All outputs of f must be floating-point or "
                               f"complex Tensors, got Tensor with dtype {o.dtype}")


def _split_aux(out, has_aux, name):
    if not has_aux:
        return out, None
    if not (isinstance(out, tuple) and len(out) == 2):
        raise RuntimeError(f"{name}(f, has_aux=True): f must return a (output, aux) tuple")
    return out


def _result(t, keep):
    return t if keep else t.detach()


def _aux(aux, tracked):
    """``has_aux``'s extra output, each of its Tensors cut from the transform's own graph (as
    torch.func's) unless it depends on something outside (``_outer_dependence``)."""
    flat, build = _flatten(aux)
    if not flat:
        return aux
    return build([t if _outer_dependence([t], tracked) else t.detach() for t in flat])


# ---- grad, grad_and_value, vjp, jvp --------------------------------------------------------------
def grad_and_value(func, argnums=0, has_aux=False):
    """A function returning ``(gradient, value)`` of ``func``, whose output must be a Tensor
    with one element, with respect to the arguments at ``argnums`` (the gradient has their
    structure: a Tensor, or a tuple, list or dict of them); ``(gradient, (value, aux))`` with
    ``has_aux``."""
    def wrapper(*args, **kwargs):
        single, nums = _argnums(argnums, len(args), "grad")
        with autograd.enable_grad():
            args, tracked, builders = _track(args, nums)
            out, aux = _split_aux(func(*args, **kwargs), has_aux, "grad")
            if not isinstance(out, autograd.Tensor) or out.numel() != 1:
                raise RuntimeError("grad: f must return a Tensor with a single element, got "
                                   f"{getattr(out, 'shape', type(out).__name__)}")
            flat = [t for group in tracked for t in group]
            keep = _outer_dependence([out], flat)
            seed = autograd.Tensor(out.data * 0 + 1)
            grads = _gradients([out], [seed], flat, keep)
        per_arg, start = [], 0
        for group, build in zip(tracked, builders):
            per_arg.append(build([_result(g, keep) for g in grads[start:start + len(group)]]))
            start += len(group)
        g = per_arg[0] if single else tuple(per_arg)
        value = _result(out, keep)
        return (g, (value, _aux(aux, flat))) if has_aux else (g, value)
    return wrapper


def grad(func, argnums=0, has_aux=False):
    """A function returning the gradient of ``func`` (a single-element output) with respect to
    the arguments at ``argnums``; ``(gradient, aux)`` with ``has_aux``."""
    both = grad_and_value(func, argnums, has_aux)

    def wrapper(*args, **kwargs):
        g, value = both(*args, **kwargs)
        return (g, value[1]) if has_aux else g
    return wrapper


def vjp(func, *primals, has_aux=False):
    """``(func(*primals), vjp_fn)``: ``vjp_fn(cotangents)`` (one per output, in the output's
    structure) returns the tuple of cotangent-Jacobian products, one per primal; it may be
    called more than once. ``(output, vjp_fn, aux)`` with ``has_aux``."""
    with autograd.enable_grad():
        args, tracked, builders = _track(primals, tuple(range(len(primals))))
        out, aux = _split_aux(func(*args), has_aux, "vjp")
        outputs, _ = _flatten(out)
        _check_reverse_outputs(outputs, "vjp")
        flat = [t for group in tracked for t in group]
        keep = _outer_dependence(outputs, flat)

    def vjp_fn(cotangents):
        seeds, _ = _flatten(cotangents)
        if len(seeds) != len(outputs) or any(tuple(s.shape) != tuple(o.shape)
                                             for s, o in zip(seeds, outputs)):
            raise TransformArgumentError("vjp_fn: the cotangents must have the structure and "
                                         "shapes of the "
                             f"output: {[tuple(o.shape) for o in outputs]}, got "
                             f"{[tuple(s.shape) for s in seeds]}")
        with autograd.enable_grad():
            grads = _gradients(outputs, seeds, flat, keep or any(s.requires_grad for s in seeds))
        per_arg, start = [], 0
        for group, build in zip(tracked, builders):
            per_arg.append(build(grads[start:start + len(group)]))
            start += len(group)
        return tuple(per_arg)

    _, rebuild = _flatten(out)
    value = rebuild([_result(o, keep) for o in outputs])
    return (value, vjp_fn, _aux(aux, flat)) if has_aux else (value, vjp_fn)


def jvp(func, primals, tangents, has_aux=False):
    """``(func(*primals), J @ tangents)``: the Jacobian-vector product, by the double-vjp
    construction (the vjp is linear in its cotangent; its derivative along the tangents with
    respect to that cotangent is the jvp). ``(output, jvp_out, aux)`` with ``has_aux``."""
    if not isinstance(primals, tuple) or not isinstance(tangents, tuple):
        raise TypeError("jvp: primals and tangents must be tuples, as torch.func.jvp takes them")
    if len(primals) != len(tangents):
        raise ValueError(f"jvp: {len(primals)} primals and {len(tangents)} tangents")
    with autograd.enable_grad():
        args, tracked, _ = _track(primals, tuple(range(len(primals))))
        out, aux = _split_aux(func(*args), has_aux, "jvp")
        outputs, rebuild = _flatten(out)
        flat = [t for group in tracked for t in group]
        flat_tangents = [t for tangent in tangents for t in _flatten(tangent)[0]]
        if [tuple(t.shape) for t in flat_tangents] != [tuple(t.shape) for t in flat]:
            raise TransformArgumentError("jvp: the tangents must have the primals' structure "
                                         "and shapes")
        keep = _outer_dependence(outputs, flat) or any(t.requires_grad for t in flat_tangents)
        dummies = [_zeros_like(o).requires_grad_(True) for o in outputs]
        vjps = _gradients(outputs, dummies, flat, True)
        result = _gradients(vjps, flat_tangents, dummies, keep)
    value = rebuild([_result(o, keep) for o in outputs])
    jvp_out = rebuild([_result(r, keep) for r in result])
    return (value, jvp_out, _aux(aux, flat)) if has_aux else (value, jvp_out)


def linearize(func, *primals):
    """``(func(*primals), jvp_fn)`` as torch.func.linearize: ``jvp_fn(*tangents)`` (one per
    primal, in its structure, shape and dtype) gives J @ tangents at ``primals``, in the
    output's structure, without running ``func`` again: func runs once, and its vjp with
    respect to a zero cotangent is recorded; each call differentiates that vjp with respect to
    the cotangent along the tangents (jvp's double-vjp construction)."""
    with autograd.enable_grad():
        args, tracked, _ = _track(primals, tuple(range(len(primals))))
        out = func(*args)
        outputs, rebuild = _flatten(out)
        flat = [t for group in tracked for t in group]
        keep = _outer_dependence(outputs, flat)
        dummies = [_zeros_like(o).requires_grad_(True) for o in outputs]
        vjps = _gradients(outputs, dummies, flat, True)
    shapes = [(tuple(t.shape), t.dtype) for t in flat]
    n_args = len(primals)

    def jvp_fn(*tangents):
        if len(tangents) != n_args:
            raise TransformArgumentError(f"linearize: jvp_fn takes {n_args} tangents, one per "
                                         f"primal, got {len(tangents)}")
        flat_tangents = [t for tangent in tangents for t in _flatten(tangent)[0]]
        if len(flat_tangents) != len(shapes):
            raise TransformArgumentError("linearize: the tangents must have the primals' "
                                         "structure")
        for i, (t, (shape, dtype)) in enumerate(zip(flat_tangents, shapes)):
            if tuple(t.shape) != shape:
                raise TransformArgumentError(f"tangent:{i} with shape {tuple(t.shape)} in "
                                             "flattened pytree doesn't match the shape "
                                             f"{shape} of the corresponding primal.")
            if t.dtype != dtype:
                raise TransformArgumentError(f"tangent:{i} with dtype {t.dtype} in flattened "
                                             "pytree doesn't match the dtype "
                                             f"{dtype} of the corresponding primal.")
        grad_kept = keep or any(t.requires_grad for t in flat_tangents)
        with autograd.enable_grad():
            result = _gradients(vjps, flat_tangents, dummies, grad_kept)
        return rebuild([_result(r, grad_kept) for r in result])

    value = rebuild([_result(o, keep) for o in outputs])
    return value, jvp_fn


# ---- Jacobians and Hessians --------------------------------------------------------------------
def _jacobian(func, argnums, has_aux, name, forward, randomness=None):
    def wrapper(*args, **kwargs):
        from . import get_rng_state

        single, nums = _argnums(argnums, len(args), name)
        with autograd.enable_grad():
            args, tracked, builders = _track(args, nums)
            before = get_rng_state() if randomness == "error" else None
            out, aux = _split_aux(func(*args, **kwargs), has_aux, name)
            if before is not None and not np.array_equal(get_rng_state().numpy(),
                                                         before.numpy()):
                # torch's jacfwd maps the function over the tangents (vmap), which refuses a
                # random op unless randomness says how to draw
                raise RuntimeError(f"{name}: func called a random operation while randomness="
                                   "'error'; pass randomness='different' or 'same'")
            outputs, rebuild_out = _flatten(out)
            if not forward:
                _check_reverse_outputs(outputs, "vjp")  # torch's jacrev is built on its vjp
            flat = [t for group in tracked for t in group]
            keep = _outer_dependence(outputs, flat)
            # blocks[i][k]: d output i / d input k, of shape out_i.shape + in_k.shape
            blocks = _af.jacobian_blocks(outputs, flat, keep, False, forward, name)
        per_output = []
        for row in blocks:
            per_arg, start = [], 0
            for group, build in zip(tracked, builders):
                per_arg.append(build([_result(b, keep) for b in row[start:start + len(group)]]))
                start += len(group)
            per_output.append(per_arg[0] if single else tuple(per_arg))
        jac = rebuild_out(per_output)
        return (jac, _aux(aux, flat)) if has_aux else jac
    return wrapper


def jacrev(func, argnums=0, has_aux=False, *, chunk_size=None):
    """A function returning the Jacobian of ``func`` with respect to the arguments at
    ``argnums``, one vjp per output element: for an output of shape S and an argument of shape
    T, shape S + T, in the structure of the outputs, then of the arguments."""
    if chunk_size is not None and (isinstance(chunk_size, bool) or
                                   not isinstance(chunk_size, int) or chunk_size <= 0):
        raise ValueError(f"jacrev: `chunk_size` should be greater than 0, got {chunk_size!r}")
    return _jacobian(func, argnums, has_aux, "jacrev", forward=False)


def jacfwd(func, argnums=0, has_aux=False, *, randomness="error"):
    """jacrev's Jacobian, one jvp per input element (by the double-vjp construction).
    ``randomness``: as vmap's (torch's jacfwd maps over the tangents): 'error' refuses a func
    that draws random numbers; 'same' and 'different' let it (func runs once here, so every
    column sees the same draw)."""
    if randomness not in ("error", "different", "same"):
        raise RuntimeError(f"Only allowed values for randomness are 'error', 'different', or "
                           f"'same'. Got {randomness}")
    return _jacobian(func, argnums, has_aux, "jacfwd", forward=True, randomness=randomness)


def hessian(func, argnums=0):
    """A function returning the Hessian of ``func`` (a single-element output) with respect to
    the arguments at ``argnums``: ``jacfwd(jacrev(func))``, as torch.func's."""
    return jacfwd(jacrev(func, argnums), argnums)


# ---- vmap ------------------------------------------------------------------------------------------
def vmap(func, in_dims=0, out_dims=0, randomness="error", *, chunk_size=None):
    """``func`` mapped over a dimension of its arguments: ``in_dims`` (an int or None, or one per
    positional argument) names the mapped dim of each (None: the same argument for every
    sample), ``out_dims`` where the samples go in the outputs. It runs ``func`` once per sample
    and stacks the results, so it gives what a batched rule gives and composes with ``grad``
    (per-sample gradients: ``vmap(grad(loss), in_dims=(None, 0, 0))``). ``randomness``:
    'error' refuses a ``func`` that draws from minidl's global random generator, 'different'
    lets each sample draw its own numbers, 'same' gives every sample the same numbers."""
    if randomness not in ("error", "different", "same"):
        raise ValueError(f"vmap: randomness must be 'error', 'different' or 'same', got "
                         f"{randomness!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or
                                   not isinstance(chunk_size, int) or chunk_size <= 0):
        raise ValueError(f"vmap: chunk_size should be None or greater than 0. (got "
                         f"{chunk_size!r})")

    def wrapper(*args, **kwargs):
        from . import get_rng_state, set_rng_state
        from .backend import get_array_module
        from .ops import stack

        dims = in_dims if isinstance(in_dims, (tuple, list)) else (in_dims,) * len(args)
        if len(dims) != len(args):
            raise ValueError(f"vmap: in_dims has {len(dims)} entries for {len(args)} positional "
                             "arguments")
        size, flats = None, []
        for i, (a, d) in enumerate(zip(args, dims)):
            flat, build = _flatten(a)
            leaf_dims = _leaf_dims(a, d, i)
            for t, d in zip(flat, leaf_dims):
                if d is not None:
                    if not -t.ndim <= d < t.ndim:
                        raise ValueError(f"vmap: in_dims[{i}] = {d} is out of range for a "
                                         f"tensor of shape {tuple(t.shape)}")
                    n = t.shape[d]
                    if size is not None and n != size:
                        raise ValueError("vmap: Expected all tensors to have the same size in "
                                         f"the mapped dimension, got sizes {size} and {n}")
                    size = n
            flats.append((flat, build, leaf_dims))
        if size is None:
            raise ValueError("vmap: at least one argument must be mapped (in_dims all None)")
        start_state = get_rng_state()
        results = []
        # func runs once per sample here, where torch's runs once on the batch: an unmapped
        # argument changed in place would be changed once per sample (and a per-sample value
        # written into it lost). Its array is made read-only for the calls, so such a change
        # is refused before anything is written.
        unmapped = [(i, t) for i, (flat, _, ds) in enumerate(flats)
                    for t, d in zip(flat, ds) if d is None]
        locked = [t.data for _, t in unmapped
                  if isinstance(t.data, np.ndarray) and t.data.flags.writeable]
        versions = [t._version for _, t in unmapped]
        for arr in locked:
            arr.flags.writeable = False
        try:
            for j in range(max(size, 1)):
                if randomness == "same":
                    set_rng_state(start_state)
                if size:
                    call = [build([t if d is None else t.select(d, j)
                                   for t, d in zip(flat, ds)]) for flat, build, ds in flats]
                else:  # no samples: func sees one of zeros, for the outputs' shapes
                    call = [build([t if d is None else _zero_sample(t, d)
                                   for t, d in zip(flat, ds)]) for flat, build, ds in flats]
                before = get_rng_state() if randomness == "error" else None
                try:
                    out = func(*call, **kwargs)
                except ValueError as e:
                    if locked and "read-only" in str(e):
                        raise RuntimeError(_unmapped_write_message(unmapped, versions)) from e
                    raise
                if before is not None and not np.array_equal(get_rng_state().numpy(),
                                                             before.numpy()):
                    set_rng_state(start_state)  # as torch's, which refuses before drawing
                    raise RuntimeError("vmap: func called a random operation while "
                                       "randomness='error'; pass randomness='different' or "
                                       "'same'")
                if any(t._version != v for (_, t), v in zip(unmapped, versions)):
                    raise RuntimeError(_unmapped_write_message(unmapped, versions))
                results.append(out)
        finally:
            for arr in locked:
                arr.flags.writeable = True
        leaves = [_flatten(r)[0] for r in results]
        _, rebuild = _flatten(results[0])
        n_out = len(leaves[0])
        odims = _out_leaf_dims(results[0], out_dims)
        if _maps_a_non_tensor(results[0], out_dims):
            raise ValueError("vmap: func must return only Tensors (in tuples, lists or dicts) "
                             f"where out_dims is not None, got {results[0]!r}")
        stacked = []
        for k in range(n_out):
            parts = [leaf[k] for leaf in leaves]
            d = odims[k]
            if d is None:
                # torch.func refuses a batched output here; one that varies per sample is
                xp = get_array_module(parts[0].data)
                if not all(xp.array_equal(p.data, parts[0].data, equal_nan=True)
                           for p in parts[1:]):
                    raise ValueError(f"vmap: out_dims is None for output {k}, but it differs "
                                     "between samples (it depends on a mapped input)")
                stacked.append(parts[0])
                continue
            shape = tuple(parts[0].shape)
            j = next((j for j, p in enumerate(parts) if tuple(p.shape) != shape), None)
            if j is not None:
                raise RuntimeError(f"vmap: output {k} has shape {shape} for sample 0 but "
                                   f"{tuple(parts[j].shape)} for sample {j}: a shape that "
                                   "depends on the data (nonzero, a boolean mask) cannot be "
                                   "batched")
            ndim = parts[0].ndim + 1
            if not isinstance(d, int) or not -ndim <= d < ndim:
                raise autograd.DimError(f"vmap: out_dims {d!r} is out of range for output {k}, "
                                        f"which gets {ndim} dimensions (expected in "
                                        f"[{-ndim}, {ndim - 1}])")
            if not size:  # the zero sample's output, as an empty batch
                stacked.append(parts[0].unsqueeze(d % ndim).narrow(d % ndim, 0, 0))
                continue
            stacked.append(stack(parts, dim=d % ndim))
        return rebuild(stacked)
    return wrapper


def _out_leaf_dims(out, out_dims):
    """The batch dim of each output Tensor (flattened as _flatten does) from ``out_dims``: an
    int or None for all of them, or a (nested) tuple, list or dict that matches the output's
    structure (torch.func's), where a flat tuple of one entry per output Tensor is also
    taken."""
    n_out = len(_flatten(out)[0])

    def match(tree, d):
        if d is None or isinstance(d, int) and not isinstance(d, bool):
            return [d] * len(_flatten(tree)[0])
        if isinstance(d, (tuple, list)) and isinstance(tree, (tuple, list)) \
                and len(d) == len(tree):
            return [x for t, e in zip(tree, d) for x in match(t, e)]
        if isinstance(d, dict) and isinstance(tree, dict) and set(d) == set(tree):
            return [x for k in tree for x in match(tree[k], d[k])]
        raise ValueError(f"vmap: out_dims {out_dims!r} is not compatible with the structure "
                         "of the outputs: it must be an int or None, or a tuple, list or dict "
                         "of them that matches the outputs")

    if isinstance(out_dims, (tuple, list)) and len(out_dims) == n_out and all(
            d is None or isinstance(d, int) and not isinstance(d, bool) for d in out_dims):
        try:
            return match(out, out_dims)
        except ValueError:
            return list(out_dims)  # one per output Tensor, the structure aside
    return match(out, out_dims)


def _zero_sample(t, d):
    """A sample of zeros of a tensor whose mapped dim ``d`` is empty (its shape without d)."""
    shape = tuple(n for k, n in enumerate(t.shape) if k != d % t.ndim)
    return t.new_zeros(shape)


def _unmapped_write_message(unmapped, versions):
    changed = sorted({i for (i, t), v in zip(unmapped, versions) if t._version != v}) or \
        sorted({i for i, _ in unmapped})
    return (f"vmap: func changed argument {', '.join(map(str, changed))} in place, which is "
            "not mapped (in_dims None); minidl's vmap calls func once per sample, so the "
            "change would be made once per sample. Map that argument, or change a copy "
            "(torch refuses writing a batched value into an unbatched tensor too)")


def _leaf_dims(arg, d, i):
    """The mapped dim of each Tensor of argument ``i`` (flattened as _flatten does) from its
    in_dims entry ``d``: an int or None for all of them, or a tuple, list or dict that matches
    the argument's structure (torch.func's nested in_dims)."""
    Tensor = autograd.Tensor
    if d is None or isinstance(d, int) and not isinstance(d, bool):
        if d is not None and not isinstance(arg, (Tensor, tuple, list, dict)):
            raise ValueError(f"vmap: in_dims[{i}] = {d} maps an argument of type "
                             f"{type(arg).__name__}; only Tensors can be mapped (use None)")
        return [d] * len(_flatten(arg)[0])
    if isinstance(d, (tuple, list)) and isinstance(arg, (tuple, list)) and len(d) == len(arg):
        return [x for a, e in zip(arg, d) for x in _leaf_dims(a, e, i)]
    if isinstance(d, dict) and isinstance(arg, dict) and set(d) == set(arg):
        return [x for k in arg for x in _leaf_dims(arg[k], d[k], i)]
    raise ValueError(f"vmap: in_dims[{i}] must be an int, None, or a tuple, list or dict that "
                     f"matches the argument's structure, got {d!r}")


def _maps_a_non_tensor(out, out_dims):
    """Whether ``out_dims`` asks to batch something in the output that is not a Tensor (an
    entry of None leaves its part of the output as the function returned it, as torch's)."""
    def bad(tree, d):
        if isinstance(tree, autograd.Tensor) or d is None:
            return False
        if isinstance(d, (tuple, list)) and isinstance(tree, (tuple, list)) \
                and len(d) == len(tree):
            return any(bad(t, e) for t, e in zip(tree, d))
        if isinstance(d, dict) and isinstance(tree, dict) and set(d) == set(tree):
            return any(bad(tree[k], d[k]) for k in tree)
        return _holds_non_tensor(tree)
    return bad(out, out_dims)


def _holds_non_tensor(tree):
    """Whether an output holds anything but Tensors (in tuples, lists and dicts)."""
    if isinstance(tree, autograd.Tensor):
        return False
    if isinstance(tree, (tuple, list)):
        return any(_holds_non_tensor(x) for x in tree)
    if isinstance(tree, dict):
        return any(_holds_non_tensor(x) for x in tree.values())
    return True


def stack_module_state(models):
    """The parameters and buffers of identical ``models`` stacked along a new first dim, as
    two dicts by name: the parameters as new leaves that require grad (torch.func's), for
    ``vmap(functional_call...)`` over an ensemble."""
    from .ops import stack

    models = list(models)
    if not models:
        raise ValueError("stack_module_state: expected at least one model")
    names = [n for n, _ in models[0].named_parameters()]
    for m in models[1:]:
        if [n for n, _ in m.named_parameters()] != names:
            raise ValueError("stack_module_state: the models' parameters differ in names")
    for what in ("named_parameters", "named_buffers"):
        first = {n: tuple(t.shape) for n, t in getattr(models[0], what)()}
        for i, m in enumerate(models[1:], 1):
            for n, t in getattr(m, what)():
                if n in first and tuple(t.shape) != first[n]:
                    raise ValueError(f"stack_module_state: {n!r} has shape {tuple(t.shape)} in "
                                     f"model {i} but {first[n]} in model 0")
    params = {n: stack([dict(m.named_parameters())[n].detach() for m in models]).requires_grad_(
        True) for n in names}
    buffers = {n: stack([dict(m.named_buffers())[n] for m in models])
               for n, _ in models[0].named_buffers()}
    return params, buffers
