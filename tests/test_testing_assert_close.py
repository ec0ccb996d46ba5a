"""minidl.testing.assert_close and make_tensor against torch.testing's: the same verdicts and
the same messages on the same pairs."""
import math

import numpy as np
import pytest

import minidl
from minidl.testing import assert_close, make_tensor

PAIRS = [
    ("equal", [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], {}),
    ("one_off", [1.0, 2.0, 3.0], [1.0, 2.5, 3.0], {}),
    ("within_default_tolerance", [1.0, 2.0], [1.0, 2.000001], {}),
    ("shape", [1.0, 2.0], [1.0, 2.0, 3.0], {}),
    ("dtype", [1.0, 2.0], ("float64", [1.0, 2.0]), {}),
    ("dtype_unchecked", [1.0, 2.0], ("float64", [1.0, 2.0]), {"check_dtype": False}),
    ("ints", ("int64", [1, 2]), ("int64", [1, 3]), {}),
    ("bools", ("bool", [True, False]), ("bool", [True, True]), {}),
    ("nan", [[1.0, math.nan]], [[1.0, math.nan]], {}),
    ("nan_equal", [[1.0, math.nan]], [[1.0, math.nan]], {"equal_nan": True}),
    ("scalar_tensors", ("float32", 2.0), ("float32", 3.0), {}),
    ("given_tolerances", [1.0, 2.0], [1.0, 2.1], {"rtol": 0.1, "atol": 0.0}),
    ("custom_msg", [1.0, 2.0], [1.0, 2.1], {"msg": "custom"}),
    ("float64_tight", ("float64", [1.0, 2.0]), ("float64", [1.0, 2.0000001]), {}),
]


def make(fw, spec):
    dtype, values = spec if isinstance(spec, tuple) else ("float32", spec)
    return fw.tensor(values, dtype=getattr(fw, dtype))


def outcome(fn):
    try:
        fn()
        return "ok"
    except Exception as e:  # the type and the message, for comparison
        return f"{type(e).__name__}: {e}"


@pytest.mark.parametrize("name,a,e,kw", PAIRS, ids=[p[0] for p in PAIRS])
def test_tensor_pairs_match_torch(name, a, e, kw):
    ours = outcome(lambda: assert_close(make(minidl, a), make(minidl, e), **kw))
    torch = pytest.importorskip("torch")
    theirs = outcome(lambda: torch.testing.assert_close(make(torch, a), make(torch, e), **kw))
    assert ours == theirs.replace("torch.", "minidl.")


CONTAINERS = [
    ("numbers", 1.0, 1.1),
    ("ints", 3, 3),
    ("list", [1.0, 2.0], [1.0, 3.0]),
    ("dict", {"a": 1.0}, {"a": 2.0}),
    ("lengths", [1, 2], [1, 2, 3]),
    ("keys", {"a": 1}, {"b": 1}),
    ("missing_key", {"a": 1}, {"a": 1, "b": 2}),
    ("int_numbers", 2, 3),
    ("bools", True, False),
]


@pytest.mark.parametrize("name,a,e", CONTAINERS, ids=[c[0] for c in CONTAINERS])
def test_numbers_and_containers_match_torch(name, a, e):
    torch = pytest.importorskip("torch")
    assert outcome(lambda: assert_close(a, e)) == outcome(
        lambda: torch.testing.assert_close(a, e))


def test_tensors_inside_containers_and_errors():
    t = minidl.tensor([1.0, 2.0])
    assert_close([t, {"x": t}], [t.clone(), {"x": t.clone()}])
    with pytest.raises(AssertionError, match=r"The failure occurred for item \[1\]\['x'\]"):
        assert_close([t, {"x": t}], [t, {"x": t + 1}])
    with pytest.raises(TypeError, match="No comparison pair"):
        assert_close(t, 1.0)
    with pytest.raises(ValueError, match="Both 'rtol' and 'atol'"):
        assert_close(t, t, rtol=1e-3)
    with pytest.raises(AssertionError, match="not close") as info:
        assert_close(t, t + 1, msg=lambda m: "wrapped: " + m)
    assert str(info.value).startswith("wrapped: Tensor-likes")


def test_make_tensor():
    minidl.manual_seed(0)
    x = make_tensor(3, 4, dtype=minidl.float32, low=-1, high=1, requires_grad=True)
    assert x.shape == (3, 4) and x.dtype == minidl.float32 and x.requires_grad
    assert (x.numpy() >= -1).all() and (x.numpy() < 1).all()
    i = make_tensor((1000,), dtype=minidl.int64, exclude_zero=True)
    assert i.dtype == minidl.int64 and not (i.numpy() == 0).any()
    assert i.numpy().min() >= -9 and i.numpy().max() <= 9
    u = make_tensor(50, dtype=minidl.uint8)
    assert u.numpy().min() >= 0
    b = make_tensor(2, 2, dtype=minidl.bool)
    assert b.dtype == minidl.bool
    with pytest.raises(ValueError, match="low"):
        make_tensor(2, dtype=minidl.int64, low=5, high=2)


# ---- numpy arrays, None and number types; make_tensor's ranges and refusals --------------------------
def _verdict(fw, actual, expected, **kw):
    try:
        fw.testing.assert_close(actual, expected, **kw)
        return "pass"
    except Exception as e:  # the kind and the text, with the frameworks' names taken out
        return type(e).__name__, str(e).replace("torch.", "").replace("minidl.", "")


def test_assert_close_numpy_arrays_none_and_number_types_as_torch():
    torch = pytest.importorskip("torch")
    a, b = np.array([1.0, 2.0]), np.array([1.0, 2.5])
    cases = [((a, a.copy()), {}), ((a, b), {}), ((a, a.astype(np.float32)), {}),
             ((a, a.astype(np.float32)), {"check_dtype": False}),
             ((np.array([1, 2]), np.array([1, 3])), {}),
             ((None, None), {}), (([None, 1.0], [None, 1.0]), {}),
             ((1, 1.0), {}), ((1.0, 1), {}), ((1, 1.0), {"check_dtype": False}),
             ((np.float32(1.0), 1.0), {}), ((np.int64(2), 2), {}), ((2, 2.5), {"check_dtype": False})]
    for (x, y), kw in cases:
        assert _verdict(minidl, x, y, **kw) == _verdict(torch, x, y, **kw), (x, y, kw)
    assert _verdict(minidl, None, 1.0) == ("AssertionError", "None mismatch: None is not 1.0")
    kind, text = _verdict(minidl, [1.0, {"a": "x"}], [1.0, {"a": "x"}])
    assert kind == "TypeError" and text.endswith("The failure occurred for item [1]['a']")


def test_make_tensor_ranges_and_refusals_as_torch():
    torch = pytest.importorskip("torch")
    mt = minidl.testing.make_tensor
    for dtype, low, high, lo, hi in [("int8", -1000, 1000, -128, 127), ("uint8", -5, 3, 0, 2),
                                     ("int16", -40000, 0, -32768, -1), ("uint8", None, None, 0, 9),
                                     ("bool", 0, 1, 0, 0), ("int64", 0.5, 2.5, 1, 2)]:
        v = mt(500, dtype=getattr(minidl, dtype), low=low, high=high).numpy().astype(np.int64)
        assert v.min() >= lo and v.max() <= hi, (dtype, low, high)
    v = mt(500, dtype=minidl.float16, low=-1e6, high=1e6).numpy()
    assert np.isfinite(v).all() and np.abs(v).max() > 1e4
    assert np.isfinite(mt(50, dtype=minidl.float64, low=-1e308, high=1e308).numpy()).all()
    assert mt(100, dtype=minidl.bool, exclude_zero=True).numpy().all()
    t = mt(3, 4, dtype=minidl.float32, noncontiguous=True)
    assert t.shape == (3, 4) and not t.is_contiguous()
    assert mt(2, 3, 4, 5, dtype=minidl.float32, memory_format=minidl.channels_last).is_contiguous(
        memory_format=minidl.channels_last)
    for kw in ({"dtype": "int64", "requires_grad": True}, {"dtype": "bool", "requires_grad": True},
               {"dtype": "float32", "low": float("nan")}, {"dtype": "uint8", "low": -5, "high": -1},
               {"dtype": "int32", "low": 5, "high": 5}, {"dtype": "float32", "high": -10},
               {"dtype": "float32", "noncontiguous": True, "memory_format": "channels_last"}):
        for fw in (minidl, torch):
            args = dict(kw, dtype=getattr(fw, kw["dtype"]))
            if "memory_format" in args:
                args["memory_format"] = fw.channels_last
            with pytest.raises(ValueError):
                fw.testing.make_tensor(2, 3, 4, 5, device="cpu", **args)
