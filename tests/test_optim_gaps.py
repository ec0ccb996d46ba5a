"""torch.optim names minidl lacked: Adafactor, Muon, SparseAdam, and the Optimizer's state
dict hooks. Parity with torch 2.13 over several steps from the same parameters and
gradients, state dicts loaded both ways."""
from __future__ import annotations

import numpy as np
import pytest

import minidl
import minidl.nn as nn

from _optim_parity import _data, _params, _step, _torch_params, _torch_step, close

MATRICES = [(4, 3), (5, 6), (3, 7)]


def _run(torch, make_ours, make_theirs, dtype, shapes=None, steps=6, seed=0):
    if shapes is None:
        params, grads = _data(dtype, steps, seed)
    else:
        rng = np.random.default_rng(seed)
        params = [rng.standard_normal(s).astype(dtype) for s in shapes]
        grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]
    ours, theirs = _params(params), _torch_params(torch, params)
    o_opt, t_opt = make_ours(ours), make_theirs(theirs)
    for step_grads in grads:
        _step(o_opt, ours, step_grads)
        _torch_step(torch, t_opt, theirs, step_grads)
    return ours, theirs, o_opt, t_opt


ADAFACTOR = [dict(), dict(lr=0.1, weight_decay=0.1, maximize=True),
             dict(eps=(1e-20, 1e-2), d=2.0, beta2_decay=-0.5), dict(lr=0.5)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kw", ADAFACTOR)
def test_adafactor_matches_torch(kw, dtype):
    torch = pytest.importorskip("torch")
    ours, theirs, o_opt, t_opt = _run(torch, lambda p: minidl.optim.Adafactor(p, **kw),
                                      lambda p: torch.optim.Adafactor(p, **kw), dtype, steps=8)
    close(ours, theirs, dtype, "Adafactor", dict(rtol=1e-12, atol=1e-14),
          dict(rtol=2e-6, atol=1e-6))
    t_state = t_opt.state_dict()["state"]
    for k, entry in o_opt.state_dict()["state"].items():
        assert set(entry) == set(t_state[k]), (entry.keys(), t_state[k].keys())
        assert int(entry["step"]) == int(t_state[k]["step"]) == 8
        for key in entry:
            if key != "step":
                assert tuple(entry[key].shape) == tuple(t_state[k][key].shape), key


def test_adafactor_loads_torchs_state_dict_and_goes_on_alike():
    torch = pytest.importorskip("torch")
    dtype = np.float64
    params, grads = _data(dtype, 6, seed=3)
    theirs = _torch_params(torch, params)
    t_opt = torch.optim.Adafactor(theirs, lr=0.05)
    for g in grads[:3]:
        _torch_step(torch, t_opt, theirs, g)
    ours = _params([p.detach().numpy() for p in theirs])
    o_opt = minidl.optim.Adafactor(ours, lr=0.05)
    o_opt.load_state_dict(t_opt.state_dict())
    for g in grads[3:]:
        _torch_step(torch, t_opt, theirs, g)
        _step(o_opt, ours, g)
    close(ours, theirs, dtype, "Adafactor resumed", dict(rtol=1e-12, atol=1e-14), None)
    # and back: torch takes minidl's state dict
    t2 = torch.optim.Adafactor(_torch_params(torch, [p.numpy() for p in ours]), lr=0.05)
    sd = o_opt.state_dict()
    sd["state"] = {k: {n: torch.tensor(float(v)) if n == "step" else torch.tensor(v.numpy())
                       for n, v in e.items()} for k, e in sd["state"].items()}
    t2.load_state_dict(sd)


def test_adafactor_bad_arguments():
    p = [nn.Parameter(minidl.ones(2, 2))]
    with pytest.raises(ValueError, match="beta2_decay should be <= 0"):
        minidl.optim.Adafactor(p, beta2_decay=0.5)
    with pytest.raises(ValueError, match="Clipping threshold d should be >= 1"):
        minidl.optim.Adafactor(p, d=0.5)
    with pytest.raises(ValueError, match="epsilon2 should be >= 0"):
        minidl.optim.Adafactor(p, eps=(None, -1.0))
    with pytest.raises(ValueError, match="Learning rate should be >= 0"):
        minidl.optim.Adafactor(p, lr=-1.0)
    with pytest.raises(ValueError, match="row_var.*expected \\(3, 1\\)"):
        o = minidl.optim.Adafactor([nn.Parameter(minidl.ones(3, 2))])
        o.load_state_dict({"state": {0: {"step": 1, "row_var": np.zeros((3, 2))}},
                           "param_groups": o.state_dict()["param_groups"]})


MUON = [dict(), dict(lr=0.02, nesterov=False), dict(lr=0.02, adjust_lr_fn="match_rms_adamw",
                                                   weight_decay=0.01),
        dict(lr=0.05, momentum=0.5, ns_steps=3, ns_coefficients=(2.0, -1.5, 0.5))]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kw", MUON)
def test_muon_matches_torch(kw, dtype):
    torch = pytest.importorskip("torch")
    ours, theirs, o_opt, _ = _run(torch, lambda p: minidl.optim.Muon(p, **kw),
                                  lambda p: torch.optim.Muon(p, **kw), dtype, MATRICES)
    # the Newton-Schulz iteration runs in bfloat16: an element may round the other way
    lr = kw.get("lr", 1e-3)
    close(ours, theirs, dtype, "Muon", dict(rtol=0, atol=lr * 1e-5), dict(rtol=0, atol=lr * 1e-5))
    assert list(o_opt.state_dict()["state"][0]) == ["momentum_buffer"]


def test_muon_orthogonalises_and_refuses_what_torch_refuses():
    from minidl.optim.muon import zeropower_via_newtonschulz

    g = np.random.default_rng(0).standard_normal((6, 4))
    o = zeropower_via_newtonschulz(g, (3.4445, -4.7750, 2.0315), 5, 1e-7)
    s = np.linalg.svd(o, compute_uv=False)
    assert o.shape == (6, 4) and s.min() > 0.5 and s.max() < 1.5
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
        minidl.optim.Muon([nn.Parameter(minidl.ones(3))])
    with pytest.raises(ValueError, match="Adjust learning rate function foo is not supported"):
        minidl.optim.Muon([nn.Parameter(minidl.ones(3, 3))], adjust_lr_fn="foo")
    with pytest.raises(ValueError, match="Number of steps must be less than 100"):
        zeropower_via_newtonschulz(g, (1, 1, 1), 100, 1e-7)


def test_sparse_adam_constructs_and_refuses_dense_gradients_as_torch():
    torch = pytest.importorskip("torch")
    for ns in (minidl, torch):
        p = ns.nn.Parameter(ns.ones(3))
        opt = ns.optim.SparseAdam([p], lr=0.01)
        assert opt.defaults["lr"] == 0.01 and opt.defaults["betas"] == (0.9, 0.999)
        p.grad = ns.ones(3)
        with pytest.raises(RuntimeError, match="SparseAdam does not support dense gradients"):
            opt.step()
    with pytest.raises(ValueError, match="Invalid learning rate"):
        minidl.optim.SparseAdam([nn.Parameter(minidl.ones(3))], lr=0.0)


def test_optimizer_state_dict_hooks_run_as_torchs():
    torch = pytest.importorskip("torch")
    logs = []
    for ns in (minidl, torch):
        log = []
        p = ns.nn.Parameter(ns.ones(2))
        opt = ns.optim.Adam([p])
        opt.register_state_dict_pre_hook(lambda o: log.append("pre"))
        opt.register_state_dict_post_hook(lambda o, sd: log.append("post") or {**sd, "x": 1})
        opt.register_state_dict_post_hook(lambda o, sd: log.append("post0"), prepend=True)
        opt.register_load_state_dict_pre_hook(
            lambda o, sd: log.append("lpre") or {k: v for k, v in sd.items() if k != "x"})
        handle = opt.register_load_state_dict_post_hook(lambda o: log.append("lpost"))
        sd = opt.state_dict()
        assert sd["x"] == 1
        opt.load_state_dict(sd)
        handle.remove()
        opt.load_state_dict(sd)
        logs.append(log)
    assert logs[0] == logs[1] == ["pre", "post0", "post", "lpre", "lpost", "lpre"]


def test_lbfgs_state_dict_hooks_run_once():
    p = nn.Parameter(minidl.ones(2))
    opt = minidl.optim.LBFGS([p])
    seen = []
    opt.register_state_dict_pre_hook(lambda o: seen.append(1))
    opt.state_dict()
    assert seen == [1]


def test_swap_in_optimizer_params_and_state_matches_torch():
    torch = pytest.importorskip("torch")
    results = []
    for ns in (torch, minidl):
        p = ns.nn.Parameter(ns.ones(3))
        opt = ns.optim.Adam([p], lr=0.1)
        p.grad = ns.ones(3)
        opt.step()
        q = ns.nn.Parameter(ns.zeros(3))
        q.grad = ns.full((3,), 2.0)
        sd = opt.state_dict()
        sd["param_groups"][0]["lr"] = 0.5
        with ns.optim.swap_in_optimizer_params_and_state(opt, {"w": q}, sd):
            assert opt.param_groups[0]["params"][0] is q and opt.param_groups[0]["lr"] == 0.5
            opt.step()
        assert opt.param_groups[0]["params"][0] is p and opt.param_groups[0]["lr"] == 0.1
        results.append((p.tolist(), q.tolist(), sd["state"][0]["exp_avg"].tolist()))
    np.testing.assert_allclose(np.array(results[1], dtype=float), np.array(results[0], dtype=float),
                               rtol=1e-6)
    opt = minidl.optim.SGD([nn.Parameter(minidl.ones(2))], lr=0.1)
    with pytest.raises(ValueError, match="1 parameters, 2 were given"):
        with minidl.optim.swap_in_optimizer_params_and_state(
                opt, [minidl.ones(2), minidl.ones(2)], opt.state_dict()):
            pass
