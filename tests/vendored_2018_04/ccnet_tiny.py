"""A small segmentation network written against the April-2018 copy in ``libs/``, as CCNet writes its
ResNet (``from libs import InPlaceABNSync``; ``BatchNorm2d = functools.partial(InPlaceABNSync,
activation='none')``; an InPlaceABNSync after a concat in the head); ``build()`` is its factory."""

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F
from libs import InPlaceABN, InPlaceABNSync

BatchNorm2d = functools.partial(InPlaceABNSync, activation="none")


class Bottleneck(nn.Module):
    def __init__(self, channels, dilation=1):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn1 = BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class CCNetTiny(nn.Module):
    def __init__(self, num_classes=4, width=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False), InPlaceABN(width))
        self.layer = nn.Sequential(Bottleneck(width), Bottleneck(width, dilation=2))
        self.bottleneck = nn.Sequential(
            nn.Conv2d(2 * width, width, 3, padding=1, bias=False), InPlaceABNSync(width, slope=0.2)
        )
        self.cls = nn.Conv2d(width, num_classes, 1)

    def forward(self, x):
        size = x.shape[2:]
        f = self.stem(x)
        f = torch.cat([f, self.layer(f)], 1)
        return F.interpolate(self.cls(self.bottleneck(f)), size=size, mode="bilinear", align_corners=True)


def build(num_classes=4, width=8):
    return CCNetTiny(num_classes=num_classes, width=width)
