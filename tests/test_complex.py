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
