"""minidl.nn.utils against torch.nn.utils (torch 2.13): get_total_norm and the gradient clipping
functions, weight_norm and spectral_norm (hooks and parametrizations), fuse_conv_bn_eval /
fuse_linear_bn_eval, skip_init, nn.utils.parametrize (register/remove, caching, orthogonal) and
functional_call (minidl.func / nn.utils.stateless), and these pieces on the fake GPU. The
optim.swa_utils tests are in test_swa_utils.py."""
from __future__ import annotations

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F  # noqa: F401
from minidl.optim import swa_utils
from minidl.testing import gradcheck  # noqa: F401

torch = pytest.importorskip("torch")


# ---- nn.utils: total norm, clipping, weight_norm, spectral_norm, fusion, skip_init ---------
from types import SimpleNamespace  # noqa: E402

from minidl.nn import utils as U  # noqa: E402
from minidl.nn._norm_hooks import SpectralNorm, WeightNorm  # noqa: E402

TU = torch.nn.utils


def _copy_params(m, t):
    m.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})


@pytest.mark.parametrize("norm_type", [2.0, 1, 3.5, "inf", float("inf")])
def test_get_total_norm_and_clip_grads_with_norm_as_torch(norm_type):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in ((3, 4), (5,), (2, 2, 2))]
    got = U.get_total_norm([minidl.tensor(a) for a in arrays], norm_type)
    want = TU.get_total_norm([torch.tensor(a) for a in arrays], float(norm_type))
    assert got.dtype == np.float32 and got.shape == ()
    np.testing.assert_allclose(got.item(), want.item(), rtol=1e-6)
    ps = [nn.Parameter(minidl.zeros(a.shape)) for a in arrays]
    tps = [torch.nn.Parameter(torch.zeros(a.shape)) for a in arrays]
    for p, tp, a in zip(ps, tps, arrays):
        p.grad, tp.grad = minidl.tensor(a), torch.tensor(a)
    U.clip_grads_with_norm_(ps, 1.5, got)
    TU.clip_grads_with_norm_(tps, 1.5, want)
    for p, tp in zip(ps, tps):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-6)
    U.clip_grads_with_norm_(ps, 1e6, 2.0)  # a float total norm; coefficient clamps at 1
    for p, tp in zip(ps, tps):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-6)


def test_get_total_norm_edges():
    assert U.get_total_norm([]).item() == 0.0 == TU.get_total_norm([]).item()
    assert U.get_total_norm(minidl.tensor([3.0, 4.0])).item() == pytest.approx(5.0)
    with pytest.raises(RuntimeError, match="non-finite"):
        U.get_total_norm([minidl.tensor([1.0, float("inf")])], error_if_nonfinite=True)
    with pytest.raises(TypeError, match="not a Tensor"):
        U.get_total_norm([np.ones(2)])


def test_clip_grad_norm_is_a_deprecated_alias():
    p = nn.Parameter(minidl.ones(4))
    p.grad = minidl.ones(4) * 3
    with pytest.warns(FutureWarning, match="clip_grad_norm_"):
        total = U.clip_grad_norm([p], 1.0)
    assert total.item() == pytest.approx(6.0)
    np.testing.assert_allclose(p.grad.numpy(), 0.5, rtol=1e-5)


@pytest.mark.parametrize("dim", [0, 1, None, -1])
def test_weight_norm_gradcheck(dim):
    fn = WeightNorm("weight", dim)
    if dim is not None and dim >= 0:
        fn.dim = dim
    v = minidl.tensor(np.random.default_rng(0).standard_normal((3, 4, 2)), requires_grad=True,
                      dtype=minidl.float64)
    shape = () if fn.dim == -1 else tuple(n if i == dim else 1 for i, n in enumerate(v.shape))
    g = minidl.tensor(np.random.default_rng(1).uniform(0.5, 2, shape), requires_grad=True,
                      dtype=minidl.float64)
    assert gradcheck(lambda g, v: fn.compute_weight(SimpleNamespace(weight_g=g, weight_v=v)),
                     [g, v])


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated")
@pytest.mark.parametrize("make,dim,xshape", [
    (lambda M: M.Linear(3, 4), 0, (2, 3)),
    (lambda M: M.Linear(3, 4), None, (2, 3)),
    (lambda M: M.Conv2d(2, 3, 3), 1, (1, 2, 5, 5)),
])
def test_weight_norm_matches_torch(make, dim, xshape):
    torch.manual_seed(0)
    t = TU.weight_norm(make(torch.nn), dim=dim)
    with pytest.warns(FutureWarning, match="parametrizations.weight_norm"):
        m = U.weight_norm(make(nn), dim=dim)
    assert list(m.state_dict()) == list(t.state_dict())
    assert m.weight_g.shape == tuple(t.weight_g.shape)
    _copy_params(m, t)
    x = np.random.default_rng(0).standard_normal(xshape).astype(np.float32)
    for step in range(2):
        y, ty = m(minidl.tensor(x)), t(torch.tensor(x))
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
        (y * y).sum().backward()
        (ty * ty).sum().backward()
        for name in ("weight_g", "weight_v"):
            np.testing.assert_allclose(getattr(m, name).grad.numpy(),
                                       getattr(t, name).grad.numpy(), rtol=1e-4, atol=1e-5)
        with torch.no_grad():  # move g and v, so the next forward must recompute the weight
            t.weight_g.mul_(1.5)
            t.weight_v.add_(0.1)
        m.weight_g.data[...] *= 1.5
        m.weight_v.data[...] += 0.1
    with pytest.raises(RuntimeError, match="Cannot register two weight_norm hooks"):
        U.weight_norm(m, dim=dim)
    U.remove_weight_norm(m)
    TU.remove_weight_norm(t)
    assert list(m.state_dict()) == list(t.state_dict())
    assert isinstance(m.weight, nn.Parameter)
    np.testing.assert_allclose(m.weight.numpy(), t.weight.detach().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="weight_norm of 'weight' not found"):
        U.remove_weight_norm(m)


def test_spectral_norm_gradcheck():
    rng = np.random.default_rng(0)
    w = minidl.tensor(rng.standard_normal((4, 2, 3)), requires_grad=True, dtype=minidl.float64)
    for dim, (h, wd) in ((0, (4, 6)), (1, (2, 12))):
        fn = SpectralNorm("weight", 1, dim, 1e-12)
        u = minidl.tensor(rng.standard_normal(h), dtype=minidl.float64)
        v = minidl.tensor(rng.standard_normal(wd), dtype=minidl.float64)
        assert gradcheck(lambda w: fn.compute_weight(
            SimpleNamespace(weight_orig=w, weight_u=u, weight_v=v), False), [w])


@pytest.mark.parametrize("make,xshape,kw", [
    (lambda M: M.Linear(3, 4), (2, 3), {}),
    (lambda M: M.Conv2d(2, 3, 3), (1, 2, 5, 5), {"n_power_iterations": 3}),
    (lambda M: M.ConvTranspose2d(2, 3, 2), (1, 2, 3, 3), {"eps": 1e-6}),
])
def test_spectral_norm_matches_torch(make, xshape, kw):
    torch.manual_seed(0)
    t = TU.spectral_norm(make(torch.nn), **kw)
    m = U.spectral_norm(make(nn), **kw)
    assert list(m.state_dict()) == list(t.state_dict())
    assert m.weight_u.shape == tuple(t.weight_u.shape)
    assert m.weight_v.shape == tuple(t.weight_v.shape)
    _copy_params(m, t)  # the same weight and the same random u, v
    x = np.random.default_rng(0).standard_normal(xshape).astype(np.float32)
    for step in range(3):
        y, ty = m(minidl.tensor(x)), t(torch.tensor(x))
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-5)
        (y * y).sum().backward()
        (ty * ty).sum().backward()
        np.testing.assert_allclose(m.weight_orig.grad.numpy(), t.weight_orig.grad.numpy(),
                                   rtol=1e-3, atol=1e-5)
        for name in ("weight_u", "weight_v"):
            np.testing.assert_allclose(getattr(m, name).numpy(), getattr(t, name).numpy(),
                                       rtol=1e-4, atol=1e-5)
    m.eval()
    t.eval()
    u_before = m.weight_u.numpy().copy()
    y, ty = m(minidl.tensor(x)), t(torch.tensor(x))
    np.testing.assert_array_equal(m.weight_u.numpy(), u_before)  # no power iteration in eval
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(RuntimeError, match="Cannot register two spectral_norm hooks"):
        U.spectral_norm(m)
    U.remove_spectral_norm(m)
    TU.remove_spectral_norm(t)
    assert list(m.state_dict()) == list(t.state_dict())
    np.testing.assert_allclose(m.weight.numpy(), t.weight.detach().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="spectral_norm of 'weight' not found"):
        U.remove_spectral_norm(m)
    with pytest.raises(ValueError, match="n_power_iterations=0"):
        U.spectral_norm(nn.Linear(2, 2), n_power_iterations=0)


def _random_bn(m, t, rng):
    n = m.num_features
    vals = {"running_mean": rng.standard_normal(n), "running_var": rng.uniform(0.5, 2, n),
            "weight": rng.uniform(0.5, 2, n), "bias": rng.standard_normal(n)}
    sd = {k: v.astype(np.float32) for k, v in vals.items()}
    sd["num_batches_tracked"] = np.array(3)
    m.load_state_dict(sd)
    t.load_state_dict({k: torch.tensor(v) for k, v in sd.items()})


@pytest.mark.parametrize("kind", ["conv", "conv_nobias", "convT", "linear", "linear_bn1"])
def test_fuse_bn_eval_as_torch(kind):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    if kind.startswith("conv"):
        Tl = {"conv": lambda M: M.Conv2d(2, 3, 3), "conv_nobias": lambda M: M.Conv2d(
            2, 3, 3, bias=False), "convT": lambda M: M.ConvTranspose2d(2, 3, 2)}[kind]
        layer_t, layer_m = Tl(torch.nn), Tl(nn)
        bn_t, bn_m = torch.nn.BatchNorm2d(3), nn.BatchNorm2d(3)
        x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    else:
        n = 1 if kind == "linear_bn1" else 4
        layer_t, layer_m = torch.nn.Linear(3, 4), nn.Linear(3, 4)
        bn_t, bn_m = torch.nn.BatchNorm1d(n), nn.BatchNorm1d(n)
        x = rng.standard_normal((5, 3)).astype(np.float32)
    _copy_params(layer_m, layer_t)
    _random_bn(bn_m, bn_t, rng)
    with pytest.raises(AssertionError, match="Fusion only for eval"):
        (U.fuse_conv_bn_eval(layer_m, bn_m) if kind.startswith("conv")
         else U.fuse_linear_bn_eval(layer_m, bn_m))
    for mod in (layer_t, layer_m, bn_t, bn_m):
        mod.eval()
    if kind.startswith("conv"):
        tr = kind == "convT"
        fm = U.fuse_conv_bn_eval(layer_m, bn_m, transpose=tr)
        ft = TU.fuse_conv_bn_eval(layer_t, bn_t, transpose=tr)
    else:
        fm, ft = U.fuse_linear_bn_eval(layer_m, bn_m), TU.fuse_linear_bn_eval(layer_t, bn_t)
    assert fm is not layer_m and isinstance(fm.bias, nn.Parameter)
    assert list(fm.state_dict()) == list(ft.state_dict())
    for k, v in ft.state_dict().items():
        np.testing.assert_allclose(fm.state_dict()[k].numpy(), v.numpy(), rtol=1e-5, atol=1e-6)
    if kind != "linear_bn1":  # BatchNorm1d(1) does not take a (5, 4) input
        unfused = bn_m(layer_m(minidl.tensor(x)))
        np.testing.assert_allclose(fm(minidl.tensor(x)).numpy(), unfused.numpy(), rtol=1e-4,
                                   atol=1e-5)


def test_fuse_linear_bn_refuses_mismatched_features():
    lin, bn = nn.Linear(3, 4).eval(), nn.BatchNorm1d(3).eval()
    with pytest.raises(AssertionError, match="linear.out_features must equal bn.num_features"):
        U.fuse_linear_bn_eval(lin, bn)


def test_skip_init():
    m = U.skip_init(nn.Linear, 3, 4, bias=False)
    assert isinstance(m, nn.Linear) and m.weight.shape == (4, 3) and m.bias is None
    assert m.weight.device == "cpu" and m.weight.dtype == np.float32
    m = U.skip_init(nn.Conv2d, 2, 3, 3, dtype=minidl.float64)
    assert m.weight.dtype == np.float64 and m.weight.shape == (3, 2, 3, 3)
    with pytest.raises(RuntimeError, match="Expected a Module"):
        U.skip_init(int)
    with pytest.raises(RuntimeError, match="support a 'device' arg"):
        U.skip_init(nn.ReLU)


# ---- nn.utils.parametrize and nn.utils.parametrizations ------------------------------------
from minidl.nn.utils import parametrizations as PM  # noqa: E402
from minidl.nn.utils import parametrize as P  # noqa: E402
from minidl.nn._parametrizations import _Orthogonal, _WeightNorm as _WeightNormP  # noqa: E402

TP, TPM = torch.nn.utils.parametrize, torch.nn.utils.parametrizations


def _symmetric(M):
    class Symmetric(M.Module):
        calls = 0

        def forward(self, X):
            type(self).calls += 1
            return X.triu() + X.triu(1).mT

        def right_inverse(self, A):
            return A.triu()
    return Symmetric


def _scale(M):
    class Scale(M.Module):  # no right_inverse
        def forward(self, X):
            return X * 2.0
    return Scale


def _same_weights(m, t):
    m.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})


def test_register_parametrization_as_torch():
    torch.manual_seed(0)
    t, m = torch.nn.Linear(3, 3), nn.Linear(3, 3)
    _same_weights(m, t)
    original = m.weight
    TP.register_parametrization(t, "weight", _symmetric(torch.nn)())
    P.register_parametrization(m, "weight", _symmetric(nn)())
    assert type(m).__name__ == type(t).__name__ == "ParametrizedLinear"
    assert isinstance(m, nn.Linear) and P.type_before_parametrizations(m) is nn.Linear
    assert list(m.state_dict()) == list(t.state_dict()) == ["bias", "parametrizations.weight.original"]
    assert m.parametrizations.weight.original is original  # the same Parameter object
    assert P.is_parametrized(m) and P.is_parametrized(m, "weight") and not P.is_parametrized(m, "bias")
    np.testing.assert_allclose(m.weight.numpy(), t.weight.detach().numpy(), rtol=1e-6)
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    (m(minidl.tensor(x)) ** 2).sum().backward()
    (t(torch.tensor(x)) ** 2).sum().backward()
    np.testing.assert_allclose(m.parametrizations.weight.original.grad.numpy(),
                               t.parametrizations.weight.original.grad.numpy(), rtol=1e-5)
    # the setter goes through right_inverse
    a = np.random.default_rng(1).standard_normal((3, 3)).astype(np.float32)
    m.weight = minidl.tensor(a)
    t.weight = torch.tensor(a)
    np.testing.assert_allclose(m.parametrizations.weight.original.numpy(),
                               t.parametrizations.weight.original.detach().numpy(), rtol=1e-6)
    # a second parametrization chains after the first
    P.register_parametrization(m, "weight", _scale(nn)())
    TP.register_parametrization(t, "weight", _scale(torch.nn)())
    np.testing.assert_allclose(m.weight.numpy(), t.weight.detach().numpy(), rtol=1e-6)
    with pytest.raises(RuntimeError, match="does not implement right_inverse"):
        m.weight = minidl.tensor(a)
    with pytest.raises(KeyError, match="already exists"):
        m.weight = nn.Parameter(minidl.tensor(a))
    P.remove_parametrizations(m, "weight")
    TP.remove_parametrizations(t, "weight")
    assert type(m) is nn.Linear and m.weight is original
    assert list(m.state_dict()) == list(t.state_dict()) == ["bias", "weight"]
    np.testing.assert_allclose(m.weight.numpy(), t.weight.detach().numpy(), rtol=1e-6)


def test_remove_parametrizations_leave_original_and_errors():
    m, t = nn.Linear(3, 3), torch.nn.Linear(3, 3)
    _same_weights(m, t)
    P.register_parametrization(m, "weight", _symmetric(nn)())
    TP.register_parametrization(t, "weight", _symmetric(torch.nn)())
    P.remove_parametrizations(m, "weight", leave_parametrized=False)
    TP.remove_parametrizations(t, "weight", leave_parametrized=False)
    np.testing.assert_array_equal(m.weight.numpy(), t.weight.detach().numpy())  # right_inverse'd
    with pytest.raises(ValueError, match="does not have a parametrization on weight"):
        P.remove_parametrizations(m, "weight")
    with pytest.raises(ValueError, match="does not have a parameter, a buffer, or a parametrized"):
        P.register_parametrization(m, "nothing", _scale(nn)())

    class Shrink(nn.Module):
        def forward(self, X):
            return X[:2]
    with pytest.raises(ValueError, match="may not change the shape"):
        P.register_parametrization(m, "weight", Shrink())
    P.register_parametrization(m, "weight", Shrink(), unsafe=True)
    assert m.weight.shape == (2, 3)


def test_parametrize_a_buffer_and_cached():
    bn = nn.BatchNorm1d(3)
    sym = _symmetric(nn)
    P.register_parametrization(bn, "running_var", _scale(nn)())
    assert "parametrizations.running_var.original" in bn.state_dict()
    assert not any(n.endswith("running_var.original") for n, _ in bn.named_parameters())
    np.testing.assert_allclose(bn.running_var.numpy(), 2.0)
    m = nn.Linear(3, 3)
    P.register_parametrization(m, "weight", sym())
    sym.calls = 0
    with P.cached():
        w1, w2 = m.weight, m.weight
    assert w1 is w2 and sym.calls == 1
    m.weight
    assert sym.calls == 2  # the cache is gone after the block


def test_weight_norm_parametrization_as_torch():
    torch.manual_seed(0)
    t, m = torch.nn.Conv2d(2, 3, 3), nn.Conv2d(2, 3, 3)
    TPM.weight_norm(t, dim=0)
    PM.weight_norm(m, dim=0)
    keys = ["bias", "parametrizations.weight.original0", "parametrizations.weight.original1"]
    assert list(m.state_dict()) == list(t.state_dict()) == keys
    _same_weights(m, t)
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 5)).astype(np.float32)
    y, ty = m(minidl.tensor(x)), t(torch.tensor(x))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    (y * y).sum().backward()
    (ty * ty).sum().backward()
    for k in ("original0", "original1"):
        np.testing.assert_allclose(getattr(m.parametrizations.weight, k).grad.numpy(),
                                   getattr(t.parametrizations.weight, k).grad.numpy(),
                                   rtol=1e-4, atol=1e-5)
    P.remove_parametrizations(m, "weight")
    TP.remove_parametrizations(t, "weight")
    np.testing.assert_allclose(m.weight.numpy(), t.weight.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_weight_norm_parametrization_gradcheck():
    v = minidl.tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True,
                      dtype=minidl.float64)
    for dim, gshape in ((0, (3, 1)), (1, (1, 4)), (None, ())):
        g = minidl.tensor(np.random.default_rng(1).uniform(0.5, 2, gshape), requires_grad=True,
                          dtype=minidl.float64)
        assert gradcheck(_WeightNormP(dim), [g, v])


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated")
def test_weight_norm_parametrization_loads_the_old_keys():
    old = U.weight_norm(nn.Linear(3, 2))
    new = PM.weight_norm(nn.Linear(3, 2))
    new.load_state_dict(old.state_dict())
    np.testing.assert_allclose(new.weight.numpy(), old.weight.numpy(), rtol=1e-6)


@pytest.mark.parametrize("make,xshape", [
    (lambda M: M.Linear(3, 4), (2, 3)),
    (lambda M: M.ConvTranspose2d(2, 3, 2), (1, 2, 3, 3)),
])
def test_spectral_norm_parametrization_as_torch(make, xshape):
    torch.manual_seed(0)
    t, m = TPM.spectral_norm(make(torch.nn)), PM.spectral_norm(make(nn))
    keys = list(t.state_dict())
    assert list(m.state_dict()) == keys
    assert "parametrizations.weight.0._u" in keys
    _same_weights(m, t)
    x = np.random.default_rng(0).standard_normal(xshape).astype(np.float32)
    for _ in range(3):
        y, ty = m(minidl.tensor(x)), t(torch.tensor(x))
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-5)
        (y * y).sum().backward()
        (ty * ty).sum().backward()
        np.testing.assert_allclose(m.parametrizations.weight.original.grad.numpy(),
                                   t.parametrizations.weight.original.grad.numpy(),
                                   rtol=1e-3, atol=1e-5)
    for k, v in t.state_dict().items():
        np.testing.assert_allclose(m.state_dict()[k].numpy(), v.numpy(), rtol=1e-4, atol=1e-5)
    m.eval()
    u = m.parametrizations.weight[0]._u.numpy().copy()
    m(minidl.tensor(x))
    np.testing.assert_array_equal(m.parametrizations.weight[0]._u.numpy(), u)
    # the 15 power iterations at registration: sigma close to the top singular value
    m2 = PM.spectral_norm(nn.Linear(6, 5))
    s = np.linalg.svd(m2.weight.numpy(), compute_uv=False)
    assert abs(s[0] - 1) < 0.05


@pytest.mark.parametrize("shape,orthogonal_map", [
    ((4, 4), None), ((5, 3), None), ((3, 5), None), ((4, 4), "cayley"), ((5, 3), "matrix_exp"),
    ((3, 5), "cayley"), ((4, 4), "householder"),
])
def test_orthogonal_as_torch(shape, orthogonal_map):
    torch.manual_seed(0)
    t, m = torch.nn.Linear(shape[1], shape[0]), nn.Linear(shape[1], shape[0])
    _same_weights(m, t)
    TPM.orthogonal(t, orthogonal_map=orthogonal_map)
    PM.orthogonal(m, orthogonal_map=orthogonal_map)
    want_map = t.parametrizations.weight[0].orthogonal_map.name
    assert m.parametrizations.weight[0].orthogonal_map == want_map
    assert list(m.state_dict()) == list(t.state_dict())
    k = min(shape)
    base_t = t.parametrizations.weight[0].base.numpy()
    base_m = m.parametrizations.weight[0].base.numpy()
    np.testing.assert_allclose(base_m[:, :k], base_t[:, :k], atol=1e-5)  # QR of the weight
    # move the original away from -Id (the same amounts in both): the map itself is compared
    _same_weights(m, t)
    d = np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 0.3
    np.fill_diagonal(d, 0)  # householder reads the diagonal's sign only (as ints, as torch)
    m.parametrizations.weight.original.data[...] += d
    with torch.no_grad():
        t.parametrizations.weight.original += torch.tensor(d)
    w, tw = m.weight.numpy(), t.weight.detach().numpy()
    np.testing.assert_allclose(w, tw, atol=1e-5)
    wk = w if shape[0] >= shape[1] else w.T
    np.testing.assert_allclose(wk.T @ wk, np.eye(k), atol=1e-5)  # orthonormal columns/rows
    x = np.random.default_rng(1).standard_normal((2, shape[1])).astype(np.float32)
    (m(minidl.tensor(x)) ** 2).sum().backward()
    (t(torch.tensor(x)) ** 2).sum().backward()
    np.testing.assert_allclose(m.parametrizations.weight.original.grad.numpy(),
                               t.parametrizations.weight.original.grad.numpy(), atol=2e-5)


@pytest.mark.parametrize("orthogonal_map,shape", [("matrix_exp", (3, 3)), ("cayley", (4, 2)),
                                                  ("householder", (4, 3)),
                                                  ("householder", (2, 3, 2))])
def test_orthogonal_maps_gradcheck(orthogonal_map, shape):
    x = minidl.tensor(np.random.default_rng(0).standard_normal(shape) * 0.5,
                      dtype=minidl.float64, requires_grad=True)
    orth = _Orthogonal(x, orthogonal_map, use_trivialization=False)
    assert gradcheck(orth, [x])


def test_orthogonal_assignment_and_errors():
    m = PM.orthogonal(nn.Linear(4, 4))
    q = np.linalg.qr(np.random.default_rng(0).standard_normal((4, 4)))[0].astype(np.float32)
    m.weight = minidl.tensor(q)
    np.testing.assert_allclose(m.weight.numpy(), q, atol=1e-5)
    h = PM.orthogonal(nn.Linear(3, 5), use_trivialization=False)
    q53 = np.linalg.qr(np.random.default_rng(1).standard_normal((5, 3)))[0].astype(np.float32)
    h.weight = minidl.tensor(q53)
    w = h.weight.numpy()
    np.testing.assert_allclose(w.T @ w, np.eye(3), atol=1e-5)
    with pytest.raises(ValueError, match="Expected a matrix or batch of matrices"):
        PM.orthogonal(nn.Linear(3, 3), name="bias")
    with pytest.raises(ValueError, match="orthogonal_map has to be one of"):
        PM.orthogonal(nn.Linear(3, 3), orthogonal_map="qr")
    e = PM.orthogonal(nn.Linear(3, 3), use_trivialization=False)
    with pytest.raises(NotImplementedError, match="use_trivialization=False"):
        e.weight = minidl.tensor(q[:3, :3])


# ---- functional_call (minidl.func / nn.utils.stateless) ------------------------------------
def _seq_pair():
    torch.manual_seed(0)
    t = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    _same_weights(m, t)
    return m, t


def test_functional_call_gradients_reach_the_substitutes():
    m, t = _seq_pair()
    rng = np.random.default_rng(0)
    subs = {"0.weight": rng.standard_normal((4, 3)), "2.bias": rng.standard_normal(2),
            "1.running_mean": rng.standard_normal(4)}
    subs = {k: v.astype(np.float32) for k, v in subs.items()}
    ms = {k: minidl.tensor(v, requires_grad=k != "1.running_mean") for k, v in subs.items()}
    ts = {k: torch.tensor(v, requires_grad=k != "1.running_mean") for k, v in subs.items()}
    x = rng.standard_normal((5, 3)).astype(np.float32)
    m.eval()
    t.eval()
    before = {k: v.numpy().copy() for k, v in m.state_dict().items()}
    y = minidl.func.functional_call(m, [{k: ms[k] for k in ("0.weight",)},
                                        {k: ms[k] for k in ("2.bias", "1.running_mean")}],
                                    (minidl.tensor(x),))
    ty = torch.func.functional_call(t, ts, (torch.tensor(x),))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    (y * y).sum().backward()
    (ty * ty).sum().backward()
    for k in ("0.weight", "2.bias"):
        np.testing.assert_allclose(ms[k].grad.numpy(), ts[k].grad.numpy(), rtol=1e-4, atol=1e-5)
    assert m[0].weight.grad is None and m[2].bias.grad is None  # the module's own got none
    assert m[2].weight.grad is not None  # the ones not substituted still get theirs
    assert isinstance(m[0].weight, nn.Parameter)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])  # restored


def test_functional_call_restores_after_an_error_and_takes_kwargs():
    class Add(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(minidl.ones(2))

        def forward(self, x, *, scale=1.0, fail=False):
            if fail:
                raise RuntimeError("boom")
            return self.w * x * scale
    m = Add()
    w = m.w
    with pytest.raises(RuntimeError, match="boom"):
        minidl.func.functional_call(m, {"w": minidl.zeros(2)}, minidl.ones(2), {"fail": True})
    assert m.w is w
    y = minidl.func.functional_call(m, {"w": minidl.tensor([2.0, 3.0])}, minidl.ones(2),
                                    {"scale": 2.0})
    np.testing.assert_allclose(y.numpy(), [4.0, 6.0])
    # a name the module does not have is set for the call only
    minidl.func.functional_call(m, {"extra": minidl.ones(1)}, (minidl.ones(2),))
    assert not hasattr(m, "extra")


def test_functional_call_errors_and_ties_as_torch():
    m, t = _seq_pair()
    x = minidl.randn(2, 3)
    with pytest.raises(ValueError, match="appeared in multiple dictionaries"):
        minidl.func.functional_call(m, [{"0.bias": minidl.zeros(4)}, {"0.bias": minidl.zeros(4)}], x)
    with pytest.raises(RuntimeError, match="Missing key"):
        minidl.func.functional_call(m, {"0.bias": minidl.zeros(4)}, x, strict=True)
    full = {k: v for k, v in m.state_dict().items()}
    with pytest.raises(RuntimeError, match="Unexpected key\\(s\\): 'foo'"):
        minidl.func.functional_call(m, {**full, "foo": minidl.ones(1)}, x, strict=True)
    with pytest.raises(AttributeError, match="no attribute `a`"):
        minidl.func.functional_call(m, {"a.b": minidl.ones(1)}, x)
    # tied weights
    s = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    s[1].weight = s[0].weight
    ts = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    ts[1].weight = ts[0].weight
    _same_weights(s, ts)
    ts[1].bias.data = torch.tensor(s[1].bias.numpy())
    xx = np.random.default_rng(0).standard_normal((1, 2)).astype(np.float32)
    z = np.zeros((2, 2), np.float32)
    for tie in (True, False):
        got = minidl.func.functional_call(s, {"0.weight": minidl.tensor(z)}, minidl.tensor(xx),
                                          tie_weights=tie)
        want = torch.func.functional_call(ts, {"0.weight": torch.tensor(z)}, torch.tensor(xx),
                                          tie_weights=tie)
        np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="which are tied"):
        minidl.func.functional_call(s, {"0.weight": minidl.tensor(z), "1.weight": minidl.ones(2, 2)},
                                    minidl.tensor(xx))


def test_stateless_functional_call_is_deprecated():
    from minidl.nn.utils.stateless import functional_call
    m = nn.Linear(2, 2)
    with pytest.warns(FutureWarning, match="torch.func.functional_call"):
        y = functional_call(m, {"weight": minidl.zeros(2, 2)}, minidl.ones(1, 2))
    np.testing.assert_allclose(y.numpy(), m.bias.numpy()[None], rtol=1e-6)


# ---- on the fake GPU -----------------------------------------------------------------------
def test_new_pieces_on_fake_gpu(monkeypatch, host_kernels):
    import _fake_gpu
    _fake_gpu.install(monkeypatch, host_kernels)
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    avg = swa_utils.AveragedModel(m, device="cuda",
                                  multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.9))
    avg.update_parameters(m)
    avg.update_parameters(m)
    assert avg.n_averaged.device == "cuda" and avg.module[0].weight.device == "cuda"
    np.testing.assert_allclose(avg.module[0].weight.numpy(), m[0].weight.numpy(), rtol=1e-6)
    m.to("cuda")
    PM.weight_norm(m[0])
    PM.spectral_norm(m[2])
    x = minidl.tensor(np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32),
                      device="cuda")
    y = m(x)
    assert y.device == "cuda"
    y.sum().backward()
    assert m[0].parametrizations.weight.original0.grad.device == "cuda"
    w = minidl.ones(2, 4, device="cuda", requires_grad=True)
    z = minidl.func.functional_call(m[2], {"parametrizations.weight.original": w},
                                    (minidl.ones(5, 4, device="cuda"),))
    z.sum().backward()
    assert w.grad.device == "cuda"
    g = F.gumbel_softmax(x, hard=True)
    assert g.device == "cuda" and np.all(g.numpy().sum(-1) == 1)
    r = F.rrelu(x, training=True)
    assert r.device == "cuda"
    assert U.get_total_norm([x, y]).device == "cuda"
