"""README.md and docs/*.md: every ```python block runs, in order, one namespace per file, and the
commands they send a reader to exist.

Files whose blocks a test of their own runs (with the set-up or the assertions that page needs)
are listed in COVERED_ELSEWHERE; every other page is run here. Blocks that cannot run in CI carry
a marker (``<!-- not run: REASON -->`` or ``<!-- needs MINIDL_DATA -->``, see tests/docblocks.py).
Shell blocks are not run, but each ``python -m minidl.X`` / ``python tools/X.py`` they name must
exist and answer ``--help``; the same commands named inline in the prose must exist.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import re
import subprocess
import sys

import pytest

from docblocks import ROOT, code_blocks, python_blocks, run_blocks

COVERED_ELSEWHERE = {
    "docs/autograd.md": "tests/test_docs_autograd.py",
    "docs/from-pytorch.md": "tests/test_docs_from_pytorch.py",
    "docs/fx.md": "tests/test_docs_fx.py",
    "docs/internals.md": "tests/test_docs_internals.py",
    "docs/nested.md": "tests/test_nested.py",
    "docs/logging.md": "tests/test_logging_doc.py",
    "docs/tutorial.md": "tests/test_tutorial.py",
    "docs/profiling.md": "tests/test_profiler.py",
    "docs/quantization.md": "tests/test_quantization.py",
    "docs/distributed-checkpoint.md": "tests/test_dcp.py",
}
DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
RUN_HERE = [d for d in DOCS if d not in COVERED_ELSEWHERE]


def test_every_doc_with_code_is_run_by_some_test():
    assert "README.md" in RUN_HERE and "docs/onnx.md" in RUN_HERE
    for doc, test in COVERED_ELSEWHERE.items():
        assert doc in DOCS, f"{doc} is gone: take it out of COVERED_ELSEWHERE"
        with open(os.path.join(ROOT, test), encoding="utf-8") as f:
            assert os.path.basename(doc) in f.read(), f"{test} no longer runs {doc}"


# ---- running the blocks ------------------------------------------------------------------------
def _small_mnist(monkeypatch):
    """The README's example trains on MNIST(train=True): 256 images of it keep that to a second."""
    from minidl.datasets import MNIST

    setup = MNIST._setup

    def first_256(self, images, labels, *args, **kwargs):
        setup(self, images[:256], labels[:256], *args, **kwargs)

    monkeypatch.setattr(MNIST, "_setup", first_256)


def _onnx(monkeypatch):
    pytest.importorskip("onnx", reason="docs/onnx.md's block needs the onnx package")
    pytest.importorskip("onnxruntime", reason="docs/onnx.md's block runs the file in onnxruntime")


SETUP = {"README.md": _small_mnist, "docs/onnx.md": _onnx}


@pytest.mark.parametrize("doc", RUN_HERE)
def test_python_blocks_run_in_order(doc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # files the blocks write land here
    if doc in SETUP:
        SETUP[doc](monkeypatch)
    namespace = run_blocks(doc)
    if doc == "docs/onnx.md":
        import numpy as np

        expected = namespace["model"].eval()(namespace["x"]).detach().numpy()
        np.testing.assert_allclose(namespace["logits"], expected, rtol=1e-4, atol=1e-4)


def test_the_marker_convention(tmp_path):
    doc = tmp_path / "page.md"
    doc.write_text("text\n```python\nx = 1\n```\n<!-- not run: needs a GPU -->\n```python\n"
                   "raise SystemExit\n```\n<!-- needs MINIDL_DOCS_TEST_UNSET_VAR -->\n```python\n"
                   "y = x + 1\n```\n```bash\necho hi\n```\n")
    blocks = code_blocks(str(doc))
    assert [(b.lang, b.line, b.not_run, b.needs) for b in blocks] == [
        ("python", 2, None, ()), ("python", 6, "needs a GPU", ()),
        ("python", 10, None, ("MINIDL_DOCS_TEST_UNSET_VAR",)), ("bash", 13, None, ())]
    assert [b.code for b in python_blocks(str(doc))] == ["x = 1\n", "y = x + 1\n"]
    with pytest.raises(pytest.skip.Exception, match="MINIDL_DOCS_TEST_UNSET_VAR"):
        run_blocks(str(doc))


def test_a_failing_block_names_the_doc_and_its_line(tmp_path):
    doc = tmp_path / "page.md"
    doc.write_text("# t\n\n```python\nx = 1\ny = undefined_name\n```\n")
    with pytest.raises(NameError) as info:
        run_blocks(str(doc))
    last = info.traceback[-1]
    assert last.path.name == "page.md" and last.lineno + 1 == 5


# ---- commands -----------------------------------------------------------------------------------
_COMMAND = re.compile(r"python3? (-m (minidl(?:\.\w+)+)|(tools/\w+\.py))")
_SCRIPT = re.compile(r"\bbash (tools/[\w.]+\.sh)")


def _exists(module, script):
    if script:
        return os.path.isfile(os.path.join(ROOT, script))
    return importlib.util.find_spec(module) is not None


def _shell_commands():
    found = {}
    for doc in DOCS:
        for block in code_blocks(doc):
            if block.lang in ("bash", "sh", "shell", "console", "text"):
                for m in _COMMAND.finditer(block.code):
                    found.setdefault((m.group(2), m.group(3)), block.where)
    return found


def test_shell_blocks_name_commands_that_exist_and_answer_help():
    commands = _shell_commands()
    assert ("minidl.examples.mnist", None) in commands
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    running = []
    for (module, script), where in sorted(commands.items(), key=str):
        assert _exists(module, script), f"{where} names {module or script}, which does not exist"
        argv = [sys.executable, "-m", module, "--help"] if module else [sys.executable, script, "--help"]
        running.append((where, argv, subprocess.Popen(argv, cwd=ROOT, env=env, text=True,
                                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
    for where, argv, process in running:  # all started at once: each is mostly `import minidl`
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0 and "usage:" in out, f"{where}: {' '.join(argv[1:])}\n{err}"


def test_commands_named_in_the_prose_exist():
    missing = []
    for doc in DOCS:
        with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
            text = f.read()
        for m in _COMMAND.finditer(text):
            if not _exists(m.group(2), m.group(3)):
                missing.append(f"{doc}: {m.group(0)}")
        for m in _SCRIPT.finditer(text):
            if not os.path.isfile(os.path.join(ROOT, m.group(1))):
                missing.append(f"{doc}: {m.group(0)}")
    assert not missing, missing


# ---- links between the docs ---------------------------------------------------------------------
def test_relative_links_lead_to_files_and_headings_that_exist():
    broken = []
    for doc in DOCS:
        with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
            text = _prose(f.read())
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto
            path, _, anchor = target.partition("#")
            full = os.path.normpath(os.path.join(ROOT, os.path.dirname(doc), path)) if path \
                else os.path.join(ROOT, doc)
            if not os.path.exists(full):
                broken.append(f"{doc}: {target}")
            elif anchor and full.endswith(".md"):
                with open(full, encoding="utf-8") as f:
                    headings = {_slug(h) for h in re.findall(r"^#+ (.*)$", f.read(), flags=re.M)}
                if anchor not in headings:
                    broken.append(f"{doc}: {target} (no such heading)")
    assert not broken, broken


def _prose(text):
    """The text without its fenced blocks and inline code (where `f(x)[0](rows)` is no link)."""
    return re.sub(r"`[^`\n]*`", "", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M))


def _slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_output_shown_in_a_comment_is_checked(tmp_path, capsys):
    doc = tmp_path / "page.md"
    doc.write_text("```python\nimport minidl\nx = minidl.tensor([1.0, 2.0])\n"
                   "print(x * 2)   # tensor([2., 4.])\nprint(x.shape)\n# (2,): one dim\n"
                   "print(3)   # 3 is a number: prose, not checked\n```\n"
                   "```python\nprint([1, 2])   # [1, 3]\n```\n")
    with pytest.raises(AssertionError, match=r"page.md:10: the doc shows '\[1, 3\]'"):
        run_blocks(str(doc))
    assert capsys.readouterr().out.split("\n")[:2] == ["tensor([2., 4.])", "(2,)"]


def test_the_readme_counts_the_model_zoo_right():
    from minidl.models import list_models

    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        claimed = re.search(r"and (\d+) of torchvision's \d+ classification architectures", f.read())
    assert claimed and int(claimed.group(1)) == len(list_models())


def test_the_options_docs_pass_to_minidl_commands_exist():
    """`python -m minidl.examples.mnist --data DIR --epochs N`: each `--option` named with a
    command (in a code span or a shell line) is one its parser defines."""
    unknown, checked = [], set()
    for doc in DOCS:
        with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
            text = f.read()
        for span in re.findall(r"`([^`\n]*python -m minidl[^`\n]*)`", text) + \
                re.findall(r"^.*python -m minidl.*$", text, flags=re.M):
            for m in re.finditer(r"python -m (minidl(?:\.\w+)+)((?:(?!python -m|[;&|]).)*)", span):
                spec = importlib.util.find_spec(m.group(1))
                if spec is None or not spec.origin:
                    continue  # test_commands_named_in_the_prose_exist reports it
                with open(spec.origin, encoding="utf-8") as f:
                    source = f.read()
                for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", m.group(2)):
                    checked.add((m.group(1), option))
                    if f'"{option}"' not in source and option != "--help":
                        unknown.append(f"{doc}: {m.group(1)} {option}")
    assert len(checked) >= 12, sorted(checked)
    assert not unknown, sorted(set(unknown))


def _resolve(name):
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
            break
        except ImportError:
            continue
    for part in parts[i:]:
        obj = getattr(obj, part)
    return obj


PLACEHOLDERS = {"minidl.X", "minidl.ops.mylib.op"}  # `minidl.X(...)`; an op the reader defines


def test_every_minidl_name_in_the_docs_code_spans_exists():
    """A `minidl.a.b` the prose names (an API renamed or moved leaves it dangling)."""
    missing, seen = [], set()
    for doc in DOCS:
        with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
            spans = re.findall(r"`([^`\n]+)`", f.read())
        for span in spans:
            for name in re.findall(r"(?<![\w./])minidl(?:\.[A-Za-z_]\w*)+", span):
                if name in seen or name in PLACEHOLDERS:
                    continue
                seen.add(name)
                try:
                    _resolve(name)
                except (AttributeError, ImportError) as e:
                    missing.append(f"{doc}: {name} ({e})")
    assert len(seen) >= 100
    assert not missing, missing
