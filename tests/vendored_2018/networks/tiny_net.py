"""A small network written against the vendored 2018 module, as human-parsing repositories write
theirs (``from modules import InPlaceABNSync``; ``functools.partial(InPlaceABNSync, activation='none')``)."""

import functools

import torch
import torch.nn as nn
from modules import InPlaceABN, InPlaceABNSync

BatchNorm2d = functools.partial(InPlaceABNSync, activation="none")


class Bottleneck(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = InPlaceABNSync(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(self.bn1(self.conv1(x)))))


class TinyNet(nn.Module):
    def __init__(self, num_classes=3, width=8):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False)
        self.stem_bn = InPlaceABN(width, activation="elu")
        self.block = Bottleneck(width)
        self.head = nn.Sequential(nn.Conv2d(2 * width, width, 1, bias=False), InPlaceABNSync(width, slope=0.2))
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, x):
        x = self.stem_bn(self.stem(x))
        x = torch.cat([x, self.block(x)], dim=1)  # an InplaceABN after a concat
        return self.classifier(self.head(x))


def build(num_classes=3, width=8):
    return TinyNet(num_classes=num_classes, width=width)
