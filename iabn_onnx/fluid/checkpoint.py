"""Readers for Paddle's checkpoint formats (no Paddle needed).

* ``.pdparams`` (``fluid.save`` / ``paddle.static.save``): a pickle of a dict, variable
  name -> numpy array. It is read with an unpickler that can only rebuild numpy arrays;
  any other class or function in the file is refused before anything runs.
* One LoDTensor file per variable (``fluid.io.save_params`` / ``save_persistables`` /
  ``paddle.static.io.save_vars`` without ``filename``), named by the variable.
* A combined file (``filename=``, e.g. ``__params__``, or ``save_inference_model``'s
  ``.pdiparams``): the same records concatenated, one per variable, sorted by name.

A LoDTensor record, all integers little-endian (Paddle's ``SerializeToStream``)::

    uint32 version (0) | uint64 lod_levels | lod_levels x (uint64 nbytes, nbytes of offsets)
    uint32 version (0) | int32 desc_size | TensorDesc protobuf (desc_size bytes) | raw data

``TensorDesc`` has field 1 ``data_type`` (varint enum; FP16=4, FP32=5, FP64=6) and
field 2 ``dims`` (int64, packed or not). Every fault raises ``CheckpointError`` naming
the variable and the file.
"""

from __future__ import annotations

import importlib
import io
import math
import os
import pickle
import struct
from typing import Any, BinaryIO

import numpy as np

from .program import FluidError

#: Paddle's VarType.Type codes for the tensor element types a record may hold.
PADDLE_DTYPES = {
    0: np.dtype(np.bool_),
    1: np.dtype("<i2"),
    2: np.dtype("<i4"),
    3: np.dtype("<i8"),
    4: np.dtype("<f2"),
    5: np.dtype("<f4"),
    6: np.dtype("<f8"),
    20: np.dtype(np.uint8),
    21: np.dtype(np.int8),
}
_MAX_DESC_BYTES = 1 << 20  # a TensorDesc is a few bytes; anything larger is a corrupt file
#: keys ``paddle.save`` adds beside the arrays (dygraph name map; big arrays split in slices)
_STRUCTURE_KEY = "StructuredToParameterName@@"
_BIG_PARAM_KEY = "UnpackBigParamInfor@@"


class CheckpointError(FluidError):
    """A Paddle checkpoint file that cannot be loaded into the program."""


# -- .pdparams -------------------------------------------------------------------
def _numpy_core(name: str) -> Any:
    """numpy's ``_core.<name>`` (numpy 2) or ``core.<name>`` (numpy 1)."""
    for package in ("numpy._core", "numpy.core"):
        try:
            return importlib.import_module(f"{package}.{name}")
        except ImportError:
            continue
    raise ImportError(f"numpy has no core.{name}")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import codecs

    multiarray, numeric = _numpy_core("multiarray"), _numpy_core("numeric")
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):  # numpy 1.x pickles name numpy.core, 2.x numpy._core
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    allowed[("_codecs", "encode")] = codecs.encode  # protocol-2 pickles (Paddle 1.x) encode bytes this way
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and plain containers; refuses every other global."""

    def __init__(self, file: BinaryIO, path: str) -> None:
        super().__init__(file)
        self.path = path
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        found = self.allowed.get((module, name))
        if found is None:
            raise CheckpointError(
                f"{self.path}: refused to load '{module}.{name}': a .pdparams file holds only numpy arrays "
                "(the file may be hostile or is not a Paddle checkpoint)"
            )
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(f"{self.path}: refused a persistent id in the pickle: not a Paddle .pdparams file")


def read_pdparams(path: str) -> dict[str, np.ndarray]:
    """The arrays of a ``.pdparams`` file, by variable name."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        loaded = _ArrayUnpickler(io.BytesIO(data), path).load()
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable .pdparams pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path}: holds a {type(loaded).__name__}, expected a dict of name -> array")
    loaded = dict(loaded)
    loaded.pop(_STRUCTURE_KEY, None)
    _join_big_params(loaded, path)
    arrays: dict[str, np.ndarray] = {}
    for name, value in loaded.items():
        if not isinstance(name, str) or not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
            what = type(value).__name__ if not isinstance(value, np.ndarray) else f"array of {value.dtype}"
            raise CheckpointError(f"variable {name!r} in {path}: holds a {what}, expected a numeric numpy array")
        arrays[name] = value
    return arrays


def _join_big_params(loaded: dict[Any, Any], path: str) -> None:
    """Paddle splits arrays over its pickle limit into slices listed under ``_BIG_PARAM_KEY``."""
    info = loaded.pop(_BIG_PARAM_KEY, None)
    if info is None:
        return
    if not isinstance(info, dict):
        raise CheckpointError(f"{path}: malformed '{_BIG_PARAM_KEY}' entry")
    for name, spec in info.items():
        try:
            parts = [loaded.pop(part) for part in spec["slices"]]
            loaded[name] = np.concatenate([p.reshape(-1) for p in parts]).reshape(spec["OriginShape"])
        except Exception as exc:
            raise CheckpointError(f"variable {name!r} in {path}: its slices do not join ({exc})") from None


# -- LoDTensor records --------------------------------------------------------------
class _Reader:
    def __init__(self, data: bytes, path: str) -> None:
        self.data, self.path, self.pos = data, path, 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, name: str, what: str) -> bytes:
        if n < 0 or n > self.remaining():
            raise CheckpointError(
                f"variable {name!r} in {self.path}: truncated ({what} needs {n} bytes, {self.remaining()} left)"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, name: str, what: str) -> int:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), name, what))[0]


def parse_tensor_desc(desc: bytes) -> tuple[int, list[int]]:
    """(data_type, dims) of a serialized ``VarType.TensorDesc``, parsed by protobuf (``framework_proto``);
    ValueError when protobuf rejects it or it names no data type."""
    from google.protobuf.message import DecodeError

    from .framework_proto import parse

    try:
        message = parse("VarType.TensorDesc", desc)
    except DecodeError:
        raise ValueError("the protobuf wire format is corrupt") from None
    if not message.HasField("data_type"):
        raise ValueError("no data_type")
    return message.data_type, list(message.dims)


def read_record(reader: _Reader, name: str) -> np.ndarray:
    """One LoDTensor record (see the module doc) as a numpy array."""
    version = reader.unpack("<I", name, "the LoDTensor version")
    if version != 0:
        raise CheckpointError(f"variable {name!r} in {reader.path}: LoDTensor version {version}, expected 0")
    levels = reader.unpack("<Q", name, "the LoD level count")
    if levels > 64:
        raise CheckpointError(f"variable {name!r} in {reader.path}: {levels} LoD levels; the file is corrupt")
    for _ in range(levels):
        reader.take(reader.unpack("<Q", name, "a LoD level size"), name, "a LoD level")
    version = reader.unpack("<I", name, "the tensor version")
    if version != 0:
        raise CheckpointError(f"variable {name!r} in {reader.path}: tensor version {version}, expected 0")
    desc_size = reader.unpack("<i", name, "the TensorDesc size")
    if not 0 < desc_size <= _MAX_DESC_BYTES:
        raise CheckpointError(f"variable {name!r} in {reader.path}: TensorDesc size {desc_size} is not plausible")
    try:
        code, dims = parse_tensor_desc(reader.take(desc_size, name, "the TensorDesc"))
    except ValueError as exc:
        raise CheckpointError(f"variable {name!r} in {reader.path}: unreadable TensorDesc ({exc})") from None
    dtype = PADDLE_DTYPES.get(code)
    if dtype is None:
        raise CheckpointError(f"variable {name!r} in {reader.path}: unsupported Paddle data_type {code}")
    if any(d < 0 for d in dims):
        raise CheckpointError(f"variable {name!r} in {reader.path}: negative dimension in {dims}")
    nbytes = math.prod(dims) * dtype.itemsize
    raw = reader.take(nbytes, name, f"data of shape {dims} {dtype.name}")
    return np.frombuffer(raw, dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _read_file(path: str, name: str) -> bytes:
    if not os.path.isfile(path):
        raise CheckpointError(f"variable {name!r}: no file {path}")
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise CheckpointError(f"variable {name!r}: cannot read {path} ({exc.strerror or exc})") from None


def read_variable_files(dirname: str, names: list[str]) -> dict[str, np.ndarray]:
    """One record per file ``dirname/<name>``; a file must hold exactly one record."""
    arrays = {}
    for name in names:
        path = os.path.join(dirname, name)
        reader = _Reader(_read_file(path, name), path)
        arrays[name] = read_record(reader, name)
        if reader.remaining():
            raise CheckpointError(f"variable {name!r} in {path}: {reader.remaining()} trailing bytes after the tensor")
    return arrays


def read_combined(path: str, names: list[str]) -> dict[str, np.ndarray]:
    """The records of a combined file, one per name in sorted order; nothing may follow the last."""
    ordered = sorted(names)
    reader = _Reader(_read_file(path, ordered[0] if ordered else "<none>"), path)
    arrays = {name: read_record(reader, name) for name in ordered}
    if reader.remaining():
        raise CheckpointError(
            f"{path}: {reader.remaining()} trailing bytes after the {len(ordered)} variables the program expects "
            f"(last: {ordered[-1] if ordered else 'none'}); the file holds variables this program does not have"
        )
    return arrays


def _encode_varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def record_bytes(array: np.ndarray) -> bytes:
    """One LoDTensor record (the module doc's layout, no LoD), the inverse of ``read_record``."""
    codes = {dtype: code for code, dtype in PADDLE_DTYPES.items()}
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    code = codes.get(little.dtype)
    if code is None:
        raise CheckpointError(f"dtype {array.dtype} has no Paddle data_type")
    desc = b"\x08" + _encode_varint(code) + b"".join(b"\x10" + _encode_varint(d) for d in little.shape)
    header = struct.pack("<IQIi", 0, 0, 0, len(desc))
    return header + desc + little.tobytes()


def write_combined(path: str, arrays: dict[str, np.ndarray]) -> None:
    """A combined parameter file (``save_inference_model``'s ``.pdiparams``): the records sorted by name."""
    with open(path, "wb") as fh:
        for name in sorted(arrays):
            fh.write(record_bytes(arrays[name]))
