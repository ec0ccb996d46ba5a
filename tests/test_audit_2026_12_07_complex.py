"""Audit of the complex-number support and the spectral ops (2026-12-07): each test is one
problem found by comparing minidl with torch 2.13 on the same inputs; its docstring says what
was wrong. Tests that compare with torch import it inside; the others run without it."""
import warnings

import numpy as np
import pytest

import minidl
from minidl.testing import gradcheck

c64, c128 = minidl.complex64, minidl.complex128


def _z(*shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex128)


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


def test_fft_edge_arguments_as_torch():
    """fft(x, n=-1) (and ifft/rfft/irfft/hfft/ihfft) took -1 as 'the default' where torch refuses
    it (only an n-D transform's s takes -1); fftn over no dims (dim=(), s=(), a 0-d tensor)
    refused where torch returns the input as complex; fft of a 0-d tensor failed with a bare
    'tuple index out of range'."""
    x = minidl.tensor(np.arange(12.0, dtype=np.float32).reshape(3, 4))
    for fn in (minidl.fft.fft, minidl.fft.ifft, minidl.fft.rfft, minidl.fft.irfft,
               minidl.fft.hfft, minidl.fft.ihfft):
        with pytest.raises(RuntimeError, match=r"Invalid number of data points \(-1\)"):
            fn(x, n=-1)
    assert minidl.fft.fftn(x, s=(-1, 3)).shape == (3, 3)
    for out in (minidl.fft.fftn(x, dim=()), minidl.fft.ifftn(x, s=())):
        assert out.dtype == c64 and out.tolist() == x.numpy().astype(np.complex64).tolist()
    z = minidl.fft.fftn(minidl.tensor(2.0))
    assert z.shape == () and z.dtype == c64 and z.item() == 2 + 0j
    with pytest.raises(RuntimeError, match="must transform at least one axis"):
        minidl.fft.rfftn(x, dim=())
    with pytest.raises(IndexError, match="tensor has no dimensions"):
        minidl.fft.fft(minidl.tensor(1.0))
    leaf = minidl.tensor(np.ones(3, dtype=np.float64), requires_grad=True)
    (minidl.fft.fftn(leaf, dim=()) * 2j).imag.sum().backward()
    assert leaf.grad.tolist() == [2.0, 2.0, 2.0]


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
