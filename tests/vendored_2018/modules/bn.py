"""Replica of mapillary v0.1.1 ``modules/bn.py`` (see ../README.md)."""

import torch
import torch.nn as nn
import torch.nn.functional as functional

from .functions import ACT_ELU, ACT_LEAKY_RELU, ACT_RELU, inplace_abn, inplace_abn_sync


class ABN(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, activation="leaky_relu", slope=0.01):
        super().__init__()
        self.num_features, self.affine, self.eps, self.momentum = num_features, affine, eps, momentum
        self.activation, self.slope = activation, slope
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        x = functional.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, self.training, self.momentum, self.eps
        )
        if self.activation == ACT_RELU:
            return functional.relu(x)
        if self.activation == ACT_LEAKY_RELU:
            return functional.leaky_relu(x, negative_slope=self.slope)
        if self.activation == ACT_ELU:
            return functional.elu(x)
        return x


class InPlaceABN(ABN):
    def forward(self, x):
        return inplace_abn(
            x,
            self.weight,
            self.bias,
            self.running_mean,
            self.running_var,
            self.training,
            self.momentum,
            self.eps,
            self.activation,
            self.slope,
        )


class InPlaceABNSync(ABN):
    def forward(self, x):
        return inplace_abn_sync(
            x,
            self.weight,
            self.bias,
            self.running_mean,
            self.running_var,
            self.training,
            self.momentum,
            self.eps,
            self.activation,
            self.slope,
        )
