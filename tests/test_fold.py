"""fold(): count, structure, numerical equivalence and checker validity; negative cases unchanged."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import iabn_onnx
from iabn_onnx import InplaceABNAttrs
from iabn_onnx.examples import conv_net_model
from iabn_onnx.op.function import add_function_fallback
from iabn_onnx.passes.fold import fold, fold_with_report
from tests.conftest import assert_close, rng
from tests.fold_cases import producer_model

DTYPES = [np.float32, np.float64, np.float16]
PRODUCERS = ["Conv", "ConvNoBias", "ConvTranspose", "Gemm", "GemmC", "GemmBC", "GemmABC", "MatMul", "MatMulAdd"]
# onnxruntime's CPU provider has no double Conv/ConvTranspose kernel: those run through the reference evaluator.
NO_ORT_F64 = {"Conv", "ConvNoBias", "ConvTranspose"}


def _feed(model, x_shape, dtype, extra=None):
    feed = {"X": rng(9).standard_normal(x_shape).astype(dtype)}
    return {**feed, **(extra or {})}


def _run_plain(model, feed, dtype, kind):
    if dtype == np.float64 and kind in NO_ORT_F64:
        from onnx.reference import ReferenceEvaluator

        return ReferenceEvaluator(model).run(None, feed)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


def _run_ours(model, feed, dtype, kind):
    if dtype == np.float64 and kind in NO_ORT_F64:
        # producer in the reference evaluator, InplaceABN by our reference
        return _reference_eval_with_iabn(model, feed)
    return iabn_onnx.InferenceSession(model, fold_frozen=False).run(None, feed)  # the kernel, not fold


def _reference_eval_with_iabn(model, feed):
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    from iabn_onnx import InplaceABNAttrs, inplace_abn_reference

    class InplaceABN(OpRun):
        op_domain = iabn_onnx.DOMAIN

        def _run(self, x, scale, b, mean, var, **kw):
            attrs = InplaceABNAttrs.from_node(self.onnx_node)
            return (inplace_abn_reference(x, scale, b, mean, var, attrs),)

    return ReferenceEvaluator(model, new_ops=[InplaceABN]).run(None, feed)


def _structure(model):
    return [n.op_type for n in model.graph.node]


EXPECTED_TAIL = {"identity": [], "leaky_relu": ["LeakyRelu"], "elu": ["Elu"]}
# onnxruntime's CPU provider has no double LeakyRelu or Elu: fold expands them
F64_TAIL = {
    "identity": [],
    "leaky_relu": ["Min", "Mul", "Relu", "Add"],
    "elu": ["Min", "Exp", "Sub", "Mul", "Relu", "Add"],
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("act", ["identity", "leaky_relu", "elu"])
@pytest.mark.parametrize("kind", PRODUCERS)
def test_fold_into_producer(kind, act, dtype):
    # ONNX's reference evaluator (our float64 oracle for ConvTranspose) has no grouped ConvTranspose
    group = 1 if (kind == "ConvTranspose" and dtype == np.float64) else 2
    model, x_shape = producer_model(kind, act, dtype, group=group)
    folded, report = fold_with_report(model)
    # 1. count
    assert report.count == 1 and not report.left
    # 2. structure: producer (+ Add for MatMul) then the bare activation; no custom op or import left
    producer = {"ConvNoBias": "Conv"}.get(kind, kind.rstrip("ABC") if kind.startswith("Gemm") else kind)
    head = ["MatMul", "Add"] if kind.startswith("MatMul") else [producer]
    tail = F64_TAIL[act] if dtype == np.float64 else EXPECTED_TAIL[act]
    assert _structure(folded) == head + tail
    assert all(o.domain != iabn_onnx.DOMAIN for o in folded.opset_import)
    # 3. numerical equivalence
    feed = _feed(model, x_shape, dtype)
    want = _run_ours(model, feed, dtype, kind)[0]
    got = _run_plain(folded, feed, dtype, kind)[0]
    assert_close(got, want, dtype)
    # 4. checker validity
    onnx.checker.check_model(folded, full_check=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("act", ["identity", "leaky_relu", "elu"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_fold_conv_net_end_to_end(layout, act, dtype):
    model = conv_net_model(acts=(act, act), channels=8, image=8, dtype=dtype, data_layout=layout)
    folded, report = fold_with_report(model)
    assert report.count == 3 and not report.left
    assert not any(n.domain == iabn_onnx.DOMAIN for n in folded.graph.node)
    # Conv -> BN folds into Conv for NCHW; NHWC falls back to Mul + Add after the Transpose
    ops = _structure(folded)
    if layout == "NCHW" and dtype != np.float64:
        assert "Mul" not in ops  # every node folded into its Conv/Gemm: no per-channel Mul
    elif layout == "NCHW":  # float64: one Mul per node, in the leaky_relu/elu expansion, none for identity
        acts = [InplaceABNAttrs.from_node(n).act.value for n in model.graph.node if n.domain == iabn_onnx.DOMAIN]
        assert ops.count("Mul") == sum(a != "identity" for a in acts)
    else:
        assert ops.count("Mul") >= 2
    if dtype == np.float64:
        return  # no double Conv in onnxruntime; producer math is covered by test_fold_into_producer
    feed = {"X": rng(1).standard_normal((2, 3, 8, 8)).astype(dtype)}
    want = iabn_onnx.InferenceSession(model, kernel_only=True).run(None, feed)[0]
    got = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert_close(got, want, dtype)
    onnx.checker.check_model(folded, full_check=True)


NEGATIVE = {
    "shared_weight": dict(shared_weight=True),
    "two_consumers": dict(second_consumer=True),
    "producer_is_graph_output": dict(producer_is_output=True),
}


@pytest.mark.parametrize("case", sorted(NEGATIVE))
def test_producer_not_folded_falls_back_to_batchnormalization(case):
    model, x_shape = producer_model("Conv", "leaky_relu", np.float32, **NEGATIVE[case])
    before = model.SerializeToString()
    folded, report = fold_with_report(model)
    assert model.SerializeToString() == before  # argument untouched
    reasons = {"shared_weight": "Conv weight is not a private initializer", "two_consumers": "has 2 consumers",
               "producer_is_graph_output": "is a graph output"}  # fmt: skip
    assert not report.folded  # only nodes absorbed into a producer count as folded
    assert [(n, form) for n, form, _ in report.rewritten] == [("abn", "BatchNormalization")]
    assert reasons[case] in report.rewritten[0][2]
    assert f"rewrote abn as BatchNormalization (no producer fold: {report.rewritten[0][2]})" in report.lines()
    ops = [n.op_type for n in folded.graph.node]
    assert ops[ops.index("BatchNormalization") + 1] == "LeakyRelu" and "InplaceABN" not in ops
    conv = next(n for n in folded.graph.node if n.op_type == "Conv")
    assert list(conv.input[1:]) == ["W", "b"]  # producer unchanged
    feed = _feed(model, x_shape, np.float32)
    want = iabn_onnx.InferenceSession(model, kernel_only=True).run(None, feed)
    got = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    for w, g in zip(want, got):
        assert_close(g, w, np.float32)
    onnx.checker.check_model(folded, full_check=True)


@pytest.mark.parametrize("case", ["training_mode", "non_constant_statistics"])
@pytest.mark.parametrize("kind", ["Conv", "MatMul"])  # NCHW after a Conv; NHWC (channel last) after a MatMul
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_what_no_producer_takes_becomes_standard_ops(case, kind, dtype):
    """Training mode (batch statistics, the running statistics as extra outputs) and statistics fed at run
    time: standard ops specialized to the node (standard_form.py), so the folded file has no custom node,
    no function and no ai.onnx.ml op; checked against the float64 reference, every output."""
    from iabn_onnx.op.reference import reference_evaluator

    if kind == "Conv" and dtype == np.float64:
        pytest.skip("onnxruntime's CPU provider has no float64 Conv")
    kwargs = {"training_mode": dict(training=1), "non_constant_statistics": dict(params_as_inputs=True)}[case]
    model, x_shape = producer_model(kind, "elu" if kind == "Conv" else "leaky_relu", dtype, **kwargs)
    folded, report = fold_with_report(add_function_fallback(model))
    assert report.count == 1 and not report.left, report.lines()
    assert report.rewritten[0][1] == (
        "standard ops with batch statistics" if case == "training_mode" else "standard ops"
    )
    assert {n.domain for n in folded.graph.node} == {""} and not folded.functions
    assert [o.domain for o in folded.opset_import] == [""]
    onnx.checker.check_model(folded, full_check=True)
    g = rng(4)
    feed = {"X": g.standard_normal(x_shape).astype(dtype)}
    for inp in model.graph.input[1:]:  # fed statistics
        value = g.standard_normal(6) if not inp.name.endswith("var") else g.uniform(0.5, 2.0, 6)
        feed[inp.name] = value.astype(dtype)
    want = reference_evaluator(model).run(None, feed)
    got = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    assert len(got) == len(want) == (3 if case == "training_mode" else 1)
    for a, b in zip(got, want):
        assert_close(a, b, dtype)


def test_into_producers_only_leaves_what_no_producer_takes():
    model, _ = producer_model("Conv", "elu", np.float32, training=1)
    folded, report = fold_with_report(model, into_producers_only=True)
    assert report.count == 0 and len(report.left) == 1 and "training_mode" in report.left[0][1]
    assert folded.SerializeToString() == model.SerializeToString()


def test_fold_is_deterministic_and_names_are_unique():
    model = conv_net_model()
    a, b = fold(model).SerializeToString(), fold(model).SerializeToString()
    assert a == b
    names = [i.name for i in fold(model).graph.initializer]
    assert len(names) == len(set(names))


def test_fold_200_layer_chain():
    """The fold-time benchmark's network (benchmarks/bench_fold.py times it): all 200 fold into their Conv."""
    from iabn_onnx.examples import chain_model

    model = chain_model(layers=200, channels=8, image=4)
    folded, report = fold_with_report(model)
    assert report.count == 200 and not report.left
    assert _structure(folded) == ["Conv", "LeakyRelu"] * 200 + ["Identity"]
    feed = {"X": rng(5).standard_normal((2, 8, 4, 4)).astype(np.float32)}
    want = iabn_onnx.InferenceSession(model, kernel_only=True).run(None, feed)[0]
    got = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    # 200 layers compound float32 rounding: compare relative to the output's scale
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(want))))
    onnx.checker.check_model(folded, full_check=True)
