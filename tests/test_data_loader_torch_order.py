"""DataLoader with neither seed= nor generator=: PyTorch's order and PyTorch's draws from the
global generator (the workers' base seed per pass, then RandomSampler's seed), so a training
loop after the same manual_seed sees torch's batches and torch's dropout masks."""
import numpy as np
import pytest

import minidl
from minidl import nn
from minidl.data import DataLoader, IterableDataset, RandomSampler, TensorDataset


def _int64_draws(seed, k):
    """minidl's global state after ``k`` int64 draws following manual_seed(seed)."""
    minidl.manual_seed(seed)
    for _ in range(k):
        minidl.empty((), dtype=minidl.int64).random_()
    return minidl.get_rng_state().numpy().copy()


def _epochs(framework, DL, DS, epochs=2, after=3, **kw):
    framework.manual_seed(3)
    loader = DL(DS(framework.arange(11)), **kw)
    out = []
    for _ in range(epochs):
        out.append([np.asarray(b[0] if isinstance(b, (list, tuple)) else b).tolist()
                    for b in loader])
    return out, framework.rand(after).tolist()


def test_draws_two_int64_per_shuffled_pass():
    # one for the workers' base seed, one for the pass's own generator
    minidl.manual_seed(5)
    loader = DataLoader(TensorDataset(minidl.arange(10)), batch_size=3, shuffle=True)
    assert np.array_equal(minidl.get_rng_state().numpy(), _int64_draws(5, 0))  # none at build
    it = iter(loader)
    assert np.array_equal(minidl.get_rng_state().numpy(), _int64_draws(5, 1))
    first = next(it)[0].numpy()
    assert np.array_equal(minidl.get_rng_state().numpy(), _int64_draws(5, 2))
    rest = [b[0].numpy() for b in it]
    order = np.concatenate([first] + rest)
    minidl.manual_seed(5)
    minidl.empty((), dtype=minidl.int64).random_()
    seed = int(minidl.empty((), dtype=minidl.int64).random_())
    assert order.tolist() == minidl.randperm(10, generator=minidl.Generator().manual_seed(seed)) \
        .tolist()
    list(loader)
    assert np.array_equal(minidl.get_rng_state().numpy(), _int64_draws(5, 4))


def test_unshuffled_and_iterable_passes_draw_the_base_seed():
    class Stream(IterableDataset):
        def __iter__(self):
            return iter(range(5))

    for loader in (DataLoader(TensorDataset(minidl.arange(7)), batch_size=2),
                   DataLoader(Stream(), batch_size=2)):
        minidl.manual_seed(1)
        list(loader)
        list(loader)
        assert np.array_equal(minidl.get_rng_state().numpy(), _int64_draws(1, 2))


def test_seed_keeps_the_resumable_order_and_draws_nothing():
    minidl.manual_seed(2)
    loader = DataLoader(TensorDataset(minidl.arange(10)), batch_size=4, shuffle=True, seed=9)
    got = [np.concatenate([b[0].numpy() for b in loader]) for _ in range(2)]
    assert np.array_equal(minidl.get_rng_state().numpy(), _int64_draws(2, 0))
    for e in range(2):
        assert got[e].tolist() == np.random.default_rng([9, e]).permutation(10).tolist()
    loader.set_epoch(1)
    assert np.concatenate([b[0].numpy() for b in loader]).tolist() == got[1].tolist()


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last,batch_size", [(False, 3), (True, 3), (False, None)])
def test_matches_torch_in_process(shuffle, drop_last, batch_size):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader as TDL
    from torch.utils.data import TensorDataset as TDS

    kw = dict(batch_size=batch_size, shuffle=shuffle, drop_last=drop_last)
    t_batches, t_after = _epochs(torch, TDL, TDS, **kw)
    m_batches, m_after = _epochs(minidl, DataLoader, TensorDataset, **kw)
    assert m_batches == t_batches
    np.testing.assert_allclose(m_after, t_after, rtol=1e-6)


def test_matches_torch_with_explicit_random_sampler_and_generator():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader as TDL
    from torch.utils.data import RandomSampler as TRS
    from torch.utils.data import TensorDataset as TDS

    torch.manual_seed(4)
    tds = TDS(torch.arange(9))
    t = [[b[0].tolist() for b in TDL(tds, batch_size=4, sampler=TRS(tds))] for _ in range(2)]
    t_after = torch.rand(2).tolist()
    minidl.manual_seed(4)
    mds = TensorDataset(minidl.arange(9))
    m = [[b[0].tolist() for b in DataLoader(mds, batch_size=4, sampler=RandomSampler(mds))]
         for _ in range(2)]
    assert m == t
    np.testing.assert_allclose(minidl.rand(2).tolist(), t_after, rtol=1e-6)


@pytest.mark.parametrize("persistent", [False, True])
def test_matches_torch_with_workers(persistent):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader as TDL
    from torch.utils.data import TensorDataset as TDS

    # persistent workers keep their iterator: torch draws the base seed only once
    kw = dict(batch_size=3, shuffle=True, drop_last=True, num_workers=2,
              persistent_workers=persistent)
    t_batches, t_after = _epochs(torch, TDL, TDS, **kw)
    m_batches, m_after = _epochs(minidl, DataLoader, TensorDataset, **kw)
    assert m_batches == t_batches
    np.testing.assert_allclose(m_after, t_after, rtol=1e-6)


def test_generator_with_persistent_workers_matches_torch():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader as TDL
    from torch.utils.data import TensorDataset as TDS

    def run(framework, DL, DS):
        g = framework.Generator().manual_seed(8)
        loader = DL(DS(framework.arange(7)), batch_size=2, shuffle=True, num_workers=2,
                    persistent_workers=True, generator=g)
        batches = [[b[0].tolist() for b in loader] for _ in range(2)]
        return batches, framework.rand(2, generator=g).tolist()

    t_batches, t_after = run(torch, TDL, TDS)
    m_batches, m_after = run(minidl, DataLoader, TensorDataset)
    assert m_batches == t_batches
    np.testing.assert_allclose(m_after, t_after, rtol=1e-6)


def _quickstart(framework, fnn, DL, DS, num_workers=0):
    """PyTorch's quickstart loop in miniature: the losses and each batch's targets."""
    framework.manual_seed(0)
    x = framework.randn(40, 8)
    y = framework.randint(0, 3, (40,))
    model = fnn.Sequential(fnn.Linear(8, 16), fnn.ReLU(), fnn.Dropout(0.3), fnn.Linear(16, 3))
    opt = framework.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = fnn.CrossEntropyLoss()
    loader = DL(DS(x, y), batch_size=8, shuffle=True, num_workers=num_workers)
    losses, targets = [], []
    for _ in range(2):
        model.train()
        for xb, yb in loader:
            loss = loss_fn(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            targets.append(yb.tolist())
    return losses, targets


def test_quickstart_losses_match_torch():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader as TDL
    from torch.utils.data import TensorDataset as TDS

    t_losses, t_targets = _quickstart(torch, torch.nn, TDL, TDS)
    m_losses, m_targets = _quickstart(minidl, nn, DataLoader, TensorDataset)
    assert m_targets == t_targets
    np.testing.assert_allclose(m_losses, t_losses, rtol=1e-5)


def test_quickstart_batches_match_torch_with_workers():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader as TDL
    from torch.utils.data import TensorDataset as TDS

    t_losses, t_targets = _quickstart(torch, torch.nn, TDL, TDS, num_workers=2)
    m_losses, m_targets = _quickstart(minidl, nn, DataLoader, TensorDataset, num_workers=2)
    assert m_targets == t_targets
    np.testing.assert_allclose(m_losses, t_losses, rtol=1e-5)


class _RandomItems:
    """Each item a draw of the worker's global generator (as a random transform makes) and
    of Python's random, with the worker's seed."""

    def __init__(self, framework, n):
        self.framework, self.n = framework, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        import random

        from minidl.data import get_worker_info

        info = get_worker_info() if self.framework == "minidl" else \
            __import__("torch").utils.data.get_worker_info()
        mod = minidl if self.framework == "minidl" else __import__("torch")
        return np.array([float(i), mod.rand(1).item(), random.random(), float(info.seed)])


def test_workers_draw_torchs_numbers_inside_items():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader as TDL

    def run(framework, DL, mod):
        mod.manual_seed(6)
        loader = DL(_RandomItems(framework, 9), batch_size=2, shuffle=True, num_workers=2)
        return np.concatenate([np.asarray(b, dtype=np.float64) for _ in range(2) for b in loader])

    want = run("torch", TDL, torch)
    got = run("minidl", DataLoader, minidl)
    assert got.shape == (18, 4)
    np.testing.assert_array_equal(got[:, 0], want[:, 0])  # the order
    np.testing.assert_array_equal(got[:, 3], want[:, 3])  # each worker's seed
    np.testing.assert_allclose(got[:, 1:3], want[:, 1:3], rtol=1e-7)
