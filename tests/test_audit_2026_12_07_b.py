"""Audit of 2026-12-07 (b): pruning, memory formats, minidl.testing and the depthwise kernels,
against PyTorch's semantics and misuse."""
import numpy as np
import pytest

import minidl
import minidl.nn.utils.prune as prune


# ---- pruning ------------------------------------------------------------------------------------
@pytest.mark.parametrize("amount", ["0.5", None, [1]])
def test_prune_amount_of_a_wrong_type_is_a_type_error(amount):
    m = minidl.nn.Linear(4, 3)
    with pytest.raises(TypeError, match="Invalid type for amount"):
        prune.l1_unstructured(m, "weight", amount=amount)
    with pytest.raises(TypeError, match="Invalid type for amount"):
        prune.RandomStructured(amount, dim=0)
    assert not prune.is_pruned(m) and "weight" in dict(m.named_parameters())


def test_prune_a_failed_third_pruning_leaves_the_container_as_it_was():
    m = minidl.nn.Linear(4, 3)
    prune.l1_unstructured(m, "weight", amount=2)
    prune.l1_unstructured(m, "weight", amount=2)
    (container,) = [h for h in m._forward_pre_hooks.values()
                    if isinstance(h, prune.BasePruningMethod)]
    mask = m.weight_mask.numpy().copy()
    with pytest.raises(ValueError, match="smaller than the number"):
        prune.ln_structured(m, "weight", amount=9, n=1, dim=0)
    assert [type(h).__name__ for h in container] == ["L1Unstructured", "L1Unstructured"]
    np.testing.assert_array_equal(m.weight_mask.numpy(), mask)
    prune.l1_unstructured(m, "weight", amount=1)
    assert len(container) == 3 and m.weight_mask.numpy().sum() == 12 - 5


# ---- memory formats -----------------------------------------------------------------------------
def _strides(t):
    """Strides in elements, 0 for size-1 dims (whose stride says nothing)."""
    if hasattr(t, "stride"):
        s = tuple(t.stride())
    else:
        s = tuple(v // t.data.itemsize for v in t.data.strides)
    return tuple(0 if n == 1 else v for n, v in zip(t.shape, s))


_LAYOUTS = {
    "channels_last": lambda fw, x: x.to(memory_format=fw.channels_last),
    "transposed": lambda fw, x: x.transpose(2, 3),
    "channels_last_size1": lambda fw, x: x[:, :, :1].to(memory_format=fw.channels_last),
    "sliced": lambda fw, x: x[..., ::2],
    "plain": lambda fw, x: x,
}


@pytest.mark.parametrize("layout", list(_LAYOUTS))
def test_clone_and_likes_preserve_the_memory_layout_as_torch(layout):
    torch = pytest.importorskip("torch")
    a = np.arange(2 * 3 * 4 * 6, dtype=np.float32).reshape(2, 3, 4, 6)
    for make in (lambda fw, x: x.clone(), lambda fw, x: x.clone(memory_format=fw.preserve_format),
                 lambda fw, x: fw.zeros_like(x), lambda fw, x: fw.empty_like(x),
                 lambda fw, x: fw.ones_like(x), lambda fw, x: fw.full_like(x, 2.0),
                 lambda fw, x: fw.rand_like(x), lambda fw, x: fw.randn_like(x)):
        t = make(torch, _LAYOUTS[layout](torch, torch.tensor(a)))
        m = make(minidl, _LAYOUTS[layout](minidl, minidl.tensor(a)))
        assert _strides(m) == _strides(t)
        for fmt in ("contiguous_format", "channels_last"):
            assert m.is_contiguous(memory_format=getattr(minidl, fmt)) == t.is_contiguous(
                memory_format=getattr(torch, fmt))
    x = minidl.tensor(a, requires_grad=True)
    y = _LAYOUTS[layout](minidl, x).clone()
    (y * minidl.arange(y.numel(), dtype=minidl.float32).reshape(y.shape)).sum().backward()
    tx = torch.tensor(a, requires_grad=True)
    ty = _LAYOUTS[layout](torch, tx).clone()
    (ty * torch.arange(ty.numel(), dtype=torch.float32).reshape(ty.shape)).sum().backward()
    np.testing.assert_array_equal(y.numpy(), ty.detach().numpy())
    np.testing.assert_array_equal(x.grad.numpy(), tx.grad.numpy())


def test_factory_memory_format_lays_the_memory_out_as_torch():
    torch = pytest.importorskip("torch")
    for fw in (minidl, torch):
        x = fw.empty(2, 3, 4, 5, memory_format=fw.channels_last)
        assert x.is_contiguous(memory_format=fw.channels_last) and not x.is_contiguous()
        y = fw.zeros_like(fw.ones(2, 3, 4, 5, 6), memory_format=fw.channels_last_3d)
        assert y.is_contiguous(memory_format=fw.channels_last_3d) and not y.is_contiguous()
        z = fw.ones_like(x, memory_format=fw.contiguous_format)
        assert z.is_contiguous() and float(z.sum()) == 120
        with pytest.raises(RuntimeError, match="rank 4"):
            fw.empty(2, 3, 4, memory_format=fw.channels_last)
        with pytest.raises(RuntimeError, match="rank 5"):
            fw.randn_like(fw.ones(2, 3, 4, 5), memory_format=fw.channels_last_3d)
    with pytest.raises(TypeError, match="memory_format"):
        minidl.empty(2, 3, 4, 5, memory_format="channels_last")
    w = minidl.zeros_like(minidl.ones(2, 3, 4, 5), requires_grad=True,
                          memory_format=minidl.channels_last)
    assert w.is_leaf and w.requires_grad and w.is_contiguous(memory_format=minidl.channels_last)


def test_prune_keeps_working_on_a_channels_last_mask():
    t = minidl.tensor(np.arange(1, 25, dtype=np.float32).reshape(3, 2, 2, 2))
    mask = minidl.ones(3, 2, 2, 2).to(memory_format=minidl.channels_last)
    for method in (prune.L1Unstructured(5), prune.RandomUnstructured(5)):
        assert (method.prune(t, default_mask=mask).numpy() == 0).sum() == 5
    assert (prune.L1Unstructured(5).prune(t, default_mask=mask).numpy().ravel()[:5] == 0).all()


# ---- minidl.testing -----------------------------------------------------------------------------
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
