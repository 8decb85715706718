"""Networks built with InplaceABN modules for the network benchmark: ResNet-50, TResNet-M,
DenseNet-121, a pre-activation wide ResNet and a DeepLabV3 ASPP head, written from the papers
(and, for the last three, the layout of mapillary's model code: InplaceABN after Concat / Add).

* ResNet-50 (He et al. 2016): bottlenecks [3, 4, 6, 3], 7x7 stem, max-pool. As in the
  InplaceABN paper, each BatchNorm+ReLU becomes InPlaceABN(leaky_relu 0.01) and the
  BatchNorm before a residual sum InPlaceABN(identity).
* TResNet-M (Ridnik et al. 2021), from the paper's description: SpaceToDepth stem
  (block 4) then a 3x3 conv to 64 channels; BasicBlocks [3, 4] and Bottlenecks [11, 3]
  at widths 64/128/256/512; InplaceABN with leaky_relu 1e-3 everywhere but before the
  residual sum (identity); squeeze-excitation in the first three stages; anti-aliased
  downsampling (a fixed 3x3 blur, stride 2) in the strided convs; average-pool +
  1x1 conv shortcuts; global average pooling and a linear head.

Weights are random and the running statistics randomized (timing does not depend on
values). ``to_batchnorm`` gives the same network with torch BatchNorm2d + activation,
the form torch's own ONNX export and other tools take.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.torch_replicas import InPlaceABN, randomize


def iabn(channels: int, act: str, slope: float) -> nn.Module:
    return InPlaceABN(channels, activation=act, activation_param=slope)


def conv_iabn(cin: int, cout: int, k: int, stride: int, act: str, slope: float) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), iabn(cout, act, slope))


# -- ResNet-50 ------------------------------------------------------------------
class ResNetBottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = conv_iabn(cin, planes, 1, 1, "leaky_relu", 0.01)
        self.conv2 = conv_iabn(planes, planes, 3, stride, "leaky_relu", 0.01)
        self.conv3 = conv_iabn(planes, cout, 1, 1, "identity", 0.01)
        self.shortcut = conv_iabn(cin, cout, 1, stride, "identity", 0.01) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


def resnet50(num_classes: int = 1000) -> nn.Module:
    layers, cin, blocks = [], 64, []
    for planes, count, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(count):
            blocks.append(ResNetBottleneck(cin, planes, stride if i == 0 else 1))
            cin = planes * 4
    layers = [conv_iabn(3, 64, 7, 2, "leaky_relu", 0.01), nn.MaxPool2d(3, 2, 1), *blocks]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))


# -- TResNet-M ------------------------------------------------------------------
TRESNET_SLOPE = 1e-3


class SpaceToDepth(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        x = x.view(n, c, h // 4, 4, w // 4, 4).permute(0, 3, 5, 1, 2, 4).contiguous()
        return x.view(n, c * 16, h // 4, w // 4)


class BlurDownsample(nn.Module):
    """Anti-aliased stride-2 downsampling: a fixed [1,2,1]x[1,2,1]/16 depthwise filter."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("filt", (k[:, None] * k[None, :] / 16).expand(channels, 1, 3, 3).contiguous())
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.filt, stride=2, groups=self.channels)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


def _strided_conv_iabn(cin: int, cout: int, stride: int) -> nn.Sequential:
    if stride == 1:
        return conv_iabn(cin, cout, 3, 1, "leaky_relu", TRESNET_SLOPE)
    return nn.Sequential(conv_iabn(cin, cout, 3, 1, "leaky_relu", TRESNET_SLOPE), BlurDownsample(cout))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    pool = [nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)] if stride == 2 else []
    return nn.Sequential(*pool, conv_iabn(cin, cout, 1, 1, "identity", TRESNET_SLOPE))


class TBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, use_se: bool) -> None:
        super().__init__()
        self.conv1 = _strided_conv_iabn(cin, planes, stride)
        self.conv2 = conv_iabn(planes, planes, 3, 1, "identity", TRESNET_SLOPE)
        self.se = SqueezeExcite(planes, max(planes // 4, 64)) if use_se else nn.Identity()
        self.shortcut = _shortcut(cin, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.se(self.conv2(self.conv1(x))) + identity)


class TBottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, use_se: bool) -> None:
        super().__init__()
        self.conv1 = conv_iabn(cin, planes, 1, 1, "leaky_relu", TRESNET_SLOPE)
        self.conv2 = _strided_conv_iabn(planes, planes, stride)
        self.se = SqueezeExcite(planes, max(planes * 4 // 8, 64)) if use_se else nn.Identity()
        self.conv3 = conv_iabn(planes, planes * 4, 1, 1, "identity", TRESNET_SLOPE)
        self.shortcut = _shortcut(cin, planes * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.conv3(self.se(self.conv2(self.conv1(x)))) + identity)


def tresnet_m(num_classes: int = 1000) -> nn.Module:
    blocks, cin = [], 64
    for block, planes, count, stride, use_se in (
        (TBasicBlock, 64, 3, 1, True),
        (TBasicBlock, 128, 4, 2, True),
        (TBottleneck, 256, 11, 2, True),
        (TBottleneck, 512, 3, 2, False),
    ):
        for i in range(count):
            blocks.append(block(cin, planes, stride if i == 0 else 1, use_se))
            cin = planes * block.expansion
    stem = [SpaceToDepth(), conv_iabn(48, 64, 3, 1, "leaky_relu", TRESNET_SLOPE)]
    return nn.Sequential(*stem, *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))


# -- DenseNet-121 (Huang et al. 2017), pre-activation as in mapillary's model code ----------
class DenseModule(nn.Module):
    """Each layer: InPlaceABN on the concatenation so far -> 1x1 conv (4k) -> InPlaceABN -> 3x3 conv (k)."""

    def __init__(self, cin: int, growth: int, layers: int) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList()
        self.convs3 = nn.ModuleList()
        for i in range(layers):
            width = cin + i * growth
            self.convs1.append(
                nn.Sequential(iabn(width, "leaky_relu", 0.01), nn.Conv2d(width, 4 * growth, 1, bias=False))
            )
            self.convs3.append(
                nn.Sequential(
                    iabn(4 * growth, "leaky_relu", 0.01), nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)
                )
            )
        self.out_channels = cin + layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = [x]
        for conv1, conv3 in zip(self.convs1, self.convs3):
            inputs.append(conv3(conv1(torch.cat(inputs, dim=1))))
        return torch.cat(inputs, dim=1)


def densenet121(num_classes: int = 1000) -> nn.Module:
    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        iabn(64, "leaky_relu", 0.01),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for i, count in enumerate((6, 12, 24, 16)):
        block = DenseModule(cin, 32, count)
        layers.append(block)
        cin = block.out_channels
        if i < 3:  # transition: InPlaceABN -> 1x1 conv halving the width -> 2x2 average pool
            layers += [iabn(cin, "leaky_relu", 0.01), nn.Conv2d(cin, cin // 2, 1, bias=False), nn.AvgPool2d(2)]
            cin //= 2
    layers += [iabn(cin, "leaky_relu", 0.01), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


# -- pre-activation wide ResNet in mapillary's style (WiderResNet, Wu et al. 2016) ----------
class IdentityResidualBlock(nn.Module):
    """InPlaceABN on the block input (after the previous Add) -> 3x3 conv -> InPlaceABN -> 3x3 conv, + shortcut."""

    def __init__(self, cin: int, channels: tuple[int, int], stride: int) -> None:
        super().__init__()
        self.bn1 = iabn(cin, "leaky_relu", 0.01)
        self.conv1 = nn.Conv2d(cin, channels[0], 3, stride, 1, bias=False)
        self.bn2 = iabn(channels[0], "leaky_relu", 0.01)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3, 1, 1, bias=False)
        needs_projection = stride != 1 or cin != channels[1]
        self.proj = nn.Conv2d(cin, channels[1], 1, stride, bias=False) if needs_projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.bn1(x)
        shortcut = self.proj(pre) if self.proj is not None else x
        return self.conv2(self.bn2(self.conv1(pre))) + shortcut


def wider_resnet20(num_classes: int = 1000) -> nn.Module:
    """WiderResNet-20: structure [1, 1, 1, 3, 1, 1], mapillary's channel plan, at 112x112 in the benchmark."""
    plan = ((128, 128), (256, 256), (512, 512), (512, 1024), (512, 1024), (1024, 2048))
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 3, 1, 1, bias=False)]
    cin = 64
    for stage, (count, channels) in enumerate(zip((1, 1, 1, 3, 1, 1), plan)):
        if stage < 4:
            layers.append(nn.MaxPool2d(3, 2, 1))
        for _ in range(count):
            layers.append(IdentityResidualBlock(cin, channels, 1))
            cin = channels[1]
    layers += [iabn(cin, "leaky_relu", 0.01), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


# -- DeepLabV3-style ASPP head (Chen et al. 2017) on the ResNet-50 trunk -----------------------
class DeeplabV3Head(nn.Module):
    """mapillary's head: 1x1 and three atrous 3x3 convs, concatenated -> InPlaceABN -> 1x1 reduction,
    plus a pooled branch, added -> InPlaceABN."""

    def __init__(self, cin: int, hidden: int = 256, out: int = 256, rates: tuple[int, ...] = (6, 12, 18)) -> None:
        super().__init__()
        self.map_convs = nn.ModuleList(
            [nn.Conv2d(cin, hidden, 1, bias=False)]
            + [nn.Conv2d(cin, hidden, 3, padding=r, dilation=r, bias=False) for r in rates]
        )
        self.map_bn = iabn(hidden * (len(rates) + 1), "leaky_relu", 0.01)
        self.global_pooling_conv = nn.Conv2d(cin, hidden, 1, bias=False)
        self.global_pooling_bn = iabn(hidden, "leaky_relu", 0.01)
        self.red_conv = nn.Conv2d(hidden * (len(rates) + 1), out, 1, bias=False)
        self.pool_red_conv = nn.Conv2d(hidden, out, 1, bias=False)
        self.red_bn = iabn(out, "leaky_relu", 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.red_conv(self.map_bn(torch.cat([m(x) for m in self.map_convs], dim=1)))
        pool = self.global_pooling_bn(self.global_pooling_conv(x.mean(dim=(2, 3), keepdim=True)))
        return self.red_bn(out + self.pool_red_conv(pool))


def aspp_resnet50(num_classes: int = 19) -> nn.Module:
    trunk = list(resnet50().children())[:-3]  # stem and the four stages, without pooling and classifier
    return nn.Sequential(*trunk, DeeplabV3Head(2048), nn.Conv2d(256, num_classes, 1))


NETWORKS = {
    "resnet50": resnet50,
    "tresnet_m": tresnet_m,
    "densenet121": densenet121,
    "wider_resnet20": wider_resnet20,
    "aspp_resnet50": aspp_resnet50,
}
#: input side per network (WiderResNet-20's 2048-channel stages are benchmarked at 112x112)
IMAGE_SIZE = {"wider_resnet20": 112}


def build(name: str, seed: int = 0) -> nn.Module:
    return randomize(NETWORKS[name](), seed).eval()


def to_batchnorm(net: nn.Module) -> nn.Module:
    """The same network with BatchNorm2d (+ LeakyReLU) in place of each InPlaceABN (scale |w|+eps)."""
    net = copy.deepcopy(net)

    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, InPlaceABN):
                bn = nn.BatchNorm2d(child.num_features, eps=child.eps, momentum=child.momentum)
                with torch.no_grad():
                    bn.weight.copy_(child.weight.abs() + child.eps)
                    bn.bias.copy_(child.bias)
                    bn.running_mean.copy_(child.running_mean)
                    bn.running_var.copy_(child.running_var)
                act = {"leaky_relu": nn.LeakyReLU(child.activation_param), "identity": None}[child.activation]
                setattr(parent, name, nn.Sequential(bn, act) if act else bn)
            else:
                swap(child)

    swap(net)
    return net.eval()
