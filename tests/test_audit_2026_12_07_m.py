"""Audit of 2026-12-07 (m): differential checks of what the session before it added (depthwise
convolution by planes, in-place ops on views, compressed sparse layouts, minidl.fx,
minidl.vision.ops, quantized modules, half-precision pooling) against torch 2.13 and against
misuse, and the regressions they found."""
import numpy as np
import pytest

import minidl
import minidl.nn.functional as F
from minidl.testing import gradcheck, gradgradcheck


def f64(x, requires_grad=False):
    return minidl.tensor(np.asarray(x, dtype=np.float64), dtype=minidl.float64,
                         requires_grad=requires_grad)


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ---- convolutions of an empty batch ----------------------------------------------------------
_EMPTY_BATCH_CONVS = {
    "conv2d": (F.conv2d, (3, 2, 3, 3), 3, {}),
    "conv2d_1x1_strided": (F.conv2d, (3, 2, 1, 1), 3, {"stride": 2}),
    "conv2d_dilated": (F.conv2d, (4, 2, 3, 3), 4, {"dilation": 2}),
    "conv2d_grouped_dilated": (F.conv2d, (4, 1, 3, 3), 4, {"groups": 2, "dilation": 2}),
    "conv2d_depthwise": (F.conv2d, (4, 1, 3, 3), 4, {"groups": 2}),
    "conv_transpose2d": (F.conv_transpose2d, (2, 3, 3, 3), 3, {"stride": 2}),
    "conv_transpose2d_grouped": (F.conv_transpose2d, (2, 3, 3, 3), 6, {"stride": 2, "groups": 2}),
}


@pytest.mark.parametrize("name", sorted(_EMPTY_BATCH_CONVS))
def test_convolution_of_an_empty_batch_has_zero_gradients(name):
    """A convolution of a batch of 0 samples raised in backward (every kernel reshaped the
    output gradient to (0, C, -1), which NumPy cannot infer), and conv_transpose2d already in
    forward; torch gives an empty output and zero gradients (first and second order)."""
    fn, w_shape, co, kw = _EMPTY_BATCH_CONVS[name]
    x = f64(np.zeros((0, 2, 5, 5)), requires_grad=True)
    w = f64(_rand(*w_shape), requires_grad=True)
    b = f64(_rand(co, seed=1), requires_grad=True)
    y = fn(x, w, b, **kw)
    assert y.shape[:2] == (0, co)
    y.sum().backward()
    assert x.grad.shape == x.shape and w.grad.shape == w.shape and b.grad.shape == (co,)
    assert not w.grad.numpy().any() and not b.grad.numpy().any()
    assert gradcheck(lambda x, w, b: fn(x, w, b, **kw), (x, w, b))
    assert gradgradcheck(lambda x, w, b: fn(x, w, b, **kw), (x, w, b))


def test_convolution_of_an_empty_batch_matches_torch():
    torch = pytest.importorskip("torch")
    for name, (fn, w_shape, co, kw) in sorted(_EMPTY_BATCH_CONVS.items()):
        w_np, b_np = _rand(*w_shape), _rand(co, seed=1)
        x = f64(np.zeros((0, 2, 5, 5)), requires_grad=True)
        w, b = f64(w_np, requires_grad=True), f64(b_np, requires_grad=True)
        y = fn(x, w, b, **kw)
        (y * 2).sum().backward()
        tx = torch.zeros(0, 2, 5, 5, dtype=torch.float64, requires_grad=True)
        tw = torch.tensor(w_np, requires_grad=True)
        tb = torch.tensor(b_np, requires_grad=True)
        ty = getattr(torch.nn.functional, fn.__name__)(tx, tw, tb, **kw)
        (ty * 2).sum().backward()
        assert y.shape == tuple(ty.shape), name
        for m, t in ((x, tx), (w, tw), (b, tb)):
            np.testing.assert_array_equal(m.grad.numpy(), t.grad.numpy())


# ---- vision.ops: NMS ---------------------------------------------------------------------------
def test_nms_puts_a_nan_score_first_as_torchs_descending_sort():
    """NMS ordered the boxes by np.argsort(-scores), which puts a NaN score last; torchvision
    sorts with torch's descending sort, where NaN ranks above every number, so the NaN-scored
    box is kept first and suppresses its overlaps (batched_nms's final order too)."""
    from minidl.vision import ops
    boxes = minidl.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 11, 11.]])
    scores = minidl.tensor([1.0, float("nan"), 2.0])
    assert ops.nms(boxes, scores, 0.5).tolist() == [1]
    assert ops.batched_nms(boxes, scores, minidl.tensor([0, 1, 2]), 0.5).tolist() == [1, 2, 0]
    inf_and_nan = minidl.tensor([1.0, float("inf"), float("nan")])
    assert ops.nms(boxes, inf_and_nan, 0.99).tolist() == [2, 1]


def test_nms_of_empty_boxes_gives_no_warning():
    """Two zero-area boxes divided 0 by 0 for their IoU with NumPy's RuntimeWarning; the NaN
    IoU suppresses nothing, silently, as torchvision's kernel."""
    import warnings

    from minidl.vision import ops
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keep = ops.nms(minidl.tensor([[0, 0, 0, 0.], [0, 0, 0, 0.]]), minidl.tensor([1., 2.]), 0.5)
    assert keep.tolist() == [1, 0]


# ---- activations: piecewise-constant gradients are selects -------------------------------------
_OUTSIDE = [-2.0, 7.0, 0.2, -0.3]        # x where each gradient below is 0
_BIG_GRADS = [-np.inf, np.nan, np.inf, np.nan]


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("name,args,zero_at", [
    ("relu6", (), [0, 1]), ("hardtanh", (), [0, 1]), ("threshold", (0.5, 2.0), [0, 2, 3]),
    ("hardsigmoid", (), [1]), ("hardshrink", (), [2, 3]), ("softshrink", (), [2, 3])])
def test_piecewise_constant_activation_gradient_is_zero_for_an_inf_or_nan_gradient(
        dtype, name, args, zero_at):
    """relu6, hardtanh, threshold, hardsigmoid, hardshrink and softshrink multiplied the
    incoming gradient by their 0/1 derivative, so an inf or NaN gradient where the derivative
    is 0 gave NaN (and a RuntimeWarning); torch's kernels select, giving 0 there (ReLU's
    already did)."""
    dt = getattr(minidl, dtype)
    x = minidl.tensor(np.asarray(_OUTSIDE, np.float32), dtype=dt, requires_grad=True)
    getattr(F, name)(x, *args).backward(minidl.tensor(np.asarray(_BIG_GRADS, np.float32),
                                                      dtype=dt))
    g = x.grad.float().numpy()
    assert (g[zero_at] == 0).all() and not np.signbit(g[zero_at]).any()


def test_piecewise_constant_activation_gradients_match_torch():
    torch = pytest.importorskip("torch")
    xs = np.asarray([np.inf, -np.inf, -0.0, 0.0, 1.5, -2.0, 7.0, 0.2, -0.3, 3.0], np.float32)
    gs = np.asarray([1, 1, 1, 1, np.inf, -np.inf, np.nan, -np.inf, np.nan, 2.0], np.float32)
    for dtype in ("float32", "float64", "float16", "bfloat16"):
        for name, args in [("relu6", ()), ("hardtanh", ()), ("threshold", (0.5, 2.0)),
                           ("hardsigmoid", ()), ("hardshrink", ()), ("softshrink", ())]:
            tx = torch.tensor(xs).to(getattr(torch, dtype)).requires_grad_()
            getattr(torch.nn.functional, name)(tx, *args).backward(
                torch.tensor(gs).to(tx.dtype))
            mx = minidl.tensor(xs, dtype=getattr(minidl, dtype), requires_grad=True)
            getattr(F, name)(mx, *args).backward(minidl.tensor(gs, dtype=getattr(minidl, dtype)))
            np.testing.assert_array_equal(mx.grad.float().numpy(), tx.grad.float().numpy(),
                                          err_msg=f"{name} {dtype}")


def test_piecewise_constant_activation_double_backward_is_a_select():
    """The same in graph mode (create_graph=True): 0, not NaN, where the derivative is 0."""
    x = f64([-2.0, 0.5, 7.0], requires_grad=True)
    g = f64([np.inf, 1.0, np.nan], requires_grad=True)
    (gx,) = minidl.autograd.grad(F.relu6(x), x, g, create_graph=True)
    np.testing.assert_array_equal(gx.numpy(), [0.0, 1.0, 0.0])
    assert gradgradcheck(F.hardtanh, (f64([-0.5, 0.25, 0.75], requires_grad=True),))


# ---- fx: buffers and tensor attributes of a traced module ---------------------------------------
def _module_with_tensors(lib):
    class WithTensors(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lib.nn.Linear(3, 2)
            self.register_buffer("buf", lib.ones(2))
            self.scale = lib.tensor([1.0, 2.0])
            self.sub = lib.nn.Module()
            self.sub.register_buffer("b2", lib.zeros(2))
            self.sub.shift = lib.ones(2)

        def forward(self, x):
            return (self.lin(x) + self.buf) * self.scale + self.sub.b2 + self.sub.shift

    return WithTensors()


def test_fx_traces_a_module_with_a_buffer_read_in_forward():
    """symbolic_trace of a module reading its own buffer (a get_attr node at the top level)
    raised KeyError "register_buffer: attribute 'buf' already exists" (GraphModule set the
    attribute, then registered it); a plain tensor attribute became a _tensor_constant kept out
    of the state_dict. torch's GraphModule reads it by its name and holds every tensor it reads
    as a buffer, so its state_dict saves and loads them."""
    import minidl.fx as fx
    m = _module_with_tensors(minidl)
    gm = fx.symbolic_trace(m)
    assert sorted(gm.state_dict()) == ["buf", "lin.bias", "lin.weight", "scale", "sub.b2",
                                       "sub.shift"]
    assert "_tensor_constant" not in gm.code
    x = minidl.tensor(_rand(4, 3).astype(np.float32))
    np.testing.assert_array_equal(gm(x).numpy(), m(x).numpy())
    other = fx.symbolic_trace(_module_with_tensors(minidl))
    other.load_state_dict(gm.state_dict())
    np.testing.assert_array_equal(other(x).numpy(), m(x).numpy())


def test_fx_graph_module_state_dict_keys_and_code_match_torch():
    torch = pytest.importorskip("torch")
    torch_fx = pytest.importorskip("torch.fx")

    import minidl.fx as fx
    gm = fx.symbolic_trace(_module_with_tensors(minidl))
    tgm = torch_fx.symbolic_trace(_module_with_tensors(torch))
    assert sorted(gm.state_dict()) == sorted(tgm.state_dict())
    assert sorted(k for k, _ in gm.named_buffers()) == sorted(k for k, _ in tgm.named_buffers())
    assert gm.code.strip() == tgm.code.strip()


# ---- Tensor.unfold is a view -------------------------------------------------------------------
def test_unfold_is_a_view_of_its_input():
    """Tensor.unfold gathered its windows into a copy (IndexSelect), so a write through a
    window (u[1] = ..., u.zero_()) silently left the input unchanged and a later change of the
    input did not show in the windows; torch's unfold is a view of the input's memory."""
    x = minidl.arange(6.0)
    x.unfold(0, 3, 3).zero_()
    assert x.tolist() == [0.0] * 6
    y = minidl.arange(6.0)
    windows = y.unfold(0, 3, 1)
    y[0] = 100.0
    assert windows[0].tolist() == [100.0, 1.0, 2.0]
    a = f64(np.arange(8.0), requires_grad=True)
    b = a * 1
    b.unfold(0, 2, 2)[1] = f64([10.0, 20.0])
    (b ** 2).sum().backward()
    assert b.tolist() == [0.0, 1.0, 10.0, 20.0, 4.0, 5.0, 6.0, 7.0]
    assert a.grad.tolist() == [0.0, 2.0, 0.0, 0.0, 8.0, 10.0, 12.0, 14.0]


@pytest.mark.parametrize("shape,dim,size,step,transposed", [
    ((7,), 0, 3, 2, False), ((2, 9), 1, 4, 1, False), ((5, 6), 0, 2, 3, True),
    ((3, 4, 5), -1, 5, 1, False), ((3, 4, 5), 1, 0, 2, False), ((6,), 0, 1, 7, False)])
def test_unfold_gradients(shape, dim, size, step, transposed):
    def fn(x):
        return (x.t() if transposed else x).unfold(dim, size, step)
    a = f64(_rand(*shape), requires_grad=True)
    assert gradcheck(fn, (a,))
    assert gradgradcheck(lambda x: fn(x) ** 2, (a,))


def test_unfold_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    for shape, dim, size, step in [((7,), 0, 3, 2), ((2, 9), 1, 4, 1), ((3, 4, 5), 2, 2, 2)]:
        a, g0 = rng.standard_normal(shape), None
        t = torch.tensor(a, requires_grad=True)
        m = f64(a, requires_grad=True)
        ty, my = t.unfold(dim, size, step), m.unfold(dim, size, step)
        g0 = rng.standard_normal(tuple(ty.shape))
        ty.backward(torch.tensor(g0))
        my.backward(f64(g0))
        np.testing.assert_array_equal(my.detach().numpy(), ty.detach().numpy())
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-12)
        assert my.stride() == ty.stride()


# ---- in-place on a view, reading an expanded view of the same base ---------------------------
def _add_expanded_row_element(lib):
    a = lib.tensor(np.arange(12.0).reshape(3, 4), dtype=lib.float64, requires_grad=True)
    b = a * 1
    b[1].add_(b[:, 2][2:].expand(4))  # row 1 += b[2, 2], read through an expanded view
    (b ** 2).sum().backward()
    return b.detach().numpy(), a.grad.numpy()


def test_inplace_on_a_view_reads_an_expanded_view_of_its_base():
    """An in-place op on a view whose other operand was an expand()ed view of the same base
    was refused with 'more than one element of the written-to tensor ... refers to a single
    memory location', though only the operand (read, not written) repeats a place; torch
    reads it (its overlap check gives up on a non-dense operand), and so does minidl now."""
    b, g = _add_expanded_row_element(minidl)
    assert b[1].tolist() == [14.0, 15.0, 16.0, 17.0]
    assert g[2, 2] == 2 * 10.0 + 2 * (14.0 + 15.0 + 16.0 + 17.0)


def test_inplace_on_a_view_reads_an_expanded_view_of_its_base_as_torch():
    torch = pytest.importorskip("torch")
    for m, t in zip(_add_expanded_row_element(minidl), _add_expanded_row_element(torch)):
        np.testing.assert_array_equal(m, t)


# ---- vision.ops: RoI poolings with no bins ------------------------------------------------------
@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
def test_roi_ops_with_zero_output_size_give_an_empty_output(op):
    """roi_align with output_size 0 raised NumPy's "cannot reshape array of size 0" (after
    divide-by-zero warnings), roi_pool warned; torchvision's kernels give an empty
    (K, C, 0, 0) output, whose gradient is zeros. A negative size is refused, naming it."""
    import warnings

    from minidl.vision import ops
    x = f64(_rand(2, 3, 6, 6), requires_grad=True)
    boxes = f64([[0, 0, 0, 3, 3], [1, 1, 1, 4, 5]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = getattr(ops, op)(x, boxes, 0)
        assert y.shape == (2, 3, 0, 0)
        y.sum().backward()
    assert x.grad.shape == x.shape and not x.grad.numpy().any()
    assert getattr(ops, op)(x, boxes, (0, 2)).shape == (2, 3, 0, 2)
    with pytest.raises(ValueError, match="output_size"):
        getattr(ops, op)(x, boxes, -1)


def test_fx_graph_prints_its_output_as_torch():
    """A graph's output line printed its values as %name ('return %add'); torch prints the
    names bare ('return add', 'return ((x, add), {'a': x})'). get_attr nodes printed an empty
    '(args = (), kwargs = {})', which torch's leave out."""
    import minidl.fx as fx

    class Pair(minidl.nn.Module):
        def forward(self, x):
            return (x, x + 1), {"a": x}

    text = str(fx.symbolic_trace(Pair()).graph)
    assert text.splitlines()[-1].strip() == "return ((x, add), {'a': x})"
    torch_fx = pytest.importorskip("torch.fx")
    torch = pytest.importorskip("torch")

    class TorchPair(torch.nn.Module):
        def forward(self, x):
            return (x, x + 1), {"a": x}

    assert text == str(torch_fx.symbolic_trace(TorchPair()).graph)
    with_attrs = fx.symbolic_trace(_module_with_tensors(minidl)).graph
    torch_with_attrs = torch_fx.symbolic_trace(_module_with_tensors(torch)).graph
    assert str(with_attrs) == str(torch_with_attrs)


# ---- quantization: a per-channel activation observer -------------------------------------------
def test_convert_refuses_a_per_channel_activation_observer():
    """A per-channel observer on activations (PerChannelMinMaxObserver as qconfig.activation)
    converted silently: the QuantStub kept the first channel's scale and zero point for every
    channel (and batch sizes other than the calibration's ran with them). torch fails there
    (its converted scale is many numbers); minidl now refuses, naming the module and the
    observer."""
    aq = minidl.ao.quantization
    stub = aq.QuantStub()
    model = minidl.nn.Sequential(stub).eval()
    model.qconfig = aq.QConfig(
        activation=aq.PerChannelMinMaxObserver.with_args(dtype=minidl.quint8),
        weight=aq.default_weight_observer)
    prepared = aq.prepare(model)
    prepared(minidl.tensor(_rand(2, 3).astype(np.float32)))
    with pytest.raises(RuntimeError, match="QuantStub.*PerChannelMinMaxObserver.*per channel"):
        aq.convert(prepared)


# ---- as_strided of a view that as_strided (or unfold) made ------------------------------------
def _as_strided_twice(lib):
    a = lib.tensor(np.arange(12.0).reshape(3, 4), dtype=lib.float64, requires_grad=True)
    b = a * 1
    inner = b.as_strided((2, 2), (4, 1), 5)
    inner.as_strided((2,), (5,), 0).mul_(10)  # storage elements 0 and 5
    (b ** 2).sum().backward()
    x = lib.arange(12.0)
    windows = x[2:].unfold(0, 3, 2)
    return (b.detach().numpy(), a.grad.numpy(), windows.storage_offset(),
            windows.as_strided((2,), (3,)).tolist(), inner.as_strided((2,), (1,), 3).tolist())


def test_as_strided_of_an_as_strided_view_reads_the_storage():
    """as_strided of a view as_strided made (or, now, unfold) did not find the storage behind
    NumPy's as_strided (a DummyArray in its .base chain), took the view's own values as the
    storage and refused ('setStorage: ... the storage holds 4'); torch reads the offset and
    strides against the whole storage."""
    b, g, offset, read, read2 = _as_strided_twice(minidl)
    assert b[0, 0] == 0.0 and b[1, 1] == 50.0 and g[1, 1] == 1000.0
    assert offset == 2 and read == [2.0, 5.0] and read2 == [3.0, 4.0]


def test_as_strided_of_an_as_strided_view_as_torch():
    torch = pytest.importorskip("torch")
    for m, t in zip(_as_strided_twice(minidl), _as_strided_twice(torch)):
        np.testing.assert_array_equal(np.asarray(m), np.asarray(t))


# ---- compressed sparse: CSR @ CSR ---------------------------------------------------------------
def _csr_product_int32(lib, via_sparse_mm):
    def make():
        return lib.sparse_csr_tensor(
            lib.tensor([0, 2, 3, 3], dtype=lib.int32), lib.tensor([0, 2, 1], dtype=lib.int32),
            lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64), (3, 3)).requires_grad_()
    a, b = make(), make()
    y = lib.sparse.mm(a, b) if via_sparse_mm else a @ b
    head = (str(y.layout).split(".")[-1], str(y.crow_indices().dtype).split(".")[-1])
    if via_sparse_mm and lib.__name__ == "torch":  # (torch has no backward for this one)
        return head + (None, y.to_dense().detach().numpy())
    (y.to_dense() * lib.arange(9.0, dtype=lib.float64).reshape(3, 3)).sum().backward()
    return head + (str(a.grad.crow_indices().dtype).split(".")[-1], y.to_dense().detach().numpy(),
                   a.grad.to_dense().numpy(), b.grad.to_dense().numpy())


@pytest.mark.parametrize("via_sparse_mm", [False, True])
def test_csr_times_csr_has_int64_indices_and_sparse_mm_takes_it(via_sparse_mm):
    """The product of two CSR tensors kept int32 indices where both had them, and
    sparse.mm(csr, csr) raised NotImplementedError ('only a strided second operand'); torch
    gives a CSR result with int64 indices (its gradients too) either way."""
    layout, index, grad_index, *_ = _csr_product_int32(minidl, via_sparse_mm)
    assert (layout, index, grad_index) == ("sparse_csr", "int64", "int64")


def test_csr_times_csr_matches_torch():
    pytest.importorskip("torch")
    import torch
    for via in (False, True):
        m, t = _csr_product_int32(minidl, via), _csr_product_int32(torch, via)
        assert m[:2] == t[:2] and (via or m[2] == t[2])
        for x, y in zip(m[3:], t[3:]):
            np.testing.assert_array_equal(x, y)


# ---- fx: concrete_args are checked at each call ------------------------------------------------
def test_fx_concrete_args_are_checked_when_the_graph_runs():
    """A concrete argument became a placeholder defaulting to the traced value and nothing
    else, so calling the GraphModule with another value silently ran the branch traced for
    the first (gm(x, False) gave relu(x)). torch's tracer names the placeholder flag_1 and
    adds a check that raises AssertionError for another value (None checked as None)."""
    import minidl.fx as fx

    class Branchy(minidl.nn.Module):
        def forward(self, x, flag, n=None):
            if flag:
                x = minidl.relu(x)
            return x * 2 if n is None else x

    gm = fx.symbolic_trace(Branchy(), concrete_args={"flag": True, "n": None})
    x = minidl.tensor([-1.0, 2.0])
    assert gm(x, True).tolist() == [0.0, 4.0]
    with pytest.raises(AssertionError, match="flag has been specialized to have value True"):
        gm(x, False)
    with pytest.raises(AssertionError, match="n has been specialized to have value None"):
        gm(x, True, 3)
    gm.graph.eliminate_dead_code()  # the checks are kept
    gm.recompile()
    with pytest.raises(AssertionError):
        gm(x, False)
    assert "flag_1" in gm.code and "n_1" in gm.code
    for again in (fx.symbolic_trace(gm), fx.Transformer(gm).transform()):  # the checks kept
        assert again(x, True).tolist() == [0.0, 4.0]
        with pytest.raises(AssertionError, match="flag has been specialized"):
            again(x, False)


def test_unfold_view_on_the_fake_gpu(monkeypatch, host_kernels):
    """The windows of a device tensor stay on the device (NumPy's as_strided, which the fake
    GPU's arrays go through, returned a plain host array) and agree with the CPU's."""
    import _fake_gpu

    def run(device):
        a = minidl.tensor(_rand(3, 8), dtype=minidl.float64, device=device, requires_grad=True)
        b = a * 1
        windows = b.unfold(1, 3, 2)
        windows[:, 0].mul_(2)
        ((b ** 2).sum() + (windows ** 3).sum()).backward()
        return windows, b, a.grad

    cpu = run("cpu")
    _fake_gpu.install(monkeypatch, host_kernels)
    gpu = run("cuda")
    for g, c in zip(gpu, cpu):
        assert g.device == "cuda"
        np.testing.assert_allclose(g.detach().cpu().numpy(), c.detach().numpy(), rtol=1e-12)
