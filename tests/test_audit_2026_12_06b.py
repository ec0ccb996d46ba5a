"""Divergences from PyTorch 2.13 found by the second 2026-12-06 audit of the tensor ops: one
regression test each, against torch directly."""
import numpy as np
import pytest

import minidl
from minidl.testing import gradcheck

torch = pytest.importorskip("torch", reason="parity tests need torch")

NAN = float("nan")


def _np(t):
    return np.asarray(t.detach().numpy())


def _tie_patterns(seed, count):
    """Small tensors full of equal values (some with NaN), and a dim of each."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        shape = tuple(int(s) for s in rng.integers(1, 7, size=int(rng.integers(1, 4))))
        a = rng.integers(0, 3, shape).astype(np.float64)
        if i % 3 == 0:
            a[rng.random(shape) < 0.2] = NAN
        yield a, int(rng.integers(-len(shape), len(shape)))


def test_topk_ties_give_torchs_indices_and_gradients():
    for i, (a, d) in enumerate(_tie_patterns(0, 120)):
        n = a.shape[d]
        for largest in (True, False):
            k = (i * 7) % (n + 1)
            m = minidl.tensor(a, requires_grad=True)
            t = torch.tensor(a, requires_grad=True)
            rm, rt = minidl.topk(m, k, d, largest), torch.topk(t, k, d, largest)
            np.testing.assert_array_equal(_np(rm.indices), rt.indices.numpy())
            np.testing.assert_array_equal(_np(rm.values), rt.values.detach().numpy())
            w = np.arange(rt.values.numel(), dtype=np.float64).reshape(rt.values.shape)
            (rm.values * minidl.tensor(w)).sum().backward()
            (rt.values * torch.tensor(w)).sum().backward()
            np.testing.assert_array_equal(_np(m.grad), t.grad.numpy())
    # long rows take PyTorch's partial_sort path (k * 64 <= n); integers too
    a = np.random.default_rng(1).integers(0, 4, (2, 700))
    for k in (1, 10, 11, 50, 700):
        for largest in (True, False):
            np.testing.assert_array_equal(
                _np(minidl.tensor(a).topk(k, largest=largest).indices),
                torch.tensor(a).topk(k, largest=largest).indices.numpy())
    # sorted=False: the same elements as torch (torch leaves their order unspecified)
    a = [0., 0., 1., 1., 0., 0.]
    got = minidl.tensor(a).topk(5, sorted=False).indices.numpy()
    want = torch.tensor(a).topk(5, sorted=False).indices.numpy()
    assert sorted(got) == sorted(want)


def test_topk_and_kthvalue_refuse_bool_and_check_k():
    b = minidl.tensor([True, False])
    with pytest.raises(RuntimeError):
        torch.topk(torch.tensor([True, False]), 1)
    for f in (lambda: b.topk(1), lambda: minidl.kthvalue(b, 1)):
        with pytest.raises(RuntimeError, match="bool"):
            f()
    with pytest.raises(RuntimeError):
        torch.topk(torch.zeros(3), 4)
    with pytest.raises(RuntimeError, match="out of range"):
        minidl.zeros(3).topk(4)


def test_kthvalue_ties_give_torchs_index_and_gradient():
    for i, (a, d) in enumerate(_tie_patterns(2, 150)):
        n = a.shape[d]
        k = 1 + (i * 5) % n
        for keepdim in (False, True):
            m = minidl.tensor(a, requires_grad=True)
            t = torch.tensor(a, requires_grad=True)
            rm, rt = minidl.kthvalue(m, k, d, keepdim), torch.kthvalue(t, k, d, keepdim)
            np.testing.assert_array_equal(_np(rm.indices), rt.indices.numpy())
            np.testing.assert_array_equal(_np(rm.values), rt.values.detach().numpy())
            rm.values.sum().backward()
            rt.values.sum().backward()
            np.testing.assert_array_equal(_np(m.grad), t.grad.numpy())
    with pytest.raises(IndexError):
        torch.kthvalue(torch.zeros(3, 0), 1)
    with pytest.raises(IndexError, match="non-zero size"):
        minidl.kthvalue(minidl.zeros(3, 0), 1)
    x = minidl.tensor(np.random.default_rng(3).standard_normal((3, 6)), dtype=minidl.float64,
                      requires_grad=True)
    assert gradcheck(lambda a: minidl.kthvalue(a, 2, 1).values, [x])
    assert gradcheck(lambda a: a.topk(3, 0, largest=False).values, [x])
    with pytest.raises(RuntimeError):
        torch.tensor([True, False]).median()
    with pytest.raises(RuntimeError, match="bool"):
        minidl.tensor([True, False]).median()


def test_searchsorted_with_nan_gives_torchs_places():
    inf = float("inf")
    cases = [([1., 2., NAN], [NAN, 0., 1.5, 3., inf]), ([1., NAN, NAN], [NAN, 1., 2.]),
             ([NAN, NAN], [NAN, 1.]), ([1., 2., 3.], [NAN, 2.]),
             ([-inf, 0., inf, NAN], [inf, NAN, -inf]), ([1., NAN, 3., 4.], [3., 0., 5.])]
    for seq, values in cases:
        for right in (False, True):
            want = torch.searchsorted(torch.tensor(seq), torch.tensor(values), right=right)
            got = minidl.searchsorted(minidl.tensor(seq), minidl.tensor(values), right=right)
            np.testing.assert_array_equal(_np(got), want.numpy())
            want = torch.searchsorted(torch.tensor([seq, seq[::-1]]),
                                      torch.tensor([values, values]), right=right)
            got = minidl.searchsorted(minidl.tensor([seq, seq[::-1]]),
                                      minidl.tensor([values, values]), right=right)
            np.testing.assert_array_equal(_np(got), want.numpy())
            want = torch.bucketize(torch.tensor(values), torch.tensor(seq), right=right)
            got = minidl.bucketize(minidl.tensor(values), minidl.tensor(seq), right=right)
            np.testing.assert_array_equal(_np(got), want.numpy())
    # an integer sequence searched for float values, NaN among them
    want = torch.searchsorted(torch.tensor([1, 2, 3]), torch.tensor([NAN, 1.5]))
    np.testing.assert_array_equal(
        _np(minidl.searchsorted(minidl.tensor([1, 2, 3]), minidl.tensor([NAN, 1.5]))), want.numpy())


def test_searchsorted_refuses_what_torch_refuses():
    s = minidl.tensor([1., 2.])
    bad = [lambda: minidl.searchsorted(minidl.tensor([True, False]), minidl.tensor([True])),
           lambda: minidl.searchsorted(s, minidl.tensor([1.]), right=True, side="left"),
           lambda: minidl.searchsorted(minidl.tensor([[1., 2.]]), minidl.tensor(1.)),
           lambda: minidl.searchsorted(minidl.tensor([[1., 2.]]), minidl.tensor([[1.], [2.]]))]
    for f in bad:
        with pytest.raises(RuntimeError):
            f()
    with pytest.raises(RuntimeError):
        torch.searchsorted(torch.tensor([1., 2.]), torch.tensor([1.]), right=True, side="left")
    assert minidl.searchsorted(minidl.zeros(0), minidl.tensor([1.])).tolist() == [0]


def _same(fm, ft):
    """Run the same lambda on minidl and torch: equal values and dtypes, or both raise an
    error of torch's type (minidl's error classes subclass torch's)."""
    try:
        want = ft(torch)
    except Exception as e:  # noqa: BLE001  (any error torch raises, minidl must raise too)
        kind = RuntimeError if isinstance(e, RuntimeError) else type(e)
        with pytest.raises(kind):
            fm(minidl)
        return
    got = fm(minidl)
    assert str(got.dtype).split(".")[-1] == str(want.dtype).split(".")[-1]
    if want.dtype.is_floating_point:  # within an ulp or two of torch's vectorised math
        np.testing.assert_allclose(_np(got).astype(np.float64),
                                   want.double().numpy(), rtol=3e-7, atol=0)
    else:
        np.testing.assert_array_equal(_np(got), want.numpy())


def _both(f):
    _same(f, f)


def test_integer_powers_with_negative_exponents():
    cases = [lambda L: L.tensor([1, 2, 3]) ** -1, lambda L: L.tensor([0, 2]) ** -2,
             lambda L: L.tensor(2) ** -1, lambda L: L.tensor([1, 2], dtype=L.uint8) ** -1,
             lambda L: L.tensor([True, False]) ** -1, lambda L: L.tensor([2, 3]).pow(-2),
             lambda L: L.pow(L.tensor([2, 3]), -1), lambda L: L.tensor([2, 3]) ** np.int64(-1),
             lambda L: L.tensor([2, 3], dtype=L.int8) ** 200,
             # a tensor exponent: no error, PyTorch's integer results (1, +-1 or 0)
             lambda L: L.tensor([-3, -2, -1, 0, 1, 2, 3] * 2) ** L.tensor([-1] * 7 + [-2] * 7),
             lambda L: 2 ** L.tensor([1, -1]), lambda L: (-1) ** L.tensor([1, -1, -2, 0]),
             lambda L: L.tensor([1, 2, 0], dtype=L.uint8) ** L.tensor([-1, -1, -1], dtype=L.int8),
             lambda L: L.tensor([1, -1, -1, 5], dtype=L.int8) ** L.tensor([-1, -1, -2, -3],
                                                                        dtype=L.int8),
             lambda L: L.tensor([2]) ** L.tensor(-1),
             # exponents that stay legal
             lambda L: L.tensor([0, 2]) ** 0, lambda L: L.tensor([1, 2]) ** -1.0,
             lambda L: L.tensor([2, 3], dtype=L.uint8) ** 200, lambda L: L.tensor([3]) ** 40]
    for f in cases:
        _both(f)
    x = minidl.tensor([2, 3])
    with pytest.raises(RuntimeError, match="negative integer powers"):
        x **= -1
    x **= minidl.tensor([-1, 1])
    assert x.tolist() == [0, 3]


def test_bool_operands_refused_as_in_torch():
    b = lambda L: L.tensor([True, False, True])  # noqa: E731
    i = lambda L: L.tensor([1, 2, 3])  # noqa: E731
    refused = [lambda L: -b(L), lambda L: L.neg(b(L)), lambda L: b(L) - b(L),
               lambda L: i(L) - b(L), lambda L: b(L) - i(L), lambda L: b(L) - 1,
               lambda L: 1 - b(L), lambda L: True - b(L), lambda L: b(L) - True,
               lambda L: b(L) - 1.5, lambda L: L.sub(b(L), b(L)), lambda L: i(L) - True,
               lambda L: b(L).argmax(), lambda L: b(L).argmin(0), lambda L: b(L).abs(),
               lambda L: L.floor(b(L)), lambda L: L.ceil(b(L)), lambda L: L.trunc(b(L)),
               lambda L: L.round(b(L)), lambda L: L.frac(b(L)), lambda L: b(L).relu(),
               lambda L: b(L) @ b(L), lambda L: b(L) // b(L), lambda L: b(L) % b(L),
               lambda L: L.fmod(b(L), b(L)), lambda L: b(L).clamp(min=True),
               lambda L: b(L) ** b(L), lambda L: True ** b(L), lambda L: b(L).mean(),
               lambda L: b(L).var(), lambda L: i(L) @ L.tensor([1., 2., 3.])]
    for f in refused:
        with pytest.raises(RuntimeError):
            f(torch)
        with pytest.raises(RuntimeError):
            f(minidl)
    with pytest.raises(RuntimeError, match="logical_not"):
        -b(minidl)
    with pytest.raises(RuntimeError, match="logical_xor"):
        b(minidl) - b(minidl)
    t = minidl.tensor([1., 2.])
    with pytest.raises(RuntimeError, match="bool"):
        t -= minidl.tensor([True, False])
    allowed = [lambda L: b(L) + b(L), lambda L: b(L) * b(L), lambda L: b(L) / b(L),
               lambda L: b(L) ** 2, lambda L: b(L) ** True, lambda L: b(L) ** False,
               lambda L: 2 ** b(L), lambda L: b(L) ** 0.5, lambda L: L.diff(b(L)),
               lambda L: b(L).clamp(0, 1), lambda L: L.sign(b(L)), lambda L: b(L).cumsum(0),
               lambda L: b(L).sum(), lambda L: L.square(b(L))]
    for f in allowed:
        _both(f)


def test_max_min_argmax_over_an_empty_dim_raise_torchs_errors():
    for name in ("argmax", "argmin", "max", "min", "amax", "amin"):
        for dim in (None, 1, -1):
            def f(L, name=name, dim=dim):
                x = L.zeros((3, 0))
                return getattr(x, name)() if dim is None else getattr(x, name)(dim)
            # torch: an IndexError, but a RuntimeError for max(), min(), amax(), amin()
            kind = RuntimeError if dim is None and not name.startswith("arg") else IndexError
            with pytest.raises(kind):
                f(torch)
            with pytest.raises(kind, match="reduction dim"):
                f(minidl)
        # an empty dim that is not reduced: an empty result, as in torch
        want = getattr(torch.zeros((3, 0)), name)(0)
        got = getattr(minidl.zeros((3, 0)), name)(0)
        want, got = (want.values, got.values) if isinstance(want, tuple) else (want, got)
        assert tuple(got.shape) == tuple(want.shape) == (0,)
    assert minidl.zeros((3, 0)).softmax(1).shape == (3, 0)
    assert minidl.zeros((3, 0)).log_softmax(1).shape == (3, 0)


def test_in_place_ops_follow_torchs_result_types():
    def ip(op, make, other):
        def f(L):
            x = make(L)
            getattr(x, op)(other(L) if callable(other) else other)
            return x
        return f
    cases = [ip("__iadd__", lambda L: L.tensor([1, 2]), 2.5),
             ip("__iadd__", lambda L: L.tensor([1, 2]), lambda L: L.tensor([1., 2.])),
             ip("__itruediv__", lambda L: L.tensor([1, 2]), 2),
             ip("__imul__", lambda L: L.tensor([1, 2]), lambda L: L.tensor(1.5)),
             ip("__iadd__", lambda L: L.tensor([0, 2], dtype=L.uint8), -1),
             ip("__iadd__", lambda L: L.tensor([0, 2], dtype=L.uint8), 300),
             ip("__iadd__", lambda L: L.tensor([0, 2], dtype=L.uint8),
                lambda L: L.tensor([-1, 1], dtype=L.int8)),
             ip("__iadd__", lambda L: L.tensor([100, 2], dtype=L.int8),
                lambda L: L.tensor([100, 1])),
             ip("__iadd__", lambda L: L.tensor([True, False]), lambda L: L.tensor([True, True])),
             ip("__iadd__", lambda L: L.tensor([True, False]), 1),
             ip("__iadd__", lambda L: L.tensor([1., 2.]), lambda L: L.tensor([[1., 2.], [3, 4]])),
             ip("__itruediv__", lambda L: L.tensor([1., 0.]), 0),
             ip("__ipow__", lambda L: L.tensor([1, 4]), 0.5),
             ip("add_", lambda L: L.tensor([1, 2]), 2.5),
             ip("fill_", lambda L: L.tensor([1, 2], dtype=L.uint8), -1),
             ip("fill_", lambda L: L.tensor([1, 2], dtype=L.uint8), -255),
             ip("fill_", lambda L: L.tensor([1, 2], dtype=L.uint8), -1.5),
             ip("fill_", lambda L: L.tensor([1, 2], dtype=L.uint8), 300),
             ip("fill_", lambda L: L.tensor([1, 2], dtype=L.int8), -1.5),
             ip("fill_", lambda L: L.tensor([1, 2]), float("nan")),
             ip("fill_", lambda L: L.tensor([1., 2.]), 1e40),
             ip("fill_", lambda L: L.tensor([1., 2.], dtype=L.float16), 1e5),
             ip("fill_", lambda L: L.tensor([1., 2.]), float("inf")),
             ip("copy_", lambda L: L.tensor([1, 2], dtype=L.uint8), lambda L: L.tensor([-1, 300]))]
    for f in cases:
        _both(f)
    with pytest.raises(TypeError, match="can't be cast to the desired output type int64"):
        x = minidl.tensor([1, 2])
        x += 2.5
    x = minidl.tensor([1., 2.], requires_grad=True) * 1
    z = minidl.tensor([1, 2])
    with pytest.raises(RuntimeError, match="can't be cast"):  # recorded by the graph: same rule
        z += x


def test_std_var_with_no_degrees_of_freedom_warn_as_torch():
    cases = [lambda L: L.tensor([1.]).var(), lambda L: L.tensor([1., 2.]).std(correction=2),
             lambda L: L.tensor([1., 2.]).var(correction=3), lambda L: L.zeros(2, 0).var(1),
             lambda L: L.tensor(1.).std()]
    for f in cases:
        with pytest.warns(UserWarning, match="degrees of freedom is <= 0"):
            want = f(torch)
        with pytest.warns(UserWarning, match="degrees of freedom is <= 0"):
            got = f(minidl)
        np.testing.assert_array_equal(_np(got), want.numpy())
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        minidl.tensor([1.]).var(correction=0)  # one degree of freedom: no warning
        minidl.tensor([1., 2.]).std()


def test_inf_and_nan_results_come_without_numpy_warnings():
    import warnings
    inf = float("inf")
    cases = [lambda L: L.log(L.tensor([0., -1.])), lambda L: L.sqrt(L.tensor([-1.])),
             lambda L: L.exp(L.tensor([1000.])), lambda L: L.tensor([1e38]) * L.tensor([1e38]),
             lambda L: L.tensor([3e38]) + 3e38, lambda L: L.tensor([inf]) - inf,
             lambda L: L.tensor([0.]) * inf, lambda L: L.tensor([10.]) ** 100,
             lambda L: L.tensor([1, 2]) / 0, lambda L: L.tensor([1., 0.]) / L.zeros(2),
             lambda L: L.tensor([True, False]) / L.tensor([True, False]),
             lambda L: L.zeros(0).mean(), lambda L: L.zeros(2, 0).mean(1),
             lambda L: L.tensor([-inf, -inf]).softmax(0),
             lambda L: L.tensor([-inf, -inf]).log_softmax(0)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for f in cases:
            _both(f)
        x = minidl.tensor([0., 4.], requires_grad=True)
        (x.log() + x.sqrt()).sum().backward()
        assert np.isinf(x.grad.numpy()[0])


def test_reduction_dtype_and_promotion_edges():
    cases = [lambda L: L.tensor([1.5, 2., 3.]).sum(dtype=L.int32),
             lambda L: L.tensor([1, 2]).sum(dtype=L.float32),
             lambda L: L.ones(2, 3, dtype=L.int64).mean(1, dtype=L.float64),
             lambda L: L.tensor([True, False, True]).cumsum(0),
             lambda L: L.tensor([-1, 2, 127], dtype=L.int8).cumsum(0),
             lambda L: L.tensor([1, 2, 3]).cumsum(0, dtype=L.float32),
             lambda L: L.tensor([2 ** 30, 2 ** 30], dtype=L.int32).sum(),
             lambda L: L.tensor([1, 2, 3]) + 2.5, lambda L: L.tensor([1, 2]) / L.tensor([2, 2]),
             lambda L: L.tensor([True, False]) + L.tensor([True, True]),
             lambda L: L.tensor([1, 2, 250], dtype=L.uint8) + L.tensor([-1, 2, 127], dtype=L.int8),
             lambda L: L.tensor([1, 250], dtype=L.uint8) + L.tensor(300),
             lambda L: L.tensor([2 ** 62]) * 4, lambda L: L.tensor([100], dtype=L.int8) * 2]
    for f in cases:
        _both(f)


def test_clamp_where_cat_round_edges():
    nan = NAN
    cases = [lambda L: L.tensor([1., 2., 3.]).clamp(2.5, 1.5),
             lambda L: L.tensor([1, 2, 3]).clamp(3, 1),
             lambda L: L.tensor([1., 2.]).clamp(L.tensor([3., 3.]), L.tensor([1., 1.])),
             lambda L: L.tensor([1, 2, 3]).clamp(1.5, 2.5),
             lambda L: L.tensor([nan, 1.]).clamp(0, 0.5),
             lambda L: L.tensor([1, 2, 250], dtype=L.uint8).clamp(-1, 100),
             lambda L: L.tensor([-1, 2, 127], dtype=L.int8).clamp(max=300),
             lambda L: L.where(L.tensor([True, False]), 1, 0),
             lambda L: L.where(L.tensor([True, False]), 1., 0),
             lambda L: L.where(L.tensor([True, False]), L.tensor([1, 2]), 0.5),
             lambda L: L.where(L.tensor([True, False]), L.tensor([1, 250], dtype=L.uint8), -1),
             lambda L: L.where(L.tensor([1, 0]), 1., 0.),
             lambda L: L.cat([L.tensor([1, 2]), L.tensor([1., 2.])]),
             lambda L: L.cat([L.tensor([True]), L.tensor([1, 2], dtype=L.uint8)]),
             lambda L: L.cat([L.tensor([1], dtype=L.uint8), L.tensor([-1], dtype=L.int8)]),
             lambda L: L.cat([L.zeros(0), L.ones(2, 2)]),
             lambda L: L.cat([L.ones(2, 2), L.zeros(0), L.ones(2, 1)], -1),
             lambda L: L.cat([L.tensor(1.), L.tensor(2.)]),
             lambda L: L.stack([L.tensor([1, 2]), L.tensor([1., 2.])], -1),
             lambda L: L.round(L.tensor([1.25, 2.35, -0.15]), decimals=1),
             lambda L: L.round(L.tensor([15., 25., 1234.]), decimals=-1),
             lambda L: L.round(L.tensor([1, 2]), decimals=1),
             lambda L: L.round(L.tensor([0.5, 1.5, 2.5, -0.5])),
             lambda L: L.nan_to_num(L.tensor([nan, float("inf"), -float("inf"), 1.]), nan=2.,
                                    posinf=3., neginf=-3.),
             lambda L: L.nan_to_num(L.tensor([nan, float("inf")], dtype=L.float16))]
    for f in cases:
        _both(f)
    x = minidl.zeros(0, requires_grad=True)
    y = minidl.ones(2, 2, requires_grad=True)
    minidl.cat([x, y]).sum().backward()
    assert x.grad.shape == (0,) and y.grad.tolist() == [[1., 1.], [1., 1.]]


def test_0d_and_empty_edges():
    s = lambda L: L.tensor(2.5)  # noqa: E731
    cases = [lambda L: s(L).topk(0).values, lambda L: s(L).topk(0).indices,
             lambda L: L.index_select(s(L), 0, L.tensor([0])),
             lambda L: L.narrow(s(L), 0, 0, 1), lambda L: L.chunk(s(L), 2),
             lambda L: L.split(s(L), 1), lambda L: L.diag(s(L)), lambda L: L.tril(s(L)),
             lambda L: s(L) @ s(L), lambda L: L.dot(s(L), s(L)), lambda L: L.outer(s(L), s(L)),
             lambda L: L.diff(s(L)), lambda L: L.ones(2, 3).flatten(1, 0)]
    for f in cases:
        _both(f)
    with pytest.raises(IndexError):
        minidl.unbind(minidl.tensor(1.))
    with pytest.warns(UserWarning, match="degrees of freedom"):
        torch.zeros(2, 0).var(0)
    with pytest.warns(UserWarning, match="degrees of freedom"):
        minidl.zeros(2, 0).var(0)


def test_new_paths_run_on_a_fake_gpu(monkeypatch):
    """searchsorted's NaN search, integer powers and the tie rules on a CuPy-like device (the
    numpy-backed stand-in of tests/_fake_gpu.py; no CUDA kernel is needed by these ops)."""
    import _fake_gpu

    seq, values = [1., NAN, 3., 4.], [3., NAN, 0., 5.]
    want_search = minidl.searchsorted(minidl.tensor(seq), minidl.tensor(values)).numpy()
    want_2d = minidl.searchsorted(minidl.tensor([seq]), minidl.tensor([values]),
                                  right=True).numpy()
    base, exponent = [-3, -1, 0, 1, 2], [-1, -1, -2, -3, -1]
    want_pow = (minidl.tensor(base) ** minidl.tensor(exponent)).numpy()
    _fake_gpu.install(monkeypatch, None)
    got = minidl.searchsorted(minidl.tensor(seq, device="cuda"),
                              minidl.tensor(values, device="cuda"))
    assert got.device == "cuda"
    np.testing.assert_array_equal(got.numpy(), want_search)
    got = minidl.searchsorted(minidl.tensor([seq], device="cuda"),
                              minidl.tensor([values], device="cuda"), right=True)
    np.testing.assert_array_equal(got.numpy(), want_2d)
    got = minidl.tensor(base, device="cuda") ** minidl.tensor(exponent, device="cuda")
    np.testing.assert_array_equal(got.numpy(), want_pow)
    x = minidl.tensor([1., 3., 3., 2.], device="cuda", requires_grad=True)
    top = x.topk(2)
    top.values.sum().backward()
    assert top.values.tolist() == [3., 3.] and x.grad.tolist() == [0., 1., 1., 0.]
    with pytest.raises(RuntimeError, match="bool"):
        -minidl.tensor([True], device="cuda")


def test_any_all_shifts_bitwise_lerp_addc_edges():
    u8 = lambda L: L.tensor([1, 0, 250], dtype=L.uint8)  # noqa: E731
    i = lambda L: L.tensor([1, 2, 3])  # noqa: E731
    f = lambda L: L.tensor([1., 2., 3.])  # noqa: E731
    cases = [lambda L: u8(L).any(), lambda L: u8(L).all(),
             lambda L: L.tensor([[1, 0], [0, 0]], dtype=L.uint8).any(1),
             lambda L: L.tensor([[1, 0], [0, 0]], dtype=L.int8).all(0),
             lambda L: L.tensor([-128], dtype=L.int8) // -1, lambda L: L.tensor([-2 ** 63]) // -1,
             lambda L: f(L) & 1, lambda L: i(L) & 1.5, lambda L: i(L) << 2,
             lambda L: L.tensor([-8]) >> 1, lambda L: u8(L) << 1, lambda L: 1 << L.tensor([2]),
             lambda L: L.tensor([True]) << 1, lambda L: L.tensor([1.]) << 1,
             lambda L: L.tensor([1]) << 64, lambda L: L.tensor([-8]) >> 70,
             lambda L: L.bitwise_left_shift(L.tensor([3]), 1),
             lambda L: L.bitwise_right_shift(L.tensor([12], dtype=L.int8), L.tensor([2])),
             lambda L: L.lerp(f(L), f(L) * 2, 0.5), lambda L: L.lerp(i(L), i(L), 0.5),
             lambda L: L.lerp(f(L), i(L), 0.5), lambda L: L.lerp(f(L), f(L).double(), 0.5),
             lambda L: L.lerp(f(L), f(L), L.tensor([0.5, 0.5, 0.5], dtype=L.float64)),
             lambda L: L.addcmul(i(L), i(L), i(L), value=1.5),
             lambda L: L.addcmul(i(L), i(L), i(L), value=-0.5),
             lambda L: L.addcmul(i(L), f(L), i(L), value=0.5),
             lambda L: L.addcdiv(f(L), i(L), f(L)), lambda L: L.addcdiv(f(L), i(L), i(L)),
             lambda L: L.tensor([1.], dtype=L.float16) + 1e5]
    for c in cases:
        _both(c)


def test_indexing_ops_index_dtypes_bounds_and_src_dtypes_as_torch():
    m = lambda L: L.arange(6.).reshape(2, 3)  # noqa: E731
    ix = lambda L, v, dt=None: L.tensor(v, dtype=dt or L.int64)  # noqa: E731

    def setitem(make, index, value):
        def f(L):
            t = make(L)
            t[index] = value
            return t
        return f
    cases = [lambda L: L.gather(m(L), 1, ix(L, [[-1], [0]])),
             lambda L: L.gather(m(L), 1, ix(L, [[3], [0]])),
             lambda L: L.gather(m(L), 1, ix(L, [[1], [0]], L.int32)),
             lambda L: L.gather(m(L), 1, ix(L, [[1], [0]], L.int16)),
             lambda L: L.gather(m(L), 1, L.tensor([[1.], [0.]])),
             lambda L: L.gather(m(L), 1, ix(L, [[0], [1], [0]])),
             lambda L: L.scatter(m(L), 1, ix(L, [[0], [2]]), L.ones(2, 1, dtype=L.int64)),
             lambda L: L.scatter(m(L), 1, ix(L, [[0], [2]], L.int32), 9.),
             lambda L: L.scatter(m(L), 1, ix(L, [[-1], [2]]), 9.),
             lambda L: L.scatter_add(m(L), 1, ix(L, [[0], [2]]), L.ones(2, 1, dtype=L.int64)),
             lambda L: L.index_select(m(L), 1, ix(L, [-1])),
             lambda L: L.index_select(m(L), 1, ix(L, [2, 0], L.int32)),
             lambda L: L.index_select(m(L), 1, ix(L, [2, 0], L.int16)),
             lambda L: L.index_add(m(L), 1, ix(L, [-1]), L.ones(2, 1)),
             lambda L: L.index_add(m(L), 1, ix(L, [0]), L.ones(2, 1, dtype=L.float64)),
             lambda L: L.index_fill(m(L), 1, ix(L, [-1]), -1.),
             lambda L: L.index_fill(m(L), 1, ix(L, [-4]), -1.),
             lambda L: L.index_fill(m(L), 1, ix(L, [0], L.int32), -1.),
             lambda L: L.index_copy(m(L), 1, ix(L, [0]), L.ones(2, 1, dtype=L.float64)),
             lambda L: L.index_put(m(L), (ix(L, [0]),), L.tensor(1., dtype=L.float64)),
             lambda L: L.take_along_dim(m(L), ix(L, [[0], [1]], L.int32), 1),
             lambda L: L.masked_select(m(L), ix(L, [1, 0, 1])),
             setitem(lambda L: L.zeros(2, dtype=L.uint8), 0, -1),
             setitem(lambda L: L.zeros(2, dtype=L.uint8), 0, 300),
             setitem(lambda L: L.zeros(2, dtype=L.int64), 0, NAN),
             setitem(lambda L: L.zeros(2), 0, 1e40),
             setitem(lambda L: L.zeros(2, dtype=L.int64), 1, 2.7)]
    for c in cases:
        _both(c)
    with pytest.raises(IndexError):
        minidl.index_select(m(minidl), 1, ix(minidl, [[0]]))


# ---- ops PyTorch has that minidl lacked: forward and backward against torch, gradcheck ------
BINARY_NEW = ["atan2", "hypot", "logaddexp", "logaddexp2", "copysign", "fmax", "fmin",
              "float_power"]
UNARY_NEW = ["asinh", "acosh", "atanh", "deg2rad", "rad2deg"]


def _pair_data(name):
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    if name == "float_power":
        a = np.abs(a) + 0.5
    a[0, 0], b[0, 0] = 1.25, 1.25  # a tie (fmax/fmin give it to input)
    if name in ("fmax", "fmin"):
        a[1, 1], b[2, 2] = NAN, NAN
    return a, b


def _unary_data(name):
    x = np.random.default_rng(6).uniform(-0.9, 0.9, (3, 4))
    return x + 2 if name == "acosh" else x


@pytest.mark.parametrize("name", BINARY_NEW)
def test_new_binary_ops_match_torch_forward_and_backward(name):
    a, b = _pair_data(name)
    ma, mb = (minidl.tensor(v, dtype=minidl.float64, requires_grad=True) for v in (a, b))
    ta, tb = (torch.tensor(v, requires_grad=True) for v in (a, b))
    ym, yt = getattr(minidl, name)(ma, mb), getattr(torch, name)(ta, tb)
    np.testing.assert_allclose(_np(ym), yt.detach().numpy(), rtol=1e-12)
    w = np.random.default_rng(7).standard_normal(a.shape)
    (ym * minidl.tensor(w, dtype=minidl.float64)).sum().backward()
    (yt * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(_np(ma.grad), ta.grad.numpy(), rtol=1e-10, atol=1e-12)
    if tb.grad is not None and name != "copysign":
        np.testing.assert_allclose(_np(mb.grad), tb.grad.numpy(), rtol=1e-10, atol=1e-12)
    # float32 in, the result dtype as torch's (float_power: float64)
    m32 = getattr(minidl, name)(minidl.tensor(a), minidl.tensor(b))
    t32 = getattr(torch, name)(torch.tensor(a, dtype=torch.float32),
                               torch.tensor(b, dtype=torch.float32))
    assert str(m32.dtype) == str(t32.dtype).split(".")[-1]
    if name not in ("fmax", "fmin"):  # piecewise: finite differences across the tie
        x, y = (minidl.tensor(v, dtype=minidl.float64, requires_grad=True)
                for v in (np.abs(a) + 0.5, b + 0.1 * (b == a)))
        assert gradcheck(lambda p, q: getattr(minidl, name)(p, q), [x, y])


@pytest.mark.parametrize("name", UNARY_NEW)
def test_new_unary_ops_match_torch_forward_and_backward(name):
    x = _unary_data(name)
    m, t = minidl.tensor(x, dtype=minidl.float64, requires_grad=True), \
        torch.tensor(x, requires_grad=True)
    ym, yt = getattr(minidl, name)(m), getattr(torch, name)(t)
    np.testing.assert_allclose(_np(ym), yt.detach().numpy(), rtol=1e-12)
    ym.sum().backward()
    yt.sum().backward()
    np.testing.assert_allclose(_np(m.grad), t.grad.numpy(), rtol=1e-10)
    assert gradcheck(lambda a: getattr(minidl, name)(a),
                     [minidl.tensor(x, dtype=minidl.float64, requires_grad=True)])
    _both(lambda L: getattr(L, name)(L.tensor([1, 2])))  # integers: float32


def test_new_ops_edges_and_dtypes():
    a = lambda L: L.tensor([0., 1., -2., 3.])  # noqa: E731
    i = lambda L: L.tensor([1, 2, 3, 4])  # noqa: E731
    cases = [lambda L: L.atan2(i(L), i(L)), lambda L: L.hypot(i(L), i(L)),
             lambda L: L.logaddexp(i(L), i(L)), lambda L: L.fmax(i(L), i(L)),
             lambda L: L.copysign(i(L), -1), lambda L: L.atan2(a(L), 2),
             lambda L: L.float_power(i(L), 2), lambda L: L.signbit(L.tensor([-0., 0., -1.])),
             lambda L: L.isposinf(L.tensor([float("inf"), -float("inf"), 1.])),
             lambda L: L.isneginf(L.tensor([float("inf"), -float("inf"), 1.])),
             lambda L: L.sgn(L.tensor([-2, 0, 3])), lambda L: L.absolute(L.tensor([-2, 3])),
             lambda L: L.positive(L.tensor([True])), lambda L: L.heaviside(a(L), L.tensor([.5])),
             lambda L: L.heaviside(a(L), L.tensor([1])), lambda L: L.dist(a(L), a(L) * 2, 1),
             lambda L: L.dist(a(L), a(L) * 2, float("inf")),
             lambda L: L.isin(i(L), L.tensor([2, 4])), lambda L: L.multiply(i(L), 2.5),
             lambda L: L.subtract(i(L), i(L), alpha=2), lambda L: L.true_divide(i(L), 2),
             lambda L: L.bitwise_and(i(L), 6), lambda L: L.bitwise_not(a(L)),
             lambda L: L.aminmax(L.tensor([[1., 3.], [0., 2.]]), dim=1, keepdim=True).max,
             lambda L: L.aminmax(i(L)).min, lambda L: L.aminmax(L.zeros(0)).min]
    for c in cases:
        _both(c)
    # aminmax's gradients are amin's and amax's: shared among ties
    x = [[1., 3., 3.], [2., 2., 0.]]
    m, t = minidl.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    rm, rt = minidl.aminmax(m), torch.aminmax(t)
    (rm.min + 2 * rm.max).backward()
    (rt.min + 2 * rt.max).backward()
    np.testing.assert_allclose(_np(m.grad), t.grad.numpy())


def test_new_ops_under_cpu_autocast_keep_torchs_dtypes():
    a, b = np.random.default_rng(8).uniform(1, 2, (2, 3, 3))
    for name in BINARY_NEW + ["dist"]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            want = getattr(torch, name)(torch.tensor(a).bfloat16(), torch.tensor(b).bfloat16())
        with minidl.autocast("cpu", dtype=minidl.bfloat16):
            got = getattr(minidl, name)(minidl.tensor(a).to(minidl.bfloat16),
                                        minidl.tensor(b).to(minidl.bfloat16))
        assert str(got.dtype) == str(want.dtype).split(".")[-1], name


def test_unstable_sort_gives_torchs_order_among_ties():
    """sort(stable=False), PyTorch's default, runs std::sort on the CPU: equal values in rows
    longer than 16 come out in its order, not the stable one (and so do their gradients)."""
    rng = np.random.default_rng(9)
    for i in range(40):
        shape = tuple(int(s) for s in rng.integers(1, 60, size=int(rng.integers(1, 3))))
        a = rng.integers(0, 4, shape).astype(np.float64)
        if i % 3 == 0:
            a[rng.random(shape) < 0.2] = NAN
        d = int(rng.integers(-len(shape), len(shape)))
        for descending in (False, True):
            m = minidl.tensor(a, dtype=minidl.float64, requires_grad=True)
            t = torch.tensor(a, requires_grad=True)
            rm, rt = minidl.sort(m, d, descending), torch.sort(t, d, descending)
            np.testing.assert_array_equal(_np(rm.indices), rt.indices.numpy())
            np.testing.assert_array_equal(
                _np(minidl.argsort(m, d, descending)), torch.argsort(t, d, descending).numpy())
            w = np.arange(a.size, dtype=np.float64).reshape(a.shape)
            (rm.values * minidl.tensor(w, dtype=minidl.float64)).sum().backward()
            (rt.values * torch.tensor(w)).sum().backward()
            np.testing.assert_array_equal(_np(m.grad), t.grad.numpy())
    for dtype in ("int64", "float16", "bool"):
        a = rng.integers(0, 2, 40).astype(dtype)
        np.testing.assert_array_equal(_np(minidl.sort(minidl.from_numpy(a)).indices),
                                      torch.sort(torch.from_numpy(a)).indices.numpy())


def test_tie_orders_without_numba_match_too():
    """backend/ordering.py runs as Python where numba is off: the same indices."""
    import subprocess
    import sys
    code = ("import numpy as np, torch, minidl\n"
            "a = np.random.default_rng(0).integers(0, 3, (3, 80)).astype(np.float32)\n"
            "m, t = minidl.from_numpy(a), torch.from_numpy(a)\n"
            "assert (m.topk(9).indices.numpy() == t.topk(9).indices.numpy()).all()\n"
            "assert (m.sort().indices.numpy() == t.sort().indices.numpy()).all()\n"
            "assert (m.kthvalue(30).indices.numpy() == t.kthvalue(30).indices.numpy()).all()\n"
            "from minidl.backend import ordering\n"
            "assert not hasattr(ordering.topk_rows, 'py_func')\n")
    env = {**__import__("os").environ, "MINIDL_DISABLE_NUMBA": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr


def test_amax_amin_give_a_nan_slice_a_nan_gradient_and_max_shares_it():
    x = [[1., NAN, 0., NAN], [3., 3., 2., 0.]]
    cases = [lambda t: t.amax(), lambda t: t.amax(1), lambda t: t.amin(0),
             lambda t: t.amax((0, 1)), lambda t: t.max(), lambda t: t.min(),
             lambda t: t.max(1).values]
    for f in cases:
        m, t = minidl.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        f(m).sum().backward()
        f(t).sum().backward()
        np.testing.assert_array_equal(_np(m.grad), t.grad.numpy())
    m, t = minidl.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    minidl.aminmax(m, dim=1).max.sum().backward()
    torch.aminmax(t, dim=1).max.sum().backward()
    np.testing.assert_array_equal(_np(m.grad), t.grad.numpy())


# composite and new shape ops: (name, lambda on the library, input shapes), run on both
SHAPE_NEW = [
    ("tensor_split", lambda L, a: L.tensor_split(a, 3, 1)[2] * 2, [(2, 7)]),
    ("tensor_split_idx", lambda L, a: L.cat(L.tensor_split(a, [1, 5, 20], 1)[1:3], 1), [(2, 7)]),
    ("hsplit", lambda L, a: L.hsplit(a, [1, 3])[1], [(2, 6)]),
    ("vsplit", lambda L, a: L.vsplit(a, 2)[1], [(4, 3)]),
    ("dsplit", lambda L, a: L.dsplit(a, 2)[0], [(2, 2, 4)]),
    ("atleast_3d", lambda L, a: L.atleast_3d(a), [(5,)]),
    ("dstack", lambda L, a, b: L.dstack([a, b]), [(2, 3), (2, 3)]),
    ("column_stack", lambda L, a, b: L.column_stack([a, b]), [(3,), (3, 2)]),
    ("broadcast_tensors", lambda L, a, b: L.broadcast_tensors(a, b)[0] * 3, [(3, 1), (4,)]),
    ("diag_embed", lambda L, a: L.diag_embed(a, 1), [(2, 3)]),
    ("diag_embed_dims", lambda L, a: L.diag_embed(a, -1, 2, 0), [(2, 3)]),
    ("block_diag", lambda L, a, b: L.block_diag(a, b), [(2, 3), (1, 2)]),
    ("cartesian_prod", lambda L, a, b: L.cartesian_prod(a, b), [(2,), (3,)]),
    ("tensordot", lambda L, a, b: L.tensordot(a, b, dims=([1, 2], [1, 0])), [(2, 3, 4), (4, 3, 5)]),
    ("tensordot_int", lambda L, a, b: L.tensordot(a, b, 1), [(2, 3), (3, 2)]),
    ("kron", lambda L, a, b: L.kron(a, b), [(2, 3), (2, 1, 2)]),
    ("vdot", lambda L, a, b: L.vdot(a, b), [(4,), (4,)]),
    ("logcumsumexp", lambda L, a: L.logcumsumexp(a * 300, 1), [(3, 5)]),
]


@pytest.mark.parametrize("name,fn,shapes", SHAPE_NEW, ids=[c[0] for c in SHAPE_NEW])
def test_new_shape_and_product_ops_match_torch(name, fn, shapes):
    rng = np.random.default_rng(10)
    arrays = [rng.standard_normal(s) for s in shapes]
    ms = [minidl.tensor(a, dtype=minidl.float64, requires_grad=True) for a in arrays]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    ym, yt = fn(minidl, *ms), fn(torch, *ts)
    assert tuple(ym.shape) == tuple(yt.shape)
    np.testing.assert_allclose(_np(ym), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    w = rng.standard_normal(tuple(yt.shape))
    (ym * minidl.tensor(w, dtype=minidl.float64)).sum().backward()
    (yt * torch.tensor(w)).sum().backward()
    for m, t in zip(ms, ts):
        if t.grad is None:  # an input the result does not depend on
            assert m.grad is None
            continue
        np.testing.assert_allclose(_np(m.grad), t.grad.numpy(), rtol=1e-9, atol=1e-12)
    fresh = [minidl.tensor(a, dtype=minidl.float64, requires_grad=True) for a in arrays]
    assert gradcheck(lambda *xs: fn(minidl, *xs), fresh)


def test_new_shape_ops_edges():
    x7 = lambda L: L.arange(7.)  # noqa: E731
    cases = [lambda L: L.tensor_split(x7(L), [-2])[1], lambda L: L.tensor_split(x7(L), [5, 2])[2],
             lambda L: L.tensor_split(L.ones(2, 7), L.tensor(3), 1)[1],
             lambda L: L.hsplit(x7(L), 3)[0], lambda L: L.dsplit(L.ones(2, 3), 1)[0],
             lambda L: L.atleast_3d(L.tensor(1.)), lambda L: L.atleast_3d(L.ones(2, 3)),
             lambda L: L.column_stack([L.tensor(1.), L.ones(1, 2)]),
             lambda L: L.tensor(list(L.broadcast_shapes((2, 1), (3,)))),
             lambda L: L.tensor(list(L.broadcast_shapes((2,), (3,)))),
             lambda L: L.block_diag(L.tensor(1), L.ones(2), L.ones(2, 1) * 2.),
             lambda L: L.block_diag(L.tensor([[1, 2]]), L.tensor([[3]])),
             lambda L: L.cartesian_prod(L.tensor([1, 2])),
             lambda L: L.tril_indices(3, 3), lambda L: L.triu_indices(2, 4, 1),
             lambda L: L.tril_indices(3, 2, -1), lambda L: L.triu_indices(3, 3, -5),
             lambda L: L.unique_consecutive(L.tensor([1, 1, 2, 2, 3, 1, 1])),
             lambda L: L.unique_consecutive(L.tensor([[1, 1], [2, 1]]), return_inverse=True)[1],
             lambda L: L.unique_consecutive(L.tensor([1, 1, 2, 3, 3]), return_counts=True)[1],
             lambda L: L.tensordot(L.ones(2, 3), L.ones(3, 2, dtype=L.float64), 1),
             lambda L: L.tensordot(L.ones(2), L.ones(3), 0),
             lambda L: L.kron(L.tensor([[1, 2], [3, 4]]), L.tensor([1, 10])),
             lambda L: L.logcumsumexp(L.tensor([-1000., 0., 1.]), 0),
             lambda L: L.logcumsumexp(L.tensor([-float("inf"), float("inf"), 1.]), 0),
             lambda L: L.logcumsumexp(L.tensor([1, 2]), 0),
             lambda L: L.bincount(L.tensor([0, 1, 1, 3])),
             lambda L: L.bincount(L.tensor([0, 1, 1]), weights=L.tensor([.5, 1., 2.])),
             lambda L: L.bincount(L.tensor([0, 1]), weights=L.tensor([1, 2])),
             lambda L: L.bincount(L.tensor([], dtype=L.int64), minlength=3),
             lambda L: L.bincount(L.tensor([-1]))]
    for c in cases:
        _both(c)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = torch.tensordot(torch.ones(2, 3), torch.ones(3, 2), 1).dtype
    with minidl.autocast("cpu", dtype=minidl.bfloat16):
        got = minidl.tensordot(minidl.ones(2, 3), minidl.ones(3, 2), 1).dtype
    assert str(got) == str(want).split(".")[-1]


def test_torchs_keyword_names_are_accepted():
    m = lambda L: L.arange(12.).reshape(3, 4)  # noqa: E731
    cases = [lambda L: L.split(m(L), split_size_or_sections=2, dim=1)[1],
             lambda L: m(L).split(split_size=3, dim=1)[1],
             lambda L: L.flip(m(L), dims=(0,)), lambda L: L.permute(m(L), dims=(1, 0)),
             lambda L: m(L).permute(dims=[1, 0]), lambda L: L.reshape(m(L), shape=(4, 3)),
             lambda L: m(L).reshape(shape=(2, 6)), lambda L: L.tile(m(L), dims=(2, 1)),
             lambda L: L.topk(input=m(L), k=2, dim=0, largest=False, sorted=True).values,
             lambda L: L.gather(input=m(L), dim=1, index=L.tensor([[0], [1], [2]])),
             lambda L: L.clamp(input=m(L), min=2, max=5)]
    for c in cases:
        _both(c)
    with pytest.raises(TypeError):
        m(minidl).reshape((4, 3), shape=(4, 3))
    with pytest.raises(TypeError):
        m(minidl).permute(order=(1, 0))


STATS_NEW = [
    ("quantile_linear", lambda L, a: L.quantile(a, 0.3, dim=1), [(3, 5)]),
    ("quantile_q_tensor", lambda L, a: L.quantile(a, L.tensor([0.1, 0.5, 0.9], dtype=a.dtype),
                                                 dim=0, keepdim=True), [(4, 3)]),
    ("quantile_all", lambda L, a: L.quantile(a, 0.75), [(3, 4)]),
    ("quantile_midpoint", lambda L, a: L.quantile(a, 0.5, 1, interpolation="midpoint"), [(3, 4)]),
    ("quantile_nearest", lambda L, a: L.quantile(a, 0.4, 1, interpolation="nearest"), [(3, 6)]),
    ("nanquantile", lambda L, a: L.nanquantile(a, 0.6, dim=1), [(3, 5)]),
    ("nanmedian", lambda L, a: L.nanmedian(a, 1).values, [(3, 5)]),
    ("mode", lambda L, a: L.mode(a.round(), 1).values, [(3, 7)]),
    ("cov", lambda L, a: L.cov(a), [(3, 6)]),
    ("cov_weights", lambda L, a: L.cov(a, fweights=L.tensor([1, 2, 1, 3]),
                                       aweights=L.tensor([0.5, 1., 2., 1.], dtype=a.dtype)),
     [(2, 4)]),
    ("corrcoef", lambda L, a: L.corrcoef(a), [(3, 6)]),
    ("cdist", lambda L, a, b: L.cdist(a, b), [(2, 4, 3), (2, 5, 3)]),
    ("cdist_p1", lambda L, a, b: L.cdist(a, b, p=1), [(4, 3), (5, 3)]),
    ("cdist_p3", lambda L, a, b: L.cdist(a, b, p=3), [(4, 3), (5, 3)]),
    ("cdist_inf", lambda L, a, b: L.cdist(a, b, p=float("inf")), [(4, 3), (5, 3)]),
]


@pytest.mark.parametrize("name,fn,shapes", STATS_NEW, ids=[c[0] for c in STATS_NEW])
def test_new_statistics_ops_match_torch(name, fn, shapes):
    test_new_shape_and_product_ops_match_torch(name, fn, shapes)


def test_new_statistics_ops_edges():
    a = lambda L: L.tensor([[1., 5., 2., 2., 9.], [3., NAN, 1., 0., 2.]])  # noqa: E731
    cases = [lambda L: L.quantile(a(L), 0.5, dim=1), lambda L: L.nanquantile(a(L), 0.5),
             lambda L: L.nanquantile(L.tensor([[NAN, NAN], [1., NAN]]), 0.5, dim=1),
             lambda L: L.quantile(L.tensor([1., 2., 3., 4.]), L.tensor([.25, .5, 1.]),
                                  interpolation="nearest"),
             lambda L: L.quantile(L.tensor(2.), 0.5), lambda L: L.quantile(L.tensor([1, 2]), .5),
             lambda L: L.quantile(L.tensor([1., 2.]), 1.5),
             lambda L: L.quantile(L.tensor([1., 2.]), L.tensor([.5], dtype=L.float64)),
             lambda L: L.quantile(L.zeros(0), 0.5),
             lambda L: L.quantile(L.tensor([1., 2.]), 0.5, interpolation="foo"),
             lambda L: L.nanmedian(L.tensor([1., NAN, 3., 2.])),
             lambda L: L.nanmedian(L.tensor([[NAN, 1.], [NAN, NAN], [2., 2.]]), 1).indices,
             lambda L: L.nanmedian(L.full((2, 70), NAN), 1).indices,
             lambda L: L.mode(L.tensor([0., 1., 0., 1., 0., 1., 2., 0.] * 3), 0).indices,
             lambda L: L.mode(L.tensor([3, 1, 3, 1, 2])).indices,
             lambda L: L.cov(L.tensor([[1, 2, 4]])), lambda L: L.cov(L.ones(2, 2, 2)),
             lambda L: L.corrcoef(L.tensor([[1., 1., 1.], [1., 2., 3.]])),
             lambda L: L.cdist(L.ones(3, 4), L.ones(5, 3)),
             lambda L: L.cdist(L.ones(3, 4, dtype=L.int64), L.ones(5, 4, dtype=L.int64))]
    for c in cases:
        _both(c)
    with pytest.warns(UserWarning, match="degrees of freedom"):
        got = minidl.cov(minidl.tensor([[1.]]))
    assert np.isnan(got.item()) or np.isinf(got.item())
    x = np.random.default_rng(11).uniform(size=(3, 6))
    for name in ("quantile", "nanquantile"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            want = getattr(torch, name)(torch.tensor(x).bfloat16(), 0.5, dim=1)
        with minidl.autocast("cpu", dtype=minidl.bfloat16):
            got = getattr(minidl, name)(minidl.tensor(x).to(minidl.bfloat16), 0.5, dim=1)
        assert str(got.dtype) == str(want.dtype).split(".")[-1] == "float32"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = torch.cdist(torch.tensor(x).bfloat16(), torch.tensor(x).bfloat16())
    with minidl.autocast("cpu", dtype=minidl.bfloat16):
        got = minidl.cdist(minidl.tensor(x).to(minidl.bfloat16), minidl.tensor(x).to(minidl.bfloat16))
    assert str(got.dtype) == str(want.dtype).split(".")[-1] == "float32"


MORE_NEW = [
    ("addbmm", lambda L, a, b, c: L.addbmm(a, b, c, beta=0.5, alpha=2), [(2, 2), (3, 2, 4),
                                                                         (3, 4, 2)]),
    ("addr", lambda L, a, b, c: L.addr(a, b, c, beta=2, alpha=0.5), [(2, 3), (2,), (3,)]),
    # a positive exponent: torch's ldexp gradient takes 2 ** -2 in integers, as 0
    ("ldexp", lambda L, a: L.ldexp(a, L.tensor([1, 2, 3])), [(2, 3)]),
    ("trapezoid", lambda L, a, x: L.trapezoid(a, x.cumsum(0)), [(2, 4), (4,)]),
    ("trapezoid_dx", lambda L, a: L.trapezoid(a, dx=0.5, dim=0), [(3, 2)]),
    ("cumulative_trapezoid", lambda L, a: L.cumulative_trapezoid(a), [(2, 5)]),
    ("renorm", lambda L, a: L.renorm(a, 2, 0, 1.5), [(3, 4)]),
    ("masked_scatter", lambda L, a, s: a.masked_scatter(L.tensor([True, False, True]), s),
     [(2, 3), (5,)]),
    ("select_scatter", lambda L, a, s: L.select_scatter(a, s, 1, -1), [(2, 3), (2,)]),
    ("slice_scatter", lambda L, a, s: L.slice_scatter(a, s, 0, 1, 4, 2), [(4, 2), (2, 2)]),
    ("diagonal_scatter", lambda L, a, s: L.diagonal_scatter(a, s, 1, 0, 2), [(3, 2, 4), (2, 3)]),
    ("narrow_copy", lambda L, a: L.narrow_copy(a, 1, 1, 2), [(2, 4)]),
    ("combinations", lambda L, a: L.combinations(a, 2), [(4,)]),
]


@pytest.mark.parametrize("name,fn,shapes", MORE_NEW, ids=[c[0] for c in MORE_NEW])
def test_more_new_ops_match_torch(name, fn, shapes):
    test_new_shape_and_product_ops_match_torch(name, fn, shapes)


def test_more_new_ops_edges():
    # vander: torch's own backward trips on an in-place op; forward against torch, gradcheck
    x = np.array([0.5, -1.5, 2.0])
    np.testing.assert_allclose(_np(minidl.vander(minidl.tensor(x, dtype=minidl.float64), N=4)),
                               torch.vander(torch.tensor(x), N=4).numpy())
    assert gradcheck(lambda a: minidl.vander(a, N=4, increasing=True),
                     [minidl.tensor(x, dtype=minidl.float64, requires_grad=True)])
    cases = [lambda L: L.gcd(L.tensor([12, -18, 0]), L.tensor([8, 12, 0])),
             lambda L: L.lcm(L.tensor([4, -6, 0]), L.tensor([6, 4, 5])),
             lambda L: L.gcd(L.tensor([1.]), L.tensor([2.])),
             lambda L: L.ldexp(L.tensor([1, 2]), L.tensor([2, 3])),
             lambda L: L.frexp(L.tensor([8., 0.5, -3., 0.])).mantissa,
             lambda L: L.frexp(L.tensor([8., 0.5, -3., 0.])).exponent,
             lambda L: L.frexp(L.tensor([1])).mantissa,
             lambda L: L.nextafter(L.tensor([1., 0.]), L.tensor([2., -1.])),
             lambda L: L.angle(L.tensor([-1., 0., 2., NAN])), lambda L: L.angle(L.tensor([-1, 2])),
             lambda L: L.trapezoid(L.zeros(0)),
             lambda L: L.histc(L.tensor([1., 2., 1., 4.]), bins=4, min=0, max=3),
             lambda L: L.histc(L.tensor([1., 2., 1.]), bins=4),
             lambda L: L.histc(L.tensor([1., 1.]), bins=3), lambda L: L.histc(L.tensor([1, 2])),
             lambda L: L.zeros(2).masked_scatter(L.tensor([True, True]), L.ones(1)),
             lambda L: L.stack(list(L.unravel_index(L.tensor([5, 7, -1]), (2, 4)))),
             lambda L: L.vander(L.tensor([1, 2, 3])), lambda L: L.vander(L.tensor([1., 2.]), N=0),
             lambda L: L.combinations(L.tensor([1, 2]), 3),
             lambda L: L.combinations(L.tensor([1, 2]), 2, with_replacement=True)]
    for c in cases:
        _both(c)
