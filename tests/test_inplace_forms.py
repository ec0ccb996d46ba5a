"""The in-place forms of elementwise methods (x.erf_(), x.ge_(0), x.lerp_(y, 0.5), ...):
values, dtypes and gradients as PyTorch's, and PyTorch's refusals."""
from __future__ import annotations

import numpy as np
import pytest

import minidl
from minidl.tensor_functions import INPLACE_FORMS
from helpers import same

torch = pytest.importorskip("torch", reason="the in-place forms are compared with PyTorch's")

RNG = np.random.default_rng(0)
POS = RNG.uniform(0.2, 0.9, (3, 4))  # inside every domain used below (acos, atanh, logit...)
OTHER = RNG.uniform(0.3, 1.5, (3, 4))
SQUARE = RNG.uniform(-1, 1, (4, 4))
INTS = np.array([[6, 9, 12, 5], [8, 3, 7, 10], [4, 15, 2, 1]], dtype=np.int64)
INT_OTHER = np.array([[4, 6, 8, 3], [12, 9, 14, 5], [2, 10, 4, 7]], dtype=np.int64)


def _t(lib, array, grad=False):
    if lib is torch:
        return torch.tensor(array, requires_grad=grad)
    dtype = {np.dtype(np.float64): minidl.float64, np.dtype(np.int64): minidl.int64,
             np.dtype(bool): minidl.bool}[array.dtype]
    return minidl.tensor(array, dtype=dtype, requires_grad=grad)


# name -> (self array, function(lib) -> arguments)
NO_ARGS = lambda lib: ()  # noqa: E731
SPECS = {name: (POS, NO_ARGS) for name in (
    "acos", "arccos", "asin", "arcsin", "asinh", "arcsinh", "atan", "arctan", "atanh", "arctanh",
    "cosh", "sinh", "tan", "sinc", "exp2", "log10", "log2", "logit", "erf", "erfc", "erfinv",
    "lgamma", "digamma", "i0", "deg2rad", "rad2deg", "fix", "sgn", "negative", "absolute",
    "nan_to_num")}
SPECS.update({name: (OTHER + 1, NO_ARGS) for name in ("acosh", "arccosh")})
SPECS.update({name: (POS, lambda lib: (_t(lib, OTHER),)) for name in (
    "atan2", "arctan2", "xlogy", "copysign", "hypot", "nextafter", "float_power", "fmod",
    "remainder", "floor_divide", "divide", "true_divide", "multiply", "subtract", "eq", "ne",
    "lt", "le", "gt", "ge", "greater", "greater_equal", "less", "less_equal", "not_equal",
    "logical_and", "logical_or", "logical_xor", "heaviside", "igamma", "igammac")})
SPECS.update({
    "logical_not": (POS, NO_ARGS),
    "polygamma": (POS, lambda lib: (1,)),
    "mvlgamma": (OTHER + 1, lambda lib: (2,)),
    "lerp": (POS, lambda lib: (_t(lib, OTHER), 0.3)),
    "addcmul": (POS, lambda lib: (_t(lib, OTHER), _t(lib, POS[::-1].copy()))),
    "addcdiv": (POS, lambda lib: (_t(lib, OTHER), _t(lib, POS[::-1].copy()))),
    "addmm": (SQUARE, lambda lib: (_t(lib, SQUARE.T.copy()), _t(lib, SQUARE * 2))),
    "addmv": (SQUARE[0].copy(), lambda lib: (_t(lib, SQUARE), _t(lib, SQUARE[1].copy()))),
    "addr": (SQUARE, lambda lib: (_t(lib, SQUARE[0].copy()), _t(lib, SQUARE[1].copy()))),
    "addbmm": (SQUARE, lambda lib: (_t(lib, np.stack([SQUARE, SQUARE.T])),
                                    _t(lib, np.stack([SQUARE.T, SQUARE])))),
    "baddbmm": (np.stack([SQUARE, SQUARE.T]), lambda lib: (_t(lib, np.stack([SQUARE, SQUARE])),
                                                           _t(lib, np.stack([SQUARE.T] * 2)))),
    "cumsum": (POS, lambda lib: (1,)),
    "cumprod": (POS, lambda lib: (0,)),
    "tril": (SQUARE, lambda lib: (-1,)),
    "triu": (SQUARE, lambda lib: (1,)),
    "renorm": (SQUARE, lambda lib: (2, 0, 0.5)),
    "ldexp": (POS, lambda lib: (_t(lib, INT_OTHER),)),
    "masked_scatter": (POS, lambda lib: (_t(lib, POS > 0.5), _t(lib, OTHER))),
    "gcd": (INTS, lambda lib: (_t(lib, INT_OTHER),)),
    "lcm": (INTS, lambda lib: (_t(lib, INT_OTHER),)),
    "bitwise_and": (INTS, lambda lib: (_t(lib, INT_OTHER),)),
    "bitwise_or": (INTS, lambda lib: (_t(lib, INT_OTHER),)),
    "bitwise_xor": (INTS, lambda lib: (_t(lib, INT_OTHER),)),
    "bitwise_not": (INTS, NO_ARGS),
    "bitwise_left_shift": (INTS, lambda lib: (_t(lib, INT_OTHER % 4),)),
    "bitwise_right_shift": (INTS, lambda lib: (_t(lib, INT_OTHER % 4),)),
})
# whose gradient PyTorch defines (the others are comparisons, integer ops or piecewise constant)
NOT_DIFFERENTIABLE = {"eq", "ne", "lt", "le", "gt", "ge", "greater", "greater_equal", "less",
                      "less_equal", "not_equal", "logical_and", "logical_or", "logical_xor",
                      "logical_not", "fix", "sgn", "floor_divide", "heaviside", "nextafter",
                      "gcd", "lcm", "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not",
                      "bitwise_left_shift", "bitwise_right_shift", "float_power",
                      # no derivative in self (test_special_more.py checks the refusal)
                      "igamma", "igammac"}
# minidl.special's series for polygamma (digamma's derivative) are good to about 5e-10
_RTOL = {"polygamma": 1e-8, "digamma": 1e-8}
PRESENT = [n for n in INPLACE_FORMS if hasattr(minidl.Tensor, n + "_")]


def test_every_listed_form_has_a_spec():
    assert set(INPLACE_FORMS) <= set(SPECS)
    assert len(PRESENT) >= 55  # the forms whose out-of-place method minidl has


@pytest.mark.parametrize("name", PRESENT)
def test_values_and_dtype_as_pytorch(name):
    array, make_args = SPECS[name]
    ours, theirs = _t(minidl, array), _t(torch, array)
    same = getattr(ours, name + "_")(*make_args(minidl))
    getattr(theirs, name + "_")(*make_args(torch))
    assert same is ours
    assert str(ours.dtype).split(".")[-1] == str(theirs.dtype).split(".")[-1]
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=_RTOL.get(name, 1e-12),
                               atol=1e-12, err_msg=name)


@pytest.mark.parametrize("name", [n for n in PRESENT if n not in NOT_DIFFERENTIABLE])
def test_gradient_through_the_change_as_pytorch_out_of_place(name):
    array, make_args = SPECS[name]
    weights = RNG.standard_normal(array.shape)
    grads = []
    for lib in (minidl, torch):
        x = _t(lib, array, grad=True)
        h = x * 1
        if lib is minidl:
            getattr(h, name + "_")(*make_args(lib))
        else:  # the out-of-place op's gradient (torch has none for some in-place forms: acosh_)
            h = getattr(h, name)(*make_args(lib))
        (h * _t(lib, weights)).sum().backward()
        grads.append(x.grad.numpy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=_RTOL.get(name, 1e-10), atol=1e-12,
                               err_msg=name)


def test_refusals_as_pytorch():
    ints = minidl.tensor([1, 2, 3])
    with pytest.raises(RuntimeError, match="result type float32 can't be cast to the desired "
                                           "output type int64"):
        ints.erf_()
    with pytest.raises(RuntimeError, match="output with shape \\[2\\] doesn't match the "
                                           "broadcast shape \\[2, 2\\]"):
        minidl.tensor([1.0, 2.0]).lerp_(minidl.ones(2, 2), 0.5)
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        minidl.tensor([0.2], requires_grad=True).tan_()
    flags = minidl.tensor([True, False])
    with pytest.raises(RuntimeError, match="can't be cast to the desired output type bool"):
        flags.erf_()


def test_a_view_sees_the_change_and_x_op_x_reads_the_old_value():
    base = minidl.tensor([[0.1, 0.2], [0.3, 0.4]], dtype=minidl.float64)
    row = base[0]
    row.erf_()
    np.testing.assert_allclose(base.numpy()[0], torch.erf(torch.tensor([0.1, 0.2])).numpy(),
                               rtol=1e-7)
    x = minidl.tensor([0.5, 0.7], dtype=minidl.float64, requires_grad=True)
    h = x * 1
    h.mul_(h)
    h.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.4])


def test_div_rounding_modes_and_floor_division_in_place():
    """``div_(rounding_mode=...)`` and ``//=`` change the tensor itself, as torch's."""
    torch = pytest.importorskip("torch")
    for mode in (None, "floor", "trunc"):
        for values in ([5.0, -7.0, 0.5], [5, -7, 3]):
            if mode is None and isinstance(values[0], int):
                continue  # an integer tensor cannot hold a true quotient (refused, as torch)
            x, t = minidl.tensor(values), torch.tensor(values)
            same = x
            x.div_(2, rounding_mode=mode)
            t.div_(2, rounding_mode=mode)
            assert same is x and x.tolist() == t.tolist(), mode
    x = minidl.tensor([5.0, -7.0])
    same = x
    x //= 2
    assert x is same and x.tolist() == [2.0, -4.0]
    with pytest.raises(ValueError, match="rounding_mode to be one of None, 'trunc', or 'floor'"):
        x.div_(2, rounding_mode="round")
    h = minidl.tensor([3.0, -5.0], requires_grad=True) * 1.0  # recorded in the graph
    h.div_(2, rounding_mode="trunc")
    h.sum().backward()  # trunc has a zero gradient almost everywhere, as torch's
    assert h.tolist() == [1.0, -2.0]


# ---- atan2_, hypot_ and float_power_ (an audit) --------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda L, x: x.atan2_(L.tensor([1, 2])),
    lambda L, x: x.arctan2_(L.tensor([1, 2])),
    lambda L, x: x.hypot_(L.tensor([1.0, 2.0])),
])
def test_inplace_atan2_hypot_refuse_a_float_result_in_an_integer_tensor(call):
    with pytest.raises(RuntimeError):
        call(torch, torch.tensor([1, 2]))
    x = minidl.tensor([1, 2])
    with pytest.raises((RuntimeError, TypeError), match="cast"):
        call(minidl, x)
    assert x.numpy().tolist() == [1, 2], "unchanged"


def test_inplace_atan2_still_matches_torch_with_gradients():
    a, b = np.array([[0.3, -1.2], [2.0, 0.5]]), np.array([0.7, -0.4])
    mb, tb = minidl.tensor(a, dtype=minidl.float64, requires_grad=True), torch.tensor(a, requires_grad=True)
    mo, to = minidl.tensor(b, dtype=minidl.float64, requires_grad=True), torch.tensor(b, requires_grad=True)
    mx, tx = mb * 1, tb * 1
    mx.atan2_(mo)
    tx.atan2_(to)
    same(mx, tx, "atan2_")
    mx.sum().backward()
    tx.sum().backward()
    same(mb.grad, tb.grad, "self's grad")
    same(mo.grad, to.grad, "other's grad")


def test_float_power_inplace_needs_a_float64_base():
    for L in (torch, minidl):
        with pytest.raises(RuntimeError, match="float_power_"):
            L.tensor([1.0, 2.0], dtype=L.float32).float_power_(2)
    m = minidl.tensor([1.0, 2.0], dtype=minidl.float64).float_power_(3)
    same(m, torch.tensor([1.0, 2.0], dtype=torch.float64).float_power_(3), "float64 base")
