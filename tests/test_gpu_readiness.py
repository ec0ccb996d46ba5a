"""The ops added on 2026-12-06, run on the fake GPU made strict (tests/_fake_gpu.strict): what
CuPy refuses and the fake would let through (numpy arrays beside device arrays, ``ufunc.at``,
numba kernels and ``np.asarray`` on device data, numpy-only functions) raises, and host copies
of device data (float(), int(), bool(), .item(), .tolist(), iteration, asnumpy) are counted.
Each op's output and input gradients must stay on "cuda", equal the CPU's, and need no more
host copies than the op's result size depends on (0 for most)."""
from __future__ import annotations

import importlib

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F

import _fake_gpu

REVIEWED = [
    "minidl.pointwise", "minidl.statistics", "minidl.structure", "minidl.sampling",
    "minidl.math_ops", "minidl.shape_ops", "minidl.products", "minidl.nn._functional.sampling",
    "minidl.nn._functional.ctc", "minidl.nn._functional.embedding_bag",
    "minidl.nn._functional.rms_norm", "minidl.nn._functional.convolution",
    "minidl.nn._functional.pooling", "minidl.nn._functional.extra_activations",
    "minidl.nn._functional.activations", "minidl.nn.lazy", "minidl.nn._parametrizations",
    "minidl.nn._parametrize", "minidl.nn._norm_hooks", "minidl.optim.swa_utils",
    "minidl.utils.checkpoint", "minidl.runtime", "minidl.tensor_functions",
]
MODULES = [importlib.import_module(m) for m in REVIEWED]
MODULES = [m for m in MODULES if hasattr(m, "np")]


@pytest.fixture
def fake_gpu(monkeypatch, host_kernels):
    _fake_gpu.install(monkeypatch, host_kernels)


def _tensors(arrays, device, grad):
    return [minidl.tensor(a, requires_grad=grad and np.asarray(a).dtype.kind == "f",
                          device=device) for a in arrays]


def _run(fn, arrays, device, grad=True):
    xs = _tensors(arrays, device, grad)
    ys = fn(*xs)
    ys = list(ys) if isinstance(ys, (tuple, list)) else [ys]
    diff = [y for y in ys if y.requires_grad]
    if grad and diff:
        rng = np.random.default_rng(1)
        total = None
        for y in diff:
            proj = minidl.tensor(rng.standard_normal(y.shape).astype(y.dtype), device=device)
            term = (y * proj).sum()
            total = term if total is None else total + term
        total.backward()
    return ys, xs


def check(fn, arrays, syncs=0, grad=True, rtol=1e-5, atol=1e-6):
    """``fn`` on the CPU and on the strict fake GPU: same outputs and gradients, on "cuda", with
    at most ``syncs`` host copies."""
    arrays = [np.asarray(a) for a in arrays]
    cpu_ys, cpu_xs = _run(fn, arrays, "cpu", grad)
    minidl.manual_seed(1234)
    with _fake_gpu.strict(*MODULES) as counted:
        gpu_ys, gpu_xs = _run(fn, arrays, "cuda", grad)
    assert len(counted) <= syncs, f"{len(counted)} host copies: {counted}"
    for c, g in zip(cpu_ys, gpu_ys):
        assert g.device == "cuda", g.device
        assert g.dtype == c.dtype and g.shape == c.shape
        np.testing.assert_allclose(g.numpy(), c.numpy(), rtol=rtol, atol=atol)
    for c, g in zip(cpu_xs, gpu_xs):
        assert (c.grad is None) == (g.grad is None)
        if c.grad is not None:
            assert g.grad.device == "cuda"
            np.testing.assert_allclose(g.grad.numpy(), c.grad.numpy(), rtol=rtol, atol=atol)
    return counted


def _r(*shape, seed=0, lo=-2.0, hi=2.0):
    return np.random.default_rng(seed).uniform(lo, hi, shape)


def _f32(*shape, seed=0, lo=-2.0, hi=2.0):
    return _r(*shape, seed=seed, lo=lo, hi=hi).astype(np.float32)


# ---- the strict fake itself --------------------------------------------------------------
def test_strict_fake_refuses_what_cupy_refuses(fake_gpu):
    import minidl.math_ops as mo

    a = minidl.randn(3, device="cuda").data
    with _fake_gpu.strict(mo) as counted:
        with pytest.raises(TypeError, match="numpy array"):
            a + np.ones(3)
        with pytest.raises(TypeError, match="multiply.at"):
            np.multiply.at(a, np.zeros(1, np.int64).view(_fake_gpu.FakeDeviceArray), 2.0)
        with pytest.raises(TypeError, match="np.asarray"):
            mo.np.asarray(a)
        with pytest.raises(AttributeError, match="trapezoid"):
            minidl.backend.get_array_module(a).trapezoid(a)
        float(a[0]), a.tolist(), bool(a[0] > 0)
    assert counted == ["float", "tolist", "bool"]
    a + np.ones(3)  # outside strict() the fake is as permissive as before


# ---- ops: (id, fn, input arrays, host copies allowed) -----------------------------------
def _idx(values):
    return np.asarray(values, dtype=np.int64)


CASES = [
    ("atan2", lambda a, b: minidl.atan2(a, b), [_r(3, 4), _r(3, 4, seed=1)], 0),
    ("hypot", lambda a, b: minidl.hypot(a, b), [_r(3, 4), _r(4, seed=1)], 0),
    ("logaddexp", lambda a, b: minidl.logaddexp(a, b), [_r(3, 4), _r(3, 1, seed=1)], 0),
    ("logaddexp2", lambda a, b: minidl.logaddexp2(a, b), [_r(3, 4), _r(3, 4, seed=1)], 0),
    ("logcumsumexp", lambda a: minidl.logcumsumexp(a, 1), [_r(3, 5)], 0),
    ("logcumsumexp-inf", lambda a: minidl.logcumsumexp(a, 0),
     [np.array([[-np.inf, 1.0], [2.0, -np.inf], [0.5, 0.25]])], 0),
    ("tensor_split", lambda a: minidl.tensor_split(a, 3, dim=1), [_r(2, 7)], 0),
    ("tensor_split-idx", lambda a: minidl.tensor_split(a, [1, 4], dim=1), [_r(2, 7)], 0),
    ("block_diag", lambda a, b: minidl.block_diag(a, b), [_r(2, 3), _r(1, 2, seed=1)], 0),
    ("cartesian_prod", lambda a, b: minidl.cartesian_prod(a, b), [_r(3), _r(2, seed=1)], 0),
    ("cdist", lambda a, b: minidl.cdist(a, b), [_r(2, 4, 3), _r(2, 5, 3, seed=1)], 0),
    ("cdist-p1", lambda a, b: minidl.cdist(a, b, p=1.0), [_r(4, 3), _r(5, 3, seed=1)], 0),
    ("cdist-inf", lambda a, b: minidl.cdist(a, b, p=float("inf")),
     [_r(4, 3), _r(5, 3, seed=1)], 0),
    ("pdist", lambda a: minidl.pdist(a), [_r(5, 3)], 0),
    ("pdist-p3", lambda a: minidl.pdist(a, p=3.0), [_r(5, 3)], 0),
    ("trapezoid", lambda y: minidl.trapezoid(y, dim=1), [_r(3, 5)], 0),
    ("trapezoid-x", lambda y, x: minidl.trapezoid(y, x), [_r(3, 5), np.cumsum(_r(5, lo=0.1))], 0),
    ("cumulative_trapezoid", lambda y: minidl.cumulative_trapezoid(y), [_r(3, 5)], 0),
    ("bincount", lambda a: minidl.bincount(a), [_idx([0, 3, 3, 1])], 2),
    ("bincount-w", lambda a, w: minidl.bincount(a, w, minlength=6),
     [_idx([0, 3, 3, 1]), _r(4)], 2),
    ("histc", lambda a: minidl.histc(a, bins=5, min=-2, max=2), [_r(20)], 0),
    ("histc-auto", lambda a: minidl.histc(a, bins=4), [_r(20)], 2),
    # pointwise.py
    ("copysign", lambda a, b: minidl.copysign(a, b), [_r(3, 4), _r(3, 4, seed=1)], 0),
    ("float_power", lambda a, b: minidl.float_power(a, b), [_r(3, lo=0.5), _r(3, seed=1)], 0),
    ("float_power-scalar", lambda a: minidl.float_power(2.0, a), [_r(3)], 0),
    ("fmax", lambda a, b: minidl.fmax(a, b), [_r(3, 4), _r(3, 4, seed=1)], 0),
    ("ldexp", lambda a, b: minidl.ldexp(a, b), [_r(3, 4), _idx([[1, 2, 0, -1]] * 3)], 0),
    ("heaviside", lambda a, b: minidl.heaviside(a.detach(), b.detach()), [np.array([-1.0, 0.0, 2.0]),
                                                     np.array([0.5, 0.5, 0.5])], 0),
    ("nextafter", lambda a, b: minidl.nextafter(a, b), [_r(4), _r(4, seed=1)], 0),
    ("asinh-acosh-atanh", lambda a: minidl.asinh(a) + minidl.acosh(a + 3)
     + minidl.atanh(a / 3), [_r(4)], 0),
    ("frexp", lambda a: minidl.frexp(a), [_r(4)], 0),
    ("sgn-signbit", lambda a: (minidl.sgn(a), minidl.signbit(a)), [_r(4)], 0),
    ("gcd-lcm", lambda a, b: (minidl.gcd(a, b), minidl.lcm(a, b)),
     [_idx([4, 6, 9]), _idx([6, 4, 3])], 0),
    ("deg2rad", lambda a: minidl.deg2rad(a) + minidl.rad2deg(a), [_r(4)], 0),
    # statistics.py
    ("quantile", lambda a: minidl.quantile(a, 0.3, dim=1), [_r(3, 6)], 1),
    ("quantile-t", lambda a, q: minidl.quantile(a, q, dim=0), [_r(6, 2), np.array([0.1, 0.9])],
     1),
    ("nanquantile", lambda a: minidl.nanquantile(a, 0.5, dim=1),
     [np.array([[1.0, np.nan, 3.0, 0.5], [2.0, 1.0, np.nan, np.nan]])], 1),
    ("nanmedian", lambda a: minidl.nanmedian(a),
     [np.array([[1.0, np.nan, 3.0, 0.5], [2.0, 1.0, np.nan, np.nan]])], 1),
    ("nanmedian-dim", lambda a: minidl.nanmedian(a, dim=1),
     [np.array([[1.0, np.nan, 3.0, 0.5], [2.0, 1.0, np.nan, np.nan]])], 0),
    ("mode", lambda a: minidl.mode(a, dim=1), [np.array([[1.0, 2.0, 2.0, 3.0],
                                                         [5.0, 5.0, 1.0, 1.0]])], 1),
    ("aminmax", lambda a: minidl.aminmax(a, dim=0), [_r(3, 4)], 0),
    ("cov", lambda a: minidl.cov(a), [_r(3, 6)], 0),
    ("cov-w", lambda a, fw, aw: minidl.cov(a, fweights=fw, aweights=aw),
     [_r(3, 6), _idx([1, 2, 1, 1, 3, 1]), _r(6, lo=0.5)], 3),
    ("corrcoef", lambda a: minidl.corrcoef(a), [_r(3, 6)], 0),
    ("dist", lambda a, b: minidl.dist(a, b, 3), [_r(3, 4), _r(3, 4, seed=1)], 0),
    # structure.py
    ("tensordot", lambda a, b: minidl.tensordot(a, b, dims=([1], [0])),
     [_r(2, 3), _r(3, 4, seed=1)], 0),
    ("kron", lambda a, b: minidl.kron(a, b), [_r(2, 3), _r(2, 2, seed=1)], 0),
    ("diag_embed", lambda a: minidl.diag_embed(a, offset=1), [_r(2, 3)], 0),
    ("diagonal_scatter", lambda a, b: minidl.diagonal_scatter(a, b, 1), [_r(3, 4), _r(3)], 0),
    ("select_scatter", lambda a, b: minidl.select_scatter(a, b, 0, 1), [_r(3, 4), _r(4)], 0),
    ("slice_scatter", lambda a, b: minidl.slice_scatter(a, b, 1, 0, 4, 2),
     [_r(3, 4), _r(3, 2)], 0),
    ("scatter_reduce", lambda a, s: minidl.scatter_reduce(a, 0, minidl.tensor(
        _idx([[0, 1], [0, 2], [1, 1]]), device=a.device), s, "sum"), [_r(3, 2), _r(3, 2)], 1),
    ("scatter_reduce-amax", lambda a, s: minidl.scatter_reduce(a, 0, minidl.tensor(
        _idx([[0, 1], [0, 2], [1, 1]]), device=a.device), s, "amax", include_self=False),
     [_r(3, 2), _r(3, 2, seed=3)], 1),
    ("index_reduce", lambda a, s: minidl.index_reduce(a, 0, minidl.tensor(
        _idx([0, 2, 0]), device=a.device), s, "prod"), [_r(3, 2), _r(3, 2, seed=3)], 9),
    ("masked_scatter", lambda a, s: minidl.masked_scatter(a, minidl.tensor(
        np.array([[True, False], [False, True]]), device=a.device), s), [_r(2, 2), _r(5)], 1),
    ("unique_consecutive", lambda a: minidl.unique_consecutive(
        a, return_inverse=True, return_counts=True), [np.array([1.0, 1.0, 2.0, 2.0, 3.0, 1.0])],
     1),
    ("addr-addbmm", lambda m, a, b, c, d: minidl.addr(m, a, b) + minidl.addbmm(m, c, d),
     [_r(3, 4), _r(3), _r(4), _r(2, 3, 5), _r(2, 5, 4)], 0),
    ("vdot-outer", lambda a, b: minidl.vdot(a, b) * minidl.outer(a, b), [_r(3), _r(3, seed=1)],
     0),
    ("split_with_sizes", lambda a: minidl.split_with_sizes(a, [1, 3], 1), [_r(2, 4)], 0),
    ("sum_to_size", lambda a: a.sum_to_size(1, 4), [_r(3, 4)], 0),
    ("column_stack", lambda a, b: minidl.column_stack((a, b)), [_r(3), _r(3, 2)], 0),
    # shape_ops.py
    ("cummax", lambda a: minidl.cummax(a, 1), [np.array([[1.0, 3.0, 2.0, 3.0, 5.0, 0.0, 7.0],
                                                        [4.0, np.nan, 1.0, 9.0, 2.0, 2.0, 1.0]])],
     0),
    ("cummin", lambda a: minidl.cummin(a, 0), [_r(9, 2)], 0),
    ("median", lambda a: minidl.median(a), [_r(7)], 0),
    ("median-nan", lambda a: minidl.median(a), [np.array([1.0, np.nan, 0.5])], 0),
    ("median-dim", lambda a: minidl.median(a, 1), [np.array([[1.0, np.nan, 0.5], [2.0, 0.0, 1.0]])],
     0),
    ("kthvalue", lambda a: minidl.kthvalue(a, 2, 0), [_r(4, 3)], 0),
    ("repeat_interleave", lambda a: minidl.repeat_interleave(
        a, minidl.tensor(_idx([1, 0, 3]), device=a.device), dim=0), [_r(3, 2)], 1),
    ("repeat_interleave-counts", lambda a: minidl.repeat_interleave(
        minidl.tensor(_idx([2, 0, 1]), device=a.device)) + a.sum().long(), [_r(2)], 1),
    ("unique", lambda a: minidl.unique(a, return_inverse=True, return_counts=True),
     [np.array([2.0, 1.0, 2.0, 3.0])], 2),  # its output size is data: a copy in CuPy too
    ("repeat_interleave-one", lambda a: minidl.repeat_interleave(
        a, minidl.tensor(_idx([2]), device=a.device), dim=1), [_r(2, 3)], 1),
    ("repeat_interleave-int", lambda a: minidl.repeat_interleave(a, 2), [_r(2, 3)], 0),
    # nn.functional
    ("rms_norm", lambda x, w: F.rms_norm(x, (4,), w), [_r(2, 3, 4), _r(4)], 0),
    ("rms_norm-noeps", lambda x: F.rms_norm(x, (3, 4)), [_r(2, 3, 4)], 0),
    ("conv3d", lambda x, w, b: F.conv3d(x, w, b, padding=1, stride=(1, 2, 1)),
     [_r(2, 2, 4, 5, 4), _r(3, 2, 3, 3, 2), _r(3)], 0),
    ("conv_transpose3d", lambda x, w: F.conv_transpose3d(x, w, stride=2, padding=1),
     [_r(1, 2, 3, 3, 2), _r(2, 3, 3, 2, 2)], 0),
    ("max_pool3d", lambda x: F.max_pool3d(x, 2, stride=1, padding=1),
     [np.random.default_rng(0).permutation(64).reshape(1, 1, 4, 4, 4) * 0.1], 0),
    ("max_pool3d-idx", lambda x: F.max_pool3d(x, 2, return_indices=True)[0],
     [np.random.default_rng(0).permutation(64).reshape(1, 1, 4, 4, 4) * 0.1], 0),
    ("avg_pool3d", lambda x: F.avg_pool3d(x, 2, stride=1, padding=1, count_include_pad=False),
     [_r(1, 2, 3, 4, 3)], 0),
    ("avg_pool3d-div", lambda x: F.avg_pool3d(x, 2, divisor_override=3), [_r(1, 2, 4, 4, 4)], 0),
    ("adaptive_avg_pool3d", lambda x: F.adaptive_avg_pool3d(x, (2, 3, 2)), [_r(1, 2, 5, 4, 3)],
     0),
    ("adaptive_max_pool3d", lambda x: F.adaptive_max_pool3d(x, (2, 3, 2)),
     [np.random.default_rng(0).permutation(120).reshape(1, 2, 5, 4, 3) * 0.1], 0),
    ("adaptive_max_pool3d-ties", lambda x: F.adaptive_max_pool3d(x, (3, 2, 4),
                                                                 return_indices=True),
     [np.round(_r(2, 1, 7, 5, 6, seed=4))], 0),
    ("adaptive_max_pool2d-nan", lambda x: F.adaptive_max_pool2d(x, (4, 3), return_indices=True),
     [np.where(_r(1, 2, 9, 7, seed=5) > 1.8, np.nan, np.round(_r(1, 2, 9, 7, seed=6)))], 0),
    ("adaptive_max_pool1d", lambda x: F.adaptive_max_pool1d(x, 4, return_indices=True),
     [np.round(_r(2, 3, 11, seed=7))], 0),
    ("adaptive_max_pool2d-global", lambda x: F.adaptive_max_pool2d(x, 1), [_r(2, 2, 5, 4)], 0),
    ("lp_pool3d", lambda x: F.lp_pool3d(x, 2.0, 2), [_r(1, 2, 4, 4, 4, lo=0.1)], 0),
    ("max_unpool3d", lambda x: F.max_unpool3d(*F.max_pool3d(x, 2, return_indices=True), 2),
     [np.random.default_rng(0).permutation(64).reshape(1, 1, 4, 4, 4) * 0.1], 1),
    ("interpolate-trilinear", lambda x: F.interpolate(x, scale_factor=2, mode="trilinear"),
     [_r(1, 1, 2, 3, 2)], 0),
    ("interpolate-nearest3d", lambda x: F.interpolate(x, size=(3, 4, 5), mode="nearest"),
     [_r(1, 1, 2, 3, 2)], 0),
    ("affine_grid", lambda t: F.affine_grid(t, (2, 1, 3, 4), align_corners=False),
     [_r(2, 2, 3)], 0),
    ("affine_grid3d", lambda t: F.affine_grid(t, (1, 1, 2, 3, 2), align_corners=True),
     [_r(1, 3, 4)], 0),
    ("grid_sample", lambda x, g: F.grid_sample(x, g, align_corners=False),
     [_r(2, 2, 4, 5), _r(2, 3, 3, 2, lo=-1.1, hi=1.1)], 0),
    ("grid_sample-nearest", lambda x, g: F.grid_sample(x, g, mode="nearest",
                                                      padding_mode="border", align_corners=False),
     [_r(1, 2, 4, 5), _r(1, 3, 3, 2, lo=-0.93, hi=0.93)], 0),
    ("grid_sample-reflect", lambda x, g: F.grid_sample(x, g, padding_mode="reflection",
                                                      align_corners=True),
     [_r(1, 2, 4, 5), _r(1, 3, 3, 2, lo=-1.5, hi=1.5)], 0),
    ("grid_sample3d", lambda x, g: F.grid_sample(x, g, align_corners=False),
     [_r(1, 2, 3, 4, 3), _r(1, 2, 2, 2, 3, lo=-1.1, hi=1.1)], 0),
    ("embedding_bag-mean", lambda w: F.embedding_bag(
        minidl.tensor(_idx([1, 2, 4, 5, 4, 3, 2, 9]), device=w.device), w,
        minidl.tensor(_idx([0, 4]), device=w.device), mode="mean"), [_r(10, 3)], 3),
    ("embedding_bag-max", lambda w: F.embedding_bag(
        minidl.tensor(_idx([[1, 2, 4], [4, 3, 2]]), device=w.device), w, mode="max"),
     [_r(10, 3)], 3),
    ("embedding_bag-max-empty-padding", lambda w: F.embedding_bag(
        minidl.tensor(_idx([1, 2, 4, 5, 4, 3, 5]), device=w.device), w,
        minidl.tensor(_idx([0, 2, 2, 5, 6]), device=w.device), mode="max", padding_idx=5),
     [_r(10, 3)], 2),
    ("embedding_bag-psw", lambda w, p: F.embedding_bag(
        minidl.tensor(_idx([1, 2, 4, 5, 4, 3]), device=w.device), w,
        minidl.tensor(_idx([0, 2, 2]), device=w.device), mode="sum", per_sample_weights=p,
        padding_idx=4), [_r(10, 3), _r(6)], 3),
    ("ctc_loss", lambda lp: F.ctc_loss(
        lp.log_softmax(2), minidl.tensor(_idx([[1, 2, 2], [3, 1, 0]]), device=lp.device),
        minidl.tensor(_idx([6, 5]), device=lp.device),
        minidl.tensor(_idx([3, 2]), device=lp.device)), [_r(6, 2, 4)], 6),
    ("rrelu-eval", lambda x: F.rrelu(x, training=False), [_r(3, 4)], 0),
    # the CPU draws torch's numbers (only for the elements <= 0), the GPU CuPy's: compared where
    # no slope applies; the GPU path still draws and runs strictly
    ("rrelu-train", lambda x: F.rrelu(x.abs(), training=True), [_r(3, 4)], 0),
    # the CPU draws torch's numbers, the GPU CuPy's: compared where the noise does not show
    # (a hard sample's rows sum to 1; their gradient is 0)
    ("gumbel_softmax-hard", lambda x: F.gumbel_softmax(x, tau=0.5, hard=True).sum(-1),
     [_r(3, 4)], 0),
    ("glu-mish", lambda x: F.glu(x) + F.mish(x[..., :2]), [_r(3, 4)], 0),
]


@pytest.mark.parametrize("fn,arrays,syncs", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_op_on_strict_fake_gpu_equals_cpu(fake_gpu, fn, arrays, syncs):
    check(fn, arrays, syncs=syncs)


# ---- modules: built alike on each device (same seed), moved, then run strictly -------------
def _module_run(make, x, device, strict):
    minidl.manual_seed(7)
    m = make()
    m.to(device)
    xt = minidl.tensor(x, requires_grad=True, device=device)
    ctx = _fake_gpu.strict(*MODULES) if strict else _no_strict()
    with ctx as counted:
        y = m(xt)
        proj = minidl.tensor(np.random.default_rng(1).standard_normal(y.shape).astype(y.dtype),
                             device=device)
        (y * proj).sum().backward()
    grads = {n: p.grad for n, p in m.named_parameters()}
    return m, y, xt.grad, grads, counted


class _no_strict:
    def __enter__(self):
        return []

    def __exit__(self, *exc):
        return False


def check_module(make, x, syncs=0, rtol=1e-5, atol=1e-6):
    _, y0, gx0, g0, _ = _module_run(make, x, "cpu", False)
    m1, y1, gx1, g1, counted = _module_run(make, x, "cuda", True)
    assert len(counted) <= syncs, f"{len(counted)} host copies: {counted}"
    assert y1.device == "cuda" and gx1.device == "cuda"
    np.testing.assert_allclose(y1.numpy(), y0.numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(gx1.numpy(), gx0.numpy(), rtol=rtol, atol=atol)
    assert g0.keys() == g1.keys()
    for name in g0:
        assert (g0[name] is None) == (g1[name] is None), name
        if g0[name] is not None:
            assert g1[name].device == "cuda", name
            np.testing.assert_allclose(g1[name].numpy(), g0[name].numpy(), rtol=rtol, atol=atol,
                                       err_msg=name)
    for name, t in m1.state_dict().items():
        assert t.device == "cuda", name
    return m1


def _orthogonal(orthogonal_map, shape=(4, 3)):
    def make():
        return nn.utils.parametrizations.orthogonal(nn.Linear(shape[1], shape[0]),
                                                    orthogonal_map=orthogonal_map)
    return make


MODULE_CASES = [
    ("lazy_linear", lambda: nn.LazyLinear(3), _f32(2, 5), 0),
    ("lazy_conv3d", lambda: nn.LazyConv3d(2, 2), _f32(1, 2, 3, 3, 3), 0),
    ("lazy_batchnorm2d", lambda: nn.LazyBatchNorm2d(), _f32(2, 3, 2, 2), 0),
    ("rmsnorm", lambda: nn.RMSNorm(4), _f32(2, 3, 4), 0),
    ("embedding_bag_max", lambda: nn.EmbeddingBag(10, 3, mode="max"),
     _idx([[1, 2, 4], [4, 3, 2]]), 1),
    ("weight_norm", lambda: nn.utils.weight_norm(nn.Linear(3, 4)), _f32(2, 3), 0),
    ("weight_norm_parametrized", lambda: nn.utils.parametrizations.weight_norm(nn.Linear(3, 4)),
     _f32(2, 3), 0),
    ("spectral_norm", lambda: nn.utils.spectral_norm(nn.Linear(3, 4)), _f32(2, 3), 0),
    ("spectral_norm_parametrized",
     lambda: nn.utils.parametrizations.spectral_norm(nn.Linear(3, 4)), _f32(2, 3), 0),
    ("orthogonal_matrix_exp", _orthogonal("matrix_exp", (4, 4)), _f32(2, 4), 2),
    ("orthogonal_cayley", _orthogonal("cayley"), _f32(2, 3), 1),
    ("orthogonal_householder", _orthogonal("householder"), _f32(2, 3), 0),
    # positive inputs: the CPU draws torch's slopes, the GPU CuPy's (see rrelu-train above)
    ("rrelu_module", lambda: nn.RReLU(), np.abs(_f32(3, 4)), 0),
    # the CPU runs the row kernels, the packed self-attention op and the fused LSTM/GRU steps
    # there; the device runs the array code and the CUDA step kernels
    ("encoder_layer_packed_attention",
     lambda: nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), _f32(2, 5, 8),
     0),
    ("layer_norm", lambda: nn.LayerNorm(6), _f32(3, 6), 0),
    ("lstm_fused_steps", lambda: _First(nn.LSTM(4, 5, num_layers=2, bidirectional=True)),
     _f32(3, 2, 4), 0),
    ("gru_fused_steps", lambda: _First(nn.GRU(4, 5)), _f32(3, 2, 4), 0),
    # one launch each way on the device (CUDA's act_forward/act_backward), numba on the CPU
    ("gelu", lambda: nn.GELU(), _f32(3, 7), 0),
    ("gelu_tanh", lambda: nn.GELU(approximate="tanh"), _f32(3, 7), 0),
    ("silu", lambda: nn.SiLU(), _f32(3, 7), 0),
    ("sigmoid", lambda: nn.Sigmoid(), _f32(3, 7), 0),
]


class _First(nn.Module):
    """A recurrent layer's output alone (the states are checked through it)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)[0]


@pytest.mark.filterwarnings("ignore:.*weight_norm.*is deprecated:FutureWarning")
@pytest.mark.parametrize("make,x,syncs", [c[1:] for c in MODULE_CASES],
                         ids=[c[0] for c in MODULE_CASES])
def test_module_on_strict_fake_gpu_equals_cpu(fake_gpu, make, x, syncs):
    if np.asarray(x).dtype.kind in "iu":  # index inputs: check through the module's weight
        def run(device, strict):
            minidl.manual_seed(7)
            m = make().to(device)
            xt = minidl.tensor(x, device=device)
            with (_fake_gpu.strict(*MODULES) if strict else _no_strict()) as counted:
                y = m(xt)
                (y * y).sum().backward()
            return y, m.weight.grad, counted
        y0, g0, _ = run("cpu", False)
        y1, g1, counted = run("cuda", True)
        assert len(counted) <= syncs, counted
        assert y1.device == "cuda" and g1.device == "cuda"
        np.testing.assert_allclose(y1.numpy(), y0.numpy(), rtol=1e-5)
        np.testing.assert_allclose(g1.numpy(), g0.numpy(), rtol=1e-5)
        return
    check_module(make, x, syncs=syncs)


# ---- the rest of the day's device paths ----------------------------------------------------
def test_samplers_draw_the_cpus_values_on_the_device(fake_gpu):
    out = {}
    for device in ("cpu", "cuda"):
        minidl.manual_seed(3)
        t = minidl.zeros(2, 3, device=device)
        ctx = _fake_gpu.strict(*MODULES) if device == "cuda" else _no_strict()
        with ctx as counted:
            draws = [t.clone().exponential_(2.0), t.clone().geometric_(0.3),
                     t.clone().cauchy_(), t.clone().log_normal_(), t.clone().random_(0, 7),
                     minidl.full((2, 3), 0.4, device=device).bernoulli(),
                     minidl.ones(2, 4, device=device).multinomial(2)]
        assert len(counted) <= 2, counted  # multinomial's weights checked on the host
        assert all(d.device == device for d in draws)
        out[device] = [d.numpy() for d in draws]
    for c, g in zip(out["cpu"], out["cuda"]):
        np.testing.assert_array_equal(g, c)


def test_as_tensor_keeps_device_arrays_on_the_device(fake_gpu):
    arr = minidl.randn(3, device="cuda").data
    t = minidl.as_tensor(arr)
    assert t.device == "cuda" and t.data is arr  # shared, as torch.as_tensor
    t64 = minidl.as_tensor(arr, dtype=minidl.float64)
    assert t64.device == "cuda" and t64.dtype == np.float64
    np.testing.assert_allclose(t64.numpy(), arr.get())
    assert minidl.as_tensor(arr, device="cpu").device == "cpu"
    host = np.arange(3.0)
    assert minidl.as_tensor(host).device == "cpu"


def _swa_run(device, strict, multi_avg_fn=None):
    minidl.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).to(device)
    swa = minidl.optim.swa_utils.AveragedModel(model, multi_avg_fn=multi_avg_fn)
    data = [minidl.tensor(_f32(5, 3, seed=s), device=device) for s in range(3)]
    with (_fake_gpu.strict(*MODULES) if strict else _no_strict()) as counted:
        for s in range(3):
            with minidl.no_grad():
                for p in model.parameters():
                    p.mul_(0.9).add_(0.1)
            model(data[s])
            swa.update_parameters(model)
        minidl.optim.swa_utils.update_bn(data, swa)
    return swa, counted


@pytest.mark.parametrize("ema", [False, True], ids=["swa", "ema"])
def test_averaged_model_and_update_bn_on_the_device(fake_gpu, ema):
    fn = minidl.optim.swa_utils.get_ema_multi_avg_fn(0.9) if ema else None
    cpu, _ = _swa_run("cpu", False, fn)
    gpu, counted = _swa_run("cuda", True, fn)
    # the count of updates is read once (twice for SWA's mean) per update, as torch reads it
    assert len(counted) <= 6, counted
    for (name, c), (_, g) in zip(cpu.state_dict().items(), gpu.state_dict().items()):
        # n_averaged is made on the CPU without device=, as torch's
        assert g.device == ("cpu" if name == "n_averaged" else "cuda"), name
        np.testing.assert_allclose(g.numpy(), c.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


def test_checkpoint_recomputes_the_same_dropout_mask_on_the_device(fake_gpu):
    from minidl.utils.checkpoint import checkpoint

    x = minidl.tensor(_f32(4, 6, lo=0.5), requires_grad=True, device="cuda")
    w = minidl.tensor(_f32(6, 6, seed=1), requires_grad=True, device="cuda")

    def block(a):
        return F.dropout(F.relu(a @ w), p=0.5, training=True) * 2.0

    with _fake_gpu.strict(*MODULES) as counted:
        y = checkpoint(block, x, use_reentrant=False)
        y.sum().backward()
    assert not counted, counted
    assert y.device == "cuda" and x.grad.device == "cuda" and w.grad.device == "cuda"
    # the mask of the recompute is the forward's: the gradient is the one of that mask
    kept = (y.numpy() != 0).astype(np.float32)
    want_w = x.numpy().T @ (kept * 2.0 / 0.5)
    np.testing.assert_allclose(w.grad.numpy(), want_w, rtol=1e-5)


def test_a_numba_kernel_given_device_data_is_refused_under_strict(fake_gpu):
    import numba

    @numba.njit
    def total(a):
        return a.sum()

    arr = minidl.ones(3, device="cuda").data
    assert total(arr) == 3.0  # outside strict() the fake still passes for an ndarray
    with _fake_gpu.strict():
        with pytest.raises(TypeError, match="numba"):
            total(arr)


def test_new_tensor_copies_across_devices(fake_gpu):
    gpu = minidl.zeros(2, device="cuda")
    cpu = minidl.zeros(2)
    with _fake_gpu.strict(*MODULES):
        a = cpu.new_tensor(gpu.data + 1)            # device data into a CPU tensor
        b = gpu.new_tensor(gpu.data + 2, device="cpu")
        c = cpu.new_tensor(np.arange(2.0), device="cuda")
        d = gpu.new_tensor([3.0, 4.0])
    assert (a.device, b.device, c.device, d.device) == ("cpu", "cpu", "cuda", "cuda")
    np.testing.assert_array_equal(a.numpy(), [1.0, 1.0])
    np.testing.assert_array_equal(b.numpy(), [2.0, 2.0])
    np.testing.assert_array_equal(c.numpy(), [0.0, 1.0])
    np.testing.assert_array_equal(d.numpy(), [3.0, 4.0])
