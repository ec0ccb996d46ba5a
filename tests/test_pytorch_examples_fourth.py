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


# ---- 5. Mixture of Experts: top-k routing, softmax over the chosen, index_add_, aux loss ----
def moe(tt, state=None, steps=4):
    nn, F = tt.nn, tt.nn.functional

    class MoE(nn.Module):
        def __init__(self, dim, n_experts=4, k=2, hidden=16):
            super().__init__()
            self.k, self.n_experts = k, n_experts
            self.gate = nn.Linear(dim, n_experts, bias=False)
            self.experts = nn.ModuleList(
                nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
                for _ in range(n_experts))

        def forward(self, x):
            shape = x.shape
            flat = x.reshape(-1, shape[-1])
            logits = self.gate(flat)
            probs = F.softmax(logits, dim=-1)
            top_logits, top_idx = logits.topk(self.k, dim=-1)
            top_w = F.softmax(top_logits, dim=-1)
            # the dense gate matrix, kept for the report: zeros but the chosen experts
            gates = tt.zeros_like(logits).scatter(1, top_idx, top_w)
            out = tt.zeros_like(flat)
            for e, expert in enumerate(self.experts):
                token, slot = tt.where(top_idx == e)
                if token.numel() == 0:
                    continue
                y = expert(flat[token]) * top_w[token, slot].unsqueeze(-1)
                out.index_add_(0, token, y)
            routed = F.one_hot(top_idx, self.n_experts).sum(dim=1).to(flat.dtype)
            frac = routed.mean(dim=0) / self.k
            aux = self.n_experts * (frac * probs.mean(dim=0)).sum()
            return out.reshape(shape), aux, gates

    class Model(nn.Module):
        def __init__(self, vocab=12, dim=8):
            super().__init__()
            self.emb = nn.Embedding(vocab, dim)
            self.norm = nn.LayerNorm(dim)
            self.moe = MoE(dim)
            self.head = nn.Linear(dim, vocab)

        def forward(self, ids):
            h = self.emb(ids)
            y, aux, gates = self.moe(self.norm(h))
            return self.head(h + y), aux, gates

    rng = np.random.default_rng(5)
    ids = rng.integers(0, 12, (6, 7))
    targets = (ids * 5 + 3) % 12
    model = Model().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=1e-2)
    losses, auxes, loads = [], [], []
    for _ in range(steps):
        logits, aux, gates = model(tt.from_numpy(ids))
        ce = F.cross_entropy(logits.reshape(-1, 12), tt.from_numpy(targets).reshape(-1))
        loss = ce + 0.01 * aux
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(ce.item())
        auxes.append(aux.item())
        loads.append(_np((gates > 0).sum(0)))
    with tt.no_grad():
        gates = model(tt.from_numpy(ids))[2]
    return {"losses": losses, "aux": auxes, "loads": np.array(loads).reshape(-1),
            "gates": _np(gates), "params": _params(model)}


def test_mixture_of_experts_trains_the_same():
    _parity(moe)


def test_mixture_of_experts_runs_in_minidl():
    out = moe(minidl, steps=2)
    assert np.allclose(out["gates"].sum(-1), 1.0) and ((out["gates"] > 0).sum(-1) == 2).all()
    assert out["loads"].reshape(2, 4).sum(1).tolist() == [84, 84]


# ---- 6. LoRA: a frozen base Linear, low-rank A/B, only LoRA in the optimizer, merge ---------
def lora(tt, state=None, steps=4):
    nn, F = tt.nn, tt.nn.functional

    class LoRALinear(nn.Module):
        def __init__(self, base, r=2, alpha=4.0):
            super().__init__()
            self.base = base
            self.base.requires_grad_(False)
            self.lora_A = nn.Parameter(tt.zeros(r, base.in_features, dtype=base.weight.dtype))
            self.lora_B = nn.Parameter(tt.zeros(base.out_features, r, dtype=base.weight.dtype))
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            self.scaling = alpha / r
            self.merged = False

        def forward(self, x):
            out = self.base(x)
            if not self.merged:
                out = out + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scaling
            return out

        def merge(self):
            with tt.no_grad():
                self.base.weight += (self.lora_B @ self.lora_A) * self.scaling
            self.merged = True

    def add_lora(model, r=2):
        for name, child in model.named_children():
            if isinstance(child, nn.Linear):
                setattr(model, name, LoRALinear(child, r))
            else:
                add_lora(child, r)

    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                          nn.Linear(16, 3)).double()
    add_lora(model)
    _load(model, tt, state)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    lora_params = [p for n, p in model.named_parameters() if "lora_" in n]
    opt = tt.optim.AdamW(lora_params, lr=2e-2, weight_decay=0.0)
    rng = np.random.default_rng(6)
    x = tt.from_numpy(rng.standard_normal((20, 6)))
    y = tt.from_numpy(rng.integers(0, 3, 20))
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    frozen_grads = repr([p.grad is None for n, p in model.named_parameters() if "base" in n])
    with tt.no_grad():
        before = model(x)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            m.merge()
    with tt.no_grad():
        after = model(x)
    merged = nn.Sequential(*[m.base if isinstance(m, LoRALinear) else m for m in model])
    with tt.no_grad():
        plain = merged(x)
    return {"losses": losses, "before": _np(before), "after": _np(after), "plain": _np(plain),
            "trainable": repr(trainable), "frozen_grads": frozen_grads, "params": _params(model)}


def test_lora_fine_tuning_trains_the_same():
    _parity(lora)


def test_lora_fine_tuning_runs_in_minidl():
    out = lora(minidl, steps=3)
    assert out["trainable"].count("lora_") == 6 and "base" not in out["trainable"]
    np.testing.assert_allclose(out["after"], out["before"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out["plain"], out["before"], rtol=1e-10, atol=1e-12)
    assert out["frozen_grads"] == repr([True] * 6)


# ---- 7. EMA with AveragedModel, SWA with SWALR and update_bn --------------------------------
def ema_swa(tt, state=None, steps=6):
    nn, F = tt.nn, tt.nn.functional
    swa_utils = tt.optim.swa_utils
    model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(),
                          nn.Linear(16, 2)).double()
    if state is not None:
        _load(model, tt, {k: v for k, v in state.items() if not k.startswith(("ema.", "swa."))})
    ema = swa_utils.AveragedModel(model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.8),
                                  use_buffers=True)
    swa = swa_utils.AveragedModel(model)
    opt = tt.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    swa_start = steps // 2
    sched = tt.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    swa_sched = swa_utils.SWALR(opt, swa_lr=0.05, anneal_epochs=2, anneal_strategy="cos")
    rng = np.random.default_rng(7)
    xs = rng.standard_normal((steps + 2, 8, 4))
    ys = (xs[..., 0] * xs[..., 1] > 0).astype(np.int64)
    losses, lrs = [], []
    for i in range(steps):
        model.train()
        loss = F.cross_entropy(model(tt.from_numpy(xs[i])), tt.from_numpy(ys[i]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update_parameters(model)
        if i >= swa_start:
            swa.update_parameters(model)
            swa_sched.step()
        else:
            sched.step()
        losses.append(loss.item())
        lrs.append(opt.param_groups[0]["lr"])
    loader = [tt.from_numpy(x) for x in xs]
    swa_utils.update_bn(loader, swa)
    swa.eval()
    ema.eval()
    with tt.no_grad():
        test = tt.from_numpy(xs[-1])
        swa_out, ema_out = swa(test), ema(test)
    out = {"losses": losses, "lrs": lrs, "swa_out": _np(swa_out), "ema_out": _np(ema_out),
           "n_averaged": repr((int(ema.n_averaged), int(swa.n_averaged)))}
    out["params"] = {**_params(model), **_params(ema, "ema."), **_params(swa, "swa.")}
    return out


def test_ema_and_swa_train_the_same():
    _parity(ema_swa)


def test_ema_and_swa_run_in_minidl():
    out = ema_swa(minidl)
    assert out["n_averaged"] == "(6, 3)"
    assert np.isclose(out["lrs"][-1], 0.05)


# ---- 8. mixup and cutmix in a classifier loop, Beta draws from numpy ------------------------
def mixup_cutmix(tt, state=None, steps=4):
    nn, F = tt.nn, tt.nn.functional

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                                          nn.ReLU(), nn.MaxPool2d(2),
                                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                          nn.AdaptiveAvgPool2d(1))
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(tt.flatten(self.features(x), 1))

    def rand_bbox(H, W, lam, rng):
        cut = math.sqrt(1.0 - lam)
        ch, cw = int(H * cut), int(W * cut)
        cy, cx = rng.integers(H), rng.integers(W)
        y1, y2 = np.clip(cy - ch // 2, 0, H), np.clip(cy + ch // 2, 0, H)
        x1, x2 = np.clip(cx - cw // 2, 0, W), np.clip(cx + cw // 2, 0, W)
        return int(y1), int(y2), int(x1), int(x2)

    rng = np.random.default_rng(8)
    images = rng.standard_normal((32, 3, 8, 8))
    labels = rng.integers(0, 4, 32)
    model = Net().double()
    _load(model, tt, state)
    opt = tt.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                       weight_decay=5e-4)
    criterion = nn.CrossEntropyLoss()
    losses, lams = [], []
    for i in range(steps):
        x = tt.from_numpy(images[8 * (i % 4):8 * (i % 4) + 8])
        y = tt.from_numpy(labels[8 * (i % 4):8 * (i % 4) + 8])
        perm = tt.from_numpy(rng.permutation(8))
        lam = float(rng.beta(1.0, 1.0))
        if i % 2 == 0:  # mixup, the two-loss form
            mixed = lam * x + (1 - lam) * x[perm]
            out = model(mixed)
            loss = lam * criterion(out, y) + (1 - lam) * criterion(out, y[perm])
        else:  # cutmix, with soft targets
            y1, y2, x1, x2 = rand_bbox(8, 8, lam, rng)
            mixed = x.clone()
            mixed[:, :, y1:y2, x1:x2] = x[perm][:, :, y1:y2, x1:x2]
            lam = 1 - (y2 - y1) * (x2 - x1) / 64
            target = lam * F.one_hot(y, 4).double() + (1 - lam) * F.one_hot(y[perm], 4).double()
            loss = criterion(model(mixed), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        lams.append(lam)
    return {"losses": losses, "lams": lams, "params": _params(model)}


def test_mixup_and_cutmix_train_the_same():
    _parity(mixup_cutmix)


def test_mixup_and_cutmix_run_in_minidl():
    out = mixup_cutmix(minidl, steps=4)
    assert all(0 <= lam <= 1 for lam in out["lams"]) and np.isfinite(out["losses"]).all()


# ---- 9. VQ-VAE: cdist/argmin codebook lookup, straight-through, EMA codebook ----------------
def vq_vae(tt, state=None, steps=4):
    nn, F = tt.nn, tt.nn.functional

    class VectorQuantizerEMA(nn.Module):
        def __init__(self, num_embeddings, dim, beta=0.25, decay=0.9, eps=1e-5):
            super().__init__()
            self.K, self.beta, self.decay, self.eps = num_embeddings, beta, decay, eps
            self.embedding = nn.Embedding(num_embeddings, dim)
            self.embedding.weight.requires_grad_(False)
            self.register_buffer("cluster_size", tt.zeros(num_embeddings))
            self.register_buffer("ema_w", self.embedding.weight.clone())

        def forward(self, z_e):
            z = z_e.permute(0, 2, 3, 1)
            flat = z.reshape(-1, z.shape[-1])
            dist = tt.cdist(flat, self.embedding.weight)
            idx = dist.argmin(dim=1)
            z_q = self.embedding(idx).view(z.shape)
            if self.training:
                with tt.no_grad():
                    onehot = F.one_hot(idx, self.K).to(flat.dtype)
                    self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
                    self.ema_w.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
                    n = self.cluster_size.sum()
                    size = (self.cluster_size + self.eps) / (n + self.K * self.eps) * n
                    self.embedding.weight.copy_(self.ema_w / size.unsqueeze(1))
            commitment = self.beta * F.mse_loss(z, z_q.detach())
            z_q = z + (z_q - z).detach()  # straight-through estimator
            probs = tt.bincount(idx, minlength=self.K).to(flat.dtype) / idx.numel()
            perplexity = tt.exp(-(probs * tt.log(probs + 1e-10)).sum())
            return z_q.permute(0, 3, 1, 2), commitment, perplexity, idx

    class VQVAE(nn.Module):
        def __init__(self, dim=4, K=6):
            super().__init__()
            self.encoder = nn.Sequential(nn.Conv2d(1, 8, 4, 2, 1), nn.ReLU(),
                                         nn.Conv2d(8, dim, 3, 1, 1))
            self.vq = VectorQuantizerEMA(K, dim)
            self.decoder = nn.Sequential(nn.Conv2d(dim, 8, 3, 1, 1), nn.ReLU(),
                                         nn.ConvTranspose2d(8, 1, 4, 2, 1))

        def forward(self, x):
            z_q, commitment, perplexity, idx = self.vq(self.encoder(x))
            return self.decoder(z_q), commitment, perplexity, idx

    rng = np.random.default_rng(9)
    data = rng.random((16, 1, 8, 8))
    model = VQVAE().double()
    _load(model, tt, state)
    opt = tt.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses, perps, codes = [], [], []
    model.train()
    for i in range(steps):
        x = tt.from_numpy(data[8 * (i % 2):8 * (i % 2) + 8])
        recon, commitment, perplexity, idx = model(x)
        recon_loss = F.mse_loss(recon, x)
        loss = recon_loss + commitment
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append([recon_loss.item(), commitment.item()])
        perps.append(perplexity.item())
        codes.append(_np(idx))
    return {"losses": np.array(losses).reshape(-1), "perplexity": perps,
            "codes": repr(np.concatenate(codes).tolist()) if codes else "", "params": _params(model)}


def test_vq_vae_trains_the_same():
    _parity(vq_vae)


def test_vq_vae_runs_in_minidl():
    out = vq_vae(minidl, steps=2)
    assert all(1 <= p <= 6 for p in out["perplexity"])
