"""Replica of mapillary v0.1.1 ``modules/functions.py`` (see ../README.md): autograd Functions over
a backend that is compiled at import."""

from os import path

import torch.autograd as autograd
from torch.autograd.function import once_differentiable
from torch.utils.cpp_extension import load

_src = path.join(path.dirname(path.abspath(__file__)), "src")
_backend = load(
    name="inplace_abn",
    extra_cflags=["-O3"],
    sources=[
        path.join(_src, f)
        for f in ("inplace_abn.cpp", "inplace_abn_cpu.cpp", "inplace_abn_cuda.cu", "inplace_abn_cuda_half.cu")
    ],
    extra_cuda_cflags=["--expt-extended-lambda"],
)

ACT_RELU, ACT_LEAKY_RELU, ACT_ELU, ACT_NONE = "relu", "leaky_relu", "elu", "none"


def _count(x):
    n = 1
    for i, s in enumerate(x.size()):
        if i != 1:
            n *= s
    return n


def _activate(ctx, x):
    if ctx.activation == ACT_LEAKY_RELU:
        _backend.leaky_relu_forward(x, ctx.slope)
    elif ctx.activation == ACT_ELU:
        _backend.elu_forward(x)


def _deactivate(ctx, x, dx):
    if ctx.activation == ACT_LEAKY_RELU:
        _backend.leaky_relu_backward(x, dx, ctx.slope)
    elif ctx.activation == ACT_ELU:
        _backend.elu_backward(x, dx)


class InPlaceABN(autograd.Function):
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
        ctx.training, ctx.momentum, ctx.eps, ctx.activation, ctx.slope = training, momentum, eps, activation, slope
        ctx.affine = weight is not None and bias is not None
        count = _count(x)
        x = x.contiguous()
        weight = weight.contiguous() if ctx.affine else x.new_empty(0)
        bias = bias.contiguous() if ctx.affine else x.new_empty(0)
        if training:
            mean, var = _backend.mean_var(x)
            running_mean.mul_(1 - momentum).add_(momentum * mean)
            running_var.mul_(1 - momentum).add_(momentum * var * count / (count - 1))
        else:
            mean, var = running_mean.contiguous(), running_var.contiguous()
        # v0.1.1 also marks running_mean/var dirty, which torch >= 1.5 refuses for tensors the Function
        # does not return; the copies still in use mark x alone, as here
        ctx.mark_dirty(x)
        _backend.forward(x, mean, var, weight, bias, ctx.affine, eps)
        _activate(ctx, x)
        ctx.save_for_backward(x, var, weight, bias)
        return x

    @staticmethod
    @once_differentiable
    def backward(ctx, dz):
        z, var, weight, bias = ctx.saved_tensors
        dz = dz.contiguous()
        _deactivate(ctx, z, dz)
        if ctx.training:
            edz, eydz = _backend.edz_eydz(z, dz, weight, bias, ctx.affine, ctx.eps)
        else:
            edz, eydz = dz.new_zeros(dz.size(1)), dz.new_zeros(dz.size(1))
        dx = _backend.backward(z, dz, var, weight, bias, edz, eydz, ctx.affine, ctx.eps)
        dweight = eydz if ctx.affine else None
        if dweight is not None:
            dweight[weight < 0] *= -1
        dbias = edz if ctx.affine else None
        return dx, dweight, dbias, None, None, None, None, None, None, None


class InPlaceABNSync(InPlaceABN):
    """Single-process behaviour of the synchronized Function (no process group here)."""


inplace_abn = InPlaceABN.apply
inplace_abn_sync = InPlaceABNSync.apply
