"""CUDA kernels (minidl/backend/cuda.py) against the reference kernels in generic.py.

With CuPy and a GPU the kernels run on the GPU ("gpu" cases). Without them (CI) two checks still
run, so the index arithmetic is never untested:

- "host" cases compile the kernel bodies with the host C++ compiler, stand them in for CuPy's
  ElementwiseKernel and call the real Python wrappers of cuda.py on numpy arrays: layouts,
  strides, argument order, argmax encoding and padding are all checked against generic.py;
- nvcc, when installed, compiles the same bodies as CUDA device code for float32 and float64.

What only a GPU checks: CuPy's own code generation and NVRTC compilation, and speed.
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

import minidl
from minidl import backend
from minidl.backend import cuda, generic

from _fake_gpu import CTYPE, DTYPES, HostKernel, all_kernel_sources, build_host_kernels

needs_cuda = pytest.mark.skipif(
    not minidl.cuda_available(),
    reason="needs CuPy and an NVIDIA GPU (CuPy not installed or no GPU found)")

# (N, C, H, W, kh, kw, sh, sw, ph, pw): overlapping windows, gaps (stride > kernel), padding,
# windows that stop short of the far edge, non-square everything, 1x1 and one output pixel.
CONV_GEOMS = [
    (2, 3, 7, 6, 3, 3, 1, 1, 0, 0),
    (2, 2, 8, 9, 3, 2, 2, 3, 1, 0),
    (1, 3, 5, 5, 2, 2, 3, 3, 0, 0),
    (3, 1, 6, 7, 5, 3, 2, 1, 2, 1),
    (2, 4, 4, 4, 1, 1, 1, 1, 0, 0),
    (1, 2, 3, 3, 3, 3, 1, 1, 0, 0),
    (2, 3, 9, 8, 4, 4, 3, 2, 2, 3),
]
# Pooling needs padding <= kernel // 2 (max_pool2d checks it).
POOL_GEOMS = [
    (2, 3, 8, 8, 2, 2, 2, 2, 0, 0),
    (2, 2, 7, 9, 3, 3, 2, 2, 1, 1),
    (1, 3, 6, 5, 3, 2, 1, 1, 1, 0),
    (2, 1, 9, 7, 4, 3, 3, 2, 2, 1),
    (1, 2, 5, 5, 5, 5, 1, 1, 2, 2),
]


@pytest.fixture(scope="session")
def host_library(tmp_path_factory):
    lib = build_host_kernels(tmp_path_factory.mktemp("cuda_kernels"))
    if lib is None:
        pytest.skip("no host C++ compiler (g++/clang++) to run the CUDA kernel bodies on the CPU")
    return lib


class _Runner:
    def __init__(self, to_device, to_host):
        self.to_device, self.to_host = to_device, to_host


@pytest.fixture(params=["host", pytest.param("gpu", marks=needs_cuda)])
def run(request, monkeypatch):
    """How the cuda.py functions run: on the GPU, or through the host-compiled bodies."""
    if request.param == "gpu":
        cp = backend.require_cuda()
        return _Runner(cp.asarray, cp.asnumpy)
    lib = request.getfixturevalue("host_library")
    monkeypatch.setattr(cuda, "_kernel", lambda name, wide=False: HostKernel(lib, name))
    return _Runner(np.asarray, np.asarray)


def _exact_for_sums(dtype):
    # gathers add the same terms in the same order as generic.py; leave room only for a GPU's
    # compiler, not for a wrong term
    return dict(rtol=1e-6 if dtype == np.float32 else 1e-13, atol=0)


# ---- the checks ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("geom", CONV_GEOMS, ids=str)
def test_im2col_and_col2im_match_generic(run, geom, dtype):
    n, c, h, w, *k = geom
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    want = generic.im2col(x, *k)
    got = run.to_host(cuda.im2col(run.to_device(x), *k))
    assert got.dtype == dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)

    kk, length = want.shape[1:]
    got_t = run.to_host(cuda.im2col_t(run.to_device(x), *k))
    np.testing.assert_array_equal(got_t, want.transpose(1, 0, 2).reshape(kk, n * length))

    gcol = rng.standard_normal(want.shape).astype(dtype)
    want_img = generic.col2im(gcol, x.shape, *k)
    got_img = run.to_host(cuda.col2im(run.to_device(gcol), x.shape, *k))
    assert got_img.dtype == dtype and got_img.shape == x.shape
    np.testing.assert_allclose(got_img, want_img, **_exact_for_sums(dtype))

    gcol_t = np.ascontiguousarray(gcol.transpose(1, 0, 2).reshape(kk, n * length))
    got_img_t = run.to_host(cuda.col2im_t(run.to_device(gcol_t), x.shape, *k))
    np.testing.assert_allclose(got_img_t, want_img, **_exact_for_sums(dtype))


def test_col2im_is_the_adjoint_of_im2col(run):
    """<im2col(x), c> == <x, col2im(c)>: the property the conv backward relies on."""
    rng = np.random.default_rng(1)
    k = (3, 2, 2, 1, 1, 1)
    x = rng.standard_normal((2, 3, 6, 5))
    col = run.to_host(cuda.im2col(run.to_device(x), *k))
    c = rng.standard_normal(col.shape)
    back = run.to_host(cuda.col2im(run.to_device(c), x.shape, *k))
    assert np.isclose((col * c).sum(), (x * back).sum(), rtol=1e-12)


def test_im2col_t_reuses_a_fitting_out_buffer(run):
    x = np.random.default_rng(2).standard_normal((2, 2, 5, 5)).astype(np.float32)
    k = (3, 3, 1, 1, 1, 1)
    first = cuda.im2col_t(run.to_device(x), *k)
    again = cuda.im2col_t(run.to_device(x + 1), *k, out=first)
    assert again is first
    np.testing.assert_array_equal(run.to_host(again),
                                  run.to_host(cuda.im2col_t(run.to_device(x + 1), *k)))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("geom", POOL_GEOMS, ids=str)
def test_max_pool_matches_generic(run, geom, dtype):
    n, c, h, w, *k = geom
    rng = np.random.default_rng(3)
    # small integers: plenty of ties, which must go to the first maximum as in numpy's argmax
    x = rng.integers(-3, 4, (n, c, h, w)).astype(dtype)
    want_y, want_arg = generic.max_pool2d_forward(x, *k)
    y, arg = cuda.max_pool2d_forward(run.to_device(x), *k)
    y, arg = run.to_host(y), run.to_host(arg)
    assert arg.dtype == np.int32 and y.dtype == dtype
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(arg, want_arg)

    gy = rng.standard_normal(want_y.shape).astype(dtype)
    want_gx = generic.max_pool2d_backward(gy, want_arg, x.shape, *k)
    gx = run.to_host(cuda.max_pool2d_backward(run.to_device(gy), run.to_device(want_arg),
                                              x.shape, *k))
    assert gx.dtype == dtype and gx.shape == x.shape
    np.testing.assert_allclose(gx, want_gx, **_exact_for_sums(dtype))


def test_max_pool_treats_padding_as_minus_infinity_and_nan_as_the_max(run):
    x = np.full((1, 1, 3, 3), -np.inf, dtype=np.float32)
    x[0, 0, 2, 2] = np.nan
    k = (3, 3, 2, 2, 1, 1)
    want_y, want_arg = generic.max_pool2d_forward(x, *k)
    y, arg = cuda.max_pool2d_forward(run.to_device(x), *k)
    np.testing.assert_array_equal(run.to_host(y), want_y)
    np.testing.assert_array_equal(run.to_host(arg), want_arg)


def test_empty_batch(run):
    x = np.zeros((0, 2, 4, 4), dtype=np.float32)
    assert cuda.im2col(run.to_device(x), 2, 2, 2, 2, 0, 0).shape == (0, 8, 4)
    y, arg = cuda.max_pool2d_forward(run.to_device(x), 2, 2, 2, 2, 0, 0)
    assert y.shape == arg.shape == (0, 2, 2, 2)


def test_kernels_dispatch_to_cuda_for_a_non_numpy_array_module():
    """backend.kernels(cupy) is this module: checked with a stand-in module object."""
    class FakeArrayModule:
        pass

    assert backend.kernels(FakeArrayModule()) is cuda
    assert set(cuda.__all__) >= {"out_size", "im2col", "col2im", "max_pool2d_forward",
                                 "max_pool2d_backward"}


def test_kernel_bodies_compile_as_cuda(tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc (CUDA toolkit) not installed: device compilation of the kernels "
                    "is only checked where it is")
    src = tmp_path / "kernels.cu"
    src.write_text(all_kernel_sources(device=True))
    done = subprocess.run([nvcc, "-ptx", "-o", str(tmp_path / "kernels.ptx"), str(src)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"kernel bodies do not compile as CUDA:\n{done.stderr}"
    ptx = (tmp_path / "kernels.ptx").read_text()
    for name in cuda.SPECS:
        for dt in DTYPES:
            assert f"{name}_{CTYPE[dt]}" in ptx


# ---- how the kernels are launched on the GPU (cuda._RawLaunch) ------------------------------
class _Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))


def test_raw_launch_passes_scalars_as_their_declared_types_and_the_size_last(monkeypatch):
    launch = cuda._RawLaunch("sgd_momentum", False)
    kernel = _Recorder()
    monkeypatch.setattr(launch, "_build", lambda t, p: kernel)
    grad, param, buf = (np.ones(300, np.float32) for _ in range(3))
    launch(grad, 0.1, 0.9, 0, 0.0, 0, True, param, buf)
    (grid, block, args), _ = kernel.calls[0]
    assert block == (128,) and grid == (3,)  # ceil(300 / 128) blocks of a warp multiple
    assert args[0] is grad and args[7] is param and args[8] is buf
    assert [type(a) for a in args[1:7]] == [np.float64] * 4 + [np.int32] * 2
    assert args[6] == 1 and args[3] == 0.0
    assert type(args[9]) is np.int64 and args[9] == 300
    launch(grad[:0], 0.1, 0.9, 0, 0.0, 0, True, param[:0], buf[:0])
    assert len(kernel.calls) == 1  # nothing to launch for zero elements

    # all arrays raw: the size comes from size=
    launch = cuda._RawLaunch("bn_partial_stats", False)
    monkeypatch.setattr(launch, "_build", lambda t, p: kernel)
    x, acc = np.ones((2, 3, 4), np.float32), np.zeros(6)
    launch(x, 3, 4, 8, 1, 32, acc, size=96)
    (grid, _, args), _ = kernel.calls[1]
    assert grid == (1,) and args[-1] == 96 and args[0] is x  # raw arrays go as they are


def test_raw_launch_leaves_strided_outputs_and_unbuildable_kernels_to_the_elementwise_kernel(
        monkeypatch):
    launch = cuda._RawLaunch("relu_backward", False)
    raw, elementwise = _Recorder(), _Recorder()
    monkeypatch.setattr(launch, "_build", lambda t, p: raw)
    monkeypatch.setattr(launch, "_fallback", lambda: elementwise)
    g, y = np.ones((4, 6), np.float32), np.ones((4, 6), np.float32)
    strided = np.empty((4, 12), np.float32)[:, ::2]
    launch(g, y, strided)
    assert not raw.calls
    (args, kwargs), = elementwise.calls
    assert args[0].shape == (24,) and args[1].shape == (24,)  # raw inputs flattened for CuPy
    assert args[2] is strided and kwargs == {"size": None}

    # a kernel NVRTC cannot build (here: no CuPy at all) is remembered with the reason, and the
    # ElementwiseKernel runs instead
    launch = cuda._RawLaunch("add_relu", False)
    monkeypatch.setattr(launch, "_fallback", lambda: elementwise)
    monkeypatch.setattr(cuda, "_raw_code", lambda *a: (_ for _ in ()).throw(RuntimeError("nvrtc")))
    monkeypatch.setattr(cuda, "raw_errors", {})
    launch(g, y, np.empty_like(g))
    assert len(elementwise.calls) == 2
    assert cuda.raw_errors == {("add_relu", False, "float32", "float32"): "RuntimeError: nvrtc"}


def test_raw_launch_that_cupy_refuses_falls_back_for_good(monkeypatch):
    launch = cuda._RawLaunch("relu_backward", False)
    elementwise = _Recorder()

    def refuse(*args):
        raise TypeError("unsupported argument")
    monkeypatch.setattr(launch, "_build", lambda t, p: refuse)
    monkeypatch.setattr(launch, "_fallback", lambda: elementwise)
    monkeypatch.setattr(cuda, "raw_errors", {})
    g = np.ones(5, np.float32)
    launch(g, g, np.empty_like(g))
    launch(g, g, np.empty_like(g))
    assert len(elementwise.calls) == 2  # the second call goes straight to the fallback
    assert "TypeError: unsupported argument" in cuda.raw_errors[
        ("relu_backward", False, "float32", "float32")]

    # MINIDL_CUDA_RAW_KERNELS=0 (read at import): CuPy's ElementwiseKernel for every kernel
    monkeypatch.setattr(cuda._RawLaunch, "enabled", False)
    launch = cuda._RawLaunch("relu_backward", False)
    monkeypatch.setattr(launch, "_build", lambda t, p: pytest.fail("built while switched off"))
    monkeypatch.setattr(launch, "_fallback", lambda: elementwise)
    launch(g, g, np.empty_like(g))
    assert len(elementwise.calls) == 3


def test_batch_norm_sum_buffers_are_left_zeroed(run):
    """The reductions' float64 sums live in per-size buffers that the finalising kernels set
    back to zero: no memset before the next batch norm."""
    rng = np.random.default_rng(16)
    x = run.to_device(rng.standard_normal((4, 5, 3, 3)).astype(np.float32))
    w = run.to_device(np.ones(5, np.float32))
    y, mean, invstd = cuda.batch_norm_train(x, w, w, None, None, 0.1, 1e-5, True)
    cuda.batch_norm_backward(y, x, y, mean, invstd, w, True)
    buffers = [b for key, b in cuda._sum_buffers.items() if key[2] == 10]
    assert buffers and all(b.dtype == np.float64 for b in buffers)
    assert buffers and all(not run.to_host(b).any() for b in buffers)


def test_batch_norm_drops_its_sum_buffer_when_a_launch_fails(monkeypatch):
    sums = np.zeros(4)
    monkeypatch.setattr(cuda, "_sum_buffers", {(0, 0, 4, np.float64): sums})

    def broken(name, wide=False):
        def launch(*args, size=None):
            if name == "bn_finalize":
                raise RuntimeError("launch failed")
        return launch
    monkeypatch.setattr(cuda, "_kernel", broken)
    from _fake_gpu import FakeCuPy
    fake = FakeCuPy()
    monkeypatch.setattr(backend, "_cupy", fake)
    monkeypatch.setattr(backend, "_cupy_checked", True)
    x = fake.asarray(np.ones((3, 2, 2, 2), np.float32))
    with pytest.raises(RuntimeError, match="launch failed"):
        cuda.batch_norm_train(x, None, None, None, None, 0.1, 1e-5)
    assert (0, 0, 4, np.float64) not in cuda._sum_buffers  # half-used sums are never reused


@needs_cuda
def test_cast_kernel_rounds_as_cupy_does():
    """minidl's cast between float32 and the 16-bit types agrees bit for bit with CuPy's
    astype (round to nearest even), both ways, infinities and NaN included."""
    import ml_dtypes

    cp = backend.require_cuda()
    x = np.random.default_rng(17).standard_normal(1000).astype(np.float32) * 300
    x[:4] = [np.inf, -np.inf, np.nan, 1 + 2 ** -9]
    xd = cp.asarray(x)
    for low in (np.float16, ml_dtypes.bfloat16):
        got, want = cuda.astype(xd, low), xd.astype(low)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(cp.asnumpy(got).view(np.uint16),
                                      cp.asnumpy(want).view(np.uint16))
        back = cuda.astype(want, np.float32)
        np.testing.assert_array_equal(cp.asnumpy(back), cp.asnumpy(want.astype(np.float32)))


def test_cast_wrapper_leaves_other_dtypes_and_layouts_to_astype(run):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    got = cuda.astype(run.to_device(x), np.float32)
    np.testing.assert_array_equal(run.to_host(got), x)
    got = cuda.astype(run.to_device(x)[:, ::2], np.float64)  # float64 and strided: astype's job
    assert run.to_host(got).dtype == np.float64
    np.testing.assert_array_equal(run.to_host(got), x[:, ::2])


# the 16-bit types autocast sends to these kernels (optimizers and the loss run in float32)
_LOW_PRECISION_KERNELS = ["cast", "im2col", "col2im", "max_pool2d_forward", "max_pool2d_backward",
                          "cols_to_nchw", "nchw_to_cols", "add_relu", "relu_backward",
                          "bn_partial_stats", "bn_finalize", "bn_normalize", "bn_partial_grad",
                          "bn_finalize_grad", "bn_input_grad", "bn_eval_coef", "unscale_grads"]


@needs_cuda
def test_every_kernel_builds_as_a_raw_kernel_on_the_gpu():
    """NVRTC compiles each kernel for float32 and float64, and the ones mixed precision uses for
    float16 and bfloat16 (with float32 per-channel numbers): none falls back to the slower
    ElementwiseKernel launch."""
    import ml_dtypes

    from minidl.backend.dtypes import channel_dtype

    cases = [(name, np.dtype(t)) for name in cuda.SPECS for t in (np.float32, np.float64)]
    cases += [(name, np.dtype(t)) for name in _LOW_PRECISION_KERNELS
              for t in (np.float16, ml_dtypes.bfloat16)]
    failed = {}
    for name, t in cases:
        for wide in (False, True):
            if cuda._RawLaunch(name, wide)._build(t, channel_dtype(t)) is None:
                failed[name, wide, str(t)] = cuda.raw_errors.get(
                    (name, wide, str(t), str(channel_dtype(t))), "?")[:500]
    assert not failed, failed


# ---- fused layout, activation, loss and optimizer kernels -----------------------------------
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
def test_cols_to_nchw_matches_generic(run, with_bias):
    rng = np.random.default_rng(4)
    n, co, oh, ow = 3, 5, 4, 2
    y2 = rng.standard_normal((co, n * oh * ow)).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32) if with_bias else None
    want = y2.reshape(co, n, oh, ow).transpose(1, 0, 2, 3) + (b[:, None, None] if with_bias else 0)
    got = run.to_host(cuda.cols_to_nchw(run.to_device(y2), None if b is None else run.to_device(b),
                                        n, oh, ow))
    assert got.shape == (n, co, oh, ow) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_relu_backward_passes_the_gradient_where_the_output_is_positive(run):
    y = np.array([[0.0, 2.0, 0.0], [1e-30, 0.0, 3.0]], dtype=np.float32)
    g = np.array([[5.0, -1.0, np.nan], [4.0, 7.0, 2.0]], dtype=np.float32)
    got = run.to_host(cuda.relu_backward(run.to_device(g), run.to_device(y)))
    np.testing.assert_array_equal(got, [[0.0, -1.0, 0.0], [4.0, 0.0, 2.0]])


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("classes", [1, 10, 1000])
def test_softmax_cross_entropy_matches_generic(run, dtype, classes):
    rng = np.random.default_rng(5)
    n = 7
    logits = (rng.standard_normal((n, classes)) * 5).astype(dtype)
    logits[0] += 1e4  # large logits: the max is subtracted before exp
    target = rng.integers(0, classes, n)
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    losses, prob = cuda.softmax_cross_entropy(run.to_device(logits), run.to_device(target))
    losses, prob = run.to_host(losses), run.to_host(prob)
    assert losses.dtype == prob.dtype == dtype
    tol = dict(rtol=2e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(losses, -logp[np.arange(n), target], **tol)
    np.testing.assert_allclose(prob, np.exp(logp), **tol)

    onehot = np.eye(classes)[target]
    for scale, divisor, want_scale in [(np.asarray(2.0, dtype), n, 2.0 / n),
                                       (np.asarray(1.5, dtype), 1, 1.5),
                                       (np.arange(n, dtype=dtype), 1, np.arange(n)[:, None])]:
        grad = run.to_host(cuda.softmax_cross_entropy_backward(
            run.to_device(prob), run.to_device(target), run.to_device(scale), divisor))
        assert grad.dtype == dtype
        np.testing.assert_allclose(grad, (prob - onehot) * want_scale, **tol)


def test_softmax_cross_entropy_takes_int32_targets_and_a_nan_row(run):
    logits = np.array([[1.0, np.nan, 0.0], [1.0, 2.0, 3.0]], dtype=np.float32)
    target = np.array([0, 2], dtype=np.int32)
    losses, prob = cuda.softmax_cross_entropy(run.to_device(logits), run.to_device(target))
    losses, prob = run.to_host(losses), run.to_host(prob)
    assert np.isnan(losses[0]) and np.isnan(prob[0]).all()
    np.testing.assert_allclose(losses[1], np.log(np.exp([-2.0, -1.0, 0.0]).sum()), rtol=1e-6)


SGD_CONFIGS = [dict(momentum=0.0), dict(momentum=0.0, weight_decay=0.1),
               dict(momentum=0.9), dict(momentum=0.9, dampening=0.3, weight_decay=0.01),
               dict(momentum=0.8, nesterov=True, weight_decay=0.05)]


def _reference_steps(opt_class, config, p0, grads):
    """minidl.optim's update on the CPU (its one-pass numba SGD kernel, or numpy expressions),
    which tests/test_optim.py checks against torch.optim."""
    p = minidl.nn.Parameter(minidl.tensor(p0.copy()))
    opt = opt_class([p], **config)
    for g in grads:
        p.grad = minidl.tensor(g)
        opt.step()
    return p.data


@pytest.mark.parametrize("config", SGD_CONFIGS, ids=str)
def test_fused_sgd_matches_the_generic_update(run, config):
    rng = np.random.default_rng(6)
    p0 = rng.standard_normal((4, 3)).astype(np.float32)
    grads = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(3)]
    want = _reference_steps(minidl.optim.SGD, dict(lr=0.1, **config), p0, grads)
    p, state = run.to_device(p0.copy()), {}
    full = dict(dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False), **config)
    for g in grads:
        cuda.sgd_update(p, run.to_device(g), state, 0.1, full["momentum"], full["dampening"],
                        full["weight_decay"], full["nesterov"])
    np.testing.assert_allclose(run.to_host(p), want, rtol=1e-6, atol=1e-7)
    assert ("momentum_buffer" in state) == bool(full["momentum"])


@pytest.mark.parametrize("config", [c for c in SGD_CONFIGS if c["momentum"]], ids=str)
def test_sgd_for_many_parameters_in_one_launch_matches_one_by_one(run, config):
    """The multi-tensor kernel (a binary search over a table of addresses) steps tensors of
    different sizes exactly as the one-tensor kernel steps each."""
    rng = np.random.default_rng(9)
    shapes = [(4, 3), (7,), (1,), (2, 2, 2), (300,)]
    p0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(3)]
    full = dict(dict(dampening=0.0, weight_decay=0.0, nesterov=False), **config)
    args = (0.1, full["momentum"], full["dampening"], full["weight_decay"], full["nesterov"])
    params = [run.to_device(p.copy()) for p in p0]
    states = [{} for _ in shapes]
    for p, g, state in zip(params, grads[0], states):  # the first step makes the buffers
        cuda.sgd_update(p, run.to_device(g), state, *args)
    bufs = [state["momentum_buffer"] for state in states]
    for step in grads[1:]:
        assert cuda.sgd_update_many(params, [run.to_device(g) for g in step], bufs, *args)
    for k, p in enumerate(params):
        want = _reference_steps(minidl.optim.SGD, dict(lr=0.1, **config), p0[k],
                                [g[k] for g in grads])
        np.testing.assert_allclose(run.to_host(p), want, rtol=1e-6, atol=1e-7)

    # what it does not take is left to the one-by-one path, untouched
    before = [run.to_host(p).copy() for p in params]
    odd = run.to_device(np.zeros((8, 6), np.float32))[:, ::2]
    assert not cuda.sgd_update_many(params[:1] + [odd], [params[0], odd], bufs[:1] + [odd],
                                    *args)
    assert not cuda.sgd_update_many([run.to_device(np.zeros(3, np.float16))],
                                    [run.to_device(np.zeros(3, np.float16))],
                                    [run.to_device(np.zeros(3, np.float16))], *args)
    for b, p in zip(before, params):
        np.testing.assert_array_equal(run.to_host(p), b)


def test_sgd_for_many_parameters_steps_one_by_one_when_no_kernel_takes_it(monkeypatch):
    def refuse(name, wide=False):
        def launch(*args, size=None):
            raise TypeError("cannot determine T")
        return launch
    monkeypatch.setattr(cuda, "_kernel", refuse)
    monkeypatch.setattr(cuda, "raw_errors", {})
    p, g, b = (np.ones(4, np.float32) for _ in range(3))
    assert not cuda.sgd_update_many([p], [g], [b], 0.1, 0.9, 0.0, 0.0, False)
    np.testing.assert_array_equal(p, 1)  # nothing ran
    assert "cannot determine T" in cuda.raw_errors["sgd_momentum_many"]
    monkeypatch.setattr(cuda, "_kernel", lambda *a: pytest.fail("tried again"))
    assert not cuda.sgd_update_many([p], [g], [b], 0.1, 0.9, 0.0, 0.0, False)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_fused_adam_matches_the_generic_update(run, weight_decay):
    rng = np.random.default_rng(7)
    p0 = rng.standard_normal(11).astype(np.float32)
    grads = [rng.standard_normal(11).astype(np.float32) for _ in range(4)]
    b1, b2, lr, eps = 0.9, 0.99, 0.01, 1e-8
    want = _reference_steps(minidl.optim.Adam, dict(lr=lr, betas=(b1, b2), eps=eps,
                                                    weight_decay=weight_decay), p0, grads)
    p = run.to_device(p0.copy())
    m, v = run.to_device(np.zeros_like(p0)), run.to_device(np.zeros_like(p0))
    for t, g in enumerate(grads, 1):
        cuda.adam_update(p, run.to_device(g), m, v, lr / (1 - b1 ** t), b1, b2,
                         np.sqrt(1 - b2 ** t), eps, weight_decay)
    np.testing.assert_allclose(run.to_host(p), want, rtol=1e-6, atol=1e-7)


# ---- batch norm: partial sums, per-channel finish, normalise; and the backward twins --------
# (N, C, spatial...): a 2-D input (BatchNorm1d), planes shorter and longer than a warp, one
# sample, and a channel count that gives several reduction slots per plane.
BN_SHAPES = [(5, 3), (4, 3, 2, 5), (2, 6, 7, 7), (1, 2, 9, 11), (3, 4, 33, 3), (2, 3, 2, 2, 3),
             (2, 2, 48, 48), (9, 3, 5, 5)]


@pytest.mark.parametrize("relu", [False, True], ids=["plain", "relu"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batch_norm_kernels_match_generic(run, shape, dtype, relu):
    rng = np.random.default_rng(11)
    c = shape[1]
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    w, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    rm, rv = rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)

    want_rm, want_rv = rm.copy(), rv.copy()
    want = generic.batch_norm_train(x, w, b, want_rm, want_rv, 0.1, 1e-5, relu)
    got_rm, got_rv = run.to_device(rm), run.to_device(rv)
    got = cuda.batch_norm_train(run.to_device(x), run.to_device(w), run.to_device(b), got_rm,
                                got_rv, 0.1, 1e-5, relu)
    for name, g_, w_ in zip(("y", "mean", "invstd"), got, want):
        g_ = run.to_host(g_)
        assert g_.dtype == dtype, name
        np.testing.assert_allclose(g_, w_, **tol, err_msg=name)
    np.testing.assert_allclose(run.to_host(got_rm), want_rm, **tol)
    np.testing.assert_allclose(run.to_host(got_rv), want_rv, **tol)

    y, mean, invstd = want
    gy = rng.standard_normal(shape).astype(dtype)
    want_g = generic.batch_norm_backward(gy, x, y, mean, invstd, w, relu)
    got_g = cuda.batch_norm_backward(run.to_device(gy), run.to_device(x), run.to_device(y),
                                     run.to_device(mean), run.to_device(invstd),
                                     run.to_device(w), relu)
    for name, g_, w_ in zip(("gx", "gw", "gb"), got_g, want_g):
        np.testing.assert_allclose(run.to_host(g_), w_, **tol, err_msg=name)

    # without affine parameters and without running statistics
    want = generic.batch_norm_train(x, None, None, None, None, 0.1, 1e-5, relu)
    got = cuda.batch_norm_train(run.to_device(x), None, None, None, None, 0.1, 1e-5, relu)
    np.testing.assert_allclose(run.to_host(got[0]), want[0], **tol)
    want_g = generic.batch_norm_backward(gy, x, want[0], want[1], want[2], None, relu)
    got_g = cuda.batch_norm_backward(run.to_device(gy), run.to_device(x), got[0], got[1], got[2],
                                     None, relu)
    for g_, w_ in zip(got_g, want_g):
        np.testing.assert_allclose(run.to_host(g_), w_, **tol)


def test_batch_norm_kernel_statistics_hold_at_a_large_offset(run):
    """float32 values near 1e4 with unit spread: sum(x^2)/n - mean^2 in float32 would lose the
    variance entirely; the shifted float64 sums keep it to float32's resolution of x."""
    x = (1e4 + np.random.default_rng(12).standard_normal((8, 3, 16, 16))).astype(np.float32)
    x64 = x.astype(np.float64)
    want = generic.batch_norm_train(x64, None, None, None, None, 0.1, 1e-5)
    y, mean, invstd = cuda.batch_norm_train(run.to_device(x), None, None, None, None, 0.1, 1e-5)
    np.testing.assert_allclose(run.to_host(mean), want[1], rtol=1e-7)
    np.testing.assert_allclose(run.to_host(invstd), want[2], rtol=1e-5)
    np.testing.assert_allclose(run.to_host(y), want[0], atol=2e-3)  # x itself is rounded by 1e-3


def test_batch_norm_running_stats_of_another_dtype(run):
    """float64 input with float32 running statistics (a gradient check of a float32 module):
    the update happens outside the kernel, in the statistics' own dtype."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((4, 2, 3, 3))
    rm, rv = np.zeros(2, np.float32), np.ones(2, np.float32)
    want_rm, want_rv = rm.copy(), rv.copy()
    generic.batch_norm_train(x, None, None, want_rm, want_rv, 0.1, 1e-5)
    got_rm, got_rv = run.to_device(rm), run.to_device(rv)
    cuda.batch_norm_train(run.to_device(x), None, None, got_rm, got_rv, 0.1, 1e-5)
    assert run.to_host(got_rm).dtype == np.float32
    np.testing.assert_allclose(run.to_host(got_rm), want_rm, rtol=1e-6)
    np.testing.assert_allclose(run.to_host(got_rv), want_rv, rtol=1e-6)


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("relu", [False, True], ids=["no-relu", "relu"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_batch_norm_eval_matches_the_running_statistics_formula(run, dtype, relu, affine):
    rng = np.random.default_rng(18)
    x = rng.standard_normal((3, 4, 5, 2)).astype(dtype)
    rm, rv = rng.standard_normal(4).astype(dtype), rng.uniform(0.5, 2, 4).astype(dtype)
    w, b = (rng.standard_normal(4).astype(dtype) for _ in range(2)) if affine else (None, None)
    inv = 1 / np.sqrt(rv.astype(np.float64) + 1e-5)
    scale = inv * (w if affine else 1)
    shift = (b if affine else 0) - rm * scale
    want = x * scale[:, None, None] + shift[:, None, None]
    if relu:
        want = np.maximum(want, 0)
    dev = run.to_device
    y, invstd = cuda.batch_norm_eval(dev(x), dev(rm), dev(rv), None if w is None else dev(w),
                                     None if b is None else dev(b), 1e-5, relu)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    assert run.to_host(y).dtype == dtype
    np.testing.assert_allclose(run.to_host(y), want, **tol)
    np.testing.assert_allclose(run.to_host(invstd), inv, **tol)


@pytest.mark.parametrize("relu", [False, True], ids=["plain", "relu"])
@pytest.mark.parametrize("shape", [(5, 3), (2, 4, 3, 5)], ids=str)
def test_channel_affine_matches_generic(run, shape, relu):
    rng = np.random.default_rng(14)
    x = rng.standard_normal(shape).astype(np.float32)
    scale, shift = (rng.standard_normal(shape[1]).astype(np.float32) for _ in range(2))
    want = generic.channel_affine(x, scale, shift, relu)
    got = run.to_host(cuda.channel_affine(run.to_device(x), run.to_device(scale),
                                          run.to_device(shift), relu))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)

@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_unscale_grads_multiplies_in_place_and_flags_inf_and_nan(run, dtype):
    """GradScaler's fused kernel: grad *= inv_scale in place, and the one-element flag set
    where any gradient holds an inf or a NaN (and left alone where all are finite)."""
    rng = np.random.default_rng(8)
    inv_scale = float(np.float32(1.0 / 2 ** 13))
    grads = [rng.standard_normal(s).astype(dtype) * 2 ** 13 for s in [(5, 3), (7,), (2, 2, 2)]]
    device_grads = [run.to_device(g.copy()) for g in grads]
    found = run.to_device(np.zeros(1, np.int32))
    cuda.unscale_grads(device_grads, inv_scale, found)
    assert run.to_host(found)[0] == 0
    for g, d in zip(grads, device_grads):
        np.testing.assert_array_equal(run.to_host(d), g * dtype(inv_scale))

    for bad in (np.inf, -np.inf, np.nan):
        grads[1][4] = bad
        device_grads = [run.to_device(g.copy()) for g in grads]
        found = run.to_device(np.zeros(1, np.int32))
        cuda.unscale_grads(device_grads, inv_scale, found)
        assert run.to_host(found)[0] == 1, bad
        np.testing.assert_array_equal(run.to_host(device_grads[0]), grads[0] * dtype(inv_scale))
    empty = run.to_device(np.zeros(0, dtype))
    cuda.unscale_grads([empty], 0.5, found)  # nothing to launch


def test_nchw_to_cols_and_add_relu_match_numpy(run):
    rng = np.random.default_rng(15)
    g = rng.standard_normal((3, 4, 2, 5)).astype(np.float32)
    g2, gb = cuda.nchw_to_cols(run.to_device(g))
    assert gb is None  # left to the caller: most convs have no bias
    np.testing.assert_array_equal(run.to_host(g2), g.transpose(1, 0, 2, 3).reshape(4, -1))
    a, b = g, rng.standard_normal(g.shape).astype(np.float32)
    a[0, 0, 0, 0] = np.nan
    got = run.to_host(cuda.add_relu(run.to_device(a), run.to_device(b)))
    np.testing.assert_array_equal(got, np.maximum(a + b, 0))


def test_magic_division_is_exact_for_31_bit_numerators():
    """The kernels divide by multiply and shift (cuda.PREAMBLE): exact for every divisor and
    every numerator below 2^31, checked at the edges and at random."""
    rng = np.random.default_rng(16)
    divisors = [1, 2, 3, 5, 7, 49, 56, 64, 196, 3136, 12544, 65535, 2**20 + 1, 2**31 - 1]
    divisors += [int(d) for d in rng.integers(1, 2**31 - 1, 40)]
    for d in divisors:
        packed = cuda._magic(d)
        m, shift = packed & 0xFFFFFFFF, packed >> 32
        n = np.concatenate([np.arange(0, 3 * d, max(1, d // 7))[:50], rng.integers(0, 2**31, 200),
                            [2**31 - 1, 2**31 - 2, d - 1, d, d + 1]]).astype(np.uint64)
        n = n[n < 2**31]
        q = (n * np.uint64(m)) >> np.uint64(shift)
        np.testing.assert_array_equal(q, n // np.uint64(d), err_msg=f"divisor {d}")


# ---- recurrent steps ---------------------------------------------------------------------
def _sig(v):
    return 1 / (1 + np.exp(-v))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_lstm_and_gru_step_kernels_match_numpy(run, dtype):
    """One LSTM and one GRU time step, forward and backward, against the same arithmetic in
    numpy (written from the equations, not from nn/rnn.py)."""
    rng = np.random.default_rng(17)
    n, hid = 3, 5
    tol = dict(rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6 if dtype == np.float32
               else 1e-13)
    d = run.to_device
    # LSTM forward
    xw, gh = (rng.standard_normal((n, 4 * hid)).astype(dtype) * 3 for _ in range(2))
    bias, c_prev = rng.standard_normal(4 * hid).astype(dtype), rng.standard_normal((n, hid)).astype(dtype)
    acts, c_out, h_out = d(np.zeros((n, 4 * hid), dtype)), d(np.zeros((n, hid), dtype)), d(np.zeros((n, hid), dtype))
    cuda.lstm_step_forward(d(xw), d(gh), d(bias), d(c_prev), acts, c_out, h_out)
    v = (xw + gh + bias).astype(np.float64)
    i, f, g, o = _sig(v[:, :hid]), _sig(v[:, hid:2 * hid]), np.tanh(v[:, 2 * hid:3 * hid]), _sig(v[:, 3 * hid:])
    c = f * c_prev + i * g
    np.testing.assert_allclose(run.to_host(acts), np.concatenate([i, f, g, o], axis=1), **tol)
    np.testing.assert_allclose(run.to_host(c_out), c, **tol)
    np.testing.assert_allclose(run.to_host(h_out), o * np.tanh(c), **tol)
    # LSTM backward
    a = run.to_host(acts).astype(np.float64)
    c_t = run.to_host(c_out)
    dh, dc0 = (rng.standard_normal((n, hid)).astype(dtype) for _ in range(2))
    g_row = rng.standard_normal((n, 3 + hid)).astype(dtype)  # c_t's gradient at columns 3..
    gc = g_row[:, 3:]
    dc, da = d(dc0.copy()), d(np.zeros((n, 4 * hid), dtype))
    cuda.lstm_step_backward(d(dh), dc, d(g_row), 3, d(run.to_host(acts)), d(c_prev), d(c_t), da)
    i, f, g, o = a[:, :hid], a[:, hid:2 * hid], a[:, 2 * hid:3 * hid], a[:, 3 * hid:]
    tc = np.tanh(c_t.astype(np.float64))
    dcv = dc0 + gc + dh * o * (1 - tc ** 2)
    want = np.concatenate([dcv * g * i * (1 - i), dcv * c_prev * f * (1 - f), dcv * i * (1 - g * g),
                           dh * tc * o * (1 - o)], axis=1)
    np.testing.assert_allclose(run.to_host(da), want, **tol)
    np.testing.assert_allclose(run.to_host(dc), dcv * f, **tol)
    # GRU forward
    xw, gh = (rng.standard_normal((n, 3 * hid)).astype(dtype) * 3 for _ in range(2))
    bias, h_prev = rng.standard_normal(3 * hid).astype(dtype), rng.standard_normal((n, hid)).astype(dtype)
    acts, hn, h_out = d(np.zeros((n, 3 * hid), dtype)), d(np.zeros((n, hid), dtype)), d(np.zeros((n, hid), dtype))
    cuda.gru_step_forward(d(xw), d(gh), d(bias), d(h_prev), acts, hn, h_out)
    v = (xw + gh + bias).astype(np.float64)
    r, z = _sig(v[:, :hid]), _sig(v[:, hid:2 * hid])
    ghn = gh[:, 2 * hid:] + bias[2 * hid:]
    nn_ = np.tanh(xw[:, 2 * hid:] + r * ghn)
    np.testing.assert_allclose(run.to_host(acts), np.concatenate([r, z, nn_], axis=1), **tol)
    np.testing.assert_allclose(run.to_host(hn), ghn, **tol)
    np.testing.assert_allclose(run.to_host(h_out), nn_ + z * (h_prev - nn_), **tol)
    # GRU backward
    a = run.to_host(acts).astype(np.float64)
    r, z, nn_ = a[:, :hid], a[:, hid:2 * hid], a[:, 2 * hid:]
    dxw, dgh, carry = (d(np.zeros(s, dtype)) for s in ((n, 3 * hid), (n, 3 * hid), (n, hid)))
    cuda.gru_step_backward(d(dh), d(run.to_host(acts)), hn, d(h_prev), dxw, dgh, carry)
    dxn = dh * (1 - z) * (1 - nn_ ** 2)
    dxr = dxn * run.to_host(hn) * r * (1 - r)
    dxz = dh * (h_prev - nn_) * z * (1 - z)
    np.testing.assert_allclose(run.to_host(dxw), np.concatenate([dxr, dxz, dxn], axis=1), **tol)
    np.testing.assert_allclose(run.to_host(dgh), np.concatenate([dxr, dxz, dxn * r], axis=1), **tol)
    np.testing.assert_allclose(run.to_host(carry), dh * z, **tol)
    assert cuda.rnn_step_fits(xw, gh) and not cuda.rnn_step_fits(xw, gh.astype(np.float16))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_activation_kernels_match_numpy(run, dtype):
    """The one-launch sigmoid, SiLU and GELU (both forms), forward and backward, against
    float64 formulas (GELU's exact form through math.erfc)."""
    from math import erfc

    x = np.concatenate([np.linspace(-12, 12, 241), [0.0, -0.0]]).astype(dtype)
    g = np.random.default_rng(18).standard_normal(x.shape).astype(dtype)
    v = x.astype(np.float64)
    sig = 1 / (1 + np.exp(-v))
    phi = np.array([0.5 * erfc(-t / np.sqrt(2)) for t in v])
    z2 = 2 * np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3)
    s2, sn2 = 1 / (1 + np.exp(-z2)), 1 / (1 + np.exp(z2))
    forward = [sig, v * sig, v * phi, v * s2]
    backward = [sig * (1 - sig), sig * (1 + v * (1 - sig)),
                phi + v * np.exp(-v * v / 2) / np.sqrt(2 * np.pi),
                s2 + 2 * v * s2 * sn2 * np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * v * v)]
    tol = dict(rtol=2e-6 if dtype == np.float32 else 1e-12, atol=1e-30)
    for op in range(4):
        y = run.to_host(cuda.activation_forward(run.to_device(x), op))
        np.testing.assert_allclose(y, forward[op], err_msg=f"op {op}", **tol)
        arg = y if op == 0 else x  # the sigmoid's backward takes its output
        gx = run.to_host(cuda.activation_backward(run.to_device(g), run.to_device(arg), op))
        want = g * (y.astype(np.float64) * (1 - y) if op == 0 else backward[op])
        np.testing.assert_allclose(gx, want, err_msg=f"op {op} backward",
                                   **dict(tol, atol=1e-6 if dtype == np.float32 else 1e-13))
