"""``torch.nn.attention.flex_attention`` (``minidl.nn.attention.flex_attention``): attention
whose scores a Python function modifies (``score_mod``) and whose pattern another one masks
(``mask_mod`` through a ``BlockMask``), computed in eager minidl ops, so gradients flow through
both (a learnt bias in ``score_mod`` gets its gradient) and nothing is compiled.

    def causal(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx
    mask = create_block_mask(causal, B=None, H=None, Q_LEN=L, KV_LEN=L)
    out = flex_attention(q, k, v, block_mask=mask)                  # (B, H, L, Ev)

    def alibi(score, b, h, q_idx, kv_idx):
        return score - slopes[h] * (q_idx - kv_idx)
    out = flex_attention(q, k, v, score_mod=alibi)

The modifiers are called once on whole index tensors (``b`` (B,1,1,1), ``h`` (1,H,1,1),
``q_idx`` (1,1,L,1), ``kv_idx`` (1,1,1,S)) that broadcast, which is what torch's vectorised
modifiers assume too. A row whose every key is masked gives zeros and a log-sum-exp of -inf,
as torch's. The ``BlockMask`` keeps torch's block tables (which blocks are partly or fully
kept, ``BLOCK_SIZE`` 128 by default) for inspection; the computation masks element by element.
"""
from __future__ import annotations

import math
import operator
import typing
import warnings

import numpy as np

from ..backend import get_array_module, to_numpy
from ..ops import where
from ..tensor import Tensor, no_grad

__all__ = ["flex_attention", "create_block_mask", "create_mask", "BlockMask", "and_masks",
           "or_masks", "noop_mask", "AuxRequest", "AuxOutput"]


class AuxRequest(typing.NamedTuple):
    """What else ``flex_attention`` should return: the rows' log-sum-exp, their largest score."""
    lse: bool = False
    max_scores: bool = False


class AuxOutput(typing.NamedTuple):
    lse: Tensor | None = None
    max_scores: Tensor | None = None


def noop_mask(b, h, q_idx, kv_idx):
    """Keeps every score."""
    return q_idx >= 0  # broadcasts to True wherever it is combined (b, h, kv_idx give the rest)


def _combine(mask_mods, join, empty):
    """A mask_mod joining what each of ``mask_mods`` keeps with ``join`` (``empty`` keeps
    the mask of no mask_mods)."""
    if not all(callable(m) for m in mask_mods):
        raise RuntimeError(f"All inputs should be callable mask_mods: {mask_mods}")

    def combined(b, h, q_idx, kv_idx):
        keep = None
        for m in mask_mods:
            k = m(b, h, q_idx, kv_idx)
            keep = k if keep is None else join(keep, k)
        return keep if keep is not None else empty(b, h, q_idx, kv_idx)
    return combined


def and_masks(*mask_mods):
    """A mask_mod keeping what every one of ``mask_mods`` keeps (everything, for none)."""
    return _combine(mask_mods, operator.and_, noop_mask)


def or_masks(*mask_mods):
    """A mask_mod keeping what any one of ``mask_mods`` keeps (nothing, for none)."""
    return _combine(mask_mods, operator.or_, lambda *idx: ~noop_mask(*idx))


def _indices(B, H, L, S, device):
    """b, h, q_idx, kv_idx as int64 Tensors that broadcast to (B, H, L, S)."""
    def ix(n, axis):
        shape = [1, 1, 1, 1]
        shape[axis] = n
        return Tensor(np.arange(n, dtype=np.int64).reshape(shape), device=device)
    return ix(B, 0), ix(H, 1), ix(L, 2), ix(S, 3)


def _dense_mask(mask_mod, B, H, L, S, device):
    """The (B, H, L, S) boolean array ``mask_mod`` keeps (broadcast), computed without a
    graph."""
    with no_grad():
        keep = mask_mod(*_indices(B, H, L, S, device))
    if not isinstance(keep, Tensor):
        raise TypeError(f"mask_mod must return a Tensor of booleans, got "
                        f"{type(keep).__name__}")
    if keep.dtype != np.bool_:
        raise TypeError(f"mask_mod must return booleans (comparisons of its indices), got "
                        f"dtype {keep.dtype}")
    return get_array_module(keep.data).broadcast_to(keep.data, (B, H, L, S))


def create_mask(mod_fn, B, H, Q_LEN, KV_LEN, device="cpu"):  # noqa: N803  (torch's names)
    """The dense (B, H, Q_LEN, KV_LEN) boolean Tensor of a mask_mod (None B/H: 1)."""
    B, H = B or 1, H or 1
    dense = _dense_mask(mod_fn, B, H, Q_LEN, KV_LEN, device)
    return Tensor(get_array_module(dense).ascontiguousarray(dense), device=device)


def _ordered(dense):
    """torch's (num_blocks, indices) of a block table: how many blocks each row keeps, and the
    block indices, kept ones first (stable)."""
    num = dense.sum(axis=-1).astype(np.int32)
    order = np.argsort(~dense, axis=-1, kind="stable").astype(np.int32)
    return num, order


class BlockMask:
    """Which (query block, key block) pairs a mask keeps partly or fully (torch's tables), with
    the ``mask_mod`` that decides each element."""

    def __init__(self, seq_lengths, kv_num_blocks, kv_indices, full_kv_num_blocks,
                 full_kv_indices, q_num_blocks, q_indices, full_q_num_blocks, full_q_indices,
                 BLOCK_SIZE=(128, 128), mask_mod=noop_mask):  # noqa: N803  (torch's name)
        self.seq_lengths = tuple(seq_lengths)
        self.kv_num_blocks, self.kv_indices = kv_num_blocks, kv_indices
        self.full_kv_num_blocks, self.full_kv_indices = full_kv_num_blocks, full_kv_indices
        self.q_num_blocks, self.q_indices = q_num_blocks, q_indices
        self.full_q_num_blocks, self.full_q_indices = full_q_num_blocks, full_q_indices
        self.BLOCK_SIZE = tuple(BLOCK_SIZE)
        self.mask_mod = mask_mod

    @property
    def shape(self):
        return tuple(self.kv_num_blocks.shape[:2]) + self.seq_lengths

    def numel(self):
        return int(np.prod(self.shape))

    def sparsity(self):
        """The percentage of blocks not computed, by torch's formula (blocks padded past the
        sequence count whole, so a short sequence can read below 0)."""
        blocks = int(self.kv_num_blocks.numpy().sum())
        if self.full_kv_num_blocks is not None:
            blocks += int(self.full_kv_num_blocks.numpy().sum())
        return 100 * (1 - blocks * self.BLOCK_SIZE[0] * self.BLOCK_SIZE[1] / self.numel())

    def to_dense(self):
        """The (B, H, query blocks, key blocks) int32 table: 1 where a block is computed."""
        table = _table(self.kv_num_blocks, self.kv_indices)
        if self.full_kv_num_blocks is not None:
            table |= _table(self.full_kv_num_blocks, self.full_kv_indices)
        return Tensor(table)

    def __repr__(self):
        return (f"BlockMask(shape={self.shape}, sparsity={self.sparsity():.2f}%, "
                f"BLOCK_SIZE={self.BLOCK_SIZE}, mask_mod={getattr(self.mask_mod, '__name__', '?')})")

    def __str__(self):
        return (f"BlockMask(shape={self.shape}, sparsity={self.sparsity():.2f}%, \n"
                f"{self.to_string().strip()}\n)")

    def as_tuple(self, flatten=True):
        """torch's 17 fields (the dq write-order tables, which minidl does not keep, None)."""
        lengths = self.seq_lengths if flatten else (self.seq_lengths,)
        sizes = self.BLOCK_SIZE if flatten else (self.BLOCK_SIZE,)
        return (*lengths, self.kv_num_blocks, self.kv_indices, self.full_kv_num_blocks,
                self.full_kv_indices, self.q_num_blocks, self.q_indices, self.full_q_num_blocks,
                self.full_q_indices, None, None, None, None, *sizes, self.mask_mod)

    def to_string(self, grid_size=(20, 20), limit=4):
        """The block table drawn per (batch, head): full squares where every block of a cell
        is computed, shaded ones where some are (torch's picture)."""
        table = self.to_dense().numpy()
        *lead, rows, cols = table.shape
        if grid_size == -1:
            max_rows, max_cols = rows, cols
        elif isinstance(grid_size, int):
            max_rows = max_cols = grid_size
        else:
            max_rows, max_cols = grid_size
        rstep, cstep = max(1, -(-rows // max_rows)), max(1, -(-cols // max_cols))
        pictures = []
        for n, idx in enumerate(np.ndindex(*lead)):
            if n == limit:
                pictures += ["...", "To print out more, set BlockMask.to_string(limit=N)",
                             "You can also index (BlockMask[batch, head]) to choose a specific "
                             "batch or head"]
                break
            lines = [f"{idx}"]
            for r in range(0, rows, rstep):
                cells = (table[idx][r:r + rstep, c:c + cstep].mean() for c in range(0, cols, cstep))
                lines.append("".join(("\u2588" if f == 1 else " " if f == 0 else "\u2591") * 2
                                     for f in cells))
            pictures.append("\n".join(lines) + "\n")
        return "\n".join(pictures)

    def _kv_tables(self):
        parts = [(self.kv_num_blocks, self.kv_indices)]
        if self.full_kv_num_blocks is not None:
            parts.append((self.full_kv_num_blocks, self.full_kv_indices))
        return parts

    @staticmethod
    def _from_tables(partial, full, seq_lengths, block_size, mask_mod, device="cpu"):
        """A BlockMask from dense (..., query blocks, key blocks) tables of partial and full
        blocks (full None: not kept apart)."""
        tables = [*_ordered(partial), *(_ordered(full) if full is not None else (None, None)),
                  *_ordered(np.swapaxes(partial, -1, -2)),
                  *(_ordered(np.swapaxes(full, -1, -2)) if full is not None else (None, None))]
        tables = [None if t is None else Tensor(t, device=device) for t in tables]
        return BlockMask(seq_lengths, *tables, BLOCK_SIZE=block_size, mask_mod=mask_mod)

    def _dense_tables(self):
        return [_table(num, idx).astype(bool) for num, idx in self._kv_tables()]

    def _adjust(self, new_q_len, new_kv_len):
        """This mask cropped to its upper-left (new_q_len, new_kv_len) corner (torch's
        ``_adjust``: the block tables are cut, the mask_mod kept)."""
        for name, n in (("new_q_len", new_q_len), ("new_kv_len", new_kv_len)):
            if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
                raise ValueError(f"BlockMask._adjust: {name} must be a positive int, got {n!r}")
        rows, cols = -(-new_q_len // self.BLOCK_SIZE[0]), -(-new_kv_len // self.BLOCK_SIZE[1])
        have = self.kv_indices.shape[-2:]
        if rows > have[0] or cols > have[1]:
            raise ValueError(f"BlockMask._adjust: ({new_q_len}, {new_kv_len}) needs "
                             f"{(rows, cols)} blocks, the mask has {tuple(have)}")
        cut = [t[..., :rows, :cols] for t in self._dense_tables()]
        return self._from_tables(cut[0], cut[1] if len(cut) > 1 else None,
                                 (new_q_len, new_kv_len), self.BLOCK_SIZE, self.mask_mod,
                                 self.kv_num_blocks.device)

    def __getitem__(self, index):
        """The mask of some batches, heads or query blocks (torch's slicing): an int keeps its
        dimension; the result's mask_mod refuses to run, as torch's does."""
        index = index if isinstance(index, tuple) else (index,)
        if len(index) > 3:
            raise IndexError(f"BlockMask: too many indices ({len(index)}) for its batch, head "
                             f"and query-block dimensions")
        sizes = self.kv_num_blocks.shape[:3]
        index = tuple(slice(i % n, i % n + 1) if isinstance(i, int) and -n <= i < n else i
                      for i, n in zip((*index, slice(None), slice(None))[:3], sizes))
        for i, n in zip(index, sizes):
            if isinstance(i, int):
                raise IndexError(f"BlockMask: index {i} is out of range for size {n}")
        cut = [t[index] for t in self._dense_tables()]
        return self._from_tables(cut[0], cut[1] if len(cut) > 1 else None, self.seq_lengths,
                                 self.BLOCK_SIZE, _sliced_mask_mod_error,
                                 self.kv_num_blocks.device)

    def to(self, device):
        """This mask with its tables on ``device``."""
        fields = [getattr(self, f) for f in _TABLE_FIELDS]
        fields = [None if t is None else t.to(device) for t in fields]
        return BlockMask(self.seq_lengths, *fields, BLOCK_SIZE=self.BLOCK_SIZE,
                         mask_mod=self.mask_mod)


_TABLE_FIELDS = ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices",
                 "q_num_blocks", "q_indices", "full_q_num_blocks", "full_q_indices")


def _table(num, idx):
    """The dense (..., query blocks, key blocks) int32 table of one (num_blocks, indices)
    pair."""
    num, idx = num.numpy(), idx.numpy()
    out = np.zeros(idx.shape, dtype=np.int32)
    keep = np.arange(idx.shape[-1]) < num[..., None]
    np.put_along_axis(out, idx.astype(np.int64), keep.astype(np.int32), axis=-1)
    return out


def _sliced_mask_mod_error(b, h, q_idx, kv_idx):
    raise RuntimeError("Cannot use mask_mod from a sliced BlockMask: set the sliced mask's "
                       "mask_mod to the original one's")


def create_block_mask(mask_mod, B, H, Q_LEN, KV_LEN, device=None, BLOCK_SIZE=128,  # noqa: N803
                      _compile=False, separate_full_blocks=True, compute_dq_write_order=False,
                      dq_kv_order=True):
    """A BlockMask of ``mask_mod`` over (B, H, Q_LEN, KV_LEN) (None for B or H: one, shared by
    all): torch's block tables, blocks of ``BLOCK_SIZE`` (an int or (q, kv)) padded past the
    sequence ends."""
    if not callable(mask_mod):
        raise TypeError(f"create_block_mask: mask_mod must be callable, got {mask_mod!r}")
    qb, kb = (BLOCK_SIZE, BLOCK_SIZE) if isinstance(BLOCK_SIZE, int) else tuple(BLOCK_SIZE)
    B, H = B or 1, H or 1
    for name, n in (("Q_LEN", Q_LEN), ("KV_LEN", KV_LEN), ("BLOCK_SIZE", qb), ("BLOCK_SIZE", kb)):
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"create_block_mask: {name} must be a positive int, got {n!r}")
    device = device or "cpu"
    # the block tables are worked out on the host (a GPU mask is copied once), then kept on
    # ``device`` as torch keeps them
    dense = to_numpy(_dense_mask(mask_mod, B, H, Q_LEN, KV_LEN, device))
    nq, nk = -(-Q_LEN // qb), -(-KV_LEN // kb)
    padded = np.zeros((B, H, nq * qb, nk * kb), dtype=bool)
    padded[:, :, :Q_LEN, :KV_LEN] = dense
    blocks = padded.reshape(B, H, nq, qb, nk, kb)
    kept_any = blocks.any(axis=(3, 5))
    kept_all = blocks.all(axis=(3, 5))
    partial = kept_any & ~kept_all if separate_full_blocks else kept_any
    full = kept_all if separate_full_blocks else None
    return BlockMask._from_tables(partial, full, (Q_LEN, KV_LEN), (qb, kb), mask_mod, device)


def flex_attention(query, key, value, score_mod=None, block_mask=None, scale=None,
                   enable_gqa=False, return_lse=False, kernel_options=None, *, return_aux=None):
    """softmax(score_mod(q @ k^T * scale), masked by block_mask) @ v for (B, H, L, E) queries
    and (B, Hkv, S, E)/(B, Hkv, S, Ev) keys and values (``enable_gqa``: Hkv divides H, each key
    head serving H / Hkv query heads). ``return_aux=AuxRequest(lse=True)`` (or the deprecated
    ``return_lse``) also returns the rows' log-sum-exp (natural log)."""
    name = "flex_attention"
    for what, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor) or t.ndim != 4:
            raise ValueError(f"{name}: {what} must be a 4-D Tensor (B, H, L, E), got "
                             f"{getattr(t, 'shape', type(t).__name__)}")
    B, Hq, L, E = query.shape
    Bk, Hkv, S, Ek = key.shape
    if value.shape[:3] != key.shape[:3]:
        raise ValueError(f"{name}: key {tuple(key.shape)} and value {tuple(value.shape)} "
                         f"must agree in batch, heads and length")
    if Bk != B:
        # torch: one key/value batch serves every query batch when a block mask has the
        # queries' batch
        mask_b = block_mask.kv_num_blocks.shape[0] if isinstance(block_mask, BlockMask) else None
        if Bk != 1 or mask_b != B:
            raise ValueError(f"{name}: query batch {B} and key batch {Bk} differ (a key batch "
                             f"of 1 is broadcast only with a block_mask of batch {B}, got "
                             f"{'none' if mask_b is None else mask_b})")
        key = key.expand(B, *key.shape[1:])
        value = value.expand(B, *value.shape[1:])
    if Ek != E:
        raise ValueError(f"{name}: query and key embedding sizes differ ({E} and {Ek})")
    if Hq != Hkv:
        if not enable_gqa:
            raise ValueError(f"{name}: query has {Hq} heads and key/value {Hkv}; pass "
                             f"enable_gqa=True for grouped-query attention")
        if Hq % Hkv:
            raise ValueError(f"{name}: grouped-query attention needs the query heads ({Hq}) "
                             f"to be a multiple of the key/value heads ({Hkv})")
        key = key.repeat_interleave(Hq // Hkv, dim=1)
        value = value.repeat_interleave(Hq // Hkv, dim=1)
    if return_lse:
        warnings.warn("return_lse is deprecated and will be removed in v2.10. Please use "
                      "return_aux=AuxRequest(lse=True) instead.", FutureWarning, stacklevel=2)
        if return_aux is not None:
            raise ValueError(f"{name}: give return_lse or return_aux, not both")
    if block_mask is not None:
        if not isinstance(block_mask, BlockMask):
            raise TypeError(f"{name}: block_mask must be a BlockMask (create_block_mask), got "
                            f"{type(block_mask).__name__}")
        if block_mask.mask_mod is _sliced_mask_mod_error:
            raise RuntimeError(f"{name}: cannot use the mask_mod of a sliced BlockMask; set "
                               f"its mask_mod to the original mask's")
        if block_mask.kv_num_blocks.device != query.device:
            raise RuntimeError(f"{name}: q/k/v are on {query.device} and block_mask on "
                               f"{block_mask.kv_num_blocks.device}; create the mask with "
                               f"device={str(query.device)!r} or move it with .to()")
        if block_mask.seq_lengths != (L, S):
            raise ValueError(f"{name}: block_mask is for lengths {block_mask.seq_lengths}, the "
                             f"query and key have ({L}, {S})")
        mb, mh = block_mask.shape[:2]
        if mb not in (1, B) or mh not in (1, Hq):
            raise ValueError(f"{name}: block_mask of shape {block_mask.shape} does not "
                             f"broadcast to (B, H) = ({B}, {Hq})")
    scale = 1.0 / math.sqrt(E) if scale is None else float(scale)
    # torch's working precision: scores, score_mod, softmax and log-sum-exp in float32 (float64
    # for float64 queries) whatever the inputs' dtype; only the output has the query's dtype
    work = np.float64 if query.dtype == np.float64 else np.float32
    scores = (query.to(work) @ key.to(work).transpose(-2, -1)) * scale    # (B, H, L, S)
    if score_mod is not None:
        scores = score_mod(scores, *_indices(B, Hq, L, S, query.device))
        if not isinstance(scores, Tensor) or tuple(scores.shape) != (B, Hq, L, S):
            raise ValueError(f"{name}: score_mod must return a Tensor of the scores' shape "
                             f"{(B, Hq, L, S)}, got {getattr(scores, 'shape', scores)!r}")
    keep = None
    if block_mask is not None:
        keep = Tensor(_dense_mask(block_mask.mask_mod, B, Hq, L, S, query.device))
        scores = where(keep, scores, float("-inf"))
    top = scores.detach().amax(dim=-1, keepdim=True)
    lost = top == float("-inf")                                        # rows with no key kept
    shift = where(lost, 0.0, top)
    e = (scores - shift).exp()
    total = e.sum(dim=-1, keepdim=True)
    probs = e / where(lost, 1.0, total)
    out = probs.to(query.dtype) @ value.to(query.dtype)
    lse = where(lost, float("-inf"), total.log() + shift).squeeze(-1)
    if return_lse:
        return out, lse
    if return_aux is not None:
        if not isinstance(return_aux, AuxRequest):
            raise TypeError(f"{name}: return_aux must be an AuxRequest, got "
                            f"{type(return_aux).__name__}")
        return out, AuxOutput(lse=lse if return_aux.lse else None,
                              max_scores=scores.amax(dim=-1) if return_aux.max_scores else None)
    return out
