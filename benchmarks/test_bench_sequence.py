"""Sequence models, minidl against PyTorch: a training step (forward, cross-entropy, backward,
SGD with momentum) of a two-layer LSTM language model and of a Transformer encoder classifier,
from the same weights on the same batch. The two sides are written with the same attribute
names, so one state dict serves both."""
from __future__ import annotations

import numpy as np
import pytest

import minidl
import minidl.nn as mnn

from _common import minidl_train_step, torch_or_none, torch_train_step
from _sequence_models import (
    BATCH, CLASSES, D_MODEL, HIDDEN, LAYERS, SEQ, T_BATCH, T_SEQ, TOKENS, VOCAB,
    _encoder_classifier, _lstm_lm,
)

FRAMEWORKS = ["minidl", "torch"]


def _twins(build):
    """(minidl model, torch model with the minidl model's weights)."""
    minidl.manual_seed(0)
    ours = build(mnn)
    torch = torch_or_none()
    if torch is None:
        return ours, None
    theirs = build(torch.nn)
    theirs.load_state_dict({k: torch.from_numpy(np.array(v.numpy()))
                            for k, v in ours.state_dict().items()})
    return ours, theirs


def _lstm_batch():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, VOCAB, (BATCH, SEQ + 1))
    return tokens[:, :-1], tokens[:, 1:].reshape(-1)


def _encoder_batch():
    rng = np.random.default_rng(0)
    return rng.integers(0, TOKENS, (T_BATCH, T_SEQ)), rng.integers(0, CLASSES, T_BATCH)


CASES = {"lstm": (_lstm_lm, _lstm_batch), "encoder": (_encoder_classifier, _encoder_batch)}


def _step(request, fw, case):
    build, batch = CASES[case]
    x, y = batch()
    ours, theirs = _twins(build)
    if fw == "torch":
        return torch_train_step(request.getfixturevalue("torch"), theirs, x, y)
    return minidl_train_step(ours, x, y)


@pytest.mark.parametrize("case", sorted(CASES))
def test_sequence_steps_agree(request, case):
    """Guards the comparison: from the same weights both frameworks take the same steps."""
    request.getfixturevalue("torch")
    losses = [[_s().item() for _ in range(3)]
              for _s in (_step(request, fw, case) for fw in FRAMEWORKS)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_lstm_lm_train_step(benchmark, request, fw):
    benchmark.group = f"lstm-2x{HIDDEN}-lm-train-step-b{BATCH}-seq{SEQ}"
    benchmark(_step(request, fw, "lstm"))


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_transformer_encoder_train_step(benchmark, request, fw):
    benchmark.group = f"transformer-encoder-{LAYERS}x{D_MODEL}-train-step-b{T_BATCH}-seq{T_SEQ}"
    benchmark(_step(request, fw, "encoder"))
