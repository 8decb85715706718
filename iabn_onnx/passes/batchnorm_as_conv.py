"""Rule: an inference BatchNormalization with constant statistics is a depthwise 1×1 Conv.

before:  BatchNormalization(X[N, C, ...], scale, B, mean, var, epsilon) -> Y
after:   Conv(X, W[C, 1, 1, ...], b, group=C) -> Y
         W = scale / √(var + epsilon),  b = B − mean · W      (computed in float64, stored as float32)

fold writes a BatchNormalization for an InplaceABN node that has no producer to fold into (after a
Concat or an Add: DenseNet's and the pre-activation networks' nodes). onnxruntime has no int8
BatchNormalization: it ran those in float between DequantizeLinear and QuantizeLinear, with the int8
NHWC layout transposed around each, and DenseNet-121's int8 model was barely faster than fp32. As a
depthwise Conv, each is quantized like any Conv (QLinearConv, on the NHWC layout). ``quantize`` applies
the rule.

Preconditions (``check`` returns a reason instead): main graph, default domain; one output (inference:
no running statistics out, ``training_mode`` 0); ``spatial`` 1 where the opset has it; scale, B, mean
and var float32 initializers (not graph inputs) of shape [C]; X float32 (what onnxruntime quantizes; it has
no float64 Conv) of known rank ≥ 3.

Formula: Y = (X − mean) / √(var + ε) · scale + B = X · W + b per channel, which the Conv computes
(one product per output, the kernel being 1×1 and the group one channel). Only float rounding differs.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import NodeProto, helper, numpy_helper

from ..graph import fresh_name, node_attr, tensor_array
from ..op.validation import TensorInfo
from .node_rule import apply_rule

FLOAT = onnx.TensorProto.FLOAT


def check(node: NodeProto, types: dict[str, TensorInfo], inits: dict[str, onnx.TensorProto]) -> str | None:
    """None when ``node`` can be a depthwise Conv, else why not."""
    if node.op_type != "BatchNormalization" or node.domain not in ("", "ai.onnx") or len(node.input) != 5:
        return "not a BatchNormalization"
    if len([o for o in node.output if o]) != 1 or node_attr(node, "training_mode", 0):
        return "training form (running statistics as outputs)"
    if node_attr(node, "spatial", 1) != 1:
        return "spatial=0 (statistics per element, not per channel)"
    params = [inits.get(name) for name in node.input[1:]]
    if any(p is None for p in params):
        return "scale, B, mean or var not a constant"
    dtypes = {p.data_type for p in params if p is not None}
    shapes = {tuple(p.dims) for p in params if p is not None}
    if dtypes != {FLOAT} or len(shapes) != 1 or len(next(iter(shapes))) != 1:
        return "parameters not four float32 vectors of one length"
    info = types.get(node.input[0])
    if info is None or info.shape is None or info.elem_type != FLOAT:
        return "input's rank unknown, or input not float32"
    if len(info.shape) < 3:
        return f"input of rank {len(info.shape)}: no spatial axis for a Conv"
    return None


def rewrite(
    node: NodeProto, types: dict[str, TensorInfo], inits: dict[str, onnx.TensorProto], names: set[str]
) -> tuple[list[NodeProto], list[onnx.TensorProto]]:
    """The Conv taking ``node``'s place and its two new initializers (``check`` passed)."""
    shape = types[node.input[0]].shape
    assert shape is not None
    rank = len(shape)
    scale, bias, mean, var = (tensor_array(inits[name]).astype(np.float64) for name in node.input[1:])
    epsilon = float(node_attr(node, "epsilon", 1e-5))  # type: ignore[arg-type]
    weight = scale / np.sqrt(var + epsilon)
    channels = weight.shape[0]
    w = numpy_helper.from_array(
        weight.reshape(channels, 1, *([1] * (rank - 2))).astype(np.float32), fresh_name(names, f"{node.name}__weight")
    )
    b = numpy_helper.from_array((bias - mean * weight).astype(np.float32), fresh_name(names, f"{node.name}__bias"))
    conv = helper.make_node(
        "Conv", [node.input[0], w.name, b.name], list(node.output[:1]), name=node.name, group=channels,
        kernel_shape=[1] * (rank - 2),
    )  # fmt: skip
    return [conv], [w, b]


def batchnorms_as_convs(model: onnx.ModelProto, types: dict[str, TensorInfo]) -> int:
    """In place: every main-graph inference BatchNormalization with constant statistics becomes a depthwise
    1×1 Conv (see the module doc), and initializers no node reads any more go; return how many. ``types`` is
    ``type_table(model)``."""
    return apply_rule(model, types, "BatchNormalization", check, rewrite)


__all__ = ["batchnorms_as_convs", "check", "rewrite"]
