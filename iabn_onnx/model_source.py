"""A model given as a path, serialized bytes or a ``ModelProto``: what every public function taking a
model accepts (``InferenceSession``, ``fold``, ``convert``, ``plan_fold``, the checkers).

A file or byte string that protobuf cannot parse as a ``ModelProto`` raises ``ModelLoadError``
naming the file and the fault, in the same words wherever it is read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    import onnx

ModelSource = Union[str, os.PathLike, bytes, "onnx.ModelProto"]


class ModelLoadError(ValueError):
    """A file or byte string that is not a loadable ONNX model."""


def load_model(source: ModelSource) -> onnx.ModelProto:
    """Load a model from a path, serialized bytes, or a ModelProto (copied)."""
    import onnx

    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
        return model
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ModelLoadError("empty byte string is not an ONNX model")
        try:
            model = onnx.load_model_from_string(data)
        except Exception as exc:
            raise unreadable("bytes", exc) from None
        return utf8_checked(model, "bytes")
    return load_model_file(source)[0]


def load_model_file(source: str | os.PathLike[str]) -> tuple[onnx.ModelProto, bool]:
    """A model file, read once, and whether it kept its tensors in external data."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    from .graph import tensors

    path = model_file(source)
    try:
        model = onnx.load(str(path), load_external_data=False)
        external = any(uses_external_data(t) for t in tensors(model.graph))
        if external:
            load_external_data_for_model(model, str(path.parent))
    except Exception as exc:
        raise unreadable(str(path), exc) from None
    return _with_graph(utf8_checked(model, str(path)), path), external


def model_file(source: str | os.PathLike[str]) -> Path:
    path = Path(os.fspath(source))
    if not path.is_file():
        raise FileNotFoundError(f"no such model file: {path}")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path}: file is empty (0 bytes)")
    return path


def _with_graph(model: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    if not model.graph.node and not model.graph.output:
        raise no_graph(path)
    return model


def no_graph(path: Path) -> ModelLoadError:
    return ModelLoadError(f"{path}: not an ONNX model (no graph found; truncated or another format?)")


def unreadable(where: str, exc: BaseException) -> ModelLoadError:
    """The one wording of a model that cannot be read, whichever reader found the fault: protobuf's
    parser (``DecodeError``, which says no more than that) or the outline's walk (``WireError``, as strict)."""
    from google.protobuf.message import DecodeError

    from .runtime.outline import WireError

    if isinstance(exc, (WireError, DecodeError)):  # the walk's detail is dropped: one wording for both
        return ModelLoadError(f"{where}: not a valid ONNX model: the protobuf wire format is corrupt")
    return ModelLoadError(f"{where}: not a valid ONNX model ({type(exc).__name__}: {' '.join(str(exc).split())})")


def utf8_checked(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """``model``, unless a string field holds bytes that are not UTF-8: ONNX's strings are UTF-8, but
    protobuf's parser does not check proto2 string fields; it hands such a value back as ``bytes``, and
    a name read from it later fails deep inside a pass or in onnxruntime's error message."""
    from google.protobuf.descriptor import FieldDescriptor

    def first_bad(message: Any, path: str) -> str | None:
        for field, value in message.ListFields():
            # is_repeated is protobuf >= 5.28's; label, which it replaced, the older releases'
            repeated = getattr(field, "is_repeated", None)
            if repeated is None:
                repeated = field.label == FieldDescriptor.LABEL_REPEATED
            values = value if repeated else (value,)
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                found = next((p for v in values if (p := first_bad(v, f"{path}.{field.name}"))), None)
                if found:
                    return found
            elif field.type == FieldDescriptor.TYPE_STRING and not all(isinstance(v, str) for v in values):
                return f"{path}.{field.name}"
        return None

    bad = first_bad(model, "model")
    if bad is not None:
        raise ModelLoadError(f"{where}: not a valid ONNX model: {bad} holds bytes that are not UTF-8")
    return model


def as_model(source: ModelSource) -> onnx.ModelProto:
    """``source`` as a ModelProto: the object itself when it is one (the callers never change it),
    else the model loaded from the path or the bytes."""
    import onnx

    return source if isinstance(source, onnx.ModelProto) else load_model(source)


__all__ = [
    "ModelLoadError",
    "ModelSource",
    "as_model",
    "load_model",
    "load_model_file",
    "model_file",
    "no_graph",
    "unreadable",
    "utf8_checked",
]
