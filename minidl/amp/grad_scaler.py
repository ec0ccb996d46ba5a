"""``GradScaler``: loss scaling for float16 training, with torch.amp.GradScaler's API and rules.

float16 flushes gradients below 6e-8 to zero. Multiplying the loss by a large scale S moves the
gradients up into float16's range; before the optimizer step they are divided by S again in
float32 (``unscale_``). A gradient that overflowed is inf or NaN: then the step is skipped and S
is multiplied by ``backoff_factor``; after ``growth_interval`` steps in a row without one, S is
multiplied by ``growth_factor``.

On CUDA the unscale and the inf/NaN check are one kernel launch per gradient
(``backend.cuda.unscale_grads``) that leaves a flag on the GPU; the flag is read back once per
step, in ``step``, as PyTorch does.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from .. import backend
from ..backend import device_of, get_array_module, normalize_device
from ..backend.dtypes import bfloat16_dtype, float16
from ..backend.sparse import SparseCOO
from ..tensor import Tensor
from .autocast import last_dtype

_READY, _UNSCALED, _STEPPED = "ready", "unscaled", "stepped"


def _unscale_grads_generic(grads, inv_scale, found_inf):
    """In place: g *= inv_scale for each gradient; found_inf[0] = 1 if any is inf or NaN."""
    xp = get_array_module(found_inf)
    for g in grads:
        if not bool(xp.isfinite(g).all()):
            found_inf[0] = 1
        g *= g.dtype.type(inv_scale)


class GradScaler:
    """``scaler = minidl.amp.GradScaler("cuda")``; per iteration::

        with minidl.autocast("cuda"):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)      # unscales, and skips the step on inf/NaN gradients
        scaler.update()
    """

    def __init__(self, device="cuda", init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        self._device = normalize_device(device)
        self._enabled = bool(enabled)
        if self._enabled and self._device == "cuda" and not backend.cuda_available():
            warnings.warn("minidl.amp.GradScaler is enabled, but CUDA is not available. "
                          "Disabling.", stacklevel=2)
            self._enabled = False
        if self._enabled:
            if growth_factor <= 1.0:
                raise ValueError(f"GradScaler: growth_factor must be > 1.0, got {growth_factor}")
            if not 0.0 < backoff_factor < 1.0:
                raise ValueError(f"GradScaler: backoff_factor must be in (0, 1), got "
                                 f"{backoff_factor}")
            if int(growth_interval) != growth_interval or growth_interval < 1:
                raise ValueError(f"GradScaler: growth_interval must be a positive integer, got "
                                 f"{growth_interval}")
            if not (init_scale > 0 and math.isfinite(init_scale)):
                raise ValueError(f"GradScaler: init_scale must be a positive number, got "
                                 f"{init_scale}")
        self._scale = float(init_scale)  # a host number: the update needs no kernel
        self._growth_factor = float(growth_factor)
        self._backoff_factor = float(backoff_factor)
        self._growth_interval = int(growth_interval)
        self._growth_tracker = 0
        self._warned_bf16 = False
        self._per_optimizer = {}

    # ---- the four calls of an iteration ------------------------------------------------------
    def scale(self, outputs):
        """outputs * scale (a Tensor, or a list/tuple of them)."""
        if not self._enabled:
            return outputs
        self._warn_if_bfloat16()
        if isinstance(outputs, Tensor):
            # times a 0-d float32 tensor, as PyTorch: a float16 scalar loss becomes float32
            # (65536 times a float16 loss would overflow to inf), a batch of losses keeps its dtype
            xp = get_array_module(outputs.data)
            return outputs * Tensor(xp.full((), self._scale, dtype=np.float32))
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        raise TypeError(f"GradScaler.scale: outputs must be a Tensor or a list/tuple of Tensors, "
                        f"got {type(outputs).__name__}")

    def unscale_(self, optimizer):
        """Divide the optimizer's gradients by the scale in place (e.g. before clipping)."""
        if not self._enabled:
            return
        state = self._state(optimizer)
        if state["stage"] == _UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the "
                               "last update().")
        if state["stage"] == _STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        inv_scale = float(np.float32(1.0 / self._scale))  # as PyTorch: 1/S in double, to float
        by_device = {}
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.data
                if type(g) is SparseCOO:  # a sparse gradient: its values, as torch's
                    g = g.values
                if g.dtype == float16:
                    raise ValueError("Attempting to unscale FP16 gradients: keep the parameters "
                                     "in float32 and let autocast cast them")
                by_device.setdefault(device_of(g), []).append(g)
        for device, grads in by_device.items():
            xp = get_array_module(grads[0])
            found = xp.zeros(1, dtype=np.int32)
            kernel = getattr(backend.kernels(xp), "unscale_grads", None) or _unscale_grads_generic
            kernel(grads, inv_scale, found)
            state["found_inf"][device] = found
        state["stage"] = _UNSCALED

    def step(self, optimizer, *args, **kwargs):
        """optimizer.step() unless a gradient is inf or NaN (unscaling first if not done)."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        state = self._state(optimizer)
        if state["stage"] == _STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if state["stage"] == _READY:
            self.unscale_(optimizer)
        # the one read-back of the step: a flag per device
        found = sum(int(backend.to_numpy(f)[0]) for f in state["found_inf"].values())
        state["found"] = found
        result = None if found else optimizer.step(*args, **kwargs)
        state["stage"] = _STEPPED
        return result

    def update(self, new_scale=None):
        """Back off after a skipped step, grow after growth_interval good ones."""
        if not self._enabled:
            return
        if new_scale is not None:
            value = new_scale.item() if isinstance(new_scale, Tensor) else float(new_scale)
            self._scale = float(value)
        else:
            checked = [s for s in self._per_optimizer.values() if s["found_inf"]]
            if not checked:
                raise RuntimeError("No inf checks were recorded prior to update(): call "
                                   "scaler.step(optimizer) (or unscale_) first.")
            found = sum(s.get("found", _read(s["found_inf"])) for s in checked)
            if found:
                self._scale *= self._backoff_factor
                self._growth_tracker = 0
            else:
                self._growth_tracker += 1
                if self._growth_tracker == self._growth_interval:
                    grown = self._scale * self._growth_factor
                    if math.isfinite(np.float32(grown)):  # PyTorch keeps the scale a float32
                        self._scale = grown
                    self._growth_tracker = 0
        self._scale = float(np.float32(self._scale))
        self._per_optimizer = {}

    # ---- state --------------------------------------------------------------------------------
    def get_scale(self):
        return self._scale if self._enabled else 1.0

    def get_growth_factor(self):
        return self._growth_factor

    def get_backoff_factor(self):
        return self._backoff_factor

    def get_growth_interval(self):
        return self._growth_interval

    def is_enabled(self):
        return self._enabled

    def state_dict(self):
        if not self._enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor, "growth_interval": self._growth_interval,
                "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state_dict):
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError("The source state dict is empty, possibly because it was saved "
                               "from a disabled instance of GradScaler.")
        missing = {"scale", "growth_factor", "backoff_factor", "growth_interval",
                   "_growth_tracker"} - set(state_dict)
        if missing:
            raise ValueError(f"GradScaler.load_state_dict: missing {sorted(missing)}")
        self._scale = float(np.asarray(state_dict["scale"]))
        self._growth_factor = float(np.asarray(state_dict["growth_factor"]))
        self._backoff_factor = float(np.asarray(state_dict["backoff_factor"]))
        self._growth_interval = int(np.asarray(state_dict["growth_interval"]))
        self._growth_tracker = int(np.asarray(state_dict["_growth_tracker"]))

    # ---- helpers ------------------------------------------------------------------------------
    def _state(self, optimizer):
        return self._per_optimizer.setdefault(id(optimizer), {"stage": _READY, "found_inf": {}})

    def _warn_if_bfloat16(self):
        if self._warned_bf16 or last_dtype(self._device) != bfloat16_dtype():
            return
        self._warned_bf16 = True
        warnings.warn("GradScaler is not needed with bfloat16 autocast: bfloat16 has float32's "
                      "exponent range, so gradients neither underflow nor overflow the way "
                      "float16 ones do. Scaling still works, it only costs time; drop the "
                      "GradScaler (or pass enabled=False).", UserWarning, stacklevel=3)


def _read(found_inf):
    return sum(int(backend.to_numpy(f)[0]) for f in found_inf.values())
