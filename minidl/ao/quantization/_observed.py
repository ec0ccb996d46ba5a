"""Whether a prepared module's output observer has seen data: what ``convert`` and each quantized
module's ``from_float`` check first. A module of its own, below both, so that the quantized
modules need not import the conversion flow (``quantize``), which imports them."""
from __future__ import annotations

import numpy as np

from ...nn import Identity


def _has_seen_data(observer):
    inner = observer._modules.get("activation_post_process", observer)  # a FakeQuantize's
    min_val = getattr(inner, "min_val", None)
    if min_val is None:
        return True
    arr = min_val.numpy()
    return arr.size > 0 and bool(np.all(np.isfinite(arr)))


def _unused_functional(mod):
    """A prepared FloatFunctional that never ran: torchvision's MobileNetV2 gives every
    inverted residual one, used only where the block adds its input. torch converts it with
    its default scale 1.0 and zero point 0 (warning), and so does minidl."""
    act = mod._modules.get("activation_post_process")
    return (type(mod).__name__ == "FloatFunctional" and act is not None
            and not isinstance(act, Identity) and not _has_seen_data(act))


def _check_observed(mod, path=None):
    """The observer (or FakeQuantize) on ``mod``'s output, checked to have seen data;
    RuntimeError naming the module otherwise."""
    where = f"{path} ({type(mod).__name__})" if path else f"the {type(mod).__name__}"
    act = mod._modules.get("activation_post_process")
    if act is None or isinstance(act, Identity):
        raise RuntimeError(f"convert: {where} has no observer on its output; give the model "
                           "a qconfig and prepare (or prepare_qat) it first")
    if not _has_seen_data(act):
        raise RuntimeError(f"convert: the observer on the output of {where} has seen no data; "
                           "run representative batches through the prepared model (calibration) "
                           "before convert")
    qscheme = getattr(act, "qscheme", None)
    if qscheme is not None and "per_channel" in str(qscheme):
        # one scale per channel of a batch: convert would keep one of them for every channel
        # (torch fails there, converting the many scales to one number)
        raise RuntimeError(f"convert: the observer on the output of {where} "
                           f"({type(act).__name__}) is per channel ({qscheme}); a quantized "
                           "activation has one scale and zero point: give activations a "
                           "per-tensor observer (MinMaxObserver, HistogramObserver, ...)")
    return act
