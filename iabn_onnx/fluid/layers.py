"""Paddle-fluid-style layers that build ONNX: ``data``, ``fc``, ``conv2d``, ``pool2d``,
``elementwise_add`` and the seed layer ``inplace_abn``.

Signatures, defaults, parameter names (``fc_0.w_0``) and default initializers are
Paddle 1.x's; each layer appends standard ONNX nodes (and one ``InplaceABN`` node
for ``inplace_abn``) to the current program. One function per Paddle layer, each
mirroring Paddle's signature and argument checks, hence the length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..op.schema import DOMAIN, MAX_RANK, MIN_RANK, OP_TYPE, Activation, InplaceABNAttrs, Layout
from .program import (
    DTYPES,
    Constant,
    FluidError,
    Normal,
    ParamAttr,
    Variable,
    Xavier,
    as_param_attr,
    default_main_program,
)

# Paddle's inplace_abn op checks epsilon in [0, 0.001] (stricter than the ONNX operator's range)
PADDLE_EPSILON_RANGE = (0.0, 1e-3)
_PLAIN_ACTS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}


def _check_var(value: object, layer: str, arg: str = "input") -> Variable:
    if not isinstance(value, Variable):
        raise FluidError(
            f"{layer}: {arg} must be a Variable from fluid.data or another layer, got {type(value).__name__}"
        )
    return value


def _pair(value: int | Sequence[int], what: str) -> list[int]:
    if isinstance(value, int):
        return [value, value]
    values = [int(v) for v in value]
    if len(values) != 2:
        raise FluidError(f"{what} must be an int or a pair, got {value!r}")
    return values


def _append_act(var: Variable, act: str | None, layer: str) -> Variable:
    if act is None:
        return var
    if act == "softmax":
        out = var.program.new_var(layer, var.shape, var.dtype)
        var.program.add_node("Softmax", [var.name], [out.name], axis=-1)
        return out
    if act not in _PLAIN_ACTS:
        raise FluidError(f"{layer}: act {act!r} is not supported here; use one of {[*_PLAIN_ACTS, 'softmax']}")
    out = var.program.new_var(layer, var.shape, var.dtype)
    var.program.add_node(_PLAIN_ACTS[act], [var.name], [out.name])
    return out


def static_data(name: str, shape: Sequence[int | None], dtype: str = "float32", lod_level: int = 0) -> Variable:
    """``fluid.data``: a graph input. ``None`` or -1 in ``shape`` is a dimension known only at run time."""
    program = default_main_program()
    if dtype not in DTYPES:
        raise FluidError(f"data {name!r}: dtype {dtype!r} is not one of {sorted(DTYPES)}")
    if name in program.data_vars or name in program.variables:
        raise FluidError(f"data {name!r} already exists in this program")
    var = Variable(name, tuple(-1 if d is None else int(d) for d in shape), dtype, program)
    program.data_vars[name] = var
    program.variables[name] = var
    return var


def data(
    name: str,
    shape: Sequence[int | None],
    append_batch_size: bool = True,
    dtype: str = "float32",
    lod_level: int = 0,
    type: object = None,
    stop_gradient: bool = True,
) -> Variable:
    """Paddle 1.x ``fluid.layers.data``: like ``fluid.data``, with a batch dimension prepended by default."""
    shape = list(shape)
    if append_batch_size and (not shape or shape[0] not in (None, -1)):
        shape = [-1, *shape]
    return static_data(name, shape, dtype, lod_level)


def fc(
    input: Variable | Sequence[Variable],
    size: int,
    num_flatten_dims: int = 1,
    param_attr: ParamAttr | str | None = None,
    bias_attr: ParamAttr | str | bool | None = None,
    act: str | None = None,
    name: str | None = None,
) -> Variable:
    """Fully connected: flatten ``input`` after ``num_flatten_dims`` dims, multiply by W [in, size], add b."""
    inputs = list(input) if isinstance(input, (list, tuple)) else [input]
    first = _check_var(inputs[0], "fc")
    program = first.program
    layer = name or program.unique("fc")
    partial: list[str] = []
    for var in inputs:
        var = _check_var(var, "fc")
        if not 1 <= num_flatten_dims < var.ndim:
            raise FluidError(f"fc: num_flatten_dims={num_flatten_dims} must lie in [1, {var.ndim - 1}]")
        tail = var.shape[num_flatten_dims:]
        if any(d < 0 for d in tail):
            raise FluidError(f"fc: dims {num_flatten_dims}.. of {var.name} {var.shape} must be known")
        in_features = math.prod(tail)
        weight = program.create_parameter(
            as_param_attr(param_attr) or ParamAttr(), [in_features, size], var.dtype, f"{layer}.w", Xavier()
        )
        flat = var.name
        if var.ndim != 2:
            flat = program.new_var(layer, [-1, in_features], var.dtype).name
            shape = program.constant(layer, np.array([-1, in_features], np.int64))
            program.add_node("Reshape", [var.name, shape], [flat])
        product = program.new_var(layer, [-1, size], var.dtype).name
        program.add_node("MatMul", [flat, weight], [product])
        partial.append(product)
    total = partial[0]
    for other in partial[1:]:
        summed = program.new_var(layer, [-1, size], first.dtype).name
        program.add_node("Add", [total, other], [summed])
        total = summed
    bias = as_param_attr(bias_attr)
    if bias is not None:
        b = program.create_parameter(bias, [size], first.dtype, f"{layer}.b", Constant(0.0))
        with_bias = program.new_var(layer, [-1, size], first.dtype).name
        program.add_node("Add", [total, b], [with_bias])
        total = with_bias
    out_shape = (*first.shape[:num_flatten_dims], size)
    if num_flatten_dims > 1:
        out = program.new_var(layer, out_shape, first.dtype)
        lead = program.unique(f"{layer}.shape")  # the input's leading dims, known or not, then size
        program.add_node("Shape", [first.name], [lead], start=0, end=num_flatten_dims)
        shape = program.unique(f"{layer}.shape")
        program.add_node("Concat", [lead, program.constant(layer, np.array([size], np.int64))], [shape], axis=0)
        program.add_node("Reshape", [total, shape], [out.name])
    else:
        out = Variable(total, out_shape, first.dtype, program)
        program.variables[total] = out
    return _append_act(out, act, layer)


def _conv_out(size: int, kernel: int, stride: int, pad_total: int, dilation: int) -> int:
    if size < 0:
        return -1
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def _pads(padding: int | Sequence[int] | str, what: str) -> list[int] | str:
    """ONNX pads [top, left, bottom, right] from Paddle's int, [h, w] or [top, bottom, left, right]."""
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise FluidError(f"{what}: padding string must be 'SAME' or 'VALID', got {padding!r}")
        return padding.upper()
    if isinstance(padding, int):
        return [padding] * 4
    values = [int(v) for v in padding]
    if len(values) == 2:
        return [values[0], values[1], values[0], values[1]]
    if len(values) == 4:
        return [values[0], values[2], values[1], values[3]]
    raise FluidError(f"{what}: padding must be an int, [h, w] or [top, bottom, left, right], got {padding!r}")


def _spatial(kind: str, x: Variable, layer: str, data_format: str) -> tuple[str, list[int], bool]:
    """The NCHW tensor name and shape (transposing NHWC input in)."""
    if x.ndim != 4:
        raise FluidError(f"{kind}: input must be rank 4, got {x.shape}")
    if data_format not in ("NCHW", "NHWC"):
        raise FluidError(f"{kind}: data_format must be 'NCHW' or 'NHWC', got {data_format!r}")
    if data_format == "NCHW":
        return x.name, list(x.shape), False
    n, h, w, c = x.shape
    nchw = x.program.new_var(layer, [n, c, h, w], x.dtype)
    x.program.add_node("Transpose", [x.name], [nchw.name], perm=[0, 3, 1, 2])
    return nchw.name, [n, c, h, w], True


def _finish_spatial(program, layer: str, name: str, shape: list[int], dtype: str, nhwc: bool) -> Variable:  # type: ignore[no-untyped-def]
    if not nhwc:
        var = Variable(name, tuple(shape), dtype, program)
        program.variables[name] = var
        return var
    n, c, h, w = shape
    out = program.new_var(layer, [n, h, w, c], dtype)
    program.add_node("Transpose", [name], [out.name], perm=[0, 2, 3, 1])
    return out


def _out_hw(
    shape: list[int],
    kernel: list[int],
    stride: list[int],
    pads: list[int] | str,
    dilation: list[int],
    ceil_mode: bool = False,
) -> list[int]:
    out = []
    for i in range(2):
        size = shape[2 + i]
        if pads == "SAME":
            out.append(-1 if size < 0 else -(-size // stride[i]))
        elif pads == "VALID":
            out.append(_conv_out(size, kernel[i], stride[i], 0, dilation[i]))
        elif ceil_mode and size >= 0:
            span = size + pads[i] + pads[i + 2] - dilation[i] * (kernel[i] - 1) - 1
            out.append(-(-span // stride[i]) + 1)
        else:
            out.append(_conv_out(size, kernel[i], stride[i], pads[i] + pads[i + 2], dilation[i]))
    return out


def _pad_attrs(pads: list[int] | str) -> dict[str, object]:
    if pads == "SAME":
        return {"auto_pad": "SAME_UPPER"}
    if pads == "VALID":
        return {"auto_pad": "VALID"}
    return {"pads": pads}


def conv2d(
    input: Variable,
    num_filters: int,
    filter_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] | str = 0,
    dilation: int | Sequence[int] = 1,
    groups: int | None = None,
    param_attr: ParamAttr | str | None = None,
    bias_attr: ParamAttr | str | bool | None = None,
    use_cudnn: bool = True,
    act: str | None = None,
    name: str | None = None,
    data_format: str = "NCHW",
) -> Variable:
    """2-D convolution; the filter defaults to Normal(0, sqrt(2 / (kh·kw·C))) as in Paddle."""
    x = _check_var(input, "conv2d")
    program = x.program
    layer = name or program.unique("conv2d")
    src, shape, nhwc = _spatial("conv2d", x, layer, data_format)
    channels, groups = shape[1], groups or 1
    if channels < 0 or channels % groups:
        raise FluidError(f"conv2d: {channels} input channels is not a known multiple of groups={groups}")
    kernel, strides, dilations = _pair(filter_size, "filter_size"), _pair(stride, "stride"), _pair(dilation, "dilation")
    pads = _pads(padding, "conv2d")
    std = (2.0 / (kernel[0] * kernel[1] * channels)) ** 0.5
    weight = program.create_parameter(
        as_param_attr(param_attr) or ParamAttr(),
        [num_filters, channels // groups, *kernel],
        x.dtype,
        f"{layer}.w",
        Normal(0.0, std),
    )
    inputs = [src, weight]
    bias = as_param_attr(bias_attr)
    if bias is not None:
        inputs.append(program.create_parameter(bias, [num_filters], x.dtype, f"{layer}.b", Constant(0.0)))
    out_shape = [shape[0], num_filters, *_out_hw(shape, kernel, strides, pads, dilations)]
    out = program.unique(f"{layer}.tmp")
    program.add_node(
        "Conv",
        inputs,
        [out],
        kernel_shape=kernel,
        strides=strides,
        dilations=dilations,
        group=groups,
        **_pad_attrs(pads),
    )
    return _append_act(_finish_spatial(program, layer, out, out_shape, x.dtype, nhwc), act, layer)


def pool2d(
    input: Variable,
    pool_size: int | Sequence[int] = -1,
    pool_type: str = "max",
    pool_stride: int | Sequence[int] = 1,
    pool_padding: int | Sequence[int] | str = 0,
    global_pooling: bool = False,
    use_cudnn: bool = True,
    ceil_mode: bool = False,
    name: str | None = None,
    exclusive: bool = True,
    data_format: str = "NCHW",
) -> Variable:
    """Max or average pooling; ``exclusive`` averages over unpadded elements only."""
    x = _check_var(input, "pool2d")
    program = x.program
    if pool_type not in ("max", "avg"):
        raise FluidError(f"pool2d: pool_type must be 'max' or 'avg', got {pool_type!r}")
    layer = name or program.unique("pool2d")
    src, shape, nhwc = _spatial("pool2d", x, layer, data_format)
    out = program.unique(f"{layer}.tmp")
    if global_pooling:
        program.add_node("GlobalMaxPool" if pool_type == "max" else "GlobalAveragePool", [src], [out])
        return _finish_spatial(program, layer, out, [shape[0], shape[1], 1, 1], x.dtype, nhwc)
    kernel, strides = _pair(pool_size, "pool_size"), _pair(pool_stride, "pool_stride")
    if min(kernel) < 1:
        raise FluidError(f"pool2d: pool_size must be positive unless global_pooling=True, got {pool_size!r}")
    pads = _pads(pool_padding, "pool2d")
    attrs: dict[str, object] = {"kernel_shape": kernel, "strides": strides, "ceil_mode": int(ceil_mode)}
    attrs.update(_pad_attrs(pads))
    if pool_type == "avg":
        attrs["count_include_pad"] = 0 if exclusive else 1
    program.add_node("MaxPool" if pool_type == "max" else "AveragePool", [src], [out], **attrs)
    out_shape = [shape[0], shape[1], *_out_hw(shape, kernel, strides, pads, [1, 1], ceil_mode)]
    return _finish_spatial(program, layer, out, out_shape, x.dtype, nhwc)


def elementwise_add(
    x: Variable, y: Variable, axis: int = -1, act: str | None = None, name: str | None = None
) -> Variable:
    """x + y with Paddle's broadcast: y's dims line up with x's starting at ``axis``."""
    x, y = _check_var(x, "elementwise_add", "x"), _check_var(y, "elementwise_add", "y")
    program = x.program
    layer = name or program.unique("elementwise_add")
    if y.ndim > x.ndim:
        raise FluidError(f"elementwise_add: y {y.shape} has more dims than x {x.shape}")
    start = x.ndim - y.ndim if axis == -1 else axis
    if not 0 <= start <= x.ndim - y.ndim:
        raise FluidError(f"elementwise_add: axis={axis} does not fit y {y.shape} into x {x.shape}")
    for i, d in enumerate(y.shape):
        if d not in (1, -1) and x.shape[start + i] not in (d, -1):
            raise FluidError(f"elementwise_add: y {y.shape} does not broadcast to x {x.shape} at axis {start}")
    rhs = y.name
    trailing = x.ndim - start - y.ndim
    if trailing:
        axes = program.constant(layer, np.arange(y.ndim, y.ndim + trailing, dtype=np.int64))
        rhs = program.new_var(layer, (*y.shape, *[1] * trailing), y.dtype).name
        program.add_node("Unsqueeze", [y.name, axes], [rhs])
    out = program.new_var(layer, x.shape, x.dtype)
    program.add_node("Add", [x.name, rhs], [out.name])
    return _append_act(out, act, layer)


def inplace_abn(
    input: Variable,
    act: str | None = None,
    is_test: bool = False,
    momentum: float = 0.9,
    epsilon: float = 1e-05,
    param_attr: ParamAttr | str | None = None,
    bias_attr: ParamAttr | str | None = None,
    data_layout: str = "NCHW",
    name: str | None = None,
    moving_mean_name: str | None = None,
    moving_variance_name: str | None = None,
    do_model_average_for_mean_and_var: bool = True,
    use_global_stats: bool = False,
    act_alpha: float = 1.0,
) -> Variable:
    """In-place activated batch normalization: act((x - mean) / sqrt(var + epsilon) * scale + bias).

    ``act`` is None (identity), 'identity', 'leaky_relu' (slope ``act_alpha``) or 'elu'
    (alpha ``act_alpha``). ``is_test`` or ``use_global_stats`` normalize with the moving
    statistics; otherwise with batch statistics, updating the moving ones as
    ``moving = moving * momentum + batch * (1 - momentum)``. Scale starts at 1, bias at 0,
    the moving mean at 0 and the moving variance at 1, as in Paddle's layer.
    ``do_model_average_for_mean_and_var`` only concerns Paddle's training and is ignored.
    """
    x = _check_var(input, "inplace_abn")
    program = x.program
    layer = name or program.unique("inplace_abn")
    where = f"inplace_abn {layer!r}"
    act_name = "identity" if act in (None, "", "identity") else act
    try:
        activation = Activation(act_name)
    except ValueError:
        raise FluidError(
            f"{where}: act {act!r} is not supported; use None, 'identity', 'leaky_relu' or 'elu'"
        ) from None
    try:
        layout = Layout(data_layout)
    except ValueError:
        raise FluidError(f"{where}: data_layout must be 'NCHW' or 'NHWC', got {data_layout!r}") from None
    lo, hi = PADDLE_EPSILON_RANGE
    if not lo <= epsilon <= hi:
        raise FluidError(f"{where}: epsilon={epsilon} is outside Paddle's range [{lo}, {hi}]")
    if not MIN_RANK <= x.ndim <= MAX_RANK:
        raise FluidError(f"{where}: input must be rank {MIN_RANK}-{MAX_RANK}, got rank {x.ndim} {x.shape}")
    attrs = InplaceABNAttrs(
        epsilon=epsilon,
        momentum=momentum,
        act=activation,
        act_alpha=act_alpha,
        training_mode=0 if (is_test or use_global_stats) else 1,
        data_layout=layout,
    )
    faults = attrs.faults()
    if faults:
        raise FluidError(f"{where}: " + "; ".join(faults))
    channels = x.shape[attrs.channel_axis(x.ndim)]
    if channels < 0:
        raise FluidError(f"{where}: the channel dimension of {x.name} {x.shape} must be known")
    scale = program.create_parameter(
        as_param_attr(param_attr) or ParamAttr(), [channels], x.dtype, f"{layer}.w", Constant(1.0)
    )
    bias = program.create_parameter(
        as_param_attr(bias_attr) or ParamAttr(), [channels], x.dtype, f"{layer}.b", Constant(0.0)
    )
    mean = program.create_parameter(ParamAttr(name=moving_mean_name), [channels], x.dtype, f"{layer}.w", Constant(0.0))
    var = program.create_parameter(
        ParamAttr(name=moving_variance_name), [channels], x.dtype, f"{layer}.w", Constant(1.0)
    )
    out = program.new_var(layer, x.shape, x.dtype)
    program.add_node(OP_TYPE, [x.name, scale, bias, mean, var], [out.name], domain=DOMAIN, **attrs.to_attributes())
    return out
