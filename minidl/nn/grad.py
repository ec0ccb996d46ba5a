"""torch.nn.grad: the gradients of conv1d/2d/3d with respect to their input and their weight,
given the output's gradient (the adjoint convolutions), taken from the convolutions' own
backward through autograd."""
from __future__ import annotations

from ..backend import get_array_module
from ..tensor import Tensor, enable_grad, is_grad_enabled
from ..autograd import grad as _grad
from ._functional import convolution as C


def _backward(conv, x, w, grad_output, wrt, stride, padding, dilation, groups):
    # the result is differentiable (in the other operand and grad_output) where they need it
    graph = is_grad_enabled() and any(t.requires_grad for t in (x, w, grad_output)
                                      if t is not wrt)
    with enable_grad():
        out = conv(x, w, None, stride, padding, dilation, groups)
        if tuple(out.shape) != tuple(grad_output.shape):
            raise ValueError(f"{conv.__name__}: grad_output has shape {tuple(grad_output.shape)}, "
                             f"the convolution's output has {tuple(out.shape)}")
        (g,) = _grad(out, [wrt], grad_output, create_graph=graph)
    return g


def _zeros_like(like, size):
    xp = get_array_module(like.data)
    return Tensor(xp.zeros(tuple(size), dtype=like.data.dtype), requires_grad=True)


def _input_grad(conv, input_size, weight, grad_output, stride, padding, dilation, groups):
    x = _zeros_like(weight, input_size)
    return _backward(conv, x, weight, grad_output, x, stride, padding, dilation, groups)


def _weight_grad(conv, input, weight_size, grad_output, stride, padding, dilation, groups):
    w = _zeros_like(input, weight_size)
    return _backward(conv, input, w, grad_output, w, stride, padding, dilation, groups)


def conv1d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1):
    return _input_grad(C.conv1d, input_size, weight, grad_output, stride, padding, dilation,
                       groups)


def conv1d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1):
    return _weight_grad(C.conv1d, input, weight_size, grad_output, stride, padding, dilation,
                        groups)


def conv2d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1):
    return _input_grad(C.conv2d, input_size, weight, grad_output, stride, padding, dilation,
                       groups)


def conv2d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1):
    return _weight_grad(C.conv2d, input, weight_size, grad_output, stride, padding, dilation,
                        groups)


def conv3d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1):
    return _input_grad(C.conv3d, input_size, weight, grad_output, stride, padding, dilation,
                       groups)


def conv3d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1):
    return _weight_grad(C.conv3d, input, weight_size, grad_output, stride, padding, dilation,
                        groups)
