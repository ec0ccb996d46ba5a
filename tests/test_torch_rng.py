"""minidl's CPU random numbers are torch's: after ``minidl.manual_seed(s)`` and
``torch.manual_seed(s)`` the engine states are byte-equal, and rand, randn, randint, randperm,
uniform_, normal_, random_, nn.init and the default initialisation of the layers give torch's
numbers (float64 and the uniform recipes bit for bit; float32 normals of 16 or more values
within ULPS ulps of the largest value, torch's AVX2 log/cos/sin not being libm's). Sequences of calls are checked
too, and the engine state after them, so the stream position matches."""
from __future__ import annotations

import numpy as np
import pytest

import minidl
from minidl import nn as mnn

torch = pytest.importorskip("torch")

SEEDS = [0, 1, 12345, 2**32 + 7]
ULPS = 2  # float32 normals of 16 or more: at most this many ulps of the largest value
SIZES = [1, 2, 5, 15, 16, 17, 31, 32, 33, 100, 1001]


def _seed(s):
    minidl.manual_seed(s)
    torch.manual_seed(s)


def _same_state():
    np.testing.assert_array_equal(minidl.get_rng_state().numpy(), torch.get_rng_state().numpy())


def _t(m, dtype):
    return getattr(m, dtype)


# ---- the engine and its state -----------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS + [-5, 67280421310721])
def test_manual_seed_gives_torchs_state(seed):
    _seed(seed)
    _same_state()
    assert minidl.initial_seed() == torch.initial_seed()
    assert minidl.get_rng_state().numel() == torch.get_rng_state().numel() == 5056


def test_fresh_generator_is_torchs_fresh_generator():
    g, tg = minidl.Generator(), torch.Generator()
    assert g.initial_seed() == tg.initial_seed()
    np.testing.assert_array_equal(g.get_state().numpy(), tg.get_state().numpy())
    np.testing.assert_array_equal(minidl.rand(7, generator=g).numpy(),
                                  torch.rand(7, generator=tg).numpy())


def test_state_moves_between_the_frameworks_both_ways():
    torch.manual_seed(3)
    torch.randn(3)  # leaves a cached normal sample in the state
    minidl.set_rng_state(minidl.from_numpy(torch.get_rng_state().numpy()))
    for _ in range(3):
        np.testing.assert_array_equal(minidl.randn(5, dtype="float64").numpy(),
                                      torch.randn(5, dtype=torch.float64).numpy())
    _same_state()
    minidl.manual_seed(9)
    minidl.rand(11)
    minidl.randn(1)
    torch.set_rng_state(torch.from_numpy(minidl.get_rng_state().numpy().copy()))
    np.testing.assert_array_equal(minidl.randn(3).numpy(), torch.randn(3).numpy())
    np.testing.assert_array_equal(minidl.rand(40).numpy(), torch.rand(40).numpy())
    _same_state()


def test_set_state_refuses_what_is_not_a_state():
    with pytest.raises(ValueError, match="5056 bytes"):
        minidl.set_rng_state(minidl.zeros(10, dtype="uint8"))
    bad = minidl.get_rng_state().numpy().copy()
    bad[8:12] = 0  # the engine position "left" = 0
    with pytest.raises(ValueError, match="position"):
        minidl.set_rng_state(minidl.from_numpy(bad))


# ---- uniform ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("seed", SEEDS)
def test_rand_is_torchs(seed, dtype):
    _seed(seed)
    for n in SIZES:
        np.testing.assert_array_equal(minidl.rand(n, dtype=dtype).numpy(),
                                      torch.rand(n, dtype=_t(torch, dtype)).numpy())
    np.testing.assert_array_equal(minidl.rand(3, 4, dtype=dtype).numpy(),
                                  torch.rand(3, 4, dtype=_t(torch, dtype)).numpy())
    x = minidl.ones(2, 9, dtype=dtype)
    np.testing.assert_array_equal(minidl.rand_like(x).numpy(),
                                  torch.rand_like(torch.ones(2, 9, dtype=_t(torch, dtype))).numpy())
    _same_state()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("a, b", [(-0.3, 0.7), (-2.5, 1 / 3), (0.1, 7.3), (-1e-3, 5.0),
                                  (-0.4082482904638631, 0.4082482904638631)])
def test_uniform_is_torchs(a, b, dtype):
    for seed in SEEDS[:3]:
        _seed(seed)
        for n in (3, 16, 257):
            got = minidl.empty(n, dtype=dtype).uniform_(a, b).numpy()
            want = torch.empty(n, dtype=_t(torch, dtype)).uniform_(a, b).numpy()
            np.testing.assert_array_equal(got, want)
        _same_state()


def test_complex_rand_and_uniform_fill_real_then_imaginary_as_torch():
    _seed(4)
    np.testing.assert_array_equal(minidl.rand(5, dtype="complex64").numpy(),
                                  torch.rand(5, dtype=torch.complex64).numpy())
    np.testing.assert_array_equal(minidl.randn(3, dtype="complex128").numpy(),
                                  torch.randn(3, dtype=torch.complex128).numpy())
    _same_state()


# ---- normal -------------------------------------------------------------------------------------
def _close(got, want, dtype):
    if dtype == "float64":
        np.testing.assert_array_equal(got, want)
    else:  # torch's AVX2 Box-Muller uses Sleef's log/cos/sin, not libm's: a few ulps off
        assert got.dtype == want.dtype
        scale = np.spacing(np.float32(max(np.abs(want).max(), 1e-30)))
        assert np.abs(got.astype(np.float64) - want).max() <= ULPS * scale, \
            np.abs(got.astype(np.float64) - want).max() / scale


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("seed", SEEDS)
def test_randn_is_torchs_both_paths_and_the_tail(seed, dtype):
    _seed(seed)
    for n in SIZES:
        got = minidl.randn(n, dtype=dtype).numpy()
        want = torch.randn(n, dtype=_t(torch, dtype)).numpy()
        if n < 16:  # the scalar path (double arithmetic, libm): bit for bit
            np.testing.assert_array_equal(got, want)
        else:
            _close(got, want, dtype)
    _same_state()


def test_small_normals_share_torchs_cached_sample_across_calls_and_dtypes():
    _seed(11)
    for n, dtype in [(3, "float32"), (5, "float64"), (1, "float32"), (2, "float64"),
                     (7, "float32"), (40, "float64"), (1, "float64")]:
        np.testing.assert_array_equal(minidl.randn(n, dtype=dtype).numpy(),
                                      torch.randn(n, dtype=_t(torch, dtype)).numpy())
        _same_state()  # the cached sample is in the state, at torch's place
    minidl.manual_seed(11)  # a seed clears the cache, as torch's
    torch.manual_seed(11)
    _same_state()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_normal_and_normal_with_mean_and_std_are_torchs(dtype):
    tdt = _t(torch, dtype)
    for n in (5, 16, 40):
        _seed(n)
        _close(minidl.empty(n, dtype=dtype).normal_(0.5, 2.0).numpy(),
               torch.empty(n, dtype=tdt).normal_(0.5, 2.0).numpy(), dtype)
        _close(minidl.normal(0.5, 2.0, (n,), dtype=dtype).numpy(),
               torch.normal(0.5, 2.0, (n,), dtype=tdt).numpy(), dtype)
        mean, std = np.linspace(-1, 1, n).astype(dtype), np.linspace(0.1, 2, n).astype(dtype)
        tm, ts = torch.from_numpy(mean), torch.from_numpy(std)
        mm, ms = minidl.from_numpy(mean), minidl.from_numpy(std)
        _close(minidl.normal(mm, ms).numpy(), torch.normal(tm, ts).numpy(), dtype)
        _close(minidl.normal(mm, 0.7).numpy(), torch.normal(tm, 0.7).numpy(), dtype)
        _close(minidl.normal(0.3, ms).numpy(), torch.normal(0.3, ts).numpy(), dtype)
        _close(minidl.randn_like(mm).numpy(), torch.randn_like(tm).numpy(), dtype)
        _same_state()


# ---- integers and permutations ------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_randint_is_torchs_below_and_above_2_pow_28(seed):
    _seed(seed)
    for low, high in [(0, 10), (-5, 3), (0, 2**28 - 1), (0, 2**28), (7, 2**40 + 3),
                      (-2**40, 2**40)]:
        for n in (1, 17, 100):
            np.testing.assert_array_equal(minidl.randint(low, high, (n,)).numpy(),
                                          torch.randint(low, high, (n,)).numpy())
    for dtype in ("int32", "float32", "int16"):
        np.testing.assert_array_equal(minidl.randint(0, 100, (4, 5), dtype=dtype).numpy(),
                                      torch.randint(0, 100, (4, 5), dtype=_t(torch, dtype)).numpy())
    _same_state()


@pytest.mark.parametrize("dtype", ["int64", "int32", "float32", "float64", "uint8", "int16",
                                   "int8", "bool"])
def test_random_is_torchs(dtype):
    _seed(4)
    tdt = _t(torch, dtype)
    np.testing.assert_array_equal(minidl.empty(9, dtype=dtype).random_().numpy(),
                                  torch.empty(9, dtype=tdt).random_().numpy())
    np.testing.assert_array_equal(minidl.empty(9, dtype=dtype).random_(0, 2).numpy(),
                                  torch.empty(9, dtype=tdt).random_(0, 2).numpy())
    if dtype != "bool":
        np.testing.assert_array_equal(minidl.empty(9, dtype=dtype).random_(5).numpy(),
                                      torch.empty(9, dtype=tdt).random_(5).numpy())
    _same_state()


@pytest.mark.parametrize("seed", SEEDS)
def test_randperm_is_torchs(seed):
    _seed(seed)
    for n in (0, 1, 2, 5, 16, 17, 100, 6001):
        np.testing.assert_array_equal(minidl.randperm(n).numpy(), torch.randperm(n).numpy())
    np.testing.assert_array_equal(minidl.randperm(33, dtype="float32").numpy(),
                                  torch.randperm(33, dtype=torch.float32).numpy())
    _same_state()


# ---- generators, fork_rng -----------------------------------------------------------------------
def test_generator_objects_draw_torchs_numbers_and_leave_the_global_one():
    _seed(0)
    g, tg = minidl.Generator().manual_seed(77), torch.Generator().manual_seed(77)
    for _ in range(2):
        np.testing.assert_array_equal(minidl.rand(20, generator=g).numpy(),
                                      torch.rand(20, generator=tg).numpy())
        np.testing.assert_array_equal(minidl.randn(7, generator=g, dtype="float64").numpy(),
                                      torch.randn(7, generator=tg, dtype=torch.float64).numpy())
        np.testing.assert_array_equal(minidl.randint(0, 9, (6,), generator=g).numpy(),
                                      torch.randint(0, 9, (6,), generator=tg).numpy())
        np.testing.assert_array_equal(minidl.randperm(12, generator=g).numpy(),
                                      torch.randperm(12, generator=tg).numpy())
        np.testing.assert_array_equal(
            minidl.empty(5).uniform_(-1, 2, generator=g).numpy(),
            torch.empty(5).uniform_(-1, 2, generator=tg).numpy())
    np.testing.assert_array_equal(g.get_state().numpy(), tg.get_state().numpy())
    _same_state()  # the global generators were not touched
    np.testing.assert_array_equal(minidl.rand(3).numpy(), torch.rand(3).numpy())


def test_fork_rng_puts_the_stream_and_the_cached_sample_back():
    _seed(5)
    minidl.randn(1)
    torch.randn(1)
    with minidl.random.fork_rng():
        minidl.randn(100)
    with torch.random.fork_rng():
        torch.randn(100)
    np.testing.assert_array_equal(minidl.randn(3).numpy(), torch.randn(3).numpy())
    _same_state()


def test_dataloader_with_a_generator_gives_torchs_order():
    from torch.utils.data import DataLoader as TorchLoader, TensorDataset as TorchSet

    from minidl.data import DataLoader, TensorDataset

    g, tg = minidl.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    mine = DataLoader(TensorDataset(minidl.arange(23)), batch_size=4, shuffle=True, generator=g)
    theirs = TorchLoader(TorchSet(torch.arange(23)), batch_size=4, shuffle=True, generator=tg)
    for _ in range(2):
        assert [b[0].tolist() for b in mine] == [b[0].tolist() for b in theirs]


def test_random_sampler_with_a_generator_is_torchs():
    from torch.utils.data import RandomSampler as TorchSampler

    from minidl.data import RandomSampler

    for replacement, count in [(False, None), (False, 25), (True, 70)]:
        g, tg = minidl.Generator().manual_seed(2), torch.Generator().manual_seed(2)
        mine = RandomSampler(range(10), replacement, count, generator=g)
        theirs = TorchSampler(range(10), replacement, count, generator=tg)
        assert list(mine) == list(theirs)


# ---- nn.init and the layers' default initialisation ----------------------------------------------
INITS = [
    ("uniform_", (), {"a": -0.2, "b": 0.9}),
    ("normal_", (), {"mean": 0.1, "std": 0.3}),
    ("xavier_uniform_", (), {"gain": 1.5}),
    ("xavier_normal_", (), {}),
    ("kaiming_uniform_", (), {"a": 5 ** 0.5}),
    ("kaiming_normal_", (), {"mode": "fan_out", "nonlinearity": "relu"}),
    ("trunc_normal_", (), {"std": 0.02}),
    ("orthogonal_", (), {}),
    ("sparse_", (0.3,), {}),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name, args, kwargs", INITS, ids=[c[0] for c in INITS])
def test_nn_init_is_torchs(name, args, kwargs, dtype):
    for shape in [(3, 5), (20, 7), (6, 40)]:
        _seed(sum(shape))
        got = getattr(mnn.init, name)(minidl.empty(*shape, dtype=dtype), *args, **kwargs).numpy()
        want = getattr(torch.nn.init, name)(torch.empty(*shape, dtype=_t(torch, dtype)), *args,
                                            **kwargs).numpy()
        if name == "orthogonal_":  # the draw is torch's; the QR is another LAPACK call's
            np.testing.assert_allclose(got, want, atol=1e-5 if dtype == "float32" else 1e-12)
        elif "normal" in name or name == "sparse_":
            _close(got, want, dtype)
        else:
            np.testing.assert_array_equal(got, want)
        _same_state()


LAYERS = [
    ("Linear", lambda nn: nn.Linear(3, 2)),
    ("Linear-big", lambda nn: nn.Linear(33, 17)),
    ("Conv1d", lambda nn: nn.Conv1d(3, 4, 5)),
    ("Conv2d", lambda nn: nn.Conv2d(3, 8, 3)),
    ("Conv3d", lambda nn: nn.Conv3d(2, 3, 2)),
    ("ConvTranspose2d", lambda nn: nn.ConvTranspose2d(4, 3, 3)),
    ("ConvTranspose1d", lambda nn: nn.ConvTranspose1d(2, 5, 3, groups=1)),
    ("Embedding", lambda nn: nn.Embedding(10, 5)),
    ("RNN", lambda nn: nn.RNN(4, 6)),
    ("LSTM", lambda nn: nn.LSTM(4, 6, num_layers=2)),
    ("GRU", lambda nn: nn.GRU(4, 6, bidirectional=True)),
    ("MultiheadAttention", lambda nn: nn.MultiheadAttention(8, 2)),
    ("BatchNorm2d", lambda nn: nn.BatchNorm2d(4)),
    ("LayerNorm", lambda nn: nn.LayerNorm(4)),
]


def _compare_state_dicts(mine, theirs):
    assert list(mine) == list(theirs)
    for key, value in theirs.items():
        want = value.numpy()
        got = np.asarray(mine[key].numpy())
        if key == "weight" and want.dtype == np.float32 and want.size >= 16 \
                and not np.array_equal(got, want):  # Embedding's float32 normal fill
            _close(got, want, "float32")
        else:
            np.testing.assert_array_equal(got, want, err_msg=key)


@pytest.mark.parametrize("name, build", LAYERS, ids=[c[0] for c in LAYERS])
def test_default_initialisation_is_torchs(name, build):
    for seed in (0, 3):
        _seed(seed)
        _compare_state_dicts(build(mnn).state_dict(), build(torch.nn).state_dict())
        _same_state()


def _model(nn):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 6, 5)
            self.bn = nn.BatchNorm2d(6)
            self.conv2 = nn.Conv2d(6, 16, 3)
            self.lstm = nn.LSTM(16, 12, batch_first=True)
            self.fc = nn.Linear(12, 10)

    return Net()


def test_a_cnn_and_lstm_models_whole_state_dict_is_torchs():
    _seed(0)
    _compare_state_dicts(_model(mnn).state_dict(), _model(torch.nn).state_dict())
    _same_state()
    np.testing.assert_array_equal(minidl.rand(4).numpy(), torch.rand(4).numpy())


def test_sparse_draws_its_row_permutations_from_the_global_generator_as_torchs():
    _seed(6)
    g, tg = minidl.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    got = mnn.init.sparse_(minidl.empty(20, 4), 0.5, generator=g).numpy()
    want = torch.nn.init.sparse_(torch.empty(20, 4), 0.5, generator=tg).numpy()
    np.testing.assert_array_equal(got == 0, want == 0)
    _close(got, want, "float32")
    _same_state()  # the global stream moved by the randperms, as torch's did
    assert not np.array_equal(minidl.get_rng_state().numpy(),
                              minidl.manual_seed(6).get_state().numpy())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mean, std, a, b", [(0.0, 0.02, -2.0, 2.0), (0.0, 1.0, -0.5, 0.5),
                                             (0.0, 1.0, 1.0, 3.0), (0.3, 0.2, -1.0, 0.1)])
def test_trunc_normal_follows_torchs_rejection_sampling(mean, std, a, b, dtype):
    for shape in [(5, 3), (40, 9)]:
        _seed(shape[0])
        got = mnn.init.trunc_normal_(minidl.empty(*shape, dtype=dtype), mean, std, a, b).numpy()
        want = torch.nn.init.trunc_normal_(torch.empty(*shape, dtype=_t(torch, dtype)), mean, std,
                                           a, b).numpy()
        assert got.min() >= a and got.max() <= b
        _close(got, want, dtype)
        _same_state()


def test_rrelu_training_slopes_are_torchs():
    _seed(3)
    x = np.array([[1.0, -1.0, -2.0, 0.0], [3.0, -0.5, 2.0, -1.0]], dtype=np.float32)
    got = minidl.nn.functional.rrelu(minidl.from_numpy(x), training=True).numpy()
    want = torch.nn.functional.rrelu(torch.from_numpy(x), training=True).numpy()
    np.testing.assert_array_equal(got, want)
    _same_state()


# ---- bernoulli, dropout, exponential, multinomial -----------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bernoulli_and_dropout_masks_are_torchs(dtype):
    tdt = _t(torch, dtype)
    for n in (7, 16, 1000):
        _seed(n)
        for p in (0.3, 0.9):
            np.testing.assert_array_equal(minidl.empty(n, dtype=dtype).bernoulli_(p).numpy(),
                                          torch.empty(n, dtype=tdt).bernoulli_(p).numpy())
        probs = np.linspace(0, 1, n).astype(dtype)
        np.testing.assert_array_equal(minidl.bernoulli(minidl.from_numpy(probs)).numpy(),
                                      torch.bernoulli(torch.from_numpy(probs)).numpy())
        np.testing.assert_array_equal(
            minidl.empty(n, dtype="float32").bernoulli_(minidl.from_numpy(probs)).numpy(),
            torch.empty(n).bernoulli_(torch.from_numpy(probs)).numpy())
        x = np.linspace(-1, 1, n).astype(dtype)
        got = minidl.nn.functional.dropout(minidl.from_numpy(x), 0.3).numpy()
        want = torch.nn.functional.dropout(torch.from_numpy(x), 0.3).numpy()
        np.testing.assert_array_equal(got != 0, want != 0)
        np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == "float32" else 1e-15)
        mine, theirs = minidl.nn.Dropout(0.5), torch.nn.Dropout(0.5)
        np.testing.assert_array_equal(mine(minidl.from_numpy(x)).numpy() != 0,
                                      theirs(torch.from_numpy(x)).numpy() != 0)
        x4 = np.ones((2, 5, 3, 3), dtype=dtype)
        np.testing.assert_array_equal(
            minidl.nn.functional.dropout2d(minidl.from_numpy(x4), 0.4).numpy() != 0,
            torch.nn.functional.dropout2d(torch.from_numpy(x4), 0.4).numpy() != 0)
        _same_state()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_exponential_is_torchs(dtype):
    _seed(2)
    for n, lambd in [(5, 1.0), (100, 2.5), (17, 0.3)]:
        np.testing.assert_array_equal(minidl.empty(n, dtype=dtype).exponential_(lambd).numpy(),
                                      torch.empty(n, dtype=_t(torch, dtype)).exponential_(lambd)
                                      .numpy())
    _same_state()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_multinomial_is_torchs(dtype):
    w = np.array([[0.1, 0.5, 0.2, 0.0, 1.0, 0.3], [1, 1, 1, 1, 1, 1]], dtype=dtype)
    _seed(3)
    for rows in (w[0], w):
        for n, replacement in [(1, True), (10, True), (1, False), (3, False), (5, False)]:
            got = minidl.multinomial(minidl.from_numpy(rows), n, replacement).numpy()
            want = torch.multinomial(torch.from_numpy(rows), n, replacement).numpy()
            np.testing.assert_array_equal(got, want)
    _same_state()


def test_gumbel_softmax_noise_is_torchs():
    _seed(8)
    x = np.linspace(-1, 1, 24).reshape(4, 6).astype(np.float32)
    got = minidl.nn.functional.gumbel_softmax(minidl.from_numpy(x), tau=0.5).numpy()
    want = torch.nn.functional.gumbel_softmax(torch.from_numpy(x), tau=0.5).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    _same_state()


def test_spectral_norm_starting_vectors_are_torchs():
    for make in (lambda m: m.nn.utils.spectral_norm(m.nn.Linear(5, 20)),
                 lambda m: m.nn.utils.parametrizations.spectral_norm(m.nn.Linear(5, 20))):
        _seed(4)
        mine, theirs = make(minidl), make(torch)
        for key, value in theirs.state_dict().items():
            if key.endswith(("_u", "_v", "weight_u", "weight_v")):
                np.testing.assert_allclose(np.asarray(mine.state_dict()[key].numpy()),
                                           value.numpy(), rtol=1e-5, atol=1e-6, err_msg=key)
        _same_state()


def test_samplers_and_random_split_without_a_generator_are_torchs():
    from torch.utils.data import (RandomSampler as TR, SubsetRandomSampler as TS,
                                  WeightedRandomSampler as TW, random_split as t_split)

    from minidl.data import RandomSampler, SubsetRandomSampler, WeightedRandomSampler, random_split

    _seed(12)
    assert list(RandomSampler(range(9))) == list(TR(range(9)))
    assert list(SubsetRandomSampler([3, 5, 7, 11])) == list(TS([3, 5, 7, 11]))
    weights = [0.1, 0.4, 0.2, 0.3, 0.0]
    assert list(WeightedRandomSampler(weights, 12)) == list(TW(weights, 12))
    assert list(WeightedRandomSampler(weights, 3, replacement=False)) == \
        list(TW(weights, 3, replacement=False))
    mine = random_split(range(10), [3, 7])
    theirs = t_split(range(10), [3, 7])
    assert [list(s) for s in mine] == [list(s) for s in theirs]
    _same_state()
    g, tg = minidl.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    assert [list(s) for s in random_split(range(10), [0.5, 0.5], generator=g)] == \
        [list(s) for s in t_split(range(10), [0.5, 0.5], generator=tg)]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_draws_are_torchs(dtype):
    tdt = _t(torch, dtype)
    for n in (5, 16, 17, 40, 3000):
        _seed(n)
        for got, want in [(minidl.rand(n, dtype=dtype), torch.rand(n, dtype=tdt)),
                          (minidl.randn(n, dtype=dtype), torch.randn(n, dtype=tdt)),
                          (minidl.empty(n, dtype=dtype).uniform_(-0.3, 0.7),
                           torch.empty(n, dtype=tdt).uniform_(-0.3, 0.7)),
                          (mnn.init.normal_(minidl.empty(n, dtype=dtype), 0.2, 0.5),
                           torch.nn.init.normal_(torch.empty(n, dtype=tdt), 0.2, 0.5))]:
            np.testing.assert_array_equal(got.float().numpy(), want.float().numpy())
        _same_state()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_transposed_view_is_filled_in_memory_order_as_torchs(dtype):
    tdt = _t(torch, dtype)
    for shape in [(3, 4), (6, 7), (2, 3, 5)]:
        _seed(len(shape))
        mine = minidl.zeros(*shape, dtype=dtype)
        theirs = torch.zeros(*shape, dtype=tdt)
        mine.transpose(0, -1).uniform_(-1, 2)
        theirs.transpose(0, -1).uniform_(-1, 2)
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
        mine.transpose(0, -1).normal_(0.5, 2.0)  # not contiguous: torch's one-at-a-time path
        theirs.transpose(0, -1).normal_(0.5, 2.0)
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
        mnn.init.normal_(mine.transpose(0, -1))
        torch.nn.init.normal_(theirs.transpose(0, -1))
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
        _same_state()


def _tutorial(m):
    """A tutorial's loop, written once for either framework: data from randn/randint, a model
    with dropout, a shuffled loader with a generator, SGD; the printed losses."""
    m.manual_seed(0)
    x, y = m.randn(40, 4), m.randint(0, 3, (40,))
    model = m.nn.Sequential(m.nn.Linear(4, 16), m.nn.ReLU(), m.nn.Dropout(0.3), m.nn.Linear(16, 3))
    opt = m.optim.SGD(model.parameters(), lr=0.1)
    if m is torch:
        from torch.utils.data import DataLoader, TensorDataset
    else:
        from minidl.data import DataLoader, TensorDataset
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True,
                        generator=m.Generator().manual_seed(1))
    losses = []
    for _ in range(2):
        for xb, yb in loader:
            loss = m.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.item()))
    return losses


def test_a_tutorials_printed_losses_are_torchs():
    np.testing.assert_allclose(_tutorial(minidl), _tutorial(torch), rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_poisson_is_torchs(dtype):
    rates = np.array([0.5, 3.0, 0.0, 12.0, 50.0, 1e3, 7.5, 9.99] * 40, dtype=dtype)
    for seed in (2, 9):
        _seed(seed)
        for part in (rates[:3], rates, rates[:17]):
            np.testing.assert_array_equal(minidl.poisson(minidl.from_numpy(part)).numpy(),
                                          torch.poisson(torch.from_numpy(part)).numpy())
        np.testing.assert_array_equal(minidl.rand(5).numpy(), torch.rand(5).numpy())
        _same_state()
    g, tg = minidl.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    np.testing.assert_array_equal(minidl.poisson(minidl.from_numpy(rates), generator=g).numpy(),
                                  torch.poisson(torch.from_numpy(rates), generator=tg).numpy())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cauchy_geometric_and_log_normal_are_torchs(dtype):
    tdt = _t(torch, dtype)
    for n in (5, 40):
        _seed(n)
        np.testing.assert_array_equal(minidl.empty(n, dtype=dtype).cauchy_(0.3, 2.0).numpy(),
                                      torch.empty(n, dtype=tdt).cauchy_(0.3, 2.0).numpy())
        np.testing.assert_array_equal(minidl.empty(n, dtype=dtype).geometric_(0.3).numpy(),
                                      torch.empty(n, dtype=tdt).geometric_(0.3).numpy())
        np.testing.assert_array_equal(minidl.empty(n, dtype=dtype).log_normal_(1.0, 0.3).numpy(),
                                      torch.empty(n, dtype=tdt).log_normal_(1.0, 0.3).numpy())
        np.testing.assert_array_equal(minidl.randn(3).numpy(), torch.randn(3).numpy())
        _same_state()


def test_distribution_samples_that_are_torchs():
    from minidl import distributions as md

    cases = [("Normal", (0.5, 2.0)), ("Uniform", (0.0, 2.0)), ("Bernoulli", (0.3,)),
             ("Exponential", (2.0,)), ("LogNormal", (0.0, 1.0)), ("Poisson", (3.0,))]
    for name, args in cases:
        mine = getattr(md, name)(*[minidl.tensor(a) for a in args])
        theirs = getattr(torch.distributions, name)(*[torch.tensor(a) for a in args])
        _seed(0)
        np.testing.assert_allclose(mine.sample((20,)).numpy(), theirs.sample((20,)).numpy(),
                                   rtol=1e-6, err_msg=name)
        _same_state()
    probs = [0.2, 0.3, 0.5]
    _seed(1)
    for shape in [(), (1,), (7,)]:
        np.testing.assert_array_equal(
            md.Categorical(probs=minidl.tensor(probs)).sample(shape).numpy(),
            torch.distributions.Categorical(probs=torch.tensor(probs)).sample(shape).numpy())
    _same_state()


# ---- torch's DEFAULT x86-64 build (no FMA) --------------------------------------------------
_DEFAULT_BUILD = r"""
import numpy as np, torch, minidl
assert torch.backends.cpu.get_cpu_capability() == "DEFAULT"
assert minidl.backends.cpu.get_cpu_capability() == "DEFAULT"
calls = [("uniform", lambda t: t.uniform_(0.1, 7.3)), ("uniform", lambda t: t.uniform_(-2.5, 1 / 3)),
         ("normal", lambda t: t.normal_(0.5, 3.0))]
for seed in (0, 12345):
    for dtype in ("float64", "float32"):
        for n in (3, 15, 257):
            for name, call in calls:
                minidl.manual_seed(seed)
                torch.manual_seed(seed)
                mine = call(minidl.empty(n, dtype=dtype)).numpy()
                theirs = call(torch.empty(n, dtype=getattr(torch, dtype))).numpy()
                if name == "normal" and n >= 16 and dtype == "float32":  # libm's float log/cos/sin
                    top = np.abs(theirs).max()
                    assert np.abs(mine - theirs).max() <= 2 * np.spacing(top), (seed, n)
                else:
                    np.testing.assert_array_equal(mine, theirs, err_msg=f"{name} {seed} {dtype} {n}")
print("ok")
"""


def test_uniform_and_short_normal_are_torchs_in_its_default_build_too():
    """torch's DEFAULT build (ATEN_CPU_CAPABILITY=default; a CPU without AVX2) is compiled
    without FMA: uniform_'s u * (b - a) + a, and normal_'s z * std + mean on fewer than 16
    values, round twice there, and its float32 Box-Muller blocks take the angle in double;
    minidl follows it (torch reads the capability at start, so a child process runs it)."""
    import os
    import subprocess
    import sys

    if "sse2" not in minidl.cpu.get_capabilities():
        pytest.skip("torch's DEFAULT build differs from its vector ones only on x86-64")
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    done = subprocess.run([sys.executable, "-c", _DEFAULT_BUILD], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_fma_follows_the_capability_torch_runs(monkeypatch):
    from minidl.backend import torch_random as tr

    u, b, a = np.array([0.6369616873214543]), 7.2, 0.1
    fused, plain = tr.fma(u, b, a), u * b + a
    assert fused[0] != plain[0]  # one rounding or two: a value where they differ
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    if "sse2" in minidl.cpu.get_capabilities():
        assert not tr._fused()
        np.testing.assert_array_equal(tr._mul_add(u, b, a), plain)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert tr._fused() is bool(minidl.cpu.get_capabilities().get("avx2", True))
    np.testing.assert_array_equal(tr._mul_add(u, b, a), fused if tr._fused() else plain)


# ---- random fills at the edges of their ranges, and their refusals (an audit) --------------------
@pytest.mark.parametrize("draw", [
    lambda L: L.zeros(3).bernoulli_(1.5),
    lambda L: L.zeros(3).bernoulli_(L.tensor([0.0, 2.0, 1.0])),
    lambda L: L.zeros(3).normal_(0.0, -1.0),
    lambda L: L.ones(3, dtype=L.int64).multinomial(1),
])
def test_random_fills_refuse_what_torch_refuses(draw):
    with pytest.raises(RuntimeError):
        draw(torch)
    with pytest.raises((ValueError, TypeError)):
        draw(minidl)


def test_random_fills_at_the_edges_of_their_ranges():
    assert minidl.zeros(4).bernoulli_(1.0).numpy().tolist() == [1.0] * 4
    assert minidl.ones(4).bernoulli_(minidl.tensor([0.0, 1.0, 0.0, 1.0])).numpy().tolist() == [0, 1, 0, 1]
    assert minidl.ones(4).normal_(2.0, 0.0).numpy().tolist() == [2.0] * 4
