"""minidl.optim.swa_utils against torch.optim.swa_utils (torch 2.13): AveragedModel with each
averaging function (SWA, EMA, single- and multi-tensor forms), its state dict, SWALR's learning
rates and update_bn."""
from __future__ import annotations

import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl.optim import swa_utils

torch = pytest.importorskip("torch")
tswa = torch.optim.swa_utils


def _pair(seed=0, bn=True):
    """The same small model in minidl and torch, with the same weights."""
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(3, 4)] + ([torch.nn.BatchNorm1d(4)] if bn else []) \
        + [torch.nn.ReLU(), torch.nn.Linear(4, 2)]
    t = torch.nn.Sequential(*layers)
    m = nn.Sequential(*([nn.Linear(3, 4)] + ([nn.BatchNorm1d(4)] if bn else [])
                        + [nn.ReLU(), nn.Linear(4, 2)]))
    m.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    return m, t


def _perturb(m, t, rng):
    """Move both models' parameters (and batch-norm statistics) by the same random amounts."""
    with torch.no_grad():
        for (name, p), tp in zip(m.named_parameters(), t.parameters()):
            d = rng.standard_normal(p.shape).astype(np.float32)
            p.data[...] += d
            tp += torch.tensor(d)
        for b, tb in zip(m.buffers(), t.buffers()):
            if b.data.dtype.kind == "f":
                d = rng.uniform(0, 1, b.shape).astype(np.float32)
                b.data[...] += d
                tb += torch.tensor(d)
            else:
                b.data[...] += 1
                tb += 1


def _assert_same_state(m, t, rtol=1e-6):
    ms, ts = m.state_dict(), t.state_dict()
    assert list(ms) == list(ts)
    for k in ts:
        assert ms[k].dtype == np.dtype(str(ts[k].dtype).replace("torch.", "")), k
        np.testing.assert_allclose(ms[k].numpy(), ts[k].numpy(), rtol=rtol, atol=1e-6,
                                   err_msg=k)


@pytest.mark.parametrize("kind", ["swa", "ema_multi", "ema_avg", "swa_multi", "swa_avg",
                                  "ema_buffers"])
def test_averaged_model_follows_torch(kind):
    m, t = _pair()
    kw = {
        "swa": ({}, {}),
        "ema_multi": ({"multi_avg_fn": swa_utils.get_ema_multi_avg_fn(0.9)},
                      {"multi_avg_fn": tswa.get_ema_multi_avg_fn(0.9)}),
        "ema_avg": ({"avg_fn": swa_utils.get_ema_avg_fn(0.8)},
                    {"avg_fn": tswa.get_ema_avg_fn(0.8)}),
        "swa_multi": ({"multi_avg_fn": swa_utils.get_swa_multi_avg_fn()},
                      {"multi_avg_fn": tswa.get_swa_multi_avg_fn()}),
        "swa_avg": ({"avg_fn": swa_utils.get_swa_avg_fn()}, {"avg_fn": tswa.get_swa_avg_fn()}),
        "ema_buffers": ({"multi_avg_fn": swa_utils.get_ema_multi_avg_fn(0.5), "use_buffers": True},
                        {"multi_avg_fn": tswa.get_ema_multi_avg_fn(0.5), "use_buffers": True}),
    }[kind]
    am, at = swa_utils.AveragedModel(m, **kw[0]), tswa.AveragedModel(t, **kw[1])
    rng = np.random.default_rng(1)
    for _ in range(4):
        _perturb(m, t, rng)
        am.update_parameters(m)
        at.update_parameters(t)
        _assert_same_state(am, at, rtol=1e-5)
    assert int(am.n_averaged.item()) == 4 and am.n_averaged.dtype == np.int64
    assert list(am.state_dict())[0] == "n_averaged"
    # the averaged copy is its own: the model's parameters were not touched by the averaging
    assert not np.allclose(am.module[0].weight.numpy(), m[0].weight.numpy())
    x = np.random.default_rng(2).standard_normal((5, 3)).astype(np.float32)
    am.eval()
    at.eval()
    np.testing.assert_allclose(am(minidl.tensor(x)).numpy(),
                               at(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_averaged_model_loads_torchs_state_dict_and_refuses_two_fns():
    m, t = _pair()
    at = tswa.AveragedModel(t)
    at.update_parameters(t)
    am = swa_utils.AveragedModel(m)
    am.load_state_dict({k: v.numpy() for k, v in at.state_dict().items()})
    assert int(am.n_averaged.item()) == 1
    with pytest.raises(AssertionError, match="Only one of avg_fn and multi_avg_fn"):
        swa_utils.AveragedModel(m, avg_fn=swa_utils.get_swa_avg_fn(),
                                multi_avg_fn=swa_utils.get_swa_multi_avg_fn())
    with pytest.raises(ValueError, match="Invalid decay value 1.5"):
        swa_utils.get_ema_multi_avg_fn(1.5)


def _lrs(sched_mod, opt, steps, **kw):
    s = sched_mod.SWALR(opt, **kw)
    out = [s.get_last_lr()]
    for _ in range(steps):
        opt.step()
        s.step()
        out.append(s.get_last_lr())
    return out, s


@pytest.mark.parametrize("kw", [dict(swa_lr=0.05, anneal_epochs=3),
                                dict(swa_lr=[0.05, 0.2], anneal_epochs=4, anneal_strategy="linear"),
                                dict(swa_lr=0.01, anneal_epochs=0),
                                dict(swa_lr=0.3, anneal_epochs=1, anneal_strategy="cos")])
def test_swalr_lr_sequence_as_torch(kw):
    p, tp = nn.Parameter(minidl.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    q, tq = nn.Parameter(minidl.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = minidl.optim.SGD([{"params": [p]}, {"params": [q], "lr": 0.1}], lr=0.5)
    topt = torch.optim.SGD([{"params": [tp]}, {"params": [tq], "lr": 0.1}], lr=0.5)
    got, s = _lrs(swa_utils, opt, 7, **kw)
    want, ts = _lrs(tswa, topt, 7, **kw)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert [g["swa_lr"] for g in opt.param_groups] == [g["swa_lr"] for g in topt.param_groups]
    sd, tsd = s.state_dict(), ts.state_dict()
    assert set(sd) <= set(tsd) and {"_anneal_strategy", "anneal_epochs"} <= set(sd)
    s2 = swa_utils.SWALR(opt, **kw)
    s2.load_state_dict(tsd)  # PyTorch's state dict loads
    assert s2.anneal_epochs == kw["anneal_epochs"] and s2.last_epoch == ts.last_epoch


def test_swalr_refuses_bad_arguments():
    opt = minidl.optim.SGD([nn.Parameter(minidl.zeros(2))], lr=0.5)
    with pytest.raises(ValueError, match="anneal_strategy must be one of"):
        swa_utils.SWALR(opt, 0.1, anneal_strategy="exp")
    with pytest.raises(ValueError, match="anneal_epochs must be equal or greater than 0"):
        swa_utils.SWALR(opt, 0.1, anneal_epochs=-1)
    with pytest.raises(ValueError, match="swa_lr"):
        swa_utils.SWALR(opt, [0.1, 0.2])


def test_update_bn_as_torch():
    m, t = _pair()
    rng = np.random.default_rng(3)
    data = [rng.standard_normal((6, 3)).astype(np.float32) * (i + 1) for i in range(3)]
    m.eval()
    t.eval()
    swa_utils.update_bn([(minidl.tensor(d), 0) for d in data], m)
    tswa.update_bn([(torch.tensor(d), 0) for d in data], t)
    _assert_same_state(m, t, rtol=1e-5)
    assert not m.training and m[1].momentum == 0.1  # mode and momentum restored
    swa_utils.update_bn([minidl.tensor(d) for d in data], m)  # bare tensors too
    _assert_same_state(m, t, rtol=1e-5)
    m2, _ = _pair(bn=False)
    swa_utils.update_bn([minidl.tensor(data[0])], m2)  # no batch norm: nothing to do
