"""Constant subgraphs evaluated into initializers (passes/constant_subgraphs.py), so the fold and
the session's routes see Conv biases torch computes and parameters paddle2onnx writes as Constant
nodes. Each op is checked against onnx's ReferenceEvaluator; whole models against the kernel
session on the unchanged model."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import iabn_onnx
from iabn_onnx.examples import conv_net_model
from iabn_onnx.op.schema import Activation
from iabn_onnx.op.validation import type_table
from iabn_onnx.passes.constant_subgraphs import MAX_ELEMENTS, fold_constant_subgraphs
from iabn_onnx.passes.fold import fold_with_report
from tests.conftest import assert_close, rng

F = TensorProto.FLOAT
I64 = TensorProto.INT64


def const(name: str, array) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(array), name + "_t"))


def one_op_model(
    node: onnx.NodeProto, inits: dict[str, np.ndarray], consumer: bool, x_shape=(2, 3, 4)
) -> onnx.ModelProto:
    """X (a runtime input with a static shape) plus constant inputs -> node -> Y, then, with
    ``consumer``, Abs(Y) -> Z (graph outputs are never evaluated)."""
    out = "Y"
    nodes = [node]
    if consumer:
        nodes.append(helper.make_node("Abs", ["Y"], ["Z"]))
        out = "Z"
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("X", F, list(x_shape))],
        [helper.make_tensor_value_info(out, TensorProto.UNDEFINED, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


A = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
CASES = {
    "Shape of a runtime tensor": (helper.make_node("Shape", ["X"], ["Y"], start=1), {}),
    "Shape of an initializer": (helper.make_node("Shape", ["A"], ["Y"], end=-1), {"A": A}),
    "Size": (helper.make_node("Size", ["X"], ["Y"]), {}),
    "CastLike to a runtime dtype": (helper.make_node("CastLike", ["I", "X"], ["Y"]), {"I": np.array([3], np.int64)}),
    "Cast": (helper.make_node("Cast", ["A"], ["Y"], to=TensorProto.INT32), {"A": A}),
    "Expand": (helper.make_node("Expand", ["B", "S"], ["Y"]), {"B": np.ones((3, 1), np.float32),
                                                              "S": np.array([2, 1, 5], np.int64)}),
    "Reshape with 0 and -1": (helper.make_node("Reshape", ["A", "S"], ["Y"]), {"A": A, "S": np.array([0, -1])}),
    "Unsqueeze": (helper.make_node("Unsqueeze", ["A", "S"], ["Y"]), {"A": A, "S": np.array([0, -1])}),
    "Squeeze": (helper.make_node("Squeeze", ["B", "S"], ["Y"]), {"B": np.ones((3, 1), np.float32),
                                                                "S": np.array([-1])}),
    "Concat": (helper.make_node("Concat", ["A", "A"], ["Y"], axis=-1), {"A": A}),
    "Slice with steps": (helper.make_node("Slice", ["A", "S", "E", "X1", "T"], ["Y"]),
                         {"A": A, "S": np.array([-1, 0]), "E": np.array([-100, 99]), "X1": np.array([2, 0]),
                          "T": np.array([-2, 1])}),
    "Gather, negative index": (helper.make_node("Gather", ["A", "S"], ["Y"], axis=1),
                               {"A": A, "S": np.array([[-1, 0]])}),
    "ConstantOfShape": (helper.make_node("ConstantOfShape", ["S"], ["Y"],
                                         value=numpy_helper.from_array(np.array([7], np.int64))),
                        {"S": np.array([2, 3])}),
    "Identity": (helper.make_node("Identity", ["A"], ["Y"]), {"A": A}),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_op_matches_onnx_reference_evaluator(case):
    node, inits = CASES[case]
    node.name = "n"
    x = rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    (want,) = ReferenceEvaluator(one_op_model(node, inits, consumer=False)).run(None, {"X": x})
    evaluated = one_op_model(node, inits, consumer=True)
    assert fold_constant_subgraphs(evaluated, type_table(evaluated)) == 1
    assert [n.op_type for n in evaluated.graph.node] == ["Abs"]
    got = numpy_helper.to_array(next(i for i in evaluated.graph.initializer if i.name == "Y"))
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


LEAKY = iabn_onnx.InplaceABNAttrs(epsilon=1e-3, act=Activation.LEAKY_RELU, act_alpha=0.1)


def torch_style_conv_net(params_as_constants: bool = False) -> onnx.ModelProto:
    """Conv whose bias is torch's plain-export subgraph, then InplaceABN; optionally every
    parameter a Constant node, as paddle2onnx writes them."""
    g = rng(4)
    c = 6
    w = (g.standard_normal((c, 3, 3, 3)) / 5).astype(np.float32)
    params = {"w": w, "scale": g.standard_normal(c), "bias": g.standard_normal(c), "mean": g.standard_normal(c),
              "var": g.random(c) + 0.5}  # fmt: skip
    params = {k: v.astype(np.float32) for k, v in params.items()}
    nodes = [
        helper.make_node("Shape", ["w"], ["w_shape"]),
        const("zero", np.array(0, np.int64)),
        const("one", np.array([1], np.int64)),
        helper.make_node("Slice", ["w_shape", "zero1", "one"], ["c"]),
        helper.make_node("Expand", ["c", "one"], ["c1"]),
        const("fill", np.array(0.0, np.float32)),
        helper.make_node("CastLike", ["fill", "X"], ["fill_x"]),
        helper.make_node("Expand", ["fill_x", "c1"], ["conv_b"]),
        helper.make_node("Conv", ["X", "w", "conv_b"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
        iabn_onnx.make_node(["conv", "scale", "bias", "mean", "var"], ["Y"], LEAKY, name="abn"),
    ]  # fmt: skip
    inits = [numpy_helper.from_array(np.array([0], np.int64), "zero1")]
    if params_as_constants:
        nodes = [const(k, v) for k, v in params.items()] + nodes
    else:
        inits += [numpy_helper.from_array(v, k) for k, v in params.items()]
    graph = helper.make_graph(
        nodes, "torch_style", [helper.make_tensor_value_info("X", F, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("Y", F, ["N", c, 8, 8])], inits,
    )  # fmt: skip
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(iabn_onnx.DOMAIN, 1)], ir_version=10
    )
    return model


@pytest.mark.parametrize("params_as_constants", [False, True], ids=["initializers", "constant-nodes"])
def test_fold_sees_through_the_conv_bias_subgraph(params_as_constants):
    model = torch_style_conv_net(params_as_constants)
    before = model.SerializeToString()
    folded, report = fold_with_report(model)
    assert model.SerializeToString() == before
    assert report.folded == [("abn", "into Conv 'conv'")] and not report.rewritten and not report.left
    ops = Counter(n.op_type for n in folded.graph.node)
    assert ops == {"Conv": 1, "LeakyRelu": 1}  # nothing constant left on the Conv's inputs
    x = rng(5).standard_normal((2, 3, 8, 8)).astype(np.float32)
    want = iabn_onnx.InferenceSession(model, kernel_only=True).run(None, {"X": x})[0]
    got = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    assert_close(got, want)


def test_constant_parameters_fold_exactly_as_initializers():
    a = fold_with_report(torch_style_conv_net(False))[0]
    b = fold_with_report(torch_style_conv_net(True))[0]
    x = rng(6).standard_normal((1, 3, 8, 8)).astype(np.float32)
    run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]) for m in (a, b)]
    np.testing.assert_array_equal(run[0].run(None, {"X": x})[0], run[1].run(None, {"X": x})[0])


def test_session_routes_constant_parameters_like_initializers():
    for params_as_constants in (False, True):
        sess = iabn_onnx.InferenceSession(torch_style_conv_net(params_as_constants))
        assert [r.route for r in sess.routes] == ["BatchNormalization"], sess.routes
        assert "folds it into Conv" in sess.routes[0].detail


def test_size_limit_graph_outputs_and_runtime_values_are_left():
    big = helper.make_node("ConstantOfShape", ["S"], ["big"])
    use = helper.make_node("Add", ["X", "big"], ["Y"])
    shape_of_dynamic = helper.make_node("Shape", ["X"], ["Z"])
    graph = helper.make_graph(
        [big, use, shape_of_dynamic], "g", [helper.make_tensor_value_info("X", F, ["N", MAX_ELEMENTS + 1])],
        [helper.make_tensor_value_info("Y", F, None), helper.make_tensor_value_info("Z", I64, None)],
        [numpy_helper.from_array(np.array([1, MAX_ELEMENTS + 1], np.int64), "S")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    assert fold_constant_subgraphs(model, type_table(model)) == 0
    assert [n.op_type for n in model.graph.node] == ["ConstantOfShape", "Add", "Shape"]


def test_conv_net_session_unchanged_by_the_pass():
    """A model with nothing constant to evaluate takes the same routes as before."""
    model = conv_net_model(channels=8, image=8)
    table = type_table(model)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    assert fold_constant_subgraphs(copy, table) == 0
    assert copy.SerializeToString() == model.SerializeToString()
