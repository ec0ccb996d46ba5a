"""Misuse audit of the newer public APIs (2026-12-07): each test is bad input a user would hit,
asserting the error type (PyTorch's, or ValueError/TypeError where torch's is RuntimeError)
and that the message names the offending argument, key, sample or file."""
import numpy as np
import pytest

import minidl
from minidl.utils import data as mdata


class _Items:
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


# --- 1. DataLoader: samples that do not batch together ------------------------------------

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
