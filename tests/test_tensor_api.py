"""The Tensor API beyond the operators: creation functions (arange, full, *_like, rand, randint,
linspace, eye), where, maximum/minimum, clamp, expand, repeat, masked_fill, var/std, split/chunk,
log_softmax, the method forms of the operators, topk, any/all and the dtype conversions.

Every differentiable op is checked against float64 finite differences (runs without torch) and
against PyTorch on the same inputs, forward and backward, including the dtype of the result
(skipped, saying so, where torch is not installed). Bad input raises an error naming what did
not fit."""
import numpy as np
import pytest

import minidl
from helpers import distinct, leaf, randn
from minidl.testing import gradcheck

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(
    torch is None, reason="PyTorch parity tests need torch (pip install torch); not installed")


def t(values, **kw):
    return minidl.tensor(values, **kw)


def mask(shape, seed=0):
    return minidl.tensor(np.random.default_rng(seed).random(shape) < 0.5)


# ---- gradients against finite differences (float64) -------------------------------------
def _pieces(parts):
    """Tuple outputs (split, chunk) as one tensor: each piece weighted by its position, so a
    gradient sent to the wrong piece shows."""
    return minidl.cat([p.flatten() * (i + 1) for i, p in enumerate(parts)])


CASES = [
    ("where", lambda a, b: minidl.where(mask((2, 3)), a, b), lambda: [randn((2, 3)), randn((2, 3), 1)]),
    ("where_bcast", lambda a, b: minidl.where(mask((3, 1)), a, b), lambda: [randn((1, 4)), randn((4,), 1)]),
    ("where_number", lambda a: minidl.where(mask((2, 3)), 0.5, a), lambda: [randn((2, 3))]),
    ("where_method", lambda a, b: a.where(mask((2, 3)), b), lambda: [randn((2, 3)), randn((3,), 1)]),
    ("maximum_bcast", lambda a, b: minidl.maximum(a, b), lambda: [randn((2, 3)), randn((3,), 1)]),
    ("minimum", lambda a, b: minidl.minimum(a, b), lambda: [randn((2, 3)), randn((2, 3), 1)]),
    ("maximum_method", lambda a, b: a.maximum(b), lambda: [randn((3, 1)), randn((1, 2), 1)]),
    ("clamp_both", lambda a: a.clamp(-0.25, 0.35), lambda: [leaf(distinct((3, 4)))]),
    ("clamp_min", lambda a: a.clamp(min=-0.15), lambda: [leaf(distinct((3, 4)))]),
    ("clamp_max", lambda a: minidl.clamp(a, max=0.25), lambda: [leaf(distinct((3, 4)))]),
    ("clip", lambda a: a.clip(-0.45, 0.05), lambda: [leaf(distinct((3, 4)))]),
    ("clamp_tensor_bounds", lambda a, lo, hi: a.clamp(lo, hi),
     lambda: [randn((3, 4)), leaf(distinct((4,), 1) - 0.5), leaf(distinct((3, 1), 2) + 0.55)]),
    ("clamp_min_above_max", lambda a, lo, hi: a.clamp(lo, hi),
     lambda: [randn((2, 3)), leaf(np.full((3,), 0.7)), leaf(np.array([-0.3, 0.2, 0.9]))]),
    ("expand", lambda a: a.expand(2, 3, -1), lambda: [randn((3, 1))]),
    ("expand_as", lambda a, b: a.expand_as(b) * b, lambda: [randn((1, 4)), randn((3, 4), 1)]),
    ("repeat", lambda a: a.repeat(2, 1, 3), lambda: [randn((2, 3))]),
    ("repeat_tuple", lambda a: a.repeat((3, 2)), lambda: [randn((2, 1))]),
    ("masked_fill", lambda a: a.masked_fill(mask((2, 3)), -1.5), lambda: [randn((2, 3))]),
    ("masked_fill_bcast", lambda a: a.masked_fill(mask((3,)), 2.0), lambda: [randn((2, 3))]),
    ("masked_fill_tensor_value", lambda a, v: a.masked_fill(mask((2, 3)), v),
     lambda: [randn((2, 3)), randn((), 1)]),
    ("var_all", lambda a: a.var(), lambda: [randn((3, 4))]),
    ("var_dim_keep", lambda a: a.var(-1, keepdim=True), lambda: [randn((3, 4))]),
    ("var_biased_dims", lambda a: a.var((0, 2), unbiased=False), lambda: [randn((2, 3, 4))]),
    ("var_correction", lambda a: a.var(1, correction=2), lambda: [randn((3, 5))]),
    ("std_all", lambda a: a.std(), lambda: [randn((3, 4))]),
    ("std_dim", lambda a: a.std(0), lambda: [randn((3, 4))]),
    ("std_keep_biased", lambda a: a.std(dim=-2, keepdim=True, correction=0), lambda: [randn((2, 3, 4))]),
    ("split_size", lambda a: _pieces(a.split(2, dim=1)), lambda: [randn((2, 5))]),
    ("split_sizes", lambda a: _pieces(a.split([1, 3, 0, 1], dim=-1)), lambda: [randn((2, 5))]),
    ("chunk", lambda a: _pieces(a.chunk(3)), lambda: [randn((7, 2))]),
    ("chunk_neg_dim", lambda a: _pieces(a.chunk(2, dim=-1)), lambda: [randn((2, 3, 4))]),
    ("log_softmax", lambda a: a.log_softmax(-1), lambda: [randn((3, 4))]),
    ("log_softmax_dim0", lambda a: a.log_softmax(0), lambda: [randn((3, 4))]),
    ("add_alpha", lambda a, b: a.add(b, alpha=-2.5), lambda: [randn((2, 3)), randn((3,), 1)]),
    ("sub_alpha", lambda a, b: a.sub(b, alpha=3), lambda: [randn((2, 3)), randn((2, 3), 1)]),
    ("add_number", lambda a: a.add(2.0).sub(1.0, alpha=0.5), lambda: [randn((3,))]),
    ("mul_div", lambda a, b: a.mul(b).div(b.mul(b) + 1.0), lambda: [randn((2, 3)), randn((2, 3), 1)]),
    ("pow", lambda a, b: a.pow(2) + b.abs().add(0.5).pow(a), lambda: [randn((2, 3)), randn((2, 3), 1)]),
    ("matmul_method", lambda a, b: a.matmul(b), lambda: [randn((2, 3)), randn((3, 4), 1)]),
    ("topk", lambda a: a.topk(2).values, lambda: [leaf(distinct((3, 5)))]),
    ("topk_smallest_dim0", lambda a: a.topk(2, dim=0, largest=False)[0], lambda: [leaf(distinct((4, 3)))]),
    ("type_as", lambda a, b: a.type_as(b) * b, lambda: [randn((3,)), randn((3,), 1)]),
]


@pytest.mark.parametrize("fn,make_inputs", [pytest.param(f, m, id=i) for i, f, m in CASES])
def test_gradcheck(fn, make_inputs):
    inputs = make_inputs()
    assert gradcheck(fn, inputs)  # which also checks each gradient has its input's shape
    for x in inputs:
        if x.requires_grad:
            assert x.grad is None  # taken by autograd.grad, as torch's gradcheck does


# ---- parity with PyTorch: same inputs, forward and backward -------------------------------
def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def parity(fn, *inputs, rtol=1e-7, atol=1e-10):
    """Run ``fn(F, *inputs)`` on minidl and on torch (F is the package, then nn.functional):
    arrays become tensors of their dtype (float ones require grad), anything else is passed as
    it is. The outputs (a tensor or a tuple) must match in shape, dtype and values, and the
    gradients of a random projection of the float outputs must match for every float input."""
    from _torch_parity import MINIDL, TORCH

    def tensors(make):
        return [make(a) if isinstance(a, np.ndarray) else a for a in inputs]

    m_in = tensors(lambda a: minidl.tensor(a, dtype=a.dtype, requires_grad=a.dtype.kind == "f"))
    t_in = tensors(lambda a: torch.tensor(a, requires_grad=a.dtype.kind == "f"))
    m_out, t_out = fn(MINIDL, *m_in), fn(TORCH, *t_in)
    m_outs = tuple(m_out) if isinstance(m_out, (tuple, list)) else (m_out,)
    t_outs = tuple(t_out) if isinstance(t_out, (tuple, list)) else (t_out,)
    assert len(m_outs) == len(t_outs), f"{len(m_outs)} outputs, torch gives {len(t_outs)}"
    rng = np.random.default_rng(0)
    m_loss = t_loss = None
    for k, (m, tt) in enumerate(zip(m_outs, t_outs)):
        assert m.shape == tuple(tt.shape), f"output {k}: shape {m.shape}, torch {tuple(tt.shape)}"
        assert m.dtype.name == _dtype_name(tt.dtype), f"output {k}: {m.dtype}, torch {tt.dtype}"
        np.testing.assert_allclose(m.numpy(), tt.detach().numpy(), rtol=rtol, atol=atol,
                                   equal_nan=True, err_msg=f"output {k}")
        if tt.requires_grad:
            proj = rng.standard_normal(tuple(tt.shape))
            m_term = (m * minidl.tensor(proj, dtype=m.dtype)).sum()
            t_term = (tt * torch.tensor(proj, dtype=tt.dtype)).sum()
            m_loss = m_term if m_loss is None else m_loss + m_term
            t_loss = t_term if t_loss is None else t_loss + t_term
    if t_loss is None:
        return m_out
    m_loss.backward()
    t_loss.backward()
    for k, (m, tt) in enumerate(zip(m_in, t_in)):
        if not (torch.is_tensor(tt) and tt.requires_grad):
            continue
        want = np.zeros(tt.shape) if tt.grad is None else tt.grad.numpy()
        got = np.zeros(m.shape) if m.grad is None else m.grad.numpy()
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True,
                                   err_msg=f"gradient of input {k}")
    return m_out


R = np.random.default_rng(42)


def normal(*shape):
    return R.standard_normal(shape)


def bools(*shape):
    return R.random(shape) < 0.5


TIES = np.array([[-2.0, -1.0, -0.5], [0.0, 0.5, 1.0], [1.5, 2.0, 3.0]])


PARITY = [
    ("where", lambda F, c, a, b: F.where(c, a, b), [bools(2, 3), normal(2, 3), normal(2, 3)]),
    ("where_bcast_3", lambda F, c, a, b: F.where(c, a, b), [bools(3, 1), normal(1, 4), normal(4)]),
    ("where_numbers", lambda F, c: F.where(c, 1.5, -2), [bools(4)]),
    ("where_ints", lambda F, c: F.where(c, 1, 0), [bools(4)]),
    ("where_int_float", lambda F, c, a: F.where(c, a, 0.5), [bools(3), np.array([1, 2, 3])]),
    ("where_0d_float64", lambda F, c, a, b: F.where(c, a, b.float()),
     [bools(3), np.array(2.0), normal(3)]),
    ("where_empty", lambda F, c, a: F.where(c, a, 0.0), [bools(0, 3), normal(0, 3)]),
    ("where_method", lambda F, a, c, b: a.where(c, b), [normal(2, 3), bools(2, 3), normal(3)]),
    ("maximum_bcast", lambda F, a, b: F.maximum(a, b), [normal(2, 3), normal(3)]),
    ("minimum_ties", lambda F, a, b: F.minimum(a, b), [TIES, TIES[::-1].copy()]),
    ("maximum_ties", lambda F, a, b: a.maximum(b), [TIES, np.ones(3)]),
    ("maximum_int_float", lambda F, a, b: F.maximum(a, b), [np.array([1, 5]), normal(2)]),
    ("clamp_ties", lambda F, a: a.clamp(-0.5, 1.0), [TIES]),
    ("clamp_min_ties", lambda F, a: F.clamp(a, min=0.0), [TIES]),
    ("clamp_max_ties", lambda F, a: F.clamp(a, max=2.0), [TIES]),
    ("clip", lambda F, a: a.clip(-1, 1), [normal(3, 4)]),
    ("clamp_tensor_bounds_ties", lambda F, a, lo, hi: a.clamp(lo, hi),
     [TIES, np.array([-2.0, 0.5, 1.0]), np.array([[0.0], [0.5], [3.0]])]),
    ("clamp_min_above_max", lambda F, a, lo, hi: F.clamp(a, lo, hi),
     [normal(2, 3), np.array([0.5, 0.5, 0.5]), np.array([0.0, 0.5, 1.0])]),
    ("clamp_tensor_min_only", lambda F, a, lo: a.clamp(min=lo), [TIES, np.array([0.0, 0.5, 0.5])]),
    ("clamp_tensor_max_only", lambda F, a, hi: a.clamp(max=hi), [TIES, np.array([[1.0], [0.5], [2.0]])]),
    ("clamp_bcast_to_bound", lambda F, a, lo: a.clamp(min=lo), [normal(3), normal(2, 3)]),
    ("clamp_int_float_bound", lambda F, a: a.clamp(min=1.5), [np.array([1, 2, 3])]),
    ("clamp_int", lambda F, a: a.clamp(0, 2), [np.array([-1, 1, 3])]),
    ("clamp_empty", lambda F, a: a.clamp(0.0, 1.0), [normal(0)]),
    ("clamp_nan", lambda F, a: a.clamp(0.0, 1.0), [np.array([np.nan, -1.0, 0.5])]),
    ("expand", lambda F, a: a.expand(2, -1, 4), [normal(3, 1)]),
    ("expand_tuple", lambda F, a: a.expand((3, 2)), [normal(2)]),
    ("expand_to_zero", lambda F, a: a.expand(0, 3), [normal(1, 3)]),
    ("expand_as", lambda F, a, b: a.expand_as(b) * b, [normal(1, 4), normal(3, 4)]),
    ("repeat", lambda F, a: a.repeat(2, 3), [normal(2, 3)]),
    ("repeat_new_dims", lambda F, a: a.repeat(2, 1, 1, 2), [normal(2, 3)]),
    ("repeat_zero", lambda F, a: a.repeat(0, 2), [normal(2, 3)]),
    ("masked_fill", lambda F, a, m: a.masked_fill(m, -1.0), [normal(2, 3), bools(2, 3)]),
    ("masked_fill_bcast_mask", lambda F, a, m: a.masked_fill(m, 2.0), [normal(2, 3), bools(3)]),
    ("masked_fill_grows", lambda F, a, m: a.masked_fill(m, 2.0), [normal(3), bools(2, 3)]),
    ("masked_fill_tensor_value", lambda F, a, m, v: a.masked_fill(m, v), [normal(2, 3), bools(2, 3), np.array(0.7)]),
    ("masked_fill_int", lambda F, a, m: a.masked_fill(m, 0.5), [np.array([1, 2, 3]), bools(3)]),
    ("var", lambda F, a: a.var(), [normal(3, 4)]),
    ("var_dim_neg_keep", lambda F, a: a.var(-1, keepdim=True), [normal(3, 4)]),
    ("var_positional", lambda F, a: a.var(1, False, True), [normal(3, 4)]),
    ("var_unbiased_only", lambda F, a: a.var(False), [normal(3, 4)]),
    ("var_dims", lambda F, a: a.var(dim=(0, 2), correction=0), [normal(2, 3, 4)]),
    ("var_correction_2", lambda F, a: a.var(1, correction=2), [normal(3, 5)]),
    ("var_one_element", lambda F, a: a.var(0), [normal(1, 3)]),
    ("var_0d", lambda F, a: a.var(unbiased=False), [np.array(1.5)]),
    ("std", lambda F, a: a.std(), [normal(3, 4)]),
    ("std_dim_keep", lambda F, a: a.std(0, keepdim=True), [normal(3, 4)]),
    ("std_constant", lambda F, a: a.std(1), [np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])]),
    ("std_biased", lambda F, a: a.std(-1, unbiased=False), [normal(2, 5)]),
    ("split", lambda F, a: a.split(2), [normal(5, 2)]),
    ("split_sizes", lambda F, a: a.split([1, 0, 3], dim=-1), [normal(2, 4)]),
    ("split_empty", lambda F, a: a.split(2), [normal(0, 3)]),
    ("chunk", lambda F, a: a.chunk(3, dim=1), [normal(2, 5)]),
    ("chunk_fewer", lambda F, a: a.chunk(4), [normal(6)]),
    ("chunk_empty", lambda F, a: a.chunk(3), [normal(0)]),
    ("log_softmax", lambda F, a: a.log_softmax(-1), [normal(3, 4)]),
    ("log_softmax_dim1", lambda F, a: a.log_softmax(1), [normal(2, 3, 4)]),
    ("log_softmax_large", lambda F, a: a.log_softmax(0), [normal(5) * 1e4]),
    ("log_softmax_0d", lambda F, a: a.log_softmax(0), [np.array(2.0)]),
    ("add_alpha", lambda F, a, b: a.add(b, alpha=2), [normal(2, 3), normal(3)]),
    ("add_int_alpha", lambda F, a, b: a.add(b, alpha=3), [np.array([1, 2]), np.array([3, 4])]),
    ("sub_alpha", lambda F, a, b: a.sub(b, alpha=-0.5), [normal(2, 3), normal(2, 1)]),
    ("mul_div_pow", lambda F, a, b: a.mul(b).div(b.pow(2) + 1.0).pow(2), [normal(3), normal(3)]),
    ("method_promotion", lambda F, a, b: a.mul(b).add(1), [np.array([1, 2]), normal(2).astype(np.float32)]),
    ("matmul", lambda F, a, b: a.matmul(b), [normal(2, 3), normal(3)]),
    ("topk", lambda F, a: a.topk(2), [distinct((3, 5))]),
    ("topk_smallest_dim0", lambda F, a: a.topk(3, dim=0, largest=False), [distinct((4, 3))]),
    ("topk_all", lambda F, a: a.topk(4, dim=-1), [distinct((2, 4))]),
    ("topk_zero", lambda F, a: a.topk(0), [normal(2, 4)]),
    ("topk_0d", lambda F, a: a.topk(1), [np.array(3.0)]),
    ("topk_nan", lambda F, a: a.topk(2), [np.array([1.0, np.nan, 3.0, 2.0])]),
    ("type_as", lambda F, a, b: a.type_as(b), [normal(3), np.array([1, 2])]),
    ("type_as_float32", lambda F, a, b: a.type_as(b) * b, [normal(3), normal(3).astype(np.float32)]),
    ("int_bool", lambda F, a: (a.int(), a.bool(), a.long()), [np.array([-1.5, 0.0, 2.7])]),
    ("any_all", lambda F, a: (a.any(), a.all(), a.any(1), a.all(-1, keepdim=True), a.any(dim=(0, 1))),
     [np.array([[0.0, 1.0], [0.0, 0.0]])]),
    ("any_all_empty", lambda F, a: (a.any(), a.all(), a.any(0)), [normal(0, 2)]),
    ("any_all_no_dims", lambda F, a: (a.any(dim=()), a.all(dim=(), keepdim=True)), [normal(2, 3)]),
]


@needs_torch
@pytest.mark.filterwarnings("ignore:var.*degrees of freedom")  # torch warns on var_one_element
@pytest.mark.parametrize("fn,inputs", [pytest.param(f, i, id=n) for n, f, i in PARITY])
def test_parity_with_torch(fn, inputs):
    parity(fn, *inputs)


@needs_torch
def test_float32_inputs_stay_float32_and_match_torch():
    from _torch_parity import check_op, positive

    check_op(lambda F, a, b: F.where(a > 0, a, b), [((2, 3), (3,))])
    check_op(lambda F, a: a.clamp(-0.5, 0.5).var(1).std(), [(4, 5)])
    check_op(lambda F, a: a.log_softmax(-1) + a.expand(2, 3, 4).repeat(1, 1, 2).sum(0)[..., :4],
             [(3, 4)])
    check_op(lambda F, a, b: F.maximum(a, b).masked_fill(a > 1, 0.5), [((3, 4), (4,))])
    check_op(lambda F, a, b: a.add(b, alpha=2).div(b).pow(2), [((3,), positive((3,)))])


# ---- the edges, stated ------------------------------------------------------------------
def test_clamp_passes_the_gradient_at_both_bounds_and_none_outside():
    x = t([-1.0, 0.0, 0.5, 1.0, 2.0], requires_grad=True)
    y = x.clamp(0.0, 1.0)
    y.sum().backward()
    np.testing.assert_array_equal(y.numpy(), [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 1.0, 1.0, 1.0, 0.0])


def test_clamp_with_min_above_max_gives_max_and_its_gradient():
    x = t([-1.0, 0.5, 2.0], requires_grad=True)
    lo, hi = t(1.0, requires_grad=True), t(0.0, requires_grad=True)
    y = x.clamp(lo, hi)
    y.sum().backward()
    np.testing.assert_array_equal(y.numpy(), [0.0, 0.0, 0.0])
    assert x.grad.numpy().tolist() == [0.0, 0.0, 0.0]
    assert lo.grad.item() == 0.0 and hi.grad.item() == 3.0


def test_where_routes_the_gradient_by_the_condition():
    a = t([1.0, 2.0, 3.0], requires_grad=True)
    b = t(10.0, requires_grad=True)
    c = t([True, False, True])
    minidl.where(c, a, b).sum().backward()
    assert a.grad.tolist() == [1.0, 0.0, 1.0] and b.grad.item() == 1.0


@pytest.mark.parametrize("make, dtype", [
    (lambda: minidl.where(t([True]), 1, 0), np.int64),
    (lambda: minidl.where(t([True]), 1.0, 0), np.float32),
    (lambda: minidl.where(t([True]), t([1, 2]), 0.5), np.float32),
    (lambda: minidl.where(t([True]), t([1.0], dtype=np.float16), t(2.0, dtype=np.float64)), np.float16),
    (lambda: minidl.where(t([True]), t([True]), False), np.bool_),
    (lambda: minidl.maximum(t([1, 2]), t([0.5])), np.float32),
    (lambda: t([1, 2]).clamp(0, 1), np.int64),
    (lambda: t([1, 2]).clamp(min=0.5), np.float32),
    (lambda: t([1, 2]).masked_fill(t([True, False]), 0.5), np.int64),
    (lambda: t([1.0]).type_as(t([1], dtype=np.int32)), np.int32),
])
def test_result_dtypes_are_pytorchs(make, dtype):
    assert make().dtype == np.dtype(dtype)


def test_empty_and_zero_size_results():
    assert minidl.zeros(0, 3).clamp(0, 1).shape == (0, 3)
    assert minidl.zeros(1, 3).expand(0, 3).shape == (0, 3)
    assert minidl.zeros(2, 3).repeat(0, 1).shape == (0, 3)
    assert [p.shape for p in minidl.zeros(0, 2).split(3)] == [(0, 2)]
    assert [p.shape for p in minidl.zeros(0).chunk(3)] == [(0,), (0,), (0,)]
    assert minidl.zeros(3).topk(0).values.shape == (0,)
    with np.errstate(all="ignore"), pytest.warns(UserWarning, match="degrees of freedom"):
        assert np.isnan(minidl.zeros(0).var().item())  # with torch's warning
    x = minidl.zeros(0, 2, requires_grad=True)
    x.repeat(2, 1).sum().backward()
    assert x.grad.shape == (0, 2)


def test_split_and_chunk_pieces_are_in_the_graph():
    x = t(np.arange(10.0).reshape(5, 2), requires_grad=True)
    a, b, c = x.split(2)
    assert (a.shape, b.shape, c.shape) == ((2, 2), (2, 2), (1, 2))
    (a.sum() + 2 * c.sum()).backward()
    np.testing.assert_array_equal(x.grad.numpy()[:, 0], [1, 1, 0, 0, 2])
    assert len(t(np.zeros(6)).chunk(4)) == 3  # ceil(6 / 4) = 2 per piece: three pieces


def test_expand_is_a_view_and_its_gradient_sums_the_copies():
    x = t([[1.0], [2.0]], requires_grad=True)
    y = x.expand(3, 2, 4)
    assert y.shape == (3, 2, 4)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[12.0], [12.0]])


def test_topk_returns_sorted_values_and_int64_indices():
    x = t([[3.0, 1.0, 4.0, 1.5], [9.0, 2.0, 6.0, 5.0]], requires_grad=True)
    values, indices = x.topk(2)
    assert values.tolist() == [[4.0, 3.0], [9.0, 6.0]]
    assert indices.tolist() == [[2, 0], [0, 2]] and indices.dtype == np.int64
    values.sum().backward()
    assert x.grad.tolist() == [[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]]
    small = x.topk(1, dim=0, largest=False)
    assert small.values.tolist() == [[3.0, 1.0, 4.0, 1.5]] and small.indices.tolist() == [[0, 0, 0, 0]]


def test_any_all_int_bool_are_outside_the_graph():
    x = t([[0.0, 2.0], [0.0, 0.0]], requires_grad=True)
    assert x.any().item() is True and x.all().item() is False
    assert x.any(0).tolist() == [False, True] and x.any(-1, keepdim=True).shape == (2, 1)
    for out in (x.any(), x.all(1), x.int(), x.bool()):
        assert not out.requires_grad
    assert x.int().dtype == np.int32 and x.bool().dtype == np.bool_


def test_type_as_returns_self_when_the_dtype_already_matches():
    x = t([1.0, 2.0])
    assert x.type_as(t([0.0])) is x
    assert x.type_as(t([0.0], dtype=np.float64)).dtype == np.float64


def test_std_of_a_constant_has_zero_gradient():
    x = t([2.0, 2.0, 2.0], requires_grad=True)
    x.std().backward()
    assert x.grad.tolist() == [0.0, 0.0, 0.0]


def test_var_and_log_softmax_in_bfloat16_compute_in_float32():
    bf16 = minidl.bfloat16
    x = minidl.Tensor(np.linspace(0, 1, 512, dtype=np.float32) + 256).to(bf16)
    v = x.var()
    assert v.dtype == np.dtype(bf16)
    np.testing.assert_allclose(v.float().item(), x.float().var().item(), rtol=1e-2)
    ls = x.log_softmax(0)
    assert ls.dtype == np.dtype(bf16)
    np.testing.assert_allclose(ls.float().exp().sum().item(), 1.0, rtol=2e-2)


def test_new_names_are_public():
    for name in ("arange", "full", "full_like", "zeros_like", "ones_like", "rand", "randint",
                 "linspace", "eye", "where", "maximum", "minimum", "clamp", "clip"):
        assert name in minidl.__all__ and callable(getattr(minidl, name))


# ---- creation functions ------------------------------------------------------------------
CREATION = [
    ("arange_n", lambda F: F.arange(5)),
    ("arange_start_end", lambda F: F.arange(2, 7)),
    ("arange_step", lambda F: F.arange(1, 10, 3)),
    ("arange_neg_step", lambda F: F.arange(5, 0, -2)),
    ("arange_float", lambda F: F.arange(0, 1, 0.1)),
    ("arange_float_end", lambda F: F.arange(2.5)),
    ("arange_empty", lambda F: F.arange(3, 3)),
    ("arange_dtype", lambda F: F.arange(4, dtype=F.float64)),
    ("full_float", lambda F: F.full((2, 3), 1.5)),
    ("full_int", lambda F: F.full((2,), 7)),
    ("full_bool", lambda F: F.full([3], True)),
    ("full_0d", lambda F: F.full((), 2.0)),
    ("full_dtype", lambda F: F.full((2,), 3, dtype=F.float64)),
    ("zeros_like", lambda F: F.zeros_like(F.arange(3))),
    ("ones_like_dtype", lambda F: F.ones_like(F.arange(3), dtype=F.float32)),
    ("full_like", lambda F: F.full_like(F.arange(3.0), 0.25)),
    ("full_like_int", lambda F: F.full_like(F.arange(3), 2.7)),
    ("linspace", lambda F: F.linspace(0, 1, 5)),
    ("linspace_neg", lambda F: F.linspace(3, -2, 7)),
    ("linspace_one", lambda F: F.linspace(2, 5, 1)),
    ("linspace_zero", lambda F: F.linspace(0, 1, 0)),
    ("linspace_int", lambda F: F.linspace(0, 10, 5, dtype=F.int64)),
    ("eye", lambda F: F.eye(3)),
    ("eye_rect", lambda F: F.eye(2, 4)),
    ("eye_empty", lambda F: F.eye(0)),
]


@needs_torch
@pytest.mark.parametrize("make", [pytest.param(f, id=n) for n, f in CREATION])
def test_creation_matches_torch(make):
    import torch

    class _MinidlDtypes:  # torch.int64 and the like, by the same names
        int64 = np.int64

        def __getattr__(self, name):
            return getattr(minidl, name)

    m, tt = make(_MinidlDtypes()), make(torch)
    assert m.shape == tuple(tt.shape) and m.dtype.name == _dtype_name(tt.dtype)
    np.testing.assert_allclose(m.numpy(), tt.numpy(), rtol=1e-6, atol=1e-7)


def test_creation_options():
    x = minidl.arange(3.0, requires_grad=True)
    assert x.requires_grad and x.is_leaf and x.dtype == np.float32 and x.device == "cpu"
    assert minidl.zeros_like(x).requires_grad is False
    assert minidl.ones_like(x, requires_grad=True).requires_grad
    assert minidl.full((2,), 1.0, dtype="float16").dtype == np.float16
    assert minidl.eye(2, dtype=minidl.float64).dtype == np.float64
    assert minidl.linspace(0, 1, 3, requires_grad=True).requires_grad
    assert minidl.rand(2, 3).shape == (2, 3) and minidl.rand((4,)).dtype == np.float32
    assert minidl.randint(5, (2, 2)).dtype == np.int64
    assert minidl.randint(0, 5, (3,), dtype=minidl.float32).dtype == np.float32


def test_rand_and_randint_are_seeded_and_in_range():
    minidl.manual_seed(3)
    a, ai = minidl.rand(1000), minidl.randint(-2, 3, (1000,))
    minidl.manual_seed(3)
    b, bi = minidl.rand(1000), minidl.randint(-2, 3, (1000,))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(ai.numpy(), bi.numpy())
    assert 0.0 <= a.numpy().min() and a.numpy().max() < 1.0
    assert set(ai.numpy().tolist()) == {-2, -1, 0, 1, 2}
    assert minidl.randint(7, size=(50,)).numpy().max() < 7
    assert minidl.randint(high=2, size=(50,)).numpy().max() < 2


# ---- bad input --------------------------------------------------------------------------
X = t(np.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize("call, error, match", [
    (lambda: minidl.where(t([1, 0, 1]), X, 0.0), TypeError, "condition must be a bool tensor"),
    (lambda: minidl.where(X > 1, X, "a"), TypeError, "other must be a tensor or a number"),
    (lambda: minidl.where(t([True, False]), X, 0.0), ValueError, r"condition \(2,\), input \(2, 3\)"),
    (lambda: minidl.maximum(X, 1.0), TypeError, "other must be a tensor, got float"),
    (lambda: minidl.minimum(X, t([1.0, 2.0])), ValueError, r"input \(2, 3\), other \(2,\)"),
    (lambda: X.clamp(), ValueError, "pass min, max or both"),
    (lambda: X.clamp(min="0"), TypeError, "min must be a number or a tensor"),
    (lambda: X.clamp(t([0.0, 1.0])), ValueError, r"min \(2,\)"),
    (lambda: X.masked_fill(X > 1, t([1.0])), ValueError, r"0-d tensor, got a tensor of shape \(1,\)"),
    (lambda: X.masked_fill(t([1.0, 0.0, 1.0]), 0.0), TypeError, "mask must be a bool tensor, got a float32"),
    (lambda: X.masked_fill(t([True, False]), 0.0), ValueError, r"mask \(2,\)"),
    (lambda: X.masked_fill(X > 1, None), TypeError, "value must be a number"),
    (lambda: X.expand(3), ValueError, r"1 sizes \(3,\) for a tensor of 2 dims"),
    (lambda: X.expand(2, 4), ValueError, r"cannot expand shape \(2, 3\) to \(2, 4\)"),
    (lambda: X.expand(-1, 2, 3), ValueError, "new leading dim 0"),
    (lambda: X.expand(2, -2), ValueError, "cannot expand"),
    (lambda: X.expand(2, 3.0), TypeError, "sizes must be ints"),
    (lambda: X.repeat(2), ValueError, r"1 repeat counts \(2,\) for a tensor of 2 dims"),
    (lambda: X.repeat(-1, 2), ValueError, "must be >= 0"),
    (lambda: X.var(2), IndexError, "out of range"),
    (lambda: X.std(-3), IndexError, "out of range"),
    (lambda: t([1, 2]).var(), TypeError, "floating-point tensor, got dtype int64"),
    (lambda: X.var(0, unbiased=True, correction=1), TypeError, "not both"),
    (lambda: X.split(2, dim=2), IndexError, "split: dimension out of range"),
    (lambda: X.split([1, 1], dim=1), ValueError, r"sizes \[1, 1\] must be >= 0 and sum to the size 3"),
    (lambda: X.split(0, dim=1), ValueError, "split_size must be > 0"),
    (lambda: X.split(1.5), TypeError, "split_size_or_sections must be an int"),
    (lambda: X.chunk(0), ValueError, "chunks must be > 0"),
    (lambda: X.chunk(2, dim=-3), IndexError, "chunk: dimension out of range"),
    (lambda: t(1.0).chunk(1), ValueError, "0-d tensor"),
    (lambda: X.log_softmax(2), IndexError, "log_softmax: dimension out of range"),
    (lambda: t([1, 2]).log_softmax(0), TypeError, "floating-point"),
    (lambda: X.topk(4), ValueError, "k = 4 is out of range for dim -1 of size 3"),
    (lambda: X.topk(-1), ValueError, "out of range"),
    (lambda: X.topk(1, dim=2), IndexError, "out of range"),
    (lambda: X.topk(1.0), TypeError, "k must be an int"),
    (lambda: X.any(dim=3), IndexError, "out of range"),
    (lambda: t([1, 2]).add(t([1, 2]), alpha=0.5), TypeError, "alpha must not be a float"),
    (lambda: X.sub(1.0, alpha="2"), TypeError, "alpha must be a number"),
    (lambda: minidl.arange(0, 5, 0), ValueError, "step must be nonzero"),
    (lambda: minidl.arange(5, 0, 1), ValueError, "cannot be reached"),
    (lambda: minidl.arange("5"), TypeError, "end must be a number"),
    (lambda: minidl.arange(3, requires_grad=True), TypeError, "floating-point"),
    (lambda: minidl.full(3, 1.0), TypeError, "size must be a tuple of ints, got int"),
    (lambda: minidl.linspace(0, 1, -1), ValueError, "steps must be >= 0"),
    (lambda: minidl.linspace(0, 1, 2.0), TypeError, "steps must be an int"),
    (lambda: minidl.eye(-1), ValueError, "n must be >= 0"),
    (lambda: minidl.eye(2, 2.5), TypeError, "m must be an int"),
    (lambda: minidl.rand(2, dtype="int64"), TypeError, "floating-point"),
    (lambda: minidl.randint(3, 3, (2,)), ValueError, r"low \(3\) must be less than high \(3\)"),
    (lambda: minidl.randint(3), TypeError, "pass high and size"),
    (lambda: minidl.randint(0, 3, 2), TypeError, "size must be a tuple"),
])
def test_bad_input_names_what_did_not_fit(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---- std/var accumulate in float64 on the CPU -------------------------------------------------

INF, NAN = float("inf"), float("nan")


def test_std_of_huge_float32_values_is_finite():
    x = minidl.tensor([1e30, 1.0, 3.0])
    assert np.isfinite(x.std().item())
    assert x.std().item() == pytest.approx(5.7735e29, rel=1e-4)
    assert x.std().dtype == minidl.float32
    b = minidl.tensor([1e30, 1.0, 3.0], dtype=minidl.bfloat16)
    assert np.isfinite(b.std().float().item()) and b.std().dtype == minidl.bfloat16
    assert np.isinf(minidl.tensor([1e20, 1.0, 3.0]).var().item())  # beyond float32: inf
    x = minidl.tensor([1.0, 2.0, 4.0], requires_grad=True)
    x.std().backward()
    assert x.grad.dtype == minidl.float32
    a = minidl.tensor([0.3, -1.2, 2.0, 5.5], dtype=minidl.float64, requires_grad=True)
    assert gradcheck(lambda a: a.std(correction=0), (a,))


def test_var_mean_keeps_dims_of_the_mean_with_dim_none():
    v, mu = minidl.var_mean(minidl.ones(2, 3), dim=None, keepdim=True)
    assert v.shape == (1, 1) and mu.shape == (1, 1)
    s, mu = minidl.std_mean(minidl.ones(2, 3, dtype=minidl.complex64), keepdim=True)
    assert s.shape == (1, 1) and mu.shape == (1, 1)


def test_std_var_parity_on_huge_values():
    torch = pytest.importorskip("torch")
    v = [1e30, -2.5, 1e30, 7.0]
    for dt in ("float32", "bfloat16"):
        ours = minidl.tensor(v, dtype=getattr(minidl, dt)).std(correction=0).float().item()
        theirs = torch.tensor(v, dtype=getattr(torch, dt)).std(correction=0).float().item()
        assert ours == pytest.approx(theirs, rel=1e-2)
    ours = minidl.var_mean(minidl.ones(2, 3), dim=None, keepdim=True)
    theirs = torch.var_mean(torch.ones(2, 3), dim=None, keepdim=True)
    assert [tuple(t.shape) for t in ours] == [tuple(t.shape) for t in theirs]


# ---- numbers beyond a dtype's range in full and where -----------------------------------------

def test_full_and_where_refuse_numbers_beyond_the_dtype():
    for value, dtype in ((300, minidl.int8), (1e5, minidl.float16), (NAN, minidl.int32)):
        with pytest.raises(RuntimeError, match="cannot be converted"):
            minidl.full((2,), value, dtype=dtype)
    np.testing.assert_array_equal(minidl.full((2,), -1, dtype=minidl.uint8).numpy(), [255, 255])
    assert minidl.full((2,), 2.5, dtype=minidl.int64).numpy().tolist() == [2, 2]
    assert np.isinf(minidl.full((1,), INF, dtype=minidl.float16).float().item())
    c = minidl.tensor([True, False])
    with pytest.raises(RuntimeError, match="cannot be converted"):
        minidl.where(c, minidl.tensor([1, 2], dtype=minidl.int8), 300)
    with pytest.raises(RuntimeError, match="cannot be converted"):
        minidl.where(c, minidl.tensor([1.0, 2.0]), 1e300)
    y = minidl.where(c, minidl.tensor([1.0, 2.0], dtype=minidl.float16), 1e5)  # inf, as torch
    assert y.dtype == minidl.float16 and np.isinf(y.float().numpy()[1])


def test_full_and_where_range_parity():
    torch = pytest.importorskip("torch")
    for value, dt in ((300, "int8"), (1e5, "float16"), (-1, "uint8"), (NAN, "int32")):
        try:
            theirs = torch.full((2,), value, dtype=getattr(torch, dt))
        except RuntimeError:
            with pytest.raises(RuntimeError):
                minidl.full((2,), value, dtype=getattr(minidl, dt))
            continue
        np.testing.assert_array_equal(minidl.full((2,), value, dtype=getattr(minidl, dt)).numpy(),
                                      theirs.numpy())


# ---- x.size() is a minidl.Size ----------------------------------------------------------------

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


# ---- storages ---------------------------------------------------------------------------------

def test_storages_tell_which_tensors_share_memory():
    x = minidl.arange(6.0).reshape(2, 3)
    row, transposed, copy = x[1], x.t(), x.clone()
    ptr = x.untyped_storage().data_ptr()
    assert row.untyped_storage().data_ptr() == ptr == transposed.untyped_storage().data_ptr()
    assert copy.untyped_storage().data_ptr() != ptr
    assert row.untyped_storage().nbytes() == 24 and len(row.untyped_storage()) == 24
    assert row.storage().size() == 6 and row.storage().tolist() == [0, 1, 2, 3, 4, 5]
    assert row.storage().element_size() == 4 and row.storage().untyped().nbytes() == 24
    assert isinstance(x.untyped_storage(), minidl.UntypedStorage)
    torch = pytest.importorskip("torch")
    xt = torch.arange(6.0).reshape(2, 3)
    assert xt[1].untyped_storage().nbytes() == row.untyped_storage().nbytes()
    assert xt.untyped_storage()[5] == x.untyped_storage()[5]  # a byte of the same float
