"""Building blocks shared by the zoo's architectures, named as torchvision.ops names them
(so their state_dict keys match): Conv2dNormActivation, SqueezeExcitation, StochasticDepth,
Permute, LayerNorm2d, and torchvision's _make_divisible."""
from __future__ import annotations

from .. import nn
from ..tensor import Tensor

__all__ = ["init_mobile", "make_divisible", "Conv2dNormActivation", "SqueezeExcitation", "stochastic_depth",
           "trunc_normal_far_", "init_inception_style", "BasicConv2d", "transform_input_imagenet",
           "StochasticDepth", "Permute", "LayerNorm2d"]


def make_divisible(v, divisor=8, min_value=None):
    """torchvision's channel rounding: the nearest multiple of ``divisor``, never more than 10%
    below ``v``."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class Conv2dNormActivation(nn.Sequential):
    """Conv2d (no bias when a norm follows), then ``norm_layer(out_channels)`` and
    ``activation_layer()`` where given: keys ``0.weight``, ``1.running_mean``, ..."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=None, groups=1,
                 norm_layer=nn.BatchNorm2d, activation_layer=nn.ReLU, dilation=1, inplace=True,
                 bias=None):
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        if bias is None:
            bias = norm_layer is None
        layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                            dilation=dilation, groups=groups, bias=bias)]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if activation_layer is not None:
            layers.append(activation_layer())  # out of place: autograd keeps its inputs
        super().__init__(*layers)
        self.out_channels = out_channels


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al.): ``x * scale(fc2(act(fc1(avgpool(x)))))`` with 1x1
    convs ``fc1``/``fc2``, as torchvision.ops.SqueezeExcitation."""

    def __init__(self, input_channels, squeeze_channels, activation=nn.ReLU,
                 scale_activation=nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def forward(self, input):
        scale = self.fc2(self.activation(self.fc1(self.avgpool(input))))
        return self.scale_activation(scale) * input


def stochastic_depth(input, p, mode, training=True):
    """torchvision.ops.stochastic_depth: in training, zero each sample's ("row") or the whole
    batch's ("batch") residual branch with probability ``p`` and scale survivors by 1/(1-p)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop probability has to be between 0 and 1, but got {p}")
    if mode not in ("batch", "row"):
        raise ValueError(f"mode has to be either 'batch' or 'row', but got {mode}")
    if not training or p == 0.0:
        return input
    from .. import empty

    survival_rate = 1.0 - p
    size = [input.shape[0]] + [1] * (input.ndim - 1) if mode == "row" else [1] * input.ndim
    noise = empty(*size, dtype=input.dtype, device=input.device).bernoulli_(survival_rate)
    if survival_rate > 0.0:
        noise = noise / survival_rate
    return input * noise


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth(p, mode): ``stochastic_depth`` in train mode, the
    identity in eval mode."""

    def __init__(self, p, mode):
        super().__init__()
        self.p, self.mode = p, mode

    def forward(self, input):
        return stochastic_depth(input, self.p, self.mode, self.training)

    def extra_repr(self):
        return f"p={self.p}, mode={self.mode}"


class Permute(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.dims = list(dims)

    def forward(self, x):
        return x.permute(*self.dims)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (ConvNeXt's)."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def init_mobile(model, linear_init):
    """torchvision's initialisation of its mobile networks (MobileNet, EfficientNet): He-normal
    (fan_out) convs, zero biases, unit norms; ``linear_init(layer)`` sets each Linear's weight
    (their bias is zeroed)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            linear_init(m)
            nn.init.zeros_(m.bias)


def trunc_normal_far_(weight, std, a=-2.0, b=2.0):
    """``nn.init.trunc_normal_(weight, 0, std, a, b)`` for bounds many standard deviations out
    (torchvision's GoogLeNet/Inception: std 0.001-0.1 within +-2, 20 sigma or more): a normal
    draw, clamped for form, has the same distribution to within the chance of a 20-sigma draw,
    at a fraction of inverse-CDF sampling's cost."""
    from .. import no_grad

    if min(-a, b) < 10 * std:
        return nn.init.trunc_normal_(weight, 0.0, std, a, b)
    nn.init.normal_(weight, 0.0, std)
    with no_grad():
        weight.clamp_(a, b)
    return weight


class BasicConv2d(nn.Module):
    """GoogLeNet's and Inception-v3's conv (no bias), BatchNorm(eps=0.001), ReLU: keys
    ``conv.weight``, ``bn.running_mean``, ..."""

    def __init__(self, in_channels, out_channels, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        return self.bn.forward_relu(self.conv(x))  # relu(bn(conv(x))) in one pass


def transform_input_imagenet(x):
    """GoogLeNet's and Inception-v3's ``transform_input``: ImageNet-normalised input -> the
    [-1, 1] scaling their ported (TensorFlow) weights expect, channel by channel."""
    from .. import cat

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return cat([x[:, c].unsqueeze(1) * (std[c] / 0.5) + (mean[c] - 0.5) / 0.5 for c in range(3)], 1)


def aux_head_kwargs(weights, kwargs, default):
    """torchvision's builders of the nets with auxiliary heads (GoogLeNet, Inception v3): with
    ``weights`` the file's aux heads load (``aux_logits=True``, no initialisation,
    ``transform_input`` on unless given), and the builder drops them afterwards unless they
    were asked for. Updates ``kwargs``; returns whether the caller asked for them."""
    asked = kwargs.get("aux_logits", default)
    if weights is not None:
        kwargs.setdefault("transform_input", True)
        kwargs["aux_logits"] = True
        kwargs["init_weights"] = False
    return asked


def init_inception_style(model, std_of):
    """torchvision's initialisation of GoogLeNet and Inception v3: every conv and linear weight
    truncated N(0, std_of(module)) in [-2, 2], every BatchNorm the identity."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            trunc_normal_far_(m.weight, std_of(m))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def check_image(name, x, hint=""):
    """The (N, 3, H, W) check at a model's entrance, its error naming the model; skipped for
    an input that is not a Tensor: minidl.fx's tracer passes a Proxy, whose shape is known only
    when the traced graph runs (torchvision's models have no such check to trace)."""
    if isinstance(x, Tensor) and (x.ndim != 4 or x.shape[1] != 3):
        raise ValueError(f"{name}: expected input (N, 3, H, W){hint}, got shape "
                         f"{tuple(x.shape)}")
