"""torch's CPU random numbers: its engine (mt19937, seeded as ``torch.manual_seed`` seeds it),
its state layout (``torch.get_rng_state``'s 5056 bytes) and the recipes its CPU kernels turn
the engine's 32-bit words into numbers with, so that minidl after ``manual_seed(s)`` draws what
torch draws after ``torch.manual_seed(s)``.

The engine is NumPy's MT19937 bit generator (the same algorithm and state): a minidl Generator
keeps one inside a NumPy Generator (``backend.rng()``), and the words are read with
``random_raw``, vectorised. The recipes, established against torch 2.13:

* ``random()`` is one word, ``random64()`` two, the first the high half.
* uniform float32: ``(w & (2**24 - 1)) * 2**-24`` from one word, scaled to [a, b) in double
  arithmetic and rounded to float; float64: 53 bits of ``random64()``, ``fma(u, b - a, a)``.
* normal, 16 or more values: uniforms for all of them first (float32 or float64 recipe), then
  Box-Muller in blocks of 16 (the first 8 give the radii, the last 8 the angles); a size that
  is not a multiple of 16 draws 16 more uniforms and redoes the last 16 values from them.
  Fewer than 16 values: one value at a time from two float64 uniforms, the second sample kept
  for the next value (``_normal_double``; manual_seed clears it).
* integers on a range below 2**28: ``random() % range``; from 2**28 on: ``random64() % range``.
* randperm: Fisher-Yates with ``random() % (n - i)``.
"""
from __future__ import annotations

import math

import numpy as np

STATE_BYTES = 5056  # torch.get_rng_state().numel() on the CPU
_N = 624
_U64 = np.uint64


# ---- the engine --------------------------------------------------------------------------------
def seeded_state(seed):
    """NumPy MT19937's state dict for torch's ``manual_seed(seed)`` (mt19937 init_genrand of the
    seed's low 32 bits; the first draw regenerates the block)."""
    key = np.empty(_N, dtype=np.uint32)
    x = int(seed) & 0xFFFFFFFF
    key[0] = x
    for i in range(1, _N):
        x = (1812433253 * (x ^ (x >> 30)) + i) & 0xFFFFFFFF
        key[i] = x
    return {"bit_generator": "MT19937", "state": {"key": key, "pos": _N}}


def words(gen, n):
    """``n`` draws of torch's ``random()`` (uint32 values, as uint64)."""
    if n <= 0:
        return np.empty(0, dtype=_U64)
    return gen._gen.bit_generator.random_raw(int(n))


def words64(gen, n):
    """``n`` draws of torch's ``random64()``: two words each, the first the high half."""
    w = words(gen, 2 * n)
    return (w[0::2] << _U64(32)) | w[1::2]


# ---- the state in torch's layout ---------------------------------------------------------------
# uint64 seed | int32 left | int32 seeded | uint64 next | uint64 state[624] | double normal_x,
# normal_y (the cached double sample), normal_rho | int32 normal_is_valid (+4) | float cached
# float sample | bool its flag (+3)
_OFF_STATE, _OFF_NORMAL_Y, _OFF_VALID, _OFF_FLOAT, _OFF_FLOAT_VALID = 24, 5024, 5040, 5048, 5052


def state_bytes(gen):
    state = gen._gen.bit_generator.state["state"]
    pos = int(state["pos"])
    out = np.zeros(STATE_BYTES, dtype=np.uint8)
    out[0:8] = np.frombuffer(np.uint64(gen._initial_seed).tobytes(), dtype=np.uint8)
    out[8:12] = np.frombuffer(np.int32(_N + 1 - pos).tobytes(), dtype=np.uint8)
    out[12:16] = np.frombuffer(np.int32(1).tobytes(), dtype=np.uint8)
    out[16:24] = np.frombuffer(np.uint64(_next_index(gen, state, pos)).tobytes(),
                               dtype=np.uint8)
    out[_OFF_STATE:_OFF_STATE + 8 * _N] = np.asarray(state["key"], dtype="<u8").view(np.uint8)
    if gen._normal_double is not None:
        out[_OFF_NORMAL_Y:_OFF_NORMAL_Y + 8] = np.frombuffer(
            np.float64(gen._normal_double).tobytes(), dtype=np.uint8)
        out[_OFF_VALID] = 1
    if gen._normal_float is not None:
        out[_OFF_FLOAT:_OFF_FLOAT + 4] = np.frombuffer(
            np.float32(gen._normal_float).tobytes(), dtype=np.uint8)
        out[_OFF_FLOAT_VALID] = 1
    return out


def _next_index(gen, state, pos):
    """torch's ``next``: the position, except 0 (not 624) right after seeding: the two cannot
    be told apart by NumPy's position, so the words are compared with the seed's."""
    if pos != _N:
        return pos
    fresh = seeded_state(gen._initial_seed)["state"]["key"]
    return 0 if np.array_equal(np.asarray(state["key"], dtype=np.uint32), fresh) else _N


def load_state_bytes(gen, array):
    """Put back a state in torch's layout (minidl's or torch's own); ValueError if it is not one."""
    if array.ndim != 1 or array.size != STATE_BYTES:
        raise ValueError(f"expected {STATE_BYTES} bytes (torch's CPU state layout), got "
                         f"{array.size}")
    raw = array.tobytes()
    seed = int(np.frombuffer(raw, dtype="<u8", count=1, offset=0)[0])
    left = int(np.frombuffer(raw, dtype="<i4", count=1, offset=8)[0])
    if not 1 <= left <= _N:
        raise ValueError(f"the engine's position is corrupt (left = {left})")
    key = np.frombuffer(raw, dtype="<u8", count=_N, offset=_OFF_STATE)
    if (key >> _U64(32)).any():
        raise ValueError("the engine's words do not fit 32 bits")
    gen._gen.bit_generator.state = {"bit_generator": "MT19937",
                                    "state": {"key": key.astype(np.uint32), "pos": _N + 1 - left}}
    gen._initial_seed = seed
    valid = np.frombuffer(raw, dtype="<i4", count=1, offset=_OFF_VALID)[0]
    gen._normal_double = float(np.frombuffer(raw, dtype="<f8", count=1,
                                             offset=_OFF_NORMAL_Y)[0]) if valid else None
    gen._normal_float = float(np.frombuffer(raw, dtype="<f4", count=1, offset=_OFF_FLOAT)[0]) \
        if array[_OFF_FLOAT_VALID] else None


# ---- exact fma for float64 (torch's compiled u * (b - a) + a is one) ---------------------------
def _two_sum(a, b, s):
    bb = s - a
    return (a - (s - bb)) + (b - bb)


def _two_prod_err(a, b, p):
    split = 134217729.0  # 2**27 + 1
    ca, cb = split * a, split * b
    ah, bh = ca - (ca - a), cb - (cb - b)
    al, bl = a - ah, b - bh
    return ((ah * bh - p) + ah * bl + al * bh) + al * bl


def fma(a, b, c):
    """``a * b + c`` rounded once (Boldo-Melquiond: exact product and sum, the low parts added
    rounding to odd), elementwise on float64 arrays."""
    a, b, c = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                  np.asarray(c, np.float64))
    with np.errstate(all="ignore"):
        p = a * b
        e = _two_prod_err(a, b, p)
        s = p + c
        t = _two_sum(p, c, s)
        v = t + e
        w = _two_sum(t, e, v)
        even = (v.view(np.int64) & 1) == 0
        fix = (w != 0) & even & np.isfinite(v)
        if fix.any():
            v = np.where(fix, np.nextafter(v, np.where(w > 0, np.inf, -np.inf)), v)
        out = s + v
    bad = ~np.isfinite(out) | ~np.isfinite(p)
    if bad.any():  # overflow or non-finite inputs: the plain formula
        out = np.where(bad, a * b + c, out)
    return out


def _fused():
    """Whether torch's compiled ``u * (b - a) + a`` (uniform_) is one fma: yes in
    its AVX2 and AVX-512 builds on x86-64 (and on other architectures); no in its x86-64
    DEFAULT build, compiled without FMA, which torch runs on a CPU without AVX2 or under
    ``ATEN_CPU_CAPABILITY=default`` (found by experiment: torch 2.13's uniform_ there is the
    twice-rounded formula, in double for float64 and in float for float32, and so is normal_'s
    ``z * std + mean`` on fewer than 16 values, one at a time in double; on 16 or more it
    stays one fma there)."""
    from .capabilities import cpu_capability, get_capabilities

    caps = get_capabilities()
    if "sse2" not in caps:  # not x86-64, or a processor that cannot be read
        return True
    return bool(caps.get("avx2")) and cpu_capability() != "DEFAULT"


def _mul_add(a, b, c):
    """float64 ``a * b + c`` as torch's compiled kernels round it (see ``_fused``)."""
    if _fused():
        return fma(a, b, c)
    return np.asarray(a, np.float64) * np.float64(b) + np.float64(c)


# ---- distributions ------------------------------------------------------------------------------
def _is_float32_recipe(dtype):
    return np.dtype(dtype) != np.float64


def uniform(gen, n, dtype, low=0.0, high=1.0):
    """``n`` values uniform on [low, high) as torch's ``uniform_`` (float32 recipe for every
    dtype but float64, then cast)."""
    if not _is_float32_recipe(dtype):
        u = (words64(gen, n) & _U64((1 << 53) - 1)).astype(np.float64) * 2.0**-53
        if low == 0.0 and high == 1.0:
            return u
        return _mul_add(u, float(high) - float(low), float(low))
    if low == 0.0 and high == 1.0:  # the 24 bits times 2**-24: exact in float32
        u = (words(gen, n) & _U64((1 << 24) - 1)).astype(np.float32) * np.float32(2.0**-24)
        return u if np.dtype(dtype) == np.float32 else _narrowed(u, dtype, low, high)
    u = (words(gen, n) & _U64((1 << 24) - 1)).astype(np.float64) * 2.0**-24
    lo, hi = np.float32(low), np.float32(high)
    with np.errstate(over="ignore"):
        if not _fused():  # torch's DEFAULT x86-64 build: float product rounded, then the sum
            out = u.astype(np.float32) * (hi - lo) + lo
        else:
            span = np.float64(hi - lo)  # torch subtracts in float, computes in double
            out = (u * span + np.float64(lo)).astype(np.float32)
    return out if np.dtype(dtype) == np.float32 else _narrowed(out, dtype, low, high)


def _narrowed(values, dtype, low, high):
    """float32 uniforms cast to a narrower dtype as torch does: one that rounds up to ``high``
    becomes ``low`` (found by experiment on bfloat16), so [low, high) holds."""
    out = values.astype(dtype)
    top = np.asarray(high).astype(dtype)
    hit = out == top
    if hit.any():
        out[hit] = np.asarray(low).astype(dtype)
    return out


def _box_muller16_numpy(data, theta_in_double=False):
    blocks = data.reshape(-1, 16)
    one = data.dtype.type(1)
    u1, u2 = one - blocks[:, :8], blocks[:, 8:].copy()
    radius = np.sqrt(data.dtype.type(-2) * np.log(u1))
    if theta_in_double:
        theta = (2.0 * math.pi * u2.astype(np.float64)).astype(data.dtype)
    else:
        theta = data.dtype.type(2.0 * math.pi) * u2
    blocks[:, :8] = radius * np.cos(theta)
    blocks[:, 8:] = radius * np.sin(theta)


def _box_muller16(data):
    """torch's normal_fill_16 on each block of 16 of ``data`` (float32 or float64, in place)."""
    kernel = _kernel("box_muller16")
    # torch's DEFAULT x86-64 build fills float32 blocks with its scalar code, whose angle is
    # 2 pi u in double (found by experiment, as _fused says)
    in_double = not _fused()
    if kernel is None:  # no numba: NumPy's log/cos/sin, which may differ from libm's in an ulp
        _box_muller16_numpy(data, in_double)
        return
    kernel(data, in_double)


def _kernel(name):
    """The numba kernel ``name`` (backend/cpu/random.py), or None without numba."""
    from . import kernels

    return getattr(kernels(np), name, None)


def normal(gen, n, dtype, mean=0.0, std=1.0, contiguous=True):
    """``n`` values of N(mean, std**2) as torch's ``normal_`` on a contiguous tensor (or, with
    ``contiguous=False``, on one that is not: the one-at-a-time path whatever the size)."""
    dtype = np.dtype(dtype)
    work = np.float64 if dtype == np.float64 else np.float32
    if n >= 16 and contiguous:
        body = n - n % 16
        # float32/float64 draw a uniform for every value first; float16/bfloat16 (found by
        # experiment) only for the whole blocks
        data = uniform(gen, n if dtype == work else body, work)
        if dtype != work:
            data = np.concatenate([data, np.zeros(n - body, dtype=work)])
        _box_muller16(data[:body])
        if n % 16:
            tail = uniform(gen, 16, work)
            _box_muller16(tail)
            data[n - 16:] = tail
        if mean != 0.0 or std != 1.0:  # torch's z * std + mean is one fma
            data = _scale(data, mean, std)
        return data if dtype == work else data.astype(dtype)
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        cached = gen._normal_double
        if cached is not None:
            gen._normal_double = None
            out[i] = cached
            continue
        u = (words64(gen, 2) & _U64((1 << 53) - 1)).astype(np.float64) * 2.0**-53
        radius = math.sqrt(-2.0 * math.log1p(-float(u[1])))
        theta = 2.0 * math.pi * float(u[0])
        gen._normal_double = radius * math.sin(theta)
        out[i] = radius * math.cos(theta)
    if mean != 0.0 or std != 1.0:  # in double; one fma but in torch's DEFAULT x86-64 build
        out = _mul_add(out, float(std), float(mean))
    return out.astype(dtype)


def _scale(z, mean, std):
    """``z * std + mean`` as torch's compiled kernels compute it, one fma (a float32 one:
    the exact product in double, rounded once more to float)."""
    if z.dtype == np.float64:
        return fma(z, float(std), float(mean))
    return (z.astype(np.float64) * np.float64(np.float32(std)) +
            np.float64(np.float32(mean))).astype(np.float32)


def integers(gen, n, low, high):
    """``n`` int64 values uniform on [low, high) as torch's ``random_(low, high)``/randint."""
    span = int(high) - int(low)
    if span >= 1 << 28:
        r = words64(gen, n) % _U64(span)
    else:
        r = words(gen, n) % _U64(span)
    if low >= 0:
        return (r + _U64(low)).astype(np.int64)
    return (r.astype(np.int64) + np.int64(low)) if span < 1 << 63 else \
        (r + _U64(low % 2**64)).astype(np.int64)


def permutation(gen, n):
    """torch's CPU randperm(n) (int64)."""
    out = np.arange(n, dtype=np.int64)
    if n < 2:
        return out
    if n >= (2**32 - 1) // 20:  # torch's large-n path (inside-out shuffle on random64)
        r = words64(gen, n) % (np.arange(n, dtype=_U64) + _U64(1))
        _shuffle(out, r.astype(np.int64), inside_out=True)
        return out
    z = (words(gen, n - 1) % np.arange(n, 1, -1, dtype=_U64)).astype(np.int64)
    _shuffle(out, z, inside_out=False)
    return out


def _shuffle(out, z, inside_out):
    kernel = _kernel("shuffle")
    if kernel is not None:
        kernel(out, z, inside_out)
        return
    if inside_out:
        for i in range(out.size):
            j = int(z[i])
            out[i] = out[j]
            out[j] = i
    else:
        for i in range(z.size):
            j = i + int(z[i])
            out[i], out[j] = out[j], out[i]


# ---- shaped draws for the random functions ------------------------------------------------------
def draw_dtype(dtype):
    """The dtype torch's recipes fill a tensor of ``dtype`` with: its own for a floating or
    complex dtype (float16/bfloat16 included), else float32 (then cast)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "fc" or str(dtype) == "bfloat16":
        return dtype
    return np.dtype(np.float32)


def _parts(shape, dtype):
    """(count of real values, their dtype, whether complex) for a tensor of ``shape``/``dtype``:
    a complex tensor is drawn as its real view (real, imaginary interleaved), as torch's."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64))
    if dtype.kind == "c":
        return 2 * n, np.dtype(np.float64 if dtype == np.complex128 else np.float32), True
    return n, dtype, False


def _shaped(values, shape, dtype, is_complex):
    if is_complex:
        values = values.reshape(tuple(shape) + (2,))
        return (values[..., 0] + 1j * values[..., 1]).astype(dtype)
    return values.reshape(shape)


def _memory_order(like):
    """The axes of ``like`` (an array the draws fill) from the largest stride to the smallest,
    or None where that is C order: torch fills a tensor in its memory order (a transposed
    view: column by column)."""
    strides = getattr(like, "strides", None)
    if strides is None or getattr(like, "ndim", 0) < 2:
        return None
    perm = sorted(range(like.ndim), key=lambda a: -abs(strides[a]))
    return None if perm == list(range(like.ndim)) else perm


def _in_memory_order(draw, shape, like):
    perm = _memory_order(like)
    if perm is None:
        return draw(tuple(shape), True)
    values = draw(tuple(shape[a] for a in perm), False)
    return values.transpose(np.argsort(perm))


def uniform_array(gen, shape, dtype, low=0.0, high=1.0, like=None):
    """An array of ``shape`` uniform on [low, high), as torch's ``uniform_`` fills a tensor
    (``like``: the array it fills, whose memory order the draws follow)."""
    def draw(shape, contiguous):
        n, part, is_complex = _parts(shape, dtype)
        return _shaped(uniform(gen, n, part, low, high), shape, dtype, is_complex)
    return _in_memory_order(draw, shape, like)


def normal_array(gen, shape, dtype, mean=0.0, std=1.0, like=None):
    """An array of ``shape`` of N(mean, std**2), as torch's ``normal_`` fills a tensor (a complex
    one: each part N(mean, std**2 / 2)); ``like`` as for uniform_array (a tensor that is not
    contiguous takes torch's one-at-a-time path)."""
    def draw(shape, contiguous):
        n, part, is_complex = _parts(shape, dtype)
        scale = std / math.sqrt(2) if is_complex else std  # torch's (not std * sqrt(0.5))
        return _shaped(normal(gen, n, part, mean, scale, contiguous), shape, dtype, is_complex)
    return _in_memory_order(draw, shape, like)


def random_full(gen, n, dtype):
    """``n`` values of torch's ``random_()`` with no range, as int64/float64 values of
    ``dtype``'s range: [0, 2**digits) for an integer dtype, [0, 2**mantissa] for a float one
    (bool: 0 or 1); 64-bit dtypes take ``random64()``, the others ``random()``."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return (words(gen, n) & _U64(1)).astype(np.int64)
    if str(dtype) == "bfloat16":
        return (words(gen, n) % _U64((1 << 8) + 1)).astype(np.int64)
    if dtype.kind == "f":
        digits = {2: 11, 4: 24, 8: 53}[dtype.itemsize]
        modulus = (1 << digits) + 1
    elif dtype.kind == "i":
        modulus = 1 << (8 * dtype.itemsize - 1)
    else:
        modulus = 1 << (8 * dtype.itemsize)
    r = words64(gen, n) if dtype.itemsize == 8 else words(gen, n)
    if modulus == 1 << 64:
        return r
    return (r % _U64(modulus)).astype(np.int64 if modulus <= 1 << 63 else np.uint64)


def exponential(gen, n, dtype, lambd=1.0):
    """``n`` draws of torch's ``exponential_(lambd)``: a float64 uniform each (any dtype),
    ``-1 / lambd * log1p(-u)``, cast."""
    u = uniform(gen, n, np.float64)
    kernel = _kernel("exponential_fill")
    if kernel is not None:
        kernel(u, float(lambd))
    else:  # NumPy's log1p may differ from libm's in an ulp
        u = -1.0 / lambd * np.log1p(-u)
    return u.astype(dtype)


def bernoulli(gen, shape, p):
    """torch's bernoulli draws (bool array of ``shape``): a number p against float64 uniforms;
    a tensor of p (array) against uniforms of p's precision (float64: float64, else float32)."""
    n = int(np.prod(shape, dtype=np.int64))
    if np.ndim(p) == 0 and not isinstance(p, np.ndarray):
        return (uniform(gen, n, np.float64) < float(p)).reshape(shape)
    p = np.broadcast_to(np.asarray(p), shape)
    if p.dtype == np.float64:
        return uniform(gen, n, np.float64).reshape(shape) < p
    return uniform(gen, n, np.float32).reshape(shape) < p.astype(np.float32)


def multinomial(gen, rows, dtype, num_samples, replacement):
    """torch's CPU multinomial on 2-D ``rows`` of weights (their dtype ``dtype``): with
    replacement (more than one sample) a float64 uniform per sample searched in the row's
    normalised cumulative sum (summed in double, stored in the weights' dtype); else (or one
    sample) the top ``num_samples`` of weights / Exp(1) draws."""
    out = np.empty((rows.shape[0], num_samples), dtype=np.int64)
    work = np.float64 if np.dtype(dtype) == np.float64 else np.float32
    if replacement and num_samples > 1:
        for i, w in enumerate(rows):
            cum = np.cumsum(w.astype(np.float64))
            total = cum[-1]
            cum = (cum.astype(work).astype(np.float64) / total).astype(work)
            u = uniform(gen, num_samples, np.float64)
            out[i] = np.minimum(np.searchsorted(cum.astype(np.float64), u, side="left"),
                                w.size - 1)
        return out
    w = rows.astype(work)
    q = exponential(gen, w.size, work).reshape(w.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        keys = w / q
    order = np.argsort(-keys, axis=1, kind="stable")
    return order[:, :num_samples].astype(np.int64)


class _Uniforms:
    """float64 uniforms drawn ahead in chunks, for samplers that take a varying number each;
    ``finish()`` puts the engine where drawing only the ones used would have left it."""

    def __init__(self, gen, chunk):
        self.gen, self.chunk = gen, min(max(int(chunk), 64), 1 << 16)
        self.start = gen._gen.bit_generator.state
        self.buffer, self.pos, self.used = [], 0, 0

    def __call__(self):
        if self.pos == len(self.buffer):
            self.buffer, self.pos = uniform(self.gen, self.chunk, np.float64).tolist(), 0
        value = self.buffer[self.pos]
        self.pos += 1
        self.used += 1
        return value

    def finish(self):
        bit_generator = self.gen._gen.bit_generator
        bit_generator.state = self.start
        if self.used:
            bit_generator.random_raw(2 * self.used)


def _sample_poisson(lam, uni):
    """torch's CPU Poisson sampler for one rate (float64 uniforms from ``uni``): transformed
    rejection (Hoermann 1993) from rate 10 on, the product of uniforms below."""
    if lam >= 10:
        slam, loglam = math.sqrt(lam), math.log(lam)
        b = 0.931 + 2.53 * slam
        a = -0.059 + 0.02483 * b
        invalpha = 1.1239 + 1.1328 / (b - 3.4)
        vr = 0.9277 - 3.6224 / (b - 2)
        while True:
            u = uni() - 0.5
            v = uni()
            us = 0.5 - abs(u)
            k = int(math.floor((2 * a / us + b) * u + lam + 0.43))
            if us >= 0.07 and v <= vr:
                return k
            if k < 0 or (us < 0.013 and v > us):
                continue
            if (math.log(v) + math.log(invalpha) - math.log(a / (us * us) + b)) <= \
                    (-lam + k * loglam - math.lgamma(k + 1.0)):
                return k
    if lam == 0:
        return 0
    enlam, count, prod = math.exp(-lam), 0, 1.0
    while True:
        prod *= uni()
        if prod > enlam:
            count += 1
        else:
            return count


def poisson(gen, rates):
    """torch's ``poisson`` draws (float64 counts) for the float64 ``rates``, in order."""
    flat = np.asarray(rates, dtype=np.float64).ravel()
    uni = _Uniforms(gen, 2 * flat.size)
    try:
        out = np.array([_sample_poisson(lam, uni) for lam in flat.tolist()], dtype=np.float64)
    finally:
        uni.finish()
    return out.reshape(np.shape(rates))


def _libm(fn, values):
    """``fn`` (a function of math, libm's as torch's) on each float64 value."""
    return np.array([fn(v) for v in np.asarray(values, dtype=np.float64).tolist()],
                    dtype=np.float64)


def cauchy(gen, n, median, sigma):
    """torch's ``cauchy_``: median + sigma * tan(pi * (u - 0.5)), u a float64 uniform."""
    u = uniform(gen, n, np.float64)
    return _libm(lambda v: median + sigma * math.tan(math.pi * (v - 0.5)), u)


def geometric(gen, n, p):
    """torch's ``geometric_``: ceil(log(u) / log1p(-p)), u a float64 uniform."""
    u = uniform(gen, n, np.float64)
    scale = math.log1p(-p)
    return _libm(lambda v: math.ceil(math.log(v) / scale), u)


def log_normal(gen, n, mean, std):
    """torch's ``log_normal_``: exp of its one-at-a-time normal(mean, std) (any size)."""
    return _libm(math.exp, normal(gen, n, np.float64, mean, std, contiguous=False))


_THIRD_F = float(np.float32(1) / np.float32(3))  # torch's 1.0f / 3.0f
_C0331_F = float(np.float32(0.0331))


class _Normals:
    """torch's one-at-a-time double normal (its cached second sample kept on ``gen``) over the
    float64 uniforms of ``uni``."""

    def __init__(self, gen, uni):
        self.gen, self.uni = gen, uni

    def __call__(self):
        cached = self.gen._normal_double
        if cached is not None:
            self.gen._normal_double = None
            return cached
        u1 = self.uni()
        u2 = self.uni()
        radius = math.sqrt(-2.0 * math.log1p(-u2))
        theta = 2.0 * math.pi * u1
        self.gen._normal_double = radius * math.sin(theta)
        return radius * math.cos(theta)


def _sample_gamma(alpha, uni, nrm, single):
    """torch's CPU Gamma(alpha, 1) sampler (Marsaglia-Tsang, boosted below 1) for one alpha,
    in double; ``single``: alpha is a float32 value, its own arithmetic in float."""
    scale = 1.0
    if alpha < 1.0:
        if alpha == 0.0:
            return 0.0
        if single:
            power = float(np.float32(1) / np.float32(alpha))
            alpha = float(np.float32(alpha) + np.float32(1))
        else:
            power = 1.0 / alpha
            alpha = alpha + 1.0
        scale *= math.pow(1.0 - uni(), power)
    d = float(np.float32(alpha) - np.float32(_THIRD_F)) if single else alpha - _THIRD_F
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        while True:
            x = nrm()
            y = 1.0 + c * x
            if y > 0:
                break
        v = y * y * y
        u = 1.0 - uni()
        xx = x * x
        if u < 1.0 - _C0331_F * xx * xx:
            return scale * d * v
        if math.log(u) < 0.5 * xx + d * (1.0 - v + math.log(v)):
            return scale * d * v


def standard_gamma(gen, alphas, dtype):
    """torch's ``_standard_gamma`` draws for ``alphas`` (in order), as float64 values of the
    ``dtype`` result (float32: its arithmetic on alpha in float, the draw rounded to float);
    clamped below at the dtype's smallest normal number, as torch's."""
    dtype = np.dtype(dtype)
    single = dtype != np.float64
    flat = np.asarray(alphas, dtype=dtype).ravel().tolist()
    uni = _Uniforms(gen, 4 * len(flat))
    nrm = _Normals(gen, uni)
    try:
        out = np.array([_sample_gamma(a, uni, nrm, single) for a in flat], dtype=np.float64)
    finally:
        uni.finish()
    out = np.maximum(out.astype(dtype), np.finfo(dtype).tiny)
    return out.reshape(np.shape(alphas))


def dirichlet(gen, alphas):
    """torch's ``_sample_dirichlet`` on the last axis of ``alphas`` (float32/float64): double
    Gamma draws (alpha taken as double), each divided by its row's sum, cast and kept in
    [smallest normal, the float below 1]."""
    dtype = np.asarray(alphas).dtype
    g = standard_gamma(gen, np.asarray(alphas, dtype=np.float64), np.float64)
    total = g.sum(axis=-1, keepdims=True)
    out = (g / total).astype(dtype)
    return np.clip(out, np.finfo(dtype).tiny, np.nextafter(dtype.type(1), dtype.type(0)))


_STIRLING_TAIL = (0.0810614667953272, 0.0413406959554092, 0.0276779256849983,
                  0.02079067210376509, 0.0166446911898211, 0.0138761288230707,
                  0.0118967099458917, 0.0104112652619720, 0.00925546218271273,
                  0.00833056343336287)


def _stirling_tail(k):
    if k <= 9:
        return _STIRLING_TAIL[int(k)]
    kp1sq = (k + 1) * (k + 1)
    return (1.0 / 12 - (1.0 / 360 - 1.0 / 1260 / kp1sq) / kp1sq) / (k + 1)


def _btrs(count, prob, uni, f):
    """Hoermann's BTRS as torch's CPU kernel (``f``: the parameters' own arithmetic)."""
    stddev = math.sqrt(float(f(f(count * prob) * f(1 - prob))))
    b = 1.15 + 2.53 * stddev
    a = -0.0873 + 0.0248 * b + 0.01 * prob
    c = float(f(count * prob)) + 0.5
    v_r = 0.92 - 4.2 / b
    r = float(f(prob / f(1 - prob)))
    alpha = (2.83 + 5.1 / b) * stddev
    m = math.floor(float(f(f(count + 1) * prob)))
    while True:
        u = uni() - 0.5
        v = uni()
        us = 0.5 - abs(u)
        k = float(f(math.floor((2 * a / us + b) * u + c)))
        if k < 0 or k > count:
            continue
        if us >= 0.07 and v <= v_r:
            return k
        v = math.log(v * alpha / (a / (us * us) + b))
        km = float(f(f(count - k) + 1))
        upper = ((m + 0.5) * math.log((m + 1) / (r * (count - m + 1)))
                 + (count + 1) * math.log((count - m + 1) / km)
                 + (k + 0.5) * math.log(r * km / (k + 1))
                 + _stirling_tail(m) + _stirling_tail(count - m)
                 - _stirling_tail(k) - _stirling_tail(float(f(count - k))))
        if v <= upper:
            return k


def _binomial_inversion(count, prob, uni, f):
    logprob = float(f(math.log1p(-prob)))
    geom_sum, num = 0.0, 0.0
    while True:
        geom = math.ceil(math.log(uni()) / logprob)
        geom_sum += geom
        if geom_sum > count:
            return num
        num += 1


def _sample_binomial(count, prob, uni, f):
    """torch's CPU Binomial(count, prob) sampler for one pair (float64 uniforms from ``uni``):
    BTRS where the mean (of the smaller side) is 10 or more, inversion below."""
    if count <= 0.0 or prob <= 0.0:
        return 0.0
    if prob >= 1.0:
        return count
    if prob <= 0.5:
        if f(count * prob) >= 10.0:
            return _btrs(count, prob, uni, f)
        return _binomial_inversion(count, prob, uni, f)
    if prob > 0.5:
        q = float(f(1.0 - prob))
        if f(count * q) >= 10.0:
            return float(f(count - _btrs(count, q, uni, f)))
        return float(f(count - _binomial_inversion(count, q, uni, f)))
    return math.nan


def binomial(gen, counts, probs, dtype):
    """torch's ``binomial`` draws (float64 values of ``dtype``) for the broadcast ``counts``
    and ``probs``, in order (float32: the parameters' arithmetic in float, as torch's)."""
    dtype = np.dtype(dtype)
    f = np.float32 if dtype != np.float64 else float
    counts, probs = np.broadcast_arrays(np.asarray(counts, dtype=dtype),
                                        np.asarray(probs, dtype=dtype))
    pairs = list(zip(counts.ravel().tolist(), probs.ravel().tolist()))
    uni = _Uniforms(gen, 4 * len(pairs))
    try:
        out = np.array([_sample_binomial(n, p, uni, f) for n, p in pairs], dtype=np.float64)
    finally:
        uni.finish()
    return out.astype(dtype).reshape(counts.shape)
