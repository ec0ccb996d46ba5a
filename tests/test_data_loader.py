"""DataLoader: per-epoch shuffle order with a public resume (set_epoch), argument checks."""
import numpy as np
import pytest

from minidl.data import DataLoader, TensorDataset


def _orders(loader, epochs):
    return [np.concatenate([y.numpy() for _, y in loader]) for _ in range(epochs)]


def _dataset(n=50):
    return TensorDataset(np.arange(n, dtype=np.float32)[:, None], np.arange(n))


def test_every_pass_is_a_new_shuffle_and_a_seed_repeats_it():
    a = _orders(DataLoader(_dataset(), batch_size=8, shuffle=True, seed=3), 3)
    b = _orders(DataLoader(_dataset(), batch_size=8, shuffle=True, seed=3), 3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
        assert sorted(x) == list(range(50))
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[1], a[2])
    c = _orders(DataLoader(_dataset(), batch_size=8, shuffle=True, seed=4), 1)
    assert not np.array_equal(a[0], c[0])


def test_set_epoch_resumes_the_order_of_an_unbroken_run():
    unbroken = _orders(DataLoader(_dataset(), batch_size=8, shuffle=True, seed=11), 5)
    resumed = DataLoader(_dataset(), batch_size=8, shuffle=True, seed=11)
    resumed.set_epoch(3)  # a run that stopped after three epochs
    assert resumed.epoch == 3
    for x, y in zip(_orders(resumed, 2), unbroken[3:]):
        np.testing.assert_array_equal(x, y)
    # the order is a public function of (seed, epoch)
    np.testing.assert_array_equal(unbroken[2], np.random.default_rng([11, 2]).permutation(50))


def test_the_epoch_advances_when_a_pass_starts():
    loader = DataLoader(_dataset(), batch_size=8, shuffle=True, seed=0)
    it = iter(loader)
    assert loader.epoch == 1
    next(it)
    again = DataLoader(_dataset(), batch_size=8, shuffle=True, seed=0)
    again.set_epoch(1)
    np.testing.assert_array_equal(_orders(loader, 1)[0], _orders(again, 1)[0])


def test_no_shuffle_keeps_the_dataset_order():
    (order,) = _orders(DataLoader(_dataset(), batch_size=7), 1)
    np.testing.assert_array_equal(order, np.arange(50))


@pytest.mark.parametrize("bad", [2.7, 2.0, "4", True, 0, -3])
def test_batch_size_must_be_a_positive_integer(bad):  # or None: no batching, as in torch
    with pytest.raises(ValueError, match="batch_size should be a positive integer"):
        DataLoader(_dataset(), batch_size=bad)


@pytest.mark.parametrize("bad", [-1, 1.5, "0"])
def test_bad_seed_and_epoch_are_refused(bad):
    with pytest.raises(ValueError, match="seed"):
        DataLoader(_dataset(), batch_size=2, shuffle=True, seed=bad)
    loader = DataLoader(_dataset(), batch_size=2)
    with pytest.raises(ValueError, match="epoch"):
        loader.set_epoch(bad)


def test_numpy_integers_are_fine():
    loader = DataLoader(_dataset(), batch_size=np.int64(5), shuffle=True, seed=np.int32(1))
    assert len(loader) == 10
