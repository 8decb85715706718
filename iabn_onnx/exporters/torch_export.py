"""PyTorch -> ONNX: models with InplaceABN modules, one ``InplaceABN`` node per module.

Which modules are InplaceABN, and what each computes, is in ``torch_modules.py``:
mapillary ``inplace_abn`` (>= 1.0 and the pre-1.0 module that segmentation repositories
vendored), timm's ``InplaceAbn``, and any class the caller describes with ``modules=``.
Calls of the functional form, ``inplace_abn(x, weight, bias, running_mean, running_var,
training, momentum, eps, activation, activation_param_or_slope)`` and ``inplace_abn_sync``,
from a user's own ``forward`` become nodes too (``torch_functions.py``).

Semantics reproduced, per module:

* ``InPlaceABN``, ``InPlaceABNSync`` and timm's ``InplaceAbn`` scale by ``|weight| + eps``
  (mapillary's forward), so that effective scale is what the model stores;
  ``ABN`` is plain BatchNorm + activation and scales by ``weight``.
  ``affine=False`` means scale 1, bias 0.
* Momentum: PyTorch's ``running = (1-m)·running + m·batch`` becomes the operator's
  ``momentum = 1 - m``; ``momentum=None`` (cumulative average) uses the factor the
  module's next training step would use, ``1/(num_batches_tracked+1)``.
* ``ABN(activation="relu")`` exports as ``InplaceABN(act=identity)`` followed by ``Relu``
  (as ABN computes it; a zero-slope ``leaky_relu`` node would be equivalent).
* Training mode (``training=torch.onnx.TrainingMode.TRAINING``, or a module in train
  mode with ``TrainingMode.PRESERVE``) gives ``training_mode=1`` nodes, which normalize
  with batch statistics; so does a module with ``track_running_stats=False``.
  The nodes' running-statistics outputs follow ONNX BatchNormalization (biased batch
  variance); mapillary updates its buffers with the unbiased one.

How: for the export only, each recognized module's ``forward`` (and each intercepted
function) is swapped for a call to the ``iabn_onnx::inplace_abn`` torch custom op, so
nothing traces into the original (often a JIT-compiled C++/CUDA extension), and the
dynamo exporter's ``custom_translation_table`` maps that op to the ``InplaceABN`` node.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import onnx

from ..graph import ensure_opset_import
from ..op.function import add_function_fallback
from ..op.schema import DOMAIN, OPSET_VERSION, Activation, InplaceABNAttrs, is_inplace_abn, register_schema
from ..quiet_logging import quiet_logger
from .torch_functions import FunctionalForm, patched_functions
from .torch_modules import (
    Describe,
    InplaceABNParams,
    NodePlan,
    TorchExportError,
    module_params,
    plan_node,
)
from .torch_verify import ExportVerifyError, VerifyReport


def _torch() -> Any:
    from ..extras import require

    require("export_torch", "torch")
    import torch

    return torch


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
        attrs = InplaceABNAttrs.decode(config)[0]
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


def _translation(x, scale, bias, mean, var, config: str):  # type: ignore[no-untyped-def]
    """onnxscript translation of ``iabn_onnx::inplace_abn`` to one InplaceABN node."""
    from onnxscript.values import Opset

    attrs = InplaceABNAttrs.decode(config)[0]
    outputs = Opset(DOMAIN, OPSET_VERSION).InplaceABN(x, scale, bias, mean, var, **attrs.to_attributes())
    # the schema declares the two optional running-statistics outputs; the module returns Y only
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


def apply_node(x: Any, params: InplaceABNParams, plan: NodePlan) -> Any:
    """The custom-op call that becomes one InplaceABN node (plus Relu for ABN(relu))."""
    torch = _torch()
    channels = x.shape[1]
    like = {"dtype": x.dtype, "device": x.device}
    if params.weight is not None:
        scale = params.weight.abs() + params.eps if plan.abs_scale else params.weight
    else:
        scale = torch.ones(channels, **like)
    bias = params.bias if params.bias is not None else torch.zeros(channels, **like)
    if params.running_mean is not None and params.running_var is not None:
        mean, var = params.running_mean, params.running_var
    else:  # batch statistics only; the node ignores these
        mean, var = torch.zeros(channels, **like), torch.ones(channels, **like)
    cast = [t.to(x.dtype) for t in (scale, bias, mean, var)]
    y = _custom_op()(x, *cast, plan.attrs.encode())
    return torch.relu(y) if plan.relu_after else y


def _forward(params: InplaceABNParams, plan: NodePlan) -> Callable[[Any], Any]:
    def forward(x: Any) -> Any:
        return apply_node(x, params, plan)

    return forward


@contextlib.contextmanager
def _patched_modules(model: Any, modules: Mapping[type | str, Describe]) -> Iterator[tuple[int, list[str]]]:
    """Swap recognized modules' forward for the custom op; always restore.

    Yields the number of swapped modules and, for classes named like InplaceABN that were
    not recognized, why (to explain a failed export).
    """
    near_misses: list[str] = []
    patched: list[tuple[Any, bool, Any]] = []
    try:
        for path, module in model.named_modules():
            where = f"{path or '<root>'} ({type(module).__name__})"
            params = module_params(where, module, modules)
            if params is None:
                continue
            if isinstance(params, str):
                near_misses.append(f"{where}: {params}")
                continue
            plan = plan_node(params, module.training, where)
            had_own = "forward" in module.__dict__
            patched.append((module, had_own, module.__dict__.get("forward")))
            module.forward = _forward(params, plan)
        yield len(patched), near_misses
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
    modules: Mapping[type | str, Describe] | None = None,
    functions: Iterable[Callable[..., Any]] | Mapping[Callable[..., Any], FunctionalForm] | None = None,
    verify: bool = True,
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

    ``modules`` maps a class (matched with isinstance) or a class name to a function that
    describes one of its modules: it returns an ``InplaceABNParams`` or a dict of its
    fields (weight, bias, running_mean, running_var, eps, activation, and optionally
    activation_param, momentum, abs_scale, num_batches_tracked). Described classes take
    precedence over the built-in recognition.

    ``functions`` lists functional InplaceABN callables to intercept where the model's code
    calls them, or maps each to a ``FunctionalForm`` saying how to read it. By default, the
    names ``inplace_abn`` and ``inplace_abn_sync`` in the modules that define the model's
    classes (and in modules those import) are intercepted, with their form read from their
    signature and source.

    With ``verify`` (default), an eval export is run in this package's session against the model's
    own eval output, every output, at the example's size and at a second size on every dynamic axis
    (``exporters/torch_verify.py``); ``ExportVerifyError`` names the output or the op and the size, and
    nothing is written to ``f``. Unless ``input_names`` / ``output_names`` are given, the file names its
    tensors ``input`` and ``output`` (a structure's leaves by path: ``output.0.1``), as the CLI does.
    A training-mode export is not verified (its forward would update the model's statistics).
    """
    return export_torch_with_report(
        model, args, f, training=training, function_fallback=function_fallback, modules=modules,
        functions=functions, verify=verify, **kwargs,
    )[0]  # fmt: skip


def export_torch_with_report(
    model: Any,
    args: tuple[Any, ...] | Any,
    f: str | os.PathLike[str] | io.BytesIO | None = None,
    *,
    training: Any = None,
    function_fallback: bool = True,
    modules: Mapping[type | str, Describe] | None = None,
    functions: Iterable[Callable[..., Any]] | Mapping[Callable[..., Any], FunctionalForm] | None = None,
    verify: bool = True,
    **kwargs: Any,
) -> tuple[onnx.ModelProto, VerifyReport]:
    """``export_torch``, and what its verification measured (``VerifyReport.lines()``)."""
    from . import torch_verify

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
    with contextlib.ExitStack() as stack:
        stack.enter_context(_mode(model, training))
        eval_export = not any(m.training for m in model.modules())
        names: list[str] = []
        expected: list[Any] = []
        eager_fault: TorchExportError | None = None
        if eval_export and (verify or not ("input_names" in kwargs or "output_names" in kwargs)):
            try:
                names, expected = torch_verify.eager_outputs(model, args, kwargs.get("kwargs"))
            except TorchExportError as exc:  # the export's own error names a faulty module better: it goes first
                eager_fault = exc
        if names:
            if "input_names" not in kwargs and "output_names" not in kwargs:
                kwargs["input_names"], kwargs["output_names"] = torch_verify.input_names(args), names
            elif kwargs.get("output_names"):
                names = list(kwargs["output_names"])[: len(names)] + names[len(kwargs["output_names"]) :]
        count, near_misses = stack.enter_context(_patched_modules(model, modules or {}))
        stack.enter_context(patched_functions(model, functions, apply_node))
        stack.enter_context(torch.no_grad())
        stack.enter_context(warnings.catch_warnings())
        # a training-mode export was asked for explicitly: torch's reminder to call eval() is noise
        warnings.filterwarnings("ignore", message="Exporting a model while it is in training mode")
        # torch's own deprecation inside torch.export (not the user's code), and its exporter's notes that
        # torchvision's ops are not registered (they concern models that use torchvision's ops)
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*treespec.*LeafSpec")
        stack.enter_context(quiet_logger("torch.onnx._internal.exporter._registration"))
        try:
            program = torch.onnx.export(model, args, custom_translation_table=table, **kwargs)
        except Exception as exc:
            if not near_misses:
                raise
            raise TorchExportError(
                f"torch.onnx.export failed ({type(exc).__name__}); these modules are named like InplaceABN but "
                f"were not recognized: {'; '.join(near_misses)}. Describe their class with "
                "export_torch(..., modules={cls: describe})"
            ) from exc
    proto = program.model_proto
    _ensure_opset(proto)
    _drop_unused_running_outputs(proto)
    nodes = sum(is_inplace_abn(n) for n in proto.graph.node)
    proto.doc_string = f"exported by iabn_onnx.export_torch: {nodes} InplaceABN node(s), {count} from modules"
    if function_fallback:
        proto = add_function_fallback(proto)
    report = torch_verify.VerifyReport(skipped="verify=False" if not verify else "a training-mode export")
    if verify and eval_export:
        if eager_fault is not None:
            raise eager_fault
        with _mode(model, training):
            report = torch_verify.verify(model, proto, args, names, expected, kwargs.get("dynamic_shapes"))
    if f is not None:
        data = proto.SerializeToString()
        if isinstance(f, io.BytesIO):
            f.write(data)
        else:
            with open(f, "wb") as fh:
                fh.write(data)
    return proto, report


def _drop_unused_running_outputs(model: onnx.ModelProto) -> None:
    """The translation declares Y, running_mean, running_var; keep only Y when nothing reads the others."""
    graph = model.graph
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for node in graph.node:
        if is_inplace_abn(node) and len(node.output) > 1 and not any(o in used for o in node.output[1:]):
            del node.output[1:]
    live = {name for node in graph.node for name in node.output} | {i.name for i in graph.input}
    kept = [v for v in graph.value_info if v.name in live]
    del graph.value_info[:]
    graph.value_info.extend(kept)


def _ensure_opset(model: onnx.ModelProto) -> None:
    if any(is_inplace_abn(n) for n in model.graph.node):
        ensure_opset_import(model, DOMAIN, OPSET_VERSION)


__all__ = [
    "ExportVerifyError",
    "FunctionalForm",
    "InplaceABNParams",
    "TorchExportError",
    "VerifyReport",
    "export_torch",
    "export_torch_with_report",
]
