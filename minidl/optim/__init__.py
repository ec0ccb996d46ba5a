"""Optimizers with PyTorch's update rules and state dicts, and learning-rate schedules
(``minidl.optim.lr_scheduler``, torch.optim.lr_scheduler's chainable forms): one module per
concept, as torch.optim lays them out."""
from . import lr_scheduler
from .adadelta import Adadelta
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .adamax import Adamax
from .asgd import ASGD
from .lbfgs import LBFGS
from .lr_scheduler import (ChainedScheduler, ConstantLR, CosineAnnealingLR,
                           CosineAnnealingWarmRestarts, CyclicLR, ExponentialLR, LambdaLR, LinearLR,
                           LRScheduler, MultiplicativeLR, MultiStepLR, OneCycleLR, PolynomialLR,
                           ReduceLROnPlateau, SequentialLR, StepLR)
from .nadam import NAdam
from .optimizer import Optimizer
from .radam import RAdam
from .rmsprop import RMSprop
from .rprop import Rprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax",
           "NAdam", "RAdam", "ASGD", "Rprop", "LBFGS", "lr_scheduler", "LRScheduler",
           "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "LambdaLR", "LinearLR",
           "ConstantLR", "PolynomialLR", "MultiplicativeLR", "CosineAnnealingWarmRestarts",
           "CyclicLR", "OneCycleLR", "ReduceLROnPlateau", "SequentialLR", "ChainedScheduler"]
from . import swa_utils  # noqa: E402

__all__ += ["swa_utils"]
from .adafactor import Adafactor  # noqa: E402
from .muon import Muon  # noqa: E402
from .sparse_adam import SparseAdam  # noqa: E402

__all__ += ["Adafactor", "Muon", "SparseAdam"]
from ._stateless import swap_in_optimizer_params_and_state  # noqa: E402

__all__ += ["swap_in_optimizer_params_and_state"]
