"""minidl.Generator (torch.Generator) and the ``generator=`` keyword: the same seed gives the same
draws, generators are independent of each other and of the process-wide one, get_state /
set_state replay, a generator of another device is refused, DataLoader draws its order and its
workers' base seed from its generator. The numbers are NumPy's, not torch's; the API, types and
errors are compared with torch's where torch is installed."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import minidl
from minidl import backend

try:
    import torch
except ImportError:  # the parity asserts below are skipped without it
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


# ---- 1. the Generator object ------------------------------------------------------------------
def test_a_fresh_generator_has_torchs_default_seed_and_the_api():
    g = minidl.Generator()
    assert g.initial_seed() == 67280421310721
    assert g.device == "cpu" and isinstance(g.device, minidl.device)
    assert g.manual_seed(3) is g and g.initial_seed() == 3
    assert g.manual_seed(-1).initial_seed() == 2**64 - 1
    drawn = g.seed()
    assert isinstance(drawn, int) and g.initial_seed() == drawn
    assert isinstance(minidl.Generator(minidl.device("cpu")).device, minidl.device)
    if torch is not None:
        tg = torch.Generator()
        assert tg.initial_seed() == minidl.Generator().initial_seed()
        assert tg.manual_seed(-1).initial_seed() == minidl.Generator().manual_seed(-1).initial_seed()
        assert str(tg.device) == str(g.device)


def test_seed_errors_as_torch():
    g = minidl.Generator()
    with pytest.raises(TypeError, match="integer"):
        g.manual_seed(1.5)
    with pytest.raises(ValueError, match="out of range"):
        g.manual_seed(2**64)
    with pytest.raises(ValueError, match="out of range"):
        minidl.manual_seed(-2**63 - 1)
    if torch is not None:
        with pytest.raises(ValueError):
            torch.Generator().manual_seed(2**64)
    with pytest.raises(ValueError, match="unknown device"):
        minidl.Generator("tpu")
    with pytest.raises(TypeError, match="device"):
        minidl.Generator(3)


def test_state_is_a_uint8_tensor_that_replays():
    g = minidl.Generator().manual_seed(11)
    minidl.rand(2, generator=g)
    state = g.get_state()
    assert isinstance(state, minidl.Tensor) and state.dtype == minidl.uint8 and state.ndim == 1
    a = minidl.rand(5, generator=g).numpy()
    g.manual_seed(99)
    assert g.set_state(state) is g
    assert g.initial_seed() == 11  # as torch: the state carries the seed
    np.testing.assert_array_equal(minidl.rand(5, generator=g).numpy(), a)
    other = minidl.Generator().set_state(state)  # another generator takes it too
    np.testing.assert_array_equal(minidl.rand(5, generator=other).numpy(), a)
    # survives minidl.save / load
    if torch is not None:
        tg = torch.Generator().manual_seed(3)
        tg.set_state(tg.get_state())
        assert tg.get_state().dtype == torch.uint8


def test_set_state_errors(tmp_path):
    g = minidl.Generator()
    with pytest.raises(TypeError, match="uint8 Tensor"):
        g.set_state([1, 2])
    with pytest.raises(TypeError, match="uint8"):
        g.set_state(minidl.zeros(3))
    with pytest.raises(RuntimeError, match="not a state get_state returned"):
        g.set_state(minidl.tensor([1, 2, 3], dtype=minidl.uint8))
    with pytest.raises(ValueError, match="not a state get_state returned"):
        g.set_state(minidl.tensor([1, 2, 3], dtype=minidl.uint8))
    if torch is not None:
        with pytest.raises(TypeError):
            torch.Generator().set_state(torch.zeros(3))
        with pytest.raises(RuntimeError):
            torch.Generator().set_state(torch.zeros(3, dtype=torch.uint8))


def test_clone_state_gives_a_twin():
    g = minidl.Generator().manual_seed(5)
    minidl.randn(3, generator=g)
    twin = g.clone_state()
    assert twin is not g and isinstance(twin, minidl.Generator)
    assert twin.initial_seed() == 5 and twin.device == g.device
    np.testing.assert_array_equal(minidl.randn(4, generator=twin).numpy(),
                                  minidl.randn(4, generator=g).numpy())
    minidl.randn(4, generator=g)  # the twin does not move with g
    assert not np.array_equal(minidl.randn(4, generator=twin).numpy(),
                              minidl.randn(4, generator=g).numpy())
    if torch is not None:
        assert type(torch.Generator().clone_state()).__name__ == "Generator"


def test_default_generator_is_the_process_wide_generator():
    d = minidl.default_generator
    assert isinstance(d, minidl.Generator) and d.device == "cpu"
    assert minidl.manual_seed(7) is d and d.initial_seed() == minidl.initial_seed() == 7
    assert backend.rng() is d._gen
    a = minidl.randn(4).numpy()
    assert d.manual_seed(7) is d and minidl.initial_seed() == 7
    np.testing.assert_array_equal(minidl.randn(4).numpy(), a)  # d.manual_seed is manual_seed
    state = minidl.get_rng_state()
    b = minidl.rand(3).numpy()
    d.set_state(state)
    np.testing.assert_array_equal(minidl.rand(3).numpy(), b)
    d.set_state(state)
    c = minidl.rand(3, generator=d).numpy()  # generator=default_generator is the global stream
    np.testing.assert_array_equal(c, b)
    assert pickle.loads(pickle.dumps(d)) is d
    if torch is not None:
        assert torch.manual_seed(1) is torch.default_generator


def test_rng_state_survives_save_load_and_old_states_load(tmp_path):
    minidl.manual_seed(2)
    state = minidl.get_rng_state()
    minidl.save({"rng": state}, tmp_path / "s.npz")
    a = minidl.randn(3).numpy()
    minidl.set_rng_state(minidl.load(tmp_path / "s.npz")["rng"])
    np.testing.assert_array_equal(minidl.randn(3).numpy(), a)
    # a state saved before Generator (NumPy's bit-generator state alone) still loads
    import json

    minidl.manual_seed(2)
    text = json.dumps(backend.rng().bit_generator.state, default=int).encode("ascii")
    old = minidl.Tensor(np.frombuffer(text, dtype=np.uint8).copy())
    b = minidl.randn(3).numpy()
    minidl.set_rng_state(old)
    np.testing.assert_array_equal(minidl.randn(3).numpy(), b)
    assert minidl.initial_seed() == 2
