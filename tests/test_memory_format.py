"""Memory formats as torch's: minidl.channels_last and friends, Tensor.to/clone/contiguous with
memory_format, is_contiguous(memory_format=...), Module.to(memory_format=...), and the factory
functions' keyword; the values and gradients never change."""
import numpy as np
import pytest

import minidl


def formats(fw):
    return {"contiguous": fw.contiguous_format, "channels_last": fw.channels_last,
            "channels_last_3d": fw.channels_last_3d}


def layout_table(fw):
    """is_contiguous under each format, for tensors laid out in several ways."""
    r = np.random.default_rng(0)
    x4 = fw.tensor(r.normal(size=(2, 3, 4, 5)).astype(np.float32))
    x5 = fw.tensor(r.normal(size=(2, 3, 2, 4, 5)).astype(np.float32))
    tensors = {
        "nchw": x4, "nhwc": x4.to(memory_format=fw.channels_last),
        "nhwc_back": x4.to(memory_format=fw.channels_last).contiguous(),
        "clone_cl": x4.clone(memory_format=fw.channels_last),
        "contiguous_cl": x4.contiguous(memory_format=fw.channels_last),
        "ndhwc": x5.to(memory_format=fw.channels_last_3d), "ncdhw": x5,
        "transposed": fw.tensor(r.normal(size=(3, 4)).astype(np.float32)).t(),
        "transposed_contiguous": fw.tensor(r.normal(size=(3, 4)).astype(np.float32)).t()
        .contiguous(),
    }
    out = {}
    for name, t in tensors.items():
        for fname, f in formats(fw).items():
            try:
                out[name, fname] = t.is_contiguous(memory_format=f)
            except RuntimeError:
                out[name, fname] = "refused"
        out[name, "default"] = t.is_contiguous()
    return out


def test_is_contiguous_matches_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = layout_table(minidl), layout_table(torch)
    assert ours == theirs


def test_values_gradients_and_a_convolution_do_not_change():
    r = np.random.default_rng(1)
    x = minidl.tensor(r.normal(size=(2, 3, 8, 8)).astype(np.float32), requires_grad=True)
    conv = minidl.nn.Conv2d(3, 4, 3, padding=1)
    y_ref = conv(x)
    conv.to(memory_format=minidl.channels_last)
    xc = x.to(memory_format=minidl.channels_last)
    assert xc.is_contiguous(memory_format=minidl.channels_last)
    np.testing.assert_array_equal(xc.numpy(), x.numpy())
    y = conv(xc)
    np.testing.assert_allclose(y.detach().numpy(), y_ref.detach().numpy(), rtol=1e-6, atol=1e-6)
    (y * 2).sum().backward()
    g = x.grad.numpy().copy()
    x.grad = None
    (y_ref * 2).sum().backward()
    np.testing.assert_allclose(g, x.grad.numpy(), rtol=1e-6, atol=1e-6)


def test_factories_take_the_keyword_and_formats_are_named():
    x = minidl.ones(2, 3, 4, 4)
    for make in (minidl.zeros_like, minidl.ones_like, minidl.empty_like, minidl.rand_like,
                 minidl.randn_like):
        assert make(x, memory_format=minidl.preserve_format).shape == x.shape
    assert minidl.empty(2, 3, memory_format=minidl.contiguous_format).shape == (2, 3)
    assert repr(minidl.channels_last) == "minidl.channels_last"
    import pickle

    assert pickle.loads(pickle.dumps(minidl.channels_last)) is minidl.channels_last


def test_wrong_rank_or_format_is_refused():
    with pytest.raises(RuntimeError, match="required rank 4 tensor to use channels_last"):
        minidl.ones(2, 3).to(memory_format=minidl.channels_last)
    with pytest.raises(RuntimeError, match="required rank 5"):
        minidl.ones(2, 3, 4, 4).contiguous(memory_format=minidl.channels_last_3d)
    with pytest.raises(TypeError, match="memory format"):
        minidl.ones(2, 3, 4, 4).to(memory_format="channels_last")
    with pytest.raises(TypeError, match="memory format"):
        minidl.nn.Linear(2, 2).to(memory_format="channels_last")


# ---- clone, the *_like factories and memory_format= lay the memory out as torch ----------------------
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
