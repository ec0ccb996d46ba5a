"""torch's small utilities a training script reaches for: torch.random.fork_rng,
torch.utils.benchmark.Timer, torch.utils.hooks, torch.utils.data.StackDataset,
torch.nn.attention.sdpa_kernel and torch.hub (on local files)."""
import hashlib
import os

import numpy as np
import pytest

import minidl
import minidl.nn.attention as attention
from minidl import hub
from minidl.data import DataLoader, StackDataset, TensorDataset
from minidl.utils.benchmark import Measurement, Timer


# ---- random.fork_rng ----------------------------------------------------------------------------
def test_fork_rng_leaves_the_following_draws_as_they_were():
    minidl.manual_seed(3)
    expected = minidl.randn(4).numpy()
    minidl.manual_seed(3)
    with minidl.random.fork_rng():
        minidl.randn(100)
    np.testing.assert_array_equal(minidl.randn(4).numpy(), expected)
    minidl.manual_seed(3)
    with pytest.raises(KeyError):
        with minidl.random.fork_rng():
            minidl.rand(7)
            raise KeyError("inside")
    np.testing.assert_array_equal(minidl.randn(4).numpy(), expected)  # put back on error too
    minidl.manual_seed(3)
    with minidl.random.fork_rng(enabled=False):
        minidl.randn(100)
    assert not np.array_equal(minidl.randn(4).numpy(), expected)
    with pytest.raises(ValueError, match="device_type"):
        with minidl.random.fork_rng(device_type="mps"):
            pass
    assert minidl.random.initial_seed() == 3 and minidl.random.manual_seed is minidl.manual_seed


# ---- utils.benchmark.Timer ---------------------------------------------------------------------
def test_timer_measures_a_statement():
    x = minidl.randn(32, 32)
    calls = []
    t = Timer("f(x)", setup="y = 1", globals={"x": x, "f": lambda a: calls.append(1) or a @ a},
              label="matmul", sub_label="32", description="float32", num_threads=1)
    m = t.timeit(50)
    assert isinstance(m, Measurement) and m.number_per_run == 50 and len(m.times) == 1
    assert len(calls) == 51  # one warm-up, then the timed 50
    assert m.median > 0 and m.mean == pytest.approx(m.raw_times[0] / 50)
    text = repr(m)
    assert "matmul: 32" in text and "float32" in text and "50 runs per measurement" in text
    m = t.blocked_autorange(min_run_time=0.05)
    assert sum(m.raw_times) >= 0.05 and m.raw_times[0] >= 0.0
    assert m.number_per_run >= 1 and m.median == pytest.approx(np.median(m.times))
    before = minidl.get_num_threads()
    Timer(lambda: None, num_threads=1).timeit(3)
    assert minidl.get_num_threads() == before  # put back after timing


def test_measurement_statistics_and_timer_argument_checks():
    m = Measurement(10, [1.0, 2.0, 3.0, 4.0, 10.0])
    assert m.times == [0.1, 0.2, 0.3, 0.4, 1.0]
    assert m.median == pytest.approx(0.3) and m.mean == pytest.approx(0.4)
    assert m.iqr == pytest.approx(0.2) and m.has_warnings  # IQR is 67% of the median
    with pytest.raises(ValueError):
        Measurement(0, [1.0])
    with pytest.raises(ValueError, match="num_threads"):
        Timer("pass", num_threads=0)
    with pytest.raises(ValueError, match="language"):
        Timer("pass", language="c++")
    with pytest.raises(NotImplementedError, match="blocked_autorange"):
        Timer("pass").autorange()


def test_timer_matches_torch_units_and_fields():
    benchmark = pytest.importorskip("torch.utils.benchmark")
    ours = Timer("pass").timeit(1000)
    theirs = benchmark.Timer("pass").timeit(1000)
    for name in ("number_per_run", "raw_times", "times", "median", "mean", "iqr"):
        assert hasattr(theirs, name) and hasattr(ours, name)
    assert ours.number_per_run == theirs.number_per_run == 1000


# ---- utils.hooks, StackDataset -----------------------------------------------------------------
def test_hook_handle_is_the_modules_one():
    model = minidl.nn.Linear(2, 2)
    handle = model.register_forward_hook(lambda m, i, o: None)
    assert isinstance(handle, minidl.utils.hooks.RemovableHandle)


def test_stack_dataset_tuple_and_dict():
    a = TensorDataset(np.arange(6.0).reshape(3, 2))
    b = [10, 20, 30]
    s = StackDataset(a, b)
    assert len(s) == 3 and s[1][1] == 20 and np.array_equal(s[1][0][0], [2.0, 3.0])
    d = StackDataset(x=b, y=["p", "q", "r"])
    assert d[2] == {"x": 30, "y": "r"}
    batch = next(iter(DataLoader(d, batch_size=3)))
    assert batch["y"] == ["p", "q", "r"] and batch["x"].tolist() == [10, 20, 30]
    with pytest.raises(ValueError, match="size mismatch"):
        StackDataset(b, [1, 2])
    with pytest.raises(ValueError, match="not both"):
        StackDataset(b, y=b)
    torch = pytest.importorskip("torch")
    theirs = torch.utils.data.StackDataset(x=b, y=["p", "q", "r"])
    assert [theirs[i] for i in range(3)] == [d[i] for i in range(3)]


# ---- nn.attention.sdpa_kernel ------------------------------------------------------------------
def test_sdpa_kernel_records_the_choice_and_keeps_the_result():
    q = minidl.randn(1, 2, 4, 8)
    plain = minidl.nn.functional.scaled_dot_product_attention(q, q, q).numpy()
    with attention.sdpa_kernel([attention.SDPBackend.FLASH_ATTENTION,
                                attention.SDPBackend.MATH]):
        assert attention.current_sdpa_backends() == [attention.SDPBackend.FLASH_ATTENTION,
                                                     attention.SDPBackend.MATH]
        inside = minidl.nn.functional.scaled_dot_product_attention(q, q, q).numpy()
    np.testing.assert_array_equal(inside, plain)
    assert attention.SDPBackend.ERROR not in attention.current_sdpa_backends()
    with pytest.raises(AssertionError, match="SDPBackend"):
        with attention.sdpa_kernel("flash"):
            pass
    torch = pytest.importorskip("torch")
    for b in attention.SDPBackend:
        assert int(getattr(torch.nn.attention.SDPBackend, b.name)) == int(b)


# ---- hub on local files ------------------------------------------------------------------------
@pytest.fixture
def hub_dir(tmp_path):
    before = hub._hub_dir
    hub.set_dir(tmp_path / "hub")
    yield tmp_path / "hub"
    hub._hub_dir = before


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


# ---- minidl.load reads torch.save's format ------------------------------------------------------
def test_load_reads_what_save_format_torch_wrote(tmp_path):
    model = minidl.nn.Linear(3, 2)
    opt = minidl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(minidl.randn(4, 3)).sum().backward()
    opt.step()
    path = tmp_path / "ckpt.pt"
    minidl.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 2,
                 "history": [0.5, 0.25]}, path, format="torch")
    back = minidl.load(path)
    assert back["epoch"] == 2 and back["history"] == [0.5, 0.25]
    fresh = minidl.nn.Linear(3, 2)
    fresh.load_state_dict(back["model"])
    np.testing.assert_array_equal(fresh.weight.numpy(), model.weight.numpy())
    opt2 = minidl.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(back["optimizer"])
    buf = opt2.state_dict()["state"][0]["momentum_buffer"]
    np.testing.assert_array_equal(minidl.as_tensor(buf).numpy(),
                                  opt.state_dict()["state"][0]["momentum_buffer"].numpy())
