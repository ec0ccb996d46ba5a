"""The code blocks of README.md and docs/*.md, for the tests that run them.

One way to read them for every docs test (``tests/test_docs_*.py``, ``test_docs_blocks.py``):
``python_blocks(doc)`` gives a file's ```python blocks in order, ``run_blocks(doc, namespace)``
runs them in one namespace (a file's blocks may build on each other), checking the output that
a comment shows after a ``print`` (see ``with_output_checks``).

Markers: an HTML comment on the line just before a block's opening fence says how to treat it.

- ``<!-- not run: REASON -->``: the block is shown but never run (it needs a GPU, ``mpiexec``,
  or names a model and data the reader brings). Say why, so a reader knows too.
- ``<!-- needs MINIDL_DATA -->`` (environment variables, space-separated): run only where each
  is set; where one is not, the rest of the file is skipped with that reason (later blocks may
  build on this one).

Blocks tagged other than ``python`` (```bash, ```text, ```py) are never run as Python.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import pytest

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", flags=re.S | re.M)
_MARKER = re.compile(r"<!--\s*(not run|needs)\s*:?\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    doc: str        # path relative to the repository root
    line: int       # line of the opening fence, 1-based
    lang: str       # "python", "bash", ...
    code: str
    not_run: str | None = None        # the reason given by <!-- not run: ... -->
    needs: tuple[str, ...] = ()       # environment variables from <!-- needs ... -->

    @property
    def where(self):
        return f"{self.doc}:{self.line}"


def doc_path(doc):
    return doc if os.path.isabs(doc) else os.path.join(ROOT, doc)


def code_blocks(doc, lang=None):
    """Every fenced block of ``doc`` (a path, or one relative to the repository root), in order;
    only those tagged ``lang`` where it is given."""
    with open(doc_path(doc), encoding="utf-8") as f:
        text = f.read()
    rel = os.path.relpath(doc_path(doc), ROOT)
    blocks = []
    for m in _FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        block = Block(rel, line, m.group(1), m.group(2))
        marker = _MARKER.search(before)
        if marker and marker.group(1) == "not run":
            block.not_run = marker.group(2) or "(no reason given)"
        elif marker:
            block.needs = tuple(marker.group(2).split())
        if lang is None or block.lang == lang:
            blocks.append(block)
    return blocks


def python_blocks(doc):
    """The ```python blocks of ``doc`` that are run (not marked ``not run``), in order."""
    return [b for b in code_blocks(doc, "python") if b.not_run is None]


def run_blocks(doc, namespace=None):
    """Runs ``doc``'s ```python blocks in order in one namespace and returns it. A block that
    fails raises with the file and line of the block in its traceback; a block needing an unset
    environment variable skips the test there."""
    namespace = {"__name__": "doc_" + re.sub(r"\W", "_", os.path.basename(doc))} \
        if namespace is None else namespace
    for block in python_blocks(doc):
        missing = [v for v in block.needs if not os.environ.get(v)]
        if missing:
            pytest.skip(f"{block.where} needs ${' and $'.join(missing)}, which is not set")
        namespace.setdefault("__doc_print__", _doc_print)
        # padded so that a traceback's line numbers are the doc's own
        exec(compile("\n" * block.line + with_output_checks(block), block.doc, "exec"), namespace)
    return namespace


# ---- output shown in comments -------------------------------------------------------------------
# `print(x)  # tensor([1., 2.])`, or `print(x)` followed by a line `# tensor([1., 2.])`: the comment
# is what the call prints where it reads as output (a tensor, list, tuple, dict, <repr> or string, or a
# whole number or bool; `...` inside it stands for anything, and a gloss after `): ` is dropped);
# other comments are prose and are not checked.
_PRINT = re.compile(r"^(?P<indent>[ \t]*)print\((?P<args>.*)\)[ \t]*#[ \t]*(?P<out>.*?)[ \t]*$")
_PRINT_ALONE = re.compile(r"^(?P<indent>[ \t]*)print\((?P<args>.*)\)[ \t]*$")
_OUTPUT = re.compile(r"^(tensor\(|\[|\(|\{|<|'|True$|False$|None$|-?[\d.]+(e-?\d+)?$)")
_GLOSS = re.compile(r"^(.*[\])}>])\s*:\s+[A-Za-z].*$")  # `(3, j1, 8): j1 is the ragged dim`


def _normal(text):
    return " ".join(text.split())


def _matches(got, expected):
    """Equal up to runs of whitespace; ``...`` in the expected text stands for anything."""
    parts = [re.escape(p) for p in _normal(expected).split("...")]
    return re.fullmatch(".*?".join(parts), _normal(got), flags=re.S) is not None


def _doc_print(where, expected, *args, **kwargs):
    import io
    import sys

    buffer = io.StringIO()
    print(*args, **kwargs, file=buffer)
    sys.stdout.write(buffer.getvalue())
    got = buffer.getvalue().strip()
    assert _matches(got, expected), \
        f"{where}: the doc shows {expected!r} as the output, minidl prints {got!r}"


def with_output_checks(block):
    """``block.code`` with each print whose output a comment shows made to check it."""
    lines = block.code.split("\n")
    for i, line in enumerate(lines):
        m = _PRINT.match(line)
        args, out = (m.group("args"), m.group("out")) if m else (None, None)
        if not m and (m := _PRINT_ALONE.match(line)) and i + 1 < len(lines):
            following = lines[i + 1].strip()
            args, out = m.group("args"), following[1:].strip() if following.startswith("#") else None
        if out and _GLOSS.match(out):
            out = _GLOSS.match(out).group(1)
        if out and _OUTPUT.match(out) and args.count("(") == args.count(")"):
            where = f"{block.doc}:{block.line + 1 + i}"
            lines[i] = f"{m.group('indent')}__doc_print__({where!r}, {out!r}, {args})"
    return "\n".join(lines)
