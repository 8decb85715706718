"""Rules: a frozen InplaceABN after a Conv or ConvTranspose folds into its weight and bias.

before:  X_in -> Conv|ConvTranspose(W, b) -> X -> InplaceABN(scale, B, mean, var) -> Y
after:   X_in -> Conv|ConvTranspose(W', b') -> [act] -> Y

Formula (s, t from ``fold_match``): W' = W scaled by s along the output-channel axis (Conv:
axis 0; ConvTranspose: W[i, j] belongs to output channel (i // (C_in/group))·(M/group) + j),
b' = b·s + t (b = 0 when absent), in float64, cast back to W's dtype.

Preconditions (the rule returns the reason otherwise): the producer is a default-domain Conv /
ConvTranspose; the node is NCHW (the producer's channel axis); W (and b) are initializers no
other node reads; the channel counts agree. The driver has checked that X has no other reader.
"""

from __future__ import annotations

import numpy as np
from onnx import NodeProto

from .fold_match import FoldMatch
from .graph_index import GraphIndex
from .producer import Rewrite, scale_axis, set_folded_inputs


def _conv_like_params(
    g: GraphIndex, m: FoldMatch, p: NodeProto, op_type: str
) -> tuple[np.ndarray, np.ndarray | None] | str:
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


def rule_conv(g: GraphIndex, m: FoldMatch, p: NodeProto) -> Rewrite | str:
    params = _conv_like_params(g, m, p, "Conv")
    if isinstance(params, str):
        return params
    w, b = params
    if w.shape[0] != m.s.shape[0]:
        return "channel count mismatch"

    def rewrite() -> str:
        new_w = scale_axis(w, m.s, 0).astype(w.dtype)
        new_b = ((b.astype(np.float64) if b is not None else 0.0) * m.s + m.t).astype(w.dtype)
        set_folded_inputs(p, g, new_w, new_b, 1, 2, m)
        return f"Conv '{p.name or p.output[0]}'"

    return rewrite


def rule_conv_transpose(g: GraphIndex, m: FoldMatch, p: NodeProto) -> Rewrite | str:
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
        set_folded_inputs(p, g, new_w, new_b, 1, 2, m)
        return f"ConvTranspose '{p.name or p.output[0]}'"

    return rewrite
