"""Where ResNet-50 weights come from: a file path, or torchvision's names for its cached files.

``resnet50(weights=...)`` takes a torchvision ``.pth``, a converted ``.npz``, a ``.safetensors``
file with torchvision's parameter names (timm's ResNet-50 checkpoints use them), or one of the
names below. minidl downloads nothing: a name is looked up where torchvision keeps the files it
downloaded, ``$TORCH_HOME/hub/checkpoints`` (``TORCH_HOME`` defaults to ``~/.cache/torch``,
or ``$XDG_CACHE_HOME/torch`` when that is set, as in torch.hub).
"""
from __future__ import annotations

import os
import sys

__all__ = ["PRETRAINED", "torch_home", "checkpoints_dir", "find_pretrained", "is_pretrained_name",
           "resolve_weights_path"]

_URL = "https://download.pytorch.org/models/"
# torchvision's names -> its file names (the 8 hex digits are the start of the file's sha256)
PRETRAINED = {
    "IMAGENET1K_V1": "resnet50-0676ba61.pth",
    "IMAGENET1K_V2": "resnet50-11ad3fa6.pth",
}
_ALIASES = {"DEFAULT": "IMAGENET1K_V2"}  # torchvision's DEFAULT is its best weights


def torch_home():
    """torch.hub's cache root: $TORCH_HOME, else $XDG_CACHE_HOME/torch, else ~/.cache/torch."""
    if os.environ.get("TORCH_HOME"):
        return os.path.expanduser(os.environ["TORCH_HOME"])
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "torch")


def checkpoints_dir():
    return os.path.join(torch_home(), "hub", "checkpoints")


def _canonical(name):
    upper = name.upper()
    upper = _ALIASES.get(upper, upper)
    return upper if upper in PRETRAINED else None


def is_pretrained_name(weights):
    """True for "IMAGENET1K_V1", "IMAGENET1K_V2" and "DEFAULT" (any case)."""
    return isinstance(weights, str) and _canonical(weights) is not None


def find_pretrained(name, announce=True):
    """A torchvision weights name -> the path of its cached file; a clear error when absent.

    ``announce`` prints one line to stderr naming the file used.
    """
    key = _canonical(name)
    if key is None:
        raise ValueError(f"unknown ResNet-50 weights name {name!r}; choose one of "
                         f"{', '.join(sorted(PRETRAINED))} (or DEFAULT), or pass a file path")
    folder = checkpoints_dir()
    fname = PRETRAINED[key]
    path = os.path.join(folder, fname)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"ResNet-50 weights {key}: {fname} is not in {folder} (searched $TORCH_HOME/hub/checkpoints; "
            f"TORCH_HOME defaults to ~/.cache/torch). minidl downloads nothing. On a machine with a "
            f"network, fetch it with\n"
            f"  python -c \"import torchvision; torchvision.models.resnet50(weights='{key}')\"\n"
            f"or\n"
            f"  curl -L -o {fname} {_URL}{fname}\n"
            f"then copy {fname} into {folder} (or set TORCH_HOME, or pass the file's path)")
    if announce:
        print(f"ResNet-50 weights {key}: using {path}", file=sys.stderr, flush=True)
    return path


def resolve_weights_path(weights, announce=True):
    """A weights name or path -> a path that exists (FileNotFoundError naming it otherwise)."""
    if is_pretrained_name(weights):
        return find_pretrained(weights, announce=announce)
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"weights file {path} does not exist (pass a torchvision .pth, a converted .npz, a "
            f".safetensors file, or one of {', '.join(sorted(PRETRAINED))} to use torchvision's "
            f"cached download)")
    return path
