"""AdamW, RMSprop, the lr schedules and gradient clipping: PyTorch's numbers, PyTorch's state
dicts in both directions, and refusals that name what did not fit.

Parity runs in float64, where minidl and PyTorch agree to rounding (rtol 1e-12), and in
float32 at rtol 1e-5: PyTorch's CPU kernels fuse multiply-adds where numpy rounds each
operation, a few ulp per step that centered RMSprop's s - mean^2 amplifies (1e-6 is not met
there after a few steps).
"""
import math

import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F
from minidl import optim
from minidl.nn.utils import clip_grad_norm_, clip_grad_value_

import _fake_gpu

from _optim_parity import (  # noqa: E402,F401
    SHAPES, _data, _params, _step, _torch_params, _torch_step, close,
)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="PyTorch parity needs torch, which is not installed")


def _close(ours, theirs, dtype, what=""):
    close(ours, theirs, dtype, what, dict(rtol=1e-12, atol=1e-14), dict(rtol=1e-5, atol=1e-7))


# ---- optimizers against PyTorch ---------------------------------------------------------------
CONFIGS = {
    "adamw_default": ("AdamW", {}),
    "adamw_big_lr_decay": ("AdamW", dict(lr=0.1, betas=(0.8, 0.99), weight_decay=0.1)),
    "adamw_amsgrad": ("AdamW", dict(lr=0.05, weight_decay=0.05, amsgrad=True)),
    "adamw_low_beta1": ("AdamW", dict(lr=0.05, betas=(0.3, 0.9), eps=1e-3)),
    "adam_amsgrad_l2": ("Adam", dict(lr=0.05, weight_decay=0.1, amsgrad=True)),
    "adam_decoupled": ("Adam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True)),
    "rmsprop_default": ("RMSprop", {}),
    "rmsprop_momentum": ("RMSprop", dict(lr=0.01, momentum=0.5, eps=1e-3)),
    "rmsprop_centered": ("RMSprop", dict(centered=True, alpha=0.9)),
    "rmsprop_weight_decay": ("RMSprop", dict(lr=0.02, weight_decay=0.1)),
    "rmsprop_everything": ("RMSprop", dict(lr=0.01, alpha=0.9, weight_decay=0.1, momentum=0.9,
                                           centered=True)),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_optimizer_matches_torch(torch, name, dtype):
    cls, kw = CONFIGS[name]
    params, grads = _data(dtype)
    ps, tps = _params(params), _torch_params(torch, params)
    opt, topt = getattr(optim, cls)(ps, **kw), getattr(torch.optim, cls)(tps, **kw)
    for k, step_grads in enumerate(grads):
        _step(opt, ps, step_grads)
        _torch_step(torch, topt, tps, step_grads)
        _close(ps, tps, dtype, f"{name}, step {k + 1}")
    assert not np.allclose(ps[0].numpy(), params[0])  # the parameters did move


def test_adamw_decay_leaves_the_moments_alone():
    # a zero gradient: Adam's moments stay 0 and only the decay moves p, by the factor 1 - lr*wd
    p = nn.Parameter(np.array([2.0, -4.0], np.float64))
    opt = optim.AdamW([p], lr=0.1, weight_decay=0.5)
    p.grad = minidl.Tensor(np.zeros(2))
    opt.step()
    np.testing.assert_allclose(p.numpy(), [2.0 * 0.95, -4.0 * 0.95], rtol=1e-15)
    state = opt.state_dict()["state"][0]
    assert not state["exp_avg"].numpy().any() and not state["exp_avg_sq"].numpy().any()


def test_rmsprop_first_step_closed_form():
    # s = (1 - alpha) g^2, so the first step is lr * g / (sqrt(1 - alpha) |g| + eps)
    p = nn.Parameter(np.array([1.0, 1.0], np.float64))
    p.grad = minidl.Tensor(np.array([2.0, -0.5]))
    optim.RMSprop([p], lr=0.01, alpha=0.75, eps=0.0).step()
    np.testing.assert_allclose(p.numpy(), [1 - 0.01 / 0.5, 1 + 0.01 / 0.5], rtol=1e-14)


def test_training_a_model_with_adamw_a_schedule_and_clipping_matches_torch(torch):
    """Forward, backward, clip_grad_norm_, AdamW and CosineAnnealingLR end to end, float64."""
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((16, 5)), rng.integers(0, 3, 16)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    tmodel = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(),
                                 torch.nn.Linear(8, 3)).double()
    model.load_state_dict({k: v.detach().numpy() for k, v in tmodel.state_dict().items()})
    opt = optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
    topt = torch.optim.AdamW(tmodel.parameters(), lr=0.05, weight_decay=0.1)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4, eta_min=0.005)
    tsched = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=4, eta_min=0.005)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for step in range(6):
        opt.zero_grad(), topt.zero_grad()
        loss = F.cross_entropy(model(minidl.tensor(x, dtype=np.float64)), minidl.tensor(y))
        tloss = torch.nn.functional.cross_entropy(tmodel(xt), yt)
        loss.backward(), tloss.backward()
        norm = clip_grad_norm_(model.parameters(), max_norm=0.3)
        tnorm = torch.nn.utils.clip_grad_norm_(tmodel.parameters(), max_norm=0.3)
        assert norm.item() == pytest.approx(tnorm.item(), rel=1e-12)
        opt.step(), topt.step()
        sched.step(), tsched.step()
        assert sched.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=1e-12)
    _close(list(model.parameters()), list(tmodel.parameters()), np.float64, "model")


# ---- state dicts ------------------------------------------------------------------------------
STATEFUL = {
    "adamw_amsgrad": lambda m, ps: m.optim.AdamW(ps, lr=0.02, weight_decay=0.1, amsgrad=True),
    "adamw": lambda m, ps: m.optim.AdamW(ps, lr=0.02, betas=(0.8, 0.95)),
    "rmsprop_centered_momentum": lambda m, ps: m.optim.RMSprop(ps, lr=0.01, momentum=0.9,
                                                               centered=True, weight_decay=0.01),
    "rmsprop": lambda m, ps: m.optim.RMSprop(ps, lr=0.01, alpha=0.9),
}


def _with_a_gap(grads):
    """Parameter 0 gets no gradient in the first two steps: its state appears last."""
    return [[None if k < 2 and i == 0 else g for i, g in enumerate(gs)]
            for k, gs in enumerate(grads)]


@pytest.mark.parametrize("name", list(STATEFUL))
def test_state_dict_round_trip_continues_bit_for_bit(name):
    make = STATEFUL[name]
    params, grads = _data(np.float32)
    grads = _with_a_gap(grads)
    ps = _params(params)
    unbroken = make(minidl, ps)
    for g in grads:
        _step(unbroken, ps, g)
    first = _params(params)
    opt = make(minidl, first)
    for g in grads[:3]:
        _step(opt, first, g)
    sd = opt.state_dict()
    assert sorted(sd["state"]) == [0, 1, 2]
    resumed = [nn.Parameter(p.numpy().copy()) for p in first]
    opt2 = make(minidl, resumed)
    opt2.load_state_dict(sd)
    _step(opt, first, [np.ones_like(p) for p in params])  # the state dict holds copies
    for g in grads[3:]:
        _step(opt2, resumed, g)
    for a, b in zip(resumed, ps):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def _to_torch_state(torch, sd):
    """minidl's optimizer state dict with its Tensors as torch tensors (the structure is
    PyTorch's already)."""
    state = {i: {k: torch.tensor(v.numpy()) if hasattr(v, "numpy") else v
                 for k, v in entry.items()} for i, entry in sd["state"].items()}
    return {"state": state, "param_groups": sd["param_groups"]}


@pytest.mark.parametrize("name", list(STATEFUL))
def test_state_dicts_load_both_ways_with_torch(torch, name):
    make = STATEFUL[name]
    params, grads = _data(np.float64, steps=7)
    grads = _with_a_gap(grads)
    ps, tps = _params(params), _torch_params(torch, params)
    opt, topt = make(minidl, ps), make(torch, tps)
    for g in grads[:3]:
        _step(opt, ps, g)
        _torch_step(torch, topt, tps, g)
    ours, theirs = opt.state_dict(), topt.state_dict()
    assert sorted(ours["state"]) == sorted(theirs["state"])  # PyTorch's in order of creation
    for ga, gb in zip(ours["param_groups"], theirs["param_groups"]):
        assert ga == {k: v for k, v in gb.items() if k in ga}  # every key ours has, same value
    for i, entry in theirs["state"].items():
        assert set(ours["state"][i]) == set(entry)
        for k, v in entry.items():
            mine = ours["state"][i][k]
            np.testing.assert_allclose(np.asarray(mine.numpy() if hasattr(mine, "numpy")
                                                  else mine), v.numpy(), rtol=1e-12,
                                       err_msg=f"state {i} {k}")
    # torch -> minidl and minidl -> torch, then both carry on with the same numbers
    from_torch = [nn.Parameter(p.detach().numpy().copy()) for p in tps]
    opt_from_torch = make(minidl, from_torch)
    opt_from_torch.load_state_dict(theirs)
    to_torch = _torch_params(torch, [p.numpy() for p in ps])
    topt_from_ours = make(torch, to_torch)
    topt_from_ours.load_state_dict(_to_torch_state(torch, ours))
    for g in grads[3:]:
        _step(opt_from_torch, from_torch, g)
        _torch_step(torch, topt_from_ours, to_torch, g)
        _step(opt, ps, g)
        _torch_step(torch, topt, tps, g)
    _close(from_torch, tps, np.float64, "minidl resumed from torch's state dict")
    _close(ps, to_torch, np.float64, "torch resumed from minidl's state dict")


def test_adamw_loads_an_adam_state_dict_as_adamw_and_adam_takes_adamws(torch):
    ps = _params(_data(np.float32)[0])
    tps = _torch_params(torch, [p.numpy() for p in ps])
    topt = torch.optim.Adam(tps, lr=0.01)
    _torch_step(torch, topt, tps, [np.ones(s, np.float32) for s in SHAPES])
    opt = optim.AdamW(ps)
    opt.load_state_dict(topt.state_dict())  # decoupled_weight_decay False: AdamW keeps its own
    assert opt.param_groups[0]["decoupled_weight_decay"] is True
    assert opt.param_groups[0]["lr"] == 0.01
    adam = optim.Adam(_params(_data(np.float32)[0]))
    tadamw = torch.optim.AdamW(_torch_params(torch, _data(np.float32)[0]), amsgrad=True)
    adam.load_state_dict(tadamw.state_dict())  # an Adam with PyTorch's AdamW options
    assert adam.param_groups[0]["decoupled_weight_decay"] is True
    assert adam.param_groups[0]["amsgrad"] is True


# ---- lr schedules against PyTorch -------------------------------------------------------------
SCHEDULES = {
    "MultiStepLR": dict(milestones=[2, 5, 5, 9], gamma=0.3),
    "MultiStepLR_default_gamma": dict(milestones=[3, 7]),
    "ExponentialLR": dict(gamma=0.85),
    "CosineAnnealingLR": dict(T_max=4, eta_min=0.01),
    "CosineAnnealingLR_long": dict(T_max=10),
    "LambdaLR": dict(lr_lambda=lambda e: 1.0 / (1.0 + 0.5 * e)),
    "LambdaLR_per_group": dict(lr_lambda=[lambda e: 0.9 ** e, lambda e: 1.0 + e % 3]),
    "LinearLR": dict(),
    "LinearLR_down": dict(start_factor=1.0, end_factor=0.1, total_iters=7),
    "LinearLR_up": dict(start_factor=0.25, end_factor=0.9, total_iters=6),
    "StepLR": dict(step_size=3, gamma=0.5),
}


def _two_groups(module, make_param):
    a, b = make_param(), make_param()
    return module.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.2)


def _schedule_pair(torch, name):
    cls, kw = name.split("_")[0], SCHEDULES[name]
    opt = _two_groups(minidl, lambda: nn.Parameter(np.ones(1, np.float32)))
    topt = _two_groups(torch, lambda: torch.nn.Parameter(torch.ones(1)))
    return (getattr(optim.lr_scheduler, cls)(opt, **kw),
            getattr(torch.optim.lr_scheduler, cls)(topt, **kw))


def _advance(sched, tsched, steps, by_hand_at=None):
    ours, theirs = [], []
    for k in range(steps):
        if k == by_hand_at:  # an lr set by hand: the chainable forms schedule on from it
            for opt in (sched.optimizer, tsched.optimizer):
                opt.param_groups[0]["lr"] *= 0.3
                opt.param_groups[1]["lr"] = 0.07
        ours.append(sched.get_last_lr())
        theirs.append(tsched.get_last_lr())
        tsched.optimizer.step()
        sched.step(), tsched.step()
    ours.append([g["lr"] for g in sched.optimizer.param_groups])
    theirs.append([g["lr"] for g in tsched.optimizer.param_groups])
    return ours, theirs


@pytest.mark.parametrize("by_hand_at", [None, 4])
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_matches_torch(torch, name, by_hand_at):
    sched, tsched = _schedule_pair(torch, name)
    ours, theirs = _advance(sched, tsched, 14, by_hand_at)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)
    assert len({tuple(lrs) for lrs in ours}) > 2  # the lr did change


def _continue(sched, steps):
    lrs = []
    for _ in range(steps):
        sched.step()
        lrs.append(sched.get_last_lr())
    return lrs


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_state_dict_resumes_and_loads_both_ways(torch, name):
    cls = name.split("_")[0]
    sched, tsched = _schedule_pair(torch, name)
    _advance(sched, tsched, 5, by_hand_at=2)
    sd, tsd = sched.state_dict(), tsched.state_dict()
    opt_sd, topt_sd = sched.optimizer.state_dict(), tsched.optimizer.state_dict()
    assert set(sd) <= set(tsd) and "optimizer" not in sd
    if cls == "LambdaLR":
        assert sd["lr_lambdas"] == [None, None]  # functions are left out, as PyTorch does
    expected = _continue(tsched, 7)
    np.testing.assert_allclose(_continue(sched, 7), expected, rtol=1e-12, atol=0)
    # a fresh optimizer and a scheduler made with other settings pick up where these left off,
    # from minidl's state dict and from PyTorch's. As PyTorch's docs say, the scheduler comes
    # before the optimizer's load_state_dict: making it sets the lrs (LinearLR scales them)
    other = {"MultiStepLR": dict(milestones=[1]), "ExponentialLR": dict(gamma=0.5),
             "CosineAnnealingLR": dict(T_max=50), "LinearLR": dict(start_factor=0.9),
             "StepLR": dict(step_size=1), "LambdaLR": dict(SCHEDULES[name])}[cls]
    for state, opt_state in ((sd, opt_sd), (tsd, topt_sd)):
        opt = _two_groups(minidl, lambda: nn.Parameter(np.ones(1, np.float32)))
        resumed = getattr(optim.lr_scheduler, cls)(opt, **other)
        opt.load_state_dict(opt_state)
        resumed.load_state_dict(state)
        np.testing.assert_allclose(_continue(resumed, 7), expected, rtol=1e-12, atol=0,
                                   err_msg="from torch's" if state is tsd else "from minidl's")
    # and minidl's state dict loads into PyTorch's scheduler
    topt = _two_groups(torch, lambda: torch.nn.Parameter(torch.ones(1)))
    tresumed = getattr(torch.optim.lr_scheduler, cls)(topt, **other)
    topt.load_state_dict(topt_sd)
    tresumed.load_state_dict(sd)
    topt.step()
    np.testing.assert_allclose(_continue(tresumed, 7), expected, rtol=1e-12, atol=0,
                               err_msg="torch from minidl's")


@pytest.mark.parametrize("name", ["MultiStepLR", "ExponentialLR", "CosineAnnealingLR",
                                  "LambdaLR", "LinearLR", "StepLR"])
def test_schedule_built_with_last_epoch_matches_torch(torch, name):
    """last_epoch=k (resuming without a state dict) takes PyTorch's step k + 1 from the lrs
    the groups hold, and needs their initial_lr."""
    sched, tsched = _schedule_pair(torch, name)
    _advance(sched, tsched, 4)
    kw = SCHEDULES[name]
    again = getattr(optim.lr_scheduler, name)(sched.optimizer, last_epoch=3, **kw)
    tagain = getattr(torch.optim.lr_scheduler, name)(tsched.optimizer, last_epoch=3, **kw)
    assert again.last_epoch == tagain.last_epoch == 4
    ours, theirs = _advance(again, tagain, 6)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)
    fresh = optim.SGD([nn.Parameter(np.ones(1, np.float32))], lr=0.1)
    with pytest.raises(ValueError, match="initial_lr"):
        getattr(optim.lr_scheduler, name)(fresh, last_epoch=3, **kw)


class WarmUp:
    """A callable object: its attributes are what LambdaLR's state dict keeps."""

    def __init__(self, steps):
        self.steps = steps

    def __call__(self, epoch):
        return min(1.0, (epoch + 1) / self.steps)


def test_lambda_lr_state_dict_keeps_a_callable_objects_attributes():
    opt = optim.SGD([nn.Parameter(np.ones(1, np.float32))], lr=1.0)
    sched = optim.lr_scheduler.LambdaLR(opt, WarmUp(4))
    sd = sched.state_dict()
    assert sd["lr_lambdas"] == [{"steps": 4}]
    target = WarmUp(10)
    sched2 = optim.lr_scheduler.LambdaLR(optim.SGD([nn.Parameter(np.ones(1, np.float32))],
                                                   lr=1.0), target)
    sched2.load_state_dict(sd)
    assert target.steps == 4
    sched2.step()
    assert sched2.get_last_lr() == [0.5]
    with pytest.raises(ValueError, match="2 lr_lambdas for 1"):
        sched2.load_state_dict({**sd, "lr_lambdas": [None, None]})


def test_lr_scheduler_is_importable_as_in_torch():
    from minidl.optim.lr_scheduler import CosineAnnealingLR, LinearLR  # noqa: F401
    import minidl.optim.lr_scheduler as lrs

    assert lrs.MultiStepLR is optim.MultiStepLR and lrs is optim.lr_scheduler
    assert issubclass(lrs.StepLR, lrs.LRScheduler)
    assert {"AdamW", "RMSprop"} <= set(dir(optim))


# ---- bad input --------------------------------------------------------------------------------
def _p():
    return nn.Parameter(np.ones(2, np.float32))


@pytest.mark.parametrize("make,error,message", [
    (lambda: optim.AdamW([_p()], lr=-1e-3), ValueError, "lr must be >= 0"),
    (lambda: optim.AdamW([_p()], lr=float("nan")), ValueError, "lr must be a finite"),
    (lambda: optim.AdamW([_p()], betas=(0.9, 1.0)), ValueError, r"betas\[1\] must be in \[0, 1\)"),
    (lambda: optim.AdamW([_p()], betas=(-0.1, 0.9)), ValueError, r"betas\[0\]"),
    (lambda: optim.AdamW([_p()], betas=(float("inf"), 0.9)), ValueError, r"betas\[0\] must be a fin"),
    (lambda: optim.AdamW([_p()], betas=0.9), TypeError, "betas must be a pair"),
    (lambda: optim.AdamW([_p()], eps=-1.0), ValueError, "eps must be >= 0"),
    (lambda: optim.AdamW([_p()], weight_decay=-0.1), ValueError, "weight_decay must be >= 0"),
    (lambda: optim.AdamW([_p()], weight_decay="0.1"), TypeError, "weight_decay must be a number"),
    (lambda: optim.AdamW([_p()], amsgrad="yes"), TypeError, "amsgrad must be True or False"),
    (lambda: optim.Adam([_p()], weight_decay=float("inf")), ValueError, "weight_decay must be a f"),
    (lambda: optim.RMSprop([_p()], lr=-0.1), ValueError, "lr must be >= 0"),
    (lambda: optim.RMSprop([_p()], alpha=1.5), ValueError, r"alpha must be in \[0, 1\]"),
    (lambda: optim.RMSprop([_p()], alpha=-0.5), ValueError, "alpha must be >= 0"),
    (lambda: optim.RMSprop([_p()], momentum=-0.9), ValueError, "momentum must be >= 0"),
    (lambda: optim.RMSprop([_p()], eps=float("nan")), ValueError, "eps must be a finite"),
    (lambda: optim.RMSprop([_p()], centered=None), TypeError, "centered must be True or False"),
    (lambda: optim.RMSprop(_p()), TypeError, "iterable of Tensors"),
    (lambda: optim.AdamW([]), ValueError, "empty parameter list"),
])
def test_bad_optimizer_arguments_name_what_did_not_fit(make, error, message):
    with pytest.raises(error, match=message):
        make()


def _sgd():
    return optim.SGD([_p()], lr=0.1)


@pytest.mark.parametrize("make,error,message", [
    (lambda: optim.lr_scheduler.MultiStepLR(_sgd(), [5, 2]), ValueError, "increasing order"),
    (lambda: optim.lr_scheduler.MultiStepLR(_sgd(), [-1, 2]), ValueError, "milestone must be"),
    (lambda: optim.lr_scheduler.MultiStepLR(_sgd(), [1.5]), ValueError, "milestone must be an int"),
    (lambda: optim.lr_scheduler.MultiStepLR(_sgd(), 3), TypeError, "milestones must be a list"),
    (lambda: optim.lr_scheduler.MultiStepLR(_sgd(), [2], gamma=float("nan")), ValueError,
     "gamma must be a finite"),
    (lambda: optim.lr_scheduler.ExponentialLR(_sgd(), gamma=-0.5), ValueError, "gamma must be in"),
    (lambda: optim.lr_scheduler.ExponentialLR(_sgd(), gamma=None), TypeError, "gamma must be a num"),
    (lambda: optim.lr_scheduler.CosineAnnealingLR(_sgd(), T_max=0), ValueError, "T_max must be"),
    (lambda: optim.lr_scheduler.CosineAnnealingLR(_sgd(), 5, eta_min=-1.0), ValueError, "eta_min"),
    (lambda: optim.lr_scheduler.LinearLR(_sgd(), start_factor=0.0), ValueError,
     r"start_factor must be in \(0, 1\]"),
    (lambda: optim.lr_scheduler.LinearLR(_sgd(), end_factor=1.5), ValueError, "end_factor"),
    (lambda: optim.lr_scheduler.LinearLR(_sgd(), total_iters=0), ValueError, "total_iters"),
    (lambda: optim.lr_scheduler.LambdaLR(_sgd(), 0.5), TypeError, "not a function"),
    (lambda: optim.lr_scheduler.LambdaLR(_sgd(), [abs, abs]), ValueError, "2 lr_lambdas for 1"),
    (lambda: optim.lr_scheduler.ExponentialLR(object(), 0.5), TypeError, "not an Optimizer"),
    (lambda: optim.lr_scheduler.ExponentialLR(_sgd(), 0.5, last_epoch=-2), ValueError, "last_epoch"),
])
def test_bad_schedule_arguments_name_what_did_not_fit(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_lambda_lr_refuses_a_non_finite_factor():
    sched = optim.lr_scheduler.LambdaLR(_sgd(), lambda e: 1.0 if e < 2 else float("inf"))
    sched.step()
    with pytest.raises(ValueError, match="lr_lambda 0 at epoch 2"):
        sched.step()


def test_schedule_load_state_dict_refuses_what_does_not_fit_and_changes_nothing():
    sched = optim.lr_scheduler.CosineAnnealingLR(_sgd(), T_max=5)
    sched.step()
    good = sched.state_dict()
    exp = optim.lr_scheduler.ExponentialLR(_sgd(), 0.5).state_dict()
    cases = [
        ({k: v for k, v in good.items() if k != "T_max"}, ValueError, r"missing \['T_max'\]"),
        ({**good, "base_lrs": [0.1, 0.2]}, ValueError, "2 base_lrs for 1"),
        ({**good, "T_max": 0}, ValueError, "T_max must be"),
        ({**good, "last_epoch": "3"}, ValueError, "last_epoch"),
        ({**exp, "T_max": 5, "eta_min": 0.0}, ValueError, r"holds \['gamma'\]"),
        ([good], TypeError, "expected a dict"),
    ]
    for sd, error, message in cases:
        with pytest.raises(error, match=message):
            sched.load_state_dict(sd)
        assert sched.state_dict() == good
    ms = optim.lr_scheduler.MultiStepLR(_sgd(), [2, 4])
    ms.load_state_dict({**ms.state_dict(), "milestones": {6: 1, 3: 2}})  # PyTorch's Counter
    assert sorted(ms.milestones.elements()) == [3, 3, 6]


# ---- gradient clipping ------------------------------------------------------------------------
def _grads_pair(torch, dtype, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    grads = [rng.standard_normal(s).astype(dtype) * dtype(scale) for s in SHAPES]
    ps = [nn.Parameter(np.zeros(s, dtype)) for s in SHAPES] + [nn.Parameter(np.zeros(2, dtype))]
    for p, g in zip(ps, grads):
        p.grad = minidl.Tensor(g.copy())
    if torch is None:
        return ps, None
    tps = [torch.nn.Parameter(torch.zeros(s, dtype=torch.from_numpy(np.zeros(1, dtype)).dtype))
           for s in SHAPES + [(2,)]]
    for p, g in zip(tps, grads):
        p.grad = torch.tensor(g)
    return ps, tps


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("norm_type", [2.0, math.inf, 1.0, 3, "inf"])
@pytest.mark.parametrize("max_norm", [0.5, 1000.0])
def test_clip_grad_norm_matches_torch(torch, norm_type, max_norm, dtype):
    ps, tps = _grads_pair(torch, dtype)
    total = clip_grad_norm_(ps, max_norm, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(tps, max_norm, norm_type=norm_type)
    assert isinstance(total, minidl.Tensor) and total.shape == ()
    assert total.dtype == dtype
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(total.numpy(), ttotal.numpy(), rtol=rtol)
    for k, (p, tp) in enumerate(zip(ps[:3], tps)):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=rtol, err_msg=str(k))
    assert ps[3].grad is None
    if max_norm < total.item():  # clipped down to max_norm (less the 1e-6 margin)
        again = clip_grad_norm_(ps, math.inf, norm_type=norm_type)
        assert again.item() == pytest.approx(max_norm, rel=1e-5)


def test_clip_grad_norm_takes_a_single_tensor_and_a_generator(torch):
    ps, tps = _grads_pair(torch, np.float32)
    total = clip_grad_norm_(ps[0], 0.1)
    ttotal = torch.nn.utils.clip_grad_norm_(tps[0], 0.1)
    np.testing.assert_allclose(total.numpy(), ttotal.numpy(), rtol=1e-6)
    np.testing.assert_allclose(ps[0].grad.numpy(), tps[0].grad.numpy(), rtol=1e-6)
    total = clip_grad_norm_((p for p in ps[1:]), 0.1)
    ttotal = torch.nn.utils.clip_grad_norm_((p for p in tps[1:]), 0.1)
    np.testing.assert_allclose(total.numpy(), ttotal.numpy(), rtol=1e-6)


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_clip_grad_norm_neither_overflows_nor_underflows_in_float32(scale):
    # float32's squares of 1e30 overflow (and of 1e-30 vanish); the norm must not
    ps, _ = _grads_pair(None, np.float32, scale=scale)
    grads = np.concatenate([p.grad.numpy().astype(np.float64).ravel() for p in ps[:3]])
    for norm_type in (2.0, 3.0, 1.0, math.inf):
        exact = np.linalg.norm(grads, ord=norm_type)
        total = clip_grad_norm_(ps, math.inf, norm_type=norm_type)
        assert total.dtype == np.float32 and np.isfinite(total.item()) and total.item() > 0
        assert total.item() == pytest.approx(exact, rel=1e-5), norm_type
    clip_grad_norm_(ps, 1.0)
    clipped = np.concatenate([p.grad.numpy().astype(np.float64).ravel() for p in ps[:3]])
    if scale > 1:
        assert np.linalg.norm(clipped) == pytest.approx(1.0, rel=1e-5)
    else:  # under max_norm: left as they were
        np.testing.assert_array_equal(clipped, grads)


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_clip_grad_norm_of_non_finite_gradients(torch, bad):
    ps, tps = _grads_pair(torch, np.float32)
    ps[1].grad.data[0] = bad
    tps[1].grad[0] = bad
    with pytest.raises(RuntimeError, match="non-finite|is (inf|nan)"):
        clip_grad_norm_(ps, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError):
        torch.nn.utils.clip_grad_norm_(tps, 1.0, error_if_nonfinite=True)
    assert ps[0].grad.numpy().any()  # nothing was scaled
    total = clip_grad_norm_(ps, 1.0)
    ttotal = torch.nn.utils.clip_grad_norm_(tps, 1.0)
    np.testing.assert_array_equal(total.numpy(), ttotal.numpy())
    for p, tp in zip(ps[:3], tps):
        np.testing.assert_array_equal(p.grad.numpy(), tp.grad.numpy())


def test_clip_grad_norm_without_gradients_is_zero():
    total = clip_grad_norm_([_p(), _p()], 1.0)
    assert total.item() == 0.0 and total.dtype == np.float32


@pytest.mark.parametrize("clip_value", [0.3, 2, 0.0])
def test_clip_grad_value_matches_torch(torch, clip_value):
    ps, tps = _grads_pair(torch, np.float32)
    assert clip_grad_value_(ps, clip_value) is None
    torch.nn.utils.clip_grad_value_(tps, clip_value)
    for p, tp in zip(ps[:3], tps):
        np.testing.assert_array_equal(p.grad.numpy(), tp.grad.numpy())
    assert ps[3].grad is None
    clip_grad_value_(ps[0], 0.1)  # a single Tensor
    assert np.abs(ps[0].grad.numpy()).max() <= 0.1


@pytest.mark.parametrize("call,error,message", [
    (lambda ps: clip_grad_norm_(ps, -1.0), ValueError, "max_norm must be >= 0"),
    (lambda ps: clip_grad_norm_(ps, math.nan), ValueError, "max_norm must be >= 0"),
    (lambda ps: clip_grad_norm_(ps, "1"), TypeError, "max_norm must be a number"),
    (lambda ps: clip_grad_norm_(ps, 1.0, norm_type=0), ValueError, "norm_type must be > 0"),
    (lambda ps: clip_grad_norm_(ps, 1.0, norm_type=-math.inf), ValueError, "norm_type"),
    (lambda ps: clip_grad_norm_(ps, 1.0, norm_type="l2"), TypeError, "norm_type must be a num"),
    (lambda ps: clip_grad_norm_(ps + [np.ones(2)], 1.0), TypeError, "parameter 4 is a ndarray"),
    (lambda ps: clip_grad_norm_(3.0, 1.0), TypeError, "must be a Tensor or an iterable"),
    (lambda ps: clip_grad_value_(ps, -0.5), ValueError, "clip_value must be >= 0"),
    (lambda ps: clip_grad_value_(ps, None), TypeError, "clip_value must be a number"),
])
def test_bad_clipping_arguments_name_what_did_not_fit(call, error, message):
    ps, _ = _grads_pair(None, np.float32)
    before = [p.grad.numpy().copy() for p in ps[:3]]
    with pytest.raises(error, match=message):
        call(ps)
    for p, b in zip(ps, before):
        np.testing.assert_array_equal(p.grad.numpy(), b)


def test_clip_grad_norm_is_in_nn_utils():
    assert nn.utils.clip_grad_norm_ is clip_grad_norm_
    assert nn.utils.clip_grad_value_ is clip_grad_value_


# ---- on a (fake) GPU: the array-module paths and the fused Adam kernel ------------------------
@pytest.mark.parametrize("name", ["adamw_big_lr_decay", "adamw_amsgrad", "rmsprop_everything",
                                  "rmsprop_momentum"])
def test_optimizers_and_clipping_on_fake_cuda_match_the_cpu(monkeypatch, host_kernels, name):
    cls, kw = CONFIGS[name]
    params, grads = _data(np.float32)
    cpu = _params(params)
    opt = getattr(optim, cls)(cpu, **kw)
    _fake_gpu.install(monkeypatch, host_kernels)
    gpu = [nn.Parameter(minidl.tensor(p, device="cuda").data) for p in params]
    gopt = getattr(optim, cls)(gpu, **kw)
    sched = optim.lr_scheduler.ExponentialLR(gopt, 0.9)
    cpu_sched = optim.lr_scheduler.ExponentialLR(opt, 0.9)
    for step_grads in grads:
        for ps, o in ((cpu, opt), (gpu, gopt)):
            o.zero_grad()
            for p, g in zip(ps, step_grads):
                p.grad = minidl.tensor(g * 10, device=p.device)
            norm = clip_grad_norm_(ps, 2.0)
            assert norm.device == p.device
            o.step()
        sched.step(), cpu_sched.step()
    for a, b in zip(gpu, cpu):
        assert a.device == "cuda"
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    state = gopt.state_dict()["state"][0]
    assert all(v.device == "cuda" for v in state.values() if hasattr(v, "device"))


def test_sgd_without_momentum_keeps_no_state_as_torch():
    p = minidl.nn.Parameter(minidl.ones(3))
    opt = minidl.optim.SGD([p], lr=0.1)
    (p * 2).sum().backward()
    opt.step()
    assert opt.state_dict()["state"] == {}
    torch = pytest.importorskip("torch")
    q = torch.nn.Parameter(torch.ones(3))
    topt = torch.optim.SGD([q], lr=0.1)
    (q * 2).sum().backward()
    topt.step()
    assert topt.state_dict()["state"] == {}
    opt.load_state_dict(topt.state_dict())  # and torch's loads


# ---- lr schedulers ----------------------------------------------------------------------------

def test_sequential_lr_refuses_milestones_out_of_order_before_changing_the_lr():
    opt = minidl.optim.SGD([nn.Parameter(minidl.ones(1))], lr=0.1)
    sched = minidl.optim.lr_scheduler
    parts = [sched.ConstantLR(opt, factor=0.5, total_iters=2), sched.StepLR(opt, 2),
             sched.ExponentialLR(opt, 0.9)]
    lr = opt.param_groups[0]["lr"]
    with pytest.raises(ValueError, match=r"increasing order, got \[4, 2\]"):
        sched.SequentialLR(opt, parts, milestones=[4, 2])
    assert opt.param_groups[0]["lr"] == lr
    good = sched.SequentialLR(opt, parts, milestones=[2, 4])
    state = good.state_dict()
    state["_milestones"] = [4, 2]
    with pytest.raises(ValueError, match="increasing order"):
        good.load_state_dict(state)
    assert good._milestones == [2, 4]


# ---- lr schedulers: a param group added after the scheduler -----------------------------------

def test_a_scheduler_refuses_a_group_added_after_it_instead_of_leaving_it_unscheduled():
    sched = minidl.optim.lr_scheduler
    for make in (lambda o: sched.LambdaLR(o, lambda e: 0.5 ** e),
                 lambda o: sched.MultiplicativeLR(o, lambda e: 0.5)):
        opt = minidl.optim.SGD([nn.Parameter(minidl.ones(1))], lr=0.1)
        s = make(opt)
        opt.add_param_group({"params": [nn.Parameter(minidl.ones(1))], "lr": 0.5})
        opt.step()
        epoch, count = s.last_epoch, s._step_count
        with pytest.raises(ValueError, match="2 parameter groups.*lrs for 1"):
            s.step()
        assert (s.last_epoch, s._step_count) == (epoch, count)
        assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    # a multiplicative schedule that needs no base lr keeps working, as torch's
    opt = minidl.optim.SGD([nn.Parameter(minidl.ones(1))], lr=0.1)
    s = sched.StepLR(opt, 1, 0.5)
    opt.add_param_group({"params": [nn.Parameter(minidl.ones(1))], "lr": 0.5})
    opt.step()
    s.step()
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.25]


# ---- misuse: optimizer.load_state_dict of malformed state -------------------------------------

def _stepped(name, **kw):
    p = minidl.nn.Parameter(minidl.ones(3))
    opt = getattr(minidl.optim, name)([p], lr=0.1, **kw)
    (p * 2).sum().backward()
    opt.step()
    return opt


@pytest.mark.parametrize("field, value, named", [
    ("state", [1], r"'state' must be a dict .* got list \[1\]"),
    ("param_groups", 5, r"'param_groups' must be a list of dicts, got int 5"),
    ("param_groups", [5], r"'param_groups' must be a list of dicts, got list \[5\]"),
])
def test_optimizer_load_state_dict_malformed_fields_named(field, value, named):
    opt = _stepped("Adam")
    sd = opt.state_dict()
    sd[field] = value
    with pytest.raises(TypeError, match=named):  # was an AttributeError from inside
        opt.load_state_dict(sd)


def test_optimizer_load_state_dict_per_parameter_state_not_a_dict():
    opt = _stepped("Adam")
    sd = opt.state_dict()
    sd["state"][0] = 3.0
    with pytest.raises(TypeError, match=r"state 0 must be a dict \{name: value\}, got float"):
        opt.load_state_dict(sd)


def test_sgd_loads_a_none_momentum_buffer_as_torch_does():
    opt = _stepped("SGD", momentum=0.9)
    sd = opt.state_dict()
    sd["state"][0]["momentum_buffer"] = None  # torch: no buffer yet
    opt.load_state_dict(sd)
    p = opt.param_groups[0]["params"][0]
    p.grad = minidl.ones(3)
    opt.step()  # a fresh buffer: the plain gradient step
    np.testing.assert_allclose(p.numpy(), np.full(3, 0.8 - 0.1, np.float32), rtol=1e-6)
    assert opt.state_dict()["state"][0]["momentum_buffer"].tolist() == [1.0, 1.0, 1.0]
