"""linear/conv2d refuse an input whose dtype differs from the weights', as PyTorch does,
instead of silently turning float32 gradients and momentum into float64; autocast's own
casts stay allowed (issue 11 item 16)."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl import optim


def _x(shape, dtype):
    return minidl.tensor(np.random.default_rng(0).standard_normal(shape), dtype=dtype)


@pytest.mark.parametrize("make, shape", [(lambda: nn.Linear(3, 2), (4, 3)),
                                         (lambda: nn.Conv2d(1, 2, 3), (2, 1, 5, 5))])
def test_float64_input_into_a_float32_layer_is_refused(make, shape):
    layer = make()
    with pytest.raises(TypeError, match=r"dtypes differ \(input float64, weight float32"):
        layer(_x(shape, np.float64))
    with pytest.raises(TypeError, match="dtypes differ"):
        layer(_x(shape, np.float32).long())
    # the same in the other direction, and through the functional form
    layer.weight.data = layer.weight.data.astype(np.float64)
    with pytest.raises(TypeError, match="weight float64"):
        layer(_x(shape, np.float32))


def test_the_optimizer_state_stays_float32():
    layer = nn.Linear(3, 2)
    opt = optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(TypeError):
        F.cross_entropy(layer(_x((4, 3), np.float64)), minidl.tensor([0, 1, 0, 1])).backward()
    F.cross_entropy(layer(_x((4, 3), np.float32)), minidl.tensor([0, 1, 0, 1])).backward()
    opt.step()
    assert layer.weight.dtype == np.float32
    assert all(s["momentum_buffer"].dtype == np.float32 for s in opt.state_dict()["state"].values())


def test_matching_dtypes_still_work_in_float64():
    layer = nn.Linear(3, 2)
    for p in layer.parameters():
        p.data = p.data.astype(np.float64)
    assert layer(_x((4, 3), np.float64)).dtype == np.float64


def test_torch_refuses_the_same_mismatch():
    torch = pytest.importorskip("torch", reason="the comparison needs torch")
    with pytest.raises(RuntimeError):
        torch.nn.Linear(3, 2)(torch.zeros(4, 3, dtype=torch.float64))
    with pytest.raises(RuntimeError):
        torch.nn.Conv2d(1, 2, 3)(torch.zeros(2, 1, 5, 5, dtype=torch.float64))


def test_autocast_mixes_are_allowed_but_float64_is_not():
    amp = pytest.importorskip("minidl.amp", reason="autocast is in minidl.amp")
    layer = nn.Linear(3, 2)
    half = _x((4, 3), np.float32).to(dtype=minidl.bfloat16)
    with amp.autocast("cpu", dtype=minidl.bfloat16):
        assert layer(half).dtype == minidl.bfloat16  # the policy's cast, not the user's
        with pytest.raises(TypeError, match="input float64"):
            layer(_x((4, 3), np.float64))
    with pytest.raises(TypeError, match="input bfloat16"):
        layer(half)  # outside autocast the mix is the user's
