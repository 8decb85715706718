"""Rule: a Reshape whose target is assembled from its own input's dimensions gets a constant target.

before:  Shape(X, 0, 1) -> Squeeze -> Reshape([-1]) -> Concat(·, [2048]) -> Reshape(T, ·, allowzero=1) -> Gemm
after:   Reshape(T, [0, 2048], allowzero=0) -> Gemm          (torch's plain export of ``x.flatten(1)``)

The target's elements are followed through ``Shape``, ``Slice``, ``Gather``, ``Squeeze``,
``Unsqueeze``, ``Reshape``, ``Concat``, ``Cast`` (to int64) and ``Identity`` on 0-d and 1-d int64
values, each element either a number (an initializer) or a dimension of some tensor ``S``.

Preconditions (``check`` returns a reason instead):
* main graph, default domain, the target's chain made of the ops above, every piece constant
  except ``Shape``'s input;
* every dimension element at position k of the target names the same dimension as T's dim k:
  both carry one ``dim_param`` (ONNX: one symbol is one size throughout the graph), from shape
  inference;
* ``allowzero=1`` only when no number element is 0 (that 0 means "size 0" there, and would
  become "copy" here).

Formula: with ``allowzero=0`` a target element 0 at position k copies T's dim k, which is the
element's value by the second precondition, so the output shape is unchanged for every input.
The chain's nodes no one else reads are removed; their initializers go with the caller's
clean-up. Static dimensions need no rule: ``constant_subgraphs`` evaluates those shapes.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import NodeProto, TensorProto, helper, numpy_helper

from ..graph import fresh_name, subgraphs, used_names
from ..graph import node_attr as _attr
from ..op.validation import TensorInfo

#: a target element: a number, or the symbol of a dimension
Element = int | str
#: a 0-d (scalar) or 1-d int64 value as its elements
Vector = tuple[bool, tuple[Element, ...]]  # (is_scalar, elements)

CHAIN_OPS = frozenset({"Shape", "Slice", "Gather", "Squeeze", "Unsqueeze", "Reshape", "Concat", "Cast", "Identity"})
_INTS = (TensorProto.INT64, TensorProto.INT32)
_MAX_NUMBERS = 64  # a target is a handful of numbers; anything longer is not a shape


class _Values:
    """Symbolic int64 vectors of one graph, memoised per value name."""

    def __init__(self, graph: onnx.GraphProto, types: dict[str, TensorInfo]) -> None:
        self.types = types
        self.producer = {o: n for n in graph.node for o in n.output}
        inputs = {i.name for i in graph.input}
        self.inits = {i.name: i for i in graph.initializer if i.name not in inputs}
        self.memo: dict[str, Vector | None] = {}

    def numbers(self, name: str) -> list[int] | None:
        v = self.vector(name)
        if v is None or any(isinstance(e, str) for e in v[1]):
            return None
        return [int(e) for e in v[1]]

    def vector(self, name: str) -> Vector | None:
        if name not in self.memo:
            self.memo[name] = None  # a cycle (an invalid graph) ends here
            try:
                self.memo[name] = self._vector(name)
            except (ValueError, IndexError, TypeError, RecursionError):  # malformed, or a chain too deep to follow
                self.memo[name] = None
        return self.memo[name]

    def _vector(self, name: str) -> Vector | None:
        init = self.inits.get(name)
        if init is not None:
            if init.data_type not in _INTS or len(init.dims) > 1 or (init.dims and init.dims[0] > _MAX_NUMBERS):
                return None
            if init.data_location == TensorProto.EXTERNAL:  # a few numbers are never worth a file read
                return None
            array = numpy_helper.to_array(init)
            return array.ndim == 0, tuple(int(e) for e in array.ravel())
        node = self.producer.get(name)
        if node is None or node.domain not in ("", "ai.onnx") or node.op_type not in CHAIN_OPS:
            return None
        op, args = node.op_type, list(node.input)
        if op == "Shape":
            return self._shape(node)
        first = self.vector(args[0]) if args else None
        if first is None:
            return None
        scalar, elems = first
        if op == "Identity" or (op == "Cast" and _attr(node, "to") == TensorProto.INT64):
            return first
        if op == "Squeeze":
            return (True, elems) if len(elems) == 1 and not scalar else None
        if op == "Unsqueeze":
            axes = self.numbers(args[1]) if len(args) > 1 else _attr(node, "axes")
            return (False, elems) if scalar and list(axes or []) in ([0], [-1]) else None
        if op == "Reshape":
            target = self.numbers(args[1]) if len(args) > 1 else None
            return (False, elems) if target in ([-1], [len(elems)]) else None
        if op == "Concat":
            if _attr(node, "axis") not in (0, -1):
                return None
            parts = [self.vector(a) for a in args]
            if any(p is None or p[0] for p in parts):
                return None
            return False, tuple(e for p in parts for e in p[1])  # type: ignore[union-attr]
        if op == "Gather":
            index = self.vector(args[1]) if len(args) > 1 else None
            if scalar or index is None or any(isinstance(i, str) for i in index[1]):
                return None
            return index[0], tuple(elems[int(i)] for i in index[1])  # negative indices count from the end
        if op == "Slice":
            bounds = [self.numbers(a) if a else None for a in args[1:5]]
            if scalar or len(args) < 3 or any(b is None for b, a in zip(bounds, args[1:5]) if a):
                return None
            starts, ends = bounds[0], bounds[1]
            axes = bounds[2] if len(bounds) > 2 and bounds[2] is not None else [0]
            steps = bounds[3] if len(bounds) > 3 and bounds[3] is not None else [1]
            if len(starts) != 1 or len(ends) != 1 or axes not in ([0], [-1]) or steps[0] == 0:  # type: ignore[arg-type]
                return None
            return False, tuple(elems[slice(starts[0], ends[0], steps[0])])  # type: ignore[index]
        return None

    def _shape(self, node: NodeProto) -> Vector | None:
        info = self.types.get(node.input[0])
        if info is None or info.shape is None:
            return None
        symbols = info.dim_params or (None,) * len(info.shape)
        dims: list[Element | None] = [d if d is not None else s for d, s in zip(info.shape, symbols)]
        start, end = int(_attr(node, "start", 0)), _attr(node, "end")  # type: ignore[arg-type]
        picked = dims[start : None if end is None else int(end)]  # type: ignore[arg-type]
        if any(e is None for e in picked):
            return None
        return False, tuple(picked)  # type: ignore[arg-type]


def check(node: NodeProto, values: _Values) -> list[int] | str:
    """The constant target for Reshape ``node``, or why it keeps the one it has."""
    if len(node.input) < 2:
        return "no target input"
    target = values.vector(node.input[1])
    if target is None or target[0]:
        return "target not built from numbers and dimensions"
    elems = target[1]
    if all(isinstance(e, int) for e in elems):
        return "target already constant"
    zero_means_zero = bool(_attr(node, "allowzero", 0))
    if zero_means_zero and any(e == 0 for e in elems):
        return "allowzero=1 with a 0 in the target"
    info = values.types.get(node.input[0])
    symbols = info.dim_params if info is not None else None
    out: list[int] = []
    for k, e in enumerate(elems):
        if isinstance(e, int):
            out.append(e)
        elif symbols is not None and k < len(symbols) and symbols[k] == e:
            out.append(0)  # copy the input's dim k, which is this dimension
        else:
            return f"target element {k} is dimension '{e}', not the input's dim {k}"
    return out


def rewrite(node: NodeProto, target: str) -> NodeProto:
    """``node`` reading the constant ``target`` with ``allowzero=0``."""
    new = helper.make_node("Reshape", [node.input[0], target], list(node.output), name=node.name)
    new.attribute.extend(a for a in node.attribute if a.name != "allowzero")
    return new


def constant_reshape_targets(model: onnx.ModelProto, types: dict[str, TensorInfo]) -> int:
    """In place: give every main-graph Reshape whose target is built from its input's own dimensions
    a constant target (see the module doc); remove the chains left unread. Return how many."""
    graph = model.graph
    values = _Values(graph, types)
    names: set[str] | None = None  # every value name, subgraphs too, once a fresh one is needed
    nodes = list(graph.node)
    chains: set[str] = set()  # old targets, whose producers may now be dead
    rewritten = 0
    for index, node in enumerate(nodes):
        if node.op_type != "Reshape" or node.domain not in ("", "ai.onnx"):
            continue
        target = check(node, values)
        if isinstance(target, str):
            continue
        if names is None:
            names = used_names(graph)
        name = fresh_name(names, f"{node.input[1]}__const")
        graph.initializer.append(numpy_helper.from_array(np.array(target, np.int64), name))
        chains.add(node.input[1])
        nodes[index] = rewrite(node, name)
        rewritten += 1
    if rewritten:
        nodes = _without_dead_chains(nodes, graph, chains)
        del graph.node[:]
        graph.node.extend(nodes)
    return rewritten


def _without_dead_chains(nodes: list[NodeProto], graph: onnx.GraphProto, roots: set[str]) -> list[NodeProto]:
    """``nodes`` less the chain nodes (producing ``roots``, transitively) that nothing reads any more."""
    producer = {o: n for n in nodes for o in n.output}
    chain: set[int] = set()
    stack = [producer[r] for r in roots if r in producer]
    while stack:
        n = stack.pop()
        if id(n) in chain or n.op_type not in CHAIN_OPS:
            continue
        chain.add(id(n))
        stack.extend(producer[i] for i in n.input if i in producer)
    reads = {o.name for o in graph.output}
    for g in subgraphs(graph):
        for n in g.node:
            reads.update(n.input)
    kept: list[NodeProto] = []
    for n in reversed(nodes):  # consumers before producers
        if id(n) in chain and not any(o in reads for o in n.output):
            continue
        reads.update(n.input)
        kept.append(n)
    kept.reverse()
    return kept


__all__ = ["CHAIN_OPS", "check", "constant_reshape_targets", "rewrite"]
