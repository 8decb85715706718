"""convert(): BatchNormalization [+ act] -> InplaceABN, exact, with a report of skipped nodes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import iabn_onnx
from iabn_onnx.examples import random_params
from iabn_onnx.op.schema import make_model
from iabn_onnx.passes.convert import convert_with_report
from tests.conftest import assert_close, rng


def bn_model(
    act: str | None, alpha: float = 0.1, params_as_inputs=False, extra_consumer=False, epsilon=1e-5, dtype=np.float32
):
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    p = random_params(6, dtype, 3)
    names = [f"bn.{k}" for k in p]
    nodes = [
        helper.make_node("Conv", ["X", "w"], ["c"], name="conv"),
        helper.make_node("BatchNormalization", ["c", *names], ["z"], name="bn", epsilon=epsilon),
    ]
    outputs = ["Y"]
    if act:
        nodes.append(helper.make_node(act, ["z"], ["Y"], name="act", alpha=alpha))
    else:
        nodes.append(helper.make_node("Identity", ["z"], ["Y"], name="id"))
    if extra_consumer:
        nodes.append(helper.make_node("Neg", ["z"], ["Z2"], name="neg"))
        outputs.append("Z2")
    inits = [numpy_helper.from_array(rng(1).standard_normal((6, 3, 1, 1)).astype(dtype), "w")]
    inputs = [helper.make_tensor_value_info("X", elem, ["N", 3, 4, 4])]
    if params_as_inputs:
        inputs += [helper.make_tensor_value_info(n, elem, [6]) for n in names]
    else:
        inits += [numpy_helper.from_array(v, n) for n, v in zip(names, p.values())]
    graph = helper.make_graph(
        nodes, "bn", inputs, [helper.make_tensor_value_info(o, elem, ["N", 6, 4, 4]) for o in outputs], inits
    )
    feed_params = dict(zip(names, p.values())) if params_as_inputs else {}
    return make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), feed_params


@pytest.mark.parametrize("params_as_inputs", [False, True], ids=["const", "inputs"])
@pytest.mark.parametrize("act", [None, "LeakyRelu", "Elu"])
def test_convert_fuses_and_matches_plain_onnxruntime(act, params_as_inputs):
    model, extra = bn_model(act, params_as_inputs=params_as_inputs)
    converted, report = convert_with_report(model)
    assert len(report.converted) == 1 and not report.skipped
    ops = [n.op_type for n in converted.graph.node]
    assert ops == ["Conv", "InplaceABN", "Identity"] if act is None else ops == ["Conv", "InplaceABN"]
    onnx.checker.check_model(converted, full_check=True)
    feed = {"X": rng(2).standard_normal((2, 3, 4, 4)).astype(np.float32), **extra}
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    got = iabn_onnx.InferenceSession(converted).run(None, feed)
    for g, w in zip(got, want):
        assert_close(g, w, np.float32)


@pytest.mark.parametrize(
    "case, kwargs, why",
    [
        ("extra_consumer", dict(act="LeakyRelu", extra_consumer=True), None),
        ("negative_alpha", dict(act="LeakyRelu", alpha=-0.1), "is negative; kept separate"),
        ("huge_epsilon", dict(act="Elu", epsilon=0.5), "epsilon"),
    ],
)
def test_convert_skips_or_keeps_activation_separate(case, kwargs, why):
    model, extra = bn_model(**kwargs)
    converted, report = convert_with_report(model)
    text = "\n".join(report.lines())
    if case == "huge_epsilon":
        assert report.skipped and why in report.skipped[0][1]
        assert converted.SerializeToString() == model.SerializeToString() or not report.converted
    else:
        assert len(report.converted) == 1
        assert "BatchNormalization -> InplaceABN(identity)" in text
        if why:
            assert why in text
        # the activation stays a separate node
        assert any(n.op_type in ("LeakyRelu", "Neg") for n in converted.graph.node)
    feed = {"X": rng(2).standard_normal((2, 3, 4, 4)).astype(np.float32), **extra}
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    got = iabn_onnx.InferenceSession(converted).run(None, feed)
    for g, w in zip(got, want):
        assert_close(g, w, np.float32)


def test_convert_then_fold_roundtrip_is_standard_and_equivalent():
    model, _ = bn_model("LeakyRelu", alpha=0.2)
    folded = iabn_onnx.fold(iabn_onnx.convert(model))
    assert [n.op_type for n in folded.graph.node] == ["Conv", "LeakyRelu"]
    feed = {"X": rng(3).standard_normal((2, 3, 4, 4)).astype(np.float32)}
    a = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    b = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert_close(b, a, np.float32)


def _training_bn_model(act: str | None, outputs: int):
    model, _ = bn_model(act)
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    bn.attribute.append(helper.make_attribute("training_mode", 1))
    bn.attribute.append(helper.make_attribute("momentum", 0.8))
    if outputs == 3:
        bn.output.extend(["running_mean", "running_var"])
        model.graph.output.extend(
            [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [6]) for n in ("running_mean", "running_var")]
        )
    return model


@pytest.mark.parametrize("outputs", [1, 3], ids=["Y-only", "with-running-stats"])
@pytest.mark.parametrize("act", [None, "LeakyRelu", "Elu"])
def test_convert_training_mode_matches_reference_evaluator(act, outputs):
    """Training-mode BatchNormalization (which inference onnxruntime rejects) -> training-mode InplaceABN."""
    from onnx.reference import ReferenceEvaluator

    model = _training_bn_model(act, outputs)
    converted, report = convert_with_report(model)
    assert len(report.converted) == 1
    (node,) = [n for n in converted.graph.node if n.op_type == "InplaceABN"]
    attrs = iabn_onnx.InplaceABNAttrs.from_node(node)
    assert attrs.training_mode == 1 and attrs.momentum == pytest.approx(0.8)
    onnx.checker.check_model(converted, full_check=True)
    feed = {"X": rng(4).standard_normal((3, 3, 4, 4)).astype(np.float32)}
    want = ReferenceEvaluator(model).run(None, feed)
    got = iabn_onnx.InferenceSession(converted).run(None, feed)
    assert len(got) == len(want) == outputs
    for g, w in zip(got, want):
        assert_close(g, w, np.float32)
    # the embedded function gives the same on plain onnxruntime
    plain = ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    for g, w in zip(plain, want):
        assert_close(g, w, np.float32)


def test_convert_notes_function_fallback_and_opt_out():
    model, _ = bn_model("Elu")
    converted, report = convert_with_report(model)
    assert converted.functions and any("function" in line for line in report.lines())
    bare, _ = convert_with_report(model, function_fallback=False)
    assert not bare.functions
    old = onnx.ModelProto()
    old.CopyFrom(model)
    old.opset_import[0].version = 12
    _, old_report = convert_with_report(old)
    assert any("opset 12 < 13" in line for line in old_report.lines())
