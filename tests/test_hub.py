"""minidl.hub (torch.hub) on local files: load_state_dict_from_url reads the cached file
(minidl's and torch.save's formats, the hash prefix checked), and hub.load / hub.list /
hub.help from a local folder with a hubconf.py and from the cache."""
import hashlib
import os

import numpy as np
import pytest

import minidl
from minidl import hub


# ---- hub on local files -----------------------------------------------------------------------

@pytest.fixture
def hub_dir(tmp_path):
    before = hub._hub_dir
    hub.set_dir(tmp_path / "hub")
    yield tmp_path / "hub"
    hub._hub_dir = before


HUBCONF = '''
"""A hub repository."""
dependencies = ["numpy"]


def tiny(width=2):
    """A Linear of the given width."""
    import minidl
    return minidl.nn.Linear(width, width)


def _private():
    return None
'''


def test_load_state_dict_from_url_reads_the_cached_file(hub_dir):
    model = minidl.nn.Linear(3, 2)
    url = "https://example.invalid/models/tiny-{}.npz"
    os.makedirs(hub_dir / "checkpoints")
    plain = hub_dir / "checkpoints" / "tiny.npz"
    np.savez(plain, **{k: v.numpy() for k, v in model.state_dict().items()})
    digest = hashlib.sha256(plain.read_bytes()).hexdigest()
    named = hub_dir / "checkpoints" / f"tiny-{digest[:8]}.npz"
    named.write_bytes(plain.read_bytes())
    state = hub.load_state_dict_from_url(url.format(digest[:8]), check_hash=True)
    assert set(state) == {"weight", "bias"} and isinstance(state["weight"], minidl.Tensor)
    fresh = minidl.nn.Linear(3, 2)
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(fresh.weight.numpy(), model.weight.numpy())
    bad = hub_dir / "checkpoints" / "tiny-00000000.npz"
    bad.write_bytes(plain.read_bytes())
    with pytest.raises(RuntimeError, match="invalid hash value"):
        hub.load_state_dict_from_url(url.format("00000000"), check_hash=True)
    with pytest.raises(FileNotFoundError, match="downloads nothing"):
        hub.load_state_dict_from_url("https://example.invalid/absent.pth")
    with pytest.raises(RuntimeError, match="downloads nothing"):
        hub.download_url_to_file("https://example.invalid/x", str(hub_dir / "x"))


def test_load_state_dict_from_url_reads_torch_save_files(hub_dir):
    torch = pytest.importorskip("torch")
    os.makedirs(hub_dir / "checkpoints")
    theirs = torch.nn.Linear(4, 3).state_dict()
    torch.save(theirs, hub_dir / "checkpoints" / "lin.pth")
    ours = hub.load_state_dict_from_url("https://example.invalid/lin.pth")
    for k in theirs:
        np.testing.assert_array_equal(ours[k].numpy(), theirs[k].numpy())


def test_hub_load_from_a_local_folder_and_from_the_cache(hub_dir, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "hubconf.py").write_text(HUBCONF)
    model = hub.load(str(repo), "tiny", width=5, source="local")
    assert model.weight.shape == (5, 5)
    assert hub.list(str(repo), source="local") == ["tiny"]
    assert "Linear of the given width" in hub.help(str(repo), "tiny", source="local")
    with pytest.raises(RuntimeError, match="Cannot find callable"):
        hub.load(str(repo), "_private", source="local")
    with pytest.raises(ValueError, match="Unknown source"):
        hub.load(str(repo), "tiny", source="gitlab")
    with pytest.raises(RuntimeError, match="downloads nothing"):
        hub.load("owner/repo", "tiny")
    cached = hub_dir / "owner_repo_main"
    cached.mkdir(parents=True)
    (cached / "hubconf.py").write_text(HUBCONF)
    assert hub.load("owner/repo", "tiny").weight.shape == (2, 2)
    (repo / "hubconf.py").write_text(HUBCONF.replace('["numpy"]', '["no_such_module_xyz"]'))
    with pytest.raises(RuntimeError, match="Missing dependencies: no_such_module_xyz"):
        hub.load(str(repo), "tiny", source="local")
