"""Shared test helpers: float64 leaves for gradient checks, inputs with distinct values, slow
reference implementations that are obviously correct (nested loops), and the comparisons
with torch that many files make (``same``, ``both_raise``, ``load_from``)."""
from __future__ import annotations

import numpy as np
import pytest

import minidl


def leaf(array, requires_grad=True, dtype="float64"):
    """A float64 leaf for gradcheck (minidl.tensor would turn float64 into float32)."""
    return minidl.tensor(np.asarray(array), requires_grad=requires_grad, dtype=dtype)


def randn(shape, seed=0, requires_grad=True, dtype="float64"):
    return leaf(np.random.default_rng(seed).standard_normal(shape), requires_grad, dtype)


def distinct(shape, seed=0, spacing=0.1, dtype="float64"):
    """Values a permutation of spacing * (0..n-1), centred: no ties, so a max is unique and
    finite differences with eps << spacing never switch the winner."""
    n = int(np.prod(shape))
    values = (np.random.default_rng(seed).permutation(n) - n / 2) * spacing
    return values.reshape(shape).astype(dtype)


def away_from_zero(shape, seed=0, margin=0.1):
    """Normal values with |x| >= margin, for ops with a kink at 0 (relu, abs)."""
    x = np.random.default_rng(seed).standard_normal(shape)
    return np.where(x >= 0, x + margin, x - margin)


# ---- slow references ----------------------------------------------------------------------
def conv2d_reference(x, w, b=None, stride=1, padding=0):
    """Cross-correlation by explicit loops over every output element."""
    n, c, h, wd = x.shape
    co, ci, kh, kw = w.shape
    assert c == ci
    xp = np.zeros((n, c, h + 2 * padding, wd + 2 * padding), dtype=np.float64)
    xp[:, :, padding:padding + h, padding:padding + wd] = x
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (wd + 2 * padding - kw) // stride + 1
    y = np.zeros((n, co, oh, ow), dtype=np.float64)
    for b_ in range(n):
        for o in range(co):
            for i in range(oh):
                for j in range(ow):
                    total = 0.0
                    for ch in range(c):
                        for di in range(kh):
                            for dj in range(kw):
                                total += (xp[b_, ch, i * stride + di, j * stride + dj]
                                          * w[o, ch, di, dj])
                    y[b_, o, i, j] = total + (b[o] if b is not None else 0.0)
    return y


def max_pool2d_reference(x, k, stride, padding):
    """Max over each window; padded cells never win (they count as -inf)."""
    n, c, h, w = x.shape
    oh = (h + 2 * padding - k) // stride + 1
    ow = (w + 2 * padding - k) // stride + 1
    y = np.empty((n, c, oh, ow), dtype=np.float64)
    for b in range(n):
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    best = -np.inf
                    for di in range(k):
                        for dj in range(k):
                            r, s = i * stride + di - padding, j * stride + dj - padding
                            if 0 <= r < h and 0 <= s < w:
                                best = max(best, x[b, ch, r, s])
                    y[b, ch, i, j] = best
    return y


def avg_pool2d_reference(x, k, stride, padding):
    """Mean over each window with padding counted as zeros (count_include_pad=True)."""
    n, c, h, w = x.shape
    oh = (h + 2 * padding - k) // stride + 1
    ow = (w + 2 * padding - k) // stride + 1
    y = np.empty((n, c, oh, ow), dtype=np.float64)
    for b in range(n):
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    total = 0.0
                    for di in range(k):
                        for dj in range(k):
                            r, s = i * stride + di - padding, j * stride + dj - padding
                            if 0 <= r < h and 0 <= s < w:
                                total += x[b, ch, r, s]
                    y[b, ch, i, j] = total / (k * k)
    return y


# Two classes of generated photos that even a random ResNet-50 tells apart (colour and texture
# both differ), for the photo-folder classifier's tests.
PHOTO_PATTERNS = {
    "red_stripes": lambda yy, xx: np.where((yy // 6) % 2, 1.0, 0.45)[..., None] * [220, 40, 40],
    "teal_checks": lambda yy, xx: np.where((yy // 8 + xx // 8) % 2, 1.0, 0.3)[..., None]
    * [30, 170, 190],
}


def make_photo_folder(root, per_class=6, seed=0):
    """``root/<class>/<i>.jpg|png``: per_class noisy photos of each pattern, 48+4i x 64 pixels,
    every third one a PNG. Returns root."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, pattern in PHOTO_PATTERNS.items():
        (root / name).mkdir()
        for i in range(per_class):
            h, w = 48 + 4 * i, 64
            yy, xx = np.mgrid[0:h, 0:w]
            img = pattern(yy, xx) * (0.8 + 0.4 * rng.random()) + rng.normal(0, 8, (h, w, 3))
            ext = "png" if i % 3 == 0 else "jpg"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name / f"{i}.{ext}")
    return root


_ENGINE_FOUND = []  # torch's quantized engine as the running test found it


def use_quantized_engine(torch, engine):
    """Set torch's quantized engine for this test; conftest puts back the one the test found
    when it ends, so a file that runs later in the same process (pytest-xdist hands whole
    files to a worker) sees torch's default ('x86'), not the engine a parity test chose."""
    if not _ENGINE_FOUND:
        _ENGINE_FOUND.append(torch.backends.quantized.engine)
    torch.backends.quantized.engine = engine


def put_back_quantized_engine():
    if _ENGINE_FOUND:
        import torch

        torch.backends.quantized.engine = _ENGINE_FOUND.pop()


# ---- comparisons with torch (torch is not imported here: files that run without it use the rest)
def f64_tensor(a, requires_grad=False):
    return minidl.tensor(np.asarray(a), dtype=minidl.float64, requires_grad=requires_grad)


def same(mine, theirs, what="", atol=1e-9, rtol=1e-7):
    """minidl's result equals torch's (a Tensor of either framework, or an array): the same
    shape and dtype, and values within atol/rtol, NaN where torch has NaN."""
    a = mine.numpy() if isinstance(mine, minidl.Tensor) else np.asarray(mine)
    b = theirs.detach().numpy() if _is_torch_tensor(theirs) else np.asarray(theirs)
    assert a.shape == b.shape, f"{what}: shape {a.shape} vs torch's {b.shape}"
    assert str(a.dtype) == str(b.dtype), f"{what}: dtype {a.dtype} vs torch's {b.dtype}"
    np.testing.assert_allclose(a, b, atol=atol, rtol=rtol, equal_nan=True, err_msg=what)


def _is_torch_tensor(value):
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def load_from(tm, mm):
    """Load torch module ``tm``'s state into minidl module ``mm``; returns ``mm``."""
    mm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    return mm


def raises_like_torch(fn_m, fn_t):
    """Both ``fn_t`` (torch) and ``fn_m`` (minidl) raise a RuntimeError; returns their messages
    (torch's, minidl's)."""
    with pytest.raises(RuntimeError) as theirs:
        fn_t()
    with pytest.raises(RuntimeError) as ours:
        fn_m()
    return str(theirs.value), str(ours.value)


def both_raise(fm, ft, mine_types, match=None):
    """torch raises; minidl raises an error that is also each of ``mine_types``."""
    with pytest.raises(Exception) as te:
        ft()
    with pytest.raises(Exception) as me:
        fm()
    assert isinstance(me.value, tuple(mine_types)), (type(me.value), te.value)
    for cls in mine_types:
        assert isinstance(me.value, cls), f"{type(me.value).__name__} is not a {cls.__name__}"
    assert isinstance(me.value, type(te.value)) or type(te.value) is AssertionError, (
        f"minidl raised {type(me.value).__name__}, torch {type(te.value).__name__}")
    if match:
        assert match in str(me.value), str(me.value)


# ---- kl_divergence across families: the (p, q) pairs torch 2.13 registers (test_distributions
# checks and compares each; test_fuzz_ops_torch fuzzes their parameters)
KL_CROSS_PAIRS = [
    ("Bernoulli", "Poisson"), ("Beta", "Exponential"), ("Beta", "Gamma"), ("Beta", "Normal"),
    ("Beta", "Pareto"), ("Beta", "Uniform"), ("Binomial", "Binomial"), ("Exponential", "Beta"),
    ("Exponential", "Gamma"), ("Exponential", "Gumbel"), ("Exponential", "Normal"),
    ("Exponential", "Pareto"), ("Exponential", "Uniform"), ("Gamma", "Beta"),
    ("Gamma", "Exponential"), ("Gamma", "Gumbel"), ("Gamma", "Normal"), ("Gamma", "Pareto"),
    ("Gamma", "Uniform"), ("Gumbel", "Beta"), ("Gumbel", "Exponential"), ("Gumbel", "Gamma"),
    ("Gumbel", "Normal"), ("Gumbel", "Pareto"), ("Gumbel", "Uniform"), ("Laplace", "Beta"),
    ("Laplace", "Exponential"), ("Laplace", "Gamma"), ("Laplace", "Normal"),
    ("Laplace", "Pareto"), ("Laplace", "Uniform"), ("Normal", "Beta"),
    ("Normal", "Exponential"), ("Normal", "Gamma"), ("Normal", "Gumbel"),
    ("Normal", "Laplace"), ("Normal", "Pareto"), ("Normal", "Uniform"), ("Pareto", "Beta"),
    ("Pareto", "Exponential"), ("Pareto", "Gamma"), ("Pareto", "Normal"),
    ("Pareto", "Pareto"), ("Pareto", "Uniform"), ("Poisson", "Bernoulli"),
    ("Poisson", "Binomial"), ("Uniform", "Beta"), ("Uniform", "Exponential"),
    ("Uniform", "Gamma"), ("Uniform", "Gumbel"), ("Uniform", "Normal"), ("Uniform", "Pareto"),
]
