"""PyTorch -> ONNX: models with InplaceABN modules, one ``InplaceABN`` node per module.

Recognized modules (by class name *and* attributes; the packages are never imported):

* mapillary ``inplace_abn``: ``InPlaceABN``, ``InPlaceABNSync`` and ``ABN``
  (``eps``, ``momentum``, ``activation``, ``activation_param``, ``weight``, ``bias``,
  ``running_mean``, ``running_var``);
* timm ``InplaceAbn`` (same, with ``act_name`` / ``act_param``).

Semantics reproduced, per module:

* ``InPlaceABN``, ``InPlaceABNSync`` and timm's ``InplaceAbn`` scale by ``|weight| + eps``
  (mapillary's forward), so that effective scale is what the model stores;
  ``ABN`` is plain BatchNorm + activation and scales by ``weight``.
  ``affine=False`` means scale 1, bias 0.
* Momentum: PyTorch's ``running = (1-m)·running + m·batch`` becomes the operator's
  ``momentum = 1 - m``; ``momentum=None`` (cumulative average) uses the factor the
  module's next training step would use, ``1/(num_batches_tracked+1)``.
* ``ABN(activation="relu")`` exports as ``InplaceABN(act=identity)`` followed by ``Relu``
  (ReLU is not invertible, so the operator does not take it).
* Training mode (``training=torch.onnx.TrainingMode.TRAINING``, or a module in train
  mode with ``TrainingMode.PRESERVE``) gives ``training_mode=1`` nodes, which normalize
  with batch statistics; so does a module with ``track_running_stats=False``.
  The nodes' running-statistics outputs follow ONNX BatchNormalization (biased batch
  variance); mapillary updates its buffers with the unbiased one.

How: each recognized module's ``forward`` is swapped, for the duration of the export
only, for a call to the ``iabn_onnx::inplace_abn`` torch custom op, and the dynamo
exporter's ``custom_translation_table`` maps that op to the ``InplaceABN`` node.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import onnx

from ..op.function import add_function_fallback
from ..op.schema import DOMAIN, OPSET_VERSION, Activation, InplaceABNAttrs, register_schema

MAPILLARY_ABS_SCALE_CLASSES = frozenset({"InPlaceABN", "InPlaceABNSync"})
MAPILLARY_PLAIN_SCALE_CLASSES = frozenset({"ABN"})
TIMM_CLASSES = frozenset({"InplaceAbn"})
RECOGNIZED_CLASSES = MAPILLARY_ABS_SCALE_CLASSES | MAPILLARY_PLAIN_SCALE_CLASSES | TIMM_CLASSES

_COMMON_ATTRS = ("eps", "momentum", "weight", "bias", "running_mean", "running_var")


class TorchExportError(RuntimeError):
    """A recognized module cannot be expressed as an InplaceABN node."""


@dataclass(frozen=True)
class ModuleSpec:
    """What one recognized module contributes to the graph."""

    path: str
    class_name: str
    attrs: InplaceABNAttrs
    abs_scale: bool  # scale = |weight| + eps (mapillary InPlaceABN) vs weight (ABN)
    relu_after: bool  # ABN(activation="relu")
    uses_batch_stats: bool


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("export_torch needs PyTorch: pip install 'iabn-onnx[torch]'") from exc
    return torch


def is_recognized(module: Any) -> bool:
    """True for mapillary / timm InplaceABN-style modules (class name plus attributes)."""
    name = type(module).__name__
    if name not in RECOGNIZED_CLASSES or not all(hasattr(module, a) for a in _COMMON_ATTRS):
        return False
    if name in TIMM_CLASSES:
        return hasattr(module, "act_name") and hasattr(module, "act_param")
    return hasattr(module, "activation") and hasattr(module, "activation_param")


def module_spec(path: str, module: Any, training: bool) -> ModuleSpec:
    """Translate one recognized module's attributes into operator attributes."""
    torch = _torch()
    class_name = type(module).__name__
    where = f"{path or '<root>'} ({class_name})"
    if class_name in TIMM_CLASSES:
        act_name, act_param = module.act_name or "identity", module.act_param
    else:
        act_name, act_param = module.activation, module.activation_param
    relu_after = False
    if act_name in ("relu", "none", None):
        if act_name == "relu" and class_name not in MAPILLARY_PLAIN_SCALE_CLASSES:
            raise TorchExportError(f"{where}: activation 'relu' is only valid for ABN (mapillary rejects it too)")
        relu_after, act_name = act_name == "relu", "identity"
    try:
        act = Activation(act_name)
    except ValueError:
        raise TorchExportError(
            f"{where}: unsupported activation {act_name!r}; expected identity, leaky_relu or elu"
        ) from None
    has_stats = module.running_mean is not None and module.running_var is not None
    uses_batch_stats = training or not has_stats
    momentum = module.momentum
    if momentum is None:  # cumulative moving average: the factor of the next training step
        tracked = getattr(module, "num_batches_tracked", None)
        count = int(tracked.item()) + 1 if isinstance(tracked, torch.Tensor) else 1
        momentum = 1.0 / count
    attrs = InplaceABNAttrs(
        epsilon=float(module.eps),
        momentum=1.0 - float(momentum),
        act=act,
        act_alpha=float(act_param) if act is not Activation.IDENTITY else 1.0,
        training_mode=int(uses_batch_stats),
    )
    faults = attrs.faults()
    if faults:
        raise TorchExportError(f"{where}: " + "; ".join(faults))
    return ModuleSpec(
        path=path,
        class_name=class_name,
        attrs=attrs,
        abs_scale=class_name not in MAPILLARY_PLAIN_SCALE_CLASSES,
        relu_after=relu_after,
        uses_batch_stats=uses_batch_stats,
    )


# -- the torch custom op and its ONNX translation ----------------------------
@functools.cache
def _custom_op() -> Any:
    torch = _torch()

    # explicit schema: this module's annotations are strings (from __future__ import annotations)
    @torch.library.custom_op(
        "iabn_onnx::inplace_abn",
        mutates_args=(),
        schema="(Tensor x, Tensor scale, Tensor bias, Tensor mean, Tensor var, str config) -> Tensor",
    )
    def inplace_abn(x, scale, bias, mean, var, config):  # type: ignore[no-untyped-def]
        attrs = InplaceABNAttrs(**_decode(config))
        shape = [1, -1] + [1] * (x.dim() - 2)
        if attrs.training_mode:
            dims = [0, *range(2, x.dim())]
            mean = x.mean(dim=dims)
            var = x.var(dim=dims, unbiased=False)
        z = (x - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + attrs.epsilon)
        z = z * scale.reshape(shape) + bias.reshape(shape)
        if attrs.act is Activation.LEAKY_RELU:
            return torch.nn.functional.leaky_relu(z, attrs.act_alpha)
        if attrs.act is Activation.ELU:
            return torch.nn.functional.elu(z, attrs.act_alpha)
        return z.clone()

    @inplace_abn.register_fake
    def _(x, scale, bias, mean, var, config):  # type: ignore[no-untyped-def]
        return torch.empty_like(x)

    return inplace_abn


def _encode(attrs: InplaceABNAttrs) -> str:
    return repr(tuple(sorted((k, v.value if hasattr(v, "value") else v) for k, v in attrs.__dict__.items())))


def _decode(config: str) -> dict[str, Any]:
    import ast

    return dict(ast.literal_eval(config))


def _translation(x, scale, bias, mean, var, config: str):  # type: ignore[no-untyped-def]
    """onnxscript translation of ``iabn_onnx::inplace_abn`` to one InplaceABN node."""
    from onnxscript.values import Opset

    attrs = InplaceABNAttrs(**_decode(config))
    outputs = Opset(DOMAIN, OPSET_VERSION).InplaceABN(x, scale, bias, mean, var, **attrs.to_attributes())
    # the schema declares the two optional running-statistics outputs; the module returns Y only
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


def _replacement_forward(module: Any, spec: ModuleSpec) -> Callable[[Any], Any]:
    torch = _torch()
    op = _custom_op()
    config = _encode(spec.attrs)

    def forward(x: Any) -> Any:
        channels = module.num_features if hasattr(module, "num_features") else x.shape[1]
        like = {"dtype": x.dtype, "device": x.device}
        if module.weight is not None:
            scale = module.weight.abs() + module.eps if spec.abs_scale else module.weight
            bias = module.bias
        else:
            scale, bias = torch.ones(channels, **like), torch.zeros(channels, **like)
        if module.running_mean is not None and module.running_var is not None:
            mean, var = module.running_mean, module.running_var
        else:  # batch statistics only; the node ignores these
            mean, var = torch.zeros(channels, **like), torch.ones(channels, **like)
        y = op(x, scale.to(x.dtype), bias.to(x.dtype), mean.to(x.dtype), var.to(x.dtype), config)
        return torch.relu(y) if spec.relu_after else y

    return forward


@contextlib.contextmanager
def _patched(model: Any) -> Iterator[list[ModuleSpec]]:
    """Swap recognized modules' forward for the custom op; always restore."""
    specs: list[ModuleSpec] = []
    patched: list[tuple[Any, bool, Any]] = []
    try:
        for path, module in model.named_modules():
            if not is_recognized(module):
                continue
            spec = module_spec(path, module, module.training)
            specs.append(spec)
            had_own = "forward" in module.__dict__
            patched.append((module, had_own, module.__dict__.get("forward")))
            module.forward = _replacement_forward(module, spec)
        yield specs
    finally:
        for module, had_own, previous in patched:
            if had_own:
                module.forward = previous
            else:
                del module.forward


@contextlib.contextmanager
def _mode(model: Any, training_mode: Any) -> Iterator[None]:
    """Apply torch.onnx.TrainingMode (default EVAL) for the export; always restore."""
    torch = _torch()
    modes = torch.onnx.TrainingMode
    saved = [(m, m.training) for m in model.modules()]
    try:
        if training_mode in (None, modes.EVAL, False):
            model.eval()
        elif training_mode in (modes.TRAINING, True):
            model.train()
        elif training_mode is not modes.PRESERVE:
            raise ValueError(f"training must be a torch.onnx.TrainingMode, got {training_mode!r}")
        yield
    finally:
        for m, was_training in saved:
            m.training = was_training


def export_torch(
    model: Any,
    args: tuple[Any, ...] | Any,
    f: str | os.PathLike[str] | io.BytesIO | None = None,
    *,
    training: Any = None,
    function_fallback: bool = True,
    **kwargs: Any,
) -> onnx.ModelProto:
    """Export a PyTorch model with InplaceABN modules to ONNX; return the ModelProto.

    ``args`` are example inputs, as for ``torch.onnx.export``. ``training`` is a
    ``torch.onnx.TrainingMode`` (default EVAL). Other keyword arguments go to
    ``torch.onnx.export`` (dynamo exporter), e.g. ``dynamic_shapes``,
    ``input_names``, ``output_names``, ``opset_version``, ``optimize``.
    A ``custom_translation_table`` you pass is merged with ours. When ``f`` is
    given the model is also saved there. The model is left as it was.
    With ``function_fallback`` (default) the result carries the model-local InplaceABN
    function, so plain onnxruntime runs it too.
    """
    torch = _torch()
    register_schema()
    if not isinstance(args, tuple):
        args = (args,)
    op = _custom_op()
    table = {op._opoverload: _translation, **kwargs.pop("custom_translation_table", {})}
    kwargs.setdefault("dynamo", True)
    if not kwargs["dynamo"]:
        raise ValueError("export_torch uses the dynamo exporter; the TorchScript exporter is deprecated")
    kwargs.setdefault("verbose", False)
    with _mode(model, training), _patched(model) as specs, torch.no_grad(), warnings.catch_warnings():
        # a training-mode export was asked for explicitly: torch's reminder to call eval() is noise
        warnings.filterwarnings("ignore", message="Exporting a model while it is in training mode")
        program = torch.onnx.export(model, args, custom_translation_table=table, **kwargs)
    proto = program.model_proto
    _ensure_opset(proto)
    _drop_unused_running_outputs(proto)
    proto.doc_string = f"exported by iabn_onnx.export_torch: {len(specs)} InplaceABN module(s)"
    if function_fallback:
        proto = add_function_fallback(proto)
    if f is not None:
        data = proto.SerializeToString()
        if isinstance(f, io.BytesIO):
            f.write(data)
        else:
            with open(f, "wb") as fh:
                fh.write(data)
    return proto


def _drop_unused_running_outputs(model: onnx.ModelProto) -> None:
    """The translation declares Y, running_mean, running_var; keep only Y when nothing reads the others."""
    graph = model.graph
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for node in graph.node:
        if node.domain == DOMAIN and len(node.output) > 1 and not any(o in used for o in node.output[1:]):
            del node.output[1:]
    live = {name for node in graph.node for name in node.output} | {i.name for i in graph.input}
    kept = [v for v in graph.value_info if v.name in live]
    del graph.value_info[:]
    graph.value_info.extend(kept)


def _ensure_opset(model: onnx.ModelProto) -> None:
    if not any(o.domain == DOMAIN for o in model.opset_import):
        uses = any(n.domain == DOMAIN for n in model.graph.node)
        if uses:
            model.opset_import.append(onnx.helper.make_opsetid(DOMAIN, OPSET_VERSION))
