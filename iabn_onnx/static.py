"""``paddle.static``'s names that a Paddle 2.x inference script uses, on onnxruntime.

A script written against Paddle 2.0-2.5 runs a saved program holding ``inplace_abn`` ops (which
Paddle 2.6 and 3.x refuse: ``Operator (inplace_abn) is not registered``) with only its import
changed::

    import iabn_onnx.static as static          # was: import paddle; paddle.enable_static(); from paddle import static
    exe = static.Executor(static.CPUPlace())
    [program, feed_names, fetch_targets] = static.load_inference_model("infer/model", exe)
    (y,) = exe.run(program, feed={feed_names[0]: x}, fetch_list=fetch_targets)

Everything here is ``iabn_onnx.fluid``'s machinery (``fluid/executor.py``) under Paddle 2.x's names.
"""

from __future__ import annotations

import os
from typing import Any

from .fluid.executor import CPUPlace, CUDAPlace, Executor, default_startup_program, global_scope, load_program
from .fluid.program import FluidError


def cpu_places(device_count: int | None = None) -> list[CPUPlace]:
    """``device_count`` CPU places (default 1), as ``paddle.static.cpu_places`` gives."""
    return [CPUPlace() for _ in range(device_count or 1)]


def cuda_places(device_ids: Any = None) -> list[Any]:
    raise FluidError("iabn_onnx.static runs on the CPU only: use static.cpu_places() or static.CPUPlace()")


def load_inference_model(path_prefix: str | os.PathLike[str] | None, executor: Any = None, **kwargs: Any) -> list[Any]:
    """``[program, feed_target_names, fetch_targets]``, as ``paddle.static.load_inference_model`` returns.

    ``path_prefix``: ``infer/model`` for ``infer/model.pdmodel`` + ``infer/model.pdiparams`` (a program
    file or a 1.x folder are read too). Or, with ``path_prefix=None``, the files themselves as Paddle
    2.x takes them: ``model_filename=`` and ``params_filename=``.
    """
    model_file, params_file = kwargs.get("model_filename"), kwargs.get("params_filename")
    if path_prefix is None:
        if not model_file:
            raise FluidError("load_inference_model: give path_prefix, or model_filename and params_filename")
        program = load_program(model_file, params_file)
    else:
        program = load_program(path_prefix, params_file)
    return program.as_loaded()


__all__ = [
    "CPUPlace",
    "CUDAPlace",
    "Executor",
    "cpu_places",
    "cuda_places",
    "default_startup_program",
    "global_scope",
    "load_inference_model",
]
