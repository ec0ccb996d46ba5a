"""Samplers, BatchSampler and DataLoader(batch_sampler=...), ConcatDataset, IterableDataset and
ChainDataset, default_collate / default_convert and get_worker_info: torch.utils.data's
behaviour where it is deterministic (orders, batch structures, indexing, errors), and the
properties that define the random samplers; random_split with sizes or fractions."""
import collections
import importlib.util

import numpy as np
import pytest

import minidl
from minidl.data import (BatchSampler, ChainDataset, ConcatDataset, DataLoader, Dataset,
                         IterableDataset, RandomSampler, Sampler, SequentialSampler,
                         SubsetRandomSampler, TensorDataset, WeightedRandomSampler,
                         default_collate, default_convert, get_worker_info)
from minidl.utils import data as mdata
from minidl.data import StackDataset

# for tests that import from torch themselves (the others take the ``torch`` fixture below)
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="PyTorch is not installed")


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="PyTorch parity needs torch, which is not installed")


def _as_lists(batch):
    """A batch (of minidl or torch Tensors, in any structure) as plain Python values."""
    if isinstance(batch, dict):
        return {k: _as_lists(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return [_as_lists(v) for v in batch]
    if hasattr(batch, "numpy"):
        return batch.detach().numpy().tolist() if hasattr(batch, "detach") else \
            batch.numpy().tolist()
    return batch


# ---- samplers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 7])
def test_sequential_sampler_matches_torch(torch, n):
    data = list(range(100, 100 + n))
    ours, theirs = SequentialSampler(data), torch.utils.data.SequentialSampler(data)
    assert list(ours) == list(theirs) and len(ours) == len(theirs) == n
    assert isinstance(ours, Sampler)


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("batch_size", [1, 3, 4, 10, 11])
def test_batch_sampler_matches_torch(torch, batch_size, drop_last):
    data = list(range(10))
    ours = BatchSampler(SequentialSampler(data), batch_size, drop_last)
    theirs = torch.utils.data.BatchSampler(torch.utils.data.SequentialSampler(data), batch_size,
                                           drop_last)
    assert list(ours) == list(theirs) and len(ours) == len(theirs)
    # any iterable of indices will do, as in torch
    order = [5, 3, 9, 1, 0, 2, 8]
    assert list(BatchSampler(order, batch_size, drop_last)) == \
        list(torch.utils.data.BatchSampler(order, batch_size, drop_last))


@pytest.mark.parametrize("args", [(0, False), (-2, False), (2.5, False), (True, False),
                                  (2, None), (2, 1)])
def test_batch_sampler_refuses_what_torch_refuses(torch, args):
    with pytest.raises(ValueError) as theirs:
        torch.utils.data.BatchSampler(range(4), *args)
    with pytest.raises(ValueError, match="batch_size|drop_last") as ours:
        BatchSampler(range(4), *args)
    assert str(theirs.value).split(" ")[0] in str(ours.value)  # names the same argument


def test_random_sampler_is_a_permutation_and_a_seed_repeats_it():
    data = list(range(20))
    a = list(RandomSampler(data, generator=3))
    assert sorted(a) == data and a != data
    assert list(RandomSampler(data, generator=3)) == a
    sampler = RandomSampler(data, generator=np.random.default_rng(3))
    first, second = list(sampler), list(sampler)
    assert first == a and second != first and sorted(second) == data  # a new order each pass
    minidl.manual_seed(7)
    x = list(RandomSampler(data))
    minidl.manual_seed(7)
    assert list(RandomSampler(data)) == x


def test_random_sampler_num_samples_and_replacement():
    data = list(range(5))
    more = list(RandomSampler(data, num_samples=13, generator=0))
    assert len(more) == 13 and len(RandomSampler(data, num_samples=13)) == 13
    assert sorted(more[:5]) == sorted(more[5:10]) == data  # whole permutations, then a part
    assert len(set(more[10:])) == 3
    drawn = list(RandomSampler(data, replacement=True, num_samples=400, generator=1))
    assert len(drawn) == 400 and set(drawn) == set(data)
    assert len(RandomSampler(data, replacement=True)) == 5


@pytest.mark.parametrize("kw,error", [(dict(replacement=1), TypeError),
                                      (dict(num_samples=0), ValueError),
                                      (dict(num_samples=2.0), ValueError),
                                      (dict(replacement=True, num_samples=-1), ValueError)])
def test_random_sampler_refuses_what_torch_refuses(torch, kw, error):
    with pytest.raises(error):
        torch.utils.data.RandomSampler(range(4), **kw)
    with pytest.raises(error, match="replacement|num_samples"):
        RandomSampler(range(4), **kw)
    with pytest.raises(TypeError, match="generator"):
        RandomSampler(range(4), generator="seed")


def test_subset_random_sampler_permutes_the_given_indices():
    indices = [10, 3, 7, 42]
    out = list(SubsetRandomSampler(indices, generator=0))
    assert sorted(out) == sorted(indices) and len(SubsetRandomSampler(indices)) == 4


def test_weighted_random_sampler_follows_the_weights():
    weights = [0.1, 0.0, 0.6, 0.3]
    drawn = np.array(list(WeightedRandomSampler(weights, 20000, generator=0)))
    freq = np.bincount(drawn, minlength=4) / len(drawn)
    np.testing.assert_allclose(freq, weights, atol=0.015)
    assert freq[1] == 0
    once = list(WeightedRandomSampler(minidl.tensor(weights), 3, replacement=False, generator=1))
    assert sorted(once) == [0, 2, 3]
    assert len(WeightedRandomSampler(weights, 7)) == 7


@pytest.mark.parametrize("args,kw", [(([1.0, 2.0], 0), {}), (([1.0, 2.0], 2), dict(replacement=1)),
                                     (([[1.0, 2.0]], 2), {})])
def test_weighted_random_sampler_refuses_what_torch_refuses(torch, args, kw):
    with pytest.raises(ValueError):
        torch.utils.data.WeightedRandomSampler(*args, **kw)
    with pytest.raises(ValueError, match="num_samples|replacement|1d sequence"):
        WeightedRandomSampler(*args, **kw)
    with pytest.raises(ValueError, match="without replacement"):
        WeightedRandomSampler([1.0, 0.0, 1.0], 3, replacement=False)


# ---- ConcatDataset ----------------------------------------------------------------------------
def _parts():
    return [TensorDataset(np.arange(3), np.arange(3) * 10),
            TensorDataset(np.arange(3, 8), np.arange(3, 8) * 10),
            TensorDataset(np.arange(8, 10), np.arange(8, 10) * 10)]


def _torch_parts(torch):
    return [torch.utils.data.TensorDataset(torch.tensor(d.arrays[0]), torch.tensor(d.arrays[1]))
            for d in _parts()]


def test_concat_dataset_indexes_as_torch(torch):
    ours = ConcatDataset(_parts())
    theirs = torch.utils.data.ConcatDataset(_torch_parts(torch))
    assert len(ours) == len(theirs) == 10
    assert ours.cumulative_sizes == theirs.cumulative_sizes
    for i in range(-10, 10):
        assert [int(v) for v in ours[i]] == [int(v) for v in theirs[i]], i
    with pytest.raises(ValueError, match="absolute value of index"):
        ours[-11]
    with pytest.raises(ValueError, match="absolute value of index"):
        theirs[-11]
    with pytest.raises(IndexError, match="out of range"):
        ours[10]
    a, b, _ = _parts()
    added = a + b
    assert isinstance(added, ConcatDataset) and len(added) == 8 and int(added[5][0]) == 5


def test_concat_dataset_refuses_nothing_and_streams():
    with pytest.raises(ValueError, match="empty"):
        ConcatDataset([])
    with pytest.raises(TypeError, match="IterableDataset"):
        ConcatDataset([_parts()[0], Stream(3)])


# ---- DataLoader(batch_sampler=...) ------------------------------------------------------------
def test_loader_with_a_batch_sampler_matches_torch(torch):
    ds, tds = ConcatDataset(_parts()), torch.utils.data.ConcatDataset(_torch_parts(torch))
    batches = [[9, 0], [3, 4, 5], [1], [-1, 2]]
    ours = DataLoader(ds, batch_sampler=batches)
    theirs = torch.utils.data.DataLoader(tds, batch_sampler=batches)
    assert len(ours) == len(theirs) == 4
    assert [_as_lists(b) for b in ours] == [_as_lists(b) for b in theirs]
    sampler = BatchSampler(SequentialSampler(ds), 4, drop_last=True)
    tsampler = torch.utils.data.BatchSampler(torch.utils.data.SequentialSampler(tds), 4, True)
    ours = DataLoader(ds, batch_sampler=sampler)
    theirs = torch.utils.data.DataLoader(tds, batch_sampler=tsampler)
    assert len(ours) == len(theirs) == 2 and ours.batch_size is theirs.batch_size is None
    assert [_as_lists(b) for b in ours] == [_as_lists(b) for b in theirs]
    # a TensorDataset takes the fast whole-batch path: the same batches
    flat = TensorDataset(np.arange(10) * 2)
    assert [b[0].tolist() for b in DataLoader(flat, batch_sampler=[[3, 1], [7]])] == \
        [[6, 2], [14]]


@pytest.mark.parametrize("kw", [dict(batch_size=2), dict(shuffle=True), dict(drop_last=True),
                                dict(sampler=[0, 1])])
def test_batch_sampler_excludes_the_other_options_as_torch(torch, kw):
    with pytest.raises(ValueError, match="mutually exclusive") as theirs:
        torch.utils.data.DataLoader(list(range(4)), batch_sampler=[[0, 1]], **kw)
    with pytest.raises(ValueError, match="mutually exclusive") as ours:
        DataLoader(TensorDataset(np.arange(4)), batch_sampler=[[0, 1]], **kw)
    assert str(theirs.value) in str(ours.value)


def test_sampler_and_shuffle_exclude_each_other_as_torch(torch):
    with pytest.raises(ValueError) as theirs:
        torch.utils.data.DataLoader(list(range(4)), sampler=[0, 1], shuffle=True)
    with pytest.raises(ValueError) as ours:
        DataLoader(TensorDataset(np.arange(4)), sampler=[0, 1], shuffle=True)
    assert str(theirs.value) in str(ours.value)


def test_loader_with_samplers_from_this_module():
    ds = TensorDataset(np.arange(10))
    out = [b[0].tolist() for b in DataLoader(ds, batch_size=4,
                                             sampler=SubsetRandomSampler([1, 3, 5], 0))]
    assert len(out) == 1 and sorted(out[0]) == [1, 3, 5]
    loader = DataLoader(ds, batch_size=3, sampler=RandomSampler(ds, generator=2))
    assert sorted(sum((b[0].tolist() for b in loader), [])) == list(range(10))


# ---- IterableDataset and ChainDataset ---------------------------------------------------------
class Stream(IterableDataset):
    def __init__(self, n, start=0):
        self.n, self.start = n, start

    def __iter__(self):
        info = get_worker_info()
        assert info is None  # in the calling process, as PyTorch's num_workers=0
        for i in range(self.start, self.start + self.n):
            yield np.array([i, i * i], np.int64), float(i) / 2

    def __len__(self):
        return self.n


def _torch_stream(torch, n, start=0):
    class TorchStream(torch.utils.data.IterableDataset):
        def __iter__(self):
            for i in range(start, start + n):
                yield np.array([i, i * i], np.int64), float(i) / 2

        def __len__(self):
            return n
    return TorchStream()


@pytest.mark.parametrize("drop_last", [False, True])
def test_loader_over_an_iterable_dataset_matches_torch(torch, drop_last):
    ours = DataLoader(Stream(7), batch_size=3, drop_last=drop_last)
    theirs = torch.utils.data.DataLoader(_torch_stream(torch, 7), batch_size=3,
                                         drop_last=drop_last)
    got, expected = [_as_lists(b) for b in ours], [_as_lists(b) for b in theirs]
    assert got == expected and len(got) == (2 if drop_last else 3)
    assert len(ours) == len(theirs)
    x, y = next(iter(ours))
    assert x.dtype == np.int64 and y.dtype == np.float64


def test_chain_dataset_reads_its_streams_in_turn(torch):
    ours = Stream(3) + Stream(2, start=10)
    assert isinstance(ours, ChainDataset) and len(ours) == 5
    theirs = torch.utils.data.ChainDataset([_torch_stream(torch, 3),
                                            _torch_stream(torch, 2, start=10)])
    assert [_as_lists(b) for b in DataLoader(ours, batch_size=2)] == \
        [_as_lists(b) for b in torch.utils.data.DataLoader(theirs, batch_size=2)]
    with pytest.raises(TypeError, match="only supports IterableDataset"):
        list(ChainDataset([Stream(1), _parts()[0]]))
    with pytest.raises(TypeError, match="cannot be indexed"):
        Stream(2)[0]


@pytest.mark.parametrize("kw", [dict(shuffle=True), dict(sampler=[0, 1]),
                                dict(batch_sampler=[[0]])])
def test_iterable_dataset_refuses_an_order_as_torch(torch, kw):
    with pytest.raises(ValueError) as theirs:
        torch.utils.data.DataLoader(_torch_stream(torch, 3), **kw)
    with pytest.raises(ValueError) as ours:
        DataLoader(Stream(3), **kw)
    assert str(theirs.value).split(",")[0] in str(ours.value)


def test_get_worker_info_is_none_in_process():
    assert get_worker_info() is None


# ---- default_collate and default_convert ------------------------------------------------------
Point = collections.namedtuple("Point", "x y")

COLLATE_CASES = {
    "ints": [1, 2, 3],
    "floats": [1.5, 2.0],
    "bools": [True, False],
    "ints_then_float": [1, 2.5],
    "numpy_float32_scalars": [np.float32(1), np.float32(2)],
    "numpy_int32_scalars": [np.int32(4), np.int32(5)],
    "arrays": [np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32)],
    "uint8_arrays": [np.array([1, 2], np.uint8), np.array([3, 4], np.uint8)],
    "zero_d_arrays": [np.array(1.0), np.array(2.0)],
    "tuples": [(1, "a", 0.5), (2, "b", 1.5)],
    "lists": [[1, 2], [3, 4]],
    "namedtuples": [Point(1, 2.0), Point(3, 4.0)],
    "dicts": [{"a": 1, "b": [1, 2], "s": "x"}, {"a": 2, "b": [3, 4], "s": "y"}],
    "strings": ["a", "bc"],
    "bytes": [b"x", b"y"],
    "nested": [{"img": np.ones(2), "meta": (1, {"k": 2.0})},
               {"img": np.zeros(2), "meta": (3, {"k": 4.0})}],
}


def _structure(batch):
    """The batch's containers and leaves: type names, and for Tensors dtype, shape, values."""
    if isinstance(batch, dict):
        return ("dict", {k: _structure(v) for k, v in batch.items()})
    if hasattr(batch, "_fields"):
        return (type(batch).__name__, [_structure(v) for v in batch])
    if isinstance(batch, (list, tuple)):
        return (type(batch).__name__, [_structure(v) for v in batch])
    if hasattr(batch, "shape") and not isinstance(batch, np.ndarray):
        array = batch.detach().numpy() if hasattr(batch, "detach") else batch.numpy()
        return ("Tensor", str(array.dtype), array.shape, array.tolist())
    return (type(batch).__name__, batch)


@pytest.mark.parametrize("name", list(COLLATE_CASES))
def test_default_collate_matches_torch(torch, name):
    from torch.utils.data import default_collate as torch_collate

    samples = COLLATE_CASES[name]
    ours, theirs = default_collate(samples), torch_collate(samples)
    assert _structure(ours) == _structure(theirs)


def test_default_collate_stacks_tensors_and_keeps_their_dtype(torch):
    ours = default_collate([minidl.Tensor(np.ones(3)), minidl.Tensor(np.zeros(3))])
    assert isinstance(ours, minidl.Tensor) and ours.shape == (2, 3) and ours.dtype == np.float64
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([minidl.Tensor(np.ones(3)), minidl.Tensor(np.ones(2))])


@pytest.mark.parametrize("samples,error", [([None, None], TypeError), ([object()], TypeError),
                                           ([np.array(["a"])], TypeError),
                                           ([[1, 2], [3]], RuntimeError)])
def test_default_collate_refuses_what_torch_refuses(torch, samples, error):
    from torch.utils.data import default_collate as torch_collate

    with pytest.raises(error) as theirs:
        torch_collate(samples)
    with pytest.raises(error) as ours:
        default_collate(samples)
    assert str(theirs.value) == str(ours.value)


@pytest.mark.parametrize("sample", [(np.ones(2), 1, "a"), [np.ones(1)], np.float32(2),
                                    {"x": np.arange(3), "y": Point(np.zeros(1), "p")}])
def test_default_convert_matches_torch(torch, sample):
    from torch.utils.data import default_convert as torch_convert

    assert _structure(default_convert(sample)) == _structure(torch_convert(sample))


def test_default_collate_as_a_loaders_collate_fn_gives_torchs_structure(torch):
    class Pairs(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.full(2, i, np.float32), i

    ours = [_structure(b) for b in DataLoader(Pairs(), batch_size=2, collate_fn=default_collate)]
    theirs = [_structure(b) for b in torch.utils.data.DataLoader(Pairs(), batch_size=2)]
    assert ours == theirs


# ---- on a (fake) GPU --------------------------------------------------------------------------
def test_default_collate_keeps_gpu_tensors_on_the_gpu(monkeypatch, host_kernels):
    import _fake_gpu

    _fake_gpu.install(monkeypatch, host_kernels)
    batch = default_collate([{"x": minidl.tensor(np.ones(2, np.float32), device="cuda")},
                             {"x": minidl.tensor(np.zeros(2, np.float32), device="cuda")}])
    assert batch["x"].device == "cuda" and batch["x"].shape == (2, 2)
    np.testing.assert_array_equal(batch["x"].numpy(), [[1, 1], [0, 0]])
    loader = DataLoader(ConcatDataset(_parts()), batch_sampler=[[0, 9]], device="cuda")
    (x, y), = list(loader)
    assert x.device == "cuda" and x.tolist() == [0, 9] and y.tolist() == [0, 90]


def test_random_split_takes_a_numpy_generator():
    from minidl.data import random_split

    ds = TensorDataset(np.arange(10))
    a, b = random_split(ds, [7, 3], generator=np.random.default_rng(4))
    c, d = random_split(ds, [7, 3], np.random.default_rng(4))  # in seed's place, as torch's
    assert a.indices.tolist() == c.indices.tolist() and sorted(
        a.indices.tolist() + b.indices.tolist()) == list(range(10))
    with pytest.raises(TypeError, match="generator"):
        random_split(ds, [7, 3], generator=4)


def test_len_of_a_loader_over_a_stream_without_len_is_a_type_error(torch):
    class Endless(IterableDataset):
        def __iter__(self):
            yield from range(5)

    class TorchEndless(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield from range(5)

    with pytest.raises(TypeError):
        len(torch.utils.data.DataLoader(TorchEndless(), batch_size=2))
    loader = DataLoader(Endless(), batch_size=2)
    with pytest.raises(TypeError, match="has no len"):
        len(loader)
    assert [b.tolist() for b in loader] == [[0, 1], [2, 3], [4]]


# ---- random_split with fractions, as torch's -----------------------------------------------------
SPLITS = [(10, [0.3, 0.3, 0.4]), (7, [0.33, 0.33, 0.34]), (200, [0.8, 1 - 0.8]), (3, [0.5, 0.5]),
          (10, [0.1] * 10), (10, [0.7, 0.2, 0.1]), (11, (0.25, 0.75)), (10, [1.0]),
          (13, [0.2, 0.2, 0.2, 0.2, 0.2]), (5, [1, 0]), (1, [0.5, 0.5]), (0, [0.5, 0.5]),
          (10, [3, 7]), (10, [0, 10]), (10, [np.int64(4), np.int64(6)]), (9, np.array([0.3, 0.7]))]


@needs_torch
@pytest.mark.parametrize("n,lengths", SPLITS, ids=[f"{n}-{list(l)}" for n, l in SPLITS])
def test_random_split_sizes_match_torch(n, lengths):
    import warnings

    from torch.utils.data import random_split as torch_split

    with warnings.catch_warnings(record=True) as theirs_warned:
        warnings.simplefilter("always")
        want = [len(s) for s in torch_split(range(n), lengths)]
    with warnings.catch_warnings(record=True) as ours_warned:
        warnings.simplefilter("always")
        parts = minidl.data.random_split(list(range(n)), lengths, seed=0)
    assert [len(s) for s in parts] == want
    assert len(ours_warned) == len(theirs_warned)  # one per empty split
    assert sorted(i for s in parts for i in s.indices) == list(range(n))


@needs_torch
@pytest.mark.parametrize("lengths", [[0.5, 0.6], [0.5, 0.4], [3, 3], [-0.1, 1.1],
                                     [0.5, 0.5000000001], [1.2, -0.2]])
def test_random_split_refuses_what_torch_refuses(lengths):
    from torch.utils.data import random_split as torch_split

    with pytest.raises(ValueError) as theirs:
        torch_split(range(10), lengths)
    with pytest.raises(ValueError) as ours:
        minidl.data.random_split(list(range(10)), lengths)
    word = "between 0 and 1" if "between" in str(theirs.value) else "does not equal"
    assert word in str(ours.value)


def test_random_split_refuses_negative_and_fractional_sizes():
    with pytest.raises(ValueError, match="index 0 is negative"):
        minidl.data.random_split(list(range(10)), [-1, 11])  # torch gives overlapping subsets
    with pytest.raises(TypeError, match="neither fractions summing to 1 nor integer sizes"):
        minidl.data.random_split(list(range(10)), [2.5, 7.5])
    with pytest.raises(ValueError, match="not between 0 and 1"):
        minidl.data.random_split(list(range(10)), 1.5)
    assert [len(s) for s in minidl.data.random_split(list(range(200)), 0.8)] == [160, 40]
# ---- collate's named tuples and nested types; __getitems__, StackDataset, random_split ---------------
Pair = collections.namedtuple("Pair", "image label")


class _Samples(minidl.data.Dataset):
    def __init__(self, make):
        self.make = make

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return self.make(i)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_batches_keep_named_tuples_and_nested_fields_types(num_workers):
    data = _Samples(lambda i: Pair(np.full(2, i, np.float32),
                                   {"meta": (i, i / 2, f"n{i}"), "ids": [i, i + 1]}))
    batch = next(iter(minidl.data.DataLoader(data, batch_size=3, num_workers=num_workers)))
    assert type(batch) is Pair and batch.image.shape == (3, 2)
    label, half, names = batch.label["meta"]  # was one float64 array: the ints made floats
    assert label.dtype == minidl.int64 and label.tolist() == [0, 1, 2]
    assert half.dtype == minidl.float64 and half.tolist() == [0.0, 0.5, 1.0]
    assert names == ["n0", "n1", "n2"]
    assert batch.label["ids"].shape == (3, 2)  # numbers of one kind still stack


def test_loader_nested_fields_match_torch():
    torch = pytest.importorskip("torch")
    items = [{"x": (i, np.float64(i)), "p": Pair(np.ones(2, np.float32) * i, i)}
             for i in range(3)]
    ours = next(iter(minidl.data.DataLoader(items, batch_size=3)))
    theirs = next(iter(torch.utils.data.DataLoader(items, batch_size=3)))
    assert type(ours["p"]) is type(theirs["p"]) is Pair
    for a, b in zip(list(ours["x"]) + list(ours["p"]), list(theirs["x"]) + list(theirs["p"])):
        assert str(a.dtype).split(".")[-1] == str(b.dtype).split(".")[-1]
        np.testing.assert_array_equal(a.numpy(), b.numpy())


class _Batched(minidl.data.Dataset):
    """A dataset that reads whole batches (a database, a file per batch): __getitems__."""

    def __init__(self):
        self.calls = []

    def __len__(self):
        return 6

    def __getitem__(self, i):
        raise AssertionError("the loader should call __getitems__")

    def __getitems__(self, indices):
        self.calls.append(list(indices))
        return [(np.full(2, i, np.float32), i) for i in indices]


@pytest.mark.parametrize("collate_fn", [None, list])
def test_loader_fetches_through_getitems_as_torch(collate_fn):
    data = _Batched()
    batches = list(minidl.data.DataLoader(data, batch_size=4, collate_fn=collate_fn))
    assert data.calls == [[0, 1, 2, 3], [4, 5]]
    if collate_fn is None:
        assert batches[1][1].tolist() == [4, 5]
    sub = minidl.data.Subset(data, [5, 3, 1])
    assert [s[1] for s in sub.__getitems__([0, 2])] == [5, 1]
    assert next(iter(minidl.data.DataLoader(sub, batch_size=3)))[1].tolist() == [5, 3, 1]


def test_stack_dataset_as_torch():
    torch = pytest.importorskip("torch")
    a, b = [np.float32(i) for i in range(4)], ["w", "x", "y", "z"]
    ours, theirs = minidl.data.StackDataset(a, b), torch.utils.data.StackDataset(a, b)
    assert len(ours) == len(theirs) == 4 and ours[2] == theirs[2]
    ours, theirs = minidl.data.StackDataset(v=a, s=b), torch.utils.data.StackDataset(v=a, s=b)
    assert ours[1] == theirs[1] and ours.__getitems__([0, 3]) == theirs.__getitems__([0, 3])
    batch = next(iter(minidl.data.DataLoader(ours, batch_size=4)))
    assert batch["s"] == b and batch["v"].tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="(?i)size mismatch"):
        minidl.data.StackDataset(a, b[:2])
    with pytest.raises(ValueError, match="both"):
        minidl.data.StackDataset(a, s=b)


@pytest.mark.parametrize("lengths", [[0.8, 0.2], [7, 3]])
def test_random_split_without_a_generator_follows_manual_seed(lengths):
    def split():
        minidl.manual_seed(42)  # a script's seeding at the top: the same split every run
        return [s.indices.tolist() for s in minidl.data.random_split(range(10), lengths)]
    first = split()
    assert split() == first  # was a fresh OS-entropy permutation each call
    assert sorted(first[0] + first[1]) == list(range(10))
    minidl.manual_seed(43)
    other = [s.indices.tolist() for s in minidl.data.random_split(range(10), lengths)]
    assert other != first
# ---- DataLoader and default_collate -----------------------------------------------------------

def test_collate_promotes_mixed_dtypes_as_torch_stack():
    data = minidl.data
    batch = data.default_collate([minidl.ones(2), minidl.ones(2, dtype=minidl.int64)])
    assert batch.dtype == minidl.float32
    batch = data.default_collate([np.ones(2, np.float32), np.ones(2, np.int64)])
    assert batch.dtype == minidl.float32
    (batch,) = list(data.DataLoader([minidl.ones(2, dtype=minidl.int64), minidl.ones(2)],
                                    batch_size=2))
    assert batch.dtype == minidl.float32
    (batch,) = list(data.DataLoader([np.ones(2, np.uint8), np.ones(2, np.int8)], batch_size=2))
    assert batch.dtype == minidl.int16


def test_collate_mixed_dtypes_parity_with_torch():
    torch = pytest.importorskip("torch")
    for dtypes in [("float32", "int64"), ("uint8", "int8"), ("float16", "bfloat16"),
                   ("bool", "int8"), ("int32", "float16")]:
        ours = minidl.data.default_collate([minidl.ones(2, dtype=getattr(minidl, d))
                                            for d in dtypes])
        theirs = torch.utils.data.default_collate([torch.ones(2, dtype=getattr(torch, d))
                                                   for d in dtypes])
        assert str(ours.dtype).split(".")[-1] == str(theirs.dtype).split(".")[-1], dtypes


def test_collate_refuses_an_integer_beyond_int64_instead_of_an_object_tensor():
    with pytest.raises(ValueError, match="does not fit in int64"):
        minidl.data.default_collate([2 ** 70, 1])
    with pytest.raises(ValueError, match=r"2361183241434822606848.*dataset index 1"):
        list(minidl.data.DataLoader([1, 2 ** 71], batch_size=2))


def test_collate_keeps_the_samples_mapping_type():
    import collections

    samples = [collections.defaultdict(int, a=i) for i in range(3)]
    (batch,) = list(minidl.data.DataLoader(samples, batch_size=3))
    assert type(batch) is collections.defaultdict and batch["a"].numpy().tolist() == [0, 1, 2]
    assert batch["missing"] == 0  # its default factory kept
    batch = minidl.data.default_collate(samples)
    assert type(batch) is collections.defaultdict
    ordered = [collections.OrderedDict(b=i, a=i) for i in range(2)]
    (batch,) = list(minidl.data.DataLoader(ordered, batch_size=2))
    assert type(batch) is collections.OrderedDict and list(batch) == ["b", "a"]


# ---- DataLoader: bfloat16 tensors and datetime64 arrays ---------------------------------------

def test_loader_batches_bfloat16_tensors_and_refuses_dates():
    samples = [minidl.ones(2, dtype=minidl.bfloat16), minidl.zeros(2, dtype=minidl.bfloat16)]
    (batch,) = list(minidl.data.DataLoader(samples, batch_size=2))
    assert batch.dtype == minidl.bfloat16 and batch.shape == (2, 2)
    ((x, y),) = list(minidl.data.DataLoader([(t, 1) for t in samples], batch_size=2))
    assert x.dtype == minidl.bfloat16 and y.numpy().tolist() == [1, 1]
    dates = [np.datetime64("2020-01-01"), np.datetime64("2020-01-02")]
    with pytest.raises(TypeError, match="batch must contain"):
        list(minidl.data.DataLoader(dates, batch_size=2))
    with pytest.raises(TypeError, match="batch must contain"):
        minidl.data.default_collate([np.array(dates)] * 2)


# ---- misuse: default_collate of numbers mixed with other values -------------------------------

@pytest.mark.parametrize("batch, named", [([1.0, "x"], r"entry 1 is a str \('x'\)"),
                                          ([1, None], r"entry 1 is a NoneType"),
                                          ([1, [2]], r"entry 1 is a list")])
def test_default_collate_numbers_mixed_with_others_named(batch, named):
    with pytest.raises(TypeError, match=named):  # was a string/object tensor or a NumPy error
        mdata.default_collate(batch)


def test_default_collate_numbers_unchanged():
    assert mdata.default_collate([1, 2.5]).dtype == minidl.float32  # torch.tensor's default
    assert mdata.default_collate([2.5, 1]).dtype == minidl.float64
    assert mdata.default_collate([True, 2]).tolist() == [1, 2]
    assert mdata.default_collate([np.int64(3), 4]).tolist() == [3, 4]


# ---- StackDataset -----------------------------------------------------------------------------

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
