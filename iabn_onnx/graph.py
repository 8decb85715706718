"""Small graph helpers shared by the lowering, fold and convert code."""

from __future__ import annotations

from collections.abc import Iterator

import onnx
from onnx import GraphProto


def subgraphs(graph: GraphProto) -> Iterator[GraphProto]:
    """Every subgraph (If/Loop/Scan bodies) nested in graph, depth first; not graph itself."""
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield attr.g
                yield from subgraphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield g
                    yield from subgraphs(g)


def fresh_name(used: set[str], base: str) -> str:
    """base, or base_1, base_2, ... : the first not in used (which then records it)."""
    name, k = base, 0
    while name in used:
        k += 1
        name = f"{base}_{k}"
    used.add(name)
    return name
