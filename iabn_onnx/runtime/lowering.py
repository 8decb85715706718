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

import onnx
from onnx import NodeProto, TensorProto, helper

from iabn_onnx.custom_ops.registration import (
    CONFIG_ATTR,
    INFERENCE_OP,
    RUNTIME_DOMAIN,
    TRAINING_OP,
    encode_config,
)
from iabn_onnx.graph import fresh_name, graphs
from iabn_onnx.op.function import remove_function_fallback
from iabn_onnx.op.schema import (
    DOMAIN,
    InplaceABNError,
    bound_outputs,
    is_inplace_abn,
    node_display_name,
    register_schema,
)
from iabn_onnx.op.validation import CheckedNode, check_node, check_opset, type_table

LoweredNode = CheckedNode  # what the session reports per kernel node


class _Namer:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.used: set[str] = set()
        for g in graphs(model.graph):
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
    check_opset(model)
    table = type_table(model)
    if fold_frozen:
        from ..passes.fold import fold_into_producers

        # a fresh copy; fold leaves invalid nodes, so the checks below still report them
        lowered = fold_into_producers(model, table)
    else:
        lowered = onnx.ModelProto()
        lowered.CopyFrom(model)
    namer = _Namer(lowered)
    report: list[LoweredNode] = []
    for graph in graphs(lowered.graph):
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
