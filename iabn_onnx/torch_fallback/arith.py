"""The arithmetic of mapillary's InplaceABN in plain PyTorch, shared by the stand-in package
(``inplace_abn`` 1.x API) and the stand-in for the 2018 C++ backend.

From mapillary's published CPU code (``src/inplace_abn_cpu.cpp`` in 1.x,
``modules/src/inplace_abn_cpu.cpp`` in 2018):

* batch statistics: per-channel mean and *biased* variance over every axis but 1;
* running statistics (training, when given): PyTorch momentum,
  ``running = (1-m)·running + m·batch``, with the *unbiased* batch variance;
* ``y = (x - mean)·rsqrt(var + eps)·s + b`` with ``s = |weight| + eps`` (InPlaceABN), or
  ``s = 1`` without weight; then leaky_relu(slope), elu(alpha) or identity.
"""

from typing import Optional

import torch
import torch.nn.functional as F

# No ``from __future__ import annotations`` here, and typing's Optional: every function below
# compiles with torch.jit.script, so that the stand-in modules script as mapillary's ABN does.

ACTIVATIONS = ("identity", "leaky_relu", "elu")


def channel_shape(x: torch.Tensor) -> list[int]:
    """[1, C, 1, ...]: a per-channel vector broadcast against x (N x C x ...)."""
    return [1, -1] + [1] * (x.dim() - 2)


def reduce_dims(x: torch.Tensor) -> list[int]:
    dims = [0]
    for d in range(2, x.dim()):
        dims.append(d)
    return dims


def samples_per_channel(x: torch.Tensor) -> int:
    return x.numel() // x.shape[1] if x.dim() >= 2 and x.shape[1] > 0 else 0


def batch_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance."""
    dims = reduce_dims(x)
    mean = x.mean(dim=dims)
    var = (x - mean.reshape(channel_shape(x))).pow(2).mean(dim=dims)
    return mean, var


def update_running(
    running_mean: Optional[torch.Tensor],
    running_var: Optional[torch.Tensor],
    mean: torch.Tensor,
    var: torch.Tensor,
    count: int,
    momentum: float,
) -> None:
    """PyTorch momentum with the unbiased batch variance, in place."""
    with torch.no_grad():
        if running_mean is not None:
            running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
        if running_var is not None:
            running_var.mul_(1 - momentum).add_(momentum * var.detach() * (count / max(count - 1, 1)))


def effective_scale(weight: Optional[torch.Tensor], eps: float, abs_scale: bool = True) -> Optional[torch.Tensor]:
    """What multiplies the normalized input: |w| + eps (InPlaceABN), w (ABN), None without weight."""
    if weight is None:
        return None
    return weight.abs() + eps if abs_scale else weight


def activate(y: torch.Tensor, activation: str, param: float) -> torch.Tensor:
    if activation == "leaky_relu":
        return F.leaky_relu(y, param)
    if activation == "elu":
        return F.elu(y, param)
    if activation == "identity":
        return y
    raise ValueError("Unknown activation function " + activation)


def inplace_abn_forward(
    x: torch.Tensor,
    weight: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    running_mean: Optional[torch.Tensor],
    running_var: Optional[torch.Tensor],
    training: bool,
    momentum: float,
    eps: float,
    activation: str,
    activation_param: float,
) -> torch.Tensor:
    """mapillary 1.x ``inplace_abn`` (scale |w| + eps), differentiable, not in place."""
    if activation != "identity" and activation != "leaky_relu" and activation != "elu":  # ACTIVATIONS
        raise ValueError("Unknown activation function " + activation)
    if training:
        mean, var = batch_statistics(x)
        if running_mean is not None and running_var is not None:
            update_running(running_mean, running_var, mean, var, samples_per_channel(x), momentum)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("inplace_abn in eval mode needs running_mean and running_var")
        mean, var = running_mean, running_var
    shape = channel_shape(x)
    inv_std = torch.rsqrt(var + eps)
    scale = effective_scale(weight, eps)
    if scale is not None:
        mul = scale * inv_std
        shift = (bias if bias is not None else torch.zeros_like(mean)) - mean * mul
    else:
        mul, shift = inv_std, -mean * inv_std
    return activate(x * mul.reshape(shape) + shift.reshape(shape), activation, activation_param)
