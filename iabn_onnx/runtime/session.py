"""``iabn_onnx.InferenceSession``: onnxruntime with the InplaceABN kernel.

A drop-in for ``onnxruntime.InferenceSession`` that
1. validates every InplaceABN node before onnxruntime sees the model
   (a bad model raises ``InplaceABNError`` naming the node);
2. lowers the nodes to the registered fused kernels (see lowering.py);
3. turns a fault found by a kernel during ``run()`` into a Python
   exception, instead of the process abort the Python-op bridge would give.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort

from iabn_onnx.custom_ops import registration
from iabn_onnx.op.schema import InplaceABNError

from .lowering import LoweredNode, lower

ModelSource = str | os.PathLike | bytes | onnx.ModelProto

#: serialized models above this size are handed to onnxruntime as a file with
#: external data (protobuf cannot serialize more than 2 GiB in one message).
_INLINE_LIMIT = 1 << 30


class ModelLoadError(ValueError):
    """A file or byte string that is not a loadable ONNX model."""


def load_model(source: ModelSource) -> onnx.ModelProto:
    """Load a model from a path, serialized bytes, or a ModelProto (copied)."""
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
        return model
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ModelLoadError("empty byte string is not an ONNX model")
        try:
            return onnx.load_model_from_string(data)
        except Exception as exc:
            raise ModelLoadError(f"bytes are not a valid ONNX model ({type(exc).__name__}: {exc})") from None
    return load_model_file(source)[0]


def load_model_file(source: str | os.PathLike[str]) -> tuple[onnx.ModelProto, bool]:
    """A model file, read once, and whether it kept its tensors in external data."""
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    path = Path(os.fspath(source))
    if not path.is_file():
        raise FileNotFoundError(f"no such model file: {path}")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path}: file is empty (0 bytes)")
    try:
        model = onnx.load(str(path), load_external_data=False)
        external = any(uses_external_data(t) for t in model.graph.initializer)
        if external:
            load_external_data_for_model(model, str(path.parent))
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a valid ONNX model ({type(exc).__name__}: {exc})") from None
    if not model.graph.node and not model.graph.output:
        raise ModelLoadError(f"{path}: not an ONNX model (no graph found; truncated or another format?)")
    return model, external


SPINNING_KEY = "session.intra_op.allow_spinning"


def _config_entry(so: ort.SessionOptions, key: str) -> str | None:
    try:
        return so.get_session_config_entry(key)
    except Exception:  # onnxruntime raises when the key was never set
        return None


def session_options(options: ort.SessionOptions | None = None) -> ort.SessionOptions:
    """SessionOptions with the InplaceABN kernels registered.

    Pass your own ``SessionOptions`` to register on it (it is modified and
    returned). Execution mode is set to sequential: kernel faults are
    reported to the thread that called ``run()``. ``InferenceSession`` also turns
    intra-op thread spinning off when the model keeps kernel nodes, unless you set
    ``session.intra_op.allow_spinning`` yourself.
    """
    registration.register()
    so = options if options is not None else ort.SessionOptions()
    if so.execution_mode != ort.ExecutionMode.ORT_SEQUENTIAL:
        warnings.warn(
            "iabn_onnx sets execution_mode to ORT_SEQUENTIAL so kernel errors reach the calling thread",
            stacklevel=2,
        )
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if id(so) not in _registered_options:
        so.register_custom_ops_library(registration.library_path())
        _registered_options.add(id(so))
        _kept_alive.append(so)
    return so


# SessionOptions is a pybind object without __dict__ or weakrefs; we keep the
# ids of the ones we registered on, and keep them alive so ids stay unique.
_registered_options: set[int] = set()
_kept_alive: list[ort.SessionOptions] = []


class InferenceSession:
    """Like ``onnxruntime.InferenceSession``, with InplaceABN nodes supported.

    ``model`` is a path, serialized bytes, or an ``onnx.ModelProto`` (not
    modified). Other arguments are passed to onnxruntime.

    ``fold_frozen`` (default True): frozen nodes (training_mode=0, constant
    parameters) right after a Conv, ConvTranspose, Gemm or MatMul are folded into
    that layer at session creation, as onnxruntime itself folds
    Conv+BatchNormalization; every other node runs in the fused kernel.
    ``inplace_abn_nodes`` lists the nodes the kernel runs. With
    ``fold_frozen=False`` the kernel runs every node.
    """

    def __init__(
        self,
        model: ModelSource,
        sess_options: ort.SessionOptions | None = None,
        providers: Sequence[Any] | None = None,
        provider_options: Sequence[dict[str, Any]] | None = None,
        fold_frozen: bool = True,
        **kwargs: Any,
    ) -> None:
        source = load_model(model)
        lowered, self.inplace_abn_nodes = lower(source, fold_frozen=fold_frozen)
        so = session_options(sess_options)
        if self.inplace_abn_nodes and _config_entry(so, SPINNING_KEY) is None:
            # spinning intra-op threads starve the Python kernel, which runs on the calling
            # thread: ResNet-50 with 53 kernel nodes took 255 ms spinning, 68 ms not
            so.add_session_config_entry(SPINNING_KEY, "0")
        if providers is None:
            providers = ["CPUExecutionProvider"]
        with registration.ErrorSlot() as faults:
            if lowered.ByteSize() < _INLINE_LIMIT:
                self._session = ort.InferenceSession(
                    lowered.SerializeToString(), so, providers=providers, provider_options=provider_options, **kwargs
                )
            else:
                with tempfile.TemporaryDirectory(prefix="iabn_onnx_") as tmp:
                    path = os.path.join(tmp, "model.onnx")
                    onnx.save(lowered, path, save_as_external_data=True, location="model.onnx.data")
                    self._session = ort.InferenceSession(
                        path, so, providers=providers, provider_options=provider_options, **kwargs
                    )
        if faults:
            raise faults[0].to_exception()

    @property
    def nodes(self) -> list[LoweredNode]:
        return list(self.inplace_abn_nodes)

    def run(
        self,
        output_names: Sequence[str] | None,
        input_feed: dict[str, Any],
        run_options: ort.RunOptions | None = None,
    ) -> list[Any]:
        """As ``onnxruntime.InferenceSession.run``; kernel faults raise InplaceABNError."""
        with registration.ErrorSlot() as faults:
            try:
                outputs = self._session.run(output_names, input_feed, run_options)
            except Exception as exc:
                if faults:
                    raise faults[0].to_exception() from exc
                raise
        if faults:
            raise faults[0].to_exception()
        return outputs

    def __getattr__(self, name: str) -> Any:
        # get_inputs, get_outputs, get_providers, ... come from onnxruntime.
        return getattr(self.__dict__["_session"], name)


__all__ = ["InferenceSession", "InplaceABNError", "ModelLoadError", "load_model", "session_options"]
