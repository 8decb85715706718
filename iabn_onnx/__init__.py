"""iabn-onnx: In-Place Activated BatchNorm (InplaceABN) for ONNX and onnxruntime.

Importing the package loads nothing heavy: the operator's schema is registered with onnx as
soon as onnx is imported (right away if it already is), and each name below loads its module
on first use (PEP 562), so a serving process that only creates sessions never imports the
exporters or the fluid layer API, and ``iabn-onnx --help`` never imports onnx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._after_import import after_import
from .op.names import DOMAIN, OP_TYPE, OPSET_VERSION

if TYPE_CHECKING:
    from . import fluid
    from .exporters.paddle_export import export_paddle
    from .exporters.torch_export import export_torch
    from .exporters.torch_replace import replace_with_batchnorm
    from .op.function import add_function_fallback
    from .op.reference import inplace_abn_reference
    from .op.schema import InplaceABNAttrs, InplaceABNError, make_node, register_schema
    from .passes.convert import convert
    from .passes.fold import fold
    from .quantization import quantize
    from .runtime.session import InferenceSession, ModelLoadError, load_model, session_options
    from .torch_fallback import install_torch_fallback, uninstall_torch_fallback


def _register_schema() -> None:
    """Make the operator's schema known to onnx (the schema module itself needs no onnx)."""
    importlib.import_module(".op.schema", __name__).register_schema()


after_import("onnx", _register_schema)

__version__ = "0.1.0"

#: public name -> the module that defines it
_LAZY = {
    "InplaceABNAttrs": ".op.schema",
    "InplaceABNError": ".op.schema",
    "make_node": ".op.schema",
    "register_schema": ".op.schema",
    "InferenceSession": ".runtime.session",
    "ModelLoadError": ".runtime.session",
    "load_model": ".runtime.session",
    "session_options": ".runtime.session",
    "add_function_fallback": ".op.function",
    "inplace_abn_reference": ".op.reference",
    "convert": ".passes.convert",
    "fold": ".passes.fold",
    "quantize": ".quantization",
    "export_torch": ".exporters.torch_export",
    "export_paddle": ".exporters.paddle_export",
    "replace_with_batchnorm": ".exporters.torch_replace",
    "install_torch_fallback": ".torch_fallback",
    "uninstall_torch_fallback": ".torch_fallback",
}
_SUBPACKAGES = {
    "cli",
    "custom_ops",
    "examples",
    "exporters",
    "fluid",
    "graph",
    "inference",
    "op",
    "passes",
    "quantization",
    "runtime",
    "static",
    "torch_fallback",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBPACKAGES})


__all__ = [
    "DOMAIN",
    "OPSET_VERSION",
    "OP_TYPE",
    "InferenceSession",
    "InplaceABNAttrs",
    "InplaceABNError",
    "ModelLoadError",
    "add_function_fallback",
    "convert",
    "export_paddle",
    "export_torch",
    "fluid",
    "fold",
    "inplace_abn_reference",
    "install_torch_fallback",
    "load_model",
    "make_node",
    "quantize",
    "register_schema",
    "replace_with_batchnorm",
    "session_options",
    "uninstall_torch_fallback",
]
