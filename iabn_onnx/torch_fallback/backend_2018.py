"""A pure-PyTorch stand-in for the C++/CUDA extension that 2018-era InplaceABN copies compile
at import (``torch.utils.cpp_extension.load(name="inplace_abn", sources=[inplace_abn.cpp, ...])``).

The functions and their semantics follow the published pybind module (``modules/src/
inplace_abn.cpp`` and ``inplace_abn_cpu.cpp`` of mapillary's 2018 tags): the caller's
autograd Function relies on ``forward``, the activations and their backward inverting ``z``
in place, so these do too.
"""

from __future__ import annotations

import torch

from .arith import batch_statistics, channel_shape, reduce_dims, samples_per_channel

#: what torch.utils.cpp_extension.load would have named the module
__name_of_extension__ = "inplace_abn"


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(channel_shape(x))


def _gamma(weight: torch.Tensor, affine: bool, eps: float, like: torch.Tensor) -> torch.Tensor:
    return weight.abs() + eps if affine else torch.ones_like(like)


def _invert_affine(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, affine: bool, eps: float) -> torch.Tensor:
    if not affine:
        return z
    return (z - _bcast(bias, z)) / _bcast(weight.abs() + eps, z)


def mean_var(x: torch.Tensor) -> list[torch.Tensor]:
    """Per-channel mean and biased variance."""
    return list(batch_statistics(x))


def forward(
    x: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    affine: bool,
    eps: float,
) -> torch.Tensor:
    """In place: x <- (x - mean)·rsqrt(var + eps)·(|w| + eps) + b (no scale, no bias without affine)."""
    mul = torch.rsqrt(var + eps) * _gamma(weight, affine, eps, var)
    x.sub_(_bcast(mean, x)).mul_(_bcast(mul, x))
    if affine:
        x.add_(_bcast(bias, x))
    return x


def edz_eydz(
    z: torch.Tensor, dz: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, affine: bool, eps: float
) -> list[torch.Tensor]:
    dims = reduce_dims(z)
    y = _invert_affine(z, weight, bias, affine, eps)
    return [dz.sum(dim=dims), (y * dz).sum(dim=dims)]


def backward(
    z: torch.Tensor,
    dz: torch.Tensor,
    var: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    edz: torch.Tensor,
    eydz: torch.Tensor,
    affine: bool,
    eps: float,
) -> torch.Tensor:
    y = _invert_affine(z, weight, bias, affine, eps)
    mul = torch.rsqrt(var + eps) * _gamma(weight, affine, eps, var)
    num = samples_per_channel(z)
    return (dz - _bcast(edz / num, dz) - y * _bcast(eydz / num, dz)) * _bcast(mul, dz)


def leaky_relu_forward(z: torch.Tensor, slope: float) -> None:
    torch.nn.functional.leaky_relu_(z, slope)


def leaky_relu_backward(z: torch.Tensor, dz: torch.Tensor, slope: float) -> None:
    """Inverts the activation in z and scales dz, in place, where z < 0."""
    negative = z < 0
    z[negative] *= 1 / slope
    dz[negative] *= slope


def elu_forward(z: torch.Tensor) -> None:
    torch.nn.functional.elu_(z)


def elu_backward(z: torch.Tensor, dz: torch.Tensor) -> None:
    """Inverts elu (alpha 1) in z, then scales dz by (inverted z + 1), in place, where z < 0.

    The order is the published CPU code's (``z = log1p(z); dz *= z + 1``), kept as it is."""
    negative = z < 0
    z[negative] = torch.log1p(z[negative])
    dz[negative] *= z[negative] + 1
