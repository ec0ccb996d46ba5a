"""Subtraction with and negation of bool tensors are refused with PyTorch's RuntimeError and
message, through every spelling (operators, methods, functions, in-place forms)."""
import numpy as np
import pytest

import minidl

torch = pytest.importorskip("torch")

CASES = {
    "a - m": lambda t, a, m: a - m,
    "m - a": lambda t, a, m: m - a,
    "1 - m": lambda t, a, m: 1 - m,
    "m - 1": lambda t, a, m: m - 1,
    "1.0 - m": lambda t, a, m: 1.0 - m,
    "m - m": lambda t, a, m: m - m,
    "m - True": lambda t, a, m: m - True,
    "True - a": lambda t, a, m: True - a,
    "a - True": lambda t, a, m: a - True,
    "-m": lambda t, a, m: -m,
    "m.neg()": lambda t, a, m: m.neg(),
    "neg(m)": lambda t, a, m: t.neg(m),
    "m.negative()": lambda t, a, m: m.negative(),
    "sub(a, m)": lambda t, a, m: t.sub(a, m),
    "subtract(m, a)": lambda t, a, m: t.subtract(m, a),
    "a.sub(m, alpha=2)": lambda t, a, m: a.sub(m, alpha=2),
    "a.clone().sub_(m)": lambda t, a, m: a.clone().sub_(m),
    "m -= 1": lambda t, a, m: m.clone().__isub__(1),
    "a -= m": lambda t, a, m: a.clone().__isub__(m),
    "m.neg_()": lambda t, a, m: m.clone().neg_(),
    "0-d mask - a": lambda t, a, m: t.tensor(True) - a,
    "(a > 1) - 1": lambda t, a, m: (a > 1) - 1,
}


@pytest.mark.parametrize("name", list(CASES))
def test_bool_subtraction_refused_as_torch(name):
    fn = CASES[name]
    with pytest.raises(RuntimeError) as expected:
        fn(torch, torch.tensor([1.0, 2.0]), torch.tensor([True, False]))
    with pytest.raises(RuntimeError) as got:
        fn(minidl, minidl.tensor([1.0, 2.0]), minidl.tensor([True, False]))
    assert str(got.value) == str(expected.value)


def test_masks_inverted_the_supported_ways():
    m = minidl.tensor([True, False])
    np.testing.assert_array_equal((~m).numpy(), [False, True])
    np.testing.assert_array_equal(m.logical_not().numpy(), [False, True])
    np.testing.assert_array_equal((1 - m.float()).numpy(), [0.0, 1.0])
    np.testing.assert_array_equal((m ^ True).numpy(), [False, True])


@pytest.mark.parametrize("a, b", [
    (np.array([True, False]), np.array([1.0, 2.0])),
    (np.array([1.0, 2.0]), np.array([True, False])),
    (np.array([1, 2]), True),
    (np.array([True, False]), 2),
    (np.array([True, False]), np.array([True, True])),
])
def test_subtract_refuses_bool_operands(a, b):
    def args(L):
        x = L.tensor(a) if L is torch else minidl.tensor(a, dtype=a.dtype)
        y = b if not isinstance(b, np.ndarray) else (
            torch.tensor(b) if L is torch else minidl.tensor(b, dtype=b.dtype))
        return x, y

    with pytest.raises(RuntimeError):
        torch.subtract(*args(torch))
    with pytest.raises(RuntimeError, match="bool"):
        minidl.subtract(*args(minidl))
    with pytest.raises(TypeError):
        minidl.subtract(*args(minidl))
