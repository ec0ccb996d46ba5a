"""``minidl.testing``: gradcheck and gradgradcheck (first and second derivatives against
central finite differences in float64), and torch.testing's assert_close and make_tensor."""
from __future__ import annotations

import math
import warnings

import numpy as np

from .backend.dtypes import is_floating
from .tensor import Tensor


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, directions=None, seed=0,
              raise_exception=True, *, check_forward_ad=False, check_backward_ad=True,
              check_undefined_grad=True, check_batched_grad=False, nondet_tol=0.0,
              fast_mode=False):
    """Check ``fn(*inputs)``'s backward against finite differences.

    ``inputs`` are Tensors (float64 recommended); those with requires_grad=True are checked.
    The output is reduced to a scalar by a fixed random projection, so non-scalar outputs are
    fine. Each input is checked element by element when small; past 2,000 elements it is
    checked along ``directions`` random unit directions (Chainer's directional check), which
    keeps checks of large conv inputs cheap. Returns True or raises AssertionError saying which
    input and where the gradients differ.

    Complex inputs (complex128) are checked as PyTorch's gradient convention states: the real
    and imaginary parts are perturbed separately and the analytic gradient must be
    dL/dRe + i dL/dIm; a complex output is projected to a real number by Re(sum(y conj(P)))
    with a complex random P.

    torch's keywords: ``check_forward_ad`` also checks forward-mode derivatives (the tangent
    of the output for a tangent on each input, by minidl.autograd.forward_ad; real inputs and
    outputs) and ``check_backward_ad=False`` leaves reverse mode out. ``nondet_tol`` and
    ``fast_mode`` are taken (this check is deterministic, and always the full one);
    ``check_undefined_grad`` is taken but not checked; ``check_batched_grad=True`` is refused.
    """
    if check_batched_grad:
        raise NotImplementedError("gradcheck: check_batched_grad=True is not supported (minidl "
                                  "checks each gradient on its own; vmap the function to batch)")
    del check_undefined_grad, nondet_tol, fast_mode
    if not (check_forward_ad or check_backward_ad):
        raise ValueError("gradcheck: check_forward_ad and check_backward_ad are both False: "
                         "nothing to check")
    rng = np.random.default_rng(seed)
    inputs = [inputs] if isinstance(inputs, Tensor) else inputs  # one Tensor, as torch's
    inputs = [x if isinstance(x, Tensor) else Tensor(np.asarray(x, dtype=np.float64)) for x in inputs]
    for x in inputs:
        if x.requires_grad and x.dtype not in (np.float64, np.complex128):
            raise TypeError(f"gradcheck: inputs that require grad must be float64 or "
                            f"complex128, got {x.dtype}")
    out = fn(*inputs)
    proj = rng.standard_normal(out.shape)
    complex_out = out.dtype.kind == "c"
    if complex_out:
        proj = proj + 1j * rng.standard_normal(out.shape)
    if check_forward_ad and (complex_out or any(x.dtype.kind == "c" for x in inputs)):
        raise NotImplementedError("gradcheck: check_forward_ad=True takes real inputs and "
                                  "outputs only")

    # perturbed copies go to their input's device: a check of CUDA inputs runs on the GPU
    def scalar(values):
        with_values = [Tensor(v, requires_grad=False, device=x.device) if v is not None else x
                       for x, v in zip(inputs, values)]
        y = fn(*with_values)
        if complex_out:
            return float((y.numpy().astype(np.complex128) * proj.conj()).real.sum())
        return float((y.numpy().astype(np.float64) * proj).sum())

    # the analytic gradients by autograd.grad, as torch's gradcheck: the inputs' .grad is left
    # as the caller had it (neither cleared nor accumulated into)
    from . import autograd

    wanted = [x for x in inputs if x.requires_grad]
    analytic_of = {}
    if check_backward_ad and out.requires_grad and wanted:  # else every gradient is 0
        p = Tensor(proj.astype(out.dtype), device=out.device)
        if complex_out:  # the gradient of Re(sum(y conj(P))) at y is P
            grads = autograd.grad(out, wanted, p, allow_unused=True)
        else:
            grads = autograd.grad((out * p).sum(), wanted, allow_unused=True)
        analytic_of = {id(x): g for x, g in zip(wanted, grads) if g is not None}

    def forward_derivative(k, d):
        """<P, J_k d>: the output's tangent, by forward AD, for tangent ``d`` on input k."""
        fwad = autograd.forward_ad
        with fwad.dual_level():
            args = [fwad.make_dual(x, Tensor(d.astype(x.dtype), device=x.device)) if j == k
                    else x for j, x in enumerate(inputs)]
            tangent = fwad.unpack_dual(fn(*args)).tangent
        return 0.0 if tangent is None else float((tangent.numpy().astype(np.float64) * proj).sum())

    for k, x in enumerate(inputs):
        if not x.requires_grad:
            continue
        analytics = []  # (which mode, the analytic gradient) to hold against the numeric one
        if check_backward_ad:
            g = analytic_of.get(id(x))
            if g is not None and tuple(g.shape) != tuple(x.shape):
                msg = (f"gradcheck: input {k} (shape {tuple(x.shape)}) got a gradient of shape "
                       f"{tuple(g.shape)}")
                if raise_exception:
                    raise AssertionError(msg)
                return False
            analytics.append(("analytic", np.zeros(x.shape, x.dtype) if g is None else g.numpy()))
        base = [None] * len(inputs)
        xd = x.numpy()
        steps = (eps, 1j * eps) if xd.dtype.kind == "c" else (eps,)  # each part of a complex
        if x.numel() <= 2000 and directions is None:
            if check_forward_ad:
                fwd = np.zeros(x.shape)
                for i in range(xd.size):
                    e = np.zeros(x.shape)
                    e.reshape(-1)[i] = 1.0
                    fwd.reshape(-1)[i] = forward_derivative(k, e)
                analytics.append(("forward-mode", fwd))
            numeric = np.zeros(x.shape, xd.dtype)
            flat = numeric.reshape(-1)
            for i in range(xd.size):
                for step in steps:
                    plus, minus = xd.copy(), xd.copy()
                    plus.reshape(-1)[i] += step
                    minus.reshape(-1)[i] -= step
                    base[k] = plus
                    f_plus = scalar(base)
                    base[k] = minus
                    flat[i] += (step / eps) * (f_plus - scalar(base)) / (2 * eps)
            for mode, analytic in analytics:
                bad = ~np.isclose(analytic, numeric, atol=atol, rtol=rtol)
                if bad.any():
                    idx = np.unravel_index(np.argmax(bad), x.shape)
                    msg = (f"gradcheck: input {k} (shape {x.shape}) differs at {idx}: {mode} "
                           f"{analytic[idx]:.8g}, numeric {numeric[idx]:.8g}; {int(bad.sum())} "
                           f"of {bad.size} elements off")
                    if raise_exception:
                        raise AssertionError(msg)
                    return False
        else:
            for _ in range(directions or 4):
                d = rng.standard_normal(x.shape)
                if xd.dtype.kind == "c":
                    d = d + 1j * rng.standard_normal(x.shape)
                d /= np.linalg.norm(d)
                base[k] = xd + eps * d
                f_plus = scalar(base)
                base[k] = xd - eps * d
                numeric = (f_plus - scalar(base)) / (2 * eps)
                expected = [(mode, float((a.conj() * d).real.sum())) for mode, a in analytics]
                if check_forward_ad:
                    expected.append(("forward-mode", forward_derivative(k, d)))
                for mode, value in expected:
                    if not np.isclose(value, numeric, atol=atol, rtol=rtol):
                        msg = (f"gradcheck: input {k} (shape {x.shape}): directional derivative "
                               f"{mode} {value:.8g}, numeric {numeric:.8g}")
                        if raise_exception:
                            raise AssertionError(msg)
                        return False
    return True


def gradgradcheck(fn, inputs, grad_outputs=None, eps=1e-6, atol=1e-5, rtol=1e-4,
                  directions=None, seed=0, raise_exception=True):
    """Check second derivatives, as ``torch.autograd.gradgradcheck``: the gradient of
    ``fn(*inputs)`` (projected on ``grad_outputs``, one per output of fn, which may return a
    tuple of Tensors; fixed random ones where not given) with respect to the inputs that
    require grad, taken with ``create_graph=True``, is itself checked by ``gradcheck`` against
    finite differences of that first gradient. Inputs as for gradcheck (float64 or
    complex128; a complex output is projected to Re(sum(y conj(v))))."""
    from . import autograd
    from .ops import cat

    rng = np.random.default_rng(seed + 1)
    inputs = [inputs] if isinstance(inputs, Tensor) else inputs  # one Tensor, as torch's
    inputs = [x if isinstance(x, Tensor) else Tensor(np.asarray(x, dtype=np.float64)) for x in inputs]
    checked = [i for i, x in enumerate(inputs) if x.requires_grad]
    outs = _as_outputs(fn(*inputs))
    if grad_outputs is None:
        vs = [rng.standard_normal(o.shape) for o in outs]
        vs = [v + 1j * rng.standard_normal(o.shape) if o.dtype.kind == "c" else v
              for v, o in zip(vs, outs)]
    else:
        given = [grad_outputs] if isinstance(grad_outputs, Tensor) else list(grad_outputs)
        vs = [g.numpy() if isinstance(g, Tensor) else np.asarray(g, dtype=np.float64)
              for g in given]
        if len(vs) != len(outs) or any(v.shape != o.shape for v, o in zip(vs, outs)):
            raise ValueError(f"gradgradcheck: grad_outputs of shapes {[v.shape for v in vs]} "
                             f"for outputs of shapes {[o.shape for o in outs]}")

    def project(outs):
        total = None
        for o, v in zip(outs, vs):
            if o.dtype.kind == "c":  # a real number: Re(sum(o conj(v)))
                term = (o * Tensor(v.conj().astype(o.dtype), device=o.device)).real.sum()
            else:
                term = (o * Tensor(v.astype(o.dtype), device=o.device)).sum()
            total = term if total is None else total + term
        return total

    # the first gradient that create_graph=True gives must be the ordinary backward's
    plain = autograd.grad(project(outs), [inputs[i] for i in checked], allow_unused=True,
                          materialize_grads=True)

    def first_gradient(*xs):
        # gradcheck calls this with its perturbed copies, which do not require grad: they
        # become leaves here, so that the first gradient can be taken at them too
        xs = list(xs)
        for i in checked:
            if not xs[i].requires_grad:
                xs[i] = Tensor(xs[i].data, requires_grad=True)
        grads = autograd.grad(project(_as_outputs(fn(*xs))), [xs[i] for i in checked],
                              create_graph=True, allow_unused=True, materialize_grads=True)
        return cat([g.reshape(-1) for g in grads])

    recorded = first_gradient(*inputs).numpy()
    expected = np.concatenate([g.numpy().reshape(-1) for g in plain])
    if not np.allclose(recorded, expected, atol=atol, rtol=rtol):
        msg = ("gradgradcheck: the first gradient taken with create_graph=True differs from "
               f"backward's: max difference {np.abs(recorded - expected).max():.3g}")
        if raise_exception:
            raise AssertionError(msg)
        return False
    return gradcheck(first_gradient, inputs, eps=eps, atol=atol, rtol=rtol,
                     directions=directions, seed=seed, raise_exception=raise_exception)


def _as_outputs(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


# ---- torch.testing.assert_close and make_tensor ------------------------------------------------
# PyTorch's default (rtol, atol) per dtype; integers and bools compare exactly
_TOLERANCES = {"float16": (1e-3, 1e-5), "bfloat16": (1.6e-2, 1e-5), "float32": (1.3e-6, 1e-5),
               "float64": (1e-7, 1e-7), "complex64": (1.3e-6, 1e-5), "complex128": (1e-7, 1e-7)}


def _tolerances(*dtypes):
    pairs = [_TOLERANCES.get(np.dtype(d).name, (0.0, 0.0)) for d in dtypes]
    return max(p[0] for p in pairs), max(p[1] for p in pairs)


class _Mismatch(AssertionError):
    pass


def _fail(message, msg, where=""):
    text = msg if isinstance(msg, str) else (msg(message) if callable(msg) else message)
    if where and msg is None:
        text += f"\n\nThe failure occurred for item {where}"
    raise _Mismatch(text)


def _is_number(x):
    return isinstance(x, (bool, int, float, np.number)) and not isinstance(x, np.ndarray)


def _number_text(v):
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (complex, np.complexfloating)):
        return repr(complex(v))
    return repr(float(v))


def _compare_arrays(a, e, rtol, atol, equal_nan, scalar, msg, where, numbers=None):
    exact = rtol == 0 and atol == 0
    kind = "equal" if exact else "close"
    if a.dtype == np.bool_:
        a, e = a.astype(np.int64), e.astype(np.int64)
    wide = a.dtype if a.dtype.kind == "f" or a.dtype.itemsize == 2 else np.float32
    if a.dtype.kind in "iu":
        close = a == e
    else:
        close = np.isclose(a, e, rtol=rtol, atol=atol, equal_nan=equal_nan)
    if close.all():
        return
    with np.errstate(all="ignore"):
        if a.dtype.kind == "c":  # |a - e| of complex numbers, a real distance
            diff = np.abs(a.astype(np.complex128) - e.astype(np.complex128))
            rel = diff / np.abs(e.astype(np.complex128))
        elif a.dtype.kind not in "iu":
            diff = np.abs(a.astype(wide) - e.astype(wide))
            rel = (diff.astype(wide) / np.abs(e.astype(wide))).astype(wide)
        else:
            diff = np.abs(a.astype(np.int64) - e.astype(np.int64))
            rel = (diff.astype(wide) / np.abs(e.astype(wide))).astype(wide)
    if scalar:  # as Python numbers, as PyTorch compares them
        x, y = numbers or (a.reshape(()).item(), e.reshape(()).item())
        with np.errstate(all="ignore"):
            d = abs(x - y)
            r = d / abs(y) if y else (math.inf if d else math.nan)
        limits = ("", "") if exact else (f" (up to {atol} allowed)", f" (up to {rtol} allowed)")
        _fail(f"Scalars are not {kind}!\n\nExpected {_number_text(y)} but got "
              f"{_number_text(x)}.\nAbsolute difference: {_number_text(d)}{limits[0]}\n"
              f"Relative difference: {_number_text(r)}{limits[1]}", msg, where)
    bad = ~close
    where_abs = np.unravel_index(_nan_first_argmax(np.where(bad, diff, 0)), a.shape)
    where_rel = np.unravel_index(_nan_first_argmax(np.where(bad, rel, 0)), a.shape)
    limits = ("", "") if exact else (f" (up to {atol} allowed)", f" (up to {rtol} allowed)")
    n_bad, n = int(bad.sum()), bad.size
    _fail(f"Tensor-likes are not {kind}!\n\n"
          f"Mismatched elements: {n_bad} / {n} ({100 * n_bad / n:.1f}%)\n"
          f"Greatest absolute difference: {_number_text(diff[where_abs])} at index "
          f"{tuple(int(i) for i in where_abs)}{limits[0]}\n"
          f"Greatest relative difference: {_number_text(rel[where_rel])} at index "
          f"{tuple(int(i) for i in where_rel)}{limits[1]}", msg, where)


def _nan_first_argmax(values):
    flat = values.reshape(-1)
    nans = np.flatnonzero(flat != flat)
    return int(nans[0]) if nans.size else int(np.argmax(flat))


def _assert_pair(actual, expected, rtol, atol, equal_nan, check_device, check_dtype, msg, where):
    from collections.abc import Mapping, Sequence

    if actual is None or expected is None:
        if actual is not None or expected is not None:
            _fail(f"None mismatch: {actual} is not {expected}", msg, where)
        return
    if isinstance(actual, np.ndarray) and isinstance(expected, np.ndarray):  # as torch's
        actual, expected = (Tensor(a, dtype=a.dtype) for a in (actual, expected))
    if isinstance(actual, Tensor) and isinstance(expected, Tensor):
        for attr, a, e in (("shape", tuple(actual.shape), tuple(expected.shape)),
                           ("device", actual.device, expected.device) if check_device else
                           ("device", None, None),
                           ("dtype", actual.dtype, expected.dtype) if check_dtype else
                           ("dtype", None, None)):
            if a != e:
                shown = {"shape": lambda s: f"minidl.Size({list(s)})",
                         "dtype": lambda d: f"minidl.{np.dtype(d).name}",
                         "device": str}[attr]
                _fail(f"The values for attribute '{attr}' do not match: {shown(a)} != "
                      f"{shown(e)}.", msg, where)
        a, e = actual.numpy(force=True), expected.numpy(force=True)
        if a.dtype != e.dtype:
            common = np.promote_types(a.dtype, e.dtype)
            tol = _tolerances(a.dtype, e.dtype)
            a, e = a.astype(common), e.astype(common)
        else:
            tol = _tolerances(a.dtype)
        r, t = (tol if rtol is None else (rtol, atol))
        _compare_arrays(a, e, r, t, equal_nan, a.ndim == 0, msg, where)
        return
    if isinstance(actual, (bool, np.bool_)) and isinstance(expected, (bool, np.bool_)):
        if bool(actual) != bool(expected):
            _fail(f"Booleans mismatch: {bool(actual)} is not {bool(expected)}", msg, where)
        return
    if _is_number(actual) and _is_number(expected):
        kinds = [type(x.item() if isinstance(x, np.generic) else x) for x in (actual, expected)]
        if check_dtype and kinds[0] is not kinds[1]:
            _fail(f"The (d)types do not match: {kinds[0]} != {kinds[1]}.", msg, where)
        both_int = all(isinstance(x, (int, np.integer, bool, np.bool_)) for x in (actual, expected))
        tol = (0.0, 0.0) if both_int else _tolerances(np.float64)
        r, t = (tol if rtol is None else (rtol, atol))
        dtype = np.int64 if both_int else np.float64
        _compare_arrays(np.asarray(actual, dtype), np.asarray(expected, dtype), r, t, equal_nan,
                        True, msg, where, (actual, expected))
        return
    if isinstance(actual, Mapping) and isinstance(expected, Mapping):
        if set(actual) != set(expected):
            missing = sorted(set(expected) - set(actual), key=repr)
            extra = sorted(set(actual) - set(expected), key=repr)
            _fail(f"The keys of the mappings do not match:\nMissing keys in the actual mapping: "
                  f"{missing}\nAdditional keys in the actual mapping: {extra}", msg, where)
        for k in expected:
            _assert_pair(actual[k], expected[k], rtol, atol, equal_nan, check_device,
                         check_dtype, msg, f"{where}[{k!r}]")
        return
    if (isinstance(actual, Sequence) and isinstance(expected, Sequence)
            and not isinstance(actual, str) and not isinstance(expected, str)):
        if len(actual) != len(expected):
            _fail(f"The length of the sequences mismatch: {len(actual)} != {len(expected)}",
                  msg, where)
        for i, (a, e) in enumerate(zip(actual, expected)):
            _assert_pair(a, e, rtol, atol, equal_nan, check_device, check_dtype, msg,
                         f"{where}[{i}]")
        return
    raise TypeError(f"No comparison pair was able to handle inputs of type {type(actual)} and "
                    f"{type(expected)}." + (f"\n\nThe failure occurred for item {where}"
                                            if where else ""))


def assert_close(actual, expected, *, allow_subclasses=True, rtol=None, atol=None,
                 equal_nan=False, check_device=True, check_dtype=True, check_layout=True,
                 check_stride=False, msg=None):
    """``torch.testing.assert_close``: Tensors (or numbers, or sequences and mappings of them,
    compared item by item) of the same shape, device and dtype, close within ``rtol`` and
    ``atol`` (by default PyTorch's for the dtype: 1.3e-6 and 1e-5 for float32, 1e-7 for
    float64, exact for integers and bools). An AssertionError with PyTorch's message names the
    mismatched elements and the greatest differences; ``msg`` (a string, or a function of the
    message) replaces it. ``check_layout`` and ``check_stride`` are accepted (minidl has one
    layout and does not expose strides)."""
    if (rtol is None) != (atol is None):
        raise ValueError("Both 'rtol' and 'atol' must be either specified or omitted, but got "
                         f"no {'atol' if atol is None else 'rtol'}.")
    try:
        _assert_pair(actual, expected, rtol, atol, equal_nan, check_device, check_dtype, msg,
                     "")
    except _Mismatch as e:
        raise AssertionError(str(e)) from None


# assert_allclose's tolerances (rtol, atol) by dtype, as torch's: exact for the others
_ALLCLOSE_TOLERANCES = {"float16": (1e-3, 1e-3), "float32": (1e-4, 1e-5),
                        "float64": (1e-5, 1e-8)}


def assert_allclose(actual, expected, rtol=None, atol=None, equal_nan=True, msg=""):
    """torch's deprecated ``assert_allclose`` (use ``assert_close``): ``expected`` (a Tensor,
    or data made one in ``actual``'s dtype) close to ``actual`` in values and device, its
    dtype not checked; NaNs equal by default; its own default tolerances by ``actual``'s
    dtype. Warns FutureWarning, as torch's."""
    warnings.warn("`minidl.testing.assert_allclose()` is deprecated since torch 1.12 and will "
                  "be removed in a future release. Please use `minidl.testing.assert_close()` "
                  "instead.", FutureWarning, stacklevel=2)
    if not isinstance(actual, Tensor):
        actual = Tensor(np.asarray(actual))
    if not isinstance(expected, Tensor):
        from .runtime import as_tensor

        expected = as_tensor(expected, dtype=actual.dtype, device=actual.device)
    if (rtol is None) != (atol is None):
        raise ValueError("Both 'rtol' and 'atol' must be either specified or omitted, but got "
                         f"no {'atol' if atol is None else 'rtol'}.")
    if rtol is None:
        rtol, atol = _ALLCLOSE_TOLERANCES.get(str(np.dtype(actual.dtype)), (0.0, 0.0))
    assert_close(actual, expected, rtol=rtol, atol=atol, equal_nan=equal_nan,
                 check_device=True, check_dtype=False, msg=msg or None)


def _value_range(dt, low, high):
    """make_tensor's [low, high) for ``dt``, as torch's: PyTorch's defaults, refused where
    empty, NaN or outside what dt holds, clamped to dt's range, rounded up for integers."""
    if dt == np.bool_:
        lowest, highest, default = 0, 2, (0, 2)
    elif dt.kind in "iu":
        info = np.iinfo(dt)
        lowest, highest = int(info.min), int(info.max) + (dt != np.int64)
        default = (-9, 10)
    else:
        info = np.finfo(dt)
        lowest, highest, default = float(info.min), float(info.max), (-9, 9)
    low = default[0] if low is None else low
    high = default[1] if high is None else high
    if any(isinstance(v, float) and math.isnan(v) for v in (low, high)):
        raise ValueError(f"`low` and `high` cannot be NaN, but got low={low} and high={high}")
    if low == high and is_floating(dt):
        warnings.warn("Passing `low==high` to `make_tensor` for floating types is deprecated "
                      "(as in PyTorch); use `minidl.full(...)` instead.", FutureWarning,
                      stacklevel=3)
    elif low >= high:
        raise ValueError(f"`low` must be less than `high`, but got {low} >= {high}")
    elif high < lowest or low >= highest:
        raise ValueError(f"The value interval specified by `low` and `high` is [{low}, {high}), "
                         f"but {dt} only supports [{lowest}, {highest})")
    low, high = min(max(low, lowest), highest), min(max(high, lowest), highest)
    if dt.kind in "biu":
        return math.ceil(low), math.ceil(high)
    return low, high


def make_tensor(*shape, dtype, device=None, low=None, high=None, requires_grad=False,
                noncontiguous=False, exclude_zero=False, memory_format=None):
    """``torch.testing.make_tensor``: a tensor of ``shape`` and ``dtype`` with values drawn
    uniformly from [low, high) (PyTorch's defaults: [-9, 9) for floating types, [-9, 10) for
    integers, clamped to the dtype's range, so [0, 10) for uint8; False/True for bool) from
    minidl's seeded generator; ``exclude_zero`` replaces zeros (by the smallest positive normal
    value, 1 for integers, True for bool); ``noncontiguous`` gives a strided view and
    ``memory_format`` a layout, as torch's. ``requires_grad`` only for floating types."""
    from . import backend
    from .backend.dtypes import as_dtype, is_floating
    from .shape_ops import in_memory_format

    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    dt = np.dtype(as_dtype(dtype))
    if noncontiguous and memory_format is not None:
        raise ValueError("The parameters `noncontiguous` and `memory_format` are mutually "
                         f"exclusive, but got noncontiguous={noncontiguous} and "
                         f"memory_format={memory_format}")
    if requires_grad and not is_floating(dt):
        raise ValueError("`requires_grad=True` is not supported for boolean and integral "
                         f"dtypes, but got dtype={dt}")
    low, high = _value_range(dt, low, high)
    noncontiguous = noncontiguous and math.prod(shape) > 1
    drawn = (*shape[:-1], 2 * shape[-1]) if noncontiguous else shape
    rng = backend.rng()
    if dt.kind in "biu":
        values = rng.integers(low, high, drawn, dtype=np.int64 if dt == np.bool_ else dt)
    elif high - low >= np.finfo(np.float64).max:  # the span overflows: draw half of it
        values = rng.uniform(low / 2, high / 2, drawn) * 2
    else:
        values = rng.uniform(low, high, drawn)
    values = np.asarray(values).astype(dt)
    if noncontiguous:
        values = values[..., 1::2]
    if exclude_zero:
        values[values == 0] = np.finfo(dt).tiny if is_floating(dt) else 1
    t = Tensor(values, dtype=dt, device=device)
    if memory_format is not None:
        t = in_memory_format(t, memory_format)
    if requires_grad:
        t.requires_grad_(True)
    return t
