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
