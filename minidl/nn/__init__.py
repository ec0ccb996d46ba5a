"""Modules and layers: ``import minidl.nn as nn``."""
from . import functional, grad, init, parallel, utils  # noqa: F401
from .layers import (
    BCELoss, BCEWithLogitsLoss, ELU, GELU, AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d,
    Conv2d, CrossEntropyLoss, Dropout, Embedding, Flatten, Identity, L1Loss, LayerNorm, LeakyReLU,
    Linear, LogSoftmax, MaxPool2d, ModuleDict, ModuleList, MSELoss, NLLLoss, ReLU, Sequential,
    Sigmoid, SiLU, SmoothL1Loss, Softmax, Tanh,
)
from .module import Module, Parameter
from .container import ParameterDict, ParameterList
from .dropout import AlphaDropout, Bilinear, Dropout1d, Dropout2d, FeatureAlphaDropout
from .loss import (
    CosineEmbeddingLoss, GaussianNLLLoss, HingeEmbeddingLoss, HuberLoss, KLDivLoss,
    MarginRankingLoss, MultiLabelSoftMarginLoss, PoissonNLLLoss, SoftMarginLoss,
    TripletMarginLoss,
)
from .activation import (
    CELU, GLU, SELU, Hardshrink, Hardsigmoid, Hardswish, Hardtanh, LogSigmoid, Mish, PReLU,
    ReLU6, Softmax2d, Softmin, Softplus, Softshrink, Softsign, Tanhshrink, Threshold,
)
from .padding import (
    CircularPad1d, CircularPad2d, CircularPad3d, ConstantPad1d, ConstantPad2d, ConstantPad3d,
    ReflectionPad1d, ReflectionPad2d, ReflectionPad3d, ReplicationPad1d, ReplicationPad2d,
    ReplicationPad3d, ZeroPad1d, ZeroPad2d, ZeroPad3d,
)
from .normalization import (
    CosineSimilarity, GroupNorm, InstanceNorm1d, InstanceNorm2d, LocalResponseNorm,
    PairwiseDistance,
)
from .conv import Conv1d, ConvTranspose1d, ConvTranspose2d
from .pooling import (
    AdaptiveAvgPool1d, AdaptiveMaxPool1d, AdaptiveMaxPool2d, AvgPool1d, Fold, MaxPool1d,
    PixelShuffle, PixelUnshuffle, Unflatten, Unfold, Upsample, UpsamplingBilinear2d,
    UpsamplingNearest2d,
)

__all__ = ["Module", "Parameter", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d",
           "AdaptiveAvgPool2d", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "Embedding", "ReLU",
           "LeakyReLU", "ELU", "SiLU", "GELU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax",
           "Flatten", "Identity", "Dropout", "CrossEntropyLoss", "MSELoss", "NLLLoss", "L1Loss",
           "SmoothL1Loss", "BCELoss", "BCEWithLogitsLoss", "Sequential", "ModuleList",
           "ModuleDict", "functional", "init", "parallel"]
__all__ += ["Conv1d", "ConvTranspose1d", "ConvTranspose2d"]
__all__ += ["MaxPool1d", "AvgPool1d", "AdaptiveAvgPool1d", "AdaptiveMaxPool1d",
            "AdaptiveMaxPool2d", "Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d",
            "PixelShuffle", "PixelUnshuffle", "Unflatten", "Unfold", "Fold"]
__all__ += ["GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "LocalResponseNorm",
            "CosineSimilarity", "PairwiseDistance"]
__all__ += ["ReLU6", "Hardtanh", "Softplus", "Softsign", "Mish", "Hardswish", "Hardsigmoid",
            "PReLU", "SELU", "CELU", "GLU", "Tanhshrink", "Threshold", "Softmin", "LogSigmoid",
            "Hardshrink", "Softshrink"]
__all__ += ["KLDivLoss", "HuberLoss", "MarginRankingLoss", "HingeEmbeddingLoss",
            "SoftMarginLoss", "MultiLabelSoftMarginLoss", "CosineEmbeddingLoss",
            "TripletMarginLoss", "PoissonNLLLoss", "GaussianNLLLoss"]
__all__ += ["ParameterList", "ParameterDict", "Dropout1d", "Dropout2d", "AlphaDropout",
            "FeatureAlphaDropout", "Bilinear"]
__all__ += ["Softmax2d", "ZeroPad1d", "ZeroPad2d", "ZeroPad3d", "ConstantPad1d",
            "ConstantPad2d", "ConstantPad3d", "ReflectionPad1d", "ReflectionPad2d",
            "ReflectionPad3d", "ReplicationPad1d", "ReplicationPad2d", "ReplicationPad3d",
            "CircularPad1d", "CircularPad2d", "CircularPad3d"]
from .rnn import GRU, GRUCell, LSTM, LSTMCell, RNN, RNNBase, RNNCell, RNNCellBase  # noqa: E402
from .attention import MultiheadAttention  # noqa: E402
from .transformer import (  # noqa: E402
    Transformer, TransformerDecoder, TransformerDecoderLayer, TransformerEncoder,
    TransformerEncoderLayer,
)

__all__ += ["RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell",
            "MultiheadAttention", "Transformer", "TransformerEncoder", "TransformerDecoder",
            "TransformerEncoderLayer", "TransformerDecoderLayer"]
from .rms_norm import RMSNorm  # noqa: E402
from ._sync_batchnorm import SyncBatchNorm  # noqa: E402

__all__ += ["RMSNorm", "SyncBatchNorm"]

from .layers import BatchNorm3d  # noqa: E402
from .conv import Conv3d, ConvTranspose3d  # noqa: E402
from .pooling import (  # noqa: E402
    AdaptiveAvgPool3d, AdaptiveMaxPool3d, AvgPool3d, MaxPool3d,
)
from .normalization import InstanceNorm3d  # noqa: E402
from .dropout import Dropout3d  # noqa: E402

__all__ += ["BatchNorm3d", "Conv3d", "ConvTranspose3d", "MaxPool3d", "AvgPool3d",
            "AdaptiveAvgPool3d", "AdaptiveMaxPool3d", "InstanceNorm3d", "Dropout3d"]
from .loss import (  # noqa: E402
    CTCLoss, MultiLabelMarginLoss, MultiMarginLoss, TripletMarginWithDistanceLoss,
)

__all__ += ["CTCLoss", "MultiMarginLoss", "MultiLabelMarginLoss", "TripletMarginWithDistanceLoss"]
from .sparse import EmbeddingBag  # noqa: E402
from .activation import RReLU  # noqa: E402
from .pooling import (  # noqa: E402
    ChannelShuffle, LPPool1d, LPPool2d, LPPool3d, MaxUnpool1d, MaxUnpool2d, MaxUnpool3d,
)

__all__ += ["EmbeddingBag", "RReLU", "LPPool1d", "LPPool2d", "LPPool3d", "MaxUnpool1d",
            "MaxUnpool2d", "MaxUnpool3d", "ChannelShuffle"]
from .lazy import (  # noqa: E402
    LazyBatchNorm1d, LazyBatchNorm2d, LazyBatchNorm3d, LazyConv1d, LazyConv2d, LazyConv3d,
    LazyLinear, UninitializedBuffer, UninitializedParameter,
)

__all__ += ["LazyLinear", "LazyConv1d", "LazyConv2d", "LazyConv3d", "LazyBatchNorm1d",
            "LazyBatchNorm2d", "LazyBatchNorm3d", "UninitializedParameter", "UninitializedBuffer"]
from .lazy import (  # noqa: E402
    LazyConvTranspose1d, LazyConvTranspose2d, LazyConvTranspose3d, LazyInstanceNorm1d,
    LazyInstanceNorm2d, LazyInstanceNorm3d,
)

__all__ += ["LazyConvTranspose1d", "LazyConvTranspose2d", "LazyConvTranspose3d",
            "LazyInstanceNorm1d", "LazyInstanceNorm2d", "LazyInstanceNorm3d"]
from .parallel import DataParallel  # noqa: E402  (torch.nn.DataParallel, on one device)

__all__ += ["DataParallel"]
from .pooling import FractionalMaxPool2d, FractionalMaxPool3d  # noqa: E402

__all__ += ["FractionalMaxPool2d", "FractionalMaxPool3d"]
from .adaptive import AdaptiveLogSoftmaxWithLoss  # noqa: E402

__all__ += ["AdaptiveLogSoftmaxWithLoss"]
from .normalization import CrossMapLRN2d  # noqa: E402

__all__ += ["CrossMapLRN2d"]
from .module import Buffer  # noqa: E402

__all__ += ["Buffer"]
from .loss import LinearCrossEntropyLoss  # noqa: E402
from ._functional.linear_cross_entropy import LinearCrossEntropyOptions  # noqa: E402

__all__ += ["LinearCrossEntropyLoss", "LinearCrossEntropyOptions"]
from .loss import NLLLoss2d  # noqa: E402

__all__ += ["NLLLoss2d"]

# torch.nn.parameter, the module users import Parameter and Buffer from
import sys as _sys  # noqa: E402
import types as _types  # noqa: E402

parameter = _types.ModuleType(__name__ + ".parameter", "torch.nn.parameter")
parameter.Parameter, parameter.Buffer = Parameter, Buffer
parameter.UninitializedParameter, parameter.UninitializedBuffer = (UninitializedParameter,
                                                                   UninitializedBuffer)
parameter.__all__ = ["Parameter", "Buffer", "UninitializedParameter", "UninitializedBuffer"]
_sys.modules[parameter.__name__] = parameter
del _sys, _types
from .container import Container  # noqa: E402

__all__ += ["Container"]
from . import modules  # noqa: E402,F401  (torch.nn.modules' file names over these classes)
