"""The rules ``quantize`` applies so that onnxruntime runs in int8 what it would run in float between
DequantizeLinear and QuantizeLinear: a ReduceMean over every spatial axis as GlobalAveragePool
(passes/global_average_pool.py), an inference BatchNormalization as a depthwise 1x1 Conv
(passes/batchnorm_as_conv.py). Every rewritten model is checked against the unchanged one (onnx's
ReferenceEvaluator, or onnxruntime's native BatchNormalization); the forms a rule must leave are left,
with the reason; the int8 models are checked against the fp32 ones."""

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
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


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
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


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


def batchnorm_model(shape: list, dtype=np.float32, opset: int = 15, **attrs) -> onnx.ModelProto:
    """X -> BatchNormalization(constant scale, B, mean, var) -> Y."""
    g = rng(11)
    channels = shape[1]
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    params = {
        "scale": g.standard_normal(channels),
        "B": g.standard_normal(channels),
        "mean": g.standard_normal(channels),
        "var": g.uniform(0.1, 2.0, channels),
    }
    inits = [numpy_helper.from_array(v.astype(dtype), k) for k, v in params.items()]
    node = helper.make_node("BatchNormalization", ["X", *params], ["Y"], name="bn", **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", elem, shape)],
        [helper.make_tensor_value_info("Y", elem, shape)], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


@pytest.mark.parametrize(
    "shape,dtype,opset,attrs",
    [
        (["N", 6, 5, 7], np.float32, 15, {}),
        (["N", 6, 5, 7], np.float32, 9, {"epsilon": 1e-3}),
        (["N", 4, 9], np.float32, 15, {"epsilon": 0.1}),
        (["N", 3, 4, 5, 2], np.float32, 15, {}),
        (["N", 6, 5, 7], np.float32, 15, {"training_mode": 0}),
    ],
)
def test_inference_batchnorms_become_depthwise_convs(shape, dtype, opset, attrs):
    from iabn_onnx.passes.batchnorm_as_conv import batchnorms_as_convs

    model = batchnorm_model(shape, dtype, opset, **attrs)
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert batchnorms_as_convs(rewritten, type_table(rewritten)) == 1
    (conv,) = rewritten.graph.node
    assert conv.op_type == "Conv" and helper.get_attribute_value(conv.attribute[0]) == shape[1]  # group = C
    assert {i.name for i in rewritten.graph.initializer} == set(conv.input[1:])  # the statistics went
    onnx.checker.check_model(rewritten, full_check=True)
    native = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = ort.InferenceSession(rewritten.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = rng(batch).standard_normal([batch, *shape[1:]]).astype(dtype)
        # onnxruntime's own BatchNormalization: onnx's ReferenceEvaluator reads BatchNormalization-9's
        # epsilon wrongly (0.13 off with epsilon 1e-3)
        assert_close(got.run(None, {"X": x})[0], native.run(None, {"X": x})[0], dtype)


@pytest.mark.parametrize(
    "case,says",
    [
        ("training", "training form"),
        ("fed_mean", "not a constant"),
        ("rank2", "no spatial axis"),
        ("spatial0", "spatial=0"),
        ("float64", "not four float32 vectors"),
    ],
)
def test_other_batchnorms_stay(case, says):
    from iabn_onnx.passes.batchnorm_as_conv import batchnorms_as_convs, check

    if case == "training":
        model = batchnorm_model(["N", 6, 5, 7], training_mode=1)
        model.graph.node[0].output.extend(["running_mean", "running_var"])
    elif case == "fed_mean":
        model = batchnorm_model(["N", 6, 5, 7])
        mean = next(i for i in model.graph.initializer if i.name == "mean")
        model.graph.initializer.remove(mean)
        model.graph.input.append(helper.make_tensor_value_info("mean", F, [6]))
    elif case == "rank2":
        model = batchnorm_model(["N", 6])
    elif case == "float64":
        model = batchnorm_model(["N", 6, 5, 7], np.float64)
    else:
        model = batchnorm_model(["N", 6, 5, 7], opset=7, spatial=0)
    types = type_table(model)
    inits = {i.name: i for i in model.graph.initializer}
    reason = check(model.graph.node[0], types, inits)
    assert reason is not None and says in reason
    assert batchnorms_as_convs(model, types) == 0 and model.graph.node[0].op_type == "BatchNormalization"


def test_quantize_gives_a_batchnorm_after_concat_an_int8_kernel():
    """DenseNet's pattern: an InplaceABN node after a Concat has no producer to fold into, so fold writes a
    BatchNormalization; quantize hands it to the quantizer as a depthwise Conv, which runs in int8."""
    from iabn_onnx import DOMAIN, OP_TYPE

    g = rng(12)
    c = 8
    w = numpy_helper.from_array((g.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), "w")
    w2 = numpy_helper.from_array((g.standard_normal((4, c, 1, 1)) * 0.3).astype(np.float32), "w2")
    stats = [
        numpy_helper.from_array(v.astype(np.float32), k)
        for k, v in {
            "scale": g.uniform(0.5, 1.5, c), "B": g.standard_normal(c), "mean": g.standard_normal(c) * 0.1,
            "var": g.uniform(0.5, 2.0, c),
        }.items()
    ]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["X", "w"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["X", "a", "X"], ["cat"], name="cat", axis=1),
        helper.make_node("Slice", ["cat", "starts", "ends", "axes"], ["cat8"], name="first8"),
        helper.make_node(
            OP_TYPE, ["cat8", "scale", "B", "mean", "var"], ["y"], name="iabn", domain=DOMAIN,
            act="leaky_relu", act_alpha=0.01,
        ),
        helper.make_node("Conv", ["y", "w2"], ["Y"], name="conv_b"),
    ]  # fmt: skip
    slices = [
        numpy_helper.from_array(np.array(v, np.int64), k) for k, v in {"starts": [0], "ends": [8], "axes": [1]}.items()
    ]
    graph = helper.make_graph(
        nodes, "densenet_like", [helper.make_tensor_value_info("X", F, ["N", 3, 10, 10])],
        [helper.make_tensor_value_info("Y", F, ["N", 4, 10, 10])], [w, w2, *stats, *slices],
    )  # fmt: skip
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, 1)], ir_version=10
    )
    samples = g.standard_normal((8, 3, 10, 10)).astype(np.float32)
    int8, report = quantize_with_report(model, {"X": samples}, per_channel=True)
    assert report.batchnorm_convs == 1 and "BatchNormalization" not in report.kept_float, report.lines()
    assert report.quantized.get("Conv") == 3
    want = iabn_onnx_session(model).run(None, {"X": samples})[0]
    got = ort.InferenceSession(int8.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": samples})[
        0
    ]
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()  # int8 rounding


def iabn_onnx_session(model: onnx.ModelProto):
    import iabn_onnx

    return iabn_onnx.InferenceSession(model.SerializeToString())
