"""docs/from-pytorch.md: every ```python block runs, in order, in one namespace (the page
promises it)."""
import os

from docblocks import python_blocks, run_blocks

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "from-pytorch.md")


def test_every_code_block_runs_in_order(capsys):
    blocks = python_blocks(DOC)
    assert len(blocks) >= 3
    namespace = {"__name__": "from_pytorch_doc"}
    run_blocks(DOC, namespace)
    assert "test accuracy" in capsys.readouterr().out
