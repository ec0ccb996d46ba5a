"""Optimizers and schedules: the same parameters and gradients give PyTorch's numbers."""
import warnings

import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl import optim
from helpers import same

try:
    import torch
except ImportError:  # the tests that compare with torch skip themselves
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")

SHAPES = [(4, 3), (3,), (2, 2, 3)]


def _params_and_grads(steps=5, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(steps)]
    return params, grads


def _run_minidl(make_opt, params, grads, scheduler=None):
    ps = [nn.Parameter(p.copy()) for p in params]
    opt = make_opt(ps)
    history = []
    for step_grads in grads:
        opt.zero_grad()
        for p, g in zip(ps, step_grads):
            p.grad = minidl.tensor(g)
        opt.step()
        history.append([p.numpy().copy() for p in ps])
    return history


def _run_torch(torch, make_opt, params, grads):
    ps = [torch.nn.Parameter(torch.tensor(p.copy())) for p in params]
    opt = make_opt(ps)
    history = []
    for step_grads in grads:
        opt.zero_grad()
        for p, g in zip(ps, step_grads):
            p.grad = torch.tensor(g)
        opt.step()
        history.append([p.detach().numpy().copy() for p in ps])
    return history


SGD_CONFIGS = {
    "plain": dict(lr=0.1),
    "momentum": dict(lr=0.1, momentum=0.9),
    "nesterov": dict(lr=0.05, momentum=0.9, nesterov=True),
    "weight_decay": dict(lr=0.1, weight_decay=0.01),
    "momentum_dampening": dict(lr=0.1, momentum=0.8, dampening=0.3),
    "everything": dict(lr=0.03, momentum=0.9, weight_decay=5e-4, nesterov=True),
    "momentum_wd_dampening": dict(lr=0.03, momentum=0.5, weight_decay=1e-2, dampening=0.1),
}
ADAM_CONFIGS = {
    "default": dict(lr=1e-3),
    "big_lr": dict(lr=0.1, betas=(0.8, 0.99)),
    "weight_decay": dict(lr=0.01, weight_decay=0.1),
    "eps": dict(lr=0.01, eps=1e-3),
}


@pytest.mark.parametrize("name", list(SGD_CONFIGS) + [f"adam_{k}" for k in ADAM_CONFIGS])
def test_optimizer_matches_torch(name):
    torch = pytest.importorskip("torch", reason="optimizer parity needs torch")
    if name.startswith("adam_"):
        kw = ADAM_CONFIGS[name[5:]]
        ours, theirs = (lambda ps: optim.Adam(ps, **kw)), (lambda ps: torch.optim.Adam(ps, **kw))
    else:
        kw = SGD_CONFIGS[name]
        ours, theirs = (lambda ps: optim.SGD(ps, **kw)), (lambda ps: torch.optim.SGD(ps, **kw))
    params, grads = _params_and_grads()
    mine, ref = _run_minidl(ours, params, grads), _run_torch(torch, theirs, params, grads)
    for step, (a, b) in enumerate(zip(mine, ref)):
        for k, (pa, pb) in enumerate(zip(a, b)):
            assert pa.dtype == np.float32
            np.testing.assert_allclose(pa, pb, rtol=1e-5, atol=1e-7,
                                       err_msg=f"{name}: step {step + 1}, parameter {k}")
    assert not np.allclose(mine[-1][0], params[0])  # the parameters did move


def test_sgd_closed_form_without_torch():
    # momentum 0.9, no dampening: v1 = g, v2 = 0.9 g + g; p2 = p0 - lr (v1 + v2)
    p = nn.Parameter(np.array([1.0, -2.0], np.float32))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    for _ in range(2):
        p.grad = minidl.tensor([1.0, 2.0])
        opt.step()
    np.testing.assert_allclose(p.numpy(), [1.0 - 0.1 * 2.9, -2.0 - 0.2 * 2.9], rtol=1e-6)


def test_adam_first_step_moves_by_lr():
    # with bias correction the first step is lr * g / (|g| + eps) = lr * sign(g)
    p = nn.Parameter(np.array([0.5, 0.5, 0.5], np.float32))
    p.grad = minidl.tensor([3.0, -0.01, 100.0])
    optim.Adam([p], lr=0.01).step()
    np.testing.assert_allclose(p.numpy(), [0.49, 0.51, 0.49], rtol=1e-5)


def test_optimizer_skips_parameters_without_grad_and_zero_grad_clears():
    a, b = nn.Parameter(np.ones(2, np.float32)), nn.Parameter(np.ones(2, np.float32))
    opt = optim.SGD([a, b], lr=1.0)
    a.grad = minidl.tensor([1.0, 1.0])
    opt.step()
    np.testing.assert_array_equal(a.numpy(), [0.0, 0.0])
    np.testing.assert_array_equal(b.numpy(), [1.0, 1.0])
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_param_groups_have_their_own_lr():
    a, b = nn.Parameter(np.ones(1, np.float32)), nn.Parameter(np.ones(1, np.float32))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    a.grad, b.grad = minidl.tensor([1.0]), minidl.tensor([1.0])
    opt.step()
    assert a.numpy()[0] == pytest.approx(0.9) and b.numpy()[0] == pytest.approx(0.5)


def test_bad_optimizer_arguments():
    p = nn.Parameter(np.ones(1, np.float32))
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        optim.SGD([p], lr=-1.0)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam([p], betas=(1.0, 0.999))


@pytest.mark.parametrize("step_size,gamma", [(3, 0.1), (1, 0.5), (4, 0.9)])
def test_step_lr_matches_torch(step_size, gamma):
    torch = pytest.importorskip("torch", reason="StepLR parity needs torch")
    p = nn.Parameter(np.ones(1, np.float32))
    tp = torch.nn.Parameter(torch.ones(1))
    opt, topt = optim.SGD([p], lr=0.2), torch.optim.SGD([tp], lr=0.2)
    sched = optim.lr_scheduler.StepLR(opt, step_size=step_size, gamma=gamma)
    tsched = torch.optim.lr_scheduler.StepLR(topt, step_size=step_size, gamma=gamma)
    ours, theirs = [], []
    for _ in range(12):
        ours.append(opt.param_groups[0]["lr"])
        theirs.append(topt.param_groups[0]["lr"])
        p.grad, tp.grad = minidl.tensor([1.0]), torch.ones(1)
        opt.step(), topt.step()
        sched.step(), tsched.step()
        assert sched.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=1e-12)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-6)


# ---- state_dict / load_state_dict (PyTorch's structure) --------------------------------------
OPTIMIZERS = {
    "sgd_nesterov": (lambda m, ps: m.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True,
                                                weight_decay=1e-3)),
    "adam": (lambda m, ps: m.optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)),
}


def _steps(opt, ps, grads):
    for step_grads in grads:
        opt.zero_grad()
        for p, g in zip(ps, step_grads):
            if g is not None:
                p.grad = minidl.tensor(g)
        opt.step()


def _grads_with_a_gap(steps=6):
    """The first parameter gets no gradient for the first steps: its state appears late, so the
    state's parameter indices cannot be the order in which states were made."""
    _, grads = _params_and_grads(steps)
    return [[None if k < 2 and i == 0 else g for i, g in enumerate(gs)] for k, gs in enumerate(grads)]


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_load_state_dict_continues_bit_for_bit(name, tmp_path):
    params, _ = _params_and_grads()
    grads = _grads_with_a_gap()
    make = OPTIMIZERS[name]
    ps = [nn.Parameter(p.copy()) for p in params]
    unbroken = make(minidl, ps)
    _steps(unbroken, ps, grads)

    first = [nn.Parameter(p.copy()) for p in params]
    opt = make(minidl, first)
    _steps(opt, first, grads[:3])
    sd = opt.state_dict()
    assert sorted(sd["state"]) == [0, 1, 2] and sd["param_groups"][0]["params"] == [0, 1, 2]
    resumed = [nn.Parameter(p.numpy().copy()) for p in first]
    opt2 = make(minidl, resumed)
    opt2.load_state_dict(sd)
    _steps(opt, first, [[np.zeros_like(p) for p in params]])  # the loaded copy is not shared
    _steps(opt2, resumed, grads[3:])
    for a, b in zip(resumed, ps):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_state_dict_indexes_parameters_by_position():
    a, b = nn.Parameter(np.ones(2, np.float32)), nn.Parameter(np.ones(3, np.float32))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1, momentum=0.9)
    b.grad = minidl.tensor(np.ones(3))
    opt.step()
    sd = opt.state_dict()
    assert list(sd["state"]) == [1]  # a has no state yet; b is parameter 1
    assert sd["state"][1]["momentum_buffer"].shape == (3,)
    assert [g["params"] for g in sd["param_groups"]] == [[0], [1]]
    assert [g["lr"] for g in sd["param_groups"]] == [0.1, 0.5]


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_dict_structure_and_values_match_torch(name):
    torch = pytest.importorskip("torch", reason="state_dict parity needs torch")
    params, grads = _params_and_grads(3)
    make = OPTIMIZERS[name]
    ps = [nn.Parameter(p.copy()) for p in params]
    tps = [torch.nn.Parameter(torch.tensor(p.copy())) for p in params]
    opt, topt = make(minidl, ps), make(torch, tps)
    _steps(opt, ps, grads)
    for step_grads in grads:
        topt.zero_grad()
        for p, g in zip(tps, step_grads):
            p.grad = torch.tensor(g)
        topt.step()
    ours, theirs = opt.state_dict(), topt.state_dict()
    assert list(ours["state"]) == list(theirs["state"])
    assert [g["params"] for g in ours["param_groups"]] == [g["params"] for g in theirs["param_groups"]]
    for ga, gb in zip(ours["param_groups"], theirs["param_groups"]):
        assert {k: v for k, v in gb.items() if k in ga} == ga
    for i, entry in theirs["state"].items():
        assert set(ours["state"][i]) == set(entry)
        for k, v in entry.items():
            np.testing.assert_allclose(np.asarray(ours["state"][i][k].numpy()
                                                  if hasattr(ours["state"][i][k], "numpy")
                                                  else ours["state"][i][k]),
                                       v.numpy(), rtol=1e-5, atol=1e-7, err_msg=f"{i} {k}")
    # and PyTorch's state dict loads here and carries on with PyTorch's numbers
    more = _params_and_grads(2, seed=1)[1]
    fresh = [nn.Parameter(p.detach().numpy().copy()) for p in tps]
    opt2 = make(minidl, fresh)
    opt2.load_state_dict(theirs)
    _steps(opt2, fresh, more)
    for step_grads in more:
        topt.zero_grad()
        for p, g in zip(tps, step_grads):
            p.grad = torch.tensor(g)
        topt.step()
    for a, b in zip(fresh, tps):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-7)


def test_load_state_dict_refuses_what_does_not_fit_and_changes_nothing():
    a, b = nn.Parameter(np.ones(2, np.float32)), nn.Parameter(np.ones(3, np.float32))
    opt = optim.SGD([a, b], lr=0.1, momentum=0.9)
    a.grad, b.grad = minidl.tensor(np.ones(2)), minidl.tensor(np.ones(3))
    opt.step()
    good = opt.state_dict()
    before = opt.state_dict()

    def variant(**change):
        sd = {"state": {k: dict(v) for k, v in good["state"].items()},
              "param_groups": [dict(g) for g in good["param_groups"]]}
        for key, value in change.items():
            if key == "groups":
                sd["param_groups"] = value
            elif key == "state":
                sd["state"] = value
            else:
                sd["param_groups"][0][key] = value
        return sd

    cases = [
        (variant(params=[0]), "group 0 holds 1 parameters"),
        (variant(groups=good["param_groups"] * 2), "2 parameter groups"),
        (variant(state={0: {"momentum_buffer": np.zeros(5, np.float32)}}), r"shape \(5,\)"),
        (variant(state={0: {"exp_avg": np.zeros(2, np.float32)}}), "exp_avg"),
        (variant(state={7: {"momentum_buffer": np.zeros(2, np.float32)}}), "no parameter group"),
        (variant(lr=float("nan")), "lr must be a finite"),
        (variant(fused=True), "fused"),  # maximize is supported now; fused (a kernel) is not
        ({"state": {}}, "param_groups"),
    ]
    for sd, message in cases:
        with pytest.raises(ValueError, match=message):
            opt.load_state_dict(sd)
        after = opt.state_dict()
        assert after["param_groups"] == before["param_groups"]
        for k in before["state"]:
            np.testing.assert_array_equal(after["state"][k]["momentum_buffer"].numpy(),
                                          before["state"][k]["momentum_buffer"].numpy())


def test_load_state_dict_casts_state_to_the_parameter_dtype():
    p = nn.Parameter(np.ones(2, np.float32))
    opt = optim.Adam([p])
    opt.load_state_dict({"state": {0: {"step": np.array(3.0), "exp_avg": np.ones(2),
                                       "exp_avg_sq": np.ones(2)}},
                         "param_groups": [{"lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8,
                                           "weight_decay": 0.0, "params": [0]}]})
    state = opt.state_dict()["state"][0]
    assert state["step"] == 3 and state["exp_avg"].dtype == np.float32
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)
    p.grad = minidl.tensor(np.ones(2))
    opt.step()
    assert p.dtype == np.float32 and opt.state_dict()["state"][0]["exp_avg_sq"].dtype == np.float32


def test_step_lr_state_dict_roundtrip_and_torch_keys():
    p = nn.Parameter(np.ones(1, np.float32))
    opt = optim.SGD([p], lr=0.2)
    sched = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(3):
        sched.step()
    sd = sched.state_dict()
    assert sd["last_epoch"] == 3 and sd["base_lrs"] == [0.2] and sd["step_size"] == 2
    opt2 = optim.SGD([nn.Parameter(np.ones(1, np.float32))], lr=0.2)
    opt2.load_state_dict(opt.state_dict())
    sched2 = optim.lr_scheduler.StepLR(opt2, step_size=7, gamma=0.9)
    sched2.load_state_dict(sd)
    sched.step(), sched2.step()
    assert sched2.get_last_lr() == sched.get_last_lr() == [pytest.approx(0.05)]
    with pytest.raises(ValueError, match="base_lrs"):
        sched2.load_state_dict({**sd, "base_lrs": [0.1, 0.2]})
    torch = pytest.importorskip("torch", reason="loading PyTorch's StepLR state needs torch")
    tp = torch.nn.Parameter(torch.ones(1))
    topt = torch.optim.SGD([tp], lr=0.2)
    tsched = torch.optim.lr_scheduler.StepLR(topt, step_size=2, gamma=0.5)
    for _ in range(3):
        topt.step(), tsched.step()
    assert set(sd) <= set(tsched.state_dict())
    opt3 = optim.SGD([nn.Parameter(np.ones(1, np.float32))], lr=0.2)
    opt3.load_state_dict(topt.state_dict())  # the lr lives in the optimizer's state
    sched3 = optim.lr_scheduler.StepLR(opt3, 5)
    sched3.load_state_dict(tsched.state_dict())
    tsched.step(), sched3.step()
    assert sched3.get_last_lr() == pytest.approx(tsched.get_last_lr())


# ---- parameters: PyTorch's refusals ----------------------------------------------------------
def test_a_tensor_passed_as_params_is_a_type_error():
    layer = nn.Linear(3, 2)
    with pytest.raises(TypeError, match="iterable of Tensors"):
        optim.SGD(layer.weight, lr=1.0)
    with pytest.raises(TypeError, match="iterable of Tensors"):
        optim.Adam(layer.weight)
    with pytest.raises(TypeError, match="not a set"):
        optim.SGD(set(layer.parameters()), lr=1.0)
    with pytest.raises(TypeError, match="item 1 is a ndarray"):
        optim.SGD([layer.weight, np.ones(2)], lr=1.0)
    with pytest.raises(ValueError, match="not a leaf"):
        optim.SGD([layer.weight * 2], lr=1.0)
    opt = optim.SGD([{"params": layer.weight}], lr=1.0)  # a group's single tensor is fine
    assert opt.param_groups[0]["params"] == [layer.weight]


def test_a_parameter_listed_twice_is_a_value_error():
    layer = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="more than once"):
        optim.SGD([layer.weight, layer.bias, layer.weight], lr=1.0)
    with pytest.raises(ValueError, match="more than once"):
        optim.Adam([{"params": [layer.weight]}, {"params": [layer.weight, layer.bias]}])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_hyperparameters_are_refused(bad):
    p = nn.Parameter(np.ones(1, np.float32))
    with pytest.raises(ValueError, match="lr must be a finite"):
        optim.SGD([p], lr=bad)
    with pytest.raises(ValueError, match="momentum must be a finite"):
        optim.SGD([p], lr=0.1, momentum=bad)
    with pytest.raises(ValueError, match="lr must be a finite"):
        optim.Adam([p], lr=bad)
    with pytest.raises(ValueError, match="step_size"):
        optim.lr_scheduler.StepLR(optim.SGD([p], lr=0.1), step_size=0)


def test_step_lr_decays_an_lr_changed_by_hand_as_torch_does():
    p = nn.Parameter(np.ones(1, np.float32))
    opt = optim.SGD([p], lr=1.0)
    sched = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    got = []
    for i in range(6):
        if i == 3:
            opt.param_groups[0]["lr"] = 0.3
        sched.step()
        got.append(sched.get_last_lr()[0])
    # PyTorch's chainable StepLR: 1, 0.5, 0.5, then 0.3 by hand, 0.15 at 4, 0.15, 0.075 at 6
    assert got == pytest.approx([1.0, 0.5, 0.5, 0.15, 0.15, 0.075])


# ---- optimizers and schedules against torch: two groups, kernel options, warnings (an audit) -----
OPTIM_CASES = [
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.1, nesterov=True, maximize=True)),
    ("SGD", dict(lr=0.05, momentum=0.7, dampening=0.5, weight_decay=0.1, maximize=True)),
    ("Adam", dict(lr=0.05, weight_decay=0.1, amsgrad=True, maximize=True)),
    ("Adam", dict(lr=0.05, weight_decay=0.1, amsgrad=True, decoupled_weight_decay=True)),
    ("AdamW", dict(lr=0.05, weight_decay=0.1, amsgrad=True, maximize=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1, maximize=True)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, maximize=True)),
    ("Adadelta", dict(lr=0.5, weight_decay=0.1, maximize=True)),
    ("Adamax", dict(lr=0.05, weight_decay=0.1, maximize=True)),
    ("NAdam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("RAdam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("ASGD", dict(lr=0.05, lambd=0.01, alpha=0.5, t0=3, weight_decay=0.1, maximize=True)),
    ("Rprop", dict(lr=0.05, etas=(0.4, 1.3), step_sizes=(1e-4, 1), maximize=True)),
]


@needs_torch
@pytest.mark.parametrize("name,kw", OPTIM_CASES, ids=[f"{n}-{i}" for i, (n, _) in
                                                       enumerate(OPTIM_CASES)])
def test_twenty_steps_with_two_groups_and_a_state_dict_swap_match_torch(name, kw):
    """Two parameter groups with different lrs, a parameter now and then without a gradient,
    and at step 10 torch's state_dict loaded into a fresh minidl optimizer: the parameters
    follow torch's for 20 steps (float64)."""
    import minidl.optim as mo
    shapes = [(4, 3), (3,), (2, 2)]
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s) for s in shapes]
    mp = [nn.Parameter(p.copy()) for p in params]
    tp = [torch.nn.Parameter(torch.tensor(p.copy())) for p in params]

    def groups(ps):
        return [{"params": ps[:2]}, {"params": ps[2:], "lr": kw["lr"] * 0.3}]
    mopt, topt = getattr(mo, name)(groups(mp), **kw), getattr(torch.optim, name)(groups(tp), **kw)
    assert set(mopt.param_groups[1]) == set(topt.param_groups[1])
    for k in range(20):
        mopt.zero_grad()
        topt.zero_grad()
        for i, (a, b, s) in enumerate(zip(mp, tp, shapes)):
            if k % 4 == 2 and i == 2:
                continue
            g = rng.standard_normal(s)
            a.grad, b.grad = minidl.Tensor(g.copy()), torch.tensor(g)
        mopt.step()
        topt.step()
        for a, b in zip(mp, tp):
            same(a, b, f"{name} step {k}", atol=1e-12)
        if k == 9:
            mopt = getattr(mo, name)(groups(mp), **kw)
            mopt.load_state_dict(topt.state_dict())


@needs_torch
def test_optimizers_take_torchs_kernel_options_and_record_them_in_groups():
    import minidl.optim as mo
    for name in ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam",
                 "RAdam", "ASGD", "Rprop"):
        tg = getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(2))], lr=0.1,
                                        foreach=False).param_groups[0]
        mopt = getattr(mo, name)([nn.Parameter(np.zeros(2, np.float32))], lr=0.1, foreach=False)
        mg = mopt.param_groups[0]
        assert set(tg) == set(mg), (name, set(tg) ^ set(mg))
        for key in ("foreach", "fused", "capturable", "differentiable"):
            assert mg.get(key, "absent") == tg.get(key, "absent"), (name, key)
            if key in tg and key != "foreach":
                with pytest.raises(ValueError, match=f"{key}=True"):
                    getattr(mo, name)([nn.Parameter(np.zeros(2, np.float32))], lr=0.1,
                                      **{key: True})
        # torch's state dict, kernel options and all, loads
        topt = getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(2))], lr=0.2)
        mopt.load_state_dict(topt.state_dict())
        assert mopt.param_groups[0]["lr"] == 0.2
    with pytest.raises(TypeError, match="foreach"):
        mo.SGD([nn.Parameter(np.zeros(2, np.float32))], lr=0.1, foreach="yes")


@needs_torch
def test_zero_grad_sets_gradients_to_none_by_default():
    import minidl.optim as mo
    p = nn.Parameter(np.ones(2, np.float32))
    opt = mo.Adam([p])
    p.grad = minidl.ones(2)
    opt.zero_grad()
    assert p.grad is None


def _scheduled(fw):
    if fw is torch:
        ps = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]
        return torch.optim.SGD([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.5}], lr=0.1,
                               momentum=0.9)
    import minidl.optim as mo
    ps = [nn.Parameter(np.zeros(2, np.float32)), nn.Parameter(np.zeros(3, np.float32))]
    return mo.SGD([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.5}], lr=0.1, momentum=0.9)


def _schedules(fw, opt, which):
    S = torch.optim.lr_scheduler if fw is torch else minidl.optim.lr_scheduler
    return {
        "step+exponential": lambda: [S.StepLR(opt, 3, 0.5), S.ExponentialLR(opt, 0.9)],
        "lambda": lambda: [S.LambdaLR(opt, [lambda e: 0.9 ** e, lambda e: 1 / (e + 1)])],
        "multiplicative": lambda: [S.MultiplicativeLR(opt, lambda e: 0.95)],
        "sequential": lambda: [S.SequentialLR(opt, [S.LinearLR(opt, 0.1, total_iters=3),
                                                    S.ExponentialLR(opt, 0.8)], [3])],
        "chained": lambda: [S.ChainedScheduler([S.StepLR(opt, 2, 0.5),
                                                S.ExponentialLR(opt, 0.9)])],
    }[which]()


@needs_torch
@pytest.mark.parametrize("which", ["step+exponential", "lambda", "multiplicative",
                                   "sequential", "chained"])
@pytest.mark.parametrize("optimizer_first", [True, False])
def test_schedules_lrs_state_dicts_and_warnings_match_torch(which, optimizer_first):
    """get_last_lr and the groups' lrs over 12 epochs, two schedules on one optimizer, the
    state dicts' keys, and the warnings in torch's order: 'lr_scheduler.step() before
    optimizer.step()' once per schedule stepped first."""
    runs = {}
    for fw in (torch, minidl):
        opt = _scheduled(fw)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scheds = _schedules(fw, opt, which)
            lrs = []
            for _ in range(12):
                if optimizer_first:
                    opt.step()
                for s in scheds:
                    s.step()
                if not optimizer_first:
                    opt.step()
                lrs.append([s.get_last_lr() for s in scheds] + [[g["lr"] for g in
                                                                 opt.param_groups]])
        runs[fw] = (lrs, [str(w.message)[:60] for w in caught], scheds)
    (lt, wt, st), (lm, wm, sm) = runs[torch], runs[minidl]
    np.testing.assert_allclose(np.array(lm, dtype=float), np.array(lt, dtype=float),
                               rtol=1e-12)
    assert wm == wt
    for a, b in zip(sm, st):
        assert set(a.state_dict()) == set(b.state_dict())


@needs_torch
def test_get_lr_outside_step_warns_as_torch():
    for fw in (torch, minidl):
        S = torch.optim.lr_scheduler if fw is torch else minidl.optim.lr_scheduler
        sched = S.StepLR(_scheduled(fw), 2)
        with pytest.warns(UserWarning, match="get_last_lr"):
            sched.get_lr()
    sched = minidl.optim.lr_scheduler.StepLR(_scheduled(minidl), 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched.optimizer.step()
        sched.step()  # no warning from inside step


@needs_torch
def test_epoch_argument_warns_after_the_step_order_warning_as_torch():
    messages = {}
    for fw in (torch, minidl):
        S = torch.optim.lr_scheduler if fw is torch else minidl.optim.lr_scheduler
        sched = S.StepLR(_scheduled(fw), 2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sched.step(3)
        messages[fw] = [str(w.message)[:40] for w in caught]
    assert messages[minidl] == messages[torch]
    assert len(messages[torch]) == 2
# ---- Adam / AdamW with Tensor betas and lr ----------------------------------------------------

@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_takes_tensor_betas_and_lr(name):
    """Adam/AdamW refused betas (and lr) given as Tensors ("must be a number"); torch 2.13
    takes 1-element Tensors, refusing them only with foreach=True (capturable=False) or when
    they hold more than one element, or when the betas mix a float and a Tensor."""
    opt_cls = getattr(minidl.optim, name)
    w0 = np.array([0.5, -1.0, 2.0], np.float32)
    g = np.array([0.1, 0.2, -0.3], np.float32)
    results = []
    for betas, lr in (((0.9, 0.999), 0.01),
                      ((minidl.tensor(0.9), minidl.tensor(0.999)), minidl.tensor(0.01))):
        p = minidl.nn.Parameter(minidl.tensor(w0))
        opt = opt_cls([p], lr=lr, betas=betas)
        for _ in range(3):
            p.grad = minidl.tensor(g)
            opt.step()
        results.append(p.detach().numpy())
    np.testing.assert_array_equal(results[0], results[1])
    p = minidl.nn.Parameter(minidl.tensor(w0))
    tb = (minidl.tensor(0.9), minidl.tensor(0.999))
    with pytest.raises(ValueError, match="betas\\[0\\] as a Tensor is not supported for "
                                         "capturable=False and foreach=True"):
        opt_cls([p], betas=tb, foreach=True)
    with pytest.raises(ValueError, match="lr as a Tensor is not supported"):
        opt_cls([p], lr=minidl.tensor(0.01), foreach=True)
    with pytest.raises(ValueError, match="Tensor betas\\[0\\] must be 1-element"):
        opt_cls([p], betas=(minidl.tensor([0.9, 0.9]), minidl.tensor(0.999)))
    with pytest.raises(ValueError, match="both floats or both Tensors"):
        opt_cls([p], betas=(0.9, minidl.tensor(0.999)))
    with pytest.raises(ValueError, match="betas\\[1\\] must be in \\[0, 1\\)"):
        opt_cls([p], betas=(minidl.tensor(0.9), minidl.tensor(1.5)))


def test_adam_tensor_betas_parity():
    """Adam with Tensor betas and lr takes torch's steps."""
    torch = pytest.importorskip("torch")
    w0 = np.array([0.5, -1.0, 2.0], np.float32)
    g = np.array([0.1, 0.2, -0.3], np.float32)
    pt = torch.nn.Parameter(torch.tensor(w0))
    pm = minidl.nn.Parameter(minidl.tensor(w0))
    ot = torch.optim.AdamW([pt], lr=torch.tensor(0.01),
                           betas=(torch.tensor(0.9), torch.tensor(0.99)))
    om = minidl.optim.AdamW([pm], lr=minidl.tensor(0.01),
                            betas=(minidl.tensor(0.9), minidl.tensor(0.99)))
    for _ in range(3):
        pt.grad, pm.grad = torch.tensor(g), minidl.tensor(g)
        ot.step()
        om.step()
    np.testing.assert_allclose(pm.detach().numpy(), pt.detach().numpy(), rtol=1e-6, atol=1e-7)
