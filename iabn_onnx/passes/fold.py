"""Fold frozen InplaceABN nodes into standard ONNX ops.

before:  P(X_in, W, b) -> X -> InplaceABN(scale, B, mean, var; eps, act, alpha) -> Y
after:   P(X_in, W', b') -> [act] -> Y                    (producer fold)
    or:  X -> BatchNormalization -> [act] -> Y            (no producer; NCHW float16/float32, batchnorm_form.py)
    or:  X -> Mul(s) -> Add(t) -> [act] -> Y              (per-channel fallback: NHWC, float64)
    or:  X -> standard ops specialized to the node -> Y [, running mean, running var]
                                                          (training mode, statistics fed at run time:
                                                           standard_form.py)

with, per channel c, computed in float64 and cast back to the model dtype:
    s[c] = scale[c] / sqrt(var[c] + eps)
    t[c] = B[c] - mean[c] * s[c]
    W'   = W scaled by s along the producer's output-channel axis
    b'   = b * s + t            (b = 0 when the producer has no bias)
and [act] is LeakyRelu(alpha), Elu(alpha) (float64: an expansion in ops
onnxruntime's CPU provider has for double), or nothing for identity.

Preconditions (each rule returns a reason instead of folding):
* the node has training_mode=0 and valid attributes;
* scale, B, mean and var are constant: initializers that are not graph inputs, or small constant
  subgraphs (Constant, Shape, CastLike, Expand, ...), which ``constant_subgraphs`` evaluates
  into initializers first, for producers' weights and biases too;
* producer fold: X comes from Conv, ConvTranspose (grouped too), Gemm, or
  MatMul (optionally followed by Add of a constant), X has no other
  consumer and is not a graph output, the producer's weight (and bias) are
  initializers used by no other node, and the channel axis matches the
  producer's output-channel axis (Conv/ConvTranspose: NCHW; Gemm/MatMul:
  the last axis).

Before the node rules, three graph rules run once: small constant subgraphs become initializers
(``constant_subgraphs``), Reshape targets built from the input's own dimensions become constant
(``reshape_dims``), and Conv/ConvTranspose biases of zeros are dropped (``zero_bias``).

Rules are tried in order; the first that matches rewrites. The argument
model is never mutated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import onnx
from onnx import NodeProto, helper

from ..graph import drop_opset_import, drop_unused_initializers, graphs
from ..model_source import ModelSource, as_model
from ..op.function import remove_function_fallback
from ..op.schema import DOMAIN, Activation, is_inplace_abn, node_display_name
from ..op.validation import CheckedNode, TensorInfo, check_opset, type_table
from . import batchnorm_form, standard_form
from .activation import activation_nodes
from .constant_subgraphs import fold_constant_subgraphs
from .fold_conv import rule_conv, rule_conv_transpose
from .fold_gemm import rule_gemm
from .fold_match import FoldMatch, NoMatch, match_node
from .fold_matmul import rule_matmul
from .graph_index import GraphIndex, rename_output, sole_consumer_reason
from .per_channel import per_channel_nodes
from .producer_ops import PRODUCER_OPS
from .reshape_dims import constant_reshape_targets
from .zero_bias import drop_zero_biases

PRODUCER_RULES = (rule_conv, rule_conv_transpose, rule_gemm, rule_matmul)


@dataclass
class FoldReport:
    """What the fold did, node by node: ``folded`` into a producer's weights, ``rewritten`` as
    standard ops (with why no producer could take the node), or ``left`` (with why)."""

    folded: list[tuple[str, str]] = field(default_factory=list)  # (node, "into Conv 'c'")
    rewritten: list[tuple[str, str, str]] = field(default_factory=list)  # (node, form, why no producer)
    left: list[tuple[str, str]] = field(default_factory=list)  # (node, why)
    constants: int = 0  # constant-subgraph nodes evaluated into initializers
    reshapes: int = 0  # Reshape targets built from dimensions, made constant
    zero_biases: int = 0  # Conv/ConvTranspose biases of zeros dropped

    @property
    def count(self) -> int:
        """Nodes replaced by standard ops, either way."""
        return len(self.folded) + len(self.rewritten)

    def lines(self) -> list[str]:
        out = [f"folded {n}: {how}" for n, how in self.folded]
        out += [f"rewrote {n} as {form} (no producer fold: {why})" for n, form, why in self.rewritten]
        out += [f"left {n}: {why}" for n, why in self.left]
        if self.constants:
            out.append(f"{self.constants} constant-subgraph node(s) evaluated into initializers")
        if self.reshapes:
            out.append(f"{self.reshapes} Reshape target(s) built from dimensions made constant")
        if self.zero_biases:
            out.append(f"{self.zero_biases} Conv bias(es) of zeros dropped")
        out.append(
            f"{len(self.folded)} folded into producers, {len(self.rewritten)} rewritten as standard ops, "
            f"{len(self.left)} left"
        )
        return out


# -- driver ------------------------------------------------------------------------------
def fold_with_report(
    model: ModelSource, into_producers_only: bool = False, keep_invalid: bool = False
) -> tuple[onnx.ModelProto, FoldReport]:
    """Fold every foldable InplaceABN node; return the new model and what happened.

    An invalid InplaceABN node raises ``InplaceABNError`` naming it; with ``keep_invalid``
    it is left as it is and reported instead. ``into_producers_only`` leaves nodes with no
    producer to fold into (instead of the per-channel Mul+Add).
    """
    model = as_model(model)
    check_opset(model)
    return _fold(model, type_table(model), into_producers_only, keep_invalid)


def graph_rules(model: onnx.ModelProto, types: dict[str, TensorInfo], base_dir: str = "") -> tuple[int, int, int]:
    """In place, before the node rules (fold's and the session's): constant subgraphs evaluated into
    initializers, Reshape targets built from dimensions made constant, Conv biases of zeros dropped;
    return how many of each. ``types`` is ``type_table(model)``."""
    constants = fold_constant_subgraphs(model, types, base_dir)
    return constants, constant_reshape_targets(model, types), drop_zero_biases(model, base_dir)


def fold_into_producer(g: GraphIndex, m: FoldMatch) -> tuple[list[NodeProto], str] | str:
    """Fold one matched node into the layer that produces its X, through the index (rewriting the
    producer in place): the nodes that take the node's place and "into <producer>", or why no
    producer rule applies."""
    x, y = m.node.input[0], m.node.output[0]
    producer = g.producer.get(x)
    no_producer = _no_producer_reason(g, x, producer)
    if no_producer is not None:
        return no_producer
    assert producer is not None
    for rule in PRODUCER_RULES:
        result = rule(g, m, producer)
        if isinstance(result, str):
            if _rule_op(rule) == producer.op_type:
                no_producer = result
            continue
        how = f"into {result()}"
        if m.attrs.act is Activation.IDENTITY:
            rename_output(g, x, y)
            return [], how
        return activation_nodes(g, m.name, m.attrs, m.dtype, x, y), how
    return no_producer or f"'{x}' comes from {producer.op_type}, not Conv/ConvTranspose/Gemm/MatMul"


def _fold(
    model: onnx.ModelProto, types: dict[str, TensorInfo], into_producers_only: bool, keep_invalid: bool
) -> tuple[onnx.ModelProto, FoldReport]:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    report = FoldReport()
    report.constants, report.reshapes, report.zero_biases = graph_rules(out, types)
    g = GraphIndex(out.graph, types)
    opset = next((o.version for o in out.opset_import if o.domain in ("", "ai.onnx")), 1)
    for node in g.nodes:
        if not is_inplace_abn(node):
            continue
        m = match_node(g, node, keep_invalid)
        if isinstance(m, NoMatch):  # an invalid node (kept) stays as it is
            checked = None if into_producers_only else m.checked
            rewritten = _standard_form(g, node, checked, opset) if checked is not None else None
            if isinstance(rewritten, tuple):
                report.rewritten.append((node_display_name(node), rewritten[0], m.reason))
            else:
                left = m.reason if rewritten is None else f"{m.reason}; {rewritten}"
                report.left.append((node_display_name(node), left))
            continue
        folded = fold_into_producer(g, m)
        if not isinstance(folded, str):
            g.replace(node, folded[0])
            report.folded.append((m.name, folded[1]))
            continue
        if into_producers_only:
            report.left.append((m.name, f"no producer fold: {folded}"))
            continue
        x, y = node.input[0], node.output[0]
        dtype = helper.np_dtype_to_tensor_dtype(m.dtype)
        if batchnorm_form.check(m.attrs, dtype, g.constant(node.input[1])) is None:
            g.replace(node, batchnorm_form.rewrite(node, m.attrs, g.fresh))
            report.rewritten.append((m.name, batchnorm_form.ROUTE, folded))
            continue
        z = y if m.attrs.act is Activation.IDENTITY else g.fresh(f"{m.name}__affine")
        affine = per_channel_nodes(g, m, x, z, g.ranks.get(x))
        if isinstance(affine, str):
            report.left.append((m.name, affine))  # standard_form needs the rank too
            continue
        g.replace(
            node,
            affine
            + ([] if m.attrs.act is Activation.IDENTITY else activation_nodes(g, m.name, m.attrs, m.dtype, z, y)),
        )
        report.rewritten.append((m.name, "per-channel Mul + Add", folded))
    g.commit()
    _cleanup(out)
    return out, report


def _standard_form(
    g: GraphIndex, node: NodeProto, checked: CheckedNode, opset: int
) -> tuple[str, list[NodeProto]] | str:
    """``node`` (``checked``: valid) as standard ops in place (``standard_form``): its route and nodes, or why
    not."""
    x = node.input[0]
    reason = standard_form.check(g.ranks.get(x))
    if reason is not None:
        return reason
    if checked.dtype is None:
        return "dtype of X is unknown"
    dtype = helper.tensor_dtype_to_np_dtype(checked.dtype)
    nodes = standard_form.rewrite(g, node, checked.name, checked.attrs, dtype, g.ranks[x], opset)
    g.replace(node, nodes)
    route = standard_form.TRAINING_ROUTE if checked.attrs.training_mode else standard_form.ROUTE
    return route, nodes


def _rule_op(rule: Callable[..., object]) -> str:
    """rule_conv_transpose -> ConvTranspose: the op type each producer rule takes."""
    return {"conv": "Conv", "conv_transpose": "ConvTranspose", "gemm": "Gemm", "matmul": "MatMul"}.get(
        rule.__name__.removeprefix("rule_"), ""
    )


def _no_producer_reason(g: GraphIndex, x: str, producer: NodeProto | None) -> str | None:
    if producer is None:
        return f"'{x}' is a graph input or initializer"
    return sole_consumer_reason(g, x)


def fold(model: ModelSource, keep_invalid: bool = False) -> onnx.ModelProto:
    """Return a copy of model (a path, serialized bytes or a ModelProto, never changed) with every
    foldable InplaceABN node replaced by standard ops.

    An invalid InplaceABN node raises ``InplaceABNError``; ``keep_invalid=True`` leaves it in place.
    """
    return fold_with_report(model, keep_invalid=keep_invalid)[0]


def plan_fold(model: ModelSource) -> list[str]:
    """What fold would do, as report lines."""
    return fold_with_report(model)[1].lines()


def _cleanup(model: onnx.ModelProto) -> None:
    """Drop dead initializers, stale value_info, and our opset import when unused."""
    graph = model.graph
    drop_unused_initializers(model)
    graph_inputs = {i.name for i in graph.input}
    produced = {o for n in graph.node for o in n.output} | graph_inputs | {i.name for i in graph.initializer}
    vis = [v for v in graph.value_info if v.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(vis)
    still_custom = any(n.domain == DOMAIN for g in graphs(graph) for n in g.node)
    if not still_custom:
        remove_function_fallback(model)
        drop_opset_import(model, DOMAIN)


__all__ = [
    "PRODUCER_OPS",
    "PRODUCER_RULES",
    "FoldReport",
    "fold",
    "fold_into_producer",
    "fold_with_report",
    "graph_rules",
    "plan_fold",
]
