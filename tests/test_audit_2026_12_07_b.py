"""Audit of 2026-12-07 (b): pruning, memory formats, minidl.testing and the depthwise kernels,
against PyTorch's semantics and misuse."""
import numpy as np
import pytest

import minidl
import minidl.nn.utils.prune as prune


# ---- pruning ------------------------------------------------------------------------------------
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
