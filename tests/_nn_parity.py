"""Module parity with PyTorch: the same constructor arguments on both sides, torch's weights
copied into minidl's module, then outputs, input gradients and parameter gradients compared
(of a fixed random projection of the output). Import only after importorskip("torch")."""
from __future__ import annotations

import numpy as np
import torch

import minidl
from _torch_parity import assert_close


def same_state(ours, theirs):
    """Torch's state_dict copied into ours; the keys must be the same, in the same order."""
    state = theirs.state_dict()
    assert list(ours.state_dict()) == list(state), \
        f"state_dict keys {list(ours.state_dict())} != torch's {list(state)}"
    ours.load_state_dict({k: v.detach().numpy() for k, v in state.items()})


def check_module(ours, theirs, inputs, rtol=1e-4, atol=1e-5, seed=0, grad_inputs=True,
                 call=None):
    """``inputs``: numpy arrays (float ones get requires_grad when grad_inputs, which may
    also be the set of the inputs' positions that get it: targets do not)."""
    same_state(ours, theirs)
    m_in, t_in = [], []
    for k, a in enumerate(inputs):
        a = np.asarray(a)
        wanted = k in grad_inputs if isinstance(grad_inputs, (set, tuple, list)) else grad_inputs
        g = bool(wanted) and a.dtype.kind == "f"
        m_in.append(minidl.tensor(a, requires_grad=g, dtype=str(a.dtype)))
        t_in.append(torch.tensor(a, requires_grad=g))
    call = call or (lambda m, *xs: m(*xs))
    m_out, t_out = call(ours, *m_in), call(theirs, *t_in)
    assert_close(m_out.numpy(), t_out.detach().numpy(), rtol, atol, "forward")
    assert str(m_out.dtype) == str(t_out.dtype).replace("torch.", ""), (m_out.dtype, t_out.dtype)
    if not t_out.requires_grad:
        return m_out, t_out
    proj = np.random.default_rng(seed).standard_normal(tuple(t_out.shape)).astype(
        str(t_out.dtype).replace("torch.", ""))
    (m_out * minidl.tensor(proj, dtype=str(proj.dtype))).sum().backward()
    (t_out * torch.tensor(proj)).sum().backward()
    for k, (m, t) in enumerate(zip(m_in, t_in)):
        if t.requires_grad:
            assert_close(m.grad.numpy(), t.grad.numpy(), rtol, atol, f"grad of input {k}")
    t_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        tp = t_params[name]
        if tp.grad is None:
            assert p.grad is None or not np.any(p.grad.numpy()), name
            continue
        assert p.grad is not None, f"no gradient for {name}"
        assert_close(p.grad.numpy(), tp.grad.numpy(), rtol, atol, f"grad of {name}")
    return m_out, t_out


def check_init(ours_factory, theirs_factory):
    """Default initialisation: every parameter's shape, and its range and spread close to
    torch's (drawn from the same distribution, not the same numbers)."""
    ours, theirs = ours_factory(), theirs_factory()
    t_params = dict(theirs.named_parameters())
    assert [k for k, _ in ours.named_parameters()] == list(t_params)
    for name, p in ours.named_parameters():
        a, b = p.numpy(), t_params[name].detach().numpy()
        assert a.shape == b.shape and a.dtype == b.dtype, (name, a.shape, b.shape)
        if b.size and b.std() == 0:  # a constant (ones, zeros, 0.25): the same values
            np.testing.assert_array_equal(a, b, err_msg=name)
        elif a.size >= 50:
            assert abs(a.max() - b.max()) <= 0.2 * abs(b.max()) + 0.02, (name, a.max(), b.max())
            assert abs(a.std() - b.std()) <= 0.2 * b.std(), (name, a.std(), b.std())
        else:
            assert np.abs(a).max() <= 2 * np.abs(b).max(), (name, a, b)
