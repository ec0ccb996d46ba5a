"""The Optimizer base as torch's (closure, maximize, add_param_group), the optimizers beyond
SGD/Adam/RMSprop and the schedules beyond StepLR & co: PyTorch's numbers over several steps
(float64 to ~1e-10 and float32), PyTorch's state dicts both ways, refusals that name what did
not fit."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl import optim

SHAPES = [(4, 3), (3,), (2, 2, 3)]


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="PyTorch parity needs torch, which is not installed")


def _data(dtype, steps=6, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]
    return params, grads


def _step(opt, ps, step_grads):
    opt.zero_grad()
    for p, g in zip(ps, step_grads):
        if g is not None:
            p.grad = minidl.Tensor(g.copy())
    opt.step()


def _torch_step(torch, opt, ps, step_grads):
    opt.zero_grad()
    for p, g in zip(ps, step_grads):
        if g is not None:
            p.grad = torch.tensor(g)
    opt.step()


def _params(arrays):
    return [nn.Parameter(a.copy()) for a in arrays]


def _torch_params(torch, arrays):
    return [torch.nn.Parameter(torch.tensor(a.copy())) for a in arrays]


def _close(ours, theirs, dtype, what=""):
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=1e-6)
    for k, (a, b) in enumerate(zip(ours, theirs)):
        a, b = a.numpy(), b.detach().numpy()
        assert a.dtype == dtype, f"{what}: parameter {k} became {a.dtype}"
        np.testing.assert_allclose(a, b, **tol, err_msg=f"{what}: parameter {k}")


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
