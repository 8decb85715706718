"""Rule: a frozen InplaceABN node -> BatchNormalization [+ LeakyRelu | Elu] (the standard-op route).

before:  X, scale, B, mean, var -> InplaceABN(epsilon, act, act_alpha; training_mode=0, NCHW) -> Y
after:   X, scale, B, mean, var -> BatchNormalization(epsilon) -> Z -> LeakyRelu(act_alpha) | Elu(act_alpha) -> Y
         (act_alpha=0: Z -> Relu -> Y)
         (act=identity: BatchNormalization writes Y itself)

Formula: both compute ``Y = act((X - mean) / sqrt(var + epsilon) * scale + B)`` per channel.
onnxruntime's BatchNormalization forms the per-channel factor and shift in X's dtype, the
fused kernel in float64, so the two agree to X's rounding.

Preconditions (``check`` returns the reason when one fails):

* training_mode=0: BatchNormalization's own training mode is rejected by inference builds;
* data_layout NCHW: BatchNormalization's channel axis is 1;
* X is float16 or float32, or float64 with act=identity or alpha 0 (Relu): onnxruntime's CPU provider has a float64
  BatchNormalization but no float64 LeakyRelu (opset >= 16) or Elu kernel;
* no constant scale is infinite: BatchNormalization gives NaN where the operator gives ±inf.

The parameters may be initializers or graph inputs fed at run time, since BatchNormalization
takes them as inputs. When a session uses this form rather than the kernel: ``route_choice.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..op import onnx_enums
from ..op.schema import Activation, InplaceABNAttrs, Layout

if TYPE_CHECKING:
    from onnx import NodeProto

ROUTE = "BatchNormalization"
DTYPES = (onnx_enums.FLOAT, onnx_enums.FLOAT16)


def check(attrs: InplaceABNAttrs, dtype: int | None, constant_scale: np.ndarray | None) -> str | None:
    """None when the node may take this route, else why not."""
    if attrs.training_mode:
        return "training_mode=1 (batch statistics)"
    if attrs.data_layout is not Layout.NCHW:
        return "NHWC (BatchNormalization's channel axis is 1)"
    f64_kernels = dtype == onnx_enums.DOUBLE and (attrs.act is Activation.IDENTITY or attrs.is_relu)
    if dtype not in DTYPES and not f64_kernels:
        what = onnx_enums.dtype_name(dtype) if dtype else "unknown"
        return f"X dtype {what} (onnxruntime has no float64 LeakyRelu/Elu)"
    if constant_scale is not None and not np.isfinite(constant_scale).all():
        return "infinite scale (BatchNormalization would give NaN, the operator ±inf)"
    return None


def rewrite(node: NodeProto, attrs: InplaceABNAttrs, fresh: Callable[[str], str]) -> list[Any]:
    """The replacement nodes; ``fresh(base)`` gives an unused value or node name."""
    from onnx import helper

    make_node = helper.make_node
    name = node.name or node.output[0]
    activation = attrs.onnx_activation()
    z = fresh(f"{node.output[0]}__bn") if activation else node.output[0]
    nodes = [make_node("BatchNormalization", list(node.input), [z], name=node.name, epsilon=attrs.epsilon)]
    if activation:
        op, op_attrs = activation
        nodes.append(make_node(op, [z], [node.output[0]], name=fresh(f"{name}__{attrs.act.value}"), **op_attrs))
    return nodes
