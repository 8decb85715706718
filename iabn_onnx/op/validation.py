"""Static validation of InplaceABN nodes, shared by the runtime lowering and the fold pass.

One check for both, so a node the runtime would reject is never rewritten by fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx
from onnx import NodeProto, TensorProto

from ..graph import graphs, infer_shapes_light
from ..model_source import ModelSource, as_model
from .schema import (
    DOMAIN,
    INPUT_NAMES,
    OP_TYPE,
    OPSET_VERSION,
    SUPPORTED_DTYPES,
    InplaceABNAttrs,
    InplaceABNError,
    attribute_checks_off,
    bound_outputs,
    node_display_name,
    shape_faults,
    typing_stand_in,
)


def check_opset(model: onnx.ModelProto) -> None:
    """Raise when the model imports a version of our domain this package does not know, or has nodes
    of our domain and imports none of it (ONNX's checker and onnxruntime refuse such a model)."""
    imported = False
    for imp in model.opset_import:
        if imp.domain == DOMAIN and imp.version != OPSET_VERSION:
            raise InplaceABNError(
                "<model>", f"imports opset {imp.version} of domain '{DOMAIN}'; this version knows only {OPSET_VERSION}"
            )
        imported = imported or imp.domain == DOMAIN
    if not imported:
        node = next((n for g in graphs(model.graph) for n in g.node if n.domain == DOMAIN), None)
        if node is not None:
            raise InplaceABNError(node_display_name(node), f"its domain '{DOMAIN}' is not in the model's opset imports")


@dataclass(frozen=True)
class CheckedNode:
    name: str
    attrs: InplaceABNAttrs
    dtype: int | None  # TensorProto element type of X, when known


@dataclass(frozen=True)
class TensorInfo:
    elem_type: int | None
    shape: tuple[int | None, ...] | None
    #: each dim's symbol (ONNX ``dim_param``; one name is one size throughout the graph), where it has one
    dim_params: tuple[str | None, ...] | None = None


def type_table(model: onnx.ModelProto) -> dict[str, TensorInfo]:
    """Element types and shapes of every named value onnx can infer."""

    def stand_in(node: NodeProto) -> list[NodeProto] | None:  # check_node judges the node itself
        return typing_stand_in(node) if node.domain == DOMAIN and node.op_type == OP_TYPE else None

    with attribute_checks_off():  # for InplaceABN calls inside model-local functions
        inferred = infer_shapes_light(model, stand_in)
    table: dict[str, TensorInfo] = {}
    graph = inferred.graph
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        if not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        shape = symbols = None
        if tt.HasField("shape"):
            shape, symbols = _dims(tt.shape.dim)
        table[vi.name] = TensorInfo(tt.elem_type or None, shape, symbols)
    for init in graph.initializer:
        table[init.name] = TensorInfo(init.data_type, tuple(init.dims))
    return table


def _dims(
    dims: Sequence[onnx.TensorShapeProto.Dimension],
) -> tuple[tuple[int | None, ...], tuple[str | None, ...] | None]:
    """A shape's sizes (None where unknown) and its symbols (None: it has none); one look at each dim,
    as the session's start-up reads thousands of them."""
    sizes: list[int | None] = []
    symbols: list[str | None] = []
    for d in dims:
        which = d.WhichOneof("value")
        sizes.append(d.dim_value if which == "dim_value" else None)
        symbols.append(d.dim_param or None if which == "dim_param" else None)
    return tuple(sizes), (tuple(symbols) if any(symbols) else None)


def _dtype_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type).lower()


def check_node(node: NodeProto, table: dict[str, TensorInfo]) -> CheckedNode:
    """Validate one InplaceABN node statically; raise InplaceABNError on a fault."""
    name = node_display_name(node)
    attrs = InplaceABNAttrs.from_node(node)
    if len(node.input) != 5 or any(not i for i in node.input):
        raise InplaceABNError(
            name, f"needs exactly 5 inputs {list(INPUT_NAMES)}, got {len(node.input)}: {list(node.input)}"
        )
    outputs = bound_outputs(node)
    n_out = len(outputs)
    if not n_out or not outputs[0]:
        raise InplaceABNError(name, "output Y is missing")
    if attrs.training_mode == 0 and n_out != 1:
        raise InplaceABNError(name, f"training_mode=0 has exactly one output (Y), got {n_out}: {outputs}")
    if attrs.training_mode == 1 and n_out > 3:
        raise InplaceABNError(name, f"training_mode=1 has at most 3 outputs, got {n_out}")
    infos = [table.get(i, TensorInfo(None, None)) for i in node.input]
    x_type = infos[0].elem_type
    if x_type is not None and x_type not in SUPPORTED_DTYPES:
        raise InplaceABNError(name, f"X has dtype {_dtype_name(x_type)}; supported: float16, float, double")
    for input_name, info in zip(INPUT_NAMES[1:], infos[1:]):
        if x_type is not None and info.elem_type is not None and info.elem_type != x_type:
            raise InplaceABNError(
                name, f"{input_name} has dtype {_dtype_name(info.elem_type)} but X has {_dtype_name(x_type)}"
            )
    faults = shape_faults(infos[0].shape, [i.shape for i in infos[1:]], attrs)
    if faults:
        raise InplaceABNError(name, "; ".join(faults))
    return CheckedNode(name, attrs, x_type)


def check_model_nodes(model: ModelSource, table: dict[str, TensorInfo] | None = None) -> list[CheckedNode]:
    """Validate the opset import and every InplaceABN node (subgraphs too) of ``model`` (a path, bytes or a
    ModelProto); raise on the first fault."""
    model = as_model(model)
    check_opset(model)
    table = type_table(model) if table is None else table
    checked = []
    for graph in graphs(model.graph):
        for node in graph.node:
            if node.domain == DOMAIN and node.op_type != OP_TYPE:
                raise InplaceABNError(node_display_name(node), f"unknown op '{node.op_type}' in domain '{DOMAIN}'")
            if node.domain == DOMAIN:
                checked.append(check_node(node, table))
    return checked
