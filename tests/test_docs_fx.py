"""docs/fx.md: its code blocks run in order (they hold their own assertions)."""
import os
import re

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "fx.md")


def test_every_code_block_runs_in_order(capsys):
    with open(DOC, encoding="utf-8") as f:
        blocks = re.findall(r"^```python\n(.*?)^```", f.read(), flags=re.S | re.M)
    assert len(blocks) == 3
    namespace = {"__name__": "fx_doc"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOC} block {i + 1}", "exec"), namespace)
    out = capsys.readouterr().out
    assert "def forward(self, x):" in out and "call_module" in out
    assert "gelu" in namespace["gm"].code
