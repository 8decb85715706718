"""The InplaceABN operator: contract (schema.py) and numpy reference (reference.py).

Names load their module on first use, so ``iabn_onnx.op.names`` needs neither onnx nor numpy.
"""

from __future__ import annotations

import importlib
from typing import Any

from .names import DOMAIN, OP_TYPE, OPSET_VERSION

_LAZY = {
    "activation_reference": ".reference",
    "inplace_abn_reference": ".reference",
    "Activation": ".schema",
    "InplaceABNAttrs": ".schema",
    "InplaceABNError": ".schema",
    "Layout": ".schema",
    "make_node": ".schema",
    "register_schema": ".schema",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


__all__ = ["DOMAIN", "OPSET_VERSION", "OP_TYPE", *_LAZY]
