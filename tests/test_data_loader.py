"""DataLoader: per-epoch shuffle order with a public resume (set_epoch), argument checks, and
DataLoader(batch_size=None) (samples one by one, as torch's)."""
import numpy as np
import pytest

import minidl
from minidl.data import DataLoader, TensorDataset
from minidl.utils import data as mdata

try:
    import torch
except ImportError:  # the parity tests skip themselves
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


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


# ---- DataLoader(batch_size=None): samples one by one, as torch's ---------------------------------
class _Samples(minidl.data.Dataset):
    """A map-style dataset whose samples mix arrays, numpy and Python numbers, strings and
    nested tuples: what default_convert turns into Tensors and what it leaves."""

    def __len__(self):
        return 5

    def __getitem__(self, i):
        return {"x": np.full((2, 3), i, np.float32), "y": i, "name": f"item{i}",
                "pair": (np.int64(i), 1.5), "ids": np.arange(i, i + 2)}


def _plain(obj, tensor_types):
    """A structure with its tensors (either framework's) as ('T', dtype, shape, values)."""
    if isinstance(obj, tensor_types):
        a = obj.numpy() if not hasattr(obj, "detach") else obj.detach().numpy()
        return ("T", str(a.dtype), a.shape, a.tolist())
    if isinstance(obj, dict):
        return {k: _plain(v, tensor_types) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj).__name__, [_plain(v, tensor_types) for v in obj]
    return type(obj).__name__, obj


@needs_torch
@pytest.mark.parametrize("make", ["samples", "tensors"])
def test_dataloader_without_batching_yields_what_torch_yields(make):
    from torch.utils.data import DataLoader as TorchLoader
    from torch.utils.data import Dataset as TorchDataset
    from torch.utils.data import TensorDataset as TorchTensorDataset

    if make == "samples":
        ours = _Samples()

        class Theirs(TorchDataset):
            __len__, __getitem__ = _Samples.__len__, _Samples.__getitem__
        theirs = Theirs()
    else:
        x = np.arange(24, dtype=np.float32).reshape(6, 2, 2)
        y = np.arange(6)
        ours = minidl.data.TensorDataset(x, y)
        theirs = TorchTensorDataset(torch.tensor(x), torch.tensor(y))
    for kwargs in [{}, dict(sampler=[4, 0, 2, 2])]:
        got = minidl.data.DataLoader(ours, batch_size=None, **kwargs)
        want = TorchLoader(theirs, batch_size=None, **kwargs)
        assert len(got) == len(want)
        got_items = [_plain(b, minidl.Tensor) for b in got]
        want_items = [_plain(b, torch.Tensor) for b in want]
        assert got_items == want_items
        assert got_items[0] != got_items[1]


def test_dataloader_without_batching_shuffles_and_keeps_the_sample_shapes():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    ds = minidl.data.TensorDataset(x, np.arange(10))
    loader = minidl.data.DataLoader(ds, batch_size=None, shuffle=True, seed=3)
    first, second = [int(y.item()) for _, y in loader], [int(y.item()) for _, y in loader]
    assert sorted(first) == list(range(10)) and first != list(range(10))
    assert first != second  # each pass is the next epoch
    loader.set_epoch(0)
    assert [int(y.item()) for _, y in loader] == first
    sample = next(iter(loader))
    assert isinstance(sample, list) and sample[0].shape == (2,) and sample[1].shape == ()
    assert sample[0].dtype == np.float32 and sample[1].dtype == np.int64
    assert loader.batch_size is None and len(loader) == 10


def test_dataloader_without_batching_collate_fn_streams_and_errors():
    ds = minidl.data.TensorDataset(np.arange(4.0))
    seen = list(minidl.data.DataLoader(ds, None, collate_fn=lambda s: ("got", s)))
    assert [s[0] for s in seen] == ["got"] * 4 and isinstance(seen[0][1], tuple)

    class Stream(minidl.data.IterableDataset):
        def __iter__(self):
            return iter([np.ones(3), np.zeros(3)])

    out = list(minidl.data.DataLoader(Stream(), batch_size=None))
    assert [o.shape for o in out] == [(3,), (3,)]
    with pytest.raises(ValueError, match="mutually exclusive with drop_last"):
        minidl.data.DataLoader(ds, batch_size=None, drop_last=True)
    with pytest.raises(ValueError, match="batch_sampler option is mutually exclusive"):
        minidl.data.DataLoader(ds, batch_size=None, batch_sampler=[[0, 1]])
    with pytest.raises(ValueError, match="positive integer or None"):
        minidl.data.DataLoader(ds, batch_size=0)


def test_dataloader_without_batching_moves_each_sample_to_the_fake_gpu(monkeypatch):
    import _fake_gpu

    _fake_gpu.install(monkeypatch, lib=None)  # no kernels run: the samples are only moved
    loader = minidl.data.DataLoader(_Samples(), batch_size=None, device="cuda")
    sample = next(iter(loader))
    assert sample["x"].device == "cuda" and sample["x"].shape == (2, 3)
    assert sample["pair"][0].device == "cuda" and sample["pair"][1] == 1.5
    assert sample["y"] == 0 and sample["name"] == "item0"
# ---- misuse: samples that do not batch together are named -------------------------------------

class _Items:
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.mark.parametrize("num_workers", [0, 1])
def test_loader_mixed_number_and_string_names_the_sample(num_workers):
    ds = _Items([(np.ones(2), 0), (np.ones(2), 1), (np.ones(2), "cat")])
    loader = mdata.DataLoader(ds, batch_size=3, num_workers=num_workers)
    with pytest.raises(TypeError, match=r"found <class 'str'> \(field 1\) at sample 2 "
                                        r"\(dataset index 2\)"):
        list(loader)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_loader_unequal_shapes_name_both_samples(num_workers):
    ds = _Items([(np.ones(2), 1), (np.ones(2), 1), (np.ones(3), 1)])
    loader = mdata.DataLoader(ds, batch_size=3, num_workers=num_workers)
    with pytest.raises(RuntimeError, match=r"\(field 0\), but got \[2\] at sample 0 \(dataset "
                                           r"index 0\) and \[3\] at sample 2 \(dataset index 2\)"):
        list(loader)
    with pytest.raises(ValueError):  # also a ValueError, as minidl's other shape errors
        list(mdata.DataLoader(ds, batch_size=3))


def test_loader_unequal_tuple_lengths_refused_not_truncated():
    # the first sample shorter than the second: its extra field was silently dropped
    ds = _Items([(np.ones(2), 1), (np.ones(2), 1, 2)])
    with pytest.raises(RuntimeError, match=r"equal size: sample 0 \(dataset index 0\) has "
                                           r"length 2, sample 1 \(dataset index 1\) has length 3"):
        list(mdata.DataLoader(ds, batch_size=2))
    ds = _Items([(np.ones(2), 1, 2), (np.ones(2), 1)])  # was an IndexError from inside
    with pytest.raises(ValueError, match=r"sample 1 \(dataset index 1\) has length 2"):
        list(mdata.DataLoader(ds, batch_size=2))


def test_loader_none_and_object_samples_refused():
    with pytest.raises(TypeError, match=r"found <class 'NoneType'> at sample 0"):
        list(mdata.DataLoader(_Items([None, None]), batch_size=2))
    with pytest.raises(TypeError, match=r"found <class 'object'> at sample 0"):
        list(mdata.DataLoader(_Items([object(), object()]), batch_size=2))


def test_loader_dict_field_shape_names_the_key():
    ds = _Items([{"x": np.ones(2)}, {"x": np.ones(1)}])
    with pytest.raises(ValueError, match=r"\(key 'x'\), but got \[2\] at sample 0"):
        list(mdata.DataLoader(ds, batch_size=2))


def test_loader_subset_names_the_subset_index():
    sub = mdata.Subset(_Items([np.ones(2), np.ones(3), np.ones(2)]), [2, 1])
    with pytest.raises(ValueError, match=r"at sample 1 \(dataset index 1\)"):
        list(mdata.DataLoader(sub, batch_size=2))


def test_loader_good_batches_unchanged():
    ds = _Items([(np.full(2, i, dtype=np.float32), i) for i in range(5)])
    batches = list(mdata.DataLoader(ds, batch_size=2))
    assert [b[1].tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    assert batches[0][0].dtype == minidl.float32 and batches[0][0].shape == (2, 2)
    out = list(mdata.DataLoader(_Items(["a", "b"]), batch_size=2))
    assert out == [["a", "b"]]


# ---- misuse: samplers that give non-integer indices, drop_last --------------------------------

@pytest.mark.parametrize("num_workers", [0, 1])
def test_loader_float_indices_from_a_sampler_are_refused_not_floored(num_workers):
    ds = list(range(6))
    with pytest.raises(TypeError, match=r"sampler gave the index 0\.5 \(float\)"):
        list(mdata.DataLoader(ds, sampler=[0.5, 1.0], num_workers=num_workers))
    with pytest.raises(TypeError, match=r"batch_sampler gave the index 1\.5 \(float\)"):
        list(mdata.DataLoader(ds, batch_sampler=[[0, 1.5]], num_workers=num_workers))
    with pytest.raises(TypeError, match=r"sampler gave the index True \(bool\)"):
        list(mdata.DataLoader(ds, sampler=[True]))


def test_loader_sampler_and_batch_sampler_shapes_named():
    ds = list(range(6))
    with pytest.raises(TypeError, match="sampler must be an iterable of indices .* got int"):
        mdata.DataLoader(ds, sampler=5)
    with pytest.raises(TypeError, match="batch_sampler gave int 0, not a list of indices"):
        list(mdata.DataLoader(ds, batch_sampler=[0, 1]))


def test_loader_tensor_indices_still_work():
    ds = list(range(6))
    assert [b.tolist() for b in mdata.DataLoader(ds, sampler=minidl.tensor([2, 0]))] == [[2], [0]]
    # a batch sampler yielding index Tensors (this one failed before, in np.asarray)
    got = [b.tolist() for b in mdata.DataLoader(ds, batch_sampler=[minidl.tensor([2, 0]), [1]])]
    assert got == [[2, 0], [1]]


def test_loader_drop_last_must_be_a_bool():
    with pytest.raises(ValueError, match="drop_last should be a boolean value, but got "
                                         "drop_last='x'"):
        mdata.DataLoader(list(range(5)), batch_size=2, drop_last="x")
    assert len(mdata.DataLoader(list(range(5)), batch_size=2, drop_last=np.bool_(True))) == 2
