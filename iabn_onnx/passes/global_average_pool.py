"""Rule: a ReduceMean over every spatial axis of a channels-first tensor is a GlobalAveragePool.

before:  ReduceMean(X[N, C, d1..dk], axes = {2..k+1}, keepdims=1) -> Y[N, C, 1..1]
after:   GlobalAveragePool(X) -> Y

before:  ReduceMean(X[N, C, d1..dk], axes = {2..k+1}, keepdims=0) -> Y[N, C]
after:   GlobalAveragePool(X) -> Flatten(axis=1) -> Y

torch exports ``x.mean((2, 3), keepdim=True)`` (squeeze-excitation, timm's fast adaptive pool) as the
ReduceMean. onnxruntime quantizes a GlobalAveragePool (QLinearGlobalAveragePool, which runs on its NHWC
int8 layout) but runs a ReduceMean in float between DequantizeLinear and QuantizeLinear, with the layout
transposed back around it: on TResNet-M that float island was 13% of the int8 model's time. ``quantize``
applies the rule; fold does not (in float32 onnxruntime runs both forms at the same speed).

Preconditions (``check`` returns a reason instead): main graph, default domain, float data; X's rank
k + 2 known and at least 3; the axes constant (the attribute before opset 18, an initializer from 18;
negative axes count from the end), naming each of 2..k+1 once; ``noop_with_empty_axes`` irrelevant
(the axes are not empty).

Formula: both are the mean over the spatial axes, Y[n, c] = Σ X[n, c, ·] / (d1·…·dk); Flatten(axis=1)
of [N, C, 1, …, 1] is [N, C]. Only the order of the float sum may differ.
"""

from __future__ import annotations

import onnx
from onnx import NodeProto, helper

from ..graph import fresh_name, node_attr, tensor_array
from ..op.validation import TensorInfo
from .node_rule import apply_rule

_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


def check(node: NodeProto, types: dict[str, TensorInfo], inits: dict[str, onnx.TensorProto]) -> str | None:
    """None when ``node`` is a mean over every spatial axis, else why not."""
    if node.op_type != "ReduceMean" or node.domain not in ("", "ai.onnx") or not node.input:
        return "not a ReduceMean"
    info = types.get(node.input[0])
    if info is None or info.shape is None or info.elem_type not in _FLOATS:
        return "input's type or rank unknown"
    rank = len(info.shape)
    if rank < 3:
        return f"input of rank {rank}: no spatial axis"
    if len(node.input) > 1 and node.input[1]:
        if node.input[1] not in inits:
            return "axes not a constant"
        axes = [int(a) for a in tensor_array(inits[node.input[1]]).reshape(-1)]
    else:
        axes = list(node_attr(node, "axes", []) or [])
    normalized = sorted(a + rank if a < 0 else a for a in axes)
    if normalized != list(range(2, rank)):
        return f"axes {axes} are not every spatial axis of a rank-{rank} input"
    return None


def rewrite(
    node: NodeProto, types: dict[str, TensorInfo], inits: dict[str, onnx.TensorProto], names: set[str]
) -> tuple[list[NodeProto], list[onnx.TensorProto]]:
    """``node`` as a GlobalAveragePool, and a Flatten when it drops the reduced axes (its names fresh in
    ``names``); no new initializer."""
    if node_attr(node, "keepdims", 1):
        return [helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output), name=node.name)], []
    pooled = fresh_name(names, f"{node.output[0]}__pooled")
    flatten = fresh_name(names, f"{node.name or node.output[0]}__flatten")
    return [
        helper.make_node("GlobalAveragePool", [node.input[0]], [pooled], name=node.name),
        helper.make_node("Flatten", [pooled], list(node.output), name=flatten, axis=1),
    ], []


def global_average_pools(model: onnx.ModelProto, types: dict[str, TensorInfo]) -> int:
    """In place: every main-graph ReduceMean over all spatial axes becomes a GlobalAveragePool (see the
    module doc), and initializers no node reads any more go; return how many. ``types`` is
    ``type_table(model)``."""
    return apply_rule(model, types, "ReduceMean", check, rewrite)


__all__ = ["check", "global_average_pools", "rewrite"]
