"""Second-order training, minidl against PyTorch: one WGAN-GP critic step (the critic's gradient
with respect to its input taken with create_graph=True, its norm's distance from 1 as a
penalty, backpropagated with the Wasserstein loss to the critic's weights, Adam) of a small
convolutional critic on 28x28 images, from the same weights on the same batch."""
from __future__ import annotations

import numpy as np
import pytest

import minidl

from _common import torch_or_none

FRAMEWORKS = ["minidl", "torch"]
BATCH = 64


def _critic(nn):
    return nn.Sequential(
        nn.Conv2d(1, 32, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 1))


def _batch():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((BATCH, 1, 28, 28)).astype(np.float32)
    fake = rng.standard_normal((BATCH, 1, 28, 28)).astype(np.float32)
    alpha = rng.random((BATCH, 1, 1, 1)).astype(np.float32)
    return real, fake, alpha


def _step(fw_name):
    minidl.manual_seed(0)
    ours = _critic(minidl.nn)
    if fw_name == "torch":
        fw = torch_or_none()
        model = _critic(fw.nn)
        model.load_state_dict({k: fw.from_numpy(np.array(v.numpy()))
                               for k, v in ours.state_dict().items()})
    else:
        fw, model = minidl, ours
    real, fake, alpha = (fw.from_numpy(a) for a in _batch())
    opt = fw.optim.Adam(model.parameters(), lr=1e-4, betas=(0.0, 0.9))

    def step():
        opt.zero_grad()
        mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        (grad_in,) = fw.autograd.grad(model(mixed).sum(), mixed, create_graph=True)
        penalty = ((grad_in.reshape(BATCH, -1).norm(dim=1) - 1) ** 2).mean()
        loss = model(fake).mean() - model(real).mean() + 10 * penalty
        loss.backward()
        opt.step()
        return loss
    return step


def test_gradient_penalty_steps_agree(request):
    """Guards the comparison: from the same weights both frameworks take the same steps."""
    request.getfixturevalue("torch")
    losses = [[s().item() for _ in range(3)] for s in (_step(fw) for fw in FRAMEWORKS)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-3)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_wgan_gp_critic_step(benchmark, request, fw):
    benchmark.group = f"wgan-gp-critic-step-b{BATCH}-28x28"
    if fw == "torch":
        request.getfixturevalue("torch")
    benchmark(_step(fw))
