"""docs/internals.md: its code blocks run in order (they hold their own assertions: the
backward pass written by hand equals minidl's, im2col + GEMM equals conv2d, the convolution
algorithm chosen for each shape), and the files it sends a reader to exist."""
import os
import re

from docblocks import python_blocks, run_blocks

HERE = os.path.dirname(os.path.abspath(__file__))
DOC = os.path.join(HERE, "..", "docs", "internals.md")


def _doc():
    with open(DOC, encoding="utf-8") as f:
        return f.read()


def test_every_code_block_runs_in_order():
    blocks = python_blocks(DOC)
    assert len(blocks) >= 8
    namespace = {"__name__": "internals_doc"}
    run_blocks(DOC, namespace)
    assert namespace["mine"], "the hand-written backward pass found no gradients"


def test_the_files_it_names_exist():
    named = set(re.findall(r"`((?:minidl|tests|benchmarks|docs)/[\w/.]+?\.(?:py|md))`", _doc()))
    named |= {"minidl/backend/" + f for f in re.findall(r"`backend/([\w/.]+?\.py)`", _doc())}
    assert len(named) >= 15
    missing = sorted(p for p in named if not os.path.exists(os.path.join(HERE, "..", p)))
    assert not missing, f"docs/internals.md names files that do not exist: {missing}"
