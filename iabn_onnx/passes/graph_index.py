"""One index over a graph for the fold rules: producers, use counts, constants, fresh names.

The rules match and rewrite through it: ``add_init`` keeps the index in step with the graph, and
node replacements and insertions wait in the index until ``commit`` writes the node list once
(editing a protobuf node list in place costs a copy of the list per edit).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from onnx import GraphProto, NodeProto, helper, numpy_helper

from ..graph import fresh_name, subgraphs, tensor_array
from ..op.validation import TensorInfo


class GraphIndex:
    """Indexes over one graph for matching and rewriting."""

    def __init__(
        self, graph: GraphProto, types: dict[str, TensorInfo], base_dir: str = "", used: set[str] | None = None
    ) -> None:
        self.graph = graph
        self.base_dir = base_dir  # where tensors kept as external data are (a session's outline)
        self.types = types  # dtype and shape of each value shape inference could type
        self.ranks = {k: len(v.shape) for k, v in types.items() if v.shape is not None}
        self.inits = {i.name: i for i in graph.initializer}
        self.graph_inputs = {i.name for i in graph.input}
        self.graph_outputs = {o.name for o in graph.output}
        self.producer: dict[str, NodeProto] = {}
        self.uses: Counter[str] = Counter()
        self.nodes: list[NodeProto] = list(graph.node)  # the graph's nodes when indexed, in order
        self._replaced: dict[int, list[NodeProto]] = {}  # id(node) -> the nodes taking its place
        self._after: dict[int, list[NodeProto]] = {}  # id(node) -> nodes to insert after it
        for node in self.nodes:
            for o in node.output:
                self.producer[o] = node
            for i in node.input:
                self.uses[i] += 1
        for g in subgraphs(graph):
            for node in g.node:
                for i in node.input:
                    self.uses[i] += 1
        self.names = set(self.inits) | self.graph_inputs | set(self.producer) | set(self.uses)
        self.node_names = {n.name for n in graph.node}
        if used is not None:  # the caller's names for the whole model (values and nodes), shared
            used |= self.names | self.node_names
            self.names = self.node_names = used

    def is_constant(self, name: str) -> bool:
        """An initializer that is not also a graph input (which a feed could override)."""
        return name in self.inits and name not in self.graph_inputs

    def constant(self, name: str) -> np.ndarray | None:
        return tensor_array(self.inits[name], self.base_dir) if self.is_constant(name) else None

    def private_constant(self, name: str) -> np.ndarray | None:
        """An initializer read by exactly one node."""
        return self.constant(name) if self.uses[name] == 1 else None

    def fresh(self, base: str) -> str:
        return fresh_name(self.names, base)

    def fresh_node(self, base: str) -> str:
        return fresh_name(self.node_names, base)

    def add_init(self, base: str, array: np.ndarray) -> str:
        name = self.fresh(base)
        self.graph.initializer.append(numpy_helper.from_array(array, name))
        self.inits[name] = self.graph.initializer[-1]
        return name

    def replace(self, node: NodeProto, new_nodes: list[NodeProto]) -> None:
        """At ``commit``: ``new_nodes`` stand where ``node`` stands (one of ``nodes``)."""
        self._replaced[id(node)] = list(new_nodes)

    def insert_after(self, anchor: NodeProto, new: NodeProto) -> NodeProto:
        """At ``commit``: ``new`` follows ``anchor`` (one of ``nodes``); returns ``new``, which
        may still be changed until then."""
        self._after.setdefault(id(anchor), []).append(new)
        return new

    def commit(self) -> None:
        """Write the graph's node list once, with every replacement and insertion made so far.
        This ends the pass: the maps above still describe the graph as indexed."""
        if not self._replaced and not self._after:
            return
        out: list[NodeProto] = []
        for node in self.nodes:
            out.extend(self._replaced.get(id(node), [node]))
            out.extend(self._after.get(id(node), []))
        del self.graph.node[:]
        self.graph.node.extend(out)
        self._replaced, self._after = {}, {}


def set_attr(node: NodeProto, name: str, value: object) -> None:
    """In place: set (replace) one attribute of node."""
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)
    node.attribute.append(helper.make_attribute(name, value))


def rename_output(g: GraphIndex, old: str, new: str) -> None:
    """The producer of ``old`` writes ``new`` instead."""
    producer = g.producer[old]
    for i, o in enumerate(producer.output):
        if o == old:
            producer.output[i] = new
    g.producer[new] = producer


def sole_consumer_reason(g: GraphIndex, x: str) -> str | None:
    """Why x cannot be rewritten in place of its one reader, or None."""
    if g.uses[x] != 1:
        return f"'{x}' has {g.uses[x]} consumers"
    if x in g.graph_outputs:
        return f"'{x}' is a graph output"
    return None
