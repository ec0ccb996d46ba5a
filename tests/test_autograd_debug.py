"""Anomaly detection (detect_anomaly, set_detect_anomaly), post-accumulate-grad hooks and
torch.autograd's gradcheck names, as PyTorch has them."""
import numpy as np
import pytest

import minidl
from minidl.autograd import Function


def nan_at_zero():
    x = minidl.tensor([0.0, 1.0], requires_grad=True)
    y = (x.sqrt() * 0).sum()  # sqrt's gradient at 0 is 0 / 0 here
    return x, y


def test_anomaly_mode_names_the_op_and_its_forward_call():
    with pytest.warns(UserWarning, match="Anomaly Detection has been enabled"):
        with minidl.autograd.detect_anomaly():
            assert minidl.autograd.is_anomaly_enabled()
            x, y = nan_at_zero()
            with pytest.raises(RuntimeError, match="'SqrtBackward' returned nan values in its "
                                                   "0th output") as info:
                y.backward()
    assert "nan_at_zero" in str(info.value) and "x.sqrt()" in str(info.value)
    assert not minidl.autograd.is_anomaly_enabled()


def test_without_anomaly_mode_nan_passes_as_in_torch():
    x, y = nan_at_zero()
    y.backward()
    assert np.isnan(x.grad.numpy()[0])
    torch = pytest.importorskip("torch")
    tx = torch.tensor([0.0, 1.0], requires_grad=True)
    (tx.sqrt() * 0).sum().backward()
    assert np.isnan(tx.grad.numpy()[0])
    with torch.autograd.detect_anomaly(), pytest.raises(RuntimeError, match="returned nan"):
        (tx.sqrt() * 0).sum().backward()


def test_set_detect_anomaly_call_context_and_check_nan():
    with minidl.autograd.set_detect_anomaly(True, check_nan=False):
        assert minidl.autograd.is_anomaly_enabled()
        assert not minidl.autograd.is_anomaly_check_nan_enabled()
        x, y = nan_at_zero()
        y.backward()  # NaN not checked
    assert not minidl.autograd.is_anomaly_enabled()
    minidl.autograd.set_detect_anomaly(True)
    try:
        x, y = nan_at_zero()
        with pytest.raises(RuntimeError, match="returned nan"):
            y.backward()
    finally:
        minidl.autograd.set_detect_anomaly(False)
    assert not minidl.autograd.is_anomaly_enabled()


def test_anomaly_mode_shows_where_a_failing_backward_was_called():
    class Broken(Function):
        @staticmethod
        def forward(ctx, a):
            return a * 2

        @staticmethod
        def backward(ctx, g):
            raise ValueError("broken on purpose")

    with minidl.autograd.set_detect_anomaly(True):
        x = minidl.tensor([1.0], requires_grad=True)
        y = Broken.apply(x).sum()
        with pytest.raises(RuntimeError, match="Error detected in BrokenBackward: ValueError: "
                                               "broken on purpose") as info:
            y.backward()
    assert "Broken.apply(x)" in str(info.value)


def test_anomaly_mode_in_a_double_backward():
    with minidl.autograd.set_detect_anomaly(True):
        x = minidl.tensor([0.0, 1.0], dtype=minidl.float64, requires_grad=True)
        (g,) = minidl.autograd.grad((x ** 1.5).sum(), x, create_graph=True)
        with pytest.raises(RuntimeError, match="returned nan"):
            (g * 0).sum().backward()  # d/dx 1.5 x^0.5 at 0: 0 * inf


def _optimizer_in_backward(tt):
    r = np.random.default_rng(0)
    model = tt.nn.Linear(4, 2)
    with tt.no_grad():
        model.weight.copy_(tt.tensor(r.normal(size=(2, 4)).astype(np.float32)))
        model.bias.copy_(tt.tensor(r.normal(size=2).astype(np.float32)))
    opts = {p: tt.optim.SGD([p], lr=0.1, momentum=0.9) for p in model.parameters()}
    calls = []

    def step(p):
        calls.append(tuple(p.shape))
        opts[p].step()
        opts[p].zero_grad()

    for p in model.parameters():
        p.register_post_accumulate_grad_hook(step)
    x = tt.tensor(r.normal(size=(3, 4)).astype(np.float32))
    for _ in range(3):
        model(x).pow(2).sum().backward()
    return model.weight.detach().numpy(), model.bias.detach().numpy(), sorted(calls)


def test_post_accumulate_grad_hook_steps_inside_backward_as_torch():
    ours = _optimizer_in_backward(minidl)
    assert ours[2] == sorted([(2, 4), (2,)] * 3)
    torch = pytest.importorskip("torch")
    theirs = _optimizer_in_backward(torch)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-5)
    assert ours[2] == theirs[2]


def test_post_accumulate_grad_hook_rules():
    x = minidl.tensor([1.0], requires_grad=True)
    seen = []
    handle = x.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.item()))
    (x * 3).sum().backward()
    (x * 3).sum().backward(inputs=[x])
    assert seen == [3.0, 6.0]
    handle.remove()
    (x * 3).sum().backward()
    assert seen == [3.0, 6.0]
    with pytest.raises(RuntimeError, match="non-leaf"):
        (x * 2).register_post_accumulate_grad_hook(print)
    with pytest.raises(RuntimeError, match="does not require grad"):
        minidl.ones(1).register_post_accumulate_grad_hook(print)


def test_gradcheck_under_torch_autograd_names():
    x = minidl.tensor([0.3, -0.7], dtype=minidl.float64, requires_grad=True)
    assert minidl.autograd.gradcheck(lambda t: t.tanh(), [x])
    assert minidl.autograd.gradgradcheck(lambda t: t.tanh(), [x])
