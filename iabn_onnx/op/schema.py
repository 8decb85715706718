"""The InplaceABN operator contract: the single source of truth.

Everything that knows what an ``InplaceABN`` node means (kernels, graph
passes, exporters, the CLI) imports it from here: the domain and op type,
the typed attributes with their defaults and validation, the shape rules,
and the ONNX ``OpSchema`` that lets ``onnx.checker`` and
``onnx.shape_inference`` understand the op.

    Y = act((X - mean) / sqrt(var + epsilon) * scale + B)

    leaky_relu(z) = z if z >= 0 else act_alpha * z
    elu(z)        = z if z >= 0 else act_alpha * (exp(z) - 1)

``act_alpha`` is finite and >= 0; 0 makes either activation ReLU. The operator defines the
forward pass only, so it needs no invertible activation (mapillary's in-place backward does).

With ``training_mode=1`` the batch mean and the biased batch variance over
every axis but the channel axis replace ``mean``/``var``, and the node also
returns ``running_mean``/``running_var`` updated as
``running * momentum + batch * (1 - momentum)`` (ONNX BatchNormalization-15).

It is longer than the other modules on purpose: it holds every fact about the operator
(names, codes, defaults, dtypes, ranks, opset, node predicate, attribute encoding, OpSchema),
so that nothing else restates one.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import math
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np

from . import onnx_enums
from .names import DOMAIN, OP_TYPE, OPSET_VERSION

if TYPE_CHECKING:
    import onnx
    from onnx import AttributeProto, NodeProto

#: models this package writes declare ONNX opset 17 and IR version 10: the oldest supported
#: onnxruntime (1.20, "max supported IR version: 10") loads them
ONNX_OPSET = 17
IR_VERSION = 10

INPUT_NAMES = ("X", "scale", "B", "mean", "var")
OUTPUT_NAMES = ("Y", "running_mean", "running_var")

#: epsilon must lie in this closed range: 0 is allowed (Paddle allows it),
#: anything above 0.1 is far outside any trained network and is rejected as
#: a likely unit or conversion error.
EPSILON_RANGE = (0.0, 0.1)
MOMENTUM_RANGE = (0.0, 1.0)
MIN_RANK, MAX_RANK = 2, 5

#: dtypes the operator is defined for (TensorProto element types).
SUPPORTED_DTYPES = (onnx_enums.FLOAT16, onnx_enums.FLOAT, onnx_enums.DOUBLE)


class InplaceABNError(ValueError):
    """A model, attribute or input the InplaceABN operator cannot accept.

    The message always names the node and the fault.
    """

    def __init__(self, node: str, fault: str) -> None:
        self.node = node
        self.fault = fault
        super().__init__(f"InplaceABN node '{node}': {fault}")


class Activation(str, Enum):
    IDENTITY = "identity"
    LEAKY_RELU = "leaky_relu"
    ELU = "elu"

    @property
    def code(self) -> int:
        return _ACT_CODES[self]

    @property
    def takes_alpha(self) -> bool:
        return self is not Activation.IDENTITY


_ACT_CODES = {Activation.IDENTITY: 0, Activation.LEAKY_RELU: 1, Activation.ELU: 2}


class Layout(str, Enum):
    NCHW = "NCHW"
    NHWC = "NHWC"


def _as_float32(value: float) -> float:
    """The value an ONNX float attribute really holds (float32)."""
    return float(np.float32(value))


@dataclass(frozen=True)
class InplaceABNAttrs:
    """Typed, validated attributes of one InplaceABN node.

    Float fields are rounded to float32 on construction, because that is
    what an ONNX float attribute stores; the rounded value is the truth
    every implementation computes with.
    """

    epsilon: float = 1e-5
    momentum: float = 0.9
    act: Activation = Activation.IDENTITY
    act_alpha: float = 1.0
    training_mode: int = 0
    data_layout: Layout = Layout.NCHW

    def __post_init__(self) -> None:
        for name in ("epsilon", "momentum", "act_alpha"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise TypeError(f"{name} must be a float, got {type(value).__name__}")
            object.__setattr__(self, name, _as_float32(float(value)))
        if not isinstance(self.act, Activation):
            object.__setattr__(self, "act", _parse_enum(Activation, self.act, "act"))
        if not isinstance(self.data_layout, Layout):
            object.__setattr__(self, "data_layout", _parse_enum(Layout, self.data_layout, "data_layout"))
        if isinstance(self.training_mode, bool) or not isinstance(self.training_mode, (int, np.integer)):
            raise TypeError(f"training_mode must be 0 or 1, got {self.training_mode!r}")
        object.__setattr__(self, "training_mode", int(self.training_mode))

    @property
    def is_relu(self) -> bool:
        """The activation is max(z, 0): leaky_relu or elu with alpha 0 (mapillary's decoders use slope 0).

        Only the in-place *backward* pass needs an invertible activation; the operator defines the
        forward alone, so a zero alpha is valid in both modes.
        """
        return self.act.takes_alpha and self.act_alpha == 0.0

    def onnx_activation(self) -> tuple[str, dict[str, float]] | None:
        """The standard ONNX op (and its attributes) that computes ``act``; None for identity."""
        if self.act is Activation.IDENTITY:
            return None
        if self.is_relu:
            return "Relu", {}
        return ("LeakyRelu" if self.act is Activation.LEAKY_RELU else "Elu"), {"alpha": self.act_alpha}

    # -- validation ---------------------------------------------------------
    def faults(self) -> list[str]:
        """Every reason these attributes are invalid (empty when valid)."""
        out: list[str] = []
        lo, hi = EPSILON_RANGE
        if not (math.isfinite(self.epsilon) and lo <= self.epsilon <= hi):
            out.append(f"epsilon={self.epsilon!r} is outside the supported range [{lo}, {hi}]")
        lo, hi = MOMENTUM_RANGE
        if not (math.isfinite(self.momentum) and lo <= self.momentum <= hi):
            out.append(f"momentum={self.momentum!r} is outside [{lo}, {hi}]")
        if self.act.takes_alpha and not (math.isfinite(self.act_alpha) and self.act_alpha >= 0):
            out.append(f"act_alpha={self.act_alpha!r} must be finite and >= 0 for act='{self.act.value}'")
        if self.training_mode not in (0, 1):
            out.append(f"training_mode={self.training_mode} must be 0 or 1")
        return out

    def validate(self, node: str) -> InplaceABNAttrs:
        faults = self.faults()
        if faults:
            raise InplaceABNError(node, "; ".join(faults))
        return self

    # -- ONNX conversion ----------------------------------------------------
    @classmethod
    def from_node(cls, node: NodeProto) -> InplaceABNAttrs:
        """Parse and validate a node's attributes; raise InplaceABNError on any fault."""
        return cls.from_typed(((a.name, a.type, a) for a in node.attribute), node_display_name(node), _attribute_value)

    @classmethod
    def from_typed(
        cls, attributes: Iterable[tuple[str, int, Any]], node: str, value_of: Callable[[Any], object] = lambda v: v
    ) -> InplaceABNAttrs:
        """Parse and validate ``(name, AttributeProto type, raw)`` triples, ``value_of(raw)`` giving the value
        (a NodeProto's attributes, or a cache entry's); raise InplaceABNError naming ``node``."""
        values: dict[str, object] = {}
        for attr_name, attr_type, raw in attributes:
            spec = _ATTR_SPECS.get(attr_name)
            if spec is None:
                raise InplaceABNError(node, f"unknown attribute '{attr_name}' (expected one of {sorted(_ATTR_SPECS)})")
            if attr_type != spec:
                raise InplaceABNError(
                    node,
                    f"attribute '{attr_name}' has type {onnx_enums.attribute_type_name(attr_type)}, "
                    f"expected {onnx_enums.attribute_type_name(spec)}",
                )
            values[attr_name] = value_of(raw)
        return cls.from_values(values, node)

    @classmethod
    def from_values(cls, values: dict[str, object], node: str) -> InplaceABNAttrs:
        """Build and validate from attribute values; InplaceABNError naming ``node`` on any fault."""
        try:
            attrs = cls(**values)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise InplaceABNError(node, str(exc)) from None
        return attrs.validate(node)

    def to_attributes(self) -> dict[str, object]:
        """Keyword arguments for ``helper.make_node`` (every attribute explicit)."""
        return {
            "epsilon": self.epsilon,
            "momentum": self.momentum,
            "act": self.act.value,
            "act_alpha": self.act_alpha,
            "training_mode": self.training_mode,
            "data_layout": self.data_layout.value,
        }

    def encode(self, **extra: object) -> str:
        """The one text encoding of these attributes (JSON, every float bit kept), plus ``extra`` keys."""
        return json.dumps({**extra, **self.to_attributes()}, sort_keys=True)

    @classmethod
    def decode(cls, text: str) -> tuple[InplaceABNAttrs, dict[str, object]]:
        """Inverse of ``encode``: the attributes (not yet validated) and the extra keys."""
        payload = json.loads(text)
        fields = {f.name for f in dataclasses.fields(cls)}
        extra = {k: payload.pop(k) for k in list(payload) if k not in fields}
        return cls(**payload), extra

    def replace(self, **changes: object) -> InplaceABNAttrs:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def channel_axis(self, rank: int) -> int:
        return 1 if self.data_layout is Layout.NCHW else rank - 1


def _attribute_value(attr: AttributeProto) -> object:
    from onnx import helper

    value = helper.get_attribute_value(attr)
    return value.decode() if isinstance(value, bytes) else value


def _parse_enum(enum: type[Enum], value: object, what: str) -> Enum:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum)  # type: ignore[attr-defined]
        raise ValueError(f"unknown {what} {value!r} (expected one of {allowed})") from None


_ATTR_SPECS = {  # name -> AttributeProto type
    "epsilon": onnx_enums.ATTR_FLOAT,
    "momentum": onnx_enums.ATTR_FLOAT,
    "act": onnx_enums.ATTR_STRING,
    "act_alpha": onnx_enums.ATTR_FLOAT,
    "training_mode": onnx_enums.ATTR_INT,
    "data_layout": onnx_enums.ATTR_STRING,
}


def node_display_name(node: NodeProto) -> str:
    if node.name:
        return node.name
    return f"<unnamed {node.op_type} -> {', '.join(node.output)}>"


def is_inplace_abn(node: NodeProto) -> bool:
    return node.op_type == OP_TYPE and node.domain == DOMAIN


def bound_outputs(node: NodeProto) -> list[str]:
    """node.output without trailing empty names: ONNX's omitted optional outputs.

    ``["Y", "", ""]`` is ``["Y"]`` (models carrying the function fallback are written that
    way, because onnxruntime's function inliner wants every function output slot).
    """
    outputs = list(node.output)
    while outputs and not outputs[-1]:
        outputs.pop()
    return outputs


# -- shape rules ------------------------------------------------------------
Dim = int | None


def shape_faults(
    x_shape: Sequence[Dim] | None,
    param_shapes: Sequence[Sequence[Dim] | None],
    attrs: InplaceABNAttrs,
) -> list[str]:
    """Faults in the input shapes; unknown shapes or dims (None) are not faults."""
    out: list[str] = []
    channels: Dim = None
    if x_shape is not None:
        rank = len(x_shape)
        if not MIN_RANK <= rank <= MAX_RANK:
            out.append(f"X has rank {rank}; InplaceABN needs rank {MIN_RANK} to {MAX_RANK}")
            return out
        channels = x_shape[attrs.channel_axis(rank)]
    for input_name, shape in zip(INPUT_NAMES[1:], param_shapes):
        if shape is None:
            continue
        if len(shape) != 1:
            out.append(f"{input_name} must be 1-D of length C, got shape {list(shape)}")
        elif channels is not None and shape[0] is not None and shape[0] != channels:
            out.append(
                f"{input_name} has {shape[0]} elements but X has {channels} channels "
                f"(axis {attrs.channel_axis(len(x_shape))}, data_layout={attrs.data_layout.value})"  # type: ignore[arg-type]
            )
    return out


# -- ONNX OpSchema ----------------------------------------------------------
_inference_checks = threading.local()


@contextlib.contextmanager
def attribute_checks_off() -> Iterator[None]:
    """Within the block (this thread), shape inference types InplaceABN nodes without judging
    their attribute values: for callers that report invalid nodes themselves, node by node."""
    previous = getattr(_inference_checks, "off", False)
    _inference_checks.off = True
    try:
        yield
    finally:
        _inference_checks.off = previous


def attrs_from_context(ctx: onnx.shape_inference.InferenceContext) -> InplaceABNAttrs:
    """The node's attributes as shape inference sees them; InplaceABNError on any fault."""
    display = ctx.get_display_name() if hasattr(ctx, "get_display_name") else ""
    match = re.search(r"\((.*)\)$", display)  # "node InplaceABN[ai.iabn] (abn0)"
    name = match.group(1) if match and match.group(1) else f"<unnamed {OP_TYPE}>"
    attributes = (ctx.get_attribute(attr_name) for attr_name in _ATTR_SPECS)
    values = {attr.name: _attribute_value(attr) for attr in attributes if attr is not None}
    return InplaceABNAttrs.from_values(values, name)


def _infer(ctx: onnx.shape_inference.InferenceContext) -> None:
    """Attribute values are checked (the OpSchema checks only names and types), then
    Y is typed like X and the running statistics like mean."""
    if not getattr(_inference_checks, "off", False):
        attrs_from_context(ctx)
    x_type = ctx.get_input_type(0)
    if x_type is None or not x_type.HasField("tensor_type"):
        return
    ctx.set_output_type(0, x_type)
    if ctx.get_num_outputs() > 1:
        mean_type = ctx.get_input_type(3) if ctx.get_num_inputs() > 3 else None
        for i in range(1, ctx.get_num_outputs()):
            if mean_type is not None and mean_type.HasField("tensor_type"):
                ctx.set_output_type(i, mean_type)


def typing_stand_in(node: NodeProto) -> list[NodeProto]:
    """Standard ops that shape inference types exactly as ``_infer`` types ``node``, without the
    attribute checks: Y like X, the running statistics like mean. For callers that check nodes
    themselves (``validation.type_table``): onnx's call into a Python inference function costs
    about 0.14 ms a node (DenseNet-121's 121 nodes: 17 of its 31 ms of inference)."""
    outputs = bound_outputs(node)
    from onnx import helper

    sources = [0] + [3] * (len(outputs) - 1)  # Y from X; running mean and var from mean
    return [
        helper.make_node("Identity", [node.input[src]], [out])
        for out, src in zip(outputs, sources)
        if out and src < len(node.input) and node.input[src]
    ]


def _type_string(elem_type: int) -> str:
    return f"tensor({onnx_enums.dtype_name(elem_type)})"


def build_op_schema() -> onnx.defs.OpSchema:
    import onnx
    from onnx import helper

    S = onnx.defs.OpSchema
    optional = S.FormalParameterOption.Optional
    inputs = [
        S.FormalParameter("X", "T", f"Input of rank {MIN_RANK}-{MAX_RANK}, channel axis 1 (NCHW) or last (NHWC)."),
        S.FormalParameter("scale", "T", "Per-channel scale (gamma), shape [C]."),
        S.FormalParameter("B", "T", "Per-channel bias (beta), shape [C]."),
        S.FormalParameter("mean", "T", "Running mean, shape [C]."),
        S.FormalParameter("var", "T", "Running variance, shape [C]."),
    ]
    outputs = [
        S.FormalParameter("Y", "T", "act(normalized X * scale + B), same shape as X."),
        S.FormalParameter("running_mean", "T", "Updated running mean (training_mode=1).", param_option=optional),
        S.FormalParameter("running_var", "T", "Updated running variance (training_mode=1).", param_option=optional),
    ]
    descriptions = {
        "epsilon": "Added to var before sqrt.",
        "momentum": "running*momentum + batch*(1-momentum).",
        "act": "identity | leaky_relu | elu.",
        "act_alpha": "Slope (leaky_relu) or alpha (elu), finite and >= 0; 0 makes either ReLU.",
        "training_mode": "1: use batch statistics.",
        "data_layout": "NCHW | NHWC.",
    }
    defaults = InplaceABNAttrs().to_attributes()  # the dataclass holds the defaults; the schema states them
    attributes = [S.Attribute(k, helper.make_attribute(k, defaults[k]), text) for k, text in descriptions.items()]
    schema = S(
        OP_TYPE,
        DOMAIN,
        OPSET_VERSION,
        __doc__ or "",
        inputs=inputs,
        outputs=outputs,
        type_constraints=[("T", [_type_string(t) for t in SUPPORTED_DTYPES], "Float tensors.")],
        attributes=attributes,
    )
    schema.set_type_and_shape_inference_function(_infer)
    return schema


_registered = False


def register_schema() -> None:
    """Register the OpSchema with onnx (idempotent, process-wide)."""
    global _registered
    if _registered:
        return
    import onnx

    try:
        onnx.defs.get_schema(OP_TYPE, OPSET_VERSION, DOMAIN)
    except onnx.defs.SchemaError:
        onnx.defs.register_schema(build_op_schema())
        # The schema holds a Python inference function. onnx (1.19 at least) destroys its schema
        # registry in a C++ exit handler that takes the GIL after Python has finalized: the process
        # never exits. Deregistering while Python still runs releases the function in time.
        atexit.register(onnx.defs.deregister_schema, OP_TYPE, OPSET_VERSION, DOMAIN)
    _registered = True


def make_node(
    inputs: Sequence[str],
    outputs: Sequence[str],
    attrs: InplaceABNAttrs | None = None,
    name: str | None = None,
) -> NodeProto:
    """An InplaceABN NodeProto with every attribute written explicitly."""
    from onnx import helper

    attrs = attrs or InplaceABNAttrs()
    return helper.make_node(OP_TYPE, list(inputs), list(outputs), name=name, domain=DOMAIN, **attrs.to_attributes())


def make_model(
    graph: onnx.GraphProto, opset_imports: Sequence[onnx.OperatorSetIdProto], **kwargs: object
) -> onnx.ModelProto:
    """``helper.make_model`` at this package's IR version (not the installed onnx's newest)."""
    from onnx import helper

    return helper.make_model(graph, opset_imports=list(opset_imports), ir_version=IR_VERSION, **kwargs)


def opset_import() -> onnx.OperatorSetIdProto:
    from onnx import helper

    return helper.make_opsetid(DOMAIN, OPSET_VERSION)
