"""The InplaceABN operator: contract (schema.py) and numpy reference (reference.py)."""

from .reference import activation_reference, inplace_abn_reference
from .schema import (
    DOMAIN,
    OP_TYPE,
    OPSET_VERSION,
    Activation,
    InplaceABNAttrs,
    InplaceABNError,
    Layout,
    make_node,
    register_schema,
)

__all__ = [
    "DOMAIN",
    "OPSET_VERSION",
    "OP_TYPE",
    "Activation",
    "InplaceABNAttrs",
    "InplaceABNError",
    "Layout",
    "activation_reference",
    "inplace_abn_reference",
    "make_node",
    "register_schema",
]
