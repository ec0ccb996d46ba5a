"""GroupNorm, InstanceNorm1d/2d, LocalResponseNorm, normalize, cosine_similarity,
pairwise_distance (functions and modules): float64 gradient checks, PyTorch parity of values,
gradients, running statistics, state_dict keys and repr, autocast dtypes."""
from __future__ import annotations

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl.testing import gradcheck

from helpers import randn

torch = pytest.importorskip("torch")
from _nn_parity import check_init, check_module  # noqa: E402
from _torch_parity import check_op, const  # noqa: E402

TF = torch.nn.functional
RNG = np.random.default_rng(0)


GRADCHECKS = [
    ("group_norm", lambda x, w, b: F.group_norm(x, 2, w, b), [(2, 4, 3, 2), (4,), (4,)]),
    ("instance_norm", lambda x, w, b: F.instance_norm(x, weight=w, bias=b), [(2, 3, 5), (3,), (3,)]),
    ("local_response_norm", lambda x: F.local_response_norm(x, 3, alpha=0.1, k=2.0), [(2, 5, 3)]),
    ("normalize", lambda x: F.normalize(x, dim=1), [(3, 4)]),
    ("normalize_p3", lambda x: F.normalize(x, p=3, dim=0), [(3, 4)]),
    ("cosine_similarity", lambda a, b: F.cosine_similarity(a, b, dim=-1), [(3, 5), (3, 5)]),
    ("pairwise_distance", lambda a, b: F.pairwise_distance(a, b, p=1.5), [(3, 4), (3, 4)]),
]


@pytest.mark.parametrize("name,fn,shapes", GRADCHECKS, ids=[g[0] for g in GRADCHECKS])
def test_gradcheck_float64(name, fn, shapes):
    assert gradcheck(fn, [randn(s, seed=i) for i, s in enumerate(shapes)])


PARITY = [
    ("group_norm", lambda F, x, w, b: F.group_norm(x, 3, w, b), [((2, 6, 4, 3), (6,), (6,))]),
    ("group_norm_1d_noaffine", lambda F, x: F.group_norm(x, 2, eps=1e-3), [(3, 4, 5)]),
    ("instance_norm", lambda F, x, w, b: F.instance_norm(x, weight=w, bias=b),
     [((2, 3, 4, 5), (3,), (3,))]),
    ("instance_norm_eval", lambda F, x, m, v: F.instance_norm(
        x, m, v, use_input_stats=False), [((2, 3, 6), const(RNG.standard_normal(3)),
                                           const(RNG.uniform(0.5, 2, 3)))]),
    ("local_response_norm_3d", lambda F, x: F.local_response_norm(x, 2), [(2, 5, 7)]),
    ("local_response_norm_4d", lambda F, x: F.local_response_norm(x, 3, 0.5, 0.6, 2.0),
     [(2, 6, 3, 3)]),
    ("normalize", lambda F, x: F.normalize(x), [(4, 5)]),
    ("normalize_p1_dim", lambda F, x: F.normalize(x, p=1, dim=-1), [(2, 3, 4)]),
    ("normalize_zero_row", lambda F, x: F.normalize(x * F.tensor([[1.0], [0.0]])), [(2, 3)]),
    ("cosine_similarity", lambda F, a, b: F.cosine_similarity(a, b), [((4, 5), (4, 5))]),
    ("cosine_similarity_broadcast", lambda F, a, b: F.cosine_similarity(a, b, dim=-1),
     [((3, 1, 6), (4, 6))]),
    ("pairwise_distance", lambda F, a, b: F.pairwise_distance(a, b), [((4, 5), (4, 5))]),
    ("pairwise_distance_p1_keepdim", lambda F, a, b: F.pairwise_distance(a, b, 1.0, 1e-3, True),
     [((4, 5), (1, 5))]),
]


@pytest.mark.parametrize("name,fn,shapes", PARITY, ids=[p[0] for p in PARITY])
def test_functional_parity_with_torch(name, fn, shapes):
    check_op(fn, shapes, rtol=1e-4, atol=1e-5)


MODULES = [
    ("GroupNorm", (2, 4), {}, (2, 4, 3, 3)),
    ("GroupNorm", (3, 6), dict(affine=False, eps=1e-3), (2, 6, 5)),
    ("GroupNorm", (1, 4), dict(bias=False), (2, 4, 5)),
    ("InstanceNorm1d", (3,), {}, (2, 3, 6)),
    ("InstanceNorm1d", (3,), dict(affine=True), (3, 6)),
    ("InstanceNorm2d", (3,), dict(affine=True, bias=False), (2, 3, 4, 4)),
    ("InstanceNorm2d", (3,), dict(affine=True, track_running_stats=True), (2, 3, 4, 5)),
    ("LocalResponseNorm", (3,), {}, (2, 5, 4)),
    ("LocalResponseNorm", (4, 1e-2, 0.5, 2.0), {}, (2, 6, 3, 3)),
]


@pytest.mark.parametrize("cls,args,kwargs,shape", MODULES,
                         ids=[f"{m[0]}-{i}" for i, m in enumerate(MODULES)])
def test_module_parity_repr_and_init(cls, args, kwargs, shape):
    ours, theirs = getattr(nn, cls)(*args, **kwargs), getattr(torch.nn, cls)(*args, **kwargs)
    assert repr(ours) == repr(theirs)
    check_init(lambda: getattr(nn, cls)(*args, **kwargs),
               lambda: getattr(torch.nn, cls)(*args, **kwargs))
    x = RNG.standard_normal(shape).astype(np.float32) * 2 + 1
    check_module(ours, theirs, [x])
    for (k, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
    ours.eval(), theirs.eval()
    check_module(ours, theirs, [x * 0.5])


def test_distance_modules():
    a, b = RNG.standard_normal((3, 4)).astype(np.float32), RNG.standard_normal((3, 4)).astype(np.float32)
    for cls, kwargs in (("CosineSimilarity", dict(dim=0)), ("PairwiseDistance", dict(p=3.0)),
                        ("PairwiseDistance", dict(keepdim=True))):
        ours, theirs = getattr(nn, cls)(**kwargs), getattr(torch.nn, cls)(**kwargs)
        assert repr(ours) == repr(theirs)
        check_module(ours, theirs, [a, b])


@pytest.mark.parametrize("low", ["bfloat16", "float16"])
def test_autocast_dtypes_match_torch_cpu(low):
    x = RNG.standard_normal((2, 4, 3, 3)).astype(np.float32)
    w = RNG.standard_normal((4, 4, 1, 1)).astype(np.float32)
    g = RNG.uniform(0.5, 1.5, 4).astype(np.float32)
    cases = [lambda F, h, g: F.group_norm(h, 2, g, g),
             lambda F, h, g: F.instance_norm(h, weight=g),
             lambda F, h, g: F.local_response_norm(h, 3),
             lambda F, h, g: F.normalize(h),
             lambda F, h, g: F.cosine_similarity(h, h * 2),
             lambda F, h, g: F.pairwise_distance(h, h * 2)]
    for k, fn in enumerate(cases):
        with torch.autocast("cpu", dtype=getattr(torch, low)):
            want = fn(TF, TF.conv2d(torch.tensor(x), torch.tensor(w)), torch.tensor(g))
        with minidl.autocast("cpu", dtype=getattr(minidl, low)):
            got = fn(F, F.conv2d(minidl.tensor(x), minidl.tensor(w)), minidl.tensor(g))
        assert str(got.dtype) == str(want.dtype).replace("torch.", ""), k
        np.testing.assert_allclose(got.float().numpy(), want.float().numpy(), rtol=0.1, atol=0.1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_groups"):
        F.group_norm(minidl.randn(2, 6, 3), 4)
    with pytest.raises(ValueError, match="divisible"):
        nn.GroupNorm(4, 6)
    with pytest.raises(ValueError, match="spatial"):
        F.instance_norm(minidl.randn(2, 3, 1))
    with pytest.raises(ValueError, match="broadcast"):
        F.cosine_similarity(minidl.randn(2, 3), minidl.randn(4, 3))
