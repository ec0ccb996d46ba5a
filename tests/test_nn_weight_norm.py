"""nn.utils.weight_norm and nn.utils.parametrizations.weight_norm against torch 2.13: a 1-D
parameter along dim 0 is normalised entry by entry (found by an audit against torch 2.13)."""
import warnings

import numpy as np
import pytest

import minidl
import minidl.nn as nn


# ---- weight_norm of a 1-D parameter -----------------------------------------------------------

def test_weight_norm_of_a_1d_parameter_along_dim_0_takes_each_entry_alone():
    for make in (lambda m: nn.utils.weight_norm(m, name="bias"),
                 lambda m: nn.utils.parametrizations.weight_norm(m, name="bias")):
        lin = nn.Linear(4, 3)
        lin.bias.data[...] = [1.0, -0.5, 0.25]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            make(lin)
        g = lin.bias_g if hasattr(lin, "bias_g") else lin.parametrizations.bias.original0
        assert g.shape == (3,)
        np.testing.assert_allclose(g.detach().numpy(), [1.0, 0.5, 0.25])
        np.testing.assert_allclose(lin.bias.detach().numpy(), [1.0, -0.5, 0.25])


def test_weight_norm_of_a_1d_parameter_matches_torch():
    torch = pytest.importorskip("torch")
    b = np.array([1.0, -0.5, 0.25], np.float32)
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    grads = []
    for m in (torch, minidl):
        lin = m.nn.Linear(4, 3)
        with m.no_grad():
            lin.weight.copy_(m.ones(3, 4))
            lin.bias.copy_(m.tensor(b))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            m.nn.utils.weight_norm(lin, name="bias")
        lin(m.tensor(x)).pow(2).sum().backward()
        grads.append((lin.bias_g.grad.numpy(), lin.bias_v.grad.numpy()))
    for ours, theirs in zip(grads[1], grads[0]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
