"""Fold frozen InplaceABN nodes into standard ONNX ops.

before:  P(X_in, W, b) -> X -> InplaceABN(scale, B, mean, var; eps, act, alpha) -> Y
after:   P(X_in, W', b') -> [act] -> Y                    (producer fold)
    or:  X -> BatchNormalization -> [act] -> Y            (no producer; NCHW float16/float32, batchnorm_form.py)
    or:  X -> Mul(s) -> Add(t) -> [act] -> Y              (per-channel fallback: NHWC, float64)

with, per channel c, computed in float64 and cast back to the model dtype:
    s[c] = scale[c] / sqrt(var[c] + eps)
    t[c] = B[c] - mean[c] * s[c]
    W'   = W scaled by s along the producer's output-channel axis
    b'   = b * s + t            (b = 0 when the producer has no bias)
and [act] is LeakyRelu(alpha), Elu(alpha) (float64: an expansion in ops
onnxruntime's CPU provider has for double), or nothing for identity.

Preconditions (each rule returns a reason instead of folding):
* the node has training_mode=0 and valid attributes;
* scale, B, mean and var are initializers that are not graph inputs;
* producer fold: X comes from Conv, ConvTranspose (grouped too), Gemm, or
  MatMul (optionally followed by Add of a constant), X has no other
  consumer and is not a graph output, the producer's weight (and bias) are
  initializers used by no other node, and the channel axis matches the
  producer's output-channel axis (Conv/ConvTranspose: NCHW; Gemm/MatMul:
  the last axis).

Rules are tried in order; the first that matches rewrites. The argument
model is never mutated.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import GraphProto, NodeProto, helper, numpy_helper

from ..graph import drop_opset_import, fresh_name, graphs, subgraphs
from ..op.function import remove_function_fallback
from ..op.schema import (
    DOMAIN,
    INPUT_NAMES,
    Activation,
    InplaceABNAttrs,
    InplaceABNError,
    bound_outputs,
    is_inplace_abn,
    node_display_name,
)
from ..op.validation import TensorInfo, check_node, check_opset, type_table
from . import batchnorm_form


@dataclass
class FoldReport:
    folded: list[tuple[str, str]] = field(default_factory=list)  # (node, into what)
    left: list[tuple[str, str]] = field(default_factory=list)  # (node, why)

    @property
    def count(self) -> int:
        return len(self.folded)

    def lines(self) -> list[str]:
        out = [f"folded {n}: {how}" for n, how in self.folded]
        out += [f"left {n}: {why}" for n, why in self.left]
        out.append(f"{len(self.folded)} folded, {len(self.left)} left")
        return out


class _Graph:
    """Indexes over one graph for matching and rewriting."""

    def __init__(self, graph: GraphProto, types: dict[str, TensorInfo]) -> None:
        self.graph = graph
        self.types = types  # dtype and shape of each value shape inference could type
        self.ranks = {k: len(v.shape) for k, v in types.items() if v.shape is not None}
        self.inits = {i.name: i for i in graph.initializer}
        self.graph_inputs = {i.name for i in graph.input}
        self.graph_outputs = {o.name for o in graph.output}
        self.producer: dict[str, NodeProto] = {}
        self.uses: Counter[str] = Counter()
        for node in graph.node:
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

    def constant(self, name: str) -> np.ndarray | None:
        if name in self.inits and name not in self.graph_inputs:
            return numpy_helper.to_array(self.inits[name])
        return None

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


@dataclass(frozen=True)
class _Match:
    """A node to fold and its per-channel affine map."""

    node: NodeProto
    name: str
    attrs: InplaceABNAttrs
    s: np.ndarray  # float64
    t: np.ndarray  # float64
    dtype: np.dtype


def _check_node(g: _Graph, node: NodeProto, keep_invalid: bool) -> _Match | str:
    name = node_display_name(node)
    try:  # the runtime's validation: a node it would reject is never rewritten
        attrs = check_node(node, g.types).attrs
    except InplaceABNError as exc:
        if not keep_invalid:
            raise
        return f"invalid node: {exc.fault}"
    if attrs.training_mode:
        return "training_mode=1 (batch statistics are computed at run time)"
    if len(node.input) != 5 or len(bound_outputs(node)) != 1:
        return "unexpected number of inputs/outputs"
    params = []
    for role, inp in zip(INPUT_NAMES[1:], node.input[1:]):
        arr = g.constant(inp)
        if arr is None:
            return f"non-constant {role} ('{inp}' is not an initializer)"
        if arr.ndim != 1:
            return f"{role} has shape {list(arr.shape)}, not [C]"
        params.append(arr)
    if len({p.shape for p in params}) != 1:
        return "scale, B, mean and var differ in length"
    scale, bias, mean, var = (p.astype(np.float64) for p in params)
    s = scale / np.sqrt(var + attrs.epsilon)
    t = bias - mean * s
    return _Match(node, name, attrs, s, t, params[0].dtype)


# -- producer rules: each returns a reason (str) or a rewrite callable --------------
Rewrite = Callable[[], str]


def _sole_consumer_ok(g: _Graph, x: str) -> str | None:
    if g.uses[x] != 1:
        return f"'{x}' has {g.uses[x]} consumers"
    if x in g.graph_outputs:
        return f"'{x}' is a graph output"
    return None


def _scale_axis(w: np.ndarray, s: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * w.ndim
    shape[axis] = -1
    return w.astype(np.float64) * s.reshape(shape)


def _conv_like_params(g: _Graph, m: _Match, p: NodeProto, op_type: str) -> tuple[np.ndarray, np.ndarray | None] | str:
    """Weight and optional bias of a Conv/ConvTranspose the node may fold into, or the reason not."""
    if p.op_type != op_type or p.domain not in ("", "ai.onnx"):
        return f"not a {op_type}"
    if m.attrs.data_layout.value != "NCHW":
        return f"NHWC InplaceABN after {op_type} (channel axis is not {op_type}'s)"
    w = g.private_constant(p.input[1])
    if w is None:
        return f"{op_type} weight is not a private initializer"
    b = None
    if len(p.input) > 2 and p.input[2]:
        b = g.private_constant(p.input[2])
        if b is None:
            return f"{op_type} bias is not a private initializer"
    return w, b


def _rule_conv(g: _Graph, m: _Match, p: NodeProto) -> Rewrite | str:
    params = _conv_like_params(g, m, p, "Conv")
    if isinstance(params, str):
        return params
    w, b = params
    if w.shape[0] != m.s.shape[0]:
        return "channel count mismatch"

    def rewrite() -> str:
        new_w = _scale_axis(w, m.s, 0).astype(w.dtype)
        new_b = ((b.astype(np.float64) if b is not None else 0.0) * m.s + m.t).astype(w.dtype)
        _set_inputs(p, g, new_w, new_b, 1, 2, m)
        return f"Conv '{p.name or p.output[0]}'"

    return rewrite


def _rule_conv_transpose(g: _Graph, m: _Match, p: NodeProto) -> Rewrite | str:
    params = _conv_like_params(g, m, p, "ConvTranspose")
    if isinstance(params, str):
        return params
    w, b = params
    group = next((a.i for a in p.attribute if a.name == "group"), 1)
    c_in, m_per_group = w.shape[0], w.shape[1]
    if c_in % group or m_per_group * group != m.s.shape[0]:
        return "channel count mismatch"

    def rewrite() -> str:
        # output channel of W[i, j] is (i // (c_in / group)) * m_per_group + j
        in_per_group = c_in // group
        out_channel = (np.arange(c_in)[:, None] // in_per_group) * m_per_group + np.arange(m_per_group)[None, :]
        factor = m.s[out_channel].reshape(c_in, m_per_group, *([1] * (w.ndim - 2)))
        new_w = (w.astype(np.float64) * factor).astype(w.dtype)
        new_b = ((b.astype(np.float64) if b is not None else 0.0) * m.s + m.t).astype(w.dtype)
        _set_inputs(p, g, new_w, new_b, 1, 2, m)
        return f"ConvTranspose '{p.name or p.output[0]}'"

    return rewrite


def _rule_gemm(g: _Graph, m: _Match, p: NodeProto) -> Rewrite | str:
    if p.op_type != "Gemm" or p.domain not in ("", "ai.onnx"):
        return "not a Gemm"
    attrs = {a.name: helper.get_attribute_value(a) for a in p.attribute}
    trans_b = attrs.get("transB", 0)
    beta = attrs.get("beta", 1.0)
    w = g.private_constant(p.input[1])
    if w is None or w.ndim != 2:
        return "Gemm B is not a private 2-D initializer"
    c = None
    if len(p.input) > 2 and p.input[2]:
        c = g.private_constant(p.input[2])
        if c is None:
            return "Gemm C is not a private initializer"
    out_axis = 0 if trans_b else 1
    if w.shape[out_axis] != m.s.shape[0]:
        return "channel count mismatch"

    def rewrite() -> str:
        new_w = _scale_axis(w, m.s, out_axis).astype(w.dtype)
        c64 = beta * c.astype(np.float64) if c is not None else np.zeros(1)
        new_c = (c64 * m.s + m.t).astype(w.dtype)  # broadcasts scalar, [M], [1, M] or [N, M]
        _set_inputs(p, g, new_w, new_c, 1, 2, m)
        _set_attr(p, "beta", 1.0)  # alpha still scales A*B; W' carries s
        return f"Gemm '{p.name or p.output[0]}'"

    return rewrite


def _rule_matmul(g: _Graph, m: _Match, p: NodeProto) -> Rewrite | str:
    add = None
    if p.op_type == "Add" and p.domain in ("", "ai.onnx"):
        add = p
        bias_idx = next((i for i in (0, 1) if g.constant(p.input[i]) is not None), None)
        if bias_idx is None:
            return "Add without a constant operand"
        mm_out = p.input[1 - bias_idx]
        p = g.producer.get(mm_out)
        if p is None or p.op_type != "MatMul":
            return "Add not fed by MatMul"
        reason = _sole_consumer_ok(g, mm_out)
        if reason:
            return reason
    if p.op_type != "MatMul" or p.domain not in ("", "ai.onnx"):
        return "not a MatMul"
    if g.constant(p.input[1]) is None:
        return "MatMul weight is not a constant"
    w = g.private_constant(p.input[1])
    if w is None or w.ndim != 2:
        return "MatMul weight is not a private 2-D initializer"
    if w.shape[1] != m.s.shape[0]:
        return "channel count mismatch"
    rank = _rank(g, m.node.input[0])
    if m.attrs.data_layout.value == "NCHW" and rank != 2:
        return "NCHW InplaceABN after MatMul needs rank 2 (channel axis must be the last)"
    bias = None
    if add is not None:
        bias = g.private_constant(add.input[bias_idx])
        if bias is None or bias.size not in (1, m.s.shape[0]) or (bias.ndim and bias.shape[-1] not in (1, w.shape[1])):
            return "Add bias is not a private per-channel initializer"

    def rewrite() -> str:
        new_w = _scale_axis(w, m.s, 1).astype(w.dtype)
        w_name = g.add_init(f"{p.input[1]}__folded", new_w)
        p.input[1] = w_name
        b64 = bias.astype(np.float64).reshape(-1) if bias is not None else 0.0
        new_b = (b64 * m.s + m.t).astype(w.dtype)
        if add is not None:
            add.input[bias_idx] = g.add_init(f"{add.input[bias_idx]}__folded", new_b)
            return f"MatMul '{p.name or p.output[0]}' + Add '{add.name or add.output[0]}'"
        # insert Add(t) right after the MatMul
        out = g.fresh(f"{p.output[0]}__folded")
        b_name = g.add_init(f"{m.name}__bias", new_b)
        add_node = helper.make_node("Add", [out, b_name], [p.output[0]], name=g.fresh_node(f"{m.name}__bias_add"))
        p.output[0] = out
        g.producer[add_node.output[0]] = _insert_after(g.graph, p, add_node)
        return f"MatMul '{p.name or p.output[0]}' (+ Add)"

    return rewrite


PRODUCER_RULES = (_rule_conv, _rule_conv_transpose, _rule_gemm, _rule_matmul)


def _rank(g: _Graph, name: str) -> int | None:
    return g.ranks.get(name)


def _set_inputs(p: NodeProto, g: _Graph, w: np.ndarray, b: np.ndarray, wi: int, bi: int, m: _Match) -> None:
    p.input[wi] = g.add_init(f"{p.input[wi]}__folded", w)
    b_name = g.add_init(f"{p.input[bi]}__folded" if len(p.input) > bi and p.input[bi] else f"{m.name}__bias", b)
    if len(p.input) > bi:
        p.input[bi] = b_name
    else:
        while len(p.input) < bi:
            p.input.append("")
        p.input.append(b_name)


def _set_attr(node: NodeProto, name: str, value: object) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)
    node.attribute.append(helper.make_attribute(name, value))


def _insert_after(graph: GraphProto, anchor: NodeProto, new: NodeProto) -> NodeProto:
    """Insert a copy of new after anchor; return the inserted (live) node."""
    nodes = list(graph.node)
    idx = next(i for i, n in enumerate(nodes) if n is anchor)
    graph.node.insert(idx + 1, new)
    return graph.node[idx + 1]


# -- activation ------------------------------------------------------------------------
def _activation_nodes(g: _Graph, m: _Match, z: str, y: str) -> list[NodeProto]:
    act, alpha = m.attrs.act, m.attrs.act_alpha
    if act is Activation.IDENTITY:
        return [helper.make_node("Identity", [z], [y], name=g.fresh_node(f"{m.name}__identity"))]
    if m.dtype != np.float64:
        op = "LeakyRelu" if act is Activation.LEAKY_RELU else "Elu"
        return [helper.make_node(op, [z], [y], name=g.fresh_node(f"{m.name}__{act.value}"), alpha=alpha)]
    # onnxruntime's CPU provider has no double LeakyRelu or Elu:
    #   leaky_relu(z) = relu(z) + alpha * min(z, 0)
    #   elu(z)        = relu(z) + alpha * (exp(min(z, 0)) - 1)
    zero = g.add_init(f"{m.name}__zero", np.zeros((), np.float64))
    a = g.add_init(f"{m.name}__alpha", np.array(alpha, np.float64))
    tag = act.value
    n = lambda op, ins, out: helper.make_node(op, ins, [out], name=g.fresh_node(f"{m.name}__{tag}_{op.lower()}"))
    neg, scaled, pos = (g.fresh(f"{m.name}__{tag}_{k}") for k in ("neg", "scaled", "pos"))
    if act is Activation.LEAKY_RELU:
        negative_part = [n("Mul", [neg, a], scaled)]
    else:
        one = g.add_init(f"{m.name}__one", np.ones((), np.float64))
        exp, em1 = g.fresh(f"{m.name}__{tag}_exp"), g.fresh(f"{m.name}__{tag}_em1")
        negative_part = [n("Exp", [neg], exp), n("Sub", [exp, one], em1), n("Mul", [em1, a], scaled)]
    return [n("Min", [z, zero], neg), *negative_part, n("Relu", [z], pos), n("Add", [pos, scaled], y)]


def _per_channel_nodes(g: _Graph, m: _Match, x: str, z: str, rank: int | None) -> list[NodeProto] | str:
    channels = m.s.shape[0]
    if m.attrs.data_layout.value == "NHWC":
        shape: tuple[int, ...] = (channels,)
    else:
        if rank is None:
            return "rank of X is unknown (needed for the NCHW broadcast shape)"
        shape = (channels,) + (1,) * (rank - 2)
    s_name = g.add_init(f"{m.name}__scale", m.s.reshape(shape).astype(m.dtype))
    t_name = g.add_init(f"{m.name}__shift", m.t.reshape(shape).astype(m.dtype))
    mid = g.fresh(f"{m.name}__scaled")
    return [
        helper.make_node("Mul", [x, s_name], [mid], name=g.fresh_node(f"{m.name}__mul")),
        helper.make_node("Add", [mid, t_name], [z], name=g.fresh_node(f"{m.name}__add")),
    ]


# -- driver ------------------------------------------------------------------------------
def fold_with_report(
    model: onnx.ModelProto, into_producers_only: bool = False, keep_invalid: bool = False
) -> tuple[onnx.ModelProto, FoldReport]:
    """Fold every foldable InplaceABN node; return the new model and what happened.

    An invalid InplaceABN node raises ``InplaceABNError`` naming it; with ``keep_invalid``
    it is left as it is and reported instead. ``into_producers_only`` leaves nodes with no
    producer to fold into (instead of the per-channel Mul+Add).
    """
    check_opset(model)
    return _fold(model, type_table(model), into_producers_only, keep_invalid)


def fold_into_producers(model: onnx.ModelProto, types: dict[str, TensorInfo]) -> FoldReport:
    """The runtime's fold, in place: frozen nodes into their Conv/ConvTranspose/Gemm/MatMul only.

    ``types`` is the caller's ``type_table(model)``, so shape inference runs once per session;
    the caller owns ``model`` (the session's own copy) and has validated its nodes.
    """
    return _fold(model, types, into_producers_only=True, keep_invalid=True, in_place=True)[1]


def _fold(
    model: onnx.ModelProto,
    types: dict[str, TensorInfo],
    into_producers_only: bool,
    keep_invalid: bool,
    in_place: bool = False,
) -> tuple[onnx.ModelProto, FoldReport]:
    if in_place:
        out = model
    else:
        out = onnx.ModelProto()
        out.CopyFrom(model)
    report = FoldReport()
    graph = out.graph
    g = _Graph(graph, types)
    for node in list(graph.node):
        if not is_inplace_abn(node):
            continue
        m = _check_node(g, node, keep_invalid)
        if isinstance(m, str):
            report.left.append((node_display_name(node), m))
            continue
        x, y = node.input[0], node.output[0]
        new_nodes: list[NodeProto] | None = None
        producer = g.producer.get(x)
        if producer is not None and _sole_consumer_ok(g, x) is None:
            for rule in PRODUCER_RULES:
                result = rule(g, m, producer)
                if isinstance(result, str):
                    continue
                how = result()
                if m.attrs.act is Activation.IDENTITY:
                    _rename_output(g, x, y)
                    new_nodes = []
                else:
                    new_nodes = _activation_nodes(g, m, x, y)
                report.folded.append((m.name, f"into {how}"))
                break
        if new_nodes is None and into_producers_only:
            report.left.append((m.name, "no Conv/ConvTranspose/Gemm/MatMul producer to fold into"))
            continue
        if new_nodes is None:
            dtype = helper.np_dtype_to_tensor_dtype(m.dtype)
            if batchnorm_form.check(m.attrs, dtype, g.constant(node.input[1])) is None:
                new_nodes = batchnorm_form.rewrite(node, m.attrs, g.fresh)
                report.folded.append((m.name, f"into {batchnorm_form.ROUTE}"))
                _replace_node(graph, node, new_nodes)
                continue
            z = y if m.attrs.act is Activation.IDENTITY else g.fresh(f"{m.name}__affine")
            affine = _per_channel_nodes(g, m, x, z, _rank(g, x))
            if isinstance(affine, str):
                report.left.append((m.name, affine))
                continue
            new_nodes = affine + ([] if m.attrs.act is Activation.IDENTITY else _activation_nodes(g, m, z, y))
            report.folded.append((m.name, "into per-channel Mul + Add"))
        _replace_node(graph, node, new_nodes)
    _cleanup(out)
    return out, report


def fold(model: onnx.ModelProto, keep_invalid: bool = False) -> onnx.ModelProto:
    """Return a copy of model with every foldable InplaceABN node replaced by standard ops.

    An invalid InplaceABN node raises ``InplaceABNError``; ``keep_invalid=True`` leaves it in place.
    """
    return fold_with_report(model, keep_invalid=keep_invalid)[0]


def plan_fold(model: onnx.ModelProto) -> list[str]:
    """What fold would do, as report lines."""
    return fold_with_report(model)[1].lines()


def _rename_output(g: _Graph, old: str, new: str) -> None:
    producer = g.producer[old]
    for i, o in enumerate(producer.output):
        if o == old:
            producer.output[i] = new
    g.producer[new] = producer


def _replace_node(graph: GraphProto, node: NodeProto, new_nodes: list[NodeProto]) -> None:
    nodes = list(graph.node)
    idx = next(i for i, n in enumerate(nodes) if n is node)
    del graph.node[idx]
    for k, n in enumerate(new_nodes):
        graph.node.insert(idx + k, n)


def _cleanup(model: onnx.ModelProto) -> None:
    """Drop dead initializers, stale value_info, and our opset import when unused."""
    graph = model.graph
    used: set[str] = set()
    for n in graph.node:
        used.update(n.input)
    for sg in subgraphs(graph):
        for n in sg.node:
            used.update(n.input)
    used.update(o.name for o in graph.output)
    graph_inputs = {i.name for i in graph.input}
    keep = [i for i in graph.initializer if i.name in used or i.name in graph_inputs]
    if len(keep) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep)
    produced = {o for n in graph.node for o in n.output} | graph_inputs | {i.name for i in graph.initializer}
    vis = [v for v in graph.value_info if v.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(vis)
    still_custom = any(n.domain == DOMAIN for g in graphs(graph) for n in g.node)
    if not still_custom:
        remove_function_fallback(model)
        drop_opset_import(model, DOMAIN)


__all__ = ["PRODUCER_RULES", "FoldReport", "fold", "fold_with_report", "plan_fold"]
