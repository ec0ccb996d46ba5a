"""bfloat16 (ml_dtypes', whose NumPy kind is 'V', not 'f') through the places that asked
``dtype.kind == "f"`` and so took it for a non-float: each test fails without its fix."""
import warnings

import numpy as np
import pytest

import minidl
from minidl.backend.dtypes import bfloat16_dtype

BF16 = bfloat16_dtype()


def _np(t):
    return np.asarray(t.detach().float().numpy() if hasattr(t, "detach") else t, np.float64)


# ---- nn.utils.clip_grad_norm_ / get_total_norm: the norm in the gradients' dtype ----------------
def test_clip_grad_norm_bfloat16_returns_bfloat16():
    p = minidl.nn.Parameter(minidl.ones(4, dtype=minidl.bfloat16))
    (p * 3).sum().backward()
    total = minidl.nn.utils.clip_grad_norm_([p], 1.0)
    assert total.dtype == minidl.bfloat16
    assert float(total) == 6.0
    np.testing.assert_allclose(_np(p.grad), 0.5, rtol=1e-2)
    assert minidl.nn.utils.get_total_norm([p.grad]).dtype == minidl.bfloat16
    # beside a float32 gradient, the promoted dtype: float32
    mixed = minidl.nn.utils.get_total_norm([p.grad, minidl.ones(4)])
    assert mixed.dtype == minidl.float32


def test_clip_grad_norm_bfloat16_parity():
    torch = pytest.importorskip("torch")
    values = np.array([3.0, -4.0, 0.5, 2.0], np.float32)
    p = minidl.nn.Parameter(minidl.tensor(values).to(minidl.bfloat16))
    (p * p).sum().backward()
    tp = torch.nn.Parameter(torch.tensor(values).to(torch.bfloat16))
    (tp * tp).sum().backward()
    got = minidl.nn.utils.clip_grad_norm_([p], 2.0)
    want = torch.nn.utils.clip_grad_norm_([tp], 2.0)
    assert str(got.dtype).split(".")[-1] == str(want.dtype).split(".")[-1] == "bfloat16"
    np.testing.assert_allclose(float(got), float(want.float()), rtol=1e-2)
    np.testing.assert_allclose(_np(p.grad), tp.grad.float().numpy(), rtol=2e-2, atol=1e-2)


# ---- optim: load_state_dict casts floating state (bfloat16 too) to the parameter's dtype --------
def test_optimizer_load_state_dict_casts_bfloat16_state():
    p = minidl.nn.Parameter(minidl.ones(3, dtype=minidl.bfloat16))
    opt = minidl.optim.Adam([p])
    p.grad = minidl.ones(3, dtype=minidl.bfloat16)
    opt.step()
    q = minidl.nn.Parameter(minidl.ones(3))
    opt2 = minidl.optim.Adam([q])
    opt2.load_state_dict(opt.state_dict())
    state = opt2.state[id(q)]
    assert state["exp_avg"].dtype == np.float32 and state["exp_avg_sq"].dtype == np.float32


def test_optimizer_load_state_dict_bfloat16_parity():
    torch = pytest.importorskip("torch")
    dtypes = {}
    for mod in (minidl, torch):
        p = mod.nn.Parameter(mod.ones(3, dtype=mod.bfloat16))
        opt = mod.optim.Adam([p])
        p.grad = mod.ones(3, dtype=mod.bfloat16)
        opt.step()
        q = mod.nn.Parameter(mod.ones(3))
        opt2 = mod.optim.Adam([q])
        opt2.load_state_dict(opt.state_dict())
        state = opt2.state[q] if mod is torch else opt2.state[id(q)]
        dtypes[mod.__name__] = str(state["exp_avg"].dtype).split(".")[-1]
    assert dtypes["minidl"] == dtypes["torch"] == "float32"


# ---- testing.make_tensor: low == high for bfloat16 is a full tensor with a warning -------------
def test_make_tensor_bfloat16_low_equals_high():
    with pytest.warns(FutureWarning):
        t = minidl.testing.make_tensor((5,), dtype=minidl.bfloat16, device="cpu", low=2, high=2)
    assert t.dtype == minidl.bfloat16
    np.testing.assert_array_equal(_np(t), 2.0)


# ---- linalg.vecdot takes bfloat16 ------------------------------------------------------------------
def test_vecdot_bfloat16_parity():
    torch = pytest.importorskip("torch")
    x = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]], np.float32)
    y = np.array([[2.0, 0.25, -1.0], [1.0, 1.0, 1.0]], np.float32)
    got = minidl.linalg.vecdot(minidl.tensor(x).to(minidl.bfloat16),
                               minidl.tensor(y).to(minidl.bfloat16))
    want = torch.linalg.vecdot(torch.tensor(x).bfloat16(), torch.tensor(y).bfloat16())
    assert got.dtype == minidl.bfloat16
    np.testing.assert_allclose(_np(got), want.float().numpy(), rtol=1e-2)


# ---- signal windows: torch.hann_window(..., dtype=torch.bfloat16) and the others ----------------
@pytest.mark.parametrize("name", ["hann_window", "hamming_window", "blackman_window",
                                  "bartlett_window", "kaiser_window"])
def test_windows_bfloat16_parity(name):
    torch = pytest.importorskip("torch")
    got = getattr(minidl, name)(7, dtype=minidl.bfloat16, requires_grad=True)
    want = getattr(torch, name)(7, dtype=torch.bfloat16)
    assert got.dtype == minidl.bfloat16 and got.requires_grad and got.is_leaf
    # torch computes the window in bfloat16 arithmetic; minidl rounds the float64 window once
    np.testing.assert_allclose(_np(got), want.float().numpy(), atol=1e-2)


def test_window_float16_too():
    w = minidl.hann_window(4, dtype=minidl.float16)
    assert w.dtype == minidl.float16
    np.testing.assert_allclose(_np(w), [0.0, 0.5, 1.0, 0.5], atol=1e-3)


# ---- nn.functional.affine_grid takes a bfloat16 theta ----------------------------------------------
def test_affine_grid_bfloat16_parity():
    torch = pytest.importorskip("torch")
    theta = np.array([[[0.5, 0.25, 0.0], [-0.25, 1.0, 0.5]]], np.float32)
    got = minidl.nn.functional.affine_grid(minidl.tensor(theta).to(minidl.bfloat16), (1, 1, 3, 4),
                                           align_corners=False)
    want = torch.nn.functional.affine_grid(torch.tensor(theta).bfloat16(), (1, 1, 3, 4),
                                           align_corners=False)
    assert got.dtype == minidl.bfloat16
    np.testing.assert_allclose(_np(got), want.float().numpy(), atol=2e-2)


# ---- poisson (and binomial) take bfloat16 rates --------------------------------------------------
def test_poisson_bfloat16():
    minidl.manual_seed(0)
    out = minidl.poisson(minidl.full((50,), 3.0, dtype=minidl.bfloat16))
    assert out.dtype == minidl.bfloat16
    values = _np(out)
    assert (values >= 0).all() and (values == np.round(values)).all() and values.mean() > 1
    draws = minidl.binomial(minidl.full((4,), 4.0, dtype=minidl.bfloat16),
                            minidl.full((4,), 0.5, dtype=minidl.bfloat16))
    assert draws.dtype == minidl.bfloat16 and ((_np(draws) >= 0) & (_np(draws) <= 4)).all()


def test_poisson_bfloat16_parity():
    torch = pytest.importorskip("torch")
    assert torch.poisson(torch.ones(3, dtype=torch.bfloat16)).dtype == torch.bfloat16
    assert minidl.poisson(minidl.ones(3, dtype=minidl.bfloat16)).dtype == minidl.bfloat16


# ---- forward AD: make_dual of bfloat16 -----------------------------------------------------------
def test_make_dual_bfloat16():
    fwAD = minidl.autograd.forward_ad
    with fwAD.dual_level():
        x = fwAD.make_dual(minidl.tensor([1.0, 2.0], dtype=minidl.bfloat16),
                           minidl.tensor([1.0, 0.5], dtype=minidl.bfloat16))
        primal, tangent = fwAD.unpack_dual(x * 3)
    assert primal.dtype == minidl.bfloat16
    np.testing.assert_allclose(_np(tangent), [3.0, 1.5])


def test_make_dual_bfloat16_parity():
    torch = pytest.importorskip("torch")
    with torch.autograd.forward_ad.dual_level():
        x = torch.autograd.forward_ad.make_dual(torch.ones(2, dtype=torch.bfloat16),
                                                torch.ones(2, dtype=torch.bfloat16))
        want = torch.autograd.forward_ad.unpack_dual(x * 3).tangent
    with minidl.autograd.forward_ad.dual_level():
        x = minidl.autograd.forward_ad.make_dual(minidl.ones(2, dtype=minidl.bfloat16),
                                                 minidl.ones(2, dtype=minidl.bfloat16))
        got = minidl.autograd.forward_ad.unpack_dual(x * 3).tangent
    np.testing.assert_allclose(_np(got), want.float().numpy())


# ---- set_default_tensor_type(BFloat16Tensor) -------------------------------------------------------
def test_set_default_tensor_type_bfloat16():
    before = minidl.get_default_dtype()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            minidl.set_default_tensor_type(minidl.BFloat16Tensor)
        assert minidl.get_default_dtype() == minidl.bfloat16
        assert minidl.tensor([1.5]).dtype == minidl.bfloat16
    finally:
        minidl.set_default_dtype(before)


# ---- vision: convert_image_dtype and make_grid on bfloat16 images ---------------------------------
def test_convert_image_dtype_bfloat16():
    from minidl.vision.transforms import ConvertImageDtype
    from minidl.vision.transforms.functional import convert_image_dtype

    u8 = minidl.from_numpy(np.array([[[0, 128, 255]]], np.uint8))
    x = convert_image_dtype(u8, minidl.bfloat16)
    assert x.dtype == minidl.bfloat16
    np.testing.assert_allclose(_np(x), [[[0.0, 128 / 255, 1.0]]], rtol=1e-2)
    assert ConvertImageDtype(minidl.bfloat16)(u8).dtype == minidl.bfloat16
    f32 = convert_image_dtype(x, minidl.float32)  # float to float: a cast, no rescaling
    assert f32.dtype == minidl.float32
    np.testing.assert_array_equal(f32.numpy(), _np(x).astype(np.float32))
    back = convert_image_dtype(minidl.tensor([[[0.0, 0.25]]], dtype=minidl.bfloat16), minidl.uint8)
    np.testing.assert_array_equal(back.numpy(), [[[0, 64]]])


def test_convert_image_dtype_bfloat16_parity():
    torch = pytest.importorskip("torch")
    from minidl.vision.transforms.functional import convert_image_dtype

    pixels = np.array([[[0, 1, 77, 128, 200, 255]]], np.uint8)
    got = convert_image_dtype(minidl.from_numpy(pixels), minidl.bfloat16)
    want = torch.from_numpy(pixels).to(torch.bfloat16) / 255  # torchvision's int -> float
    np.testing.assert_array_equal(_np(got), want.float().numpy())


def test_make_grid_normalize_keeps_bfloat16():
    from minidl.vision.utils import make_grid

    grid = make_grid(minidl.tensor([[[[0.0, 1.0], [2.0, 4.0]]]], dtype=minidl.bfloat16),
                     normalize=True)
    assert grid.dtype == minidl.bfloat16  # torchvision normalizes in place, in the dtype
    np.testing.assert_allclose(_np(grid)[0], [[0.0, 0.25], [0.5, 1.0]])


# ---- models.load_weights: bfloat16 weights are floating ------------------------------------------
def test_load_weights_bfloat16_state():
    from minidl.models.resnet import load_weights

    model = minidl.nn.Linear(2, 2)
    state = {k: v.data.astype(BF16) for k, v in model.state_dict().items()}
    load_weights(model, state)
    assert model.weight.dtype == minidl.float32
    np.testing.assert_array_equal(model.weight.detach().numpy(), state["weight"].astype(np.float32))
    bf_model = minidl.nn.Linear(2, 2).to(minidl.bfloat16)  # integers into a bfloat16 model
    ints = {k: np.ones(tuple(v.shape), np.int64) for k, v in bf_model.state_dict().items()}
    with pytest.raises(ValueError, match="expected floating-point tensors"):
        load_weights(bf_model, ints)


# ---- FSDP's freed-buffer placeholder and ONNX's constant comparison --------------------------------
def test_fsdp_placeholder_bfloat16_is_nan():
    from minidl.distributed.fsdp.fully_sharded_data_parallel import _placeholder

    out = _placeholder(np.ones((2, 3), BF16))
    assert out.dtype == BF16 and out.shape == (2, 3)
    assert np.isnan(out.astype(np.float32)).all()
    assert (_placeholder(np.ones(2, np.int64)) == 0).all()


def test_onnx_same_array_bfloat16_nan():
    from minidl.onnx import _same_array

    a = np.array([1.0, np.nan], np.float32).astype(BF16)
    assert _same_array(a, a.copy())
    assert not _same_array(a, np.array([2.0, np.nan], np.float32).astype(BF16))


# ---- sparse.softmax / log_softmax take bfloat16 (minidl takes float16 too; torch's CPU neither) ---
@pytest.mark.parametrize("log", [False, True])
def test_sparse_softmax_bfloat16(log):
    fn = minidl.sparse.log_softmax if log else minidl.sparse.softmax
    dense = minidl.tensor([[1.0, 0.0], [0.5, 2.0]])
    got = fn(dense.to(minidl.bfloat16).to_sparse(), 1)
    want = fn(dense.to_sparse(), 1)
    assert got.dtype == minidl.bfloat16
    np.testing.assert_allclose(_np(got.to_dense()), want.to_dense().numpy(), rtol=2e-2, atol=1e-2)


# ---- a bfloat16 NumPy scalar (what .numpy()[i] of a bfloat16 tensor gives) is a number ----------
def _bf16_scalar(value):
    return minidl.tensor([value], dtype=minidl.bfloat16).numpy()[0]


def test_bfloat16_numpy_scalar_is_a_number():
    from minidl.backend.dtypes import is_real_number

    s = _bf16_scalar(0.5)
    assert not isinstance(s, np.floating) and is_real_number(s)
    assert not is_real_number(np.bool_(True)) and not is_real_number("0.5")
    np.testing.assert_allclose(minidl.clamp(minidl.tensor([0.2, 0.9]), max=s).numpy(), [0.2, 0.5])
    np.testing.assert_allclose(minidl.full((2,), s).numpy(), [0.5, 0.5])
    opt = minidl.optim.SGD([minidl.nn.Parameter(minidl.ones(2))], lr=s)
    assert float(opt.param_groups[0]["lr"]) == 0.5
    assert float(minidl.quantile(minidl.tensor([0.0, 1.0, 2.0]), s)) == 1.0
    out = minidl.nn.functional.rms_norm(minidl.ones(2, 2), (2,), eps=_bf16_scalar(1.0))
    np.testing.assert_allclose(out.numpy(), 1 / np.sqrt(2), rtol=1e-6)
    p = minidl.nn.Parameter(minidl.ones(4))
    p.grad = minidl.full((4,), 3.0)
    minidl.nn.utils.clip_grad_norm_([p], _bf16_scalar(1.0))
    np.testing.assert_allclose(p.grad.numpy(), 0.5, rtol=1e-5)


# ---- isnan / isinf / isfinite / logical_not of bfloat16 are recorded for the ONNX tracer ---------
def test_bool_ops_of_bfloat16_are_recorded_for_a_tracer():
    from minidl import autograd

    class Hook:
        traces_untracked_ops = True

        def __init__(self):
            self.seen = []

        def forward(self, fn, tensors, kwargs):
            self.seen.append((type(fn).__name__, kwargs.get("op")))
            return fn.forward(*[t.data for t in tensors], **kwargs)

    x = minidl.tensor([1.0, float("nan"), float("inf"), 0.0], dtype=minidl.bfloat16)
    hook, prev = Hook(), autograd._profiler_hook
    autograd._profiler_hook = hook
    try:
        outs = [minidl.isnan(x), minidl.isinf(x), minidl.isfinite(x), minidl.logical_not(x)]
    finally:
        autograd._profiler_hook = prev
    assert [op for _, op in hook.seen] == ["isnan", "isinf", "isfinite", "logical_not"]
    expected = [[False, True, False, False], [False, False, True, False],
                [True, False, False, True], [False, False, False, True]]
    for out, want in zip(outs, expected):
        np.testing.assert_array_equal(out.numpy(), want)


def test_bfloat16_numpy_scalar_as_alpha_pad_value_ord_correction():
    s, two, one = _bf16_scalar(1.5), _bf16_scalar(2.0), _bf16_scalar(1.0)
    np.testing.assert_allclose(minidl.add(minidl.tensor([1.0, 2.0]), 1, alpha=s).numpy(),
                               [2.5, 3.5])
    with pytest.raises(TypeError, match="alpha must not be a float"):  # as a float alpha
        minidl.add(minidl.tensor([1, 2]), 1, alpha=s)
    np.testing.assert_allclose(minidl.nn.functional.pad(minidl.ones(2), (1, 1), value=s).numpy(),
                               [1.5, 1.0, 1.0, 1.5])
    assert float(minidl.linalg.vector_norm(minidl.tensor([3.0, 4.0]), ord=two)) == 5.0
    assert float(minidl.var(minidl.tensor([1.0, 2.0, 3.0]), correction=one)) == 1.0


# ---- nan_to_num of bfloat16; casts beyond a dtype's range -------------------------------------

INF, NAN = float("inf"), float("nan")


def test_nan_to_num_of_bfloat16_replaces_nan_and_infinities():
    x = minidl.tensor([NAN, INF, -INF, 1.5], dtype=minidl.bfloat16)
    y = minidl.nan_to_num(x).float().numpy()
    np.testing.assert_array_equal(y, [0.0, 3.3895313892515355e38, -3.3895313892515355e38, 1.5])
    y = minidl.nan_to_num(x, nan=1.5, posinf=-7.0, neginf=2.0).float().numpy()
    np.testing.assert_array_equal(y, [1.5, -7.0, 2.0, 1.5])
    assert minidl.nan_to_num(x).dtype == minidl.bfloat16
    w = minidl.tensor([NAN, 2.0, INF], dtype=minidl.bfloat16, requires_grad=True)
    minidl.nan_to_num(w).float().sum().backward()
    np.testing.assert_array_equal(w.grad.float().numpy(), [0.0, 1.0, 0.0])


def test_nan_to_num_bfloat16_parity():
    torch = pytest.importorskip("torch")
    v = [NAN, INF, -INF, 1.5, -0.0]
    for kw in ({}, {"nan": 1.5, "posinf": -7.0}, {"neginf": 2.0}):
        ours = minidl.nan_to_num(minidl.tensor(v, dtype=minidl.bfloat16), **kw)
        theirs = torch.nan_to_num(torch.tensor(v, dtype=torch.bfloat16), **kw)
        np.testing.assert_array_equal(ours.float().numpy(), theirs.float().numpy())
