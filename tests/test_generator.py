"""minidl.Generator (torch.Generator) and the ``generator=`` keyword: the same seed gives the same
draws, generators are independent of each other and of the process-wide one, get_state /
set_state replay, a generator of another device is refused, DataLoader draws its order and its
workers' base seed from its generator. The numbers are torch's (tests/test_torch_rng.py
compares them); the API, types and errors are compared with torch's where torch is installed."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import minidl
from minidl import backend

try:
    import torch
except ImportError:  # the parity asserts below are skipped without it
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


# ---- 1. the Generator object ------------------------------------------------------------------
def test_a_fresh_generator_has_torchs_default_seed_and_the_api():
    g = minidl.Generator()
    assert g.initial_seed() == 67280421310721
    assert g.device == "cpu" and isinstance(g.device, minidl.device)
    assert g.manual_seed(3) is g and g.initial_seed() == 3
    assert g.manual_seed(-1).initial_seed() == 2**64 - 1
    drawn = g.seed()
    assert isinstance(drawn, int) and g.initial_seed() == drawn
    assert isinstance(minidl.Generator(minidl.device("cpu")).device, minidl.device)
    if torch is not None:
        tg = torch.Generator()
        assert tg.initial_seed() == minidl.Generator().initial_seed()
        assert tg.manual_seed(-1).initial_seed() == minidl.Generator().manual_seed(-1).initial_seed()
        assert str(tg.device) == str(g.device)


def test_seed_errors_as_torch():
    g = minidl.Generator()
    with pytest.raises(TypeError, match="integer"):
        g.manual_seed(1.5)
    with pytest.raises(ValueError, match="out of range"):
        g.manual_seed(2**64)
    with pytest.raises(ValueError, match="out of range"):
        minidl.manual_seed(-2**63 - 1)
    if torch is not None:
        with pytest.raises(ValueError):
            torch.Generator().manual_seed(2**64)
    with pytest.raises(ValueError, match="unknown device"):
        minidl.Generator("tpu")
    with pytest.raises(TypeError, match="device"):
        minidl.Generator(3)


def test_state_is_a_uint8_tensor_that_replays():
    g = minidl.Generator().manual_seed(11)
    minidl.rand(2, generator=g)
    state = g.get_state()
    assert isinstance(state, minidl.Tensor) and state.dtype == minidl.uint8 and state.ndim == 1
    a = minidl.rand(5, generator=g).numpy()
    g.manual_seed(99)
    assert g.set_state(state) is g
    assert g.initial_seed() == 11  # as torch: the state carries the seed
    np.testing.assert_array_equal(minidl.rand(5, generator=g).numpy(), a)
    other = minidl.Generator().set_state(state)  # another generator takes it too
    np.testing.assert_array_equal(minidl.rand(5, generator=other).numpy(), a)
    # survives minidl.save / load
    if torch is not None:
        tg = torch.Generator().manual_seed(3)
        tg.set_state(tg.get_state())
        assert tg.get_state().dtype == torch.uint8


def test_set_state_errors(tmp_path):
    g = minidl.Generator()
    with pytest.raises(TypeError, match="uint8 Tensor"):
        g.set_state([1, 2])
    with pytest.raises(TypeError, match="uint8"):
        g.set_state(minidl.zeros(3))
    with pytest.raises(RuntimeError, match="not a state get_state returned"):
        g.set_state(minidl.tensor([1, 2, 3], dtype=minidl.uint8))
    with pytest.raises(ValueError, match="not a state get_state returned"):
        g.set_state(minidl.tensor([1, 2, 3], dtype=minidl.uint8))
    if torch is not None:
        with pytest.raises(TypeError):
            torch.Generator().set_state(torch.zeros(3))
        with pytest.raises(RuntimeError):
            torch.Generator().set_state(torch.zeros(3, dtype=torch.uint8))


def test_clone_state_gives_a_twin():
    g = minidl.Generator().manual_seed(5)
    minidl.randn(3, generator=g)
    twin = g.clone_state()
    assert twin is not g and isinstance(twin, minidl.Generator)
    assert twin.initial_seed() == 5 and twin.device == g.device
    np.testing.assert_array_equal(minidl.randn(4, generator=twin).numpy(),
                                  minidl.randn(4, generator=g).numpy())
    minidl.randn(4, generator=g)  # the twin does not move with g
    assert not np.array_equal(minidl.randn(4, generator=twin).numpy(),
                              minidl.randn(4, generator=g).numpy())
    if torch is not None:
        assert type(torch.Generator().clone_state()).__name__ == "Generator"


def test_default_generator_is_the_process_wide_generator():
    d = minidl.default_generator
    assert isinstance(d, minidl.Generator) and d.device == "cpu"
    assert minidl.manual_seed(7) is d and d.initial_seed() == minidl.initial_seed() == 7
    assert backend.rng() is d._gen
    a = minidl.randn(4).numpy()
    assert d.manual_seed(7) is d and minidl.initial_seed() == 7
    np.testing.assert_array_equal(minidl.randn(4).numpy(), a)  # d.manual_seed is manual_seed
    state = minidl.get_rng_state()
    b = minidl.rand(3).numpy()
    d.set_state(state)
    np.testing.assert_array_equal(minidl.rand(3).numpy(), b)
    d.set_state(state)
    c = minidl.rand(3, generator=d).numpy()  # generator=default_generator is the global stream
    np.testing.assert_array_equal(c, b)
    assert pickle.loads(pickle.dumps(d)) is d
    if torch is not None:
        assert torch.manual_seed(1) is torch.default_generator


def test_rng_state_survives_save_load_and_old_states_load(tmp_path):
    minidl.manual_seed(2)
    state = minidl.get_rng_state()
    minidl.save({"rng": state}, tmp_path / "s.npz")
    a = minidl.randn(3).numpy()
    minidl.set_rng_state(minidl.load(tmp_path / "s.npz")["rng"])
    np.testing.assert_array_equal(minidl.randn(3).numpy(), a)
    # a state of the old PCG64 engine (JSON text) cannot replay on mt19937: refused by name
    import json

    text = json.dumps({"seed": 2, "numpy": {"bit_generator": "PCG64"}}).encode("ascii")
    old = minidl.Tensor(np.frombuffer(text, dtype=np.uint8).copy())
    with pytest.raises(ValueError, match="not a state get_rng_state returned"):
        minidl.set_rng_state(old)
    assert minidl.initial_seed() == 2


# ---- 2. generator= on every random function -------------------------------------------------
def _x(m, *shape):
    return m.ones(*shape) * 0.5


def _w(m):  # a weight matrix to initialise (outside autograd)
    return m.empty(4, 6)


# Each case runs on minidl and on torch (``m`` is the module, ``g`` a generator of it), so the
# keyword's name and place are torch's.
CASES = {
    "rand": lambda m, g: m.rand(3, 4, generator=g),
    "rand size=": lambda m, g: m.rand(size=(5,), generator=g),
    "randn": lambda m, g: m.randn(3, 4, generator=g),
    "randint": lambda m, g: m.randint(0, 10, (6,), generator=g),
    "randint(high, size)": lambda m, g: m.randint(10, (6,), generator=g),
    "randperm": lambda m, g: m.randperm(9, generator=g),
    "normal numbers": lambda m, g: m.normal(1.0, 2.0, (5,), generator=g),
    "normal tensors": lambda m, g: m.normal(m.zeros(5), m.ones(5), generator=g),
    "bernoulli": lambda m, g: m.bernoulli(_x(m, 20), generator=g),
    "multinomial": lambda m, g: m.multinomial(m.ones(2, 8), 3, generator=g),
    "multinomial replacement": lambda m, g: m.multinomial(m.ones(8), 12, True, generator=g),
    "rand_like": lambda m, g: m.rand_like(_x(m, 4), generator=g),
    "randn_like": lambda m, g: m.randn_like(_x(m, 4), generator=g),
    "randint_like": lambda m, g: m.randint_like(_x(m, 4), 0, 7, generator=g),
    "Tensor.uniform_": lambda m, g: _x(m, 6).uniform_(-1, 1, generator=g),
    "Tensor.normal_": lambda m, g: _x(m, 6).normal_(0, 2, generator=g),
    "Tensor.bernoulli_": lambda m, g: _x(m, 16).bernoulli_(0.3, generator=g),
    "Tensor.random_": lambda m, g: m.zeros(8, dtype=m.int64).random_(0, 100, generator=g),
    "Tensor.exponential_": lambda m, g: _x(m, 6).exponential_(2.0, generator=g),
    "Tensor.geometric_": lambda m, g: _x(m, 6).geometric_(0.3, generator=g),
    "Tensor.cauchy_": lambda m, g: _x(m, 6).cauchy_(generator=g),
    "Tensor.log_normal_": lambda m, g: _x(m, 6).log_normal_(generator=g),
    "Tensor.bernoulli": lambda m, g: _x(m, 16).bernoulli(generator=g),
    "Tensor.multinomial": lambda m, g: m.ones(6).multinomial(4, generator=g),
    "init.uniform_": lambda m, g: m.nn.init.uniform_(_w(m), -1, 1, generator=g),
    "init.normal_": lambda m, g: m.nn.init.normal_(_w(m), 0, 1, generator=g),
    "init.trunc_normal_": lambda m, g: m.nn.init.trunc_normal_(_w(m), generator=g),
    "init.kaiming_uniform_": lambda m, g: m.nn.init.kaiming_uniform_(_w(m), a=5 ** 0.5,
                                                                      generator=g),
    "init.kaiming_normal_": lambda m, g: m.nn.init.kaiming_normal_(_w(m), generator=g),
    "init.xavier_uniform_": lambda m, g: m.nn.init.xavier_uniform_(_w(m), generator=g),
    "init.xavier_normal_": lambda m, g: m.nn.init.xavier_normal_(_w(m), 2.0, generator=g),
    "init.orthogonal_": lambda m, g: m.nn.init.orthogonal_(_w(m), generator=g),
    "init.sparse_": lambda m, g: m.nn.init.sparse_(_w(m), 0.5, generator=g),
}


def _draw(case, g):
    with minidl.no_grad():
        return CASES[case](minidl, g).numpy()


# torch's sparse_ draws its per-column randperm from the global generator even when given one
# (tests/test_torch_rng.py checks that minidl's does the same), so it is not among these
@pytest.mark.parametrize("case", sorted(c for c in CASES if c != "init.sparse_"))
def test_same_seed_same_draws_and_the_global_stream_stays(case):
    minidl.manual_seed(0)
    before = minidl.get_rng_state().numpy()
    g = minidl.Generator().manual_seed(21)
    a = _draw(case, g)
    b = _draw(case, g)
    np.testing.assert_array_equal(minidl.get_rng_state().numpy(), before)  # global untouched
    g.manual_seed(21)
    np.testing.assert_array_equal(_draw(case, g), a)
    np.testing.assert_array_equal(_draw(case, g), b)
    # two generators are independent: draws from h in between do not change g's
    g.manual_seed(21)
    h = minidl.Generator().manual_seed(21)
    _draw(case, h)
    minidl.rand(7)  # nor do draws from the global generator
    np.testing.assert_array_equal(_draw(case, g), a)
    # and the global stream is not the generator: with generator=None it moves
    minidl.manual_seed(0)
    _draw(case, None)
    assert not np.array_equal(minidl.get_rng_state().numpy(), before)


@pytest.mark.parametrize("case", sorted(CASES))
def test_torch_takes_the_same_call(case):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        out = CASES[case](torch, g)
    with minidl.no_grad():
        mine = CASES[case](minidl, minidl.Generator().manual_seed(1))
    assert tuple(mine.shape) == tuple(out.shape)
    assert str(mine.dtype) == str(out.dtype).replace("torch.", "")


def test_state_replays_through_the_in_place_samplers():
    g = minidl.Generator().manual_seed(4)
    state = g.get_state()
    t = minidl.empty(3, 5)
    minidl.nn.init.kaiming_uniform_(t, generator=g)
    first = t.numpy().copy()
    t.normal_(generator=g)
    g.set_state(state)
    u = minidl.empty(3, 5)
    minidl.nn.init.kaiming_uniform_(u, generator=g)
    np.testing.assert_array_equal(u.numpy(), first)


def test_a_generator_that_is_not_one_is_a_type_error():
    with pytest.raises(TypeError, match="generator must be a minidl.Generator"):
        minidl.randn(3, generator=5)
    with pytest.raises(TypeError, match="generator"):
        minidl.ones(3).uniform_(generator=np.random.default_rng(0))
    if torch is not None:
        with pytest.raises(TypeError):
            torch.randn(3, generator=5)
        with pytest.raises(TypeError, match="got torch._C.Generator"):  # says whose it is
            minidl.rand(2, generator=torch.Generator())


def test_a_cuda_generator_needs_a_gpu_as_torch():
    if minidl.cuda_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="CuPy|GPU"):
        minidl.Generator("cuda")
    if torch is not None and not torch.cuda.is_available():
        with pytest.raises(RuntimeError):
            torch.Generator("cuda")


# ---- 3. data: samplers, random_split, DataLoader ----------------------------------------------
from minidl.data import (DataLoader, Dataset, RandomSampler, SubsetRandomSampler,  # noqa: E402
                         TensorDataset, WeightedRandomSampler, get_worker_info, random_split)


class WorkerSeeds(Dataset):
    """Item i is (i, the seed of the worker that loaded it, its id; -1 in this process)."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        info = get_worker_info()
        return (np.int64(i), np.int64(-1 if info is None else info.seed),
                np.int64(-1 if info is None else info.id))


def _order(loader):
    return np.concatenate([b[0].numpy() for b in loader]).tolist()


def test_samplers_draw_from_the_generator_at_each_pass():
    data = range(10)
    minidl.manual_seed(0)
    before = minidl.get_rng_state().numpy()
    for make in (lambda g: RandomSampler(data, generator=g),
                 lambda g: RandomSampler(data, replacement=True, num_samples=7, generator=g),
                 lambda g: SubsetRandomSampler([3, 5, 7, 9, 11], generator=g),
                 lambda g: WeightedRandomSampler([1.0, 2.0, 3.0, 0.5], 6, generator=g)):
        g = minidl.Generator().manual_seed(3)
        sampler = make(g)
        assert sampler.generator is g
        first, second = list(sampler), list(sampler)
        g.manual_seed(3)  # reseeding after construction is seen by the next pass
        assert list(sampler) == first and list(sampler) == second
        g.manual_seed(3)
        assert list(make(g)) == first  # a sampler of the same seed gives the same order
    np.testing.assert_array_equal(minidl.get_rng_state().numpy(), before)
    if torch is not None:  # torch's samplers take its Generator under the same keyword
        tg = torch.Generator().manual_seed(3)
        assert len(list(torch.utils.data.RandomSampler(data, generator=tg))) == 10


def test_random_split_takes_a_generator_as_torch():
    ds = TensorDataset(minidl.arange(10))
    g = minidl.Generator().manual_seed(1)
    a, b = random_split(ds, [7, 3], generator=g)
    c, d = random_split(ds, [7, 3], minidl.Generator().manual_seed(1))  # torch's 3rd argument
    assert list(a.indices) == list(c.indices) and list(b.indices) == list(d.indices)
    assert sorted(list(a.indices) + list(b.indices)) == list(range(10))
    e, _ = random_split(ds, [7, 3], generator=g)  # g moved on
    assert list(e.indices) != list(a.indices)
    if torch is not None:
        ta, tb = torch.utils.data.random_split(range(10), [7, 3],
                                               generator=torch.Generator().manual_seed(1))
        assert (len(ta), len(tb)) == (len(a), len(b))


def test_dataloader_draws_its_order_from_the_generator_each_epoch():
    ds = TensorDataset(minidl.arange(10))
    minidl.manual_seed(0)
    before = minidl.get_rng_state().numpy()
    g = minidl.Generator().manual_seed(5)
    loader = DataLoader(ds, batch_size=4, shuffle=True, generator=g)
    assert loader.generator is g
    epochs = [_order(loader) for _ in range(3)]
    assert all(sorted(e) == list(range(10)) for e in epochs)
    assert epochs[0] != epochs[1]
    # as torch: each pass draws the workers' base seed, then the permutation, from g (torch's
    # own numbers: an int64 random_(), then randperm)
    ref = minidl.Generator().manual_seed(5)
    for e in epochs:
        minidl.empty((), dtype="int64").random_(generator=ref)
        assert e == minidl.randperm(10, generator=ref).tolist()
        minidl.randperm(10, generator=ref)  # torch's sampler draws one more at its end
    np.testing.assert_array_equal(minidl.get_rng_state().numpy(), before)  # global untouched
    g.manual_seed(5)
    assert [_order(loader) for _ in range(3)] == epochs
    # without shuffle the order is 0..n-1, and a pass still draws the base seed from g
    g.manual_seed(5)
    state = g.get_state().numpy()
    assert _order(DataLoader(ds, batch_size=3, generator=g)) == list(range(10))
    assert not np.array_equal(g.get_state().numpy(), state)
    # batch_size=None takes the order from g too
    g.manual_seed(5)
    single = [int(x[0].item()) for x in DataLoader(ds, batch_size=None, shuffle=True,
                                                   generator=g)]
    assert single == epochs[0]


def test_dataloader_seed_still_works_and_excludes_generator():
    ds = TensorDataset(minidl.arange(10))
    a = _order(DataLoader(ds, batch_size=4, shuffle=True, seed=2))
    assert a == np.random.default_rng([2, 0]).permutation(10).tolist()
    with pytest.raises(ValueError, match="seed or generator"):
        DataLoader(ds, shuffle=True, seed=2, generator=minidl.Generator())
    with pytest.raises(TypeError, match="generator must be a minidl.Generator"):
        DataLoader(ds, shuffle=True, generator=3)


def test_dataloader_workers_base_seed_comes_from_the_generator():
    g = minidl.Generator().manual_seed(9)
    loader = DataLoader(WorkerSeeds(), batch_size=2, shuffle=True, num_workers=2, generator=g)
    batches = list(loader)
    ref = minidl.Generator().manual_seed(9)
    base = int(minidl.empty((), dtype="int64").random_(generator=ref).item())
    order = minidl.randperm(8, generator=ref).tolist()
    assert np.concatenate([b[0].numpy() for b in batches]).tolist() == order
    for b in batches:  # a worker is seeded with base_seed + worker_id, as in torch
        ids, seeds = b[2].numpy(), b[1].numpy()
        assert (ids >= 0).all()
        assert (seeds == base + ids).all()
    g.manual_seed(9)
    again = list(loader)
    for x, y in zip(batches, again):
        np.testing.assert_array_equal(x[1].numpy(), y[1].numpy())
    # the next epoch draws a new base seed
    nxt = list(loader)
    assert int(nxt[0][1].numpy()[0] - nxt[0][2].numpy()[0]) != base


# ---- devices ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    import _fake_gpu

    lib = _fake_gpu.build_host_kernels(tmp_path_factory.mktemp("fake_gpu"))
    if lib is None:
        pytest.skip("fake-cuda needs a host C++ compiler (g++/clang++) for the CUDA kernel bodies")
    return lib


def test_a_generator_of_another_device_is_refused_as_torch(monkeypatch, host_kernels):
    import _fake_gpu

    _fake_gpu.install(monkeypatch, host_kernels)
    gc = minidl.Generator("cuda")
    assert gc.device == "cuda" and gc.initial_seed() == 67280421310721
    x = minidl.randn(2, 3, device="cuda", generator=gc.manual_seed(2))
    assert x.device == "cuda"
    np.testing.assert_array_equal(minidl.randn(2, 3, device="cuda", generator=gc.manual_seed(2))
                                  .numpy(), x.numpy())
    t = minidl.zeros(4, device="cuda").uniform_(generator=gc)
    assert t.device == "cuda"
    minidl.zeros(4, device="cuda").exponential_(generator=gc)
    state = gc.get_state()  # a CUDA generator's state is a CPU uint8 Tensor, as torch's
    assert state.device == "cpu" and state.dtype == minidl.uint8
    assert gc.clone_state().device == "cuda"
    g = minidl.Generator()
    for call in (lambda: minidl.randn(3, generator=gc),
                 lambda: minidl.rand(3, device="cuda", generator=g),
                 lambda: minidl.zeros(3, device="cuda").normal_(generator=g),
                 lambda: minidl.zeros(3, device="cuda").random_(0, 5, generator=g),
                 lambda: minidl.nn.init.xavier_uniform_(minidl.empty(2, 2, device="cuda"),
                                                        generator=g),
                 lambda: minidl.bernoulli(minidl.ones(3, device="cuda") * 0.5, generator=g),
                 lambda: RandomSampler(range(3), generator=gc),
                 lambda: random_split(range(4), [2, 2], generator=gc),
                 lambda: DataLoader(range(4), shuffle=True, generator=gc)):
        with pytest.raises(RuntimeError, match="Expected a '(cpu|cuda)' device type for "
                                               "generator but found '(cuda|cpu)'"):
            call()


def test_the_device_keeps_its_index_as_torch(monkeypatch, host_kernels):
    import _fake_gpu

    _fake_gpu.install(monkeypatch, host_kernels)
    g = minidl.Generator("cuda:0")
    assert g.device.type == "cuda" and g.device.index == 0
    assert minidl.rand(2, device="cuda", generator=g).device == "cuda"
    assert minidl.Generator(device=minidl.device("cpu")).device.index is None


def test_a_generator_pickles_with_its_state_as_torchs():
    g = minidl.Generator().manual_seed(8)
    minidl.rand(3, generator=g)
    h = pickle.loads(pickle.dumps(g))
    assert h is not g and h.initial_seed() == 8
    np.testing.assert_array_equal(minidl.rand(4, generator=h).numpy(),
                                  minidl.rand(4, generator=g).numpy())
    if torch is not None:
        tg = torch.Generator().manual_seed(8)
        assert pickle.loads(pickle.dumps(tg)).initial_seed() == 8


# ---- random.fork_rng --------------------------------------------------------------------------

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
