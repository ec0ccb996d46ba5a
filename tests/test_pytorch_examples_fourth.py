"""A fourth set of programs, of the kind people train today, each written once as torch code
and run unchanged by torch 2.13 and by minidl (``tt`` is either module) from the same initial
weights, in float64: a DDPM diffusion model with a tiny attention UNet, a ViT with AdamW
parameter groups and a warmup-cosine LambdaLR, a BERT-style masked language model, a
CLIP-style contrastive model, a top-k Mixture-of-Experts layer, LoRA fine-tuning, weight EMA
and SWA with ``swa_utils``, mixup and cutmix, a VQ-VAE with EMA codebook updates, a
CycleGAN step, a graph attention network, RealNVP, a U-Net with Dice + BCE, gradient
checkpointing, and a temporal convolution network with weight norm.

minidl's random generator is its own (not torch's), so every draw the two runs share (data,
noise, masks, mixing coefficients) comes from numpy or from a seeded ``random.Random``.
``Tensor.data`` is minidl's ndarray by design, so in-place updates of parameters and buffers
are written ``with torch.no_grad(): p.copy_(...)`` rather than ``p.data.copy_(...)``.
What the programs found missing in minidl is fixed, each fix with its own test at the end."""
import itertools
import math
import random

import numpy as np
import pytest

import minidl

try:
    import torch
except ImportError:
    torch = None


def _parity(script, atol=1e-10, rtol=1e-8, loss_rtol=1e-9, loss_atol=1e-12, **kw):
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
        if isinstance(theirs[key], str):  # a repr of facts that must match exactly
            assert ours[key] == theirs[key], key
            continue
        np.testing.assert_allclose(ours[key], theirs[key], rtol=loss_rtol, atol=loss_atol,
                                   err_msg=key)
    assert set(ours["params"]) == set(theirs["params"])
    for k in theirs["params"]:
        assert ours["params"][k].dtype == theirs["params"][k].dtype, k
        np.testing.assert_allclose(ours["params"][k], theirs["params"][k], rtol=rtol, atol=atol,
                                   err_msg=k)
    return ours


def _load(model, tt, state, prefix=""):
    if state is not None:
        model.load_state_dict({k[len(prefix):]: tt.from_numpy(v.copy()) for k, v in state.items()
                               if k.startswith(prefix)})


def _params(model, prefix=""):
    return {prefix + k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def _np(t):
    return t.detach().cpu().numpy().copy()


# ---- 1. DDPM: a tiny UNet (GroupNorm, SiLU, attention, skips), the epsilon loss, sampling ----
def ddpm(tt, state=None, steps=3, T=12):
    nn, F = tt.nn, tt.nn.functional

    def timestep_embedding(t, dim):
        half = dim // 2
        freqs = tt.exp(-math.log(10000.0) * tt.arange(half, dtype=tt.float64) / half)
        args = t[:, None].to(tt.float64) * freqs[None]
        return tt.cat([tt.sin(args), tt.cos(args)], dim=-1)

    class ResBlock(nn.Module):
        def __init__(self, cin, cout, tdim):
            super().__init__()
            self.norm1 = nn.GroupNorm(2, cin)
            self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
            self.temb = nn.Linear(tdim, cout)
            self.norm2 = nn.GroupNorm(2, cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
            self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

        def forward(self, x, temb):
            h = self.conv1(F.silu(self.norm1(x)))
            h = h + self.temb(F.silu(temb))[:, :, None, None]
            h = self.conv2(F.silu(self.norm2(h)))
            return h + self.skip(x)

    class SelfAttention(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.norm = nn.GroupNorm(2, c)
            self.qkv = nn.Conv2d(c, 3 * c, 1)
            self.proj = nn.Conv2d(c, c, 1)

        def forward(self, x):
            B, C, H, W = x.shape
            q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).unbind(1)
            attn = tt.softmax(q.transpose(1, 2) @ k / math.sqrt(C), dim=-1)
            h = (v @ attn.transpose(1, 2)).reshape(B, C, H, W)
            return x + self.proj(h)

    class UNet(nn.Module):
        def __init__(self, c=8, tdim=16):
            super().__init__()
            self.tdim = tdim
            self.time_mlp = nn.Sequential(nn.Linear(tdim, 2 * tdim), nn.SiLU(),
                                          nn.Linear(2 * tdim, tdim))
            self.inc = nn.Conv2d(1, c, 3, padding=1)
            self.down1 = ResBlock(c, c, tdim)
            self.downsample = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
            self.mid = ResBlock(2 * c, 2 * c, tdim)
            self.attn = SelfAttention(2 * c)
            self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
            self.up1 = ResBlock(3 * c, c, tdim)
            self.out = nn.Sequential(nn.GroupNorm(2, c), nn.SiLU(), nn.Conv2d(c, 1, 3, padding=1))

        def forward(self, x, t):
            temb = self.time_mlp(timestep_embedding(t, self.tdim))
            h1 = self.down1(self.inc(x), temb)
            h = self.attn(self.mid(self.downsample(h1), temb))
            h = self.up1(tt.cat([self.upsample(h), h1], dim=1), temb)
            return self.out(h)

    class Diffusion(nn.Module):
        def __init__(self, model, T):
            super().__init__()
            self.model, self.T = model, T
            betas = tt.linspace(1e-4, 0.2, T, dtype=tt.float64)
            alphas = 1.0 - betas
            alphas_cumprod = tt.cumprod(alphas, dim=0)
            prev = F.pad(alphas_cumprod[:-1], (1, 0), value=1.0)
            self.register_buffer("betas", betas)
            self.register_buffer("sqrt_ab", alphas_cumprod.sqrt())
            self.register_buffer("sqrt_1m_ab", (1.0 - alphas_cumprod).sqrt())
            self.register_buffer("sqrt_recip_a", (1.0 / alphas).sqrt())
            self.register_buffer("post_var", betas * (1.0 - prev) / (1.0 - alphas_cumprod))

        def q_sample(self, x0, t, noise):
            return (self.sqrt_ab[t].view(-1, 1, 1, 1) * x0
                    + self.sqrt_1m_ab[t].view(-1, 1, 1, 1) * noise)

        def loss(self, x0, t, noise):
            return F.mse_loss(self.model(self.q_sample(x0, t, noise), t), noise)

        @tt.no_grad()
        def sample(self, z, noises):
            x = z
            for i in reversed(range(self.T)):
                t = tt.full((x.shape[0],), i, dtype=tt.long)
                eps = self.model(x, t)
                coef = self.betas[i] / self.sqrt_1m_ab[i]
                mean = self.sqrt_recip_a[i] * (x - coef * eps)
                x = mean + self.post_var[i].sqrt() * noises[i] if i > 0 else mean
            return x.clamp(-1.0, 1.0)

    rng = np.random.default_rng(1)
    data = np.tanh(rng.standard_normal((16, 1, 8, 8)).cumsum(-1) / 3)
    diffusion = Diffusion(UNet(), T).double()
    _load(diffusion, tt, state)
    opt = tt.optim.Adam(diffusion.model.parameters(), lr=2e-3)
    losses = []
    for i in range(steps):
        x0 = tt.from_numpy(data[8 * (i % 2):8 * (i % 2) + 8])
        t = tt.from_numpy(rng.integers(0, T, 8))
        noise = tt.from_numpy(rng.standard_normal(x0.shape))
        loss = diffusion.loss(x0, t, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        tt.nn.utils.clip_grad_norm_(diffusion.model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    diffusion.eval()
    z = tt.from_numpy(rng.standard_normal((2, 1, 8, 8)))
    noises = tt.from_numpy(rng.standard_normal((T, 2, 1, 8, 8)))  # the same noise each run
    samples = diffusion.sample(z, noises)
    return {"losses": losses, "samples": _np(samples).reshape(-1), "params": _params(diffusion)}


def test_ddpm_trains_and_samples_the_same():
    _parity(ddpm)


def test_ddpm_runs_in_minidl():
    out = ddpm(minidl, steps=2)
    assert np.isfinite(out["losses"]).all() and np.abs(out["samples"]).max() <= 1.0


# ---- 2. ViT: Conv2d patches, cls token, norm_first encoder, AdamW groups, warmup-cosine -----
def vit(tt, state=None, steps=4):
    nn, F = tt.nn, tt.nn.functional

    class ViT(nn.Module):
        def __init__(self, img=8, patch=4, dim=16, depth=2, heads=2, num_classes=5):
            super().__init__()
            self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
            n = (img // patch) ** 2
            self.cls_token = nn.Parameter(tt.zeros(1, 1, dim))
            self.pos_embed = nn.Parameter(tt.zeros(1, n + 1, dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.trunc_normal_(self.cls_token, std=0.02)
            layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0,
                                               activation="gelu", batch_first=True,
                                               norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, num_classes)

        def forward(self, x):
            x = self.patch_embed(x).flatten(2).transpose(1, 2)
            cls = self.cls_token.expand(x.shape[0], -1, -1)
            x = tt.cat([cls, x], dim=1) + self.pos_embed
            x = self.encoder(x)
            return self.head(self.norm(x[:, 0]))

    rng = np.random.default_rng(2)
    images = rng.standard_normal((24, 3, 8, 8))
    labels = rng.integers(0, 5, 24)
    model = ViT().double()
    _load(model, tt, state)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "norm" in name or name in ("cls_token", "pos_embed"):
            no_decay.append(p)
        else:
            decay.append(p)
    opt = tt.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                          {"params": no_decay, "weight_decay": 0.0}], lr=3e-3,
                         betas=(0.9, 0.95))
    warmup, total = 2, max(steps, 1)

    def lr_lambda(step):
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    sched = tt.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    losses, lrs = [], []
    model.train()
    for i in range(steps):
        idx = slice(8 * (i % 3), 8 * (i % 3) + 8)
        x, y = tt.from_numpy(images[idx]), tt.from_numpy(labels[idx])
        loss = criterion(model(x), y)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        lrs.append([g["lr"] for g in opt.param_groups])
    model.eval()
    with tt.no_grad():
        logits = model(tt.from_numpy(images))
        acc = (logits.argmax(-1) == tt.from_numpy(labels)).double().mean().item()
    return {"losses": losses, "lrs": np.array(lrs).reshape(-1), "logits": _np(logits),
            "acc": acc, "groups": repr([len(g["params"]) for g in opt.param_groups]),
            "params": _params(model)}


def test_vit_trains_the_same():
    _parity(vit)


def test_vit_runs_in_minidl():
    out = vit(minidl, steps=3)
    assert out["groups"] == "[10, 22]" and np.isfinite(out["losses"]).all()


# ---- 3. BERT-style masked LM: padding masks, tied embeddings, ignore_index=-100 ------------
def masked_lm(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    PAD, MASK, V, L = 0, 1, 20, 10

    class MaskedLM(nn.Module):
        def __init__(self, dim=16):
            super().__init__()
            self.tok = nn.Embedding(V, dim, padding_idx=PAD)
            self.pos = nn.Embedding(L, dim)
            self.ln = nn.LayerNorm(dim)
            layer = nn.TransformerEncoderLayer(dim, 2, 32, dropout=0.0, activation="gelu",
                                               batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2)
            self.transform = nn.Linear(dim, dim)
            self.head_ln = nn.LayerNorm(dim)
            self.decoder = nn.Linear(dim, V)
            self.decoder.weight = self.tok.weight  # tied input and output embeddings

        def forward(self, ids, pad_mask):
            pos = tt.arange(ids.shape[1]).unsqueeze(0)
            h = self.ln(self.tok(ids) + self.pos(pos))
            h = self.encoder(h, src_key_padding_mask=pad_mask)
            return self.decoder(self.head_ln(F.gelu(self.transform(h))))

    rng = np.random.default_rng(3)

    def batch(n=6):
        ids = rng.integers(2, V, (n, L))
        lengths = rng.integers(5, L + 1, n)
        pad = np.arange(L)[None] >= lengths[:, None]
        ids[pad] = PAD
        labels = np.full((n, L), -100)
        chosen = (rng.random((n, L)) < 0.3) & ~pad
        chosen[:, 0] |= True  # at least one prediction per row
        labels[chosen] = ids[chosen]
        u = rng.random((n, L))
        inputs = ids.copy()
        inputs[chosen & (u < 0.8)] = MASK
        swap = chosen & (u >= 0.8) & (u < 0.9)
        inputs[swap] = rng.integers(2, V, swap.sum())
        return tt.from_numpy(inputs), tt.from_numpy(pad), tt.from_numpy(labels)

    model = MaskedLM().double()
    _load(model, tt, state)
    opt = tt.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    losses = []
    model.train()
    for _ in range(steps):
        inputs, pad, labels = batch()
        logits = model(inputs, pad)
        loss = F.cross_entropy(logits.view(-1, V), labels.view(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    inputs, pad, labels = batch()
    with tt.no_grad():
        logits = model(inputs, pad)
    keep = ~pad  # padded positions are not compared: torch's fast path leaves them zero
    return {"losses": losses, "logits": _np(logits[keep]),
            "tied": repr(model.decoder.weight is model.tok.weight),
            "n_params": repr(sum(p.numel() for p in model.parameters())),
            "params": _params(model)}


def test_masked_lm_trains_the_same():
    _parity(masked_lm)


def test_masked_lm_runs_in_minidl():
    out = masked_lm(minidl, steps=2)
    assert out["tied"] == "True" and np.isfinite(out["losses"]).all()


# ---- 4. CLIP: two encoders, normalized embeddings, clamped logit_scale, symmetric CE -------
def clip(tt, state=None, steps=4):
    nn, F = tt.nn, tt.nn.functional

    class ImageEncoder(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.GELU(),
                                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.GELU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.proj = nn.Linear(16, dim, bias=False)

        def forward(self, x):
            return self.proj(self.conv(x))

    class TextEncoder(nn.Module):
        def __init__(self, vocab, dim):
            super().__init__()
            self.emb = nn.Embedding(vocab, 16, padding_idx=0)
            self.rnn = nn.GRU(16, 16, batch_first=True)
            self.proj = nn.Linear(16, dim, bias=False)

        def forward(self, ids, lengths):
            out, _ = self.rnn(self.emb(ids))
            last = out[tt.arange(ids.shape[0]), lengths - 1]  # the last real token
            return self.proj(last)

    class CLIP(nn.Module):
        def __init__(self, vocab=30, dim=12):
            super().__init__()
            self.visual = ImageEncoder(dim)
            self.text = TextEncoder(vocab, dim)
            self.logit_scale = nn.Parameter(tt.ones([]) * math.log(1 / 0.07))

        def forward(self, images, ids, lengths):
            img = F.normalize(self.visual(images), dim=-1)
            txt = F.normalize(self.text(ids, lengths), dim=-1)
            logits_per_image = self.logit_scale.exp() * img @ txt.t()
            return logits_per_image, logits_per_image.t()

    rng = np.random.default_rng(4)
    images = rng.standard_normal((8, 3, 8, 8))
    lengths = rng.integers(2, 7, 8)
    ids = rng.integers(1, 30, (8, 6)) * (np.arange(6)[None] < lengths[:, None])
    model = CLIP().double()
    _load(model, tt, state)
    opt = tt.optim.AdamW(model.parameters(), lr=0.5, weight_decay=0.1)  # big: the clamp bites
    losses, scales = [], []
    for _ in range(steps):
        li, lt = model(tt.from_numpy(images), tt.from_numpy(ids), tt.from_numpy(lengths))
        labels = tt.arange(li.shape[0])
        loss = (F.cross_entropy(li, labels) + F.cross_entropy(lt, labels)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        with tt.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        scales.append(model.logit_scale.item())
    with tt.no_grad():
        li, _ = model(tt.from_numpy(images), tt.from_numpy(ids), tt.from_numpy(lengths))
        top1 = (li.argmax(dim=1) == tt.arange(8)).sum().item()
    return {"losses": losses, "scales": scales, "top1": top1, "params": _params(model)}


def test_clip_trains_the_same():
    _parity(clip)


def test_clip_runs_in_minidl():
    out = clip(minidl, steps=3)
    assert max(out["scales"]) <= math.log(100) + 1e-12 and np.isfinite(out["losses"]).all()
