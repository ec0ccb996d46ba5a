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


# ---- nn.functional's other activations, distributions' softplus ----------------------------
def _act(name, **kw):
    return lambda m, F, x: getattr(F, name)(x, **kw)


WIDE = away((3, 4), 0.2, 4.0)
ACTIVATIONS = [
    Case("hardtanh", _act("hardtanh", min_val=-0.9, max_val=1.1), X),
    Case("relu6", _act("relu6"), away((3, 4), 0.2, 7.0)),
    Case("softplus", _act("softplus", beta=1.5, threshold=2.0), WIDE),
    Case("softsign", _act("softsign"), X),
    Case("mish", _act("mish"), WIDE),
    Case("hardswish", _act("hardswish"), WIDE),
    Case("hardsigmoid", _act("hardsigmoid"), WIDE, torch=False),  # torch: not implemented
    Case("celu", _act("celu", alpha=0.7), X),
    Case("selu", _act("selu"), X),
    Case("tanhshrink", _act("tanhshrink"), X),
    Case("threshold", _act("threshold", threshold=0.5, value=-2.0), X),
    Case("logsigmoid", _act("logsigmoid"), WIDE),
    Case("hardshrink", _act("hardshrink", lambd=0.6), X),
    Case("softshrink", _act("softshrink", lambd=0.1), X),
    Case("prelu_channels", lambda m, F, x, w: F.prelu(x, w), away((2, 3, 2)),
         uniform((3,), 0.1, 0.5)),
    Case("prelu_one", lambda m, F, x, w: F.prelu(x, w), away((2, 3)), uniform((1,), 0.1, 0.5)),
    Case("rrelu_eval", _act("rrelu", lower=0.1, upper=0.3), X),
]


@pytest.mark.parametrize("case", ACTIVATIONS, ids=repr)
def test_activation_double_backward(case):
    check_double_backward(case)


@pytest.mark.parametrize("case", [c for c in ACTIVATIONS if c.torch], ids=repr)
def test_activation_torch_parity(case):
    check_torch_parity(case)


def test_rrelu_training_double_backward():
    """In training each element has its own drawn slope, kept for both passes."""
    x = minidl.tensor(away((3, 4)), dtype=minidl.float64, requires_grad=True)
    minidl.manual_seed(0)
    y = mF.rrelu(x, training=True)
    (gx,) = minidl.autograd.grad((y * y).sum(), [x], create_graph=True)
    (gxx,) = minidl.autograd.grad(gx.sum(), [x])
    slope = y.numpy() / x.numpy()
    np.testing.assert_allclose(gx.numpy(), 2 * slope * slope * x.numpy())
    np.testing.assert_allclose(gxx.numpy(), 2 * slope * slope)


def test_distributions_softplus_double_backward():
    from minidl.distributions._special import softplus

    x = minidl.tensor(away((3, 4), 0.2, 30.0), dtype=minidl.float64, requires_grad=True)
    assert gradgradcheck(lambda t: softplus(t) * softplus(t), [x])


# ---- elementwise math (the _unary factory) ---------------------------------------------------
def _m(name):
    return lambda m, F, x: getattr(m, name)(x)


UNIT = uniform((2, 3), -0.8, 0.8)
POSITIVE = uniform((2, 3), 0.3, 2.5)
STEPS = ("sign", "floor", "ceil", "round", "trunc")  # torch's zero gradient takes no graph
UNARY = [Case(name, _m(name), arrays, torch=name not in STEPS) for name, arrays in (
    ("sin", X), ("cos", X), ("tan", UNIT), ("sinh", X), ("cosh", X), ("asin", UNIT),
    ("acos", UNIT), ("atan", X), ("asinh", X), ("acosh", uniform((2, 3), 1.2, 3.0)),
    ("atanh", UNIT), ("log1p", uniform((2, 3), -0.6, 2.0)), ("expm1", X), ("log2", POSITIVE),
    ("log10", POSITIVE), ("exp2", X), ("reciprocal", X), ("rsqrt", POSITIVE), ("square", X),
    ("erf", X), ("erfc", X), ("erfinv", UNIT), ("lgamma", POSITIVE), ("sign", X),
    ("floor", X + 0.5), ("ceil", X + 0.5), ("round", X + 0.25), ("trunc", X + 0.5),
    ("frac", X + 0.5), ("deg2rad", X), ("rad2deg", X), ("sinc", X))]
SPECIAL = [Case(name, (lambda n: lambda m, F, x: getattr(m.special, n)(x))(name), arrays)
           for name, arrays in (
    ("erfcx", X), ("ndtr", X), ("ndtri", uniform((2, 3), 0.1, 0.9)), ("log_ndtr", WIDE),
    ("i0", X), ("i0e", X), ("i1", X), ("i1e", X), ("entr", POSITIVE), ("sinc", X))]


@pytest.mark.parametrize("case", UNARY + SPECIAL, ids=repr)
def test_unary_double_backward(case):
    check_double_backward(case)


@pytest.mark.parametrize("case", [c for c in UNARY + SPECIAL if c.torch], ids=repr)
def test_unary_torch_parity(case):
    check_torch_parity(case)


def test_step_functions_zero_second_derivative():
    """floor, sign... have a zero gradient in the graph too, so that a second backward
    through them gives zeros (not an error)."""
    x = minidl.tensor(X + 0.5, dtype=minidl.float64, requires_grad=True)
    for op in (minidl.floor, minidl.ceil, minidl.round, minidl.trunc, minidl.sign):
        (gx,) = minidl.autograd.grad((op(x) * x).sum(), [x], create_graph=True)
        (gxx,) = minidl.autograd.grad((gx * gx).sum(), [x])
        np.testing.assert_array_equal(gxx.numpy(), 2 * op(x).numpy() * 0)


def test_sinc_at_zero():
    x = minidl.tensor([0.0, 0.5], dtype=minidl.float64, requires_grad=True)
    (gx,) = minidl.autograd.grad(minidl.sinc(x).sum(), [x], create_graph=True)
    (gxx,) = minidl.autograd.grad(gx.sum(), [x])
    assert gxx.numpy()[0] == pytest.approx(-np.pi ** 2 / 3)


# ---- math ops with dims and two operands -----------------------------------------------------
NONZERO = away((3, 4), 0.5, 1.5)
B = away((3, 4))
MATH = [
    Case("cumsum", lambda m, F, x: m.cumsum(x, 1), X),
    Case("cumsum_dim0", lambda m, F, x: m.cumsum(x, 0), X),
    Case("cumprod", lambda m, F, x: m.cumprod(x, 1), NONZERO),
    Case("prod_all", lambda m, F, x: m.prod(x), NONZERO),
    Case("prod_dim", lambda m, F, x: m.prod(x, 0), NONZERO),
    Case("prod_keepdim", lambda m, F, x: m.prod(x, 1, keepdim=True), NONZERO),
    Case("logsumexp", lambda m, F, x: m.logsumexp(x, 1), X),
    Case("logsumexp_dims", lambda m, F, x: m.logsumexp(x, (0, 1), keepdim=True), X),
    Case("norm2", lambda m, F, x: m.linalg.vector_norm(x, dim=1), X),
    Case("norm2_all", lambda m, F, x: m.linalg.vector_norm(x), X),
    Case("norm1", lambda m, F, x: m.linalg.vector_norm(x, ord=1, dim=0), X),
    Case("norm3", lambda m, F, x: m.linalg.vector_norm(x, ord=3, dim=1, keepdim=True), X),
    Case("norm_half", lambda m, F, x: m.linalg.vector_norm(x, ord=0.5, dim=1), X),
    Case("norm_inf", lambda m, F, x: m.linalg.vector_norm(x, ord=float("inf"), dim=1), X),
    Case("remainder", lambda m, F, a, b: m.remainder(a, b), X * 3, B),
    Case("fmod", lambda m, F, a, b: m.fmod(a, b), X * 3, B),
    Case("div_floor", lambda m, F, a, b: m.div(a, b, rounding_mode="floor") * a, X * 3, B,
         torch=False),
    Case("nan_to_num", lambda m, F, x: m.nan_to_num(x), X),
    Case("xlogy", lambda m, F, a, b: m.xlogy(a, b), X, uniform((3, 1), 0.3, 2.5)),
    Case("atan2", lambda m, F, a, b: m.atan2(a, b), X, B),
    Case("hypot", lambda m, F, a, b: m.hypot(a, b), X, B),
    Case("logaddexp", lambda m, F, a, b: m.logaddexp(a, b), X, B),
    Case("logaddexp2", lambda m, F, a, b: m.logaddexp2(a, b), X, B),
    Case("logcumsumexp", lambda m, F, x: m.logcumsumexp(x, 1), X),
    Case("logcumsumexp_dim0", lambda m, F, x: m.logcumsumexp(x, 0), X),
]


@pytest.mark.parametrize("case", MATH, ids=repr)
def test_math_double_backward(case):
    check_double_backward(case)


@pytest.mark.parametrize("case", [c for c in MATH if c.torch], ids=repr)
def test_math_torch_parity(case):
    check_torch_parity(case)


def test_prod_with_a_zero_is_first_order_only():
    """The exact gradient of prod and cumprod at zeros is computed outside the graph: a
    second backward through it says so instead of returning wrong numbers."""
    a = np.array([[0.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    for op in (lambda t: minidl.prod(t, 1), lambda t: minidl.cumprod(t, 1)):
        x = minidl.tensor(a, dtype=minidl.float64, requires_grad=True)
        (gx,) = minidl.autograd.grad(op(x).sum(), [x], create_graph=True)
        plain = minidl.tensor(a, dtype=minidl.float64, requires_grad=True)
        op(plain).sum().backward()
        np.testing.assert_array_equal(gx.numpy(), plain.grad.numpy())
        with pytest.raises(NotImplementedError, match="double backward"):
            minidl.autograd.grad((gx * gx).sum(), [x])


# ---- special and pointwise functions of two operands, attention ------------------------------
OTHERS = [
    Case("polygamma0", lambda m, F, x: m.polygamma(0, x), POSITIVE),
    Case("polygamma2", lambda m, F, x: m.polygamma(2, x), POSITIVE),
    Case("digamma", lambda m, F, x: m.digamma(x), POSITIVE),
    Case("logit", lambda m, F, x: m.logit(x), PROB),
    Case("logit_eps", lambda m, F, x: m.logit(x, eps=0.2), PROB),
    Case("xlog1py", lambda m, F, a, b: m.special.xlog1py(a, b), X,
         uniform((3, 1), 0.3, 2.5)),
    Case("copysign", lambda m, F, a, b: m.copysign(a, b), X, B),
    Case("fmax", lambda m, F, a, b: m.fmax(a, b), X, B),
    Case("fmin", lambda m, F, a, b: m.fmin(a, b), X, B),
    Case("ldexp", lambda m, F, a, b: m.ldexp(a, b), X, B),
    Case("frexp", lambda m, F, x: m.frexp(x)[0], X * 5),
    Case("nextafter", lambda m, F, a, b: m.nextafter(a, b), X, B, fixed=(1,), torch=False),
]

Q, K, V = (RNG.standard_normal((2, 3, 4)) for _ in range(3))
K5, V5 = RNG.standard_normal((2, 5, 4)), RNG.standard_normal((2, 5, 2))
ADD_MASK = RNG.standard_normal((3, 5))
ATTENTION = [
    Case("sdpa", lambda m, F, q, k, v: F.scaled_dot_product_attention(q, k, v), Q, K5, V5),
    Case("sdpa_causal", lambda m, F, q, k, v: F.scaled_dot_product_attention(
        q, k, v, is_causal=True), Q, K, V),
    Case("sdpa_mask", lambda m, F, q, k, v, mask: F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, scale=0.7), Q, K5, V5, ADD_MASK),
]


@pytest.mark.parametrize("case", OTHERS + ATTENTION, ids=repr)
def test_other_double_backward(case):
    check_double_backward(case)


@pytest.mark.parametrize("case", [c for c in OTHERS + ATTENTION if c.torch], ids=repr)
def test_other_torch_parity(case):
    check_torch_parity(case)


def _packed(batch_first, causal=False, with_mask=False):
    """PackedSelfAttention on minidl; on torch the same from the split heads and sdpa."""
    heads = 2

    def fn(m, F, qkv, *mask):
        a, b, e3 = qkv.shape
        hd = e3 // (3 * heads)
        if m is minidl:
            from minidl.nn.attention import PackedSelfAttention

            return PackedSelfAttention.apply(qkv, *mask, heads=heads, batch_first=batch_first,
                                             scale=0.6, causal=causal)
        order = (0, 2, 1, 3) if batch_first else (1, 2, 0, 3)
        q, k, v = (qkv.reshape(a, b, 3, heads, hd)[:, :, i].permute(*order) for i in range(3))
        # the composite: torch's fused CPU kernels have no double backward
        scores = q @ k.transpose(-2, -1) * 0.6
        if causal:
            length = b if batch_first else a
            scores = scores.masked_fill(m.ones(length, length).triu(1).bool(), float("-inf"))
        out = (scores + mask[0] if mask else scores).softmax(-1) @ v
        back = (0, 2, 1, 3) if batch_first else (2, 0, 1, 3)
        merged = out.permute(*back)
        return merged.reshape(merged.shape[0], merged.shape[1], heads * hd)
    return fn


QKV = RNG.standard_normal((3, 2, 12))
PACKED = [
    Case("packed", _packed(False), QKV),
    Case("packed_batch_first_causal", _packed(True, causal=True), RNG.standard_normal((2, 3, 12))),
    Case("packed_mask", _packed(False, with_mask=True), QKV, RNG.standard_normal((1, 2, 3, 3))),
]


@pytest.mark.parametrize("case", PACKED, ids=repr)
def test_packed_attention_double_backward(case):
    check_double_backward(case)


@pytest.mark.parametrize("case", PACKED, ids=repr)
def test_packed_attention_torch_parity(case):
    check_torch_parity(case)


def test_attention_dropout_double_backward():
    """The dropout multiplier is a constant of both passes (the same draw each call here)."""
    def fn(q, k, v):
        minidl.manual_seed(3)
        y = mF.scaled_dot_product_attention(q, k, v, dropout_p=0.3)
        return y * y

    inputs = [minidl.tensor(a, dtype=minidl.float64, requires_grad=True) for a in (Q, K5, V5)]
    assert gradgradcheck(fn, inputs)


# ---- end to end: a Hessian-vector product and a MAML step of a small classifier -------------
def _mlp_arrays(seed=5):
    r = np.random.default_rng(seed)
    return dict(w1=r.standard_normal((6, 4)) * 0.5, b1=r.standard_normal(6) * 0.1,
                w2=r.standard_normal((3, 6)) * 0.5, b2=r.standard_normal(3) * 0.1,
                x=r.standard_normal((8, 4)), y=r.integers(0, 3, 8),
                x_val=r.standard_normal((5, 4)), y_val=r.integers(0, 3, 5),
                v=[r.standard_normal(s) for s in ((6, 4), (6,), (3, 6), (3,))])


def _mlp_loss(m, F, params, x, y, act, **ce):
    w1, b1, w2, b2 = params
    h = F.linear(x, w1, b1)
    h = {"gelu": F.gelu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
         "silu": F.silu, "tanh": m.tanh, "elu": F.elu, "softplus": F.softplus}[act](h)
    return F.cross_entropy(F.linear(h, w2, b2), y, **ce)


def _run_mlp(lib, F, task, act, **ce):
    a = _mlp_arrays()
    params = [lib.tensor(a[k], dtype=lib.float64, requires_grad=True)
              for k in ("w1", "b1", "w2", "b2")]
    x, x_val = (lib.tensor(a[k], dtype=lib.float64) for k in ("x", "x_val"))
    y, y_val = (lib.tensor(a[k]) for k in ("y", "y_val"))
    if lib is not minidl:
        y, y_val = y.long(), y_val.long()
    loss = _mlp_loss(lib, F, params, x, y, act, **ce)
    grads = lib.autograd.grad(loss, params, create_graph=True)
    if task == "hvp":
        hv = sum((g * lib.tensor(v, dtype=lib.float64)).sum() for g, v in zip(grads, a["v"]))
        out = lib.autograd.grad(hv, params)
    else:  # MAML: one inner SGD step, the outer loss differentiated through it
        fast = [p - 0.5 * g for p, g in zip(params, grads)]
        _mlp_loss(lib, F, fast, x_val, y_val, act, **ce).backward()
        out = [p.grad for p in params]
    return [o.detach().numpy() if lib is not minidl else o.numpy() for o in out]


@pytest.mark.parametrize("task", ["hvp", "maml"])
@pytest.mark.parametrize("act, ce", [
    ("gelu", {}), ("gelu_tanh", {"reduction": "sum"}), ("silu", {"label_smoothing": 0.1}),
    ("tanh", {}), ("elu", {"weight": "class"}), ("softplus", {})],
    ids=["gelu", "gelu_tanh_sum", "silu_smoothing", "tanh", "elu_weight", "softplus"])
def test_mlp_second_order_matches_torch(task, act, ce):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as tF

    results = []
    for lib, F in ((minidl, mF), (torch, tF)):
        kw = dict(ce)
        if kw.get("weight") == "class":
            kw["weight"] = lib.tensor([0.5, 1.5, 1.0], dtype=lib.float64)
        results.append(_run_mlp(lib, F, task, act, **kw))
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-12)


def test_mlp_hessian_vector_product_against_finite_differences():
    """Without torch: the HVP equals the change of the gradient along v."""
    a = _mlp_arrays()
    keys = ("w1", "b1", "w2", "b2")

    def gradient(shift):
        params = [minidl.tensor(a[k] + shift * v, dtype=minidl.float64, requires_grad=True)
                  for k, v in zip(keys, a["v"])]
        loss = _mlp_loss(minidl, mF, params, minidl.tensor(a["x"], dtype=minidl.float64),
                         minidl.tensor(a["y"]), "gelu")
        return params, minidl.autograd.grad(loss, params, create_graph=True)

    params, grads = gradient(0.0)
    hv = sum((g * minidl.tensor(v, dtype=minidl.float64)).sum() for g, v in zip(grads, a["v"]))
    hvp = minidl.autograd.grad(hv, params)
    eps = 1e-5
    plus, minus = gradient(eps)[1], gradient(-eps)[1]
    for h, gp, gm in zip(hvp, plus, minus):
        np.testing.assert_allclose(h.numpy(), (gp.numpy() - gm.numpy()) / (2 * eps),
                                   rtol=1e-5, atol=1e-8)


def test_mish_double_backward_at_zero():
    """mish's derivative takes softplus in the graph as one op, exact at x = 0 (a relu + abs
    form would give softplus' derivative 0 there instead of 1/2)."""
    torch = pytest.importorskip("torch")
    x = minidl.tensor([0.0, 0.7], dtype=minidl.float64, requires_grad=True)
    (gx,) = minidl.autograd.grad(mF.mish(x).sum(), [x], create_graph=True)
    (gxx,) = minidl.autograd.grad(gx.sum(), [x])
    xt = torch.tensor([0.0, 0.7], dtype=torch.float64, requires_grad=True)
    (gt,) = torch.autograd.grad(torch.nn.functional.mish(xt).sum(), [xt], create_graph=True)
    (gtt,) = torch.autograd.grad(gt.sum(), [xt])
    np.testing.assert_allclose(gx.numpy(), gt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(gxx.numpy(), gtt.numpy(), rtol=1e-10)


@pytest.mark.parametrize("packed", [True, False])
def test_multihead_attention_double_backward(packed):
    """nn.MultiheadAttention end to end: the packed self-attention op, or the separate
    projections and the fused attention (key and value another tensor)."""
    minidl.manual_seed(0)
    mha = minidl.nn.MultiheadAttention(4, 2).double()
    r = np.random.default_rng(4)
    x = minidl.tensor(r.standard_normal((3, 2, 4)), dtype=minidl.float64, requires_grad=True)
    kv = minidl.tensor(r.standard_normal((5, 2, 4)), dtype=minidl.float64)

    def fn(x):
        y, _ = mha(x, x, x, need_weights=False) if packed else mha(x, kv, kv)
        return y * y

    assert gradgradcheck(fn, [x])


# ---- cumprod and prod: second derivatives -----------------------------------------------------

def test_cumprod_and_prod_second_derivatives_still_check():
    from minidl.testing import gradgradcheck

    x = minidl.tensor([[1.5], [2.0]], dtype=minidl.float64, requires_grad=True)
    assert gradgradcheck(lambda t: minidl.cumprod(t, 1), (x,))
    y = minidl.tensor([[1.5, -0.7], [2.0, 0.3]], dtype=minidl.float64, requires_grad=True)
    assert gradgradcheck(lambda t: minidl.cumprod(t, 1), (y,))
    assert gradgradcheck(lambda t: t.prod(1), (y,))
    assert gradgradcheck(lambda t: t.prod(), (y,))
