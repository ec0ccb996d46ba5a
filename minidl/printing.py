"""How a Tensor prints: ``repr(x)`` character for character as PyTorch's (with ``minidl.``
for ``torch.``), under the options ``minidl.set_printoptions`` sets.

The values are formatted one way for the whole tensor, chosen from its nonzero finite values
(of the shown part, when it is summarised): floats that are all whole print as ``2.`` unless
they span more than a factor 1000 or exceed 1e8 (then scientific); other floats print with
``precision`` decimals, scientific where the span exceeds 1000, the largest 1e8 or the smallest
is below 1e-4. Every element is padded to the widest one; rows wrap at ``linewidth``; past
``threshold`` elements only ``edgeitems`` at each end of every dim are shown, with ``...``.
"""
from __future__ import annotations

import math

import numpy as np

from .backend.dtypes import default_complex, default_float

PREFIX = "tensor("


class _Format:
    """One format for all the values of a tensor (PyTorch's rules, see the module's note)."""

    def __init__(self, values: np.ndarray, options):
        self.precision = int(options["precision"])
        self.floating = values.dtype.kind == "f"
        self.whole, self.sci, self.width = True, False, 1
        flat = values.reshape(-1)
        if not self.floating:
            for v in flat.tolist():
                self.width = max(self.width, len(str(v)))
            return
        shown = flat[np.isfinite(flat) & (flat != 0)].astype(np.float64)
        if shown.size == 0:
            return  # nothing to choose from: whole numbers, and sci_mode is not applied
        big, small = float(np.abs(shown).max()), float(np.abs(shown).min())
        self.whole = bool(np.all(shown == np.ceil(shown)))
        spread = big / small > 1000.0 or big > 1.0e8
        self.sci = spread if self.whole else (spread or small < 1.0e-4)
        if options["sci_mode"] is not None:  # set_printoptions(sci_mode=...) decides
            self.sci = bool(options["sci_mode"])
        values = shown.tolist()
        if self.sci:
            self.width = max(len(f"{v:.{self.precision}e}") for v in values)
        elif self.whole:
            self.width = max(len(f"{v:.0f}") + 1 for v in values)  # the "." after each
        else:
            self.width = max(len(f"{v:.{self.precision}f}") for v in values)

    def __call__(self, v) -> str:
        if not self.floating:
            text = str(v)
        elif self.sci:
            text = f"{v:{self.width}.{self.precision}e}"
        elif self.whole:
            text = f"{v:.0f}" + ("" if math.isinf(v) or math.isnan(v) else ".")
        else:
            text = f"{v:.{self.precision}f}"
        return " " * (self.width - len(text)) + text


class _ComplexFormat:
    """Complex values as PyTorch prints them: the real parts in one format, the imaginary parts
    in another (each chosen as for a real tensor), joined as ``re+imj`` with the imaginary
    part's padding dropped."""

    def __init__(self, values: np.ndarray, options):
        self.re, self.im = _Format(values.real, options), _Format(values.imag, options)
        self.width = self.re.width + self.im.width + 1  # torch's element width: and the "j"

    def __call__(self, v) -> str:
        v = complex(v)
        imag = (self.im(v.imag) + "j").lstrip()
        return self.re(v.real) + (imag if imag[0] in "+-" else "+" + imag)


def _summary(a: np.ndarray, edge: int) -> np.ndarray:
    """The part of ``a`` a summarised print shows: ``edge`` entries at each end of every dim."""
    if a.ndim == 0:
        return a
    if a.ndim == 1:
        return np.concatenate([a[:edge], a[len(a) - edge:]]) if len(a) > 2 * edge else a
    if not edge:
        return np.empty((0,) * a.ndim, a.dtype)
    rows = list(range(edge)) + list(range(len(a) - edge, len(a))) if len(a) > 2 * edge \
        else range(len(a))
    return np.stack([_summary(a[i], edge) for i in rows])


def _vector(a, indent, summarise, fmt, options):
    edge = int(options["edgeitems"])
    per_line = max(1, int(math.floor((options["linewidth"] - indent) / (fmt.width + 2))))
    if summarise and not edge:
        items = ["..."]
    elif summarise and len(a) > 2 * edge:
        items = ([fmt(v) for v in a[:edge].tolist()] + [" ..."]
                 + [fmt(v) for v in a[len(a) - edge:].tolist()])
    else:
        items = [fmt(v) for v in a.tolist()]
    lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"


def _body(a, indent, summarise, fmt, options):
    if a.ndim == 0:
        return fmt(a.item())
    if a.ndim == 1:
        return _vector(a, indent, summarise, fmt, options)
    edge = int(options["edgeitems"])
    if summarise and len(a) > 2 * edge:
        parts = ([_body(a[i], indent + 1, summarise, fmt, options) for i in range(edge)]
                 + ["..."]
                 + [_body(a[i], indent + 1, summarise, fmt, options)
                    for i in range(len(a) - edge, len(a))])
    else:
        parts = [_body(a[i], indent + 1, summarise, fmt, options) for i in range(len(a))]
    return "[" + ("," + "\n" * (a.ndim - 1) + " " * (indent + 1)).join(parts) + "]"


def _with_suffixes(text, suffixes, indent, linewidth):
    """``text`` and ``, suffix`` each, a suffix that would pass ``linewidth`` on a new line.
    A suffix is measured as PyTorch's (``dtype=torch.int32``, one letter shorter), so that
    the lines break where PyTorch's do."""
    out = [text]
    last = len(text) - text.rfind("\n") + 1
    for suffix in suffixes:
        width = len(suffix) - suffix.count("minidl.")
        if last + width + 2 > linewidth:
            out.append(",\n" + " " * indent + suffix)
            last = indent + width
        else:
            out.append(", " + suffix)
            last += width + 2
    return "".join(out) + ")"


def tensor_repr(a: np.ndarray, device: str, grad_fn_name, requires_grad, options) -> str:
    """``tensor(...)`` for the host array ``a`` of a tensor on ``device``."""
    dtype = a.dtype
    name = "bool" if dtype.kind == "b" else dtype.name
    suffixes = []
    if device != "cpu":
        suffixes.append(f"device='{device}'")
    if a.size == 0:
        if a.ndim != 1:
            suffixes.append(f"size={tuple(a.shape)}")
        if dtype != default_float():  # torch names complex64 here too
            suffixes.append(f"dtype=minidl.{name}")
        body = "[]"
    else:
        if not options["edgeitems"]:  # the values show no shape then
            suffixes.append(f"size={tuple(a.shape)}")
        if dtype not in (default_float(), default_complex(), np.int64, np.bool_):
            suffixes.append(f"dtype=minidl.{name}")
        if dtype.itemsize == 2 and dtype.kind in "fV":  # float16, bfloat16: as float32
            a = a.astype(np.float32)
        threshold = options["threshold"]
        summarise = a.size > threshold
        shown = _summary(a, int(options["edgeitems"])) if summarise else a
        fmt = (_ComplexFormat if dtype.kind == "c" else _Format)(shown, options)
        body = _body(a, len(PREFIX), summarise, fmt, options)
    if grad_fn_name is not None:
        suffixes.append(f"grad_fn=<{grad_fn_name}>")
    elif requires_grad:
        suffixes.append("requires_grad=True")
    return _with_suffixes(PREFIX + body, suffixes, len(PREFIX), options["linewidth"])


def _array_text(a: np.ndarray, indent: int, options) -> str:
    """The values part of ``tensor(...)`` for ``a`` whose ``[`` sits at column ``indent``;
    an empty one as ``[], size=(...)``, as torch prints a sparse tensor's parts."""
    if a.size == 0:
        return f"[], size={tuple(a.shape)}"
    if a.dtype.itemsize == 2 and a.dtype.kind in "fV":
        a = a.astype(np.float32)
    summarise = a.size > options["threshold"]
    shown = _summary(a, int(options["edgeitems"])) if summarise else a
    fmt = (_ComplexFormat if a.dtype.kind == "c" else _Format)(shown, options)
    return _body(a, indent, summarise, fmt, options)


def sparse_repr(data, grad_fn_name, requires_grad, options) -> str:
    """A sparse COO tensor as torch prints one: its indices and values, then size, nnz,
    the dtype where it is not a default one, the layout and the autograd suffix, the first on
    a line of its own."""
    from .backend import to_numpy

    indent = len(PREFIX)
    indices, values = to_numpy(data.indices), to_numpy(data.values)
    text = ("tensor(indices=tensor("
            + _array_text(indices, indent + len("indices=tensor("), options) + "),\n"
            + " " * indent + "values=tensor("
            + _array_text(values, indent + len("values=tensor("), options) + ")")
    suffixes = [f"nnz={data.nnz}"]
    dtype = values.dtype
    if dtype not in (default_float(), default_complex(), np.int64, np.bool_):
        suffixes.append(f"dtype=minidl.{'bool' if dtype.kind == 'b' else dtype.name}")
    suffixes.append("layout=minidl.sparse_coo")
    if grad_fn_name is not None:
        suffixes.append(f"grad_fn=<{grad_fn_name}>")
    elif requires_grad:
        suffixes.append("requires_grad=True")
    text += ",\n" + " " * indent + f"size={tuple(data.shape)}"
    return _with_suffixes(text, suffixes, indent, options["linewidth"])


def compressed_repr(data, grad_fn_name, requires_grad, options) -> str:
    """A sparse compressed (CSR, CSC, BSR, BSC) tensor as torch prints one: its compressed
    and plain indices and values, each on a line of its own, then size, nnz, the dtype where
    it is not a default one, the layout and the autograd suffix."""
    from .backend import to_numpy
    from .backend.sparse_compressed import NAMES

    indent = len(PREFIX)
    comp_name, plain_name = NAMES[data.layout]
    parts = [(comp_name, to_numpy(data.compressed)), (plain_name, to_numpy(data.plain)),
             ("values", to_numpy(data.values))]
    lines = []
    for name, array in parts:
        head = f"{name}=tensor("
        lines.append(head + _array_text(array, indent + len(head), options) + ")")
    text = "tensor(" + (",\n" + " " * indent).join(lines)
    suffixes = [f"size={tuple(data.shape)}", f"nnz={data.nnz}"]
    dtype = parts[2][1].dtype
    if dtype not in (default_float(), default_complex(), np.int64, np.bool_):
        suffixes.append(f"dtype=minidl.{'bool' if dtype.kind == 'b' else dtype.name}")
    suffixes.append(f"layout=minidl.{data.layout}")
    if grad_fn_name is not None:
        suffixes.append(f"grad_fn=<{grad_fn_name}>")
    elif requires_grad:
        suffixes.append("requires_grad=True")
    return _with_suffixes(text, suffixes, indent, options["linewidth"])
