"""Wrong shapes, dtypes and arguments fail early with an error that names what did not fit."""
import numpy as np
import pytest

import minidl
import minidl.nn as nn
import minidl.nn.functional as F


def t(*shape, dtype="float32"):
    return minidl.tensor(np.zeros(shape), dtype=dtype)


def test_conv2d_channel_mismatch():
    with pytest.raises(ValueError, match=r"3 channels.*\(1, 3, 5, 5\).*\(4, 1, 3, 3\) expects 1"):
        F.conv2d(t(1, 3, 5, 5), t(4, 1, 3, 3))
    with pytest.raises(ValueError, match="3 channels.*expects 1"):
        nn.Conv2d(1, 4, 3)(t(2, 3, 8, 8))


def test_conv2d_needs_4d_input():
    # a 3-D input is one unbatched sample, as in PyTorch
    assert F.conv2d(t(3, 5, 5), t(4, 3, 3, 3)).shape == (4, 3, 3)
    with pytest.raises(ValueError, match=r"4-D.*\(5, 5\)"):
        F.conv2d(t(5, 5), t(4, 3, 3, 3))
    with pytest.raises(ValueError, match=r"weight must be 4-D.*\(4, 3, 3\)"):
        F.conv2d(t(1, 3, 5, 5), t(4, 3, 3))


def test_conv2d_kernel_larger_than_input_and_bad_arguments():
    with pytest.raises(ValueError, match="kernel 5x5 is larger than the padded input 3x3"):
        F.conv2d(t(1, 1, 3, 3), t(1, 1, 5, 5))
    with pytest.raises(ValueError, match="stride"):
        F.conv2d(t(1, 1, 5, 5), t(1, 1, 3, 3), stride=0)
    with pytest.raises(ValueError, match=r"bias shape \(3,\) does not match 2 filters"):
        F.conv2d(t(1, 1, 5, 5), t(2, 1, 3, 3), t(3))


def test_linear_feature_mismatch():
    with pytest.raises(ValueError, match=r"5 features.*\(2, 5\).*\(3, 4\) expects 4"):
        F.linear(t(2, 5), t(3, 4))
    with pytest.raises(ValueError, match="5 features.*expects 4"):
        nn.Linear(4, 3)(t(2, 5))
    with pytest.raises(ValueError, match=r"bias shape \(2,\) does not match 3 outputs"):
        F.linear(t(2, 4), t(3, 4), t(2))


def test_matmul_inner_dimensions():
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4, 5\).*inner dimensions 3 and 4"):
        t(2, 3) @ t(4, 5)
    with pytest.raises(ValueError, match=r"\(3,\) and \(2, 4\)"):
        t(3) @ t(2, 4)


def test_non_scalar_backward_needs_a_gradient():
    x = minidl.tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(ValueError, match=r"scalar, got shape \(2, 3\)"):
        (x * 2).backward()
    with pytest.raises(ValueError, match=r"gradient shape \(3,\) does not match tensor shape \(2, 3\)"):
        (x * 2).backward(np.ones(3))


def test_cross_entropy_targets_out_of_range():
    logits = t(3, 5)
    with pytest.raises(ValueError, match=r"target class 5 is out of range for 5 classes.*\(3, 5\)"):
        F.cross_entropy(logits, minidl.tensor([0, 5, 1]))
    with pytest.raises(ValueError, match="target class -1 is out of range"):
        F.cross_entropy(logits, minidl.tensor([0, -1, 1]))
    with pytest.raises(ValueError, match="target class 7"):
        F.nll_loss(logits, minidl.tensor([7, 0, 0]))


def test_cross_entropy_target_dtype_and_shape():
    with pytest.raises(TypeError, match="integer class indices.*float32"):
        F.cross_entropy(t(3, 5), minidl.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"target shape \(2,\).*\(3, 5\)"):
        F.cross_entropy(t(3, 5), minidl.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"2-D.*\(3, 5, 2\)"):
        F.cross_entropy(t(3, 5, 2), minidl.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(t(3, 5), minidl.tensor([0, 1, 1]), reduction="avg")
    with pytest.raises(ValueError, match="nll_loss: reduction.*'avg'"):
        F.nll_loss(t(3, 5), minidl.tensor([0, 1, 1]), reduction="avg")
    with pytest.raises(ValueError, match="mse_loss: reduction.*'total'"):
        F.mse_loss(t(3, 5), t(3, 5), reduction="total")


def test_other_shape_errors():
    with pytest.raises(ValueError, match=r"reshape.*\(2, 3\).*\(4, 2\)"):
        t(2, 3).reshape(4, 2)
    with pytest.raises(ValueError, match=r"mse_loss.*\(2, 3\).*\(3, 2\)"):
        F.mse_loss(t(2, 3), t(3, 2))
    with pytest.raises(ValueError, match=r"max_pool2d.*4-D.*\(3, 4\)"):
        F.max_pool2d(t(3, 4), 2)
    with pytest.raises(ValueError, match="padding"):
        F.max_pool2d(t(1, 1, 4, 4), 2, padding=2)
    with pytest.raises(ValueError, match=r"batch_norm: running_mean has shape \(4,\).*3 channels"):
        F.batch_norm(t(2, 3, 2, 2), t(4), t(3), training=False)
    with pytest.raises(ValueError, match="BatchNorm2d.*4-D"):
        nn.BatchNorm2d(3)(t(2, 3))
    with pytest.raises(ValueError, match="dropout.*p"):
        F.dropout(t(2), p=1.5)


def _net():
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


def test_load_state_dict_lists_every_problem_and_changes_nothing():
    model = _net()
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    sd["0.weight"] = np.ones((3, 5), np.float32)   # mis-shaped
    del sd["2.bias"]                               # missing
    sd["3.weight"] = np.ones(2, np.float32)        # unexpected
    sd["1.running_mean"] = np.full(3, 7.0, np.float32)  # fits, but must not be applied
    with pytest.raises(ValueError) as info:
        model.load_state_dict(sd)
    msg = str(info.value)
    assert "0.weight" in msg and "(3, 5)" in msg and "(3, 4)" in msg
    assert "missing" in msg and "2.bias" in msg
    assert "unexpected" in msg and "3.weight" in msg
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k], err_msg=k)


def test_load_state_dict_strict_false_still_rejects_shape_mismatch():
    model = _net()
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    sd["2.weight"] = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"2\.weight.*\(2, 4\).*\(2, 3\)"):
        model.load_state_dict(sd, strict=False)


def test_misuse_found_by_the_walkthrough_names_what_did_not_fit(tmp_path):
    import minidl.nn as nn

    lin = nn.Linear(2, 1)
    with pytest.raises(TypeError, match="expected a dict"):
        lin.load_state_dict([1, 2])
    with pytest.raises(TypeError, match="lr must be a number, got '0.1'"):
        minidl.optim.Adam(lin.parameters(), lr="0.1")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        minidl.save(lin.state_dict(), tmp_path)
    assert not [p for p in tmp_path.iterdir()]  # no temporary left behind


# ---- layers given a non-Tensor raise torch's TypeError ----------------------------------------

@pytest.mark.parametrize("bad", [{"x": 1}, [1.0, 2.0], None])
def test_layers_given_a_non_tensor_raise_torch_type_error(bad):
    nn = minidl.nn
    with pytest.raises(TypeError, match=f"must be Tensor, not {type(bad).__name__}"):
        nn.Linear(2, 2)(bad)
    with pytest.raises(TypeError, match=f"got {type(bad).__name__}"):
        nn.Conv2d(1, 1, 1)(bad)
