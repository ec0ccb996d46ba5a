"""check_op: run one lambda on minidl and on PyTorch with the same inputs, compare the outputs
and the gradient of every float input (of a fixed random projection of the output).

    check_op(lambda F, x, w: F.conv2d(x, w, padding=1), [((2, 3, 5, 5), (4, 3, 3, 3))])

``F`` is minidl.nn.functional or torch.nn.functional, falling back to the top-level package
(``F.cat``, ``F.stack``), so the same lambda runs on both. Each case lists one spec per input:
a shape (standard-normal float32, requires grad), an array made by ``positive``/``distinct``
(float: requires grad), or ``const(array)`` (no grad: integer targets, fixed operands). A case
for a one-input op may be the bare shape.

Import this module only after ``pytest.importorskip("torch")``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as torch_F

import minidl
import minidl.nn.functional as minidl_F


class _Namespace:
    def __init__(self, *modules):
        self._modules = modules

    def __getattr__(self, name):
        for m in self._modules:
            if hasattr(m, name):
                return getattr(m, name)
        raise AttributeError(name)


MINIDL = _Namespace(minidl_F, minidl)
TORCH = _Namespace(torch_F, torch)


class const:  # noqa: N801  (reads as a marker in the case lists)
    """An input passed as-is to both sides, without requires_grad."""

    def __init__(self, array):
        self.array = np.asarray(array)


class _Made:
    def __init__(self, make):
        self.make = make


def positive(shape, low=0.5, high=2.0):
    return _Made(lambda rng: rng.uniform(low, high, shape))


def distinct(shape, spacing=0.1):
    """No two values equal: a max or a relu kink is never a tie between the frameworks."""
    n = int(np.prod(shape))
    return _Made(lambda rng: ((rng.permutation(n) - n / 2) * spacing).reshape(shape))


def away_from_zero(shape, margin=0.05):
    def make(rng):
        x = rng.standard_normal(shape)
        return np.where(x >= 0, x + margin, x - margin)
    return _Made(make)


def _build(spec, rng):
    """(array, requires_grad) for one input spec."""
    if isinstance(spec, const):
        return spec.array, False
    if isinstance(spec, _Made):
        return spec.make(rng).astype(np.float32), True
    return rng.standard_normal(tuple(spec)).astype(np.float32), True


def _cases(shapes):
    for case in shapes:
        if isinstance(case, (const, _Made)) or (isinstance(case, tuple) and (
                not case or isinstance(case[0], int))):
            yield (case,)
        else:
            yield tuple(case)


def assert_close(actual, expected, rtol, atol, what):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != torch's {expected.shape}"
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale, err_msg=what)


def check_op(fn, shapes, rtol=1e-4, atol=1e-5, seed=0, grad=True):
    """Compare ``fn(F, *inputs)`` and its input gradients between minidl and torch (float32)."""
    rng = np.random.default_rng(seed)
    for case in _cases(shapes):
        built = [_build(spec, rng) for spec in case]
        m_in = [minidl.tensor(a, requires_grad=g) for a, g in built]
        t_in = [torch.tensor(a, requires_grad=g) for a, g in built]
        m_out, t_out = fn(MINIDL, *m_in), fn(TORCH, *t_in)
        where = f"case {[tuple(a.shape) for a, _ in built]}"
        assert m_out.dtype == np.float32, f"{where}: minidl output is {m_out.dtype}, not float32"
        assert_close(m_out.numpy(), t_out.detach().numpy(), rtol, atol, f"{where}: forward")
        if not grad:
            continue
        proj = rng.standard_normal(tuple(t_out.shape)).astype(np.float32)
        (m_out * minidl.tensor(proj)).sum().backward()
        (t_out * torch.tensor(proj)).sum().backward()
        for k, (m, t) in enumerate(zip(m_in, t_in)):
            if not t.requires_grad:
                continue
            assert t.grad is not None, f"{where}: torch gives no gradient for input {k}"
            assert m.grad is not None, f"{where}: minidl gives no gradient for input {k}"
            assert m.grad.dtype == np.float32, f"{where}: gradient {k} is {m.grad.dtype}"
            assert_close(m.grad.numpy(), t.grad.numpy(), rtol, atol, f"{where}: grad of input {k}")
