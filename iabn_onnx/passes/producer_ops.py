"""The op types an InplaceABN node's X may come from for one of fold's producer rules to apply (an Add:
MatMul + Add). Apart from ``fold.py`` so that the route rules read it without onnx."""

PRODUCER_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Add"})
