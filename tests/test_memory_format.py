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
