"""``paddle.inference``'s predictor API, on onnxruntime: ``Config``, ``create_predictor`` and tensor handles.

PaddleClas, PaddleSeg and PaddleDetection deploy saved programs with this API. A Paddle 2.0-2.5 deploy
script runs a program holding ``inplace_abn`` ops (which Paddle 2.6 and 3.x refuse) with only its
import changed::

    from iabn_onnx import inference             # was: from paddle import inference
    config = inference.Config("infer/model.pdmodel", "infer/model.pdiparams")
    config.disable_gpu()
    predictor = inference.create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(x.shape)
    handle.copy_from_cpu(x)
    predictor.run()
    y = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()

The program is read and run by ``iabn_onnx.fluid``'s machinery (``fluid/executor.py``): ``export_paddle``
and ``InferenceSession``. CPU and optimization switches (``switch_ir_optim``, ``enable_memory_optim``,
``enable_mkldnn``, ...) are accepted and change nothing: onnxruntime optimizes the graph itself;
``set_cpu_math_library_num_threads`` sets onnxruntime's intra-op threads. Switches that need a GPU,
TensorRT or another device raise ``InferenceError``. One predictor serves any batch size.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Any

import numpy as np

from .fluid.executor import Executor, LoadedProgram, load_program
from .fluid.program import FluidError


class InferenceError(FluidError):
    """A call this CPU-only stand-in cannot honour, or a handle used out of order."""


class PrecisionType(enum.IntEnum):
    Float32 = 0
    Int8 = 1
    Half = 2
    Bfloat16 = 3


class PlaceType(enum.IntEnum):
    UNK = -1
    CPU = 0
    GPU = 1


def _unsupported(what: str) -> InferenceError:
    return InferenceError(f"{what} needs a GPU or an accelerator; iabn_onnx.inference runs on the CPU only")


class Config:
    """``Config(model_file, params_file)`` (a 2.x saved model), ``Config(model_dir)`` (a 1.x folder:
    ``__model__`` with ``__params__`` or one file per variable), or ``Config()`` then ``set_model``."""

    def __init__(self, model: str | os.PathLike[str] | None = None, params: str | os.PathLike[str] | None = None):
        self._model: str | None = None
        self._params: str | None = None
        self._threads = 0
        if model is not None:
            self.set_model(model, params)

    # -- the model
    def set_model(self, model: str | os.PathLike[str], params: str | os.PathLike[str] | None = None) -> None:
        self._model = os.fspath(model)
        self._params = os.fspath(params) if params is not None else None

    def set_prog_file(self, path: str | os.PathLike[str]) -> None:
        self._model = os.fspath(path)

    def set_params_file(self, path: str | os.PathLike[str]) -> None:
        self._params = os.fspath(path)

    def set_model_dir(self, path: str | os.PathLike[str]) -> None:
        self._model, self._params = os.fspath(path), None

    def model_dir(self) -> str:
        return self._model if self._model and Path(self._model).is_dir() else ""

    def prog_file(self) -> str:
        return self._model if self._model and not Path(self._model).is_dir() else ""

    def params_file(self) -> str:
        return self._params or ""

    # -- CPU and optimization switches: accepted
    def disable_gpu(self) -> None: ...
    def switch_ir_optim(self, x: bool = True) -> None: ...
    def ir_optim(self) -> bool:
        return True

    def enable_memory_optim(self, x: bool = True) -> None: ...
    def enable_mkldnn(self) -> None: ...
    def set_mkldnn_cache_capacity(self, capacity: int = 0) -> None: ...
    def enable_mkldnn_bfloat16(self) -> None: ...
    def disable_glog_info(self) -> None: ...
    def switch_use_feed_fetch_ops(self, x: bool = True) -> None: ...
    def switch_specify_input_names(self, x: bool = True) -> None: ...
    def enable_profile(self) -> None: ...
    def delete_pass(self, name: str) -> None: ...
    def use_gpu(self) -> bool:
        return False

    def set_cpu_math_library_num_threads(self, threads: int) -> None:
        self._threads = max(int(threads), 0)

    def cpu_math_library_num_threads(self) -> int:
        return self._threads or 1

    # -- what needs a device
    def enable_use_gpu(self, *args: Any, **kwargs: Any) -> None:
        raise _unsupported("enable_use_gpu")

    def enable_tensorrt_engine(self, *args: Any, **kwargs: Any) -> None:
        raise _unsupported("enable_tensorrt_engine")

    def enable_xpu(self, *args: Any, **kwargs: Any) -> None:
        raise _unsupported("enable_xpu")

    def enable_npu(self, *args: Any, **kwargs: Any) -> None:
        raise _unsupported("enable_npu")

    def enable_custom_device(self, *args: Any, **kwargs: Any) -> None:
        raise _unsupported("enable_custom_device")

    def summary(self) -> str:
        return f"iabn_onnx.inference.Config(model={self._model!r}, params={self._params!r}, device=CPU)"


class Tensor:
    """An input or output handle: ``reshape``, ``copy_from_cpu``, ``copy_to_cpu``, ``shape``, ``name``."""

    def __init__(self, name: str, is_input: bool) -> None:
        self._name, self._is_input = name, is_input
        self._shape: list[int] | None = None
        self._value: np.ndarray | None = None

    def name(self) -> str:
        return self._name

    def reshape(self, shape: Any) -> None:
        self._shape = [int(d) for d in shape]

    def shape(self) -> list[int]:
        if self._value is not None:
            return list(self._value.shape)
        return list(self._shape or [])

    def copy_from_cpu(self, data: Any) -> None:
        if not self._is_input:
            raise InferenceError(f"{self._name} is an output: read it with copy_to_cpu()")
        value = np.ascontiguousarray(data)
        if self._shape is not None and list(value.shape) != self._shape:
            if value.size != int(np.prod(self._shape)):
                raise InferenceError(f"input {self._name}: reshaped to {self._shape}, given {list(value.shape)}")
            value = value.reshape(self._shape)
        self._value = value

    def copy_to_cpu(self) -> np.ndarray:
        if self._value is None:
            raise InferenceError(f"{self._name}: nothing to copy yet (call predictor.run() first)")
        return self._value.copy()

    def type(self) -> np.dtype:
        return self._value.dtype if self._value is not None else np.dtype(np.float32)

    def lod(self) -> list[list[int]]:
        return []

    def set_lod(self, lod: Any) -> None:
        if lod:
            raise InferenceError("LoD tensors are not supported by iabn_onnx.inference")


class Predictor:
    """What ``create_predictor`` gives: handles by name, ``run()``, and ``run(list of arrays)``."""

    def __init__(self, config: Config) -> None:
        if not config._model:
            raise InferenceError("Config has no model: Config(model_file, params_file) or set_model(...)")
        self._config = config
        self._program: LoadedProgram = load_program(config._model, config._params)
        self._executor = Executor()
        if config._threads:
            self._executor.intra_op_threads = config._threads
        self._inputs = {n: Tensor(n, True) for n in self._program.feed_names}
        self._outputs = {n: Tensor(n, False) for n in self._program.fetch_names}

    def get_input_names(self) -> list[str]:
        return list(self._inputs)

    def get_output_names(self) -> list[str]:
        return list(self._outputs)

    def get_input_handle(self, name: str) -> Tensor:
        if name not in self._inputs:
            raise InferenceError(f"no input named {name!r} (inputs: {list(self._inputs)})")
        return self._inputs[name]

    def get_output_handle(self, name: str) -> Tensor:
        if name not in self._outputs:
            raise InferenceError(f"no output named {name!r} (outputs: {list(self._outputs)})")
        return self._outputs[name]

    def run(self, inputs: list[Any] | None = None) -> Any:
        """Run on the input handles' data; or, given arrays in input order, return the outputs as a list."""
        if inputs is not None:
            if len(inputs) != len(self._inputs):
                raise InferenceError(f"run() got {len(inputs)} arrays for {len(self._inputs)} inputs")
            for handle, value in zip(self._inputs.values(), inputs):
                handle._shape = None
                handle.copy_from_cpu(np.asarray(value))
        missing = [n for n, h in self._inputs.items() if h._value is None]
        if missing:
            raise InferenceError(f"input {missing[0]!r} has no data: call copy_from_cpu before run()")
        feed = {n: h._value for n, h in self._inputs.items()}
        values = self._executor.run(self._program, feed=feed, fetch_list=list(self._outputs))
        for handle, value in zip(self._outputs.values(), values):
            handle._value = np.asarray(value)
        return [np.asarray(v) for v in values] if inputs is not None else True

    def clone(self) -> Predictor:
        return Predictor(self._config)

    def clear_intermediate_tensor(self) -> None: ...
    def try_shrink_memory(self) -> int:
        return 0


def create_predictor(config: Config) -> Predictor:
    return Predictor(config)


def get_version() -> str:
    from . import __version__

    return f"iabn_onnx.inference {__version__} (onnxruntime, CPU)"


__all__ = [
    "Config",
    "InferenceError",
    "PlaceType",
    "PrecisionType",
    "Predictor",
    "Tensor",
    "create_predictor",
    "get_version",
]
