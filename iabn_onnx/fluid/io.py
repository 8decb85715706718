"""``fluid.io``: load Paddle checkpoint files into a program's parameters.

Paddle's signatures are kept; ``executor`` is accepted and ignored (``None`` is fine),
because the program here holds its parameter values itself. Every variable is read and
checked (present, same shape, same dtype as the layer's) before any parameter changes:
a load either sets them all or raises ``CheckpointError`` and changes nothing.

In this program every persistable variable is a parameter (the layers create no
optimizer state), so ``load_params`` and ``load_persistables`` read the same set.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .checkpoint import CheckpointError, read_combined, read_pdparams, read_variable_files
from .executor import load_inference_model  # Paddle's fluid.io.load_inference_model (executor.py)
from .program import Program, Variable, default_main_program


def _apply(program: Program, arrays: dict[str, np.ndarray], names: Iterable[str], source: str) -> None:
    """Check every named value against its parameter, then set them all."""
    staged: dict[str, np.ndarray] = {}
    for name in names:
        if name not in arrays:
            raise CheckpointError(f"variable {name!r} is missing from {source}")
        current, value = program.parameters[name], arrays[name]
        if tuple(value.shape) != current.shape:
            raise CheckpointError(
                f"variable {name!r} in {source}: shape {list(value.shape)}, the layer has {list(current.shape)}"
            )
        if value.dtype != current.dtype:
            raise CheckpointError(f"variable {name!r} in {source}: dtype {value.dtype}, the layer has {current.dtype}")
        staged[name] = np.ascontiguousarray(value)
    program.parameters.update(staged)


def _names(
    program: Program, vars: Iterable[Variable | str] | None, predicate: Callable[[Any], bool] | None
) -> list[str]:
    if vars is None:
        names = list(program.parameters)
    else:
        names = [v.name if isinstance(v, Variable) else str(v) for v in vars]
        unknown = [n for n in names if n not in program.parameters]
        if unknown:
            raise CheckpointError(f"the program has no persistable variable {unknown[0]!r}")
    if predicate is not None:
        names = [n for n in names if predicate(n)]
    return names


def load_vars(
    executor: Any,
    dirname: str | os.PathLike[str],
    main_program: Program | None = None,
    vars: Iterable[Variable | str] | None = None,
    predicate: Callable[[Any], bool] | None = None,
    filename: str | None = None,
) -> None:
    """Load variables saved by ``save_vars``: one file per variable in ``dirname``, or the
    combined file ``dirname/filename`` (records sorted by variable name)."""
    program = main_program or default_main_program()
    names = _names(program, vars, predicate)
    dirname = os.fspath(dirname)
    if filename is None:
        if not os.path.isdir(dirname):
            raise CheckpointError(f"{dirname}: no such directory of variable files")
        arrays, source = read_variable_files(dirname, names), dirname
    else:
        source = os.path.join(dirname, filename)
        arrays = read_combined(source, names)
    _apply(program, arrays, names, source)


def load_params(
    executor: Any, dirname: str | os.PathLike[str], main_program: Program | None = None, filename: str | None = None
) -> None:
    """Paddle's ``fluid.io.load_params``: every parameter, from ``save_params`` files."""
    load_vars(executor, dirname, main_program, filename=filename)


def load_persistables(
    executor: Any, dirname: str | os.PathLike[str], main_program: Program | None = None, filename: str | None = None
) -> None:
    """Paddle's ``fluid.io.load_persistables`` (here the persistables are the parameters)."""
    load_vars(executor, dirname, main_program, filename=filename)


def load(
    program: Program,
    model_path: str | os.PathLike[str],
    executor: Any = None,
    var_list: Iterable[Variable | str] | None = None,
) -> None:
    """Paddle's ``fluid.load``: ``model_path + ".pdparams"`` (a trailing ``.pdparams`` is allowed).

    As in Paddle, when that file does not exist, ``model_path`` may instead be a directory
    of per-variable files or a combined file written by ``save_vars``/``save_params``.
    """
    path = os.fspath(model_path)
    prefix = path[: -len(".pdparams")] if path.endswith(".pdparams") else path
    names = _names(program, var_list, None)
    if os.path.isfile(prefix + ".pdparams"):
        source = prefix + ".pdparams"
        arrays = read_pdparams(source)
    elif os.path.isdir(path):
        arrays, source = read_variable_files(path, names), path
    elif os.path.isfile(path):
        arrays, source = read_combined(path, names), path
    else:
        raise CheckpointError(f"{prefix}.pdparams: no such file (nor a directory or file of saved variables)")
    _apply(program, arrays, names, source)


__all__ = ["CheckpointError", "load", "load_inference_model", "load_params", "load_persistables", "load_vars"]
