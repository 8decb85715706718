"""User model code written against mapillary's ``inplace_abn`` 1.x package API, as mapillary's own
``scripts/models`` and TResNet-style code are: ``from inplace_abn import ABN, InPlaceABN`` and a
``functools.partial`` norm_act. Factories take keyword arguments, as a model zoo's do."""

import functools

import torch
import torch.nn as nn
from inplace_abn import ABN, InPlaceABN, InPlaceABNSync


class ResidualBlock(nn.Module):
    def __init__(self, channels, norm_act):
        super().__init__()
        self.bn1 = norm_act(channels)  # pre-activation: an InplaceABN after a residual add
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = norm_act(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x):
        return x + self.conv2(self.bn2(self.conv1(self.bn1(x))))


class TinyResNet(nn.Module):
    def __init__(self, num_classes=5, width=8, activation="leaky_relu", activation_param=0.01):
        super().__init__()
        norm_act = functools.partial(InPlaceABN, activation=activation, activation_param=activation_param)
        self.mod1 = nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False)
        self.block1 = ResidualBlock(width, norm_act)
        self.block2 = ResidualBlock(width, functools.partial(InPlaceABNSync, activation="elu", activation_param=0.5))
        self.bn_out = ABN(width, activation="relu")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        x = self.bn_out(self.block2(self.block1(self.mod1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def tiny_resnet(**kwargs):
    return TinyResNet(**kwargs)


class TwoHeadParsing(nn.Module):
    """Outputs shaped as the human-parsing network's (AugmentCE2P in Self-Correction-Human-Parsing returns
    ``[[parsing, fusion], [edge]]``), or as a dict of heads, as detection and multi-task networks return."""

    def __init__(self, num_classes=4, width=8, as_dict=False):
        super().__init__()
        self.as_dict = as_dict
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), InPlaceABNSync(width))
        self.parsing = nn.Conv2d(width, num_classes, 1)
        self.fusion = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), InPlaceABN(width),
                                    nn.Conv2d(width, num_classes, 1))  # fmt: skip
        self.edge = nn.Sequential(nn.Conv2d(width, width, 1, bias=False), InPlaceABN(width, activation="identity"),
                                  nn.Conv2d(width, 2, 1))  # fmt: skip

    def forward(self, x):
        x = self.stem(x)
        parsing, fusion, edge = self.parsing(x), self.fusion(x), self.edge(x)
        if self.as_dict:
            return {"seg": parsing, "aux": {"fusion": fusion, "edge": edge}}
        return [[parsing, fusion], [edge]]


def two_head_parsing(**kwargs):
    return TwoHeadParsing(**kwargs)
