"""The code blocks of README.md and docs/*.md, for the tests that run them.

One way to read them for every docs test (``tests/test_docs_*.py``, ``test_docs_blocks.py``):
``python_blocks(doc)`` gives a file's ```python blocks in order, ``run_blocks(doc, namespace)``
runs them in one namespace (a file's blocks may build on each other).

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
        # padded so that a traceback's line numbers are the doc's own
        exec(compile("\n" * block.line + block.code, block.doc, "exec"), namespace)
    return namespace
