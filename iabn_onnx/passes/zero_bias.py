"""Rule: a Conv or ConvTranspose whose bias is a constant of zeros reads no bias.

before:  Conv(X, W, zeros[C]) -> Y          (torch's plain export of a bias-free Conv, once
                                             ``constant_subgraphs`` has evaluated its bias)
after:   Conv(X, W) -> Y

Preconditions (``check`` returns a reason instead): main graph, default domain; B an initializer
that is not a graph input, a floating-point tensor of zeros.

Formula: Y = conv(X, W) + 0 = conv(X, W) for every finite or infinite value (a -0.0 result becomes
+0.0 with the bias and stays -0.0 without: equal as numbers). onnxruntime's Conv then skips the
bias pass, as it does on torch's optimized export, which writes no bias there.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import NodeProto, helper

from ..graph import tensor_array

PRODUCERS = frozenset({"Conv", "ConvTranspose"})
_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


def check(node: NodeProto, inits: dict[str, onnx.TensorProto], base_dir: str = "") -> str | None:
    """None when ``node``'s bias can go, else why it stays."""
    if node.op_type not in PRODUCERS or node.domain not in ("", "ai.onnx") or len(node.input) < 3 or not node.input[2]:
        return "not a Conv/ConvTranspose with a bias"
    bias = inits.get(node.input[2])
    if bias is None or bias.data_type not in _FLOATS:
        return "bias not a floating-point constant"
    try:
        values = tensor_array(bias, base_dir)
    except (OSError, ValueError) as exc:  # external data not where it says: the session's loader reports that
        return f"bias unreadable ({type(exc).__name__})"
    if np.any(values != 0):
        return "bias not all zeros"
    return None


def rewrite(node: NodeProto) -> NodeProto:
    new = helper.make_node(node.op_type, list(node.input[:2]), list(node.output), name=node.name, domain=node.domain)
    new.attribute.extend(node.attribute)
    return new


def drop_zero_biases(model: onnx.ModelProto, base_dir: str = "") -> int:
    """In place: drop every main-graph Conv/ConvTranspose bias of zeros (see the module doc); return
    how many. The initializers left unread go with the caller's clean-up."""
    graph = model.graph
    inputs = {i.name for i in graph.input}
    inits = {i.name: i for i in graph.initializer if i.name not in inputs}
    nodes = list(graph.node)
    dropped = 0
    for index, node in enumerate(nodes):
        if node.op_type in PRODUCERS and check(node, inits, base_dir) is None:
            nodes[index] = rewrite(node)
            dropped += 1
    if dropped:
        del graph.node[:]
        graph.node.extend(nodes)
    return dropped


__all__ = ["check", "drop_zero_biases", "rewrite"]
