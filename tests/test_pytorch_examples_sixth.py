"""A sixth set of programs, each written once as torch code and run unchanged by torch 2.13 and
by minidl (``tt`` is either module) from the same initial weights, in float64: a CTC speech
model (strided Conv1d, packed bidirectional GRU, CTCLoss, greedy decoding), seq2seq with Luong
attention and beam search, a YOLO-style loss with box ops and NMS, metric learning with the
margin losses, MoCo, BYOL, DINO, DistilBERT-style distillation, a physics-informed network, a
GPT with a KV cache and top-k / top-p sampling, PGD with TRADES, a Hessian-free Newton step, a
mixture density network, Barlow Twins, DLRM, WaveNet, a BiLSTM-CRF, a vocoder with a
multi-resolution STFT loss, unfold / fold denoising, a neural Turing machine, a multi-task
model with the less common losses, a TransformerDecoder captioner, soft actor-critic,
prototypical networks, N-BEATS, a complete training script (torch.compile, accumulation,
OneCycleLR, EMA, a checkpoint resumed), Gauss-Newton by torch.func.jacrev, a deep equilibrium
model, a TopK sparse autoencoder, NCF with BPR; then a char CNN (max-norm embeddings), an
adaptive-softmax LM with LSTM projections, R(2+1)D video, DGCNN, AdaIN, a Conformer block,
DeepAR, QAT by hand, Sinkhorn, a T5 encoder with Adafactor, a Set Transformer, GIN on a sparse
adjacency, SIREN, noisy student, an orthogonal RNN, Glow, decorrelated BN with Procrustes,
optical flow by grid_sample, evidential learning, ListMLE, DeepSurv, PixelCNN++, bicubic
super-resolution, Transformer-XL, sliding-window attention by as_strided, StyleGAN2, an RSSM
world model, a pointer network, an attentive neural process, SAGAN, BiT, a hierarchical
attention network, OHEM segmentation, an IRNN, unrolled MRI reconstruction with complex
layers, a last-layer Laplace approximation, length-bucketed batching, model surgery with a
checkpoint migration, neural cellular automata and 2-D Gaussian splatting.

minidl's random generator is its own (not torch's), so every draw the two runs share (data,
noise, masks, reparameterisation epsilons) comes from numpy. ``Tensor.data`` is minidl's
ndarray by design, so in-place updates of parameters are written under ``no_grad``. What the
programs found missing in minidl is fixed, each fix with its own test at the end."""
import copy
import io
import math

import numpy as np
import pytest

import minidl

try:
    import torch
except ImportError:
    torch = None


from _program_parity import _load, _np, _params, _parity  # noqa: E402


# ---- 1. CTC speech recognition: Conv1d front end, packed bidirectional GRU, greedy decoding --
def ctc_speech(tt, state=None, steps=3, padded_targets=False):
    nn, F = tt.nn, tt.nn.functional

    class SpeechRecognizer(nn.Module):
        def __init__(self, n_mels=6, hidden=5, n_tokens=5):
            super().__init__()
            self.frontend = nn.Sequential(nn.Conv1d(n_mels, 8, 3, stride=2, padding=1),
                                          nn.BatchNorm1d(8), nn.GELU())
            self.rnn = nn.GRU(8, hidden, num_layers=2, batch_first=True, bidirectional=True)
            self.classifier = nn.Linear(2 * hidden, n_tokens)

        def forward(self, x, lengths):
            x = self.frontend(x).transpose(1, 2)
            lengths = (lengths + 2 * 1 - 3) // 2 + 1
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True,
                                                       enforce_sorted=False)
            out, _ = self.rnn(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
            return self.classifier(out).log_softmax(dim=-1), lengths

    def greedy_decode(log_probs, lengths, blank=0):
        best = log_probs.argmax(dim=-1)
        texts = []
        for seq, n in zip(best, lengths.tolist()):
            tokens = tt.unique_consecutive(seq[:n])
            texts.append([t for t in tokens.tolist() if t != blank])
        return texts

    rng = np.random.default_rng(60)
    feats = rng.standard_normal((4, 6, 20))
    lengths = np.array([20, 17, 13, 9])
    for i, n in enumerate(lengths):
        feats[i, :, n:] = 0.0
    target_lengths = np.array([3, 4, 2, 2])
    labels = rng.integers(1, 5, (4, 4))
    model = SpeechRecognizer().double()
    _load(model, tt, state)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    opt = tt.optim.NAdam(model.parameters(), lr=1e-2)
    x, x_lengths = tt.from_numpy(feats), tt.from_numpy(lengths)
    if padded_targets:
        targets = tt.from_numpy(labels)
    else:
        targets = tt.cat([tt.from_numpy(labels[i, :n]) for i, n in enumerate(target_lengths)])
    target_lengths = tt.tensor(target_lengths.tolist())
    losses = []
    for _ in range(steps):
        model.train()
        log_probs, out_lengths = model(x, x_lengths)
        loss = ctc(log_probs.transpose(0, 1), targets, out_lengths, target_lengths)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        losses.append(loss.item())
    model.eval()
    with tt.no_grad():
        log_probs, out_lengths = model(x, x_lengths)
        per_utterance = F.ctc_loss(log_probs.transpose(0, 1), targets, out_lengths,
                                   target_lengths, reduction="none")
    return {"losses": losses, "per_utterance": _np(per_utterance),
            "decoded": repr(greedy_decode(log_probs, out_lengths)),
            "lengths": repr(out_lengths.tolist()), "params": _params(model)}


def test_ctc_speech_model_trains_the_same():
    _parity(ctc_speech)


def test_ctc_speech_model_with_padded_targets_trains_the_same():
    _parity(ctc_speech, padded_targets=True)


def test_ctc_speech_model_runs_in_minidl():
    out = ctc_speech(minidl, steps=2)
    assert np.isfinite(out["losses"]).all() and out["lengths"] == "[10, 9, 7, 5]"


# ---- 2. seq2seq with Luong attention, scheduled teacher forcing, beam search -----------------
def luong_seq2seq(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    PAD, SOS, EOS, V, H = 0, 1, 2, 9, 8

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(V, H, padding_idx=PAD)
            self.gru = nn.GRU(H, H, batch_first=True)

        def forward(self, src):
            return self.gru(self.embedding(src))

    class LuongDecoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(V, H, padding_idx=PAD)
            self.gru = nn.GRU(H, H, batch_first=True)
            self.attn = nn.Linear(H, H, bias=False)  # the "general" score
            self.concat = nn.Linear(2 * H, H)
            self.out = nn.Linear(H, V)

        def forward(self, token, hidden, enc_out, src_mask):
            out, hidden = self.gru(self.embedding(token).unsqueeze(1), hidden)
            scores = tt.bmm(self.attn(enc_out), out.transpose(1, 2)).squeeze(2)
            weights = F.softmax(scores.masked_fill(~src_mask, float("-inf")), dim=1)
            context = tt.bmm(weights.unsqueeze(1), enc_out).squeeze(1)
            h = tt.tanh(self.concat(tt.cat((out.squeeze(1), context), dim=1)))
            return F.log_softmax(self.out(h), dim=-1), hidden, weights

    def beam_search(src, beam_width=3, max_len=6):
        enc_out, hidden = encoder(src)
        mask = src != PAD
        beams = [(0.0, [SOS], hidden)]
        finished = []
        for _ in range(max_len):
            candidates = []
            for score, tokens, h in beams:
                logp, h2, _ = decoder(tt.tensor([tokens[-1]]), h, enc_out, mask)
                top, idx = logp[0].topk(beam_width)
                for lp, i in zip(top.tolist(), idx.tolist()):
                    candidates.append((score + lp, tokens + [i], h2))
            candidates.sort(key=lambda c: c[0], reverse=True)
            beams = []
            for c in candidates[:beam_width]:
                (finished if c[1][-1] == EOS else beams).append(c)
            if not beams:
                break
        finished += beams
        best = max(finished, key=lambda c: c[0] / len(c[1]))
        return best[1], [round(c[0], 12) for c in finished]

    rng = np.random.default_rng(61)
    src = rng.integers(3, V, (5, 6))
    src[1, 4:] = PAD
    src[3, 3:] = PAD
    tgt = np.concatenate([np.flip(src, 1)[:, :4], np.full((5, 1), EOS)], axis=1)
    teacher = rng.random((steps, tgt.shape[1])) < 0.6
    encoder, decoder = Encoder().double(), LuongDecoder().double()
    _load(encoder, tt, state, "enc.")
    _load(decoder, tt, state, "dec.")
    params = list(encoder.parameters()) + list(decoder.parameters())
    opt = tt.optim.RAdam(params, lr=1e-2, decoupled_weight_decay=True, weight_decay=1e-3)
    src_t, tgt_t = tt.from_numpy(src), tt.from_numpy(tgt)
    losses = []
    for step in range(steps):
        enc_out, hidden = encoder(src_t)
        token = tt.full((5,), SOS, dtype=tt.long)
        loss = 0
        for t in range(tgt.shape[1]):
            logp, hidden, _ = decoder(token, hidden, enc_out, src_t != PAD)
            loss = loss + F.nll_loss(logp, tgt_t[:, t], ignore_index=PAD)
            token = tgt_t[:, t] if teacher[step, t] else logp.argmax(1).detach()
        loss = loss / tgt.shape[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():
        best, scores = beam_search(src_t[:1])
    return {"losses": losses, "beam": repr(best), "beam_scores": scores,
            "params": {**_params(encoder, "enc."), **_params(decoder, "dec.")}}


def test_luong_seq2seq_with_beam_search_trains_the_same():
    _parity(luong_seq2seq)


def test_luong_seq2seq_runs_in_minidl():
    out = luong_seq2seq(minidl, steps=2)
    assert np.isfinite(out["losses"]).all() and out["beam"].startswith("[1,")


# ---- 3. a YOLO-style detection loss with hand-written box ops, then NMS ----------------------
def yolo(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    S, B, C = 2, 2, 3

    def cxcywh_to_xyxy(b):
        cx, cy, w, h = b.unbind(-1)
        return tt.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)

    def box_iou(a, b):
        a, b = cxcywh_to_xyxy(a), cxcywh_to_xyxy(b)
        lt = tt.max(a[..., :2], b[..., :2])
        rb = tt.min(a[..., 2:], b[..., 2:])
        wh = (rb - lt).clamp(min=0)
        inter = wh[..., 0] * wh[..., 1]
        area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
        return inter / (area(a) + area(b) - inter + 1e-9)

    class TinyYolo(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 4, 3, padding=1), nn.LeakyReLU(0.1), nn.MaxPool2d(2),
                nn.Conv2d(4, 8, 3, padding=1), nn.LeakyReLU(0.1), nn.AdaptiveAvgPool2d(S))
            self.head = nn.Conv2d(8, B * 5 + C, 1)

        def forward(self, x):
            return self.head(self.features(x)).permute(0, 2, 3, 1)

    def yolo_loss(pred, target_box, obj, cls, l_coord=5.0, l_noobj=0.5):
        boxes = pred[..., :B * 5].reshape(*pred.shape[:3], B, 5).sigmoid()
        ious = box_iou(boxes[..., :4], target_box.unsqueeze(3).expand_as(boxes[..., :4]))
        best = ious.argmax(dim=-1)
        resp = F.one_hot(best, B).to(pred.dtype) * obj.unsqueeze(-1)
        xy_loss = ((boxes[..., :2] - target_box.unsqueeze(3)[..., :2]) ** 2).sum(-1)
        wh_loss = ((boxes[..., 2:4].sqrt() - target_box.unsqueeze(3)[..., 2:].sqrt()) ** 2).sum(-1)
        coord = l_coord * (resp * (xy_loss + wh_loss)).sum()
        conf = boxes[..., 4]
        obj_loss = (resp * (conf - ious.detach()) ** 2).sum()
        noobj_loss = l_noobj * ((1 - resp) * conf ** 2).sum()
        cls_loss = F.cross_entropy(pred[..., B * 5:][obj.bool()], cls[obj.bool()],
                                   reduction="sum")
        return (coord + obj_loss + noobj_loss + cls_loss) / pred.shape[0]

    def nms(boxes, scores, threshold=0.3):
        order = scores.argsort(descending=True)
        keep = []
        while order.numel() > 0:
            i = order[0]
            keep.append(i.item())
            if order.numel() == 1:
                break
            iou = box_iou(boxes[i].unsqueeze(0), boxes[order[1:]])
            order = order[1:][iou <= threshold]
        return tt.tensor(keep, dtype=tt.long)

    rng = np.random.default_rng(62)
    images = rng.standard_normal((4, 1, 8, 8))
    target_box = rng.uniform(0.2, 0.8, (4, S, S, 4))
    obj = (rng.random((4, S, S)) < 0.5).astype(np.float64)
    obj[0, 0, 0] = 1.0
    cls = rng.integers(0, C, (4, S, S))
    model = TinyYolo().double()
    _load(model, tt, state)
    opt = tt.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                       weight_decay=5e-4)
    warmup = tt.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 2))
    args = [tt.from_numpy(a) for a in (target_box, obj, cls)]
    losses = []
    for _ in range(steps):
        loss = yolo_loss(model(tt.from_numpy(images)), *args)
        opt.zero_grad()
        loss.backward()
        opt.step()
        warmup.step()
        losses.append(loss.item())
    with tt.no_grad():
        pred = model(tt.from_numpy(images[:1]))[0]
        boxes = pred[..., :B * 5].reshape(S, S, B, 5).sigmoid()
        probs = pred[..., B * 5:].softmax(-1)
        scores = (boxes[..., 4:5] * probs.unsqueeze(2)).amax(-1).reshape(-1)
        keep = nms(boxes[..., :4].reshape(-1, 4), scores)
    return {"losses": losses, "keep": repr(keep.tolist()), "scores": _np(scores),
            "params": _params(model)}


def test_yolo_loss_trains_the_same():
    _parity(yolo)


def test_yolo_loss_runs_in_minidl():
    out = yolo(minidl, steps=2)
    assert np.isfinite(out["losses"]).all() and out["keep"].startswith("[")


# ---- 4. metric learning: batch-hard triplets, a custom distance, the margin losses -----------
def metric_learning(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class EmbeddingNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(6, 10), nn.SiLU(), nn.Linear(10, 4))

        def forward(self, x):
            return F.normalize(self.body(x), p=2, dim=1)

    def batch_hard(emb, labels):
        dist = tt.cdist(emb, emb)
        same = labels.unsqueeze(0) == labels.unsqueeze(1)
        hardest_pos = dist.masked_fill(~same, 0.0).max(dim=1).values
        hardest_neg = dist.masked_fill(same, float("inf")).min(dim=1).values
        return hardest_pos, hardest_neg, dist

    rng = np.random.default_rng(63)
    centers = rng.standard_normal((3, 6)) * 2
    labels_np = np.repeat(np.arange(3), 4)
    x = tt.from_numpy(centers[labels_np] + rng.standard_normal((12, 6)))
    labels = tt.from_numpy(labels_np)
    triplet_idx = rng.integers(0, 4, (steps, 6, 3))
    model = EmbeddingNet().double()
    _load(model, tt, state)
    cosine = nn.TripletMarginWithDistanceLoss(
        distance_function=lambda a, b: 1.0 - F.cosine_similarity(a, b), margin=0.3, swap=True)
    ranking = nn.MarginRankingLoss(margin=0.2)
    hinge = nn.HingeEmbeddingLoss(margin=1.0)
    opt = tt.optim.Adamax(model.parameters(), lr=2e-2)
    losses = []
    for step in range(steps):
        emb = model(x)
        pos, neg, dist = batch_hard(emb, labels)
        loss = ranking(neg, pos, tt.ones_like(pos))
        pair_target = tt.where(labels.unsqueeze(0) == labels.unsqueeze(1), 1.0, -1.0)
        loss = loss + hinge(dist.flatten(), pair_target.flatten().to(dist.dtype))
        a_i = tt.from_numpy(triplet_idx[step, :, 0] + 4 * (np.arange(6) % 3))
        p_i = tt.from_numpy(triplet_idx[step, :, 1] + 4 * (np.arange(6) % 3))
        n_i = tt.from_numpy(triplet_idx[step, :, 2] + 4 * ((np.arange(6) + 1) % 3))
        loss = loss + cosine(emb[a_i], emb[p_i], emb[n_i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():
        emb = model(x)
        nearest = tt.cdist(emb, emb).fill_diagonal_(float("inf")).argmin(dim=1)
    return {"losses": losses, "nearest": repr(nearest.tolist()), "params": _params(model)}


def test_metric_learning_trains_the_same():
    _parity(metric_learning)


def test_metric_learning_runs_in_minidl():
    out = metric_learning(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 5. MoCo: a momentum key encoder and a queue of negatives --------------------------------
def moco(tt, state=None, steps=4):
    nn, F = tt.nn, tt.nn.functional

    class MoCo(nn.Module):
        def __init__(self, dim=4, K=12, m=0.9, T=0.2):
            super().__init__()
            self.K, self.m, self.T = K, m, T
            self.encoder_q = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(),
                                           nn.Linear(8, dim))
            self.encoder_k = copy.deepcopy(self.encoder_q)
            for param_k in self.encoder_k.parameters():
                param_k.requires_grad = False
            self.register_buffer("queue", tt.zeros(dim, K, dtype=tt.float64))
            self.register_buffer("queue_ptr", tt.zeros(1, dtype=tt.long))

        @tt.no_grad()
        def _momentum_update_key_encoder(self):
            for param_q, param_k in zip(self.encoder_q.parameters(),
                                        self.encoder_k.parameters()):
                param_k.mul_(self.m).add_(param_q.detach(), alpha=1.0 - self.m)

        @tt.no_grad()
        def _dequeue_and_enqueue(self, keys):
            batch_size = keys.shape[0]
            ptr = int(self.queue_ptr)
            self.queue[:, ptr:ptr + batch_size] = keys.T
            self.queue_ptr[0] = (ptr + batch_size) % self.K

        def forward(self, im_q, im_k):
            q = F.normalize(self.encoder_q(im_q), dim=1)
            with tt.no_grad():
                self._momentum_update_key_encoder()
                k = F.normalize(self.encoder_k(im_k), dim=1)
            l_pos = tt.einsum("nc,nc->n", [q, k]).unsqueeze(-1)
            l_neg = tt.einsum("nc,ck->nk", [q, self.queue.clone().detach()])
            logits = tt.cat([l_pos, l_neg], dim=1) / self.T
            labels = tt.zeros(logits.shape[0], dtype=tt.long)
            self._dequeue_and_enqueue(k)
            return logits, labels

    rng = np.random.default_rng(64)
    base = rng.standard_normal((steps, 6, 6))
    views = base[:, None] + 0.3 * rng.standard_normal((steps, 2, 6, 6))
    queue0 = rng.standard_normal((4, 12))
    model = MoCo().double()
    with tt.no_grad():
        model.queue.copy_(F.normalize(tt.from_numpy(queue0), dim=0))
    _load(model, tt, state)
    opt = tt.optim.SGD(model.encoder_q.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()
    losses, accs = [], []
    for i in range(steps):
        output, target = model(tt.from_numpy(views[i, 0]), tt.from_numpy(views[i, 1]))
        loss = criterion(output, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        accs.append((output.argmax(1) == target).double().mean().item())
    return {"losses": losses, "accs": accs, "ptr": repr(model.queue_ptr.tolist()),
            "params": _params(model)}


def test_moco_trains_the_same():
    _parity(moco)


def test_moco_runs_in_minidl():
    out = moco(minidl, steps=3)
    assert np.isfinite(out["losses"]).all() and out["ptr"] == "[6]"


# ---- 6. BYOL: an online network with a predictor, an EMA target, a symmetric cosine loss ------
def byol(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    def mlp(dim_in, hidden, dim_out):
        return nn.Sequential(nn.Linear(dim_in, hidden), nn.BatchNorm1d(hidden),
                             nn.ReLU(inplace=True), nn.Linear(hidden, dim_out))

    class BYOL(nn.Module):
        def __init__(self, beta=0.9):
            super().__init__()
            self.beta = beta
            self.online_encoder = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), mlp(8, 8, 4))
            self.online_predictor = mlp(4, 8, 4)
            self.target_encoder = copy.deepcopy(self.online_encoder)
            self.target_encoder.requires_grad_(False)

        @tt.no_grad()
        def update_moving_average(self):
            for online, target in zip(self.online_encoder.parameters(),
                                      self.target_encoder.parameters()):
                target.lerp_(online, 1 - self.beta)

        def forward(self, x1, x2):
            def loss_fn(x, y):
                x, y = F.normalize(x, dim=-1, p=2), F.normalize(y, dim=-1, p=2)
                return 2 - 2 * (x * y).sum(dim=-1)

            p1 = self.online_predictor(self.online_encoder(x1))
            p2 = self.online_predictor(self.online_encoder(x2))
            with tt.no_grad():
                z1, z2 = self.target_encoder(x1), self.target_encoder(x2)
            return (loss_fn(p1, z2.detach()) + loss_fn(p2, z1.detach())).mean()

    rng = np.random.default_rng(65)
    data = rng.standard_normal((8, 5))
    noise = 0.2 * rng.standard_normal((steps, 2, 8, 5))
    model = BYOL().double()
    _load(model, tt, state)
    trainable = [p for p in model.parameters() if p.requires_grad]
    # a Linear before BatchNorm has a bias gradient of rounding noise, which Adam would amplify
    opt = tt.optim.SGD(trainable, lr=0.05, momentum=0.9, weight_decay=1.5e-6)
    losses = []
    for i in range(steps):
        loss = model(tt.from_numpy(data + noise[i, 0]), tt.from_numpy(data + noise[i, 1]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.update_moving_average()
        losses.append(loss.item())
    return {"losses": losses, "n_trainable": repr(len(trainable)), "params": _params(model)}


def test_byol_trains_the_same():
    _parity(byol)


def test_byol_runs_in_minidl():
    out = byol(minidl, steps=2)
    assert np.isfinite(out["losses"]).all() and out["n_trainable"] == "14"


# ---- 7. DINO: multi-crop self-distillation with a centred, sharpened teacher ----------------
def dino(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class DINOHead(nn.Module):
        def __init__(self, in_dim=8, out_dim=6, bottleneck=4):
            super().__init__()
            self.mlp = nn.Sequential(nn.Linear(in_dim, 8), nn.GELU(), nn.Linear(8, bottleneck))
            self.last_layer = nn.utils.parametrizations.weight_norm(
                nn.Linear(bottleneck, out_dim, bias=False))
            with tt.no_grad():
                self.last_layer.parametrizations.weight.original0.fill_(1)

        def forward(self, x):
            return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)

        def forward(self, x):
            return F.adaptive_avg_pool2d(F.relu(self.conv(x)), 1).flatten(1)

    class DINOLoss(nn.Module):
        def __init__(self, out_dim=6, student_temp=0.1, teacher_temp=0.04, center_momentum=0.9):
            super().__init__()
            self.student_temp, self.teacher_temp = student_temp, teacher_temp
            self.center_momentum = center_momentum
            self.register_buffer("center", tt.zeros(1, out_dim, dtype=tt.float64))

        def forward(self, student_output, teacher_output, n_crops, n_global=2):
            student_out = (student_output / self.student_temp).chunk(n_crops)
            teacher_out = F.softmax((teacher_output - self.center) / self.teacher_temp, dim=-1)
            teacher_out = teacher_out.detach().chunk(n_global)
            total, n_terms = 0, 0
            for iq, q in enumerate(teacher_out):
                for v in range(n_crops):
                    if v == iq:
                        continue
                    total = total + tt.sum(-q * F.log_softmax(student_out[v], dim=-1),
                                           dim=-1).mean()
                    n_terms += 1
            self.update_center(teacher_output)
            return total / n_terms

        @tt.no_grad()
        def update_center(self, teacher_output):
            batch_center = tt.sum(teacher_output, dim=0, keepdim=True) / len(teacher_output)
            self.center = self.center * self.center_momentum + batch_center * (
                1 - self.center_momentum)

    rng = np.random.default_rng(66)
    images = rng.standard_normal((steps, 4, 1, 8, 8))
    student = nn.Sequential(Backbone(), DINOHead()).double()
    teacher = nn.Sequential(Backbone(), DINOHead()).double()
    _load(student, tt, state, "s.")
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    criterion = DINOLoss()
    opt = tt.optim.AdamW(student.parameters(), lr=5e-3, weight_decay=0.04)
    losses = []
    for i in range(steps):
        batch = tt.from_numpy(images[i])
        globals_ = [batch, tt.flip(batch, dims=[3])]
        locals_ = [F.interpolate(batch[..., 1:7, 1:7], size=(4, 4), mode="bilinear",
                                 align_corners=False),
                   F.interpolate(batch[..., :5, 3:], size=(4, 4), mode="nearest")]
        teacher_output = teacher(tt.cat(globals_))
        student_output = tt.cat([student(tt.cat(globals_)), student(tt.cat(locals_))])
        loss = criterion(student_output, teacher_output, n_crops=4)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with tt.no_grad():
            m = 0.95
            for param_q, param_k in zip(student.parameters(), teacher.parameters()):
                param_k.mul_(m).add_((1 - m) * param_q.detach())
        losses.append(loss.item())
    return {"losses": losses, "center": _np(criterion.center),
            "params": {**_params(student, "s."), **_params(teacher, "t.")}}


def test_dino_trains_the_same():
    _parity(dino)


def test_dino_runs_in_minidl():
    out = dino(minidl, steps=2)
    assert np.isfinite(out["losses"]).all() and out["center"].shape == (1, 6)


# ---- 8. DistilBERT-style distillation: KLDivLoss on log-probabilities, hidden-state alignment -
def distillation(tt, state=None, steps=3, log_target=True):
    nn, F = tt.nn, tt.nn.functional

    class Classifier(nn.Module):
        def __init__(self, hidden, layers):
            super().__init__()
            self.embed = nn.Embedding(12, hidden)
            self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
            self.head = nn.Linear(hidden, 4)

        def forward(self, ids):
            h = self.embed(ids).mean(1)
            hidden_states = []
            for layer in self.layers:
                h = h + F.gelu(layer(h), approximate="tanh")
                hidden_states.append(h)
            return self.head(h), hidden_states

    rng = np.random.default_rng(67)
    ids = tt.from_numpy(rng.integers(0, 12, (6, 5)))
    labels = tt.from_numpy(rng.integers(0, 4, 6))
    teacher, student = Classifier(6, 4).double(), Classifier(6, 2).double()
    _load(teacher, tt, state, "t.")
    _load(student, tt, state, "s.")
    teacher.eval()
    kl = nn.KLDivLoss(reduction="batchmean", log_target=log_target)
    cos = nn.CosineEmbeddingLoss()
    opt = tt.optim.AdamW(student.parameters(), lr=5e-3)
    T, alpha = 2.0, 0.5
    losses = []
    for _ in range(steps):
        with tt.no_grad():
            t_logits, t_hidden = teacher(ids)
        s_logits, s_hidden = student(ids)
        target = F.log_softmax(t_logits / T, dim=-1)
        if not log_target:
            target = target.exp()
        loss_kd = kl(F.log_softmax(s_logits / T, dim=-1), target) * T ** 2
        loss_ce = F.cross_entropy(s_logits, labels)
        s_h, t_h = s_hidden[-1], t_hidden[-1]
        loss_cos = cos(s_h, t_h, tt.ones(s_h.size(0), dtype=s_h.dtype))
        loss = alpha * loss_kd + (1 - alpha) * loss_ce + loss_cos
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "params": {**_params(teacher, "t."), **_params(student, "s.")}}


def test_distillation_with_log_target_trains_the_same():
    _parity(distillation)


def test_distillation_with_probability_target_trains_the_same():
    _parity(distillation, log_target=False)


def test_distillation_runs_in_minidl():
    a = distillation(minidl)
    b = distillation(minidl, state=None, log_target=False)
    assert np.isfinite(a["losses"]).all() and np.isfinite(b["losses"]).all()


# ---- 9. a physics-informed network: Burgers' equation residual by autograd, Adam then LBFGS --
def pinn(tt, state=None, steps=3):
    nn = tt.nn

    class PINN(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(2, 10), nn.Tanh(), nn.Linear(10, 10), nn.Tanh(),
                                     nn.Linear(10, 1))

        def forward(self, x, t):
            return self.net(tt.cat([x, t], dim=1))

    def residual(model, x, t, nu=0.01 / math.pi):
        u = model(x, t)
        u_t, u_x = tt.autograd.grad(u, [t, x], grad_outputs=tt.ones_like(u), create_graph=True)
        u_xx = tt.autograd.grad(u_x.sum(), x, create_graph=True)[0]
        return u_t + u * u_x - nu * u_xx

    rng = np.random.default_rng(68)
    xc = tt.from_numpy(rng.uniform(-1, 1, (16, 1))).requires_grad_(True)
    tc = tt.from_numpy(rng.uniform(0, 1, (16, 1))).requires_grad_(True)
    x0 = tt.from_numpy(rng.uniform(-1, 1, (8, 1)))
    u0 = -tt.sin(math.pi * x0)
    xb = tt.from_numpy(np.repeat([[-1.0], [1.0]], 4, axis=0))
    tb = tt.from_numpy(rng.uniform(0, 1, (8, 1)))
    model = PINN().double()
    _load(model, tt, state)
    mse = nn.MSELoss()

    def loss_fn():
        f = residual(model, xc, tc)
        return (mse(f, tt.zeros_like(f)) + mse(model(x0, tt.zeros_like(x0)), u0)
                + model(xb, tb).pow(2).mean())

    adam = tt.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        adam.zero_grad()
        loss = loss_fn()
        loss.backward()
        adam.step()
        losses.append(loss.item())
    lbfgs = tt.optim.LBFGS(model.parameters(), lr=1.0, max_iter=4, history_size=5,
                           line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    for _ in range(min(steps, 2)):
        losses.append(lbfgs.step(closure).item())
    return {"losses": losses, "params": _params(model)}


def test_pinn_trains_the_same():
    _parity(pinn)


def test_pinn_runs_in_minidl():
    out = pinn(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 10. a GPT with a KV cache; top-k / top-p filtering and sampling with a seeded generator --
def gpt_sampling(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    V, D, NH, L = 11, 8, 2, 8

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(D, 3 * D)
            self.c_proj = nn.Linear(D, D)

        def forward(self, x, past=None):
            B, T, _ = x.size()
            q, k, v = self.c_attn(x).split(D, dim=2)
            q, k, v = (z.view(B, T, NH, D // NH).transpose(1, 2) for z in (q, k, v))
            if past is not None:
                k, v = tt.cat([past[0], k], dim=2), tt.cat([past[1], v], dim=2)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=past is None and T > 1)
            return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, D)), (k, v)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(D), nn.LayerNorm(D)
            self.attn = CausalSelfAttention()
            self.mlp = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(approximate="tanh"),
                                     nn.Linear(4 * D, D))

        def forward(self, x, past=None):
            a, present = self.attn(self.ln_1(x), past)
            x = x + a
            return x + self.mlp(self.ln_2(x)), present

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(V, D), nn.Embedding(L, D)
            self.h = nn.ModuleList([Block(), Block()])
            self.ln_f = nn.LayerNorm(D)
            self.lm_head = nn.Linear(D, V, bias=False)
            self.lm_head.weight = self.wte.weight

        def forward(self, idx, past_key_values=None):
            start = 0 if past_key_values is None else past_key_values[0][0].size(2)
            pos = tt.arange(start, start + idx.size(1), dtype=tt.long).unsqueeze(0)
            x = self.wte(idx) + self.wpe(pos)
            presents = []
            for i, block in enumerate(self.h):
                x, present = block(x, None if past_key_values is None else past_key_values[i])
                presents.append(present)
            return self.lm_head(self.ln_f(x)), presents

    def top_k_top_p_filtering(logits, top_k=0, top_p=1.0, filter_value=-float("Inf")):
        if top_k > 0:
            kth = tt.topk(logits, top_k)[0][..., -1, None]
            logits = logits.masked_fill(logits < kth, filter_value)
        if top_p < 1.0:
            sorted_logits, sorted_indices = tt.sort(logits, descending=True)
            cumulative_probs = tt.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
            sorted_indices_to_remove = cumulative_probs > top_p
            sorted_indices_to_remove[..., 1:] = sorted_indices_to_remove[..., :-1].clone()
            sorted_indices_to_remove[..., 0] = 0
            indices_to_remove = sorted_indices_to_remove.scatter(
                -1, sorted_indices, sorted_indices_to_remove)
            logits = logits.masked_fill(indices_to_remove, filter_value)
        return logits

    rng = np.random.default_rng(69)
    data = tt.from_numpy(rng.integers(0, V, (4, L + 1)))
    model = GPT().double()
    _load(model, tt, state)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = tt.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                          {"params": no_decay, "weight_decay": 0.0}], lr=1e-2, betas=(0.9, 0.95))
    losses = []
    for _ in range(steps):
        logits, _ = model(data[:, :-1])
        loss = F.cross_entropy(logits.view(-1, V), data[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    out = {"losses": losses, "params": _params(model)}
    with tt.no_grad():
        prompt = data[:2, :3]
        full, _ = model(prompt)
        logits, past = model(prompt[:, :2])
        step_logits, past = model(prompt[:, 2:], past_key_values=past)
        out["cache_error"] = (step_logits[:, -1] - full[:, -1]).abs().max().item()
        filtered = top_k_top_p_filtering(step_logits[:, -1], top_k=6, top_p=0.8)
        probs = F.softmax(filtered, dim=-1)
        out["filtered_probs"] = _np(probs)
        out["kept"] = repr(tt.isfinite(filtered).sum(dim=-1).tolist())
        g = tt.Generator().manual_seed(1234)
        tokens = prompt
        for _ in range(4):
            logits, past = model(tokens[:, -1:], past_key_values=past)
            probs = F.softmax(top_k_top_p_filtering(logits[:, -1] / 0.9, top_k=6, top_p=0.8), -1)
            next_token = tt.multinomial(probs, num_samples=1, generator=g)
            assert bool((probs.gather(1, next_token) > 0).all())
            tokens = tt.cat([tokens, next_token], dim=1)
        out["shape"] = repr(tuple(tokens.shape))
        g2 = tt.Generator().manual_seed(1234)
        same = tt.multinomial(probs, 5, replacement=True, generator=g2)
        again = tt.multinomial(probs, 5, replacement=True,
                               generator=tt.Generator().manual_seed(1234))
        out["reproducible"] = repr(bool((same == again).all()))
    return out


def test_gpt_with_kv_cache_and_nucleus_sampling_trains_the_same():
    out = _parity(gpt_sampling)
    assert out["cache_error"] < 1e-12 and out["shape"] == "(2, 7)"


def test_gpt_sampling_runs_in_minidl():
    out = gpt_sampling(minidl, steps=2)
    assert out["reproducible"] == "True" and np.isfinite(out["losses"]).all()


# ---- 11. PGD adversarial training with the TRADES loss ---------------------------------------
def pgd_trades(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.fc = nn.Linear(4 * 4 * 4, 3)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
            return self.fc(x.flatten(1))

    def pgd_attack(model, x, y, delta0, eps=0.1, alpha=0.03, iters=3):
        x_adv = (x + delta0).clamp(0, 1).detach()
        for _ in range(iters):
            x_adv.requires_grad_(True)
            loss = F.cross_entropy(model(x_adv), y)
            grad, = tt.autograd.grad(loss, [x_adv])
            x_adv = x_adv.detach() + alpha * grad.sign()
            x_adv = tt.min(tt.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
        return x_adv.detach()

    def trades_loss(model, x, y, delta0, beta=6.0, eps=0.1, alpha=0.03, iters=3):
        criterion_kl = nn.KLDivLoss(reduction="sum")
        model.eval()
        x_adv = x.detach() + delta0
        p_nat = F.softmax(model(x), dim=1).detach()
        for _ in range(iters):
            x_adv.requires_grad_()
            with tt.enable_grad():
                loss_kl = criterion_kl(F.log_softmax(model(x_adv), dim=1), p_nat)
            grad = tt.autograd.grad(loss_kl, [x_adv])[0]
            x_adv = x_adv.detach() + alpha * tt.sign(grad.detach())
            x_adv = tt.min(tt.max(x_adv, x - eps), x + eps)
            x_adv = tt.clamp(x_adv, 0.0, 1.0)
        model.train()
        logits = model(x)
        loss_natural = F.cross_entropy(logits, y)
        loss_robust = (1.0 / x.size(0)) * criterion_kl(F.log_softmax(model(x_adv), dim=1),
                                                      F.softmax(model(x), dim=1))
        return loss_natural + beta * loss_robust

    rng = np.random.default_rng(70)
    x = tt.from_numpy(rng.uniform(0, 1, (6, 1, 8, 8)))
    y = tt.from_numpy(rng.integers(0, 3, 6))
    deltas = rng.uniform(-0.1, 0.1, (steps, 2, 6, 1, 8, 8)) * 0.01
    model = Net().double()
    _load(model, tt, state)
    opt = tt.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=2e-4)
    losses, robust = [], []
    for i in range(steps):
        loss = trades_loss(model, x, y, tt.from_numpy(deltas[i, 0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        model.eval()
        x_adv = pgd_attack(model, x, y, tt.from_numpy(deltas[i, 1]))
        with tt.no_grad():
            robust.append((model(x_adv).argmax(1) == y).sum().item())
        linf = (x_adv - x).abs().max().item()
        assert linf <= 0.1 + 1e-12
        model.train()
    return {"losses": losses, "robust": robust, "params": _params(model)}


def test_pgd_with_trades_trains_the_same():
    _parity(pgd_trades)


def test_pgd_with_trades_runs_in_minidl():
    out = pgd_trades(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 12. a Hessian-free (truncated Newton) step: conjugate gradient on Hessian-vector products -
def hessian_free(tt, state=None, steps=3, hvp_by="double_backward"):
    nn, F = tt.nn, tt.nn.functional
    from_vec = nn.utils.vector_to_parameters
    to_vec = nn.utils.parameters_to_vector

    rng = np.random.default_rng(71)
    x = tt.from_numpy(rng.standard_normal((20, 4)))
    y = tt.from_numpy((rng.random(20) < 0.5).astype(np.float64))
    model = nn.Sequential(nn.Linear(4, 5), nn.Softplus(), nn.Linear(5, 1)).double()
    _load(model, tt, state)
    params = list(model.parameters())
    names = [n for n, _ in model.named_parameters()]

    def loss_of(vec):
        p = {}
        offset = 0
        for n, t in zip(names, params):
            p[n] = vec[offset:offset + t.numel()].view_as(t)
            offset += t.numel()
        out = tt.func.functional_call(model, p, (x,))
        return F.binary_cross_entropy_with_logits(out.squeeze(1), y) + 1e-3 * vec.pow(2).sum()

    def model_loss():
        return F.binary_cross_entropy_with_logits(model(x).squeeze(1), y) + 1e-3 * sum(
            p.pow(2).sum() for p in params)

    def hvp(v):
        if hvp_by == "functional":
            return tt.autograd.functional.hvp(loss_of, to_vec(params).detach(), v)[1]
        grads = tt.autograd.grad(model_loss(), params, create_graph=True)
        flat = tt.cat([g.reshape(-1) for g in grads])
        hv = tt.autograd.grad(flat @ v, params)
        return tt.cat([h.reshape(-1) for h in hv])

    def conjugate_gradient(b, iters=5, tol=1e-10, damping=0.1):
        xk = tt.zeros_like(b)
        r = b.clone()
        p = r.clone()
        rs = r @ r
        for _ in range(iters):
            Ap = hvp(p) + damping * p  # Tikhonov damping, as in Martens' Hessian-free
            alpha = rs / (p @ Ap)
            xk = xk + alpha * p
            r = r - alpha * Ap
            rs_new = r @ r
            if rs_new.sqrt() < tol:
                break
            p = r + (rs_new / rs) * p
            rs = rs_new
        return xk

    losses = []
    for _ in range(steps):
        theta = to_vec(params).detach()
        loss = model_loss()
        g = tt.autograd.grad(loss, params)
        g = tt.cat([t.reshape(-1) for t in g]).detach()
        direction = conjugate_gradient(-g)
        with tt.no_grad():
            from_vec(theta + 0.5 * direction, params)
        losses.append(loss.item())
    with tt.no_grad():
        losses.append(loss_of(to_vec(params)).item())
    return {"losses": losses, "params": _params(model)}


def test_hessian_free_newton_trains_the_same():
    _parity(hessian_free)


def test_hessian_free_newton_with_functional_hvp_trains_the_same():
    _parity(hessian_free, hvp_by="functional")


def test_hessian_free_newton_runs_in_minidl():
    minidl.manual_seed(0)  # the net's start (some starts overshoot on the first Newton step)
    start = hessian_free(minidl, steps=0)["params"]
    a = hessian_free(minidl, state=start)
    b = hessian_free(minidl, state=start, hvp_by="functional")
    assert a["losses"][-1] < a["losses"][0]
    np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-10)


# ---- 13. a mixture density network on torch.distributions -----------------------------------
def mixture_density(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    D = tt.distributions

    class MDN(nn.Module):
        def __init__(self, n_components=3, dim_out=2):
            super().__init__()
            self.k, self.d = n_components, dim_out
            self.body = nn.Sequential(nn.Linear(1, 12), nn.Tanh())
            self.pi = nn.Linear(12, n_components)
            self.mu = nn.Linear(12, n_components * dim_out)
            self.sigma = nn.Linear(12, n_components * dim_out)

        def forward(self, x):
            h = self.body(x)
            mu = self.mu(h).view(-1, self.k, self.d)
            sigma = F.softplus(self.sigma(h)).view(-1, self.k, self.d) + 1e-4
            mix = D.Categorical(logits=self.pi(h))
            comp = D.Independent(D.Normal(mu, sigma), 1)
            return D.MixtureSameFamily(mix, comp)

    rng = np.random.default_rng(72)
    x_np = rng.uniform(-1, 1, (24, 1))
    y_np = np.concatenate([np.sin(3 * x_np), np.cos(2 * x_np)], 1) + 0.1 * rng.standard_normal(
        (24, 2))
    y_np[::3] *= -1
    x, y = tt.from_numpy(x_np), tt.from_numpy(y_np)
    model = MDN().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = -model(x).log_prob(y).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():
        dist = model(x[:4])
        stats = tt.cat([dist.mean, dist.variance, dist.mixture_distribution.probs], 1)
        posterior = dist.component_distribution.log_prob(y[:4].unsqueeze(1))
        cdf = D.Normal(dist.mean, dist.variance.sqrt()).cdf(y[:4])
        kl = D.kl_divergence(D.Normal(dist.mean, dist.variance.sqrt()),
                             D.Normal(tt.zeros_like(dist.mean), tt.ones_like(dist.mean)))
    return {"losses": losses, "stats": _np(stats), "posterior": _np(posterior), "cdf": _np(cdf),
            "kl": _np(kl), "batch": repr((tuple(dist.batch_shape), tuple(dist.event_shape))),
            "params": _params(model)}


def test_mixture_density_network_trains_the_same():
    out = _parity(mixture_density)
    assert out["batch"] == "((4,), (2,))"


def test_mixture_density_network_runs_in_minidl():
    out = mixture_density(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 14. Barlow Twins: the cross-correlation of two views pushed to the identity ------------
def barlow_twins(tt, state=None, steps=3):
    nn = tt.nn

    def off_diagonal(x):
        n, m = x.shape
        assert n == m
        return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()

    class BarlowTwins(nn.Module):
        def __init__(self, lambd=0.05, batch_size=8):
            super().__init__()
            self.lambd, self.batch_size = lambd, batch_size
            self.backbone = nn.Sequential(nn.Linear(5, 8), nn.ReLU())
            self.projector = nn.Sequential(nn.Linear(8, 6, bias=False), nn.BatchNorm1d(6),
                                           nn.ReLU(inplace=True), nn.Linear(6, 6, bias=False))
            self.bn = nn.BatchNorm1d(6, affine=False)

        def forward(self, y1, y2):
            z1 = self.projector(self.backbone(y1))
            z2 = self.projector(self.backbone(y2))
            c = self.bn(z1).T @ self.bn(z2)
            c.div_(self.batch_size)
            on_diag = tt.diagonal(c).add_(-1).pow_(2).sum()
            off_diag = off_diagonal(c).pow_(2).sum()
            return on_diag + self.lambd * off_diag

    rng = np.random.default_rng(73)
    data = rng.standard_normal((8, 5))
    noise = 0.3 * rng.standard_normal((steps, 2, 8, 5))
    model = BarlowTwins().double()
    _load(model, tt, state)
    params_weights = [p for p in model.parameters() if p.ndim != 1]
    params_biases = [p for p in model.parameters() if p.ndim == 1]
    opt = tt.optim.SGD([{"params": params_weights}, {"params": params_biases}], lr=0.02,
                       momentum=0.9, weight_decay=1e-6)
    losses = []
    for i in range(steps):
        loss = model(tt.from_numpy(data + noise[i, 0]), tt.from_numpy(data + noise[i, 1]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "params": _params(model)}


def test_barlow_twins_trains_the_same():
    _parity(barlow_twins)


def test_barlow_twins_runs_in_minidl():
    out = barlow_twins(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 15. DLRM: EmbeddingBags with offsets and weights, pairwise dot interactions -------------
def dlrm(tt, state=None, steps=3, mode="sum"):
    nn = tt.nn

    class DLRM(nn.Module):
        def __init__(self, table_sizes=(7, 5, 9), dim=4):
            super().__init__()
            self.emb_l = nn.ModuleList(nn.EmbeddingBag(n, dim, mode=mode) for n in table_sizes)
            self.bot_l = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, dim), nn.ReLU())
            n = len(table_sizes) + 1
            self.top_l = nn.Sequential(nn.Linear(dim + n * (n - 1) // 2, 6), nn.ReLU(),
                                       nn.Linear(6, 1))
            li, lj = tt.tril_indices(n, n, offset=-1)
            self.register_buffer("li", li, persistent=False)
            self.register_buffer("lj", lj, persistent=False)

        def interact_features(self, x, ly):
            batch_size, d = x.shape
            T = tt.cat([x] + ly, dim=1).view((batch_size, -1, d))
            Z = tt.bmm(T, tt.transpose(T, 1, 2))
            Zflat = Z[:, self.li, self.lj]
            return tt.cat([x] + [Zflat], dim=1)

        def forward(self, dense_x, lS_o, lS_i, lS_w):
            x = self.bot_l(dense_x)
            ly = [emb(idx, off, per_sample_weights=w if mode == "sum" else None)
                  for emb, idx, off, w in zip(self.emb_l, lS_i, lS_o, lS_w)]
            return self.top_l(self.interact_features(x, ly)).squeeze(1)

    rng = np.random.default_rng(74)
    batch = 6
    dense = tt.from_numpy(rng.standard_normal((batch, 3)))
    lS_i, lS_o, lS_w = [], [], []
    for n in (7, 5, 9):
        counts = rng.integers(1, 4, batch)
        lS_o.append(tt.from_numpy(np.concatenate([[0], np.cumsum(counts)[:-1]])))
        lS_i.append(tt.from_numpy(rng.integers(0, n, counts.sum())))
        lS_w.append(tt.from_numpy(rng.uniform(0.5, 1.5, counts.sum())))
    clicks = tt.from_numpy((rng.random(batch) < 0.4).astype(np.float64))
    model = DLRM().double()
    _load(model, tt, state)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=tt.tensor(1.5, dtype=tt.float64))
    opt = tt.optim.Adagrad(model.parameters(), lr=0.05, initial_accumulator_value=0.1)
    losses = []
    for _ in range(steps):
        loss = loss_fn(model(dense, lS_o, lS_i, lS_w), clicks)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "params": _params(model)}


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_dlrm_trains_the_same(mode):
    _parity(dlrm, mode=mode)


def test_dlrm_runs_in_minidl():
    out = dlrm(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 16. WaveNet: mu-law quantisation, causal dilated convolutions, gated units ------------
def wavenet(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    Q = 16

    def mu_law_encode(x, mu=Q - 1):
        mu = tt.tensor(mu, dtype=x.dtype)
        y = tt.sign(x) * tt.log1p(mu * tt.abs(x)) / tt.log1p(mu)
        return ((y + 1) / 2 * mu + 0.5).to(tt.int64)

    def mu_law_decode(q, mu=Q - 1):
        y = 2 * (q.to(tt.float64) / mu) - 1
        return tt.sign(y) * (tt.pow(1 + mu, tt.abs(y)) - 1) / mu

    class CausalConv1d(nn.Conv1d):
        def __init__(self, cin, cout, kernel_size, dilation=1):
            super().__init__(cin, cout, kernel_size, dilation=dilation)
            self.left = (kernel_size - 1) * dilation

        def forward(self, x):
            return super().forward(F.pad(x, (self.left, 0)))

    class ResidualBlock(nn.Module):
        def __init__(self, channels, dilation):
            super().__init__()
            self.filter = CausalConv1d(channels, channels, 2, dilation)
            self.gate = CausalConv1d(channels, channels, 2, dilation)
            self.res = nn.Conv1d(channels, channels, 1)
            self.skip = nn.Conv1d(channels, channels, 1)

        def forward(self, x):
            z = tt.tanh(self.filter(x)) * tt.sigmoid(self.gate(x))
            return x + self.res(z), self.skip(z)

    class WaveNet(nn.Module):
        def __init__(self, channels=6, dilations=(1, 2, 4, 1, 2)):
            super().__init__()
            self.input = CausalConv1d(Q, channels, 2)
            self.blocks = nn.ModuleList(ResidualBlock(channels, d) for d in dilations)
            self.out = nn.Sequential(nn.ReLU(), nn.Conv1d(channels, channels, 1), nn.ReLU(),
                                     nn.Conv1d(channels, Q, 1))

        def forward(self, q):
            x = self.input(F.one_hot(q, Q).transpose(1, 2).to(tt.float64))
            skips = 0
            for block in self.blocks:
                x, s = block(x)
                skips = skips + s
            return self.out(skips)

    rng = np.random.default_rng(75)
    t = np.linspace(0, 1, 25)
    wave = tt.from_numpy(0.8 * np.sin(2 * np.pi * rng.uniform(2, 5, (3, 1)) * t))
    q = mu_law_encode(wave)
    model = WaveNet().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=5e-3, amsgrad=True)
    losses = []
    for _ in range(steps):
        logits = model(q[:, :-1])
        loss = F.cross_entropy(logits, q[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():
        generated = q[:, :8]
        for _ in range(4):
            nxt = model(generated)[:, :, -1].argmax(dim=1, keepdim=True)
            generated = tt.cat([generated, nxt], dim=1)
        audio = mu_law_decode(generated)
    return {"losses": losses, "codes": repr(q[0].tolist()), "audio": _np(audio),
            "params": _params(model)}


def test_wavenet_trains_the_same():
    _parity(wavenet)


def test_wavenet_runs_in_minidl():
    out = wavenet(minidl, steps=2)
    assert np.isfinite(out["losses"]).all() and np.abs(out["audio"]).max() <= 1.0


# ---- 17. a BiLSTM-CRF tagger: packed sequences, the forward algorithm, Viterbi decoding ------
def bilstm_crf(tt, state=None, steps=3):
    nn = tt.nn
    pad_sequence = nn.utils.rnn.pad_sequence
    n_tags, START, STOP = 5, 3, 4

    class BiLSTM_CRF(nn.Module):
        def __init__(self, vocab=10, emb=5, hidden=6):
            super().__init__()
            self.embedding = nn.Embedding(vocab, emb, padding_idx=0)
            self.lstm = nn.LSTM(emb, hidden // 2, batch_first=True, bidirectional=True)
            self.hidden2tag = nn.Linear(hidden, n_tags)
            self.transitions = nn.Parameter(tt.randn(n_tags, n_tags))  # [to, from]
            with tt.no_grad():
                self.transitions[START, :] = -10000
                self.transitions[:, STOP] = -10000

        def emissions(self, sentences, lengths):
            packed = nn.utils.rnn.pack_padded_sequence(self.embedding(sentences), lengths,
                                                       batch_first=True, enforce_sorted=False)
            out, _ = self.lstm(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                      total_length=sentences.size(1))
            return self.hidden2tag(out)

        def forward_alg(self, feats, mask):
            alpha = tt.full((feats.size(0), n_tags), -10000.0, dtype=feats.dtype)
            alpha[:, START] = 0.0
            for t in range(feats.size(1)):
                scores = alpha.unsqueeze(1) + self.transitions.unsqueeze(0) + \
                    feats[:, t].unsqueeze(2)
                new_alpha = tt.logsumexp(scores, dim=2)
                alpha = tt.where(mask[:, t].unsqueeze(1), new_alpha, alpha)
            return tt.logsumexp(alpha + self.transitions[STOP], dim=1)

        def score_sentence(self, feats, tags, mask):
            batch = feats.size(0)
            start = tt.full((batch, 1), START, dtype=tt.long)
            tags_ext = tt.cat([start, tags], dim=1)
            emit = feats.gather(2, tags.unsqueeze(2)).squeeze(2)
            trans = self.transitions[tags_ext[:, 1:], tags_ext[:, :-1]]
            score = ((emit + trans) * mask).sum(1)
            last = tags_ext.gather(1, mask.long().sum(1, keepdim=True)).squeeze(1)
            return score + self.transitions[STOP, last]

        def neg_log_likelihood(self, sentences, lengths, tags, mask):
            feats = self.emissions(sentences, lengths)
            return (self.forward_alg(feats, mask) - self.score_sentence(feats, tags, mask)).mean()

        def viterbi_decode(self, feats):  # one sentence, (T, n_tags)
            backpointers = []
            forward_var = tt.full((1, n_tags), -10000.0, dtype=feats.dtype)
            forward_var[0][START] = 0
            for feat in feats:
                next_tag_var = forward_var + self.transitions
                viterbivars_t, bptrs_t = tt.max(next_tag_var, dim=1)
                forward_var = (viterbivars_t + feat).view(1, -1)
                backpointers.append(bptrs_t.tolist())
            terminal_var = forward_var + self.transitions[STOP]
            best_tag_id = int(tt.argmax(terminal_var))
            path_score = terminal_var[0][best_tag_id]
            best_path = [best_tag_id]
            for bptrs_t in reversed(backpointers):
                best_tag_id = bptrs_t[best_tag_id]
                best_path.append(best_tag_id)
            assert best_path.pop() == START
            best_path.reverse()
            return path_score, best_path

    rng = np.random.default_rng(76)
    lengths = [5, 3, 4, 2]
    sents = [tt.from_numpy(rng.integers(1, 10, n)) for n in lengths]
    tags = [tt.from_numpy(rng.integers(0, 3, n)) for n in lengths]
    sentences = pad_sequence(sents, batch_first=True)
    tag_batch = pad_sequence(tags, batch_first=True, padding_value=0)
    mask = sentences != 0
    model = BiLSTM_CRF().double()
    _load(model, tt, state)
    opt = tt.optim.SGD(model.parameters(), lr=0.05, weight_decay=1e-4)
    lengths_t = tt.tensor(lengths)
    losses = []
    for _ in range(steps):
        loss = model.neg_log_likelihood(sentences, lengths_t, tag_batch, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():
        feats = model.emissions(sentences, lengths_t)
        decoded = [model.viterbi_decode(feats[i, :n]) for i, n in enumerate(lengths)]
    return {"losses": losses, "paths": repr([p for _, p in decoded]),
            "path_scores": [s.item() for s, _ in decoded], "params": _params(model)}


def test_bilstm_crf_trains_the_same():
    _parity(bilstm_crf)


def test_bilstm_crf_runs_in_minidl():
    out = bilstm_crf(minidl, steps=2)
    assert np.isfinite(out["losses"]).all() and out["paths"].startswith("[[")


# ---- 18. a small vocoder trained with a multi-resolution STFT loss ---------------------------
def stft_vocoder(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class Generator(nn.Module):
        def __init__(self, n_mels=4):
            super().__init__()
            self.pre = nn.Conv1d(n_mels, 8, 3, padding=1)
            self.up1 = nn.ConvTranspose1d(8, 6, 8, stride=4, padding=2)
            self.up2 = nn.ConvTranspose1d(6, 4, 4, stride=2, padding=1)
            self.post = nn.Conv1d(4, 1, 5, padding=2, padding_mode="reflect")

        def forward(self, mel):
            x = F.leaky_relu(self.pre(mel), 0.1)
            x = F.leaky_relu(self.up1(x), 0.1)
            x = F.leaky_relu(self.up2(x), 0.1)
            return tt.tanh(self.post(x)).squeeze(1)

    def stft_magnitude(x, fft_size, hop_size, win_length):
        window = tt.hann_window(win_length, dtype=x.dtype)
        spec = tt.stft(x, fft_size, hop_size, win_length, window, return_complex=True)
        return tt.sqrt(tt.clamp(spec.real ** 2 + spec.imag ** 2, min=1e-7)).transpose(2, 1)

    class MultiResolutionSTFTLoss(nn.Module):
        def __init__(self, resolutions=((16, 4, 12), (32, 8, 24), (8, 2, 8))):
            super().__init__()
            self.resolutions = resolutions

        def forward(self, x, y):
            sc_loss, mag_loss = 0.0, 0.0
            for fft_size, hop, win in self.resolutions:
                x_mag = stft_magnitude(x, fft_size, hop, win)
                y_mag = stft_magnitude(y, fft_size, hop, win)
                sc_loss = sc_loss + tt.norm(y_mag - x_mag, p="fro") / tt.norm(y_mag, p="fro")
                mag_loss = mag_loss + F.l1_loss(tt.log(y_mag), tt.log(x_mag))
            n = len(self.resolutions)
            return sc_loss / n, mag_loss / n

    rng = np.random.default_rng(77)
    mel = tt.from_numpy(rng.standard_normal((2, 4, 8)))
    t = np.arange(64) / 64
    audio = tt.from_numpy(0.5 * np.sin(2 * np.pi * rng.uniform(3, 9, (2, 1)) * t))
    model = Generator().double()
    _load(model, tt, state)
    criterion = MultiResolutionSTFTLoss()
    opt = tt.optim.Adam(model.parameters(), lr=2e-3, betas=(0.8, 0.99))
    sched = tt.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    losses = []
    for _ in range(steps):
        sc, mag = criterion(model(mel), audio)
        loss = sc + mag
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses += [sc.item(), mag.item()]
    with tt.no_grad():
        wave = model(mel)
        spec = tt.stft(wave, 16, 4, window=tt.hann_window(16, dtype=wave.dtype),
                       return_complex=True)
        back = tt.istft(spec, 16, 4, window=tt.hann_window(16, dtype=wave.dtype),
                        length=wave.shape[-1])
    return {"losses": losses, "wave": _np(wave), "roundtrip": _np(back - wave),
            "params": _params(model)}


def test_stft_vocoder_trains_the_same():
    _parity(stft_vocoder)


def test_stft_vocoder_runs_in_minidl():
    out = stft_vocoder(minidl, steps=2)
    assert np.isfinite(out["losses"]).all() and np.abs(out["roundtrip"]).max() < 1e-10


# ---- 19. patch-based denoising with unfold / fold (overlap-add normalised by fold of ones) ---
def patch_denoiser(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    K, S = 4, 2

    class PatchDenoiser(nn.Module):
        def __init__(self):
            super().__init__()
            self.unfold = nn.Unfold(kernel_size=K, stride=S, padding=1)
            self.mlp = nn.Sequential(nn.Linear(K * K, 12), nn.ELU(), nn.Linear(12, K * K))

        def forward(self, x):
            n, c, h, w = x.shape
            patches = self.unfold(x)                       # (N, C*K*K, L)
            L = patches.shape[-1]
            patches = patches.view(n, c, K * K, L).permute(0, 1, 3, 2)
            cleaned = patches + self.mlp(patches)
            cleaned = cleaned.permute(0, 1, 3, 2).reshape(n, c * K * K, L)
            out = F.fold(cleaned, (h, w), kernel_size=K, stride=S, padding=1)
            norm = F.fold(tt.ones_like(cleaned), (h, w), kernel_size=K, stride=S, padding=1)
            return out / norm

    rng = np.random.default_rng(78)
    clean = np.cumsum(np.cumsum(rng.standard_normal((3, 2, 8, 8)), 2), 3) / 8
    noisy = clean + 0.3 * rng.standard_normal(clean.shape)
    model = PatchDenoiser().double()
    _load(model, tt, state)
    opt = tt.optim.Rprop(model.parameters(), lr=1e-3)
    losses = []
    x, y = tt.from_numpy(noisy), tt.from_numpy(clean)
    for _ in range(steps):
        loss = F.smooth_l1_loss(model(x), y, beta=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():
        identity = F.fold(F.unfold(x, K, stride=S, padding=1), (8, 8), K, stride=S, padding=1) \
            / F.fold(F.unfold(tt.ones_like(x), K, stride=S, padding=1), (8, 8), K, stride=S,
                     padding=1)
        patches = x.unfold(2, K, S).unfold(3, K, S)
    return {"losses": losses, "identity": _np(identity - x),
            "patches": repr(tuple(patches.shape)), "params": _params(model)}


def test_patch_denoiser_with_fold_trains_the_same():
    out = _parity(patch_denoiser)
    assert out["patches"] == "(3, 2, 3, 3, 4, 4)"


def test_patch_denoiser_runs_in_minidl():
    out = patch_denoiser(minidl, steps=2)
    assert np.abs(out["identity"]).max() < 1e-12


# ---- 20. a neural Turing machine's memory: content and location addressing, a copy task -----
def ntm(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    N, M = 6, 4

    class NTMHead(nn.Module):
        def __init__(self, controller):
            super().__init__()
            self.fc = nn.Linear(controller, M + 1 + 1 + 3 + 1)

        def address(self, memory, h, w_prev):
            o = self.fc(h)
            k, beta, g, s, gamma = tt.split(o, [M, 1, 1, 3, 1], dim=1)
            beta, g = F.softplus(beta), tt.sigmoid(g)
            s, gamma = F.softmax(s, dim=1), 1 + F.softplus(gamma)
            wc = F.softmax(beta * F.cosine_similarity(memory + 1e-16, k.unsqueeze(1) + 1e-16,
                                                      dim=-1), dim=1)
            wg = g * wc + (1 - g) * w_prev
            padded = tt.cat([wg[:, -1:], wg, wg[:, :1]], dim=1)  # a circular convolution
            w_hat = F.conv1d(padded.unsqueeze(0), s.flip(1).unsqueeze(1),
                             groups=wg.size(0)).squeeze(0)
            w = w_hat ** gamma
            return w / (w.sum(dim=1, keepdim=True) + 1e-16)

    class NTM(nn.Module):
        def __init__(self, n_in=4, controller=8):
            super().__init__()
            self.controller = nn.LSTMCell(n_in + M, controller)
            self.read_head, self.write_head = NTMHead(controller), NTMHead(controller)
            self.erase_add = nn.Linear(controller, 2 * M)
            self.out = nn.Linear(controller + M, n_in)
            self.register_buffer("mem_bias", tt.full((N, M), 1e-6, dtype=tt.float64))

        def forward(self, seq):
            batch = seq.size(1)
            memory = self.mem_bias.clone().repeat(batch, 1, 1)
            h = c = tt.zeros(batch, self.controller.hidden_size, dtype=seq.dtype)
            read = tt.zeros(batch, M, dtype=seq.dtype)
            w_r = w_w = F.one_hot(tt.zeros(batch, dtype=tt.long), N).to(seq.dtype)
            outputs = []
            for x in seq:
                h, c = self.controller(tt.cat([x, read], dim=1), (h, c))
                w_w = self.write_head.address(memory, h, w_w)
                e, a = self.erase_add(h).chunk(2, dim=1)
                memory = memory * (1 - tt.bmm(w_w.unsqueeze(2), tt.sigmoid(e).unsqueeze(1)))
                memory = memory + tt.bmm(w_w.unsqueeze(2), tt.tanh(a).unsqueeze(1))
                w_r = self.read_head.address(memory, h, w_r)
                read = tt.bmm(w_r.unsqueeze(1), memory).squeeze(1)
                outputs.append(self.out(tt.cat([h, read], dim=1)))
            return tt.stack(outputs)

    rng = np.random.default_rng(79)
    bits = (rng.random((3, 2, 3)) < 0.5).astype(np.float64)
    seq = np.zeros((7, 2, 4))
    seq[:3, :, :3] = bits
    seq[3, :, 3] = 1.0  # the delimiter
    target = tt.from_numpy(bits)
    model = NTM().double()
    _load(model, tt, state)
    opt = tt.optim.RMSprop(model.parameters(), lr=1e-3, momentum=0.9, alpha=0.95, centered=True)
    losses = []
    for _ in range(steps):
        out = model(tt.from_numpy(seq))[4:, :, :3]
        loss = F.binary_cross_entropy_with_logits(out, target)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_value_(model.parameters(), 10)
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "params": _params(model)}


def test_neural_turing_machine_trains_the_same():
    _parity(ntm)


def test_neural_turing_machine_runs_in_minidl():
    out = ntm(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 21. a multi-task tabular model with the less common losses -----------------------------
def multitask_tabular(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class MultiTask(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = nn.Sequential(nn.Linear(5, 12), nn.Mish(), nn.Dropout(0.0),
                                       nn.Linear(12, 12), nn.Hardswish())
            self.heads = nn.ModuleDict({
                "tags": nn.Linear(12, 4), "grade": nn.Linear(12, 3), "value": nn.Linear(12, 2),
                "count": nn.Linear(12, 1), "sign": nn.Linear(12, 1), "rank": nn.Linear(12, 4)})
            self.log_vars = nn.ParameterDict({k: nn.Parameter(tt.zeros(1, dtype=tt.float64))
                                              for k in ("tags", "grade", "value")})

        def forward(self, x):
            h = self.trunk(x)
            return {k: head(h) for k, head in self.heads.items()}

    rng = np.random.default_rng(80)
    n = 10
    x = tt.from_numpy(rng.standard_normal((n, 5)))
    tags = tt.from_numpy((rng.random((n, 4)) < 0.4).astype(np.float64))
    grade = tt.from_numpy(rng.integers(0, 3, n))
    value = tt.from_numpy(rng.standard_normal((n, 2)))
    count = tt.from_numpy(rng.poisson(2.0, (n, 1)).astype(np.float64))
    sign = tt.from_numpy(np.where(rng.random((n, 1)) < 0.5, -1.0, 1.0))
    ranks = rng.permuted(np.tile(np.arange(4), (n, 1)), axis=1)
    ranks[:, 2:] = -1
    rank = tt.from_numpy(ranks)
    model = MultiTask().double()
    _load(model, tt, state)
    losses_fn = {
        "tags": nn.MultiLabelSoftMarginLoss(weight=tt.tensor([1.0, 2.0, 1.0, 0.5],
                                                             dtype=tt.float64)),
        "grade": nn.MultiMarginLoss(p=2, margin=0.5,
                                    weight=tt.tensor([1.0, 0.5, 2.0], dtype=tt.float64)),
        "value": nn.GaussianNLLLoss(full=True, eps=1e-6),
        "count": nn.PoissonNLLLoss(log_input=True, full=True),
        "sign": nn.SoftMarginLoss(),
        "rank": nn.MultiLabelMarginLoss(),
    }
    opt = tt.optim.ASGD(model.parameters(), lr=0.02, t0=2)
    history, all_losses = [], []
    for _ in range(steps):
        out = model(x)
        parts = {
            "tags": losses_fn["tags"](out["tags"], tags),
            "grade": losses_fn["grade"](out["grade"], grade),
            "value": losses_fn["value"](out["value"], value, F.softplus(out["value"]) + 0.1),
            "count": losses_fn["count"](out["count"], count),
            "sign": losses_fn["sign"](out["sign"], sign),
            "rank": losses_fn["rank"](out["rank"], rank),
        }
        loss = sum(tt.exp(-model.log_vars[k]) * parts[k] + model.log_vars[k]
                   for k in model.log_vars).sum() + parts["count"] + parts["sign"] + parts["rank"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
        all_losses.append([v.item() for v in parts.values()])
    with tt.no_grad():
        out = model(x)
        q = tt.tensor([0.1, 0.5, 0.9], dtype=tt.float64)
        err = value[:, :1] - out["value"][:, :1]
        pinball = tt.max((q - 1) * err, q * err).mean(0)
        functional = [F.multilabel_soft_margin_loss(out["tags"], tags, reduction="none"),
                      F.multi_margin_loss(out["grade"], grade, reduction="none"),
                      F.gaussian_nll_loss(out["value"], value, tt.ones_like(value),
                                          reduction="none"),
                      F.poisson_nll_loss(out["count"].exp(), count, log_input=False,
                                         reduction="none"),
                      F.soft_margin_loss(out["sign"], sign, reduction="none").squeeze(1),
                      F.multilabel_margin_loss(out["rank"], rank, reduction="none")]
    return {"losses": history, "parts": all_losses, "pinball": _np(pinball),
            "functional": np.concatenate([_np(f).ravel() for f in functional]),
            "params": _params(model)}


def test_multitask_tabular_losses_train_the_same():
    _parity(multitask_tabular)


def test_multitask_tabular_runs_in_minidl():
    out = multitask_tabular(minidl, steps=2)
    assert np.isfinite(out["losses"]).all() and np.isfinite(out["functional"]).all()


# ---- 22. an image captioner: a CNN encoder and nn.TransformerDecoder, greedy decoding -------
def transformer_captioner(tt, state=None, steps=3):
    nn = tt.nn
    V, D, PAD, BOS, EOS = 10, 8, 0, 1, 2

    class Captioner(nn.Module):
        def __init__(self):
            super().__init__()
            self.cnn = nn.Sequential(nn.Conv2d(3, D, 3, stride=2, padding=1), nn.ReLU(),
                                     nn.Conv2d(D, D, 3, padding=1))
            self.embed = nn.Embedding(V, D, padding_idx=PAD)
            self.pos = nn.Parameter(tt.zeros(1, 8, D))
            layer = nn.TransformerDecoderLayer(D, nhead=2, dim_feedforward=16, dropout=0.0,
                                               batch_first=True, norm_first=True)
            self.decoder = nn.TransformerDecoder(layer, num_layers=2, norm=nn.LayerNorm(D))
            self.out = nn.Linear(D, V)

        def encode(self, images):
            return self.cnn(images).flatten(2).transpose(1, 2)

        def forward(self, images, captions):
            memory = self.encode(images)
            T = captions.size(1)
            tgt = self.embed(captions) * math.sqrt(D) + self.pos[:, :T]
            mask = tt.triu(tt.ones(T, T, dtype=tt.bool), diagonal=1)
            h = self.decoder(tgt, memory, tgt_mask=mask, tgt_is_causal=True,
                             tgt_key_padding_mask=captions == PAD)
            return self.out(h)

        @tt.no_grad()
        def generate(self, images, max_len=6):
            memory = self.encode(images)
            tokens = tt.full((images.size(0), 1), BOS, dtype=tt.long)
            for _ in range(max_len - 1):
                T = tokens.size(1)
                tgt = self.embed(tokens) * math.sqrt(D) + self.pos[:, :T]
                mask = nn.Transformer.generate_square_subsequent_mask(T, dtype=tgt.dtype)
                logits = self.out(self.decoder(tgt, memory, tgt_mask=mask)[:, -1])
                tokens = tt.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
            return tokens

    rng = np.random.default_rng(81)
    images = tt.from_numpy(rng.standard_normal((3, 3, 6, 6)))
    caps = np.zeros((3, 6), dtype=np.int64)
    for i, n in enumerate([5, 3, 4]):
        caps[i, 0], caps[i, 1:n - 1], caps[i, n - 1] = BOS, rng.integers(3, V, n - 2), EOS
    captions = tt.from_numpy(caps)
    model = Captioner().double()
    _load(model, tt, state)
    criterion = nn.CrossEntropyLoss(ignore_index=PAD, label_smoothing=0.1)
    opt = tt.optim.AdamW(model.parameters(), lr=3e-3)
    sched = tt.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4, eta_min=1e-4)
    losses = []
    for _ in range(steps):
        logits = model(images, captions[:, :-1])
        loss = criterion(logits.reshape(-1, V), captions[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return {"losses": losses, "generated": repr(model.generate(images).tolist()),
            "params": _params(model)}


def test_transformer_captioner_trains_the_same():
    _parity(transformer_captioner)


def test_transformer_captioner_runs_in_minidl():
    out = transformer_captioner(minidl, steps=2)
    assert np.isfinite(out["losses"]).all() and out["generated"].startswith("[[1,")


# ---- 23. soft actor-critic: twin Q networks, a tanh-squashed Gaussian policy, learned alpha --
def soft_actor_critic(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    D = tt.distributions
    obs_dim, act_dim = 3, 2

    class Actor(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(obs_dim, 8), nn.ReLU())
            self.mu, self.log_std = nn.Linear(8, act_dim), nn.Linear(8, act_dim)

        def forward(self, obs, eps):
            h = self.net(obs)
            mu, log_std = self.mu(h), self.log_std(h).clamp(-5, 2)
            base = D.Normal(mu, log_std.exp())
            dist = D.TransformedDistribution(base, [D.transforms.TanhTransform(cache_size=1)])
            pre_tanh = mu + log_std.exp() * eps   # rsample with the shared noise
            action = tt.tanh(pre_tanh)
            log_prob = base.log_prob(pre_tanh).sum(-1) - (
                2 * (math.log(2) - pre_tanh - F.softplus(-2 * pre_tanh))).sum(-1)
            return action, log_prob, dist

    def q_net():
        return nn.Sequential(nn.Linear(obs_dim + act_dim, 8), nn.ReLU(), nn.Linear(8, 1))

    rng = np.random.default_rng(82)
    B = 6
    obs, obs2 = rng.standard_normal((2, B, obs_dim))
    act = np.tanh(rng.standard_normal((B, act_dim)))
    rew, done = rng.standard_normal(B), (rng.random(B) < 0.2).astype(np.float64)
    eps = rng.standard_normal((steps, 2, B, act_dim))
    actor, q1, q2 = Actor().double(), q_net().double(), q_net().double()
    _load(actor, tt, state, "pi.")
    _load(q1, tt, state, "q1.")
    _load(q2, tt, state, "q2.")
    q1_targ, q2_targ = copy.deepcopy(q1), copy.deepcopy(q2)
    for p in list(q1_targ.parameters()) + list(q2_targ.parameters()):
        p.requires_grad = False
    log_alpha = tt.zeros(1, dtype=tt.float64, requires_grad=True)
    q_params = list(q1.parameters()) + list(q2.parameters())
    pi_opt, q_opt = tt.optim.Adam(actor.parameters(), lr=3e-3), tt.optim.Adam(q_params, lr=3e-3)
    alpha_opt = tt.optim.Adam([log_alpha], lr=3e-3)
    o, o2, a = (tt.from_numpy(v) for v in (obs, obs2, act))
    r, d = tt.from_numpy(rew), tt.from_numpy(done)
    gamma, polyak, target_entropy = 0.99, 0.9, -float(act_dim)
    losses, checks = [], []
    for i in range(steps):
        alpha = log_alpha.exp().detach()
        with tt.no_grad():
            a2, logp_a2, _ = actor(o2, tt.from_numpy(eps[i, 0]))
            q_pi_targ = tt.min(q1_targ(tt.cat([o2, a2], -1)), q2_targ(tt.cat([o2, a2], -1)))
            backup = r + gamma * (1 - d) * (q_pi_targ.squeeze(-1) - alpha * logp_a2)
        sa = tt.cat([o, a], -1)
        loss_q = ((q1(sa).squeeze(-1) - backup) ** 2).mean() + (
            (q2(sa).squeeze(-1) - backup) ** 2).mean()
        q_opt.zero_grad()
        loss_q.backward()
        q_opt.step()
        for p in q_params:
            p.requires_grad = False
        pi, logp_pi, dist = actor(o, tt.from_numpy(eps[i, 1]))
        checks.append(_np(dist.log_prob(pi.detach().clamp(-0.999999, 0.999999)).sum(-1)
                          - logp_pi.detach()))
        q_pi = tt.min(q1(tt.cat([o, pi], -1)), q2(tt.cat([o, pi], -1))).squeeze(-1)
        loss_pi = (alpha * logp_pi - q_pi).mean()
        pi_opt.zero_grad()
        loss_pi.backward()
        pi_opt.step()
        for p in q_params:
            p.requires_grad = True
        loss_alpha = -(log_alpha * (logp_pi.detach() + target_entropy)).mean()
        alpha_opt.zero_grad()
        loss_alpha.backward()
        alpha_opt.step()
        with tt.no_grad():
            for net, targ in ((q1, q1_targ), (q2, q2_targ)):
                for p, p_targ in zip(net.parameters(), targ.parameters()):
                    p_targ.mul_(polyak)
                    p_targ.add_((1 - polyak) * p)
        losses += [loss_q.item(), loss_pi.item(), loss_alpha.item()]
    return {"losses": losses, "alpha": [log_alpha.item()],
            "log_prob_gap": np.abs(np.array(checks)).max(keepdims=True) if checks else [0.0],
            "params": {**_params(actor, "pi."), **_params(q1, "q1."), **_params(q2, "q2."),
                       **_params(q1_targ, "q1t."), **_params(q2_targ, "q2t.")}}


def test_soft_actor_critic_trains_the_same():
    out = _parity(soft_actor_critic, loss_atol=1e-6)
    assert out["log_prob_gap"].max() < 1e-5


def test_soft_actor_critic_runs_in_minidl():
    out = soft_actor_critic(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 24. prototypical networks: few-shot episodes, class prototypes, squared distances ------
def prototypical(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    def conv_block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                             nn.MaxPool2d(2))

    def prototypical_loss(embeddings, targets, n_support):
        classes = tt.unique(targets)
        support_idxs = [tt.nonzero(targets == c)[:n_support].squeeze(1) for c in classes]
        query_idxs = tt.stack([tt.nonzero(targets == c)[n_support:].squeeze(1)
                               for c in classes]).view(-1)
        prototypes = tt.stack([embeddings[idx].mean(0) for idx in support_idxs])
        queries = embeddings[query_idxs]
        dists = tt.cdist(queries, prototypes).pow(2)
        log_p_y = F.log_softmax(-dists, dim=1).view(len(classes), -1, len(classes))
        target_inds = tt.arange(0, len(classes)).view(-1, 1, 1).expand(
            len(classes), log_p_y.size(1), 1).long()
        loss = -log_p_y.gather(2, target_inds).squeeze().view(-1).mean()
        acc = log_p_y.max(2)[1].eq(target_inds.squeeze(2)).float().mean()
        return loss, acc

    rng = np.random.default_rng(83)
    n_way, k_shot, n_query = 3, 2, 2
    encoder = nn.Sequential(conv_block(1, 4), conv_block(4, 4), nn.Flatten()).double()
    _load(encoder, tt, state)
    opt = tt.optim.Adam(encoder.parameters(), lr=1e-3)
    sched = tt.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    losses, accs = [], []
    for _ in range(steps):
        classes = rng.permutation(5)[:n_way]
        labels = np.repeat(classes, k_shot + n_query)
        images = rng.standard_normal((len(labels), 1, 8, 8)) + labels[:, None, None, None]
        perm = rng.permutation(len(labels))
        loss, acc = prototypical_loss(encoder(tt.from_numpy(images[perm])),
                                      tt.from_numpy(labels[perm]), k_shot)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        accs.append(acc.item())
    return {"losses": losses, "accs": accs, "params": _params(encoder)}


def test_prototypical_networks_train_the_same():
    _parity(prototypical)


def test_prototypical_networks_run_in_minidl():
    out = prototypical(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 25. N-BEATS: fully connected stacks with trend and seasonality bases --------------------
def nbeats(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    backcast_len, forecast_len = 8, 4

    def linspace(backcast_length, forecast_length):
        lin_space = np.linspace(-backcast_length, forecast_length,
                                backcast_length + forecast_length)
        return lin_space[:backcast_length] / 10, lin_space[backcast_length:] / 10

    b_ls, f_ls = linspace(backcast_len, forecast_len)

    class Block(nn.Module):
        def __init__(self, thetas_dim, basis):
            super().__init__()
            self.fc = nn.Sequential(*[m for i in range(3) for m in (
                nn.Linear(backcast_len if i == 0 else 10, 10), nn.ReLU())])
            self.theta = nn.Linear(10, thetas_dim, bias=False)
            if basis == "trend":
                T_b = tt.tensor(np.array([b_ls ** i for i in range(thetas_dim)]))
                T_f = tt.tensor(np.array([f_ls ** i for i in range(thetas_dim)]))
            else:
                p = thetas_dim // 2
                T_b = tt.cat([tt.cos(2 * math.pi * tt.outer(tt.arange(p, dtype=tt.float64),
                                                            tt.tensor(b_ls))),
                              tt.sin(2 * math.pi * tt.outer(tt.arange(p, dtype=tt.float64),
                                                            tt.tensor(b_ls)))])
                T_f = tt.cat([tt.cos(2 * math.pi * tt.outer(tt.arange(p, dtype=tt.float64),
                                                            tt.tensor(f_ls))),
                              tt.sin(2 * math.pi * tt.outer(tt.arange(p, dtype=tt.float64),
                                                            tt.tensor(f_ls)))])
            self.register_buffer("T_b", T_b)
            self.register_buffer("T_f", T_f)

        def forward(self, x):
            theta = self.theta(self.fc(x))
            return theta.mm(self.T_b), theta.mm(self.T_f)

    class NBeats(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([Block(3, "trend"), Block(4, "seasonality"),
                                         Block(4, "seasonality")])

        def forward(self, backcast):
            forecast = tt.zeros(backcast.size(0), forecast_len, dtype=backcast.dtype)
            for block in self.blocks:
                b, f = block(backcast)
                backcast = backcast - b
                forecast = forecast + f
            return backcast, forecast

    rng = np.random.default_rng(84)
    t = np.arange(backcast_len + forecast_len)
    series = (0.05 * t * rng.uniform(-1, 1, (8, 1)) + np.sin(2 * np.pi * t / 4 +
              rng.uniform(0, 6, (8, 1))) + 0.05 * rng.standard_normal((8, len(t))))
    x, y = tt.from_numpy(series[:, :backcast_len]), tt.from_numpy(series[:, backcast_len:])
    model = NBeats().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=1e-3)
    sched = tt.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    losses = []
    for _ in range(steps):
        _, forecast = model(x)
        loss = F.huber_loss(forecast, y, delta=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step(loss.item())
        losses.append(loss.item())
    with tt.no_grad():
        _, forecast = model(x)
        smape = (200 * (forecast - y).abs() / (forecast.abs() + y.abs())).mean()
    return {"losses": losses, "smape": [smape.item()], "params": _params(model)}


def test_nbeats_trains_the_same():
    _parity(nbeats)


def test_nbeats_runs_in_minidl():
    out = nbeats(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 26. a complete training script: compiled model, gradient accumulation, clipping,
#          OneCycleLR, an EMA via AveragedModel, a full checkpoint dict saved and resumed ------
def training_script(tt, state=None, steps=6, interrupt=None, compiled=True):
    nn, F = tt.nn, tt.nn.functional
    swa_utils = tt.optim.swa_utils
    accum_steps, batch_size = 2, 4

    rng = np.random.default_rng(85)
    x = rng.standard_normal((24, 6))
    y = (x[:, :2].sum(1) > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)
    dataset = tt.utils.data.TensorDataset(tt.from_numpy(x), tt.from_numpy(y))
    order = rng.permutation(len(dataset)).tolist()  # the shuffle, shared by both runs

    def make():
        model = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.GELU(), nn.Dropout(0.0),
                              nn.Linear(16, 3)).double()
        optimizer = tt.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
        scheduler = tt.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-2,
                                                     total_steps=max(steps, 2), pct_start=0.3)
        return model, optimizer, scheduler

    model, optimizer, scheduler = make()
    _load(model, tt, state, "m.")
    ema = swa_utils.AveragedModel(model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.9))
    raw_model = model
    if compiled:
        model = tt.compile(model, backend="eager")
    loader = tt.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=order,
                                      drop_last=True)
    losses, norms, lrs = [], [], []
    step, micro = 0, 0
    while step < steps:
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb) / accum_steps
            loss.backward()
            micro += 1
            if micro % accum_steps:
                continue
            norms.append(nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5).item())
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            ema.update_parameters(model)
            losses.append(loss.item() * accum_steps)
            lrs.append(scheduler.get_last_lr()[0])
            step += 1
            if step == interrupt:
                buffer = io.BytesIO()
                tt.save({"step": step, "micro": micro, "model": model.state_dict(),
                         "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict()}, buffer)
                buffer.seek(0)
                checkpoint = tt.load(buffer, weights_only=True)
                model, optimizer, scheduler = make()
                state_dict = checkpoint["model"]
                unwanted_prefix = "_orig_mod."
                for k, v in list(state_dict.items()):
                    if k.startswith(unwanted_prefix):
                        state_dict[k[len(unwanted_prefix):]] = state_dict.pop(k)
                model.load_state_dict(state_dict)
                ema = swa_utils.AveragedModel(
                    model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.9))
                ema.load_state_dict(checkpoint["ema"])
                raw_model = model
                if compiled:
                    model = tt.compile(model, backend="eager")
                optimizer.load_state_dict(checkpoint["optimizer"])
                scheduler.load_state_dict(checkpoint["scheduler"])
                step, micro = checkpoint["step"], checkpoint["micro"]
            if step == steps:
                break
    ema.eval()
    with tt.no_grad():
        acc = (ema(tt.from_numpy(x)).argmax(1) == tt.from_numpy(y)).double().mean()
    keys = repr(sorted(model.state_dict())[:2])
    return {"losses": losses, "norms": norms, "lrs": lrs, "ema_acc": [acc.item()],
            "keys": keys, "params": {**_params(raw_model, "m."), **_params(ema, "ema.")}}


def test_training_script_trains_the_same():
    out = _parity(training_script)
    assert out["keys"] == repr(["_orig_mod.0.bias", "_orig_mod.0.weight"])


def test_training_script_resumes_as_torch():
    _parity(training_script, interrupt=3)


def test_training_script_resumed_run_is_the_straight_run():
    start = training_script(minidl, steps=0, compiled=False)["params"]
    straight = training_script(minidl, state=start)
    resumed = training_script(minidl, state=start, interrupt=3)
    np.testing.assert_array_equal(resumed["losses"], straight["losses"])
    for k in straight["params"]:
        np.testing.assert_array_equal(resumed["params"][k], straight["params"][k], err_msg=k)


# ---- 27. Levenberg-Marquardt fitting with torch.func: jacrev of functional_call --------------
def gauss_newton(tt, state=None, steps=3):
    nn = tt.nn
    func = tt.func

    rng = np.random.default_rng(86)
    x = tt.from_numpy(rng.uniform(-2, 2, (16, 1)))
    y = tt.sin(2 * x) + 0.05 * tt.from_numpy(rng.standard_normal((16, 1)))
    model = nn.Sequential(nn.Linear(1, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    _load(model, tt, state)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def residuals(p):
        return (func.functional_call(model, p, (x,)) - y).squeeze(1)

    lam, losses = 1e-2, []
    for _ in range(steps):
        r = residuals(params)
        jac = func.jacrev(residuals)(params)
        J = tt.cat([jac[k].reshape(r.numel(), -1) for k in params], dim=1)
        A = J.T @ J + lam * tt.eye(J.shape[1], dtype=J.dtype)
        delta = tt.linalg.solve(A, -(J.T @ r))
        new, offset = {}, 0
        for k, v in params.items():
            new[k] = v + delta[offset:offset + v.numel()].view_as(v)
            offset += v.numel()
        loss, new_loss = r.pow(2).mean(), residuals(new).pow(2).mean()
        if new_loss < loss:
            params, lam = new, lam * 0.5
        else:
            lam = lam * 4.0
        losses.append(loss.item())
    with tt.no_grad():
        for k, p in model.named_parameters():
            p.copy_(params[k])
    loss_and_grad = func.grad_and_value(lambda p: residuals(p).pow(2).mean())(params)
    return {"losses": losses, "lam": [lam], "grad_norm": [
        sum(g.pow(2).sum() for g in loss_and_grad[0].values()).sqrt().item()],
        "params": _params(model)}


def test_gauss_newton_with_jacrev_trains_the_same():
    _parity(gauss_newton)


def test_gauss_newton_runs_in_minidl():
    out = gauss_newton(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 28. a deep equilibrium model: a fixed point forward, an implicit backward by a hook ----
def deq(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class TanhFixedPointLayer(nn.Module):
        def __init__(self, out_features):
            super().__init__()
            self.linear = nn.Linear(out_features, out_features, bias=False)

        def forward(self, z, x):
            return tt.tanh(self.linear(z) + x)

    class DEQFixedPoint(nn.Module):
        def __init__(self, f, max_iter=30, tol=1e-10):
            super().__init__()
            self.f, self.max_iter, self.tol = f, max_iter, tol

        def solve(self, g, z0):
            z = z0
            for _ in range(self.max_iter):
                z_next = g(z)
                if (z_next - z).norm() < self.tol:
                    return z_next
                z = z_next
            return z

        def forward(self, x):
            with tt.no_grad():
                z = self.solve(lambda z: self.f(z, x), tt.zeros_like(x))
            z = self.f(z, x)
            z0 = z.clone().detach().requires_grad_()
            f0 = self.f(z0, x)

            def backward_hook(grad):
                if self.hook is not None:
                    self.hook.remove()
                    self.hook = None
                return self.solve(lambda y: tt.autograd.grad(f0, z0, y, retain_graph=True)[0]
                                  + grad, grad)

            self.hook = z.register_hook(backward_hook)
            return z

    rng = np.random.default_rng(87)
    x = tt.from_numpy(rng.standard_normal((6, 5)))
    y = tt.from_numpy(rng.integers(0, 3, 6))
    model = nn.Sequential(nn.Linear(5, 4), DEQFixedPoint(TanhFixedPointLayer(4)),
                          nn.Linear(4, 3)).double()
    _load(model, tt, state)
    with tt.no_grad():  # a contraction, so that the fixed point exists
        W = model[1].f.linear.weight
        W.mul_(0.5 / tt.linalg.matrix_norm(W, ord=2))
    opt = tt.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    h = model[0](x)
    z = model[1](h)
    residual = (model[1].f(z, h) - z).abs().max().item()
    return {"losses": losses, "residual": [residual], "params": _params(model)}


def test_deep_equilibrium_model_trains_the_same():
    out = _parity(deq, loss_atol=1e-9)
    assert out["residual"][0] < 1e-9


def test_deep_equilibrium_model_runs_in_minidl():
    out = deq(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 29. a TopK sparse autoencoder on activations, unit-norm decoder columns -----------------
def sparse_autoencoder(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class TopKSAE(nn.Module):
        def __init__(self, d_model=6, d_sae=16, k=3):
            super().__init__()
            self.k = k
            self.W_enc = nn.Parameter(tt.empty(d_model, d_sae, dtype=tt.float64))
            self.b_enc = nn.Parameter(tt.zeros(d_sae, dtype=tt.float64))
            self.W_dec = nn.Parameter(tt.empty(d_sae, d_model, dtype=tt.float64))
            self.b_dec = nn.Parameter(tt.zeros(d_model, dtype=tt.float64))
            nn.init.kaiming_uniform_(self.W_enc, a=math.sqrt(5))
            with tt.no_grad():
                self.W_dec.copy_(self.W_enc.T)
                self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True))

        def encode(self, x):
            pre = F.relu((x - self.b_dec) @ self.W_enc + self.b_enc)
            top = pre.topk(self.k, dim=-1, sorted=False)
            return tt.zeros_like(pre).scatter(-1, top.indices, top.values)

        def forward(self, x):
            z = self.encode(x)
            return z @ self.W_dec + self.b_dec, z

        @tt.no_grad()
        def remove_parallel_gradient(self):
            unit = self.W_dec / self.W_dec.norm(dim=1, keepdim=True)
            parallel = (self.W_dec.grad * unit).sum(dim=1, keepdim=True)
            self.W_dec.grad.sub_(parallel * unit)

        @tt.no_grad()
        def normalise_decoder(self):
            self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True))

    rng = np.random.default_rng(88)
    dictionary = rng.standard_normal((10, 6))
    codes = rng.random((20, 10)) * (rng.random((20, 10)) < 0.2)
    acts = tt.from_numpy(codes @ dictionary)
    model = TopKSAE()
    _load(model, tt, state)
    with tt.no_grad():
        model.b_dec.copy_(acts.median(dim=0).values)
    opt = tt.optim.Adam(model.parameters(), lr=1e-2, eps=6.25e-10)
    losses, l0, dead = [], [], tt.zeros(16, dtype=tt.long)
    for _ in range(steps):
        recon, z = model(acts)
        loss = (recon - acts).pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        model.remove_parallel_gradient()
        opt.step()
        model.normalise_decoder()
        dead += (z == 0).all(dim=0).long()
        losses.append(loss.item())
        l0.append((z != 0).sum(-1).double().mean().item())
        fve = 1 - (recon - acts).pow(2).sum() / (acts - acts.mean(0)).pow(2).sum()
        losses.append(fve.item())
    return {"losses": losses, "l0": l0, "dead": repr(dead.tolist()), "params": _params(model)}


def test_topk_sparse_autoencoder_trains_the_same():
    _parity(sparse_autoencoder)


def test_topk_sparse_autoencoder_runs_in_minidl():
    out = sparse_autoencoder(minidl, steps=2)
    assert np.isfinite(out["losses"]).all() and max(out["l0"]) <= 3


# ---- 30. neural collaborative filtering with a BPR loss and hit-rate evaluation --------------
def ncf_bpr(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class NeuMF(nn.Module):
        def __init__(self, n_users=6, n_items=12, dim=4):
            super().__init__()
            self.user_gmf, self.item_gmf = nn.Embedding(n_users, dim), nn.Embedding(n_items, dim)
            self.user_mlp, self.item_mlp = nn.Embedding(n_users, dim), nn.Embedding(n_items, dim)
            self.mlp = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, dim // 2))
            self.predict = nn.Linear(dim + dim // 2, 1)
            for emb in (self.user_gmf, self.item_gmf, self.user_mlp, self.item_mlp):
                nn.init.normal_(emb.weight, std=0.01)

        def forward(self, user, item):
            gmf = self.user_gmf(user) * self.item_gmf(item)
            mlp = self.mlp(tt.cat([self.user_mlp(user), self.item_mlp(item)], dim=-1))
            return self.predict(tt.cat([gmf, mlp], dim=-1)).squeeze(-1)

    rng = np.random.default_rng(89)
    users = rng.integers(0, 6, 16)
    pos = rng.integers(0, 12, 16)
    neg = (pos + rng.integers(1, 12, (steps, 16))) % 12
    model = NeuMF().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-5)
    u, p = tt.from_numpy(users), tt.from_numpy(pos)
    losses = []
    for i in range(steps):
        diff = model(u, p) - model(u, tt.from_numpy(neg[i]))
        loss = -F.logsigmoid(diff).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with tt.no_grad():
        all_items = tt.arange(12)
        scores = model(u.unsqueeze(1).expand(-1, 12), all_items.unsqueeze(0).expand(16, -1))
        top = scores.topk(3, dim=1).indices
        hits = (top == p.unsqueeze(1)).any(dim=1).double().mean()
        ranks = (scores > scores.gather(1, p.unsqueeze(1))).sum(1)
        ndcg = (1.0 / tt.log2(ranks.double() + 2)).mean()
    return {"losses": losses, "metrics": [hits.item(), ndcg.item()], "params": _params(model)}


def test_ncf_with_bpr_trains_the_same():
    _parity(ncf_bpr)


def test_ncf_with_bpr_runs_in_minidl():
    out = ncf_bpr(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 31. a character CNN: max-norm embeddings, scale_grad_by_freq, parallel Conv1d widths ----
def char_cnn(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class CharCNN(nn.Module):
        def __init__(self, vocab=12, dim=5, classes=3):
            super().__init__()
            self.embedding = nn.Embedding(vocab, dim, padding_idx=0, max_norm=1.0,
                                          scale_grad_by_freq=True)
            self.convs = nn.ModuleList(nn.Conv1d(dim, 4, k, padding=k // 2) for k in (2, 3, 5))
            self.pool = nn.AdaptiveMaxPool1d(1)
            self.fc = nn.Sequential(nn.AlphaDropout(0.0), nn.Linear(12, 8), nn.SELU(),
                                    nn.Linear(8, classes))
            for m in self.fc:
                if isinstance(m, nn.Linear):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="linear")

        def forward(self, x):
            e = self.embedding(x).transpose(1, 2)
            feats = [self.pool(F.relu(conv(e))).squeeze(-1) for conv in self.convs]
            return self.fc(tt.cat(feats, dim=1))

    rng = np.random.default_rng(90)
    x = tt.from_numpy(rng.integers(0, 12, (6, 9)))
    y = tt.from_numpy(rng.integers(0, 3, 6))
    model = CharCNN().double()
    _load(model, tt, state)
    with tt.no_grad():
        model.embedding.weight.mul_(3.0)  # rows longer than max_norm, renormed when looked up
    opt = tt.optim.Adadelta(model.parameters(), lr=1.0, rho=0.9)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    norms = model.embedding.weight.detach().norm(dim=1)
    with tt.no_grad():
        F.embedding(tt.tensor([1, 2]), model.embedding.weight, max_norm=0.5)
    return {"losses": losses, "norms": _np(norms),
            "after": _np(model.embedding.weight.detach().norm(dim=1)), "params": _params(model)}


def test_char_cnn_with_max_norm_embeddings_trains_the_same():
    _parity(char_cnn)


def test_char_cnn_runs_in_minidl():
    out = char_cnn(minidl, steps=2)
    assert np.isfinite(out["losses"]).all() and out["after"][1:3].max() <= 0.5 + 1e-12


# ---- 32. a word LM: an LSTM with projections, adaptive softmax, truncated BPTT ---------------
def adaptive_softmax_lm(tt, state=None, steps=3):
    nn = tt.nn
    V = 20

    class RNNModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Embedding(V, 6)
            self.rnn = nn.LSTM(6, 8, num_layers=2, proj_size=6, dropout=0.0)
            self.crit = nn.AdaptiveLogSoftmaxWithLoss(6, V, cutoffs=[4, 10], div_value=2.0)

        def forward(self, input, hidden, target):
            output, hidden = self.rnn(self.encoder(input), hidden)
            out = self.crit(output.view(-1, output.size(2)), target.reshape(-1))
            return out, hidden

        def init_hidden(self, bsz):
            return (tt.zeros(2, bsz, 6, dtype=tt.float64), tt.zeros(2, bsz, 8, dtype=tt.float64))

    def repackage_hidden(h):
        if isinstance(h, tt.Tensor):
            return h.detach()
        return tuple(repackage_hidden(v) for v in h)

    rng = np.random.default_rng(91)
    corpus = tt.from_numpy(np.minimum(rng.zipf(1.5, 3 * 4 * 3 + 1) - 1, V - 1))
    data = corpus[:-1].view(-1, 3)  # batchify: (len, batch)
    target = corpus[1:].view(-1, 3)
    model = RNNModel().double()
    _load(model, tt, state)
    opt = tt.optim.SGD(model.parameters(), lr=0.5)
    hidden = model.init_hidden(3)
    losses = []
    for step in range(steps):
        i = 4 * (step % 3)
        hidden = repackage_hidden(hidden)
        model.zero_grad()
        out, hidden = model(data[i:i + 4], hidden, target[i:i + 4])
        out.loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
        losses.append(out.loss.item())
    with tt.no_grad():
        flat = model.rnn(model.encoder(data[:4]))[0].view(-1, 6)
        log_probs = model.crit.log_prob(flat)
        predicted = model.crit.predict(flat)
    return {"losses": losses, "log_probs": _np(log_probs), "predicted": repr(predicted.tolist()),
            "params": _params(model)}


def test_adaptive_softmax_lm_with_lstm_projections_trains_the_same():
    _parity(adaptive_softmax_lm)


def test_adaptive_softmax_lm_runs_in_minidl():
    out = adaptive_softmax_lm(minidl, steps=2)
    np.testing.assert_allclose(np.exp(out["log_probs"]).sum(1), 1.0, rtol=1e-10)


# ---- 33. video classification: an R(2+1)D block (Conv3d, BatchNorm3d, 3-D pooling) ---------
def video_r2plus1d(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class Conv2Plus1D(nn.Sequential):
        def __init__(self, cin, cout, mid):
            super().__init__(
                nn.Conv3d(cin, mid, (1, 3, 3), padding=(0, 1, 1), bias=False),
                nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
                nn.Conv3d(mid, cout, (3, 1, 1), padding=(1, 0, 0), bias=False))

    class VideoNet(nn.Module):
        def __init__(self, classes=3):
            super().__init__()
            self.stem = nn.Sequential(Conv2Plus1D(3, 6, 4), nn.BatchNorm3d(6), nn.ReLU(),
                                      nn.MaxPool3d((1, 2, 2)))
            self.block = Conv2Plus1D(6, 6, 6)
            self.bn = nn.BatchNorm3d(6)
            self.pool = nn.AdaptiveAvgPool3d(1)
            self.fc = nn.Linear(6, classes)

        def forward(self, x):
            x = self.stem(x)
            x = F.relu(self.bn(self.block(x)) + x)
            return self.fc(self.pool(x).flatten(1))

    rng = np.random.default_rng(92)
    clips = tt.from_numpy(rng.standard_normal((4, 3, 4, 6, 6)))
    y = tt.from_numpy(rng.integers(0, 3, 4))
    model = VideoNet().double()
    _load(model, tt, state)
    opt = tt.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, dampening=0.1)
    sched = tt.optim.lr_scheduler.MultiStepLR(opt, milestones=[1, 2], gamma=0.3)
    losses = []
    for _ in range(steps):
        model.train()
        loss = F.cross_entropy(model(clips), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    with tt.no_grad():
        probs = F.softmax(model(clips), 1)
        pooled = F.avg_pool3d(clips, (2, 2, 2), stride=(2, 3, 3), ceil_mode=True)
    return {"losses": losses, "probs": _np(probs), "pooled": _np(pooled),
            "params": _params(model)}


def test_video_r2plus1d_trains_the_same():
    _parity(video_r2plus1d)


def test_video_r2plus1d_runs_in_minidl():
    out = video_r2plus1d(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 34. DGCNN: EdgeConv on a k-nearest-neighbour graph rebuilt in feature space ------------
def dgcnn(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    def knn(x, k):
        inner = -2 * tt.matmul(x.transpose(2, 1), x)
        xx = tt.sum(x ** 2, dim=1, keepdim=True)
        pairwise_distance = -xx - inner - xx.transpose(2, 1)
        return pairwise_distance.topk(k=k, dim=-1)[1]

    def get_graph_feature(x, k=4):
        batch_size, num_dims, num_points = x.size()
        idx = knn(x, k=k)
        idx_base = tt.arange(0, batch_size).view(-1, 1, 1) * num_points
        idx = (idx + idx_base).view(-1)
        x = x.transpose(2, 1).contiguous()
        feature = x.view(batch_size * num_points, -1)[idx, :]
        feature = feature.view(batch_size, num_points, k, num_dims)
        x = x.view(batch_size, num_points, 1, num_dims).repeat(1, 1, k, 1)
        return tt.cat((feature - x, x), dim=3).permute(0, 3, 1, 2).contiguous()

    class DGCNN(nn.Module):
        def __init__(self, classes=3):
            super().__init__()
            self.conv1 = nn.Sequential(nn.Conv2d(6, 8, 1, bias=False), nn.BatchNorm2d(8),
                                       nn.LeakyReLU(negative_slope=0.2))
            self.conv2 = nn.Sequential(nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8),
                                       nn.LeakyReLU(negative_slope=0.2))
            self.conv3 = nn.Sequential(nn.Conv1d(16, 12, 1, bias=False), nn.BatchNorm1d(12),
                                       nn.LeakyReLU(negative_slope=0.2))
            self.linear = nn.Linear(24, classes)

        def forward(self, x):
            x1 = self.conv1(get_graph_feature(x)).max(dim=-1, keepdim=False)[0]
            x2 = self.conv2(get_graph_feature(x1)).max(dim=-1, keepdim=False)[0]
            x = self.conv3(tt.cat((x1, x2), dim=1))
            x = tt.cat((F.adaptive_max_pool1d(x, 1).view(x.size(0), -1),
                        F.adaptive_avg_pool1d(x, 1).view(x.size(0), -1)), 1)
            return self.linear(x)

    def cal_loss(pred, gold, smoothing=True):
        gold = gold.contiguous().view(-1)
        if smoothing:
            eps = 0.2
            n_class = pred.size(1)
            one_hot = tt.zeros_like(pred).scatter(1, gold.view(-1, 1), 1)
            one_hot = one_hot * (1 - eps) + (1 - one_hot) * eps / (n_class - 1)
            return -(one_hot * F.log_softmax(pred, dim=1)).sum(dim=1).mean()
        return F.cross_entropy(pred, gold, reduction="mean")

    rng = np.random.default_rng(93)
    points = tt.from_numpy(rng.standard_normal((4, 3, 10)))
    y = tt.from_numpy(rng.integers(0, 3, 4))
    model = DGCNN().double()
    _load(model, tt, state)
    opt = tt.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched = tt.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=1e-3)
    losses = []
    for _ in range(steps):
        loss = cal_loss(model(points), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return {"losses": losses, "params": _params(model)}


def test_dgcnn_edgeconv_trains_the_same():
    _parity(dgcnn)


def test_dgcnn_runs_in_minidl():
    out = dgcnn(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 35. AdaIN style transfer: instance statistics of a frozen encoder's features -----------
def adain_style(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    def calc_mean_std(feat, eps=1e-5):
        size = feat.size()
        N, C = size[:2]
        feat_var = feat.view(N, C, -1).var(dim=2) + eps
        feat_std = feat_var.sqrt().view(N, C, 1, 1)
        feat_mean = feat.view(N, C, -1).mean(dim=2).view(N, C, 1, 1)
        return feat_mean, feat_std

    def adaptive_instance_normalization(content_feat, style_feat):
        size = content_feat.size()
        style_mean, style_std = calc_mean_std(style_feat)
        content_mean, content_std = calc_mean_std(content_feat)
        normalized_feat = (content_feat - content_mean.expand(size)) / content_std.expand(size)
        return normalized_feat * style_std.expand(size) + style_mean.expand(size)

    encoder = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(3, 6, 3), nn.ReLU(),
                            nn.ReflectionPad2d(1), nn.Conv2d(6, 8, 3, stride=2), nn.ReLU())
    decoder = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(8, 6, 3), nn.ReLU(),
                            nn.Upsample(scale_factor=2, mode="nearest"),
                            nn.ReflectionPad2d(1), nn.Conv2d(6, 3, 3))
    encoder, decoder = encoder.double(), decoder.double()
    _load(encoder, tt, state, "enc.")
    _load(decoder, tt, state, "dec.")
    for p in encoder.parameters():
        p.requires_grad_(False)
    rng = np.random.default_rng(94)
    content = tt.from_numpy(rng.uniform(0, 1, (2, 3, 8, 8)))
    style = tt.from_numpy(rng.uniform(0, 1, (2, 3, 8, 8)) ** 2)
    opt = tt.optim.Adam(decoder.parameters(), lr=1e-3)
    mse = nn.MSELoss()
    losses = []
    for _ in range(steps):
        style_feat, content_feat = encoder(style), encoder(content)
        alpha = 0.8
        t = adaptive_instance_normalization(content_feat, style_feat)
        t = alpha * t + (1 - alpha) * content_feat
        g_t_feat = encoder(decoder(t))
        loss_c = mse(g_t_feat, t)
        g_mean, g_std = calc_mean_std(g_t_feat)
        s_mean, s_std = calc_mean_std(style_feat)
        loss_s = mse(g_mean, s_mean) + mse(g_std, s_std)
        loss = loss_c + 10.0 * loss_s
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses += [loss_c.item(), loss_s.item()]
    with tt.no_grad():
        std, mean = tt.std_mean(content, dim=(2, 3), correction=0, keepdim=True)
        var2, mean2 = tt.var_mean(content.flatten(2), dim=-1, unbiased=False)
        inorm = F.instance_norm(content, eps=0.0)
    return {"losses": losses, "stats": np.concatenate([_np(std).ravel(), _np(mean).ravel(),
                                                       _np(var2).ravel(), _np(mean2).ravel()]),
            "inorm": _np(inorm - (content - mean) / std),
            "params": {**_params(encoder, "enc."), **_params(decoder, "dec.")}}


def test_adain_style_transfer_trains_the_same():
    _parity(adain_style)


def test_adain_style_transfer_runs_in_minidl():
    out = adain_style(minidl, steps=2)
    assert np.isfinite(out["losses"]).all() and np.abs(out["inorm"]).max() < 1e-10


# ---- 36. a Conformer block: macaron feed-forwards, GLU convolution module, relative bias ----
def conformer(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class FeedForward(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.net = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.SiLU(),
                                     nn.Linear(4 * d, d))

        def forward(self, x):
            return self.net(x)

    class ConvModule(nn.Module):
        def __init__(self, d, kernel=5):
            super().__init__()
            self.norm = nn.LayerNorm(d)
            self.pointwise1 = nn.Conv1d(d, 2 * d, 1)
            self.depthwise = nn.Conv1d(d, d, kernel, padding=kernel // 2, groups=d, bias=False)
            self.bn = nn.BatchNorm1d(d)
            self.pointwise2 = nn.Conv1d(d, d, 1)

        def forward(self, x):
            x = self.norm(x).transpose(1, 2)
            x = F.glu(self.pointwise1(x), dim=1)
            x = F.silu(self.bn(self.depthwise(x)))
            return self.pointwise2(x).transpose(1, 2)

    class ConformerBlock(nn.Module):
        def __init__(self, d=8, heads=2, max_rel=4):
            super().__init__()
            self.ff1, self.ff2 = FeedForward(d), FeedForward(d)
            self.attn_norm = nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
            self.rel_bias = nn.Embedding(2 * max_rel + 1, heads)
            self.max_rel, self.heads = max_rel, heads
            self.conv = ConvModule(d)
            self.final_norm = nn.LayerNorm(d)

        def forward(self, x, padding_mask):
            B, T, _ = x.shape
            x = x + 0.5 * self.ff1(x)
            pos = tt.arange(T)
            rel = (pos[None, :] - pos[:, None]).clamp(-self.max_rel, self.max_rel) + self.max_rel
            bias = self.rel_bias(rel).permute(2, 0, 1)                   # (heads, T, T)
            bias = bias.unsqueeze(0).expand(B, -1, -1, -1).reshape(B * self.heads, T, T)
            bias = bias.masked_fill(padding_mask.repeat_interleave(self.heads, 0)[:, None, :],
                                    float("-inf"))
            h = self.attn_norm(x)
            x = x + self.attn(h, h, h, attn_mask=bias, need_weights=False)[0]
            x = x + self.conv(x)
            x = x + 0.5 * self.ff2(x)
            return self.final_norm(x)

    rng = np.random.default_rng(95)
    x = tt.from_numpy(rng.standard_normal((3, 7, 8)))
    lengths = tt.tensor([7, 5, 6])
    padding_mask = tt.arange(7)[None, :] >= lengths[:, None]
    target = tt.from_numpy(rng.standard_normal((3, 7, 8)))
    model = ConformerBlock().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-9)
    warmup = tt.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=2)
    losses = []
    valid = (~padding_mask).unsqueeze(-1).double()
    for _ in range(steps):
        out = model(x, padding_mask)
        loss = ((out - target) ** 2 * valid).sum() / valid.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        warmup.step()
        losses.append(loss.item())
    return {"losses": losses, "params": _params(model)}


def test_conformer_block_trains_the_same():
    _parity(conformer)


def test_conformer_block_runs_in_minidl():
    out = conformer(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 37. DeepAR-style forecasting: an LSTM emitting Student-t / negative-binomial parameters -
def deepar(tt, state=None, steps=3, likelihood="studentt"):
    nn, F = tt.nn, tt.nn.functional
    D = tt.distributions

    class DeepAR(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(2, 8, batch_first=True)
            self.proj = nn.Linear(8, 3)

        def forward(self, past, covariates):
            out, state = self.rnn(tt.cat([past.unsqueeze(-1), covariates.unsqueeze(-1)], -1))
            a, b, c = self.proj(out).unbind(-1)
            if likelihood == "studentt":
                return D.StudentT(df=2 + F.softplus(a), loc=b, scale=F.softplus(c) + 1e-3)
            return D.NegativeBinomial(total_count=F.softplus(a) + 1e-3, logits=b)

    rng = np.random.default_rng(96)
    t = np.arange(13)
    if likelihood == "studentt":
        series = np.sin(t / 2 + rng.uniform(0, 6, (5, 1))) + 0.2 * rng.standard_t(3, (5, 13))
    else:
        series = rng.poisson(3 + 2 * np.sin(t / 2 + rng.uniform(0, 6, (5, 1)))).astype(float)
    series = tt.from_numpy(series)
    cov = tt.from_numpy(np.tile(np.cos(t / 3), (5, 1)))
    model = DeepAR().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        dist = model(series[:, :-1], cov[:, 1:])
        loss = -dist.log_prob(series[:, 1:]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():
        dist = model(series[:, :-1], cov[:, 1:])
        summary = [dist.mean, dist.variance] if likelihood != "studentt" else [
            dist.mean, dist.variance, dist.entropy()]
        summary.append(dist.log_prob(series[:, 1:]))
    return {"losses": losses, "summary": np.concatenate([_np(s).ravel() for s in summary]),
            "params": _params(model)}


@pytest.mark.parametrize("likelihood", ["studentt", "negbin"])
def test_deepar_trains_the_same(likelihood):
    _parity(deepar, likelihood=likelihood)


def test_deepar_runs_in_minidl():
    out = deepar(minidl, steps=2, likelihood="negbin")
    assert np.isfinite(out["losses"]).all()


# ---- 38. quantization-aware training by hand: fake-quantized weights and activations --------
def fake_quant_qat(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class QATLinear(nn.Linear):
        def forward(self, x):
            w_scale = (self.weight.detach().abs().amax(dim=1).clamp(min=1e-8) / 127).float()
            w_q = tt.fake_quantize_per_channel_affine(
                self.weight, w_scale, tt.zeros(self.out_features, dtype=tt.int32), 0, -127, 127)
            return F.linear(x, w_q, self.bias)

    class ActQuant(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("running_max", tt.tensor(1.0, dtype=tt.float64))

        def forward(self, x):
            if self.training:
                with tt.no_grad():
                    self.running_max.mul_(0.9).add_(0.1 * x.detach().abs().max())
            scale = (self.running_max / 127).item()
            return tt.fake_quantize_per_tensor_affine(x, scale, 0, -128, 127)

    model = nn.Sequential(QATLinear(4, 8), nn.ReLU(), ActQuant(), QATLinear(8, 3)).double()
    _load(model, tt, state)
    rng = np.random.default_rng(97)
    x = tt.from_numpy(rng.standard_normal((10, 4)))
    y = tt.from_numpy(rng.integers(0, 3, 10))
    opt = tt.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with tt.no_grad():
        logits = model(x)
        q = tt.quantize_per_tensor(x.float(), 0.05, 3, tt.quint8)
        int_repr = q.int_repr()
        back = q.dequantize()
    return {"losses": losses, "logits": _np(logits), "int_repr": repr(int_repr[0].tolist()),
            "back": _np(back), "params": _params(model)}


def test_fake_quant_qat_trains_the_same():
    _parity(fake_quant_qat)


def test_fake_quant_qat_runs_in_minidl():
    out = fake_quant_qat(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 39. an optimal-transport loss: log-domain Sinkhorn between point clouds ---------------
def sinkhorn_ot(tt, state=None, steps=3):
    nn = tt.nn

    def sinkhorn(x, y, eps=0.1, iters=20):
        C = tt.cdist(x, y, p=2) ** 2
        n, m = C.shape[-2:]
        log_a = tt.full((x.shape[0], n), -math.log(n), dtype=x.dtype)
        log_b = tt.full((x.shape[0], m), -math.log(m), dtype=x.dtype)
        f, g = tt.zeros_like(log_a), tt.zeros_like(log_b)
        for _ in range(iters):
            f = -eps * tt.logsumexp((g.unsqueeze(1) - C) / eps + log_b.unsqueeze(1), dim=2)
            g = -eps * tt.logsumexp((f.unsqueeze(2) - C) / eps + log_a.unsqueeze(2), dim=1)
        log_P = (f.unsqueeze(2) + g.unsqueeze(1) - C) / eps + log_a.unsqueeze(2) + \
            log_b.unsqueeze(1)
        return (log_P.exp() * C).sum(dim=(1, 2)), log_P

    rng = np.random.default_rng(98)
    target = tt.from_numpy(rng.standard_normal((2, 8, 2)) * 0.5 + 1.0)
    noise = tt.from_numpy(rng.standard_normal((2, 8, 3)))
    generator = nn.Sequential(nn.Linear(3, 8), nn.Softplus(beta=2.0), nn.Linear(8, 2)).double()
    _load(generator, tt, state)
    opt = tt.optim.Adam(generator.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        cost, log_P = sinkhorn(generator(noise), target)
        loss = cost.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():
        _, log_P = sinkhorn(generator(noise), target)
        marginals = tt.cat([log_P.exp().sum(2), log_P.exp().sum(1)], 1)
    return {"losses": losses, "marginals": _np(marginals), "params": _params(generator)}


def test_sinkhorn_ot_trains_the_same():
    _parity(sinkhorn_ot)


def test_sinkhorn_ot_runs_in_minidl():
    out = sinkhorn_ot(minidl, steps=2)
    np.testing.assert_allclose(out["marginals"].sum(1), 2.0, rtol=1e-8)


# ---- 40. a T5-style encoder: bucketed relative position bias, RMS layer norm, no biases ------
def t5_encoder(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    D, H, BUCKETS, MAX_DIST = 8, 2, 6, 8

    def relative_position_bucket(relative_position, bidirectional=True,
                                 num_buckets=BUCKETS, max_distance=MAX_DIST):
        relative_buckets = 0
        if bidirectional:
            num_buckets //= 2
            relative_buckets += (relative_position > 0).to(tt.long) * num_buckets
            relative_position = tt.abs(relative_position)
        max_exact = num_buckets // 2
        is_small = relative_position < max_exact
        relative_position_if_large = max_exact + (
            tt.log(relative_position.float() / max_exact)
            / math.log(max_distance / max_exact) * (num_buckets - max_exact)).to(tt.long)
        relative_position_if_large = tt.min(
            relative_position_if_large, tt.full_like(relative_position_if_large, num_buckets - 1))
        relative_buckets += tt.where(is_small, relative_position, relative_position_if_large)
        return relative_buckets

    class T5LayerNorm(nn.Module):
        def __init__(self, hidden_size, eps=1e-6):
            super().__init__()
            self.weight = nn.Parameter(tt.ones(hidden_size))
            self.variance_epsilon = eps

        def forward(self, hidden_states):
            variance = hidden_states.to(tt.float32).pow(2).mean(-1, keepdim=True)
            hidden_states = hidden_states * tt.rsqrt(variance + self.variance_epsilon)
            return self.weight * hidden_states

    class T5Layer(nn.Module):
        def __init__(self, has_relative_attention_bias):
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(D, D, bias=False) for _ in range(4))
            if has_relative_attention_bias:
                self.relative_attention_bias = nn.Embedding(BUCKETS, H)
            self.ln1, self.ln2 = T5LayerNorm(D), T5LayerNorm(D)
            self.wi, self.wo = nn.Linear(D, 2 * D, bias=False), nn.Linear(2 * D, D, bias=False)

        def compute_bias(self, length):
            context = tt.arange(length, dtype=tt.long)[:, None]
            memory = tt.arange(length, dtype=tt.long)[None, :]
            buckets = relative_position_bucket(memory - context)
            return self.relative_attention_bias(buckets).permute([2, 0, 1]).unsqueeze(0)

        def forward(self, x, position_bias, mask):
            B, T, _ = x.shape
            h = self.ln1(x)
            q, k, v = (f(h).view(B, T, H, D // H).transpose(1, 2) for f in (self.q, self.k, self.v))
            if position_bias is None:
                position_bias = self.compute_bias(T) + mask
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=position_bias, scale=1.0)
            x = x + self.o(a.transpose(1, 2).reshape(B, T, D))
            return x + self.wo(F.relu(self.wi(self.ln2(x)))), position_bias

    class T5Encoder(nn.Module):
        def __init__(self, vocab=12):
            super().__init__()
            self.embed_tokens = nn.Embedding(vocab, D)
            self.block = nn.ModuleList([T5Layer(i == 0) for i in range(2)])
            self.final_layer_norm = T5LayerNorm(D)
            self.lm_head = nn.Linear(D, vocab, bias=False)

        def forward(self, ids, attention_mask):
            x = self.embed_tokens(ids)
            mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * tt.finfo(x.dtype).min
            bias = None
            for layer in self.block:
                x, bias = layer(x, bias, mask)
            return self.lm_head(self.final_layer_norm(x) * D ** -0.5)

    rng = np.random.default_rng(99)
    ids = tt.from_numpy(rng.integers(1, 12, (3, 7)))
    attention_mask = tt.from_numpy((np.arange(7)[None, :] < np.array([[7], [5], [6]])).astype(
        np.int64))
    labels = ids.masked_fill(attention_mask == 0, -100)
    model = T5Encoder().double()
    _load(model, tt, state)
    opt = tt.optim.Adafactor(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        logits = model(ids, attention_mask)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1),
                               ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    buckets = relative_position_bucket(tt.arange(-9, 10))
    return {"losses": losses, "buckets": repr(buckets.tolist()), "params": _params(model)}


def test_t5_encoder_with_relative_position_bias_trains_the_same():
    # T5LayerNorm takes the variance in float32 (as Hugging Face's does), and a float32 sum's
    # rounding depends on its order, which is each framework's own: float32 tolerances
    _parity(t5_encoder, rtol=1e-6, atol=1e-8, loss_rtol=1e-7)


def test_t5_encoder_runs_in_minidl():
    out = t5_encoder(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 41. a Set Transformer: induced set attention blocks and pooling by attention ------------
def set_transformer(tt, state=None, steps=3):
    nn = tt.nn

    class MAB(nn.Module):
        def __init__(self, dim_Q, dim_K, dim_V, num_heads, ln=True):
            super().__init__()
            self.dim_V, self.num_heads = dim_V, num_heads
            self.fc_q, self.fc_k = nn.Linear(dim_Q, dim_V), nn.Linear(dim_K, dim_V)
            self.fc_v, self.fc_o = nn.Linear(dim_K, dim_V), nn.Linear(dim_V, dim_V)
            self.ln0 = nn.LayerNorm(dim_V) if ln else nn.Identity()
            self.ln1 = nn.LayerNorm(dim_V) if ln else nn.Identity()

        def forward(self, Q, K):
            Q = self.fc_q(Q)
            K, V = self.fc_k(K), self.fc_v(K)
            dim_split = self.dim_V // self.num_heads
            Q_ = tt.cat(Q.split(dim_split, 2), 0)
            K_ = tt.cat(K.split(dim_split, 2), 0)
            V_ = tt.cat(V.split(dim_split, 2), 0)
            A = tt.softmax(Q_.bmm(K_.transpose(1, 2)) / math.sqrt(self.dim_V), 2)
            O = tt.cat((Q_ + A.bmm(V_)).split(Q.size(0), 0), 2)
            O = self.ln0(O)
            return self.ln1(O + nn.functional.relu(self.fc_o(O)))

    class ISAB(nn.Module):
        def __init__(self, dim_in, dim_out, num_heads, num_inds):
            super().__init__()
            self.I = nn.Parameter(tt.Tensor(1, num_inds, dim_out))
            nn.init.xavier_uniform_(self.I)
            self.mab0 = MAB(dim_out, dim_in, dim_out, num_heads)
            self.mab1 = MAB(dim_in, dim_out, dim_out, num_heads)

        def forward(self, X):
            H = self.mab0(self.I.repeat(X.size(0), 1, 1), X)
            return self.mab1(X, H)

    class PMA(nn.Module):
        def __init__(self, dim, num_heads, num_seeds):
            super().__init__()
            self.S = nn.Parameter(tt.Tensor(1, num_seeds, dim))
            nn.init.xavier_uniform_(self.S)
            self.mab = MAB(dim, dim, dim, num_heads)

        def forward(self, X):
            return self.mab(self.S.repeat(X.size(0), 1, 1), X)

    model = nn.Sequential(ISAB(2, 8, 2, 3), ISAB(8, 8, 2, 3), PMA(8, 2, 1),
                          nn.Flatten(), nn.Linear(8, 1)).double()
    _load(model, tt, state)
    rng = np.random.default_rng(100)
    sets = rng.standard_normal((6, 9, 2)) * rng.uniform(0.5, 2, (6, 1, 1))
    target = tt.from_numpy(np.abs(sets).max(axis=(1, 2))[:, None])
    x = tt.from_numpy(sets)
    opt = tt.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        loss = nn.functional.l1_loss(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():
        perm = tt.from_numpy(rng.permutation(9))
        invariance = (model(x) - model(x[:, perm])).abs().max()
    return {"losses": losses, "invariance": [invariance.item()], "params": _params(model)}


def test_set_transformer_trains_the_same():
    out = _parity(set_transformer)
    assert out["invariance"][0] < 1e-12


def test_set_transformer_runs_in_minidl():
    out = set_transformer(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 42. GIN for graph classification: a sparse adjacency, sum readout by index_add ----------
def gin(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class GINConv(nn.Module):
        def __init__(self, dim_in, dim_out):
            super().__init__()
            self.eps = nn.Parameter(tt.zeros(1))
            self.mlp = nn.Sequential(nn.Linear(dim_in, dim_out), nn.BatchNorm1d(dim_out),
                                     nn.ReLU(), nn.Linear(dim_out, dim_out))

        def forward(self, x, adj):
            return self.mlp((1 + self.eps) * x + tt.sparse.mm(adj, x))

    class GIN(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleList([GINConv(3, 8), GINConv(8, 8)])
            self.head = nn.Linear(3 + 8 + 8, 2)

        def forward(self, x, adj, batch, num_graphs):
            readouts = [tt.zeros(num_graphs, x.size(1), dtype=x.dtype).index_add_(0, batch, x)]
            for conv in self.convs:
                x = F.relu(conv(x, adj))
                readouts.append(tt.zeros(num_graphs, x.size(1), dtype=x.dtype)
                                .index_add_(0, batch, x))
            return self.head(tt.cat(readouts, dim=1))

    rng = np.random.default_rng(101)
    sizes = [5, 4, 6, 3]
    edges, batch, offset = [], [], 0
    for g, n in enumerate(sizes):
        for i in range(n):
            for j in range(i + 1, n):
                if rng.random() < 0.5 or j == i + 1:
                    edges += [(offset + i, offset + j), (offset + j, offset + i)]
        batch += [g] * n
        offset += n
    index = tt.tensor(np.array(edges).T.tolist())
    adj = tt.sparse_coo_tensor(index, tt.ones(index.size(1), dtype=tt.float64),
                               (offset, offset)).coalesce()
    x = tt.from_numpy(rng.standard_normal((offset, 3)))
    batch = tt.tensor(batch)
    y = tt.tensor([0, 1, 1, 0])
    model = GIN().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x, adj, batch, len(sizes)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    degree = tt.sparse.sum(adj, dim=1).to_dense()
    return {"losses": losses, "degree": _np(degree), "nnz": repr(adj._nnz()),
            "params": _params(model)}


def test_gin_with_a_sparse_adjacency_trains_the_same():
    _parity(gin)


def test_gin_runs_in_minidl():
    out = gin(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 43. SIREN: sine layers with their special init, fitted to values and a Laplacian -------
def siren(tt, state=None, steps=3):
    nn = tt.nn

    class SineLayer(nn.Module):
        def __init__(self, in_features, out_features, is_first=False, omega_0=30.0):
            super().__init__()
            self.omega_0, self.is_first = omega_0, is_first
            self.linear = nn.Linear(in_features, out_features)
            with tt.no_grad():
                bound = 1 / in_features if is_first else math.sqrt(6 / in_features) / omega_0
                self.linear.weight.uniform_(-bound, bound)

        def forward(self, x):
            return tt.sin(self.omega_0 * self.linear(x))

    def laplace(y, x):
        grad = tt.autograd.grad(y, [x], grad_outputs=tt.ones_like(y), create_graph=True)[0]
        div = 0.0
        for i in range(grad.shape[-1]):
            div = div + tt.autograd.grad(grad[..., i], x, tt.ones_like(grad[..., i]),
                                         create_graph=True)[0][..., i:i + 1]
        return div

    model = nn.Sequential(SineLayer(2, 12, is_first=True, omega_0=3.0),
                          SineLayer(12, 12, omega_0=3.0), nn.Linear(12, 1)).double()
    _load(model, tt, state)
    rng = np.random.default_rng(102)
    coords_np = rng.uniform(-1, 1, (20, 2))
    coords = tt.from_numpy(coords_np).requires_grad_(True)
    target = tt.from_numpy(np.sin(2 * coords_np[:, :1]) * np.cos(coords_np[:, 1:]))
    target_lap = -5 * target
    opt = tt.optim.Adam(lr=1e-3, params=model.parameters())
    losses = []
    for _ in range(steps):
        out = model(coords)
        lap = laplace(out, coords)
        loss = ((out - target) ** 2).mean() + 1e-2 * ((lap - target_lap) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "params": _params(model)}


def test_siren_with_a_laplacian_loss_trains_the_same():
    _parity(siren)


def test_siren_runs_in_minidl():
    out = siren(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 44. noisy student: soft pseudo-labels as probability targets, label smoothing --------
def noisy_student(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    def net():
        return nn.Sequential(nn.Linear(5, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Dropout(0.0),
                             nn.Linear(12, 4))

    teacher, student = net().double(), net().double()
    _load(teacher, tt, state, "t.")
    _load(student, tt, state, "s.")
    rng = np.random.default_rng(103)
    labelled = tt.from_numpy(rng.standard_normal((8, 5)))
    labels = tt.from_numpy(rng.integers(0, 4, 8))
    unlabelled = tt.from_numpy(rng.standard_normal((12, 5)))
    noise = rng.standard_normal((steps, 12, 5)) * 0.1
    teacher.eval()
    with tt.no_grad():
        pseudo = F.softmax(teacher(unlabelled) / 0.5, dim=1)
        confident = pseudo.max(dim=1).values > 0.3
    opt = tt.optim.NAdam(student.parameters(), lr=1e-2, momentum_decay=4e-3)
    losses = []
    for i in range(steps):
        student.train()
        noisy = unlabelled + tt.from_numpy(noise[i])
        loss_u = F.cross_entropy(student(noisy[confident]), pseudo[confident],
                                 label_smoothing=0.1)
        loss_l = F.cross_entropy(student(labelled), labels, label_smoothing=0.1,
                                 weight=tt.tensor([1.0, 2.0, 1.0, 0.5], dtype=tt.float64))
        loss = loss_l + 0.5 * loss_u
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():
        per_row = F.cross_entropy(student(unlabelled), pseudo, reduction="none",
                                  label_smoothing=0.2)
    return {"losses": losses, "per_row": _np(per_row), "n_confident": repr(int(confident.sum())),
            "params": {**_params(teacher, "t."), **_params(student, "s.")}}


def test_noisy_student_with_soft_targets_trains_the_same():
    _parity(noisy_student)


def test_noisy_student_runs_in_minidl():
    out = noisy_student(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 45. an orthogonal RNN: the recurrent matrix parametrized orthogonal --------------------
def orthogonal_rnn(tt, state=None, steps=3, orthogonal_map="matrix_exp"):
    nn, F = tt.nn, tt.nn.functional
    orthogonal = nn.utils.parametrizations.orthogonal

    class OrthogonalRNN(nn.Module):
        def __init__(self, n_in=3, hidden=6, n_out=2):
            super().__init__()
            self.input_layer = nn.Linear(n_in, hidden)
            self.recurrent = orthogonal(nn.Linear(hidden, hidden, bias=False),
                                        orthogonal_map=orthogonal_map)
            self.out = nn.Linear(hidden, n_out)

        def forward(self, x):
            h = tt.zeros(x.size(0), self.recurrent.in_features, dtype=x.dtype)
            with nn.utils.parametrize.cached():
                for t in range(x.size(1)):
                    h = tt.tanh(self.input_layer(x[:, t]) + self.recurrent(h))
            return self.out(h)

    rng = np.random.default_rng(104)
    x = tt.from_numpy(rng.standard_normal((5, 6, 3)))
    y = tt.from_numpy(rng.integers(0, 2, 5))
    model = OrthogonalRNN().double()
    _load(model, tt, state)
    opt = tt.optim.RMSprop(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    W = model.recurrent.weight
    ortho = (W @ W.T - tt.eye(6, dtype=W.dtype)).abs().max()
    return {"losses": losses, "ortho": [ortho.item()], "weight": _np(W),
            "params": _params(model)}


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley", "householder"])
def test_orthogonal_rnn_trains_the_same(orthogonal_map):
    out = _parity(orthogonal_rnn, orthogonal_map=orthogonal_map, loss_atol=1e-10)
    # the trivialization's base was drawn while the layer was float32 (before .double())
    assert out["ortho"][0] < 1e-6


def test_orthogonal_rnn_runs_in_minidl():
    out = orthogonal_rnn(minidl, steps=2)
    assert out["ortho"][0] < 1e-6


# ---- 46. Glow: ActNorm with data-dependent init, LU-decomposed 1x1 convolutions, squeezes ----
def glow(tt, state=None, steps=3, lu=True):
    nn, F = tt.nn, tt.nn.functional

    def squeeze(x):
        b, c, h, w = x.shape
        x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return x.reshape(b, c * 4, h // 2, w // 2)

    class ActNorm(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.loc = nn.Parameter(tt.zeros(1, c, 1, 1))
            self.log_scale = nn.Parameter(tt.zeros(1, c, 1, 1))
            self.register_buffer("initialized", tt.tensor(0, dtype=tt.uint8))

        def forward(self, x):
            if self.initialized.item() == 0:
                with tt.no_grad():
                    flat = x.permute(1, 0, 2, 3).reshape(x.shape[1], -1)
                    self.loc.copy_(-flat.mean(1).view_as(self.loc))
                    self.log_scale.copy_(-tt.log(flat.std(1) + 1e-6).view_as(self.log_scale))
                    self.initialized.fill_(1)
            logdet = x.shape[2] * x.shape[3] * self.log_scale.sum()
            return (x + self.loc) * tt.exp(self.log_scale), logdet

    class InvConv2dLU(nn.Module):
        def __init__(self, c, weight):
            super().__init__()
            P, L, U = tt.linalg.lu(weight)
            s = tt.diagonal(U)
            self.register_buffer("w_p", P)
            self.register_buffer("u_mask", tt.triu(tt.ones_like(U), 1))
            self.register_buffer("l_mask", self.u_mask.T.clone())
            self.register_buffer("s_sign", tt.sign(s))
            self.register_buffer("l_eye", tt.eye(c, dtype=weight.dtype))
            self.w_l, self.w_u = nn.Parameter(L), nn.Parameter(tt.triu(U, 1))
            self.w_s = nn.Parameter(tt.log(tt.abs(s)))

        def calc_weight(self):
            return self.w_p @ (self.w_l * self.l_mask + self.l_eye) @ (
                (self.w_u * self.u_mask) + tt.diag(self.s_sign * tt.exp(self.w_s)))

        def forward(self, x):
            weight = self.calc_weight()
            logdet = x.shape[2] * x.shape[3] * tt.sum(self.w_s)
            return F.conv2d(x, weight.unsqueeze(2).unsqueeze(3)), logdet

    class InvConv2d(nn.Module):
        def __init__(self, c, weight):
            super().__init__()
            self.weight = nn.Parameter(weight.clone())

        def forward(self, x):
            logdet = x.shape[2] * x.shape[3] * tt.slogdet(self.weight)[1]
            return F.conv2d(x, self.weight.unsqueeze(2).unsqueeze(3)), logdet

    class AffineCoupling(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(c // 2, 8, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(8, c, 1))

        def forward(self, x):
            a, b = x.chunk(2, 1)
            log_s, t = self.net(a).chunk(2, 1)
            s = tt.sigmoid(log_s + 2)
            return tt.cat([a, (b + t) * s], 1), tt.sum(tt.log(s).view(x.shape[0], -1), 1)

    class Flow(nn.Module):
        def __init__(self, c, weight):
            super().__init__()
            self.actnorm = ActNorm(c)
            self.invconv = InvConv2dLU(c, weight) if lu else InvConv2d(c, weight)
            self.coupling = AffineCoupling(c)

        def forward(self, x):
            x, l1 = self.actnorm(x)
            x, l2 = self.invconv(x)
            x, l3 = self.coupling(x)
            return x, l1 + l2 + l3

    rng = np.random.default_rng(105)
    weights = [tt.from_numpy(np.linalg.qr(rng.standard_normal((4, 4)))[0]) for _ in range(2)]
    flows = nn.ModuleList([Flow(4, w) for w in weights]).double()
    _load(flows, tt, state)
    images = tt.from_numpy(rng.uniform(0, 1, (6, 1, 4, 4)) + rng.uniform(0, 1 / 256, (6, 1, 4, 4)))
    opt = tt.optim.Adam(flows.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        z, logdet = squeeze(images - 0.5), 0
        for flow in flows:
            z, ld = flow(z)
            logdet = logdet + ld
        log_p = (-0.5 * (z ** 2 + math.log(2 * math.pi))).view(z.shape[0], -1).sum(1)
        n_pixel = 16
        loss = (-(log_p + logdet - math.log(256) * n_pixel) / (math.log(2) * n_pixel)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "params": _params(flows)}


def test_glow_with_lu_decomposed_convolutions_trains_the_same():
    _parity(glow)


def test_glow_with_slogdet_trains_the_same():
    _parity(glow, lu=False)


def test_glow_runs_in_minidl():
    out = glow(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 47. decorrelated batch norm (ZCA by eigh) and an orthogonal Procrustes alignment (SVD) --
def whitening_procrustes(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class DecorrelatedBN(nn.Module):
        def __init__(self, num_features, eps=1e-3, momentum=0.1):
            super().__init__()
            self.eps, self.momentum = eps, momentum
            self.register_buffer("running_mean", tt.zeros(num_features, dtype=tt.float64))
            self.register_buffer("running_wm", tt.eye(num_features, dtype=tt.float64))
            self.weight = nn.Parameter(tt.ones(num_features, dtype=tt.float64))
            self.bias = nn.Parameter(tt.zeros(num_features, dtype=tt.float64))

        def forward(self, x):
            if self.training:
                mean = x.mean(0)
                xc = x - mean
                sigma = xc.T @ xc / x.size(0) + self.eps * tt.eye(x.size(1), dtype=x.dtype)
                eigvals, eigvecs = tt.linalg.eigh(sigma)
                wm = eigvecs @ tt.diag(eigvals.rsqrt()) @ eigvecs.T
                with tt.no_grad():
                    self.running_mean.lerp_(mean, self.momentum)
                    self.running_wm.lerp_(wm, self.momentum)
            else:
                xc, wm = x - self.running_mean, self.running_wm
            return xc @ wm * self.weight + self.bias

    rng = np.random.default_rng(106)
    mix = rng.standard_normal((4, 4))
    x = tt.from_numpy(rng.standard_normal((16, 4)) @ mix)
    rotation = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    anchors = rng.standard_normal((16, 3))
    target = tt.from_numpy(anchors @ rotation)
    model = nn.Sequential(nn.Linear(4, 4), DecorrelatedBN(4), nn.Tanh(), nn.Linear(4, 3)).double()
    _load(model, tt, state)
    opt = tt.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(steps):
        emb = model(x)
        U, S, Vh = tt.linalg.svd(emb.T @ target, full_matrices=False)
        R = U @ Vh
        loss = F.mse_loss(emb @ R, target) + 1e-3 * S.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with tt.no_grad():
        white = model[1](model[0](x))
        cov = tt.cov(white.T)
    return {"losses": losses, "cov": _np(cov), "params": _params(model)}


def test_decorrelated_bn_and_procrustes_train_the_same():
    _parity(whitening_procrustes)


def test_decorrelated_bn_and_procrustes_run_in_minidl():
    out = whitening_procrustes(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 48. unsupervised optical flow: backward warping by grid_sample, a smoothness prior ------
def optical_flow(tt, state=None, steps=3, padding_mode="border"):
    nn, F = tt.nn, tt.nn.functional

    def warp(img, flow):
        B, _, H, W = img.shape
        ys, xs = tt.meshgrid(tt.arange(H, dtype=img.dtype), tt.arange(W, dtype=img.dtype),
                             indexing="ij")
        grid = tt.stack((xs, ys), dim=0).unsqueeze(0) + flow
        gx = 2.0 * grid[:, 0] / max(W - 1, 1) - 1.0
        gy = 2.0 * grid[:, 1] / max(H - 1, 1) - 1.0
        return F.grid_sample(img, tt.stack((gx, gy), dim=3), mode="bilinear",
                             padding_mode=padding_mode, align_corners=True)

    def charbonnier(x, eps=1e-3, alpha=0.45):
        return ((x ** 2 + eps ** 2) ** alpha).mean()

    def smoothness(flow):
        dx = flow[:, :, :, 1:] - flow[:, :, :, :-1]
        dy = flow[:, :, 1:, :] - flow[:, :, :-1, :]
        return charbonnier(dx) + charbonnier(dy)

    class FlowNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.LeakyReLU(0.1),
                                      nn.Conv2d(8, 8, 3, padding=2, dilation=2), nn.LeakyReLU(0.1),
                                      nn.Conv2d(8, 2, 3, padding=1))

        def forward(self, a, b):
            return self.body(tt.cat([a, b], 1))

    rng = np.random.default_rng(107)
    base = np.cumsum(np.cumsum(rng.standard_normal((3, 1, 10, 10)), 2), 3) / 5
    shifted = np.roll(base, (1, -1), axis=(2, 3)) + 0.01 * rng.standard_normal(base.shape)
    a, b = tt.from_numpy(base), tt.from_numpy(shifted)
    model = FlowNet().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    losses = []
    for _ in range(steps):
        flow = model(a, b)
        loss = charbonnier(warp(b, flow) - a) + 0.1 * smoothness(flow)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "params": _params(model)}


@pytest.mark.parametrize("padding_mode", ["border", "zeros", "reflection"])
def test_optical_flow_by_warping_trains_the_same(padding_mode):
    _parity(optical_flow, padding_mode=padding_mode)


def test_optical_flow_runs_in_minidl():
    out = optical_flow(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 49. evidential deep learning: Dirichlet evidence, digamma and lgamma in the loss --------
def evidential(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    K = 3

    def kl_divergence(alpha):
        ones = tt.ones([1, K], dtype=alpha.dtype)
        sum_alpha = tt.sum(alpha, dim=1, keepdim=True)
        first_term = (tt.lgamma(sum_alpha) - tt.lgamma(alpha).sum(dim=1, keepdim=True)
                      + tt.lgamma(ones).sum(dim=1, keepdim=True)
                      - tt.lgamma(ones.sum(dim=1, keepdim=True)))
        second_term = ((alpha - ones).mul(tt.digamma(alpha) - tt.digamma(sum_alpha))
                       .sum(dim=1, keepdim=True))
        return first_term + second_term

    def edl_digamma_loss(output, target, epoch_num, annealing_step=4):
        evidence = F.softplus(output)
        alpha = evidence + 1
        y = F.one_hot(target, K).to(alpha.dtype)
        S = tt.sum(alpha, dim=1, keepdim=True)
        A = tt.sum(y * (tt.digamma(S) - tt.digamma(alpha)), dim=1, keepdim=True)
        annealing_coef = min(1.0, epoch_num / annealing_step)
        kl_alpha = (alpha - 1) * (1 - y) + 1
        return tt.mean(A + annealing_coef * kl_divergence(kl_alpha))

    rng = np.random.default_rng(108)
    x = tt.from_numpy(rng.standard_normal((10, 4)))
    y = tt.from_numpy(rng.integers(0, K, 10))
    model = nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, K)).double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for epoch in range(steps):
        loss = edl_digamma_loss(model(x), y, epoch + 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():
        alpha = F.softplus(model(x)) + 1
        uncertainty = K / alpha.sum(1)
        dirichlet = tt.distributions.Dirichlet(alpha)
        stats = tt.cat([dirichlet.entropy(), dirichlet.log_prob(alpha / alpha.sum(1, True)),
                        uncertainty])
    return {"losses": losses, "stats": _np(stats), "params": _params(model)}


def test_evidential_deep_learning_trains_the_same():
    _parity(evidential)


def test_evidential_deep_learning_runs_in_minidl():
    out = evidential(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 50. learning to rank with ListMLE and ListNet (allRank's losses), NDCG -------------------------
def listwise_ranking(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    def listMLE(y_pred, y_true, eps=1e-10, padded_value_indicator=-1):
        random_indices = tt.from_numpy(shuffles[len(losses)])
        y_pred_shuffled = y_pred[:, random_indices]
        y_true_shuffled = y_true[:, random_indices]
        y_true_sorted, indices = y_true_shuffled.sort(descending=True, dim=-1)
        mask = y_true_sorted == padded_value_indicator
        preds_sorted_by_true = tt.gather(y_pred_shuffled, dim=1, index=indices)
        preds_sorted_by_true[mask] = float("-inf")
        max_pred_values, _ = preds_sorted_by_true.max(dim=1, keepdim=True)
        preds_sorted_by_true_minus_max = preds_sorted_by_true - max_pred_values
        cumsums = tt.cumsum(preds_sorted_by_true_minus_max.exp().flip(dims=[1]), dim=1).flip(
            dims=[1])
        observation_loss = tt.log(cumsums + eps) - preds_sorted_by_true_minus_max
        observation_loss[mask] = 0.0
        return tt.mean(tt.sum(observation_loss, dim=1))

    def listNet(y_pred, y_true, padded_value_indicator=-1):
        mask = y_true == padded_value_indicator
        y_pred = y_pred.masked_fill(mask, float("-inf"))
        y_true = y_true.masked_fill(mask, float("-inf"))
        preds_smax = F.softmax(y_pred, dim=1)
        true_smax = F.softmax(y_true, dim=1)
        preds_log = tt.log(preds_smax + 1e-10)
        return tt.mean(-tt.sum(true_smax * preds_log, dim=1))

    rng = np.random.default_rng(109)
    feats = tt.from_numpy(rng.standard_normal((4, 6, 5)))
    relevance = rng.permuted(np.tile(np.arange(6.0), (4, 1)), axis=1) / 2
    relevance[1, 4:] = -1
    relevance[3, 5] = -1
    relevance = tt.from_numpy(relevance)
    shuffles = [rng.permutation(6) for _ in range(steps)]
    scorer = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 1)).double()
    _load(scorer, tt, state)
    opt = tt.optim.Adam(scorer.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        scores = scorer(feats).squeeze(-1)
        loss = listMLE(scores, relevance) + listNet(scores, relevance)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():
        scores = scorer(feats).squeeze(-1)
        order = scores.argsort(dim=1, descending=True, stable=True)
        gains = (2 ** relevance.clamp(min=0).gather(1, order) - 1)
        discounts = tt.log2(tt.arange(2, 8, dtype=tt.float64))
        dcg = (gains / discounts).sum(1)
    return {"losses": losses, "dcg": _np(dcg), "params": _params(scorer)}


def test_listwise_ranking_trains_the_same():
    _parity(listwise_ranking)


def test_listwise_ranking_runs_in_minidl():
    out = listwise_ranking(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 51. DeepSurv: the Cox partial likelihood over risk sets, Breslow ties ------------------
def deepsurv(tt, state=None, steps=3):
    nn = tt.nn

    def cox_ph_loss(log_h, durations, events, eps=1e-7):
        idx = durations.sort(descending=True, stable=True)[1]
        events, log_h = events[idx], log_h[idx]
        gamma = log_h.max()
        log_cumsum_h = log_h.sub(gamma).exp().cumsum(0).add(eps).log().add(gamma)
        return -log_h.sub(log_cumsum_h).mul(events).sum().div(events.sum())

    rng = np.random.default_rng(110)
    x_np = rng.standard_normal((16, 4))
    risk = x_np @ np.array([0.8, -0.5, 0.0, 0.3])
    durations_np = np.round(rng.exponential(np.exp(-risk)) * 4) / 4
    events_np = (rng.random(16) < 0.7).astype(np.float64)
    x, durations, events = (tt.from_numpy(v) for v in (x_np, durations_np, events_np))
    net = nn.Sequential(nn.Linear(4, 8), nn.SELU(), nn.AlphaDropout(0.0), nn.Linear(8, 1,
                                                                                    bias=False))
    net = net.double()
    _load(net, tt, state)
    opt = tt.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = cox_ph_loss(net(x).squeeze(1), durations, events)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():
        log_h = net(x).squeeze(1)
        order = durations.argsort(descending=True, stable=True)
        lse = tt.logcumsumexp(log_h[order], dim=0)
        concordant = ((log_h[:, None] > log_h[None, :]) & (durations[:, None] < durations[None, :])
                      & (events[:, None] > 0)).sum()
    return {"losses": losses, "lse": _np(lse), "concordant": repr(int(concordant)),
            "params": _params(net)}


def test_deepsurv_trains_the_same():
    _parity(deepsurv)


def test_deepsurv_runs_in_minidl():
    out = deepsurv(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 52. PixelCNN++: masked convolutions, a discretized logistic mixture likelihood --------
def pixelcnn(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    n_mix = 2

    class MaskedConv2d(nn.Conv2d):
        def __init__(self, mask_type, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.register_buffer("mask", tt.ones_like(self.weight))
            _, _, kH, kW = self.weight.size()
            self.mask[:, :, kH // 2, kW // 2 + (mask_type == "B"):] = 0
            self.mask[:, :, kH // 2 + 1:] = 0

        def forward(self, x):
            with tt.no_grad():  # the usual code: self.weight.data *= self.mask
                self.weight.mul_(self.mask)
            return super().forward(x)

    def log_sum_exp(x):
        m, _ = tt.max(x, dim=-1)
        m2, _ = tt.max(x, dim=-1, keepdim=True)
        return m + tt.log(tt.sum(tt.exp(x - m2), dim=-1))

    def discretized_mix_logistic_loss_1d(x, l):
        x = x.permute(0, 2, 3, 1)
        l = l.permute(0, 2, 3, 1)
        xs = [int(y) for y in x.size()]
        logit_probs = l[:, :, :, :n_mix]
        l = l[:, :, :, n_mix:].contiguous().view(xs + [n_mix * 2])
        means = l[:, :, :, :, :n_mix]
        log_scales = tt.clamp(l[:, :, :, :, n_mix:2 * n_mix], min=-7.0)
        x = x.contiguous().unsqueeze(-1) + tt.zeros(xs + [n_mix], dtype=x.dtype)
        centered_x = x - means
        inv_stdv = tt.exp(-log_scales)
        plus_in = inv_stdv * (centered_x + 1.0 / 255.0)
        cdf_plus = F.sigmoid(plus_in)
        min_in = inv_stdv * (centered_x - 1.0 / 255.0)
        cdf_min = F.sigmoid(min_in)
        log_cdf_plus = plus_in - F.softplus(plus_in)
        log_one_minus_cdf_min = -F.softplus(min_in)
        cdf_delta = cdf_plus - cdf_min
        mid_in = inv_stdv * centered_x
        log_pdf_mid = mid_in - log_scales - 2.0 * F.softplus(mid_in)
        inner_inner_cond = (cdf_delta > 1e-5).to(x.dtype)
        inner_inner_out = inner_inner_cond * tt.log(tt.clamp(cdf_delta, min=1e-12)) + (
            1.0 - inner_inner_cond) * (log_pdf_mid - math.log(127.5))
        inner_cond = (x > 0.999).to(x.dtype)
        inner_out = inner_cond * log_one_minus_cdf_min + (1.0 - inner_cond) * inner_inner_out
        cond = (x < -0.999).to(x.dtype)
        log_probs = cond * log_cdf_plus + (1.0 - cond) * inner_out
        log_probs = tt.sum(log_probs, dim=3) + F.log_softmax(logit_probs, -1)
        return -tt.sum(log_sum_exp(log_probs))

    model = nn.Sequential(MaskedConv2d("A", 1, 6, 5, padding=2), nn.ELU(),
                          MaskedConv2d("B", 6, 6, 3, padding=1), nn.ELU(),
                          nn.Conv2d(6, 3 * n_mix, 1)).double()
    _load(model, tt, state)
    rng = np.random.default_rng(111)
    images = tt.from_numpy(np.round(rng.uniform(0, 1, (4, 1, 6, 6)) * 255) / 127.5 - 1)
    opt = tt.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(steps):
        loss = discretized_mix_logistic_loss_1d(images, model(images)) / images.numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "params": _params(model)}


def test_pixelcnn_with_a_logistic_mixture_trains_the_same():
    _parity(pixelcnn)


def test_pixelcnn_runs_in_minidl():
    out = pixelcnn(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 53. super-resolution: bicubic upsampling, pixel unshuffle, grouped transposed convs ----
def super_resolution_bicubic(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class SRNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.unshuffle = nn.PixelUnshuffle(2)
            self.body = nn.Sequential(nn.Conv2d(12, 12, 3, padding=1, groups=3), nn.PReLU(12),
                                      nn.Conv2d(12, 8, 1))
            self.up = nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1,
                                         groups=2, dilation=1)
            self.tail = nn.Conv2d(6, 3, 3, padding=1, padding_mode="replicate")

        def forward(self, lr):
            base = F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False)
            x = self.body(self.unshuffle(base))
            return base + self.tail(F.leaky_relu(self.up(x), 0.2))

    rng = np.random.default_rng(112)
    hr = np.cumsum(np.cumsum(rng.standard_normal((2, 3, 8, 8)), 2), 3) / 8
    lr = tt.from_numpy(hr).reshape(2, 3, 4, 2, 4, 2).mean((3, 5))
    hr = tt.from_numpy(hr)
    model = SRNet().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        sr = model(lr)
        loss = F.l1_loss(sr, hr) + 0.1 * (1 - F.cosine_similarity(sr.flatten(1), hr.flatten(1))
                                          ).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():
        bicubic = F.interpolate(lr, size=(7, 9), mode="bicubic", align_corners=True)
        area = F.interpolate(hr, scale_factor=0.5, mode="area")
        psnr = 10 * tt.log10(1 / F.mse_loss(model(lr), hr))
    return {"losses": losses, "bicubic": _np(bicubic), "area": _np(area), "psnr": [psnr.item()],
            "params": _params(model)}


def test_super_resolution_with_bicubic_upsampling_trains_the_same():
    _parity(super_resolution_bicubic)


def test_super_resolution_with_bicubic_upsampling_runs_in_minidl():
    out = super_resolution_bicubic(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 54. Transformer-XL: segment recurrence with a memory, relative positions by a shift ----
def transformer_xl(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    D, H, MEM = 8, 2, 4

    class RelPartialLearnableMultiHeadAttn(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv_net = nn.Linear(D, 3 * D, bias=False)
            self.r_net = nn.Linear(D, D, bias=False)
            self.o_net = nn.Linear(D, D, bias=False)
            self.layer_norm = nn.LayerNorm(D)
            self.r_w_bias = nn.Parameter(tt.zeros(H, D // H))
            self.r_r_bias = nn.Parameter(tt.zeros(H, D // H))

        @staticmethod
        def _rel_shift(x):
            zero_pad = tt.zeros((x.size(0), 1) + x.size()[2:], dtype=x.dtype)
            x_padded = tt.cat([zero_pad, x], dim=1)
            x_padded = x_padded.view(x.size(1) + 1, x.size(0), *x.size()[2:])
            return x_padded[1:].view_as(x)

        def forward(self, w, r, attn_mask, mems):
            qlen, rlen, bsz = w.size(0), r.size(0), w.size(1)
            cat = tt.cat([mems, w], 0)
            w_heads = self.qkv_net(cat)
            r_head_k = self.r_net(r)
            w_head_q, w_head_k, w_head_v = tt.chunk(w_heads, 3, dim=-1)
            w_head_q = w_head_q[-qlen:]
            klen = w_head_k.size(0)
            w_head_q = w_head_q.view(qlen, bsz, H, D // H)
            w_head_k = w_head_k.view(klen, bsz, H, D // H)
            w_head_v = w_head_v.view(klen, bsz, H, D // H)
            r_head_k = r_head_k.view(rlen, H, D // H)
            AC = tt.einsum("ibnd,jbnd->ijbn", (w_head_q + self.r_w_bias, w_head_k))
            BD = self._rel_shift(tt.einsum("ibnd,jnd->ijbn", (w_head_q + self.r_r_bias,
                                                              r_head_k)))
            attn_score = (AC + BD) * (1 / (D // H) ** 0.5)
            attn_score = attn_score.float().masked_fill(attn_mask[:, :, None, None],
                                                        -float("inf")).type_as(attn_score)
            attn_prob = F.softmax(attn_score, dim=1)
            attn_vec = tt.einsum("ijbn,jbnd->ibnd", (attn_prob, w_head_v))
            attn_vec = attn_vec.contiguous().view(qlen, bsz, D)
            return self.layer_norm(w + self.o_net(attn_vec))

    class PositionalEmbedding(nn.Module):
        def __init__(self):
            super().__init__()
            inv_freq = 1 / (10000 ** (tt.arange(0.0, D, 2.0, dtype=tt.float64) / D))
            self.register_buffer("inv_freq", inv_freq)

        def forward(self, pos_seq):
            sinusoid_inp = tt.ger(pos_seq, self.inv_freq)
            return tt.cat([sinusoid_inp.sin(), sinusoid_inp.cos()], dim=-1)[:, None, :]

    class MemTransformerLM(nn.Module):
        def __init__(self, vocab=10):
            super().__init__()
            self.word_emb = nn.Embedding(vocab, D)
            self.pos_emb = PositionalEmbedding()
            self.layers = nn.ModuleList([RelPartialLearnableMultiHeadAttn() for _ in range(2)])
            self.out = nn.Linear(D, vocab)

        def forward(self, data, mems):
            qlen, bsz = data.size()
            word_emb = self.word_emb(data)
            mlen = mems[0].size(0)
            klen = mlen + qlen
            dec_attn_mask = tt.triu(word_emb.new_ones(qlen, klen), diagonal=1 + mlen).bool()
            pos_seq = tt.arange(klen - 1, -1, -1.0, dtype=word_emb.dtype)
            pos_emb = self.pos_emb(pos_seq)
            core_out, hids = word_emb, [word_emb]
            for i, layer in enumerate(self.layers):
                core_out = layer(core_out, pos_emb.squeeze(1), dec_attn_mask, mems[i])
                hids.append(core_out)
            with tt.no_grad():
                new_mems = [tt.cat([m, h], dim=0)[-MEM:].detach() for m, h in zip(mems, hids)]
            return self.out(core_out), new_mems

    rng = np.random.default_rng(113)
    data = tt.from_numpy(rng.integers(0, 10, (3 * 3 + 1, 2)))
    model = MemTransformerLM().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=2.5e-3)
    mems = [tt.zeros(0, 2, D, dtype=tt.float64) for _ in range(3)]
    losses = []
    for step in range(steps):
        i = 3 * (step % 3)
        logits, mems = model(data[i:i + 3], mems)
        loss = F.cross_entropy(logits.view(-1, 10), data[i + 1:i + 4].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "mem": repr([tuple(m.shape) for m in mems]),
            "params": _params(model)}


def test_transformer_xl_trains_the_same():
    _parity(transformer_xl)


def test_transformer_xl_runs_in_minidl():
    out = transformer_xl(minidl, steps=2)
    assert np.isfinite(out["losses"]).all() and out["mem"] == repr([(4, 2, 8)] * 3)


# ---- 55. Longformer-style sliding-window attention: overlapping chunks by as_strided -------
def sliding_window_attention(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    W = 2  # one-sided window

    def chunk(hidden_states, window_overlap):
        hidden_states = hidden_states.view(hidden_states.size(0),
                                           hidden_states.size(1) // (window_overlap * 2),
                                           window_overlap * 2, hidden_states.size(2))
        chunk_size = list(hidden_states.size())
        chunk_size[1] = chunk_size[1] * 2 - 1
        chunk_stride = list(hidden_states.stride())
        chunk_stride[1] = chunk_stride[1] // 2
        return hidden_states.as_strided(size=chunk_size, stride=chunk_stride)

    class SlidingAttention(nn.Module):
        def __init__(self, d=6):
            super().__init__()
            self.qkv = nn.Linear(d, 3 * d)
            self.out = nn.Linear(d, d)

        def forward(self, x):
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            qc, kc, vc = chunk(q, W), chunk(k, W), chunk(v, W)
            scores = tt.einsum("bcxd,bcyd->bcxy", (qc, kc)) / math.sqrt(q.size(-1))
            pos = tt.arange(2 * W)
            band = (pos[:, None] - pos[None, :]).abs() <= W
            weights = F.softmax(scores.masked_fill(~band, float("-inf")), dim=-1)
            ctx = tt.einsum("bcxy,bcyd->bcxd", (weights, vc))
            # the middle of each overlapping chunk, and the two ends
            L = x.size(1)
            out = tt.zeros_like(x)
            counts = tt.zeros(1, L, 1, dtype=x.dtype)
            for c in range(ctx.size(1)):
                out = out + F.pad(ctx[:, c], (0, 0, c * W, L - c * W - 2 * W))
                counts = counts + F.pad(tt.ones(1, 2 * W, 1, dtype=x.dtype),
                                        (0, 0, c * W, L - c * W - 2 * W))
            return self.out(out / counts)

    rng = np.random.default_rng(114)
    x = tt.from_numpy(rng.standard_normal((2, 8, 6)))
    y = tt.from_numpy(rng.standard_normal((2, 8, 6)))
    model = SlidingAttention().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    strided = chunk(x, W)
    return {"losses": losses, "chunks": _np(strided), "stride": repr(strided.stride()),
            "params": _params(model)}


def test_sliding_window_attention_with_as_strided_trains_the_same():
    _parity(sliding_window_attention)


def test_sliding_window_attention_runs_in_minidl():
    out = sliding_window_attention(minidl, steps=2)
    assert np.isfinite(out["losses"]).all() and out["chunks"].shape == (2, 3, 4, 6)


# ---- 56. StyleGAN2 pieces: modulated convolution by grouped conv, R1 and path-length penalties
def stylegan2(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class EqualLinear(nn.Module):
        def __init__(self, in_dim, out_dim, bias_init=0.0, lr_mul=1.0):
            super().__init__()
            self.weight = nn.Parameter(tt.randn(out_dim, in_dim).div_(lr_mul))
            self.bias = nn.Parameter(tt.zeros(out_dim).fill_(bias_init))
            self.scale, self.lr_mul = (1 / math.sqrt(in_dim)) * lr_mul, lr_mul

        def forward(self, x):
            return F.linear(x, self.weight * self.scale, bias=self.bias * self.lr_mul)

    class ModulatedConv2d(nn.Module):
        def __init__(self, in_channel, out_channel, kernel_size, style_dim, demodulate=True):
            super().__init__()
            self.eps, self.kernel_size = 1e-8, kernel_size
            self.in_channel, self.out_channel = in_channel, out_channel
            self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
            self.padding = kernel_size // 2
            self.weight = nn.Parameter(tt.randn(1, out_channel, in_channel, kernel_size,
                                                kernel_size))
            self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)
            self.demodulate = demodulate

        def forward(self, input, style):
            batch, in_channel, height, width = input.shape
            style = self.modulation(style).view(batch, 1, in_channel, 1, 1)
            weight = self.scale * self.weight * style
            if self.demodulate:
                demod = tt.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
                weight = weight * demod.view(batch, self.out_channel, 1, 1, 1)
            weight = weight.view(batch * self.out_channel, in_channel, self.kernel_size,
                                 self.kernel_size)
            input = input.view(1, batch * in_channel, height, width)
            out = F.conv2d(input, weight, padding=self.padding, groups=batch)
            return out.view(batch, self.out_channel, height, width)

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.style = nn.Sequential(EqualLinear(4, 4, lr_mul=0.01), nn.LeakyReLU(0.2))
            self.const = nn.Parameter(tt.randn(1, 4, 4, 4))
            self.conv1 = ModulatedConv2d(4, 4, 3, 4)
            self.noise_strength = nn.Parameter(tt.zeros(1))
            self.to_rgb = ModulatedConv2d(4, 1, 1, 4, demodulate=False)

        def forward(self, z, noise):
            w = self.style(z)
            x = self.const.repeat(z.size(0), 1, 1, 1)
            x = F.leaky_relu(self.conv1(x, w) + self.noise_strength * noise, 0.2) * math.sqrt(2)
            return self.to_rgb(x, w), w

    D = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.LeakyReLU(0.2), nn.Flatten(),
                      nn.Linear(64, 1))
    G = Generator()
    G, D = G.double(), D.double()
    _load(G, tt, state, "G.")
    _load(D, tt, state, "D.")
    rng = np.random.default_rng(115)
    real = tt.from_numpy(rng.standard_normal((steps, 3, 1, 4, 4)))
    zs = tt.from_numpy(rng.standard_normal((steps, 3, 4)))
    noises = tt.from_numpy(rng.standard_normal((steps, 3, 1, 4, 4)))
    path_noise = tt.from_numpy(rng.standard_normal((steps, 3, 1, 4, 4)) / 4)
    g_opt = tt.optim.Adam(G.parameters(), lr=2e-3, betas=(0.0, 0.99))
    d_opt = tt.optim.Adam(D.parameters(), lr=2e-3, betas=(0.0, 0.99))
    losses, mean_path_length = [], 0.0
    for i in range(steps):
        fake, _ = G(zs[i], noises[i])
        d_loss = F.softplus(D(fake.detach())).mean() + F.softplus(-D(real[i])).mean()
        real_img = real[i].clone().requires_grad_(True)
        real_pred = D(real_img)
        grad_real, = tt.autograd.grad(outputs=real_pred.sum(), inputs=real_img,
                                      create_graph=True)
        r1_loss = grad_real.pow(2).reshape(grad_real.shape[0], -1).sum(1).mean()
        d_opt.zero_grad()
        (d_loss + 5 * r1_loss).backward()
        d_opt.step()
        fake, latents = G(zs[i], noises[i])
        g_loss = F.softplus(-D(fake)).mean()
        grad, = tt.autograd.grad(outputs=(fake * path_noise[i]).sum(), inputs=latents,
                                 create_graph=True)
        path_lengths = tt.sqrt(grad.pow(2).sum(1))
        path_mean = mean_path_length + 0.01 * (path_lengths.mean() - mean_path_length)
        path_loss = (path_lengths - path_mean).pow(2).mean()
        mean_path_length = path_mean.detach()
        g_opt.zero_grad()
        (g_loss + 2 * path_loss).backward()
        g_opt.step()
        losses += [d_loss.item(), r1_loss.item(), g_loss.item(), path_loss.item()]
    return {"losses": losses, "params": {**_params(G, "G."), **_params(D, "D.")}}


def test_stylegan2_trains_the_same():
    _parity(stylegan2)


def test_stylegan2_runs_in_minidl():
    out = stylegan2(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 57. an RSSM world model: GRUCell dynamics, Gaussian latents, KL balancing, free nats ---
def rssm(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    D = tt.distributions
    S, H, A, O = 3, 6, 2, 5

    class RSSM(nn.Module):
        def __init__(self):
            super().__init__()
            self.img_in = nn.Linear(S + A, H)
            self.cell = nn.GRUCell(H, H)
            self.prior_net = nn.Linear(H, 2 * S)
            self.post_net = nn.Linear(H + O, 2 * S)
            self.decoder = nn.Sequential(nn.Linear(H + S, 8), nn.ELU(), nn.Linear(8, O))
            self.reward = nn.Linear(H + S, 1)

        def dist(self, stats):
            mean, std = stats.chunk(2, -1)
            return D.Independent(D.Normal(mean, F.softplus(std) + 0.1), 1)

        def forward(self, obs, actions, eps):
            B, T, _ = obs.shape
            h = tt.zeros(B, H, dtype=obs.dtype)
            s = tt.zeros(B, S, dtype=obs.dtype)
            priors, posts, feats = [], [], []
            for t in range(T):
                h = self.cell(F.elu(self.img_in(tt.cat([s, actions[:, t]], -1))), h)
                prior_stats = self.prior_net(h)
                post_stats = self.post_net(tt.cat([h, obs[:, t]], -1))
                post = self.dist(post_stats)
                s = post.mean + post.stddev * eps[:, t]   # rsample with the shared noise
                priors.append(prior_stats)
                posts.append(post_stats)
                feats.append(tt.cat([h, s], -1))
            return tt.stack(priors, 1), tt.stack(posts, 1), tt.stack(feats, 1)

    def kl_loss(post_stats, prior_stats, balance=0.8, free=1.0):
        kl_lhs = D.kl_divergence(model.dist(post_stats.detach()), model.dist(prior_stats))
        kl_rhs = D.kl_divergence(model.dist(post_stats), model.dist(prior_stats.detach()))
        loss_lhs = tt.maximum(kl_lhs.mean(), tt.tensor(free, dtype=kl_lhs.dtype))
        loss_rhs = tt.maximum(kl_rhs.mean(), tt.tensor(free, dtype=kl_rhs.dtype))
        return balance * loss_lhs + (1 - balance) * loss_rhs, kl_lhs.mean()

    rng = np.random.default_rng(116)
    obs = tt.from_numpy(rng.standard_normal((4, 5, O)))
    actions = tt.from_numpy(np.tanh(rng.standard_normal((4, 5, A))))
    rewards = tt.from_numpy(rng.standard_normal((4, 5, 1)))
    eps = rng.standard_normal((steps, 4, 5, S))
    model = RSSM().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=3e-3, eps=1e-5)
    losses = []
    for i in range(steps):
        prior, post, feat = model(obs, actions, tt.from_numpy(eps[i]))
        recon = D.Independent(D.Normal(model.decoder(feat), 1.0), 1).log_prob(obs).mean()
        reward = D.Normal(model.reward(feat), 1.0).log_prob(rewards).mean()
        kl, kl_value = kl_loss(post, prior)
        loss = kl - recon - reward
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 100.0)
        opt.step()
        losses += [loss.item(), kl_value.item()]
    return {"losses": losses, "params": _params(model)}


def test_rssm_world_model_trains_the_same():
    _parity(rssm)


def test_rssm_world_model_runs_in_minidl():
    out = rssm(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 58. a pointer network that learns to sort: attention as the output distribution -------
def pointer_network(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    Hd = 8

    class PointerNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(1, Hd)
            self.encoder = nn.LSTM(Hd, Hd, batch_first=True)
            self.decoder = nn.LSTMCell(Hd, Hd)
            self.W1, self.W2 = nn.Linear(Hd, Hd, bias=False), nn.Linear(Hd, Hd, bias=False)
            self.v = nn.Linear(Hd, 1, bias=False)
            self.start = nn.Parameter(tt.zeros(Hd))

        def forward(self, x, targets=None):
            B, L, _ = x.shape
            emb = self.embed(x)
            enc, (h, c) = self.encoder(emb)
            h, c = h[0], c[0]
            inp = self.start.unsqueeze(0).expand(B, -1)
            visited = tt.zeros(B, L, dtype=tt.bool)
            log_probs, pointers = [], []
            for t in range(L):
                h, c = self.decoder(inp, (h, c))
                u = self.v(tt.tanh(self.W1(enc) + self.W2(h).unsqueeze(1))).squeeze(-1)
                logp = F.log_softmax(u.masked_fill(visited, float("-inf")), dim=-1)
                idx = targets[:, t] if targets is not None else logp.argmax(-1)
                log_probs.append(logp)
                pointers.append(idx)
                visited = visited.scatter(1, idx.unsqueeze(1), True)
                inp = emb[tt.arange(B), idx]
            return tt.stack(log_probs, 1), tt.stack(pointers, 1)

    rng = np.random.default_rng(117)
    values = rng.uniform(0, 1, (6, 5, 1))
    order = tt.from_numpy(np.argsort(values[..., 0], axis=1))
    x = tt.from_numpy(values)
    model = PointerNet().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        log_probs, _ = model(x, order)
        loss = F.nll_loss(log_probs.reshape(-1, 5), order.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 2.0, norm_type=float("inf"))
        opt.step()
        losses.append(loss.item())
    with tt.no_grad():
        _, pointers = model(x)
    return {"losses": losses, "pointers": repr(pointers.tolist()), "params": _params(model)}


def test_pointer_network_trains_the_same():
    _parity(pointer_network)


def test_pointer_network_runs_in_minidl():
    out = pointer_network(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 59. an attentive neural process: cross-attention weights regularised, returned per head -
def attentive_np(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    D = tt.distributions

    class ANP(nn.Module):
        def __init__(self, d=8):
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(2, d), nn.ReLU(), nn.Linear(d, d))
            self.query = nn.Linear(1, d)
            self.cross = nn.MultiheadAttention(d, 2, batch_first=True)
            self.decoder = nn.Sequential(nn.Linear(d + 1, d), nn.ReLU(), nn.Linear(d, 2))

        def forward(self, xc, yc, xt, context_mask):
            r = self.encoder(tt.cat([xc, yc], -1))
            rep, attn = self.cross(self.query(xt), self.query(xc), r,
                                   key_padding_mask=context_mask, need_weights=True,
                                   average_attn_weights=False)
            mu, raw = self.decoder(tt.cat([rep, xt], -1)).chunk(2, -1)
            return D.Normal(mu, 0.1 + 0.9 * F.softplus(raw)), attn

    rng = np.random.default_rng(118)
    xs = rng.uniform(-2, 2, (4, 10, 1))
    ys = np.sin(xs * rng.uniform(1, 2, (4, 1, 1)))
    xc, yc = tt.from_numpy(xs[:, :6]), tt.from_numpy(ys[:, :6])
    xt, yt = tt.from_numpy(xs), tt.from_numpy(ys)
    mask = tt.zeros(4, 6, dtype=tt.bool)
    mask[1, 4:] = True
    mask[2, 5] = True
    model = ANP().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(steps):
        dist, attn = model(xc, yc, xt, mask)
        entropy = -(attn * tt.log(attn + 1e-9)).sum(-1).mean()
        loss = -dist.log_prob(yt).mean() + 0.01 * entropy
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses += [loss.item(), entropy.item()]
    with tt.no_grad():
        _, attn = model(xc, yc, xt, mask)
    return {"losses": losses, "attn": _np(attn), "attn_shape": repr(tuple(attn.shape)),
            "params": _params(model)}


def test_attentive_neural_process_trains_the_same():
    out = _parity(attentive_np)
    assert out["attn_shape"] == "(4, 2, 10, 6)"


def test_attentive_neural_process_runs_in_minidl():
    out = attentive_np(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 60. SAGAN/BigGAN pieces: conditional batch norm, self-attention, spectral norm, hinge --
def sagan(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    SN = nn.utils.parametrizations.spectral_norm
    C = 3

    class ConditionalBatchNorm2d(nn.Module):
        def __init__(self, num_features, num_classes):
            super().__init__()
            self.num_features = num_features
            self.bn = nn.BatchNorm2d(num_features, affine=False)
            self.embed = nn.Embedding(num_classes, num_features * 2)
            with tt.no_grad():
                self.embed.weight[:, :num_features].normal_(1, 0.02)
                self.embed.weight[:, num_features:].zero_()

        def forward(self, x, y):
            gamma, beta = self.embed(y).chunk(2, 1)
            return gamma.view(-1, self.num_features, 1, 1) * self.bn(x) + beta.view(
                -1, self.num_features, 1, 1)

    class SelfAttention(nn.Module):
        def __init__(self, in_dim):
            super().__init__()
            self.query_conv = SN(nn.Conv2d(in_dim, in_dim // 2, 1))
            self.key_conv = SN(nn.Conv2d(in_dim, in_dim // 2, 1))
            self.value_conv = SN(nn.Conv2d(in_dim, in_dim, 1))
            self.gamma = nn.Parameter(tt.zeros(1))

        def forward(self, x):
            B, Ch, W, H = x.size()
            proj_query = self.query_conv(x).view(B, -1, W * H).permute(0, 2, 1)
            proj_key = self.key_conv(x).view(B, -1, W * H)
            attention = F.softmax(tt.bmm(proj_query, proj_key), dim=-1)
            proj_value = self.value_conv(x).view(B, -1, W * H)
            out = tt.bmm(proj_value, attention.permute(0, 2, 1)).view(B, Ch, W, H)
            return self.gamma * out + x

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = SN(nn.Linear(4, 4 * 2 * 2))
            self.up = SN(nn.ConvTranspose2d(4, 4, 4, 2, 1))
            self.cbn = ConditionalBatchNorm2d(4, C)
            self.attn = SelfAttention(4)
            self.out = SN(nn.Conv2d(4, 1, 3, padding=1))

        def forward(self, z, y):
            x = self.fc(z).view(-1, 4, 2, 2)
            x = F.relu(self.cbn(self.up(x), y))
            return tt.tanh(self.out(self.attn(x)))

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = SN(nn.Conv2d(1, 4, 3, 2, 1))
            self.attn = SelfAttention(4)
            self.fc = SN(nn.Linear(4, 1))
            self.embed = SN(nn.Embedding(C, 4))

        def forward(self, x, y):
            h = tt.sum(F.leaky_relu(self.attn(self.conv(x)), 0.1), dim=(2, 3))
            return self.fc(h).squeeze(1) + (self.embed(y) * h).sum(1)  # projection

    def ortho_reg(model, strength=1e-4):
        total = 0.0
        for name, param in model.named_parameters():
            if param.ndim < 2 or "embed" in name:
                continue
            w = param.view(param.shape[0], -1)
            total = total + ((w @ w.t()) * (1.0 - tt.eye(w.shape[0], dtype=w.dtype))).pow(2).sum()
        return strength * total

    G, D = Generator().double(), Discriminator().double()
    _load(G, tt, state, "G.")
    _load(D, tt, state, "D.")
    rng = np.random.default_rng(119)
    real = tt.from_numpy(np.tanh(rng.standard_normal((steps, 4, 1, 4, 4))))
    zs = tt.from_numpy(rng.standard_normal((steps, 4, 4)))
    ys = tt.from_numpy(rng.integers(0, C, (steps, 4)))
    g_opt = tt.optim.Adam(G.parameters(), lr=1e-4, betas=(0.0, 0.9))
    d_opt = tt.optim.Adam(D.parameters(), lr=4e-4, betas=(0.0, 0.9))
    losses = []
    for i in range(steps):
        fake = G(zs[i], ys[i])
        d_loss = F.relu(1.0 - D(real[i], ys[i])).mean() + F.relu(1.0 + D(fake.detach(),
                                                                          ys[i])).mean()
        d_opt.zero_grad()
        d_loss.backward()
        d_opt.step()
        g_loss = -D(G(zs[i], ys[i]), ys[i]).mean() + ortho_reg(G)
        g_opt.zero_grad()
        g_loss.backward()
        g_opt.step()
        losses += [d_loss.item(), g_loss.item()]
    return {"losses": losses, "params": {**_params(G, "G."), **_params(D, "D.")}}


def test_sagan_with_conditional_bn_trains_the_same():
    _parity(sagan)


def test_sagan_runs_in_minidl():
    out = sagan(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 61. BiT: weight-standardized convolutions with group norm, a pre-activation block -----
def bit_resnet(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class StdConv2d(nn.Conv2d):
        def forward(self, x):
            w = self.weight
            v, m = tt.var_mean(w, dim=[1, 2, 3], keepdim=True, unbiased=False)
            w = (w - m) / tt.sqrt(v + 1e-10)
            return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation,
                            self.groups)

    class PreActBottleneck(nn.Module):
        def __init__(self, cin, cout, cmid, stride=1):
            super().__init__()
            self.gn1 = nn.GroupNorm(2, cin)
            self.conv1 = StdConv2d(cin, cmid, 1, bias=False)
            self.gn2 = nn.GroupNorm(2, cmid)
            self.conv2 = StdConv2d(cmid, cmid, 3, stride=stride, padding=1, bias=False)
            self.gn3 = nn.GroupNorm(2, cmid)
            self.conv3 = StdConv2d(cmid, cout, 1, bias=False)
            if stride != 1 or cin != cout:
                self.downsample = StdConv2d(cin, cout, 1, stride=stride, bias=False)

        def forward(self, x):
            out = F.relu(self.gn1(x))
            residual = self.downsample(out) if hasattr(self, "downsample") else x
            out = self.conv1(out)
            out = self.conv2(F.relu(self.gn2(out)))
            out = self.conv3(F.relu(self.gn3(out)))
            return out + residual

    model = nn.Sequential(StdConv2d(3, 8, 3, padding=1, bias=False),
                          PreActBottleneck(8, 8, 4), PreActBottleneck(8, 12, 4, stride=2),
                          nn.GroupNorm(4, 12), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Conv2d(12, 3, 1), nn.Flatten()).double()
    _load(model, tt, state)
    with tt.no_grad():  # BiT zero-initialises the head
        model[-2].weight.zero_()
        model[-2].bias.zero_()
    rng = np.random.default_rng(120)
    x = tt.from_numpy(rng.standard_normal((4, 3, 6, 6)))
    y = tt.from_numpy(rng.integers(0, 3, 4))
    opt = tt.optim.SGD(model.parameters(), lr=0.003, momentum=0.9)
    sched = tt.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / 2 if s < 2 else 0.1 ** (s // 2))
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return {"losses": losses, "params": _params(model)}


def test_bit_weight_standardization_trains_the_same():
    _parity(bit_resnet)


def test_bit_weight_standardization_runs_in_minidl():
    out = bit_resnet(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 62. a hierarchical attention network: packed bidirectional LSTMs with projections -----
def hierarchical_attention(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    pack, unpack = nn.utils.rnn.pack_padded_sequence, nn.utils.rnn.pad_packed_sequence

    class AttentionPool(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.proj = nn.Linear(d, d)
            self.context = nn.Parameter(tt.zeros(d))

        def forward(self, h, mask):
            scores = tt.tanh(self.proj(h)) @ self.context
            weights = F.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
            return (weights.unsqueeze(-1) * h).sum(1)

    class HAN(nn.Module):
        def __init__(self, vocab=15):
            super().__init__()
            self.embedding = nn.Embedding(vocab, 5, padding_idx=0)
            self.word_rnn = nn.LSTM(5, 6, batch_first=True, bidirectional=True, proj_size=3)
            self.word_attn = AttentionPool(6)
            self.sent_rnn = nn.GRU(6, 4, batch_first=True, bidirectional=True)
            self.sent_attn = AttentionPool(8)
            self.fc = nn.Linear(8, 2)

        def forward(self, docs, word_lengths, sent_lengths):
            B, S, W = docs.shape
            flat = docs.view(B * S, W)
            lengths = word_lengths.view(-1)
            keep = lengths > 0
            packed = pack(self.embedding(flat[keep]), lengths[keep], batch_first=True,
                          enforce_sorted=False)
            out, _ = self.word_rnn(packed)
            out, _ = unpack(out, batch_first=True, total_length=W)
            sent_vecs = self.word_attn(out, flat[keep] != 0)
            sents = tt.zeros(B * S, 6, dtype=sent_vecs.dtype)
            sents = sents.index_put((tt.nonzero(keep).squeeze(1),), sent_vecs)
            packed = pack(sents.view(B, S, 6), sent_lengths, batch_first=True,
                          enforce_sorted=False)
            out, _ = self.sent_rnn(packed)
            out, _ = unpack(out, batch_first=True, total_length=S)
            return self.fc(self.sent_attn(out, tt.arange(S)[None, :] < sent_lengths[:, None]))

    rng = np.random.default_rng(121)
    sent_lengths = np.array([3, 2, 1])
    word_lengths = rng.integers(1, 5, (3, 3)) * (np.arange(3)[None, :] < sent_lengths[:, None])
    docs = rng.integers(1, 15, (3, 3, 4)) * (np.arange(4)[None, None, :] < word_lengths[..., None])
    model = HAN().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=1e-2)
    y = tt.tensor([0, 1, 1])
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(tt.from_numpy(docs), tt.from_numpy(word_lengths),
                                     tt.from_numpy(sent_lengths)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "params": _params(model)}


def test_hierarchical_attention_network_trains_the_same():
    _parity(hierarchical_attention)


def test_hierarchical_attention_network_runs_in_minidl():
    out = hierarchical_attention(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 63. segmentation with OHEM: per-pixel losses with weights, ignore_index, smoothing ----
def ohem_segmentation(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class OhemCELoss(nn.Module):
        def __init__(self, thresh, n_min, weight, ignore_lb=255):
            super().__init__()
            self.thresh = -math.log(thresh)
            self.n_min, self.ignore_lb = n_min, ignore_lb
            self.criteria = nn.CrossEntropyLoss(weight=weight, ignore_index=ignore_lb,
                                                reduction="none", label_smoothing=0.05)

        def forward(self, logits, labels):
            loss = self.criteria(logits, labels).view(-1)
            loss, _ = tt.sort(loss, descending=True)
            if loss[self.n_min] > self.thresh:
                loss = loss[loss > self.thresh]
            else:
                loss = loss[:self.n_min]
            return tt.mean(loss)

    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                          nn.Conv2d(6, 6, 3, padding=2, dilation=2), nn.ReLU(),
                          nn.Conv2d(6, 4, 1)).double()
    _load(model, tt, state)
    rng = np.random.default_rng(122)
    x = tt.from_numpy(rng.standard_normal((2, 3, 6, 6)))
    labels = rng.integers(0, 4, (2, 6, 6))
    labels[0, :2, :2] = 255
    labels = tt.from_numpy(labels)
    crit = OhemCELoss(0.7, 20, weight=tt.tensor([1.0, 2.0, 0.5, 1.5], dtype=tt.float64))
    opt = tt.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4,
                       nesterov=True)
    poly = tt.optim.lr_scheduler.PolynomialLR(opt, total_iters=4, power=0.9)
    losses = []
    for _ in range(steps):
        loss = crit(model(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        poly.step()
        losses.append(loss.item())
    with tt.no_grad():
        logits = model(x)
        mean_loss = F.cross_entropy(logits, labels, ignore_index=255, label_smoothing=0.05,
                                    weight=tt.tensor([1.0, 2.0, 0.5, 1.5], dtype=tt.float64))
        pred = logits.argmax(1)
        valid = labels != 255
        confusion = tt.bincount(labels[valid] * 4 + pred[valid], minlength=16).view(4, 4)
    return {"losses": losses, "mean_loss": [mean_loss.item()],
            "confusion": repr(confusion.tolist()), "params": _params(model)}


def test_ohem_segmentation_trains_the_same():
    _parity(ohem_segmentation)


def test_ohem_segmentation_runs_in_minidl():
    out = ohem_segmentation(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 64. an IRNN: a ReLU RNN with identity recurrent init on sequential inputs ------------
def irnn(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class IRNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.RNN(2, 6, num_layers=2, nonlinearity="relu", batch_first=True,
                              bidirectional=True)
            self.fc = nn.Linear(12, 3)
            for name, p in self.rnn.named_parameters():
                if "weight_hh" in name:
                    nn.init.eye_(p)
                    with tt.no_grad():
                        p.mul_(0.5)
                elif "bias" in name:
                    nn.init.zeros_(p)
                else:
                    nn.init.normal_(p, 0, 0.1)

        def forward(self, x, h0):
            out, hn = self.rnn(x, h0)
            return self.fc(out[:, -1]), hn

    model = IRNN().double()
    _load(model, tt, state)
    rng = np.random.default_rng(123)
    x = tt.from_numpy(rng.standard_normal((4, 7, 2)))
    y = tt.from_numpy(rng.integers(0, 3, 4))
    h0 = tt.from_numpy(rng.standard_normal((4, 4, 6)) * 0.1)
    opt = tt.optim.RMSprop(model.parameters(), lr=1e-3, weight_decay=1e-4)
    losses = []
    for _ in range(steps):
        logits, hn = model(x, h0)
        loss = F.cross_entropy(logits, y) + 1e-3 * hn.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "params": _params(model)}


def test_irnn_trains_the_same():
    _parity(irnn)


def test_irnn_runs_in_minidl():
    out = irnn(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 65. unrolled MRI reconstruction: FFTs, a data-consistency step, a complex-valued net ---
def mri_unrolled(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    fft = tt.fft

    def fft2c(x):
        return fft.fftshift(fft.fft2(fft.ifftshift(x, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))

    def ifft2c(k):
        return fft.fftshift(fft.ifft2(fft.ifftshift(k, dim=(-2, -1)), norm="ortho"),
                            dim=(-2, -1))

    class ModReLU(nn.Module):
        def __init__(self, features):
            super().__init__()
            self.b = nn.Parameter(tt.full((features, 1, 1), -0.1, dtype=tt.float64))

        def forward(self, z):
            mag = tt.abs(z)
            return tt.polar(F.relu(mag + self.b), tt.angle(z))

    class ComplexConv(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.re = nn.Conv2d(cin, cout, 3, padding=1)
            self.im = nn.Conv2d(cin, cout, 3, padding=1)

        def forward(self, z):
            real, imag = z.real, z.imag
            return tt.complex(self.re(real) - self.im(imag), self.re(imag) + self.im(real))

    class Cascade(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = ComplexConv(1, 4)
            self.act = ModReLU(4)
            self.conv2 = ComplexConv(4, 1)
            self.lam = nn.Parameter(tt.tensor(0.5, dtype=tt.float64))

        def forward(self, image, k0, mask):
            image = image + self.conv2(self.act(self.conv1(image)))
            k = fft2c(image)
            k = tt.where(mask, (k + self.lam * k0) / (1 + self.lam), k)
            return ifft2c(k)

    rng = np.random.default_rng(124)
    truth = np.cumsum(np.cumsum(rng.standard_normal((2, 1, 8, 8)), 2), 3) / 8
    truth = truth * np.exp(1j * rng.uniform(-0.3, 0.3, truth.shape))
    mask_np = np.zeros((1, 1, 8, 8), dtype=bool)
    mask_np[..., ::2] = True
    mask_np[..., 3:5] = True
    truth_t = tt.from_numpy(truth)
    mask = tt.from_numpy(np.broadcast_to(mask_np, truth.shape).copy())
    k0 = fft2c(truth_t) * mask
    zero_filled = ifft2c(k0)
    cascades = nn.ModuleList([Cascade(), Cascade()]).double()
    _load(cascades, tt, state)
    opt = tt.optim.Adam(cascades.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        image = zero_filled
        for cascade in cascades:
            image = cascade(image, k0, mask)
        loss = F.l1_loss(tt.view_as_real(image), tt.view_as_real(truth_t)) + \
            F.mse_loss(image.abs(), truth_t.abs())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "zero_filled": _np(tt.view_as_real(zero_filled)),
            "params": _params(cascades)}


def test_unrolled_mri_reconstruction_trains_the_same():
    _parity(mri_unrolled)


def test_unrolled_mri_reconstruction_runs_in_minidl():
    out = mri_unrolled(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 66. a last-layer Laplace approximation: torch.func.hessian, predictive variances -------
def laplace_last_layer(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    func = tt.func

    rng = np.random.default_rng(125)
    x = tt.from_numpy(rng.uniform(-2, 2, (20, 1)))
    y = tt.sin(2 * x) + 0.05 * tt.from_numpy(rng.standard_normal((20, 1)))
    model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    features = model[:2](x).detach()
    head = {k: v.detach() for k, v in model[2].named_parameters()}
    prior_precision, noise = 1.0, 0.1

    def neg_log_joint(w, b):
        pred = func.functional_call(model[2], {"weight": w, "bias": b}, (features,))
        return 0.5 * ((pred - y) ** 2).sum() / noise ** 2 + 0.5 * prior_precision * (
            w.pow(2).sum() + b.pow(2).sum())

    H = func.hessian(neg_log_joint, argnums=(0, 1))(head["weight"], head["bias"])
    H_ww = H[0][0].reshape(8, 8)
    H_wb = H[0][1].reshape(8, 1)
    H_bb = H[1][1].reshape(1, 1)
    full = tt.cat([tt.cat([H_ww, H_wb], 1), tt.cat([H_wb.T, H_bb], 1)], 0)
    cov = tt.linalg.inv(full)
    x_test = tt.linspace(-3, 3, 7, dtype=tt.float64).unsqueeze(1)
    phi = tt.cat([model[:2](x_test).detach(), tt.ones(7, 1, dtype=tt.float64)], 1)
    variance = tt.einsum("ni,ij,nj->n", phi, cov, phi) + noise ** 2
    jac = func.jacrev(lambda w: func.functional_call(model[2], {"weight": w,
                                                                  "bias": head["bias"]},
                                                     (features[:3],)))(head["weight"])
    jfwd = func.jacfwd(lambda w: func.functional_call(model[2], {"weight": w,
                                                                   "bias": head["bias"]},
                                                      (features[:3],)))(head["weight"])
    return {"losses": losses, "variance": _np(variance), "hessian": _np(full),
            "jac": _np(jac - jfwd), "params": _params(model)}


def test_last_layer_laplace_with_func_hessian_trains_the_same():
    _parity(laplace_last_layer)


def test_last_layer_laplace_runs_in_minidl():
    out = laplace_last_layer(minidl, steps=2)
    assert (out["variance"] > 0).all() and np.abs(out["jac"]).max() < 1e-12


# ---- 67. length-bucketed batching: a custom batch sampler, dict samples, a padding collate --
def bucketed_batches(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    data_utils = tt.utils.data

    class SentenceDataset(data_utils.Dataset):
        def __init__(self, sentences, labels):
            self.sentences, self.labels = sentences, labels

        def __len__(self):
            return len(self.sentences)

        def __getitem__(self, i):
            return {"ids": tt.tensor(self.sentences[i]), "label": self.labels[i],
                    "length": len(self.sentences[i])}

    class BucketBatchSampler(data_utils.Sampler):
        def __init__(self, lengths, batch_size, order):
            self.lengths, self.batch_size, self.order = lengths, batch_size, order

        def __iter__(self):
            by_length = sorted(self.order, key=lambda i: self.lengths[i])
            batches = [by_length[i:i + self.batch_size]
                       for i in range(0, len(by_length), self.batch_size)]
            return iter(batches)

        def __len__(self):
            return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def collate(batch):
        ids = nn.utils.rnn.pad_sequence([b["ids"] for b in batch], batch_first=True,
                                        padding_value=0)
        rest = data_utils.default_collate([{"label": b["label"], "length": b["length"]}
                                           for b in batch])
        return ids, rest["label"], rest["length"]

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(12, 6, padding_idx=0)
            self.gru = nn.GRU(6, 6, batch_first=True)
            self.fc = nn.Linear(6, 2)

        def forward(self, ids, lengths):
            packed = nn.utils.rnn.pack_padded_sequence(self.emb(ids), lengths, batch_first=True,
                                                       enforce_sorted=False)
            _, h = self.gru(packed)
            return self.fc(h[-1])

    rng = np.random.default_rng(126)
    sentences = [rng.integers(1, 12, rng.integers(2, 7)).tolist() for _ in range(10)]
    labels = rng.integers(0, 2, 10).tolist()
    extra = SentenceDataset(sentences[:3], labels[:3])
    dataset = data_utils.ConcatDataset([SentenceDataset(sentences, labels), extra])
    train = data_utils.Subset(dataset, list(range(12)))
    sampler = BucketBatchSampler([len(train[i]["ids"]) for i in range(len(train))], 4,
                                 rng.permutation(12).tolist())
    loader = data_utils.DataLoader(train, batch_sampler=sampler, collate_fn=collate)
    model = Classifier().double()
    _load(model, tt, state)
    opt = tt.optim.Adagrad(model.parameters(), lr=0.1, lr_decay=0.01)
    losses, shapes = [], []
    for _ in range(steps):
        for ids, y, lengths in loader:
            loss = F.cross_entropy(model(ids, lengths), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            shapes.append(tuple(ids.shape))
    return {"losses": losses, "shapes": repr(shapes), "n_batches": repr(len(loader)),
            "params": _params(model)}


def test_bucketed_batches_train_the_same():
    out = _parity(bucketed_batches)
    assert out["n_batches"] == "3"


def test_bucketed_batches_run_in_minidl():
    out = bucketed_batches(minidl, steps=1)
    assert np.isfinite(out["losses"]).all()


# ---- 68. model surgery and checkpoint migration: swapped layers, renamed keys, hooks -------
def model_surgery(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional

    class Block(nn.Module):
        _version = 2

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.norm = nn.BatchNorm2d(4)
            self.act = nn.ReLU()

        def forward(self, x):
            return x + self.act(self.norm(self.conv(x)))

        def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                                  missing_keys, unexpected_keys, error_msgs):
            version = local_metadata.get("version", None)
            if version is None or version < 2:  # version 1 called the norm "bn"
                for key in list(state_dict):
                    if key.startswith(prefix + "bn."):
                        state_dict[prefix + "norm." + key[len(prefix + "bn."):]] = \
                            state_dict.pop(key)
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                          missing_keys, unexpected_keys, error_msgs)

    def make():
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), Block(), Block(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).double()

    def convert_bn_to_gn(module):
        for name, child in module.named_children():
            if isinstance(child, nn.BatchNorm2d):
                gn = nn.GroupNorm(2, child.num_features).double()
                with tt.no_grad():
                    gn.weight.copy_(child.weight)
                    gn.bias.copy_(child.bias)
                setattr(module, name, gn)
            else:
                convert_bn_to_gn(child)
        return module

    model = make()
    if state is not None:  # the state after the surgery: what the BatchNorms had is left as is
        model.load_state_dict({k: tt.from_numpy(v.copy()) for k, v in state.items()},
                              strict=False)
    # an old checkpoint: "bn" for "norm", no version metadata
    old = {k.replace(".norm.", ".bn."): v.clone() for k, v in model.state_dict().items()}
    fresh = make()
    result = fresh.load_state_dict(old, strict=True)
    same = all(bool((fresh.state_dict()[k] == v).all()) for k, v in model.state_dict().items())
    convert_bn_to_gn(model)
    model.get_submodule("1").act = nn.GELU()
    model.apply(lambda m: m.register_forward_hook(lambda mod, inp, out: None)
                if isinstance(m, nn.GroupNorm) else None)
    seen = []
    handle = model.get_submodule("2.conv").register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(tuple(args[0].shape)) or None, with_kwargs=True)
    model.get_parameter("5.bias").requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = tt.optim.SGD(trainable, lr=0.05, momentum=0.9)
    rng = np.random.default_rng(127)
    x = tt.from_numpy(rng.standard_normal((4, 1, 5, 5)))
    y = tt.from_numpy(rng.integers(0, 3, 4))
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    handle.remove()
    kinds = sorted({type(m).__name__ for m in model.modules()})
    keys_kept = sorted(model.state_dict(keep_vars=True))[:4]
    return {"losses": losses, "facts": repr((repr(result), same, len(seen), kinds, keys_kept,
                                             len(trainable))),
            "params": _params(model)}


def test_model_surgery_and_checkpoint_migration_train_the_same():
    out = _parity(model_surgery)
    assert "'GroupNorm'" in out["facts"] and "'BatchNorm2d'" not in out["facts"]


def test_model_surgery_runs_in_minidl():
    out = model_surgery(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 69. growing neural cellular automata: fixed Sobel perception, stochastic updates ------
def neural_ca(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    C = 6

    class CAModel(nn.Module):
        def __init__(self):
            super().__init__()
            sobel = tt.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]],
                              dtype=tt.float64) / 8
            identity = tt.zeros(3, 3, dtype=tt.float64)
            identity[1, 1] = 1.0
            kernel = tt.stack([identity, sobel, sobel.T])        # (3, 3, 3)
            self.register_buffer("kernel", kernel.repeat(C, 1, 1).unsqueeze(1))
            self.fc0 = nn.Conv2d(3 * C, 16, 1)
            self.fc1 = nn.Conv2d(16, C, 1, bias=False)
            with tt.no_grad():
                self.fc1.weight.zero_()

        def alive(self, x):
            return F.max_pool2d(x[:, 3:4], kernel_size=3, stride=1, padding=1) > 0.1

        def forward(self, x, fire):
            pre_life = self.alive(x)
            y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), self.kernel, groups=C)
            dx = self.fc1(F.relu(self.fc0(y))) * fire
            x = x + dx
            life = pre_life & self.alive(x)
            return x * life.to(x.dtype)

    rng = np.random.default_rng(128)
    seed = np.zeros((2, C, 8, 8))
    seed[:, 3:, 4, 4] = 1.0
    target = np.zeros((2, 4, 8, 8))
    target[:, :, 2:6, 3:5] = rng.uniform(0.5, 1, (2, 4, 4, 2))
    fires = (rng.random((steps, 4, 2, 1, 8, 8)) < 0.5).astype(np.float64)
    model = CAModel().double()
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=2e-3)
    sched = tt.optim.lr_scheduler.MultiStepLR(opt, [2], 0.3)
    losses = []
    for i in range(steps):
        x = tt.from_numpy(seed)
        for t in range(4):
            x = model(x, tt.from_numpy(fires[i, t]))
        loss = F.mse_loss(x[:, :4], tt.from_numpy(target))
        opt.zero_grad()
        loss.backward()
        with tt.no_grad():
            for p in model.parameters():
                p.grad /= (p.grad.norm() + 1e-8)
        opt.step()
        sched.step()
        losses.append(loss.item())
    return {"losses": losses, "params": _params(model)}


def test_neural_cellular_automata_train_the_same():
    _parity(neural_ca)


def test_neural_cellular_automata_run_in_minidl():
    out = neural_ca(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- 70. 2-D Gaussian splatting: covariances from angles, front-to-back alpha compositing --
def gaussian_splatting(tt, state=None, steps=3):
    nn = tt.nn

    class Splats(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.means = nn.Parameter(tt.zeros(n, 2))
            self.log_scales = nn.Parameter(tt.zeros(n, 2))
            self.angles = nn.Parameter(tt.zeros(n))
            self.colors = nn.Parameter(tt.zeros(n, 3))
            self.opacity_logits = nn.Parameter(tt.zeros(n))
            self.depths = nn.Parameter(tt.zeros(n))

        def forward(self, pixels):
            c, s = tt.cos(self.angles), tt.sin(self.angles)
            R = tt.stack([tt.stack([c, -s], -1), tt.stack([s, c], -1)], -2)     # (n, 2, 2)
            S = tt.diag_embed(tt.exp(self.log_scales))
            cov = R @ S @ S @ R.transpose(1, 2)
            inv = tt.linalg.inv(cov)
            d = pixels[:, None, :] - self.means[None]                           # (P, n, 2)
            power = -0.5 * tt.einsum("pni,nij,pnj->pn", d, inv, d)
            alpha = (tt.sigmoid(self.opacity_logits) * tt.exp(power)).clamp(max=0.99)
            order = tt.argsort(self.depths)
            alpha, colors = alpha[:, order], self.colors[order]
            transmittance = tt.cumprod(tt.cat([tt.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]],
                                              dim=1), dim=1)
            weights = alpha * transmittance
            return weights @ tt.sigmoid(colors)

    n = 5
    model = Splats(n).double()
    _load(model, tt, state)
    rng = np.random.default_rng(129)
    if state is None:
        with tt.no_grad():
            model.means.copy_(tt.from_numpy(rng.uniform(-1, 1, (n, 2))))
            model.log_scales.copy_(tt.from_numpy(rng.uniform(-1.5, -0.5, (n, 2))))
            model.angles.copy_(tt.from_numpy(rng.uniform(0, 3, n)))
            model.colors.copy_(tt.from_numpy(rng.standard_normal((n, 3))))
            model.depths.copy_(tt.from_numpy(rng.permutation(n).astype(np.float64)))
    ys, xs = np.meshgrid(np.linspace(-1, 1, 6), np.linspace(-1, 1, 6), indexing="ij")
    pixels = tt.from_numpy(np.stack([xs.ravel(), ys.ravel()], 1))
    image = tt.from_numpy(rng.uniform(0, 1, (36, 3)))
    opt = tt.optim.Adam([{"params": [model.means], "lr": 1e-2},
                         {"params": [model.log_scales, model.angles], "lr": 5e-3},
                         {"params": [model.colors, model.opacity_logits, model.depths]}],
                        lr=2e-2)
    losses = []
    for _ in range(steps):
        loss = (model(pixels) - image).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "params": _params(model)}


def test_gaussian_splatting_trains_the_same():
    _parity(gaussian_splatting)


def test_gaussian_splatting_runs_in_minidl():
    out = gaussian_splatting(minidl, steps=2)
    assert np.isfinite(out["losses"]).all()


# ---- what the programs found missing, each fix with its own test ------------------------------
def _number_first_cases(tt):
    x = tt.tensor([1.0, 2.0, 3.0])
    i = tt.tensor([1, 2, 3])
    out = tt.empty(3)
    results = [tt.pow(2, x), tt.pow(2.5, i), tt.pow(2, i), tt.add(1, x, alpha=3),
               tt.sub(10, i), tt.sub(1.5, x, alpha=2), tt.mul(3, x), tt.mul(True, i),
               tt.add(2, other=x), tt.pow(2, exponent=x)]
    written = tt.pow(2, x, out=out)
    return results, written is out, out


def test_functions_take_a_python_number_as_input():
    """wavenet's mu-law decoding, torch.pow(1 + mu, y.abs()): torch.pow, add, sub and mul take
    a Python number first (their Number-first overloads); minidl refused it."""
    results, same, out = _number_first_cases(minidl)
    want = [[2, 4, 8], [2.5, 6.25, 15.625], [2, 4, 8], [4, 7, 10], [9, 8, 7], [-0.5, -2.5, -4.5],
            [3, 6, 9], [1, 2, 3], [3, 4, 5], [2, 4, 8]]
    for r, w in zip(results, want):
        np.testing.assert_allclose(r.numpy(), w)
    assert [str(r.dtype) for r in results[:3]] == ["float32", "float32", "int64"]
    assert same and out.tolist() == [2.0, 4.0, 8.0]
    x = minidl.tensor([0.5, 1.5], requires_grad=True)
    minidl.pow(3, x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.log(3) * 3 ** np.array([0.5, 1.5]), rtol=1e-6)
    with pytest.raises(RuntimeError, match="alpha must not be a floating point"):
        minidl.add(1, minidl.tensor([1, 2]), alpha=0.5)
    with pytest.raises(TypeError, match="must be a Tensor"):
        minidl.pow("2", minidl.tensor([1.0]))


def test_functions_take_a_python_number_as_input_as_torch():
    torch = pytest.importorskip("torch")
    ours, _, _ = _number_first_cases(minidl)
    theirs, same, _ = _number_first_cases(torch)
    assert same
    for a, b in zip(ours, theirs):
        assert str(a.dtype).split(".")[-1] == str(b.dtype).split(".")[-1]
        np.testing.assert_allclose(a.numpy(), b.numpy())
    with pytest.raises(RuntimeError, match="alpha must not be a floating point"):
        torch.add(1, torch.tensor([1, 2]), alpha=0.5)


def _compiled_facts(tt):
    model = tt.nn.Sequential(tt.nn.Linear(2, 3), tt.nn.ReLU(), tt.nn.Linear(3, 1))
    compiled = tt.compile(model, backend="eager")
    compiled.eval()
    facts = [type(compiled).__name__, compiled._orig_mod is model, model.training,
             compiled.training, compiled._orig_mod[0] is model[0], len(compiled),
             sorted(compiled.state_dict()), [n for n, _ in compiled.named_parameters()],
             tt.compile(model, disable=True) is model]
    compiled.train()
    compiled.note = "set through the wrapper"
    facts += [model.training, model.note, repr(compiled).splitlines()[:2]]
    x = tt.ones(4, 2)
    facts.append(bool((compiled(x) == model(x)).all()))
    clone = copy.deepcopy(compiled)
    facts += [type(clone).__name__, clone._orig_mod is not model]
    other = tt.compile(tt.nn.Sequential(tt.nn.Linear(2, 3), tt.nn.ReLU(), tt.nn.Linear(3, 1)))
    other.load_state_dict(compiled.state_dict())
    facts.append(bool((other._orig_mod(x) == model(x)).all()))  # (not traced again: time)
    try:
        model.load_state_dict(compiled.state_dict())
        facts.append("loaded")
    except RuntimeError as e:
        facts.append("_orig_mod.0.weight" in str(e))
    return facts


def test_compile_wraps_a_module_as_torch_does():
    """a training script's checkpoint of a compiled model: its keys carry torch's _orig_mod.
    prefix (which the script strips to load it into a plain model); minidl.compile returned
    the model itself, so the keys differed from torch's and model._orig_mod did not exist."""
    facts = _compiled_facts(minidl)
    assert facts[0] == "OptimizedModule" and facts[1] and facts[-1] is True
    assert facts[6] == ["_orig_mod.0.bias", "_orig_mod.0.weight", "_orig_mod.2.bias",
                        "_orig_mod.2.weight"]


def test_compile_wraps_a_module_as_torch_does_as_torch():
    torch = pytest.importorskip("torch")
    assert _compiled_facts(minidl) == _compiled_facts(torch)


def _mask_warnings(tt):
    import warnings

    nn = tt.nn
    tt.manual_seed(0)
    x = tt.randn(2, 3, 8)
    float_mask = nn.Transformer.generate_square_subsequent_mask(3)
    bool_mask = tt.triu(tt.ones(3, 3, dtype=tt.bool), diagonal=1)
    padding = tt.tensor([[False, False, True], [False, False, False]])
    layer = nn.TransformerEncoderLayer(8, 2, 16, 0.0, batch_first=True)
    cases = [
        lambda: nn.MultiheadAttention(8, 2, batch_first=True)(
            x, x, x, key_padding_mask=padding, attn_mask=float_mask),
        lambda: nn.MultiheadAttention(8, 2, batch_first=True)(
            x, x, x, key_padding_mask=padding, attn_mask=bool_mask),
        lambda: layer(x, src_mask=float_mask, src_key_padding_mask=padding),
        lambda: nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)(
            x, mask=float_mask, src_key_padding_mask=padding),
        lambda: nn.TransformerDecoderLayer(8, 2, 16, 0.0, batch_first=True)(
            x, x, tgt_mask=float_mask, tgt_key_padding_mask=padding),
    ]
    seen = []
    for case in cases:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            case()
        seen.append([str(w.message) for w in caught if "mismatched" in str(w.message)])
    return seen


def test_mismatched_attention_masks_warn_as_torch():
    """the captioner's bool tgt_key_padding_mask with a float causal tgt_mask: torch warns
    that mismatched mask types are deprecated (in MultiheadAttention and the encoder layer and
    encoder, naming their arguments); minidl said nothing."""
    seen = _mask_warnings(minidl)
    assert seen[0] == ["Support for mismatched key_padding_mask and attn_mask is deprecated. "
                       "Use same type for both instead."]
    assert seen[1] == [] and len(seen[3]) == 1 and "src_key_padding_mask and mask" in seen[3][0]


def test_mismatched_attention_masks_warn_as_torch_as_torch():
    pytest.importorskip("torch")
    assert _mask_warnings(minidl) == _mask_warnings(torch)


def _attention_with_a_learned_bias(tt, which):
    rng = np.random.default_rng(5)
    q = tt.from_numpy(rng.standard_normal((2, 2, 4, 4)))
    x = tt.from_numpy(rng.standard_normal((2, 4, 8)))
    bias = tt.from_numpy(rng.standard_normal((2, 2, 4, 4))).requires_grad_(True)
    if which == "sdpa":
        out = tt.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=bias)
    else:
        mha = tt.nn.MultiheadAttention(8, 2, batch_first=True).double()
        with tt.no_grad():
            for p in mha.parameters():
                p.copy_(tt.from_numpy(rng.standard_normal(tuple(p.shape)) * 0.3))
        out = mha(x, x, x, attn_mask=bias.view(4, 4, 4), need_weights=False)[0]
    out.pow(2).sum().backward()
    return _np(bias.grad)


@pytest.mark.parametrize("which", ["sdpa", "mha"])
def test_a_float_attention_mask_gets_its_own_gradient(which):
    """the Conformer's learned relative-position bias, passed as attn_mask: where the mask had
    the scores' full shape, its gradient was also multiplied by the softmax scale (half of
    torch's for heads of 4 features), in scaled_dot_product_attention and in
    MultiheadAttention's fused path."""
    from minidl.testing import gradcheck

    rng = np.random.default_rng(6)
    q = minidl.from_numpy(rng.standard_normal((1, 2, 3, 4)))
    bias = minidl.from_numpy(rng.standard_normal((1, 2, 3, 3))).requires_grad_(True)
    assert gradcheck(lambda b: minidl.nn.functional.scaled_dot_product_attention(
        q, q, q, attn_mask=b), [bias])
    grad = _attention_with_a_learned_bias(minidl, which)
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0


@pytest.mark.parametrize("which", ["sdpa", "mha"])
def test_a_float_attention_mask_gets_its_own_gradient_as_torch(which):
    pytest.importorskip("torch")
    np.testing.assert_allclose(_attention_with_a_learned_bias(minidl, which),
                               _attention_with_a_learned_bias(torch, which), rtol=1e-10,
                               atol=1e-12)


def _statistics_overloads(tt):
    x = tt.from_numpy(np.random.default_rng(7).standard_normal((3, 5)))
    outs = [tt.var_mean(x, 1, unbiased=False), tt.var_mean(x, dim=0, unbiased=True,
                                                           keepdim=True),
            tt.std_mean(x, 1, False), tt.var_mean(x, False), tt.std_mean(x, unbiased=False),
            tt.var_mean(x, 1, correction=0), tt.std_mean(x, (0, 1), True, True)]
    return [np.concatenate([_np(a).ravel(), _np(b).ravel()]) for a, b in outs]


def test_var_mean_and_std_mean_take_the_unbiased_overloads():
    """AdaIN's statistics, torch.var_mean(x, dim, unbiased=False): var_mean and std_mean only
    took correction=; torch also has (input, dim, unbiased, keepdim) and (input, unbiased)."""
    got = _statistics_overloads(minidl)
    x = np.random.default_rng(7).standard_normal((3, 5))
    np.testing.assert_allclose(got[0], np.concatenate([x.var(1), x.mean(1)]))
    np.testing.assert_allclose(got[3], [x.var(), x.mean()])
    with pytest.raises(TypeError, match="unbiased or correction, not both"):
        minidl.var_mean(minidl.from_numpy(x), 1, unbiased=True, correction=0)


def test_var_mean_and_std_mean_take_the_unbiased_overloads_as_torch():
    pytest.importorskip("torch")
    for a, b in zip(_statistics_overloads(minidl), _statistics_overloads(torch)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def _fake_quant_float64(tt):
    rng = np.random.default_rng(8)
    s32 = rng.uniform(0.005, 0.02, 6).astype(np.float32)
    ties = (np.arange(-60, 60) + 0.5)[None, :] * s32[:, None].astype(np.float64)
    x = tt.from_numpy(np.concatenate([ties, rng.standard_normal((6, 40))], 1))
    x.requires_grad_(True)
    per_channel = tt.fake_quantize_per_channel_affine(
        x, tt.from_numpy(s32), tt.from_numpy(rng.integers(-3, 3, 6).astype(np.int32)), 0,
        -100, 100)
    per_tensor = tt.fake_quantize_per_tensor_affine(x, float(s32[0]), 2, -128, 127)
    (per_channel.sum() + per_tensor.pow(2).sum()).backward()
    return [_np(per_channel), _np(per_tensor), _np(x.grad)]


def test_fake_quantize_of_float64_rounds_as_torchs_kernels():
    """QAT in float64: torch's kernels multiply a float64 input by 1/scale in float64 (minidl
    rounded the input to float32 first, so half a quantum could round the other way) and keep
    the per-channel dequantized product in float64 (minidl rounded it to float32)."""
    pc, pt, grad = _fake_quant_float64(minidl)
    assert pc.dtype == np.float64 and np.isfinite(grad).all()
    rng = np.random.default_rng(8)
    s = np.float64(rng.uniform(0.005, 0.02, 6).astype(np.float32)[0])
    assert pc[0, 60] == np.rint(0.5 + (pc[0, 60] / s - 0.5)) * s  # a tie stays on the grid


def test_fake_quantize_of_float64_rounds_as_torchs_kernels_as_torch():
    pytest.importorskip("torch")
    for a, b in zip(_fake_quant_float64(minidl), _fake_quant_float64(torch)):
        np.testing.assert_array_equal(a, b)


def _integer_beta(tt):
    p = [tt.nn.Parameter(tt.ones(2))]
    out = []
    for cls in (tt.optim.Adam, tt.optim.AdamW):
        try:
            cls(p, betas=(0, 0.99))
            out.append("accepted")
        except ValueError as e:
            out.append("both floats" in str(e))
        cls(p, betas=(0.0, 0.99))
    out.append(type(tt.optim.NAdam(p, betas=(0, 0.99))).__name__)  # torch's NAdam takes it
    return out


def test_adam_refuses_an_integer_beta_as_torch():
    """StyleGAN2 written as Adam(params, betas=(0, 0.99)): torch's Adam and AdamW refuse the
    integer 0 ("betas must be either both floats or both Tensors"); minidl took it."""
    assert _integer_beta(minidl) == [True, True, "NAdam"]


def test_adam_refuses_an_integer_beta_as_torch_as_torch():
    pytest.importorskip("torch")
    assert _integer_beta(minidl) == _integer_beta(torch)


def _versioned_loading(tt):
    nn = tt.nn
    seen = []

    class Block(nn.Module):
        _version = 2

        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(3)

        def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                                  missing_keys, unexpected_keys, error_msgs):
            seen.append((prefix, local_metadata.get("version")))
            if local_metadata.get("version", 1) < 2:
                for key in [k for k in state_dict if k.startswith(prefix + "ln.")]:
                    state_dict[prefix + "norm." + key[len(prefix + "ln."):]] = \
                        state_dict.pop(key)
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                          missing_keys, unexpected_keys, error_msgs)

    model = nn.Sequential(nn.Linear(3, 3), Block())
    hook_saw = []
    model[0].register_load_state_dict_pre_hook(
        lambda module, sd, prefix, meta, *rest: hook_saw.append(meta.get("version")))
    with tt.no_grad():
        model[1].norm.weight.fill_(2.0)
    old = {k.replace("norm.", "ln."): v.clone() for k, v in model.state_dict().items()}
    fresh = nn.Sequential(nn.Linear(3, 3), Block())
    fresh[0].register_load_state_dict_pre_hook(
        lambda module, sd, prefix, meta, *rest: hook_saw.append(meta.get("version")))
    result = fresh.load_state_dict(old)
    loaded = fresh[1].norm.weight.tolist()
    fresh.load_state_dict(model.state_dict())  # saved with its metadata: version 2
    return [repr(result), loaded, seen, hook_saw]


def test_load_state_dict_runs_load_from_state_dict_overrides_with_the_saved_version():
    """a module upgrading old checkpoints by overriding _load_from_state_dict (the version
    in local_metadata): minidl never called the override (and had no base to call), and its
    load pre-hooks were given the module's current version rather than the checkpoint's."""
    result, loaded, seen, hook_saw = _versioned_loading(minidl)
    assert loaded == [2.0, 2.0, 2.0] and result == "<All keys matched successfully>"
    assert seen == [("1.", None), ("1.", 2)] and hook_saw == [None, 1]


def test_load_state_dict_runs_load_from_state_dict_overrides_as_torch():
    pytest.importorskip("torch")
    assert _versioned_loading(minidl) == _versioned_loading(torch)
