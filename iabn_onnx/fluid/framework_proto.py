"""Paddle's ``framework.proto`` messages, parsed by protobuf itself.

A ``.pdmodel`` / ``__model__`` file is a serialized ``ProgramDesc``, and each tensor record in a
parameter file carries a serialized ``VarType.TensorDesc``. Rather than a reader of our own, the
messages are declared here (field numbers, types and labels, as Paddle's ``framework.proto``
defines them) and protobuf's parser reads them: what protobuf rejects, this rejects, and nothing
needs Paddle. Every message field is declared, so protobuf checks the wire format of nested
messages we never read (op version maps, scalars, var attributes) as Paddle's own parser does.

Strings are declared as ``bytes`` (the same wire type; proto2 does not check UTF-8), so the
caller decodes them and reports a name that is not UTF-8 as a fault of the file. Enums are
declared as ``int32`` (the same wire type), so an unknown value reads as its number.
"""

from __future__ import annotations

import functools
from typing import Any

PACKAGE = "iabn_onnx.paddle_framework"

# descriptor_pb2.FieldDescriptorProto types and labels
_DOUBLE, _FLOAT, _INT64, _INT32, _BOOL, _MESSAGE, _BYTES = 1, 2, 3, 5, 8, 11, 12
_OPTIONAL, _REPEATED = 1, 3

#: message -> [(number, name, type, repeated, message type)]; nested messages as "Outer.Inner"
MESSAGES: dict[str, list[tuple[int, str, int, bool, str]]] = {
    "Version": [(1, "version", _INT64, False, "")],
    "Complex": [(1, "r", _DOUBLE, False, ""), (2, "i", _DOUBLE, False, "")],
    "Scalar": [
        (1, "type", _INT32, False, ""),
        (2, "b", _BOOL, False, ""),
        (3, "i", _INT64, False, ""),
        (4, "r", _DOUBLE, False, ""),
        (5, "c", _MESSAGE, False, "Complex"),
    ],
    "OpDesc.Attr": [
        (1, "name", _BYTES, False, ""),
        (2, "type", _INT32, False, ""),
        (3, "i", _INT32, False, ""),
        (4, "f", _FLOAT, False, ""),
        (5, "s", _BYTES, False, ""),
        (6, "ints", _INT32, True, ""),
        (7, "floats", _FLOAT, True, ""),
        (8, "strings", _BYTES, True, ""),
        (10, "b", _BOOL, False, ""),
        (11, "bools", _BOOL, True, ""),
        (12, "block_idx", _INT32, False, ""),
        (13, "l", _INT64, False, ""),
        (14, "blocks_idx", _INT32, True, ""),
        (15, "longs", _INT64, True, ""),
        (16, "float64s", _DOUBLE, True, ""),
        (17, "var_name", _BYTES, False, ""),
        (18, "vars_name", _BYTES, True, ""),
        (19, "float64", _DOUBLE, False, ""),
        (20, "scalar", _MESSAGE, False, "Scalar"),
        (21, "scalars", _MESSAGE, True, "Scalar"),
    ],
    "OpDesc.Var": [(1, "parameter", _BYTES, False, ""), (2, "arguments", _BYTES, True, "")],
    "OpDesc": [
        (3, "type", _BYTES, False, ""),
        (1, "inputs", _MESSAGE, True, "OpDesc.Var"),
        (2, "outputs", _MESSAGE, True, "OpDesc.Var"),
        (4, "attrs", _MESSAGE, True, "OpDesc.Attr"),
        (5, "is_target", _BOOL, False, ""),
    ],
    "VarType.TensorDesc": [(1, "data_type", _INT32, False, ""), (2, "dims", _INT64, True, "")],
    "VarType.LoDTensorDesc": [
        (1, "tensor", _MESSAGE, False, "VarType.TensorDesc"),
        (2, "lod_level", _INT32, False, ""),
    ],
    "VarType.LoDTensorArrayDesc": [
        (1, "tensor", _MESSAGE, False, "VarType.TensorDesc"),
        (2, "lod_level", _INT32, False, ""),
    ],
    "VarType.ReaderDesc": [(1, "lod_tensor", _MESSAGE, True, "VarType.LoDTensorDesc")],
    "VarType.Tuple": [(1, "element_type", _INT32, True, "")],
    "VarType": [
        (1, "type", _INT32, False, ""),
        (2, "selected_rows", _MESSAGE, False, "VarType.TensorDesc"),
        (3, "lod_tensor", _MESSAGE, False, "VarType.LoDTensorDesc"),
        (4, "tensor_array", _MESSAGE, False, "VarType.LoDTensorArrayDesc"),
        (5, "reader", _MESSAGE, False, "VarType.ReaderDesc"),
        (7, "tuple", _MESSAGE, False, "VarType.Tuple"),
        (8, "string", _MESSAGE, False, "VarType.TensorDesc"),
        (9, "strings", _MESSAGE, False, "VarType.TensorDesc"),
        (10, "vocab", _MESSAGE, False, "VarType.TensorDesc"),
        (11, "sparse_coo", _MESSAGE, False, "VarType.TensorDesc"),
        (12, "sparse_csr", _MESSAGE, False, "VarType.TensorDesc"),
    ],
    "VarDesc.Attr": [
        (1, "name", _BYTES, False, ""),
        (2, "type", _INT32, False, ""),
        (3, "i", _INT32, False, ""),
        (4, "s", _BYTES, False, ""),
        (5, "ints", _INT32, True, ""),
    ],
    "VarDesc": [
        (1, "name", _BYTES, False, ""),
        (2, "type", _MESSAGE, False, "VarType"),
        (3, "persistable", _BOOL, False, ""),
        (4, "need_check_feed", _BOOL, False, ""),
        (5, "is_parameter", _BOOL, False, ""),
        (6, "stop_gradient", _BOOL, False, ""),
        (7, "attrs", _MESSAGE, True, "VarDesc.Attr"),
    ],
    "BlockDesc": [
        (1, "idx", _INT32, False, ""),
        (2, "parent_idx", _INT32, False, ""),
        (3, "vars", _MESSAGE, True, "VarDesc"),
        (4, "ops", _MESSAGE, True, "OpDesc"),
        (5, "forward_block_idx", _INT32, False, ""),
    ],
    "OpVersion": [(1, "version", _INT32, False, "")],
    "OpVersionMap.OpVersionPair": [(1, "op_name", _BYTES, False, ""), (2, "op_version", _MESSAGE, False, "OpVersion")],
    "OpVersionMap": [(1, "pair", _MESSAGE, True, "OpVersionMap.OpVersionPair")],
    "ProgramDesc": [
        (1, "blocks", _MESSAGE, True, "BlockDesc"),
        (4, "version", _MESSAGE, False, "Version"),
        (5, "op_version_map", _MESSAGE, False, "OpVersionMap"),
    ],
}


@functools.cache
def message_class(name: str) -> Any:
    """The protobuf message class of ``name`` (a key of ``MESSAGES``)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(name="iabn_onnx_paddle_framework.proto", package=PACKAGE)
    fdp.syntax = "proto2"
    declared: dict[str, Any] = {}
    for full in sorted(MESSAGES, key=lambda n: n.count(".")):  # outer messages before their nested ones
        outer, _, inner = full.partition(".")
        declared[full] = declared[outer].nested_type.add(name=inner) if inner else fdp.message_type.add(name=outer)
    for full, fields in MESSAGES.items():
        for number, field_name, field_type, repeated, type_name in fields:
            field = declared[full].field.add(name=field_name, number=number, type=field_type)
            field.label = _REPEATED if repeated else _OPTIONAL
            if type_name:
                field.type_name = f".{PACKAGE}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))


def parse(name: str, data: bytes) -> Any:
    """``data`` parsed as the message ``name``; raises protobuf's ``DecodeError`` as protobuf would."""
    message = message_class(name)()
    message.ParseFromString(data)
    return message


__all__ = ["MESSAGES", "message_class", "parse"]
