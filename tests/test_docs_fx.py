"""docs/fx.md: its code blocks run in order (they hold their own assertions)."""
import os

from docblocks import python_blocks, run_blocks

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "fx.md")


def test_every_code_block_runs_in_order(capsys):
    blocks = python_blocks(DOC)
    assert len(blocks) == 3
    namespace = {"__name__": "fx_doc"}
    run_blocks(DOC, namespace)
    out = capsys.readouterr().out
    assert "def forward(self, x):" in out and "call_module" in out
    assert "gelu" in namespace["gm"].code
