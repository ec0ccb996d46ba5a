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

from ..nn import functional as F
from ..tensor import Tensor

__all__ = ["box_area", "box_iou", "generalized_box_iou", "distance_box_iou", "complete_box_iou",
           "box_convert", "clip_boxes_to_image", "remove_small_boxes", "masks_to_boxes",
           "generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss",
           "sigmoid_focal_loss", "nms", "batched_nms"]


# ---- boxes ---------------------------------------------------------------------------------------
def _check_boxes(name, boxes, arg="boxes"):
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name}: {arg} must be a Tensor, got {type(boxes).__name__}")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name}: {arg} must be a Tensor[N, 4], got shape {tuple(boxes.shape)}")


def _upcast(t):
    """torchvision's _upcast: integer boxes become float32 so that products do not overflow;
    float16 becomes float32 too."""
    dt = np.dtype(t.dtype)
    if dt.kind in "iub" or dt.itemsize < 4:
        return t.to(minidl.float32)
    return t


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
    an empty mask gives a box of zeros."""
    if not isinstance(masks, Tensor) or masks.ndim != 3:
        raise ValueError(f"masks_to_boxes: masks must be a Tensor[N, H, W], got shape "
                         f"{tuple(getattr(masks, 'shape', ()))}")
    m = masks.detach().numpy() != 0
    n = m.shape[0]
    out = np.zeros((n, 4), dtype=np.float32)
    for i in range(n):
        ys, xs = np.nonzero(m[i])
        if len(ys):
            out[i] = (xs.min(), ys.min(), xs.max(), ys.max())
    return minidl.tensor(out, device=masks.device)


# ---- losses --------------------------------------------------------------------------------------
def _reduce(name, loss, reduction):
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()
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
    boxes1, boxes2 = _upcast(boxes1), _upcast(boxes2)
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
    loss, _ = _loss_diou(_upcast(boxes1), _upcast(boxes2), eps)
    return _reduce("distance_box_iou_loss", loss, reduction)


def complete_box_iou_loss(boxes1, boxes2, reduction="none", eps=1e-7):
    """1 - CIoU of matching boxes (..., 4) xyxy, elementwise (alpha a constant of the gradient)."""
    _pair_check("complete_box_iou_loss", boxes1, boxes2)
    boxes1, boxes2 = _upcast(boxes1), _upcast(boxes2)
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
    return _reduce("sigmoid_focal_loss", loss, reduction)


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
        suppressed[rest[iou > iou_threshold]] = True
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
