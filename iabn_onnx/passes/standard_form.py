"""Any valid InplaceABN node as standard ONNX ops, specialized to its own attributes: fold's last rule,
for what no producer fold, BatchNormalization form or per-channel Mul + Add takes (training mode, and
parameters fed at run time), so that a folded model holds no custom node and runs on any runtime.

before:  X, scale, B, mean, var -> InplaceABN(training_mode, epsilon, momentum, act, act_alpha, layout) -> Y [, RM, RV]

after, frozen (training_mode=0):
    Y  = act((X - mean_b) / Sqrt(var_b + epsilon) * scale_b + B_b)
after, training (training_mode=1), the batch statistics over every axis but the channel's:
    mu = ReduceMean(X, keepdims=1)      D = X - mu      v = ReduceMean(D * D, keepdims=1)   (biased)
    Y  = act(D / Sqrt(v + epsilon) * scale_b + B_b)
    RM = mean * momentum + Reshape(mu, [-1]) * (1 - momentum)       (only when the node has that output)
    RV = var  * momentum + Reshape(v,  [-1]) * (1 - momentum)

``p_b`` is the per-channel vector p shaped to broadcast along the channel axis ([1, C, 1, ...] for NCHW,
[C] for NHWC). As the session's kernel does, float16 computes in float32 between Casts; float64's
activation is the expansion onnxruntime's CPU provider runs (``activation.py``). Axes go to ReduceMean as
an input from opset 18, as an attribute before.

Precondition (``check`` returns the reason otherwise): the rank of X is known.
"""

from __future__ import annotations

import numpy as np
from onnx import NodeProto, TensorProto, helper

from ..op.schema import InplaceABNAttrs, Layout, bound_outputs
from .activation import activation_nodes
from .graph_index import GraphIndex

ROUTE = "standard ops"
TRAINING_ROUTE = "standard ops with batch statistics"


def check(rank: int | None) -> str | None:
    if rank is None:
        return "rank of X is unknown (needed for the channel broadcast and the reduced axes)"
    return None


def rewrite(
    g: GraphIndex, node: NodeProto, name: str, attrs: InplaceABNAttrs, dtype: np.dtype, rank: int, opset: int
) -> list[NodeProto]:
    """The nodes that take ``node``'s place (``check`` passed)."""
    x, scale, bias, mean, var = node.input
    outputs = bound_outputs(node)
    compute = np.dtype(np.float32) if dtype == np.float16 else np.dtype(dtype)
    nodes: list[NodeProto] = []

    def add(op: str, inputs: list[str], tag: str, **kwargs: object) -> str:
        out = g.fresh(f"{name}__{tag}")
        nodes.append(helper.make_node(op, inputs, [out], name=g.fresh_node(f"{name}__{tag}"), **kwargs))
        return out

    def const(tag: str, value: object, dtype_: np.dtype | type = compute) -> str:
        return g.add_init(f"{name}__{tag}", np.asarray(value, dtype_))

    def cast_in(value: str, tag: str) -> str:
        return add("Cast", [value], f"{tag}_f32", to=TensorProto.FLOAT) if compute != dtype else value

    axis = 1 if attrs.data_layout is Layout.NCHW else rank - 1
    broadcast = const("channel_shape", [1, -1] + [1] * (rank - 2), np.int64) if axis == 1 else None

    def channel(value: str, tag: str) -> str:
        value = cast_in(value, tag)
        return add("Reshape", [value, broadcast], f"{tag}_b") if broadcast else value

    xc = cast_in(x, "x")
    eps = const("epsilon", attrs.epsilon)
    if attrs.training_mode:
        axes = [a for a in range(rank) if a != axis]

        def reduce_mean(value: str, tag: str) -> str:
            if opset >= 18:
                return add("ReduceMean", [value, const(f"{tag}_axes", axes, np.int64)], tag, keepdims=1)
            return add("ReduceMean", [value], tag, axes=axes, keepdims=1)

        mu = reduce_mean(xc, "batch_mean")
        centered = add("Sub", [xc, mu], "centered")
        v = reduce_mean(add("Mul", [centered, centered], "squared"), "batch_var")
        normalized = add("Div", [centered, add("Sqrt", [add("Add", [v, eps], "var_eps")], "std")], "normalized")
    else:
        centered = add("Sub", [xc, channel(mean, "mean")], "centered")
        std = add("Sqrt", [add("Add", [channel(var, "var"), eps], "var_eps")], "std")
        normalized = add("Div", [centered, std], "normalized")
    scaled = add("Mul", [normalized, channel(scale, "scale")], "scaled")
    z = add("Add", [scaled, channel(bias, "bias")], "affine")
    if compute != dtype:
        activated = g.fresh(f"{name}__activated")
        nodes += activation_nodes(g, name, attrs, compute, z, activated)
        y_name = g.fresh_node(f"{name}__y")
        nodes.append(helper.make_node("Cast", [activated], [outputs[0]], name=y_name, to=TensorProto.FLOAT16))
    else:
        nodes += activation_nodes(g, name, attrs, compute, z, outputs[0])
    if attrs.training_mode:
        flat = const("flat", [-1], np.int64)
        keep, take = const("momentum", attrs.momentum), const("one_minus_momentum", 1.0 - attrs.momentum)
        wanted = ((mean, mu, outputs[1:2], "running_mean"), (var, v, outputs[2:3], "running_var"))
        for running, batch, out, tag in wanted:
            if not out or not out[0]:
                continue
            kept = add("Mul", [cast_in(running, tag), keep], f"{tag}_kept")
            new = add("Mul", [add("Reshape", [batch, flat], f"{tag}_batch"), take], f"{tag}_new")
            if compute != dtype:
                total = add("Add", [kept, new], f"{tag}_sum")
                cast_name = g.fresh_node(f"{name}__{tag}")
                nodes.append(helper.make_node("Cast", [total], [out[0]], name=cast_name, to=TensorProto.FLOAT16))
            else:
                nodes.append(helper.make_node("Add", [kept, new], [out[0]], name=g.fresh_node(f"{name}__{tag}")))
    return nodes
