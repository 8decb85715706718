"""ReduceMean over every spatial axis as GlobalAveragePool (passes/global_average_pool.py), the rule
``quantize`` applies so that onnxruntime quantizes the pool: every rewritten model is checked against
onnx's ReferenceEvaluator on the unchanged one; the forms it must leave are left, with the reason."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from iabn_onnx.op.validation import type_table
from iabn_onnx.passes.global_average_pool import check, global_average_pools
from iabn_onnx.quantization import quantize_with_report
from tests.conftest import assert_close, rng

F = TensorProto.FLOAT


def mean_model(shape: list, axes: list[int], keepdims: int, opset: int = 18, constant_axes: bool = True):
    """X -> ReduceMean(axes, keepdims) -> Y; from opset 18 the axes are an input (an initializer, or a graph
    input when not ``constant_axes``), before it an attribute."""
    inputs = [helper.make_tensor_value_info("X", F, shape)]
    inits = []
    if opset >= 18:
        node = helper.make_node("ReduceMean", ["X", "axes"], ["Y"], keepdims=keepdims)
        if constant_axes:
            inits.append(numpy_helper.from_array(np.array(axes, np.int64), "axes"))
        else:
            inputs.append(helper.make_tensor_value_info("axes", TensorProto.INT64, [len(axes)]))
    else:
        node = helper.make_node("ReduceMean", ["X"], ["Y"], axes=axes, keepdims=keepdims)
    node.name = "pool"
    out = None if shape is None else [d if k < 2 else 1 for k, d in enumerate(shape) if k < 2 or keepdims]
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("Y", F, out)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize(
    "shape,axes,keepdims,opset",
    [
        (["N", 8, 5, 7], [2, 3], 1, 18),
        (["N", 8, 5, 7], [3, 2], 0, 18),
        (["N", 8, 5, 7], [-1, -2], 1, 18),
        (["N", 8, 5, 7], [2, 3], 0, 13),
        (["N", 4, 9], [2], 1, 18),
        (["N", 4, 3, 5, 6], [2, 3, 4], 0, 18),
    ],
)
def test_spatial_means_become_global_pools(shape, axes, keepdims, opset):
    model = mean_model(shape, axes, keepdims, opset)
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert global_average_pools(rewritten, type_table(rewritten)) == 1
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops == (["GlobalAveragePool"] if keepdims else ["GlobalAveragePool", "Flatten"])
    assert not rewritten.graph.initializer  # the axes went
    onnx.checker.check_model(rewritten, full_check=True)
    for batch in (1, 3):
        x = rng(batch).standard_normal([batch, *shape[1:]]).astype(np.float32)
        want = ReferenceEvaluator(model).run(None, {"X": x})[0]
        got = ort.InferenceSession(rewritten.SerializeToString(), providers=["CPUExecutionProvider"])
        got = got.run(None, {"X": x})[0]
        assert got.shape == want.shape
        assert_close(got, want, np.float32)


@pytest.mark.parametrize(
    "shape,axes,constant,says",
    [
        (["N", 8, 5, 7], [1, 2, 3], True, "axes [1, 2, 3] are not every spatial axis of a rank-4 input"),
        (["N", 8, 5, 7], [0, 2, 3], True, "not every spatial axis"),  # batch statistics: training-mode nodes
        (["N", 8, 5, 7], [3], True, "not every spatial axis"),
        (["N", 8], [1], True, "no spatial axis"),
        (None, [2, 3], True, "rank unknown"),
        (["N", 8, 5, 7], [2, 3], False, "axes not a constant"),
    ],
)
def test_other_means_stay(shape, axes, constant, says):
    model = mean_model(shape, axes, 1, constant_axes=constant)
    types = type_table(model)
    inits = {i.name: i for i in model.graph.initializer}
    reason = check(model.graph.node[0], types, inits)
    assert reason is not None and says in reason
    assert global_average_pools(model, types) == 0 and model.graph.node[0].op_type == "ReduceMean"


def squeeze_excitation_model() -> onnx.ModelProto:
    """Conv -> Relu -> T; T * Sigmoid(Conv(ReduceMean(T, [2, 3], keepdims=1))) -> Y: the squeeze-excitation
    block of TResNet as torch exports it."""
    g = rng(7)
    w1 = numpy_helper.from_array((g.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((g.standard_normal((8, 8, 1, 1)) * 0.3).astype(np.float32), "w2")
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    nodes = [
        helper.make_node("Conv", ["X", "w1"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["t"], name="relu"),
        helper.make_node("ReduceMean", ["t", "axes"], ["m"], name="squeeze", keepdims=1),
        helper.make_node("Conv", ["m", "w2"], ["e"], name="excite"),
        helper.make_node("Sigmoid", ["e"], ["s"], name="gate"),
        helper.make_node("Mul", ["t", "s"], ["Y"], name="scale"),
    ]
    graph = helper.make_graph(
        nodes,
        "se",
        [helper.make_tensor_value_info("X", F, ["N", 3, 12, 12])],
        [helper.make_tensor_value_info("Y", F, ["N", 8, 12, 12])],
        [w1, w2, axes],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_quantize_gives_the_pool_an_int8_kernel():
    """The squeeze's mean is quantized as a GlobalAveragePool (onnxruntime: QLinearGlobalAveragePool);
    without the rule it would run in float between DequantizeLinear and QuantizeLinear."""
    model = squeeze_excitation_model()
    samples = rng(8).standard_normal((8, 3, 12, 12)).astype(np.float32)
    int8, report = quantize_with_report(model, {"X": samples}, per_channel=True)
    assert report.global_pools == 1
    assert report.quantized.get("GlobalAveragePool") == 1 and "ReduceMean" not in report.kept_float
    assert "1 ReduceMean over the spatial axes quantized as GlobalAveragePool" in report.lines()
    assert [n.op_type for n in model.graph.node].count("ReduceMean") == 1  # the caller's model is unchanged
    want = ReferenceEvaluator(model).run(None, {"X": samples})[0]
    got = ort.InferenceSession(int8.SerializeToString(), providers=["CPUExecutionProvider"])
    got = got.run(None, {"X": samples})[0]
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()  # int8 rounding
