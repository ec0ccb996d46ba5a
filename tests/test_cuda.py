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
    monkeypatch.setattr(cuda, "_kernel", lambda name: HostKernel(lib, name))
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
