"""One training script, written once against PyTorch's API, run by torch and by minidl
(``import minidl as torch`` in spirit): the same layers, loss, optimiser, schedule, clipping,
evaluation idioms and in-place update, from the same initial weights, give the same parameters
(float64, so that the comparison is tight) and the same loss curve.

One deliberate difference stays: ``minidl.tensor(float64_array)`` is float32 (DESIGN.md: floats
become float32, so NumPy's float64 default never slips into a model); the script loads the
state with ``from_numpy``, which keeps the dtype in both."""
import numpy as np
import pytest

import minidl

try:
    import torch
except ImportError:
    torch = None


def train(tt, state=None, steps=6):
    """Plain PyTorch code; ``tt`` is the torch module or minidl."""
    nn, F = tt.nn, tt.nn.functional
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3), nn.LeakyReLU(0.1), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(8 * 2 * 2, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 5),
    ).to(tt.float64)
    if state is not None:
        model.load_state_dict({k: tt.from_numpy(v) for k, v in state.items()})
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    opt = tt.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.05)
    sched = tt.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    rng = np.random.default_rng(0)
    x_all = rng.standard_normal((max(steps, 1), 8, 1, 14, 14))
    y_all = rng.integers(0, 5, (max(steps, 1), 8))
    losses = []
    model.train()
    for step in range(steps):
        x = tt.tensor(x_all[step], dtype=tt.float64)
        y = tt.tensor(y_all[step])
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        tt.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    with tt.no_grad():  # a hand-written update on top, as people write them
        for p in model.parameters():
            p -= 1e-3 * p
    model.eval()
    with tt.no_grad():
        out = model(tt.tensor(x_all[0], dtype=tt.float64))
        acc = (out.argmax(dim=1) == tt.tensor(y_all[0])).float().mean().item()
        probs = F.softmax(out, dim=1).sum(dim=1)
    params = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return losses, acc, probs.numpy(), params


def test_the_same_pytorch_script_trains_the_same_in_minidl():
    if torch is None:
        pytest.skip("torch not installed: this test runs one script in torch and in minidl")
    torch.manual_seed(0)
    t_losses, t_acc, t_probs, t_params = train(torch, steps=0)  # torch's initial weights
    start = {k: v for k, v in t_params.items()}
    t_losses, t_acc, t_probs, t_params = train(torch, state=start)
    m_losses, m_acc, m_probs, m_params = train(minidl, state=start)
    np.testing.assert_allclose(m_losses, t_losses, rtol=1e-9)
    assert m_acc == t_acc
    np.testing.assert_allclose(m_probs, 1.0, rtol=1e-12)
    assert set(m_params) == set(t_params)
    for k in t_params:
        np.testing.assert_allclose(m_params[k], t_params[k], rtol=1e-8, atol=1e-10, err_msg=k)


def test_the_script_runs_without_torch_too():
    losses, acc, probs, params = train(minidl, steps=4)
    assert len(losses) == 4 and np.all(np.isfinite(losses)) and 0.0 <= acc <= 1.0
    assert all(np.isfinite(v).all() for v in params.values())
