"""A fourth set of programs, of the kind people train today, each written once as torch code
and run unchanged by torch 2.13 and by minidl (``tt`` is either module) from the same initial
weights, in float64: a DDPM diffusion model with a tiny attention UNet, a ViT with AdamW
parameter groups and a warmup-cosine LambdaLR, a BERT-style masked language model, a
CLIP-style contrastive model, a top-k Mixture-of-Experts layer, LoRA fine-tuning, weight EMA
and SWA with ``swa_utils``, mixup and cutmix, a VQ-VAE with EMA codebook updates, a
CycleGAN step, a graph attention network, RealNVP, a U-Net with Dice + BCE, gradient
checkpointing, and a temporal convolution network with weight norm; then a LLaMA-style LM
(rotary embeddings, RMSNorm, SwiGLU, a KV cache), a DiT, SimCLR, DPO, an MAE and WGAN-GP.

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


from _program_parity import _load, _np, _params, _parity  # noqa: E402


# ---- 1. DDPM: a tiny UNet (GroupNorm, SiLU, attention, skips), the epsilon loss, sampling ----
def ddpm(tt, state=None, steps=3, T=12, sdpa=False):
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
            if sdpa:  # two heads, (B, heads, tokens, C / heads)
                q, k, v = (a.reshape(B, 2, C // 2, H * W).transpose(-1, -2) for a in (q, k, v))
                h = F.scaled_dot_product_attention(q, k, v)
                return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))
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

        @staticmethod
        def extract(a, t, x_shape):
            out = a.gather(-1, t)
            return out.reshape(t.shape[0], *((1,) * (len(x_shape) - 1)))

        def q_sample(self, x0, t, noise):
            return (self.extract(self.sqrt_ab, t, x0.shape) * x0
                    + self.extract(self.sqrt_1m_ab, t, x0.shape) * noise)

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


def test_ddpm_with_scaled_dot_product_attention_trains_the_same():
    _parity(ddpm, sdpa=True, steps=2, T=6)


def test_ddpm_runs_in_minidl():
    out = ddpm(minidl, steps=2)
    assert np.isfinite(out["losses"]).all() and np.abs(out["samples"]).max() <= 1.0


# ---- 2. ViT: Conv2d patches, cls token, norm_first encoder, AdamW groups, warmup-cosine -----
def vit(tt, state=None, steps=4, sequential=False):
    nn = tt.nn

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

    lr_scheduler = tt.optim.lr_scheduler
    if sequential:  # the same warmup and cosine, as two schedulers one after the other
        sched = lr_scheduler.SequentialLR(
            opt, [lr_scheduler.LinearLR(opt, start_factor=0.5, total_iters=warmup - 1),
                  lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total - warmup))],
            milestones=[warmup])
    else:
        sched = lr_scheduler.LambdaLR(opt, lr_lambda)
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


def test_vit_with_sequential_lr_trains_the_same():
    _parity(vit, sequential=True, steps=5)


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
def moe(tt, state=None, steps=4, sorted_dispatch=False):
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
            if sorted_dispatch:  # sort the (token, slot) pairs by expert, split by counts
                expert_of = top_idx.reshape(-1)
                order = tt.argsort(expert_of, stable=True)
                token_of = order // self.k
                counts = tt.bincount(expert_of, minlength=self.n_experts).tolist()
                chunks = tt.split(flat[token_of], counts)
                ys = [expert(chunk) for expert, chunk in zip(self.experts, chunks)]
                y = tt.cat(ys) * top_w.reshape(-1)[order].unsqueeze(-1)
                out = out.scatter_add(0, token_of.unsqueeze(-1).expand(-1, shape[-1]), y)
            for e, expert in enumerate([] if sorted_dispatch else self.experts):
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


def test_mixture_of_experts_with_sorted_dispatch_trains_the_same():
    _parity(moe, sorted_dispatch=True)


def test_mixture_of_experts_runs_in_minidl():
    out = moe(minidl, steps=2)
    assert np.allclose(out["gates"].sum(-1), 1.0) and ((out["gates"] > 0).sum(-1) == 2).all()
    assert out["loads"].reshape(2, 4).sum(1).tolist() == [84, 84]


# ---- 6. LoRA: a frozen base Linear, low-rank A/B, only LoRA in the optimizer, merge ---------
def lora(tt, state=None, steps=4, parametrized=False):
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

    class LoRAParametrization(nn.Module):  # weight -> weight + B @ A * scaling
        def __init__(self, fan_out, fan_in, r=2, alpha=4.0):
            super().__init__()
            self.lora_A = nn.Parameter(tt.zeros(r, fan_in, dtype=tt.float64))
            self.lora_B = nn.Parameter(tt.zeros(fan_out, r, dtype=tt.float64))
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            self.scaling = alpha / r

        def forward(self, W):
            return W + (self.lora_B @ self.lora_A) * self.scaling

    def add_lora(model, r=2):
        for name, child in model.named_children():
            if isinstance(child, nn.Linear) and parametrized:
                child.requires_grad_(False)
                parametrize.register_parametrization(
                    child, "weight", LoRAParametrization(*child.weight.shape, r))
            elif isinstance(child, nn.Linear):
                setattr(model, name, LoRALinear(child, r))
            else:
                add_lora(child, r)

    from importlib import import_module
    parametrize = import_module(tt.__name__ + ".nn.utils.parametrize")

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
    frozen_grads = repr([p.grad is None for n, p in model.named_parameters()
                         if "base" in n or "original" in n or n.endswith("bias")])
    with tt.no_grad():
        before = model(x)
    if parametrized:
        state_keys = repr(sorted(model.state_dict()))
        trained = _params(model)
        for m in model:
            if isinstance(m, nn.Linear):
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
        with tt.no_grad():
            after = model(x)
        return {"losses": losses, "before": _np(before), "after": _np(after),
                "plain": _np(after), "trainable": repr(trainable), "keys": state_keys,
                "frozen_grads": frozen_grads, "params": trained,
                "merged": np.concatenate([v.ravel() for v in _params(model).values()]),
                "is_param": repr([m.weight.__class__.__name__ for m in model
                                  if isinstance(m, nn.Linear)])}
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


def test_lora_as_a_parametrization_trains_the_same():
    _parity(lora, parametrized=True)


def test_lora_fine_tuning_runs_in_minidl():
    out = lora(minidl, steps=3)
    assert out["trainable"].count("lora_") == 6 and "base" not in out["trainable"]
    np.testing.assert_allclose(out["after"], out["before"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out["plain"], out["before"], rtol=1e-10, atol=1e-12)
    assert out["frozen_grads"] == repr([True] * 6)
    out = lora(minidl, steps=3, parametrized=True)
    np.testing.assert_allclose(out["after"], out["before"], rtol=1e-10, atol=1e-12)
    assert out["is_param"] == repr(["Parameter"] * 3) and "original" in out["keys"]


# ---- 7. EMA with AveragedModel, SWA with SWALR and update_bn --------------------------------
def ema_swa(tt, state=None, steps=6, per_tensor=False):
    nn, F = tt.nn, tt.nn.functional
    swa_utils = tt.optim.swa_utils
    model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(),
                          nn.Linear(16, 2)).double()
    if state is not None:
        _load(model, tt, {k: v for k, v in state.items() if not k.startswith(("ema.", "swa."))})
    if per_tensor:  # the one-tensor-at-a-time forms: get_ema_avg_fn, and a lambda
        ema = swa_utils.AveragedModel(model, avg_fn=swa_utils.get_ema_avg_fn(0.8),
                                      use_buffers=True)
    else:
        ema = swa_utils.AveragedModel(model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.8),
                                      use_buffers=True)
    swa = swa_utils.AveragedModel(model, avg_fn=(lambda avg, p, n: avg + (p - avg) / (n + 1))
                                  if per_tensor else None)
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


def test_ema_and_swa_with_per_tensor_averages_train_the_same():
    _parity(ema_swa, per_tensor=True)


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
def vq_vae(tt, state=None, steps=4, ema=True):
    nn, F = tt.nn, tt.nn.functional

    class VectorQuantizerEMA(nn.Module):
        def __init__(self, num_embeddings, dim, beta=0.25, decay=0.9, eps=1e-5):
            super().__init__()
            self.K, self.beta, self.decay, self.eps = num_embeddings, beta, decay, eps
            self.embedding = nn.Embedding(num_embeddings, dim)
            self.embedding.weight.requires_grad_(not ema)
            with tt.no_grad():  # the usual code: self.embedding.weight.data.uniform_(...)
                self.embedding.weight.uniform_(-1 / num_embeddings, 1 / num_embeddings)
            self.register_buffer("cluster_size", tt.zeros(num_embeddings))
            self.register_buffer("ema_w", self.embedding.weight.clone())

        def forward(self, z_e):
            z = z_e.permute(0, 2, 3, 1)
            flat = z.reshape(-1, z.shape[-1])
            if ema:
                dist = tt.cdist(flat, self.embedding.weight)
            else:  # |z|^2 - 2 z.e + |e|^2, as the VQ-VAE papers' code writes it
                dist = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.embedding.weight.t()
                        + self.embedding.weight.pow(2).sum(1))
            idx = dist.argmin(dim=1)
            z_q = self.embedding(idx).view(z.shape)
            if not ema:
                codebook = F.mse_loss(z_q, z.detach())
                commitment = self.beta * F.mse_loss(z, z_q.detach()) + codebook
            elif self.training:
                with tt.no_grad():
                    onehot = F.one_hot(idx, self.K).to(flat.dtype)
                    self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
                    self.ema_w.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
                    n = self.cluster_size.sum()
                    size = (self.cluster_size + self.eps) / (n + self.K * self.eps) * n
                    self.embedding.weight.copy_(self.ema_w / size.unsqueeze(1))
            if ema:
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


def test_vq_vae_with_a_learned_codebook_trains_the_same():
    _parity(vq_vae, ema=False)


def test_vq_vae_runs_in_minidl():
    out = vq_vae(minidl, steps=2)
    assert all(1 <= p <= 6 for p in out["perplexity"])


# ---- 10. CycleGAN: InstanceNorm, ReflectionPad, ConvTranspose, LSGAN, image pool ------------
def cyclegan(tt, state=None, steps=2):
    nn = tt.nn

    class ResnetBlock(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.block = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=False),
                                       nn.InstanceNorm2d(dim), nn.ReLU(True),
                                       nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=False),
                                       nn.InstanceNorm2d(dim))

        def forward(self, x):
            return x + self.block(x)

    # a conv followed by InstanceNorm has no bias: the norm cancels it, so its gradient is
    # rounding noise, which Adam would turn into full-size steps that differ run to run
    def generator(ngf=4):
        return nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7, bias=False),
                             nn.InstanceNorm2d(ngf),
                             nn.ReLU(True),
                             nn.Conv2d(ngf, 2 * ngf, 3, stride=2, padding=1, bias=False),
                             nn.InstanceNorm2d(2 * ngf), nn.ReLU(True),
                             ResnetBlock(2 * ngf),
                             nn.ConvTranspose2d(2 * ngf, ngf, 3, stride=2, padding=1,
                                                output_padding=1, bias=False),
                             nn.InstanceNorm2d(ngf), nn.ReLU(True),
                             nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh())

    def discriminator(ndf=4):
        return nn.Sequential(nn.Conv2d(3, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True),
                             nn.Conv2d(ndf, 2 * ndf, 4, stride=2, padding=1, bias=False),
                             nn.InstanceNorm2d(2 * ndf), nn.LeakyReLU(0.2, True),
                             nn.Conv2d(2 * ndf, 1, 3, padding=1))

    class ImagePool:
        def __init__(self, size, seed):
            self.size, self.images, self.random = size, [], random.Random(seed)

        def query(self, images):
            out = []
            for image in images:
                image = tt.unsqueeze(image.detach(), 0)
                if len(self.images) < self.size:
                    self.images.append(image)
                    out.append(image)
                elif self.random.uniform(0, 1) > 0.5:
                    k = self.random.randint(0, self.size - 1)
                    old = self.images[k].clone()
                    self.images[k] = image
                    out.append(old)
                else:
                    out.append(image)
            return tt.cat(out, 0)

    def set_requires_grad(nets, requires_grad=False):
        for net in nets:
            for param in net.parameters():
                param.requires_grad = requires_grad

    nets = nn.ModuleDict({"G_A": generator(), "G_B": generator(), "D_A": discriminator(),
                          "D_B": discriminator()}).double()
    _load(nets, tt, state)
    G_A, G_B, D_A, D_B = nets["G_A"], nets["G_B"], nets["D_A"], nets["D_B"]
    opt_G = tt.optim.Adam(itertools.chain(G_A.parameters(), G_B.parameters()), lr=2e-3,
                          betas=(0.5, 0.999))
    opt_D = tt.optim.Adam(itertools.chain(D_A.parameters(), D_B.parameters()), lr=2e-3,
                          betas=(0.5, 0.999))
    mse, l1 = nn.MSELoss(), nn.L1Loss()

    def gan_loss(pred, real):
        return mse(pred, tt.ones_like(pred) if real else tt.zeros_like(pred))

    pool_A, pool_B = ImagePool(3, 0), ImagePool(3, 1)
    rng = np.random.default_rng(10)
    losses = []
    for _ in range(steps):
        real_A = tt.from_numpy(np.tanh(rng.standard_normal((2, 3, 8, 8))))
        real_B = tt.from_numpy(np.tanh(rng.standard_normal((2, 3, 8, 8)) + 0.5))
        fake_B, fake_A = G_A(real_A), G_B(real_B)
        rec_A, rec_B = G_B(fake_B), G_A(fake_A)
        set_requires_grad([D_A, D_B], False)
        opt_G.zero_grad()
        loss_idt = (l1(G_A(real_B), real_B) + l1(G_B(real_A), real_A)) * 10 * 0.5
        loss_G = (gan_loss(D_A(fake_B), True) + gan_loss(D_B(fake_A), True)
                  + (l1(rec_A, real_A) + l1(rec_B, real_B)) * 10 + loss_idt)
        loss_G.backward()
        opt_G.step()
        set_requires_grad([D_A, D_B], True)
        opt_D.zero_grad()
        fb, fa = pool_B.query(fake_B), pool_A.query(fake_A)
        loss_D_A = (gan_loss(D_A(real_B), True) + gan_loss(D_A(fb.detach()), False)) * 0.5
        loss_D_A.backward()
        loss_D_B = (gan_loss(D_B(real_A), True) + gan_loss(D_B(fa.detach()), False)) * 0.5
        loss_D_B.backward()
        opt_D.step()
        losses.append([loss_G.item(), loss_D_A.item(), loss_D_B.item()])
    return {"losses": np.array(losses).reshape(-1), "params": _params(nets)}


def test_cyclegan_trains_the_same():
    _parity(cyclegan, steps=4)


def test_cyclegan_runs_in_minidl():
    out = cyclegan(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 11. GAT: edge gathers, leaky_relu scores, segment softmax by scatter_reduce, index_add_ -
def gat(tt, state=None, steps=5, variant=False):
    nn, F = tt.nn, tt.nn.functional

    class GATLayer(nn.Module):
        def __init__(self, fin, fout, heads, concat=True):
            super().__init__()
            self.heads, self.fout, self.concat = heads, fout, concat
            self.W = nn.Linear(fin, heads * fout, bias=False)
            self.att_src = nn.Parameter(tt.empty(1, heads, fout))
            self.att_dst = nn.Parameter(tt.empty(1, heads, fout))
            self.bias = nn.Parameter(tt.zeros(heads * fout if concat else fout))
            nn.init.xavier_uniform_(self.att_src)
            nn.init.xavier_uniform_(self.att_dst)

        def forward(self, x, edge_index):
            N, H, C = x.shape[0], self.heads, self.fout
            h = self.W(x).view(N, H, C)
            src, dst = edge_index[0], edge_index[1]
            a_src, a_dst = (h * self.att_src).sum(-1), (h * self.att_dst).sum(-1)
            e = F.leaky_relu(a_src[src] + a_dst[dst], negative_slope=0.2)  # (E, H)
            index = dst.unsqueeze(-1).expand_as(e)
            if variant:  # the maximum left out of the graph, the sums by scatter_add_
                e_max = tt.zeros((N, H), dtype=e.dtype).scatter_reduce(
                    0, index, e.detach(), reduce="amax", include_self=False)
                e = (e - e_max[dst]).exp()
                denom = tt.zeros((N, H), dtype=e.dtype).scatter_add_(0, index, e)
            else:
                e_max = tt.full((N, H), float("-inf"), dtype=e.dtype).scatter_reduce(
                    0, index, e, reduce="amax", include_self=True)
                e = (e - e_max[dst]).exp()
                denom = tt.zeros((N, H), dtype=e.dtype).scatter_reduce(0, index, e,
                                                                       reduce="sum")
            alpha = e / (denom[dst] + 1e-16)
            out = tt.zeros((N, H, C), dtype=x.dtype).index_add_(0, dst,
                                                                 h[src] * alpha.unsqueeze(-1))
            out = out.reshape(N, H * C) if self.concat else out.mean(dim=1)
            return out + self.bias, alpha

    class GAT(nn.Module):
        def __init__(self, fin, hidden, classes, heads=2):
            super().__init__()
            self.conv1 = GATLayer(fin, hidden, heads)
            self.conv2 = GATLayer(hidden * heads, classes, 1, concat=False)

        def forward(self, x, edge_index):
            x, _ = self.conv1(x, edge_index)
            x = F.elu(x)
            x, alpha = self.conv2(x, edge_index)
            return F.log_softmax(x, dim=-1), alpha

    rng = np.random.default_rng(12)
    N = 14
    edges = {(int(a), int(b)) for a, b in rng.integers(0, N, (30, 2)) if a != b}
    edges |= {(b, a) for a, b in edges} | {(i, i) for i in range(N)}  # undirected, self loops
    edge_index = tt.from_numpy(np.array(sorted(edges)).T.copy())
    x = tt.from_numpy(rng.standard_normal((N, 5)))
    y = tt.from_numpy(rng.integers(0, 3, N))
    train_mask = tt.from_numpy(np.arange(N) < 9)
    model = GAT(5, 4, 3).double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    losses = []
    for _ in range(steps):
        model.train()
        out, _ = model(x, edge_index)
        loss = F.nll_loss(out[train_mask], y[train_mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with tt.no_grad():
        out, alpha = model(x, edge_index)
        pred = out.argmax(dim=1)
        acc = (pred[~train_mask] == y[~train_mask]).double().mean().item()
        att_sums = tt.zeros(N, dtype=alpha.dtype).index_add_(0, edge_index[1], alpha[:, 0])
    return {"losses": losses, "acc": acc, "att_sums": _np(att_sums), "out": _np(out),
            "params": _params(model)}


def test_graph_attention_network_trains_the_same():
    _parity(gat)


def test_graph_attention_network_with_scatter_add_trains_the_same():
    _parity(gat, variant=True)


def test_graph_attention_network_runs_in_minidl():
    out = gat(minidl, steps=3)
    np.testing.assert_allclose(out["att_sums"], 1.0, rtol=1e-12)


# ---- 12. RealNVP: masked affine couplings, log-det sums, a Normal base, sampling ------------
def realnvp(tt, state=None, steps=5):
    nn = tt.nn
    D = tt.distributions

    class Coupling(nn.Module):
        def __init__(self, mask, hidden=16):
            super().__init__()
            dim = mask.numel()
            self.register_buffer("mask", mask)
            self.s = nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(), nn.Linear(hidden, dim),
                                   nn.Tanh())
            self.t = nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(), nn.Linear(hidden, dim))

        def forward(self, x):  # data -> latent
            xm = x * self.mask
            s, t = self.s(xm) * (1 - self.mask), self.t(xm) * (1 - self.mask)
            z = xm + (1 - self.mask) * (x * tt.exp(s) + t)
            return z, s.sum(dim=1)

        def inverse(self, z):
            zm = z * self.mask
            s, t = self.s(zm) * (1 - self.mask), self.t(zm) * (1 - self.mask)
            return zm + (1 - self.mask) * ((z - t) * tt.exp(-s))

    class RealNVP(nn.Module):
        def __init__(self, n_layers=4):
            super().__init__()
            masks = [tt.tensor([1.0, 0.0] if i % 2 == 0 else [0.0, 1.0], dtype=tt.float64)
                     for i in range(n_layers)]
            self.layers = nn.ModuleList(Coupling(m) for m in masks)
            self.register_buffer("loc", tt.zeros(2, dtype=tt.float64))
            self.register_buffer("scale", tt.ones(2, dtype=tt.float64))

        @property
        def base(self):
            return D.Independent(D.Normal(self.loc, self.scale), 1)

        def forward(self, x):
            log_det = tt.zeros(x.shape[0], dtype=x.dtype)
            for layer in self.layers:
                x, ld = layer(x)
                log_det = log_det + ld
            return x, log_det

        def log_prob(self, x):
            z, log_det = self(x)
            return self.base.log_prob(z) + log_det

        def inverse(self, z):
            for layer in reversed(self.layers):
                z = layer.inverse(z)
            return z

    rng = np.random.default_rng(13)  # two moons
    n = 64
    theta = rng.random(n) * np.pi
    upper = rng.random(n) < 0.5
    pts = np.where(upper[:, None], np.stack([np.cos(theta), np.sin(theta)], 1),
                   np.stack([1 - np.cos(theta), 0.5 - np.sin(theta)], 1))
    pts = pts + 0.05 * rng.standard_normal((n, 2))
    flow = RealNVP().double()
    _load(flow, tt, state)
    opt = tt.optim.Adam(flow.parameters(), lr=5e-3)
    losses = []
    for i in range(steps):
        x = tt.from_numpy(pts[32 * (i % 2):32 * (i % 2) + 32])
        loss = -flow.log_prob(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():
        z = tt.from_numpy(rng.standard_normal((5, 2)))
        samples = flow.inverse(z)
        back, _ = flow(samples)
        lp = flow.log_prob(samples)
        base_lp = D.MultivariateNormal(flow.loc, tt.eye(2, dtype=tt.float64)).log_prob(z)
    return {"losses": losses, "samples": _np(samples), "back": _np(back), "z": _np(z),
            "lp": _np(lp), "base_lp": _np(base_lp), "params": _params(flow)}


def test_realnvp_trains_the_same():
    _parity(realnvp)


def test_realnvp_runs_in_minidl():
    out = realnvp(minidl, steps=3)
    np.testing.assert_allclose(out["back"], out["z"], rtol=1e-10, atol=1e-12)


# ---- 13. U-Net segmentation: bilinear upsampling, skip concatenation, Dice + BCE ------------
def unet(tt, state=None, steps=3, transposed=False):
    nn, F = tt.nn, tt.nn.functional

    def double_conv(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True),
                             nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class Up(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            if transposed:
                self.up = nn.ConvTranspose2d(cin // 2, cin // 2, kernel_size=2, stride=2)
            self.conv = double_conv(cin, cout)

        def forward(self, x, skip):
            if transposed:  # the odd sizes padded back, the shape of the common U-Net code
                x = self.up(x)
                dy, dx = skip.size(2) - x.size(2), skip.size(3) - x.size(3)
                x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
            else:
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            return self.conv(tt.cat([skip, x], dim=1))

    class UNet(nn.Module):
        def __init__(self, c=4):
            super().__init__()
            self.inc = double_conv(1, c)
            self.down1 = double_conv(c, 2 * c)
            self.down2 = double_conv(2 * c, 2 * c)
            self.up1 = Up(4 * c, c)
            self.up2 = Up(2 * c, c)
            self.outc = nn.Conv2d(c, 1, 1)

        def forward(self, x):
            x1 = self.inc(x)
            x2 = self.down1(F.max_pool2d(x1, 2))
            x3 = self.down2(F.max_pool2d(x2, 2))
            x = self.up1(x3, x2)
            x = self.up2(x, x1)
            return self.outc(x)

    def dice_loss(logits, target, eps=1.0):
        probs = tt.sigmoid(logits)
        inter = (probs * target).sum(dim=(1, 2, 3))
        union = probs.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3))
        return 1 - ((2 * inter + eps) / (union + eps)).mean()

    rng = np.random.default_rng(14)
    images = rng.standard_normal((8, 1, 10, 10))  # 10 -> 5 -> 2: the sizes do not halve evenly
    masks = (images > 0.3).astype(np.float64)
    model = UNet().double()
    _load(model, tt, state)
    opt = tt.optim.RMSprop(model.parameters(), lr=1e-3, weight_decay=1e-8, momentum=0.9)
    bce = nn.BCEWithLogitsLoss()
    losses = []
    model.train()
    for i in range(steps):
        x = tt.from_numpy(images[4 * (i % 2):4 * (i % 2) + 4])
        y = tt.from_numpy(masks[4 * (i % 2):4 * (i % 2) + 4])
        logits = model(x)
        loss = bce(logits, y) + dice_loss(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with tt.no_grad():
        logits = model(tt.from_numpy(images[:2]))
        up = F.interpolate(logits, scale_factor=1.5, mode="bilinear", align_corners=False)
    return {"losses": losses, "logits": _np(logits), "up": _np(up), "params": _params(model)}


def test_unet_segmentation_trains_the_same():
    _parity(unet)


def test_unet_with_transposed_convolutions_trains_the_same():
    _parity(unet, transposed=True)


def test_unet_segmentation_runs_in_minidl():
    out = unet(minidl, steps=2)
    assert out["logits"].shape == (2, 1, 10, 10) and out["up"].shape == (2, 1, 15, 15)


# ---- 14. gradient checkpointing (use_reentrant=False) in a deep MLP -------------------------
def checkpointed(tt, state=None, steps=3, use_checkpoint=True, p_drop=0.0):
    nn, F = tt.nn, tt.nn.functional
    from importlib import import_module
    cp = import_module(tt.__name__ + ".utils.checkpoint")

    class Block(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.norm = nn.LayerNorm(dim)
            self.fc1 = nn.Linear(dim, 2 * dim)
            self.fc2 = nn.Linear(2 * dim, dim)
            self.drop = nn.Dropout(p_drop)

        def forward(self, x):
            return x + self.drop(self.fc2(F.gelu(self.fc1(self.norm(x)))))

    class DeepMLP(nn.Module):
        def __init__(self, dim=8, depth=6):
            super().__init__()
            self.blocks = nn.ModuleList(Block(dim) for _ in range(depth))
            self.head = nn.Linear(dim, 1)

        def forward(self, x):
            if not (use_checkpoint and self.training):
                for block in self.blocks:
                    x = block(x)
                return self.head(x)
            for block in self.blocks[:4]:
                x = cp.checkpoint(block, x, use_reentrant=False)
            # the last two blocks as one segment
            x = cp.checkpoint_sequential(nn.Sequential(*self.blocks[4:]), 1, x,
                                         use_reentrant=False)
            return self.head(x)

    rng = np.random.default_rng(15)
    xs = rng.standard_normal((steps + 1, 16, 8))
    ys = np.sin(xs.sum(-1, keepdims=True))
    model = DeepMLP().double()
    _load(model, tt, state)
    opt = tt.optim.SGD(model.parameters(), lr=0.05)
    losses, grads = [], []
    for i in range(steps):
        x = tt.from_numpy(xs[i]).requires_grad_()
        loss = F.mse_loss(model(x), tt.from_numpy(ys[i]))
        opt.zero_grad()
        loss.backward()
        grads.append(np.concatenate([_np(x.grad).ravel()]
                                    + [_np(p.grad).ravel() for p in model.parameters()]))
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "grads": np.array(grads).reshape(-1), "params": _params(model)}


def test_gradient_checkpointing_trains_the_same():
    _parity(checkpointed)


def test_gradient_checkpointing_gives_the_gradients_of_the_plain_run():
    for tt in [minidl] + ([] if torch is None else [torch]):
        tt.manual_seed(0)
        start = checkpointed(tt, steps=0)["params"]
        with_cp = checkpointed(tt, state=start)
        plain = checkpointed(tt, state=start, use_checkpoint=False)
        np.testing.assert_allclose(with_cp["grads"], plain["grads"], rtol=1e-12, atol=1e-14)


def test_gradient_checkpointing_with_dropout_runs_in_minidl():
    """The recomputation replays the same dropout mask (the RNG state is kept), so the run
    with checkpoints and the plain one agree from the same seed."""
    minidl.manual_seed(3)
    with_cp = checkpointed(minidl, p_drop=0.3)
    minidl.manual_seed(3)
    plain = checkpointed(minidl, p_drop=0.3, use_checkpoint=False)
    for k in with_cp["params"]:
        np.testing.assert_allclose(with_cp["params"][k], plain["params"][k], rtol=1e-12)


# ---- 15. TCN: dilated causal Conv1d by left F.pad, weight_norm, residual 1x1 ----------------
def tcn(tt, state=None, steps=4, old_weight_norm=False):
    nn, F = tt.nn, tt.nn.functional
    weight_norm = tt.nn.utils.parametrizations.weight_norm
    if old_weight_norm:  # weight_g and weight_v, recomputed by a forward pre-hook
        weight_norm = tt.nn.utils.weight_norm

    class TemporalBlock(nn.Module):
        def __init__(self, cin, cout, kernel_size, dilation):
            super().__init__()
            self.pad = (kernel_size - 1) * dilation
            self.conv1 = weight_norm(nn.Conv1d(cin, cout, kernel_size, dilation=dilation))
            self.conv2 = weight_norm(nn.Conv1d(cout, cout, kernel_size, dilation=dilation))
            self.downsample = nn.Conv1d(cin, cout, 1) if cin != cout else None

        def forward(self, x):
            h = F.relu(self.conv1(F.pad(x, (self.pad, 0))))
            h = F.relu(self.conv2(F.pad(h, (self.pad, 0))))
            res = x if self.downsample is None else self.downsample(x)
            return F.relu(h + res)

    class TCN(nn.Module):
        def __init__(self, cin=2, channels=(6, 6, 6), kernel_size=3):
            super().__init__()
            layers = []
            for i, c in enumerate(channels):
                layers.append(TemporalBlock(cin if i == 0 else channels[i - 1], c, kernel_size,
                                            2 ** i))
            self.network = nn.Sequential(*layers)
            self.linear = nn.Linear(channels[-1], 1)

        def forward(self, x):
            return self.linear(self.network(x)[:, :, -1])

    rng = np.random.default_rng(16)  # the adding problem
    T = 20

    def batch(n=8):
        values = rng.random((n, T))
        marks = np.zeros((n, T))
        for row in range(n):
            marks[row, rng.choice(T, 2, replace=False)] = 1.0
        return np.stack([values, marks], 1), (values * marks).sum(1, keepdims=True)

    model = TCN().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=4e-3)
    losses = []
    for _ in range(steps):
        x, y = batch()
        loss = F.mse_loss(model(tt.from_numpy(x)), tt.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        tt.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        losses.append(loss.item())
    x, _ = batch(2)
    x = tt.from_numpy(x)
    with tt.no_grad():
        full = model.network(x)
        x2 = x.clone()
        x2[:, :, 12:] += 1.0  # the future must not reach the past
        cut = model.network(x2)
        causal = bool(tt.equal(full[:, :, :12], cut[:, :, :12]))
    return {"losses": losses, "features": _np(full), "causal": repr(causal),
            "weight": _np(model.network[0].conv1.weight), "params": _params(model)}


def test_temporal_convolution_network_trains_the_same():
    _parity(tcn)


@pytest.mark.filterwarnings("ignore:.*weight_norm.*deprecated")
def test_temporal_convolution_network_with_the_old_weight_norm_trains_the_same():
    _parity(tcn, old_weight_norm=True)


def test_temporal_convolution_network_runs_in_minidl():
    out = tcn(minidl, steps=2)
    assert out["causal"] == "True" and np.isfinite(out["losses"]).all()


# ---- 16. a LLaMA-style LM: RMSNorm, rotary embeddings by complex numbers, SwiGLU, causal SDPA,
# a KV cache for generation under inference_mode, an EMA by _foreach_lerp_ --------------------
def llama(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    V, D, H, L = 16, 16, 2, 12

    def precompute_freqs_cis(dim, end, theta=10000.0):
        freqs = 1.0 / (theta ** (tt.arange(0, dim, 2, dtype=tt.float64)[: dim // 2] / dim))
        t = tt.arange(end, dtype=tt.float64)
        freqs = tt.outer(t, freqs)
        return tt.polar(tt.ones_like(freqs), freqs)  # complex128

    def apply_rotary_emb(xq, xk, freqs_cis):
        xq_ = tt.view_as_complex(xq.reshape(*xq.shape[:-1], -1, 2))
        xk_ = tt.view_as_complex(xk.reshape(*xk.shape[:-1], -1, 2))
        freqs_cis = freqs_cis.view(1, xq_.shape[1], 1, xq_.shape[-1])
        xq_out = tt.view_as_real(xq_ * freqs_cis).flatten(3)
        xk_out = tt.view_as_real(xk_ * freqs_cis).flatten(3)
        return xq_out.type_as(xq), xk_out.type_as(xk)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.wq = nn.Linear(D, D, bias=False)
            self.wk = nn.Linear(D, D, bias=False)
            self.wv = nn.Linear(D, D, bias=False)
            self.wo = nn.Linear(D, D, bias=False)

        def forward(self, x, freqs_cis, cache=None):
            B, T, _ = x.shape
            q = self.wq(x).view(B, T, H, D // H)
            k = self.wk(x).view(B, T, H, D // H)
            v = self.wv(x).view(B, T, H, D // H)
            q, k = apply_rotary_emb(q, k, freqs_cis)
            q, k, v = (a.transpose(1, 2) for a in (q, k, v))
            if cache is not None:
                if "k" in cache:
                    k = tt.cat([cache["k"], k], dim=2)
                    v = tt.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
            causal = cache is None or T > 1
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            return self.wo(out.transpose(1, 2).contiguous().view(B, T, D))

    class FeedForward(nn.Module):
        def __init__(self, hidden=32):
            super().__init__()
            self.w1 = nn.Linear(D, hidden, bias=False)
            self.w2 = nn.Linear(hidden, D, bias=False)
            self.w3 = nn.Linear(D, hidden, bias=False)

        def forward(self, x):
            return self.w2(F.silu(self.w1(x)) * self.w3(x))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention_norm = nn.RMSNorm(D, eps=1e-6)
            self.attention = Attention()
            self.ffn_norm = nn.RMSNorm(D, eps=1e-6)
            self.feed_forward = FeedForward()

        def forward(self, x, freqs_cis, cache=None):
            h = x + self.attention(self.attention_norm(x), freqs_cis, cache)
            return h + self.feed_forward(self.ffn_norm(h))

    class Transformer(nn.Module):
        def __init__(self, n_layers=2):
            super().__init__()
            self.tok_embeddings = nn.Embedding(V, D)
            self.layers = nn.ModuleList(Block() for _ in range(n_layers))
            self.norm = nn.RMSNorm(D, eps=1e-6)
            self.output = nn.Linear(D, V, bias=False)
            self.output.weight = self.tok_embeddings.weight
            self.register_buffer("freqs_cis", precompute_freqs_cis(D // H, 2 * L),
                                 persistent=False)

        def forward(self, tokens, start_pos=0, caches=None):
            T = tokens.shape[1]
            h = self.tok_embeddings(tokens)
            freqs = self.freqs_cis[start_pos:start_pos + T]
            for i, layer in enumerate(self.layers):
                h = layer(h, freqs, None if caches is None else caches[i])
            return self.output(self.norm(h))

    rng = np.random.default_rng(17)
    text = np.array([(3 * i + i // 4) % V for i in range(200)])
    model = Transformer().double()
    _load(model, tt, state)
    ema = [p.detach().clone() for p in model.parameters()]
    opt = tt.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95))
    losses = []
    for _ in range(steps):
        starts = rng.integers(0, len(text) - L - 1, 4)
        x = tt.from_numpy(np.stack([text[s:s + L] for s in starts]))
        y = tt.from_numpy(np.stack([text[s + 1:s + L + 1] for s in starts]))
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, V), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        tt.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        with tt.no_grad():
            tt._foreach_lerp_(ema, [p.detach() for p in model.parameters()], 0.1)
        losses.append(loss.item())
    model.eval()
    prompt = tt.from_numpy(text[None, :4])
    with tt.inference_mode():
        full = model(prompt)
        caches = [{} for _ in model.layers]
        logits = model(prompt, 0, caches)
        tokens = prompt
        for pos in range(4, 8):  # greedy, one token at a time from the cache
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            tokens = tt.cat([tokens, nxt], dim=1)
            logits = model(nxt, pos, caches)
        recomputed = model(tokens)[:, -1]
    return {"losses": losses, "full": _np(full), "last": _np(logits[:, -1]),
            "recomputed": _np(recomputed), "tokens": repr(tokens.tolist()),
            "ema": np.concatenate([_np(e).ravel() for e in ema]), "params": _params(model)}


def test_llama_style_lm_trains_and_generates_the_same():
    _parity(llama)


def test_llama_style_lm_runs_in_minidl():
    out = llama(minidl, steps=2)
    np.testing.assert_allclose(out["last"], out["recomputed"], rtol=1e-10, atol=1e-12)


# ---- 17. a DiT block: patchify, adaLN-Zero modulation, nn.MultiheadAttention, unpatchify ----
def dit(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    P, C, D, S = 2, 1, 16, 8  # patch, channels, width, image size

    def modulate(x, shift, scale):
        return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)

    class DiTBlock(nn.Module):
        def __init__(self, heads=2):
            super().__init__()
            self.norm1 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
            self.attn = nn.MultiheadAttention(D, heads, batch_first=True)
            self.norm2 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
            self.mlp = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(approximate="tanh"),
                                     nn.Linear(4 * D, D))
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D))

        def forward(self, x, c):
            (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp,
             gate_mlp) = self.adaLN_modulation(c).chunk(6, dim=1)
            h = modulate(self.norm1(x), shift_msa, scale_msa)
            h, _ = self.attn(h, h, h, need_weights=False)
            x = x + gate_msa.unsqueeze(1) * h
            return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp,
                                                                 scale_mlp))

    class DiT(nn.Module):
        def __init__(self, depth=2, num_classes=3):
            super().__init__()
            self.x_embedder = nn.Conv2d(C, D, P, stride=P)
            self.t_embedder = nn.Sequential(nn.Linear(8, D), nn.SiLU(), nn.Linear(D, D))
            self.y_embedder = nn.Embedding(num_classes + 1, D)  # the last: no label (CFG)
            n = (S // P) ** 2
            self.pos_embed = nn.Parameter(tt.zeros(1, n, D), requires_grad=False)
            self.blocks = nn.ModuleList(DiTBlock() for _ in range(depth))
            self.norm_final = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
            self.adaLN_final = nn.Sequential(nn.SiLU(), nn.Linear(D, 2 * D))
            self.linear = nn.Linear(D, P * P * C)
            for block in self.blocks:  # adaLN-Zero: every block starts as the identity
                nn.init.constant_(block.adaLN_modulation[-1].weight, 0)
                nn.init.constant_(block.adaLN_modulation[-1].bias, 0)
            with tt.no_grad():
                grid = tt.arange(n, dtype=tt.float64)[:, None] / n
                freqs = tt.arange(D // 2, dtype=tt.float64)[None] + 1
                self.pos_embed.copy_(tt.cat([tt.sin(grid * freqs), tt.cos(grid * freqs)], 1)[None])

        def unpatchify(self, x):
            h = w = S // P
            x = x.reshape(x.shape[0], h, w, P, P, C)
            x = tt.einsum("nhwpqc->nchpwq", x)
            return x.reshape(x.shape[0], C, h * P, w * P)

        def forward(self, x, t, y):
            x = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos_embed
            half = tt.arange(4, dtype=tt.float64)
            temb = t[:, None] * tt.exp(-math.log(1000.0) * half / 4)[None]
            c = self.t_embedder(tt.cat([temb.cos(), temb.sin()], -1)) + self.y_embedder(y)
            for block in self.blocks:
                x = block(x, c)
            shift, scale = self.adaLN_final(c).chunk(2, dim=1)
            return self.unpatchify(self.linear(modulate(self.norm_final(x), shift, scale)))

    rng = np.random.default_rng(18)
    model = DiT().double()
    _load(model, tt, state)
    opt = tt.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3,
                         weight_decay=0)
    losses = []
    for _ in range(steps):
        x0 = tt.from_numpy(rng.standard_normal((4, C, S, S)))
        t = tt.from_numpy(rng.random(4))
        y = tt.from_numpy(rng.integers(0, 4, 4))  # label 3 stands for "dropped"
        noise = tt.from_numpy(rng.standard_normal((4, C, S, S)))
        xt = (1 - t).view(-1, 1, 1, 1) * x0 + t.view(-1, 1, 1, 1) * noise  # rectified flow
        loss = F.mse_loss(model(xt, t, y), noise - x0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():  # classifier-free guidance, one Euler step
        x = tt.from_numpy(rng.standard_normal((2, C, S, S)))
        t = tt.full((2,), 0.5, dtype=tt.float64)
        cond = model(x, t, tt.tensor([0, 2]))
        uncond = model(x, t, tt.tensor([3, 3]))
        guided = x - 0.5 * (uncond + 4.0 * (cond - uncond))
    return {"losses": losses, "guided": _np(guided), "params": _params(model)}


def test_dit_trains_the_same():
    _parity(dit)


def test_dit_runs_in_minidl():
    out = dit(minidl, steps=2)
    assert out["guided"].shape == (2, 1, 8, 8) and np.isfinite(out["losses"]).all()


# ---- 18. SimCLR: two augmented views, a projection head, the NT-Xent loss -------------------
def simclr(tt, state=None, steps=3, temperature=0.5):
    nn, F = tt.nn, tt.nn.functional

    class SimCLR(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.projector = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))

        def forward(self, x):
            return self.projector(self.encoder(x))

    def nt_xent(z1, z2):
        z = F.normalize(tt.cat([z1, z2], dim=0), dim=1)
        n = z1.shape[0]
        sim = F.cosine_similarity(z.unsqueeze(1), z.unsqueeze(0), dim=-1) / temperature
        sim = sim.masked_fill(tt.eye(2 * n, dtype=tt.bool), float("-inf"))
        targets = tt.cat([tt.arange(n, 2 * n), tt.arange(0, n)])
        return F.cross_entropy(sim, targets)

    def augment(x, rng):
        flip = rng.random(x.shape[0]) < 0.5
        x = np.where(flip[:, None, None, None], x[..., ::-1], x)
        shift = rng.integers(-1, 2, 2)
        x = np.roll(x, tuple(shift), axis=(2, 3))
        return tt.from_numpy(x * rng.uniform(0.8, 1.2, (x.shape[0], 1, 1, 1)))

    rng = np.random.default_rng(19)
    images = rng.standard_normal((16, 3, 6, 6))
    model = SimCLR().double()
    _load(model, tt, state)
    opt = tt.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched = tt.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.3, total_steps=max(steps, 2))
    losses, lrs = [], []
    for i in range(steps):
        batch = images[8 * (i % 2):8 * (i % 2) + 8]
        loss = nt_xent(model(augment(batch, rng)), model(augment(batch, rng)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        lrs.append(sched.get_last_lr()[0])
    model.eval()
    with tt.no_grad():
        features = model.encoder(tt.from_numpy(images))
    return {"losses": losses, "lrs": lrs, "features": _np(features), "params": _params(model)}


def test_simclr_trains_the_same():
    _parity(simclr)


def test_simclr_runs_in_minidl():
    out = simclr(minidl, steps=2)
    assert np.isfinite(out["losses"]).all() and out["features"].shape == (16, 8)


# ---- 19. DPO: sequence log-probs by gather, a frozen reference model, logsigmoid -------------
def dpo(tt, state=None, steps=3, beta=0.1):
    nn, F = tt.nn, tt.nn.functional
    V, T = 10, 6

    class TinyLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(V, 12)
            self.rnn = nn.LSTM(12, 12, batch_first=True)
            self.head = nn.Linear(12, V)

        def forward(self, ids):
            return self.head(self.rnn(self.emb(ids))[0])

    def sequence_logps(model, ids, mask):
        logits = model(ids[:, :-1])
        labels = ids[:, 1:]
        logps = tt.gather(logits.log_softmax(-1), 2, labels.unsqueeze(2)).squeeze(2)
        return (logps * mask[:, 1:]).sum(-1)

    rng = np.random.default_rng(20)
    policy = TinyLM().double()
    _load(policy, tt, state)
    reference = TinyLM().double()
    reference.load_state_dict(policy.state_dict())
    reference.eval()
    reference.requires_grad_(False)
    opt = tt.optim.Adam(policy.parameters(), lr=1e-2)
    losses, margins = [], []
    for _ in range(steps):
        prompt = rng.integers(0, V, (4, 2))
        chosen = np.concatenate([prompt, (prompt[:, -1:] + np.arange(1, T - 1)) % V], 1)
        rejected = np.concatenate([prompt, rng.integers(0, V, (4, T - 2))], 1)
        mask = np.ones((4, T))
        mask[:, :2] = 0  # only the response counts
        ids = tt.from_numpy(np.concatenate([chosen, rejected]))
        m = tt.from_numpy(np.concatenate([mask, mask]))
        pi = sequence_logps(policy, ids, m)
        with tt.no_grad():
            ref = sequence_logps(reference, ids, m)
        pi_c, pi_r = pi.chunk(2)
        ref_c, ref_r = ref.chunk(2)
        logits = beta * ((pi_c - ref_c) - (pi_r - ref_r))
        loss = -F.logsigmoid(logits).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        margins.append(logits.mean().item())
    ref_grads = repr([p.grad is None for p in reference.parameters()])
    return {"losses": losses, "margins": margins, "ref_grads": ref_grads,
            "params": {**_params(policy), **_params(reference, "ref.")}}


def test_dpo_trains_the_same():
    if torch is None:
        pytest.skip("torch not installed")
    _parity(lambda tt, state=None, **kw: dpo(tt, state=None if state is None else
                                             {k: v for k, v in state.items()
                                              if not k.startswith("ref.")}, **kw))


def test_dpo_runs_in_minidl():
    out = dpo(minidl, steps=3)
    assert out["ref_grads"] == repr([True] * 7) and out["losses"][0] == pytest.approx(math.log(2))


# ---- 20. MAE: random masking by argsort of noise, gather, mask tokens, the masked-patch loss --
def mae(tt, state=None, steps=3, mask_ratio=0.75):
    nn = tt.nn
    P, S, D = 2, 8, 16
    n = (S // P) ** 2

    def patchify(imgs):
        h = w = S // P
        x = imgs.reshape(imgs.shape[0], 3, h, P, w, P)
        x = tt.einsum("nchpwq->nhwpqc", x)
        return x.reshape(imgs.shape[0], h * w, P * P * 3)

    class MAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = nn.Linear(P * P * 3, D)
            self.cls_token = nn.Parameter(tt.zeros(1, 1, D))
            self.pos_embed = nn.Parameter(tt.zeros(1, n + 1, D))
            layer = nn.TransformerEncoderLayer(D, 2, 2 * D, dropout=0.0, batch_first=True,
                                               norm_first=True, activation="gelu")
            self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(D)
            self.decoder_embed = nn.Linear(D, D)
            self.mask_token = nn.Parameter(tt.zeros(1, 1, D))
            self.decoder_pos_embed = nn.Parameter(tt.zeros(1, n + 1, D))
            self.decoder = nn.TransformerEncoder(
                nn.TransformerEncoderLayer(D, 2, 2 * D, dropout=0.0, batch_first=True,
                                           norm_first=True), 1, enable_nested_tensor=False)
            self.decoder_pred = nn.Linear(D, P * P * 3)
            for p in (self.cls_token, self.mask_token, self.pos_embed, self.decoder_pos_embed):
                nn.init.normal_(p, std=0.02)

        def random_masking(self, x, noise):
            N, L, Dm = x.shape
            len_keep = int(L * (1 - mask_ratio))
            ids_shuffle = tt.argsort(noise, dim=1)
            ids_restore = tt.argsort(ids_shuffle, dim=1)
            ids_keep = ids_shuffle[:, :len_keep]
            x_masked = tt.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, Dm))
            mask = tt.ones([N, L], dtype=x.dtype)
            mask[:, :len_keep] = 0
            mask = tt.gather(mask, dim=1, index=ids_restore)
            return x_masked, mask, ids_restore

        def forward(self, imgs, noise):
            x = self.patch_embed(patchify(imgs)) + self.pos_embed[:, 1:, :]
            x, mask, ids_restore = self.random_masking(x, noise)
            cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
            x = self.norm(self.encoder(tt.cat((cls, x), dim=1)))
            x = self.decoder_embed(x)
            mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1],
                                                 1)
            x_ = tt.cat([x[:, 1:, :], mask_tokens], dim=1)
            x_ = tt.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
            x = tt.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
            pred = self.decoder_pred(self.decoder(x))[:, 1:, :]
            target = patchify(imgs)
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5  # norm_pix_loss
            loss = ((pred - target) ** 2).mean(dim=-1)
            return (loss * mask).sum() / mask.sum(), pred, mask

    rng = np.random.default_rng(21)
    images = rng.standard_normal((8, 3, S, S))
    model = MAE().double()
    _load(model, tt, state)
    opt = tt.optim.AdamW(model.parameters(), lr=1.5e-3, betas=(0.9, 0.95), weight_decay=0.05)
    losses = []
    for i in range(steps):
        imgs = tt.from_numpy(images[4 * (i % 2):4 * (i % 2) + 4])
        loss, pred, mask = model(imgs, tt.from_numpy(rng.random((4, n))))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():
        loss, pred, mask = model(tt.from_numpy(images[:2]), tt.from_numpy(rng.random((2, n))))
    return {"losses": losses, "pred": _np(pred), "mask": _np(mask), "params": _params(model)}


def test_mae_trains_the_same():
    _parity(mae)


def test_mae_runs_in_minidl():
    out = mae(minidl, steps=2)
    assert (out["mask"].sum(1) == 12).all()


# ---- 21. WGAN-GP with a spectral-norm critic: the gradient penalty by autograd.grad ----------
def wgan_gp(tt, state=None, steps=3, spectral=False):
    nn = tt.nn
    sn = tt.nn.utils.parametrizations.spectral_norm if spectral else (lambda m: m)

    generator = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2 * 6 * 6),
                              nn.Unflatten(1, (2, 6, 6)), nn.Conv2d(2, 1, 3, padding=1),
                              nn.Tanh())
    critic = nn.Sequential(sn(nn.Conv2d(1, 4, 3, stride=2, padding=1)), nn.LeakyReLU(0.2),
                           sn(nn.Conv2d(4, 8, 3, padding=1)), nn.LayerNorm([8, 3, 3]),
                           nn.LeakyReLU(0.2), nn.Flatten(), sn(nn.Linear(72, 1)))
    nets = nn.ModuleDict({"G": generator, "D": critic}).double()
    _load(nets, tt, state)
    opt_G = tt.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.0, 0.9))
    opt_D = tt.optim.Adam(critic.parameters(), lr=1e-3, betas=(0.0, 0.9))
    rng = np.random.default_rng(22)
    losses, penalties = [], []

    def gradient_penalty(real, fake, alpha):
        interp = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        out = critic(interp)
        grads = tt.autograd.grad(outputs=out, inputs=interp, grad_outputs=tt.ones_like(out),
                                 create_graph=True, retain_graph=True)[0]
        grads = grads.view(grads.size(0), -1)
        return ((grads.norm(2, dim=1) - 1) ** 2).mean()

    for _ in range(steps):
        for _ in range(2):  # critic iterations
            real = tt.from_numpy(np.tanh(rng.standard_normal((4, 1, 6, 6))))
            z = tt.from_numpy(rng.standard_normal((4, 4)))
            fake = generator(z).detach()
            alpha = tt.from_numpy(rng.random((4, 1, 1, 1)))
            gp = gradient_penalty(real, fake, alpha)
            loss_D = critic(fake).mean() - critic(real).mean() + 10.0 * gp
            opt_D.zero_grad()
            loss_D.backward()
            opt_D.step()
        z = tt.from_numpy(rng.standard_normal((4, 4)))
        loss_G = -critic(generator(z)).mean()
        opt_G.zero_grad()
        loss_G.backward()
        opt_G.step()
        losses.append([loss_D.item(), loss_G.item()])
        penalties.append(gp.item())
    return {"losses": np.array(losses).reshape(-1), "penalties": penalties,
            "params": _params(nets)}


def test_wgan_gp_trains_the_same():
    _parity(wgan_gp)


def test_wgan_gp_with_spectral_norm_trains_the_same():
    _parity(wgan_gp, spectral=True)


def test_wgan_gp_runs_in_minidl():
    out = wgan_gp(minidl, steps=2, spectral=True)
    assert np.isfinite(out["losses"]).all() and all(p >= 0 for p in out["penalties"])


# ---- what the programs found, each fix with its own test ------------------------------------
def _ema_of_integer_buffers(tt):
    f = tt.optim.swa_utils.get_ema_multi_avg_fn(0.8)
    a, b = tt.tensor([1, -3, 7]), tt.tensor([6, 2, 9])
    seen = []
    for _ in range(4):
        f([a], [b], None)
        seen.append(a.tolist())
    return seen, a.dtype == tt.int64


def test_ema_of_an_integer_buffer_rounds_as_torch():
    """EMA with use_buffers=True averages BatchNorm's num_batches_tracked: minidl worked in
    float64 (1 * 0.8 + 6 * 0.2 = 1.9999999999999998, truncated to 1) where PyTorch's
    integer * float is float32 (2.0, kept as 2)."""
    assert _ema_of_integer_buffers(minidl) == ([[2, -2, 7], [2, -1, 7], [2, 0, 7],
                                                [2, 0, 7]], True)


def test_ema_of_an_integer_buffer_rounds_as_torch_as_torch():
    torch = pytest.importorskip("torch")
    assert _ema_of_integer_buffers(minidl) == _ema_of_integer_buffers(torch)


def _relu_in_place_after_norm(tt, x):
    F = tt.nn.functional
    x = tt.from_numpy(x).requires_grad_()
    w = tt.from_numpy(np.linspace(-1.0, 1.0, 4 * 3 * 3).reshape(4, 1, 3, 3)).requires_grad_()
    outs = []
    for norm in (lambda h: F.instance_norm(h), lambda h: F.group_norm(h, 2),
                 tt.nn.InstanceNorm2d(4), tt.nn.GroupNorm(2, 4, affine=False)):
        y = norm(F.conv2d(x, w, padding=1))
        z = tt.nn.ReLU(inplace=True)(y)
        assert z is y
        gx, gw = tt.autograd.grad((z * z.detach().cos()).sum(), (x, w))
        outs += [_np(z), _np(gx), _np(gw)]
    return outs


def test_relu_in_place_after_instance_norm_and_group_norm():
    """CycleGAN's generator (Conv2d, InstanceNorm2d, ReLU(True)) was refused: minidl's
    instance_norm and group_norm without affine returned a reshape of their internal result,
    which counted as a view, and an in-place op on a view in the graph is refused."""
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4))
    outs = _relu_in_place_after_norm(minidl, x)
    for z in outs[::3]:
        assert (z >= 0).all() and (z > 0).any()
    F = minidl.nn.functional

    def f(v):
        return F.relu(F.instance_norm(v * 1.5), inplace=True)

    def g(v):
        return F.relu(F.group_norm(v * 1.5, 2), inplace=True)

    v = minidl.from_numpy(np.random.default_rng(1).standard_normal((2, 4, 3))).requires_grad_()
    assert minidl.autograd.gradcheck(f, (v,)) and minidl.autograd.gradcheck(g, (v,))
    assert minidl.autograd.gradgradcheck(f, (v,)) and minidl.autograd.gradgradcheck(g, (v,))


def test_relu_in_place_after_instance_norm_and_group_norm_as_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4))
    for ours, theirs in zip(_relu_in_place_after_norm(minidl, x),
                            _relu_in_place_after_norm(torch, x)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def test_an_untracked_write_into_a_norm_result_is_still_seen_by_backward():
    """The result is no longer a view, but it shares its memory and version count with what
    the op saved: changing it in place without the graph still makes backward refuse."""
    F = minidl.nn.functional
    x = minidl.from_numpy(np.random.default_rng(2).standard_normal((2, 4, 5))).requires_grad_()
    y = F.instance_norm(x * 2.0)
    loss = (y * y).sum()
    with minidl.no_grad():
        y.mul_(3.0)
    with pytest.raises(RuntimeError, match="changed by an in-place operation"):
        loss.backward()


def _foreach_results(tt):
    rng = np.random.default_rng(5)
    a = [tt.from_numpy(rng.random((2, 3)) + 0.5), tt.from_numpy(rng.random(4) + 0.5)]
    b = [tt.from_numpy(rng.random((2, 3)) + 0.5), tt.from_numpy(rng.random(4) + 0.5)]
    out = []
    for name in ("add", "sub", "mul", "div", "pow", "maximum", "minimum", "clamp_min",
                 "clamp_max"):
        f = getattr(tt, "_foreach_" + name)
        for other in (b, 0.75, [0.5, 1.5]):
            if name in ("maximum", "minimum") and isinstance(other, list) and \
                    not isinstance(other[0], type(a[0])):
                continue
            out += f(a, other)
    out += tt._foreach_add(a, b, alpha=-2.5) + tt._foreach_mul(a, tt.tensor(3.0))
    for name in ("abs", "exp", "log", "sqrt", "rsqrt", "sigmoid", "neg", "reciprocal", "sin",
                 "tanh", "expm1", "log1p", "lgamma", "erf", "frac", "trunc"):
        out += getattr(tt, "_foreach_" + name)(a)
    out += tt._foreach_lerp(a, b, 0.3) + tt._foreach_lerp(a, b, [0.2, 0.9])
    out += tt._foreach_lerp(a, b, [c * 0 + 0.25 for c in b])
    out += tt._foreach_addcmul(a, a, b, value=0.5) + tt._foreach_addcdiv(a, a, b, [1.0, -2.0])
    out += tt._foreach_addcdiv(a, b, a, tt.tensor([0.5, 3.0], dtype=tt.float64))
    out += tt._foreach_norm(b) + tt._foreach_norm(b, 1) + tt._foreach_norm(b, float("inf"))
    out += tt._foreach_max(b)
    ema = [t.clone() for t in a]  # the EMA idiom: in place, one call for all
    back = tt._foreach_mul_(ema, 0.9)
    tt._foreach_add_(ema, b, alpha=0.1)
    tt._foreach_lerp_(ema, b, 0.5)
    tt._foreach_addcmul_(ema, a, b, value=-0.25)
    tt._foreach_maximum_(ema, [t * 0 + 0.9 for t in b])
    tt._foreach_sqrt_(ema)
    same = all(x is y for x, y in zip(back, ema))
    copy = [t * 0 for t in a]
    tt._foreach_copy_(copy, b)
    zero = [t.clone() for t in a]
    tt._foreach_zero_(zero)
    return [t.detach().numpy() for t in out + ema + copy + zero], same


def test_foreach_ops_as_in_model_ema_code():
    """The LLaMA program's weight EMA, torch._foreach_lerp_(ema, params, 1 - decay), failed:
    minidl had none of torch's _foreach_* ops (EMA code and hand-written optimizers use
    them). Now each is its Tensor op on every tensor of the list."""
    got, same = _foreach_results(minidl)
    assert same and len(got) == 112
    a = [minidl.tensor([1.0, 2.0]), minidl.tensor([3.0])]
    with pytest.raises(RuntimeError, match="at least one tensor"):
        minidl._foreach_add([], [])
    with pytest.raises(RuntimeError, match="same number of tensors, got 2 and 1"):
        minidl._foreach_mul_(a, a[:1])
    with pytest.raises(RuntimeError, match="same number of elements as scalar list"):
        minidl._foreach_add(a, [1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="list or tuple of Tensors"):
        minidl._foreach_exp(a[0])
    assert a[0].tolist() == [1.0, 2.0]  # nothing changed by the refused calls
    leaf = [minidl.ones(2, requires_grad=True)]
    with pytest.raises(RuntimeError, match="leaf"):
        minidl._foreach_add_(leaf, 1.0)


def test_copy_takes_non_blocking():
    """_foreach_copy_ passes non_blocking on, as EMA code does with p.copy_(q,
    non_blocking=True): minidl's copy_ took no such argument."""
    x = minidl.zeros(3, dtype=minidl.float64)
    assert x.copy_(minidl.tensor([1, 2, 3]), non_blocking=True) is x
    assert x.tolist() == [1.0, 2.0, 3.0] and x.dtype == minidl.float64


def test_foreach_ops_as_in_model_ema_code_as_torch():
    torch = pytest.importorskip("torch")
    ours, our_same = _foreach_results(minidl)
    theirs, their_same = _foreach_results(torch)
    assert our_same == their_same and len(ours) == len(theirs)
    for i, (x, y) in enumerate(zip(ours, theirs)):
        assert x.shape == y.shape, i
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14, err_msg=str(i))


def _foreach_grads(tt, a, b):
    def f(x, y, z):
        out = (tt._foreach_lerp([x, y], [z, z * 2], 0.3) + tt._foreach_mul([x, y], [z, x])
               + tt._foreach_addcdiv([x], [y], [z], value=0.5) + tt._foreach_sqrt([z])
               + tt._foreach_norm([x, y]) + tt._foreach_add([x], [y], alpha=2.0))
        return sum((o * (k + 1)).sum() for k, o in enumerate(out))
    return f


def test_foreach_ops_are_differentiable():
    rng = np.random.default_rng(6)
    x, y, z = (minidl.from_numpy(rng.random(3) + 0.5).requires_grad_() for _ in range(3))
    f = _foreach_grads(minidl, None, None)
    assert minidl.autograd.gradcheck(f, (x, y, z))
    assert minidl.autograd.gradgradcheck(f, (x, y, z))


def test_foreach_ops_are_differentiable_as_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    arrays = [rng.random(3) + 0.5 for _ in range(3)]
    grads = []
    for tt in (minidl, torch):
        xs = [tt.from_numpy(v.copy()).requires_grad_() for v in arrays]
        out = _foreach_grads(tt, None, None)(*xs)
        g = tt.autograd.grad(out, xs, create_graph=True)
        gg = tt.autograd.grad(sum((gi * gi).sum() for gi in g), xs)
        grads.append([out.item()] + [_np(t) for t in g + gg])
    for x, y in zip(*grads):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)
