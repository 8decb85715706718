"""Names of the internal kernel ops, importable without loading onnxruntime-extensions or numba.

``iabn_onnx.runtime.lowering`` rewrites public ``InplaceABN`` nodes to these ops and
``registration.py`` registers their kernels; both import the names from here.
"""

from __future__ import annotations

from iabn_onnx.op.schema import DOMAIN, InplaceABNAttrs

RUNTIME_DOMAIN = DOMAIN + ".runtime"
INFERENCE_OP = "InplaceABNInference"
TRAINING_OP = "InplaceABNTraining"
#: the one string attribute of a kernel op: the node's name and exact attributes (JSON), because
#: the Python-op bridge rounds float attributes to 6 significant digits
CONFIG_ATTR = "config"


def encode_config(node: str, attrs: InplaceABNAttrs) -> str:
    return attrs.encode(node=node)
