"""Import plus the first LeNet-5 training step (batch 128) in a fresh Python process, with the
numba cache already warm (an untimed run fills it first): what a user waits for on every run of
a script. numba compilation is lazy, so ``import minidl`` alone must stay cheap."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from _common import THREADS

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CODE = {
    "minidl": """
        import numpy as np
        import minidl, minidl.nn.functional as F
        from _common import minidl_lenet5, minidl_sgd
        model = minidl_lenet5(); opt = minidl_sgd(model)
        rng = np.random.default_rng(0)
        x = minidl.tensor(rng.standard_normal((128, 1, 28, 28)).astype(np.float32))
        y = minidl.tensor(rng.integers(0, 10, 128))
        opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
    """,
    "torch": """
        import numpy as np
        import torch
        torch.set_num_threads({threads})
        from _common import torch_lenet5
        model = torch_lenet5(); opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        rng = np.random.default_rng(0)
        x = torch.from_numpy(rng.standard_normal((128, 1, 28, 28)).astype(np.float32))
        y = torch.from_numpy(rng.integers(0, 10, 128))
        opt.zero_grad(); torch.nn.functional.cross_entropy(model(x), y).backward(); opt.step()
    """,
}


@pytest.mark.parametrize("fw", ["minidl", "torch"])
def test_import_and_first_train_step(benchmark, request, fw):
    benchmark.group = "startup-import+first-lenet5-step"
    if fw == "torch":
        request.getfixturevalue("torch")
    # torch's _common import pulls minidl too (tiny next to torch); minidl's never imports torch
    code = textwrap.dedent(CODE[fw]).format(threads=THREADS)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, HERE, os.environ.get("PYTHONPATH", "")]))

    def run():
        subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)

    run()  # fills the numba cache if it is cold; the timed runs below find it warm
    benchmark.pedantic(run, rounds=3, warmup_rounds=0)
