"""ONNX's enum numbers that the operator's rules name, as plain ints, so that the schema and the route
rules import without onnx (a cached session sets itself up without it).

The numbers are fixed by onnx.proto and never change between onnx versions; ``tests/test_schema.py``
checks every one against the installed onnx.
"""

from __future__ import annotations

#: the domain of ONNX's classical-ML ops (the function fallback's LabelEncoder)
ML_DOMAIN = "ai.onnx.ml"
#: TensorProto.DataType
FLOAT, FLOAT16, DOUBLE = 1, 10, 11
#: TensorProto.DataLocation
EXTERNAL = 1
#: AttributeProto.AttributeType -> its name
ATTRIBUTE_TYPES = {
    0: "UNDEFINED",
    1: "FLOAT",
    2: "INT",
    3: "STRING",
    4: "TENSOR",
    5: "GRAPH",
    6: "FLOATS",
    7: "INTS",
    8: "STRINGS",
    9: "TENSORS",
    10: "GRAPHS",
    11: "SPARSE_TENSOR",
    12: "SPARSE_TENSORS",
    13: "TYPE_PROTO",
    14: "TYPE_PROTOS",
}
ATTR_FLOAT, ATTR_INT, ATTR_STRING, ATTR_GRAPH, ATTR_GRAPHS = 1, 2, 3, 5, 10


def attribute_type_name(code: int) -> str:
    return ATTRIBUTE_TYPES.get(code, str(code))


def dtype_name(elem_type: int) -> str:
    """``float``, ``float16``, ``int64``, ... (onnx's own name, lower case)."""
    known = {FLOAT: "float", FLOAT16: "float16", DOUBLE: "double"}
    if elem_type in known:
        return known[elem_type]
    from onnx import TensorProto  # only to name an unusual dtype in a message

    return TensorProto.DataType.Name(elem_type).lower()
