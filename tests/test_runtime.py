"""minidl.as_tensor, the random state, dtype promotion queries, Size, thread count,
set_printoptions and compile, against PyTorch's; and top-level functions an audit compared with
torch's (manual_seed, no_grad as a decorator, creation functions, item, from_numpy)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import minidl
import minidl.nn as nn
from helpers import both_raise, same

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


# ---- top-level functions against torch (an audit) ------------------------------------------------
def test_manual_seed_returns_a_generator_handle_as_torch():
    g = minidl.manual_seed(123)
    assert g is minidl.default_generator
    assert type(torch.manual_seed(123)).__name__ == "Generator"
    assert g.initial_seed() == minidl.initial_seed() == torch.initial_seed() == 123
    assert minidl.manual_seed(-1).initial_seed() == torch.manual_seed(-1).initial_seed()
    state = g.get_state()
    a = minidl.randn(4).numpy()
    g.set_state(state)
    np.testing.assert_array_equal(minidl.randn(4).numpy(), a)
    assert g.manual_seed(5) is g and minidl.initial_seed() == 5
    assert isinstance(g.seed(), int)


def test_no_grad_and_enable_grad_decorate_with_and_without_the_call():
    x = minidl.ones(2, requires_grad=True)
    tx = torch.ones(2, requires_grad=True)
    for mine, theirs in ((minidl.no_grad, torch.no_grad), (minidl.no_grad(), torch.no_grad())):
        assert mine(lambda v: v * 2)(x).requires_grad is \
            theirs(lambda v: v * 2)(tx).requires_grad is False
    with minidl.no_grad():
        assert minidl.enable_grad(lambda v: v * 2)(x).requires_grad
        assert not minidl.is_grad_enabled()
    assert minidl.inference_mode(lambda v: v * 2)(x).requires_grad is \
        torch.inference_mode(lambda v: v * 2)(tx).requires_grad is False
    mode = minidl.no_grad()
    with mode:
        with mode:
            pass
        assert not minidl.is_grad_enabled()
    assert minidl.is_grad_enabled()


def test_creation_results_match_torch():
    cases = [
        (lambda m: m.arange(0, 1, 0.25)), (lambda m: m.arange(5)), (lambda m: m.arange(1, 2.5)),
        (lambda m: m.arange(10, 0, -3)), (lambda m: m.arange(0, 1, 0.1)),
        (lambda m: m.full((2,), 3)), (lambda m: m.full((2,), True)),
        (lambda m: m.full((2,), 3.0)), (lambda m: m.linspace(0, 10, 5)),
        (lambda m: m.linspace(0, 10, 4, dtype=m.int64)), (lambda m: m.linspace(2, 10, 1)),
        (lambda m: m.logspace(0, 2, 3)), (lambda m: m.logspace(0, 3, 4, base=2)),
        (lambda m: m.logspace(-1, 1, 5, dtype=m.float64)),
        (lambda m: m.logspace(0, 2, 3, dtype=m.int64)), (lambda m: m.logspace(0, 2, 0)),
        (lambda m: m.zeros(2, dtype=m.bool)), (lambda m: m.tensor([])),
        (lambda m: m.tensor([[]])), (lambda m: m.tensor([True, 1])),
    ]
    for k, make in enumerate(cases):
        mine, theirs = make(minidl), make(torch)
        assert str(mine.dtype) == str(theirs.dtype).replace("torch.", ""), k
        same(mine, theirs, f"case {k}", atol=1e-6)
    assert minidl.numel(minidl.zeros(2, 3)) == 6 and minidl.is_tensor(minidl.zeros(1))
    assert not minidl.is_tensor(np.zeros(1))


def test_creation_errors_as_torch():
    both_raise(lambda: minidl.arange(0, 5, 0), lambda: torch.arange(0, 5, 0),
               [RuntimeError, ValueError], "nonzero")
    both_raise(lambda: minidl.arange(5, 0), lambda: torch.arange(5, 0),
               [RuntimeError, ValueError], "inconsistent with step sign")
    both_raise(lambda: minidl.from_numpy([1, 2]), lambda: torch.from_numpy([1, 2]),
               [TypeError], "np.ndarray")
    both_raise(lambda: minidl.tensor("a"), lambda: torch.tensor("a"), [TypeError], "str")
    with pytest.raises(TypeError, match="floating-point"):  # torch: NotImplementedError
        minidl.randn(2, dtype=minidl.int64)
    with pytest.raises(NotImplementedError):
        torch.randn(2, dtype=torch.int64)


def test_item_of_several_elements_is_a_runtime_error_and_numpy_takes_force():
    for shape in ((2,), (0,)):
        both_raise(lambda: minidl.ones(*shape).item(), lambda: torch.ones(*shape).item(),
                   [RuntimeError, ValueError], "cannot be converted to Scalar")
    x = minidl.ones(2, requires_grad=True)
    np.testing.assert_array_equal(x.numpy(force=True), torch.ones(2, requires_grad=True)
                                  .numpy(force=True))


def test_from_numpy_and_as_tensor_share_memory_and_keep_the_dtype():
    a = np.zeros(3)
    m, t = minidl.from_numpy(a), torch.from_numpy(a)
    a[0] = 5.0
    same(m, t, "shared")
    m.data[1] = 7.0
    assert a[1] == 7.0 and m.dtype == np.float64
    b = np.arange(3, dtype=np.int32)
    am, at = minidl.as_tensor(b), torch.as_tensor(b)
    assert str(am.dtype) == str(at.dtype).replace("torch.", "")
    b[0] = 9
    same(am, at, "as_tensor shares")
    assert minidl.as_tensor(am) is am
    assert minidl.as_tensor([1.0, 2.0]).dtype == np.float32
    assert minidl.as_tensor(b, dtype=minidl.float64).dtype == np.float64


def test_size_keyword_numel_and_requires_grad_errors_as_torch():
    for name in ("zeros", "ones", "empty"):
        mine = getattr(minidl, name)(size=(2, 3))
        theirs = getattr(torch, name)(size=(2, 3))
        assert mine.shape == tuple(theirs.shape) and str(mine.dtype) == "float32"
    assert minidl.randn(size=(2,)).shape == minidl.rand(size=(2, 1)).shape[:1]
    both_raise(lambda: minidl.numel([1, 2]), lambda: torch.numel([1, 2]), [TypeError],
               "must be Tensor")
    both_raise(lambda: minidl.tensor([1, 2], requires_grad=True),
               lambda: torch.tensor([1, 2], requires_grad=True), [RuntimeError, TypeError])
    both_raise(lambda: minidl.tensor([1, 2]).requires_grad_(),
               lambda: torch.tensor([1, 2]).requires_grad_(), [RuntimeError, TypeError])
    same(minidl.from_numpy(np.ones(2, np.complex64)), torch.from_numpy(np.ones(2, np.complex64)),
         "complex")
