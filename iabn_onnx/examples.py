"""Small, seeded example models with InplaceABN nodes (used by the demo, tests and benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .op.schema import InplaceABNAttrs, make_node, opset_import

ONNX_OPSET = 17


def random_params(channels: int, dtype: np.dtype | type, seed: int = 0) -> dict[str, np.ndarray]:
    """scale, B, mean, var for one node; var is kept positive."""
    rng = np.random.default_rng(seed)
    return {
        "scale": rng.uniform(0.5, 1.5, channels).astype(dtype),
        "B": rng.standard_normal(channels).astype(dtype),
        "mean": rng.standard_normal(channels).astype(dtype),
        "var": rng.uniform(0.5, 2.0, channels).astype(dtype),
    }


def single_node_model(
    shape: Sequence[int | str],
    attrs: InplaceABNAttrs | None = None,
    dtype: np.dtype | type = np.float32,
    constant_params: bool = True,
    seed: int = 0,
    name: str = "abn0",
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """One InplaceABN node reading graph input ``X``.

    Returns the model and the parameter arrays; with ``constant_params=False``
    the parameters are graph inputs and must be fed.
    """
    attrs = attrs or InplaceABNAttrs()
    channels = shape[attrs.channel_axis(len(shape))]
    if not isinstance(channels, int):
        raise ValueError("the channel dimension must be a fixed integer")
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    params = random_params(channels, dtype, seed)
    outputs = ["Y", "running_mean", "running_var"] if attrs.training_mode else ["Y"]
    node = make_node(["X", *params], outputs, attrs, name=name)
    inputs = [helper.make_tensor_value_info("X", elem, list(shape))]
    initializers = []
    if constant_params:
        initializers = [numpy_helper.from_array(v, k) for k, v in params.items()]
    else:
        inputs += [helper.make_tensor_value_info(k, elem, [channels]) for k in params]
    out_shapes = [list(shape), [channels], [channels]]
    graph = helper.make_graph(
        [node],
        "inplace_abn_single",
        inputs,
        [helper.make_tensor_value_info(o, elem, s) for o, s in zip(outputs, out_shapes)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET), opset_import()])
    return model, params


def native_equivalent(
    shape: Sequence[int | str],
    attrs: InplaceABNAttrs,
    params: dict[str, np.ndarray],
) -> onnx.ModelProto:
    """The same inference computation in standard ONNX ops (BatchNormalization + activation).

    NHWC is handled with Transposes around an NCHW BatchNormalization.
    """
    dtype = next(iter(params.values())).dtype
    elem = helper.np_dtype_to_tensor_dtype(dtype)
    rank = len(shape)
    nodes = []
    x = "X"
    if attrs.data_layout.value == "NHWC":
        perm = [0, rank - 1, *range(1, rank - 1)]
        nodes.append(helper.make_node("Transpose", ["X"], ["X_nchw"], perm=perm))
        x = "X_nchw"
    nodes.append(helper.make_node("BatchNormalization", [x, *params], ["Z"], epsilon=attrs.epsilon))
    act_out = "A" if attrs.data_layout.value == "NHWC" else "Y"
    if attrs.act.value == "leaky_relu":
        nodes.append(helper.make_node("LeakyRelu", ["Z"], [act_out], alpha=attrs.act_alpha))
    elif attrs.act.value == "elu":
        nodes.append(helper.make_node("Elu", ["Z"], [act_out], alpha=attrs.act_alpha))
    else:
        nodes.append(helper.make_node("Identity", ["Z"], [act_out]))
    if attrs.data_layout.value == "NHWC":
        inv = [0, *range(2, rank), 1]
        nodes.append(helper.make_node("Transpose", ["A"], ["Y"], perm=inv))
    graph = helper.make_graph(
        nodes,
        "native_bn_act",
        [helper.make_tensor_value_info("X", elem, list(shape))],
        [helper.make_tensor_value_info("Y", elem, list(shape))],
        [numpy_helper.from_array(v, k) for k, v in params.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
