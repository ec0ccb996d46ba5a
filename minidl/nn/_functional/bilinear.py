"""bilinear: y = x1^T A x2 + b per output feature, as PyTorch's F.bilinear."""
from __future__ import annotations

from ...functional import _check_dtypes, _float_input
from ...products import counted_as
from ...tensor import Tensor


def _matmul(a, b):
    return a @ b


def bilinear(input1, input2, weight, bias=None):
    """y[..., o] = sum_ij input1[..., i] weight[o, i, j] input2[..., j] + bias[o]; input1
    (*, in1), input2 (*, in2) with the same leading dims, weight (out, in1, in2). Written as
    one GEMM (input1 against weight laid out (in1, out * in2)) and a product summed over j."""
    name = "bilinear"
    for what, t in (("input1", input1), ("input2", input2)):
        _float_input(f"{name}: {what}", t)
    if not isinstance(weight, Tensor) or weight.ndim != 3:
        raise ValueError(f"{name}: weight must be 3-D (out, in1, in2), got "
                         f"{getattr(weight, 'shape', type(weight).__name__)}")
    o, i, j = weight.shape
    if input1.shape[-1:] != (i,) or input2.shape[-1:] != (j,) or \
            input1.shape[:-1] != input2.shape[:-1]:
        raise ValueError(f"{name}: input1 {input1.shape} and input2 {input2.shape} must share "
                         f"their leading dims and end in {i} and {j} features (weight "
                         f"{weight.shape})")
    if bias is not None and tuple(bias.shape) != (o,):
        raise ValueError(f"{name}: bias shape {tuple(bias.shape)} does not match {o} outputs")
    _check_dtypes(name, input1, weight, bias)
    lead = input1.shape[:-1]
    x1, x2 = input1.reshape(-1, i), input2.reshape(-1, j)
    # torch's bilinear (_trilinear) runs no product its FLOP counter counts: nor does this
    u = counted_as(None, False, _matmul, x1, weight.permute(1, 0, 2).reshape(i, o * j))
    u = u.reshape(-1, o, j)
    y = (u * x2.unsqueeze(1)).sum(dim=2)
    if bias is not None:
        y = y + bias
    return y.reshape(*lead, o)
