"""PyTorch's own example programs, in their usual shape, run unchanged by torch and by minidl
(``tt`` is either module) from the same initial weights: the MNIST convnet example (Adadelta,
StepLR, nll_loss, the test loop's idioms), a bidirectional LSTM sequence classifier, and a
Transformer encoder classifier with a padding mask. In float64 with dropout off the two give
the same losses and parameters; with dropout on, minidl's run is checked on its own.

Each script is plain PyTorch code; nothing in it knows which framework runs it."""
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
    np.testing.assert_allclose(ours["losses"], theirs["losses"], rtol=1e-9, atol=1e-12)
    for key in ("test_loss", "correct"):
        if key in theirs:
            np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-9)
    assert set(ours["params"]) == set(theirs["params"])
    for k in theirs["params"]:
        np.testing.assert_allclose(ours["params"][k], theirs["params"][k], rtol=1e-8, atol=1e-10,
                                   err_msg=k)
    return ours


def _load(model, tt, state):
    if state is not None:
        model.load_state_dict({k: tt.from_numpy(v.copy()) for k, v in state.items()})


def _params(model):
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


# ---- 1. the MNIST example: a convnet, Adadelta, StepLR, nll_loss ---------------------------
def mnist_example(tt, state=None, steps=6, p_drop=(0.0, 0.0)):
    nn, F, optim = tt.nn, tt.nn.functional, tt.optim
    StepLR = tt.optim.lr_scheduler.StepLR

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, 1)
            self.conv2 = nn.Conv2d(8, 16, 3, 1)
            self.dropout1 = nn.Dropout(p_drop[0])
            self.dropout2 = nn.Dropout(p_drop[1])
            self.fc1 = nn.Linear(16 * 4 * 4, 32)
            self.fc2 = nn.Linear(32, 10)

        def forward(self, x):
            x = self.conv1(x)
            x = F.relu(x)
            x = self.conv2(x)
            x = F.relu(x)
            x = F.max_pool2d(x, 2)
            x = self.dropout1(x)
            x = tt.flatten(x, 1)
            x = self.fc1(x)
            x = F.relu(x)
            x = self.dropout2(x)
            x = self.fc2(x)
            output = F.log_softmax(x, dim=1)
            return output

    device = tt.device("cuda" if tt.cuda.is_available() and tt is minidl else "cpu")
    rng = np.random.default_rng(1)
    images = rng.standard_normal((48, 1, 12, 12))
    labels = rng.integers(0, 10, 48)
    train_set = tt.utils.data.TensorDataset(tt.from_numpy(images), tt.from_numpy(labels))
    train_loader = tt.utils.data.DataLoader(train_set, batch_size=8, shuffle=False)
    model = Net().to(tt.float64).to(device)
    _load(model, tt, state)
    optimizer = optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.7)
    losses = []
    for epoch in range(1, 3):
        model.train()
        for batch_idx, (data, target) in enumerate(train_loader):
            if len(losses) >= steps:
                break
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            output = model(data)
            loss = F.nll_loss(output, target)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        scheduler.step()
    model.eval()
    test_loss, correct = 0, 0
    with tt.no_grad():
        for data, target in train_loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction="sum").item()
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()
    return {"losses": losses, "test_loss": test_loss / len(train_loader.dataset),
            "correct": correct, "params": _params(model)}


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step()`")  # torch, 0 steps
def test_mnist_example_trains_the_same():
    _parity(mnist_example, steps=10)


def test_mnist_example_with_dropout_runs_in_minidl():
    out = mnist_example(minidl, steps=6, p_drop=(0.25, 0.5))
    assert len(out["losses"]) == 6 and np.isfinite(out["losses"]).all()
    assert 0 <= out["correct"] <= 48


# ---- 2. a bidirectional LSTM classifier over token sequences --------------------------------
def lstm_classifier(tt, state=None, steps=5):
    nn, F = tt.nn, tt.nn.functional

    class SeqClassifier(nn.Module):
        def __init__(self, vocab=20, emb=6, hidden=5, classes=3):
            super().__init__()
            self.embed = nn.Embedding(vocab, emb, padding_idx=0)
            self.rnn = nn.LSTM(emb, hidden, num_layers=2, batch_first=True, bidirectional=True)
            self.head = nn.Linear(2 * hidden, classes)

        def forward(self, tokens):
            out, (h, c) = self.rnn(self.embed(tokens))
            last = tt.cat([h[-2], h[-1]], dim=1)  # the top layer's two directions
            return self.head(last) + 0 * out.mean()

    rng = np.random.default_rng(2)
    tokens = rng.integers(0, 20, (steps or 1, 4, 7))
    labels = rng.integers(0, 3, (steps or 1, 4))
    model = SeqClassifier().to(tt.float64)
    _load(model, tt, state)
    opt = tt.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for i in range(steps):
        logits = model(tt.from_numpy(tokens[i]))
        loss = F.cross_entropy(logits, tt.from_numpy(labels[i]))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "params": _params(model)}


def test_lstm_classifier_trains_the_same():
    _parity(lstm_classifier)


# ---- 3. a Transformer encoder classifier with a key padding mask ---------------------------
def transformer_classifier(tt, state=None, steps=5):
    nn, F = tt.nn, tt.nn.functional

    class Encoder(nn.Module):
        def __init__(self, vocab=16, d=8, classes=2):
            super().__init__()
            self.embed = nn.Embedding(vocab, d)
            layer = nn.TransformerEncoderLayer(d, nhead=2, dim_feedforward=16, dropout=0.0,
                                               batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False) \
                if tt is torch else nn.TransformerEncoder(layer, num_layers=2)
            self.head = nn.Linear(d, classes)

        def forward(self, tokens, pad):
            h = self.encoder(self.embed(tokens), src_key_padding_mask=pad)
            keep = (~pad).unsqueeze(-1).to(h.dtype)
            return self.head((h * keep).sum(1) / keep.sum(1))

    rng = np.random.default_rng(3)
    tokens = rng.integers(1, 16, (steps or 1, 4, 6))
    lengths = rng.integers(3, 7, (steps or 1, 4))
    labels = rng.integers(0, 2, (steps or 1, 4))
    model = Encoder().to(tt.float64)
    _load(model, tt, state)
    opt = tt.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = tt.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=max(steps, 1))
    losses = []
    for i in range(steps):
        pad = tt.from_numpy(np.arange(6)[None, :] >= lengths[i][:, None])
        loss = F.cross_entropy(model(tt.from_numpy(tokens[i]), pad), tt.from_numpy(labels[i]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return {"losses": losses, "params": _params(model)}


def test_transformer_classifier_trains_the_same():
    _parity(transformer_classifier)
