"""Optimizers and schedules: the same parameters and gradients give PyTorch's numbers."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl import optim

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
