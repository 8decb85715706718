"""Replicas of the pre-1.0 mapillary ``inplace_abn`` module (2018-2019).

Segmentation repositories (human parsing, CCNet/OCNet-style) vendored this version into
their own ``modules/`` folder. Written from its published behaviour:

* ``ABN``, ``InPlaceABN``, ``InPlaceABNSync`` with
  ``__init__(num_features, eps=1e-5, momentum=0.1, affine=True, activation="leaky_relu", slope=0.01)``;
  activation is ``"leaky_relu"``, ``"elu"`` (alpha fixed at 1.0), ``"none"``, or ``"relu"`` (ABN only);
* ``InPlaceABN``/``InPlaceABNSync``: ``act((x - mean)/sqrt(var + eps)·(|w| + eps) + b)``, no
  scale term with ``affine=False``; ``ABN``: ``F.batch_norm`` with ``w`` as is, then the activation;
* running statistics: PyTorch momentum, unbiased batch variance;
* the functional form ``inplace_abn(x, weight, bias, running_mean, running_var, training,
  momentum, eps, activation, slope)`` is an autograd Function's ``apply``. Some copies
  return ``(x, running_mean, running_var)`` from it (here ``inplace_abn_sync``, as in the
  human-parsing copies), others ``x``.

The real forward calls a JIT-compiled C++/CUDA extension that nothing may trace into. The
stand-in ``_extension`` computes through numpy and, like a C++ op with no fake kernel, raises
on the fake tensors torch.export traces with: an export that runs it fails, as it would with
the real module.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import autograd
from torch._subclasses.fake_tensor import is_fake

ACT_RELU, ACT_LEAKY_RELU, ACT_ELU, ACT_NONE = "relu", "leaky_relu", "elu", "none"


def _extension(x, weight, bias, running_mean, running_var, training, momentum, eps, activation, slope):
    """The C++ extension's work, opaque to tracing (numpy)."""
    if is_fake(x):
        raise RuntimeError("inplace_abn C++ extension: no fake (meta) implementation, cannot be traced")
    a = x.detach().cpu().numpy().astype(np.float64)
    shape = [1, -1] + [1] * (a.ndim - 2)
    axes = tuple(i for i in range(a.ndim) if i != 1)
    if training:
        mean, var = a.mean(axis=axes), a.var(axis=axes)
        count = a.size // a.shape[1]
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(torch.from_numpy(momentum * mean).to(running_mean.dtype))
            unbiased = var * count / (count - 1)
            running_var.mul_(1 - momentum).add_(torch.from_numpy(momentum * unbiased).to(running_var.dtype))
    else:
        mean = running_mean.detach().cpu().numpy().astype(np.float64)
        var = running_var.detach().cpu().numpy().astype(np.float64)
    y = (a - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    if weight is not None:
        w = np.abs(weight.detach().cpu().numpy().astype(np.float64)) + eps
        y = y * w.reshape(shape) + bias.detach().cpu().numpy().astype(np.float64).reshape(shape)
    if activation == ACT_LEAKY_RELU:
        y = np.where(y >= 0, y, y * slope)
    elif activation == ACT_ELU:
        y = np.where(y >= 0, y, np.expm1(np.minimum(y, 0)))
    elif activation != ACT_NONE:
        raise ValueError(f"Unknown activation function {activation}")
    return torch.from_numpy(y).to(x.dtype)


class _InPlaceABN(autograd.Function):
    @staticmethod
    def forward(
        ctx,
        x,
        weight,
        bias,
        running_mean,
        running_var,
        training=True,
        momentum=0.1,
        eps=1e-05,
        activation=ACT_LEAKY_RELU,
        slope=0.01,
    ):
        y = _extension(x, weight, bias, running_mean, running_var, training, momentum, eps, activation, slope)
        x.data.copy_(y)
        ctx.mark_dirty(x)
        return x


class _InPlaceABNSync(autograd.Function):
    @staticmethod
    def forward(
        ctx,
        x,
        weight,
        bias,
        running_mean,
        running_var,
        training=True,
        momentum=0.1,
        eps=1e-05,
        activation=ACT_LEAKY_RELU,
        slope=0.01,
    ):
        y = _extension(x, weight, bias, running_mean, running_var, training, momentum, eps, activation, slope)
        x.data.copy_(y)
        ctx.mark_dirty(x, running_mean, running_var)
        ctx.mark_non_differentiable(running_mean, running_var)
        return x, running_mean, running_var


inplace_abn = _InPlaceABN.apply
inplace_abn_sync = _InPlaceABNSync.apply


class ABN(nn.Module):
    """Activated Batch Normalization (pre-1.0)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, activation="leaky_relu", slope=0.01):
        super().__init__()
        self.num_features = num_features
        self.affine = affine
        self.eps = eps
        self.momentum = momentum
        self.activation = activation
        self.slope = slope
        if self.affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        x = F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, self.training, self.momentum, self.eps
        )
        if self.activation == ACT_RELU:
            return F.relu(x, inplace=True)
        if self.activation == ACT_LEAKY_RELU:
            return F.leaky_relu(x, negative_slope=self.slope, inplace=True)
        if self.activation == ACT_ELU:
            return F.elu(x, inplace=True)
        return x


class InPlaceABN(ABN):
    """InPlace Activated Batch Normalization (pre-1.0)."""

    def forward(self, x):
        return inplace_abn(
            x.clone(),  # the real one works in place; the clone keeps the caller's tensor
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
    """InPlace Activated Batch Normalization with cross-GPU synchronization (pre-1.0, single device here)."""

    def forward(self, x):
        x, _, _ = inplace_abn_sync(
            x.clone(),
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
        return x
