"""Conv1d, Conv2d's groups/dilation/padding modes, ConvTranspose1d/2d, unfold/fold and the
non-constant F.pad modes: float64 gradient checks and PyTorch parity (functions and modules)."""
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
from _torch_parity import check_op  # noqa: E402

TF = torch.nn.functional


# ---- float64 gradient checks ---------------------------------------------------------------
GRADCHECKS = [
    ("conv1d", lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=1, dilation=2),
     [(2, 3, 9), (4, 3, 3), (4,)]),
    ("conv1d_groups_same", lambda x, w, b: F.conv1d(x, w, b, padding="same", groups=3),
     [(2, 3, 7), (6, 1, 4), (6,)]),
    ("conv2d_groups_dilation", lambda x, w, b: F.conv2d(x, w, b, (2, 1), (1, 2), (2, 1), 2),
     [(2, 4, 7, 6), (6, 2, 3, 2), (6,)]),
    ("conv2d_depthwise", lambda x, w, b: F.conv2d(x, w, b, padding=1, groups=3),
     [(1, 3, 5, 5), (3, 1, 3, 3), (3,)]),
    ("conv_transpose2d", lambda x, w, b: F.conv_transpose2d(x, w, b, 2, 1, 1, 2, (1, 2)),
     [(2, 4, 3, 4), (4, 3, 3, 2), (6,)]),
    ("conv_transpose1d", lambda x, w, b: F.conv_transpose1d(x, w, b, stride=3, padding=2,
                                                            output_padding=1),
     [(2, 3, 5), (3, 2, 4), (2,)]),
    ("unfold", lambda x: F.unfold(x, (2, 3), dilation=(1, 2), padding=1, stride=(2, 1)),
     [(2, 2, 5, 6)]),
    ("fold", lambda c: F.fold(c, (5, 6), (2, 3), padding=1, stride=(2, 1)), [(2, 12, 18)]),
    ("pad_reflect", lambda x: F.pad(x, (2, 1, 1, 2), mode="reflect"), [(2, 2, 4, 3)]),
    ("pad_replicate", lambda x: F.pad(x, (3, 1), mode="replicate"), [(2, 3, 2)]),
    ("pad_circular", lambda x: F.pad(x, (2, 2, 0, 3), mode="circular"), [(1, 2, 3, 2)]),
]


@pytest.mark.parametrize("name,fn,shapes", GRADCHECKS, ids=[g[0] for g in GRADCHECKS])
def test_gradcheck_float64(name, fn, shapes):
    inputs = [randn(s, seed=i) for i, s in enumerate(shapes)]
    assert gradcheck(fn, inputs)


# ---- functional parity -------------------------------------------------------------------------
PARITY = [
    ("conv1d", lambda F, x, w, b: F.conv1d(x, w, b, 2, 1, 2), [((2, 3, 11), (4, 3, 3), (4,))]),
    ("conv1d_unbatched", lambda F, x, w: F.conv1d(x, w, padding="valid"), [((3, 8), (2, 3, 3))]),
    ("conv1d_same_even", lambda F, x, w: F.conv1d(x, w, padding="same", dilation=3),
     [((2, 2, 9), (3, 2, 4))]),
    ("conv2d_groups", lambda F, x, w, b: F.conv2d(x, w, b, stride=2, padding=1, groups=2),
     [((2, 4, 7, 7), (6, 2, 3, 3), (6,))]),
    ("conv2d_dilation", lambda F, x, w: F.conv2d(x, w, dilation=(2, 3), padding=(2, 1)),
     [((1, 3, 9, 10), (5, 3, 3, 3))]),
    ("conv2d_same", lambda F, x, w: F.conv2d(x, w, padding="same"), [((2, 3, 6, 5), (4, 3, 4, 3))]),
    ("conv2d_unbatched", lambda F, x, w, b: F.conv2d(x, w, b, padding=1),
     [((3, 5, 5), (2, 3, 3, 3), (2,))]),
    ("conv2d_fast_path", lambda F, x, w, b: F.conv2d(x, w, b, 1, 1), [((2, 3, 6, 6), (4, 3, 3, 3), (4,))]),
    ("conv_transpose2d", lambda F, x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1,
                                                               output_padding=1),
     [((2, 3, 4, 5), (3, 4, 3, 3), (4,))]),
    ("conv_transpose2d_groups_dilation", lambda F, x, w: F.conv_transpose2d(
        x, w, None, (1, 2), (0, 1), 0, 2, (2, 1)), [((2, 4, 3, 3), (4, 3, 2, 3))]),
    ("conv_transpose1d", lambda F, x, w, b: F.conv_transpose1d(x, w, b, 2, 0, 1),
     [((2, 3, 6), (3, 5, 4), (5,))]),
    ("conv_transpose1d_unbatched", lambda F, x, w: F.conv_transpose1d(x, w, stride=3),
     [((3, 4), (3, 2, 2))]),
    ("unfold", lambda F, x: F.unfold(x, 3, dilation=2, padding=1, stride=2), [(2, 3, 8, 7)]),
    ("fold", lambda F, c: F.fold(c, (4, 5), 2, stride=1), [(2, 8, 12)]),
    ("fold_unbatched", lambda F, c: F.fold(c, 6, 3, padding=1, stride=3), [(9, 4)]),
    ("pad_reflect", lambda F, x: F.pad(x, (2, 3), mode="reflect"), [(2, 3, 5)]),
    ("pad_replicate_2d", lambda F, x: F.pad(x, (1, 2, 3, 0), mode="replicate"), [(2, 3, 4, 4)]),
    ("pad_circular_3d", lambda F, x: F.pad(x, (1, 1, 2, 0, 0, 2), mode="circular"),
     [(1, 2, 3, 3, 3)]),
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's note on even kernels
@pytest.mark.parametrize("name,fn,shapes", PARITY, ids=[p[0] for p in PARITY])
def test_functional_parity_with_torch(name, fn, shapes):
    check_op(fn, shapes, rtol=1e-4, atol=1e-5)


# ---- modules ---------------------------------------------------------------------------------
MODULES = [
    ("Conv1d", dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1),
     (2, 3, 10)),
    ("Conv1d", dict(in_channels=4, out_channels=6, kernel_size=4, padding="same", groups=2,
                    padding_mode="reflect", dilation=2), (2, 4, 11)),
    ("Conv1d", dict(in_channels=2, out_channels=2, kernel_size=3, padding=2,
                    padding_mode="circular", bias=False), (2, 2, 5)),
    ("Conv2d", dict(in_channels=3, out_channels=6, kernel_size=(3, 2), stride=(2, 1),
                    padding=(1, 2), dilation=(1, 2), groups=3), (2, 3, 7, 8)),
    ("Conv2d", dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1),
     (2, 3, 7, 6)),  # the plain case: straight to the tuned kernels
    ("Conv2d", dict(in_channels=2, out_channels=4, kernel_size=3, padding=1,
                    padding_mode="replicate"), (2, 2, 5, 6)),
    ("Conv2d", dict(in_channels=2, out_channels=3, kernel_size=3, padding="same",
                    padding_mode="reflect"), (1, 2, 5, 5)),
    ("Conv2d", dict(in_channels=2, out_channels=3, kernel_size=2, padding="valid"), (2, 5, 5)),
    ("ConvTranspose1d", dict(in_channels=4, out_channels=2, kernel_size=3, stride=2,
                             padding=1, output_padding=1, groups=2), (2, 4, 6)),
    ("ConvTranspose2d", dict(in_channels=3, out_channels=4, kernel_size=(3, 2), stride=2,
                             padding=(1, 0), output_padding=(1, 0), dilation=(1, 2)),
     (2, 3, 4, 5)),
    ("ConvTranspose2d", dict(in_channels=2, out_channels=2, kernel_size=4, stride=2,
                             padding=1, bias=False), (1, 2, 3, 3)),
]


@pytest.mark.parametrize("cls,kwargs,shape", MODULES,
                         ids=[f"{m[0]}-{i}" for i, m in enumerate(MODULES)])
def test_module_parity_repr_and_init(cls, kwargs, shape):
    ours, theirs = getattr(nn, cls)(**kwargs), getattr(torch.nn, cls)(**kwargs)
    assert repr(ours) == repr(theirs)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    check_module(ours, theirs, [x])
    check_init(lambda: getattr(nn, cls)(**{**kwargs, "in_channels": 12, "out_channels": 24}),
               lambda: getattr(torch.nn, cls)(**{**kwargs, "in_channels": 12,
                                                  "out_channels": 24}))


def test_conv_transpose_output_size():
    ours, theirs = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1), \
        torch.nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1)
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 4)).astype(np.float32)
    m_out, _ = check_module(ours, theirs, [x], call=lambda m, x: m(x, output_size=[8, 8]))
    assert m_out.shape == (1, 2, 8, 8)
    with pytest.raises(ValueError, match="output size"):
        ours(minidl.tensor(x), output_size=(9, 9))


def test_conv_modules_float64_gradcheck():
    minidl.manual_seed(0)
    for layer, shape in ((nn.Conv1d(2, 4, 3, groups=2, padding=1, padding_mode="circular"),
                          (2, 2, 5)),
                         (nn.ConvTranspose2d(2, 3, 2, stride=2, dilation=2), (1, 2, 3, 3))):
        layer.to(minidl.float64)
        assert gradcheck(lambda x: layer(x), [randn(shape)])


def test_bad_arguments_raise_like_torch():
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding_mode"):
        nn.Conv1d(3, 4, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="strided"):
        nn.Conv2d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="zeros"):
        nn.ConvTranspose2d(3, 4, 3, padding_mode="reflect")
    x = minidl.randn(1, 4, 5, 5)
    with pytest.raises(ValueError, match="4 channels"):
        F.conv2d(x, minidl.randn(2, 3, 3, 3), groups=1)
    with pytest.raises(ValueError, match="output_padding"):
        F.conv_transpose2d(x, minidl.randn(4, 2, 3, 3), stride=2, output_padding=2)
    with pytest.raises(ValueError, match="reflect"):
        F.pad(minidl.randn(2, 3, 4), (4, 0), mode="reflect")
    with pytest.raises(ValueError, match="value"):
        F.pad(minidl.randn(2, 3, 4), (1, 0), mode="replicate", value=2.0)
    with pytest.raises(ValueError, match="blocks"):
        F.fold(minidl.randn(1, 8, 5), (4, 5), 2)


@pytest.mark.parametrize("low", ["bfloat16", "float16"])
def test_autocast_conv_family_matches_torch_dtype(low):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 6)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3)).astype(np.float32)
    for fn in (lambda F, x, w: F.conv1d(x, w, groups=2),
               lambda F, x, w: F.conv_transpose1d(x, w),
               lambda F, x, w: F.conv2d(x.unsqueeze(2), w.unsqueeze(2), dilation=2, groups=2)):
        with torch.autocast("cpu", dtype=getattr(torch, low)):
            want = fn(TF, torch.tensor(x), torch.tensor(w))
        with minidl.autocast("cpu", dtype=getattr(minidl, low)):
            got = fn(F, minidl.tensor(x), minidl.tensor(w))
        assert str(got.dtype) == str(want.dtype).replace("torch.", "")
        np.testing.assert_allclose(got.float().numpy(), want.float().numpy(), rtol=0.05, atol=0.1)


PAD_MODULES = [(f"{kind}{d}d", d) for kind in ("ZeroPad", "ReflectionPad", "ReplicationPad",
                                               "CircularPad") for d in (1, 2, 3)]


@pytest.mark.parametrize("cls,dims", PAD_MODULES, ids=[p[0] for p in PAD_MODULES])
def test_padding_modules_match_torch(cls, dims):
    shape = {1: (2, 3, 6), 2: (2, 3, 5, 6), 3: (1, 2, 4, 5, 7)}[dims]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for padding in (2, tuple(range(1, 2 * dims + 1))[::-1]):
        ours, theirs = getattr(nn, cls)(padding), getattr(torch.nn, cls)(padding)
        assert repr(ours) == repr(theirs)
        check_module(ours, theirs, [x])
    ours, theirs = getattr(nn, cls.replace(cls.split("Pad")[0], "Constant"))(1, 2.5), \
        getattr(torch.nn, cls.replace(cls.split("Pad")[0], "Constant"))(1, 2.5)
    assert repr(ours) == repr(theirs)
    check_module(ours, theirs, [x])


def test_softmax2d_matches_torch():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    check_module(nn.Softmax2d(), torch.nn.Softmax2d(), [x])
    check_module(nn.Softmax2d(), torch.nn.Softmax2d(), [x[0]])
    assert repr(nn.Softmax2d()) == "Softmax2d()"
