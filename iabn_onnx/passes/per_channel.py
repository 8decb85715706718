"""The per-channel fallback: a frozen InplaceABN with no producer to fold into, as Mul + Add.

before:  X -> InplaceABN(scale, B, mean, var) -> Y
after:   X -> Mul(s) -> Add(t) -> [act] -> Y

Formula: s, t from ``fold_match`` (float64, cast to the node's dtype), shaped [C, 1, ...] (NCHW,
broadcast over the spatial axes) or [C] (NHWC). ``fold`` uses it for NHWC and float64 nodes (NCHW
float16/float32 nodes take ``batchnorm_form``, which onnxruntime runs faster); sessions for the NHWC
nodes ``route_choice`` gives to it, which need finite factors and shifts (an infinite scale would make
every output of its channel NaN, where the operator gives ±inf).

Precondition (the reason otherwise): for NCHW, the rank of X is known.
"""

from __future__ import annotations

from onnx import NodeProto, helper

from .fold_match import FoldMatch
from .graph_index import GraphIndex


def per_channel_nodes(g: GraphIndex, m: FoldMatch, x: str, z: str, rank: int | None) -> list[NodeProto] | str:
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
