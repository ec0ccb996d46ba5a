"""minidl.nn.utils.prune against torch.nn.utils.prune: the same masks for the deterministic
methods (alone, repeated, global, with importance scores), the same state_dict, forward and
gradients, remove, and the errors."""
import numpy as np
import pytest

import minidl
import minidl.nn.utils.prune as prune

rng = np.random.default_rng(5)
W = rng.normal(size=(6, 4)).astype(np.float32)
B = rng.normal(size=6).astype(np.float32)
C = rng.normal(size=(5, 3, 2, 2)).astype(np.float32)


def linear(fw):
    m = fw.nn.Linear(4, 6)
    m.load_state_dict({"weight": fw.tensor(W), "bias": fw.tensor(B)})
    return m


def conv(fw):
    m = fw.nn.Conv2d(3, 5, 2)
    m.load_state_dict({"weight": fw.tensor(C), "bias": fw.tensor(B[:5])})
    return m


CASES = {
    "l1_fraction": (linear, lambda m, p: p.l1_unstructured(m, "weight", amount=0.3)),
    "l1_count": (linear, lambda m, p: p.l1_unstructured(m, "bias", amount=2)),
    "ln_rows": (linear, lambda m, p: p.ln_structured(m, "weight", amount=2, n=2, dim=0)),
    "ln_cols_l1": (linear, lambda m, p: p.ln_structured(m, "weight", amount=0.5, n=1, dim=1)),
    "ln_inf_conv": (conv, lambda m, p: p.ln_structured(m, "weight", amount=0.4, n=float("inf"),
                                                       dim=0)),
    "ln_conv_dim1": (conv, lambda m, p: p.ln_structured(m, "weight", amount=1, n=2, dim=1)),
    "repeated": (linear, lambda m, p: (p.l1_unstructured(m, "weight", amount=5),
                                       p.ln_structured(m, "weight", amount=1, n=2, dim=0),
                                       p.l1_unstructured(m, "weight", amount=0.25))),
    "custom_mask": (linear, lambda m, p: p.custom_from_mask(m, "weight", mask=_mask_like(m))),
    "importance_scores": (linear, lambda m, p: p.l1_unstructured(
        m, "weight", amount=0.5, importance_scores=_scores_like(m))),
    "identity": (linear, lambda m, p: p.identity(m, "weight")),
}


def _framework(m):
    import sys

    return sys.modules[type(m).__module__.split(".")[0]]


def _mask_like(m):
    return _framework(m).tensor((np.arange(24).reshape(6, 4) % 3 != 0).astype(np.float32))


def _scores_like(m):
    return _framework(m).tensor(np.arange(24, dtype=np.float32).reshape(6, 4)[::-1].copy())


def run(fw, name):
    make, apply = CASES[name]
    m = make(fw)
    apply(m, fw.nn.utils.prune)
    r = np.random.default_rng(9)  # the same input for both frameworks
    x = fw.tensor(r.normal(size=(2, 3, 4, 4) if make is conv else (3, 4)).astype(np.float32))
    y = m(x)
    y.pow(2).sum().backward()
    state = {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}
    grads = {n: p.grad.numpy().copy() for n, p in m.named_parameters()}
    return state, y.detach().numpy(), grads


@pytest.mark.parametrize("name", sorted(CASES))
def test_masks_state_dict_forward_and_gradients_match_torch(name):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torch.nn.utils.prune")  # a submodule torch does not import itself
    ours, theirs = run(minidl, name), run(torch, name)
    assert list(ours[0]) == list(theirs[0])
    for k in ours[0]:
        np.testing.assert_array_equal(ours[0][k], theirs[0][k], err_msg=k)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-5, atol=1e-5)
    assert set(ours[2]) == set(theirs[2])
    for k in ours[2]:
        np.testing.assert_allclose(ours[2][k], theirs[2][k], rtol=1e-4, atol=1e-4, err_msg=k)


def test_pruned_entries_stay_zero_and_get_no_gradient():
    m = linear(minidl)
    prune.l1_unstructured(m, "weight", amount=0.5)
    assert list(dict(m.named_parameters())) == ["bias", "weight_orig"]
    assert "weight_mask" in dict(m.named_buffers())
    mask = m.weight_mask.numpy()
    assert mask.sum() == 12
    m(minidl.tensor(rng.normal(size=(3, 4)).astype(np.float32))).sum().backward()
    assert not m.weight_orig.grad.numpy()[mask == 0].any()
    with minidl.no_grad():
        m.weight_orig.add_(1.0)  # an update of the kept entries; the pruned stay 0 in forward
    m(minidl.zeros(1, 4))
    assert not m.weight.numpy()[mask == 0].any()


def test_global_unstructured_matches_torch():
    torch = pytest.importorskip("torch")
    pytest.importorskip("torch.nn.utils.prune")  # a submodule torch does not import itself

    def run_global(fw):
        a, b = linear(fw), linear(fw)
        with fw.no_grad():
            b.weight.mul_(0.5)
        fw.nn.utils.prune.global_unstructured([(a, "weight"), (b, "weight"), (a, "bias")],
                                              fw.nn.utils.prune.L1Unstructured, amount=0.4)
        return [t.numpy().copy() for t in (a.weight_mask, b.weight_mask, a.bias_mask)]

    for x, y in zip(run_global(minidl), run_global(torch)):
        np.testing.assert_array_equal(x, y)


def test_remove_makes_the_pruning_permanent_and_torch_state_dicts_load():
    torch = pytest.importorskip("torch")
    pytest.importorskip("torch.nn.utils.prune")  # a submodule torch does not import itself
    t = linear(torch)
    torch.nn.utils.prune.l1_unstructured(t, "weight", amount=0.5)
    m = linear(minidl)
    prune.l1_unstructured(m, "weight", amount=0.1)  # a different mask, then torch's loads
    m.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    np.testing.assert_array_equal(m.weight_mask.numpy(), t.weight_mask.numpy())
    m(minidl.zeros(1, 4))  # the hook recomputes weight from the loaded orig and mask
    np.testing.assert_allclose(m.weight.detach().numpy(), t.weight.detach().numpy())
    assert prune.is_pruned(m)
    prune.remove(m, "weight")
    torch.nn.utils.prune.remove(t, "weight")
    assert list(m.state_dict()) == list(t.state_dict()) == ["bias", "weight"]  # re-registered
    assert isinstance(m.weight, minidl.nn.Parameter)
    np.testing.assert_allclose(m.weight.detach().numpy(), t.weight.detach().numpy())
    assert not prune.is_pruned(m)


def test_random_methods_prune_the_asked_amount():
    minidl.manual_seed(0)
    m = linear(minidl)
    prune.random_unstructured(m, "weight", amount=0.25)
    assert m.weight_mask.numpy().sum() == 18
    c = conv(minidl)
    prune.random_structured(c, "weight", amount=2, dim=0)
    kept = c.weight_mask.numpy().reshape(5, -1)
    assert sorted(kept.sum(1).tolist()) == [0, 0, 12, 12, 12]


def test_errors_are_torchs():
    m = linear(minidl)
    with pytest.raises(ValueError, match="should either be a float in the range"):
        prune.l1_unstructured(m, "weight", amount=1.5)
    with pytest.raises(ValueError, match="should either be a float in the range"):
        prune.l1_unstructured(m, "weight", amount=-1)
    with pytest.raises(ValueError, match="should be smaller than the number of parameters"):
        prune.l1_unstructured(m, "weight", amount=100)
    # a refusal leaves the parameter in place (re-registered, as torch does)
    assert set(dict(m.named_parameters())) == {"weight", "bias"} and not m._buffers
    with pytest.raises(ValueError, match="Structured pruning can only be applied to "
                                         "multidimensional"):
        prune.ln_structured(m, "bias", amount=1, n=2, dim=0)
    with pytest.raises(ValueError, match="has to be pruned before pruning can be removed"):
        prune.remove(m, "weight")
    with pytest.raises(ValueError, match="same shape as parameter"):
        prune.l1_unstructured(m, "weight", amount=1, importance_scores=minidl.ones(3))
    with pytest.raises(TypeError, match="Only \"unstructured\" PRUNING_TYPE"):
        prune.global_unstructured([(m, "weight")], prune.LnStructured, amount=1, n=2, dim=0)


# ---- a pruned state dict into an unpruned model ------------------------------------------------------
def test_pruned_state_dict_into_an_unpruned_model_is_a_runtime_error_as_torch():
    prune = minidl.nn.utils.prune
    m = minidl.nn.Linear(3, 2)
    prune.l1_unstructured(m, "weight", amount=2)
    with pytest.raises(RuntimeError, match="missing keys: weight"):
        minidl.nn.Linear(3, 2).load_state_dict(m.state_dict())
    with pytest.raises(ValueError):  # still the ValueError it was
        minidl.nn.Linear(3, 2).load_state_dict(m.state_dict())
    fresh = minidl.nn.Linear(3, 2)
    prune.identity(fresh, "weight")
    fresh.load_state_dict(m.state_dict())
    x = minidl.ones(1, 3)
    np.testing.assert_array_equal(fresh(x).numpy(), m(x).numpy())


# ---- a wrong amount, a failed third pruning, a channels_last mask ------------------------------------
@pytest.mark.parametrize("amount", ["0.5", None, [1]])
def test_prune_amount_of_a_wrong_type_is_a_type_error(amount):
    m = minidl.nn.Linear(4, 3)
    with pytest.raises(TypeError, match="Invalid type for amount"):
        prune.l1_unstructured(m, "weight", amount=amount)
    with pytest.raises(TypeError, match="Invalid type for amount"):
        prune.RandomStructured(amount, dim=0)
    assert not prune.is_pruned(m) and "weight" in dict(m.named_parameters())


def test_prune_a_failed_third_pruning_leaves_the_container_as_it_was():
    m = minidl.nn.Linear(4, 3)
    prune.l1_unstructured(m, "weight", amount=2)
    prune.l1_unstructured(m, "weight", amount=2)
    (container,) = [h for h in m._forward_pre_hooks.values()
                    if isinstance(h, prune.BasePruningMethod)]
    mask = m.weight_mask.numpy().copy()
    with pytest.raises(ValueError, match="smaller than the number"):
        prune.ln_structured(m, "weight", amount=9, n=1, dim=0)
    assert [type(h).__name__ for h in container] == ["L1Unstructured", "L1Unstructured"]
    np.testing.assert_array_equal(m.weight_mask.numpy(), mask)
    prune.l1_unstructured(m, "weight", amount=1)
    assert len(container) == 3 and m.weight_mask.numpy().sum() == 12 - 5


def test_prune_keeps_working_on_a_channels_last_mask():
    t = minidl.tensor(np.arange(1, 25, dtype=np.float32).reshape(3, 2, 2, 2))
    mask = minidl.ones(3, 2, 2, 2).to(memory_format=minidl.channels_last)
    for method in (prune.L1Unstructured(5), prune.RandomUnstructured(5)):
        assert (method.prune(t, default_mask=mask).numpy() == 0).sum() == 5
    assert (prune.L1Unstructured(5).prune(t, default_mask=mask).numpy().ravel()[:5] == 0).all()
