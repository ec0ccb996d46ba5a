"""numba kernels for the CPU hot loops, by family, plus what they need around them.

- ``tuning``: the process-wide settings minidl changes, applied once by ``configure()`` (called
  here, so on the first CPU op);
- ``launch``: serial or parallel driver, the thresholds between them, the launch lock;
- ``scratch``: the pool of large work buffers, with explicit ownership;
- ``conv``: which convolution algorithm runs (every rule in one place);
- ``conv_im2col``: im2col/col2im, the GEMM layouts, chunked im2col + GEMM inference;
- ``conv_direct``: direct convolution for thin inputs;
- ``conv_winograd``: Winograd F(2x2, 3x3) for inference;
- ``pooling``: max pooling;
- ``activations``: ReLU and softmax cross-entropy;
- ``batchnorm``: batch norm (training passes, and the eval-mode per-channel affine map);
- ``optim``: the SGD update in one pass.

Every kernel is a module-level ``@njit(cache=True)`` function so a second process loads the
machine code from ``__pycache__`` instead of compiling it again; compilation is lazy (on the
first call for each dtype), and this package is only imported by ``backend.kernels`` on the
first op, so ``import minidl`` never pays for numba. Kernels take float32 or float64 (gradient
checks run in float64) and are handed C-contiguous arrays by the Python wrappers; other dtypes
go to the generic kernels. This package is the kernel set ``backend.kernels(numpy)`` returns:
the names below are its interface, the same as ``generic``'s and ``cuda``'s where they overlap.
"""
from .tuning import configure

configure()

from ..generic import out_size  # noqa: E402
from .activations import (  # noqa: E402
    relu_backward, relu_forward, softmax_cross_entropy, softmax_cross_entropy_backward,
)
from .batchnorm import batch_norm_backward, batch_norm_train, channel_affine  # noqa: E402
from .conv import conv2d_algorithm, use_direct_conv, use_winograd  # noqa: E402
from .conv_direct import conv2d_direct, conv2d_direct_wgrad  # noqa: E402
from .conv_im2col import (  # noqa: E402
    bias_grad_nchw, col2im, col2im_t, cols_to_nchw, conv2d_inference, im2col, im2col_t,
    nchw_to_cols,
)
from .conv_winograd import conv2d_winograd  # noqa: E402
from .optim import fused_update_dtypes, sgd_update  # noqa: E402
from .pooling import max_pool2d_backward, max_pool2d_forward  # noqa: E402
from .scratch import pool as scratch_pool  # noqa: E402

__all__ = [
    "configure", "out_size", "scratch_pool", "conv2d_algorithm", "use_direct_conv", "use_winograd",
    "im2col", "col2im", "im2col_t", "col2im_t", "cols_to_nchw", "nchw_to_cols", "bias_grad_nchw",
    "conv2d_inference", "conv2d_direct", "conv2d_direct_wgrad", "conv2d_winograd",
    "max_pool2d_forward", "max_pool2d_backward", "relu_forward", "relu_backward",
    "softmax_cross_entropy", "softmax_cross_entropy_backward", "batch_norm_train",
    "batch_norm_backward", "channel_affine", "sgd_update", "fused_update_dtypes",
]
