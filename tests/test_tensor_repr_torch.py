"""repr of tensors, character for character as PyTorch's (``torch`` read as ``minidl``):
fixed, integer-valued and scientific float formats, nan/inf/negative zero, 0-d and empty
tensors, dtype/size/requires_grad suffixes, summarisation with ``...`` past the threshold,
line wrapping, and set_printoptions."""
import re

import numpy as np
import pytest

import minidl

torch = pytest.importorskip("torch")

nan, inf = float("nan"), float("inf")
rng = np.random.default_rng(0)
RANDN30 = rng.standard_normal(30).astype(np.float32)
RANDN_2D = (rng.standard_normal((6, 7)) * 100).astype(np.float32)
WIDE = np.arange(1001, dtype=np.float32) / 3
GRID = np.arange(40 * 40, dtype=np.int64).reshape(40, 40)

# (name, values, dtype)
CASES = [
    ("sci small", [1e-5, 1.0], "float32"),
    ("sci large int", [1e10, 1.0], "float32"),
    ("sci ratio", [1001.0, 1.0], "float32"),
    ("no sci ratio 1000", [1000.0, 1.0], "float32"),
    ("sci 1e8", [2e8, 3.0], "float32"),
    ("fixed", [1.5, 2.25, -3.125], "float32"),
    ("fixed tenths", [0.1, 0.2, 0.3], "float32"),
    ("whole", [1.0, 2.0, 3.0], "float32"),
    ("whole wide", [1.0, -250.0, 3.0], "float32"),
    ("neg zero", [-0.0, 1.0], "float32"),
    ("neg zero alone", [-0.0], "float32"),
    ("zeros", [0.0, 0.0], "float32"),
    ("nan whole", [nan, 1.0], "float32"),
    ("nan fixed", [nan, 1.5], "float32"),
    ("nonfinite only", [inf, -inf, nan], "float32"),
    ("inf whole", [1.0, -inf], "float32"),
    ("sci with nan", [1e-7, nan, 3.0], "float32"),
    ("1e-4 boundary", [1e-4, 0.5], "float32"),
    ("tiny", [1.2e-30], "float32"),
    ("huge", [3e38], "float32"),
    ("0-d fixed", 3.5, "float32"),
    ("0-d whole", 2.0, "float32"),
    ("0-d neg", -7.25, "float32"),
    ("0-d nan", nan, "float32"),
    ("0-d sci", 1e-6, "float32"),
    ("0-d int", 7, "int64"),
    ("0-d bool", True, "bool"),
    ("empty float", [], "float32"),
    ("empty int", [], "int64"),
    ("empty bool", [], "bool"),
    ("empty float64", [], "float64"),
    ("empty 2-d", np.zeros((0, 3)), "float32"),
    ("empty 2-d b", np.zeros((2, 0)), "int64"),
    ("int64", [1, -20, 300], "int64"),
    ("int64 large", [123456789012, -5], "int64"),
    ("int32", [1, 2, -3], "int32"),
    ("int16", [1, 2], "int16"),
    ("int8", [-1, 2], "int8"),
    ("uint8", [0, 255], "uint8"),
    ("bool", [True, False, True], "bool"),
    ("float64", [1.5, 2.0], "float64"),
    ("float64 whole", [1.0, 2.0], "float64"),
    ("float64 sci", [1e-12, 1.0], "float64"),
    ("float16", [1.5, 2.0], "float16"),
    ("bfloat16", [1.5, 2.0, 100.0], "bfloat16"),
    ("2-d", [[1.5, -2.0], [3.0, 4.0]], "float32"),
    ("3-d int", np.arange(24).reshape(2, 3, 4), "int64"),
    ("3-d float", np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7, "float32"),
    ("randn 30 wraps", RANDN30, "float32"),
    ("randn 2-d", RANDN_2D, "float32"),
    ("wide summarised", WIDE, "float32"),
    ("wide int summarised", np.arange(2000), "int64"),
    ("grid summarised", GRID, "int64"),
    ("grid float summarised", GRID.astype(np.float32) / 9, "float32"),
    ("rows summarised", np.arange(3 * 500).reshape(3, 500) * 1.5, "float32"),
    ("cols summarised", np.arange(500 * 3).reshape(500, 3), "int64"),
    ("3-d summarised", np.arange(12 * 10 * 10).reshape(12, 10, 10), "int64"),
    ("long ints wrap", np.arange(40) * 10**9, "int64"),
]


def _make(lib, values, dtype, **kw):
    arr = np.asarray(values)
    if dtype in ("float16", "bfloat16"):
        return lib.tensor(arr.astype(np.float32), dtype=getattr(lib, dtype), **kw)
    return lib.tensor(arr.astype(dtype), dtype=getattr(lib, dtype), **kw)


def _same(mt, tt):
    assert repr(mt) == repr(tt).replace("torch.", "minidl."), repr(tt)
    assert str(mt) == str(tt).replace("torch.", "minidl.")


@pytest.mark.parametrize("name,values,dtype", CASES, ids=[c[0] for c in CASES])
def test_repr_as_torch(name, values, dtype):
    _same(_make(minidl, values, dtype), _make(torch, values, dtype))


@pytest.mark.parametrize("name,values,dtype", [c for c in CASES if c[2].startswith("float")
                                               and np.size(c[1]) > 0][:12])
def test_repr_requires_grad_as_torch(name, values, dtype):
    _same(_make(minidl, values, dtype, requires_grad=True),
          _make(torch, values, dtype, requires_grad=True))


def _without_grad_fn(s):
    return re.sub(r"grad_fn=<\w+>", "grad_fn=<>", s)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("values", [[1.5, 2.0], RANDN30, WIDE, 2.5])
def test_repr_grad_fn_as_torch(values, dtype):
    mt = _make(minidl, values, dtype, requires_grad=True) * 2
    tt = _make(torch, values, dtype, requires_grad=True) * 2
    assert _without_grad_fn(repr(mt)) == _without_grad_fn(repr(tt)).replace("torch.", "minidl.")


def test_parameter_repr():
    mt = minidl.nn.Parameter(minidl.tensor([1.5, -2.0]))
    tt = torch.nn.Parameter(torch.tensor([1.5, -2.0]))
    assert repr(mt) == repr(tt)


OPTIONS = [
    dict(precision=2),
    dict(precision=6),
    dict(precision=0),
    dict(sci_mode=True),
    dict(sci_mode=False),
    dict(precision=2, sci_mode=True),
    dict(threshold=5),
    dict(threshold=5, edgeitems=1),
    dict(threshold=5, edgeitems=0),
    dict(linewidth=40),
    dict(linewidth=200),
    dict(profile="short"),
    dict(profile="full"),
]
OPTION_CASES = [c for c in CASES if c[0] in (
    "sci small", "sci large int", "fixed", "whole", "zeros", "nan fixed", "nonfinite only",
    "0-d fixed", "int64", "bool", "2-d", "3-d float", "randn 30 wraps", "wide summarised",
    "grid summarised", "float64 sci", "empty float")]


@pytest.mark.parametrize("options", OPTIONS, ids=[str(o) for o in OPTIONS])
def test_repr_with_printoptions_as_torch(options):
    try:
        minidl.set_printoptions(**options)
        torch.set_printoptions(**options)
        for name, values, dtype in OPTION_CASES:
            _same(_make(minidl, values, dtype), _make(torch, values, dtype))
    finally:
        minidl.set_printoptions(profile="default")
        torch.set_printoptions(profile="default")


def test_set_printoptions_resets_sci_mode_as_torch():
    try:
        for lib in (minidl, torch):
            lib.set_printoptions(sci_mode=True)
            lib.set_printoptions(precision=3)  # sci_mode back to None, as torch's
        _same(minidl.tensor([1.5, 2.0]), torch.tensor([1.5, 2.0]))
    finally:
        minidl.set_printoptions(profile="default")
        torch.set_printoptions(profile="default")


def test_repr_under_default_float64():
    try:
        minidl.set_default_dtype(minidl.float64)
        torch.set_default_dtype(torch.float64)
        for values, dtype in (([1.5, 2.0], "float64"), ([1.5, 2.0], "float32"), ([], "float64"),
                              ([], "float32"), ([1, 2], "int64")):
            _same(_make(minidl, values, dtype), _make(torch, values, dtype))
    finally:
        minidl.set_default_dtype(minidl.float32)
        torch.set_default_dtype(torch.float32)


def test_repr_on_the_fake_gpu(monkeypatch):
    import _fake_gpu

    _fake_gpu.install(monkeypatch, None)
    t = minidl.tensor([1.5, 2.0], device="cuda", requires_grad=True)
    # minidl names the device 'cuda' (one GPU per process); torch would print 'cuda:0'
    assert repr(t) == "tensor([1.5000, 2.0000], device='cuda:0', requires_grad=True)"


def test_suffix_breaks_where_torchs_does():
    # torch's line is one letter shorter (dtype=torch.int32): minidl breaks where torch does
    for lib in (minidl, torch):
        lib.set_printoptions(linewidth=29)
    try:
        _same(minidl.tensor(0, dtype=minidl.int32), torch.tensor(0, dtype=torch.int32))
        assert repr(minidl.tensor(0, dtype=minidl.int32)) == "tensor(0, dtype=minidl.int32)"
    finally:
        minidl.set_printoptions(profile="default")
        torch.set_printoptions(profile="default")


def test_random_tensors_and_options_as_torch():
    """A seeded sweep: shapes up to 3-D, magnitudes 1e-9..1e12, whole values, nan/inf/-0,
    zeros, several dtypes, random print options."""
    r = np.random.default_rng(7)
    for _ in range(300):
        nd = int(r.integers(0, 4))
        shape = tuple(int(s) for s in r.integers(1, 12 if nd > 1 else 1200, nd))
        dtype = str(r.choice(["float32", "float64", "int64", "bool", "float16", "int32"]))
        a = r.standard_normal(shape) * 10.0 ** int(r.integers(-9, 12))
        if r.random() < 0.3:
            a = np.round(a)
        if r.random() < 0.15 and a.size:
            a.flat[int(r.integers(a.size))] = r.choice([np.nan, np.inf, -np.inf, -0.0])
        if dtype in ("int64", "int32"):
            a = np.nan_to_num(a, posinf=0, neginf=0).clip(-2e9, 2e9)
        if dtype == "bool":
            a = a > 0
        if dtype == "float16":
            a = a.clip(-6e4, 6e4)
        options = {}
        if r.random() < 0.3:
            options = dict(precision=int(r.integers(0, 8)), linewidth=int(r.integers(20, 150)),
                           edgeitems=int(r.integers(0, 4)), threshold=int(r.integers(3, 1500)),
                           sci_mode=[None, True, False][int(r.integers(3))])
        minidl.set_printoptions(**options)
        torch.set_printoptions(**options)
        try:
            _same(_make(minidl, a, dtype), _make(torch, a, dtype))
        finally:
            minidl.set_printoptions(profile="default")
            torch.set_printoptions(profile="default")
