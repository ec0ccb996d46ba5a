"""nn.init as PyTorch's: gains, the deterministic initialisers value for value against torch,
the random ones by their distribution (minidl draws from its own seeded generator)."""
import math

import numpy as np
import pytest

import minidl
import minidl.nn as nn
from minidl.nn import init

try:
    import torch
except ImportError:
    torch = None


def test_calculate_gain():
    cases = [("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None),
             ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None)]
    want = [1, 1, 1, 5 / 3, math.sqrt(2), math.sqrt(2 / (1 + 1e-4)), math.sqrt(2 / 1.04), 0.75]
    for (name, param), w in zip(cases, want):
        assert init.calculate_gain(name, param) == pytest.approx(w, rel=1e-12)
        if torch is not None:
            assert init.calculate_gain(name, param) == pytest.approx(
                torch.nn.init.calculate_gain(name, param), rel=1e-12)
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        init.calculate_gain("swish")


def test_deterministic_initialisers_match_torch():
    w = minidl.zeros(3, 5)
    assert init.eye_(w) is w and np.array_equal(w.numpy(), np.eye(3, 5))
    conv = minidl.zeros(4, 2, 3, 3)
    init.dirac_(conv, groups=2)
    init.constant_(c := minidl.zeros(2, 2), 0.5)
    assert c.numpy().tolist() == [[0.5, 0.5], [0.5, 0.5]]
    if torch is not None:
        tc = torch.zeros(4, 2, 3, 3)
        torch.nn.init.dirac_(tc, groups=2)
        np.testing.assert_array_equal(conv.numpy(), tc.numpy())
        tc1 = torch.zeros(6, 4, 3)
        torch.nn.init.dirac_(tc1)
        np.testing.assert_array_equal(init.dirac_(minidl.zeros(6, 4, 3)).numpy(), tc1.numpy())
    x = minidl.randn(2, 4, 5, 5)
    y = nn.functional.conv2d(x, init.dirac_(minidl.zeros(4, 4, 3, 3)), padding=1)
    np.testing.assert_allclose(y.numpy(), x.numpy(), rtol=1e-6)  # the identity convolution


def test_random_initialisers_by_distribution():
    minidl.manual_seed(0)
    w = minidl.zeros(400, 300)
    init.xavier_normal_(w, gain=2.0)
    assert w.numpy().std() == pytest.approx(2 * math.sqrt(2 / 700), rel=0.02)
    init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    assert w.numpy().std() == pytest.approx(math.sqrt(2) / math.sqrt(400), rel=0.02)
    init.kaiming_uniform_(w, nonlinearity="tanh")
    assert np.abs(w.numpy()).max() <= 5 / 3 * math.sqrt(3 / 300) + 1e-6
    init.trunc_normal_(w, mean=1.0, std=2.0, a=0.0, b=3.0)
    v = w.numpy()
    def pdf(z):
        return math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

    def cdf(z):
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))
    # the mean of N(1, 4) truncated to [0, 3]: 1 + 2 (pdf(-0.5) - pdf(1)) / (cdf(1) - cdf(-0.5))
    mean = 1 + 2 * (pdf(-0.5) - pdf(1)) / (cdf(1) - cdf(-0.5))
    assert v.min() >= 0.0 and v.max() <= 3.0 and v.mean() == pytest.approx(mean, abs=0.02)
    # a symmetric truncation of N(1, 4) to [1 - 2, 1 + 2]: std = 2 * sqrt(1 - 2 phi(1) / (2 Phi(1) - 1))
    init.trunc_normal_(w, mean=1.0, std=2.0, a=-1.0, b=3.0)
    assert w.numpy().std() == pytest.approx(2 * math.sqrt(1 - 2 * pdf(1) / (2 * cdf(1) - 1)),
                                            rel=0.02)
    q = minidl.zeros(6, 10)
    init.orthogonal_(q, gain=1.5)
    np.testing.assert_allclose(q.numpy() @ q.numpy().T, 2.25 * np.eye(6), atol=1e-5)
    tall = init.orthogonal_(minidl.zeros(8, 2, 2))
    flat = tall.numpy().reshape(8, 4)
    np.testing.assert_allclose(flat.T @ flat, np.eye(4), atol=1e-5)
    s = init.sparse_(minidl.zeros(10, 7), sparsity=0.3)
    assert ((s.numpy() == 0).sum(0) >= 3).all() and s.numpy().any()


def test_initialisers_write_in_place_and_refuse_what_torch_refuses():
    lin = nn.Linear(4, 3)
    w = lin.weight
    init.xavier_uniform_(lin.weight)
    init.zeros_(lin.bias)
    assert lin.weight is w and not lin.bias.numpy().any()
    for fn in (init.xavier_uniform_, init.kaiming_normal_, init.orthogonal_):
        with pytest.raises(ValueError, match="dimensions"):
            fn(minidl.zeros(5))
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_uniform_(minidl.zeros(3, 3), mode="fan_avg")
    with pytest.raises(ValueError, match="2-D"):
        init.eye_(minidl.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="divisible"):
        init.dirac_(minidl.zeros(3, 3, 3), groups=2)
    with pytest.raises(ValueError, match="less than"):
        init.trunc_normal_(minidl.zeros(2), a=1.0, b=0.0)
