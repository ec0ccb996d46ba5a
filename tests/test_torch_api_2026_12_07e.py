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


# ---- legacy tensor types ------------------------------------------------------------------------
def test_legacy_types_construct_check_and_cast():
    assert minidl.FloatTensor(2, 3).shape == (2, 3) and minidl.FloatTensor(2, 3).dtype == np.float32
    assert minidl.LongTensor([1, 2]).tolist() == [1, 2] and minidl.LongTensor([1, 2]).dtype == np.int64
    assert minidl.DoubleTensor(minidl.Size([4])).shape == (4,)  # a Size gives sizes
    assert minidl.FloatTensor((2, 3)).tolist() == [2.0, 3.0]  # a plain tuple gives data
    assert minidl.FloatTensor().shape == (0,)
    x = minidl.ones(2)
    assert minidl.FloatTensor(x) is x
    assert isinstance(x, minidl.FloatTensor) and not isinstance(x, minidl.LongTensor)
    assert not isinstance(x, minidl.cuda.FloatTensor) and not isinstance(np.ones(2), minidl.FloatTensor)
    assert x.type() == "minidl.FloatTensor"
    assert x.type(minidl.LongTensor).dtype == np.int64
    assert x.type("torch.IntTensor").dtype == np.int32
    assert x.type("torch.DoubleTensor").dtype == np.float64
    with pytest.raises(TypeError, match="expected a float32 tensor"):
        minidl.FloatTensor(minidl.ones(2, dtype=minidl.float64))
    with pytest.raises(TypeError, match="sequence"):
        minidl.FloatTensor(2.5)
    with pytest.raises(ValueError, match="negative size"):
        minidl.FloatTensor(-1)
    with pytest.raises(ValueError, match="invalid type"):
        x.type("torch.NoSuchTensor")
    assert repr(minidl.FloatTensor) == "<class 'minidl.FloatTensor'>"
    torch = pytest.importorskip("torch")
    for name in ("FloatTensor", "DoubleTensor", "HalfTensor", "LongTensor", "IntTensor",
                 "ShortTensor", "CharTensor", "ByteTensor", "BoolTensor", "BFloat16Tensor"):
        ours, theirs = getattr(minidl, name)([1, 0]), getattr(torch, name)([1, 0])
        assert str(theirs.dtype).replace("torch.", "") == str(ours.dtype), name
        assert theirs.type().replace("torch.", "") == ours.type().replace("minidl.", "")


# ---- poisson, binomial, svd_lowrank, pca_lowrank -----------------------------------------------
def test_poisson_and_binomial():
    rates = minidl.tensor([0.0, 1.0, 50.0], requires_grad=True)
    minidl.manual_seed(1)
    draws = minidl.poisson(rates)
    assert draws.dtype == np.float32 and draws[0].item() == 0.0 and draws.grad_fn is not None
    draws.sum().backward()
    assert rates.grad.tolist() == [0.0, 0.0, 0.0]  # torch's zero gradient
    many = minidl.poisson(minidl.full((20000,), 3.0, dtype=minidl.float64))
    assert many.dtype == np.float64 and abs(many.mean().item() - 3.0) < 0.06
    assert abs(many.var().item() - 3.0) < 0.15
    minidl.manual_seed(1)
    again = minidl.poisson(rates.detach())
    np.testing.assert_array_equal(again.numpy(), draws.detach().numpy())  # from minidl's state
    with pytest.raises(ValueError, match="non-negative"):
        minidl.poisson(minidl.tensor([-1.0]))
    with pytest.raises(TypeError, match="int64"):
        minidl.poisson(minidl.tensor([1, 2]))
    b = minidl.binomial(minidl.full((20000,), 10.0), minidl.full((20000,), 0.3))
    assert abs(b.mean().item() - 3.0) < 0.06 and b.max().item() <= 10
    edge = minidl.binomial(minidl.tensor([10.0, 10.5, -1.0]), minidl.tensor([1.5, 1.0, 0.5]))
    # as torch's CPU kernel: p >= 1 gives the count as it is, a count <= 0 gives 0
    assert edge.tolist() == [10.0, 10.5, 0.0]


def test_svd_lowrank_recovers_a_low_rank_matrix_and_has_gradients():
    from minidl.testing import gradcheck

    minidl.manual_seed(0)
    A = minidl.randn(20, 4, dtype=minidl.float64) @ minidl.randn(4, 15, dtype=minidl.float64)
    for matrix in (A, A.mT):
        U, S, V = minidl.svd_lowrank(matrix, q=5)
        assert U.shape == (matrix.shape[0], 5) and V.shape == (matrix.shape[1], 5)
        np.testing.assert_allclose(((U * S) @ V.mT).numpy(), matrix.numpy(), atol=1e-10)
        np.testing.assert_allclose(S.numpy()[:4], np.linalg.svd(matrix.numpy(),
                                                                compute_uv=False)[:4], rtol=1e-10)
        np.testing.assert_allclose((U.mT @ U).numpy(), np.eye(5), atol=1e-12)
    U, S, V = minidl.pca_lowrank(A, q=4)
    centred = A - A.mean(0, keepdim=True)
    np.testing.assert_allclose(((U * S) @ V.mT).numpy(), centred.numpy(), atol=1e-10)
    B = minidl.tensor(np.random.default_rng(2).normal(size=(6, 2)) @
                      np.random.default_rng(3).normal(size=(2, 5)), dtype=minidl.float64,
                      requires_grad=True)

    def top_values(b):
        minidl.manual_seed(5)
        return minidl.svd_lowrank(b, q=2)[1]

    assert gradcheck(top_values, (B,))
    # q over min(m, n) gives all min(m, n) singular values, as torch's (its default q=6)
    assert minidl.svd_lowrank(A, q=100)[1].shape == (min(A.shape[-2:]),)
    with pytest.raises(ValueError, match="q must be"):
        minidl.svd_lowrank(A, q=-2)
    with pytest.raises(ValueError, match="q"):
        minidl.pca_lowrank(A, q=-1)


def test_lowrank_matches_torch():
    torch = pytest.importorskip("torch")
    minidl.manual_seed(0)
    A = minidl.randn(30, 3, dtype=minidl.float64) @ minidl.randn(3, 12, dtype=minidl.float64)
    _, S, _ = minidl.pca_lowrank(A, q=3)
    _, St, _ = torch.pca_lowrank(torch.tensor(A.numpy()), q=3)
    np.testing.assert_allclose(S.numpy(), St.numpy(), rtol=1e-10)
    _, S, _ = minidl.svd_lowrank(A, q=3, niter=0)
    _, St, _ = torch.svd_lowrank(torch.tensor(A.numpy()), q=3, niter=0)
    np.testing.assert_allclose(S.numpy(), St.numpy(), rtol=1e-10)


def test_small_top_level_names():
    assert isinstance(minidl.float32, minidl.dtype) and minidl.GradScaler is minidl.amp.GradScaler
    assert minidl.get_device_module("cuda") is minidl.cuda
    with pytest.raises(RuntimeError, match="no device module"):
        minidl.get_device_module("mps")
    x = minidl.ones(2)
    assert not x.is_meta and not x.is_mps and not x.is_quantized and not x.is_nested
    counts, edges = x.histogram(bins=2)
    assert counts.tolist() == [0.0, 2.0] and len(edges) == 3


# ---- storages ----------------------------------------------------------------------------------
def test_storages_tell_which_tensors_share_memory():
    x = minidl.arange(6.0).reshape(2, 3)
    row, transposed, copy = x[1], x.t(), x.clone()
    ptr = x.untyped_storage().data_ptr()
    assert row.untyped_storage().data_ptr() == ptr == transposed.untyped_storage().data_ptr()
    assert copy.untyped_storage().data_ptr() != ptr
    assert row.untyped_storage().nbytes() == 24 and len(row.untyped_storage()) == 24
    assert row.storage().size() == 6 and row.storage().tolist() == [0, 1, 2, 3, 4, 5]
    assert row.storage().element_size() == 4 and row.storage().untyped().nbytes() == 24
    assert isinstance(x.untyped_storage(), minidl.UntypedStorage)
    torch = pytest.importorskip("torch")
    xt = torch.arange(6.0).reshape(2, 3)
    assert xt[1].untyped_storage().nbytes() == row.untyped_storage().nbytes()
    assert xt.untyped_storage()[5] == x.untyped_storage()[5]  # a byte of the same float
