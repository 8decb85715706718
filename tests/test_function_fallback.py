"""The model-local InplaceABN function: plain onnxruntime (no plugin) runs models that carry it.

Reference: onnx's ReferenceEvaluator with the float64 numpy InplaceABN.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import iabn_onnx
from iabn_onnx.examples import single_node_model
from iabn_onnx.op.function import ML_DOMAIN, add_function_fallback, has_function_fallback
from iabn_onnx.op.reference import reference_evaluator
from iabn_onnx.op.schema import Activation, InplaceABNAttrs, Layout
from tests.conftest import assert_close, rng


def plain_session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _compare(model: onnx.ModelProto, shape, dtype) -> None:
    with_function = add_function_fallback(model)
    onnx.checker.check_model(with_function, full_check=True)
    x = rng(1).standard_normal(shape).astype(dtype)
    expected = reference_evaluator(model).run(None, {"X": x})
    actual = plain_session(with_function).run(None, {"X": x})
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert_close(a, e, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("training_mode", [0, 1], ids=["inference", "training"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("act", ["identity", "leaky_relu", "elu"])
def test_plain_onnxruntime_matches_reference(act, layout, training_mode, dtype):
    attrs = InplaceABNAttrs(
        act=Activation(act),
        act_alpha=0.3,
        data_layout=Layout(layout),
        training_mode=training_mode,
        momentum=0.7,
        epsilon=1e-3,
    )
    shape = (2, 3, 4, 5) if layout == "NCHW" else (2, 4, 5, 3)
    model, _ = single_node_model(shape, attrs, dtype)
    _compare(model, shape, dtype)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (2, 3, 2, 3, 4)], ids=["rank2", "rank3", "rank5"])
@pytest.mark.parametrize("training_mode", [0, 1], ids=["inference", "training"])
def test_plain_onnxruntime_ranks(shape, training_mode):
    attrs = InplaceABNAttrs(act=Activation.ELU, act_alpha=0.5, training_mode=training_mode)
    model, _ = single_node_model(shape, attrs, np.float32)
    _compare(model, shape, np.float32)


def test_our_session_runs_the_kernel_not_the_function():
    attrs = InplaceABNAttrs(act=Activation.LEAKY_RELU, act_alpha=0.1)
    model, _ = single_node_model((2, 3, 4, 4), attrs, np.float32)
    with_function = add_function_fallback(model)
    session = iabn_onnx.InferenceSession(with_function, kernel_only=True)
    assert [n.name for n in session.inplace_abn_nodes] == ["abn0"]  # lowered to our kernel
    routed = iabn_onnx.InferenceSession(with_function)  # the default route: standard ops, not the function
    assert [(r.node, r.route) for r in routed.routes] == [("abn0", "BatchNormalization")]
    x = rng(2).standard_normal((2, 3, 4, 4)).astype(np.float32)
    assert_close(session.run(None, {"X": x})[0], reference_evaluator(model).run(None, {"X": x})[0])


def test_add_is_idempotent_and_leaves_argument():
    model, _ = single_node_model((2, 3), InplaceABNAttrs(), np.float32)
    before = model.SerializeToString()
    once = add_function_fallback(model)
    twice = add_function_fallback(once)
    assert model.SerializeToString() == before
    assert once == twice and len(once.functions) == 1
    assert list(once.graph.node[0].output) == ["Y", "", ""]  # omitted optional outputs


def test_fold_drops_function_and_ml_import():
    model, _ = single_node_model((2, 3, 4, 4), InplaceABNAttrs(act=Activation.ELU), np.float32)
    folded = iabn_onnx.fold(add_function_fallback(model))
    assert not folded.functions
    assert {o.domain for o in folded.opset_import} <= {"", "ai.onnx"}
    x = rng(3).standard_normal((2, 3, 4, 4)).astype(np.float32)
    assert_close(plain_session(folded).run(None, {"X": x})[0], reference_evaluator(model).run(None, {"X": x})[0])


def test_without_function_plain_onnxruntime_refuses():
    model, _ = single_node_model((2, 3, 4, 4), InplaceABNAttrs(), np.float32)
    assert not has_function_fallback(model)
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph

    with pytest.raises((Fail, InvalidGraph), match="InplaceABN"):  # onnxruntime's "no schema/kernel" error
        plain_session(model)


def test_exporters_embed_function_by_default():
    import iabn_onnx.fluid as fluid

    main = fluid.Program()
    with fluid.program_guard(main):
        x = fluid.data(name="x", shape=[None, 4, 5], dtype="float32")
        y = fluid.layers.inplace_abn(fluid.layers.fc(x, size=6, num_flatten_dims=2), act="elu", data_layout="NHWC")
        with_function = fluid.to_onnx([y], for_test=True)
        without = fluid.to_onnx([y], for_test=True, function_fallback=False)
    assert has_function_fallback(with_function) and not has_function_fallback(without)
    assert any(o.domain == ML_DOMAIN for o in with_function.opset_import)
    xv = rng(4).standard_normal((3, 4, 5)).astype(np.float32)
    assert_close(
        plain_session(with_function).run(None, {"x": xv})[0], reference_evaluator(without).run(None, {"x": xv})[0]
    )


def test_torch_export_runs_on_plain_onnxruntime():
    import torch

    from tests.torch_replicas import InPlaceABN, randomize

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), InPlaceABN(6, activation="elu", activation_param=0.5))
    net = randomize(net, 5).eval()
    model = iabn_onnx.export_torch(net, (torch.randn(2, 3, 8, 8),))
    assert has_function_fallback(model)
    x = rng(6).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert_close(plain_session(model).run(None, {plain_session(model).get_inputs()[0].name: x})[0], expected)
