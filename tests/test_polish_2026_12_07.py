"""Regression tests for small divergences from torch 2.13 found on 2026-12-07."""

import minidl


def test_size_without_dim_is_a_minidl_size():
    """x.size() returned the plain shape tuple (printed "(2, 3)"); torch returns torch.Size.
    .shape stays a tuple by design, x.size(d) stays an int."""
    x = minidl.zeros(2, 3)
    s = x.size()
    assert isinstance(s, minidl.Size)
    assert repr(s) == "minidl.Size([2, 3])"
    assert s == (2, 3) and s == minidl.Size([2, 3]) and s.numel() == 6
    assert type(x.shape) is tuple
    assert x.size(1) == 3 and type(x.size(1)) is int
    assert repr(minidl.Size([2, 3])) == "minidl.Size([2, 3])"
