"""Read a Paddle ``ProgramDesc`` (``model.pdmodel``, ``__model__``) without Paddle.

Only what the exporter needs is decoded, straight from the protobuf wire format
(Paddle's ``framework.proto``): blocks, their variables (name, persistable, tensor dtype
and dims) and their ops (type, inputs and outputs per parameter in file order,
attributes). A file that is not a ProgramDesc, or is truncated, raises
``ProgramError`` naming the file.

Field numbers (``framework.proto``): ProgramDesc.blocks 1; BlockDesc idx 1, parent_idx 2,
vars 3, ops 4; VarDesc name 1, type 2, persistable 3; VarType type 1, lod_tensor 3
(LoDTensorDesc.tensor 1: TensorDesc data_type 1, dims 2); OpDesc inputs 1, outputs 2 (Var:
parameter 1, arguments 2), type 3, attrs 4 (Attr: name 1, type 2, i 3, f 4, s 5, ints 6,
floats 7, strings 8, b 10, bools 11, block_idx 12, l 13, longs 15, float64s 16, float64 19).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any

from .checkpoint import _varint

#: VarType.Type values of tensors (the rest are feed/fetch lists, readers, ...)
LOD_TENSOR = 7
_ATTR_FIELDS = {3: "i", 4: "f", 5: "s", 6: "ints", 7: "floats", 8: "strings", 10: "b", 11: "bools",
                12: "block_idx", 13: "l", 15: "longs", 16: "float64s", 19: "float64"}  # fmt: skip
_REPEATED = {"ints", "floats", "strings", "bools", "longs", "float64s"}
_MAX_BYTES = 1 << 30


class ProgramError(ValueError):
    """A file that is not a readable Paddle ProgramDesc."""


@dataclass
class VarDesc:
    name: str
    var_type: int | None = None
    persistable: bool = False
    dtype: int | None = None
    dims: list[int] = field(default_factory=list)


@dataclass
class OpDesc:
    type: str
    inputs: dict[str, list[str]] = field(default_factory=dict)  # parameter -> arguments, in file order
    outputs: dict[str, list[str]] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    def input(self, parameter: str) -> str | None:
        args = self.inputs.get(parameter) or []
        return args[0] if args else None

    def output(self, parameter: str) -> str | None:
        args = self.outputs.get(parameter) or []
        return args[0] if args else None


@dataclass
class BlockDesc:
    idx: int = 0
    parent_idx: int = -1
    vars: dict[str, VarDesc] = field(default_factory=dict)
    ops: list[OpDesc] = field(default_factory=list)


@dataclass
class ProgramDesc:
    path: str
    blocks: list[BlockDesc]

    @property
    def global_block(self) -> BlockDesc:
        return self.blocks[0]

    def persistable_names(self) -> list[str]:
        """The global block's persistable tensors (parameters and moving statistics), sorted as Paddle saves them."""
        return sorted(
            v.name
            for v in self.global_block.vars.values()
            if v.persistable and v.var_type == LOD_TENSOR and v.name not in ("feed", "fetch")
        )

    def feed_names(self) -> list[str]:
        feeds = [(op.attrs.get("col", 0), op.output("Out")) for op in self.global_block.ops if op.type == "feed"]
        return [name for _, name in sorted(feeds) if name]

    def fetch_names(self) -> list[str]:
        fetches = [(op.attrs.get("col", 0), op.input("X")) for op in self.global_block.ops if op.type == "fetch"]
        return [name for _, name in sorted(fetches) if name]


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value): an int for varints, bytes for the rest."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("a field runs past the end")
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            if pos + 4 > len(buf):
                raise ValueError("a field runs past the end")
            value, pos = buf[pos : pos + 4], pos + 4
        elif wire == 1:
            if pos + 8 > len(buf):
                raise ValueError("a field runs past the end")
            value, pos = buf[pos : pos + 8], pos + 8
        else:
            raise ValueError(f"wire type {wire}")
        out.append((number, wire, value))
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _text(value: Any) -> str:
    if not isinstance(value, bytes):
        raise ValueError("a string field is not length-delimited")
    return value.decode("utf-8")


def _packed_varints(value: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(_signed(v))
    return out


#: AttrType -> the value of an attribute whose field is absent (proto2 leaves defaults out)
_ATTR_DEFAULTS: dict[int, Any] = {0: 0, 1: 0.0, 2: "", 6: False, 9: 0, 15: 0.0}


def _attr(buf: bytes) -> tuple[str, Any]:
    name, attr_type, values = None, None, {}
    for number, wire, value in _fields(buf):
        if number == 1:
            name = _text(value)
            continue
        if number == 2 and wire == 0:
            attr_type = value
            continue
        key = _ATTR_FIELDS.get(number)
        if key is None:
            continue
        if key in ("f", "floats") and wire == 5:
            item: Any = struct.unpack("<f", value)[0]
        elif key in ("float64", "float64s") and wire == 1:
            item = struct.unpack("<d", value)[0]
        elif key in ("s", "strings"):
            item = _text(value)
        elif wire == 0:
            item = bool(value) if key in ("b", "bools") else _signed(value)
        elif wire == 2 and key in _REPEATED:  # packed
            if key == "floats":
                item = list(struct.unpack(f"<{len(value) // 4}f", value))
            elif key == "float64s":
                item = list(struct.unpack(f"<{len(value) // 8}d", value))
            else:
                item = _packed_varints(value)
                item = [bool(v) for v in item] if key == "bools" else item
            values.setdefault(key, []).extend(item)
            continue
        else:
            raise ValueError(f"attribute field {number} has wire type {wire}")
        if key in _REPEATED:
            values.setdefault(key, []).append(item)
        else:
            values[key] = item
    if name is None:
        raise ValueError("an attribute without a name")
    # one value per attribute: the field that is set, else its type's default (a repeated one: [])
    value = next(iter(values.values()), _ATTR_DEFAULTS.get(attr_type, []) if attr_type is not None else [])
    return name, value


def _var_list(buf: bytes) -> tuple[str, list[str]]:
    parameter, arguments = None, []
    for number, _, value in _fields(buf):
        if number == 1:
            parameter = _text(value)
        elif number == 2:
            arguments.append(_text(value))
    if parameter is None:
        raise ValueError("an op input/output without a parameter name")
    return parameter, arguments


def _op(buf: bytes) -> OpDesc:
    op = OpDesc(type="")
    for number, _, value in _fields(buf):
        if number == 3:
            op.type = _text(value)
        elif number in (1, 2):
            parameter, arguments = _var_list(value)
            (op.inputs if number == 1 else op.outputs)[parameter] = arguments
        elif number == 4:
            name, attr = _attr(value)
            op.attrs[name] = attr
    if not op.type:
        raise ValueError("an op without a type")
    return op


def _tensor_desc(buf: bytes, var: VarDesc) -> None:
    for number, wire, value in _fields(buf):
        if number == 1 and wire == 0:
            var.dtype = value
        elif number == 2:
            var.dims.extend(_packed_varints(value) if wire == 2 else [_signed(value)])


def _var(buf: bytes) -> VarDesc:
    var = VarDesc(name="")
    for number, wire, value in _fields(buf):
        if number == 1:
            var.name = _text(value)
        elif number == 3 and wire == 0:
            var.persistable = bool(value)
        elif number == 2:
            for n2, w2, v2 in _fields(value):
                if n2 == 1 and w2 == 0:
                    var.var_type = v2
                elif n2 == 3:  # LoDTensorDesc
                    for n3, _, v3 in _fields(v2):
                        if n3 == 1:
                            _tensor_desc(v3, var)
    if not var.name:
        raise ValueError("a variable without a name")
    return var


def _block(buf: bytes) -> BlockDesc:
    block = BlockDesc()
    for number, wire, value in _fields(buf):
        if number == 1 and wire == 0:
            block.idx = _signed(value)
        elif number == 2 and wire == 0:
            block.parent_idx = _signed(value)
        elif number == 3:
            var = _var(value)
            block.vars[var.name] = var
        elif number == 4:
            block.ops.append(_op(value))
    return block


def parse_program(data: bytes, path: str = "<bytes>") -> ProgramDesc:
    """The ProgramDesc in ``data``; ProgramError naming ``path`` when it is not one."""
    try:
        blocks = [_block(value) for number, wire, value in _fields(data) if number == 1 and wire == 2]
    except (ValueError, UnicodeDecodeError, struct.error) as exc:
        raise ProgramError(f"{path}: not a readable Paddle program ({exc}); is the file truncated?") from None
    if not blocks or not blocks[0].ops:
        raise ProgramError(f"{path}: not a Paddle program (no block with ops)")
    return ProgramDesc(path, blocks)


def read_program(path: str | os.PathLike[str]) -> ProgramDesc:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such Paddle program file: {path}")
    size = os.path.getsize(path)
    if size > _MAX_BYTES:
        raise ProgramError(f"{path}: {size} bytes is too large for a Paddle program description")
    with open(path, "rb") as fh:
        return parse_program(fh.read(), path)


__all__ = ["BlockDesc", "OpDesc", "ProgramDesc", "ProgramError", "VarDesc", "parse_program", "read_program"]
