"""Train LeNet-5 (default) or an MLP on MNIST.

    python -m minidl.examples.mnist --data ../shared/data/mnist
    python -m minidl.examples.mnist --model mlp --epochs 10 --metrics-json run.json
    mpiexec -n 2 python -m minidl.examples.mnist     # data-parallel over 2 processes
    python -m minidl.examples.mnist --device cuda --amp bf16   # mixed precision (or fp16)

The data is looked up in --data, then $MINIDL_DATA/mnist, then ~/.cache/minidl/mnist, then
downloaded; with none of those it trains on the small sample shipped inside the package and says
so. A checkpoint (--save) is written atomically after every epoch, so Ctrl-C leaves the last
completed one intact; --resume continues from it. It is what a PyTorch script saves,
``{"model": state_dict, "optimizer": state_dict, "epoch": n, "history": [...]}`` (plus "scaler"
under --amp fp16), so ``net.load_state_dict(minidl.load(path)["model"])`` reads it; checkpoints
in the older flat layout still resume. The last line printed is the test accuracy.
Progress bars are drawn only when stderr is a terminal (tqdm's convention); in a log there is
one line per epoch. Output paths are checked before the first step; a bad input or path prints
one "error: ..." line and exits with status 2.

Under ``mpiexec -n N`` (or with --distributed) each of the N ranks trains the same model on its
1/N shard of every epoch (minidl.data.DistributedSampler) and the gradients are averaged after
each backward (minidl.nn.parallel.DistributedDataParallel): the effective batch is N x
--batch-size, and without --lr the learning rate is scaled by N to match (the linear scaling
rule). Only rank 0 prints, saves checkpoints and writes metrics; evaluation splits the test set
between the ranks and adds up their counts.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from contextlib import nullcontext

import numpy as np
from tqdm import tqdm

import minidl
import minidl.nn.functional as F
import minidl.distributed as dist
from minidl import nn, optim
from minidl.data import DataLoader, DistributedSampler, Subset
from minidl.datasets import MNIST, MNISTNotFound
from minidl.examples import CompileNotice, device_arg, seed_arg
from minidl.models import lenet5, mlp

# Defaults per model: plain SGD with Nesterov momentum and a step decay, chosen so the default
# run passes 99.0% (LeNet-5) within a few minutes on two cores.
DEFAULTS = {
    "lenet5": dict(epochs=8, lr=0.05, batch_size=64),
    "mlp": dict(epochs=10, lr=0.05, batch_size=64),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m minidl.examples.mnist", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(DEFAULTS), default="lenet5")
    p.add_argument("--epochs", type=int, help="default: 8 for lenet5, 10 for mlp")
    p.add_argument("--batch-size", type=int, help="default: 64")
    p.add_argument("--lr", type=float, help="initial learning rate (default 0.05)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--data", metavar="DIR", help="directory holding the four MNIST IDX files")
    p.add_argument("--device", type=device_arg, default="cpu", help="cpu or cuda")
    p.add_argument("--save", metavar="PATH", help="checkpoint written after every epoch (.npz)")
    p.add_argument("--resume", metavar="PATH", help="continue from a checkpoint written by --save")
    p.add_argument("--metrics-json", metavar="PATH", help="write accuracy, timings and history")
    p.add_argument("--errors", metavar="PNG", help="contact sheet of misclassified test digits")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--amp", choices=["off", "fp16", "bf16"], default="off",
                   help="mixed precision: autocast in float16 (with a GradScaler) or bfloat16; "
                        "parameters and checkpoints stay float32 (default: off)")
    p.add_argument("--distributed", action="store_true",
                   help="train data-parallel over the ranks of an MPI job (automatic when "
                        "started by mpiexec -n N with N > 1)")
    p.add_argument("--backend", choices=["mpi", "nccl"],
                   help="process group backend (default: nccl with --device cuda, else mpi; "
                        "ranks sharing one GPU need mpi)")
    args = p.parse_args(argv)
    args.scale_lr = args.lr is None  # the default lr follows the effective batch
    for key, value in DEFAULTS[args.model].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.epochs < 0 or args.batch_size < 1 or not args.lr > 0:
        p.error("--epochs must be >= 0, --batch-size >= 1 and --lr > 0")
    for name in ("lr", "momentum", "weight_decay"):
        if not math.isfinite(getattr(args, name)):
            p.error(f"--{name.replace('_', '-')} must be a finite number, got {getattr(args, name)}")
    if args.momentum < 0 or args.weight_decay < 0:
        p.error("--momentum and --weight-decay must be >= 0")
    if args.errors and not args.errors.lower().endswith(".png"):
        p.error(f"--errors writes a PNG image: give a path ending in .png, got {args.errors}")
    outputs = {}
    for opt, path in (("--save", args.save), ("--metrics-json", args.metrics_json),
                      ("--errors", args.errors)):
        if path is None:
            continue
        if not path.strip():
            p.error(f"{opt} needs a file path, got an empty one")
        key = os.path.realpath(path)
        if key in outputs:  # the later write would replace the earlier file
            p.error(f"{outputs[key]} and {opt} name the same file ({path}); give each its own")
        outputs[key] = opt
    if args.backend is not None and not args.distributed:
        p.error("--backend chooses the process group of --distributed; add --distributed "
                "(and launch with mpiexec) or leave --backend out")
    return args


def check_output_path(path, what):
    """Fail before any work when ``path`` cannot be written: its folder is made if missing,
    then a probe file is created in it and removed."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{what} {path} is a directory, not a file path")
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ValueError(f"{what} {path}: cannot write in {folder} ({exc.strerror or exc})") \
            from None


def load_data(data_dir):
    """(train, test, note): the full set when it can be found, else the embedded sample."""
    try:
        return MNIST(data_dir, train=True), MNIST(data_dir, train=False), None
    except MNISTNotFound:
        if data_dir:  # the user named a directory: falling back silently would mislead
            raise
        train, test = MNIST.sample(train=True), MNIST.sample(train=False)
        env = os.environ.get("MINIDL_DATA")
        looked = (f"$MINIDL_DATA={env} (and its mnist/), " if env else "") + \
            "~/.cache/minidl/mnist and the download mirrors"
        note = (f"MNIST not found in {looked}; training on the embedded sample "
                f"({len(train)} train / {len(test)} test images). For the full set pass "
                "--data DIR, set $MINIDL_DATA to the folder holding mnist/, or connect to the "
                "network.")
        return train, test, note


def build_model(name):
    return lenet5() if name == "lenet5" else mlp()


def lr_at(epoch, base_lr, epochs):
    """Step decay: x0.1 for the last quarter of the run."""
    return base_lr * (0.1 if epochs >= 4 and epoch >= epochs - max(1, epochs // 4) else 1.0)


def evaluate(model, dataset, device, batch_size=1000):
    """Accuracy and the predictions for every item of ``dataset``. In a data-parallel run each
    rank predicts its own slice of the dataset, and the counts and predictions are summed over
    the ranks."""
    if not len(dataset):
        raise ValueError("cannot measure accuracy on an empty test set")
    n = len(dataset)
    lo, hi = 0, n
    if dist.is_initialized() and dist.get_world_size() > 1:
        rank, world = dist.get_rank(), dist.get_world_size()
        lo, hi = n * rank // world, n * (rank + 1) // world
    part = dataset if (lo, hi) == (0, n) else Subset(dataset, np.arange(lo, hi))
    model.eval()
    preds = []
    with minidl.no_grad():
        for x, _ in DataLoader(part, batch_size=batch_size, device=device):
            preds.append(model(x).argmax(dim=1).numpy())
    model.train()
    preds = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
    if part is dataset:
        return float((preds == dataset.labels).mean()), preds
    correct = np.array([(preds == dataset.labels[lo:hi]).sum()], dtype=np.int64)
    every = np.zeros(n, dtype=np.int64)
    every[lo:hi] = preds
    dist.all_reduce(correct)
    dist.all_reduce(every)
    return float(correct[0] / n), every


# ---- checkpoints: what a PyTorch script saves, {"model", "optimizer", "epoch", ...} -----------
def save_checkpoint(path, model, optimizer, epoch, history, scaler=None):
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "epoch": int(epoch), "history": history}
    if scaler is not None:  # float16 loss scaling: its scale and growth count
        state["scaler"] = scaler.state_dict()
    minidl.save(state, path)


def _from_flat(state):
    """The layout --save wrote before stop 28: one flat {name: array} dict (``model.<key>``,
    ``optimizer.state.<i>.<key>`` or, older still, ``optim.<i>.<key>``, ``meta.epoch``...),
    read into today's nested one so old checkpoints still resume."""
    if "meta.epoch" not in state:
        raise ValueError("not a checkpoint written by --save (it has no epoch)")
    out = {"model": {k[6:]: v for k, v in state.items() if k.startswith("model.")},
           "epoch": int(state["meta.epoch"]),
           "history": json.loads(state["meta.history"].tobytes().decode())
           if "meta.history" in state else []}
    if "optimizer.param_groups" in state:
        groups = json.loads(state["optimizer.param_groups"].tobytes().decode())
        prefix = "optimizer.state."
    else:  # written before optimizers had state_dict(): only momentum, as optim.<i>.<key>
        groups, prefix = None, "optim."
    entries = {}
    for name, value in state.items():
        if name.startswith(prefix):
            index, key = name[len(prefix):].split(".", 1)
            entries.setdefault(int(index), {})[key] = value
    out["optimizer"] = {"state": entries, "param_groups": groups}
    scaler = {k[7:]: v for k, v in state.items() if k.startswith("scaler.")}
    if scaler:
        out["scaler"] = scaler
    return out


def load_checkpoint(path, model, optimizer, scaler=None):
    """(epoch, history) after restoring model and optimizer; ValueError naming ``path`` when the
    file is not a checkpoint of this model and optimizer."""
    try:
        state = minidl.load(path)
        if not isinstance(state, dict):
            raise ValueError(f"not a checkpoint written by --save (it holds a "
                             f"{type(state).__name__})")
        if "epoch" not in state:
            state = _from_flat(state)
        missing = [k for k in ("model", "optimizer") if not isinstance(state.get(k), dict)]
        if missing:
            raise ValueError(f"not a checkpoint written by --save (no {' or '.join(missing)} "
                             "state dict)")
        history = state.get("history") or []
        epoch = state["epoch"]
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"its epoch is {epoch!r}, not a count of completed epochs")
        if not isinstance(history, list):
            raise ValueError(f"its history is a {type(history).__name__}, not a list")
        model.load_state_dict(state["model"])
        opt_state = dict(state["optimizer"])
        if opt_state.get("param_groups") is None:
            opt_state["param_groups"] = optimizer.state_dict()["param_groups"]
        optimizer.load_state_dict(opt_state)
        if scaler is not None and scaler.is_enabled() and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
    except FileNotFoundError:
        raise ValueError(f"cannot resume: {path} does not exist") from None
    except (OSError, ValueError, TypeError, KeyError) as exc:  # JSON and UTF-8 errors included
        message = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
        raise ValueError(f"--resume: {message}") from None
    return epoch, history


def save_error_sheet(path, images, labels, preds, limit=100, cols=10, scale=2):
    """A grid of misclassified digits, each captioned 'predicted/true'."""
    from PIL import Image, ImageDraw

    wrong = np.flatnonzero(preds != labels)[:limit]
    rows = max(1, -(-len(wrong) // cols))
    cell_w, cell_h = 28 * scale + 8, 28 * scale + 18
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for n, i in enumerate(wrong):
        r, c = divmod(n, cols)
        digit = Image.fromarray(255 - images[i]).resize((28 * scale, 28 * scale), Image.NEAREST)
        sheet.paste(digit, (c * cell_w + 4, r * cell_h + 2))
        draw.text((c * cell_w + 6, r * cell_h + 28 * scale + 4),
                  f"{preds[i]} (true {labels[i]})", fill=(200, 0, 0))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sheet.save(path)
    return len(wrong)


def main(argv=None):
    args = parse_args(argv)
    minidl.manual_seed(args.seed)
    try:
        device = minidl.backend.normalize_device(args.device)
        if device == "cuda":
            minidl.backend.require_cuda()  # says whether CuPy or the GPU is missing
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rank, world = 0, 1
    if args.distributed or (dist.launched_world_size() or 1) > 1:
        try:
            dist.init_process_group(args.backend or ("nccl" if device == "cuda" else "mpi"))
        except (RuntimeError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        rank, world = dist.get_rank(), dist.get_world_size()
        if args.scale_lr:
            args.lr *= world
        if rank != 0:  # one voice for the job: the other ranks keep only stderr (errors)
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (for the life of the process)
            args.no_progress = True

    try:
        for path, what in ((args.save, "--save"), (args.metrics_json, "--metrics-json"),
                           (args.errors, "--errors")):
            if path:
                check_output_path(path, what)
        train_set, test_set, note = load_data(args.data)
        for split, ds in (("training", train_set), ("test", test_set)):
            if len(ds) == 0:
                raise ValueError(f"the {split} set from {ds.source} holds no images")
    except (OSError, ValueError) as exc:  # MNISTNotFound, a corrupt IDX file, an unwritable path
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if note:
        print(note, flush=True)
    else:
        print(f"MNIST: {len(train_set)} train / {len(test_set)} test images from "
              f"{train_set.source}", flush=True)

    model = build_model(args.model).to(device)
    optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                          weight_decay=args.weight_decay, nesterov=args.momentum > 0)
    start_epoch, history = 0, []
    amp_dtype = {"fp16": minidl.float16, "bf16": "bfloat16"}.get(args.amp)
    # float16 needs loss scaling (its gradients underflow); bfloat16 has float32's range
    scaler = minidl.amp.GradScaler(device, enabled=args.amp == "fp16")
    if args.resume:
        try:
            start_epoch, history = load_checkpoint(args.resume, model, optimizer, scaler)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"resumed from {args.resume} after epoch {start_epoch}", flush=True)

    net, sampler = model, None
    if world > 1:  # each rank reads its shard; the wrapped model averages the gradients
        sampler = DistributedSampler(train_set, shuffle=True, seed=args.seed)
        loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler,
                            device=device)
        model = nn.parallel.DistributedDataParallel(net)
    else:
        loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True,
                            seed=args.seed, device=device)
    loader.set_epoch(start_epoch)  # the batches an unbroken run would see from here on
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model {args.model}: {n_params:,} parameters; {args.epochs} epochs, batch "
          f"{args.batch_size}, lr {args.lr}, device {device}"
          + (f", amp {args.amp}" if args.amp != "off" else ""), flush=True)
    if world > 1:
        how = (f"{args.lr / world:g} x {world} ranks, linear scaling; --lr sets it"
               if args.scale_lr else "from --lr")
        print(f"data-parallel over {world} ranks ({dist.get_backend()}): effective batch "
              f"{world * args.batch_size} ({world} x {args.batch_size}), lr {args.lr:g} ({how})",
              flush=True)

    train_seconds = sum(h.get("seconds", 0.0) for h in history)
    notice = CompileNotice(device)
    try:
        for epoch in range(start_epoch, args.epochs):
            if sampler is not None:
                sampler.set_epoch(epoch)  # a new order each epoch, the same on every rank
            lr = lr_at(epoch, args.lr, args.epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            total_loss = total_correct = seen = counted = 0
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch",
                       leave=False, disable=True if args.no_progress else None,  # None: TTY only
                       file=sys.stderr)
            for step, (x, y) in enumerate(bar):
                with minidl.autocast(device, dtype=amp_dtype) if amp_dtype else nullcontext():
                    logits = model(x)
                    loss = F.cross_entropy(logits, y)
                optimizer.zero_grad()
                scaler.scale(loss).backward()
                scaler.step(optimizer)  # optimizer.step(), skipped on inf/NaN float16 gradients
                scaler.update()
                n = len(y)
                seen += n
                if step % 20 == 0 or step == len(loader) - 1:
                    # reading the loss syncs with the device: do it every few steps only
                    total_loss += loss.item() * n
                    counted += n
                    total_correct += int((logits.argmax(dim=1).data == y.data).sum())
                    bar.set_postfix(loss=f"{loss.item():.4f}",
                                    img_s=f"{seen / (time.perf_counter() - t0):.0f}")
            bar.close()
            seconds = time.perf_counter() - t0
            train_seconds += seconds
            test_acc, _ = evaluate(model, test_set, device)
            history.append(dict(epoch=epoch + 1, lr=lr, train_loss=total_loss / max(counted, 1),
                                train_accuracy=total_correct / max(counted, 1),
                                test_accuracy=test_acc, seconds=round(seconds, 2)))
            print(f"epoch {epoch + 1}/{args.epochs}: loss {history[-1]['train_loss']:.4f}, "
                  f"test accuracy {test_acc:.4f}, {seconds:.1f} s "
                  f"({len(train_set) / seconds:.0f} images/s)", flush=True)
            if args.save and rank == 0:
                save_checkpoint(args.save, net, optimizer, epoch + 1, history,
                                scaler if scaler.is_enabled() else None)
    except KeyboardInterrupt:
        where = f"; the checkpoint in {args.save} holds the last completed epoch" if args.save else ""
        print(f"\ninterrupted{where}", file=sys.stderr)
        return 130
    finally:
        notice.done()

    test_acc, preds = evaluate(model, test_set, device)
    if args.errors and rank == 0:
        n = save_error_sheet(args.errors, test_set.images, test_set.labels, preds)
        print(f"wrote {n} misclassified digits to {args.errors}")
    if args.metrics_json and rank == 0:
        metrics = dict(model=args.model, epochs=args.epochs, test_accuracy=test_acc,
                       train_seconds=round(train_seconds, 2), seed=args.seed,
                       batch_size=args.batch_size, lr=args.lr, device=device, amp=args.amp,
                       data=train_set.source, world_size=world,
                       effective_batch_size=world * args.batch_size, history=history)
        with open(args.metrics_json, "w") as f:
            json.dump(metrics, f, indent=2)
    print(f"test accuracy: {test_acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
