"""Lowering: public ``InplaceABN`` nodes -> the registered runtime kernels.

before:  X, scale, B, mean, var -> InplaceABN[ai.iabn](attrs) -> Y [, running_mean, running_var]
after:   X, scale, B, mean, var -> InplaceABNInference|InplaceABNTraining[ai.iabn.runtime](config=JSON) -> ...

Preconditions, checked statically and reported as ``InplaceABNError``
naming the node: valid attributes, exactly 5 inputs, 1 output (or 1 or 3
with training_mode=1), a supported dtype shared by all inputs, and, where
shapes are known, rank 2-5 and parameters of shape [C].

float16 nodes are computed in float32: the Python-op bridge cannot take a
float16 input (it aborts the process), so Cast nodes wrap the kernel.
A training node with only ``Y`` gets two hidden outputs, because Python
ops have no optional outputs.

With ``fold_frozen``, after every node has been validated, frozen nodes
(training_mode=0, constant parameters) whose input comes straight from a
Conv, ConvTranspose, Gemm or MatMul are folded into that layer first, as
onnxruntime folds Conv+BatchNormalization: the bridge's two tensor copies
per node cost more than the node itself. The rest run in the kernel.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import onnx
from onnx import GraphProto, NodeProto, TensorProto, helper

from iabn_onnx.custom_ops.registration import (
    CONFIG_ATTR,
    INFERENCE_OP,
    RUNTIME_DOMAIN,
    TRAINING_OP,
    encode_config,
)
from iabn_onnx.graph import fresh_name, infer_shapes_light, subgraphs
from iabn_onnx.op.function import remove_function_fallback
from iabn_onnx.op.schema import (
    DOMAIN,
    INPUT_NAMES,
    OPSET_VERSION,
    SUPPORTED_DTYPES,
    InplaceABNAttrs,
    InplaceABNError,
    bound_outputs,
    is_inplace_abn,
    node_display_name,
    register_schema,
    shape_faults,
)


@dataclass(frozen=True)
class LoweredNode:
    name: str
    attrs: InplaceABNAttrs
    dtype: int | None  # TensorProto element type of X, when known


@dataclass(frozen=True)
class TensorInfo:
    elem_type: int | None
    shape: tuple[int | None, ...] | None


def _type_table(model: onnx.ModelProto) -> dict[str, TensorInfo]:
    """Element types and shapes of every named value onnx can infer."""
    inferred = infer_shapes_light(model)
    table: dict[str, TensorInfo] = {}
    graph = inferred.graph
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            continue
        shape = None
        if tt.HasField("shape"):
            shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
        table[vi.name] = TensorInfo(tt.elem_type or None, shape)
    for init in graph.initializer:
        table[init.name] = TensorInfo(init.data_type, tuple(init.dims))
    return table


def _dtype_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type).lower()


def check_node(node: NodeProto, table: dict[str, TensorInfo]) -> LoweredNode:
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
    return LoweredNode(name, attrs, x_type)


def _graphs(graph: GraphProto) -> Iterator[GraphProto]:
    yield graph
    yield from subgraphs(graph)


class _Namer:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.used: set[str] = set()
        for g in _graphs(model.graph):
            for n in g.node:
                self.used.update(n.input)
                self.used.update(n.output)
            self.used.update(i.name for i in g.initializer)
            self.used.update(i.name for i in g.input)

    def fresh(self, base: str) -> str:
        return fresh_name(self.used, base)


def lower(model: onnx.ModelProto, fold_frozen: bool = False) -> tuple[onnx.ModelProto, list[LoweredNode]]:
    """Return a copy of model whose InplaceABN nodes use the runtime kernels (see module doc)."""
    register_schema()
    for imp in model.opset_import:
        if imp.domain == DOMAIN and imp.version != OPSET_VERSION:
            raise InplaceABNError(
                "<model>", f"imports opset {imp.version} of domain '{DOMAIN}'; this version knows only {OPSET_VERSION}"
            )
    table = _type_table(model)
    lowered = onnx.ModelProto()
    if fold_frozen:
        for graph in _graphs(model.graph):  # faults are reported on the model as given
            for node in graph.node:
                if is_inplace_abn(node):
                    check_node(node, table)
        from ..passes.fold import fold_with_report

        model = fold_with_report(model, into_producers_only=True)[0]
        lowered = model  # fold returned a fresh copy
    else:
        lowered.CopyFrom(model)
    namer = _Namer(lowered)
    report: list[LoweredNode] = []
    for graph in _graphs(lowered.graph):
        new_nodes: list[NodeProto] = []
        for node in graph.node:
            if not is_inplace_abn(node):
                if node.domain == DOMAIN:
                    raise InplaceABNError(node_display_name(node), f"unknown op '{node.op_type}' in domain '{DOMAIN}'")
                new_nodes.append(node)
                continue
            info = check_node(node, table)
            report.append(info)
            new_nodes.extend(_lower_node(node, info, namer))
        del graph.node[:]
        graph.node.extend(new_nodes)
    if report:
        _set_opset(lowered, RUNTIME_DOMAIN, 1)
    remove_function_fallback(lowered)  # no InplaceABN node is left to call it
    return lowered, report


def _lower_node(node: NodeProto, info: LoweredNode, namer: _Namer) -> list[NodeProto]:
    attrs = info.attrs
    training = attrs.training_mode == 1
    op_type = TRAINING_OP if training else INFERENCE_OP
    outputs = bound_outputs(node)
    if training:  # the runtime op has fixed arity: name the omitted running-statistics outputs
        outputs += [""] * (3 - len(outputs))
        suffixes = ("", "__running_mean", "__running_var")
        outputs = [o or namer.fresh(f"{outputs[0]}{suffixes[i]}") for i, o in enumerate(outputs)]
    config = encode_config(info.name, attrs)
    if info.dtype != TensorProto.FLOAT16:
        kernel = helper.make_node(op_type, list(node.input), outputs, name=node.name, domain=RUNTIME_DOMAIN)
        kernel.attribute.append(helper.make_attribute(CONFIG_ATTR, config))
        return [kernel]
    # float16: Cast in, compute in float32, Cast out.
    nodes: list[NodeProto] = []
    inputs32 = []
    for name in node.input:
        cast_out = namer.fresh(f"{name}__f32")
        nodes.append(
            helper.make_node(
                "Cast", [name], [cast_out], name=namer.fresh(f"{info.name}__cast_in"), to=TensorProto.FLOAT
            )
        )
        inputs32.append(cast_out)
    outputs32 = [namer.fresh(f"{o}__f32") for o in outputs]
    kernel = helper.make_node(op_type, inputs32, outputs32, name=node.name, domain=RUNTIME_DOMAIN)
    kernel.attribute.append(helper.make_attribute(CONFIG_ATTR, config))
    nodes.append(kernel)
    for o32, o in zip(outputs32, outputs):
        nodes.append(
            helper.make_node("Cast", [o32], [o], name=namer.fresh(f"{info.name}__cast_out"), to=TensorProto.FLOAT16)
        )
    return nodes


def _set_opset(model: onnx.ModelProto, domain: str, version: int) -> None:
    for imp in model.opset_import:
        if imp.domain == domain:
            imp.version = version
            return
    model.opset_import.append(helper.make_opsetid(domain, version))
