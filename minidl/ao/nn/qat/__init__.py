"""Modules for quantization-aware training (torch.ao.nn.qat): float modules whose weights go
through a FakeQuantize on every forward, so that training sees their int8 rounding."""
from __future__ import annotations

from .... import nn
from ....nn import functional as F


class Linear(nn.Linear):
    """nn.Linear with ``weight_fake_quant`` (from ``qconfig.weight``) applied to the weight."""

    def __init__(self, in_features, out_features, bias=True, qconfig=None):
        super().__init__(in_features, out_features, bias=bias)
        if qconfig is None:
            raise ValueError("qat.Linear: qconfig must be provided for a QAT module")
        self.qconfig = qconfig
        self.weight_fake_quant = qconfig.weight()

    def forward(self, x):
        return F.linear(x, self.weight_fake_quant(self.weight), self.bias)

    @classmethod
    def from_float(cls, mod):
        """A qat.Linear sharing ``mod``'s weight and bias Parameters, with mod's qconfig."""
        qconfig = getattr(mod, "qconfig", None)
        if qconfig is None:
            raise ValueError("qat.Linear.from_float: the float module must have a qconfig "
                             "(set it on the model or the module, or use prepare_qat)")
        out = cls(mod.in_features, mod.out_features, bias=mod.bias is not None, qconfig=qconfig)
        out.weight = mod.weight
        out.bias = mod.bias
        return out
