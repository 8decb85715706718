"""Lowering: route every public ``InplaceABN`` node to the fastest implementation exact for it.

One pass of each stage, on the session's own copy of the model (changed in place), with one
index (``passes.graph_index``) per graph:

1. validate every node once (``check_model_nodes``: attributes, arity, dtype, rank, parameter
   lengths, opset; a fault raises ``InplaceABNError`` naming the node), then evaluate small
   constant subgraphs into initializers (``passes.constant_subgraphs``), so that parameters
   given as Constant nodes and Conv biases computed by Expand/CastLike count as constants, and
   run fold's two other graph rules (``passes.reshape_dims``, ``passes.zero_bias``);
2. plan a route per node (``_route``): ``passes.route_choice`` (a table measured by
   ``benchmarks/bench_routes.py``) says whether a standard form beats the kernel for the node's
   layout, dtype and activation. Where it does, a node that follows a Conv becomes
   BatchNormalization, which onnxruntime's Conv+BatchNormalization fusion folds into the Conv at
   load (when the session's graph optimizations are on); one after a ConvTranspose/Gemm/MatMul
   (or any producer, with optimizations off) folds into that layer here (``passes.fold``); the
   others take the form the table names: BatchNormalization + activation
   (``passes.batchnorm_form``; NCHW, statistics constant or fed at run time) or a per-channel
   Mul + Add + activation (``passes.per_channel``; NHWC, constant statistics);
3. lower what is left (training mode, and the cells where the kernel wins) to the registered kernel ops:

   X, scale, B, mean, var -> InplaceABNInference|InplaceABNTraining[ai.iabn.runtime](config=JSON) -> ...

   float16 nodes compute in float32 between Casts (the Python-op bridge aborts on a float16
   input), and a training node with only ``Y`` gets two hidden outputs (Python ops have no
   optional outputs);
4. write each graph's node list once (``GraphIndex.commit``), then drop what no node reads.

Producer folds and the Conv-fed BatchNormalization route apply to the main graph; nodes in
subgraphs take a standard form or the kernel. ``kernel_only`` sends every node to the kernel.
``routes`` says, node by node in graph order, which route each took and why.
"""

from __future__ import annotations

from collections.abc import Callable

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
from iabn_onnx.graph import drop_opset_import, drop_unused_initializers, graphs, set_opset_import, used_names
from iabn_onnx.op.function import remove_function_fallback
from iabn_onnx.op.schema import (
    DOMAIN,
    ONNX_OPSET,
    Activation,
    bound_outputs,
    is_inplace_abn,
    register_schema,
)
from iabn_onnx.op.validation import CheckedNode, check_model_nodes, type_table

from ..passes import batchnorm_form, route_choice
from ..passes.activation import activation_nodes
from ..passes.fold import PRODUCER_OPS, fold_into_producer, graph_rules
from ..passes.fold_match import NoMatch, match_node
from ..passes.graph_index import GraphIndex, sole_consumer_reason
from ..passes.per_channel import per_channel_nodes
from .routes import KERNEL, PRODUCER_FOLD, Route

LoweredNode = CheckedNode  # what the session reports per kernel node


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
    graph_rules(model, table, base_dir)  # Conv biases torch computes, paddle2onnx's Constant parameters, ...
    nodes = [n for g in graphs(model.graph) for n in g.node if is_inplace_abn(n)]
    checked = {node.output[0]: info for node, info in zip(nodes, infos)}
    used = used_names(model.graph)
    routes: list[Route] = []
    kernel_nodes: list[LoweredNode] = []
    for graph in graphs(model.graph):  # lazily: a subgraph is reached after its parent's commit
        g = GraphIndex(graph, table, base_dir, used=used)
        main = graph is model.graph
        for node in g.nodes:
            if not is_inplace_abn(node):
                continue
            info = checked[node.output[0]]
            route, new_nodes = _route(node, info, g, kernel_only, main, main and onnxruntime_fuses_conv)
            if route.route == KERNEL:
                kernel_nodes.append(info)
                new_nodes = _lower_node(node, info, g.fresh)
            routes.append(route)
            g.replace(node, new_nodes)
        g.commit()
    if kernel_nodes:
        set_opset_import(model, RUNTIME_DOMAIN, 1)
    if any(r.route == batchnorm_form.ROUTE for r in routes) and not _default_opset(model):
        set_opset_import(model, "", ONNX_OPSET)
    drop_unused_initializers(model)  # the parameters of nodes now in a per-channel form or folded
    remove_function_fallback(model)  # no InplaceABN node is left to call it
    drop_opset_import(model, DOMAIN)
    return model, kernel_nodes, routes


def _route(
    node: NodeProto, info: CheckedNode, g: GraphIndex, kernel_only: bool, may_fold: bool, fuses_conv: bool
) -> tuple[Route, list[NodeProto]]:
    """The route one node takes and the nodes that replace it (none yet for the kernel)."""
    if kernel_only:
        return Route(info.name, KERNEL, "kernel_only"), []
    form, why = route_choice.choose(info.attrs, info.dtype)
    if form is None:
        return Route(info.name, KERNEL, why), []
    producer = g.producer.get(node.input[0])
    if fuses_conv and form == route_choice.BATCHNORM and _conv_fed(node, info, producer, g):
        assert producer is not None
        detail = f"onnxruntime folds it into Conv '{producer.name or producer.output[0]}' at load"
        route = Route(info.name, batchnorm_form.ROUTE, detail, tuple(node.input), info.attrs)
        return route, batchnorm_form.rewrite(node, info.attrs, g.fresh)
    if may_fold and producer is not None and producer.op_type in PRODUCER_OPS:
        match = match_node(g, node, keep_invalid=True)
        folded = match.reason if isinstance(match, NoMatch) else fold_into_producer(g, match)
        if not isinstance(folded, str):
            return Route(info.name, PRODUCER_FOLD, folded[1]), folded[0]
    standard = _standard_form(node, info, form, g)
    return (Route(info.name, KERNEL, standard), []) if isinstance(standard, str) else standard


def _conv_fed(node: NodeProto, info: CheckedNode, producer: NodeProto | None, g: GraphIndex) -> bool:
    """X comes only from a Conv and the parameters are constant: onnxruntime's Conv+BatchNormalization
    fusion will take the node's BatchNormalization form."""
    return (
        producer is not None
        and producer.op_type == "Conv"
        and producer.domain in ("", "ai.onnx")
        and sole_consumer_reason(g, node.input[0]) is None
        and all(g.is_constant(name) for name in node.input[1:])
        and batchnorm_form.check(info.attrs, info.dtype, g.constant(node.input[1])) is None
    )


def _standard_form(node: NodeProto, info: CheckedNode, form: str, g: GraphIndex) -> tuple[Route, list[NodeProto]] | str:
    """The node in the standard ``form`` ``route_choice`` picked for it, or why the kernel runs it."""
    route = Route(info.name, form, "standard ops", tuple(node.input), info.attrs)
    if form == route_choice.BATCHNORM:
        why = batchnorm_form.check(info.attrs, info.dtype, g.constant(node.input[1]))
        return why if why is not None else (route, batchnorm_form.rewrite(node, info.attrs, g.fresh))
    if form == route_choice.PER_CHANNEL:
        match = match_node(g, node, keep_invalid=True)
        if isinstance(match, NoMatch):
            return match.reason
        if not (np.isfinite(match.s).all() and np.isfinite(match.t).all()):
            return "infinite scale (Mul + Add would give NaN, the operator ±inf)"
        identity = info.attrs.act is Activation.IDENTITY
        z = node.output[0] if identity else g.fresh(f"{match.name}__affine")
        affine = per_channel_nodes(g, match, node.input[0], z, g.ranks.get(node.input[0]))
        if isinstance(affine, str):
            return affine
        return route, affine + (
            [] if identity else activation_nodes(g, match.name, match.attrs, match.dtype, z, node.output[0])
        )
    raise AssertionError(f"unknown standard form {form!r}")


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _lower_node(node: NodeProto, info: LoweredNode, fresh: Callable[[str], str]) -> list[NodeProto]:
    attrs = info.attrs
    training = attrs.training_mode == 1
    op_type = TRAINING_OP if training else INFERENCE_OP
    outputs = bound_outputs(node)
    if training:  # the runtime op has fixed arity: name the omitted running-statistics outputs
        outputs += [""] * (3 - len(outputs))
        suffixes = ("", "__running_mean", "__running_var")
        outputs = [o or fresh(f"{outputs[0]}{suffixes[i]}") for i, o in enumerate(outputs)]
    config = encode_config(info.name, attrs)
    if info.dtype != TensorProto.FLOAT16:
        kernel = helper.make_node(op_type, list(node.input), outputs, name=node.name, domain=RUNTIME_DOMAIN)
        kernel.attribute.append(helper.make_attribute(CONFIG_ATTR, config))
        return [kernel]
    # float16: Cast in, compute in float32, Cast out.
    nodes: list[NodeProto] = []
    inputs32 = []
    for name in node.input:
        cast_out = fresh(f"{name}__f32")
        nodes.append(
            helper.make_node("Cast", [name], [cast_out], name=fresh(f"{info.name}__cast_in"), to=TensorProto.FLOAT)
        )
        inputs32.append(cast_out)
    outputs32 = [fresh(f"{o}__f32") for o in outputs]
    kernel = helper.make_node(op_type, inputs32, outputs32, name=node.name, domain=RUNTIME_DOMAIN)
    kernel.attribute.append(helper.make_attribute(CONFIG_ATTR, config))
    nodes.append(kernel)
    for o32, o in zip(outputs32, outputs):
        nodes.append(helper.make_node("Cast", [o32], [o], name=fresh(f"{info.name}__cast_out"), to=TensorProto.FLOAT16))
    return nodes
