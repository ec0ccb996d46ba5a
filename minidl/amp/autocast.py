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
# cdist in float32 on both devices, quantile and nanquantile on the CPU (composite: they ask
# through Hook.inputs), as PyTorch's tables list them
FLOAT32["cpu"] |= {"Cdist", "quantile", "nanquantile"}
FLOAT32["cuda"] |= {"Cdist"}
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
