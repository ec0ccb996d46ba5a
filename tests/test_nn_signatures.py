"""Every nn layer that PyTorch also has takes PyTorch's constructor arguments, in PyTorch's
order (so positional calls mean the same), and prints as PyTorch's does; layers with
parameters take the factory arguments device= and dtype=. The functional forms take torch's
arguments too, and a module's repr puts extra_repr beside its children as torch's does."""
import inspect

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F

torch = pytest.importorskip("torch", reason="the expected signatures and reprs are torch's own")
TF = torch.nn.functional

# torch takes (*args, **kwargs) for these, or a deprecated alias minidl leaves out
LOOSE = {"GRU", "LSTM", "RNN", "Identity", "Module", "Sequential", "LogSigmoid", "Sigmoid",
         "Softmax2d", "Softsign", "Tanh", "Tanhshrink", "Hardtanh", "RNNCellBase"}


def _layers():
    for name in sorted(dir(nn)):
        ours = getattr(nn, name)
        if isinstance(ours, type) and issubclass(ours, nn.Module) and hasattr(torch.nn, name):
            yield name


def test_constructor_arguments_are_torchs():
    checked = 0
    for name in _layers():
        if name in LOOSE:
            continue
        ours = list(inspect.signature(getattr(nn, name).__init__).parameters)
        theirs = list(inspect.signature(getattr(torch.nn, name).__init__).parameters)
        assert ours == theirs, name
        checked += 1
    assert checked > 80


@pytest.mark.parametrize("name,args", [
    ("Dropout", ()), ("BatchNorm1d", (4,)), ("BatchNorm2d", (4,)), ("Softmax", (1,)),
    ("LogSoftmax", (1,)), ("Flatten", ()), ("Linear", (3, 4)), ("Conv2d", (3, 4, 3)),
    ("MaxPool2d", (2,)), ("LayerNorm", (4,)), ("Embedding", (5, 3)), ("GELU", ()),
    ("LSTM", (3, 4)), ("GroupNorm", (2, 4)), ("ConvTranspose2d", (3, 4, 3)),
    ("CrossEntropyLoss", ()), ("Unflatten", (1, (2, 2))),
])
def test_reprs_are_torchs(name, args):
    assert repr(getattr(nn, name)(*args)) == repr(getattr(torch.nn, name)(*args))


def test_factory_arguments_and_their_absence():
    for make in (lambda **kw: nn.Linear(3, 4, **kw), lambda **kw: nn.BatchNorm2d(4, **kw),
                 lambda **kw: nn.LayerNorm(4, **kw), lambda **kw: nn.Embedding(5, 3, **kw),
                 lambda **kw: nn.GroupNorm(2, 4, **kw), lambda **kw: nn.PReLU(**kw),
                 lambda **kw: nn.MultiheadAttention(8, 2, **kw),
                 lambda **kw: nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, **kw),
                 lambda **kw: nn.Conv1d(2, 3, 3, **kw), lambda **kw: nn.GRU(3, 4, **kw)):
        layer = make(device="cpu", dtype=minidl.float64)
        assert {p.dtype for p in layer.parameters()} == {np.dtype(np.float64)}
        assert {p.dtype for p in make().parameters()} == {np.dtype(np.float32)}
    with pytest.raises(TypeError, match="device"):
        nn.ReLU(device="cpu")  # torch refuses it too: no parameters

    class Mine(nn.Linear):
        def __init__(self):
            super().__init__(3, 4, dtype=minidl.float64)
    assert Mine().weight.dtype == np.float64
    with pytest.raises(TypeError):
        Mine(device="cpu")  # a user's own constructor keeps its own signature


def test_batch_norm_without_bias_matches_torch():
    x = np.random.default_rng(0).standard_normal((4, 3, 5, 5))
    ours, theirs = nn.BatchNorm2d(3, bias=False).double(), torch.nn.BatchNorm2d(3, bias=False).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    xm, xt = minidl.from_numpy(x).requires_grad_(), torch.from_numpy(x).requires_grad_()
    ym, yt = ours(xm), theirs(xt)
    (ym * ym).sum().backward()
    (yt * yt).sum().backward()
    np.testing.assert_allclose(ym.detach().numpy(), yt.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(xm.grad.numpy(), xt.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), atol=1e-10)


def test_dropout_inplace_and_legacy_reductions():
    x = minidl.ones(6, 6)
    minidl.manual_seed(0)
    out = nn.Dropout(0.5, inplace=True)(x)
    assert out is x and set(np.unique(x.numpy())) <= {0.0, 2.0} and x._version == 1
    for legacy, want in (({"size_average": False}, "sum"), ({"reduce": False}, "none"),
                         ({"size_average": True, "reduce": True}, "mean")):
        for cls in ("CrossEntropyLoss", "NLLLoss", "MSELoss", "BCELoss", "BCEWithLogitsLoss",
                    "L1Loss", "SmoothL1Loss"):
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert getattr(torch.nn, cls)(**legacy).reduction == want
            assert getattr(nn, cls)(**legacy).reduction == want, cls


# ---- the functional forms take torch's arguments -------------------------------------------------
NEW_FUNCTIONS = ["conv3d", "conv_transpose3d", "max_pool3d", "avg_pool3d", "adaptive_avg_pool3d",
                 "adaptive_max_pool3d", "dropout3d", "affine_grid", "grid_sample", "ctc_loss",
                 "multi_margin_loss", "multilabel_margin_loss",
                 "triplet_margin_with_distance_loss", "embedding_bag", "rrelu", "lp_pool1d",
                 "lp_pool2d", "lp_pool3d", "max_unpool1d", "max_unpool2d", "max_unpool3d",
                 "channel_shuffle", "max_pool1d_with_indices", "max_pool2d_with_indices",
                 "max_pool3d_with_indices", "adaptive_max_pool1d_with_indices",
                 "adaptive_max_pool2d_with_indices", "adaptive_max_pool3d_with_indices",
                 "upsample", "upsample_nearest", "upsample_bilinear"]


@pytest.mark.parametrize("name", NEW_FUNCTIONS)
def test_new_function_arguments_are_torchs(name):
    import inspect

    try:
        want = list(inspect.signature(getattr(TF, name)).parameters)
    except (TypeError, ValueError):  # a torch builtin without a signature: the name exists
        want = None
    ours = list(inspect.signature(getattr(F, name)).parameters)
    if want is not None and want[-2:] != ["args", "kwargs"]:  # boolean-dispatch wrappers
        assert ours == want
    else:
        assert ours[0] == "input"


# ---- a module's repr with extra_repr and children ------------------------------------------------
def test_module_repr_puts_extra_repr_on_its_own_line_beside_children():
    import minidl.nn.utils.parametrize as MP

    def build(nn, P):
        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(2, 3)

            def extra_repr(self):
                return "scale=2"

        class Multi(nn.Module):
            def extra_repr(self):
                return "a=1\nb=2"

        class Twice(nn.Module):
            def forward(self, x):
                return x * 2

        lin = nn.Linear(3, 3)
        P.register_parametrization(lin, "weight", Twice())
        return [Block(), Multi(), lin, nn.Sequential(nn.Linear(2, 3), nn.ReLU())]

    for m, t in zip(build(minidl.nn, MP), build(torch.nn, torch.nn.utils.parametrize)):
        assert repr(m) == repr(t)
# ---- nn.functional's parameter names in torch's order ------------------------------------------------
def test_functional_signatures_cover_torchs_names_in_torchs_order():
    torch = pytest.importorskip("torch")
    import inspect

    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    for name in ("relu", "sigmoid", "tanh", "leaky_relu", "elu", "silu", "softmax",
                 "log_softmax", "batch_norm", "dropout", "mse_loss", "l1_loss", "smooth_l1_loss",
                 "binary_cross_entropy", "binary_cross_entropy_with_logits"):
        theirs = [p for p, v in inspect.signature(getattr(torch.nn.functional, name))
                  .parameters.items() if v.kind not in skip]
        ours = list(inspect.signature(getattr(nn.functional, name)).parameters)
        assert ours[:len(theirs)] == theirs, name
    for layer in ("CrossEntropyLoss", "NLLLoss", "SyncBatchNorm"):
        assert "input" in inspect.signature(getattr(nn, layer).forward).parameters
