"""A file's first session, lowered on the outline's bytes without importing onnx: the common case.

When every InplaceABN node of a model takes the BatchNormalization route and none of fold's graph
rules would change the graph, ``lowering.lower`` changes nothing but those nodes, the opset imports
and the function fallback. ``lower_outline`` makes exactly those changes on the protobuf wire, by
the same rules:

* each node's attributes through ``InplaceABNAttrs.from_typed``, its inputs through
  ``shape_faults`` (X's type from the graph's declared value types);
* its route through ``route_choice.choose`` and ``batchnorm_form.check``, and, as ``lowering``
  decides it, "onnxruntime folds it into Conv ... at load" for a Conv's sole reader;
* its replacement through ``batchnorm_form.rewrite``, given a builder that writes NodeProto bytes,
  with fresh names taken from the same set of used names.

So a file's first process pays neither ``import onnx`` (0.11-0.14 s here) nor shape inference.
Anything else returns None, and the session lowers the parsed model as before (which also
reports every fault): a node the kernel, a producer fold or the per-channel form takes, a
parameter that is not an initializer or is fed, X of no declared type or channel count, a node
of a graph rule (``Constant``, ``Shape``, ``Size``, ``CastLike``, a constant-input node
``constant_subgraphs`` evaluates, a Conv bias of zeros), subgraphs, unused initializers, other
model-local functions, anything unreadable. ``tests/test_wire_lowering.py`` checks, model by model,
that the result parses to the model ``lowering.lower`` writes.

Wire layout (onnx.proto field numbers): ModelProto ir_version 1, graph 7, opset_import 8,
functions 25; GraphProto node 1, initializer 5, input 11, output 12, value_info 13;
NodeProto input 1, output 2, name 3, op_type 4, attribute 5, domain 7.
"""

from __future__ import annotations

import functools
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..fresh_names import fresh_name
from ..op import onnx_enums
from ..op.names import DOMAIN, OP_TYPE, OPSET_VERSION
from ..op.schema import ONNX_OPSET, InplaceABNAttrs, bound_outputs, node_display_name, shape_faults
from ..passes import batchnorm_form, route_choice
from ..passes.producer_ops import PRODUCER_OPS
from .outline import WireError, _length_delimited, _read_varint, _varint, fields
from .routes import Route, route_to_json

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
_DEFAULT_DOMAINS = ("", "ai.onnx")
#: nodes fold's graph rules may evaluate or rewrite whatever their inputs (``constant_subgraphs``
#: evaluates a Shape or Size of a static shape, a CastLike of a typed value; ``reshape_dims``
#: starts at a Shape)
_RULE_OPS = frozenset({"Constant", "Shape", "Size", "CastLike"})
#: nodes ``constant_subgraphs`` evaluates when every input is a constant
_CONSTANT_INPUT_OPS = frozenset(
    {"Cast", "Expand", "Reshape", "Unsqueeze", "Squeeze", "Concat", "Slice", "Gather", "ConstantOfShape", "Identity"}
)
#: an AttributeProto's ``type`` field (20, varint) saying GRAPH or GRAPHS: every subgraph attribute has it
_SUBGRAPH_TYPES = (b"\xa0\x01\x05", b"\xa0\x01\x0a")
#: a TensorProto's ``data_location`` field (14, varint) saying EXTERNAL
_EXTERNAL_LOCATION = b"\x70\x01"
_NUMPY_FLOATS = {onnx_enums.FLOAT: "<f4", onnx_enums.FLOAT16: "<f2", onnx_enums.DOUBLE: "<f8"}


class _Decline(Exception):
    """The model is not one this module lowers; the parsed-model lowering takes it."""


@dataclass
class _Node:
    """What ``batchnorm_form`` and the schema's helpers read of a NodeProto, with its place in the graph."""

    input: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    name: str = ""
    op_type: str = ""
    domain: str = ""
    attributes: list[tuple[str, int, Any]] = field(default_factory=list)  # (name, type, value)
    has_subgraph: bool = False
    span: tuple[int, int] = (0, 0)


@dataclass
class _Tensor:
    name: str = ""
    dims: tuple[int, ...] = ()
    data_type: int = 0
    raw: tuple[int, int] | None = None  # raw_data in the outline
    external: dict[str, str] = field(default_factory=dict)
    other_data: bool = False  # typed data fields (float_data, ...)


@dataclass
class Lowered:
    """The lowered model's bytes and what the session reports of it (as the start-up cache keeps it)."""

    data: bytes
    report: dict[str, Any]
    #: (offset, length) stretches of the source file the lowering read
    reads: list[tuple[int, int]]


def lower_outline(data: bytes, source: Path, fuses_conv: bool) -> Lowered | None:
    """The lowered outline ``data`` of the file ``source`` (its tensor references name the file), or None
    when the parsed-model lowering must take it (see the module doc). ``fuses_conv``: the session's
    graph optimizations fold Conv+BatchNormalization (as ``lowering.lower``'s ``onnxruntime_fuses_conv``)."""
    reader = _Reader(data, source)
    try:
        return _lower(data, reader, fuses_conv)
    except Exception:  # _Decline, and any fault of the bytes: the parsed-model lowering reports it, or copes
        return None
    finally:
        reader.close()


def _lower(data: bytes, reader: _Reader, fuses_conv: bool) -> Lowered:
    top = list(fields(data, 0, len(data)))
    graphs = [f for f in top if f[0] == 7]
    if len(graphs) != 1 or graphs[0][1] != _BYTES:
        raise _Decline
    versions = [_read_varint(data, f[3], f[4])[0] for f in top if f[0] == 1 and f[1] == _VARINT]
    ir_version = versions[-1] if versions else 0  # protobuf: the last occurrence wins
    if ir_version and ir_version < 4:  # initializers are graph inputs there
        raise _Decline
    opsets = [(f, _opset(data, f)) for f in top if f[0] == 8]
    if any(domain == DOMAIN and version != OPSET_VERSION for _, (domain, version) in opsets):
        raise _Decline  # check_opset's fault
    functions = [(f, _function_id(data, f)) for f in top if f[0] == 25]
    if any(fid != (DOMAIN, OP_TYPE) for _, fid in functions):
        raise _Decline  # a function of the user's own: the parsed-model path judges its nodes
    _, _, _, g_start, g_end = graphs[0]
    graph = _Graph(data, g_start, g_end)
    plans = graph.plan(reader, fuses_conv)
    if not plans:
        raise _Decline  # no node to lower: the session hands onnxruntime the file as it is
    # the lowered bytes: the graph with each node's replacement in its place, then the model's fields
    parts: list[bytes] = []
    kept = g_start
    for node, new_nodes, _ in plans:
        parts.append(data[kept : node.span[0]])
        parts.extend(_length_delimited(1, n) for n in new_nodes)
        kept = node.span[1]
    parts.append(data[kept:g_end])
    new_graph = b"".join(parts)
    ml_used = any(n.domain == onnx_enums.ML_DOMAIN for n in graph.nodes)
    drop_ml = bool(functions) and not ml_used  # remove_function_fallback's rule
    out: list[bytes] = []
    for f in top:
        number, _, start, _, end = f
        if number == 7:
            out.append(_length_delimited(7, new_graph))
        elif number == 25:
            continue  # the function fallback: no InplaceABN node is left to call it
        elif number == 8:
            domain, _ = next(o for g, o in opsets if g is f)
            if domain == DOMAIN or (drop_ml and domain == onnx_enums.ML_DOMAIN):
                continue
            out.append(data[start:end])
        else:
            out.append(data[start:end])
    default = [version for _, (domain, version) in opsets if domain in _DEFAULT_DOMAINS]
    if not default:  # BatchNormalization needs one: lower adds ONNX_OPSET, after the others
        out.append(_length_delimited(8, _length_delimited(1, b"") + _key(2, _VARINT) + _varint(ONNX_OPSET)))
    elif default[0] == 0:
        raise _Decline
    routes = [route for _, _, route in plans]
    report = {
        "kernel": False,
        "routes": [route_to_json(r) for r in routes],
        "kernel_nodes": [],
        "standard_routes": sorted({r.node for r in routes}),
        "static_shapes": {},
        "fed_routes": [],
    }
    return Lowered(b"".join(out), report, reader.reads)


class _Graph:
    """The main graph's nodes, initializers and declared value types, read once."""

    def __init__(self, data: bytes, start: int, stop: int) -> None:
        self.data = data
        self.nodes: list[_Node] = []
        self.inits: dict[str, tuple[int, int]] = {}  # initializer name -> its TensorProto
        self._tensors: dict[str, _Tensor] = {}
        self.input_names: list[str] = []
        self.output_names: list[str] = []
        self.declared: dict[str, list[tuple[int, int]]] = {}  # value name -> its ValueInfoProtos
        for number, wire, field_start, body, end in fields(data, start, stop):
            if wire != _BYTES:
                continue
            if number == 1:
                node = self._node(body, end, (field_start, end))
                if node.has_subgraph or (node.domain == DOMAIN and node.op_type != OP_TYPE):
                    raise _Decline  # subgraphs; check_model_nodes' fault
                if node.domain in _DEFAULT_DOMAINS and node.op_type in _RULE_OPS:
                    raise _Decline  # early: a graph torch's plain export wrote has hundreds
                self.nodes.append(node)
            elif number == 5:
                self.inits[self._name(body, end, 8)] = (body, end)  # the last of a name wins, as in GraphIndex
            elif number in (11, 12, 13):
                name = self._name(body, end, 1)
                if number == 11:
                    self.input_names.append(name)
                elif number == 12:
                    self.output_names.append(name)
                self.declared.setdefault(name, []).append((body, end))
            elif number == 15:
                raise _Decline  # sparse initializers: left to the parsed model
        self.inputs = set(self.input_names)
        self.outputs = set(self.output_names)

    # -- reading ---------------------------------------------------------------
    def _string(self, body: int, end: int) -> str:
        return self.data[body:end].decode("utf-8")

    def _node(self, start: int, stop: int, span: tuple[int, int]) -> _Node:
        node = _Node(span=span)
        attributes: list[tuple[int, int]] = []
        data = self.data
        pos = start
        while pos < stop:
            key = data[pos]
            if key >= 0x80 or key & 7 != _BYTES:  # a multi-byte key, or not a length-delimited field
                number, _, _, _, pos = next(fields(data, pos, stop))
                if number in (8, 10):
                    raise _Decline
                continue
            # every field this module reads here is a string or a message with a one-byte key: read in
            # line (a network's graph has thousands), with ``fields``' checks
            length = data[pos + 1] if pos + 1 < stop else 0x80
            if length < 0x80:
                body = pos + 2
            else:
                length, body = _read_varint(data, pos + 1, stop)
            end = body + length
            if end > stop:
                raise WireError(f"field {key >> 3} at byte {pos} runs past its message (truncated?)")
            if key == 0x0A:  # 1: input
                node.input.append(data[body:end].decode("utf-8"))
            elif key == 0x12:  # 2: output
                node.output.append(data[body:end].decode("utf-8"))
            elif key == 0x1A:  # 3: name
                node.name = data[body:end].decode("utf-8")
            elif key == 0x22:  # 4: op_type
                node.op_type = data[body:end].decode("utf-8")
            elif key == 0x2A:  # 5: attribute
                attributes.append((body, end))
            elif key == 0x3A:  # 7: domain
                node.domain = data[body:end].decode("utf-8")
            elif key in (0x42, 0x52):  # 8: overload, 10: device_configurations: beyond what this module rewrites
                raise _Decline
            pos = end
        if node.domain == DOMAIN:
            node.attributes = [self._attribute(body, end, node) for body, end in attributes]
        else:
            for b, e in attributes:  # a match inside some value only declines needlessly, never wrongly
                value = data[b:e]
                if _SUBGRAPH_TYPES[0] in value or _SUBGRAPH_TYPES[1] in value:
                    node.has_subgraph = True
                if _EXTERNAL_LOCATION in value:
                    raise _Decline  # a tensor attribute in a file of its own, relative to the model's folder
        return node

    def _attribute(self, start: int, stop: int, node: _Node) -> tuple[str, int, Any]:
        name, kind = "", 0
        values: dict[int, Any] = {}
        for number, wire, _, body, end in fields(self.data, start, stop):
            if number == 1 and wire == _BYTES:
                name = self._string(body, end)
            elif number == 20 and wire == _VARINT:
                kind = _uint(self.data, body, end)
            elif number == 2 and wire == _FIXED32:
                values[2] = struct.unpack_from("<f", self.data, body)[0]
            elif number == 3 and wire == _VARINT:
                values[3] = _signed(_uint(self.data, body, end))
            elif number == 4 and wire == _BYTES:
                values[4] = bytes(self.data[body:end])
            elif number in (6, 11):
                node.has_subgraph = True
            elif number == 21:
                raise _Decline  # a reference to a function's attribute, outside any function
        if kind in (onnx_enums.ATTR_GRAPH, onnx_enums.ATTR_GRAPHS):
            node.has_subgraph = True
        default = {onnx_enums.ATTR_FLOAT: (2, 0.0), onnx_enums.ATTR_INT: (3, 0), onnx_enums.ATTR_STRING: (4, b"")}
        value: Any = None
        if kind in default:
            number, empty = default[kind]
            value = values.get(number, empty)
            if kind == onnx_enums.ATTR_FLOAT:
                value = float(np.float32(value))
            elif kind == onnx_enums.ATTR_STRING:
                value = value.decode("utf-8")
        return name, kind, value

    def _name(self, start: int, stop: int, field_number: int) -> str:
        """The string field ``field_number`` of a message (the last, as protobuf reads it)."""
        name = ""
        for number, wire, _, body, end in fields(self.data, start, stop):
            if number == field_number and wire == _BYTES:
                name = self._string(body, end)
        return name

    def tensor(self, name: str) -> _Tensor:
        """The initializer ``name``, read (once) when a rule needs more than its name."""
        if name not in self._tensors:
            self._tensors[name] = self._tensor(*self.inits[name])
        return self._tensors[name]

    def _tensor(self, start: int, stop: int) -> _Tensor:
        tensor = _Tensor()
        dims: list[int] = []
        for number, wire, _, body, end in fields(self.data, start, stop):
            if number == 1 and wire == _VARINT:
                dims.append(_uint(self.data, body, end))
            elif number == 1 and wire == _BYTES:
                pos = body
                while pos < end:
                    value, pos = _read_varint(self.data, pos, end)
                    dims.append(value)
            elif number == 2 and wire == _VARINT:
                tensor.data_type = _uint(self.data, body, end)
            elif number == 8 and wire == _BYTES:
                tensor.name = self._string(body, end)
            elif number == 9 and wire == _BYTES:
                tensor.raw = (body, end)
            elif number == 13 and wire == _BYTES:
                key = value_text = ""
                for n, w, _, b, e in fields(self.data, body, end):
                    if n == 1 and w == _BYTES:
                        key = self._string(b, e)
                    elif n == 2 and w == _BYTES:
                        value_text = self._string(b, e)
                tensor.external[key] = value_text
            elif number in (3, 4, 5, 6, 7, 10, 11):
                tensor.other_data = True
        tensor.dims = tuple(_signed(d) for d in dims)
        return tensor

    def declared_type(self, name: str) -> tuple[int, tuple[int | None, ...] | None]:
        """A value's element type and dims as the graph declares them (0, None: undeclared)."""
        found = set()
        for start, stop in self.declared.get(name, ()):
            for n, w, _, body, end in fields(self.data, start, stop):
                if n == 2 and w == _BYTES:
                    for tn, tw, _, tb, te in fields(self.data, body, end):
                        if tn == 1 and tw == _BYTES:  # tensor_type
                            found.add(self._tensor_type(tb, te))
        if len(found) > 1:
            raise _Decline  # declared twice, differently: shape inference judges that
        return found.pop() if found else (0, None)

    def _tensor_type(self, start: int, stop: int) -> tuple[int, tuple[int | None, ...] | None]:
        elem_type, dims = 0, None
        for n, w, _, body, end in fields(self.data, start, stop):
            if n == 1 and w == _VARINT:
                elem_type = _uint(self.data, body, end)
            elif n == 2 and w == _BYTES:
                sizes: list[int | None] = []
                for dn, dw, _, db, de in fields(self.data, body, end):
                    if dn == 1 and dw == _BYTES:
                        size = None
                        for vn, vw, _, vb, ve in fields(self.data, db, de):
                            if vn == 1 and vw == _VARINT:
                                size = _signed(_uint(self.data, vb, ve))
                            elif vn == 2:
                                size = None  # a symbol (the oneof's last field wins)
                        sizes.append(size)
                dims = tuple(sizes)
        return elem_type, dims

    # -- planning --------------------------------------------------------------
    def is_constant(self, name: str) -> bool:
        return name in self.inits and name not in self.inputs

    def plan(self, reader: _Reader, fuses_conv: bool) -> list[tuple[_Node, list[bytes], Route]]:
        producer = {o: n for n in self.nodes for o in n.output}
        uses = Counter(i for n in self.nodes for i in n.input)
        for node in self.nodes:
            if node.domain in _DEFAULT_DOMAINS:
                self._no_graph_rule(node, reader)
        read = {i for n in self.nodes for i in n.input} | self.inputs | self.outputs
        if any(name not in read for name in self.inits):
            raise _Decline  # drop_unused_initializers would remove them
        used = {name for n in self.nodes for name in (*n.input, *n.output, n.name)}
        used |= set(self.inits) | self.inputs
        fresh = functools.partial(fresh_name, used)
        plans = []
        for node in self.nodes:
            if node.domain == DOMAIN and node.op_type == OP_TYPE:
                route = self._route(node, producer, uses, reader, fuses_conv)
                new_nodes = batchnorm_form.rewrite(node, route.attrs, fresh, _encode_node)  # type: ignore[arg-type]
                plans.append((node, new_nodes, route))
        return plans

    def _no_graph_rule(self, node: _Node, reader: _Reader) -> None:
        """Decline when one of fold's graph rules could change ``node`` (``_RULE_OPS`` declined already)."""
        if node.op_type in _CONSTANT_INPUT_OPS and all(self.is_constant(i) for i in node.input if i):
            raise _Decline
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 2 and node.input[2]:
            bias = node.input[2]
            if bias in self.inputs or bias not in self.inits:
                return  # zero_bias leaves it
            if not np.any(reader.array(self.tensor(bias))):
                raise _Decline  # zero_bias drops it

    def _route(
        self, node: _Node, producer: dict[str, _Node], uses: Counter[str], reader: _Reader, fuses_conv: bool
    ) -> Route:
        name = node_display_name(node)  # type: ignore[arg-type]
        attrs = InplaceABNAttrs.from_typed(node.attributes, name)
        outputs = bound_outputs(node)  # type: ignore[arg-type]
        if len(node.input) != 5 or not all(node.input) or len(outputs) != 1 or not outputs[0]:
            raise _Decline
        x, *params = node.input
        if x in self.inputs or not all(self.is_constant(p) for p in params):
            raise _Decline  # a fed route, or parameters computed in the graph
        source = producer.get(x)
        x_type, x_dims = self.declared_type(x)
        if source is not None and source.op_type == "Conv" and source.domain in _DEFAULT_DOMAINS:
            weight = self.tensor(source.input[1]) if len(source.input) > 1 and source.input[1] in self.inits else None
            if weight is not None and source.input[1] not in self.inputs and len(weight.dims) >= 3:
                x_type = x_type or weight.data_type
                if x_dims is None or len(x_dims) != len(weight.dims) or x_dims[1] is None:
                    x_dims = (None, weight.dims[0], *[None] * (len(weight.dims) - 2))
        if not x_type or x_dims is None:
            raise _Decline  # shape inference may know what this module does not
        if any(self.tensor(p).data_type != x_type for p in params):
            raise _Decline
        if shape_faults(x_dims, [self.tensor(p).dims for p in params], attrs):
            raise _Decline
        rank = len(x_dims)
        if 2 <= rank <= 5 and x_dims[attrs.channel_axis(rank)] is None:
            raise _Decline
        form, _ = route_choice.choose(attrs, x_type)
        if form != route_choice.BATCHNORM:
            raise _Decline
        scale = reader.array(self.tensor(params[0]))
        if batchnorm_form.check(attrs, x_type, scale) is not None:
            raise _Decline
        inputs = tuple(node.input)
        # an Add of two computed values (a residual sum): no producer rule takes it (fold_matmul's needs a
        # constant operand), so the node takes the standard form
        residual = source is not None and source.op_type == "Add" and not any(map(self.is_constant, source.input))
        if source is not None and source.op_type in PRODUCER_OPS and not residual:
            conv_fed = (
                fuses_conv
                and source.op_type == "Conv"
                and source.domain in _DEFAULT_DOMAINS
                and uses[x] == 1
                and x not in self.outputs
            )
            if not conv_fed:
                raise _Decline  # a producer fold, or the fold's reason then the standard form
            detail = f"onnxruntime folds it into Conv '{source.name or source.output[0]}' at load"
            return Route(name, batchnorm_form.ROUTE, detail, inputs, attrs)
        return Route(name, batchnorm_form.ROUTE, "standard ops", inputs, attrs)


class _Reader:
    """Initializer values, from the outline or (referenced by offset) the source file; records what it read."""

    def __init__(self, data: bytes, source: Path) -> None:
        self.data, self.source = data, source
        self.reads: list[tuple[int, int]] = []
        self._file: BinaryIO | None = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def array(self, tensor: _Tensor) -> np.ndarray:
        dtype = _NUMPY_FLOATS.get(tensor.data_type)
        if dtype is None or tensor.other_data or any(d < 0 for d in tensor.dims):
            raise _Decline
        if tensor.external:
            if tensor.raw is not None or tensor.external.get("location") != self.source.name:
                raise _Decline
            offset, length = int(tensor.external.get("offset", 0)), int(tensor.external["length"])
            if self._file is None:
                self._file = open(self.source, "rb")
            self._file.seek(offset)
            raw = self._file.read(length)
            if len(raw) != length:
                raise _Decline
            self.reads.append((offset, length))
        elif tensor.raw is not None:
            raw = bytes(self.data[tensor.raw[0] : tensor.raw[1]])
        else:
            raw = b""
        values = np.frombuffer(raw, dtype=dtype)
        if values.size != int(np.prod(tensor.dims, dtype=np.int64)):
            raise _Decline
        return values.reshape(tensor.dims)


def _encode_node(
    op_type: str,
    inputs: list[str],
    outputs: list[str],
    name: str | None = None,
    domain: str | None = None,
    **attrs: Any,
) -> bytes:
    """NodeProto bytes as ``helper.make_node`` builds the node (fields it leaves unset stay absent)."""
    parts = [_length_delimited(1, i.encode()) for i in inputs]
    parts += [_length_delimited(2, o.encode()) for o in outputs]
    if name:
        parts.append(_length_delimited(3, name.encode()))
    parts.append(_length_delimited(4, op_type.encode()))
    for key, value in sorted(attrs.items()):
        if value is None:
            continue
        if not isinstance(value, float):
            raise _Decline  # the rewrite here writes float attributes only
        attribute = _length_delimited(1, key.encode()) + _key(2, _FIXED32) + struct.pack("<f", value)
        attribute += _key(20, _VARINT) + _varint(onnx_enums.ATTR_FLOAT)
        parts.append(_length_delimited(5, attribute))
    if domain is not None:
        parts.append(_length_delimited(7, domain.encode()))
    return b"".join(parts)


def _opset(data: bytes, f: tuple[int, int, int, int, int]) -> tuple[str, int]:
    domain, version = "", 0
    for n, w, _, body, end in fields(data, f[3], f[4]):
        if n == 1 and w == _BYTES:
            domain = data[body:end].decode("utf-8")
        elif n == 2 and w == _VARINT:
            version = _signed(_uint(data, body, end))
    return domain, version


def _function_id(data: bytes, f: tuple[int, int, int, int, int]) -> tuple[str, str]:
    name = domain = ""
    for n, w, _, body, end in fields(data, f[3], f[4]):
        if n == 1 and w == _BYTES:
            name = data[body:end].decode("utf-8")
        elif n == 10 and w == _BYTES:
            domain = data[body:end].decode("utf-8")
        elif n == 13:
            raise _Decline  # an overloaded function
    return domain, name


def _uint(data: bytes, pos: int, stop: int) -> int:
    """The varint at ``pos`` (one byte, as nearly every one here is, read directly)."""
    byte = data[pos]
    return byte if byte < 0x80 else _read_varint(data, pos, stop)[0]


def _key(number: int, wire: int) -> bytes:
    return _varint((number << 3) | wire)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value
