"""Graphs Producer -> InplaceABN for the fold tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from iabn_onnx import InplaceABNAttrs
from iabn_onnx.examples import random_params
from iabn_onnx.op.schema import ONNX_OPSET, make_model, make_node, opset_import


def producer_model(
    kind: str,
    act: str,
    dtype,
    layout: str = "NCHW",
    seed: int = 0,
    shared_weight: bool = False,
    second_consumer: bool = False,
    producer_is_output: bool = False,
    training: int = 0,
    params_as_inputs: bool = False,
    group: int = 2,
) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    rng = np.random.default_rng(seed)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    inits, nodes = [], []

    def init(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr).astype(dtype), name))
        return name

    c = 6
    if kind == "Conv":
        x_shape = (2, 4, 5, 5)
        nodes.append(
            helper.make_node(
                "Conv",
                ["X", init("W", rng.standard_normal((c, 2, 3, 3))), init("b", rng.standard_normal(c))],
                ["P"],
                name="prod",
                group=2,
                pads=[1, 1, 1, 1],
            )
        )
    elif kind == "ConvNoBias":
        x_shape = (2, 4, 5, 5)
        nodes.append(helper.make_node("Conv", ["X", init("W", rng.standard_normal((c, 4, 1, 1)))], ["P"], name="prod"))
    elif kind == "ConvTranspose":
        x_shape = (2, 4, 3, 3)
        nodes.append(
            helper.make_node(
                "ConvTranspose",
                ["X", init("W", rng.standard_normal((4, c // group, 2, 2))), init("b", rng.standard_normal(c))],
                ["P"],
                name="prod",
                group=group,
                strides=[2, 2],
            )
        )
    elif kind.startswith("Gemm"):
        x_shape = (3, 5)
        trans_a, trans_b = int("A" in kind[4:]), int("B" in kind[4:])
        a_shape = (5, 3) if trans_a else (3, 5)
        x_shape = a_shape
        w = rng.standard_normal((c, 5) if trans_b else (5, c))
        ins = ["X", init("W", w)]
        if "C" in kind[4:]:
            ins.append(init("b", rng.standard_normal((1, c))))
        nodes.append(
            helper.make_node("Gemm", ins, ["P"], name="prod", transA=trans_a, transB=trans_b, alpha=0.7, beta=1.3)
        )
    elif kind in ("MatMul", "MatMulAdd"):
        x_shape = (2, 3, 5)
        out = "P" if kind == "MatMul" else "M"
        nodes.append(helper.make_node("MatMul", ["X", init("W", rng.standard_normal((5, c)))], [out], name="prod"))
        if kind == "MatMulAdd":
            nodes.append(helper.make_node("Add", ["M", init("b", rng.standard_normal(c))], ["P"], name="prod_add"))
        layout = "NHWC"
    else:
        raise ValueError(kind)
    p = random_params(c, dtype, seed + 1)
    names = []
    inputs = [helper.make_tensor_value_info("X", elem, list(x_shape))]
    for k, v in p.items():
        if params_as_inputs:
            inputs.append(helper.make_tensor_value_info(f"abn.{k}", elem, [c]))
            names.append(f"abn.{k}")
        else:
            names.append(init(f"abn.{k}", v))
    attrs = InplaceABNAttrs(act=act, act_alpha=0.2, data_layout=layout, training_mode=training, epsilon=1e-3)
    outs = ["Y"] + (["rm", "rv"] if training else [])
    nodes.append(make_node(["P", *names], outs, attrs, name="abn"))
    if shared_weight:
        nodes.append(helper.make_node("Identity", ["W"], ["W_copy"], name="share"))
    if second_consumer:
        nodes.append(helper.make_node("Neg", ["P"], ["P_neg"], name="other"))
    rank = len(x_shape)

    def out(name, r):
        return helper.make_tensor_value_info(name, elem, [f"{name}_{i}" for i in range(r)])

    graph_outputs = [out("Y", rank)] + [out(o, 1) for o in outs[1:]]
    if shared_weight:
        graph_outputs.append(out("W_copy", len(inits[0].dims)))
    if second_consumer:
        graph_outputs.append(out("P_neg", rank))
    if producer_is_output:
        graph_outputs.append(out("P", rank))
    graph = helper.make_graph(nodes, "fold_case", inputs, graph_outputs, inits)
    model = make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET), opset_import()])
    return model, x_shape
