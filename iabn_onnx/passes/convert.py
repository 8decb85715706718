"""ONNX -> ONNX: BatchNormalization [+ LeakyRelu | Elu] -> one InplaceABN node.

before:  X -> BatchNormalization(scale, B, mean, var; epsilon, momentum, training_mode) -> Z -> LeakyRelu(alpha) -> Y
after:   X -> InplaceABN(scale, B, mean, var; epsilon, momentum, act=leaky_relu, act_alpha=alpha, training_mode) -> Y

A BatchNormalization not followed by a fusable activation becomes
``act=identity``. Preconditions (otherwise the node is skipped and the
report says why):
* the activation is the sole consumer of Z, Z is not a graph output, and
  alpha >= 0 (the operator's range; 0 is ReLU);
* scale, B, mean and var are initializers or graph inputs (not computed);
* epsilon lies in the operator's range; the node is in the default domain;
* training-mode BatchNormalization needs all three outputs or only Y
  (saved mean/var outputs of old opsets are not produced).

The math is identical (ONNX BatchNormalization's momentum convention is the
operator's), so the result is exact.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import onnx
from onnx import NodeProto, helper

from ..graph import ensure_opset_import
from ..model_source import ModelSource, as_model
from ..op.function import MIN_ONNX_OPSET, add_function_fallback
from ..op.schema import (
    DOMAIN,
    EPSILON_RANGE,
    OPSET_VERSION,
    InplaceABNAttrs,
    InplaceABNError,
    make_node,
    register_schema,
)
from ..op.validation import check_model_nodes


@dataclass
class ConvertReport:
    converted: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"converted {n}: {how}" for n, how in self.converted]
        out += [f"skipped {n}: {why}" for n, why in self.skipped]
        out += self.notes
        out.append(f"{len(self.converted)} converted, {len(self.skipped)} skipped")
        return out


_ACTS = {"LeakyRelu": ("leaky_relu", 0.01), "Elu": ("elu", 1.0)}


def _name(node: NodeProto) -> str:
    return node.name or f"{node.op_type}->{node.output[0]}"


def convert_with_report(
    model: ModelSource, function_fallback: bool = True, keep_invalid: bool = False
) -> tuple[onnx.ModelProto, ConvertReport]:
    """Return a copy of model with BatchNormalization(+act) replaced by InplaceABN where exact.

    With ``function_fallback`` (default) the result carries the model-local InplaceABN
    function, so plain onnxruntime still runs it (needs ONNX opset >= 13; the report says
    when it was left out). An InplaceABN node already in the model that is invalid raises
    ``InplaceABNError`` naming it, unless ``keep_invalid``.
    """
    register_schema()
    model = as_model(model)
    if not keep_invalid:
        check_model_nodes(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    report = ConvertReport()
    uses: Counter[str] = Counter(i for n in graph.node for i in n.input)
    consumers: dict[str, list[NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
    available = {i.name for i in graph.initializer} | {i.name for i in graph.input}
    remove: set[int] = set()
    replacements: dict[int, NodeProto] = {}
    for idx, bn in enumerate(graph.node):
        if bn.op_type != "BatchNormalization" or bn.domain not in ("", "ai.onnx"):
            continue
        name = _name(bn)
        attrs = {a.name: helper.get_attribute_value(a) for a in bn.attribute}
        if attrs.get("spatial", 1) != 1:
            report.skipped.append((name, "spatial=0 (per-activation statistics)"))
            continue
        training = int(attrs.get("training_mode", 0))
        bn_outputs = [o for o in bn.output if o]
        if training and len(bn_outputs) not in (1, 3):
            report.skipped.append((name, "training mode with saved-statistics outputs"))
            continue
        if not training and len(bn_outputs) != 1:
            report.skipped.append((name, "extra outputs in inference mode"))
            continue
        params = list(bn.input[1:5])
        computed = [p for p in params if p not in available]
        if computed:
            report.skipped.append((name, f"parameters computed in the graph: {computed}"))
            continue
        eps = float(attrs.get("epsilon", 1e-5))
        if not EPSILON_RANGE[0] <= eps <= EPSILON_RANGE[1]:
            report.skipped.append((name, f"epsilon={eps} outside {list(EPSILON_RANGE)}"))
            continue
        act, alpha, y, how = "identity", 1.0, bn.output[0], "BatchNormalization -> InplaceABN(identity)"
        z = bn.output[0]
        nxt = consumers.get(z, [])
        fusable = len(nxt) == 1 and uses[z] == 1 and z not in outputs
        if fusable and nxt[0].op_type in _ACTS and nxt[0].domain in ("", "ai.onnx"):
            a_node = nxt[0]
            a_act, a_default = _ACTS[a_node.op_type]
            a_alpha = next((a.f for a in a_node.attribute if a.name == "alpha"), a_default)
            if a_alpha >= 0:
                act, alpha, y = a_act, a_alpha, a_node.output[0]
                how = f"BatchNormalization + {a_node.op_type} -> InplaceABN({a_act}, alpha={a_alpha:g})"
                remove.add(next(i for i, n in enumerate(graph.node) if n is a_node))
            else:
                how += f" ({a_node.op_type} alpha={a_alpha:g} is negative; kept separate)"
        try:
            iabn_attrs = InplaceABNAttrs(
                epsilon=eps,
                momentum=float(attrs.get("momentum", 0.9)),
                act=act,
                act_alpha=alpha,
                training_mode=training,
            ).validate(name)
        except InplaceABNError as exc:
            report.skipped.append((name, exc.fault))
            continue
        node_outputs = [y, *bn_outputs[1:]]
        replacements[idx] = make_node([bn.input[0], *params], node_outputs, iabn_attrs, name=bn.name or None)
        report.converted.append((name, how))
    new_nodes = []
    for idx, n in enumerate(graph.node):
        if idx in remove:
            continue
        new_nodes.append(replacements.get(idx, n))
    del graph.node[:]
    graph.node.extend(new_nodes)
    if report.converted:
        ensure_opset_import(out, DOMAIN, OPSET_VERSION)
    if report.converted and function_fallback:
        opset = next((o.version for o in out.opset_import if o.domain in ("", "ai.onnx")), 0)
        if opset >= MIN_ONNX_OPSET:
            out = add_function_fallback(out)
            report.notes.append("added the model-local InplaceABN function (plain onnxruntime runs the model)")
        else:
            report.notes.append(f"no function fallback: ONNX opset {opset} < {MIN_ONNX_OPSET}")
    return out, report


def convert(model: ModelSource, function_fallback: bool = True, keep_invalid: bool = False) -> onnx.ModelProto:
    """Return a copy of model (a path, serialized bytes or a ModelProto, never changed) with
    BatchNormalization(+LeakyRelu/Elu) as InplaceABN nodes."""
    return convert_with_report(model, function_fallback, keep_invalid)[0]


__all__ = ["ConvertReport", "convert", "convert_with_report"]
