"""Train a character-level LSTM language model on a small text and sample a line from it.

    python -m minidl.examples.char_lstm                  # the text below, 300 steps, ~1 min
    python -m minidl.examples.char_lstm --steps 1000 --text my.txt --sample-len 300

The model is Embedding -> LSTM -> Linear, trained with Adam on random windows of the text to
predict each next character (cross-entropy). The loss is printed as it falls (it starts near
ln(vocabulary size)), then a line sampled character by character, carrying the LSTM's state
from one character to the next. A bad option or an unreadable --text prints one "error: ..."
line and exits with status 2.
"""
from __future__ import annotations

import argparse
import math
import sys

import numpy as np

import minidl
import minidl.nn.functional as F
from minidl import nn, optim
from minidl.examples import CompileNotice, device_arg, seed_arg

TEXT = """\
The river runs to the sea, and the sea runs to the sky, and the sky comes down as rain.
The rain runs to the river, and the river runs to the sea.
A small boat sails on the river; a small bird sings on the boat.
The bird sings of the sea, and the boat sails to the sea, and the sea is wide and grey.
When the wind comes, the boat rocks and the bird flies; when the wind goes, the bird comes back.
The boat and the bird and the river go down to the sea together, day after day.
In the morning the sun is low and red; at noon the sun is high and white.
In the evening the sun goes down into the sea, and the sea is red and gold.
At night the moon comes up over the river, and the river is silver, and the boat is still.
The bird sleeps on the boat, the boat sleeps on the river, the river sleeps on its way.
Then the morning comes again, and the river runs to the sea, and the bird sings.
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m minidl.examples.char_lstm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    p.add_argument("--seq-len", type=int, default=48, help="characters per window (default 48)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--hidden", type=int, default=128, help="LSTM hidden size (default 128)")
    p.add_argument("--embed", type=int, default=32, help="embedding size (default 32)")
    p.add_argument("--layers", type=int, default=1, help="LSTM layers (default 1)")
    p.add_argument("--lr", type=float, default=0.01, help="Adam's learning rate (default 0.01)")
    p.add_argument("--print-every", type=int, default=25)
    p.add_argument("--sample-len", type=int, default=120, help="characters to sample")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--text", metavar="PATH", help="a UTF-8 text file to train on instead")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--device", type=device_arg, default="cpu", help="cpu or cuda")
    args = p.parse_args(argv)
    for name in ("steps", "seq_len", "batch_size", "hidden", "embed", "layers", "print_every"):
        if getattr(args, name) < 1 and not (name == "steps" and args.steps == 0):
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.sample_len < 0:
        p.error(f"--sample-len must be >= 0, got {args.sample_len}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        p.error(f"--lr must be a positive number, got {args.lr}")
    if not (math.isfinite(args.temperature) and args.temperature > 0):
        p.error(f"--temperature must be a positive number, got {args.temperature}")
    text = TEXT
    if args.text:
        try:
            with open(args.text, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            p.error(f"cannot read --text {args.text}: {e}")
    if len(text) < args.seq_len + 2:
        p.error(f"the text has {len(text)} characters; --seq-len {args.seq_len} needs at least "
                f"{args.seq_len + 2}")
    args.corpus = text
    return args


class CharLSTM(nn.Module):
    def __init__(self, vocab, embed, hidden, layers):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids, state=None):
        out, state = self.lstm(self.embed(ids), state)
        return self.head(out), state


def sample(model, first, length, stoi, itos, temperature, rng, device):
    """``length`` characters after ``first``, each drawn from the model's softmax at the
    given temperature, with the LSTM's state carried from step to step."""
    model.eval()
    chars, state = [first], None
    ids = minidl.tensor(np.array([[stoi[first]]]), device=device)
    with minidl.no_grad():
        for _ in range(length):
            logits, state = model(ids, state)
            p = F.softmax(logits[0, -1] / temperature, dim=-1).numpy().astype(np.float64)
            k = int(rng.choice(len(p), p=p / p.sum()))
            chars.append(itos[k])
            ids = minidl.tensor(np.array([[k]]), device=device)
    model.train()
    return "".join(chars)


def train(args, out=None):
    """Train as ``args`` says, printing to ``out`` (stdout); returns the loss of every step."""
    out = sys.stdout if out is None else out
    minidl.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    text = args.corpus
    itos = sorted(set(text))
    stoi = {c: i for i, c in enumerate(itos)}
    data = np.array([stoi[c] for c in text], dtype=np.int64)
    model = CharLSTM(len(itos), args.embed, args.hidden, args.layers).to(args.device)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    print(f"{len(text)} characters, vocabulary {len(itos)} (uniform guess: loss "
          f"{math.log(len(itos)):.3f}); {sum(p.numel() for p in model.parameters())} parameters",
          file=out, flush=True)
    losses = []
    for step in range(1, args.steps + 1):
        starts = rng.integers(0, len(data) - args.seq_len - 1, size=args.batch_size)
        window = np.stack([data[s:s + args.seq_len + 1] for s in starts])
        x = minidl.tensor(window[:, :-1], device=args.device)
        y = minidl.tensor(window[:, 1:].reshape(-1), device=args.device)
        logits, _ = model(x)
        loss = F.cross_entropy(logits.reshape(-1, len(itos)), y)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step == 1 or step % args.print_every == 0 or step == args.steps:
            recent = losses[-args.print_every:]
            print(f"step {step:5d}/{args.steps}  loss {sum(recent) / len(recent):.3f}",
                  file=out, flush=True)
    if args.sample_len:
        line = sample(model, text[0], args.sample_len, stoi, itos, args.temperature, rng,
                      args.device)
        print("sample: " + line.replace("\n", " / "), file=out, flush=True)
    return losses


def main(argv=None):
    args = parse_args(argv)
    with CompileNotice(args.device):  # a cold numba cache: the first step compiles kernels
        train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
