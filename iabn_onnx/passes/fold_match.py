"""The per-channel affine map a frozen InplaceABN node applies, or why the node cannot fold.

    s[c] = scale[c] / sqrt(var[c] + epsilon)        t[c] = B[c] - mean[c] * s[c]
    InplaceABN(X) = act(X * s + t)   (per channel, computed in float64)

Preconditions (``match_node`` returns a ``NoMatch`` with the reason otherwise): valid attributes (the
runtime's own check; an invalid node raises unless kept), training_mode=0, one output, and scale, B,
mean and var constant initializers of shape [C] that are not graph inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import NodeProto

from ..op.schema import INPUT_NAMES, InplaceABNAttrs, InplaceABNError, bound_outputs, node_display_name
from ..op.validation import CheckedNode, check_node
from .graph_index import GraphIndex


@dataclass(frozen=True)
class FoldMatch:
    """A node to fold and its per-channel affine map."""

    node: NodeProto
    name: str
    attrs: InplaceABNAttrs
    s: np.ndarray  # float64
    t: np.ndarray  # float64
    dtype: np.dtype


@dataclass(frozen=True)
class NoMatch:
    """Why a node does not fold, and the runtime's validation of it (None: the node is invalid, kept as it is)."""

    reason: str
    checked: CheckedNode | None

    def __str__(self) -> str:
        return self.reason


def match_node(g: GraphIndex, node: NodeProto, keep_invalid: bool) -> FoldMatch | NoMatch:
    name = node_display_name(node)
    try:  # the runtime's validation: a node it would reject is never rewritten
        checked = check_node(node, g.types)
    except InplaceABNError as exc:
        if not keep_invalid:
            raise
        return NoMatch(f"invalid node: {exc.fault}", None)
    attrs = checked.attrs
    if attrs.training_mode:
        return NoMatch("training_mode=1 (batch statistics are computed at run time)", checked)
    if len(node.input) != 5 or len(bound_outputs(node)) != 1:
        return NoMatch("unexpected number of inputs/outputs", checked)
    params = []
    for role, inp in zip(INPUT_NAMES[1:], node.input[1:]):
        arr = g.constant(inp)
        if arr is None:
            return NoMatch(f"non-constant {role} ('{inp}' is not an initializer)", checked)
        if arr.ndim != 1:
            return NoMatch(f"{role} has shape {list(arr.shape)}, not [C]", checked)
        params.append(arr)
    if len({p.shape for p in params}) != 1:
        return NoMatch("scale, B, mean and var differ in length", checked)
    scale, bias, mean, var = (p.astype(np.float64) for p in params)
    s = scale / np.sqrt(var + attrs.epsilon)
    t = bias - mean * s
    return FoldMatch(node, name, attrs, s, t, params[0].dtype)
