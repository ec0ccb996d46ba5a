"""Stateless ops: ``import minidl.nn.functional as F``."""
from ..functional import (  # noqa: F401
    adaptive_avg_pool2d, add_relu, avg_pool2d, batch_norm, batch_norm_relu, conv2d, cross_entropy,
    dropout, flatten, linear, log_softmax, max_pool2d, mse_loss, nll_loss, relu, sigmoid, softmax, tanh,
)
