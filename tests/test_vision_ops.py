"""minidl.vision.ops: torchvision.ops' box ops, box losses, NMS and RoI poolings. torchvision
is not installed: the parity tests compare with torchvision's documented formulas written in
torch tensor ops here, and hand-checked values pin the semantics."""
import math

import numpy as np
import pytest

import minidl
from minidl.testing import gradcheck, gradgradcheck
from minidl.vision import ops


def _t(a, grad=False, dtype=minidl.float64):
    return minidl.tensor(np.asarray(a, dtype=np.float64), dtype=dtype, requires_grad=grad)


def _random_boxes(n, seed, scale=10.0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, scale, (n, 2))
    wh = rng.uniform(0.5, scale / 2, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


# ---- hand-checked values -------------------------------------------------------------------------
def test_box_area_and_iou_by_hand():
    a = _t([[0, 0, 2, 2], [1, 1, 3, 3]])
    b = _t([[1, 1, 2, 2], [5, 5, 6, 7]])
    np.testing.assert_allclose(ops.box_area(a).numpy(), [4, 4])
    np.testing.assert_allclose(ops.box_iou(a, b).numpy(), [[0.25, 0], [0.25, 0]])
    # enclosing box of [0,0,2,2] and [5,5,6,7] is 6x7=42, union 4+2=6
    np.testing.assert_allclose(ops.generalized_box_iou(a, b).numpy()[0, 1], -(42 - 6) / 42)
    # diou: centers (1,1) and (5.5,6): 4.5^2+5^2 over diagonal 6^2+7^2
    d = ops.distance_box_iou(a, b).numpy()[0, 1]
    np.testing.assert_allclose(d, -(4.5 ** 2 + 25) / (36 + 49 + 1e-7))
    assert ops.box_iou(_t(np.zeros((0, 4))), b).shape == (0, 2)


def test_integer_boxes_keep_torchvision_dtypes():
    a = minidl.tensor(np.array([[0, 0, 2, 2]], dtype=np.int64))
    assert ops.box_area(a).dtype == minidl.int64
    small = minidl.tensor([[0, 0, 200, 200]]).to(minidl.int16)
    assert ops.box_area(small).dtype == minidl.int32 and ops.box_area(small).item() == 40000
    out = ops.box_iou(a, a)
    assert out.dtype == minidl.float32 and out.item() == 1.0
    assert ops.generalized_box_iou_loss(a, a).dtype == minidl.float32
    half = minidl.tensor([[0.0, 0, 2, 2]]).to(minidl.float16)
    assert ops.box_iou(half, half).dtype == minidl.float32


def test_box_convert_round_trip_and_values():
    b = _t([[1, 2, 5, 10]])
    np.testing.assert_allclose(ops.box_convert(b, "xyxy", "xywh").numpy(), [[1, 2, 4, 8]])
    np.testing.assert_allclose(ops.box_convert(b, "xyxy", "cxcywh").numpy(), [[3, 6, 4, 8]])
    np.testing.assert_allclose(ops.box_convert(_t([[3, 6, 4, 8]]), "cxcywh", "xywh").numpy(),
                               [[1, 2, 4, 8]])
    for fmt in ("xywh", "cxcywh"):
        back = ops.box_convert(ops.box_convert(b, "xyxy", fmt), fmt, "xyxy")
        np.testing.assert_allclose(back.numpy(), b.numpy())
    same = ops.box_convert(b, "xyxy", "xyxy")
    assert same is not b and np.array_equal(same.numpy(), b.numpy())
    with pytest.raises(ValueError, match="xyzz"):
        ops.box_convert(b, "xyzz", "xyxy")


def test_clip_remove_small_masks_to_boxes():
    b = _t([[-1, 2, 30, 5], [1, -4, 3, 40]])
    np.testing.assert_allclose(ops.clip_boxes_to_image(b, (20, 10)).numpy(),
                               [[0, 2, 10, 5], [1, 0, 3, 20]])
    keep = ops.remove_small_boxes(_t([[0, 0, 1, 5], [0, 0, 2, 2], [0, 0, 3, 1.5]]), 2)
    assert keep.dtype == minidl.int64 and keep.tolist() == [1]
    m = np.zeros((3, 5, 6), dtype=bool)
    m[0, 1:3, 2:5] = True
    m[1, 4, 0] = True
    out = ops.masks_to_boxes(minidl.tensor(m[:2]))
    assert out.dtype == minidl.float32
    np.testing.assert_array_equal(out.numpy(), [[2, 1, 4, 2], [0, 4, 0, 4]])
    with pytest.raises(ValueError, match="mask 2 has no nonzero pixel"):
        ops.masks_to_boxes(minidl.tensor(m))
    assert ops.masks_to_boxes(minidl.tensor(np.zeros((0, 3, 3)))).shape == (0, 4)


def test_losses_by_hand_and_reductions():
    a = _t([[0, 0, 2, 2], [0, 0, 1, 1]])
    b = _t([[0, 0, 2, 2], [2, 2, 3, 3]])
    loss = ops.generalized_box_iou_loss(a, b).numpy()
    np.testing.assert_allclose(loss, [0, 1 + (9 - 2) / 9], atol=1e-6)
    np.testing.assert_allclose(ops.generalized_box_iou_loss(a, b, "sum").item(), loss.sum())
    np.testing.assert_allclose(ops.generalized_box_iou_loss(a, b, "mean").item(), loss.mean())
    empty = ops.generalized_box_iou_loss(_t(np.zeros((0, 4))), _t(np.zeros((0, 4))), "mean")
    assert empty.item() == 0.0
    with pytest.raises(ValueError, match="'avg'"):
        ops.generalized_box_iou_loss(a, b, "avg")
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(1, 4\)"):
        ops.generalized_box_iou_loss(a, b[:1])
    x, y = _t([0.0, 2.0]), _t([1.0, 0.0])
    # p = 0.5 at x=0, target 1: ce=log 2, (1-p_t)^2=1/4, alpha_t=0.25
    fl = ops.sigmoid_focal_loss(x, y).numpy()
    np.testing.assert_allclose(fl[0], 0.25 * 0.25 * math.log(2))
    p = 1 / (1 + math.exp(-2))
    np.testing.assert_allclose(fl[1], 0.75 * p ** 2 * -math.log(1 - p))
    np.testing.assert_allclose(ops.sigmoid_focal_loss(x, y, alpha=-1, reduction="sum").item(),
                               (fl / [0.25, 0.75]).sum())
    with pytest.raises(ValueError, match="'avg'"):
        ops.sigmoid_focal_loss(x, y, reduction="avg")
    assert math.isnan(ops.sigmoid_focal_loss(_t([]), _t([]), reduction="mean").item())


def test_bad_boxes_are_refused_with_their_shape():
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        ops.box_iou(_t(np.zeros((2, 3))), _t(np.zeros((2, 4))))
    with pytest.raises(ValueError, match=r"\(5,\)"):
        ops.box_area(_t(np.zeros(5)))


# ---- gradients -----------------------------------------------------------------------------------
PAIRWISE = [ops.box_iou, ops.generalized_box_iou, ops.distance_box_iou, ops.complete_box_iou]
ELEMENTWISE = [ops.generalized_box_iou_loss, ops.distance_box_iou_loss, ops.complete_box_iou_loss]


@pytest.mark.parametrize("fn", PAIRWISE + ELEMENTWISE, ids=lambda f: f.__name__)
def test_box_ops_gradcheck(fn):
    a_np, b_np = _random_boxes(4, 0, scale=4), _random_boxes(4, 1, scale=4)
    if fn.__name__.startswith("complete"):
        # CIoU's alpha is a constant of the gradient (torchvision's no_grad), so finite
        # differences agree only where v = 0: boxes of one aspect ratio (squares); the torch
        # parity test checks the gradient elsewhere
        a_np[:, 3] = a_np[:, 1] + (a_np[:, 2] - a_np[:, 0])
        b_np[:, 3] = b_np[:, 1] + (b_np[:, 2] - b_np[:, 0])
    a, b = _t(a_np, grad=True), _t(b_np, grad=True)
    assert gradcheck(fn, [a, b])
    assert gradgradcheck(fn, [a, b])


def test_box_convert_clip_focal_gradcheck():
    b = _t(_random_boxes(3, 2), grad=True)
    assert gradcheck(lambda t: ops.box_convert(t, "cxcywh", "xywh"), [b])
    assert gradcheck(lambda t: ops.clip_boxes_to_image(t, (6, 7)), [b])
    x = _t(np.random.default_rng(3).normal(size=(3, 4)), grad=True)
    y = _t((np.random.default_rng(4).uniform(size=(3, 4)) > 0.5).astype(float))
    for red in ("none", "mean", "sum"):
        assert gradcheck(lambda t: ops.sigmoid_focal_loss(t, y, reduction=red), [x])
    assert gradgradcheck(lambda t: ops.sigmoid_focal_loss(t, y), [x])


# ---- torch parity: torchvision's formulas in torch ops ----------------------------------------
def _torch_box_ops(torch):
    def area(b):
        return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    def inter_union(b1, b2):
        lt = torch.max(b1[:, None, :2], b2[:, :2])
        rb = torch.min(b1[:, None, 2:], b2[:, 2:])
        wh = (rb - lt).clamp(min=0)
        inter = wh[..., 0] * wh[..., 1]
        return inter, area(b1)[:, None] + area(b2) - inter

    def iou(b1, b2):
        i, u = inter_union(b1, b2)
        return i / u

    def enclosing(b1, b2):
        lt = torch.min(b1[:, None, :2], b2[:, :2])
        rb = torch.max(b1[:, None, 2:], b2[:, 2:])
        return (rb - lt).clamp(min=0)

    def giou(b1, b2):
        i, u = inter_union(b1, b2)
        wh = enclosing(b1, b2)
        a = wh[..., 0] * wh[..., 1]
        return i / u - (a - u) / a

    def diou_iou(b1, b2, eps=1e-7):
        v = iou(b1, b2)
        wh = enclosing(b1, b2)
        diag = wh[..., 0] ** 2 + wh[..., 1] ** 2 + eps
        cx1, cy1 = (b1[:, 0] + b1[:, 2]) / 2, (b1[:, 1] + b1[:, 3]) / 2
        cx2, cy2 = (b2[:, 0] + b2[:, 2]) / 2, (b2[:, 1] + b2[:, 3]) / 2
        c = (cx1[:, None] - cx2[None]) ** 2 + (cy1[:, None] - cy2[None]) ** 2
        return v - c / diag, v

    def ciou(b1, b2, eps=1e-7):
        d, v_iou = diou_iou(b1, b2, eps)
        w1, h1 = b1[:, None, 2] - b1[:, None, 0], b1[:, None, 3] - b1[:, None, 1]
        w2, h2 = b2[:, 2] - b2[:, 0], b2[:, 3] - b2[:, 1]
        v = 4 / math.pi ** 2 * (torch.atan(w1 / h1) - torch.atan(w2 / h2)) ** 2
        with torch.no_grad():
            alpha = v / (1 - v_iou + v + eps)
        return d - alpha * v

    return {"box_iou": iou, "generalized_box_iou": giou,
            "distance_box_iou": lambda a, b: diou_iou(a, b)[0], "complete_box_iou": ciou}


def _torch_losses(torch):
    def inter_union(b1, b2):
        x1, y1, x2, y2 = b1.unbind(-1)
        x1g, y1g, x2g, y2g = b2.unbind(-1)
        xk1, yk1, xk2, yk2 = torch.max(x1, x1g), torch.max(y1, y1g), torch.min(x2, x2g), \
            torch.min(y2, y2g)
        inter = torch.zeros_like(x1)
        m = (yk2 > yk1) & (xk2 > xk1)
        inter[m] = (xk2[m] - xk1[m]) * (yk2[m] - yk1[m])
        return inter, (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter

    def enclosing(b1, b2):
        x1, y1, x2, y2 = b1.unbind(-1)
        x1g, y1g, x2g, y2g = b2.unbind(-1)
        return torch.min(x1, x1g), torch.min(y1, y1g), torch.max(x2, x2g), torch.max(y2, y2g)

    def giou_loss(b1, b2, eps=1e-7):
        i, u = inter_union(b1, b2)
        xc1, yc1, xc2, yc2 = enclosing(b1, b2)
        ac = (xc2 - xc1) * (yc2 - yc1)
        return 1 - (i / (u + eps) - (ac - u) / (ac + eps))

    def diou_loss(b1, b2, eps=1e-7):
        i, u = inter_union(b1, b2)
        iou = i / (u + eps)
        xc1, yc1, xc2, yc2 = enclosing(b1, b2)
        diag = (xc2 - xc1) ** 2 + (yc2 - yc1) ** 2 + eps
        x1, y1, x2, y2 = b1.unbind(-1)
        x1g, y1g, x2g, y2g = b2.unbind(-1)
        c = ((x1 + x2) / 2 - (x1g + x2g) / 2) ** 2 + ((y1 + y2) / 2 - (y1g + y2g) / 2) ** 2
        return 1 - iou + c / diag, iou

    def ciou_loss(b1, b2, eps=1e-7):
        d, iou = diou_loss(b1, b2, eps)
        x1, y1, x2, y2 = b1.unbind(-1)
        x1g, y1g, x2g, y2g = b2.unbind(-1)
        v = 4 / math.pi ** 2 * (torch.atan((x2g - x1g) / (y2g - y1g)) - torch.atan((x2 - x1) / (y2 - y1))) ** 2
        with torch.no_grad():
            alpha = v / (1 - iou + v + eps)
        return d + alpha * v

    return {"generalized_box_iou_loss": giou_loss, "distance_box_iou_loss": lambda a, b: diou_loss(a, b)[0],
            "complete_box_iou_loss": ciou_loss}


@pytest.mark.parametrize("fn", PAIRWISE + ELEMENTWISE, ids=lambda f: f.__name__)
def test_box_ops_match_torch(fn):
    torch = pytest.importorskip("torch")
    ref = {**_torch_box_ops(torch), **_torch_losses(torch)}[fn.__name__]
    a_np, b_np = _random_boxes(6, 5), _random_boxes(6, 6)
    b_np[0] = a_np[0]  # one identical pair
    a, b = _t(a_np, grad=True), _t(b_np, grad=True)
    ta = torch.tensor(a_np, requires_grad=True)
    tb = torch.tensor(b_np, requires_grad=True)
    out, tout = fn(a, b), ref(ta, tb)
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    w = np.random.default_rng(7).normal(size=tuple(out.shape))
    (out * _t(w)).sum().backward()
    (tout * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_sigmoid_focal_loss_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x_np, y_np = rng.normal(size=(4, 3)) * 3, (rng.uniform(size=(4, 3)) > 0.5).astype(float)
    for alpha, gamma, red in ((0.25, 2.0, "none"), (-1, 0.5, "mean"), (0.6, 1.0, "sum")):
        x = _t(x_np, grad=True)
        tx = torch.tensor(x_np, requires_grad=True)
        ty = torch.tensor(y_np)
        p = torch.sigmoid(tx)
        ce = torch.nn.functional.binary_cross_entropy_with_logits(tx, ty, reduction="none")
        p_t = p * ty + (1 - p) * (1 - ty)
        tl = ce * (1 - p_t) ** gamma
        if alpha >= 0:
            tl = (alpha * ty + (1 - alpha) * (1 - ty)) * tl
        tl = {"none": tl, "mean": tl.mean(), "sum": tl.sum()}[red]
        out = ops.sigmoid_focal_loss(x, _t(y_np), alpha, gamma, red)
        np.testing.assert_allclose(out.numpy(), tl.detach().numpy(), rtol=1e-10)
        out.sum().backward()
        tl.sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-12)


# ---- NMS -----------------------------------------------------------------------------------------
def _reference_nms(b, s, thr):
    """The greedy definition, one pair at a time."""
    order = sorted(range(len(s)), key=lambda i: (-s[i], i))
    keep = []
    for i in order:
        ok = True
        for j in keep:
            w = max(min(b[i][2], b[j][2]) - max(b[i][0], b[j][0]), 0)
            h = max(min(b[i][3], b[j][3]) - max(b[i][1], b[j][1]), 0)
            inter = w * h
            area = lambda k: (b[k][2] - b[k][0]) * (b[k][3] - b[k][1])  # noqa: E731
            if inter / (area(i) + area(j) - inter) > thr:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


def test_nms_by_hand():
    boxes = _t([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]])
    scores = _t([0.9, 0.8, 0.7, 0.95])
    # box 3 wins over its duplicate 0 and over 1 (IoU 81/119 = 0.68)
    assert ops.nms(boxes, scores, 0.5).tolist() == [3, 2]
    assert ops.nms(boxes, scores, 0.7).tolist() == [3, 1, 2]
    # IoU exactly equal to the threshold does not suppress
    assert ops.nms(boxes, scores, 1.0).tolist() == [3, 0, 1, 2]
    keep = ops.nms(_t(np.zeros((0, 4))), _t(np.zeros(0)), 0.5)
    assert keep.dtype == minidl.int64 and keep.shape == (0,)
    # ties: the lower index first
    same = _t([[0, 0, 1, 1], [5, 5, 6, 6], [0, 0, 1, 1]])
    assert ops.nms(same, _t([0.5, 0.5, 0.5]), 0.5).tolist() == [0, 1]


def test_nms_matches_the_greedy_definition():
    rng = np.random.default_rng(9)
    for seed in range(5):
        b = _random_boxes(40, seed, scale=20)
        s = np.round(rng.uniform(size=40), 1)  # many ties
        for thr in (0.1, 0.3, 0.6):
            assert ops.nms(_t(b), _t(s), thr).tolist() == _reference_nms(b.tolist(), s.tolist(), thr)


def test_batched_nms():
    boxes = _t([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [20, 20, 30, 30]])
    scores = _t([0.9, 0.8, 0.85, 0.1])
    idxs = minidl.tensor([0, 0, 1, 1])
    assert ops.batched_nms(boxes, scores, idxs, 0.5).tolist() == [0, 2, 3]
    assert ops.batched_nms(boxes, scores, minidl.tensor([0, 0, 0, 0]), 0.5).tolist() == [0, 3]
    assert ops.batched_nms(_t(np.zeros((0, 4))), _t(np.zeros(0)), minidl.tensor(np.zeros(0, np.int64)),
                           0.5).shape == (0,)
    rng = np.random.default_rng(10)
    b, s, c = _random_boxes(50, 11, scale=15), rng.uniform(size=50), rng.integers(0, 3, 50)
    keep = ops.batched_nms(_t(b), _t(s), minidl.tensor(c), 0.4).tolist()
    expected = []
    for cls in range(3):
        members = np.nonzero(c == cls)[0]
        expected += [members[i] for i in _reference_nms(b[members].tolist(), s[members].tolist(), 0.4)]
    assert keep == sorted(expected, key=lambda i: -s[i])


def test_nms_refuses_bad_shapes():
    with pytest.raises(ValueError, match="2d tensor, got 1D"):
        ops.nms(_t(np.zeros(4)), _t(np.zeros(1)), 0.5)
    with pytest.raises(ValueError, match="4 elements in dimension 1, got 5"):
        ops.nms(_t(np.zeros((2, 5))), _t(np.zeros(2)), 0.5)
    with pytest.raises(ValueError, match="1d tensor, got 2D"):
        ops.nms(_t(np.zeros((2, 4))), _t(np.zeros((2, 1))), 0.5)
    with pytest.raises(ValueError, match="got 2 and 3"):
        ops.nms(_t(np.zeros((2, 4))), _t(np.zeros(3)), 0.5)
    with pytest.raises(TypeError, match="float32 and float64"):
        ops.nms(minidl.tensor(np.zeros((2, 4), np.float32)), _t(np.zeros(2)), 0.5)
    with pytest.raises(TypeError, match="int64"):
        ops.nms(minidl.tensor(np.zeros((2, 4), np.int64)), minidl.tensor(np.zeros(2, np.int64)), 0.5)
    with pytest.raises(ValueError, match="idxs"):
        ops.batched_nms(_t(np.zeros((2, 4))), _t(np.zeros(2)), minidl.tensor([0]), 0.5)


# ---- RoI poolings --------------------------------------------------------------------------------
def _torch_bilinear(torch, plane, h, w, y, x):
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return plane.new_zeros(())
    y, x = max(y, 0.0), max(x, 0.0)
    y_lo, x_lo = int(y), int(x)
    if y_lo >= h - 1:
        y_hi = y_lo = h - 1
        y = float(y_lo)
    else:
        y_hi = y_lo + 1
    if x_lo >= w - 1:
        x_hi = x_lo = w - 1
        x = float(x_lo)
    else:
        x_hi = x_lo + 1
    ly, lx = y - y_lo, x - x_lo
    hy, hx = 1 - ly, 1 - lx
    return (hy * hx * plane[y_lo, x_lo] + hy * lx * plane[y_lo, x_hi] + ly * hx * plane[y_hi, x_lo]
            + ly * lx * plane[y_hi, x_hi])


def _torch_roi_align(torch, x, rois, out_size, scale, ratio, aligned):
    """torchvision's CPU kernel, one sample at a time, in torch ops (float64 throughout)."""
    ph, pw = out_size
    h, w = x.shape[2:]
    outs = []
    for roi in rois.tolist():
        off = 0.5 if aligned else 0.0
        x1, y1, x2, y2 = (v * scale - off for v in roi[1:])
        rw, rh = x2 - x1, y2 - y1
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / ph, rw / pw
        gh = ratio if ratio > 0 else math.ceil(rh / ph)
        gw = ratio if ratio > 0 else math.ceil(rw / pw)
        count = max(gh * gw, 1)
        chans = []
        for c in range(x.shape[1]):
            plane = x[int(roi[0]), c]
            bins = []
            for i in range(ph):
                for j in range(pw):
                    acc = plane.new_zeros(())
                    for iy in range(max(gh, 0)):
                        yy = y1 + i * bh + (iy + 0.5) * bh / gh
                        for ix in range(max(gw, 0)):
                            xx = x1 + j * bw + (ix + 0.5) * bw / gw
                            acc = acc + _torch_bilinear(torch, plane, h, w, yy, xx)
                    bins.append(acc / count)
            chans.append(torch.stack(bins).reshape(ph, pw))
        outs.append(torch.stack(chans))
    return torch.stack(outs)


def _torch_roi_pool(torch, x, rois, out_size, scale):
    ph, pw = out_size
    h, w = x.shape[2:]
    rnd = lambda v: int(math.copysign(math.floor(abs(v) + 0.5), v))  # noqa: E731 (C's round)
    outs = []
    for roi in rois.tolist():
        sx, sy, ex, ey = (rnd(v * scale) for v in roi[1:])
        rw, rh = max(ex - sx + 1, 1), max(ey - sy + 1, 1)
        bh, bw = rh / ph, rw / pw
        chans = []
        for c in range(x.shape[1]):
            plane = x[int(roi[0]), c]
            bins = []
            for i in range(ph):
                hs = min(max(math.floor(i * bh) + sy, 0), h)
                he = min(max(math.ceil((i + 1) * bh) + sy, 0), h)
                for j in range(pw):
                    ws = min(max(math.floor(j * bw) + sx, 0), w)
                    we = min(max(math.ceil((j + 1) * bw) + sx, 0), w)
                    bins.append(plane.new_zeros(()) if he <= hs or we <= ws
                                else plane[hs:he, ws:we].max())
            chans.append(torch.stack(bins).reshape(ph, pw))
        outs.append(torch.stack(chans))
    return torch.stack(outs)


ROIS = np.array([[0, 0.5, 0.5, 3.2, 2.7],     # inside
                 [1, -2.0, -1.5, 8.0, 9.0],    # past every edge: samples outside [-1, H] read 0
                 [0, 1.0, 1.0, 1.2, 1.1],      # smaller than a pixel
                 [1, 3.3, 0.2, 6.9, 4.4],
                 [0, 4.0, 3.0, 2.0, 1.0]])     # reversed


def test_roi_align_by_hand_on_a_ramp():
    # bilinear sampling of a linear image is exact: each bin is the ramp at its mean sample
    x = _t(np.arange(30.0).reshape(1, 1, 5, 6))
    out = ops.roi_align(x, _t([[0, 0.5, 0.5, 3.2, 2.7]]), (2, 2)).numpy().ravel()
    # bins 1.1 high, 1.35 wide, 2x2 samples: mean rows 1.05, 2.15; mean cols 1.175, 2.525
    np.testing.assert_allclose(out, [6 * r + c for r in (1.05, 2.15) for c in (1.175, 2.525)])
    aligned = ops.roi_align(x, _t([[0, 1, 1, 3, 3]]), 1, aligned=True).item()
    np.testing.assert_allclose(aligned, 6 * 1.5 + 1.5)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("ratio,scale", [(-1, 1.0), (2, 0.5), (0, 1.5)])
def test_roi_align_matches_torch_loop(aligned, ratio, scale):
    torch = pytest.importorskip("torch")
    x_np = np.random.default_rng(12).normal(size=(2, 2, 5, 6))
    x = _t(x_np, grad=True)
    tx = torch.tensor(x_np, requires_grad=True)
    out = ops.roi_align(x, _t(ROIS), (3, 2), scale, ratio, aligned)
    tout = _torch_roi_align(torch, tx, torch.tensor(ROIS), (3, 2), scale, ratio, aligned)
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = np.random.default_rng(13).normal(size=tuple(out.shape))
    (out * _t(g)).sum().backward()
    (tout * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_roi_align_float32_and_list_boxes():
    torch = pytest.importorskip("torch")
    x_np = np.random.default_rng(14).normal(size=(2, 3, 7, 5)).astype(np.float32)
    boxes = [minidl.tensor(ROIS[ROIS[:, 0] == i, 1:]) for i in range(2)]
    out = ops.roi_align(minidl.tensor(x_np), boxes, 2, 0.8, -1, True)
    assert out.dtype == minidl.float32 and out.shape == (5, 3, 2, 2)
    order = np.argsort(ROIS[:, 0], kind="stable")
    ref = _torch_roi_align(torch, torch.tensor(x_np, dtype=torch.float64), torch.tensor(ROIS[order]), (2, 2),
                           0.8, -1, True)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)


def test_roi_align_gradcheck_and_double_backward():
    x = _t(np.random.default_rng(15).normal(size=(2, 2, 5, 6)), grad=True)
    fn = lambda t: ops.roi_align(t, _t(ROIS), (2, 3), 1.0, -1, False)  # noqa: E731
    assert gradcheck(fn, [x])
    assert gradgradcheck(fn, [x])
    assert gradcheck(lambda t: ops.roi_align(t, _t(ROIS), 2, 0.7, 2, True), [x])


def test_roi_pool_matches_torch_loop_and_gradcheck():
    torch = pytest.importorskip("torch")
    x_np = np.random.default_rng(16).normal(size=(2, 2, 6, 7))
    for size, scale in (((2, 2), 1.0), ((3, 2), 0.5), ((1, 4), 1.25)):
        x = _t(x_np, grad=True)
        tx = torch.tensor(x_np, requires_grad=True)
        out = ops.roi_pool(x, _t(ROIS), size, scale)
        tout = _torch_roi_pool(torch, tx, torch.tensor(ROIS), size, scale)
        np.testing.assert_allclose(out.numpy(), tout.detach().numpy())
        g = np.random.default_rng(17).normal(size=tuple(out.shape))
        (out * _t(g)).sum().backward()
        (tout * torch.tensor(g)).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), atol=1e-12)


def test_roi_pool_by_hand_and_gradcheck():
    x = _t(np.arange(30.0).reshape(1, 1, 5, 6), grad=True)
    # box (1, 1)-(3, 2) covers rows 1..2, cols 1..3; 1x2 bins: cols 1..2 | 2..3
    out = ops.roi_pool(x, _t([[0, 1, 1, 3, 2]]), (1, 2))
    np.testing.assert_array_equal(out.numpy().ravel(), [14, 15])
    out.sum().backward()
    assert x.grad.numpy().ravel()[[14, 15]].tolist() == [1, 1] and x.grad.numpy().sum() == 2
    # a window of -inf and NaN only: -FLT_MAX and no gradient, as torchvision's scan
    z_np = np.full((1, 1, 2, 2), -np.inf)
    z_np[0, 0, 1, 1] = np.nan
    z = _t(z_np, grad=True)
    out = ops.roi_pool(z, _t([[0, 0, 0, 1, 1]]), 1)
    assert out.item() == -np.finfo(np.float32).max
    out.sum().backward()
    assert not z.grad.numpy().any()
    y = _t(np.random.default_rng(18).normal(size=(2, 2, 6, 7)), grad=True)
    assert gradcheck(lambda t: ops.roi_pool(t, _t(ROIS), (2, 3), 0.9), [y])
    # the gradient as a function of the output's gradient (linear: a scatter to the winners),
    # and its own gradient (a gather)
    for op in (lambda t: ops.roi_pool(t, _t(ROIS), (2, 3), 0.9),
               lambda t: ops.roi_align(t, _t(ROIS), (2, 3), 0.9, -1, True)):
        v = _t(np.random.default_rng(20).normal(size=(5, 2, 2, 3)), grad=True)

        def input_grad(v, op=op):
            (gx,) = minidl.autograd.grad(op(y), y, grad_outputs=v, create_graph=True)
            return gx

        assert gradcheck(input_grad, [v])
        assert gradgradcheck(input_grad, [v])


def test_roi_modules_and_bad_boxes():
    x = _t(np.random.default_rng(19).normal(size=(2, 2, 5, 6)))
    m = ops.RoIAlign((2, 2), 0.5, 2, aligned=True)
    np.testing.assert_array_equal(m(x, _t(ROIS)).numpy(), ops.roi_align(x, _t(ROIS), 2, 0.5, 2, True).numpy())
    assert "aligned=True" in repr(m)
    p = ops.RoIPool(3, 1.0)
    np.testing.assert_array_equal(p(x, _t(ROIS)).numpy(), ops.roi_pool(x, _t(ROIS), 3).numpy())
    with pytest.raises(ValueError, match=r"Tensor\[K, 5\].*\(2, 4\)"):
        ops.roi_align(x, _t(np.zeros((2, 4))), 2)
    with pytest.raises(ValueError, match=r"boxes\[1\].*\(3, 5\)"):
        ops.roi_pool(x, [_t(np.zeros((1, 4))), _t(np.zeros((3, 5)))], 2)
    with pytest.raises(TypeError, match=r"float64\) and boxes \(float32"):
        ops.roi_align(x, minidl.tensor(ROIS.astype(np.float32)), 2)
    with pytest.raises(ValueError, match="batch index 2"):
        ops.roi_align(x, _t([[2, 0, 0, 1, 1]]), 2)
    with pytest.raises(ValueError, match=r"\(2, 5, 6\)"):
        ops.roi_align(x[0], _t(ROIS), 2)
    assert ops.roi_align(x, _t(np.zeros((0, 5))), 2).shape == (0, 2, 2, 2)
    # a NaN box samples nothing (torchvision's kernel: every sample outside), no crash
    for ratio in (2, -1):
        nan_box = ops.roi_align(x, _t([[0, np.nan, 0, 2, 2]]), 2, sampling_ratio=ratio)
        assert np.array_equal(nan_box.numpy(), np.zeros((1, 2, 2, 2)))


# ---- vision.ops: NMS --------------------------------------------------------------------------

def f64(x, requires_grad=False):
    return minidl.tensor(np.asarray(x, dtype=np.float64), dtype=minidl.float64,
                         requires_grad=requires_grad)


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def test_nms_puts_a_nan_score_first_as_torchs_descending_sort():
    """NMS ordered the boxes by np.argsort(-scores), which puts a NaN score last; torchvision
    sorts with torch's descending sort, where NaN ranks above every number, so the NaN-scored
    box is kept first and suppresses its overlaps (batched_nms's final order too)."""
    from minidl.vision import ops
    boxes = minidl.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 11, 11.]])
    scores = minidl.tensor([1.0, float("nan"), 2.0])
    assert ops.nms(boxes, scores, 0.5).tolist() == [1]
    assert ops.batched_nms(boxes, scores, minidl.tensor([0, 1, 2]), 0.5).tolist() == [1, 2, 0]
    inf_and_nan = minidl.tensor([1.0, float("inf"), float("nan")])
    assert ops.nms(boxes, inf_and_nan, 0.99).tolist() == [2, 1]


def test_nms_of_empty_boxes_gives_no_warning():
    """Two zero-area boxes divided 0 by 0 for their IoU with NumPy's RuntimeWarning; the NaN
    IoU suppresses nothing, silently, as torchvision's kernel."""
    import warnings

    from minidl.vision import ops
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keep = ops.nms(minidl.tensor([[0, 0, 0, 0.], [0, 0, 0, 0.]]), minidl.tensor([1., 2.]), 0.5)
    assert keep.tolist() == [1, 0]


# ---- vision.ops: RoI poolings with no bins ----------------------------------------------------

@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
def test_roi_ops_with_zero_output_size_give_an_empty_output(op):
    """roi_align with output_size 0 raised NumPy's "cannot reshape array of size 0" (after
    divide-by-zero warnings), roi_pool warned; torchvision's kernels give an empty
    (K, C, 0, 0) output, whose gradient is zeros. A negative size is refused, naming it."""
    import warnings

    from minidl.vision import ops
    x = f64(_rand(2, 3, 6, 6), requires_grad=True)
    boxes = f64([[0, 0, 0, 3, 3], [1, 1, 1, 4, 5]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = getattr(ops, op)(x, boxes, 0)
        assert y.shape == (2, 3, 0, 0)
        y.sum().backward()
    assert x.grad.shape == x.shape and not x.grad.numpy().any()
    assert getattr(ops, op)(x, boxes, (0, 2)).shape == (2, 3, 0, 2)
    with pytest.raises(ValueError, match="output_size"):
        getattr(ops, op)(x, boxes, -1)
