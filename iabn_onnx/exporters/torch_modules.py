"""Which PyTorch modules and functions are InplaceABN, and what they compute.

Recognized by class name *and* attributes (the packages are never imported):

* mapillary ``inplace_abn`` >= 1.0: ``InPlaceABN``, ``InPlaceABNSync``, ``ABN`` with
  ``activation`` in identity / leaky_relu / elu (and relu for ``ABN``) and ``activation_param``;
* the pre-1.0 module (2018-2019, vendored into many segmentation repositories): the same
  classes with ``slope`` instead of ``activation_param``, activation ``"none"`` for identity,
  and elu with a fixed alpha of 1.0;
* timm's ``InplaceAbn`` (``act_name`` / ``act_param``).

``InPlaceABN``/``InPlaceABNSync``/``InplaceAbn`` compute
``act((x - mean)/sqrt(var + eps) * (|w| + eps) + b)``; ``ABN`` is ``F.batch_norm`` with
``w`` as is, then the activation. ``affine=False`` means scale 1 and bias 0.

Any other class is described by the caller: ``export_torch(..., modules={MyNorm: describe})``
where ``describe(module)`` returns an ``InplaceABNParams`` or a dict of its fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..op.schema import Activation, InplaceABNAttrs

ABS_SCALE_CLASSES = frozenset({"InPlaceABN", "InPlaceABNSync"})
PLAIN_SCALE_CLASSES = frozenset({"ABN"})
TIMM_CLASSES = frozenset({"InplaceAbn"})
RECOGNIZED_CLASSES = ABS_SCALE_CLASSES | PLAIN_SCALE_CLASSES | TIMM_CLASSES

_TENSOR_ATTRS = ("weight", "bias", "running_mean", "running_var")
_COMMON_ATTRS = ("eps", "momentum", *_TENSOR_ATTRS)
#: the activation names every generation uses for "no activation"
IDENTITY_NAMES = ("identity", "none", None, "")


class TorchExportError(RuntimeError):
    """A module that cannot be expressed as an InplaceABN node, or a failed export."""


@dataclass(frozen=True)
class InplaceABNParams:
    """What one InplaceABN-like module computes, in mapillary's terms.

    ``momentum`` follows PyTorch (``running = (1-m)·running + m·batch``; None for the
    cumulative average, with ``num_batches_tracked``). ``activation`` is identity (or
    "none"), leaky_relu, elu, or relu (only with ``abs_scale=False``). ``abs_scale``:
    the scale is ``|weight| + eps`` (InPlaceABN) rather than ``weight`` (ABN). ``weight``
    and ``bias`` may be None (scale 1, bias 0); so may both running statistics (batch
    statistics are always used).
    """

    weight: Any
    bias: Any
    running_mean: Any
    running_var: Any
    eps: float
    activation: str | None
    activation_param: float = 0.01
    momentum: float | None = 0.1
    abs_scale: bool = True
    num_batches_tracked: Any = None


REQUIRED_FIELDS = tuple(f.name for f in dataclasses.fields(InplaceABNParams) if f.default is dataclasses.MISSING)
Describe = Callable[[Any], "InplaceABNParams | Mapping[str, Any]"]


def _missing(module: Any, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if not hasattr(module, n)), None)


def builtin_params(module: Any) -> InplaceABNParams | str | None:
    """The params of a recognized module; a reason when the class name matches but the
    attributes do not; None for any other class."""
    name = type(module).__name__
    if name not in RECOGNIZED_CLASSES:
        return None
    missing = _missing(module, _COMMON_ATTRS)
    if missing:
        return f"missing attribute '{missing}'"
    tensors = {n: getattr(module, n) for n in _TENSOR_ATTRS}
    common = {"eps": float(module.eps), "momentum": module.momentum, **tensors}
    tracked = getattr(module, "num_batches_tracked", None)
    if name in TIMM_CLASSES:
        missing = _missing(module, ("act_name", "act_param"))
        if missing:
            return f"missing attribute '{missing}'"
        return InplaceABNParams(activation=module.act_name, activation_param=module.act_param, **common)
    if not hasattr(module, "activation"):
        return "missing attribute 'activation'"
    abs_scale = name in ABS_SCALE_CLASSES
    if hasattr(module, "activation_param"):  # mapillary >= 1.0
        return InplaceABNParams(
            activation=module.activation,
            activation_param=module.activation_param,
            abs_scale=abs_scale,
            num_batches_tracked=tracked,
            **common,
        )
    if hasattr(module, "slope"):  # pre-1.0: elu has a fixed alpha of 1
        param = 1.0 if module.activation == "elu" else module.slope
        return InplaceABNParams(activation=module.activation, activation_param=param, abs_scale=abs_scale, **common)
    return "missing attribute 'activation_param' (mapillary >= 1.0) or 'slope' (pre-1.0)"


def custom_params(module: Any, describe: Describe, where: str) -> InplaceABNParams:
    """Run a caller's describe function and check what it returned."""
    described = describe(module)
    if isinstance(described, InplaceABNParams):
        return described
    if not isinstance(described, Mapping):
        raise TorchExportError(
            f"{where}: the modules= description returned {type(described).__name__}, "
            "expected InplaceABNParams or a dict of its fields"
        )
    known = {f.name for f in dataclasses.fields(InplaceABNParams)}
    unknown = sorted(set(described) - known)
    if unknown:
        raise TorchExportError(f"{where}: the description has unknown field {unknown[0]!r} (fields: {sorted(known)})")
    missing = [f for f in REQUIRED_FIELDS if f not in described]
    if missing:
        raise TorchExportError(f"{where}: the description lacks {missing[0]!r} (required: {list(REQUIRED_FIELDS)})")
    return InplaceABNParams(**described)


def find_custom(module: Any, modules: Mapping[type | str, Describe]) -> Describe | None:
    """The caller's describe function for this module: by class (isinstance) or class name."""
    for key, describe in modules.items():
        if isinstance(key, str) and type(module).__name__ == key:
            return describe
        if isinstance(key, type) and isinstance(module, key):
            return describe
    return None


def module_params(where: str, module: Any, modules: Mapping[type | str, Describe]) -> InplaceABNParams | str | None:
    """What a module computes: by the caller's ``modules=`` description first, else by recognition;
    a reason for a near miss (named like InplaceABN, attributes off); None for any other module."""
    describe = find_custom(module, modules)
    if describe is not None:
        return custom_params(module, describe, where)
    return builtin_params(module)


@dataclass(frozen=True)
class NodePlan:
    """How one module or call becomes an InplaceABN node (and maybe a Relu after it)."""

    attrs: InplaceABNAttrs
    abs_scale: bool
    relu_after: bool  # ABN(activation="relu"): ReLU is not invertible, so it follows the node


def plan_node(params: InplaceABNParams, training: bool, where: str) -> NodePlan:
    """Operator attributes for params; TorchExportError naming ``where`` on any fault."""
    act_name, relu_after = params.activation, False
    if act_name in IDENTITY_NAMES:
        act_name = "identity"
    elif act_name == "relu":
        if params.abs_scale:
            raise TorchExportError(f"{where}: activation 'relu' is only valid for ABN (mapillary rejects it too)")
        act_name, relu_after = "identity", True
    try:
        act = Activation(act_name)
    except ValueError:
        raise TorchExportError(
            f"{where}: unsupported activation {act_name!r}; expected identity, leaky_relu or elu"
        ) from None
    has_stats = params.running_mean is not None and params.running_var is not None
    momentum = params.momentum
    if momentum is None:  # cumulative moving average: the factor of the next training step
        tracked = params.num_batches_tracked
        momentum = 1.0 / (int(tracked.item()) + 1 if tracked is not None else 1)
    try:
        attrs = InplaceABNAttrs(
            epsilon=float(params.eps),
            momentum=1.0 - float(momentum),
            act=act,
            act_alpha=float(params.activation_param) if act is not Activation.IDENTITY else 1.0,
            training_mode=int(training or not has_stats),
        )
    except (TypeError, ValueError) as exc:
        raise TorchExportError(f"{where}: {exc}") from None
    faults = attrs.faults()
    if faults:
        raise TorchExportError(f"{where}: " + "; ".join(faults))
    return NodePlan(attrs, params.abs_scale, relu_after)
