"""What every producer rule shares: the rule signature, weight scaling and input replacement.

A producer rule is ``rule(g, match, producer) -> Rewrite | str``: the reason it does not apply,
or a callable that rewrites the producer (in place, through the index) and says into what.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from onnx import NodeProto

from .fold_match import FoldMatch
from .graph_index import GraphIndex

Rewrite = Callable[[], str]


def scale_axis(w: np.ndarray, s: np.ndarray, axis: int) -> np.ndarray:
    """w (float64) with slice k along ``axis`` multiplied by s[k]."""
    shape = [1] * w.ndim
    shape[axis] = -1
    return w.astype(np.float64) * s.reshape(shape)


def set_folded_inputs(
    p: NodeProto, g: GraphIndex, w: np.ndarray, b: np.ndarray, wi: int, bi: int, m: FoldMatch
) -> None:
    """Point p's weight (input wi) and bias (input bi, added when absent) at new initializers."""
    p.input[wi] = g.add_init(f"{p.input[wi]}__folded", w)
    b_name = g.add_init(f"{p.input[bi]}__folded" if len(p.input) > bi and p.input[bi] else f"{m.name}__bias", b)
    if len(p.input) > bi:
        p.input[bi] = b_name
    else:
        while len(p.input) < bi:
            p.input.append("")
        p.input.append(b_name)
