"""AlexNet (Krizhevsky et al., 2012) as torchvision's "one weird trick" variant: ``features``
(five convs, three max pools), a 6x6 adaptive average pool, and the dropout ``classifier``.
PyTorch's default initialisation, as torchvision (no custom scheme)."""
from __future__ import annotations

from .. import nn
from .resnet import _build

__all__ = ["AlexNet", "alexnet"]


class AlexNet(nn.Module):
    classifier_key = "classifier.6"

    def __init__(self, num_classes=1000, dropout=0.5):
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"AlexNet: num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(),
            nn.Dropout(p=dropout), nn.Linear(4096, 4096), nn.ReLU(),
            nn.Linear(4096, self.num_classes))

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def alexnet(weights=None, num_classes=1000, **kwargs):
    """AlexNet with torchvision's names; ``weights`` as for ``resnet50`` (inputs of at least
    63x63)."""
    return _build("alexnet", AlexNet(num_classes, **kwargs), weights)
