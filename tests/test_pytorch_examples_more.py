"""More of PyTorch's example programs and tutorials, in their usual shape, run unchanged by torch
and by minidl (``tt`` is either module) from the same initial weights, in float64 with dropout
off: DCGAN, a VAE, the word-level LSTM language model, seq2seq with attention, transfer
learning with a frozen backbone, sub-pixel super-resolution, REINFORCE, a Siamese/triplet
embedding with the autograd extension points, and a GCN on a sparse adjacency. Random draws
(noise, sampled actions) come from numpy so that both frameworks see the same numbers.

Each script is plain PyTorch code; nothing in it knows which framework runs it (except where a
comment says why)."""
import copy
import math

import numpy as np
import pytest

import minidl

try:
    import torch
except ImportError:
    torch = None


def _parity(script, **kw):
    """Run ``script`` in torch (its initial weights), then both from those weights; compare."""
    if torch is None:
        pytest.skip("torch not installed: these tests run one script in torch and in minidl")
    torch.manual_seed(0)
    start = script(torch, **{**kw, "steps": 0})["params"]
    theirs = script(torch, state=start, **kw)
    ours = script(minidl, state=start, **kw)
    for key in theirs:
        if key == "params":
            continue
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-9, atol=1e-12, err_msg=key)
    assert set(ours["params"]) == set(theirs["params"])
    for k in theirs["params"]:
        np.testing.assert_allclose(ours["params"][k], theirs["params"][k], rtol=1e-8, atol=1e-10,
                                   err_msg=k)
    return ours


def _load(model, tt, state, prefix=""):
    if state is not None:
        model.load_state_dict({k[len(prefix):]: tt.from_numpy(v.copy()) for k, v in state.items()
                               if k.startswith(prefix)})


def _params(model, prefix=""):
    return {prefix + k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


# ---- 1. DCGAN: transposed convs, batch norm, two Adams, detach, fill_ -----------------------
def dcgan(tt, state=None, steps=3):
    nn, optim = tt.nn, tt.optim
    nz, ngf, ndf, nc = 4, 4, 4, 1

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.main = nn.Sequential(
                nn.ConvTranspose2d(nz, ngf * 2, 4, 1, 0, bias=False),
                nn.BatchNorm2d(ngf * 2),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
                nn.Tanh(),
            )

        def forward(self, input):
            return self.main(input)

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.main = nn.Sequential(
                nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * 2),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 2, 1, 4, 1, 0, bias=False),
                nn.Sigmoid(),
            )

        def forward(self, input):
            return self.main(input).view(-1, 1).squeeze(1)

    def weights_init(m):
        classname = m.__class__.__name__
        if classname.find('Conv') != -1:
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif classname.find('BatchNorm') != -1:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)

    device = tt.device("cpu")
    netG = Generator().to(device).double()
    netG.apply(weights_init)
    netD = Discriminator().to(device).double()
    netD.apply(weights_init)
    _load(netG, tt, state, "G.")
    _load(netD, tt, state, "D.")
    criterion = nn.BCELoss()
    rng = np.random.default_rng(4)
    fixed_noise = tt.from_numpy(rng.standard_normal((4, nz, 1, 1)))
    real_label, fake_label = 1., 0.
    optimizerD = optim.Adam(netD.parameters(), lr=0.0002, betas=(0.5, 0.999))
    optimizerG = optim.Adam(netG.parameters(), lr=0.0002, betas=(0.5, 0.999))
    losses = []
    for i in range(steps):
        real_cpu = tt.from_numpy(np.tanh(rng.standard_normal((4, nc, 16, 16)))).to(device)
        b_size = real_cpu.size(0)
        # (1) update D: maximize log(D(x)) + log(1 - D(G(z)))
        netD.zero_grad()
        label = tt.full((b_size,), real_label, dtype=real_cpu.dtype, device=device)
        output = netD(real_cpu)
        errD_real = criterion(output, label)
        errD_real.backward()
        D_x = output.mean().item()
        noise = tt.from_numpy(rng.standard_normal((b_size, nz, 1, 1))).to(device)
        fake = netG(noise)
        label.fill_(fake_label)
        output = netD(fake.detach())
        errD_fake = criterion(output, label)
        errD_fake.backward()
        D_G_z1 = output.mean().item()
        errD = errD_real + errD_fake
        optimizerD.step()
        # (2) update G: maximize log(D(G(z)))
        netG.zero_grad(set_to_none=True)
        label.fill_(real_label)
        output = netD(fake)
        errG = criterion(output, label)
        errG.backward()
        D_G_z2 = output.mean().item()
        optimizerG.step()
        losses += [errD.item(), errG.item(), D_x, D_G_z1, D_G_z2]
    with tt.no_grad():
        fake = netG(fixed_noise).detach().cpu()
    return {"losses": losses, "fake": fake.numpy(),
            "params": {**_params(netG, "G."), **_params(netD, "D.")}}


def test_dcgan_trains_the_same():
    _parity(dcgan)


def test_dcgan_runs_in_minidl():
    out = dcgan(minidl, steps=2)
    assert out["fake"].shape == (4, 1, 16, 16) and np.all(np.abs(out["fake"]) <= 1)
    assert np.isfinite(out["losses"]).all()
