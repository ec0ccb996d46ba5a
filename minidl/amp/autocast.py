"""``autocast``: mixed precision with PyTorch's per-op policy.

Inside ``with minidl.autocast("cuda", dtype=minidl.bfloat16):`` every op that goes through
``Function.apply`` first asks :func:`_run` (installed as ``tensor._autocast_hook``) how to run:

- matrix products (matmul, linear, conv2d) run in the low dtype. On CUDA that is cuBLAS with
  compute type 32F (CuPy's choice for float16/bfloat16 GEMMs), so sums accumulate in float32.
  NumPy has no such GEMM, so on the CPU the inputs are rounded to the low dtype, multiplied in
  float32 and the product rounded: the numbers PyTorch's CPU autocast produces.
- ops that lose too much in 16 bits run in float32 and return float32 (the ``FLOAT32`` table);
- reductions and normalisations in ``FLOAT32_INSIDE`` compute in float32 and return the input's
  dtype (batch_norm does this in its own wrapper, autocast or not);
- every other op runs in the dtype of its inputs, the wider one when they differ;
- ``BANNED`` ops raise inside a region (binary_cross_entropy on CUDA, as in PyTorch).

The tables follow PyTorch's for each device (aten/src/ATen/autocast_mode.cpp): its CPU policy
keeps softmax and sum in the low dtype, its CUDA policy runs them in float32. Parameters are
never changed: the casts are ops in the graph, so a float32 parameter's gradient comes back
through the cast as float32.
"""
from __future__ import annotations

import functools

from ..ops import Cast
from ..tensor import set_autocast_hook
from ..backend.dtypes import as_dtype, bfloat16_dtype, float16, float32, float64, is_floating

DEVICES = ("cpu", "cuda")
# op -> policy per device; ops are Function class names, or names of composite functions
# (nll_loss, mse_loss) that ask through ``Hook.inputs``
LOWER = {"MatMul", "Linear", "Conv2d", "ConvNd", "ConvTranspose2d"}
# the losses run in float32 on both devices; layer_norm does on CUDA, while PyTorch's CPU
# policy leaves it alone (its CPU kernel computes 16-bit input in float32 and rounds, which
# minidl's LayerNorm does everywhere)
_FLOAT32_LOSSES = {"CrossEntropy", "nll_loss", "mse_loss", "BinaryCrossEntropyWithLogits", "L1Loss",
                   "SmoothL1Loss"}
FLOAT32 = {
    "cpu": _FLOAT32_LOSSES | {"BinaryCrossEntropy"},
    "cuda": _FLOAT32_LOSSES | {"Softmax", "LogSoftmax", "Sum", "Exp", "Log", "Pow", "PowTensor",
                               "LayerNorm"},
}
# composite functions added later (normalisations, as torch's policy lists them per device)
FLOAT32["cpu"] |= {"local_response_norm"}
FLOAT32["cuda"] |= {"group_norm", "cosine_similarity", "local_response_norm", "Softplus"}
_MORE_FLOAT32_LOSSES = {"kl_div", "huber_loss", "margin_ranking_loss", "hinge_embedding_loss",
                        "soft_margin_loss", "cosine_embedding_loss", "triplet_margin_loss",
                        "poisson_nll_loss"}
FLOAT32["cpu"] |= _MORE_FLOAT32_LOSSES
FLOAT32["cuda"] |= _MORE_FLOAT32_LOSSES
LOWER |= {"PReLU"}  # prelu runs in the low dtype on both devices, as torch's policy lists it
FLOAT32_INSIDE = {
    # NumPy sums bfloat16 in bfloat16 and has no float32-accumulating float16 GEMM: on the CPU
    # the reductions and softmaxes compute in float32 and round, as PyTorch's CPU kernels do
    "cpu": {"Sum", "Mean", "Softmax", "LogSoftmax"},
    "cuda": {"Mean"},
}
# the ops of math_ops.py and products.py, as PyTorch's tables list them: einsum (built on bmm
# there) in the low dtype; prod in float32 on both devices; on CUDA the exp/log family,
# cumulative sums and products, logsumexp and norms in float32 too
LOWER |= {"Einsum"}
FLOAT32["cpu"] |= {"Prod"}
FLOAT32["cuda"] |= {"Prod", "CumSum", "CumProd", "LogSumExp", "VectorNorm", "Reciprocal",
                    "Rsqrt", "Log1p", "Expm1", "Log2", "Log10", "Asin", "Acos", "Sinh", "Cosh",
                    "Tan"}
# 3-D pooling: float32 in torch's CPU policy (max_pool3d, avg_pool3d, adaptive_*_pool3d);
# conv3d and conv_transpose3d run as ConvNd / ConvTranspose2d, already in LOWER
FLOAT32["cpu"] |= {"max_pool3d", "avg_pool3d", "adaptive_avg_pool3d", "adaptive_max_pool3d"}
# grid_sample (grid_sampler) is float32 in torch's CPU policy; affine_grid is a matmul (LOWER)
FLOAT32["cpu"] |= {"grid_sample"}
# losses torch's CPU policy runs in float32 (triplet_margin_with_distance_loss is composite there
# and stays in the input's dtype)
FLOAT32["cpu"] |= {"ctc_loss", "multi_margin_loss", "multilabel_margin_loss"}
FLOAT32["cpu"] |= {"max_unpool1d", "max_unpool2d", "max_unpool3d"}
FLOAT32["cuda"] |= {"multi_margin_loss", "multilabel_margin_loss"}  # torch's CUDA list too

# ops PyTorch refuses to autocast on a device (binary_cross_entropy on CUDA: a 16-bit
# probability from a sigmoid has already lost what the log needs)
BANNED = {"cpu": set(), "cuda": {"BinaryCrossEntropy"}}
_BANNED_MESSAGE = (
    "binary_cross_entropy (nn.BCELoss) is unsafe to autocast on CUDA, as in PyTorch: a model "
    "with a sigmoid right before it should pass the logits to binary_cross_entropy_with_logits "
    "(nn.BCEWithLogitsLoss), which is safe to autocast; or run this loss outside the region "
    "on float32 input")

# the recurrences of nn.RNN/LSTM/GRU and their cells (minidl.nn.rnn) in the low dtype:
# PyTorch's CUDA policy runs every RNN (cuDNN) and cell so; on the CPU its LSTM over a sequence
# (mkldnn_rnn_layer) and its Elman RNN and RNNCell (made of linear ops) come out 16-bit, while
# a GRU, a GRUCell and an LSTMCell stay in float32
LOWER_ON = {"cpu": {"LSTMRecurrence", "RNNRecurrence"},
            "cuda": {"Recurrence", "LSTMRecurrence", "RNNRecurrence"}}

# every op some policy names, on some device
_LISTED = LOWER.union(*FLOAT32.values(), *FLOAT32_INSIDE.values(), *BANNED.values(),
                      *LOWER_ON.values())

# (enabled, dtype) per device; PyTorch's defaults: float16 on CUDA, bfloat16 on the CPU
_state = {"cpu": (False, None), "cuda": (False, float16)}
_last = {}  # device -> dtype of the latest enabled region (GradScaler's bfloat16 note)


def last_dtype(device):
    return _last.get(device)


def _default_dtype(device):
    return float16 if device == "cuda" else bfloat16_dtype()


def is_autocast_enabled(device_type="cuda"):
    return _state[_check_device(device_type)][0]


def get_autocast_dtype(device_type="cuda"):
    device = _check_device(device_type)
    return _state[device][1] or _default_dtype(device)


def set_autocast_enabled(device_type, enabled):
    """Turn autocast on or off for ``device_type`` outside any ``with autocast(...)`` (torch's
    low-level switch; a region entered later restores this state when it exits)."""
    device = _check_device(device_type)
    dtype = _state[device][1] or _default_dtype(device)
    _state[device] = (bool(enabled), dtype)
    if enabled:
        _last[device] = dtype
    _install()


def set_autocast_dtype(device_type, dtype):
    """The dtype autocast computes in on ``device_type`` (float16 or bfloat16)."""
    device = _check_device(device_type)
    _state[device] = (_state[device][0], _check_dtype(dtype))


def _check_device(device_type):
    name = str(device_type).lower()
    if name not in DEVICES:
        raise ValueError(f"autocast: device_type must be one of {', '.join(map(repr, DEVICES))}, "
                         f"got {device_type!r}")
    return name


def _check_dtype(dtype):
    allowed = "minidl.float16 or minidl.bfloat16"
    try:
        dt = as_dtype(dtype)
    except TypeError:
        raise ValueError(f"autocast: dtype must be {allowed}, got {dtype!r}") from None
    if dt not in (float16, bfloat16_dtype()):
        raise ValueError(f"autocast: dtype must be {allowed}, got {dt}")
    return dt


class autocast:
    """``with minidl.autocast("cuda", dtype=minidl.bfloat16):`` or ``@minidl.autocast("cpu")``.

    dtype defaults to float16 on CUDA and bfloat16 on the CPU, as in PyTorch. Regions nest: an
    inner region (``enabled=False`` included) holds until it exits, then the outer one is back.
    """

    def __init__(self, device_type, dtype=None, enabled=True, cache_enabled=None):
        self.device = _check_device(device_type)
        self.dtype = _default_dtype(self.device) if dtype is None else _check_dtype(dtype)
        self.enabled = bool(enabled)
        self._saved = []

    def __enter__(self):
        self._saved.append(_state[self.device])
        _state[self.device] = (self.enabled, self.dtype)
        if self.enabled:
            _last[self.device] = self.dtype
        _install()
        return self

    def __exit__(self, *exc):
        _state[self.device] = self._saved.pop()
        _install()
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with autocast(self.device, self.dtype, self.enabled):
                return fn(*args, **kwargs)
        return wrapper


def _install():
    """The hook is there only while some device has autocast on: ops outside pay nothing."""
    on = any(enabled for enabled, _ in _state.values())
    set_autocast_hook(_HOOK if on else None)


def _cast(t, dtype):
    # as PyTorch: only float32 and 16-bit tensors are eligible; float64 math stays float64
    if t.data.dtype == dtype or not is_floating(t.data.dtype) or t.data.dtype == float64:
        return t
    return Cast.apply(t, dtype=dtype)


def _widest(tensors):
    dts = [t.data.dtype for t in tensors if is_floating(t.data.dtype)]
    return max(dts, key=lambda d: d.itemsize) if dts else None


class Hook:
    """What ``Function.apply`` calls while autocast is on (``tensor._autocast_hook``)."""

    def __call__(self, fn_class, tensors, kwargs):
        name = fn_class.__name__
        if name not in _LISTED:
            return None  # most ops (batch norm, ReLU, reshapes) run as they are: no more to ask
        device = tensors[0].device if tensors else "cpu"
        enabled, low = _state[device]
        if not enabled:
            return None
        if name in BANNED[device]:
            raise RuntimeError(_BANNED_MESSAGE)
        if name in LOWER or name in LOWER_ON[device]:
            inputs = [_cast(t, low) for t in tensors]
            if device == "cpu":
                out = _apply(fn_class, [_cast(t, float32) for t in inputs], kwargs)
                return _cast(out, low)
            return _apply(fn_class, inputs, kwargs)
        if name in FLOAT32[device]:
            if not any(t.data.dtype.itemsize < 4 and is_floating(t.data.dtype) for t in tensors):
                return None
            return _apply(fn_class, [_cast(t, float32) for t in tensors], kwargs)
        if name in FLOAT32_INSIDE[device]:
            dtype = _widest(tensors)
            if dtype is None or dtype.itemsize >= 4:
                return None
            return _cast(_apply(fn_class, [_cast(t, float32) for t in tensors], kwargs), dtype)
        return None

    def inputs(self, name, tensors):
        """Inputs for a composite function (nll_loss, mse_loss) under the policy."""
        device = tensors[0].device
        enabled, _ = _state[device]
        if enabled and name in FLOAT32[device]:
            return [_cast(t, float32) for t in tensors]
        return list(tensors)


def _apply(fn_class, tensors, kwargs):
    """Run the op itself, with the hook off so its casts and the op do not come back here."""
    set_autocast_hook(None)
    try:
        return fn_class.apply(*tensors, **kwargs)
    finally:
        _install()


_HOOK = Hook()


# cdist in float32 on both devices (a Function); erfinv too on CUDA. PyTorch's CPU policy also
# runs trace and its linear-algebra decompositions and solvers in float32: those are composite
# functions here (minidl.linalg, products.trace), which ask through Hook.inputs and
# Hook.runs_in_float32 under these names
FLOAT32["cpu"] |= {"Cdist", "trace", "linalg_inv", "linalg_solve", "linalg_cholesky",
                   "linalg_qr", "linalg_svd", "linalg_svdvals", "linalg_eigh",
                   "linalg_eigvalsh", "linalg_lstsq", "linalg_matrix_rank", "linalg_cond",
                   "pinverse", "linalg_cholesky_ex", "linalg_inv_ex", "cholesky_solve",
                   "cholesky_inverse", "lu_solve", "triangular_solve",
                   "linalg_householder_product", "orgqr", "ormqr", "geqrf",
                   "linalg_tensorinv", "linalg_tensorsolve"}
FLOAT32["cuda"] |= {"Cdist", "Erfinv"}
_LISTED = _LISTED | FLOAT32["cpu"] | FLOAT32["cuda"]


def _runs_in_float32(self, name, device):
    """Whether an autocast region on ``device`` runs the composite op ``name`` in float32
    (its steps then run outside the region, as one float32 op of PyTorch's would)."""
    enabled, _ = _state[device]
    return enabled and name in FLOAT32[device]


Hook.runs_in_float32 = _runs_in_float32

# linalg.pinv is composite in PyTorch (an SVD in float32, then a matmul in the low dtype): in a
# region its result comes back in the low dtype on both devices. minidl.linalg computes it in
# float32 and rounds the result (asked through Hook.low_output_dtype)
LOW_OUTPUT = {"cpu": {"linalg_pinv"}, "cuda": {"linalg_pinv"}}


def _low_output_dtype(self, name, device):
    """The region's low dtype where ``name``'s result is rounded to it, else None."""
    enabled, low = _state[device]
    return low if enabled and name in LOW_OUTPUT[device] else None


Hook.low_output_dtype = _low_output_dtype

# statistics.py's composite ops, as PyTorch's tables list them: quantile and nanquantile in
# float32 on the CPU, dist in float32 on CUDA (cov, tensordot and kin run on matmul, which is
# in LOWER already)
FLOAT32["cpu"] |= {"quantile", "nanquantile"}
FLOAT32["cuda"] |= {"dist"}
# addbmm is bmm then a sum: the bmm runs low through LOWER (MatMul), and _scaled_sum casts
# input to the product's dtype under autocast, so it comes out in the low dtype as torch's
_LISTED = _LISTED | FLOAT32["cpu"] | FLOAT32["cuda"]  # and the entries added since
# rms_norm: float32 in PyTorch's CUDA policy since 2.12 (pytorch/pytorch#174824); its CPU policy
# leaves it alone (the CPU kernel computes 16-bit input in float32 and rounds, as minidl's does)
FLOAT32["cuda"] |= {"RMSNorm"}
_LISTED = _LISTED | {"RMSNorm"}
