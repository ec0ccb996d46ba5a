"""When torch's fbgemm can saturate, for the bit-exact parity tests of quantized models.

On a CPU without VNNI (AVX2 only, e.g. AMD Zen 1, or AVX-512 without VNNI) fbgemm multiplies
the raw uint8 activations by the int8 weights with vpmaddubsw: two products summed into an
int16, with saturation. A pair can pass 32767 only where an activation goes past 127, so
torch's x86 default (reduce_range: activations in [0, 127], 127 * 128 * 2 < 32767) is safe
while full-range activations are not; the converted modules clamp to [0, 255] (as torch's),
so an input past the calibrated range, or a range a HistogramObserver clipped, can still
give integers past 127 to the next layer. ``assert_cannot_saturate`` checks, on minidl's
converted model and the inputs a test compares, that no pair of products in any quantized
Linear or Conv can leave int16 whatever fbgemm's pairing: ``a1 * w1 + a2 * w2 <= 32767``
with a1 >= a2 the two largest activations (the zero point too, which pads convolutions)
and w1 >= w2 the two largest weight magnitudes of each output channel. With VNNI (vpdpbusd)
the products are summed in int32 and nothing saturates: ``requires_vnni`` marks the tests
that need it."""
import re

import numpy as np
import pytest

import minidl

INT16_MAX = 32767


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return set()
    match = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    return set(match.group(1).split()) if match else set()


HAS_VNNI = bool({"avx512_vnni", "avx_vnni"} & _cpu_flags())

requires_vnni = pytest.mark.skipif(
    not HAS_VNNI, reason="needs a CPU with avx512_vnni or avx_vnni (/proc/cpuinfo flags): "
    "without VNNI torch's fbgemm sums uint8 x int8 products in int16 pairs with saturation "
    "(vpmaddubsw), which full-range activations can overflow")


def worst_pairs(model, x):
    """{module name: the largest int16 pair sum fbgemm could form} for each quantized Linear
    and Conv that ``model`` (minidl's, converted) runs on ``x`` (a numpy array)."""
    from minidl.ao.nn import quantized as nnq
    from minidl.ao.nn.quantized.conv import _ConvNd

    seen, handles = {}, []

    def watch(name):
        def hook(mod, args):
            q = args[0]
            a = np.append(q._ints.reshape(-1).astype(np.int64), int(q._zero_point))
            a = np.sort(a)[-2:]
            w = np.abs(mod._weight._ints.astype(np.int64)).reshape(mod._weight.shape[0], -1)
            w = np.sort(w, axis=1)[:, -2:]
            bound = int((w[:, -1] * a[-1] + w[:, 0] * a[0]).max())
            seen[name] = max(seen.get(name, 0), bound)
        return hook

    for name, mod in model.named_modules():
        if isinstance(mod, (nnq.Linear, _ConvNd)):
            handles.append(mod.register_forward_pre_hook(watch(name)))
    try:
        model(minidl.tensor(x))
    finally:
        for h in handles:
            h.remove()
    return seen


def assert_cannot_saturate(model, x):
    """The test's input keeps every quantized Linear and Conv inside int16 pair sums, so
    torch's outputs on it are the same with or without VNNI."""
    pairs = worst_pairs(model, x)
    assert pairs, "no quantized Linear or Conv ran"
    over = {k: v for k, v in pairs.items() if v > INT16_MAX}
    assert not over, (f"these layers could saturate fbgemm's int16 pair sums on a CPU "
                      f"without VNNI: {over}")
