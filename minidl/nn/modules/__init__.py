"""``minidl.nn.modules``: the layers under torch.nn.modules' file names, so that a script's
``from torch.nn.modules.batchnorm import _BatchNorm``, ``isinstance(m, nn.modules.conv._ConvNd)``
or ``from torch.nn.modules.utils import _pair`` finds the same classes as ``minidl.nn``.

minidl keeps its layers in its own files (layers.py, conv.py, ...); each submodule here is a
name table over them (``minidl.nn.modules.batchnorm.BatchNorm2d is minidl.nn.BatchNorm2d``), made
when this package is imported and registered as a real module, so ``import
minidl.nn.modules.loss`` works too. A name torch has and minidl has not is simply absent
(an ImportError names it), never a stand-in."""
from __future__ import annotations

import collections.abc
import itertools
import sys
import types

from .. import adaptive, conv, dropout, layers, lazy, loss, module, normalization, padding
from .. import pooling, rnn
from ... import nn as _nn

# torch.nn.modules' files and the names each holds, as torch 2.13 has them
_FILES = {
    "module": "Module _IncompatibleKeys register_module_forward_pre_hook "
              "register_module_forward_hook register_module_full_backward_pre_hook "
              "register_module_full_backward_hook register_module_parameter_registration_hook "
              "register_module_buffer_registration_hook "
              "register_module_module_registration_hook",
    "linear": "Bilinear Identity LazyLinear Linear NonDynamicallyQuantizableLinear",
    "conv": "Conv1d Conv2d Conv3d ConvTranspose1d ConvTranspose2d ConvTranspose3d LazyConv1d "
            "LazyConv2d LazyConv3d LazyConvTranspose1d LazyConvTranspose2d LazyConvTranspose3d "
            "_ConvNd _ConvTransposeNd _LazyConvXdMixin",
    "batchnorm": "BatchNorm1d BatchNorm2d BatchNorm3d LazyBatchNorm1d LazyBatchNorm2d "
                 "LazyBatchNorm3d SyncBatchNorm _BatchNorm _LazyNormBase _NormBase",
    "pooling": "AdaptiveAvgPool1d AdaptiveAvgPool2d AdaptiveAvgPool3d AdaptiveMaxPool1d "
               "AdaptiveMaxPool2d AdaptiveMaxPool3d AvgPool1d AvgPool2d AvgPool3d "
               "FractionalMaxPool2d FractionalMaxPool3d LPPool1d LPPool2d LPPool3d MaxPool1d "
               "MaxPool2d MaxPool3d MaxUnpool1d MaxUnpool2d MaxUnpool3d _AdaptiveAvgPoolNd "
               "_AdaptiveMaxPoolNd _AvgPoolNd _LPPoolNd _MaxPoolNd _MaxUnpoolNd",
    "activation": "CELU ELU GELU GLU Hardshrink Hardsigmoid Hardswish Hardtanh LeakyReLU "
                  "LogSigmoid LogSoftmax Mish MultiheadAttention PReLU RReLU ReLU ReLU6 SELU "
                  "SiLU Sigmoid Softmax Softmax2d Softmin Softplus Softshrink Softsign Tanh "
                  "Tanhshrink Threshold",
    "loss": "BCELoss BCEWithLogitsLoss CTCLoss CosineEmbeddingLoss CrossEntropyLoss "
            "GaussianNLLLoss HingeEmbeddingLoss HuberLoss KLDivLoss L1Loss "
            "LinearCrossEntropyLoss MSELoss MarginRankingLoss MultiLabelMarginLoss "
            "MultiLabelSoftMarginLoss MultiMarginLoss NLLLoss NLLLoss2d PoissonNLLLoss "
            "SmoothL1Loss SoftMarginLoss TripletMarginLoss TripletMarginWithDistanceLoss _Loss "
            "_WeightedLoss",
    "container": "Container ModuleDict ModuleList ParameterDict ParameterList Sequential",
    "dropout": "AlphaDropout Dropout Dropout1d Dropout2d Dropout3d FeatureAlphaDropout "
               "_DropoutNd",
    "normalization": "CrossMapLRN2d GroupNorm LayerNorm LocalResponseNorm RMSNorm",
    "rnn": "GRU GRUCell LSTM LSTMCell RNN RNNBase RNNCell RNNCellBase",
    "transformer": "Transformer TransformerDecoder TransformerDecoderLayer TransformerEncoder "
                   "TransformerEncoderLayer",
    "sparse": "Embedding EmbeddingBag",
    "padding": "CircularPad1d CircularPad2d CircularPad3d ConstantPad1d ConstantPad2d "
               "ConstantPad3d ReflectionPad1d ReflectionPad2d ReflectionPad3d ReplicationPad1d "
               "ReplicationPad2d ReplicationPad3d ZeroPad1d ZeroPad2d ZeroPad3d _CircularPadNd "
               "_ConstantPadNd _ReflectionPadNd _ReplicationPadNd",
    "lazy": "LazyModuleMixin",
    "flatten": "Flatten Unflatten",
    "pixelshuffle": "PixelShuffle PixelUnshuffle",
    "upsampling": "Upsample UpsamplingBilinear2d UpsamplingNearest2d",
    "distance": "CosineSimilarity PairwiseDistance",
    "instancenorm": "InstanceNorm1d InstanceNorm2d InstanceNorm3d LazyInstanceNorm1d "
                    "LazyInstanceNorm2d LazyInstanceNorm3d _InstanceNorm",
    "adaptive": "AdaptiveLogSoftmaxWithLoss _ASMoutput",
    "channelshuffle": "ChannelShuffle",
    "fold": "Fold Unfold",
}

# torch's name -> minidl's, where minidl's own class plays that part under another name
_RENAMED = {"_IncompatibleKeys": "IncompatibleKeys", "_LazyNormBase": "_LazyBatchNormMixin"}

_SOURCES = (_nn, layers, conv, pooling, padding, dropout, loss, normalization, lazy, rnn,
            adaptive, module)


def _find(name):
    for source in _SOURCES:
        found = getattr(source, _RENAMED.get(name, name), None)
        if found is not None:
            return found
    return None


# ---- torch.nn.modules.utils: the argument normalisers scripts import ---------------------------
def _ntuple(n, name="parse"):
    def parse(x):
        if isinstance(x, collections.abc.Iterable) and not isinstance(x, str):
            return tuple(x)
        return tuple(itertools.repeat(x, n))

    parse.__name__ = name
    return parse


_single, _pair, _triple, _quadruple = (_ntuple(1, "_single"), _ntuple(2, "_pair"),
                                       _ntuple(3, "_triple"), _ntuple(4, "_quadruple"))


def _reverse_repeat_tuple(t, n):
    """(a, b) -> (b, b, a, a) for n = 2: a conv's padding in F.pad's last-dim-first order."""
    return tuple(x for x in reversed(t) for _ in range(n))


def _list_with_default(out_size, defaults):
    """An adaptive pool's output size with None entries filled from the input's sizes."""
    if isinstance(out_size, int):
        return out_size
    if len(defaults) <= len(out_size):
        raise ValueError(f"Input dimension should be at least {len(out_size) + 1}")
    return [v if v is not None else d for v, d in zip(out_size, defaults[-len(out_size):])]


def _addindent(s_, num_spaces):
    """Indent every line but the first by ``num_spaces`` (Module.__repr__'s helper)."""
    lines = s_.split("\n")
    if len(lines) == 1:
        return s_
    return lines[0] + "\n" + "\n".join(num_spaces * " " + line for line in lines[1:])


_UTILS = {"_ntuple": _ntuple, "_single": _single, "_pair": _pair, "_triple": _triple,
          "_quadruple": _quadruple, "_reverse_repeat_tuple": _reverse_repeat_tuple,
          "_list_with_default": _list_with_default}


def _make(file, names):
    mod = types.ModuleType(f"{__name__}.{file}",
                           f"torch.nn.modules.{file}'s names, over minidl.nn's classes.")
    exported = []
    for name in names.split():
        found = _find(name)
        if found is not None:
            setattr(mod, name, found)
            exported.append(name)
    mod.__all__ = [n for n in exported if not n.startswith("_")]
    return mod


for _file, _names in _FILES.items():
    _mod = _make(_file, _names)
    if _file == "module":
        _mod._addindent = _addindent
    sys.modules[_mod.__name__] = _mod
    globals()[_file] = _mod
    globals().update({n: getattr(_mod, n) for n in _mod.__all__})

utils = types.ModuleType(f"{__name__}.utils", "torch.nn.modules.utils' argument normalisers.")
for _name, _value in _UTILS.items():
    setattr(utils, _name, _value)
sys.modules[utils.__name__] = utils

del _file, _names, _mod, _name, _value
