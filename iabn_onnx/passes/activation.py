"""The activation after a fold: LeakyRelu / Elu, or for float64 an expansion onnxruntime runs.

before:  Z -> (the activation InplaceABN applied) -> Y
after:   Z -> Relu -> Y                                               (leaky_relu or elu with alpha 0)
         Z -> LeakyRelu(alpha) | Elu(alpha) -> Y                      (float16, float32)
         Z -> Min(Z, 0) -> [Exp -> Sub 1 ->] Mul alpha -> Add Relu(Z) -> Y   (float64)
         Z -> Identity -> Y                                           (identity)

Formula (float64): leaky_relu(z) = relu(z) + alpha·min(z, 0); elu(z) = relu(z) + alpha·(exp(min(z, 0)) - 1).
onnxruntime's CPU provider has no double LeakyRelu (opset >= 16) or Elu kernel.
"""

from __future__ import annotations

import numpy as np
from onnx import NodeProto, helper

from ..op.schema import Activation, InplaceABNAttrs
from .graph_index import GraphIndex


def activation_nodes(
    g: GraphIndex, name: str, attrs: InplaceABNAttrs, dtype: np.dtype, z: str, y: str
) -> list[NodeProto]:
    """The activation of node ``name`` from ``z`` to ``y``, both of ``dtype``."""
    act, alpha = attrs.act, attrs.act_alpha
    if act is Activation.IDENTITY:
        return [helper.make_node("Identity", [z], [y], name=g.fresh_node(f"{name}__identity"))]
    op, op_attrs = attrs.onnx_activation()
    if attrs.is_relu or np.dtype(dtype) != np.float64:  # Relu has a float64 kernel; onnxruntime fuses Conv + Relu
        return [helper.make_node(op, [z], [y], name=g.fresh_node(f"{name}__{act.value}"), **op_attrs)]
    # onnxruntime's CPU provider has no double LeakyRelu or Elu:
    #   leaky_relu(z) = relu(z) + alpha * min(z, 0)
    #   elu(z)        = relu(z) + alpha * (exp(min(z, 0)) - 1)
    zero = g.add_init(f"{name}__zero", np.zeros((), np.float64))
    a = g.add_init(f"{name}__alpha", np.array(alpha, np.float64))
    tag = act.value
    n = lambda op, ins, out: helper.make_node(op, ins, [out], name=g.fresh_node(f"{name}__{tag}_{op.lower()}"))
    neg, scaled, pos = (g.fresh(f"{name}__{tag}_{k}") for k in ("neg", "scaled", "pos"))
    if act is Activation.LEAKY_RELU:
        negative_part = [n("Mul", [neg, a], scaled)]
    else:
        one = g.add_init(f"{name}__one", np.ones((), np.float64))
        exp, em1 = g.fresh(f"{name}__{tag}_exp"), g.fresh(f"{name}__{tag}_em1")
        negative_part = [n("Exp", [neg], exp), n("Sub", [exp, one], em1), n("Mul", [em1, a], scaled)]
    return [n("Min", [z, zero], neg), *negative_part, n("Relu", [z], pos), n("Add", [pos, scaled], y)]
