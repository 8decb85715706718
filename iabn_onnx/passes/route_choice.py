"""Which implementation a frozen node takes in a session, chosen by measurement.

``benchmarks/bench_routes.py`` times, for every layout, dtype and activation, the fused kernel (the
Python-op bridge copies X in and Y out) against BatchNormalization [+ activation] and a per-channel
Mul + Add [+ activation] on plain onnxruntime, at four shapes ([1,64,56,56] to [32,256,14,14]).
Their medians relative to the kernel are in ``benchmarks/results/routes.json`` (rendered in the README's
"Route choice"); the choice they gave:

| layout | dtype   | identity           | leaky_relu         | elu                |
|--------|---------|--------------------|--------------------|--------------------|
| NCHW   | float32 | BatchNormalization | BatchNormalization | BatchNormalization |
| NCHW   | float16 | BatchNormalization | kernel             | BatchNormalization |
| NCHW   | float64 | BatchNormalization | kernel             | kernel             |
| NHWC   | float32 | Mul + Add          | Mul + Add          | Mul + Add          |
| NHWC   | float16 | kernel (exactness) | kernel             | kernel (exactness) |
| NHWC   | float64 | Mul + Add          | kernel             | Mul + Add          |

onnxruntime's CPU LeakyRelu in float16 is several times slower than the whole kernel, and float64 has
no LeakyRelu/Elu kernel (its expansion into Min/Mul/Relu/Add costs four passes and loses to the kernel
at the larger sizes; NHWC elu, where it wins at most sizes, is the exception). A node whose cell says
kernel goes to the kernel even after a Conv: folding its affine map into the Conv would leave the slow
activation. BatchNormalization's channel axis is 1, so NHWC nodes use Mul + Add (Transposes around
BatchNormalization lost everywhere); in float16 that form rounds X·factor before the shift is added, an
error of a float16 step of X·factor where the two nearly cancel, so NHWC float16 stays in the kernel
(which computes in float32). BatchNormalization takes statistics fed at run time; the
per-channel form needs them constant (its factor and shift are computed here in float64).
"""

from __future__ import annotations

from ..op import onnx_enums
from ..op.schema import Activation, InplaceABNAttrs, Layout
from . import batchnorm_form

BATCHNORM = batchnorm_form.ROUTE
PER_CHANNEL = "per-channel Mul + Add"

_F16, _F32, _F64 = onnx_enums.FLOAT16, onnx_enums.FLOAT, onnx_enums.DOUBLE
_NCHW, _NHWC = Layout.NCHW, Layout.NHWC
_SLOW_F16_LEAKY = "onnxruntime's float16 LeakyRelu is slower than the kernel (bench_routes)"
_SLOW_F64 = "onnxruntime has no float64 {}; its expansion loses to the kernel at the larger sizes (bench_routes)"
_INEXACT_F16 = "Mul + Add in float16 rounds X·factor before adding the shift (not exact to float16)"
#: (layout, dtype, act) -> why the kernel runs such a node; other frozen nodes of these dtypes take a standard form
KERNEL_CELLS: dict[tuple[Layout, int, Activation], str] = {
    (_NCHW, _F16, Activation.LEAKY_RELU): _SLOW_F16_LEAKY,
    (_NCHW, _F64, Activation.LEAKY_RELU): _SLOW_F64.format("LeakyRelu"),
    (_NCHW, _F64, Activation.ELU): _SLOW_F64.format("Elu"),
    **{(_NHWC, _F16, act): _INEXACT_F16 for act in Activation},
    (_NHWC, _F64, Activation.LEAKY_RELU): _SLOW_F64.format("LeakyRelu"),
}
DTYPES = (_F16, _F32, _F64)
_FORM = {_NCHW: BATCHNORM, _NHWC: PER_CHANNEL}


def choose(attrs: InplaceABNAttrs, dtype: int | None) -> tuple[str | None, str]:
    """The standard form a node takes (``BATCHNORM`` or ``PER_CHANNEL``), or None and why the kernel runs it."""
    if attrs.training_mode:
        return None, "training_mode=1 (batch statistics)"
    if dtype not in DTYPES:
        return None, f"X dtype {onnx_enums.dtype_name(dtype) if dtype else 'unknown'}"
    why = KERNEL_CELLS.get((attrs.data_layout, dtype, attrs.act))
    return (None, why) if why else (_FORM[attrs.data_layout], "")
