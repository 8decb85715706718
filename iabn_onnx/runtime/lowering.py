"""Lowering: route every public ``InplaceABN`` node to the fastest implementation exact for it.

One pass of each stage, on the session's own copy of the model (changed in place):

1. validate every node once (``check_model_nodes``: attributes, arity, dtype, rank, parameter
   lengths, opset; a fault raises ``InplaceABNError`` naming the node), then evaluate small
   constant subgraphs into initializers (``passes.constant_subgraphs``), so that parameters
   given as Constant nodes and Conv biases computed by Expand/CastLike count as constants;
2. ask ``passes.route_choice`` (a table measured by ``benchmarks/bench_routes.py``) whether a
   standard form beats the kernel for each frozen node's layout, dtype and activation; for those
   it does, route the nodes that follow a Conv to BatchNormalization, which onnxruntime's
   Conv+BatchNormalization fusion folds into the Conv at load (when the session's graph
   optimizations are on), and fold those after a ConvTranspose/Gemm/MatMul (or any
   producer, with optimizations off) into that layer here (``passes.fold``);
3. route the other such nodes to the form the table names: BatchNormalization + activation
   (``passes.batchnorm_form``; NCHW, statistics constant or fed at run time) or a per-channel
   Mul + Add + activation (``passes.per_channel``; NHWC, constant statistics);
4. lower what is left (training mode, and the cells where the kernel wins) to the registered kernel ops:

   X, scale, B, mean, var -> InplaceABNInference|InplaceABNTraining[ai.iabn.runtime](config=JSON) -> ...

   float16 nodes compute in float32 between Casts (the Python-op bridge aborts on a float16
   input), and a training node with only ``Y`` gets two hidden outputs (Python ops have no
   optional outputs).

``kernel_only`` skips 2 and 3. ``routes`` says, node by node, which route each took and why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import NodeProto, TensorProto, helper

from iabn_onnx.custom_ops.names import (
    CONFIG_ATTR,
    INFERENCE_OP,
    RUNTIME_DOMAIN,
    TRAINING_OP,
    encode_config,
)
from iabn_onnx.graph import drop_opset_import, drop_unused_initializers, fresh_name, graphs, set_opset_import
from iabn_onnx.op.function import remove_function_fallback
from iabn_onnx.op.schema import (
    DOMAIN,
    ONNX_OPSET,
    Activation,
    InplaceABNAttrs,
    bound_outputs,
    is_inplace_abn,
    register_schema,
)
from iabn_onnx.op.validation import CheckedNode, TensorInfo, check_model_nodes, type_table

from ..passes import batchnorm_form, route_choice
from ..passes.activation import activation_nodes
from ..passes.constant_subgraphs import fold_constant_subgraphs
from ..passes.fold import fold_into_producers
from ..passes.fold_match import match_node
from ..passes.graph_index import GraphIndex, sole_consumer_reason
from ..passes.per_channel import per_channel_nodes

LoweredNode = CheckedNode  # what the session reports per kernel node

KERNEL = "kernel"
PRODUCER_FOLD = "producer fold"


@dataclass(frozen=True)
class Route:
    """Where one InplaceABN node went: ``route`` is "producer fold", "BatchNormalization",
    "per-channel Mul + Add" or "kernel"."""

    node: str
    route: str
    detail: str
    #: for the BatchNormalization route: the node's inputs and attributes, so values fed at run
    #: time can be checked as the kernel would check them
    inputs: tuple[str, ...] = ()
    attrs: InplaceABNAttrs | None = None

    def __str__(self) -> str:
        return f"{self.node}: {self.route} ({self.detail})"


class _Namer:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.used: set[str] = set()
        for g in graphs(model.graph):
            for n in g.node:
                self.used.update(n.input)
                self.used.update(n.output)
                self.used.add(n.name)
            self.used.update(i.name for i in g.initializer)
            self.used.update(i.name for i in g.input)

    def fresh(self, base: str) -> str:
        return fresh_name(self.used, base)


def lower(
    model: onnx.ModelProto, kernel_only: bool = False, onnxruntime_fuses_conv: bool = False, base_dir: str = ""
) -> tuple[onnx.ModelProto, list[LoweredNode], list[Route]]:
    """Route and lower ``model`` in place (the caller's own copy); see the module doc.

    ``onnxruntime_fuses_conv``: the session's graph optimizations fold Conv+BatchNormalization
    at load, so a Conv-fed node becomes BatchNormalization and onnxruntime folds it in C++ (no
    weight math here; the same fusion the native BatchNorm-form export gets).
    ``base_dir``: where tensors kept as external data are (the session's outline of a file).
    Returns the model, the nodes the kernel runs, and every node's route.
    """
    register_schema()
    table = type_table(model)
    infos = check_model_nodes(model, table)
    fold_constant_subgraphs(model, table, base_dir)  # Conv biases torch computes, paddle2onnx's Constant parameters
    nodes = [n for g in graphs(model.graph) for n in g.node if is_inplace_abn(n)]
    checked = {node.output[0]: info for node, info in zip(nodes, infos)}
    routes: list[Route] = []
    namer = _Namer(model)
    if not kernel_only and onnxruntime_fuses_conv:
        routes += _conv_fed_to_batchnorm(model, checked, table, namer, base_dir)
    if not kernel_only:

        def kernel_is_faster(node: NodeProto) -> str | None:
            info = checked[node.output[0]]
            form, why = route_choice.choose(info.attrs, info.dtype)
            return why if form is None else None

        report = fold_into_producers(model, table, base_dir, leave=kernel_is_faster)
        routes += [Route(name, PRODUCER_FOLD, how) for name, how in report.folded]
        namer = _Namer(model)  # the fold added names of its own
    kernel_nodes: list[LoweredNode] = []
    for graph in graphs(model.graph):
        index = GraphIndex(graph, table, base_dir, used=namer.used)
        new_nodes: list[NodeProto] = []
        for node in graph.node:
            if not is_inplace_abn(node):
                new_nodes.append(node)
                continue
            info = checked[node.output[0]]
            reason = "kernel_only"
            if not kernel_only:
                standard = _standard_form(node, info, index)
                if not isinstance(standard, str):
                    routes.append(standard[0])
                    new_nodes.extend(standard[1])
                    continue
                reason = standard
            routes.append(Route(info.name, KERNEL, reason))
            kernel_nodes.append(info)
            new_nodes.extend(_lower_node(node, info, namer))
        del graph.node[:]
        graph.node.extend(new_nodes)
    if kernel_nodes:
        set_opset_import(model, RUNTIME_DOMAIN, 1)
    if any(r.route == batchnorm_form.ROUTE for r in routes) and not _default_opset(model):
        set_opset_import(model, "", ONNX_OPSET)
    drop_unused_initializers(model)  # the parameters of nodes now in a per-channel form or folded
    remove_function_fallback(model)  # no InplaceABN node is left to call it
    drop_opset_import(model, DOMAIN)
    return model, kernel_nodes, routes


def _conv_fed_to_batchnorm(
    model: onnx.ModelProto,
    checked: dict[str, CheckedNode],
    table: dict[str, TensorInfo],
    namer: _Namer,
    base_dir: str,
) -> list[Route]:
    """Frozen nodes read only from a Conv, with constant parameters: BatchNormalization, which
    onnxruntime's Conv+BatchNormalization fusion folds into the Conv at load."""
    g = GraphIndex(model.graph, table, base_dir)
    routes, new_nodes = [], []
    for node in model.graph.node:
        info = checked.get(node.output[0]) if is_inplace_abn(node) else None
        conv = g.producer.get(node.input[0]) if info is not None else None
        if (
            info is None
            or conv is None
            or conv.op_type != "Conv"
            or conv.domain not in ("", "ai.onnx")
            or sole_consumer_reason(g, node.input[0]) is not None
            or not all(g.is_constant(name) for name in node.input[1:])
            or route_choice.choose(info.attrs, info.dtype)[0] != route_choice.BATCHNORM
            or batchnorm_form.check(info.attrs, info.dtype, g.constant(node.input[1]))
        ):
            new_nodes.append(node)
            continue
        new_nodes.extend(batchnorm_form.rewrite(node, info.attrs, namer.fresh))
        detail = f"onnxruntime folds it into Conv '{conv.name or conv.output[0]}' at load"
        routes.append(Route(info.name, batchnorm_form.ROUTE, detail, tuple(node.input), info.attrs))
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    return routes


def _standard_form(node: NodeProto, info: CheckedNode, g: GraphIndex) -> tuple[Route, list[NodeProto]] | str:
    """The node in the standard ops ``route_choice`` picks for it, or why the kernel runs it."""
    form, reason = route_choice.choose(info.attrs, info.dtype)
    route = Route(info.name, form or KERNEL, "standard ops", tuple(node.input), info.attrs)
    if form == route_choice.BATCHNORM:
        why = batchnorm_form.check(info.attrs, info.dtype, g.constant(node.input[1]))
        return why if why is not None else (route, batchnorm_form.rewrite(node, info.attrs, g.fresh))
    if form == route_choice.PER_CHANNEL:
        match = match_node(g, node, keep_invalid=True)
        if isinstance(match, str):
            return match
        if not (np.isfinite(match.s).all() and np.isfinite(match.t).all()):
            return "infinite scale (Mul + Add would give NaN, the operator ±inf)"
        identity = info.attrs.act is Activation.IDENTITY
        z = node.output[0] if identity else g.fresh(f"{match.name}__affine")
        affine = per_channel_nodes(g, match, node.input[0], z, g.ranks.get(node.input[0]))
        if isinstance(affine, str):
            return affine
        return route, affine + ([] if identity else activation_nodes(g, match, z, node.output[0]))
    return reason


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


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
