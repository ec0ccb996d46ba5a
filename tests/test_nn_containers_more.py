"""ParameterList, ParameterDict, Dropout1d/2d, AlphaDropout, FeatureAlphaDropout, Bilinear,
nn.utils.parameters_to_vector / vector_to_parameters: against PyTorch's behaviour."""
from __future__ import annotations

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl import optim
from minidl.nn.utils import parameters_to_vector, vector_to_parameters
from minidl.testing import gradcheck

from helpers import randn

torch = pytest.importorskip("torch")
from _nn_parity import check_init, check_module  # noqa: E402
from _torch_parity import check_op  # noqa: E402


class _Holder(nn.Module):
    def __init__(self, lib):
        super().__init__()
        P = lib.nn.Parameter
        self.plist = lib.nn.ParameterList([P(lib.ones(3, 2)), P(lib.zeros(4))])
        self.pdict = lib.nn.ParameterDict({"scale": P(lib.ones(2)), "shift": P(lib.zeros(2))})
        self.lin = lib.nn.Linear(2, 2)


def test_parameter_containers_state_dict_keys_and_training():
    ours, theirs = _Holder(minidl), torch.nn.Module()
    theirs.plist = torch.nn.ParameterList([torch.nn.Parameter(torch.ones(3, 2)),
                                           torch.nn.Parameter(torch.zeros(4))])
    theirs.pdict = torch.nn.ParameterDict({"scale": torch.nn.Parameter(torch.ones(2)),
                                           "shift": torch.nn.Parameter(torch.zeros(2))})
    theirs.lin = torch.nn.Linear(2, 2)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [k for k, _ in ours.named_parameters()] == [k for k, _ in theirs.named_parameters()]
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    # the parameters train: an optimizer finds them, gradients arrive
    opt = optim.SGD(ours.parameters(), lr=0.1)
    x = minidl.randn(3, 2)
    loss = ((ours.lin(x * ours.plist[0]) * ours.pdict["scale"] + ours.pdict["shift"]) ** 2).sum()
    loss = loss + ours.plist[1].sum()
    loss.backward()
    opt.step()
    np.testing.assert_allclose(ours.plist[1].numpy(), -0.1 * np.ones(4))
    assert ours.pdict["scale"].grad is not None


def test_parameter_list_behaviour():
    pl = nn.ParameterList([nn.Parameter(minidl.zeros(2))])
    pl.append(minidl.ones(3))  # a plain Tensor becomes a Parameter, as in torch
    assert isinstance(pl[1], nn.Parameter) and pl[1].requires_grad
    pl += [minidl.ones(1)]
    assert len(pl) == 3 and [tuple(p.shape) for p in pl] == [(2,), (3,), (1,)]
    assert pl[-1] is pl[2] and len(pl[1:]) == 2
    pl[0] = nn.Parameter(minidl.ones(5))
    assert pl[0].shape == (5,)
    with pytest.raises(IndexError, match="out of range"):
        pl[3]
    with pytest.raises(TypeError):
        pl.append(3.0)
    assert list(dict(pl.named_parameters())) == ["0", "1", "2"]
    assert repr(nn.ParameterList([nn.Parameter(minidl.zeros(3, 4)),
                                  nn.Parameter(minidl.zeros(2))])) == (
        "ParameterList(\n    (0): Parameter containing: [minidl.float32 of size 3x4]\n"
        "    (1): Parameter containing: [minidl.float32 of size 2]\n)")


def test_parameter_dict_behaviour():
    pd = nn.ParameterDict([("a", nn.Parameter(minidl.zeros(2)))])
    pd["b"] = minidl.ones(3)
    pd.update({"c": nn.Parameter(minidl.ones(1))})
    assert list(pd) == ["a", "b", "c"] and "b" in pd and len(pd) == 3
    assert isinstance(pd["b"], nn.Parameter)
    assert pd.pop("a").shape == (2,) and list(pd.keys()) == ["b", "c"]
    assert pd.get("zz") is None
    with pytest.raises(TypeError, match="strings"):
        pd[1] = minidl.ones(1)
    assert list(dict(pd.named_parameters())) == ["b", "c"]


# ---- dropout ------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:.*Received a 3D input")
@pytest.mark.parametrize("fn,shape,feature", [
    (F.dropout1d, (8, 16, 5), (8, 16, 1)), (F.dropout1d, (16, 5), (16, 1)),
    (F.dropout2d, (8, 16, 3, 3), (8, 16, 1, 1)),
    (F.dropout2d, (16, 3, 3), (16, 3, 1)),  # 3-D: (N, C, L) as in torch, with its warning
])
def test_channel_dropout_zeroes_whole_channels(fn, shape, feature):
    minidl.manual_seed(0)
    x = minidl.tensor(np.random.default_rng(0).uniform(1, 2, shape).astype(np.float32),
                      requires_grad=True)
    y = fn(x, p=0.25)  # dropout2d of a 3-D input warns, as torch's
    r = y.numpy() / x.numpy()
    # each channel is all zero or all scaled by 1 / (1 - p)
    per_channel = r.reshape(int(np.prod([s for s, f in zip(shape, feature) if f != 1])), -1)
    assert np.all(np.isclose(per_channel, 0) | np.isclose(per_channel, 4 / 3))
    assert np.allclose(per_channel.min(1), per_channel.max(1))
    assert 0.05 < (per_channel[:, 0] == 0).mean() < 0.5
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), r)  # the gradient is the mask, scaled
    assert fn(x, p=0.25, training=False) is x


def test_alpha_dropout_keeps_selu_statistics_and_matches_torch_formula():
    minidl.manual_seed(0)
    x = minidl.tensor(np.random.default_rng(1).standard_normal((200, 500)).astype(np.float32))
    y = F.alpha_dropout(x, 0.2, training=True).numpy()
    assert abs(y.mean()) < 0.02 and abs(y.std() - 1) < 0.02  # mean 0, variance 1 kept
    # dropped values all land on one value, as torch's: -alpha * a + alpha * a * p
    a = 1 / np.sqrt((1.7580993408473766 ** 2 * 0.2 + 1) * 0.8)
    dropped = -1.7580993408473766 * a * 0.8
    assert 0.15 < np.isclose(y, dropped, atol=1e-6).mean() < 0.25
    assert F.alpha_dropout(x, 0.2) is x  # training=False by default in the function
    t = torch.nn.functional.alpha_dropout(torch.tensor(x.numpy()), 0.2, True).numpy()
    assert np.isclose(t, dropped, atol=1e-6).any()  # torch's dropped value is the same
    z = F.feature_alpha_dropout(minidl.randn(4, 6, 5), 0.5, training=True).numpy()
    assert np.all(z.std(axis=2)[np.isclose(z[:, :, 0], dropped, atol=1e-6)] < 1e-6)


@pytest.mark.parametrize("cls", ["Dropout1d", "Dropout2d", "AlphaDropout",
                                 "FeatureAlphaDropout"])
def test_dropout_modules_repr_and_eval(cls):
    for args in ((), (0.3,), (0.1, True)):
        assert repr(getattr(nn, cls)(*args)) == repr(getattr(torch.nn, cls)(*args))
    m = getattr(nn, cls)(0.5).eval()
    x = minidl.randn(2, 3, 4) if cls == "Dropout1d" else minidl.randn(2, 3, 4, 4)
    assert m(x) is x
    with pytest.raises(ValueError, match="between 0 and 1"):
        getattr(nn, cls)(1.5)


# ---- bilinear ---------------------------------------------------------------------------------
def test_bilinear_functional_parity_and_gradcheck():
    check_op(lambda F, a, b, w, c: F.bilinear(a, b, w, c),
             [((4, 3), (4, 5), (2, 3, 5), (2,)), ((2, 3, 3), (2, 3, 4), (6, 3, 4), (6,))])
    check_op(lambda F, a, b, w: F.bilinear(a, b, w), [((3,), (2,), (4, 3, 2))])
    assert gradcheck(F.bilinear, [randn((3, 2)), randn((3, 4), 1), randn((5, 2, 4), 2),
                                  randn((5,), 3)])


def test_bilinear_module():
    for kwargs in (dict(), dict(bias=False)):
        ours, theirs = nn.Bilinear(3, 4, 5, **kwargs), torch.nn.Bilinear(3, 4, 5, **kwargs)
        assert repr(ours) == repr(theirs)
        rng = np.random.default_rng(0)
        check_module(ours, theirs, [rng.standard_normal((6, 3)).astype(np.float32),
                                    rng.standard_normal((6, 4)).astype(np.float32)])
    check_init(lambda: nn.Bilinear(20, 10, 30), lambda: torch.nn.Bilinear(20, 10, 30))
    with pytest.raises(ValueError, match="leading dims"):
        nn.Bilinear(3, 4, 5)(minidl.randn(2, 3), minidl.randn(3, 4))


# ---- nn.utils ---------------------------------------------------------------------------------
def test_parameters_to_vector_and_back():
    ours, theirs = nn.Linear(3, 2), torch.nn.Linear(3, 2)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    v = parameters_to_vector(ours.parameters())
    tv = torch.nn.utils.parameters_to_vector(theirs.parameters())
    np.testing.assert_array_equal(v.numpy(), tv.detach().numpy())
    assert v.requires_grad  # differentiable, as torch's
    (v * minidl.arange(8).float()).sum().backward()
    np.testing.assert_array_equal(ours.weight.grad.numpy().ravel(), np.arange(6))
    weight = ours.weight
    vector_to_parameters(minidl.arange(8).float() * 2, ours.parameters())
    torch.nn.utils.vector_to_parameters(torch.arange(8).float() * 2, theirs.parameters())
    assert ours.weight is weight
    for (k, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)
    with pytest.raises(TypeError, match="Tensor"):
        vector_to_parameters(np.zeros(8), ours.parameters())
    with pytest.raises(ValueError, match="8 elements"):
        vector_to_parameters(minidl.zeros(7), ours.parameters())


NEW_FUNCTIONS = """conv1d conv2d conv_transpose1d conv_transpose2d unfold fold pad max_pool1d max_pool2d
avg_pool1d avg_pool2d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_max_pool1d
adaptive_max_pool2d interpolate upsample pixel_shuffle pixel_unshuffle group_norm instance_norm
local_response_norm normalize cosine_similarity pairwise_distance relu6 hardtanh softplus
softsign mish hardswish hardsigmoid prelu selu celu glu tanhshrink threshold softmin logsigmoid
hardshrink softshrink kl_div huber_loss margin_ranking_loss hinge_embedding_loss
soft_margin_loss multilabel_soft_margin_loss cosine_embedding_loss triplet_margin_loss
poisson_nll_loss gaussian_nll_loss dropout1d dropout2d alpha_dropout feature_alpha_dropout
bilinear""".split()
NEW_MODULES = """Conv1d Conv2d ConvTranspose1d ConvTranspose2d MaxPool1d MaxPool2d AvgPool1d AvgPool2d
AdaptiveAvgPool1d AdaptiveAvgPool2d AdaptiveMaxPool1d AdaptiveMaxPool2d Upsample
UpsamplingNearest2d UpsamplingBilinear2d PixelShuffle PixelUnshuffle Unflatten Unfold Fold
GroupNorm InstanceNorm1d InstanceNorm2d LocalResponseNorm CosineSimilarity PairwiseDistance
ReLU6 Hardtanh Softplus Softsign Mish Hardswish Hardsigmoid PReLU SELU CELU GLU Tanhshrink
Threshold Softmin LogSigmoid Hardshrink Softshrink KLDivLoss HuberLoss MarginRankingLoss
HingeEmbeddingLoss SoftMarginLoss MultiLabelSoftMarginLoss CosineEmbeddingLoss
TripletMarginLoss PoissonNLLLoss GaussianNLLLoss ParameterList ParameterDict Dropout1d Dropout2d
AlphaDropout FeatureAlphaDropout Bilinear Softmax2d ZeroPad1d ZeroPad2d ZeroPad3d ConstantPad1d
ConstantPad2d ConstantPad3d ReflectionPad1d ReflectionPad2d ReflectionPad3d ReplicationPad1d
ReplicationPad2d ReplicationPad3d CircularPad1d CircularPad2d CircularPad3d""".split()


def _params(fn):
    import inspect

    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # a builtin without a signature
        return None
    # torch's boolean-dispatch wrappers and Module.__init__(*args, **kwargs) say nothing;
    # Hardtanh's min_value/max_value are its deprecated spellings
    names = [n for n in names if n not in ("min_value", "max_value")]
    return None if names[-2:] == ["args", "kwargs"] else names


@pytest.mark.parametrize("name", NEW_FUNCTIONS)
def test_function_arguments_are_torchs(name):
    want = _params(getattr(torch.nn.functional, name))
    if want is not None:
        assert _params(getattr(F, name)) == want


@pytest.mark.parametrize("name", NEW_MODULES)
def test_module_constructor_arguments_are_torchs(name):
    want = _params(getattr(torch.nn, name).__init__)
    if want is not None:
        assert _params(getattr(nn, name).__init__) == want
