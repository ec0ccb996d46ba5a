"""The torch namespace's names beyond the tensor ops: its constants, the functional forms it
has at top level (torch.conv2d, torch.dropout, torch.layer_norm, ...) as thin calls of
minidl.nn.functional with torch's top-level signatures (which differ from F's in places:
``torch.dropout(input, p, train)``, ``torch.embedding(weight, indices)``, losses taking
``reduction`` as an int, 0 none, 1 mean, 2 sum), the in-place functions (torch.relu_(x),
torch.exp_(x): the Tensor method), grad-mode and autocast queries, and a few creation
functions (range, scalar_tensor, asarray, frombuffer, empty_strided).

This sits above nn (minidl/__init__.py imports it last); the Tensor methods it adds
(hardshrink, prelu, as_strided, put_, resize_, apply_, ...) are set on Tensor here."""
from __future__ import annotations

import builtins
import math
import warnings

import numpy as np

from . import amp as _amp
from . import autograd as _autograd
from .backend import device_of, get_array_module
from .backend.dtypes import as_dtype, default_float
from .nn import functional as F
from .tensor import Function, Tensor, _inplace_by, bump_version

pi, e, inf, nan = math.pi, math.e, math.inf, math.nan
newaxis = None

_REDUCTIONS = {0: "none", 1: "mean", 2: "sum"}


def _reduction(name, r):
    if isinstance(r, str):
        return r
    if isinstance(r, bool) or r not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be 0 (none), 1 (mean) or 2 (sum), got {r!r}")
    return _REDUCTIONS[r]


def _ints(v):
    """torch's int[N] arguments take one int, or a list of one, for all N dims."""
    return v[0] if isinstance(v, (tuple, list)) and len(v) == 1 else v


def _stride(stride):
    """torch's top-level pooling takes stride=[] (empty) for 'the kernel size'."""
    if stride is None or (isinstance(stride, (tuple, list)) and not stride):
        return None
    return _ints(stride)


# ---- convolutions, pooling, resampling ------------------------------------------------------
conv1d, conv2d, conv3d = F.conv1d, F.conv2d, F.conv3d
conv_transpose1d, conv_transpose2d, conv_transpose3d = (
    F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)


def convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding,
                groups):
    """torch.convolution: conv1d/2d/3d or conv_transpose1d/2d/3d, by weight's dims."""
    dims = weight.ndim - 2
    if dims not in (1, 2, 3):
        raise ValueError(f"convolution: weight must be 3-D, 4-D or 5-D, got shape "
                         f"{tuple(weight.shape)}")
    if transposed:
        fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[dims - 1]
        return fn(input, weight, bias, stride, padding, output_padding, groups, dilation)
    fn = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
    return fn(input, weight, bias, stride, padding, dilation, groups)


def max_pool1d(input, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    return F.max_pool1d(input, _ints(kernel_size), _stride(stride), _ints(padding), _ints(dilation),
                        ceil_mode)


def max_pool2d(input, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    return F.max_pool2d(input, _ints(kernel_size), _stride(stride), _ints(padding), _ints(dilation),
                        ceil_mode)


def max_pool3d(input, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    return F.max_pool3d(input, _ints(kernel_size), _stride(stride), _ints(padding), _ints(dilation),
                        ceil_mode)


def max_pool1d_with_indices(input, kernel_size, stride=(), padding=0, dilation=1,
                            ceil_mode=False):
    return F.max_pool1d(input, _ints(kernel_size), _stride(stride), _ints(padding),
                        _ints(dilation), ceil_mode, return_indices=True)


def avg_pool1d(input, kernel_size, stride=(), padding=0, ceil_mode=False,
               count_include_pad=True):
    return F.avg_pool1d(input, _ints(kernel_size), _stride(stride), _ints(padding), ceil_mode,
                        count_include_pad)


adaptive_avg_pool1d = F.adaptive_avg_pool1d


def adaptive_max_pool1d(input, output_size):
    """torch.adaptive_max_pool1d: (values, indices), always."""
    return F.adaptive_max_pool1d(input, output_size, return_indices=True)


pixel_shuffle, pixel_unshuffle = F.pixel_shuffle, F.pixel_unshuffle
channel_shuffle = native_channel_shuffle = F.channel_shuffle

_GRID_MODES = ("bilinear", "nearest", "bicubic")
_GRID_PADDING = ("zeros", "border", "reflection")


def grid_sampler(input, grid, interpolation_mode, padding_mode, align_corners):
    """torch.grid_sampler: F.grid_sample with the modes as ints (interpolation 0 bilinear,
    1 nearest, 2 bicubic; padding 0 zeros, 1 border, 2 reflection)."""
    if interpolation_mode not in (0, 1, 2) or padding_mode not in (0, 1, 2):
        raise ValueError(f"grid_sampler: interpolation_mode and padding_mode must be 0, 1 or 2, "
                         f"got {interpolation_mode!r} and {padding_mode!r}")
    return F.grid_sample(input, grid, _GRID_MODES[interpolation_mode],
                         _GRID_PADDING[padding_mode], bool(align_corners))


def affine_grid_generator(theta, size, align_corners):
    return F.affine_grid(theta, list(size), bool(align_corners))


def constant_pad_nd(input, pad, value=0):
    return F.pad(input, tuple(pad), value=value)


# ---- dropout ----------------------------------------------------------------------------------
def dropout(input, p, train):
    return F.dropout(input, p, train)


def dropout_(input, p, train):
    return F.dropout(input, p, train, inplace=True)


def alpha_dropout(input, p, train):
    return F.alpha_dropout(input, p, train)


def alpha_dropout_(input, p, train):
    return F.alpha_dropout(input, p, train, inplace=True)


def feature_alpha_dropout(input, p, train):
    return F.feature_alpha_dropout(input, p, train)


def feature_alpha_dropout_(input, p, train):
    return F.feature_alpha_dropout(input, p, train, inplace=True)


# ---- normalization --------------------------------------------------------------------------
def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    return F.layer_norm(input, normalized_shape, weight, bias, eps)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
    return F.group_norm(input, num_groups, weight, bias, eps)


def batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps,
               cudnn_enabled):
    """torch.batch_norm: F.batch_norm's arguments in ATen's order (weight and bias first)."""
    return F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum,
                        eps)


def instance_norm(input, weight, bias, running_mean, running_var, use_input_stats, momentum,
                  eps, cudnn_enabled):
    return F.instance_norm(input, running_mean, running_var, weight, bias, use_input_stats,
                           momentum, eps)


rms_norm = F.rms_norm


# ---- embedding, activations, similarity ----------------------------------------------------
def embedding(weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    """torch.embedding: weight first; a negative padding_idx means none."""
    return F.embedding(indices, weight, None if padding_idx < 0 else padding_idx,
                       scale_grad_by_freq=scale_grad_by_freq, sparse=sparse)


_BAG_MODES = ("sum", "mean", "max")


def embedding_bag(weight, indices, offsets, scale_grad_by_freq=False, mode=0, sparse=False,
                  per_sample_weights=None, include_last_offset=False, padding_idx=None):
    """torch.embedding_bag: (output, offset2bag, bag_size, max_indices), mode 0 sum, 1 mean,
    2 max; output is F.embedding_bag's. The other three are what torch's CPU kernel returns:
    each index's bag (empty for sum), each bag's size (zeros for sum) and, for max, the row
    that won each feature (for mean, the bag sizes again; for sum, zeros)."""
    if mode not in (0, 1, 2):
        raise ValueError(f"embedding_bag: mode must be 0 (sum), 1 (mean) or 2 (max), got {mode!r}")
    if padding_idx is not None and padding_idx < 0:
        padding_idx = None if padding_idx == -1 else padding_idx
    out = F.embedding_bag(indices, weight, offsets, None, 2, scale_grad_by_freq,
                          _BAG_MODES[mode], sparse, per_sample_weights, include_last_offset,
                          padding_idx)
    idx = np.asarray(indices.numpy()).reshape(-1)
    off = np.asarray(offsets.numpy()).reshape(-1).astype(np.int64)
    bags = off.size - 1 if include_last_offset else off.size
    ends = np.append(off[1:], idx.size)[:bags] if not include_last_offset else off[1:bags + 1]
    starts = off[:bags]
    owner = np.zeros(idx.size, dtype=np.int64)
    sizes = np.zeros(bags, dtype=np.int64)
    for b, (a, z) in enumerate(zip(starts, ends)):
        owner[a:z] = b
        keep = idx[a:z] if padding_idx is None else idx[a:z][idx[a:z] != padding_idx]
        sizes[b] = keep.size
    dev = device_of(weight.data)
    from .backend import to_device

    def t(a):
        return Tensor(to_device(a, dev))
    if mode == 0:  # torch's vary with its kernel's path; these are its float64 ones
        zeros = np.zeros(off.size, dtype=np.int64)
        return out, t(owner), t(zeros), t(zeros.copy())
    if mode == 1:
        return out, t(owner), t(sizes), t(sizes.copy())
    w = np.asarray(weight.numpy())
    winners = np.zeros((bags, w.shape[1]), dtype=np.int64)
    for b, (a, z) in enumerate(zip(starts, ends)):
        rows = idx[a:z] if padding_idx is None else idx[a:z][idx[a:z] != padding_idx]
        if rows.size:
            winners[b] = rows[np.argmax(w[rows], axis=0)]
    return out, t(owner), t(sizes), t(winners)


def prelu(input, weight):
    return F.prelu(input, weight)


def _no_generator(name, generator):
    if generator is not None:
        raise ValueError(f"{name}: generator= is not supported here (rrelu draws from "
                         "minidl's seeded generator; use minidl.manual_seed)")


def rrelu(input, lower=1.0 / 8, upper=1.0 / 3, training=False, generator=None):
    _no_generator("rrelu", generator)
    return F.rrelu(input, lower, upper, training)


def rrelu_(input, lower=1.0 / 8, upper=1.0 / 3, training=False, generator=None):
    _no_generator("rrelu_", generator)
    return F.rrelu_(input, lower, upper, training)


def selu(input):
    return F.selu(input)


def celu(input, alpha=1.0):
    return F.celu(input, alpha)


def hardshrink(input, lambd=0.5):
    return F.hardshrink(input, lambd)


def threshold(input, threshold, value):
    return F.threshold(input, threshold, value)


relu_, selu_, celu_, threshold_ = F.relu_, F.selu_, F.celu_, F.threshold_
bilinear = F.bilinear
cosine_similarity, pairwise_distance = F.cosine_similarity, F.pairwise_distance


# ---- losses (reduction as an int) -------------------------------------------------------
# Where reduction has a default, torch 2.13's top-level binding behaves as if it were 0 (no
# reduction), whatever ATen's schema says (Mean): these follow what torch does.
def kl_div(input, target, reduction=0, *, log_target=False):
    r = _reduction("kl_div", reduction)
    with warnings.catch_warnings():  # F.kl_div's advice to use batchmean is F's, not torch's
        warnings.simplefilter("ignore", UserWarning)
        return F.kl_div(input, target, reduction=r, log_target=log_target)


def poisson_nll_loss(input, target, log_input, full, eps, reduction):
    return F.poisson_nll_loss(input, target, log_input, full, eps=eps,
                              reduction=_reduction("poisson_nll_loss", reduction))


def margin_ranking_loss(input1, input2, target, margin=0.0, reduction=0):
    return F.margin_ranking_loss(input1, input2, target, margin,
                                 reduction=_reduction("margin_ranking_loss", reduction))


def hinge_embedding_loss(input, target, margin=1.0, reduction=0):
    return F.hinge_embedding_loss(input, target, margin,
                                  reduction=_reduction("hinge_embedding_loss", reduction))


def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2.0, eps=1e-6, swap=False,
                        reduction=0):
    return F.triplet_margin_loss(anchor, positive, negative, margin, p, eps, swap,
                                 reduction=_reduction("triplet_margin_loss", reduction))


def cosine_embedding_loss(input1, input2, target, margin=0.0, reduction=0):
    return F.cosine_embedding_loss(input1, input2, target, margin,
                                   reduction=_reduction("cosine_embedding_loss", reduction))


def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction=0,
             zero_infinity=False):
    return F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank,
                      _reduction("ctc_loss", reduction), zero_infinity)


def binary_cross_entropy_with_logits(input, target, weight=None, pos_weight=None, reduction=0):
    return F.binary_cross_entropy_with_logits(
        input, target, weight, reduction=_reduction("binary_cross_entropy_with_logits",
                                                    reduction), pos_weight=pos_weight)


# ---- the in-place functions: torch.exp_(x) is x.exp_() ----------------------------------------
INPLACE_FUNCTIONS = (
    "abs_", "acos_", "acosh_", "arccos_", "arccosh_", "arcsin_", "arcsinh_", "arctan_",
    "arctanh_", "asin_", "asinh_", "atan_", "atanh_", "ceil_", "clamp_", "clamp_max_",
    "clamp_min_", "clip_", "cos_", "cosh_", "deg2rad_", "detach_", "erf_", "erfc_", "exp2_",
    "exp_", "expm1_", "fill_", "fix_", "floor_", "frac_", "gcd_", "i0_", "index_put_", "lcm_",
    "ldexp_", "log10_", "log1p_", "log2_", "log_", "logit_", "nan_to_num_", "neg_", "negative_",
    "rad2deg_", "reciprocal_", "round_", "rsqrt_", "sigmoid_", "sin_", "sinc_", "sinh_",
    "sqrt_", "square_", "tan_", "tanh_", "trunc_", "xlogy_", "zero_", "addmv_", "resize_as_",
)


def _method_function(name):
    def fn(input, *args, **kwargs):
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}(): argument 'input' must be Tensor, not "
                            f"{type(input).__name__}")
        return getattr(input, name)(*args, **kwargs)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"``minidl.{name}(x, ...)``: ``x.{name}(...)``."
    return fn


# ---- RNN cells from their weights: torch.gru_cell(input, hx, w_ih, w_hh, b_ih, b_hh) --------
def _cell(mode, name, input, states, w_ih, w_hh, b_ih, b_hh):
    from .nn.rnn import RNNCellBase

    # RNNCellBase's own step, run on these weights (a stand-in for the cell module)
    cell = type(name, (), {})()
    cell.mode, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh = (
        mode, w_ih, w_hh, b_ih, b_hh)
    cell.input_size, cell.hidden_size = w_ih.shape[1], w_hh.shape[1]
    return RNNCellBase._step(cell, input, states)


def rnn_tanh_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    return _cell("RNN_TANH", "rnn_tanh_cell", input, [hx], w_ih, w_hh, b_ih, b_hh)


def rnn_relu_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    return _cell("RNN_RELU", "rnn_relu_cell", input, [hx], w_ih, w_hh, b_ih, b_hh)


def gru_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    return _cell("GRU", "gru_cell", input, [hx], w_ih, w_hh, b_ih, b_hh)


def lstm_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """(h, c) after one LSTM step from hx = (h_0, c_0)."""
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(f"lstm_cell: hx must be a pair (h_0, c_0), got {type(hx).__name__}")
    return _cell("LSTM", "lstm_cell", input, list(hx), w_ih, w_hh, b_ih, b_hh)


# ---- the *_copy forms of view ops (torch's functionalization names): a copy of the view ----
def _copy_form(method):
    def fn(input, *args, **kwargs):
        out = getattr(input, method)(*args, **kwargs)
        if isinstance(out, (tuple, list)):
            return type(out)(o.clone() for o in out)
        return out.clone()
    fn.__name__ = fn.__qualname__ = method + "_copy"
    fn.__doc__ = f"``x.{method}(...)`` as a new tensor (not a view)."
    return fn


COPY_FORMS = ("detach", "diagonal", "expand", "permute", "select", "split", "split_with_sizes",
              "squeeze", "t", "transpose", "unbind", "unfold", "unsqueeze", "view")


def alias_copy(input):
    return input.clone()


def as_strided_copy(input, size, stride, storage_offset=None):
    return as_strided(input, size, stride, storage_offset).clone()


def slice_copy(input, dim=0, start=None, end=None, step=1):
    index = [slice(None)] * input.ndim
    index[dim] = slice(start, end, step)
    return input[tuple(index)].clone()


def unsafe_chunk(input, chunks, dim=0):
    return _unchecked_views(input.chunk(chunks, dim))


def unsafe_split(input, split_size, dim=0):
    return _unchecked_views(input.split(split_size, dim))


def unsafe_split_with_sizes(input, split_sizes, dim=0):
    return _unchecked_views(input.split(list(split_sizes), dim))


# ---- more of torch's functions ------------------------------------------------------------
conv_tbc = F.conv_tbc


def nonzero_static(input, *, size, fill_value=-1):
    """The indices of the non-zero elements as a (size, ndim) tensor: the first ``size`` of
    them, rows of ``fill_value`` after the last."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise RuntimeError(f"nonzero_static: 'size' must be an non-negative integer, got {size!r}")
    found = input.nonzero()
    xp = get_array_module(found.data)
    out = xp.full((size, input.ndim), fill_value, dtype=np.int64)
    k = min(size, found.shape[0])
    out[:k] = found.data[:k]
    return Tensor(out)


def empty_permuted(size, physical_layout, *, dtype=None, layout=None, device=None,
                   requires_grad=False, pin_memory=False):
    """An uninitialised tensor of ``size`` whose memory is laid out in the order of dims
    ``physical_layout`` (outermost first)."""
    size, order = tuple(int(n) for n in size), tuple(int(d) for d in physical_layout)
    if sorted(order) != list(builtins.range(len(size))):
        raise RuntimeError(f"empty_permuted: physical_layout {list(order)} must be a permutation "
                           f"of the {len(size)} dims")
    dt = as_dtype(dtype) if dtype is not None else default_float()
    from .backend import to_device

    buf = to_device(np.empty(tuple(size[d] for d in order), dtype=dt), device or "cpu")
    return Tensor(buf.transpose(np.argsort(order)), requires_grad=requires_grad)


def histogram(input, bins=100, *, range=None, weight=None, density=False):
    """(hist, bin_edges) of input's values (NumPy's histogram: ``bins`` equal bins over
    ``range`` or [min, max], or the given increasing edges); the last bin includes its right
    edge. Not differentiable, as torch's."""
    from collections import namedtuple

    if device_of(input.data) != "cpu":
        raise RuntimeError("histogram is only implemented on CPU tensors")
    edges = bins.data if isinstance(bins, Tensor) else bins
    w = None if weight is None else np.asarray(weight.data).reshape(-1)
    hist, edges = np.histogram(np.asarray(input.data).reshape(-1), bins=edges, range=range,
                               weights=w, density=density)
    dt = input.data.dtype
    out = namedtuple("histogram", ["hist", "bin_edges"])
    return out(Tensor(hist.astype(dt)), Tensor(edges.astype(dt)))


def histogramdd(input, bins=10, *, range=None, weight=None, density=False):
    """(hist, bin_edges): the D-dimensional histogram of the rows of ``input`` (..., D)."""
    from collections import namedtuple

    if device_of(input.data) != "cpu":
        raise RuntimeError("histogramdd is only implemented on CPU tensors")
    pts = np.asarray(input.data)
    pts = pts.reshape(-1, pts.shape[-1])
    if isinstance(bins, (list, tuple)) and bins and isinstance(bins[0], Tensor):
        bins = [np.asarray(b.data) for b in bins]
    if range is not None:
        range = [tuple(range[2 * d:2 * d + 2]) for d in builtins.range(pts.shape[1])]
    w = None if weight is None else np.asarray(weight.data).reshape(-1)
    hist, edges = np.histogramdd(pts, bins=bins, range=range, weights=w, density=density)
    dt = input.data.dtype
    out = namedtuple("histogramdd", ["hist", "bin_edges"])
    return out(Tensor(hist.astype(dt)), [Tensor(e.astype(dt)) for e in edges])


def _gradient_along(f, d, h, edge_order):
    """numpy.gradient's second-order central differences along dim d of f (a Tensor), with
    spacing h: a number or the (n,) coordinates as an array; linear in f, so differentiable."""
    n = f.shape[d]
    if n < edge_order + 1:
        raise RuntimeError(f"torch.gradient expected each dimension size to be at least "
                           f"edge_order+1, got {n} along dim {d}")

    def part(a, b):
        index = [slice(None)] * f.ndim
        index[d] = slice(a, b)
        return f[tuple(index)]

    def along(v):  # coefficients shaped to broadcast along dim d
        shape = [1] * f.ndim
        shape[d] = -1
        return Tensor(np.asarray(v, dtype=f.data.dtype).reshape(shape))

    if np.ndim(h) == 0:
        dx = np.full(n - 1, float(h))
    else:
        dx = np.diff(np.asarray(h, dtype=np.float64))
    dx1, dx2 = dx[:-1], dx[1:]
    a = -dx2 / (dx1 * (dx1 + dx2))
    b = (dx2 - dx1) / (dx1 * dx2)
    c = dx1 / (dx2 * (dx1 + dx2))
    inner = part(0, n - 2) * along(a) + part(1, n - 1) * along(b) + part(2, n) * along(c)
    if edge_order == 1:
        first = (part(1, 2) - part(0, 1)) * (1.0 / dx[0])
        last = (part(n - 1, n) - part(n - 2, n - 1)) * (1.0 / dx[-1])
    else:
        d1, d2 = dx[0], dx[1]
        first = (part(0, 1) * (-(2 * d1 + d2) / (d1 * (d1 + d2)))
                 + part(1, 2) * ((d1 + d2) / (d1 * d2)) + part(2, 3) * (-d1 / (d2 * (d1 + d2))))
        d1, d2 = dx[-2], dx[-1]
        last = (part(n - 3, n - 2) * (d2 / (d1 * (d1 + d2)))
                + part(n - 2, n - 1) * (-(d2 + d1) / (d1 * d2))
                + part(n - 1, n) * ((2 * d2 + d1) / (d2 * (d1 + d2))))
    from .ops import cat

    return cat([first, inner, last], d)


def gradient(input, *, spacing=1, dim=None, edge_order=1):
    """torch.gradient: the derivative estimate of input along each of ``dim`` (all dims by
    default), by central differences inside and one-sided ones (order ``edge_order``, 1 or 2)
    at the ends; ``spacing`` a number, one number per dim, or each dim's coordinates."""
    if edge_order not in (1, 2):
        raise RuntimeError(f"torch.gradient only supports edge_order=1 and edge_order=2, got "
                           f"{edge_order}")
    if dim is None:
        dims = list(builtins.range(input.ndim))
    elif isinstance(dim, int):
        dims = [dim]
    else:
        dims = list(dim)
    dims = [d % input.ndim for d in dims]
    if isinstance(spacing, (list, tuple)):
        if len(spacing) != len(dims):
            raise RuntimeError(f"torch.gradient expected spacing to be unspecified, a scalar or "
                               f"it's spacing and dim arguments to have the same length, but got "
                               f"a spacing argument of length {len(spacing)} and a dim argument "
                               f"of length {len(dims)}.")
        hs = [np.asarray(h.data) if isinstance(h, Tensor) else h for h in spacing]
    else:
        hs = [spacing.item() if isinstance(spacing, Tensor) else spacing] * len(dims)
    if not is_floating_dtype(input):
        input = input.to(dtype=default_float())
    return tuple(_gradient_along(input, d, h, edge_order) for d, h in zip(dims, hs))


def is_floating_dtype(t):
    from .backend.dtypes import is_floating

    return is_floating(t.data.dtype)


def cond(pred, true_fn, false_fn, operands=()):
    """torch.cond, run eagerly: true_fn(*operands) if pred else false_fn(*operands)."""
    if isinstance(pred, Tensor):
        if pred.numel() != 1:
            raise RuntimeError(f"cond: expected pred to be a bool or a one-element tensor, got "
                               f"shape {tuple(pred.shape)}")
        pred = bool(pred.item())
    return (true_fn if pred else false_fn)(*operands)


def while_loop(cond_fn, body_fn, carried_inputs):
    """torch.while_loop, run eagerly: carried_inputs = body_fn(*carried_inputs) while
    cond_fn(*carried_inputs)."""
    carried = tuple(carried_inputs)
    while bool(cond_fn(*carried)):
        out = body_fn(*carried)
        carried = tuple(out) if isinstance(out, (tuple, list)) else (out,)
    return carried


_DEBUG_MODES = {"default": 0, "warn": 1, "error": 2}


def set_deterministic_debug_mode(debug_mode):
    """0/"default": deterministic algorithms off; 1/"warn": on, warning only; 2/"error": on."""
    from .runtime import use_deterministic_algorithms

    mode = _DEBUG_MODES.get(debug_mode, debug_mode) if isinstance(debug_mode, str) else \
        debug_mode
    if mode not in (0, 1, 2):
        raise RuntimeError(f"invalid value of debug_mode, expected one of default, warn, error, "
                           f"but got {debug_mode}")
    use_deterministic_algorithms(mode > 0, warn_only=mode == 1)


def get_deterministic_debug_mode():
    from .runtime import (are_deterministic_algorithms_enabled,
                          is_deterministic_algorithms_warn_only_enabled)

    if not are_deterministic_algorithms_enabled():
        return 0
    return 1 if is_deterministic_algorithms_warn_only_enabled() else 2


_TYPE_NAMES = {"float32": "FloatTensor", "float64": "DoubleTensor", "float16": "HalfTensor",
               "bfloat16": "BFloat16Tensor", "int64": "LongTensor", "int32": "IntTensor",
               "int16": "ShortTensor", "int8": "CharTensor", "uint8": "ByteTensor",
               "bool": "BoolTensor"}


def typename(obj):
    """torch.typename: 'torch.FloatTensor' for a float32 tensor (torch.cuda.* on the GPU),
    else the object's module-qualified class name."""
    if isinstance(obj, Tensor):
        prefix = "torch.cuda." if device_of(obj.data) == "cuda" else "torch."
        return prefix + _TYPE_NAMES.get(str(obj.data.dtype), "Tensor")
    module = type(obj).__module__
    if module in ("builtins", "__builtin__", None):
        return type(obj).__qualname__
    return f"{module}.{type(obj).__qualname__}"


def is_storage(obj):
    """False: minidl has no storage objects (a tensor's memory is its array)."""
    return False


def init_num_threads():
    """Nothing to do: minidl's thread pools start when first used."""


# ---- ATen's native forms ------------------------------------------------------------------
def native_layer_norm(input, normalized_shape, weight, bias, eps):
    """(layer_norm(...), mean, rstd): the statistics over the normalized dims, kept as size-1
    dims (not differentiable outputs, as torch's)."""
    dims = len(tuple(normalized_shape))
    out = F.layer_norm(input, normalized_shape, weight, bias, eps)
    xp = get_array_module(input.data)
    axes = tuple(builtins.range(input.ndim - dims, input.ndim))
    x = input.data.astype(np.float64 if input.data.dtype == np.float64 else np.float32)
    mean = x.mean(axis=axes, keepdims=True)
    rstd = 1.0 / xp.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + eps)
    return out, Tensor(mean.astype(input.data.dtype)), Tensor(rstd.astype(input.data.dtype))


def native_dropout(input, p, train):
    """(output, mask): dropout's output and the bool mask of the kept elements (all True when
    not training)."""
    from .backend import generator_rng

    xp = get_array_module(input.data)
    if not train or p == 0:
        return input.clone(), Tensor(xp.ones(input.shape, dtype=bool))
    if p == 1:
        return input * 0.0, Tensor(xp.zeros(input.shape, dtype=bool))
    if xp is np:  # torch's bernoulli_(1 - p) draws
        from .backend import default_generator, torch_random

        keep = torch_random.bernoulli(default_generator, tuple(input.shape), 1 - p)
    else:
        keep = generator_rng(None, device_of(input.data), "native_dropout").random(
            tuple(input.shape)) >= p
    scale = Tensor(xp.asarray(keep, dtype=input.data.dtype) * (1.0 / (1.0 - p)))
    return input * scale, Tensor(xp.asarray(keep))


def norm_except_dim(v, pow=2, dim=0):
    """The p-norm of v over every dim but ``dim``, shaped to broadcast against v (weight
    norm's g); ``dim=-1``: the norm of all of v."""
    if dim == -1:
        return v.norm(pow)
    d = dim % v.ndim
    axes = [a for a in builtins.range(v.ndim) if a != d]
    return v.abs().pow(pow).sum(dim=axes, keepdim=True).pow(1.0 / pow)


# ---- creation, arithmetic -----------------------------------------------------------------
def rsub(input, other, *, alpha=1):
    """other - alpha * input (torch.rsub)."""
    return other - (input * alpha if alpha != 1 else input)


def scalar_tensor(s, *, dtype=None, layout=None, device=None, pin_memory=None,
                  requires_grad=False):
    """A 0-d tensor of the number s, in the default float dtype unless ``dtype``."""
    dt = as_dtype(dtype) if dtype is not None else default_float()
    return Tensor(np.asarray(s, dtype=dt), requires_grad=requires_grad, device=device)


def fill(input, value):
    """A new tensor like ``input`` filled with ``value`` (a number or a 0-d tensor)."""
    return input.clone().detach().fill_(value.item() if isinstance(value, Tensor) else value)


def range(start, end, step=1, *, dtype=None, layout=None, device=None, pin_memory=None,
          requires_grad=False):
    """Deprecated torch.range: start, start + step, ... up to and including end, in the
    default float dtype unless ``dtype``."""
    warnings.warn("torch.range is deprecated and will be removed in a future release because "
                  "its behavior is inconsistent with Python's range builtin. Instead, use "
                  "torch.arange, which produces values in [start, end).", UserWarning,
                  stacklevel=2)
    if step == 0:
        raise RuntimeError("range: step must be nonzero")
    if (end - start) * step < 0:
        raise RuntimeError(f"upper bound and larger bound inconsistent with step sign "
                           f"(start {start}, end {end}, step {step})")
    count = int(math.floor((end - start) / step)) + 1
    dt = as_dtype(dtype) if dtype is not None else default_float()
    values = (start + step * np.arange(count, dtype=np.float64)).astype(dt)
    return Tensor(values, requires_grad=requires_grad, device=device)


def asarray(obj, *, dtype=None, device=None, copy=None, requires_grad=False):
    """torch.asarray: ``obj`` as a tensor, sharing its memory where it can (a Tensor, a NumPy
    array or anything with __array__ or the buffer protocol) unless ``copy=True``;
    ``copy=False`` refuses to copy."""
    dt = None if dtype is None else as_dtype(dtype)
    if isinstance(obj, Tensor):
        same = ((dt is None or obj.data.dtype == dt)
                and (device is None or str(device).split(":")[0] == device_of(obj.data)))
        if same and not copy:
            out = obj if not requires_grad else obj.detach().requires_grad_(True)
            return out
        if copy is False:
            raise ValueError("asarray: the tensor would need a copy (another dtype or "
                             "device), and copy=False was given")
        out = obj.detach().to(device=device, dtype=dt)
        out = out.clone() if out.data is obj.data else out
        return out.requires_grad_(requires_grad) if requires_grad else out
    shares = isinstance(obj, np.ndarray) or hasattr(obj, "__array__") or \
        hasattr(obj, "__cuda_array_interface__")
    if not shares and isinstance(obj, (bytes, bytearray, memoryview)):
        raise TypeError("asarray: give a buffer to minidl.frombuffer (with its dtype)")
    if shares:
        arr = np.asarray(obj) if device_of(obj) == "cpu" else obj
        if dt is not None and arr.dtype != dt:
            if copy is False:
                raise ValueError(f"asarray: {arr.dtype} to {dt} needs a copy, and copy=False "
                                 "was given")
            arr = arr.astype(dt)
        elif copy:
            arr = arr.copy()
        t = Tensor(arr, device=device) if device is not None else Tensor(arr)
    else:
        if copy is False:
            raise ValueError(f"asarray: a {type(obj).__name__} has no memory to share, and "
                             "copy=False was given")
        from .tensor import tensor

        t = tensor(obj, dtype=dt, device=device)
    if requires_grad:
        t.requires_grad_(True)
    return t


def frombuffer(buffer, *, dtype, count=-1, offset=0, requires_grad=False):
    """A 1-D tensor over the memory of ``buffer`` (bytes, bytearray, array, ...): ``count``
    items of ``dtype`` from byte ``offset`` (all that fit when -1)."""
    dt = as_dtype(dtype)
    view = memoryview(buffer)
    size = view.nbytes
    if offset < 0 or offset >= size:
        raise ValueError(f"frombuffer: offset should be in [0, {size}), got {offset}")
    if count == -1:
        if (size - offset) % dt.itemsize:
            raise ValueError(f"frombuffer: buffer length ({size - offset} bytes after offset "
                             f"{offset}) must be a multiple of element size ({dt.itemsize})")
    elif count <= 0 or offset + count * dt.itemsize > size:
        raise ValueError(f"frombuffer: {count} elements of {dt.itemsize} bytes from byte "
                         f"{offset} do not fit a buffer of {size} bytes")
    arr = np.frombuffer(buffer, dtype=dt, count=count, offset=offset)
    if not arr.flags.writeable:
        warnings.warn("The given buffer is not writable: the tensor's array is read-only, and "
                      "writing to it raises.", UserWarning, stacklevel=2)
    return Tensor(arr, requires_grad=requires_grad)


def _strided_empty(size, stride, dtype, device):
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride):
        raise RuntimeError(f"mismatch in length of strides and shape ({len(stride)} strides for "
                           f"{len(size)} dims)")
    if any(s < 0 for s in stride):
        raise RuntimeError(f"empty_strided: negative strides are not supported, got {stride}")
    dt = as_dtype(dtype) if dtype is not None else default_float()
    extent = 0 if 0 in size else 1 + sum((n - 1) * s for n, s in zip(size, stride))
    from .backend import to_device

    buf = to_device(np.empty(extent, dtype=dt), device or "cpu")
    xp = get_array_module(buf)
    lib = xp.lib.stride_tricks
    return lib.as_strided(buf, size, tuple(s * dt.itemsize for s in stride))


def empty_strided(size, stride, *, dtype=None, layout=None, device=None, requires_grad=False,
                  pin_memory=False):
    """An uninitialised tensor of ``size`` whose strides (in elements) are ``stride``."""
    return Tensor(_strided_empty(size, stride, dtype, device), requires_grad=requires_grad)


# ---- grad mode, anomaly mode, autocast queries ------------------------------------------------
is_inference_mode_enabled = _autograd.is_inference_mode_enabled
is_anomaly_enabled = _autograd.is_anomaly_enabled
is_anomaly_check_nan_enabled = _autograd.is_anomaly_check_nan_enabled


def set_anomaly_enabled(enabled, check_nan=True):
    _autograd.set_detect_anomaly(enabled, check_nan)


def is_autocast_enabled(device_type=None):
    """Whether autocast is on for ``device_type`` (CUDA's when not given, as torch)."""
    return _amp.is_autocast_enabled("cuda" if device_type is None else device_type)


def _deprecated_query(old, new):
    warnings.warn(f"torch.{old}() is deprecated. Please use torch.{new} instead.",
                  DeprecationWarning, stacklevel=3)


def is_autocast_cpu_enabled():
    _deprecated_query("is_autocast_cpu_enabled", "is_autocast_enabled('cpu')")
    return _amp.is_autocast_enabled("cpu")


def get_autocast_dtype(device_type):
    return _amp.get_autocast_dtype(device_type)


def get_autocast_cpu_dtype():
    _deprecated_query("get_autocast_cpu_dtype", "get_autocast_dtype('cpu')")
    return _amp.get_autocast_dtype("cpu")


def get_autocast_gpu_dtype():
    _deprecated_query("get_autocast_gpu_dtype", "get_autocast_dtype('cuda')")
    return _amp.get_autocast_dtype("cuda")


def set_autocast_enabled(device_type, enabled=None):
    """set_autocast_enabled(device_type, enabled), or the old set_autocast_enabled(enabled)
    for CUDA."""
    if enabled is None:
        device_type, enabled = "cuda", device_type
    _amp.set_autocast_enabled(device_type, enabled)


def set_autocast_dtype(device_type, dtype):
    _amp.set_autocast_dtype(device_type, dtype)


def set_autocast_cpu_enabled(enabled):
    _deprecated_query("set_autocast_cpu_enabled", "set_autocast_enabled('cpu', enabled)")
    _amp.set_autocast_enabled("cpu", enabled)


def set_autocast_cpu_dtype(dtype):
    _deprecated_query("set_autocast_cpu_dtype", "set_autocast_dtype('cpu', dtype)")
    _amp.set_autocast_dtype("cpu", dtype)


def set_autocast_gpu_dtype(dtype):
    _deprecated_query("set_autocast_gpu_dtype", "set_autocast_dtype('cuda', dtype)")
    _amp.set_autocast_dtype("cuda", dtype)


_autocast_cache = True
_autocast_nesting = 0


def is_autocast_cache_enabled():
    """Whether autocast would cache cast weights (minidl casts per op and keeps no cache;
    the flag is kept for code that sets and reads it)."""
    return _autocast_cache


def set_autocast_cache_enabled(enabled):
    global _autocast_cache
    _autocast_cache = bool(enabled)


def clear_autocast_cache():
    """Nothing to clear: minidl keeps no cache of cast weights."""


def autocast_increment_nesting():
    global _autocast_nesting
    _autocast_nesting += 1
    return _autocast_nesting


def autocast_decrement_nesting():
    global _autocast_nesting
    _autocast_nesting = max(0, _autocast_nesting - 1)
    return _autocast_nesting


_warn_always = False


def set_warn_always(b):
    global _warn_always
    _warn_always = bool(b)


def is_warn_always_enabled():
    return _warn_always


_interop_threads = None


def get_num_interop_threads():
    """Threads for inter-op parallelism: minidl runs ops one after another, so this is what
    set_num_interop_threads last set (1 until then)."""
    return 1 if _interop_threads is None else _interop_threads


def set_num_interop_threads(n):
    global _interop_threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise RuntimeError(f"Expected positive number of threads, got {n!r}")
    _interop_threads = n


def set_flush_denormal(mode):
    """False: NumPy gives no control of the CPU's flush-to-zero mode, so it is not set (torch
    returns False where it is not supported, too)."""
    return False


def get_device(input):
    """The CUDA device index of ``input``, -1 on the CPU."""
    return input.get_device()


# ---- Tensor methods that torch.Tensor has and minidl's lacked --------------------------------
def _storage(t):
    """(flat storage array, offset of t's first element in it, t's strides in elements): the
    root array t's array views, where t's array is a view of one; else t's own values."""
    a = t.data
    itemsize = a.dtype.itemsize
    root = a
    while True:
        nxt = getattr(root, "base", None)
        if nxt is not None and not hasattr(nxt, "dtype"):
            nxt = getattr(nxt, "base", None)  # NumPy's as_strided keeps its source behind this
        if nxt is None or not hasattr(nxt, "dtype") or not hasattr(nxt, "__array_interface__"):
            break
        root = nxt
    if (root is not a and root.dtype == a.dtype and root.flags.c_contiguous
            and get_array_module(root) is get_array_module(a)):
        start = a.__array_interface__["data"][0] - root.__array_interface__["data"][0]
        if start % itemsize == 0 and all(s % itemsize == 0 for s in a.strides):
            return root.reshape(-1), start // itemsize, tuple(s // itemsize for s in a.strides)
    if a.flags.c_contiguous and all(s % itemsize == 0 for s in a.strides):
        return a.reshape(-1), 0, tuple(s // itemsize for s in a.strides)
    flat = a.copy().reshape(-1)
    strides = tuple(int(np.prod(a.shape[d + 1:])) for d in builtins.range(a.ndim))
    return flat, 0, strides


def _positions(xp, size, stride, offset):
    pos = xp.full(tuple(size), offset, dtype=np.int64)
    for d, (n, s) in enumerate(zip(size, stride)):
        shape = [1] * len(size)
        shape[d] = n
        pos = pos + xp.arange(n, dtype=np.int64).reshape(shape) * s
    return pos


def _last_position(size, stride, offset):
    """The largest of _positions(size, stride, offset), or None when the
    size holds no element: arithmetic on the host, where pos.max() would copy from a GPU."""
    if any(n == 0 for n in size):
        return None
    return int(offset) + sum(max((n - 1) * s, 0) for n, s in zip(size, stride))


class AsStrided(Function):
    """The elements of x's storage at offset + sum(i_k * stride_k), as torch.as_strided reads
    them: a view of that storage where x's array is one (``view``, the storage offset, is not
    None), else a copy; backward adds the gradient back at those storage positions and reads
    x's own. A view whose elements overlap is read-only on the CPU, since a write through it
    would reach one memory location from several elements (PyTorch refuses such writes)."""

    def forward(self, x, storage, x_pos, out_pos, size_stride=None):
        self.x_pos, self.out_pos, self.size = x_pos, out_pos, storage.size
        size, stride, view = size_stride or (None, None, None)
        if view is None:
            return storage[out_pos]
        xp = get_array_module(storage)
        item = storage.dtype.itemsize
        out = xp.lib.stride_tricks.as_strided(storage[view:], shape=size,
                                              strides=tuple(s * item for s in stride))
        if xp is np and np.unique(out_pos).size < out_pos.size:
            out.flags.writeable = False
        return out

    def backward(self, g):
        xp = get_array_module(g)
        gs = xp.zeros(self.size, dtype=g.dtype)
        xp.add.at(gs, self.out_pos.reshape(-1), g.reshape(-1))
        return gs[self.x_pos]

    def graph_backward(self, g, out):
        return _AsStridedAdjoint.apply(g, x_pos=self.x_pos, out_pos=self.out_pos, size=self.size)


class _AsStridedAdjoint(Function):
    def forward(self, g, x_pos, out_pos, size):
        self.x_pos, self.out_pos, self.size = x_pos, out_pos, size
        xp = get_array_module(g)
        gs = xp.zeros(size, dtype=g.dtype)
        xp.add.at(gs, out_pos.reshape(-1), g.reshape(-1))
        return gs[x_pos]

    def backward(self, h):
        xp = get_array_module(h)
        hs = xp.zeros(self.size, dtype=h.dtype)
        xp.add.at(hs, self.x_pos.reshape(-1), h.reshape(-1))
        return hs[self.out_pos]

    def graph_backward(self, h, out):
        return _AsStridedAdjoint.apply(h, x_pos=self.out_pos, out_pos=self.x_pos, size=self.size)


def as_strided(input, size, stride, storage_offset=None):
    """torch.as_strided: a tensor of ``size`` whose element i is the storage element at
    storage_offset + sum(i_k * stride_k) (strides in elements; the offset defaults to the
    tensor's own). minidl returns a copy (differentiable), not a view."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride):
        raise RuntimeError(f"mismatch in length of strides and shape ({len(stride)} strides for "
                           f"{len(size)} dims)")
    if any(s < 0 for s in stride):
        raise RuntimeError(f"as_strided: Negative strides are not supported at the moment, got "
                           f"strides: {list(stride)}")
    storage, offset, x_strides = _storage(input)
    if storage_offset is None:
        storage_offset = offset
    if storage_offset < 0:
        raise RuntimeError(f"Tensor: invalid storage offset {storage_offset}")
    xp = get_array_module(storage)
    out_pos = _positions(xp, size, stride, storage_offset)
    last = _last_position(size, stride, storage_offset)
    if last is not None and last >= storage.size:
        raise RuntimeError(f"setStorage: sizes {list(size)}, strides {list(stride)}, storage "
                           f"offset {storage_offset} require {last + 1} elements "
                           f"but the storage holds {storage.size}")
    x_pos = _positions(xp, input.shape, x_strides, offset)
    view = storage_offset if _views_storage(input.data, storage) and out_pos.size else None
    out = AsStrided.apply(input, storage=storage, x_pos=x_pos, out_pos=out_pos,
                          size_stride=(size, stride, view))
    return _autograd.share_version(out, input) if view is not None else out


def _views_storage(a, storage):
    """Whether ``storage`` (from _storage) is memory ``a`` lives in, not a copy of it."""
    xp = get_array_module(a)
    return bool(xp.may_share_memory(a, storage)) if xp is not np else np.may_share_memory(a, storage)


def as_strided_scatter(input, src, size, stride, storage_offset=None):
    """A copy of ``input`` with ``src`` written where ``input.as_strided(size, stride,
    storage_offset)`` reads (positions in input's row-major order; differentiable in both)."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if tuple(src.shape) != size:
        raise RuntimeError(f"expected src to have a size equal to the slice of self. src size = "
                           f"{list(src.shape)}, slice size = {list(size)}")
    xp = get_array_module(input.data)
    offset = 0 if storage_offset is None else int(storage_offset)
    pos = _positions(xp, size, stride, offset)
    last = _last_position(size, stride, offset)
    if last is not None and last >= input.numel():
        raise RuntimeError(f"as_strided_scatter: sizes {list(size)}, strides {list(stride)} "
                           f"reach element {last} of a tensor of {input.numel()}")
    return put(input, Tensor(pos), src)


def _unchecked_views(pieces):
    """The unsafe_ variants' pieces: PyTorch's autograd does not follow them as views (an
    in-place change of one is not refused, nor recorded on the input): whole tensors here."""
    for p in pieces:
        for key in ("_multi_view", "_view_base", "_is_view"):
            p.__dict__.pop(key, None)
    return pieces


def _is_set_to(self, tensor):
    """Whether both tensors view the same memory with the same offset, shape and strides."""
    a, b = self.data, tensor.data
    return (type(a) is type(b) and a.shape == b.shape and a.strides == b.strides
            and self.data_ptr() == tensor.data_ptr())


def _storage_offset(self):
    """The index of this tensor's first element in the array it views (0 for one that owns
    its memory)."""
    return _storage(self)[1]


def _new_empty_strided(self, size, stride, *, dtype=None, device=None, requires_grad=False):
    return Tensor(_strided_empty(size, stride, dtype or self.data.dtype,
                                 device or self.device), requires_grad=requires_grad)


def _put_indices(name, self, index, source):
    if not isinstance(index, Tensor) or index.data.dtype.kind not in "iu":
        raise TypeError(f"{name}(): index must be an integer (int64) Tensor, got "
                        f"{getattr(index, 'dtype', type(index).__name__)}")
    if not isinstance(source, Tensor):
        raise TypeError(f"{name}(): source must be a Tensor, got {type(source).__name__}")
    if index.numel() != source.numel():
        raise IndexError(f"{name}(): Expected source and index to have the same number of "
                           f"elements, but got source.numel() = {source.numel()}, "
                           f"index.numel() = {index.numel()}")
    n = self.numel()
    flat = index.data.reshape(-1).astype(np.int64)
    xp = get_array_module(flat)
    if flat.size and (int(flat.min()) < -n or int(flat.max()) >= n):
        bad = int(flat.min()) if int(flat.min()) < -n else int(flat.max())
        raise IndexError(f"{name}(): index {bad} is out of bounds for a tensor of {n} "
                         "elements")
    flat = xp.where(flat < 0, flat + n, flat)
    if self.ndim == 0:  # a 0-d tensor is read as its one element: (put reads it as 1-D)
        return (Tensor(flat),)
    return tuple(Tensor(i) for i in xp.unravel_index(flat, tuple(self.shape)))


def put(input, index, source, accumulate=False):
    """input with source's values written at ``index`` into input read as 1-D (added there
    with accumulate)."""
    idx = _put_indices("put", input, index, source)
    if input.ndim == 0:
        return input.reshape(1).index_put(idx, source.reshape(-1), accumulate).reshape(())
    return input.index_put(idx, source.reshape(-1), accumulate)


def _put_(self, index, source, accumulate=False):
    idx = _put_indices("put_", self, index, source)
    if self.ndim == 0:  # through a 1-element view of it
        self.unsqueeze(0).index_put_(idx, source.reshape(-1), accumulate)
        return self
    return self.index_put_(idx, source.reshape(-1), accumulate)


def _resize_(self, *sizes, memory_format=None):
    """In place: this tensor's array becomes ``sizes``, keeping its first elements in row-major
    order (new ones are zero here, uninitialised in torch)."""
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    sizes = tuple(int(s) for s in sizes)
    if any(s < 0 for s in sizes):
        raise RuntimeError(f"Trying to create tensor with negative dimension: {list(sizes)}")
    if self.requires_grad:
        raise RuntimeError("cannot resize variables that require grad")
    xp = get_array_module(self.data)
    n = int(np.prod(sizes))
    flat = self.data.reshape(-1)
    if n <= flat.size:
        new = flat[:n].reshape(sizes)
    else:
        new = xp.concatenate([flat, xp.zeros(n - flat.size, dtype=flat.dtype)]).reshape(sizes)
    if memory_format is not None:
        from .shape_ops import _channels_last_order

        order = _channels_last_order(len(sizes), memory_format)
        if order is not None:
            new = xp.ascontiguousarray(new.transpose(order)).transpose(np.argsort(order))
    self.data = new
    bump_version(self)
    return self


def _resize_as_(self, the_template, *, memory_format=None):
    return _resize_(self, tuple(the_template.shape), memory_format=memory_format)


def _resize(self, *sizes):
    """Deprecated out-of-place resize: as torch's (autograd's Resize), the same elements in a
    new shape (differentiable); the element count may not change. Warns."""
    warnings.warn("non-inplace resize is deprecated", UserWarning, stacklevel=2)
    return _reshaped(self, sizes)


def _resize_as(self, tensor):
    warnings.warn("non-inplace resize_as is deprecated", UserWarning, stacklevel=2)
    return _reshaped(self, tuple(tensor.shape))


def _reshaped(self, sizes):
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    n = int(np.prod(sizes)) if sizes else 1
    if n != self.numel():
        raise RuntimeError(f"requested resize to {'x'.join(map(str, sizes))} ({n} elements in "
                           f"total), but the given tensor has a size of "
                           f"{'x'.join(map(str, self.shape))} ({self.numel()} elements). "
                           "autograd's resize can only change the shape of a given tensor, "
                           "while preserving the number of elements.")
    return self.reshape(tuple(sizes))


def _new(self, *args, **kwargs):
    """Tensor.new, the legacy constructor: new(*sizes) uninitialised (here zeros), new(data)
    from data (a sequence or a tensor), new() empty; this tensor's dtype and device."""
    if kwargs.get("device") is not None:
        raise TypeError("new(): device= is not supported; use new_empty/new_tensor")
    if len(args) == 1 and not isinstance(args[0], int):
        data = args[0]
        if isinstance(data, Tensor):
            return data.detach()
        return self.new_tensor(data)
    sizes = args if args else (0,)
    return self.new_zeros(*sizes)


def _cpu_only(name, self):
    if device_of(self.data) != "cpu":
        raise TypeError(f"{name} is only implemented on CPU tensors")
    if self.requires_grad:
        raise RuntimeError(f"Can't call {name}() on Variable that requires grad. Use "
                           f"var.detach().{name}() instead.")


def _write_values(self, name, values):
    def fn(t, _):
        return Tensor(values.reshape(t.shape))
    with _autograd.no_grad():
        return _inplace_by(self, name, fn)


def _apply_(self, callable):
    """Each element replaced by callable(element), in place (CPU only, slow, as torch's)."""
    _cpu_only("apply_", self)
    flat = self.data.reshape(-1)
    values = np.array([callable(v.item()) for v in flat], dtype=self.data.dtype)
    return _write_values(self, "apply_", values)


def _map_(self, tensor, callable):
    """self[i] = callable(self[i], tensor[i]) in place, tensor broadcast to self (CPU only)."""
    _cpu_only("map_", self)
    other = np.broadcast_to(tensor.data, self.shape).reshape(-1)
    flat = self.data.reshape(-1)
    values = np.array([callable(a.item(), b.item()) for a, b in zip(flat, other)],
                      dtype=self.data.dtype)
    return _write_values(self, "map_", values)


def _map2_(self, x, y, callable):
    """self[i] = callable(self[i], x[i], y[i]) in place (CPU only)."""
    _cpu_only("map2_", self)
    xs = np.broadcast_to(x.data, self.shape).reshape(-1)
    ys = np.broadcast_to(y.data, self.shape).reshape(-1)
    flat = self.data.reshape(-1)
    values = np.array([callable(a.item(), b.item(), c.item()) for a, b, c in zip(flat, xs, ys)],
                      dtype=self.data.dtype)
    return _write_values(self, "map2_", values)


def _dim_order(self, *, ambiguity_check=False):
    """The dims from outermost to innermost in memory (by stride), as torch's dim_order."""
    strides = self.stride()
    return tuple(sorted(builtins.range(self.ndim), key=lambda d: (-strides[d], d)))


TENSOR_METHODS = {
    "hardshrink": lambda self, lambd=0.5: F.hardshrink(self, lambd),
    "prelu": lambda self, weight: F.prelu(self, weight),
    "as_strided": as_strided, "storage_offset": _storage_offset,
    "new_empty_strided": _new_empty_strided, "put": put, "put_": _put_, "resize_": _resize_,
    "resize_as_": _resize_as_,
    "apply_": _apply_, "map_": _map_, "map2_": _map2_,
    "as_strided_scatter": as_strided_scatter, "is_set_to": _is_set_to,
    "output_nr": property(lambda self: 0), "const_data_ptr": lambda self: self.data_ptr(),
    "dim_order": _dim_order, "resize": _resize, "resize_as": _resize_as, "new": _new, "nonzero_static": lambda self, *, size, fill_value=-1:
    nonzero_static(self, size=size, fill_value=fill_value),
    "unsafe_chunk": lambda self, chunks, dim=0: _unchecked_views(self.chunk(chunks, dim)),
    "unsafe_split": lambda self, split_size, dim=0: _unchecked_views(self.split(split_size, dim)),
    "unsafe_split_with_sizes": lambda self, split_sizes, dim=0: _unchecked_views(
        self.split(list(split_sizes), dim)),
    "H": property(lambda self: self.adjoint() if self.ndim == 2 else _H_error(self)),
}


def _H_error(t):
    raise RuntimeError(f"tensor.H is only supported on matrices (2-D tensors). Got {t.ndim}-D "
                       "tensor.")


def install(namespace):
    """Put this module's torch names into minidl's namespace (leaving the names it already
    has) and its methods on Tensor (where Tensor lacks them). Returns the names added."""
    for name, fn in TENSOR_METHODS.items():
        if not hasattr(Tensor, name):
            if getattr(fn, "__name__", "") == "<lambda>" and not isinstance(fn, property):
                fn.__name__ = fn.__qualname__ = name
            setattr(Tensor, name, fn)
    added = []
    names = [n for n in globals() if not n.startswith("_") and n not in _NOT_EXPORTED]
    for name in names:
        if name not in namespace:
            namespace[name] = globals()[name]
            added.append(name)
    for name in INPLACE_FUNCTIONS:
        if name not in namespace and hasattr(Tensor, name):
            namespace[name] = _method_function(name)
            added.append(name)
    for method in COPY_FORMS:
        if method + "_copy" not in namespace and hasattr(Tensor, method):
            namespace[method + "_copy"] = _copy_form(method)
            added.append(method + "_copy")
    return added


_NOT_EXPORTED = {"annotations", "math", "warnings", "np", "F", "Function", "Tensor",
                 "device_of", "get_array_module", "as_dtype", "default_float", "bump_version",
                 "INPLACE_FUNCTIONS", "TENSOR_METHODS", "install", "AsStrided", "builtins",
                 "COPY_FORMS", "is_floating_dtype"}
