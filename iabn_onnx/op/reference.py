"""The numpy reference for InplaceABN: plain, float64, obviously correct.

Every other implementation (the onnxruntime kernel, the fold pass, the
exporters) is tested against this function. Speed is not a goal here.
"""

from __future__ import annotations

import numpy as np

from .schema import Activation, InplaceABNAttrs


def activation_reference(z: np.ndarray, act: Activation, alpha: float) -> np.ndarray:
    if act is Activation.IDENTITY:
        return z
    if act is Activation.LEAKY_RELU:
        return np.where(z >= 0, z, alpha * z)
    return np.where(z >= 0, z, alpha * np.expm1(np.minimum(z, 0)))


def inplace_abn_reference(
    x: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    attrs: InplaceABNAttrs | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y (inference) or (Y, running_mean, running_var) (training_mode=1).

    Computed in float64 and returned in the input dtypes.
    """
    attrs = attrs or InplaceABNAttrs()
    rank = x.ndim
    axis = attrs.channel_axis(rank)
    bshape = [1] * rank
    bshape[axis] = -1
    x64 = x.astype(np.float64)
    scale64, bias64, mean64, var64 = (np.asarray(a, np.float64) for a in (scale, bias, mean, var))
    if attrs.training_mode:
        reduce_axes = tuple(i for i in range(rank) if i != axis)
        batch_mean = x64.mean(axis=reduce_axes)
        batch_var = x64.var(axis=reduce_axes)  # biased, as ONNX BatchNormalization-15
        use_mean, use_var = batch_mean, batch_var
    else:
        use_mean, use_var = mean64, var64
    z = (x64 - use_mean.reshape(bshape)) / np.sqrt(use_var.reshape(bshape) + attrs.epsilon)
    z = z * scale64.reshape(bshape) + bias64.reshape(bshape)
    y = activation_reference(z, attrs.act, attrs.act_alpha).astype(x.dtype)
    if not attrs.training_mode:
        return y
    m = attrs.momentum
    running_mean = (mean64 * m + batch_mean * (1 - m)).astype(np.asarray(mean).dtype)
    running_var = (var64 * m + batch_var * (1 - m)).astype(np.asarray(var).dtype)
    return y, running_mean, running_var


def reference_evaluator(model: object) -> object:
    """onnx's ReferenceEvaluator with InplaceABN implemented by ``inplace_abn_reference``.

    An independent oracle for whole models: the standard ops run in onnx's
    reference implementation, the custom node in the float64 reference.
    """
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    from .schema import DOMAIN, OP_TYPE

    class InplaceABN(OpRun):
        op_domain = DOMAIN

        def _run(self, x, scale, bias, mean, var, **kwargs):  # type: ignore[no-untyped-def]
            attrs = InplaceABNAttrs.from_node(self.onnx_node)
            result = inplace_abn_reference(x, scale, bias, mean, var, attrs)
            outputs = result if isinstance(result, tuple) else (result,)
            return tuple(outputs[: len(self.onnx_node.output)])

    assert InplaceABN.__name__ == OP_TYPE
    return ReferenceEvaluator(model, new_ops=[InplaceABN])
