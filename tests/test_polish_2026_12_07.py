"""Regression tests for small divergences from torch 2.13 found on 2026-12-07."""
import numpy as np
import pytest

import minidl


def test_size_without_dim_is_a_minidl_size():
    """x.size() returned the plain shape tuple (printed "(2, 3)"); torch returns torch.Size.
    .shape stays a tuple by design, x.size(d) stays an int."""
    x = minidl.zeros(2, 3)
    s = x.size()
    assert isinstance(s, minidl.Size)
    assert repr(s) == "minidl.Size([2, 3])"
    assert s == (2, 3) and s == minidl.Size([2, 3]) and s.numel() == 6
    assert type(x.shape) is tuple
    assert x.size(1) == 3 and type(x.size(1)) is int
    assert repr(minidl.Size([2, 3])) == "minidl.Size([2, 3])"


def test_like_factories_on_sparse_inputs():
    """zeros_like(sparse) failed with an unclear "flags: not supported" error; torch gives a
    sparse result of the same layout (zeros/empty: no stored entries for COO; compressed
    ones/full keep the pattern) and refuses ones_like/full_like on COO and rand_like."""
    d = [[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]]
    coo = minidl.tensor(d).to_sparse()
    z = minidl.zeros_like(coo)
    assert z.layout == minidl.sparse_coo and z.shape == (2, 3) and z.data.nnz == 0
    assert minidl.empty_like(coo).layout == minidl.sparse_coo
    assert minidl.zeros_like(coo, dtype=minidl.float64).dtype == minidl.float64
    for fn in (lambda t: minidl.ones_like(t), lambda t: minidl.full_like(t, 2.0),
               lambda t: minidl.rand_like(t)):
        with pytest.raises(NotImplementedError, match="_like: not supported for sparse"):
            fn(coo)
    csr = minidl.tensor(d).to_sparse_csr()
    z = minidl.zeros_like(csr)
    assert z.layout == minidl.sparse_csr and z.data.nnz == 0
    assert np.array_equal(z.to_dense().numpy(), np.zeros((2, 3), np.float32))
    o = minidl.ones_like(csr)
    assert o.layout == minidl.sparse_csr
    assert np.array_equal(o.to_dense().numpy(), (np.array(d) != 0).astype(np.float32))
    f = minidl.full_like(csr.to_sparse_csc(), 5.0)
    assert f.layout == minidl.sparse_csc
    assert np.array_equal(f.to_dense().numpy(), 5 * (np.array(d) != 0).astype(np.float32))
    with pytest.raises(NotImplementedError, match="rand_like"):
        minidl.rand_like(csr)


def _complex(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


def test_complex_logsumexp_gradcheck():
    """logsumexp refused complex tensors ("not implemented for complex tensors"); torch 2.13
    computes it (the largest real part subtracted) with the holomorphic gradient."""
    from minidl.testing import gradcheck, gradgradcheck

    x = minidl.tensor(_complex((3, 4)), dtype=minidl.complex128, requires_grad=True)
    assert gradcheck(lambda a: minidl.logsumexp(a, 1), (x,))
    assert gradgradcheck(lambda a: minidl.logsumexp(a, (0, 1), keepdim=True), (x,))
    big = minidl.tensor(np.array([[1e3 + 1j, 1e3 + 2j, -1j]]), dtype=minidl.complex128)
    assert np.isfinite(minidl.logsumexp(big, 1).numpy()).all()


def test_complex_logsumexp_parity():
    """Complex logsumexp (forward, backward, infinite parts) gives torch's numbers."""
    torch = pytest.importorskip("torch")
    z = np.concatenate([_complex((2, 3), 1), [[1e3 + 1j, 1e3 + 2j, -1j]]])
    w = _complex((3,), 2)
    t = torch.tensor(z, requires_grad=True)
    m = minidl.tensor(z, dtype=minidl.complex128, requires_grad=True)
    yt, ym = torch.logsumexp(t, 1), minidl.logsumexp(m, 1)
    np.testing.assert_allclose(ym.numpy(), yt.detach().numpy(), rtol=1e-12)
    (yt * torch.tensor(w)).real.sum().backward()
    (ym * minidl.tensor(w, dtype=minidl.complex128)).real.sum().backward()
    np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-10, atol=1e-14)
    for row in ([np.inf + 1j, 1 + 0j], [-np.inf + 1j, -np.inf + 0j]):
        a = np.array([row])
        np.testing.assert_allclose(minidl.logsumexp(minidl.tensor(a), 1).numpy(),
                                   torch.logsumexp(torch.tensor(a, dtype=torch.complex64),
                                                   1).numpy())


@pytest.mark.parametrize("which", ["key_padding_mask", "attn_mask"])
def test_attention_float_mask_of_another_dtype_than_the_query_is_refused(which):
    """MultiheadAttention took a float64 key_padding_mask (or attn_mask) with a float32
    query; torch refuses it (its baddbmm: "Input dtypes must be the same"), in the module, in
    F.multi_head_attention_forward and (already) in F.scaled_dot_product_attention."""
    import minidl.nn.functional as F

    mha = minidl.nn.MultiheadAttention(4, 2)
    q = minidl.randn(3, 2, 4)
    bad = {"key_padding_mask": minidl.zeros(2, 3, dtype=minidl.float64),
           "attn_mask": minidl.zeros(3, 3, dtype=minidl.float64)}[which]
    with pytest.raises(RuntimeError, match=f"{which} must have the query's dtype"):
        mha(q, q, q, **{which: bad})
    mha.eval()
    with minidl.no_grad(), pytest.raises(RuntimeError, match="float32.*got float64"):
        mha(q, q, q, **{which: bad})
    with pytest.raises(RuntimeError, match="multi_head_attention_forward: .*dtype"):
        F.multi_head_attention_forward(
            q, q, q, 4, 2, mha.in_proj_weight, mha.in_proj_bias, None, None, False, 0.0,
            mha.out_proj.weight, mha.out_proj.bias, **{which: bad})
    ok = {"key_padding_mask": minidl.zeros(2, 3), "attn_mask": minidl.zeros(3, 3)}[which]
    assert mha(q, q, q, **{which: ok})[0].shape == (3, 2, 4)  # the query's dtype: fine
    assert mha(q, q, q, **{which: ok > 0})[0].shape == (3, 2, 4)  # bool: fine
    qs = minidl.randn(2, 2, 3, 4)
    with pytest.raises(RuntimeError, match="attn_mask dtype"):
        F.scaled_dot_product_attention(qs, qs, qs, attn_mask=minidl.zeros(3, 3,
                                                                           dtype=minidl.float64))


@pytest.mark.parametrize("pool, shape", [
    (lambda: minidl.nn.MaxPool2d(2, return_indices=True), (1, 2, 4, 4)),
    (lambda: minidl.nn.MaxPool2d(2, return_indices=True), (2, 4, 4)),
    (lambda: minidl.nn.MaxPool1d(2, return_indices=True), (1, 2, 4)),
    (lambda: minidl.nn.AdaptiveMaxPool2d(2, return_indices=True), (1, 2, 4, 4)),
])
def test_onnx_export_refuses_pool_indices_by_name(pool, shape, tmp_path):
    """Exporting nn.MaxPool2d(return_indices=True) failed with "output 1 ... was not made by a
    recorded op" (and unbatched input with a Reshape complaint) instead of the refusal by name
    that docs/onnx.md promises."""
    pytest.importorskip("onnx")
    import minidl.onnx

    with pytest.raises(minidl.onnx.UnsupportedOperatorError,
                       match="not supported for return_indices=True"):
        minidl.onnx.export(pool(), (minidl.randn(*shape),), str(tmp_path / "m.onnx"))
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_takes_tensor_betas_and_lr(name):
    """Adam/AdamW refused betas (and lr) given as Tensors ("must be a number"); torch 2.13
    takes 1-element Tensors, refusing them only with foreach=True (capturable=False) or when
    they hold more than one element, or when the betas mix a float and a Tensor."""
    opt_cls = getattr(minidl.optim, name)
    w0 = np.array([0.5, -1.0, 2.0], np.float32)
    g = np.array([0.1, 0.2, -0.3], np.float32)
    results = []
    for betas, lr in (((0.9, 0.999), 0.01),
                      ((minidl.tensor(0.9), minidl.tensor(0.999)), minidl.tensor(0.01))):
        p = minidl.nn.Parameter(minidl.tensor(w0))
        opt = opt_cls([p], lr=lr, betas=betas)
        for _ in range(3):
            p.grad = minidl.tensor(g)
            opt.step()
        results.append(p.detach().numpy())
    np.testing.assert_array_equal(results[0], results[1])
    p = minidl.nn.Parameter(minidl.tensor(w0))
    tb = (minidl.tensor(0.9), minidl.tensor(0.999))
    with pytest.raises(ValueError, match="betas\\[0\\] as a Tensor is not supported for "
                                         "capturable=False and foreach=True"):
        opt_cls([p], betas=tb, foreach=True)
    with pytest.raises(ValueError, match="lr as a Tensor is not supported"):
        opt_cls([p], lr=minidl.tensor(0.01), foreach=True)
    with pytest.raises(ValueError, match="Tensor betas\\[0\\] must be 1-element"):
        opt_cls([p], betas=(minidl.tensor([0.9, 0.9]), minidl.tensor(0.999)))
    with pytest.raises(ValueError, match="both floats or both Tensors"):
        opt_cls([p], betas=(0.9, minidl.tensor(0.999)))
    with pytest.raises(ValueError, match="betas\\[1\\] must be in \\[0, 1\\)"):
        opt_cls([p], betas=(minidl.tensor(0.9), minidl.tensor(1.5)))


def test_adam_tensor_betas_parity():
    """Adam with Tensor betas and lr takes torch's steps."""
    torch = pytest.importorskip("torch")
    w0 = np.array([0.5, -1.0, 2.0], np.float32)
    g = np.array([0.1, 0.2, -0.3], np.float32)
    pt = torch.nn.Parameter(torch.tensor(w0))
    pm = minidl.nn.Parameter(minidl.tensor(w0))
    ot = torch.optim.AdamW([pt], lr=torch.tensor(0.01),
                           betas=(torch.tensor(0.9), torch.tensor(0.99)))
    om = minidl.optim.AdamW([pm], lr=minidl.tensor(0.01),
                            betas=(minidl.tensor(0.9), minidl.tensor(0.99)))
    for _ in range(3):
        pt.grad, pm.grad = torch.tensor(g), minidl.tensor(g)
        ot.step()
        om.step()
    np.testing.assert_allclose(pm.detach().numpy(), pt.detach().numpy(), rtol=1e-6, atol=1e-7)


_CONV_CASES = [
    ("conv1d", (2, 4, 7), (6, 2, 3), dict(stride=2, padding=1, groups=2)),
    ("conv2d", (1, 2, 5, 5), (3, 2, 3, 3), dict(padding="same", dilation=2)),
    ("conv3d", (2, 3, 4, 4), (2, 2, 2, 2, 2), {}),  # unbatched
    ("conv_transpose1d", (1, 2, 5), (2, 3, 3), dict(stride=2)),
    ("conv_transpose2d", (1, 2, 4, 4), (2, 3, 3, 3), dict(stride=2, padding=1,
                                                          output_padding=1)),
]


def _conv_inputs(name, xs, ws, seed=3):
    cout = ws[1] if "transpose" in name else ws[0]
    return _complex(xs, seed), _complex(ws, seed + 1), _complex((cout,), seed + 2)


@pytest.mark.parametrize("name, xs, ws, kw", _CONV_CASES)
def test_complex_convolution_gradcheck(name, xs, ws, kw):
    """F.conv1d/conv2d/conv3d on complex tensors raised "conv2d: not implemented for complex
    tensors" (naming another function); torch 2.13 computes them (and conv_transpose*, whose
    gradient was refused): three real convolutions, with gradients."""
    from minidl.testing import gradcheck, gradgradcheck
    import minidl.nn.functional as F

    arrays = _conv_inputs(name, xs, ws)
    x, w, b = (minidl.tensor(a, dtype=minidl.complex128, requires_grad=True) for a in arrays)
    fn = getattr(F, name)
    assert gradcheck(lambda x, w, b: fn(x, w, b, **kw), (x, w, b))
    if name in ("conv1d", "conv_transpose1d"):
        assert gradgradcheck(lambda x, w: fn(x, w, None, **kw), (x, w))


@pytest.mark.parametrize("name, xs, ws, kw", _CONV_CASES)
def test_complex_convolution_parity(name, xs, ws, kw):
    """Complex convolutions give torch's outputs and gradients (complex128)."""
    torch = pytest.importorskip("torch")
    import minidl.nn.functional as F

    arrays = _conv_inputs(name, xs, ws)
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    ms = [minidl.tensor(a, dtype=minidl.complex128, requires_grad=True) for a in arrays]
    yt = getattr(torch.nn.functional, name)(*ts, **kw)
    ym = getattr(F, name)(*ms, **kw)
    np.testing.assert_allclose(ym.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    gy = _complex(tuple(yt.shape), 9)
    (yt * torch.tensor(gy)).real.sum().backward()
    (ym * minidl.tensor(gy, dtype=minidl.complex128)).real.sum().backward()
    for t, m in zip(ts, ms):
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_complex_convolution_refuses_a_real_weight_naming_the_function():
    """A complex input with a real weight is refused (as torch's), naming conv1d."""
    import minidl.nn.functional as F

    x = minidl.tensor(_complex((1, 2, 5)), dtype=minidl.complex64)
    with pytest.raises(TypeError, match="conv1d: dtypes differ"):
        F.conv1d(x, minidl.randn(3, 2, 3))


def test_attention_mask_dtypes_follow_torch_where_the_masks_merge_or_weights_are_not_asked():
    """The dtype check above was first made per mask, which refused what torch runs: a float32
    attn_mask beside a bool key_padding_mask with a float64 query (torch adds the two masks,
    which promotes to float64), and any float mask with need_weights=False (torch's attention
    then takes it as it is). Each case as torch 2.13 answers it."""
    mha = minidl.nn.MultiheadAttention(4, 2).double()
    q = minidl.randn(3, 2, 4, dtype=minidl.float64)
    am, kpm_f = minidl.zeros(3, 3), minidl.zeros(2, 3)
    kpm_b = minidl.tensor([[False, False, True]] * 2)
    runs = {"am": dict(attn_mask=am), "kpm": dict(key_padding_mask=kpm_f),
            "am+kpm bool": dict(attn_mask=am, key_padding_mask=kpm_b),
            "am+kpm f32": dict(attn_mask=am, key_padding_mask=kpm_f),
            "am, no weights": dict(attn_mask=am, need_weights=False),
            "am+kpm bool, no weights": dict(attn_mask=am, key_padding_mask=kpm_b,
                                            need_weights=False)}
    torch_answers = {"am": False, "kpm": False, "am+kpm bool": True, "am+kpm f32": False,
                     "am, no weights": True, "am+kpm bool, no weights": True}
    for case, kw in runs.items():
        try:
            mha(q, q, q, **kw)
            ran = True
        except RuntimeError as e:
            assert "dtype" in str(e)
            ran = False
        assert ran == torch_answers[case], case
