"""Read a Paddle ``ProgramDesc`` (``model.pdmodel``, ``__model__``) without Paddle.

protobuf parses the file against Paddle's ``framework.proto`` messages (``framework_proto.py``),
so it is exactly as strict as Paddle's own reader; this module keeps what the exporter needs:
blocks, their variables (name, persistable, tensor dtype and dims) and their ops (type, inputs
and outputs per parameter in file order, attributes). A file protobuf rejects, or one missing
what every program has (an op's type, a variable's name, UTF-8 names), raises ``ProgramError``
naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from . import framework_proto

#: VarType.Type values of tensors (the rest are feed/fetch lists, readers, ...)
LOD_TENSOR = 7
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


#: AttrType -> the Attr field that holds its value (framework.proto)
_ATTR_FIELD = {0: "i", 1: "f", 2: "s", 3: "ints", 4: "floats", 5: "strings", 6: "b", 7: "bools", 8: "block_idx",
               9: "l", 10: "blocks_idx", 11: "longs", 12: "float64s", 13: "var_name", 14: "vars_name",
               15: "float64"}  # fmt: skip
_TEXT_FIELDS = {"s", "strings", "var_name", "vars_name"}


def _text(value: bytes) -> str:
    return value.decode("utf-8")  # UnicodeDecodeError: reported as a fault of the file


def _attr(attr: Any) -> tuple[str, Any]:
    """An OpDesc.Attr's name and value: the field its type names (proto2 gives the default when unset)."""
    if not attr.HasField("name"):
        raise ValueError("an attribute without a name")
    key = _ATTR_FIELD.get(attr.type) if attr.HasField("type") else None
    if key is None:  # no type, or one without a plain value (scalars): the first value set, if any
        fields = [f.name for f, _ in attr.ListFields() if f.name in set(_ATTR_FIELD.values())]
        if not fields:
            return _text(attr.name), []
        key = fields[0]
    value = getattr(attr, key)
    if key in _TEXT_FIELDS:
        value = _text(value) if isinstance(value, bytes) else [_text(v) for v in value]
    elif not isinstance(value, (int, float, bool)):
        value = list(value)
    return _text(attr.name), value


def _op(message: Any) -> OpDesc:
    op = OpDesc(type=_text(message.type))
    if not op.type:
        raise ValueError("an op without a type")
    for args, target in ((message.inputs, op.inputs), (message.outputs, op.outputs)):
        for var in args:
            if not var.HasField("parameter"):
                raise ValueError("an op input/output without a parameter name")
            target[_text(var.parameter)] = [_text(a) for a in var.arguments]
    for attr in message.attrs:
        name, value = _attr(attr)
        op.attrs[name] = value
    return op


def _var(message: Any) -> VarDesc:
    var = VarDesc(name=_text(message.name), persistable=message.persistable)
    if not var.name:
        raise ValueError("a variable without a name")
    if message.HasField("type"):
        var.var_type = message.type.type if message.type.HasField("type") else None
        if message.type.HasField("lod_tensor") and message.type.lod_tensor.HasField("tensor"):
            tensor = message.type.lod_tensor.tensor
            var.dtype = tensor.data_type if tensor.HasField("data_type") else None
            var.dims = list(tensor.dims)
    return var


def _block(message: Any) -> BlockDesc:
    block = BlockDesc(idx=message.idx, parent_idx=message.parent_idx if message.HasField("parent_idx") else -1)
    for var in map(_var, message.vars):
        block.vars[var.name] = var
    block.ops = [_op(op) for op in message.ops]
    return block


def parse_program(data: bytes, path: str = "<bytes>") -> ProgramDesc:
    """The ProgramDesc in ``data`` (protobuf's parser, ``framework_proto``); ProgramError naming ``path``
    when it is not one."""
    from google.protobuf.message import DecodeError

    try:
        blocks = [_block(b) for b in framework_proto.parse("ProgramDesc", data).blocks]
    except DecodeError:
        raise ProgramError(f"{path}: not a readable Paddle program (the protobuf wire format is corrupt)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProgramError(f"{path}: not a readable Paddle program ({exc})") from None
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
