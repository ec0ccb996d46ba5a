"""The Optimizer base as torch's (closure, maximize, add_param_group), the optimizers beyond
SGD/Adam/RMSprop and the schedules beyond StepLR & co: PyTorch's numbers over several steps
(float64 to ~1e-10 and float32), PyTorch's state dicts both ways, refusals that name what did
not fit."""
import copy
import pickle

import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl import optim

from _optim_parity import (  # noqa: E402,F401
    SHAPES, _data, _params, _step, _torch_params, _torch_step, close,
)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="PyTorch parity needs torch, which is not installed")


def _close(ours, theirs, dtype, what=""):
    close(ours, theirs, dtype, what, dict(rtol=1e-10, atol=1e-12), dict(rtol=2e-5, atol=1e-6))


# ---- the base: maximize, closure, add_param_group ---------------------------------------------
MAXIMIZE = {
    "sgd": ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.1, maximize=True)),
    "sgd_nesterov": ("SGD", dict(lr=0.05, momentum=0.5, nesterov=True, maximize=True)),
    "adam": ("Adam", dict(lr=0.05, weight_decay=0.1, maximize=True)),
    "adam_amsgrad": ("Adam", dict(lr=0.05, amsgrad=True, maximize=True)),
    "adamw": ("AdamW", dict(lr=0.05, weight_decay=0.1, maximize=True)),
    "rmsprop": ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.1,
                                maximize=True)),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(MAXIMIZE))
def test_maximize_matches_torch(torch, name, dtype):
    cls, kw = MAXIMIZE[name]
    params, grads = _data(dtype)
    ps, tps = _params(params), _torch_params(torch, params)
    opt, topt = getattr(optim, cls)(ps, **kw), getattr(torch.optim, cls)(tps, **kw)
    for k, g in enumerate(grads):
        _step(opt, ps, g)
        _torch_step(torch, topt, tps, g)
        _close(ps, tps, dtype, f"{name}, step {k + 1}")
    assert opt.state_dict()["param_groups"][0]["maximize"] is True


def test_maximize_climbs_where_the_default_descends():
    p, q = nn.Parameter(np.array([1.0])), nn.Parameter(np.array([1.0]))
    up, down = optim.SGD([p], lr=0.1, maximize=True), optim.SGD([q], lr=0.1)
    p.grad, q.grad = minidl.Tensor(np.array([2.0])), minidl.Tensor(np.array([2.0]))
    up.step(), down.step()
    assert p.numpy()[0] == pytest.approx(1.2) and q.numpy()[0] == pytest.approx(0.8)


def _quadratic(w, x, y):
    """A closure as PyTorch's docs write one: zero the grads, the loss, backward, return it."""
    def closure(opt):
        opt.zero_grad()
        loss = ((x @ w - y) ** 2).sum()
        loss.backward()
        return loss
    return closure


@pytest.mark.parametrize("cls", ["SGD", "Adam", "AdamW", "RMSprop"])
def test_step_with_a_closure_returns_its_loss_and_matches_torch(torch, cls):
    rng = np.random.default_rng(1)
    x, y, w0 = rng.standard_normal((6, 3)), rng.standard_normal(6), rng.standard_normal(3)
    w, tw = nn.Parameter(w0.copy()), torch.nn.Parameter(torch.tensor(w0.copy()))
    opt, topt = getattr(optim, cls)([w], lr=0.05), getattr(torch.optim, cls)([tw], lr=0.05)
    xs, ys = minidl.tensor(x, dtype=np.float64), minidl.tensor(y, dtype=np.float64)
    closure = _quadratic(w, xs, ys)
    tclosure = _quadratic(tw, torch.tensor(x), torch.tensor(y))
    for _ in range(4):
        with minidl.no_grad():  # the closure records its graph all the same, as torch's does
            loss = opt.step(lambda: closure(opt))
        tloss = topt.step(lambda: tclosure(topt))
        assert isinstance(loss, minidl.Tensor)
        assert loss.item() == pytest.approx(tloss.item(), rel=1e-12)
    np.testing.assert_allclose(w.numpy(), tw.detach().numpy(), rtol=1e-12)
    assert opt.step() is None


def test_a_closure_that_is_not_callable_is_a_type_error():
    with pytest.raises(TypeError, match="closure must be a function"):
        optim.SGD([nn.Parameter(np.ones(2))], lr=0.1).step(3.0)


def test_add_param_group_fills_defaults_and_refuses_duplicates(torch):
    a, b, c = (nn.Parameter(np.ones(2)) for _ in range(3))
    opt = optim.SGD([a], lr=0.1, momentum=0.9)
    opt.add_param_group({"params": b, "lr": 0.5})
    ta, tb = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    topt = torch.optim.SGD([ta], lr=0.1, momentum=0.9)
    topt.add_param_group({"params": tb, "lr": 0.5})
    groups, tgroups = opt.state_dict()["param_groups"], topt.state_dict()["param_groups"]
    for ga, gb in zip(groups, tgroups):
        assert ga == {k: v for k, v in gb.items() if k in ga}
    assert opt.param_groups[1]["momentum"] == 0.9 and opt.defaults["lr"] == 0.1
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [c, a]})
    with pytest.raises(ValueError, match="lr -1.0"):
        opt.add_param_group({"params": [c], "lr": -1.0})
    with pytest.raises(TypeError, match="not a set"):
        opt.add_param_group({"params": {c}})
    with pytest.raises(TypeError, match="must be a dict"):
        opt.add_param_group([c])
    assert len(opt.param_groups) == 2  # nothing half-added
    opt.add_param_group({"params": [c]})
    for p in (a, b, c):
        p.grad = minidl.Tensor(np.ones(2))
    opt.step()
    np.testing.assert_allclose([a.numpy()[0], b.numpy()[0], c.numpy()[0]], [0.9, 0.5, 0.9])


def test_zero_grad_set_to_none_false_keeps_zeroed_gradients():
    p = nn.Parameter(np.ones(2))
    opt = optim.SGD([p])
    assert opt.param_groups[0]["lr"] == 1e-3  # torch's default lr
    p.grad = minidl.Tensor(np.ones(2))
    opt.zero_grad(set_to_none=False)
    assert p.grad is not None and not p.grad.numpy().any()
    opt.zero_grad()
    assert p.grad is None


def test_a_maximize_state_dict_loads_both_ways(torch):
    params, grads = _data(np.float64, steps=4)
    ps, tps = _params(params), _torch_params(torch, params)
    opt = optim.Adam(ps, lr=0.05, maximize=True)
    topt = torch.optim.Adam(tps, lr=0.05, maximize=True)
    for g in grads[:2]:
        _step(opt, ps, g), _torch_step(torch, topt, tps, g)
    plain = optim.Adam(_params([p.numpy() for p in ps]), lr=0.05)
    plain.load_state_dict(topt.state_dict())
    assert plain.param_groups[0]["maximize"] is True
    again = [p for group in plain.param_groups for p in group["params"]]
    for g in grads[2:]:
        _step(plain, again, g), _torch_step(torch, topt, tps, g)
    _close(again, tps, np.float64, "resumed")


# ---- the optimizers beyond SGD/Adam/RMSprop against PyTorch -----------------------------------
CONFIGS = {
    "adagrad": ("Adagrad", {}),
    "adagrad_decay": ("Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.1,
                                      initial_accumulator_value=0.3, eps=1e-6)),
    "adadelta": ("Adadelta", {}),
    "adadelta_wd": ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.1)),
    "adamax": ("Adamax", {}),
    "adamax_wd": ("Adamax", dict(lr=0.05, betas=(0.7, 0.9), eps=1e-3, weight_decay=0.1)),
    "nadam": ("NAdam", {}),
    "nadam_wd": ("NAdam", dict(lr=0.05, betas=(0.8, 0.95), weight_decay=0.1,
                               momentum_decay=0.01)),
    "nadam_decoupled": ("NAdam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True)),
    "radam": ("RAdam", {}),
    "radam_rectified": ("RAdam", dict(lr=0.05, betas=(0.8, 0.5), weight_decay=0.1)),
    "radam_decoupled": ("RAdam", dict(lr=0.05, betas=(0.9, 0.6), weight_decay=0.1,
                                      decoupled_weight_decay=True)),
    "rprop": ("Rprop", {}),
    "rprop_tight": ("Rprop", dict(lr=0.1, etas=(0.3, 1.5), step_sizes=(0.01, 0.2))),
    "asgd": ("ASGD", {}),
    "asgd_averaging": ("ASGD", dict(lr=0.05, lambd=0.01, alpha=0.5, t0=2, weight_decay=0.1)),
    "adagrad_maximize": ("Adagrad", dict(lr=0.1, maximize=True)),
    "adadelta_maximize": ("Adadelta", dict(maximize=True)),
    "adamax_maximize": ("Adamax", dict(maximize=True)),
    "nadam_maximize": ("NAdam", dict(maximize=True)),
    "radam_maximize": ("RAdam", dict(betas=(0.9, 0.6), maximize=True)),
    "rprop_maximize": ("Rprop", dict(maximize=True)),
    "asgd_maximize": ("ASGD", dict(t0=1, maximize=True)),
}


def _sign_flips(grads):
    """Rprop's interesting case: some gradients keep their sign, some flip."""
    return [[g if k % 3 else -g for g in gs] for k, gs in enumerate(grads)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_new_optimizer_matches_torch(torch, name, dtype):
    cls, kw = CONFIGS[name]
    params, grads = _data(dtype, steps=8)
    if cls == "Rprop":
        grads = _sign_flips(grads)
    ps, tps = _params(params), _torch_params(torch, params)
    opt, topt = getattr(optim, cls)(ps, **kw), getattr(torch.optim, cls)(tps, **kw)
    for k, g in enumerate(grads):
        _step(opt, ps, g)
        _torch_step(torch, topt, tps, g)
        _close(ps, tps, dtype, f"{name}, step {k + 1}")
    assert not np.allclose(ps[0].numpy(), params[0])
    ours, theirs = opt.state_dict(), topt.state_dict()
    for ga, gb in zip(ours["param_groups"], theirs["param_groups"]):
        assert ga == {k: v for k, v in gb.items() if k in ga}
    assert sorted(ours["state"]) == sorted(theirs["state"])
    for i, entry in theirs["state"].items():
        assert set(ours["state"][i]) == set(entry)
        for k, v in entry.items():
            mine = ours["state"][i][k]
            mine = mine.numpy() if hasattr(mine, "numpy") else np.asarray(mine)
            np.testing.assert_allclose(mine, v.numpy(), rtol=1e-5, err_msg=f"state {i} {k}")


def test_radam_takes_both_branches():
    # beta2 = 0.6: rho_t passes 5 after a few steps; beta2 = 0.999 keeps it under 5 for long
    p = nn.Parameter(np.zeros(1))
    opt = optim.RAdam([p], lr=1.0, betas=(0.0, 0.999))
    p.grad = minidl.Tensor(np.array([2.0]))
    opt.step()
    assert p.numpy()[0] == pytest.approx(-2.0)  # un-adapted: the bias-corrected momentum


@pytest.mark.parametrize("name", ["adagrad_decay", "adadelta_wd", "adamax_wd", "nadam_wd",
                                  "radam_rectified", "rprop_tight", "asgd_averaging"])
def test_new_optimizer_state_dicts_load_both_ways(torch, name):
    cls, kw = CONFIGS[name]
    params, grads = _data(np.float64, steps=7)
    if cls == "Rprop":
        grads = _sign_flips(grads)
    grads = [[None if k < 2 and i == 0 else g for i, g in enumerate(gs)]
             for k, gs in enumerate(grads)]
    ps, tps = _params(params), _torch_params(torch, params)
    opt, topt = getattr(optim, cls)(ps, **kw), getattr(torch.optim, cls)(tps, **kw)
    for g in grads[:4]:
        _step(opt, ps, g)
        _torch_step(torch, topt, tps, g)
    ours, theirs = opt.state_dict(), topt.state_dict()
    from_torch = _params([p.detach().numpy() for p in tps])
    opt_from_torch = getattr(optim, cls)(from_torch, **kw)
    opt_from_torch.load_state_dict(theirs)
    to_torch = _torch_params(torch, [p.numpy() for p in ps])
    topt_from_ours = getattr(torch.optim, cls)(to_torch, **kw)
    topt_from_ours.load_state_dict({
        "state": {i: {k: torch.tensor(v.numpy()) if hasattr(v, "numpy") else v
                      for k, v in e.items()} for i, e in ours["state"].items()},
        "param_groups": ours["param_groups"]})
    resumed = _params([p.numpy() for p in ps])
    opt_resumed = getattr(optim, cls)(resumed, **kw)
    opt_resumed.load_state_dict(ours)
    for g in grads[4:]:
        for o, group in ((opt, ps), (opt_from_torch, from_torch), (opt_resumed, resumed)):
            _step(o, group, g)
        for o, group in ((topt, tps), (topt_from_ours, to_torch)):
            _torch_step(torch, o, group, g)
    _close(from_torch, tps, np.float64, "minidl from torch's state dict")
    _close(ps, to_torch, np.float64, "torch from minidl's state dict")
    for a, b in zip(resumed, ps):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("make,error,message", [
    (lambda p: optim.Adagrad(p, lr=-0.1), ValueError, "lr must be >= 0"),
    (lambda p: optim.Adagrad(p, lr_decay=-1), ValueError, "lr_decay must be >= 0"),
    (lambda p: optim.Adagrad(p, initial_accumulator_value=-1), ValueError, "initial_accumulator"),
    (lambda p: optim.Adadelta(p, rho=1.5), ValueError, r"rho must be in \[0, 1\]"),
    (lambda p: optim.Adadelta(p, eps=float("nan")), ValueError, "eps must be a finite"),
    (lambda p: optim.Adamax(p, betas=(0.9, 1.0)), ValueError, r"betas\[1\]"),
    (lambda p: optim.NAdam(p, momentum_decay=-0.1), ValueError, "momentum_decay must be >= 0"),
    (lambda p: optim.NAdam(p, decoupled_weight_decay=1), TypeError, "decoupled_weight_decay"),
    (lambda p: optim.RAdam(p, weight_decay=-1), ValueError, "weight_decay must be >= 0"),
    (lambda p: optim.Rprop(p, etas=(1.2, 0.5)), ValueError, "0 < etaminus < 1 < etaplus"),
    (lambda p: optim.Rprop(p, step_sizes=(1.0, 0.1)), ValueError, "step_sizes"),
    (lambda p: optim.Rprop(p, etas=0.5), TypeError, "etas must be a pair"),
    (lambda p: optim.ASGD(p, lambd=-1), ValueError, "lambd must be >= 0"),
    (lambda p: optim.ASGD(p, maximize="no"), TypeError, "maximize must be True or False"),
    (lambda p: optim.LBFGS(p, line_search_fn="armijo"), ValueError, "strong_wolfe"),
    (lambda p: optim.LBFGS(p, history_size=0), ValueError, "history_size"),
    (lambda p: optim.LBFGS([{"params": p[:1]}, {"params": p[1:]}]), ValueError,
     "per-parameter options"),
])
def test_bad_new_optimizer_arguments_name_what_did_not_fit(make, error, message):
    with pytest.raises(error, match=message):
        make([nn.Parameter(np.ones(2)), nn.Parameter(np.ones(3))])


# ---- LBFGS on a small least-squares problem ---------------------------------------------------
def _least_squares(seed=0, n=12, k=4):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, k)), rng.standard_normal(n), rng.standard_normal(k)


def _lbfgs_run(module, dtype, steps, **kw):
    a, b, w0 = _least_squares()
    if module is minidl:
        w = nn.Parameter(w0.astype(dtype))
        bias = nn.Parameter(np.zeros(1, dtype))
        x, y = minidl.tensor(a, dtype=dtype), minidl.tensor(b, dtype=dtype)
        opt = optim.LBFGS([w, bias], **kw)
    else:
        w = module.nn.Parameter(module.tensor(w0.astype(dtype)))
        bias = module.nn.Parameter(module.zeros(1, dtype=w.dtype))
        x, y = module.tensor(a.astype(dtype)), module.tensor(b.astype(dtype))
        opt = module.optim.LBFGS([w, bias], **kw)

    def closure():
        opt.zero_grad()
        r = x @ w + bias - y
        loss = (r * r).mean() + 0.01 * (w * w).sum()
        loss.backward()
        return loss

    losses, weights = [], []
    for _ in range(steps):
        losses.append(float(opt.step(closure).detach()))
        weights.append(np.concatenate([w.detach().numpy().copy(), bias.detach().numpy()]))
    return losses, weights, opt


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kw", [dict(), dict(lr=0.5, max_iter=3, history_size=2),
                                dict(line_search_fn="strong_wolfe"),
                                dict(lr=0.8, max_iter=4, history_size=3,
                                     line_search_fn="strong_wolfe")],
                         ids=["default", "short_history", "strong_wolfe", "wolfe_short"])
def test_lbfgs_matches_torch(torch, kw, dtype):
    ours, ours_w, opt = _lbfgs_run(minidl, dtype, 3, **kw)
    theirs, theirs_w, topt = _lbfgs_run(torch, dtype, 3, **kw)
    if dtype == np.float64:
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(ours_w, theirs_w, rtol=1e-9, atol=1e-10)
    else:
        # each step runs up to 20 iterations and ends at the float32 floor of the loss (0.839):
        # weights within sqrt(2 * eps32 * loss / smallest Hessian eigenvalue 0.249) = 9e-4 of
        # the minimum give a loss within an ulp of it, and a line search that compares losses
        # an ulp apart may stop anywhere in there. Where it stops follows the float32 sums'
        # rounding (measured: 1e-7 from torch's with NumPy's AVX2 code, 2.2e-4 with its baseline
        # code and OpenBLAS's Sandybridge kernels, 28 function evaluations to torch's 14)
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)
        np.testing.assert_allclose(ours_w, theirs_w, rtol=0, atol=1e-3)
    state, tstate = opt.state_dict()["state"][0], topt.state_dict()["state"][0]
    assert set(state) == set(tstate)
    if dtype == np.float64:  # float32 near convergence: a stopping test may flip an iteration
        assert (state["func_evals"], state["n_iter"]) == (tstate["func_evals"], tstate["n_iter"])
    assert ours[-1] < ours[0]


def test_lbfgs_converges_on_least_squares_and_its_state_dict_round_trips(torch):
    losses, weights, opt = _lbfgs_run(minidl, np.float64, 2, line_search_fn="strong_wolfe")
    a, b, _ = _least_squares()
    # the ridge solution of the same problem (bias column unpenalised)
    design = np.hstack([a, np.ones((len(a), 1))])
    reg = np.diag([0.01 * len(a)] * a.shape[1] + [0.0])
    exact = np.linalg.solve(design.T @ design + reg, design.T @ b)
    np.testing.assert_allclose(weights[-1], exact, atol=2e-5)  # stops at tolerance_change
    sd = opt.state_dict()
    tparams = [torch.nn.Parameter(torch.tensor(weights[-1][:4])),
               torch.nn.Parameter(torch.tensor(weights[-1][4:]))]
    topt = torch.optim.LBFGS(tparams, line_search_fn="strong_wolfe")
    topt.load_state_dict({"state": {0: {k: torch.tensor(v.numpy()) if hasattr(v, "numpy")
                                        else [torch.tensor(x.numpy()) if hasattr(x, "numpy")
                                              else x for x in v] if isinstance(v, list) else v
                                        for k, v in sd["state"][0].items()}},
                          "param_groups": sd["param_groups"]})
    again = optim.LBFGS([nn.Parameter(np.zeros(4)), nn.Parameter(np.zeros(1))])
    again.load_state_dict(topt.state_dict())
    assert again.state_dict()["state"][0]["n_iter"] == sd["state"][0]["n_iter"]
    with pytest.raises(TypeError, match="needs a closure"):
        again.step(None)


# ---- on a (fake) GPU: the array-module paths ---------------------------------------------------
def test_new_optimizers_on_fake_cuda_match_the_cpu(monkeypatch, host_kernels):
    import _fake_gpu

    params, grads = _data(np.float32)
    grads = _sign_flips(grads)
    names = ["adagrad_decay", "adadelta_wd", "adamax_wd", "nadam_wd", "radam_rectified",
             "rprop_tight", "asgd_averaging"]
    cpu = {n: _params(params) for n in names}
    cpu_opts = {n: getattr(optim, CONFIGS[n][0])(cpu[n], **CONFIGS[n][1]) for n in names}
    _fake_gpu.install(monkeypatch, host_kernels)
    gpu = {n: [nn.Parameter(minidl.tensor(p, device="cuda").data) for p in params]
           for n in names}
    gpu_opts = {n: getattr(optim, CONFIGS[n][0])(gpu[n], **CONFIGS[n][1]) for n in names}
    for step_grads in grads:
        for n in names:
            for ps, o in ((cpu[n], cpu_opts[n]), (gpu[n], gpu_opts[n])):
                o.zero_grad()
                for p, g in zip(ps, step_grads):
                    p.grad = minidl.tensor(g, device=p.device)
                o.step()
    for n in names:
        for a, b in zip(gpu[n], cpu[n]):
            assert a.device == "cuda"
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=n)


# ---- the schedules beyond StepLR & co against PyTorch -----------------------------------------
class Halve:
    """A callable object: MultiplicativeLR's state dict keeps its attributes."""

    def __init__(self, factor):
        self.factor = factor

    def __call__(self, epoch):
        return self.factor if epoch % 2 else 1.0


def _seq(m, o):
    s = m.lr_scheduler
    return s.SequentialLR(o, [s.LinearLR(o, start_factor=0.1, total_iters=3),
                              s.ExponentialLR(o, 0.8), s.CosineAnnealingLR(o, T_max=4)],
                          milestones=[3, 7])


def _seq_closed_forms(m, o):
    s = m.lr_scheduler
    return s.SequentialLR(o, [s.ConstantLR(o, factor=0.5, total_iters=2),
                              s.StepLR(o, 2, 0.5), s.MultiStepLR(o, [1, 3], 0.3),
                              s.PolynomialLR(o, total_iters=4, power=2.0),
                              s.LinearLR(o, 0.2, 0.9, 3)], milestones=[2, 5, 9, 12])


SCHEDULES = {
    "ConstantLR": lambda m, o: m.lr_scheduler.ConstantLR(o),
    "ConstantLR_long": lambda m, o: m.lr_scheduler.ConstantLR(o, factor=0.25, total_iters=7),
    "PolynomialLR": lambda m, o: m.lr_scheduler.PolynomialLR(o),
    "PolynomialLR_power": lambda m, o: m.lr_scheduler.PolynomialLR(o, total_iters=9, power=2.5),
    "MultiplicativeLR": lambda m, o: m.lr_scheduler.MultiplicativeLR(o, lambda e: 0.9),
    "MultiplicativeLR_per_group": lambda m, o: m.lr_scheduler.MultiplicativeLR(
        o, [lambda e: 0.95, Halve(0.5)]),
    "CosineAnnealingWarmRestarts": lambda m, o: m.lr_scheduler.CosineAnnealingWarmRestarts(
        o, T_0=4, eta_min=0.01),
    "CosineAnnealingWarmRestarts_mult": lambda m, o: m.lr_scheduler.CosineAnnealingWarmRestarts(
        o, T_0=2, T_mult=2),
    "CyclicLR": lambda m, o: m.lr_scheduler.CyclicLR(o, 0.01, 0.1, step_size_up=3),
    "CyclicLR_triangular2": lambda m, o: m.lr_scheduler.CyclicLR(
        o, [0.01, 0.02], [0.1, 0.3], step_size_up=2, step_size_down=3, mode="triangular2",
        base_momentum=0.7, max_momentum=[0.9, 0.95]),
    "CyclicLR_exp_range": lambda m, o: m.lr_scheduler.CyclicLR(
        o, 0.01, 0.1, step_size_up=3, mode="exp_range", gamma=0.9, cycle_momentum=False),
    "CyclicLR_scale_fn": lambda m, o: m.lr_scheduler.CyclicLR(
        o, 0.01, 0.1, step_size_up=2, scale_fn=lambda x: 0.8 ** x, scale_mode="iterations"),
    "OneCycleLR": lambda m, o: m.lr_scheduler.OneCycleLR(o, max_lr=1.0, total_steps=16),
    "OneCycleLR_linear": lambda m, o: m.lr_scheduler.OneCycleLR(
        o, max_lr=[0.5, 2.0], epochs=4, steps_per_epoch=4, anneal_strategy="linear",
        pct_start=0.25, div_factor=10.0, final_div_factor=100.0),
    "OneCycleLR_three_phase": lambda m, o: m.lr_scheduler.OneCycleLR(
        o, max_lr=1.0, total_steps=16, three_phase=True, base_momentum=0.8),
    "SequentialLR": _seq,
    "SequentialLR_closed_forms": _seq_closed_forms,
    "ChainedScheduler": lambda m, o: m.lr_scheduler.ChainedScheduler(
        [m.lr_scheduler.ConstantLR(o, factor=0.5, total_iters=3),
         m.lr_scheduler.ExponentialLR(o, 0.9)]),
}
NOT_CHAINABLE = ("CyclicLR", "OneCycleLR", "CosineAnnealingWarmRestarts")  # from base lrs
STEPS = 15


def _optimizer(module, kind, make_param):
    a, b = make_param(), make_param()
    groups = [{"params": [a]}, {"params": [b], "lr": 0.5}]
    if kind == "adam":
        return module.optim.Adam(groups, lr=0.2)
    return module.optim.SGD(groups, lr=0.2, momentum=0.5)


def _pair(torch, name, kind="sgd"):
    opt = _optimizer(minidl, kind, lambda: nn.Parameter(np.ones(1, np.float32)))
    topt = _optimizer(torch, kind, lambda: torch.nn.Parameter(torch.ones(1)))
    return SCHEDULES[name](optim, opt), SCHEDULES[name](torch.optim, topt)


def _momenta(opt):
    return [g["betas"][0] if "betas" in g else g["momentum"] for g in opt.param_groups]


def _run(sched, tsched, steps, by_hand_at=None):
    ours, theirs = [], []
    for k in range(steps):
        if k == by_hand_at:
            for o in (sched.optimizer, tsched.optimizer):
                o.param_groups[0]["lr"] *= 0.3
        ours.append(sched.get_last_lr() + _momenta(sched.optimizer))
        theirs.append(tsched.get_last_lr() + _momenta(tsched.optimizer))
        tsched.optimizer.step()
        sched.step(), tsched.step()
    return ours, theirs


@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("name,by_hand_at", [
    # an lr changed by hand is only kept by the chainable schedules (the others set the lr
    # from their base lrs, in torch as here)
    (name, at) for name in SCHEDULES for at in (None, 5)
    if at is None or not name.startswith(NOT_CHAINABLE)])
def test_new_schedule_matches_torch(torch, name, by_hand_at, kind):
    sched, tsched = _pair(torch, name, kind)
    steps = STEPS if not name.startswith("OneCycleLR") else 16
    ours, theirs = _run(sched, tsched, steps, by_hand_at)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
    assert len({tuple(r) for r in ours}) >= 2  # the lr did change


def test_one_cycle_lr_refuses_a_step_past_total_steps(torch):
    sched, _ = _pair(torch, "OneCycleLR")
    for _ in range(15):
        sched.step()
    sched.step()  # step 16 = total_steps is still allowed, as in PyTorch
    with pytest.raises(ValueError, match="Tried to step 17 times"):
        sched.step()


def test_warm_restarts_take_a_fractional_epoch_as_torch(torch):
    sched, tsched = _pair(torch, "CosineAnnealingWarmRestarts_mult")
    for epoch in np.arange(0, 9, 0.25):
        sched.step(float(epoch)), tsched.step(float(epoch))
        np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), rtol=1e-12)
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        sched.step(-1.0)


PLATEAU = {
    "min_rel": dict(patience=2),
    "min_abs_cooldown": dict(threshold=0.05, threshold_mode="abs", cooldown=2, patience=1,
                             factor=0.5),
    "max_rel": dict(mode="max", patience=1, factor=0.3, min_lr=[0.05, 0.0]),
    "max_abs_eps": dict(mode="max", threshold_mode="abs", patience=0, factor=0.9, eps=0.02,
                        min_lr=0.1),
}


def _metrics(mode):
    rng = np.random.default_rng(5)
    base = np.concatenate([np.linspace(1.0, 0.5, 6), 0.5 + 0.01 * rng.standard_normal(20)])
    return base if mode == "min" else -base


@pytest.mark.parametrize("name", list(PLATEAU))
def test_reduce_lr_on_plateau_matches_torch(torch, name):
    kw = PLATEAU[name]
    opt = _optimizer(minidl, "sgd", lambda: nn.Parameter(np.ones(1, np.float32)))
    topt = _optimizer(torch, "sgd", lambda: torch.nn.Parameter(torch.ones(1)))
    sched = optim.lr_scheduler.ReduceLROnPlateau(opt, **kw)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kw)
    metrics = _metrics(kw.get("mode", "min"))
    for k, m in enumerate(metrics):
        sched.step(minidl.tensor(m) if k % 2 else m), tsched.step(m)
        assert sched.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=1e-12)
        assert (sched.num_bad_epochs, sched.cooldown_counter) == (tsched.num_bad_epochs,
                                                                   tsched.cooldown_counter)
        if k == 12:  # the state dicts: the same keys and values, and they load both ways
            sd, tsd = sched.state_dict(), tsched.state_dict()
            assert set(sd) == set(tsd) and sd == tsd
    assert len(set(map(tuple, [sched.get_last_lr()]))) == 1
    assert sched.get_last_lr() != [0.2, 0.5]
    fresh = optim.lr_scheduler.ReduceLROnPlateau(_optimizer(
        minidl, "sgd", lambda: nn.Parameter(np.ones(1, np.float32))))
    fresh.load_state_dict(tsched.state_dict())
    assert fresh.best == tsched.best and fresh.mode == tsched.mode
    with pytest.raises(ValueError, match="mode 'median' is unknown"):
        fresh.load_state_dict({**tsched.state_dict(), "mode": "median"})
    assert fresh.mode == tsched.mode


def _continue(sched, steps):
    out = []
    for _ in range(steps):
        sched.step()
        out.append(sched.get_last_lr() + _momenta(sched.optimizer))
    return out


@pytest.mark.parametrize("name", [n for n in SCHEDULES if "_" not in n or n.endswith("mult")]
                         + ["CyclicLR_triangular2", "OneCycleLR_three_phase",
                            "MultiplicativeLR_per_group"])
def test_new_schedule_state_dicts_resume_and_load_both_ways(torch, name):
    sched, tsched = _pair(torch, name)
    _run(sched, tsched, 5)
    sd, tsd = sched.state_dict(), tsched.state_dict()
    opt_sd, topt_sd = sched.optimizer.state_dict(), tsched.optimizer.state_dict()

    def keys(d):
        return {k for k in d if k not in ("_schedulers",)}
    assert keys(sd) <= keys(tsd)
    expected = _continue(tsched, 6)
    np.testing.assert_allclose(_continue(sched, 6), expected, rtol=1e-12, atol=1e-15)
    for state, opt_state, what in ((sd, opt_sd, "minidl's"), (tsd, topt_sd, "torch's")):
        opt = _optimizer(minidl, "sgd", lambda: nn.Parameter(np.ones(1, np.float32)))
        resumed = SCHEDULES[name](optim, opt)
        opt.load_state_dict(opt_state)
        resumed.load_state_dict(state)
        np.testing.assert_allclose(_continue(resumed, 6), expected, rtol=1e-12, atol=1e-15,
                                   err_msg=f"minidl from {what}")
    topt = _optimizer(torch, "sgd", lambda: torch.nn.Parameter(torch.ones(1)))
    tresumed = SCHEDULES[name](torch.optim, topt)
    topt.load_state_dict(topt_sd)
    tresumed.load_state_dict(sd)
    topt.step()
    np.testing.assert_allclose(_continue(tresumed, 6), expected, rtol=1e-12, atol=1e-15,
                               err_msg="torch from minidl's")


def _sgd(momentum=0.9):
    return optim.SGD([nn.Parameter(np.ones(2, np.float32))], lr=0.1, momentum=momentum)


@pytest.mark.parametrize("make,error,message", [
    (lambda: optim.lr_scheduler.ConstantLR(_sgd(), factor=1.5), ValueError, "factor must be in"),
    (lambda: optim.lr_scheduler.PolynomialLR(_sgd(), total_iters=0), ValueError, "total_iters"),
    (lambda: optim.lr_scheduler.MultiplicativeLR(_sgd(), 0.9), TypeError, "not a function"),
    (lambda: optim.lr_scheduler.CosineAnnealingWarmRestarts(_sgd(), T_0=0), ValueError, "T_0"),
    (lambda: optim.lr_scheduler.CosineAnnealingWarmRestarts(_sgd(), 2, T_mult=1.5), ValueError,
     "T_mult"),
    (lambda: optim.lr_scheduler.CyclicLR(_sgd(), 0.01, 0.1, mode="zigzag"), ValueError,
     "mode is invalid"),
    (lambda: optim.lr_scheduler.CyclicLR(_sgd(), [0.01, 0.02], 0.1), ValueError,
     "base_lr must have the same length"),
    (lambda: optim.lr_scheduler.CyclicLR(optim.Adagrad([nn.Parameter(np.ones(1))]), 0.01, 0.1),
     ValueError, "must support momentum or beta1"),
    (lambda: optim.lr_scheduler.OneCycleLR(_sgd(), 1.0), ValueError, "total_steps OR"),
    (lambda: optim.lr_scheduler.OneCycleLR(_sgd(), 1.0, 10, anneal_strategy="exp"), ValueError,
     "anneal_strategy"),
    (lambda: optim.lr_scheduler.OneCycleLR(_sgd(), 1.0, 10, pct_start=1.5), ValueError,
     "pct_start"),
    (lambda: optim.lr_scheduler.ReduceLROnPlateau(_sgd(), factor=1.0), ValueError,
     "Factor should be < 1.0"),
    (lambda: optim.lr_scheduler.ReduceLROnPlateau(_sgd(), mode="up"), ValueError, "unknown"),
    (lambda: optim.lr_scheduler.ReduceLROnPlateau(_sgd(), threshold_mode="x"), ValueError,
     "threshold mode"),
    (lambda: optim.lr_scheduler.ReduceLROnPlateau(_sgd(), patience=-1), ValueError, "patience"),
    (lambda: optim.lr_scheduler.ReduceLROnPlateau(_sgd(), min_lr=[0.1, 0.2]), ValueError,
     "min_lr must have the same length"),
    (lambda: optim.lr_scheduler.SequentialLR(_sgd(), [], []), ValueError, "at least one"),
    (lambda: (lambda o: optim.lr_scheduler.SequentialLR(
        o, [optim.lr_scheduler.ConstantLR(o), optim.lr_scheduler.ExponentialLR(o, 0.9)],
        [1, 2]))(_sgd()), ValueError, "one more than the number of milestone"),
    (lambda: (lambda o: optim.lr_scheduler.SequentialLR(
        o, [optim.lr_scheduler.ConstantLR(o), optim.lr_scheduler.ExponentialLR(_sgd(), 0.9)],
        [1]))(_sgd()), ValueError, "same optimizer"),
    (lambda: (lambda o: optim.lr_scheduler.ChainedScheduler(
        [optim.lr_scheduler.ReduceLROnPlateau(o)]))(_sgd()), ValueError, "ReduceLROnPlateau"),
])
def test_bad_new_schedule_arguments_name_what_did_not_fit(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_new_schedules_are_in_both_namespaces():
    from minidl.optim.lr_scheduler import OneCycleLR, ReduceLROnPlateau  # noqa: F401

    for name in ("OneCycleLR", "ReduceLROnPlateau", "CosineAnnealingWarmRestarts", "CyclicLR",
                 "PolynomialLR", "ConstantLR", "SequentialLR", "ChainedScheduler",
                 "MultiplicativeLR"):
        cls = getattr(optim.lr_scheduler, name)
        assert getattr(optim, name) is cls and issubclass(cls, optim.lr_scheduler.LRScheduler)


def test_named_parameters_give_torchs_param_names(torch):
    model = nn.Linear(3, 2)
    tmodel = torch.nn.Linear(3, 2)
    opt = optim.Adam(model.named_parameters(), lr=0.01)
    topt = torch.optim.Adam(tmodel.named_parameters(), lr=0.01)
    assert opt.param_groups[0]["param_names"] == ["weight", "bias"]
    group, tgroup = opt.state_dict()["param_groups"][0], topt.state_dict()["param_groups"][0]
    assert group == {k: v for k, v in tgroup.items() if k in group}
    plain = optim.Adam(model.parameters(), lr=0.01)
    plain.load_state_dict(topt.state_dict())  # torch's named state dict loads, names kept
    assert plain.param_groups[0]["param_names"] == ["weight", "bias"]
    with pytest.raises(ValueError, match="with/without names"):
        optim.SGD([("weight", model.weight), model.bias], lr=0.1)
    grouped = optim.SGD([{"params": [("w", model.weight)]}, {"params": [model.bias]}], lr=0.1)
    assert grouped.param_groups[0]["param_names"] == ["w"]
    assert "param_names" not in grouped.param_groups[1]


def test_optimizer_repr_reads_as_torchs(torch):
    ours = repr(optim.SGD([nn.Parameter(np.ones(1))], lr=0.1, momentum=0.9))
    theirs = repr(torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1, momentum=0.9))
    assert ours.splitlines()[:2] == theirs.splitlines()[:2] == ["SGD (", "Parameter Group 0"]
    assert set(ours.splitlines()) <= set(theirs.splitlines())


@pytest.mark.parametrize("make", [
    lambda m, o: m.lr_scheduler.StepLR(o, 2, 0.5),
    lambda m, o: m.lr_scheduler.MultiStepLR(o, [1, 4], 0.3),
    lambda m, o: m.lr_scheduler.ExponentialLR(o, 0.9),
    lambda m, o: m.lr_scheduler.CosineAnnealingLR(o, 6, 0.01),
    lambda m, o: m.lr_scheduler.LinearLR(o, 0.2, 1.0, 4),
    lambda m, o: m.lr_scheduler.PolynomialLR(o, 5, 2.0),
    lambda m, o: m.lr_scheduler.ConstantLR(o, 0.5, 3),
    lambda m, o: m.lr_scheduler.LambdaLR(o, lambda e: 1 / (e + 1)),
], ids=["step", "multistep", "exponential", "cosine", "linear", "polynomial", "constant",
        "lambda"])
def test_step_with_an_epoch_jumps_as_torch_and_warns(torch, make):
    opt = _optimizer(minidl, "sgd", lambda: nn.Parameter(np.ones(1, np.float32)))
    topt = _optimizer(torch, "sgd", lambda: torch.nn.Parameter(torch.ones(1)))
    sched, tsched = make(optim, opt), make(torch.optim, topt)
    topt.step()
    for epoch in (3, 1, 5, 5, 8, 0):
        with pytest.warns(UserWarning, match="deprecated"):
            sched.step(epoch)
        with pytest.warns(UserWarning):
            tsched.step(epoch)
        np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), rtol=1e-12)
    with pytest.raises(ValueError, match="epoch"), pytest.warns(UserWarning):
        sched.step(-2)


def test_reduce_lr_on_plateau_takes_a_deprecated_epoch(torch):
    sched = optim.lr_scheduler.ReduceLROnPlateau(_sgd(), patience=0)
    with pytest.warns(UserWarning, match="deprecated"):
        sched.step(1.0, epoch=7)
    assert sched.last_epoch == 7


def test_lbfgs_on_fake_cuda_matches_the_cpu(monkeypatch, host_kernels):
    import _fake_gpu

    a, b, w0 = _least_squares()
    results = []
    for device in ("cpu", "cuda"):
        if device == "cuda":
            _fake_gpu.install(monkeypatch, host_kernels)
        w = nn.Parameter(minidl.tensor(w0, dtype=np.float64, device=device).data)
        x = minidl.tensor(a, dtype=np.float64, device=device)
        y = minidl.tensor(b, dtype=np.float64, device=device)
        opt = optim.LBFGS([w], max_iter=5, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            r = x @ w - y
            loss = (r * r).mean()
            loss.backward()
            return loss

        for _ in range(2):
            opt.step(closure)
        assert w.device == device
        results.append(w.numpy())
    np.testing.assert_allclose(results[1], results[0], rtol=1e-10)


def test_state_is_keyed_by_the_parameter_as_torchs():
    p, q = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(3))
    opt = optim.Adam([p, q], lr=0.1)
    p.grad = minidl.Tensor(np.ones(2))
    opt.step()
    assert p in opt.state and q not in opt.state
    assert opt.state[p]["step"] == 1 and opt.state[p]["exp_avg"].shape == (2,)
    assert opt.state.get(q) is None
    opt.load_state_dict(opt.state_dict())
    assert opt.state[p]["step"] == 1


def test_step_hooks_run_around_every_optimizers_step():
    for make in (lambda ps: optim.SGD(ps, lr=0.1), lambda ps: optim.Adagrad(ps),
                 lambda ps: optim.LBFGS(ps, max_iter=1)):
        p = nn.Parameter(np.ones(2))
        opt = make([p])
        calls = []
        pre = opt.register_step_pre_hook(lambda o, a, k: calls.append(("pre", o is opt, a)))
        opt.register_step_post_hook(lambda o, a, k: calls.append(("post", len(a))))

        def closure():
            opt.zero_grad()
            loss = (p * p).sum()
            loss.backward()
            return loss
        opt.step(closure)
        assert calls == [("pre", True, (closure,)), ("post", 1)]
        pre.remove()
        opt.step(closure)
        assert calls[-1] == ("post", 1) and len(calls) == 3
    opt = optim.SGD([nn.Parameter(np.ones(2))], lr=0.1)
    opt.register_step_pre_hook(lambda o, a, k: 3)
    with pytest.raises(RuntimeError, match="must return None or a tuple"):
        opt.step()
    with pytest.raises(TypeError, match="hook must be callable"):
        opt.register_step_post_hook(5)


# ---- a deep-copied or pickled optimizer keeps its state ----------------------------------------------
def _trained(opt_cls, **kw):
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    opt = opt_cls(model.parameters(), lr=0.1, **kw)
    model(minidl.ones(4, 2)).sum().backward()
    opt.step()
    return model, opt


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_optimizer_keeps_its_state_for_the_copied_parameters(how):
    model, opt = _trained(minidl.optim.Adam)
    if how == "deepcopy":
        model2, opt2 = copy.deepcopy((model, opt))
    else:
        model2, opt2 = pickle.loads(pickle.dumps((model, opt)))
    assert opt2.param_groups[0]["params"][0] is model2[0].weight
    assert list(opt2.state_dict()["state"]) == [0, 1, 2, 3]  # was empty: the state was lost
    np.testing.assert_array_equal(opt2.state[model2[0].weight]["exp_avg"],
                                  opt.state[model[0].weight]["exp_avg"])
    for m, o in ((model, opt), (model2, opt2)):  # both go on the same way
        o.zero_grad()
        m(minidl.ones(4, 2)).sum().backward()
        o.step()
    np.testing.assert_array_equal(model2[0].weight.numpy(), model[0].weight.numpy())
# ---- misuse: swa_utils' AveragedModel and update_bn -------------------------------------------

def test_averaged_model_of_another_architecture_names_the_parameter():
    from minidl.optim.swa_utils import AveragedModel

    avg = AveragedModel(minidl.nn.Linear(2, 2))
    before = avg.module.weight.numpy().copy()
    with pytest.raises(ValueError, match=r"weight has shape \(2, 3\) in the model, \(2, 2\) in "
                                         r"the averaged copy"):
        avg.update_parameters(minidl.nn.Linear(3, 2))
    np.testing.assert_array_equal(avg.module.weight.numpy(), before)
    assert int(avg.n_averaged.item()) == 0


def test_averaged_model_refuses_a_model_with_more_parameters():
    from minidl.optim.swa_utils import AveragedModel

    nn = minidl.nn
    avg = AveragedModel(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="the model has 4 parameters, the averaged copy 2"):
        avg.update_parameters(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))


def test_averaged_model_buffer_mismatch_checked_before_any_write():
    from minidl.optim.swa_utils import AveragedModel

    nn = minidl.nn
    avg = AveragedModel(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
    other = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(3))
    other[1].weight = nn.Parameter(minidl.ones(2))  # same parameters, other buffers
    other[1].bias = nn.Parameter(minidl.zeros(2))
    before = avg.module[0].weight.numpy().copy()
    with pytest.raises(ValueError, match=r"buffer 1.running_mean has shape \(3,\)"):
        avg.update_parameters(other)
    np.testing.assert_array_equal(avg.module[0].weight.numpy(), before)


def test_update_bn_over_a_loader_of_dicts_is_a_type_error():
    from minidl.optim.swa_utils import update_bn

    nn = minidl.nn
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with pytest.raises(TypeError, match="must be Tensor, not dict"):  # was an AttributeError
        update_bn([{"x": minidl.ones(3, 2)}], model)
