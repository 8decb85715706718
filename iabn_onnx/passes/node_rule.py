"""The driver of a one-node rule: every main-graph node of one op type that the rule's ``check`` passes
is replaced by what its ``rewrite`` returns (``global_average_pool``, ``batchnorm_as_conv``)."""

from __future__ import annotations

from collections.abc import Callable

import onnx
from onnx import NodeProto, TensorProto

from ..graph import drop_unused_initializers, used_names
from ..op.validation import TensorInfo

Inits = dict[str, TensorProto]
#: (node, types, initializers) -> None when the rule applies, else why not
Check = Callable[[NodeProto, dict[str, TensorInfo], Inits], str | None]
#: (node, types, initializers, names in use) -> the nodes taking its place and the initializers they add
Rewrite = Callable[[NodeProto, dict[str, TensorInfo], Inits, set[str]], tuple[list[NodeProto], list[TensorProto]]]


def apply_rule(
    model: onnx.ModelProto, types: dict[str, TensorInfo], op_type: str, check: Check, rewrite: Rewrite
) -> int:
    """In place: rewrite every main-graph ``op_type`` node ``check`` passes; then drop the initializers no
    node reads any more. Return how many nodes were rewritten. ``types`` is ``type_table(model)``."""
    graph = model.graph
    inputs = {i.name for i in graph.input}
    inits = {i.name: i for i in graph.initializer if i.name not in inputs}  # a graph input can be fed
    names: set[str] | None = None
    nodes: list[NodeProto] = []
    rewritten = 0
    for node in graph.node:
        if node.op_type != op_type or check(node, types, inits) is not None:
            nodes.append(node)
            continue
        if names is None:
            names = used_names(graph)
        new_nodes, tensors = rewrite(node, types, inits, names)
        nodes += new_nodes
        graph.initializer.extend(tensors)
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
        drop_unused_initializers(model)
    return rewritten


__all__ = ["Check", "Rewrite", "apply_rule"]
