"""nn.EmbeddingBag and F.embedding_bag with dense gradients (sum, mean and max bags; padding_idx,
include_last_offset, per_sample_weights, max_norm): PyTorch parity forward and backward, float64
gradient checks and errors. The sparse gradients (sparse=True) are in test_embedding_bag_sparse.py."""
from __future__ import annotations


import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl.testing import gradcheck

from helpers import leaf, randn

torch = pytest.importorskip("torch")
from _nn_parity import check_module  # noqa: E402
from _torch_parity import _Made, check_op  # noqa: E402

TF = torch.nn.functional


BAG_INPUT = np.array([1, 2, 4, 5, 4, 3, 2, 9])


BAG_OFFSETS = np.array([0, 4, 4, 6])


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("padding_idx", [None, 4])
@pytest.mark.parametrize("include_last_offset", [False, True])
def test_embedding_bag_parity(mode, padding_idx, include_last_offset):
    offsets = np.append(BAG_OFFSETS, 8) if include_last_offset else BAG_OFFSETS
    check_op(lambda F, w: F.embedding_bag(F.tensor(BAG_INPUT), w, F.tensor(offsets), mode=mode,
                                          include_last_offset=include_last_offset,
                                          padding_idx=padding_idx),
             [_Made(lambda rng: rng.permutation(40).reshape(10, 4) * 0.1)])
    check_op(lambda F, w: F.embedding_bag(F.tensor(BAG_INPUT.reshape(2, 4)), w, mode=mode,
                                          padding_idx=padding_idx),
             [_Made(lambda rng: rng.permutation(40).reshape(10, 4) * 0.1)])


def test_embedding_bag_per_sample_weights_and_gradcheck():
    check_op(lambda F, w, p: F.embedding_bag(F.tensor(BAG_INPUT), w, F.tensor(BAG_OFFSETS),
                                             mode="sum", per_sample_weights=p, padding_idx=2),
             [((10, 4), (8,))])
    idx, off = minidl.tensor(BAG_INPUT), minidl.tensor(BAG_OFFSETS)
    for mode in ("sum", "mean"):
        assert gradcheck(lambda w: F.embedding_bag(idx, w, off, mode=mode), [randn((10, 4))])
    assert gradcheck(lambda w, p: F.embedding_bag(idx, w, off, mode="sum", per_sample_weights=p),
                     [randn((10, 4)), randn((8,), seed=2)])
    w = leaf(np.random.default_rng(0).permutation(40).reshape(10, 4) * 0.1)
    assert gradcheck(lambda w: F.embedding_bag(idx, w, off, mode="max"), [w])


@pytest.mark.parametrize("kwargs", [dict(), dict(mode="max", padding_idx=2),
                                    dict(mode="sum", include_last_offset=True)])
def test_embedding_bag_module(kwargs):
    ours, theirs = nn.EmbeddingBag(10, 3, **kwargs), torch.nn.EmbeddingBag(10, 3, **kwargs)
    assert repr(ours) == repr(theirs)
    offsets = np.append(BAG_OFFSETS, 8) if kwargs.get("include_last_offset") else BAG_OFFSETS
    check_module(ours, theirs, [BAG_INPUT, offsets])
    big, tbig = nn.EmbeddingBag(200, 16, padding_idx=3), torch.nn.EmbeddingBag(200, 16, padding_idx=3)
    assert abs(big.weight.numpy().std() - tbig.weight.detach().numpy().std()) < 0.1
    assert not big.weight.numpy()[3].any()
    pre = nn.EmbeddingBag.from_pretrained(minidl.ones(3, 2), mode="sum")
    assert not pre.weight.requires_grad
    np.testing.assert_array_equal(pre(minidl.tensor([[0, 2]])).numpy(), [[2.0, 2.0]])


def test_embedding_bag_max_norm_renormalises_rows_in_place():
    w = np.random.default_rng(0).standard_normal((10, 4)) * 2
    mw, tw = minidl.tensor(w, dtype="float64"), torch.tensor(w)
    for kwargs in (dict(max_norm=1.5), dict(max_norm=2.0, norm_type=3, mode="max")):
        got = F.embedding_bag(minidl.tensor(BAG_INPUT), mw, minidl.tensor(BAG_OFFSETS), **kwargs)
        want = TF.embedding_bag(torch.tensor(BAG_INPUT), tw, torch.tensor(BAG_OFFSETS), **kwargs)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12)
        np.testing.assert_allclose(mw.numpy(), tw.numpy(), rtol=1e-12)  # the rows it touched
    layer = nn.EmbeddingBag(10, 3, max_norm=1.0, mode="sum")
    assert repr(layer) == repr(torch.nn.EmbeddingBag(10, 3, max_norm=1.0, mode="sum"))
    layer(minidl.tensor([[1, 2, 3]]))
    assert np.linalg.norm(layer.weight.numpy()[[1, 2, 3]], axis=1).max() <= 1.0 + 1e-6


def test_embedding_bag_errors():
    w = minidl.randn(10, 3)
    idx = minidl.tensor(BAG_INPUT)
    with pytest.raises(ValueError, match="offsets has to be a 1D Tensor but got None"):
        F.embedding_bag(idx, w)
    with pytest.raises(ValueError, match="offsets has to be None"):
        F.embedding_bag(idx.reshape(2, 4), w, minidl.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"offsets\[0\] has to be 0"):
        F.embedding_bag(idx, w, minidl.tensor([1, 4]))
    with pytest.raises(NotImplementedError, match="only supported for mode='sum'"):
        F.embedding_bag(idx, w, minidl.tensor([0, 4]), per_sample_weights=minidl.ones(8))
    with pytest.raises(ValueError, match="same shape as the input"):
        F.embedding_bag(idx, w, minidl.tensor([0, 4]), mode="sum",
                        per_sample_weights=minidl.ones(7))
    with pytest.raises(ValueError, match="mode has to be one of"):
        F.embedding_bag(idx, w, minidl.tensor([0, 4]), mode="median")
    with pytest.raises(IndexError, match="out of range"):
        F.embedding_bag(minidl.tensor([0, 10]), w, minidl.tensor([0]))
    with pytest.raises(TypeError, match="integer"):
        F.embedding_bag(minidl.tensor([0.0, 1.0]), w, minidl.tensor([0]))
    with pytest.raises(ValueError, match="max mode does not support scaling"):
        F.embedding_bag(idx, w, minidl.tensor([0, 4]), mode="max", scale_grad_by_freq=True)
    with pytest.raises(ValueError, match="not supported in minidl"):
        nn.EmbeddingBag(10, 3, scale_grad_by_freq=True)
    with pytest.raises(ValueError, match="max mode does not support sparse weights"):
        F.embedding_bag(idx, w, minidl.tensor([0, 4]), mode="max", sparse=True)
