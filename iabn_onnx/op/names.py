"""The operator's names, importable without onnx or numpy (``schema.py`` re-exports them and
holds every other fact about the operator)."""

DOMAIN = "ai.iabn"
OP_TYPE = "InplaceABN"
OPSET_VERSION = 1
