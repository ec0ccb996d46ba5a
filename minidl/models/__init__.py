"""Models: MLP and LeNet-5 for MNIST, ResNet-50 (torchvision layout), and the weight converter."""
from .resnet import ResNet, resnet50
from .small import lenet5, mlp

__all__ = ["mlp", "lenet5", "ResNet", "resnet50"]
