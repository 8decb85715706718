"""``inplace_abn.functions`` of mapillary 1.x: the functional forms, in plain PyTorch.

Unlike the compiled original these return a new tensor instead of overwriting ``x``; callers
use the return value either way. Gradients come from autograd.
"""

import warnings
from typing import Any, Optional

import torch

from iabn_onnx.torch_fallback.arith import inplace_abn_forward, samples_per_channel

# inplace_abn compiles with torch.jit.script (the scripted modules call it): typing's Optional, no
# ``from __future__ import annotations``.


def _check_samples(name: str, x: torch.Tensor, training: bool) -> None:
    if training and samples_per_channel(x) <= 1:
        raise ValueError(
            name + " is trying to compute batch statistics, but the input tensor only contains a single sample "
            "per channel"
        )


def inplace_abn(
    x: torch.Tensor,
    weight: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    running_mean: Optional[torch.Tensor],
    running_var: Optional[torch.Tensor],
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-05,
    activation: str = "leaky_relu",
    activation_param: float = 0.01,
) -> torch.Tensor:
    """act((x - mean)/sqrt(var + eps)·(|weight| + eps) + bias); batch statistics when training."""
    _check_samples("inplace_abn", x, training)
    return inplace_abn_forward(
        x, weight, bias, running_mean, running_var, training, momentum, eps, activation, activation_param
    )


def inplace_abn_sync(
    x: torch.Tensor,
    weight: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    running_mean: Optional[torch.Tensor],
    running_var: Optional[torch.Tensor],
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-05,
    activation: str = "leaky_relu",
    activation_param: float = 0.01,
    group: Any = None,
) -> torch.Tensor:
    """``inplace_abn`` with statistics synchronized across processes; this stand-in has no
    distributed reduction, so a training call in an initialized process group is refused."""
    _check_samples("inplace_abn_sync", x, training)
    if training and torch.distributed.is_available() and torch.distributed.is_initialized():
        raise RuntimeError(
            "inplace_abn_sync: the iabn_onnx stand-in does not synchronize batch statistics across processes; "
            "install mapillary's inplace_abn for distributed training"
        )
    if training:
        warnings.warn(
            "inplace_abn_sync is being called, but torch.distributed is not initialized. "
            "Reverting to non-synchronized inplace_abn.",
            category=RuntimeWarning,
            stacklevel=2,
        )
    return inplace_abn_forward(
        x, weight, bias, running_mean, running_var, training, momentum, eps, activation, activation_param
    )


__all__ = ["inplace_abn", "inplace_abn_sync"]
