"""Stateless ops: ``import minidl.nn.functional as F``."""
from ..functional import (  # noqa: F401
    adaptive_avg_pool2d, add_relu, avg_pool2d, batch_norm, batch_norm_relu, binary_cross_entropy,
    binary_cross_entropy_with_logits, conv2d, cross_entropy, dropout, elu, embedding, flatten,
    gelu, l1_loss, layer_norm, leaky_relu, linear, log_softmax, max_pool2d, mse_loss, nll_loss,
    one_hot, pad, relu, sigmoid, silu, smooth_l1_loss, softmax, tanh,
)
from ._functional.convolution import (  # noqa: F401,F811,E402  (conv2d with groups, dilation, "same")
    conv1d, conv2d, conv_transpose1d, conv_transpose2d, fold, unfold,
)
from ._functional.pooling import (  # noqa: F401,F811,E402  (max/avg pooling with PyTorch's full options)
    adaptive_avg_pool1d, adaptive_avg_pool2d, adaptive_max_pool1d, adaptive_max_pool2d,
    avg_pool1d, avg_pool2d, interpolate, max_pool1d, max_pool2d, pixel_shuffle, pixel_unshuffle,
    upsample,
)
from ._functional.normalization import (  # noqa: F401,E402
    cosine_similarity, group_norm, instance_norm, local_response_norm, normalize,
    pairwise_distance,
)
from ._functional.activations import (  # noqa: F401,E402
    celu, glu, hardshrink, hardsigmoid, hardswish, hardtanh, logsigmoid, mish, prelu, relu6, selu,
    softmin, softplus, softshrink, softsign, tanhshrink, threshold,
)
from ._functional.losses import (  # noqa: F401,E402
    cosine_embedding_loss, gaussian_nll_loss, hinge_embedding_loss, huber_loss, kl_div,
    margin_ranking_loss, multilabel_soft_margin_loss, poisson_nll_loss, soft_margin_loss,
    triplet_margin_loss,
)
from ._functional.dropout import alpha_dropout, dropout1d, dropout2d, feature_alpha_dropout  # noqa: F401,E402
from ._functional.bilinear import bilinear  # noqa: F401,E402
from .attention import multi_head_attention_forward, scaled_dot_product_attention  # noqa: E402,F401
from ._functional.rms_norm import rms_norm  # noqa: F401,E402
from ._functional.extra_activations import (  # noqa: F401,E402
    celu_, elu_, gumbel_softmax, hardtanh_, leaky_relu_, relu_, selu_, threshold_,
)
from ._functional.convolution import conv3d, conv_transpose3d  # noqa: F401,E402
from ._functional.pooling import (  # noqa: F401,E402
    adaptive_avg_pool3d, adaptive_max_pool3d, avg_pool3d, max_pool3d,
)
from ._functional.dropout import dropout3d  # noqa: F401,E402
from ._functional.sampling import affine_grid, grid_sample  # noqa: F401,E402
from ._functional.losses import (  # noqa: F401,E402
    multi_margin_loss, multilabel_margin_loss, triplet_margin_with_distance_loss,
)
from ._functional.ctc import ctc_loss  # noqa: F401,E402
from ._functional.losses import (  # noqa: F401,F811,E402  (torch's legacy and weight arguments)
    binary_cross_entropy, binary_cross_entropy_with_logits, l1_loss, mse_loss, smooth_l1_loss,
)
from ._functional.embedding_bag import embedding_bag  # noqa: F401,E402
from ._functional.activations import rrelu  # noqa: F401,E402
from ._functional.pooling import (  # noqa: F401,E402
    channel_shuffle, lp_pool1d, lp_pool2d, lp_pool3d, max_pool1d_with_indices,
    max_pool2d_with_indices, max_pool3d_with_indices, max_unpool1d, max_unpool2d, max_unpool3d,
    upsample_bilinear, upsample_nearest,
)
from ._functional.activations import rrelu_  # noqa: F401,E402
from ._functional.pooling import (  # noqa: F401,E402
    adaptive_max_pool1d_with_indices, adaptive_max_pool2d_with_indices,
    adaptive_max_pool3d_with_indices,
)
from ..products import pdist  # noqa: F401,E402  (torch.nn.functional.pdist is torch.pdist)
from ._functional.fractional_pooling import (  # noqa: F401,E402
    fractional_max_pool2d, fractional_max_pool2d_with_indices, fractional_max_pool3d,
    fractional_max_pool3d_with_indices,
)
from ._functional.linear_cross_entropy import linear_cross_entropy  # noqa: F401,E402
from ._functional.cross_entropy import cross_entropy, nll_loss  # noqa: F401,F811,E402  (K-dim, probabilities)
from ._functional.conv_tbc import conv_tbc  # noqa: F401,E402
from ._functional.pooling import channel_shuffle as native_channel_shuffle  # noqa: F401,E402
from . import grad  # noqa: F401,E402  (F.grad is torch.nn.grad)
