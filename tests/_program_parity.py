"""What the PyTorch-program tests (tests/test_pytorch_examples_more.py, _third.py, _fourth.py,
_fifth.py) share: a program is a function of the framework module (``tt``: torch or minidl), run in torch
for its initial weights and then in both from them, and its results compared."""
import numpy as np
import pytest

import minidl

try:
    import torch
except ImportError:
    torch = None


def _parity(script, atol=1e-10, rtol=1e-8, loss_rtol=1e-9, loss_atol=1e-12, **kw):
    """Run ``script`` in torch (its initial weights), then both from those weights; compare."""
    if torch is None:
        pytest.skip("torch not installed: these tests run one script in torch and in minidl")
    torch.manual_seed(0)
    start = script(torch, **{**kw, "steps": 0})["params"]
    theirs = script(torch, state=start, **kw)
    ours = script(minidl, state=start, **kw)
    for key in theirs:
        if key == "params":
            continue
        if isinstance(theirs[key], str):  # a repr of facts that must match exactly
            assert ours[key] == theirs[key], key
            continue
        np.testing.assert_allclose(ours[key], theirs[key], rtol=loss_rtol, atol=loss_atol,
                                   err_msg=key)
    assert set(ours["params"]) == set(theirs["params"])
    for k in theirs["params"]:
        assert ours["params"][k].dtype == theirs["params"][k].dtype, k
        np.testing.assert_allclose(ours["params"][k], theirs["params"][k], rtol=rtol, atol=atol,
                                   err_msg=k)
    return ours


def _load(model, tt, state, prefix=""):
    if state is not None:
        model.load_state_dict({k[len(prefix):]: tt.from_numpy(v.copy()) for k, v in state.items()
                               if k.startswith(prefix)})


def _params(model, prefix=""):
    return {prefix + k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def _np(t):
    return t.detach().cpu().numpy().copy()
