"""The static program behind ``iabn_onnx.fluid``: variables, parameters, ONNX nodes.

A ``Program`` records what the layer functions build, like Paddle's
``fluid.Program``; ``to_onnx`` turns the part of it that the fetched variables
need into an ``onnx.ModelProto``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..op.function import add_function_fallback
from ..op.schema import DOMAIN, ONNX_OPSET, OPSET_VERSION, InplaceABNAttrs, is_inplace_abn, make_model, register_schema

DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16}


class FluidError(ValueError):
    """A layer was called with arguments its Paddle original rejects."""


# -- initializers (Paddle's fluid.initializer names) ---------------------------
class Initializer:
    def __call__(self, shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class Constant(Initializer):
    value: float = 0.0

    def __call__(self, shape, dtype, rng):  # type: ignore[no-untyped-def]
        return np.full(shape, self.value, dtype)


def _seeded(seed: int, program_rng: np.random.Generator) -> np.random.Generator:
    """Paddle's rule: seed 0 draws from the program's random stream, any other seed from its own."""
    return np.random.default_rng(seed) if seed else program_rng


@dataclass(frozen=True)
class Normal(Initializer):
    loc: float = 0.0
    scale: float = 1.0
    seed: int = 0

    def __call__(self, shape, dtype, rng):  # type: ignore[no-untyped-def]
        rng = _seeded(self.seed, rng)
        return rng.normal(self.loc, self.scale, shape).astype(dtype)


@dataclass(frozen=True)
class Uniform(Initializer):
    low: float = -1.0
    high: float = 1.0
    seed: int = 0

    def __call__(self, shape, dtype, rng):  # type: ignore[no-untyped-def]
        rng = _seeded(self.seed, rng)
        return rng.uniform(self.low, self.high, shape).astype(dtype)


@dataclass(frozen=True)
class Xavier(Initializer):
    """Glorot: uniform in ±sqrt(6/(fan_in+fan_out)) or normal with std sqrt(2/(fan_in+fan_out))."""

    uniform: bool = True
    fan_in: int | None = None
    fan_out: int | None = None
    seed: int = 0

    def __call__(self, shape, dtype, rng):  # type: ignore[no-untyped-def]
        rng = _seeded(self.seed, rng)
        receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
        fan_in = self.fan_in or (shape[1] * receptive if len(shape) > 2 else shape[0])
        fan_out = self.fan_out or (shape[0] * receptive if len(shape) > 2 else shape[-1])
        if self.uniform:
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            return rng.uniform(-limit, limit, shape).astype(dtype)
        return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), shape).astype(dtype)


@dataclass(frozen=True)
class NumpyArrayInitializer(Initializer):
    value: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __call__(self, shape, dtype, rng):  # type: ignore[no-untyped-def]
        value = np.asarray(self.value)
        if tuple(value.shape) != tuple(shape):
            raise FluidError(f"NumpyArrayInitializer has shape {value.shape}, the parameter needs {tuple(shape)}")
        return value.astype(dtype)


@dataclass(frozen=True)
class ParamAttr:
    """Paddle's ``fluid.ParamAttr``: a parameter's name and initializer (the rest is accepted, unused)."""

    name: str | None = None
    initializer: Initializer | None = None
    learning_rate: float = 1.0
    regularizer: object | None = None
    trainable: bool = True
    do_model_average: bool = True
    need_clip: bool = True


def as_param_attr(attr: ParamAttr | str | bool | None) -> ParamAttr | None:
    """Paddle accepts a ParamAttr, a name string, None (defaults) or False (no parameter)."""
    if attr is False:
        return None
    if attr is None or attr is True:
        return ParamAttr()
    if isinstance(attr, str):
        return ParamAttr(name=attr)
    if isinstance(attr, ParamAttr):
        return attr
    raise FluidError(f"param_attr must be a ParamAttr, a name string, None or False, got {type(attr).__name__}")


# -- variables and the program ------------------------------------------------
@dataclass(frozen=True)
class Variable:
    """A tensor of the program: its name, static shape (-1 for unknown) and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    program: Program = field(repr=False, compare=False)

    @property
    def ndim(self) -> int:
        return len(self.shape)


class Program:
    """Nodes, parameters and data variables built by the layer functions."""

    def __init__(self, random_seed: int = 0) -> None:
        self.random_seed = random_seed
        self.nodes: list[onnx.NodeProto] = []
        self.parameters: dict[str, np.ndarray] = {}
        self.constants: dict[str, np.ndarray] = {}  # shapes, axes: initializers that are not parameters
        self.data_vars: dict[str, Variable] = {}
        self.variables: dict[str, Variable] = {}
        self._counters: dict[str, int] = {}
        self._rng = np.random.default_rng(random_seed)

    # names follow Paddle's unique_name: "fc_0", "fc_0.w_0", "fc_0.tmp_0"
    def unique(self, prefix: str) -> str:
        index = self._counters.get(prefix, 0)
        self._counters[prefix] = index + 1
        return f"{prefix}_{index}"

    def new_var(self, prefix: str, shape: Sequence[int], dtype: str) -> Variable:
        name = self.unique(f"{prefix}.tmp")
        var = Variable(name, tuple(int(d) for d in shape), dtype, self)
        self.variables[name] = var
        return var

    def add_node(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str], domain: str = "", **attrs):  # type: ignore[no-untyped-def]
        self.nodes.append(
            helper.make_node(op_type, list(inputs), list(outputs), name=outputs[0], domain=domain, **attrs)
        )

    def create_parameter(
        self, attr: ParamAttr, shape: Sequence[int], dtype: str, default_name: str, default_init: Initializer
    ) -> str:
        name = attr.name or self.unique(default_name)
        shape = tuple(int(d) for d in shape)
        if name in self.parameters:  # shared by name, as in Paddle
            if self.parameters[name].shape != shape:
                raise FluidError(f"parameter {name!r} exists with shape {self.parameters[name].shape}, not {shape}")
            return name
        init = attr.initializer or default_init
        self.parameters[name] = np.ascontiguousarray(init(shape, np.dtype(DTYPES[dtype]), self._rng))
        return name

    def constant(self, prefix: str, value: np.ndarray) -> str:
        name = self.unique(f"{prefix}.const")
        self.constants[name] = np.asarray(value)
        return name

    def set_parameters(self, values: dict[str, np.ndarray]) -> None:
        """Replace parameter values (trained anywhere) by name; shapes must match, dtype is cast."""
        for name, value in values.items():
            if name not in self.parameters:
                known = ", ".join(sorted(self.parameters)) or "none"
                raise FluidError(f"no parameter named {name!r} (known: {known})")
            old = self.parameters[name]
            value = np.asarray(value)
            if value.shape != old.shape:
                raise FluidError(f"parameter {name!r} has shape {old.shape}, got {value.shape}")
            self.parameters[name] = np.ascontiguousarray(value.astype(old.dtype))

    def to_onnx(
        self, fetch_list: Sequence[Variable], for_test: bool = False, function_fallback: bool = True
    ) -> onnx.ModelProto:
        return _to_onnx(self, fetch_list, for_test, function_fallback)


_default_program = Program()


def default_main_program() -> Program:
    return _default_program


@contextlib.contextmanager
def program_guard(main_program: Program, startup_program: Program | None = None) -> Iterator[None]:
    """Build into ``main_program`` inside the block (the startup program is accepted and unused)."""
    global _default_program
    previous = _default_program
    _default_program = main_program
    try:
        yield
    finally:
        _default_program = previous


def _value_info(var: Variable) -> onnx.ValueInfoProto:
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(DTYPES[var.dtype]))
    dims = [d if d >= 0 else f"{var.name}_dim{i}" for i, d in enumerate(var.shape)]
    return helper.make_tensor_value_info(var.name, elem, dims)


def _to_onnx(
    program: Program, fetch_list: Sequence[Variable], for_test: bool, function_fallback: bool
) -> onnx.ModelProto:
    register_schema()
    if not fetch_list:
        raise FluidError("fetch_list is empty: name the variables the model outputs")
    for var in fetch_list:
        if not isinstance(var, Variable) or var.program is not program:
            raise FluidError(f"fetch_list item {var!r} is not a variable of this program")
    # keep only what the fetched variables need (Paddle prunes the same way)
    producers = {out: node for node in program.nodes for out in node.output}
    needed: set[str] = set()
    stack = [v.name for v in fetch_list]
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        if name in producers:
            stack.extend(i for i in producers[name].input if i)
    nodes = []
    for node in program.nodes:
        if not any(out in needed for out in node.output):
            continue
        node = onnx.NodeProto.FromString(node.SerializeToString())
        if for_test and is_inplace_abn(node):
            attrs = InplaceABNAttrs.from_node(node).replace(training_mode=0)
            del node.attribute[:]
            node.attribute.extend(helper.make_attribute(k, v) for k, v in attrs.to_attributes().items())
        nodes.append(node)
    inputs = [_value_info(v) for name, v in program.data_vars.items() if name in needed]
    outputs = [_value_info(v) for v in fetch_list]
    tensors = {**program.parameters, **program.constants}
    initializers = [numpy_helper.from_array(a, name) for name, a in tensors.items() if name in needed]
    graph = helper.make_graph(nodes, "fluid_program", inputs, outputs, initializers)
    opsets = [helper.make_opsetid("", ONNX_OPSET)]
    if any(is_inplace_abn(n) for n in nodes):
        opsets.append(helper.make_opsetid(DOMAIN, OPSET_VERSION))
    model = make_model(graph, opsets, producer_name="iabn_onnx.fluid")
    if function_fallback:
        model = add_function_fallback(model)
    onnx.checker.check_model(model, full_check=True)
    return model
