"""Optimizers with PyTorch's update rules and state dicts, and learning-rate schedules
(``minidl.optim.lr_scheduler``, torch.optim.lr_scheduler's chainable forms): one module per
concept, as torch.optim lays them out."""
from . import lr_scheduler
from .adam import Adam, AdamW
from .lr_scheduler import (CosineAnnealingLR, ExponentialLR, LambdaLR, LinearLR, LRScheduler,
                           MultiStepLR, StepLR)
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "lr_scheduler", "LRScheduler",
           "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "LambdaLR", "LinearLR"]
