"""A quantized module's state_dict read back: torch's keys and layout (``scale``,
``zero_point``, ``_packed_params.dtype``, ``_packed_params._packed_params`` = (qint8 weight,
float bias or None)), each value checked before anything changes, so that a bad entry names
its key and leaves the model as it was. Values may be minidl's (Tensors, quantized tensors,
arrays, numbers) or torch's own tensors, quantized ones included."""
from __future__ import annotations

import numpy as np

from ....nn.module import StateDictKeyError, StateDictValueError
from ....tensor import Tensor
from ...quantization.qtensor import QDTYPES, QTensor, qint8, quint8

PACKED = "_packed_params._packed_params"
PACKED_DTYPE = "_packed_params.dtype"


def _owner(prefix):
    return prefix[:-1] if prefix else "the model"


def _host(value):
    """A state_dict value as a numpy array (a torch tensor that requires grad too)."""
    if isinstance(value, Tensor):
        return value.numpy()
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # torch's
        return np.asarray(value.detach().cpu().numpy())
    return np.asarray(value)


def _describe(value):
    if getattr(value, "is_quantized", False) is True:
        return f"a quantized tensor of dtype {value.dtype}"
    try:
        arr = _host(value)
    except Exception:
        return f"a {type(value).__name__}"
    if arr.dtype.kind in "OUS":
        return f"a {type(value).__name__}"
    return f"a {type(value).__name__} of dtype {arr.dtype} and shape {tuple(arr.shape)}"


def as_qtensor(value):
    """``value`` as a minidl quantized tensor (a copy: the caller's arrays are never aliased):
    minidl's, or torch's (per tensor or per channel affine); None for anything else."""
    if isinstance(value, QTensor):
        copy = value.clone()
        if value._axis is not None:
            copy._scale, copy._zero_point = value._scale.copy(), value._zero_point.copy()
        return copy
    if getattr(value, "is_quantized", False) is not True or not hasattr(value, "int_repr"):
        return None
    dtype = QDTYPES.get(str(value.dtype).rsplit(".", 1)[-1])
    scheme = str(value.qscheme()).rsplit(".", 1)[-1]
    if dtype is None or scheme not in ("per_tensor_affine", "per_channel_affine",
                                       "per_channel_affine_float_qparams"):
        return None
    ints = np.array(value.int_repr().numpy(), dtype=dtype.storage)
    if scheme == "per_tensor_affine":
        return QTensor(ints, dtype, float(value.q_scale()), int(value.q_zero_point()))
    if scheme == "per_channel_affine_float_qparams":  # float32 scales and zero points
        return QTensor(ints, dtype, np.array(value.q_per_channel_scales().numpy(), np.float32),
                       np.array(value.q_per_channel_zero_points().numpy(), np.float32),
                       int(value.q_per_channel_axis()))
    return QTensor(ints, dtype, np.array(value.q_per_channel_scales().numpy(), np.float64),
                   np.array(value.q_per_channel_zero_points().numpy(), np.int64),
                   int(value.q_per_channel_axis()))


def number(given, key, kind):
    """The one number the entry ``key`` holds (a tensor of one element, an array or a number),
    as ``kind`` (float or int); StateDictValueError naming the key for anything else."""
    value = given[key]
    bad = getattr(value, "is_quantized", False) is True
    if not bad:
        try:
            arr = _host(value)
        except Exception:
            arr = np.asarray(None)
        bad = arr.dtype.kind not in ("biuf" if kind is float else "biu") or arr.size != 1
    if bad:
        what = "a float" if kind is float else "an integer"
        raise StateDictValueError(f"load_state_dict: {key!r} must hold one number ({what}, as a "
                                  f"tensor of one element), got {_describe(value)}")
    out = kind(arr.reshape(()).item())
    if kind is float and not (np.isfinite(out) and out > 0):
        raise StateDictValueError(f"load_state_dict: {key!r} is a scale and must be positive and "
                                  f"finite, got {out}")
    return out


def check_scale_zero_point(given, prefix, dtype=None):
    """Check ``prefix``scale and ``prefix``zero_point where given."""
    if prefix + "scale" in given:
        number(given, prefix + "scale", float)
    if prefix + "zero_point" in given:
        zp = number(given, prefix + "zero_point", int)
        if dtype is not None and not dtype.qmin <= zp <= dtype.qmax:
            raise StateDictValueError(f"load_state_dict: {prefix}zero_point {zp} is outside "
                                      f"{dtype}'s range [{dtype.qmin}, {dtype.qmax}]")


def weight_observer(cls, mod, hint="set one and prepare the model first"):
    """What quantizes ``mod``'s weight in ``cls.from_float``: a QAT module's own
    ``weight_fake_quant``, or a new observer from the prepared float module's qconfig
    (``hint``: what the error for a module without one suggests)."""
    weight_fq = getattr(mod, "weight_fake_quant", None)
    if weight_fq is None:
        qconfig = getattr(mod, "qconfig", None)
        if qconfig is None:
            raise ValueError(f"quantized {cls.__name__}.from_float: the float module has no "
                             f"qconfig ({hint})")
        weight_fq = qconfig.weight()
    return weight_fq


def scale_zero_point_state(module, prefix, shape=()):
    """torch's entries for a quantized module's output scale and zero point: float32 and int64
    tensors of ``shape`` (0-d; Quantize's are (1,))."""
    yield prefix + "scale", Tensor(np.array(module.scale, np.float32).reshape(shape))
    yield prefix + "zero_point", Tensor(np.array(module.zero_point, np.int64).reshape(shape))


def load_scale_zero_point(module, given, prefix):
    """Set the output scale and zero point from the checked entries that are given."""
    if prefix + "scale" in given:
        module.scale = number(given, prefix + "scale", float)
    if prefix + "zero_point" in given:
        module.zero_point = number(given, prefix + "zero_point", int)


class OutputQParamsState:
    """The state of a quantized module whose only state is its output's scale and zero point
    (quantized Hardswish, QFunctional, Quantize)."""

    _qparams_shape = ()
    _qparams_dtype = quint8

    def _own_state(self, prefix, keep_vars):
        yield from scale_zero_point_state(self, prefix, self._qparams_shape)

    def _check_own_state(self, given, prefix):
        check_scale_zero_point(given, prefix, self._qparams_dtype)
        return []

    def _load_own_state(self, given, prefix):
        load_scale_zero_point(self, given, prefix)


def float_bias(value, what):
    """The host array of a bias entry, which must be a float tensor (or array);
    StateDictValueError naming ``what`` otherwise."""
    try:
        arr = _host(value)
    except Exception:
        arr = np.asarray(None)
    if getattr(value, "is_quantized", False) is True or arr.dtype.kind != "f":
        raise StateDictValueError(f"load_state_dict: {what} must be a float tensor or None, got "
                                  f"{_describe(value)}")
    return arr


def check_packed(module, given, prefix, per_tensor_only=False):
    """Check a quantized Linear's packed weight and bias: raises for a value of the wrong
    kind, returns the size mismatches (load_state_dict lists them all in one error)."""
    key = prefix + PACKED
    if key not in given:
        if prefix + "weight" in given:  # a float Linear's entries
            raise StateDictKeyError(
                f"load_state_dict: {prefix}weight is a float weight, but {_owner(prefix)} is a "
                f"quantized {type(module).__name__} (it expects {key}): load the float "
                "state_dict into the float model and quantize that, or load a state_dict saved "
                "from a model quantized the same way")
        return []
    if prefix + PACKED_DTYPE in given:
        dtype = given[prefix + PACKED_DTYPE]
        if dtype is not qint8 and str(dtype) != "torch.qint8":
            raise StateDictValueError(f"load_state_dict: {prefix + PACKED_DTYPE} is {dtype!r}; "
                                      f"{_owner(prefix)} takes qint8 weights only")
    check_scale_zero_point(given, prefix)
    value = given[key]
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise StateDictValueError(f"load_state_dict: {key!r} must be (weight, bias): a qint8 "
                                  f"quantized weight and a float bias or None, got "
                                  f"{_describe(value)}")
    weight, bias = value
    qweight = as_qtensor(weight)
    if qweight is None or qweight.dtype is not qint8:
        raise StateDictValueError(f"load_state_dict: the weight in {key!r} must be a qint8 "
                                  f"quantized tensor, got {_describe(weight)}")
    if per_tensor_only and qweight._axis is not None:
        raise StateDictValueError(f"load_state_dict: the weight in {key!r} is quantized per "
                                  f"channel; {_owner(prefix)} ({type(module).__name__}) takes a "
                                  "weight quantized per tensor here")
    problems = []
    expected = (module.out_features, module.in_features)
    if qweight.shape != expected:
        problems.append(f"{key}: checkpoint weight {qweight.shape}, model {expected}")
    if bias is not None:
        arr = float_bias(bias, f"the bias in {key!r}")
        if arr.shape != (module.out_features,):
            problems.append(f"{key}: checkpoint bias {arr.shape}, model {(module.out_features,)}")
    return problems


def load_packed(module, given, prefix):
    """Put the (checked) packed weight and bias in place."""
    key = prefix + PACKED
    if key in given:
        weight, bias = given[key]
        module._weight = as_qtensor(weight)
        module._bias = None if bias is None else Tensor(np.array(_host(bias), np.float32))


def packed_metadata(state_dict, prefix):
    """torch keeps the packed weight in a ``_packed_params`` submodule of version 3, and its
    load_state_dict reads the old layouts unless the state_dict's metadata says so."""
    metadata = getattr(state_dict, "_metadata", None)
    if isinstance(metadata, dict):
        metadata[prefix + "_packed_params"] = {"version": 3}
    return state_dict
