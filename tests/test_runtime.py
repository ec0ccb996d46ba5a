"""minidl.as_tensor, the random state, dtype promotion queries, Size, thread count,
set_printoptions and compile, against PyTorch's."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import minidl
import minidl.nn as nn

torch = pytest.importorskip("torch", reason="these mirror torch's top-level functions")


def _name(dtype):
    return str(dtype).split(".")[-1]


def test_as_tensor_shares_what_torch_shares():
    a = np.arange(3.0)
    ours, theirs = minidl.as_tensor(a), torch.as_tensor(a)
    a[0] = 9.0
    assert ours.numpy()[0] == theirs.numpy()[0] == 9.0  # shared with the array
    assert _name(ours.dtype) == _name(theirs.dtype) == "float64"
    copied = minidl.as_tensor(a, dtype=minidl.float32)
    a[1] = 7.0
    assert copied.numpy()[1] == 1.0 and copied.dtype == minidl.float32
    t = minidl.tensor([1.0, 2.0])
    assert minidl.as_tensor(t) is t and minidl.as_tensor(t, device="cpu") is t
    assert minidl.as_tensor(t, dtype=minidl.float64).dtype == minidl.float64
    for data in ([1, 2], [1.5, 2.0], 3, True, [[True, False]]):
        assert _name(minidl.as_tensor(data).dtype) == _name(torch.as_tensor(data).dtype), data
        np.testing.assert_array_equal(minidl.as_tensor(data).numpy(), torch.as_tensor(data).numpy())


def test_rng_state_round_trip_and_seeds():
    minidl.manual_seed(5)
    assert minidl.initial_seed() == 5
    minidl.manual_seed(-1)
    torch.manual_seed(-1)
    assert minidl.initial_seed() == torch.initial_seed() == 2**64 - 1
    state = minidl.get_rng_state()
    assert state.dtype == minidl.uint8 and state.ndim == 1
    first = minidl.randn(5).numpy()
    minidl.set_rng_state(state)
    np.testing.assert_array_equal(minidl.randn(5).numpy(), first)
    drawn = minidl.seed()
    assert minidl.initial_seed() == drawn and 0 <= drawn < 2**63
    with pytest.raises(TypeError, match="uint8 Tensor get_rng_state returned"):
        minidl.set_rng_state(minidl.zeros(3))
    with pytest.raises(ValueError, match="not a state get_rng_state returned"):
        minidl.set_rng_state(minidl.tensor([1, 2, 3], dtype=minidl.uint8))


def test_rng_state_survives_save_and_load(tmp_path):
    state = minidl.get_rng_state()
    minidl.save({"rng": state}, tmp_path / "s.npz")
    a = minidl.rand(3).numpy()
    minidl.set_rng_state(minidl.load(tmp_path / "s.npz")["rng"])
    np.testing.assert_array_equal(minidl.rand(3).numpy(), a)


DTYPES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]


@pytest.mark.parametrize("a", DTYPES)
@pytest.mark.parametrize("b", DTYPES)
def test_promote_types_and_can_cast_as_torch(a, b):
    ours = minidl.promote_types(getattr(minidl, a), getattr(minidl, b))
    assert _name(ours) == _name(torch.promote_types(getattr(torch, a), getattr(torch, b)))
    assert minidl.can_cast(getattr(minidl, a), getattr(minidl, b)) == \
        torch.can_cast(getattr(torch, a), getattr(torch, b))


@pytest.mark.parametrize("x, y", [
    (np.array([1, 2]), 2.5), (np.array([1, 2]), np.array(2.5)), (np.array([1.0], np.float16), 3),
    (np.array([True]), 1), (np.array([True]), np.array([False])), (np.array([1], np.uint8),
                                                                   np.array([1], np.int8)),
    (np.array([1.0], np.float16), np.array(1.0, np.float64)),
])
def test_result_type_as_torch(x, y):
    def wrap(lib, v):
        return lib.tensor(v) if isinstance(v, np.ndarray) else v
    ours = minidl.result_type(minidl.as_tensor(x), wrap(minidl, y) if not isinstance(
        y, np.ndarray) else minidl.as_tensor(y))
    assert _name(ours) == _name(torch.result_type(torch.as_tensor(x), wrap(torch, y)))


def test_size():
    s = minidl.Size([2, 3])
    assert minidl.zeros(2, 3).shape == s and s == torch.Size([2, 3]) and s.numel() == 6
    assert repr(s) == "minidl.Size([2, 3])" and isinstance(s, tuple)
    with pytest.raises(TypeError, match="sequence of ints"):
        minidl.Size([2.5])


def test_thread_count_follows_set_num_threads():
    before = minidl.get_num_threads()
    try:
        assert minidl.set_num_threads(1) == 1 and minidl.get_num_threads() == 1
    finally:  # a failure must not leave the process (a pytest-xdist worker) on one thread
        minidl.set_num_threads(before)
    assert minidl.get_num_threads() == before


@pytest.mark.parametrize("options", [dict(precision=2), dict(sci_mode=True),
                                     dict(sci_mode=False, precision=3), dict(threshold=5),
                                     dict(profile="short"), dict(edgeitems=1, threshold=3)])
def test_printoptions_as_torch(options):
    values = np.array([1.23456, 2.5, 0.125, 7.0, 8.75, 9.0], dtype=np.float32)
    try:
        minidl.set_printoptions(**options)
        torch.set_printoptions(**options)
        ours, theirs = repr(minidl.tensor(values)), repr(torch.tensor(values))
        assert ours.replace(" ", "") == theirs.replace(" ", "")  # column padding aside
    finally:
        minidl.set_printoptions(profile="default")
        torch.set_printoptions(profile="default")
    assert repr(minidl.tensor([1.5, 2.0])) == "tensor([1.5000, 2.0000])"


def test_set_printoptions_refuses_nonsense():
    with pytest.raises(ValueError, match="profile must be one of"):
        minidl.set_printoptions(profile="huge")
    with pytest.raises(ValueError, match="precision must be a non-negative number"):
        minidl.set_printoptions(precision=-1)


def test_compile_wraps_the_model_and_says_it_runs_eagerly(monkeypatch):
    from minidl import runtime

    monkeypatch.setattr(runtime, "_compile_warned", False)
    model = nn.Linear(2, 2)
    with pytest.warns(UserWarning, match="no graph compiler; the model runs eagerly"):
        assert minidl.compile(model)._orig_mod is model  # torch's OptimizedModule
    assert minidl.compile(model, disable=True) is model
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process

        @minidl.compile(mode="max-autotune")
        def double(x):
            return x * 2
    assert double(3) == 6
    with pytest.raises(TypeError, match="expected a Module or a function"):
        minidl.compile(3)
    assert "compile" not in minidl.__all__  # `from minidl import *` keeps the builtin
