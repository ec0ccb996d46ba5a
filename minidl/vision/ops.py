"""torchvision.ops' detection building blocks: box arithmetic (IoU and its generalised,
distance and complete forms, format conversion, clipping), the box losses, non-maximum
suppression and the RoI poolings (``roi_align``, ``roi_pool`` and their modules).

Box ops are written with Tensor ops, so they are differentiable (and twice differentiable)
wherever torchvision's are. Boxes are (x1, y1, x2, y2) with 0 <= x1 < x2, 0 <= y1 < y2 unless
a function says otherwise."""
from __future__ import annotations

import math

import numpy as np

import minidl

from .. import nn
from ..backend import get_array_module, to_numpy
from ..functional import _add_rows, linear_graph_backward
from ..nn import functional as F
from ..tensor import Function, Tensor

__all__ = ["box_area", "box_iou", "generalized_box_iou", "distance_box_iou", "complete_box_iou",
           "box_convert", "clip_boxes_to_image", "remove_small_boxes", "masks_to_boxes",
           "generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss",
           "sigmoid_focal_loss", "nms", "batched_nms", "roi_align", "roi_pool", "RoIAlign",
           "RoIPool"]


# ---- boxes ---------------------------------------------------------------------------------------
def _check_boxes(name, boxes, arg="boxes"):
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name}: {arg} must be a Tensor, got {type(boxes).__name__}")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name}: {arg} must be a Tensor[N, 4], got shape {tuple(boxes.shape)}")


def _upcast(t):
    """torchvision's _upcast, so that products do not overflow: 16-bit floats become float32,
    integers narrower than 32 bits int32 (int32 and int64 stay)."""
    dt = np.dtype(t.dtype)
    if dt.kind == "f" or str(dt) == "bfloat16":
        return t if dt in (np.float32, np.float64) else t.to(minidl.float32)
    return t if dt in (np.int32, np.int64) else t.to(minidl.int32)


def _upcast_non_float(t):
    """torchvision's _upcast_non_float (the losses): anything but float32/64 becomes float32."""
    return t if np.dtype(t.dtype) in (np.float32, np.float64) else t.to(minidl.float32)


def box_area(boxes):
    """Areas (N,) of boxes (N, 4) in xyxy format."""
    _check_boxes("box_area", boxes)
    boxes = _upcast(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _box_inter_union(boxes1, boxes2):
    area1, area2 = box_area(boxes1), box_area(boxes2)
    lt = minidl.maximum(boxes1[:, None, :2], boxes2[:, :2])
    rb = minidl.minimum(boxes1[:, None, 2:], boxes2[:, 2:])
    wh = _upcast(rb - lt).clamp(min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    return inter, area1[:, None] + area2 - inter


def box_iou(boxes1, boxes2):
    """Intersection over union (N, M) of every pair of boxes1 (N, 4) and boxes2 (M, 4)."""
    _check_boxes("box_iou", boxes1, "boxes1")
    _check_boxes("box_iou", boxes2, "boxes2")
    inter, union = _box_inter_union(boxes1, boxes2)
    return inter / union


def generalized_box_iou(boxes1, boxes2):
    """IoU minus the share of the smallest enclosing box that the union leaves empty (N, M)."""
    _check_boxes("generalized_box_iou", boxes1, "boxes1")
    _check_boxes("generalized_box_iou", boxes2, "boxes2")
    inter, union = _box_inter_union(boxes1, boxes2)
    iou = inter / union
    lti = minidl.minimum(boxes1[:, None, :2], boxes2[:, :2])
    rbi = minidl.maximum(boxes1[:, None, 2:], boxes2[:, 2:])
    whi = _upcast(rbi - lti).clamp(min=0)
    areai = whi[:, :, 0] * whi[:, :, 1]
    return iou - (areai - union) / areai


def _box_diou_iou(boxes1, boxes2, eps):
    inter, union = _box_inter_union(boxes1, boxes2)
    iou = inter / union
    lti = minidl.minimum(boxes1[:, None, :2], boxes2[:, :2])
    rbi = minidl.maximum(boxes1[:, None, 2:], boxes2[:, 2:])
    whi = _upcast(rbi - lti).clamp(min=0)
    diagonal = whi[:, :, 0] ** 2 + whi[:, :, 1] ** 2 + eps
    xp, yp = (boxes1[:, 0] + boxes1[:, 2]) / 2, (boxes1[:, 1] + boxes1[:, 3]) / 2
    xg, yg = (boxes2[:, 0] + boxes2[:, 2]) / 2, (boxes2[:, 1] + boxes2[:, 3]) / 2
    centers = _upcast(xp[:, None] - xg[None, :]) ** 2 + _upcast(yp[:, None] - yg[None, :]) ** 2
    return iou - centers / diagonal, iou


def distance_box_iou(boxes1, boxes2, eps=1e-7):
    """IoU minus the squared distance of the centres over the squared diagonal of the
    enclosing box (N, M)."""
    _check_boxes("distance_box_iou", boxes1, "boxes1")
    _check_boxes("distance_box_iou", boxes2, "boxes2")
    return _box_diou_iou(_upcast(boxes1), _upcast(boxes2), eps)[0]


def complete_box_iou(boxes1, boxes2, eps=1e-7):
    """Distance IoU minus alpha * v, v the aspect-ratio disagreement; alpha is a constant of
    the gradient (computed without a graph, as torchvision)."""
    _check_boxes("complete_box_iou", boxes1, "boxes1")
    _check_boxes("complete_box_iou", boxes2, "boxes2")
    boxes1, boxes2 = _upcast(boxes1), _upcast(boxes2)
    diou, iou = _box_diou_iou(boxes1, boxes2, eps)
    w_pred = boxes1[:, None, 2] - boxes1[:, None, 0]
    h_pred = boxes1[:, None, 3] - boxes1[:, None, 1]
    w_gt = boxes2[:, 2] - boxes2[:, 0]
    h_gt = boxes2[:, 3] - boxes2[:, 1]
    v = (4 / math.pi ** 2) * (minidl.atan(w_pred / h_pred) - minidl.atan(w_gt / h_gt)) ** 2
    with minidl.no_grad():
        alpha = v / (1 - iou + v + eps)
    return diou - alpha * v


_FORMATS = ("xyxy", "xywh", "cxcywh")


def box_convert(boxes, in_fmt, out_fmt):
    """Boxes (..., 4) from one of 'xyxy', 'xywh' (corner, size), 'cxcywh' (centre, size) to
    another."""
    if in_fmt not in _FORMATS or out_fmt not in _FORMATS:
        raise ValueError(f"box_convert: unsupported bounding box conversion {in_fmt!r} -> "
                         f"{out_fmt!r}; the formats are {', '.join(_FORMATS)}")
    if boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"box_convert: boxes must have 4 values in the last dimension, got shape "
                         f"{tuple(boxes.shape)}")
    if in_fmt == out_fmt:
        return boxes.clone()
    a, b, c, d = boxes.unbind(-1)
    if in_fmt == "xywh":
        a, b, c, d = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        a, b, c, d = a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d
    if out_fmt == "xywh":
        a, b, c, d = a, b, c - a, d - b
    elif out_fmt == "cxcywh":
        a, b, c, d = (a + c) / 2, (b + d) / 2, c - a, d - b
    return minidl.stack([a, b, c, d], dim=-1)


def clip_boxes_to_image(boxes, size):
    """Boxes (..., 4) xyxy clipped to an image of ``size`` (height, width)."""
    if boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"clip_boxes_to_image: boxes must have 4 values in the last dimension, "
                         f"got shape {tuple(boxes.shape)}")
    height, width = size
    x1, y1, x2, y2 = boxes.unbind(-1)
    return minidl.stack([x1.clamp(0, width), y1.clamp(0, height), x2.clamp(0, width),
                         y2.clamp(0, height)], dim=-1)


def remove_small_boxes(boxes, min_size):
    """Indices (int64) of the boxes whose sides are both at least ``min_size``."""
    _check_boxes("remove_small_boxes", boxes)
    b = boxes.detach().numpy()
    keep = ((b[:, 2] - b[:, 0]) >= min_size) & ((b[:, 3] - b[:, 1]) >= min_size)
    return minidl.tensor(np.nonzero(keep)[0].astype(np.int64), device=boxes.device)


def masks_to_boxes(masks):
    """The xyxy bounding box (N, 4, float32) of the nonzero pixels of each mask (N, H, W);
    a mask with no nonzero pixel is refused (torchvision fails on it too)."""
    if not isinstance(masks, Tensor) or masks.ndim != 3:
        raise ValueError(f"masks_to_boxes: masks must be a Tensor[N, H, W], got shape "
                         f"{tuple(getattr(masks, 'shape', ()))}")
    m = masks.detach().numpy() != 0
    if m.size == 0:  # torchvision: no pixels at all gives no boxes (even for N > 0)
        return minidl.tensor(np.zeros((0, 4), np.float32), device=masks.device)
    out = np.zeros((m.shape[0], 4), dtype=np.float32)
    for i in range(m.shape[0]):
        ys, xs = np.nonzero(m[i])
        if not len(ys):  # torchvision's min over no pixels fails too
            raise ValueError(f"masks_to_boxes: mask {i} has no nonzero pixel, so no bounding box")
        out[i] = (xs.min(), ys.min(), xs.max(), ys.max())
    return minidl.tensor(out, device=masks.device)


# ---- losses --------------------------------------------------------------------------------------
def _reduce(name, loss, reduction, empty_mean_zero=True):
    if reduction == "none":
        return loss
    if reduction == "mean":  # the box losses: 0 for no boxes; the focal loss: nan (a plain mean)
        return loss.mean() if loss.numel() > 0 or not empty_mean_zero else 0.0 * loss.sum()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"{name}: invalid value for reduction: {reduction!r}; supported reduction "
                     f"modes: 'none', 'mean', 'sum'")


def _pair_check(name, boxes1, boxes2):
    for arg, b in (("boxes1", boxes1), ("boxes2", boxes2)):
        if not isinstance(b, Tensor) or b.ndim < 1 or b.shape[-1] != 4:
            raise ValueError(f"{name}: {arg} must be a Tensor[..., 4], got shape "
                             f"{tuple(getattr(b, 'shape', ()))}")
    if tuple(boxes1.shape) != tuple(boxes2.shape):
        raise ValueError(f"{name}: boxes1 {tuple(boxes1.shape)} and boxes2 {tuple(boxes2.shape)} "
                         f"must have the same shape")


def _loss_inter_union(boxes1, boxes2):
    x1, y1, x2, y2 = boxes1.unbind(-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(-1)
    xk1, yk1 = minidl.maximum(x1, x1g), minidl.maximum(y1, y1g)
    xk2, yk2 = minidl.minimum(x2, x2g), minidl.minimum(y2, y2g)
    overlap = (yk2 > yk1) & (xk2 > xk1)
    inter = minidl.where(overlap, (xk2 - xk1) * (yk2 - yk1), minidl.zeros_like(x1))
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    return inter, union


def _loss_diou(boxes1, boxes2, eps):
    inter, union = _loss_inter_union(boxes1, boxes2)
    iou = inter / (union + eps)
    x1, y1, x2, y2 = boxes1.unbind(-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(-1)
    xc1, yc1 = minidl.minimum(x1, x1g), minidl.minimum(y1, y1g)
    xc2, yc2 = minidl.maximum(x2, x2g), minidl.maximum(y2, y2g)
    diagonal = (xc2 - xc1) ** 2 + (yc2 - yc1) ** 2 + eps
    centers = ((x1 + x2) / 2 - (x1g + x2g) / 2) ** 2 + ((y1 + y2) / 2 - (y1g + y2g) / 2) ** 2
    return 1 - iou + centers / diagonal, iou


def generalized_box_iou_loss(boxes1, boxes2, reduction="none", eps=1e-7):
    """1 - GIoU of matching boxes (..., 4) xyxy, elementwise; reduction 'none', 'mean', 'sum'."""
    _pair_check("generalized_box_iou_loss", boxes1, boxes2)
    boxes1, boxes2 = _upcast_non_float(boxes1), _upcast_non_float(boxes2)
    inter, union = _loss_inter_union(boxes1, boxes2)
    iou = inter / (union + eps)
    x1, y1, x2, y2 = boxes1.unbind(-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(-1)
    xc1, yc1 = minidl.minimum(x1, x1g), minidl.minimum(y1, y1g)
    xc2, yc2 = minidl.maximum(x2, x2g), minidl.maximum(y2, y2g)
    area_c = (xc2 - xc1) * (yc2 - yc1)
    loss = 1 - (iou - (area_c - union) / (area_c + eps))
    return _reduce("generalized_box_iou_loss", loss, reduction)


def distance_box_iou_loss(boxes1, boxes2, reduction="none", eps=1e-7):
    """1 - DIoU of matching boxes (..., 4) xyxy, elementwise."""
    _pair_check("distance_box_iou_loss", boxes1, boxes2)
    loss, _ = _loss_diou(_upcast_non_float(boxes1), _upcast_non_float(boxes2), eps)
    return _reduce("distance_box_iou_loss", loss, reduction)


def complete_box_iou_loss(boxes1, boxes2, reduction="none", eps=1e-7):
    """1 - CIoU of matching boxes (..., 4) xyxy, elementwise (alpha a constant of the gradient)."""
    _pair_check("complete_box_iou_loss", boxes1, boxes2)
    boxes1, boxes2 = _upcast_non_float(boxes1), _upcast_non_float(boxes2)
    diou_loss, iou = _loss_diou(boxes1, boxes2, eps)
    x1, y1, x2, y2 = boxes1.unbind(-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(-1)
    v = (4 / math.pi ** 2) * (minidl.atan((x2g - x1g) / (y2g - y1g)) -
                              minidl.atan((x2 - x1) / (y2 - y1))) ** 2
    with minidl.no_grad():
        alpha = v / (1 - iou + v + eps)
    return _reduce("complete_box_iou_loss", diou_loss + alpha * v, reduction)


def sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    """RetinaNet's focal loss of logits ``inputs`` against binary ``targets`` (same shape):
    BCE-with-logits scaled by (1 - p_t) ** gamma, and by alpha_t when alpha >= 0."""
    if tuple(inputs.shape) != tuple(targets.shape):
        raise ValueError(f"sigmoid_focal_loss: inputs {tuple(inputs.shape)} and targets "
                         f"{tuple(targets.shape)} must have the same shape")
    if reduction not in ("none", "mean", "sum"):
        _reduce("sigmoid_focal_loss", inputs, reduction)
    p = minidl.sigmoid(inputs)
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return _reduce("sigmoid_focal_loss", loss, reduction, empty_mean_zero=False)


# ---- non-maximum suppression ---------------------------------------------------------------------
def _check_nms(name, boxes, scores):
    if not isinstance(boxes, Tensor) or not isinstance(scores, Tensor):
        raise TypeError(f"{name}: boxes and scores must be Tensors")
    if boxes.ndim != 2:
        raise ValueError(f"{name}: boxes should be a 2d tensor, got {boxes.ndim}D")
    if boxes.shape[1] != 4:
        raise ValueError(f"{name}: boxes should have 4 elements in dimension 1, got {boxes.shape[1]}")
    if scores.ndim != 1:
        raise ValueError(f"{name}: scores should be a 1d tensor, got {scores.ndim}D")
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"{name}: boxes and scores should have same number of elements in "
                         f"dimension 0, got {boxes.shape[0]} and {scores.shape[0]}")
    if np.dtype(boxes.dtype).kind != "f" or boxes.dtype != scores.dtype:
        raise TypeError(f"{name}: boxes and scores should be floating point of the same dtype, got "
                        f"{boxes.dtype} and {scores.dtype}")


def _nms_array(b, s, iou_threshold):
    """Kept indices of boxes b (N, 4) with scores s (N,) (host arrays), by decreasing score;
    ties keep the lower index first (a stable sort, as torch's CPU sort)."""
    order = np.argsort(-s, kind="stable")
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(len(s), dtype=bool)
    keep = []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[pos + 1:]
        rest = rest[~suppressed[rest]]
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        # compared in double, as torchvision's kernel (a float32 IoU against a float threshold)
        suppressed[rest[iou.astype(np.float64) > iou_threshold]] = True
    return np.asarray(keep, dtype=np.int64)


def nms(boxes, scores, iou_threshold):
    """Greedy non-maximum suppression: the indices (int64) of the boxes (N, 4) xyxy kept, by
    decreasing score; a box is dropped when its IoU with a kept, higher-scored box is greater
    than ``iou_threshold``."""
    _check_nms("nms", boxes, scores)
    keep = _nms_array(boxes.detach().numpy(), scores.detach().numpy(), float(iou_threshold))
    return minidl.tensor(keep, device=boxes.device)


def batched_nms(boxes, scores, idxs, iou_threshold):
    """NMS within each category ``idxs`` (N,) separately (boxes of different categories never
    suppress each other); the kept indices (int64) by decreasing score."""
    _check_nms("batched_nms", boxes, scores)
    if not isinstance(idxs, Tensor) or idxs.ndim != 1 or idxs.shape[0] != boxes.shape[0]:
        raise ValueError(f"batched_nms: idxs must be a Tensor[N] with N = {boxes.shape[0]}, got "
                         f"shape {tuple(getattr(idxs, 'shape', ()))}")
    b, s, c = boxes.detach().numpy(), scores.detach().numpy(), idxs.detach().numpy()
    keep_mask = np.zeros(len(s), dtype=bool)
    for cls in np.unique(c):
        members = np.nonzero(c == cls)[0]
        keep_mask[members[_nms_array(b[members], s[members], float(iou_threshold))]] = True
    keep = np.nonzero(keep_mask)[0]
    keep = keep[np.argsort(-s[keep], kind="stable")].astype(np.int64)
    return minidl.tensor(keep, device=boxes.device)


# ---- RoI poolings --------------------------------------------------------------------------------
def _pair(v):
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else tuple(int(u) for u in v)


def _rois(name, input, boxes):
    """Boxes as a Tensor[K, 5] (batch index, x1, y1, x2, y2) or a list of Tensor[L, 4] (one per
    image) -> a host array (K, 5) in the input's dtype."""
    if not isinstance(input, Tensor) or input.ndim != 4:
        raise ValueError(f"{name}: input must be a Tensor[N, C, H, W], got shape "
                         f"{tuple(getattr(input, 'shape', ()))}")
    dtype = np.dtype(input.dtype)
    if dtype.kind != "f":
        raise TypeError(f"{name}: input must be floating point, got {input.dtype}")
    for b in boxes if isinstance(boxes, (list, tuple)) else [boxes]:
        if isinstance(b, Tensor) and np.dtype(b.dtype) != dtype:
            raise TypeError(f"{name}: input ({input.dtype}) and boxes ({b.dtype}) must have the "
                            f"same dtype")
        if isinstance(b, Tensor) and b.device != input.device:
            raise ValueError(f"{name}: input is on {input.device}, boxes on {b.device}")
    if isinstance(boxes, (list, tuple)):
        parts = []
        for i, b in enumerate(boxes):
            if not isinstance(b, Tensor) or b.ndim != 2 or b.shape[1] != 4:
                raise ValueError(f"{name}: boxes[{i}] must be a Tensor[L, 4] (List[Tensor[L, 4]]), "
                                 f"got shape {tuple(getattr(b, 'shape', ()))}")
            arr = b.detach().numpy().astype(dtype)
            parts.append(np.concatenate([np.full((len(arr), 1), i, dtype), arr], axis=1))
        rois = np.concatenate(parts) if parts else np.zeros((0, 5), dtype)
    elif isinstance(boxes, Tensor):
        if boxes.ndim != 2 or boxes.shape[1] != 5:
            raise ValueError(f"{name}: boxes must be a Tensor[K, 5], got shape {tuple(boxes.shape)}")
        rois = boxes.detach().numpy().astype(dtype)
    else:
        raise TypeError(f"{name}: boxes is expected to be a Tensor[K, 5] or a List[Tensor[L, 4]], "
                        f"got {type(boxes).__name__}")
    batch = rois[:, 0].astype(np.int64)
    if len(batch) and (batch.min() < 0 or batch.max() >= input.shape[0]):
        raise ValueError(f"{name}: a box's batch index {int(batch.min() if batch.min() < 0 else batch.max())} "
                         f"is outside the input's batch of {input.shape[0]}")
    return rois


def _roi_align_plan(rois, shape, output_size, spatial_scale, sampling_ratio, aligned):
    """For each RoI: its batch index, the flat pixel indices (PH*PW, S) its bins read and their
    weights (PH*PW, S): the bilinear corners of each sample, and the sample count that averages
    them (torchvision's kernel: samples outside [-1, H] x [-1, W] read 0, others clamp to the
    border)."""
    height, width = shape
    ph, pw = output_size
    dt = rois.dtype.type
    plan = []
    for roi in rois:
        offset = dt(0.5) if aligned else dt(0)
        x1, y1 = roi[1] * dt(spatial_scale) - offset, roi[2] * dt(spatial_scale) - offset
        x2, y2 = roi[3] * dt(spatial_scale) - offset, roi[4] * dt(spatial_scale) - offset
        rw, rh = x2 - x1, y2 - y1
        if not aligned:
            rw, rh = max(rw, dt(1)), max(rh, dt(1))
        bh, bw = rh / dt(ph), rw / dt(pw)
        gh = sampling_ratio if sampling_ratio > 0 else _ceil_or_zero(rh / dt(ph))
        gw = sampling_ratio if sampling_ratio > 0 else _ceil_or_zero(rw / dt(pw))
        gh, gw = max(gh, 0), max(gw, 0)
        count = dt(max(gh * gw, 1))
        # sample positions: (PH, GH) rows and (PW, GW) columns
        ys = y1 + np.arange(ph, dtype=dt)[:, None] * bh + \
            (np.arange(gh, dtype=dt)[None, :] + dt(0.5)) * bh / dt(max(gh, 1))
        xs = x1 + np.arange(pw, dtype=dt)[:, None] * bw + \
            (np.arange(gw, dtype=dt)[None, :] + dt(0.5)) * bw / dt(max(gw, 1))
        y_lo, y_hi, ly, y_ok = _axis_corners(ys, height)
        x_lo, x_hi, lx, x_ok = _axis_corners(xs, width)
        # (PH, GH, PW, GW) broadcast of the four corners
        Y = (slice(None), slice(None), None, None)
        X = (None, None, slice(None), slice(None))
        ok = y_ok[Y] & x_ok[X]
        hy, hx = dt(1) - ly, dt(1) - lx
        index = [y_lo[Y] * width + x_lo[X], y_lo[Y] * width + x_hi[X],
                 y_hi[Y] * width + x_lo[X], y_hi[Y] * width + x_hi[X]]
        weight = [hy[Y] * hx[X], hy[Y] * lx[X], ly[Y] * hx[X], ly[Y] * lx[X]]
        idx = np.stack([np.broadcast_to(i, ok.shape) for i in index], -1)
        w = np.stack([np.where(ok, wt, dt(0)) for wt in weight], -1)
        # -> (PH, PW, GH * GW * 4)
        idx = idx.transpose(0, 2, 1, 3, 4).reshape(ph * pw, -1)
        w = w.transpose(0, 2, 1, 3, 4).reshape(ph * pw, -1)
        plan.append((int(roi[0]), idx, w, count))
    return plan


def _ceil_or_zero(v):
    """The adaptive sample count; a NaN or infinite box samples nothing."""
    return int(math.ceil(v)) if math.isfinite(v) else 0


def _axis_corners(v, size):
    """torchvision's bilinear_interpolate along one axis: low and high neighbours, the weight
    of the high one, and whether the sample lies inside [-1, size]."""
    dt = v.dtype.type
    ok = (v >= dt(-1)) & (v <= dt(size))  # False for NaN, which then reads pixel 0 with weight 0
    v = np.where(~ok | (v <= 0), dt(0), v)
    lo = np.floor(v).astype(np.int64)
    top = lo >= size - 1
    lo = np.where(top, size - 1, lo)
    hi = np.where(top, size - 1, lo + 1)
    v = np.where(top, lo.astype(dt), v)
    return lo, hi, v - lo.astype(dt), ok


class RoIAlignFn(Function):
    """Bilinear RoI pooling: each output bin the mean of its samples; linear in the input
    (the sampling plan depends on the boxes only), which are not differentiated (as
    torchvision)."""

    def forward(self, x, rois, output_size, spatial_scale, sampling_ratio, aligned):
        self.kwargs = dict(rois=rois, output_size=output_size, spatial_scale=spatial_scale,
                           sampling_ratio=sampling_ratio, aligned=aligned)
        xp = get_array_module(x)
        n, c, h, w = x.shape
        ph, pw = output_size
        self.x_shape = x.shape
        self.plan = _roi_align_plan(rois, (h, w), output_size, spatial_scale, sampling_ratio, aligned)
        out = xp.zeros((len(rois), c, ph * pw), dtype=x.dtype)
        planes = x.reshape(n, c, h * w)
        for k, (b, idx, wt, count) in enumerate(self.plan):
            vals = planes[b][:, xp.asarray(idx)]  # (C, P, S)
            out[k] = (vals * xp.asarray(wt, dtype=x.dtype)).sum(-1) / count  # summed, then averaged
        return out.reshape(len(rois), c, ph, pw)

    def backward(self, g):
        xp = get_array_module(g)
        n, c, h, w = self.x_shape
        gx = xp.zeros((n, h * w, c), dtype=g.dtype)
        g = g.reshape(g.shape[0], c, -1)
        for k, (b, idx, wt, count) in enumerate(self.plan):
            contrib = (g[k] / count)[:, :, None] * xp.asarray(wt, dtype=g.dtype)  # (C, P, S)
            _add_rows(gx[b], xp.asarray(idx).reshape(-1), xp.ascontiguousarray(contrib.reshape(c, -1).T))
        return gx.transpose(0, 2, 1).reshape(n, c, h, w)

    def graph_backward(self, g, out):
        return linear_graph_backward(self, g, **self.kwargs)


def roi_align(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """Mask R-CNN's RoIAlign: input (N, C, H, W), boxes a Tensor[K, 5] (batch index, x1, y1,
    x2, y2) or a list of Tensor[L, 4] per image, in input coordinates / ``spatial_scale``;
    output (K, C, *output_size). ``sampling_ratio`` samples per bin side (<= 0: adaptive,
    ceil(roi size / bins)); ``aligned`` shifts boxes by half a pixel."""
    rois = _rois("roi_align", input, boxes)
    return RoIAlignFn.apply(input, rois=rois, output_size=_pair(output_size),
                            spatial_scale=float(spatial_scale), sampling_ratio=int(sampling_ratio),
                            aligned=bool(aligned))



_FLT_MAX = float(np.finfo(np.float32).max)


def _round_half_away(v):
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


class RoIPoolFn(Function):
    """Max RoI pooling (Fast R-CNN): each bin the max over its integer window (0 for an empty
    window); the gradient goes to each bin's first maximum."""

    def forward(self, x, rois, output_size, spatial_scale):
        xp = get_array_module(x)
        n, c, h, w = x.shape
        ph, pw = output_size
        self.x_shape = x.shape
        dt = np.dtype(x.dtype).type
        out = xp.zeros((len(rois), c, ph, pw), dtype=x.dtype)
        arg = np.full((len(rois), c, ph, pw), -1, dtype=np.int64)
        bins, firsts, founds = [], [], []  # each bin's winners, read back to the host at once
        for k, roi in enumerate(rois):
            b = int(roi[0])
            sx, sy, ex, ey = (int(_round_half_away(roi[i] * dt(spatial_scale))) for i in range(1, 5))
            rw, rh = max(ex - sx + 1, 1), max(ey - sy + 1, 1)
            bh, bw = dt(rh) / dt(ph), dt(rw) / dt(pw)
            for i in range(ph):
                hs = min(max(int(math.floor(dt(i) * bh)) + sy, 0), h)
                he = min(max(int(math.ceil(dt(i + 1) * bh)) + sy, 0), h)
                for j in range(pw):
                    ws = min(max(int(math.floor(dt(j) * bw)) + sx, 0), w)
                    we = min(max(int(math.ceil(dt(j + 1) * bw)) + sx, 0), w)
                    if he <= hs or we <= ws:
                        continue
                    # torchvision's scan: the first value above -FLT_MAX that beats the
                    # ones before it (NaN never does); none such: -FLT_MAX, no gradient
                    win = x[b, :, hs:he, ws:we].reshape(c, -1)
                    win = xp.where(win > -_FLT_MAX, win, -xp.inf)
                    first = xp.argmax(win, axis=1)
                    best = win[xp.arange(c), first]
                    found = best > -_FLT_MAX
                    out[k, :, i, j] = xp.where(found, best, -_FLT_MAX)
                    bins.append((k, i, j, hs, ws, we))
                    firsts.append(first)
                    founds.append(found)
        if bins:
            firsts, founds = (to_numpy(xp.stack(v)) for v in (firsts, founds))
            for (k, i, j, hs, ws, we), first, found in zip(bins, firsts, founds):
                at = (hs + first // (we - ws)) * w + ws + first % (we - ws)
                arg[k, :, i, j] = np.where(found, at, -1)
        self.winners = _flat_winners(arg, rois[:, 0].astype(np.int64), c, h * w)
        return out

    def backward(self, g):
        return _roi_pool_scatter(g, self.winners, self.x_shape)

    def graph_backward(self, g, out):
        return RoIPoolScatter.apply(g, winners=self.winners, x_shape=self.x_shape)


def _flat_winners(argmax, batch, channels, plane):
    """Each output's flat index into the input (N*C*H*W), -1 where its window was empty."""
    k = argmax.shape[0]
    base = (batch.reshape(-1, 1, 1, 1) * channels + np.arange(channels).reshape(1, -1, 1, 1)) * plane
    return np.where(argmax >= 0, base + argmax, -1).reshape(k, channels, *argmax.shape[2:])


def _roi_pool_scatter(g, winners, x_shape):
    xp = get_array_module(g)
    gx = xp.zeros((int(np.prod(x_shape)), 1), dtype=g.dtype)
    ok = winners >= 0
    if ok.any():
        _add_rows(gx, xp.asarray(winners[ok]), g[xp.asarray(ok)].reshape(-1, 1))
    return gx.reshape(x_shape)


def _roi_pool_gather(h, winners):
    xp = get_array_module(h)
    ok = xp.asarray(winners >= 0)
    return xp.where(ok, h.reshape(-1)[xp.asarray(np.maximum(winners, 0))], 0).astype(h.dtype, copy=False)


class RoIPoolScatter(Function):
    """roi_pool's gradient as an op: g (K, C, PH, PW) added at each bin's winner in the input;
    linear in g (the winners fixed), its gradient reads h at the winners."""

    def forward(self, g, winners, x_shape):
        self.winners = winners
        return _roi_pool_scatter(g, winners, x_shape)

    def backward(self, h):
        return _roi_pool_gather(h, self.winners)

    def graph_backward(self, h, out):
        return RoIPoolGather.apply(h, winners=self.winners, x_shape=h.shape)


class RoIPoolGather(Function):
    """The input read at each bin's winner (0 for an empty window): RoIPoolScatter's
    gradient, whose own gradient scatters back."""

    def forward(self, h, winners, x_shape):
        self.winners, self.x_shape = winners, x_shape
        return _roi_pool_gather(h, winners)

    def backward(self, g):
        return _roi_pool_scatter(g, self.winners, self.x_shape)

    def graph_backward(self, g, out):
        return RoIPoolScatter.apply(g, winners=self.winners, x_shape=self.x_shape)


def roi_pool(input, boxes, output_size, spatial_scale=1.0):
    """Fast R-CNN's RoIPool: input (N, C, H, W), boxes as for ``roi_align``; box corners are
    scaled by ``spatial_scale`` and rounded to pixels, each bin the max of its window."""
    rois = _rois("roi_pool", input, boxes)
    return RoIPoolFn.apply(input, rois=rois, output_size=_pair(output_size),
                           spatial_scale=float(spatial_scale))


class RoIAlign(nn.Module):
    """``roi_align`` as a module (torchvision.ops.RoIAlign)."""

    def __init__(self, output_size, spatial_scale, sampling_ratio, aligned=False):
        super().__init__()
        self.output_size, self.spatial_scale = output_size, spatial_scale
        self.sampling_ratio, self.aligned = sampling_ratio, aligned

    def forward(self, input, rois):
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio,
                         self.aligned)

    def extra_repr(self):
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}")


class RoIPool(nn.Module):
    """``roi_pool`` as a module (torchvision.ops.RoIPool)."""

    def __init__(self, output_size, spatial_scale):
        super().__init__()
        self.output_size, self.spatial_scale = output_size, spatial_scale

    def forward(self, input, rois):
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self):
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"
