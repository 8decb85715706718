"""Small, seeded example models with InplaceABN nodes (used by the demo, tests and benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .op.schema import ONNX_OPSET, InplaceABNAttrs, make_model, make_node, opset_import


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
    model = make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET), opset_import()])
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
    return make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])


def conv_net_model(
    acts: Sequence[str] = ("leaky_relu", "elu", "identity"),
    channels: int = 16,
    image: int = 32,
    dtype: np.dtype | type = np.float32,
    data_layout: str = "NCHW",
    training_mode: int = 0,
    seed: int = 0,
) -> onnx.ModelProto:
    """A small conv net: [Conv -> InplaceABN] per act, then pool, Gemm -> InplaceABN(leaky_relu).

    Input ``X`` is [N, 3, image, image] with a dynamic batch. With NHWC, the
    InplaceABN nodes read a Transpose of each Conv output (Conv is NCHW in ONNX).
    """
    rng = np.random.default_rng(seed)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes, inits = [], []
    x, c_in = "X", 3

    def init(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(array.astype(dtype), name))
        return name

    for i, act in enumerate(acts):
        c_out = channels * (1 + i // 2)
        w = init(f"conv{i}.weight", rng.standard_normal((c_out, c_in, 3, 3)) / np.sqrt(9 * c_in))
        b = init(f"conv{i}.bias", rng.standard_normal(c_out) * 0.1)
        stride = 2 if i % 2 else 1
        nodes.append(
            helper.make_node(
                "Conv", [x, w, b], [f"conv{i}"], name=f"conv{i}", pads=[1, 1, 1, 1], strides=[stride, stride]
            )
        )
        y = f"conv{i}"
        if data_layout == "NHWC":
            nodes.append(helper.make_node("Transpose", [y], [f"conv{i}_nhwc"], name=f"to_nhwc{i}", perm=[0, 2, 3, 1]))
            y = f"conv{i}_nhwc"
        p = random_params(c_out, dtype, seed + i + 1)
        names = [init(f"abn{i}.{k}", v) for k, v in p.items()]
        attrs = InplaceABNAttrs(
            act=act,
            act_alpha=0.01 if act == "leaky_relu" else 1.0,
            data_layout=data_layout,
            training_mode=training_mode,
        )
        outs = [f"abn{i}"] + ([f"abn{i}.running_mean", f"abn{i}.running_var"] if training_mode else [])
        nodes.append(make_node([y, *names], outs, attrs, name=f"abn{i}"))
        x = f"abn{i}"
        if data_layout == "NHWC":
            nodes.append(helper.make_node("Transpose", [x], [f"abn{i}_nchw"], name=f"to_nchw{i}", perm=[0, 3, 1, 2]))
            x = f"abn{i}_nchw"
        c_in = c_out
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"))
    w = init("fc.weight", rng.standard_normal((10, c_in)) / np.sqrt(c_in))
    b = init("fc.bias", rng.standard_normal(10) * 0.1)
    nodes.append(helper.make_node("Gemm", ["flat", w, b], ["fc"], name="fc", transB=1))
    p = random_params(10, dtype, seed + 99)
    names = [init(f"abn_fc.{k}", v) for k, v in p.items()]
    fc_attrs = InplaceABNAttrs(act="leaky_relu", act_alpha=0.1, training_mode=training_mode)
    fc_outs = ["Y"] + (["abn_fc.running_mean", "abn_fc.running_var"] if training_mode else [])
    nodes.append(make_node(["fc", *names], fc_outs, fc_attrs, name="abn_fc"))
    graph = helper.make_graph(
        nodes,
        "conv_net",
        [helper.make_tensor_value_info("X", elem, ["N", 3, image, image])],
        [helper.make_tensor_value_info("Y", elem, ["N", 10])],
        inits,
    )
    return make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET), opset_import()])


def chain_model(layers: int = 200, channels: int = 64, image: int = 8, seed: int = 0) -> onnx.ModelProto:
    """A deep plain chain: ``layers`` x [Conv 3x3 (channels -> channels) -> InplaceABN(leaky_relu 0.01)].

    The fold-time benchmark's network (200 layers of 64 channels: 7.4 M weights).
    """
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = "X"
    attrs = InplaceABNAttrs(act="leaky_relu", act_alpha=0.01)
    for i in range(layers):
        w = (rng.standard_normal((channels, channels, 3, 3)) / np.sqrt(9 * channels)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"conv{i}.weight"))
        nodes.append(helper.make_node("Conv", [x, f"conv{i}.weight"], [f"conv{i}"], name=f"conv{i}", pads=[1] * 4))
        p = random_params(channels, np.float32, seed + i)
        inits += [numpy_helper.from_array(v, f"abn{i}.{k}") for k, v in p.items()]
        nodes.append(make_node([f"conv{i}", *(f"abn{i}.{k}" for k in p)], [f"abn{i}"], attrs, name=f"abn{i}"))
        x = f"abn{i}"
    nodes.append(helper.make_node("Identity", [x], ["Y"], name="out"))
    elem = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("X", elem, ["N", channels, image, image])],
        [helper.make_tensor_value_info("Y", elem, ["N", channels, image, image])],
        inits,
    )
    return make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET), opset_import()])


def paddle_example_model() -> str:
    """The path prefix of a small Paddle saved inference model with four ``inplace_abn`` ops, as Paddle
    <= 2.5 wrote them (``<prefix>.pdmodel`` + ``<prefix>.pdiparams``; conv, residual add, concat, pool,
    fc; input ``x`` [N, 3, 8, 8]). It is ``tests/paddle_fixtures/programs/cnn``, written by Paddle 2.6.2
    (``make_program_fixtures.py``)."""
    from pathlib import Path

    return str(Path(__file__).parent / "example_models" / "paddle_cnn" / "model")
