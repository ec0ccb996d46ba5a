"""minidl.fft as torch.fft: values, dtypes and shapes (n/s, dim, norm) against torch 2.13,
gradients (torch's adjoint transforms, with its treatment of rfft/irfft's Hermitian half) by
finite differences on each part and against torch, second derivatives, the helpers, the
errors, and the GPU path through the fake CuPy."""
import numpy as np
import pytest

import minidl
from minidl import fft
from minidl.testing import gradcheck, gradgradcheck

NORMS = [None, "ortho", "forward"]


def _x(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _z(*shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


# (name, input kind, keyword sets): real transforms take real input, c2r ones complex
CASES = [
    ("fft", "c", [{}, {"n": 4}, {"n": 9}, {"dim": 0}]),
    ("fft", "r", [{}, {"n": 9}]),
    ("ifft", "c", [{}, {"n": 4}, {"n": 9, "dim": -2}]),
    ("rfft", "r", [{}, {"n": 4}, {"n": 9}, {"dim": 0}]),
    ("irfft", "c", [{}, {"n": 4}, {"n": 9}, {"n": 10}, {"dim": 0, "n": 7}]),
    ("irfft", "r", [{}]),
    ("hfft", "c", [{}, {"n": 5}, {"n": 12}]),
    ("ihfft", "r", [{}, {"n": 5}, {"n": 4}]),
    ("fft2", "c", [{}, {"s": (3, 8)}, {"s": (5, 4)}]),
    ("ifft2", "c", [{}, {"s": (5, 4)}, {"dim": (0, 1)}]),
    ("fftn", "c", [{}, {"s": (3, 8)}, {"dim": (0,)}, {"s": (7,)}, {"s": (-1, 3)}]),
    ("ifftn", "c", [{}, {"s": (5, 4)}]),
    ("rfft2", "r", [{}, {"s": (3, 8)}, {"s": (5, 4)}]),
    ("rfftn", "r", [{}, {"s": (5,)}, {"dim": (1, 0)}]),
    ("irfft2", "c", [{}, {"s": (3, 8)}, {"s": (5, 5)}]),
    ("irfftn", "c", [{}, {"s": (4, 7)}, {"dim": 0, "s": (7,)}]),
    ("hfft2", "c", [{}, {"s": (3, 8)}]),
    ("hfftn", "c", [{}, {"s": (5, 5)}]),
    ("ihfft2", "r", [{}, {"s": (5, 4)}]),
    ("ihfftn", "r", [{}, {"s": (3, 8)}]),
]
PARAMS = [(name, kind, kw, norm) for name, kind, kws in CASES for kw in kws for norm in NORMS]


def _input(kind, shape=(4, 6)):
    return _z(*shape) if kind == "c" else _x(*shape)


@pytest.mark.parametrize("name, kind, kw, norm", PARAMS)
def test_values_shapes_dtypes_and_gradients_match_torch(name, kind, kw, norm):
    torch = pytest.importorskip("torch")
    a = _input(kind)
    ours = minidl.tensor(a, dtype=a.dtype, requires_grad=True)
    theirs = torch.tensor(a, requires_grad=True)
    y = getattr(fft, name)(ours, norm=norm, **kw)
    t = getattr(torch.fft, name)(theirs, norm=norm, **kw).resolve_conj()
    assert y.shape == tuple(t.shape) and y.dtype.name == str(t.dtype).split(".")[1]
    np.testing.assert_allclose(y.numpy(), t.detach().numpy(), atol=1e-10)
    w = _x(*y.shape, seed=1) + (1j * _x(*y.shape, seed=2) if y.dtype.kind == "c" else 0)
    loss = (y * minidl.tensor(w.conj(), dtype=w.dtype)).real.sum() if y.dtype.kind == "c" \
        else (y * minidl.tensor(w, dtype=w.dtype)).sum()
    ref = (t * torch.tensor(w.conj())).real.sum()
    loss.backward()
    ref.backward()
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.resolve_conj().numpy(),
                               atol=1e-10)


@pytest.mark.parametrize("name, dtype, want", [
    ("fft", np.float32, np.complex64), ("fft", np.complex64, np.complex64),
    ("fft", np.float64, np.complex128), ("rfft", np.float32, np.complex64),
    ("irfft", np.complex64, np.float32), ("irfft", np.complex128, np.float64),
    ("hfft", np.complex64, np.float32), ("ihfft", np.float32, np.complex64),
    ("fft", np.int64, np.complex64), ("rfftn", np.bool_, np.complex64),
])
def test_result_dtypes(name, dtype, want):
    a = np.arange(1, 7).astype(dtype)
    assert getattr(fft, name)(minidl.tensor(a, dtype=dtype)).dtype == want


def test_float32_gradients_keep_their_dtypes():
    x = minidl.tensor(_x(8).astype(np.float32), requires_grad=True)
    fft.irfft(fft.rfft(x) * 2, n=8).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad.numpy(), np.full(8, 2.0), atol=1e-5)


# ---- gradients by finite differences, on each part of complex inputs -------------------------
GRADS = [
    ("fft", lambda z: fft.fft(z * z, n=5), "c"),
    ("ifft2", lambda z: fft.ifft2(z, s=(2, 6), norm="ortho"), "c"),
    ("fftn", lambda x: fft.fftn(x, dim=(0,), norm="forward"), "r"),
    ("rfft", lambda x: fft.rfft(x * x, n=7, norm="forward"), "r"),
    ("rfft_even", lambda x: fft.rfft(x, n=6), "r"),
    ("rfft2", lambda x: fft.rfft2(x.exp(), s=(4, 5)), "r"),
    ("irfft", lambda z: fft.irfft(z * z, n=5), "c"),
    ("irfft_even", lambda z: fft.irfft(z, n=8, norm="ortho"), "c"),
    ("irfftn", lambda z: fft.irfftn(z * z, s=(4, 6)), "c"),
    ("hfft", lambda z: fft.hfft(z * z), "c"),
    ("ihfft", lambda x: fft.ihfft(x * x), "r"),
    ("shift", lambda z: fft.ifftshift(fft.fftshift(z * z, dim=1) * 2), "c"),
]


@pytest.mark.parametrize("name, fn, kind", GRADS, ids=[g[0] for g in GRADS])
def test_gradcheck_and_gradgradcheck(name, fn, kind):
    a = _input(kind, (3, 4))
    x = minidl.tensor(a, dtype=a.dtype, requires_grad=True)
    assert gradcheck(fn, [x])
    assert gradgradcheck(fn, [x])


def test_round_trips():
    x = minidl.tensor(_x(3, 8))
    np.testing.assert_allclose(fft.irfft(fft.rfft(x), n=8).numpy(), x.numpy(), atol=1e-6)
    np.testing.assert_allclose(fft.ifft(fft.fft(x)).real.numpy(), x.numpy(), atol=1e-6)
    np.testing.assert_allclose(fft.hfft(fft.ihfft(x), n=8).numpy(), x.numpy(), atol=1e-6)
    np.testing.assert_allclose(fft.irfftn(fft.rfftn(x), s=x.shape).numpy(), x.numpy(),
                               atol=1e-6)


# ---- helpers ----------------------------------------------------------------------------------
def test_shift_and_freq_match_torch():
    torch = pytest.importorskip("torch")
    a = _z(4, 5)
    for dim in (None, 0, (1,), (-1, 0)):
        np.testing.assert_array_equal(fft.fftshift(minidl.tensor(a), dim=dim).numpy(),
                                      torch.fft.fftshift(torch.tensor(a).to(torch.complex64),
                                                         dim=dim).numpy())
        np.testing.assert_array_equal(fft.ifftshift(minidl.tensor(a), dim=dim).numpy(),
                                      torch.fft.ifftshift(torch.tensor(a).to(torch.complex64),
                                                          dim=dim).numpy())
    for n in (0, 1, 5, 8):
        for d in (1.0, 0.25):
            f, t = fft.fftfreq(n, d), torch.fft.fftfreq(n, d)
            assert f.dtype == minidl.float32
            np.testing.assert_allclose(f.numpy(), t.numpy())
            np.testing.assert_allclose(fft.rfftfreq(n, d).numpy(), torch.fft.rfftfreq(n, d))
    assert fft.fftfreq(4, dtype=minidl.float64).dtype == minidl.float64


# ---- errors -----------------------------------------------------------------------------------
def test_errors_name_what_did_not_fit():
    x, z = minidl.ones(4), minidl.ones(4, dtype=minidl.complex64)
    with pytest.raises(RuntimeError, match="Invalid normalization mode"):
        fft.fft(x, norm="half")
    with pytest.raises(RuntimeError, match="rfft expects a real input tensor, but got complex64"):
        fft.rfft(z)
    with pytest.raises(RuntimeError, match="ihfft expects a real input"):
        fft.ihfft(z)
    with pytest.raises(RuntimeError, match="Unsupported dtype float16"):
        fft.fft(minidl.ones(4, dtype=minidl.float16))
    with pytest.raises(RuntimeError, match=r"Invalid number of data points \(0\)"):
        fft.fft(x, n=0)
    with pytest.raises(RuntimeError, match=r"Invalid number of data points \(0\)"):
        fft.irfft(minidl.ones(1, dtype=minidl.complex64))
    with pytest.raises(RuntimeError, match="dim and shape arguments must have the same length"):
        fft.fftn(minidl.ones(2, 3), s=(2, 3), dim=(0,))
    with pytest.raises(IndexError, match="out of range"):
        fft.fft(x, dim=1)
    with pytest.raises(TypeError, match="must be a Tensor"):
        fft.fft(np.ones(3))


# ---- the GPU path: cupy.fft through the fake CuPy --------------------------------------------
def test_fake_gpu_runs_the_transforms_on_the_device(monkeypatch, host_kernels):
    import _fake_gpu

    _fake_gpu.install(monkeypatch, host_kernels)
    a = _z(3, 4)
    results = {}
    for device in ("cpu", "cuda"):
        x = minidl.tensor(a.astype(np.complex64), requires_grad=True, device=device)
        r = minidl.tensor(a.real.astype(np.float32), requires_grad=True, device=device)
        y = fft.fft2(x, norm="ortho")
        h = fft.rfft(r, n=6)
        back = fft.irfft(h * h, n=6)
        assert y.device == device and h.device == device and back.device == device
        (y.abs().sum() + back.sum()).backward()
        assert x.grad.device == device and r.grad.device == device
        results[device] = [t.numpy() for t in (y, back, x.grad, r.grad)]
    for got, want in zip(results["cuda"], results["cpu"]):
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ---- stft / istft -----------------------------------------------------------------------------
def _hann(n):  # torch.hann_window(n) (periodic)
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


STFT_CASES = [
    ("plain", _x(40), dict(n_fft=8, return_complex=True), dict(n_fft=8)),
    ("hop_hann_length", _x(40), dict(n_fft=8, hop_length=3, window=8, return_complex=True),
     dict(n_fft=8, hop_length=3, length=40, window=8)),
    ("batch_short_window_normalized", _x(3, 37),
     dict(n_fft=10, hop_length=4, window=6, win_length=6, return_complex=True, normalized=True),
     dict(n_fft=10, hop_length=4, win_length=6, normalized=True, window=6)),
    ("not_centred", _x(40), dict(n_fft=8, center=False, hop_length=2, return_complex=True),
     dict(n_fft=8, center=False, hop_length=2)),
    ("constant_pad", _x(40), dict(n_fft=8, pad_mode="constant", window=8, return_complex=True),
     dict(n_fft=8, window=8)),
    ("replicate_pad", _x(40), dict(n_fft=8, pad_mode="replicate", window=8,
                                   return_complex=True), dict(n_fft=8, window=8, length=45)),
    ("circular_pad", _x(40), dict(n_fft=8, pad_mode="circular", window=8, return_complex=True),
     dict(n_fft=8, window=8)),
    ("two_sided", _x(40), dict(n_fft=8, onesided=False, window=8, return_complex=True),
     dict(n_fft=8, onesided=False, return_complex=True, window=8)),
    ("complex_input", _z(40), dict(n_fft=8, window=8), dict(n_fft=8, return_complex=True,
                                                             window=8)),
    ("real_pairs", _x(40), dict(n_fft=8, return_complex=False), None),
]


def _windowed(kw, lib, requires_grad):
    kw = dict(kw)
    if "window" in kw:
        w = _hann(kw["window"])
        kw["window"] = (minidl.tensor(w, dtype=w.dtype, requires_grad=requires_grad)
                        if lib is minidl else lib.tensor(w, requires_grad=requires_grad))
    return kw


def _project(y, lib, seed):
    w = _x(*y.shape, seed=seed) + (1j * _x(*y.shape, seed=seed + 1) if y.is_complex() else 0)
    t = minidl.tensor(w.conj(), dtype=w.dtype) if lib is minidl else lib.tensor(w.conj())
    return (y * t).real.sum()


@pytest.mark.parametrize("name, signal, kw, ikw", STFT_CASES, ids=[c[0] for c in STFT_CASES])
def test_stft_and_istft_match_torch(name, signal, kw, ikw):
    torch = pytest.importorskip("torch")
    for fn, args in (("stft", (signal, kw)), ("istft", (None, ikw))):
        if args[1] is None:
            continue
        if fn == "istft":
            spec = torch.stft(torch.tensor(signal), **_windowed(kw, torch, False)).numpy()
            ours_in = minidl.tensor(spec, dtype=spec.dtype, requires_grad=True)
            theirs_in = torch.tensor(spec, requires_grad=True)
        else:
            ours_in = minidl.tensor(signal, dtype=signal.dtype, requires_grad=True)
            theirs_in = torch.tensor(signal, requires_grad=True)
        ours_kw, theirs_kw = _windowed(args[1], minidl, True), _windowed(args[1], torch, True)
        y = getattr(minidl, fn)(ours_in, **ours_kw)
        t = getattr(torch, fn)(theirs_in, **theirs_kw)
        assert y.shape == tuple(t.shape) and y.dtype.name == str(t.dtype).split(".")[1]
        np.testing.assert_allclose(y.numpy(), t.detach().numpy(), atol=1e-9)
        _project(y, minidl, 3).backward()
        _project(t, torch, 3).backward()
        np.testing.assert_allclose(ours_in.grad.numpy(), theirs_in.grad.numpy(), atol=1e-9)
        if "window" in ours_kw:
            np.testing.assert_allclose(ours_kw["window"].grad.numpy(),
                                       theirs_kw["window"].grad.numpy(), atol=1e-9)


def test_stft_gradcheck_and_gradgradcheck():
    w = minidl.tensor(_hann(6) + 0.1, dtype=np.float64, requires_grad=True)
    x = minidl.tensor(_x(14), dtype=np.float64, requires_grad=True)
    fn = lambda x, w: minidl.stft(x, 6, hop_length=2, window=w, return_complex=True)  # noqa: E731
    assert gradcheck(fn, [x, w])
    assert gradgradcheck(fn, [x, w])
    spec = minidl.stft(x, 6, hop_length=2, window=w, return_complex=True).detach()
    s = minidl.tensor(spec.numpy(), dtype=np.complex128, requires_grad=True)
    inv = lambda s, w: minidl.istft(s, 6, hop_length=2, window=w)  # noqa: E731
    assert gradcheck(inv, [s, w])
    assert gradgradcheck(inv, [s, w])


def test_stft_round_trip_and_methods():
    x = minidl.tensor(_x(2, 50))
    w = minidl.tensor(_hann(16))
    spec = x.stft(16, hop_length=4, window=w, return_complex=True)
    assert spec.shape == (2, 9, 13) and spec.dtype == minidl.complex64
    back = spec.istft(16, hop_length=4, window=w, length=50)
    np.testing.assert_allclose(back.numpy(), x.numpy(), atol=1e-5)


def test_stft_errors():
    x = minidl.ones(20)
    with pytest.raises(RuntimeError, match="return_complex parameter be given for real inputs"):
        minidl.stft(x, 8)
    with pytest.raises(RuntimeError, match="expected 0 < n_fft"):
        minidl.stft(x, 0, return_complex=True)
    with pytest.raises(RuntimeError, match="win_length"):
        minidl.stft(x, 8, win_length=9, return_complex=True)
    with pytest.raises(RuntimeError, match="window tensor of size equal to win_length=8"):
        minidl.stft(x, 8, window=minidl.ones(5), return_complex=True)
    with pytest.raises(RuntimeError, match="Cannot have onesided output if window or input"):
        minidl.stft(x.cfloat(), 8, onesided=True)
    with pytest.raises(RuntimeError, match="istft requires a complex-valued input"):
        minidl.istft(minidl.ones(5, 3), 8)
    with pytest.raises(RuntimeError, match="window overlap add min"):
        spec = minidl.stft(x, 8, hop_length=2, center=False, window=minidl.tensor(_hann(8)),
                           return_complex=True)
        minidl.istft(spec, 8, hop_length=2, center=False, window=minidl.tensor(_hann(8)))


# ---- edge arguments (n=-1, no dims, a 0-d tensor) as torch's -----------------------------------------
c64 = minidl.complex64


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
# ---- fft --------------------------------------------------------------------------------------

INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize("name", ["irfft", "hfft"])
@pytest.mark.parametrize("dtype", [minidl.float32, minidl.complex128])
def test_c2r_transforms_of_an_empty_input_padded_are_zeros(name, dtype):
    x = minidl.zeros(0, dtype=dtype)
    for norm in (None, "ortho", "forward"):
        y = getattr(minidl.fft, name)(x, n=8, norm=norm)
        assert y.shape == (8,)
        np.testing.assert_array_equal(y.numpy(), np.zeros(8))
    y = minidl.fft.irfftn(minidl.zeros((2, 0), dtype=dtype), s=(3, 4))
    np.testing.assert_array_equal(y.numpy(), np.zeros((3, 4)))


@pytest.mark.parametrize("name", ["fftfreq", "rfftfreq"])
def test_fftfreq_refuses_an_integer_dtype(name):
    with pytest.raises(RuntimeError, match="requires a floating point or complex dtype"):
        getattr(minidl.fft, name)(5, dtype=minidl.int64)
    assert getattr(minidl.fft, name)(5, dtype=minidl.float64).dtype == minidl.float64


# ---- fft: argument checks ---------------------------------------------------------------------

def test_fft_sizes_and_dims_must_be_ints():
    x = minidl.ones(3, 4)
    for name in ("fft", "rfft", "ihfft"):
        for n in (3.0, True):  # was truncated to 3 or read as n=1
            with pytest.raises(TypeError, match="argument 'n' must be int"):
                getattr(minidl.fft, name)(x, n=n)
    for s in ((2.0, 2), (True, 2), 3):
        with pytest.raises(TypeError, match="argument 's' must be tuple of ints"):
            minidl.fft.fft2(x, s=s)
    with pytest.raises(TypeError, match="argument 'dim' must be int or tuple of ints"):
        minidl.fft.fftn(x, dim=1.0)
    assert minidl.fft.fft2(x, s=[2, 2]).shape == (2, 2)
    assert minidl.fft.rfft(x, n=np.int64(6)).shape == (3, 4)


def test_fft_checks_dims_before_sizes_and_sizes_before_norm():
    x = minidl.ones(4)
    # a 0-d input or a dim out of range is named first, as torch (not the bad n or norm)
    with pytest.raises(IndexError, match="no dimensions"):
        minidl.fft.fft(minidl.tensor(2.0), n=0)
    with pytest.raises(IndexError, match="out of range"):
        minidl.fft.rfft(x, n=0, dim=1)
    with pytest.raises(IndexError, match="out of range"):
        minidl.fft.ihfft(x, dim=3, norm="bad")
    with pytest.raises(RuntimeError, match=r"Invalid number of data points \(0\)"):
        minidl.fft.hfft(x, n=0, norm="bad")
    with pytest.raises(RuntimeError, match=r"Invalid number of data points \(-1\)"):
        minidl.fft.irfft(x, n=-1)  # a 1-D n cannot be -1 (an n-D s can)
    assert minidl.fft.irfftn(x, s=(-1,)).shape == (6,)
    with pytest.raises(RuntimeError, match="dims must be unique"):
        minidl.fft.fftn(minidl.ones(2, 2), dim=(0, 0), norm="bad")


def test_fftfreq_of_a_zero_spacing_is_infinite_as_torch():
    got = minidl.fft.fftfreq(5, 0, dtype=minidl.float64).numpy()
    np.testing.assert_array_equal(got, [NAN, INF, INF, -INF, -INF])
    np.testing.assert_array_equal(minidl.fft.rfftfreq(6, 0).numpy(), [NAN, INF, INF, INF])
    np.testing.assert_allclose(minidl.fft.fftfreq(6, 0.1, dtype=minidl.float64).numpy(),
                               np.fft.fftfreq(6, 0.1), rtol=0, atol=0)
