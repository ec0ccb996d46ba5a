"""Small models for MNIST-sized inputs (1 x 28 x 28)."""
from __future__ import annotations

from .. import nn


def mlp(in_features=784, hidden=(256,), num_classes=10, dropout=0.0):
    """A multi-layer perceptron: Flatten, then Linear + ReLU per hidden width, then Linear."""
    layers = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


class LeNet5(nn.Module):
    """LeCun et al. (1998)'s layout with ReLU and max-pooling: 5x5 conv 6 (padded so 28x28
    inputs give the classic 28x28 maps), pool, 5x5 conv 16, pool, 120, 84, 10."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def lenet5(num_classes=10):
    return LeNet5(num_classes)
