"""docs/from-pytorch.md: every ```python block runs, in order, in one namespace (the page
promises it)."""
import os
import re

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "from-pytorch.md")


def test_every_code_block_runs_in_order(capsys):
    with open(DOC, encoding="utf-8") as f:
        blocks = re.findall(r"^```python\n(.*?)^```", f.read(), flags=re.S | re.M)
    assert len(blocks) >= 3
    namespace = {"__name__": "from_pytorch_doc"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOC} block {i + 1}", "exec"), namespace)
    assert "test accuracy" in capsys.readouterr().out
