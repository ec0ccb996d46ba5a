"""Modules and layers: ``import minidl.nn as nn``."""
from . import functional, init, parallel, utils  # noqa: F401
from .layers import (
    AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, CrossEntropyLoss, Dropout,
    Flatten, Identity, Linear, LogSoftmax, MaxPool2d, ModuleList, MSELoss, NLLLoss, ReLU, Sequential,
    Sigmoid, Softmax, Tanh,
)
from .module import Module, Parameter

__all__ = ["Module", "Parameter", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d",
           "AdaptiveAvgPool2d", "BatchNorm1d", "BatchNorm2d", "ReLU", "Sigmoid", "Tanh",
           "Softmax", "LogSoftmax", "Flatten", "Identity", "Dropout", "CrossEntropyLoss",
           "MSELoss", "NLLLoss", "Sequential", "ModuleList", "functional", "init", "parallel"]
