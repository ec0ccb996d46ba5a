"""gradcheck: analytic gradients against central finite differences in float64."""
from __future__ import annotations

import numpy as np

from .tensor import Tensor


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, directions=None, seed=0,
              raise_exception=True):
    """Check ``fn(*inputs)``'s backward against finite differences.

    ``inputs`` are Tensors (float64 recommended); those with requires_grad=True are checked.
    The output is reduced to a scalar by a fixed random projection, so non-scalar outputs are
    fine. Each input is checked element by element when small; past 2,000 elements it is
    checked along ``directions`` random unit directions (Chainer's directional check), which
    keeps checks of large conv inputs cheap. Returns True or raises AssertionError saying which
    input and where the gradients differ.
    """
    rng = np.random.default_rng(seed)
    inputs = [inputs] if isinstance(inputs, Tensor) else inputs  # one Tensor, as torch's
    inputs = [x if isinstance(x, Tensor) else Tensor(np.asarray(x, dtype=np.float64)) for x in inputs]
    for x in inputs:
        if x.requires_grad and x.dtype != np.float64:
            raise TypeError(f"gradcheck: inputs that require grad must be float64, got {x.dtype}")
    out = fn(*inputs)
    proj = rng.standard_normal(out.shape)

    # perturbed copies go to their input's device: a check of CUDA inputs runs on the GPU
    def scalar(values):
        with_values = [Tensor(v, requires_grad=False, device=x.device) if v is not None else x
                       for x, v in zip(inputs, values)]
        y = fn(*with_values)
        return float((y.numpy().astype(np.float64) * proj).sum())

    for x in inputs:
        x.grad = None

    if out.requires_grad:  # else no input reaches the output: every analytic gradient is 0
        (out * Tensor(proj.astype(out.dtype), device=out.device)).sum().backward()
    for k, x in enumerate(inputs):
        if not x.requires_grad:
            continue
        analytic = np.zeros(x.shape) if x.grad is None else x.grad.numpy()
        base = [None] * len(inputs)
        xd = x.numpy()
        if x.numel() <= 2000 and directions is None:
            numeric = np.zeros(x.shape)
            flat = numeric.reshape(-1)
            for i in range(xd.size):
                plus, minus = xd.copy(), xd.copy()
                plus.reshape(-1)[i] += eps
                minus.reshape(-1)[i] -= eps
                base[k] = plus
                f_plus = scalar(base)
                base[k] = minus
                flat[i] = (f_plus - scalar(base)) / (2 * eps)
            bad = ~np.isclose(analytic, numeric, atol=atol, rtol=rtol)
            if bad.any():
                idx = np.unravel_index(np.argmax(bad), x.shape)
                msg = (f"gradcheck: input {k} (shape {x.shape}) differs at {idx}: analytic "
                       f"{analytic[idx]:.8g}, numeric {numeric[idx]:.8g}; {int(bad.sum())} of "
                       f"{bad.size} elements off")
                if raise_exception:
                    raise AssertionError(msg)
                return False
        else:
            for _ in range(directions or 4):
                d = rng.standard_normal(x.shape)
                d /= np.linalg.norm(d)
                base[k] = xd + eps * d
                f_plus = scalar(base)
                base[k] = xd - eps * d
                numeric = (f_plus - scalar(base)) / (2 * eps)
                expected = float((analytic * d).sum())
                if not np.isclose(expected, numeric, atol=atol, rtol=rtol):
                    msg = (f"gradcheck: input {k} (shape {x.shape}): directional derivative "
                           f"analytic {expected:.8g}, numeric {numeric:.8g}")
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
    finite differences of that first gradient. Inputs as for gradcheck (float64)."""
    from . import autograd
    from .ops import cat

    rng = np.random.default_rng(seed + 1)
    inputs = [inputs] if isinstance(inputs, Tensor) else inputs  # one Tensor, as torch's
    inputs = [x if isinstance(x, Tensor) else Tensor(np.asarray(x, dtype=np.float64)) for x in inputs]
    checked = [i for i, x in enumerate(inputs) if x.requires_grad]
    outs = _as_outputs(fn(*inputs))
    if grad_outputs is None:
        vs = [rng.standard_normal(o.shape) for o in outs]
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
