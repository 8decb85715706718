"""A Paddle-fluid-style static layer API that builds ONNX models with InplaceABN nodes.

The seed of this project is PaddlePaddle's ``paddle.fluid.layers.inplace_abn``,
which Paddle has since removed. Programs written against it run with only the
import changed::

    import iabn_onnx.fluid as fluid
    x = fluid.data(name='x', shape=[3, 7, 3, 7], dtype='float32')
    hidden1 = fluid.layers.fc(input=x, size=200, param_attr='fc1.w')
    hidden2 = fluid.layers.inplace_abn(input=hidden1)
    hidden3 = fluid.layers.inplace_abn(input=hidden2, act='leaky_relu', act_alpha=0.2)
    model = fluid.to_onnx(fetch_list=[hidden3], for_test=False)   # -> onnx.ModelProto

Saved inference models run as in Paddle, on onnxruntime (``executor.py``)::

    exe = fluid.Executor(fluid.CPUPlace())
    [program, feed_names, fetch_targets] = fluid.io.load_inference_model("infer", exe)
    (y,) = exe.run(program, feed={feed_names[0]: x}, fetch_list=fetch_targets)

Paddle checkpoint files load as in Paddle: ``fluid.load(program, "path/model")``
(``.pdparams``), ``fluid.io.load_params(None, dirname)`` and
``fluid.io.load_persistables(None, dirname, filename=...)`` (per-variable files or a
combined file such as ``save_inference_model``'s ``.pdiparams``). Weights trained
anywhere else go in by name with ``fluid.set_parameters({...})`` (``fluid.parameters()``
lists names and shapes), or through a ``ParamAttr`` whose initializer is
``fluid.initializer.NumpyArrayInitializer(array)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import onnx

from . import io, layers
from .checkpoint import CheckpointError
from .executor import CPUPlace, CUDAPlace, Executor, default_startup_program, global_scope
from .io import load
from .layers import static_data as data  # fluid.data; fluid.layers.data is Paddle 1.x's (adds a batch dim)
from .program import (
    Constant,
    FluidError,
    Normal,
    NumpyArrayInitializer,
    ParamAttr,
    Program,
    Uniform,
    Variable,
    Xavier,
    default_main_program,
    program_guard,
)

initializer = SimpleNamespace(
    Constant=Constant,
    ConstantInitializer=Constant,
    Normal=Normal,
    NormalInitializer=Normal,
    Uniform=Uniform,
    UniformInitializer=Uniform,
    Xavier=Xavier,
    XavierInitializer=Xavier,
    NumpyArrayInitializer=NumpyArrayInitializer,
)


def to_onnx(
    fetch_list: Sequence[Variable],
    for_test: bool = False,
    program: Program | None = None,
    function_fallback: bool = True,
) -> onnx.ModelProto:
    """The ONNX model computing ``fetch_list`` from the ``data`` inputs it needs.

    ``for_test=True`` turns every inplace_abn layer to inference (moving statistics),
    like Paddle's ``program.clone(for_test=True)``. The result passes
    ``onnx.checker.check_model(full_check=True)``. With ``function_fallback`` (default)
    the model carries the InplaceABN function, so plain onnxruntime runs it too.
    """
    return (program or default_main_program()).to_onnx(fetch_list, for_test, function_fallback)


def set_parameters(values: dict[str, np.ndarray], program: Program | None = None) -> None:
    """Set parameter values by name (shapes must match; values are cast to the layer dtype)."""
    (program or default_main_program()).set_parameters(values)


def parameters(program: Program | None = None) -> dict[str, np.ndarray]:
    """Copies of the program's parameter values, by name."""
    return {k: v.copy() for k, v in (program or default_main_program()).parameters.items()}


__all__ = [
    "CPUPlace",
    "CUDAPlace",
    "CheckpointError",
    "Executor",
    "FluidError",
    "ParamAttr",
    "Program",
    "Variable",
    "data",
    "default_main_program",
    "default_startup_program",
    "global_scope",
    "initializer",
    "io",
    "layers",
    "load",
    "parameters",
    "program_guard",
    "set_parameters",
    "to_onnx",
]
