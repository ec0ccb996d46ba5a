"""cuDNN convolutions (minidl/backend/cudnn.py).

On a GPU with cuDNN: forward, data gradient and filter gradient against PyTorch (float32,
rtol 1e-4) and against minidl's own im2col path, float64 finite differences through cuDNN,
16-bit data against float32, and the choice of algorithm. Without a GPU: the choice falls back
to im2col, the switches work, and (where the nvidia-cudnn wheel is installed) the descriptors
and output sizes agree with PyTorch's shape rule.
"""
from __future__ import annotations

import numpy as np
import pytest

import minidl
import minidl.nn.functional as F
from minidl.backend import cuda, cudnn
from minidl.testing import gradcheck

have_gpu = minidl.cuda_available()
needs_cudnn_gpu = pytest.mark.skipif(
    not (have_gpu and cudnn.is_available()),
    reason="needs an NVIDIA GPU with CuPy and cuDNN's library (pip install minidl[cudnn]): "
           + ("no GPU" if not have_gpu else str(cudnn.unavailable_reason())))
needs_library = pytest.mark.skipif(
    not cudnn.is_available(),
    reason=f"needs cuDNN's library (pip install minidl[cudnn]): {cudnn.unavailable_reason()}")

try:
    import torch
except ImportError:  # pragma: no cover - torch is a test extra
    torch = None

# (N, C_in, H, W), (C_out, kh, kw), stride, padding: ResNet-50's kinds and odd ones
SHAPES = [
    ((2, 3, 17, 15), (5, 3, 3), (1, 1), (1, 1)),
    ((2, 4, 16, 16), (6, 1, 1), (1, 1), (0, 0)),
    ((3, 4, 15, 16), (8, 1, 1), (2, 2), (0, 0)),
    ((1, 3, 23, 21), (4, 7, 7), (2, 2), (3, 3)),
    ((2, 8, 9, 11), (8, 3, 3), (2, 2), (1, 1)),
    ((2, 3, 10, 12), (4, 3, 5), (2, 1), (0, 2)),
]


def _data(shape, wshape, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    w = (rng.standard_normal((wshape[0], shape[1]) + wshape[1:]) * 0.3).astype(dtype)
    b = rng.standard_normal(wshape[0]).astype(dtype)
    return x, w, b


def _run(x, w, b, stride, padding, device, use_cudnn, dtype=None):
    previous = cudnn.enabled()
    cudnn.enabled(use_cudnn)
    try:
        xt = minidl.tensor(x, requires_grad=True, device=device)
        wt = minidl.tensor(w, requires_grad=True, device=device)
        bt = minidl.tensor(b, requires_grad=True, device=device)
        if dtype is not None:
            xt, wt, bt = (t.detach().to(dtype=dtype).requires_grad_() for t in (xt, wt, bt))
        y = F.conv2d(xt, wt, bt, stride=stride, padding=padding)
        algorithm = getattr(y._ctx, "cudnn", None)
        rng = np.random.default_rng(7)
        g = minidl.tensor(rng.standard_normal(y.shape).astype(np.float32), device=device)
        (y.float() * g).sum().backward()
        out = [y.float().numpy()] + [t.grad.float().numpy() for t in (xt, wt, bt)]
        return out, algorithm
    finally:
        cudnn.enabled(previous)


# ---- without a GPU ------------------------------------------------------------------------
def test_disabled_or_missing_cudnn_falls_back_to_im2col(monkeypatch):
    monkeypatch.setattr(cudnn, "_enabled", False)
    assert cuda.conv2d_algorithm((2, 3, 8, 8), (4, 3, 3, 3), (1, 1), (1, 1), True,
                                 np.float32) == "im2col"
    assert cuda.conv2d_algorithm((2, 3, 8, 8), (4, 3, 1, 1), (1, 1), (0, 0), True,
                                 np.float32) == "pointwise"
    monkeypatch.setattr(cudnn, "_enabled", True)
    monkeypatch.setattr(cudnn, "_lib", None)
    monkeypatch.setattr(cudnn, "_load_error", "no library here")
    assert not cudnn.usable(np.float32)
    assert cuda.conv2d_algorithm((2, 3, 8, 8), (4, 3, 3, 3), (1, 1), (1, 1), True,
                                 np.float32) == "im2col"
    with pytest.raises(cudnn.CudnnError, match="no library here"):
        cudnn.plan((2, 3, 8, 8), (4, 3, 3, 3), (1, 1), (1, 1), np.float32)


def test_backends_switch_turns_cudnn_off_and_on(monkeypatch):
    monkeypatch.setattr(cudnn, "_enabled", True)
    minidl.backends.cudnn.enabled = False
    assert not cudnn.enabled() and not cudnn.usable(np.float32)
    minidl.backends.cudnn.enabled = True
    assert cudnn.enabled()
    assert minidl.backends.cudnn.is_available() == (cudnn.version() is not None)


def test_library_search_takes_the_named_file_first(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIDL_CUDNN_LIBRARY", str(tmp_path / "libcudnn.so.9"))
    paths = cudnn.candidate_paths()
    assert paths[0] == str(tmp_path / "libcudnn.so.9")
    assert paths[-2:] == list(cudnn.LIBRARY_NAMES)


def test_math_type_follows_pytorch():
    assert cudnn.math_type("float32", False) == cudnn._FMA_MATH  # TF32 off: no tensor cores
    assert cudnn.math_type("float32", True) == cudnn._DEFAULT_MATH
    assert cudnn.math_type("float16", False) == cudnn._TENSOR_OP_MATH
    assert cudnn.math_type("bfloat16", False) == cudnn._TENSOR_OP_MATH
    assert cudnn.math_type("float64", True) == cudnn._FMA_MATH


@needs_library
@pytest.mark.parametrize("shape,wshape,stride,padding", SHAPES)
def test_descriptors_give_pytorchs_output_size(shape, wshape, stride, padding):
    w_shape = (wshape[0], shape[1]) + wshape[1:]
    for dtype in ("float32", "float16", "bfloat16", "float64"):
        p = cudnn.plan(shape, w_shape, stride, padding, dtype)
        oh = (shape[2] + 2 * padding[0] - wshape[1]) // stride[0] + 1
        ow = (shape[3] + 2 * padding[1] - wshape[2]) // stride[1] + 1
        assert p.y_shape == (shape[0], wshape[0], oh, ow)


@needs_library
def test_descriptor_of_mismatched_channels_is_refused():
    with pytest.raises(cudnn.CudnnError, match="output size"):
        cudnn.plan((2, 3, 8, 8), (4, 5, 3, 3), (1, 1), (1, 1), "float32")


# ---- on a GPU -----------------------------------------------------------------------------
@needs_cudnn_gpu
@pytest.mark.parametrize("api", ["graph", "legacy"])
@pytest.mark.parametrize("shape,wshape,stride,padding", SHAPES)
def test_cudnn_matches_im2col_and_torch(shape, wshape, stride, padding, api, monkeypatch):
    monkeypatch.setattr(cudnn, "_api", api)
    x, w, b = _data(shape, wshape)
    got, used = _run(x, w, b, stride, padding, "cuda", True)
    ref, used_ref = _run(x, w, b, stride, padding, "cuda", False)
    assert used and not used_ref
    for a, r in zip(got, ref):
        np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-4)
    if torch is not None:
        xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        y = torch.nn.functional.conv2d(xt, wt, bt, stride=stride, padding=padding)
        g = torch.tensor(np.random.default_rng(7).standard_normal(y.shape).astype(np.float32))
        (y * g).sum().backward()
        for a, r in zip(got, [y.detach(), xt.grad, wt.grad, bt.grad]):
            np.testing.assert_allclose(a, r.numpy(), rtol=1e-4, atol=1e-4)
    if api == "graph":  # the graph plans built: nothing fell back to the legacy API
        key = (shape, (wshape[0], shape[1]) + wshape[1:], stride, padding, "float32", False)
        import cupy

        handle = cudnn._handle(cupy)
        assert all(cudnn._graphs.get((d, handle.value) + key)
                   for d in ("forward", "data", "filter")), cudnn.graph_errors


@needs_cudnn_gpu
def test_cudnn_gradients_match_finite_differences_in_float64():
    rng = np.random.default_rng(3)
    x, w, b = (minidl.tensor(rng.standard_normal(s), dtype="float64", requires_grad=True,
                             device="cuda") for s in ((2, 3, 7, 6), (4, 3, 3, 3), (4,)))
    assert cudnn.enabled()
    assert F.conv2d(x, w, b, stride=2, padding=1)._ctx.cudnn
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), [x, w, b])


@needs_cudnn_gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cudnn_16_bit_convolutions_agree_with_float32(dtype):
    shape, wshape, stride, padding = (4, 16, 14, 14), (32, 3, 3), (1, 1), (1, 1)
    x, w, b = _data(shape, wshape)
    got, used = _run(x, w, b, stride, padding, "cuda", True, dtype=getattr(minidl, dtype))
    ref, _ = _run(x, w, b, stride, padding, "cuda", True)
    assert used
    tol = 2e-2 if dtype == "float16" else 8e-2
    for a, r in zip(got, ref):
        scale = np.abs(r).max()
        assert np.abs(a - r).max() <= tol * scale, (dtype, np.abs(a - r).max(), scale)


@needs_cudnn_gpu
def test_resnet50_block_shapes_all_find_cudnn_algorithms_and_graph_plans():
    import cupy

    for x_shape, w_shape, stride, padding in [
        ((32, 3, 224, 224), (64, 3, 7, 7), (2, 2), (3, 3)),
        ((32, 64, 56, 56), (64, 64, 3, 3), (1, 1), (1, 1)),
        ((32, 256, 56, 56), (128, 256, 1, 1), (1, 1), (0, 0)),
        ((32, 128, 56, 56), (128, 128, 3, 3), (2, 2), (1, 1)),
        ((32, 1024, 14, 14), (2048, 1024, 1, 1), (2, 2), (0, 0)),
    ]:
        for dtype in ("float32", "bfloat16"):
            p = cudnn.plan(x_shape, w_shape, stride, padding, dtype)
            handle = cudnn._handle(cupy)
            key = (x_shape, w_shape, stride, padding, dtype, False)
            for which in ("forward", "data", "filter"):
                assert p.algorithm(handle, which) is not None, (x_shape, w_shape, dtype, which)
                assert cudnn._graph(handle, which, key), cudnn.graph_errors


@needs_library
@pytest.mark.parametrize("which", ["forward", "data", "filter"])
def test_graph_operation_descriptors_build_and_refuse_a_wrong_output_shape(which):
    """The graph API's tensor, convolution and operation descriptors (no GPU needed for
    these): a consistent set finalizes, an output of the wrong size is refused."""
    import ctypes

    cudnn._backend_api()
    try:
        x = cudnn._btensor(1, (2, 3, 9, 7), "float32")
    except cudnn.CudnnError as exc:
        if "SUBLIBRARY" in str(exc):
            pytest.skip(f"cuDNN's engine libraries need the CUDA driver (libcuda), absent: {exc}")
        raise
    w = cudnn._btensor(2, (4, 3, 3, 3), "float32")
    conv = cudnn._bconv((2, 1), (1, 0), "float32")
    alpha, beta, conv_attr, roles = cudnn._A_OP[which]
    statuses = []
    for y_shape in ((2, 4, 5, 5), (2, 4, 6, 6)):
        y = cudnn._btensor(3, y_shape, "float32")
        op = cudnn._bcreate(cudnn._T_OP[which])
        cudnn._bset(op, alpha, cudnn._TY_FLOAT, ctypes.c_float(1.0))
        cudnn._bset(op, beta, cudnn._TY_FLOAT, ctypes.c_float(0.0))
        cudnn._bset(op, conv_attr, cudnn._TY_DESCRIPTOR, cudnn._descs(conv))
        for role, attr in roles.items():
            cudnn._bset(op, attr, cudnn._TY_DESCRIPTOR, cudnn._descs({"x": x, "w": w, "y": y}[role]))
        statuses.append(cudnn._lib.cudnnBackendFinalize(op))
    assert statuses[0] == 0 and statuses[1] != 0
