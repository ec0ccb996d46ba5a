"""minidl.nn.modules: torch.nn.modules' file names over minidl.nn's classes, with torch's class
relations (a script's isinstance(m, nn.modules.batchnorm._BatchNorm) answers as in torch)."""
import importlib
import inspect

import pytest

import minidl
import minidl.nn as nn
import minidl.nn.modules as modules

# classes torch has under these files and minidl has not (private helpers with no part here)
ABSENT = {("module", "_WrappedHook"), ("conv", "_ConvTransposeMixin"), ("lazy", "_LazyProtocol")}
# minidl's lazy norm layers are subclasses of the layer they become (torch's are not, until they
# become it): isinstance answers True before the first forward, where torch answers False
LAZY_NORMS = {("LazyBatchNorm1d", "BatchNorm1d"), ("LazyBatchNorm2d", "BatchNorm2d"),
              ("LazyBatchNorm3d", "BatchNorm3d"), ("LazyInstanceNorm1d", "InstanceNorm1d"),
              ("LazyInstanceNorm2d", "InstanceNorm2d"), ("LazyInstanceNorm3d", "InstanceNorm3d"),
              ("_LazyNormBase", "_NormBase")}


def test_import_paths_that_scripts_use():
    from minidl.nn.modules.batchnorm import _BatchNorm, _NormBase
    from minidl.nn.modules.conv import _ConvNd
    from minidl.nn.modules.loss import _Loss, _WeightedLoss
    from minidl.nn.modules.module import Module
    from minidl.nn.modules.utils import _pair, _quadruple, _single, _triple

    assert Module is nn.Module and modules.linear.Linear is nn.Linear
    assert isinstance(nn.BatchNorm2d(3), _BatchNorm) and isinstance(nn.SyncBatchNorm(3), _BatchNorm)
    assert isinstance(nn.InstanceNorm2d(3), _NormBase) and not isinstance(nn.LayerNorm(3), _NormBase)
    assert isinstance(nn.Conv1d(1, 1, 3), _ConvNd) and isinstance(nn.ConvTranspose2d(1, 1, 3), _ConvNd)
    assert isinstance(nn.MSELoss(), _Loss) and not isinstance(nn.MSELoss(), _WeightedLoss)
    assert isinstance(nn.CrossEntropyLoss(), _WeightedLoss)
    assert _single(2) == (2,) and _pair(3) == (3, 3) and _triple([1, 2, 3]) == (1, 2, 3)
    assert _quadruple(0) == (0, 0, 0, 0)
    assert modules.utils._reverse_repeat_tuple((1, 2), 2) == (2, 2, 1, 1)
    assert modules.module._addindent("a\nb", 2) == "a\n  b"
    with pytest.raises(ImportError):
        from minidl.nn.modules.conv import _ConvTransposeMixin  # noqa: F401  (absent, not faked)


def test_custom_loss_on_the_torch_base_class():
    class Weighted(modules.loss._WeightedLoss):
        def forward(self, input, target):
            return ((input - target) ** 2 * self.weight).mean()

    loss = Weighted(weight=minidl.tensor([1.0, 2.0]), reduction="sum")
    assert loss.reduction == "sum" and "weight" in dict(loss.named_buffers())
    out = loss(minidl.tensor([1.0, 1.0]), minidl.tensor([0.0, 0.0]))
    assert out.item() == pytest.approx(1.5)
    assert modules.loss._Loss(size_average=False).reduction == "sum"  # torch's legacy pair


def test_reprs_after_the_base_class_changes():
    assert repr(nn.ZeroPad2d(1)) == "ZeroPad2d((1, 1, 1, 1))"
    assert repr(nn.ConstantPad1d(2, 3.0)) == "ConstantPad1d(padding=(2, 2), value=3.0)"
    assert repr(nn.AvgPool3d(2)) == "AvgPool3d(kernel_size=2, stride=2, padding=0)"
    assert repr(nn.Softshrink(0.3)) == "Softshrink(0.3)"
    assert repr(nn.LogSoftmax(1)) == "LogSoftmax(dim=1)"
    assert repr(nn.Dropout(0.25)) == "Dropout(p=0.25, inplace=False)"
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)


def test_class_relations_are_torchs():
    """For every pair of classes torch.nn.modules.<file> defines, issubclass answers the same
    for minidl's classes under that file."""
    pytest.importorskip("torch")
    differ, missing = [], []
    for file in modules._FILES:
        torch_file = importlib.import_module(f"torch.nn.modules.{file}")
        ours = getattr(modules, file)
        names = [n for n in dir(torch_file) if inspect.isclass(getattr(torch_file, n))
                 and getattr(torch_file, n).__module__ == torch_file.__name__]
        missing += [(file, n) for n in names if not hasattr(ours, n)]
        for a in names:
            for b in names:
                if not (hasattr(ours, a) and hasattr(ours, b)) or (a, b) in LAZY_NORMS:
                    continue
                want = issubclass(getattr(torch_file, a), getattr(torch_file, b))
                if issubclass(getattr(ours, a), getattr(ours, b)) != want:
                    differ.append((file, a, b, want))
    assert set(missing) == ABSENT
    assert differ == []


def test_every_public_name_is_minidl_nns_own_class():
    for file in modules._FILES:
        for name in getattr(modules, file).__all__:
            if hasattr(nn, name):
                assert getattr(getattr(modules, file), name) is getattr(nn, name), (file, name)
