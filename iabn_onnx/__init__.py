"""iabn-onnx: In-Place Activated BatchNorm (InplaceABN) for ONNX and onnxruntime."""

from . import fluid
from .exporters.torch_export import export_torch
from .op.function import add_function_fallback
from .op.reference import inplace_abn_reference
from .op.schema import DOMAIN, OP_TYPE, OPSET_VERSION, InplaceABNAttrs, InplaceABNError, make_node, register_schema
from .passes.convert import convert
from .passes.fold import fold
from .runtime.session import InferenceSession, ModelLoadError, load_model, session_options

register_schema()

__version__ = "0.1.0"

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
    "export_torch",
    "fluid",
    "fold",
    "inplace_abn_reference",
    "load_model",
    "make_node",
    "register_schema",
    "session_options",
]
