"""Complex tensors: dtypes and promotion, creation, printing, the complex ops (real, imag,
conj, angle, abs, complex, polar, view_as_real/complex) and autograd under PyTorch's
convention (the gradient of a real loss L at z is dL/dRe z + i dL/dIm z), checked by finite
differences on each part (gradcheck) and against torch 2.13."""
import warnings

import numpy as np
import pytest

import minidl
from minidl.testing import gradcheck, gradgradcheck

c64, c128 = minidl.complex64, minidl.complex128


def _z(*shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex128)


def _leaf(a):
    return minidl.tensor(a, dtype=a.dtype, requires_grad=True)


# ---- dtypes and promotion ---------------------------------------------------------------------
def test_dtype_names_and_queries():
    assert minidl.cfloat == c64 and minidl.cdouble == c128
    z = minidl.tensor([1 + 2j, 3 - 4j])
    assert z.dtype == c64 and z.is_complex() and minidl.is_complex(z)
    assert not minidl.ones(2).is_complex() and not minidl.is_floating_point(z)
    assert minidl.ones(2).cfloat().dtype == c64 and minidl.ones(2).cdouble().dtype == c128
    assert z.type() == "minidl.ComplexFloatTensor"
    assert not z.is_conj() and not minidl.is_conj(z) and z.resolve_conj() is z


@pytest.mark.parametrize("a", ["bool", "int64", "float16", "float32", "float64", "complex64",
                               "complex128"])
def test_promotion_as_torch(a):
    names = ["bool", "int64", "float16", "float32", "float64", "complex64", "complex128"]
    # torch 2.13's promote_types and result_type, written out (complex32 is complex64 here)
    pairs = {"float64": {"complex64": "complex128"}, "float16": {}, "float32": {},
             "complex64": {"float64": "complex128", "complex128": "complex128"}}
    for b in names:
        got = minidl.promote_types(getattr(minidl, a) if a != "bool" else np.bool_,
                                   getattr(minidl, b) if b != "bool" else np.bool_)
        if "complex" in a or "complex" in b:
            want = pairs.get(a, {}).get(b) or pairs.get(b, {}).get(a)
            if want is None:
                want = max((n for n in (a, b) if "complex" in n), key=len)
                want = "complex128" if "complex128" in (a, b) else want
            assert got == np.dtype(want), (a, b, got)
    x = minidl.ones(2, dtype=a if a != "bool" else np.bool_)
    py = (x + 1j).dtype
    assert py == (c128 if a in ("float64", "complex128") else c64)
    zero_d = (x + minidl.tensor(1j, dtype=c128)).dtype  # a 0-d complex128 beside dims
    assert zero_d == (c64 if a in ("float16", "float32", "complex64") else c128)


def test_result_type_and_mixed_arithmetic():
    f = minidl.ones(3)
    z = minidl.tensor([1j, 2, 3 + 1j])
    assert minidl.result_type(f, 2j) == c64
    assert (f * z).dtype == c64 and (minidl.ones(3, dtype=minidl.float64) * z).dtype == c128
    assert minidl.arange(3) * 1j is not None and (minidl.arange(3) * 1j).dtype == c64
    np.testing.assert_allclose((f + 2j).numpy(), np.ones(3) + 2j)


# ---- creation ---------------------------------------------------------------------------------
def test_creation():
    assert minidl.zeros(2, dtype=c64).dtype == c64 and minidl.ones(2, 3, dtype=c128).shape == (2, 3)
    assert minidl.full((2,), 1 + 1j).dtype == c64
    assert minidl.tensor(1 + 2j).item() == 1 + 2j
    minidl.manual_seed(0)
    r = minidl.randn(200000, dtype=c64).numpy()
    assert r.dtype == np.complex64
    assert abs(np.var(r) - 1) < 0.02 and abs(np.var(r.real) - 0.5) < 0.02  # 1, half per part
    u = minidl.rand(1000, dtype=c128).numpy()
    assert u.real.min() >= 0 and u.imag.max() < 1 and u.imag.std() > 0.2
    assert minidl.randn_like(minidl.zeros(3, dtype=c64)).dtype == c64


def test_complex_and_polar():
    re, im = minidl.tensor([1.0, -2.0]), minidl.tensor([0.5, 3.0])
    z = minidl.complex(re, im)
    assert z.dtype == c64
    np.testing.assert_allclose(z.numpy(), [1 + 0.5j, -2 + 3j])
    p = minidl.polar(minidl.tensor([2.0]), minidl.tensor([np.pi / 2]))
    np.testing.assert_allclose(p.numpy(), [2j], atol=1e-6)
    with pytest.raises(TypeError, match="float32 but got scalar type float64"):
        minidl.complex(re, im.double())
    with pytest.raises(TypeError, match="int64"):
        minidl.complex(minidl.arange(2), minidl.arange(2))


def test_real_imag_are_views():
    z = minidl.tensor([1 + 2j, 3 - 4j])
    r, i = z.real, z.imag
    assert r.dtype == minidl.float32 and i.dtype == minidl.float32
    r[0] = 10.0
    i[1] = 7.0
    np.testing.assert_allclose(z.numpy(), [10 + 2j, 3 + 7j])
    f = minidl.ones(2)
    assert f.real is f
    with pytest.raises(RuntimeError, match="imag is not implemented for tensors with non-complex"):
        f.imag
    v = minidl.view_as_real(z)
    assert v.shape == (2, 2)
    v[0, 1] = -1.0
    assert z.numpy()[0] == 10 - 1j
    w = minidl.view_as_complex(minidl.tensor([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_allclose(w.numpy(), [1 + 2j, 3 + 4j])
    with pytest.raises(ValueError, match="last dimension of size 2"):
        minidl.view_as_complex(minidl.ones(3))
    with pytest.raises(RuntimeError, match="only supported for complex"):
        minidl.view_as_real(minidl.ones(3))


def test_casting_to_real_warns_and_keeps_the_real_part():
    z = minidl.tensor([1.5 + 2j, -3 + 0j])
    with pytest.warns(UserWarning, match="discards the imaginary part"):
        f = z.float()
    np.testing.assert_allclose(f.numpy(), [1.5, -3])
    with pytest.warns(UserWarning, match="discards the imaginary part"):
        assert z.long().tolist() == [1, -3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert z.bool().tolist() == [True, True]


@pytest.mark.parametrize("op", [
    lambda z: z < z, lambda z: z >= 0, lambda z: z.max(), lambda z: z.min(0), lambda z: z.amax(),
    lambda z: z.argmax(), lambda z: minidl.sort(z), lambda z: z.topk(1),
    lambda z: z.clamp(0, 1), lambda z: minidl.maximum(z, z), lambda z: minidl.relu(z),
    lambda z: z.floor(), lambda z: z.sign(),
])
def test_ordering_and_unsupported_ops_refuse_complex(op):
    z = minidl.tensor([1 + 2j, 3j])
    with pytest.raises(RuntimeError, match="complex"):
        op(z)


def test_ops_without_a_complex_gradient_refuse_to_record_one():
    z = _leaf(_z(3, 2))
    index = minidl.tensor([2, 0])
    with pytest.raises(RuntimeError, match="Embedding: the gradient of this op is not "
                                           "implemented for complex tensors"):
        minidl.nn.functional.embedding(index, z)
    with minidl.no_grad():  # the forward alone is fine
        np.testing.assert_allclose(minidl.nn.functional.embedding(index, z).numpy(),
                                   z.numpy()[[2, 0]])
    z = _leaf(_z(3))
    assert gradcheck(lambda z: minidl.cumsum(z, 0), [z])  # a complex gradient of its own


# ---- printing ---------------------------------------------------------------------------------
@pytest.mark.parametrize("values, want", [
    ([1 + 2j, 3 - 4.5j], "tensor([1.+2.0000j, 3.-4.5000j])"),
    ([[1e-5 + 2j, 3e5 - 4.5j]], "tensor([[1.0000e-05+2.0000j, 3.0000e+05-4.5000j]])"),
    (1 + 2j, "tensor(1.+2.j)"),
    ([0j, 1j], "tensor([0.+0.j, 0.+1.j])"),
    ([1.5 - 0j, -2.25 + 3j], "tensor([ 1.5000+0.j, -2.2500+3.j])"),
    ([complex("nan+1j"), complex("inf-2j")], "tensor([nan+1.j, inf-2.j])"),
])
def test_printing_as_torch(values, want):
    assert repr(minidl.tensor(values)) == want


def test_printing_dtype_suffixes():
    assert repr(minidl.tensor([1 + 2j], dtype=c128)) == \
        "tensor([1.+2.j], dtype=minidl.complex128)"
    assert repr(minidl.zeros(0, dtype=c64)) == "tensor([], dtype=minidl.complex64)"


def test_printing_matches_torch_on_larger_tensors():
    torch = pytest.importorskip("torch")
    for a in [np.arange(2000).astype(np.complex64) * (1 + 0.5j),
              (np.arange(24).reshape(2, 3, 4) * (0.1 - 0.37j)).astype(np.complex64),
              _z(3, 5).astype(np.complex64) * 1e3]:
        want = repr(torch.tensor(a)).replace("torch.", "minidl.")
        assert repr(minidl.tensor(a)) == want


# ---- gradients: finite differences on each part -----------------------------------------------
UNARY = {
    "neg": lambda z: -z, "exp": lambda z: z.exp(), "log": lambda z: z.log(),
    "sqrt": lambda z: z.sqrt(), "abs": lambda z: z.abs(), "angle": lambda z: z.angle(),
    "real": lambda z: z.real * 1.0, "imag": lambda z: z.imag * 1.0, "conj": lambda z: z.conj(),
    "pow2": lambda z: z ** 2, "pow_half": lambda z: z ** 0.5, "pow_neg": lambda z: z ** -1.5,
    "pow_complex": lambda z: z ** (0.5 + 1j),
    "tanh": lambda z: z.tanh(), "sin": lambda z: minidl.sin(z), "cos": lambda z: minidl.cos(z),
    "sum": lambda z: z.sum(0), "mean": lambda z: z.mean(), "square": lambda z: minidl.square(z),
    "reciprocal": lambda z: minidl.reciprocal(z), "sgn": lambda z: minidl.sgn(z),
    "sigmoid": lambda z: minidl.sigmoid(z) + minidl.nn.functional.sigmoid(z),
    "view_as_real": lambda z: minidl.view_as_real(z),
    "shape": lambda z: minidl.cat([z.reshape(-1), z.t()[1:, 0], z[0]]).transpose(0, 0) * 1,
    "stack": lambda z: minidl.stack([z, z * 2j]),
    "masked_fill": lambda z: z.masked_fill(minidl.tensor([[True, False, True]] * 2), 1j),
    "flip_roll": lambda z: z.flip(0).roll(1, 1)[:, [0, 2, 2]],
    "scalar_mix": lambda z: (z * 2.5 + (1 - 2j)) / (3 + 1j) - 1j * z,
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_gradcheck_unary(name):
    assert gradcheck(UNARY[name], [_leaf(_z(2, 3) + 0.3)])


@pytest.mark.parametrize("name, fn", [
    ("add", lambda a, b: a + b), ("sub", lambda a, b: a - b), ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / b), ("matmul", lambda a, b: a @ b.t()),
    ("matvec", lambda a, b: a @ b[0]), ("dot", lambda a, b: a[0] @ b[1]),
    ("einsum", lambda a, b: minidl.einsum("ij,kj->ik", a, b)),
])
def test_gradcheck_binary(name, fn):
    assert gradcheck(fn, [_leaf(_z(2, 3, seed=1)), _leaf(_z(2, 3, seed=2))])


def test_gradcheck_real_leaves_flowing_into_complex():
    rng = np.random.default_rng(3)
    a = minidl.tensor(rng.standard_normal((2, 3)), requires_grad=True, dtype=np.float64)
    b = minidl.tensor(rng.standard_normal((2, 3)), requires_grad=True, dtype=np.float64)
    assert gradcheck(lambda a, b: minidl.complex(a, b).abs(), [a, b])
    assert gradcheck(lambda a, b: minidl.polar(a, b), [a, b])
    assert gradcheck(lambda a, b: (a * minidl.complex(b, a)).exp(), [a, b])
    pairs = minidl.tensor(rng.standard_normal((3, 2)), requires_grad=True, dtype=np.float64)
    assert gradcheck(lambda p: minidl.view_as_complex(p) * (1 + 2j), [pairs])
    z = _leaf(_z(3))
    assert gradcheck(lambda a, z: a[0] * z, [a, z])
    assert gradcheck(lambda a: (a.abs() + 0.5) ** (0.5 + 1j), [a])
    assert gradgradcheck(lambda a: (a.abs() + 0.5) ** (0.5 + 1j), [a])
    assert (minidl.arange(3) ** 1j).dtype == c64


def test_gradgradcheck_complex_mul_and_exp():
    assert gradgradcheck(lambda a, b: (a * b).exp() / b, [_leaf(_z(3, seed=4)),
                                                          _leaf(_z(3, seed=5) + 2)])


# ---- parity with torch 2.13 -------------------------------------------------------------------
PARITY = [
    lambda m, z, w, a: (z * w + z / (w + 2)).abs().sum(),
    lambda m, z, w, a: ((z.exp() + (w * w).log()).sqrt() ** 1.5).angle().sum(),
    lambda m, z, w, a: (z @ w.transpose(0, 1)).real.sum() + (z.conj() * w).imag.mean(),
    lambda m, z, w, a: m.view_as_real(z * m.complex(a, a * 2)).pow(2).sum(),
    lambda m, z, w, a: m.complex(a, a.exp()).abs().sum() + m.polar(a.abs(), a).real.sum(),
    lambda m, z, w, a: (m.cat([z, w]) * m.stack([z, w]).sum(0).repeat(2, 1)).abs().sum(),
    lambda m, z, w, a: (m.sin(z) * m.cos(w) + m.tanh(z)).abs().sum() + m.sgn(z).real.sum()
    + m.sigmoid(w).imag.sum(),
    lambda m, z, w, a: m.view_as_complex(m.view_as_real(z) * 2).abs().sum()
    + (z.sum(1) * a.sum()).abs().sum(),
    lambda m, z, w, a: (z ** (0.5 + 1j)).abs().sum() + ((a.abs() + 1) ** (1 - 0.5j)).imag.sum()
    + (m.fft.fft(z, dim=0) * w).angle().sum(),
]


@pytest.mark.parametrize("k", range(len(PARITY)))
def test_parity_with_torch(k):
    torch = pytest.importorskip("torch")
    z0, w0 = _z(2, 3, seed=7), _z(2, 3, seed=8)
    a0 = np.random.default_rng(9).standard_normal((2, 3))
    ours = [minidl.tensor(v, dtype=v.dtype, requires_grad=True) for v in (z0, w0, a0)]
    theirs = [torch.tensor(v, requires_grad=True) for v in (z0, w0, a0)]
    out = PARITY[k](minidl, *ours)
    ref = PARITY[k](torch, *theirs)
    out.backward()
    ref.backward()
    np.testing.assert_allclose(out.item(), ref.item(), rtol=1e-10)
    for x, t in zip(ours, theirs):
        if t.grad is None:
            assert x.grad is None
            continue
        assert x.grad.dtype == np.dtype(str(t.grad.dtype).replace("torch.", ""))
        np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_parity_complex64_and_grad_dtype():
    torch = pytest.importorskip("torch")
    z0 = _z(4).astype(np.complex64)
    z = minidl.tensor(z0, requires_grad=True)
    t = torch.tensor(z0, requires_grad=True)
    (z * z.conj() * 2).real.sum().backward()
    (t * t.conj() * 2).real.sum().backward()
    assert z.grad.dtype == c64
    np.testing.assert_allclose(z.grad.numpy(), t.grad.numpy(), rtol=1e-5)


# ---- more ops on complex tensors ---------------------------------------------------------------
def test_reductions_and_products_match_torch():
    torch = pytest.importorskip("torch")
    a, b = _z(3, 4, seed=11), _z(3, 4, seed=12)
    cases = [
        lambda m, z, w: z.var(), lambda m, z, w: z.std(dim=0),
        lambda m, z, w: z.var(1, correction=0, keepdim=True), lambda m, z, w: z.norm(),
        lambda m, z, w: m.linalg.vector_norm(z, 1, dim=1), lambda m, z, w: m.vdot(z[0], w[0]),
        lambda m, z, w: m.dot(z[0], w[0]), lambda m, z, w: m.mm(z, w.t()),
        lambda m, z, w: m.lerp(z, w, 0.3), lambda m, z, w: m.addcmul(z, z, w, value=0.5),
        lambda m, z, w: m.outer(z[0], w[1]), lambda m, z, w: m.einsum("ij,ij->i", z, w),
        lambda m, z, w: m.where(z.abs() > 1, z, w), lambda m, z, w: m.trace(z[:, :3]),
        lambda m, z, w: z.sum(1).prod() if m is torch else z.sum(1)[0] * z.sum(1)[1]
        * z.sum(1)[2],
    ]
    for k, f in enumerate(cases):
        ours = [minidl.tensor(v, dtype=v.dtype, requires_grad=True) for v in (a, b)]
        theirs = [torch.tensor(v, requires_grad=True) for v in (a, b)]
        y, t = f(minidl, *ours), f(torch, *theirs)
        np.testing.assert_allclose(y.numpy(), t.detach().numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=f"case {k}")
        proj = _z(*y.shape, seed=13)
        if y.dtype.kind == "c":
            (y * minidl.tensor(proj.conj(), dtype=proj.dtype)).real.sum().backward()
            (t * torch.tensor(proj.conj())).real.sum().backward()
        else:
            (y * minidl.tensor(proj.real, dtype=np.float64)).sum().backward()
            (t * torch.tensor(proj.real)).sum().backward()
        for x, tt in zip(ours, theirs):
            if tt.grad is None:
                assert x.grad is None
            else:
                np.testing.assert_allclose(x.grad.numpy(), tt.grad.numpy(), rtol=1e-9,
                                           atol=1e-12, err_msg=f"case {k}")


@pytest.mark.parametrize("op", [
    lambda z: minidl.atan2(z, z), lambda z: minidl.hypot(z, z), lambda z: minidl.logaddexp(z, z),
    lambda z: minidl.xlogy(z, z), lambda z: minidl.remainder(z, 2), lambda z: z // 2,
    lambda z: minidl.fmod(z, 2), lambda z: minidl.copysign(z, z), lambda z: minidl.cov(z),
    lambda z: minidl.median(z), lambda z: minidl.unique(z), lambda z: minidl.quantile(z, 0.5),
    lambda z: minidl.kthvalue(z, 1), lambda z: minidl.heaviside(z, z),
    lambda z: minidl.erf(z),  # (float_power: complex128, as torch's; logsumexp is written)
    lambda z: minidl.argsort(z),  # (convolutions are written for complex)
    lambda z: minidl.nn.functional.cross_entropy(z.reshape(1, 2), minidl.tensor([0])),
    lambda z: minidl.nn.functional.mse_loss(z, z),
    lambda z: minidl.nn.functional.batch_norm(z.reshape(1, 2), None, None, training=True),
])
def test_ops_not_written_for_complex_refuse_it_by_name(op):
    z = minidl.tensor([1 + 2j, 3j])
    with pytest.raises(TypeError, match="max_pool2d: .*got complex64"):  # a floating-point one
        minidl.nn.functional.max_pool2d(z.reshape(1, 1, 1, 2), (1, 2))
    with pytest.raises(RuntimeError, match="complex"):
        op(z)


def test_default_dtype_float64_makes_complex128():
    previous = minidl.get_default_dtype()
    minidl.set_default_dtype(minidl.float64)
    try:
        z = minidl.tensor([1 + 1j])
        assert z.dtype == c128 and (minidl.ones(1) * 1j).dtype == c128
        assert repr(z) == "tensor([1.+1.j])"
        assert repr(z.cfloat()) == "tensor([1.+1.j], dtype=minidl.complex64)"
    finally:
        minidl.set_default_dtype(previous)
    assert minidl.tensor([1j]).dtype == c64


def test_real_and_imag_setters_and_save_load(tmp_path):
    z = minidl.zeros(3, dtype=c64)
    z.real = minidl.tensor([1.0, 2.0, 3.0])
    z.imag = minidl.tensor([-1.0, 0.0, 1.0])
    np.testing.assert_allclose(z.numpy(), [1 - 1j, 2, 3 + 1j])
    minidl.save({"z": z}, tmp_path / "z.npz")
    back = minidl.load(tmp_path / "z.npz")["z"]
    assert back.dtype == c64
    np.testing.assert_array_equal(back.numpy(), z.numpy())


def test_assert_close_and_finfo_on_complex():
    a = minidl.tensor([1 + 1j, 2 + 2j])
    minidl.testing.assert_close(a, a * (1 + 1e-7))  # complex64: float32's tolerances
    with pytest.raises(AssertionError, match="Greatest absolute difference: 0.00100"):
        minidl.testing.assert_close(a, a + 1e-3j)
    with pytest.raises(AssertionError, match=r"Expected \(1\+2j\) but got \(1\+1j\)"):
        minidl.testing.assert_close(minidl.tensor(1 + 1j), minidl.tensor(1 + 2j))
    assert minidl.finfo(c64).eps == np.finfo(np.float32).eps
    assert minidl.finfo(c128).eps == np.finfo(np.float64).eps


# ---- complex tensors: optimizers, views, refusals, gradients and fills (audit, torch 2.13) -----------
def _steps(lib, name, kw, w0, x0, n=5):
    w = lib.tensor(w0.copy(), requires_grad=True)
    x = lib.tensor(x0.copy())
    opt = getattr(lib.optim, name)([w], **kw)
    for _ in range(n):
        opt.zero_grad()
        ((x @ w.t()).abs() ** 2).sum().backward()
        opt.step()
    return w.detach().numpy(), opt


@pytest.mark.parametrize("name,kw", [
    ("Adam", dict(lr=0.01)), ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01)), ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
    ("Adagrad", dict(lr=0.1, initial_accumulator_value=0.1)), ("Adadelta", dict(lr=1.0)),
    ("Adamax", dict(lr=0.01)), ("NAdam", dict(lr=0.01)), ("RAdam", dict(lr=0.01)),
    ("Rprop", dict(lr=0.01)), ("ASGD", dict(lr=0.01)),
    ("SGD", dict(lr=0.01, momentum=0.9, nesterov=True)),
])
def test_optimizers_step_complex_parameters_as_real_pairs(name, kw):
    """The adaptive optimizers squared complex gradients (g * g, not |g|^2 part by part), so a
    complex parameter moved differently from torch's, which updates view_as_real(param) (Adam
    with amsgrad even overflowed); Adagrad's initial sum had no imaginary part."""
    torch = pytest.importorskip("torch")
    w0 = _z(3, 2, seed=1).astype(np.complex64)
    x0 = _z(4, 2, seed=2).astype(np.complex64)
    ours, opt = _steps(minidl, name, kw, w0, x0, n=8)
    theirs, topt = _steps(torch, name, kw, w0, x0, n=8)
    assert ours.dtype == np.complex64
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    ours_state = opt.state_dict()["state"][0]
    their_state = topt.state_dict()["state"][0]
    for key, value in their_state.items():
        if isinstance(value, torch.Tensor) and value.is_complex():
            assert ours_state[key].dtype == c64 and tuple(ours_state[key].shape) == (3, 2)
            np.testing.assert_allclose(ours_state[key].numpy(), value.numpy(), rtol=1e-4,
                                       atol=1e-6)


def test_mH_adjoint_and_H_conjugate():
    """z.mH and z.adjoint() only swapped the last two dims of a complex tensor (torch
    conjugates too), and Tensor.H was missing."""
    a = _z(2, 3)
    z = minidl.tensor(a, dtype=c128)
    for got in (z.mH, z.adjoint(), minidl.adjoint(z), z.H):
        np.testing.assert_array_equal(got.numpy(), a.conj().T)
    r = minidl.tensor(np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(r.mH.numpy(), r.numpy().T)
    with pytest.raises(RuntimeError, match="matrices"):
        minidl.ones(2, 2, 2).H
    # the gradient of a real loss through mH: d/dz sum Re(z^H w) = conj(w)... as finite differences
    w = minidl.tensor(_z(3, 2, seed=3), dtype=c128)
    assert gradcheck(lambda t: (t.mH * w).real.sum() + (t.mH * w).imag.sum(),
                     [minidl.tensor(a, dtype=c128, requires_grad=True)])


def test_linalg_vecdot_conjugates_x():
    """linalg.vecdot of complex vectors summed x * y; torch's (and the array API's) conjugates
    x first, so vecdot(z, z) is |z|^2."""
    a, b = _z(3, 4), _z(3, 4, seed=1)
    got = minidl.linalg.vecdot(minidl.tensor(a, dtype=c128), minidl.tensor(b, dtype=c128))
    np.testing.assert_allclose(got.numpy(), (a.conj() * b).sum(-1))


def test_isreal_of_complex():
    """isreal said True for every element of a complex tensor; it is True where the imaginary
    part is 0."""
    z = minidl.tensor([1 + 0j, 1j, 2 - 1e-30j, 0j], dtype=c128)
    assert minidl.isreal(z).tolist() == [True, False, False, True]


@pytest.mark.parametrize("name", ["isposinf", "isneginf", "signbit"])
def test_sign_queries_refuse_complex(name):
    """isposinf/isneginf/signbit of a complex tensor answered for the real part (after a
    ComplexWarning); torch refuses complex input."""
    z = minidl.tensor([complex(np.inf, 1), -1 + 1j])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match=f"{name}.*complex"):
            getattr(minidl, name)(z)


@pytest.mark.parametrize("call", [
    lambda z: minidl.cummax(z, 0), lambda z: minidl.cummin(z, 0),
    lambda z: minidl.searchsorted(z, z), lambda z: minidl.bucketize(z, z),
])
def test_ordering_ops_refuse_complex(call):
    """cummax/cummin/searchsorted/bucketize ordered complex numbers lexicographically (NumPy's
    order) where torch refuses them, as minidl's other ordering ops do."""
    with pytest.raises(NotImplementedError, match="complex"):
        call(minidl.tensor([1 + 2j, 2 - 1j, 3j]))


@pytest.mark.parametrize("loss", ["kl_div", "huber_loss"])
def test_losses_torch_refuses_for_complex(loss):
    """kl_div and huber_loss computed something for complex input (huber ordering |d| against
    delta, kl_div a complex 'divergence'); torch refuses both."""
    z = minidl.tensor([[1 + 2j, 0.5j]])
    with pytest.raises(RuntimeError, match="complex"):
        getattr(minidl.nn.functional, loss)(z, z * 2, reduction="sum")


def test_complex_number_into_real_tensor_refused():
    """r.fill_(1j) wrote 0 (the imaginary part dropped without a word), r[0] = 1j failed with
    NumPy's 'float() argument' TypeError, and masked_fill(m, 1j) said a complex is not a
    number; torch refuses a complex value with an imaginary part ('value cannot be converted
    to type float without overflow') and takes 1+0j."""
    r = minidl.ones(3)
    m = r > 0
    with pytest.raises(RuntimeError, match="cannot be converted"):
        r.fill_(1j)
    with pytest.raises(RuntimeError, match="cannot be converted"):
        r[0] = 2j
    with pytest.raises(RuntimeError, match="cannot be converted"):
        r.masked_fill(m, 1j)
    with pytest.raises(RuntimeError, match="complex"):
        r.masked_fill(m, minidl.tensor(1j))
    assert r.tolist() == [1.0, 1.0, 1.0]
    r.fill_(2 + 0j)
    r[0] = 3 + 0j
    assert r.tolist() == [3.0, 2.0, 2.0]
    assert r.masked_fill(m, 4 + 0j).tolist() == [4.0, 4.0, 4.0]
    z = minidl.zeros(2, dtype=c64)
    z[0] = 1j
    z.fill_(2j)
    assert z.tolist() == [2j, 2j]


@pytest.mark.parametrize("method", ["abs_", "absolute_"])
def test_inplace_abs_of_complex_refused(method):
    """z.abs_() stored |z| as a complex number with 0 imaginary part; torch refuses: 'In-place
    abs is not supported for complex tensors.'"""
    z = minidl.tensor([3 + 4j])
    with pytest.raises(RuntimeError, match="In-place abs is not supported for complex"):
        getattr(z, method)()
    assert z.tolist() == [3 + 4j]
    assert minidl.tensor([-2.0]).abs_().tolist() == [2.0]


def test_complex_of_a_tensor():
    """complex(t) of a one-element tensor failed (no __complex__; Python fell back to float(),
    which refuses a complex value); torch gives the number."""
    assert complex(minidl.tensor(1 + 2j)) == 1 + 2j
    assert complex(minidl.tensor([3.0])) == 3 + 0j


def test_add_sub_alpha_with_complex():
    """add_/sub_ took no alpha; add/sub refused a complex alpha, and refused a float alpha for
    a complex tensor ('alpha must not be a float for integer tensors'); torch takes them, and
    refuses a complex alpha only for non-complex tensors."""
    z = minidl.tensor([1j], dtype=c128)
    assert z.add(z, alpha=0.5).tolist() == [1.5j]
    assert z.add(z, alpha=1j).tolist() == [-1 + 1j]
    assert z.sub(z, alpha=2).tolist() == [-1j]
    w = z.clone()
    w.add_(z, alpha=2j)
    assert w.tolist() == [-2 + 1j]
    w.sub_(minidl.tensor([1.0], dtype=minidl.float64), alpha=3)
    assert w.tolist() == [-5 + 1j]
    r = minidl.ones(1)
    with pytest.raises(TypeError, match="alpha must not be a complex"):
        r.add(r, alpha=1j)
    with pytest.raises(TypeError, match="alpha must not be a complex"):
        r.add_(r, alpha=1j)
    assert r.add_(r, alpha=2).tolist() == [3.0]


def test_conj_physical_in_place():
    """Tensor.conj_physical_ was missing (torch has it)."""
    z = minidl.tensor([1 + 2j])
    assert z.conj_physical_() is z and z.tolist() == [1 - 2j]
    r = minidl.tensor([1.0])
    assert r.conj_physical_().tolist() == [1.0]


def test_view_as_real_of_a_strided_tensor_is_a_view():
    """view_as_real of a transposed or sliced complex tensor was a copy, so writes through it
    were lost; torch's is always a view."""
    a = _z(3, 4).astype(np.complex64)
    for pick in (lambda z: z.t(), lambda z: z[:, ::2], lambda z: z[1, 2:3].reshape(())):
        z = minidl.tensor(a.copy())
        v = minidl.view_as_real(pick(z))
        np.testing.assert_array_equal(v.numpy()[..., 0], pick(z).real.numpy())
        np.testing.assert_array_equal(v.numpy()[..., 1], pick(z).imag.numpy())
        v.mul_(2)
        np.testing.assert_array_equal(pick(z).numpy(), 2 * pick(minidl.tensor(a)).numpy())
    z = minidl.tensor(a, requires_grad=True)
    (minidl.view_as_real(z.t()) ** 2).sum().backward()
    np.testing.assert_allclose(z.grad.numpy(), 2 * a, rtol=1e-6)


def test_view_as_complex_strides():
    """view_as_complex copied a tensor whose pairs were not dense (a last dim of stride 2) where
    torch refuses ('Tensor must have a last dimension with stride 1'), and copied a transposed
    tensor of dense pairs, which torch views (writes went nowhere)."""
    r = minidl.tensor(np.arange(8.0, dtype=np.float32).reshape(2, 4))
    with pytest.raises(RuntimeError, match="last dimension with stride 1"):
        minidl.view_as_complex(r[:, ::2])
    pairs = minidl.tensor(np.arange(12.0, dtype=np.float32).reshape(3, 2, 2)).transpose(0, 1)
    z = minidl.view_as_complex(pairs)
    assert z.shape == (2, 3) and z.tolist()[0] == [0 + 1j, 4 + 5j, 8 + 9j]
    z[0, 0] = 7 - 1j
    assert pairs[0, 0].tolist() == [7.0, -1.0]


@pytest.mark.parametrize("line_search", [None, "strong_wolfe"])
def test_lbfgs_complex_parameters_as_real_pairs(line_search):
    """LBFGS flattened a complex parameter as complex numbers (complex dot products in its
    curvature pairs), so it went elsewhere than torch's, whose flat vectors hold the real and
    imaginary parts (view_as_real)."""
    torch = pytest.importorskip("torch")
    w0, x0 = _z(3, 2, seed=3), _z(4, 2, seed=4)

    def run(lib):
        w = lib.tensor(w0.copy(), dtype=lib.complex128, requires_grad=True)
        x = lib.tensor(x0.copy(), dtype=lib.complex128)
        opt = lib.optim.LBFGS([w], lr=0.5, max_iter=5, line_search_fn=line_search)

        def closure():
            opt.zero_grad()
            loss = ((x @ w.t()).abs() ** 2).sum() + (w.abs() ** 4).sum()
            loss.backward()
            return loss
        for _ in range(2):
            opt.step(closure)
        return w.detach().numpy()
    np.testing.assert_allclose(run(minidl), run(torch), rtol=1e-8, atol=1e-10)


def test_linear_with_complex_weights_differentiates():
    """F.linear / nn.Linear with complex input and weights refused to record a gradient
    (ComplexGradError); torch differentiates it (x conj(W)-style adjoints)."""
    from minidl.testing import gradgradcheck

    def leaf(a):
        return minidl.tensor(a, dtype=c128, requires_grad=True)
    x, w, b = _z(2, 4, 3), _z(5, 3, seed=1), _z(5, seed=2)
    f = minidl.nn.functional.linear
    assert gradcheck(f, [leaf(x), leaf(w), leaf(b)])
    assert gradgradcheck(f, [leaf(x), leaf(w), leaf(b)])


def test_linear_with_complex_weights_matches_torch():
    """The parity half of the test above: forward and the gradients of a real loss."""
    torch = pytest.importorskip("torch")
    arrays = (_z(2, 4, 3), _z(5, 3, seed=1), _z(5, seed=2))
    ours = [minidl.tensor(a, dtype=c128, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    y = minidl.nn.functional.linear(*ours)
    ty = torch.nn.functional.linear(*theirs)
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=1e-12)
    (y.abs() ** 3).sum().backward()
    (ty.abs() ** 3).sum().backward()
    for a, t in zip(ours, theirs):
        np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-10)


def test_random_fills_of_complex_tensors():
    """uniform_/normal_ (and nn.init's) filled only the real part of a complex tensor, and
    nn.Linear(..., dtype=complex64) had weights with no imaginary part; torch draws both parts
    (normal_: half the variance in each). random_/geometric_/bernoulli_, which torch refuses for
    complex tensors, filled the real part."""
    minidl.manual_seed(0)
    z = minidl.zeros(20000, dtype=c128).uniform_(-1, 3)
    for part in (z.real.numpy(), z.imag.numpy()):
        assert part.min() >= -1 and part.max() < 3 and abs(part.mean() - 1) < 0.05
    z = minidl.zeros(20000, dtype=c128).normal_(1.0, 2.0)
    for part in (z.real.numpy(), z.imag.numpy()):
        assert abs(part.mean() - 1) < 0.05 and abs(part.std() - 2 ** 0.5) < 0.05
    w = minidl.zeros(20000, dtype=c64)
    minidl.nn.init.normal_(w, 0.0, 2.0)
    assert abs(w.imag.numpy().std() - 2 ** 0.5) < 0.05
    minidl.nn.init.uniform_(w, 1.0, 2.0)
    assert w.imag.numpy().min() >= 1.0
    lin = minidl.nn.Linear(3, 4, dtype=c64)
    assert lin.weight.dtype == c64 and (lin.weight.imag.numpy() != 0).all()
    assert (lin.bias.imag.numpy() != 0).all() and lin.weight.requires_grad
    bound = 1 / 3 ** 0.5
    assert np.abs(lin.weight.real.numpy()).max() <= bound
    for call in (lambda t: t.random_(0, 5), lambda t: t.geometric_(0.5),
                 lambda t: t.bernoulli_(0.5)):
        with pytest.raises(RuntimeError, match="complex"):
            call(minidl.zeros(2, dtype=c64))


def _cleaf(a):
    return minidl.tensor(a, dtype=c128, requires_grad=True)


_ZEROED = _z(2, 4, seed=5)
_ZEROED[0, 1] = 0
_ZEROED[1, 2] = _ZEROED[1, 3] = 0
COMPLEX_GRAD_OPS = {  # name: (function, inputs)
    "pow_tensor": (lambda a, b: a ** b, lambda: [_cleaf(_z(2, 3)), _cleaf(0.5 * _z(2, 3, seed=1))]),
    "pow_real_base": (lambda a, b: a ** b, lambda: [
        minidl.tensor(np.abs(_z(2, 3).real) + 0.2, dtype=minidl.float64, requires_grad=True),
        _cleaf(_z(2, 3, seed=1))]),
    "prod_dim": (lambda a: a.prod(1), lambda: [_cleaf(_z(2, 4))]),
    "prod_all_with_a_zero": (lambda a: a.prod(), lambda: [_cleaf(_ZEROED[:1])]),
    "cumprod": (lambda a: a.cumprod(1), lambda: [_cleaf(_z(2, 4))]),
    "cumprod_with_zeros": (lambda a: a.cumprod(1), lambda: [_cleaf(_ZEROED)]),
    "pad": (lambda a: minidl.nn.functional.pad(a, (1, 2)), lambda: [_cleaf(_z(2, 3))]),
}


@pytest.mark.parametrize("name", sorted(COMPLEX_GRAD_OPS))
def test_complex_gradients_of_pow_prod_cumprod_pad(name):
    """Tensor ** tensor, prod, cumprod and F.pad refused to record a gradient through complex
    tensors (ComplexGradError) where torch differentiates them (g times the conjugate
    derivative; pad is linear)."""
    from minidl.testing import gradgradcheck

    fn, inputs = COMPLEX_GRAD_OPS[name]
    assert gradcheck(fn, inputs())
    if "zero" not in name:  # at zeros, as for real inputs: first order only
        assert gradgradcheck(fn, inputs())


@pytest.mark.parametrize("name", sorted(COMPLEX_GRAD_OPS))
def test_complex_gradients_of_pow_prod_cumprod_pad_match_torch(name):
    """The parity half of the test above: values and gradients of a real loss as torch's."""
    torch = pytest.importorskip("torch")
    fn, inputs = COMPLEX_GRAD_OPS[name]
    ours = inputs()
    theirs = [torch.tensor(t.numpy(), requires_grad=True) for t in ours]
    tfn = {"pad": lambda a: torch.nn.functional.pad(a, (1, 2))}.get(name, fn)
    y, ty = fn(*ours), tfn(*theirs)
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-14)
    (y.abs() ** 3 + y.real).sum().backward()
    (ty.abs() ** 3 + ty.real).sum().backward()
    for a, t in zip(ours, theirs):
        np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_backward_seeds_of_complex_outputs():
    """backward() of a complex scalar started from 1 (d z / d z is no real loss's gradient),
    and a complex gradient for a real output lost its imaginary part with a NumPy
    ComplexWarning (a real one for a complex output was cast); torch refuses all three."""
    z = minidl.tensor([1 + 2j, 3j], requires_grad=True)
    with pytest.raises(RuntimeError, match="only for real scalar outputs"):
        (z * 2).sum().backward()
    with pytest.raises(RuntimeError, match="only for real scalar outputs"):
        minidl.autograd.grad((z * 2).sum(), z)
    with pytest.raises(RuntimeError, match="both the gradient and the output"):
        z.abs().backward(minidl.tensor([1j, 1j]))
    with pytest.raises(RuntimeError, match="both the gradient and the output"):
        (z * 2).backward(minidl.tensor([1.0, 1.0]))
    assert z.grad is None
    (z * 2).backward(minidl.tensor([1, 1j], dtype=c128))  # another complex dtype: cast
    assert z.grad.tolist() == [2, 2j] and z.grad.dtype == c64


def test_full_with_a_complex_value_into_a_real_dtype():
    """full/full_like with a complex value and a real dtype dropped the imaginary part
    (NumPy's ComplexWarning); torch refuses it, and takes 1+0j."""
    with pytest.raises(RuntimeError, match="cannot be converted"):
        minidl.full((2,), 1j, dtype=minidl.int64)
    with pytest.raises(RuntimeError, match="cannot be converted"):
        minidl.full_like(minidl.ones(2), 2 - 1j)
    assert minidl.full((2,), 3 + 0j, dtype=minidl.float32).tolist() == [3.0, 3.0]
    assert minidl.full((1,), 1j).dtype == c64


def test_logcumsumexp_of_complex_message():
    """logcumsumexp of a complex tensor said 'PyTorch has no kernel for them either', which is
    not so (torch 2.13 takes complex input); the refusal now names complex tensors only."""
    with pytest.raises(NotImplementedError) as info:
        minidl.logcumsumexp(minidl.tensor([1j, 2.0]), 0)
    assert "complex" in str(info.value) and "PyTorch has no kernel" not in str(info.value)


def test_nan_to_num_of_complex():
    """nan_to_num of a complex tensor returned an untouched copy (NaN and infinities kept, and
    the graph cut without a word); torch replaces them part by part and refuses to
    differentiate it. nansum of a complex tensor summed its NaNs (torch refuses it)."""
    values = [complex(np.nan, np.inf), complex(-np.inf, 1), complex(2, np.nan)]
    big = float(np.finfo(np.float32).max)
    got = minidl.nan_to_num(minidl.tensor(values))
    assert got.dtype == c64 and got.tolist() == [complex(0, big), complex(-big, 1), 2 + 0j]
    got = minidl.nan_to_num(minidl.tensor(values, dtype=c128), nan=1.0, posinf=2.0, neginf=-3.0)
    assert got.tolist() == [1 + 2j, -3 + 1j, 2 + 1j]
    with pytest.raises(RuntimeError, match="nan_to_num does not support automatic"):
        minidl.nan_to_num(minidl.tensor(values, requires_grad=True))
    with minidl.no_grad():
        assert minidl.nan_to_num(minidl.tensor(values, requires_grad=True)).shape == (3,)
    with pytest.raises(RuntimeError, match="nansum.*complex"):
        minidl.nansum(minidl.tensor(values))


def test_addcdiv_of_complex_tensors():
    """addcdiv refused complex tensors with 'Integer division with addcdiv is no longer
    supported' (a complex tensor is not an integer one); torch computes it."""
    z = minidl.tensor([1j, 2], dtype=c128, requires_grad=True)
    out = minidl.addcdiv(z, z, z + 2, value=0.5)
    np.testing.assert_allclose(out.detach().numpy(), [1j + 0.5j / (2 + 1j), 2.25])
    assert gradcheck(lambda a: minidl.addcdiv(a, a, a + 2, value=0.5), [z])


def test_linspace_with_complex_ends():
    """linspace(0, 1j, 3) refused ('end must be a number, got complex'); torch spaces complex
    ends in the default complex dtype, and refuses a real dtype for them."""
    z = minidl.linspace(0, 1j, 3)
    assert z.dtype == c64 and z.tolist() == [0j, 0.5j, 1j]
    z = minidl.linspace(1 + 1j, 2, 3, dtype=c128)
    assert z.dtype == c128 and z.tolist() == [1 + 1j, 1.5 + 0.5j, 2 + 0j]
    with pytest.raises(TypeError, match="can't be safely cast"):
        minidl.linspace(0, 1j, 3, dtype=minidl.float32)
    assert minidl.linspace(0, 1, 3).dtype == minidl.float32


def test_complex_python_numbers_in_where_scatter_new_full():
    """where(c, r, 1j) and scatter(dim, index, 7j) refused a Python complex ('must be a tensor
    or a number'), and r.new_full(size, 1j) wrote 0 into a real tensor; torch promotes where
    to complex, scatters the number, and refuses an imaginary part for a real tensor."""
    r = minidl.tensor([1.0, -2.0, 3.0])
    z = minidl.tensor([1 + 2j, 3 - 1j, 2j])
    out = minidl.where(r > 0, r, 1j)
    assert out.dtype == c64 and out.tolist() == [1 + 0j, 1j, 3 + 0j]
    assert minidl.where(r > 0, 1j, 2j).tolist() == [1j, 2j, 1j]
    assert z.scatter(0, minidl.tensor([0]), 7j).tolist() == [7j, 3 - 1j, 2j]
    with pytest.raises(RuntimeError, match="cannot be converted"):
        r.scatter(0, minidl.tensor([0]), 7j)
    with pytest.raises(RuntimeError, match="cannot be converted"):
        r.new_full((2,), 1j)
    assert z.new_full((2,), 1j).tolist() == [1j, 1j]
    assert r.new_full((1,), 2 + 0j).tolist() == [2.0]


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
def test_clip_grad_norm_of_complex_gradients(norm_type):
    """clip_grad_norm_ (and get_total_norm) cast complex gradients to real before taking
    magnitudes (NumPy's ComplexWarning), so the norm ignored the imaginary parts and the
    clipping was wrong; torch's norm is over |g|. clip_grad_value_ clipped the real parts of
    complex gradients, which torch refuses (clamp of complex)."""
    g0 = np.array([[3 + 4j, 1j], [-2 - 2j, 0.5]], dtype=np.complex64)
    w = minidl.zeros(2, 2, dtype=c64, requires_grad=True)
    w.grad = minidl.tensor(g0.copy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        total = minidl.nn.utils.clip_grad_norm_([w], 1.0, norm_type=norm_type)
    want = np.linalg.norm(np.abs(g0).ravel(), ord=norm_type)
    assert total.dtype == minidl.float32
    np.testing.assert_allclose(total.item(), want, rtol=1e-6)
    np.testing.assert_allclose(w.grad.numpy(), g0 * min(1.0, 1.0 / (want + 1e-6)), rtol=1e-6)
    np.testing.assert_allclose(minidl.nn.utils.get_total_norm([minidl.tensor(g0)],
                                                            norm_type).item(), want, rtol=1e-6)
    with pytest.raises(NotImplementedError, match="complex"):
        minidl.nn.utils.clip_grad_value_([w], 0.1)
# ---- float_power with complex operands --------------------------------------------------------

def test_float_power_with_a_complex_operand_is_complex128():
    x = minidl.tensor([-2.5, 3.0], dtype=minidl.float64)
    e = minidl.tensor([1 + 2j, -0.5j], dtype=minidl.complex64)
    y = minidl.float_power(x, e)
    assert y.dtype == minidl.complex128
    np.testing.assert_allclose(y.numpy(), np.power(x.numpy().astype(complex), e.numpy()))
    assert minidl.float_power(x, 1 + 2j).dtype == minidl.complex128
    assert minidl.float_power(1j, minidl.tensor([1.0, 2.0])).dtype == minidl.complex128
    z = minidl.float_power(minidl.tensor([1 + 1j, 2j]), 2)
    np.testing.assert_allclose(z.numpy(), [2j, -4])
    assert minidl.float_power(minidl.tensor([2, 3]), minidl.tensor([-1, 2])).dtype == minidl.float64


def test_float_power_complex_parity_and_gradient():
    torch = pytest.importorskip("torch")
    a = np.array([-2.5, 3.0, 0.7])
    b = np.array([1 + 2j, -0.5j, 2.0 + 0j])
    x = minidl.tensor(a, dtype=minidl.float64, requires_grad=True)
    tx = torch.tensor(a, dtype=torch.float64, requires_grad=True)
    e = minidl.tensor(b, dtype=minidl.complex128, requires_grad=True)
    te = torch.tensor(b, dtype=torch.complex128, requires_grad=True)
    y, ty = minidl.float_power(x, e), torch.float_power(tx, te)
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=1e-10)
    y.abs().sum().backward()
    ty.abs().sum().backward()
    # |3 ** (-0.5j)| is 1 whatever the base, so d|y|/dx there is exactly 0 and the imaginary
    # part of that exponent's gradient too: both libraries give rounding residue of a few
    # 1e-17 there (torch's AVX2 complex kernels 9.3e-18, its scalar DEFAULT build 1.4e-17,
    # minidl 9.3e-18), which rtol alone compares as if it were a value. atol is a few ulps of
    # the gradients' own size (about 1)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-8, atol=1e-15)
    np.testing.assert_allclose(e.grad.numpy(), te.grad.numpy(), rtol=1e-8, atol=1e-15)
    assert abs(x.grad.numpy()[1]) < 1e-15 and abs(e.grad.numpy()[1].imag) < 1e-15


# ---- logsumexp of complex tensors -------------------------------------------------------------

def _complex(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


_CONV_CASES = [
    ("conv1d", (2, 4, 7), (6, 2, 3), dict(stride=2, padding=1, groups=2)),
    ("conv2d", (1, 2, 5, 5), (3, 2, 3, 3), dict(padding="same", dilation=2)),
    ("conv3d", (2, 3, 4, 4), (2, 2, 2, 2, 2), {}),  # unbatched
    ("conv_transpose1d", (1, 2, 5), (2, 3, 3), dict(stride=2)),
    ("conv_transpose2d", (1, 2, 4, 4), (2, 3, 3, 3), dict(stride=2, padding=1,
                                                          output_padding=1)),
]


def _conv_inputs(name, xs, ws, seed=3):
    cout = ws[1] if "transpose" in name else ws[0]
    return _complex(xs, seed), _complex(ws, seed + 1), _complex((cout,), seed + 2)


def test_complex_logsumexp_gradcheck():
    """logsumexp refused complex tensors ("not implemented for complex tensors"); torch 2.13
    computes it (the largest real part subtracted) with the holomorphic gradient."""
    from minidl.testing import gradcheck, gradgradcheck

    x = minidl.tensor(_complex((3, 4)), dtype=minidl.complex128, requires_grad=True)
    assert gradcheck(lambda a: minidl.logsumexp(a, 1), (x,))
    assert gradgradcheck(lambda a: minidl.logsumexp(a, (0, 1), keepdim=True), (x,))
    big = minidl.tensor(np.array([[1e3 + 1j, 1e3 + 2j, -1j]]), dtype=minidl.complex128)
    assert np.isfinite(minidl.logsumexp(big, 1).numpy()).all()


def test_complex_logsumexp_parity():
    """Complex logsumexp (forward, backward, infinite parts) gives torch's numbers."""
    torch = pytest.importorskip("torch")
    z = np.concatenate([_complex((2, 3), 1), [[1e3 + 1j, 1e3 + 2j, -1j]]])
    w = _complex((3,), 2)
    t = torch.tensor(z, requires_grad=True)
    m = minidl.tensor(z, dtype=minidl.complex128, requires_grad=True)
    yt, ym = torch.logsumexp(t, 1), minidl.logsumexp(m, 1)
    np.testing.assert_allclose(ym.numpy(), yt.detach().numpy(), rtol=1e-12)
    (yt * torch.tensor(w)).real.sum().backward()
    (ym * minidl.tensor(w, dtype=minidl.complex128)).real.sum().backward()
    np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-10, atol=1e-14)
    for row in ([np.inf + 1j, 1 + 0j], [-np.inf + 1j, -np.inf + 0j]):
        a = np.array([row])
        np.testing.assert_allclose(minidl.logsumexp(minidl.tensor(a), 1).numpy(),
                                   torch.logsumexp(torch.tensor(a, dtype=torch.complex64),
                                                   1).numpy())


# ---- complex convolutions ---------------------------------------------------------------------

@pytest.mark.parametrize("name, xs, ws, kw", _CONV_CASES)
def test_complex_convolution_gradcheck(name, xs, ws, kw):
    """F.conv1d/conv2d/conv3d on complex tensors raised "conv2d: not implemented for complex
    tensors" (naming another function); torch 2.13 computes them (and conv_transpose*, whose
    gradient was refused): three real convolutions, with gradients."""
    from minidl.testing import gradcheck, gradgradcheck
    import minidl.nn.functional as F

    arrays = _conv_inputs(name, xs, ws)
    x, w, b = (minidl.tensor(a, dtype=minidl.complex128, requires_grad=True) for a in arrays)
    fn = getattr(F, name)
    assert gradcheck(lambda x, w, b: fn(x, w, b, **kw), (x, w, b))
    if name in ("conv1d", "conv_transpose1d"):
        assert gradgradcheck(lambda x, w: fn(x, w, None, **kw), (x, w))


@pytest.mark.parametrize("name, xs, ws, kw", _CONV_CASES)
def test_complex_convolution_parity(name, xs, ws, kw):
    """Complex convolutions give torch's outputs and gradients (complex128)."""
    torch = pytest.importorskip("torch")
    import minidl.nn.functional as F

    arrays = _conv_inputs(name, xs, ws)
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    ms = [minidl.tensor(a, dtype=minidl.complex128, requires_grad=True) for a in arrays]
    yt = getattr(torch.nn.functional, name)(*ts, **kw)
    ym = getattr(F, name)(*ms, **kw)
    np.testing.assert_allclose(ym.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    gy = _complex(tuple(yt.shape), 9)
    (yt * torch.tensor(gy)).real.sum().backward()
    (ym * minidl.tensor(gy, dtype=minidl.complex128)).real.sum().backward()
    for t, m in zip(ts, ms):
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_complex_convolution_refuses_a_real_weight_naming_the_function():
    """A complex input with a real weight is refused (as torch's), naming conv1d."""
    import minidl.nn.functional as F

    x = minidl.tensor(_complex((1, 2, 5)), dtype=minidl.complex64)
    with pytest.raises(TypeError, match="conv1d: dtypes differ"):
        F.conv1d(x, minidl.randn(3, 2, 3))
