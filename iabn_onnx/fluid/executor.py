"""Paddle's run and load API on onnxruntime: ``Executor``, ``CPUPlace``, ``global_scope``,
``default_startup_program`` and ``io.load_inference_model``.

A Paddle inference script runs with only its import changed::

    import iabn_onnx.fluid as fluid
    exe = fluid.Executor(fluid.CPUPlace())
    [program, feed_names, fetch_targets] = fluid.io.load_inference_model("infer", exe)
    (y,) = exe.run(program, feed={feed_names[0]: x}, fetch_list=fetch_targets)

``exe.run`` computes with ``iabn_onnx.InferenceSession`` on the program's ONNX model (a loaded
program's comes from ``export_paddle``, a layer-built one's from ``Program.to_onnx``), cached per
program and fetch list until the program's parameters change. In training mode (``is_test=False``)
each inplace_abn updates its moving mean and variance after the run, as Paddle's executor does:
the model takes them as inputs and returns the updated values, which replace the program's.
``fluid.global_scope().find_var(name).get_tensor()`` reads a variable's current value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..graph import InputSpec, feed_inputs
from ..op.schema import InplaceABNAttrs, is_inplace_abn
from .program import FluidError, Program, Variable, default_main_program

UPDATED = ".updated"  # suffix of the outputs holding updated moving statistics


class CPUPlace:
    """The only place: onnxruntime's CPU provider."""

    def __repr__(self) -> str:
        return "Place(cpu)"


class CUDAPlace:
    def __init__(self, device_id: int = 0) -> None:
        raise FluidError("iabn_onnx.fluid runs on the CPU only: use fluid.CPUPlace()")


class StartupProgram:
    """``fluid.default_startup_program()``: parameters are initialized when layers create them,
    so running it does nothing and returns ``[]``."""


_startup = StartupProgram()


def default_startup_program() -> StartupProgram:
    return _startup


@dataclass
class LoadedProgram:
    """A saved inference model, as ``load_inference_model`` returns it."""

    path: str
    model: onnx.ModelProto  # from export_paddle, parameters as initializers
    feed_names: list[str]
    fetch_names: list[str]
    parameters: dict[str, np.ndarray] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"LoadedProgram({self.path!r}, feed={self.feed_names}, fetch={self.fetch_names})"

    def as_loaded(self) -> list[Any]:
        """``[program, feed_target_names, fetch_targets]``, as Paddle's ``load_inference_model`` returns."""
        return [self, list(self.feed_names), [FetchTarget(name) for name in self.fetch_names]]


class _Tensor:
    """What ``find_var(name).get_tensor()`` gives: ``np.array(tensor)`` is the current value."""

    def __init__(self, store: dict[str, np.ndarray], name: str) -> None:
        self._store, self._name = store, name

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        value = self._store[self._name]
        return value.astype(dtype) if dtype is not None else value.copy()

    def shape(self) -> list[int]:
        return list(self._store[self._name].shape)

    def set(self, value: Any, place: Any = None) -> None:
        old = self._store[self._name]
        value = np.asarray(value)
        if value.shape != old.shape:
            raise FluidError(f"variable {self._name!r} has shape {list(old.shape)}, got {list(value.shape)}")
        self._store[self._name] = np.ascontiguousarray(value.astype(old.dtype))


class _ScopeVar:
    def __init__(self, store: dict[str, np.ndarray], name: str) -> None:
        self._store, self.name = store, name

    def get_tensor(self) -> _Tensor:
        return _Tensor(self._store, self.name)


class Scope:
    """Variables by name, each read from the parameters of the program that holds it."""

    def __init__(self) -> None:
        self._stores: dict[str, dict[str, np.ndarray]] = {}

    def register(self, store: dict[str, np.ndarray]) -> None:
        for name in store:
            self._stores[name] = store

    def find_var(self, name: str) -> _ScopeVar | None:
        store = self._stores.get(name)
        return _ScopeVar(store, name) if store is not None and name in store else None


_global_scope = Scope()


def global_scope() -> Scope:
    return _global_scope


# -- the model an executor runs ----------------------------------------------------------------
@dataclass
class _Runnable:
    session: Any
    inputs: dict[str, InputSpec]  # fed by the caller
    moving_inputs: list[str]  # fed from the parameters
    updates: dict[str, str]  # output -> the moving statistic it updates
    fetch: list[str]


def _with_moving_statistics(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str], dict[str, str]]:
    """Training-mode InplaceABN nodes read their moving mean/variance as graph inputs and return the
    updated values as graph outputs ``<name>.updated``; returns the model, those inputs and the updates."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    elem = {
        **{vi.name: vi.type.tensor_type.elem_type for vi in graph.input},
        **{n: i.data_type for n, i in inits.items()},
    }
    outputs = {o.name for o in graph.output}
    moving: list[str] = []
    updates: dict[str, str] = {}
    for node in graph.node:
        if not is_inplace_abn(node) or not InplaceABNAttrs.from_node(node).training_mode:
            continue
        for slot, name in ((1, node.input[3]), (2, node.input[4])):
            if name in inits and name not in moving:
                init = inits[name]
                graph.input.append(helper.make_tensor_value_info(name, init.data_type, list(init.dims)))
                moving.append(name)
            target = f"{name}{UPDATED}"
            while len(node.output) <= slot:
                node.output.append("")
            if not node.output[slot]:
                node.output[slot] = target
            updates[node.output[slot]] = name
            if node.output[slot] not in outputs:
                graph.output.append(helper.make_tensor_value_info(node.output[slot], elem.get(name, 1), None))
                outputs.add(node.output[slot])
    kept = [i for i in graph.initializer if i.name not in moving]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return out, moving, updates


def _fetch_name(item: Any) -> str:
    if isinstance(item, Variable):
        return item.name
    name = getattr(item, "name", item)
    if not isinstance(name, str):
        raise FluidError(f"fetch_list item {item!r} is neither a variable nor a variable name")
    return name


@dataclass(frozen=True)
class FetchTarget:
    """A fetch target of a loaded program (Paddle returns Variables; the name is what matters)."""

    name: str


class Executor:
    """``fluid.Executor(fluid.CPUPlace())``: runs loaded and layer-built programs (see the module doc)."""

    def __init__(self, place: Any = None) -> None:
        if place is not None and not isinstance(place, CPUPlace):
            raise FluidError(f"iabn_onnx.fluid runs on the CPU only: use fluid.CPUPlace(), not {place!r}")
        self.place = place or CPUPlace()
        self.intra_op_threads = 0  # onnxruntime's default; iabn_onnx.inference's Config sets it
        self._cache: dict[tuple[int, tuple[str, ...]], tuple[tuple[Any, ...], _Runnable]] = {}

    def close(self) -> None:
        self._cache.clear()

    # the program's ONNX model, its parameters, and a fingerprint of the parameters the model embeds
    def _source(self, program: Any, fetch: list[str]) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        if isinstance(program, LoadedProgram):
            unknown = [n for n in fetch if n not in program.fetch_names]
            if unknown:
                raise FluidError(f"{unknown[0]!r} is not a fetch target of {program.path} ({program.fetch_names})")
            model = onnx.ModelProto()
            model.CopyFrom(program.model)
            for init in model.graph.initializer:  # the program's current values
                if init.name in program.parameters:
                    init.CopyFrom(numpy_helper.from_array(program.parameters[init.name], init.name))
            kept = [o for o in model.graph.output if o.name in fetch]
            del model.graph.output[:]
            model.graph.output.extend(kept)
            return model, program.parameters
        variables = [program.variables.get(n) or program.data_vars.get(n) for n in fetch]
        missing = [n for n, v in zip(fetch, variables) if v is None]
        if missing:
            raise FluidError(f"fetch_list names {missing[0]!r}, which is not a variable of this program")
        return program.to_onnx(variables, for_test=False, function_fallback=False), program.parameters

    def _runnable(self, program: Any, fetch: list[str]) -> _Runnable:
        from ..runtime.session import InferenceSession

        key = (id(program), tuple(fetch))
        params = program.parameters
        cached = self._cache.get(key)
        if cached is not None:
            fingerprint, runnable = cached
            if fingerprint == self._fingerprint(program, params, runnable.moving_inputs):
                return runnable
        model, params = self._source(program, fetch)
        model, moving, updates = _with_moving_statistics(model)
        options = None
        if self.intra_op_threads:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = self.intra_op_threads
        session = InferenceSession(model, options)
        runnable = _Runnable(session, feed_inputs(model, moving), moving, updates, fetch)
        self._cache[key] = (self._fingerprint(program, params, moving), runnable)
        return runnable

    @staticmethod
    def _fingerprint(program: Any, params: Mapping[str, np.ndarray], moving: Sequence[str]) -> tuple[Any, ...]:
        """Changes when a parameter the model embeds is replaced (moving statistics are fed, not embedded)."""
        nodes = len(program.nodes) if isinstance(program, Program) else 0
        return (nodes, *((name, id(value)) for name, value in sorted(params.items()) if name not in moving))

    def _check_feed(self, runnable: _Runnable, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        unknown = [n for n in feed if n not in runnable.inputs]
        if unknown:
            raise FluidError(f"feed names {unknown[0]!r}, which the program does not read (it reads "
                             f"{sorted(runnable.inputs)})")  # fmt: skip
        checked = {}
        for name, (dtype, dims) in runnable.inputs.items():
            if name not in feed:
                raise FluidError(f"feed lacks {name!r}, which the program reads")
            value = np.asarray(feed[name])
            if value.dtype != dtype:
                raise FluidError(f"the fed variable {name!r} must be {dtype.name}, got {value.dtype.name}")
            if value.ndim != len(dims) or any(d is not None and d != n for d, n in zip(dims, value.shape)):
                want = [d if d is not None else -1 for d in dims]
                raise FluidError(f"the fed variable {name!r} must have shape {want}, got {list(value.shape)}")
            checked[name] = value
        return checked

    def run(
        self,
        program: Any = None,
        feed: Mapping[str, Any] | None = None,
        fetch_list: Sequence[Any] | None = None,
        feed_var_name: str = "feed",
        fetch_var_name: str = "fetch",
        scope: Scope | None = None,
        return_numpy: bool = True,
        use_program_cache: bool = False,
    ) -> list[np.ndarray]:
        """Run ``program`` (default: the default main program) and return ``fetch_list``'s values in order."""
        program = default_main_program() if program is None else program
        if isinstance(program, StartupProgram):
            return []
        if not isinstance(program, (Program, LoadedProgram)):
            raise FluidError(f"cannot run {type(program).__name__}: a fluid Program or a loaded inference program")
        if fetch_list is None:
            if not isinstance(program, LoadedProgram):
                raise FluidError("fetch_list is empty: name the variables to fetch")
            fetch_list = program.fetch_names
        fetch = [_fetch_name(item) for item in fetch_list]
        if not fetch:
            raise FluidError("fetch_list is empty: name the variables to fetch")
        runnable = self._runnable(program, fetch)
        inputs = self._check_feed(runnable, feed or {})
        params = program.parameters
        inputs.update({name: params[name] for name in runnable.moving_inputs})
        names = [o.name for o in runnable.session.get_outputs()]
        values = dict(zip(names, runnable.session.run(None, inputs)))
        for output, moving in runnable.updates.items():
            params[moving] = np.ascontiguousarray(values[output])
        (scope or _global_scope).register(params)
        return [values[name] for name in fetch]


def load_inference_model(
    dirname: str | os.PathLike[str],
    executor: Any = None,
    model_filename: str | None = None,
    params_filename: str | None = None,
    **_: Any,
) -> list[Any]:
    """``[program, feed_target_names, fetch_targets]`` of a saved inference model, as Paddle returns.

    ``dirname`` is the folder (1.x: ``__model__`` or ``model_filename`` in it; parameters in
    ``params_filename`` or one file per variable) or a 2.x path prefix (``infer/model``).
    """
    base = os.fspath(dirname)
    model_path = os.path.join(base, model_filename) if model_filename else base
    params_path = os.path.join(base, params_filename) if params_filename else None
    return load_program(model_path, params_path).as_loaded()


def load_program(
    model_path: str | os.PathLike[str], params_path: str | os.PathLike[str] | None = None
) -> LoadedProgram:
    """A saved inference model as a program the Executor runs: what ``export_paddle`` reads (a 2.x prefix,
    a program file or its folder; the combined parameter file, or one file per variable beside it)."""
    from ..exporters.paddle_export import export_paddle
    from ..extras import require

    # named as the user called it (inference.create_predictor, static.load_inference_model, fluid.io), not
    # as export_paddle, which they never called
    require("loading a saved Paddle program (iabn_onnx.inference, static, fluid.io)", "paddle")
    model = export_paddle(model_path, params_path, function_fallback=False)
    outputs = [o.name for o in model.graph.output if not o.name.endswith(UPDATED)]
    feeds = list(feed_inputs(model))
    parameters = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    program = LoadedProgram(os.fspath(model_path), model, feeds, outputs, parameters)
    _global_scope.register(program.parameters)
    return program


__all__ = [
    "CPUPlace",
    "CUDAPlace",
    "Executor",
    "FetchTarget",
    "LoadedProgram",
    "Scope",
    "default_startup_program",
    "global_scope",
    "load_inference_model",
    "load_program",
]
