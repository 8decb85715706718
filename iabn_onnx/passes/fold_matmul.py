"""Rule: a frozen InplaceABN after a MatMul (optionally + Add of a constant) folds into them.

before:  A -> MatMul(W) -> [Add(b)] -> X -> InplaceABN(scale, B, mean, var) -> Y
after:   A -> MatMul(W') -> Add(b') -> [act] -> Y          (an Add is inserted when there was none)

Formula: W' = W scaled by s along axis 1, b' = b·s + t (b = 0 when absent), float64, cast back.

Preconditions (the rule returns the reason otherwise): default-domain MatMul with a 2-D weight
initializer read by no other node; the Add's other operand a per-channel initializer read by no
other node, and the MatMul's output read only by the Add; the channel axis is the last (NHWC, or
NCHW at rank 2); the channel counts agree.
"""

from __future__ import annotations

import numpy as np
from onnx import NodeProto, helper

from .fold_match import FoldMatch
from .graph_index import GraphIndex, sole_consumer_reason
from .producer import Rewrite, scale_axis


def rule_matmul(g: GraphIndex, m: FoldMatch, p: NodeProto) -> Rewrite | str:
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
        reason = sole_consumer_reason(g, mm_out)
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
    rank = g.ranks.get(m.node.input[0])
    if m.attrs.data_layout.value == "NCHW" and rank != 2:
        return "NCHW InplaceABN after MatMul needs rank 2 (channel axis must be the last)"
    bias = None
    if add is not None:
        bias = g.private_constant(add.input[bias_idx])
        if bias is None or bias.size not in (1, m.s.shape[0]) or (bias.ndim and bias.shape[-1] not in (1, w.shape[1])):
            return "Add bias is not a private per-channel initializer"

    def rewrite() -> str:
        new_w = scale_axis(w, m.s, 1).astype(w.dtype)
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
        g.producer[add_node.output[0]] = g.insert_after(p, add_node)
        return f"MatMul '{p.name or p.output[0]}' (+ Add)"

    return rewrite
