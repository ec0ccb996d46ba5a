"""Double backward (create_graph=True) of the activations, losses and math ops: second
derivatives against finite differences (gradgradcheck, no torch needed) and, where PyTorch
differentiates them twice, the gradient of a nonlinear function of the first gradient against
torch's on the same float64 inputs."""
from __future__ import annotations

import numpy as np
import pytest

import minidl
import minidl.nn.functional as mF
from minidl.testing import gradgradcheck

RNG = np.random.default_rng(0)


def away(shape, low=0.2, high=1.5, rng=RNG):
    """Values with |x| in [low, high], random signs: away from kinks at 0."""
    return rng.uniform(low, high, shape) * rng.choice([-1.0, 1.0], shape)


def uniform(shape, low, high, rng=RNG):
    return rng.uniform(low, high, shape)


def labels(n, classes, rng=RNG):
    return rng.integers(0, classes, n)


class Case:
    """``fn(m, F, *tensors)`` on minidl (m = minidl, F = its functional) or torch; ``arrays``
    the inputs (floats take gradients unless ``fixed`` names their position; integer arrays
    never do); ``torch=False`` where PyTorch has no double backward for it."""

    def __init__(self, name, fn, *arrays, fixed=(), torch=True, atol=1e-5, rtol=1e-4):
        self.name, self.fn, self.arrays = name, fn, arrays
        self.fixed, self.torch, self.atol, self.rtol = fixed, torch, atol, rtol

    def graded(self, i):
        return self.arrays[i].dtype.kind == "f" and i not in self.fixed

    def minidl_inputs(self):
        return [minidl.tensor(a, dtype=minidl.float64 if a.dtype.kind == "f" else None,
                              requires_grad=self.graded(i)) for i, a in enumerate(self.arrays)]

    def __repr__(self):
        return self.name


def check_double_backward(case):
    """gradgradcheck of fn(x)^2: the square makes the incoming gradient depend on the inputs,
    so that graph_backward's dependence on g is checked too."""
    def squared(*xs):
        y = case.fn(minidl, mF, *xs)
        return y * y

    assert gradgradcheck(squared, case.minidl_inputs(), atol=case.atol, rtol=case.rtol)


def check_torch_parity(case):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as tF

    r = np.random.default_rng(1)
    results = []
    for lib, F in ((minidl, mF), (torch, tF)):
        if lib is minidl:
            xs = case.minidl_inputs()
        else:
            xs = [torch.tensor(a, dtype=torch.float64 if a.dtype.kind == "f" else torch.int64,
                               requires_grad=case.graded(i)) for i, a in enumerate(case.arrays)]
        graded = [x for i, x in enumerate(xs) if case.graded(i)]
        y = case.fn(lib, F, *xs)
        v = r.standard_normal(tuple(y.shape))
        r = np.random.default_rng(1)
        # the square: the first gradient depends on the inputs even for a piecewise-linear op
        seed = (y * lib.tensor(v, dtype=lib.float64)).sum() + (y * y).sum() * 0.5
        grads = lib.autograd.grad(seed, graded, create_graph=True)
        total = 0
        rr = np.random.default_rng(2)
        for gr in grads:
            w = lib.tensor(rr.standard_normal(tuple(gr.shape)), dtype=lib.float64)
            total = total + (gr * gr).sum() + (gr * w).sum() + (gr * gr * gr * w).sum()
        total.backward()
        results.append([np.zeros(x.shape) if x.grad is None else x.grad.detach().numpy()
                        if lib is torch else x.grad.numpy() for x in graded])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-10)


# ---- functional: activations and losses ---------------------------------------------------
X = away((3, 4))
LOGITS = RNG.standard_normal((5, 4))
TARGET = labels(5, 4)
TARGET_IGNORED = np.array([0, 3, -100, 1, 2])
CLASS_W = uniform((4,), 0.5, 2.0)
PROB = uniform((3, 4), 0.1, 0.9)
SOFT = uniform((3, 4), 0.0, 1.0)
ELEM_W = uniform((3, 4), 0.5, 1.5)
POS_W = uniform((4,), 0.5, 2.0)
X2 = away((3, 4))

FUNCTIONAL = [
    Case("add_relu", lambda m, F, a, b: F.relu(a + b) if m is not minidl else F.add_relu(a, b),
         X, X2),
    Case("leaky_relu", lambda m, F, x: F.leaky_relu(x, 0.1), X),
    Case("elu", lambda m, F, x: F.elu(x, alpha=1.3), X),
    Case("silu", lambda m, F, x: F.silu(x), X),
    Case("gelu", lambda m, F, x: F.gelu(x), X),
    Case("gelu_tanh", lambda m, F, x: F.gelu(x, approximate="tanh"), X),
    Case("cross_entropy_mean", lambda m, F, x, t: F.cross_entropy(x, t), LOGITS, TARGET),
    Case("cross_entropy_sum", lambda m, F, x, t: F.cross_entropy(x, t, reduction="sum"),
         LOGITS, TARGET),
    Case("cross_entropy_none", lambda m, F, x, t: F.cross_entropy(x, t, reduction="none"),
         LOGITS, TARGET),
    Case("cross_entropy_weight", lambda m, F, x, t, w: F.cross_entropy(x, t, weight=w),
         LOGITS, TARGET, CLASS_W, fixed=(2,)),
    Case("cross_entropy_ignore", lambda m, F, x, t: F.cross_entropy(x, t, ignore_index=-100),
         LOGITS, TARGET_IGNORED),
    Case("cross_entropy_smoothing",
         lambda m, F, x, t, w: F.cross_entropy(x, t, weight=w, label_smoothing=0.2,
                                               reduction="sum"),
         LOGITS, TARGET, CLASS_W, fixed=(2,)),
    Case("bce", lambda m, F, x, t: F.binary_cross_entropy(x, t), PROB, SOFT),
    Case("bce_weight_none", lambda m, F, x, t, w: F.binary_cross_entropy(
        x, t, weight=w, reduction="none"), PROB, SOFT, ELEM_W, fixed=(2,)),
    Case("bce_logits", lambda m, F, x, t: F.binary_cross_entropy_with_logits(x, t), X, SOFT),
    Case("bce_logits_pos_weight", lambda m, F, x, t, w, pw: F.binary_cross_entropy_with_logits(
        x, t, weight=w, pos_weight=pw, reduction="sum"), X, SOFT, ELEM_W, POS_W, fixed=(2, 3)),
    Case("l1_loss", lambda m, F, x, t: F.l1_loss(x, t), X, X2),
    Case("smooth_l1_loss", lambda m, F, x, t: F.smooth_l1_loss(x, t, beta=0.8), X, X2),
    Case("smooth_l1_loss_beta0", lambda m, F, x, t: F.smooth_l1_loss(x, t, beta=0.0,
                                                                     reduction="sum"), X, X2),
]


@pytest.mark.parametrize("case", FUNCTIONAL, ids=repr)
def test_functional_double_backward(case):
    check_double_backward(case)


@pytest.mark.parametrize("case", [c for c in FUNCTIONAL if c.torch], ids=repr)
def test_functional_torch_parity(case):
    check_torch_parity(case)
