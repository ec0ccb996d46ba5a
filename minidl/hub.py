"""``minidl.hub``, as ``torch.hub``, on local files only: minidl downloads nothing.

- ``load_state_dict_from_url(url)`` looks for the URL's file name in ``get_dir()/checkpoints``
  (torch.hub's cache, ``$TORCH_HOME/hub``, so a file torch downloaded there is found) and reads
  it without torch; a file that is not there is a FileNotFoundError saying where to put it.
- ``load(dir, name, source="local")``, ``list`` and ``help`` run a ``hubconf.py`` from a folder
  on disk, as torch's ``source="local"``; ``source="github"`` uses a repository torch.hub
  cached before (``get_dir()/owner_repo_ref``) and otherwise says how to get one.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
from urllib.parse import urlparse

__all__ = ["get_dir", "set_dir", "load_state_dict_from_url", "download_url_to_file", "load",
           "list", "help"]

_hub_dir = None
_HASH = re.compile(r"-([a-f0-9]*)\.")


def get_dir():
    """torch.hub's folder: what set_dir chose, else $TORCH_HOME/hub (~/.cache/torch/hub)."""
    if _hub_dir is not None:
        return _hub_dir
    from .models.weights import torch_home

    return os.path.join(torch_home(), "hub")


def set_dir(d):
    global _hub_dir
    _hub_dir = os.path.expanduser(os.fspath(d))


def download_url_to_file(url, dst, hash_prefix=None, progress=True):
    raise RuntimeError(f"download_url_to_file: minidl downloads nothing; fetch {url} on a machine "
                       f"with a network and copy it to {dst}")


def _check_hash(path, name):
    match = _HASH.search(name)
    if not match or not match.group(1):
        return
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(match.group(1)):
        raise RuntimeError(f'{path}: invalid hash value (expected "{match.group(1)}", got '
                           f'"{digest.hexdigest()}")')


def load_state_dict_from_url(url, model_dir=None, map_location=None, progress=True,
                             check_hash=False, file_name=None, weights_only=False):
    """The state dict in the cached file of ``url`` (torch's zip or legacy format, an .npz or
    a .safetensors file), as {name: Tensor} on ``map_location`` (default the CPU).
    ``check_hash`` checks the sha256 prefix in the file name, as torch's."""
    from .models.convert import load_torch_checkpoint
    from .serialization import _check_map_location
    from .tensor import Tensor

    model_dir = os.path.join(get_dir(), "checkpoints") if model_dir is None else model_dir
    name = file_name or os.path.basename(urlparse(url).path)
    if not name:
        raise ValueError(f"load_state_dict_from_url: {url!r} names no file; pass file_name=")
    path = os.path.join(os.path.expanduser(model_dir), name)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"load_state_dict_from_url: {name} is not in {model_dir}, and minidl downloads "
            f"nothing. On a machine with a network, fetch {url} (e.g. with torch.hub."
            f"load_state_dict_from_url, which leaves it in torch's cache) and copy it there "
            f"(or set TORCH_HOME, or call minidl.hub.set_dir)")
    if check_hash:
        _check_hash(path, name)
    where = _check_map_location(map_location)
    state = {k: Tensor(v) for k, v in load_torch_checkpoint(path).items()}
    if callable(where):  # torch's (storage, location) -> storage, here on each Tensor
        return {k: where(t, "cpu") for k, t in state.items()}
    return {k: t.to(where or "cpu") for k, t in state.items()}


def _repo_dir(repo_or_dir, source, force_reload):
    if source not in ("github", "local"):
        raise ValueError(f'Unknown source: "{source}". Allowed values: "github" | "local".')
    if source == "local":
        if not os.path.isdir(repo_or_dir):
            raise FileNotFoundError(f"hub: {repo_or_dir} is not a folder (source='local' takes "
                                    "the folder that holds hubconf.py)")
        return repo_or_dir
    owner_name, _, ref = repo_or_dir.partition(":")
    if "/" not in owner_name:
        raise ValueError(f'Invalid input: repo_or_dir ("{repo_or_dir}") must be of the form '
                         '"repo_owner/repo_name[:ref]"')
    owner, name = owner_name.split("/", 1)
    candidates = [f"{owner}_{name}_{ref}"] if ref else [f"{owner}_{name}_main",
                                                          f"{owner}_{name}_master"]
    for c in candidates:
        path = os.path.join(get_dir(), c)
        if os.path.isdir(path) and not force_reload:
            return path
    raise RuntimeError(f"hub: {repo_or_dir} is not in torch.hub's cache ({get_dir()}), and minidl "
                       f"downloads nothing: clone the repository and pass its folder with "
                       f"source='local'")


def _hubconf(repo_dir):
    path = os.path.join(repo_dir, "hubconf.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"hub: {repo_dir} has no hubconf.py")
    spec = importlib.util.spec_from_file_location(f"minidl_hubconf_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, repo_dir)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(repo_dir)
    missing = [d for d in getattr(module, "dependencies", [])
               if importlib.util.find_spec(d) is None]
    if missing:
        raise RuntimeError(f"Missing dependencies: {', '.join(missing)}")
    return module


def _entry(module, model):
    if not isinstance(model, str):
        raise ValueError("Invalid input: model should be a string of function name")
    fn = getattr(module, model, None)
    if fn is None or not callable(fn) or model.startswith("_"):
        raise RuntimeError(f"Cannot find callable {model} in hubconf (its entry points: "
                           f"{', '.join(_entries(module)) or 'none'})")
    return fn


def _entries(module):
    return [n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_")
            and n != "dependencies"]


def list(github, force_reload=False, skip_validation=False, trust_repo=None, verbose=True,
         source="github"):
    """The entry points a hubconf.py offers."""
    return _entries(_hubconf(_repo_dir(github, source, force_reload)))


def help(github, model, force_reload=False, skip_validation=False, trust_repo=None,
         source="github"):
    """The docstring of one entry point."""
    return _entry(_hubconf(_repo_dir(github, source, force_reload)), model).__doc__


def load(repo_or_dir, model, *args, source="github", trust_repo=None, force_reload=False,
         verbose=True, skip_validation=False, **kwargs):
    """Call entry point ``model`` of the hubconf.py in ``repo_or_dir`` with ``args``/``kwargs``
    (a local folder with ``source="local"``; a cached GitHub repository otherwise)."""
    return _entry(_hubconf(_repo_dir(repo_or_dir, source, force_reload)), model)(*args, **kwargs)

