"""The sequence models of test_bench_sequence.py, built from either framework's ``nn`` (they are
written with the same attribute names, so one state dict serves both). This module imports
neither framework, so tools/solo_ratios.py can build the PyTorch twin in a process where
minidl never runs."""
from __future__ import annotations

VOCAB, EMBED, HIDDEN, SEQ, BATCH = 65, 64, 256, 64, 32  # the char_lstm example's shapes
TOKENS, D_MODEL, HEADS, FF, LAYERS, CLASSES, T_SEQ, T_BATCH = 1000, 128, 4, 512, 2, 10, 64, 16


def _lstm_lm(nn):
    class LSTMLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(VOCAB, EMBED)
            self.lstm = nn.LSTM(EMBED, HIDDEN, num_layers=2, batch_first=True)
            self.head = nn.Linear(HIDDEN, VOCAB)

        def forward(self, x):
            out, _ = self.lstm(self.embed(x))
            return self.head(out).reshape(-1, VOCAB)
    return LSTMLM()


def _encoder_classifier(nn):
    class EncoderClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(TOKENS, D_MODEL)
            layer = nn.TransformerEncoderLayer(D_MODEL, HEADS, FF, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
            self.head = nn.Linear(D_MODEL, CLASSES)

        def forward(self, x):
            return self.head(self.encoder(self.embed(x)).mean(dim=1))
    return EncoderClassifier()


