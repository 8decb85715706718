"""Faithful replicas of mapillary ``inplace_abn`` and timm ``InplaceAbn`` modules.

The real mapillary package does not install from PyPI as published (its version
metadata reads 0.0.0) and needs a C++/CUDA build, so the tests use these: same
class names, attribute names, defaults and forward math (mapillary's
``forward_cpu``: scale = |weight| + eps, weight None -> 1; momentum is
PyTorch-style; running_var gets the unbiased batch variance). Written from the
documented behaviour, pure torch.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _reference_inplace_abn(x, weight, bias, running_mean, running_var, training, momentum, eps, activation, param):
    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    if training:
        mean = x.mean(dim=dims)
        var = x.var(dim=dims, unbiased=False)
        if running_mean is not None and running_var is not None:
            count = x.numel() // x.shape[1]
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(momentum * mean)
                running_var.mul_(1 - momentum).add_(momentum * var * count / (count - 1))
    else:
        mean, var = running_mean, running_var
    inv_std = torch.rsqrt(var + eps)
    if weight is not None:
        abs_weight = weight.abs() + eps
        scale, shift = abs_weight * inv_std, bias - mean * abs_weight * inv_std
    else:
        scale, shift = inv_std, -mean * inv_std
    y = x * scale.reshape(shape) + shift.reshape(shape)
    if activation == "leaky_relu":
        return F.leaky_relu(y, param)
    if activation == "elu":
        return F.elu(y, param)
    if activation == "identity":
        return y
    raise ValueError(f"Unknown activation function {activation}")


def inplace_abn(
    x, weight, bias, running_mean, running_var, training=True, momentum=0.1, eps=1e-05, activation="leaky_relu",
    activation_param=0.01,
):  # fmt: skip
    """mapillary >= 1.0 functional form (its elu takes alpha = activation_param)."""
    return _reference_inplace_abn(
        x, weight, bias, running_mean, running_var, training, momentum, eps, activation, activation_param
    )


def _affine_and_stats(module: nn.Module, num_features: int, affine: bool, track_running_stats: bool) -> None:
    """weight/bias (ones/zeros, or None) and running_mean/var buffers (zeros/ones), as both packages do."""
    if affine:
        module.weight = nn.Parameter(torch.ones(num_features))
        module.bias = nn.Parameter(torch.zeros(num_features))
    else:
        module.register_parameter("weight", None)
        module.register_parameter("bias", None)
    if track_running_stats:
        module.register_buffer("running_mean", torch.zeros(num_features))
        module.register_buffer("running_var", torch.ones(num_features))


class ABN(nn.Module):
    """mapillary inplace_abn.ABN: BatchNorm + activation (plain weight)."""

    def __init__(
        self,
        num_features,
        eps=1e-5,
        momentum=0.1,
        affine=True,
        track_running_stats=True,
        activation="leaky_relu",
        activation_param=0.01,
    ):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.activation = activation
        self.activation_param = activation_param
        _affine_and_stats(self, num_features, affine, track_running_stats)
        if track_running_stats:
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.register_parameter("running_mean", None)
            self.register_parameter("running_var", None)
            self.register_parameter("num_batches_tracked", None)

    def _get_momentum_and_training(self):
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked = self.num_batches_tracked + 1
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        training = True if self.training else (self.running_mean is None and self.running_var is None)
        return momentum, training

    def _get_running_stats(self):
        keep = not self.training or self.track_running_stats
        return (self.running_mean if keep else None), (self.running_var if keep else None)

    def forward(self, x):
        momentum, training = self._get_momentum_and_training()
        running_mean, running_var = self._get_running_stats()
        x = F.batch_norm(x, running_mean, running_var, self.weight, self.bias, training, momentum, self.eps)
        if self.activation == "relu":
            return F.relu(x)
        if self.activation == "leaky_relu":
            return F.leaky_relu(x, negative_slope=self.activation_param)
        if self.activation == "elu":
            return F.elu(x, alpha=self.activation_param)
        if self.activation == "identity":
            return x
        raise RuntimeError(f"Unknown activation function {self.activation}")


class InPlaceABN(ABN):
    """mapillary inplace_abn.InPlaceABN: scale = |weight| + eps."""

    def forward(self, x):
        momentum, training = self._get_momentum_and_training()
        running_mean, running_var = self._get_running_stats()
        return _reference_inplace_abn(
            x,
            self.weight,
            self.bias,
            running_mean,
            running_var,
            training,
            momentum,
            self.eps,
            self.activation,
            self.activation_param,
        )


class InPlaceABNSync(InPlaceABN):
    """mapillary inplace_abn.InPlaceABNSync; without torch.distributed it is InPlaceABN."""

    def __init__(self, *args, group=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.group = group


class InplaceAbn(nn.Module):
    """timm.layers.InplaceAbn: act_name / act_param, calls mapillary's inplace_abn."""

    def __init__(
        self,
        num_features,
        eps=1e-5,
        momentum=0.1,
        affine=True,
        apply_act=True,
        act_layer="leaky_relu",
        act_param=0.01,
        drop_layer=None,
    ):
        super().__init__()
        self.num_features = num_features
        self.affine = affine
        self.eps = eps
        self.momentum = momentum
        self.act_name = (act_layer or "identity") if apply_act else "identity"
        self.act_param = act_param
        _affine_and_stats(self, num_features, affine, track_running_stats=True)

    def forward(self, x):
        return _reference_inplace_abn(
            x,
            self.weight,
            self.bias,
            self.running_mean,
            self.running_var,
            self.training,
            self.momentum,
            self.eps,
            self.act_name,
            self.act_param,
        )


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights (some negative, so |w| matters) and non-trivial running statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if getattr(m, "running_mean", None) is not None:
                n = m.running_mean.shape[0]
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.25)
            if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight is not None and m.weight.dim() == 1:
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                if getattr(m, "bias", None) is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.3)
    return module


def inplacabn_to_abn(module: nn.Module, abn_cls: type, inplace_abn_cls: type) -> nn.Module:
    """The original TResNet repository's ``InplacABN_to_ABN`` (Alibaba-MIIL/TResNet,
    ``src/models/tresnet/tresnet.py``), which its inference script runs before ``torch.jit.script``:
    each InPlaceABN becomes ``ABN(num_features, activation=..., activation_param=...)`` with the state
    copied and ``weight = |w| + eps``. The two classes are passed in (the repository imports them
    from ``inplace_abn``)."""
    if isinstance(module, inplace_abn_cls):
        module_new = abn_cls(
            module.num_features, activation=module.activation, activation_param=module.activation_param
        )
        for key in module.state_dict():
            module_new.state_dict()[key].copy_(module.state_dict()[key])
        module_new.training = module.training
        module_new.weight.data = module_new.weight.abs() + module_new.eps
        return module_new
    for name, child in reversed(module._modules.items()):
        new_child = inplacabn_to_abn(child, abn_cls, inplace_abn_cls)
        if new_child != child:
            module._modules[name] = new_child
    return module
