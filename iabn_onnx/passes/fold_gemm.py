"""Rule: a frozen InplaceABN after a Gemm folds into its B and C.

before:  A -> Gemm(B, C; alpha, beta, transA, transB) -> X -> InplaceABN(scale, B_, mean, var) -> Y
after:   A -> Gemm(B', C'; alpha, beta=1, transA, transB) -> [act] -> Y

Formula: B' = B scaled by s along its output axis (1, or 0 with transB), C' = beta·C·s + t (C = 0
when absent; a scalar, [M], [1, M] or [N, M] C broadcasts), float64, cast back.

Preconditions (the rule returns the reason otherwise): a default-domain Gemm; B a 2-D initializer
and C an initializer, each read by no other node; the channel counts agree.
"""

from __future__ import annotations

import numpy as np
from onnx import NodeProto, helper

from .fold_match import FoldMatch
from .graph_index import GraphIndex, set_attr
from .producer import Rewrite, scale_axis, set_folded_inputs


def rule_gemm(g: GraphIndex, m: FoldMatch, p: NodeProto) -> Rewrite | str:
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
        new_w = scale_axis(w, m.s, out_axis).astype(w.dtype)
        c64 = beta * c.astype(np.float64) if c is not None else np.zeros(1)
        new_c = (c64 * m.s + m.t).astype(w.dtype)  # broadcasts scalar, [M], [1, M] or [N, M]
        set_folded_inputs(p, g, new_w, new_c, 1, 2, m)
        set_attr(p, "beta", 1.0)  # alpha still scales A*B; W' carries s
        return f"Gemm '{p.name or p.output[0]}'"

    return rewrite
