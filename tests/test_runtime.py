"""The onnxruntime kernel through iabn_onnx.InferenceSession, against the references."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import iabn_onnx
from iabn_onnx import InplaceABNAttrs, inplace_abn_reference
from iabn_onnx.examples import native_equivalent, single_node_model
from tests.conftest import assert_close, rng

SHAPES = {2: (3, 6), 3: (2, 6, 7), 4: (2, 6, 5, 4), 5: (2, 6, 3, 2, 4)}
DTYPES = [np.float32, np.float64, np.float16]


def _shape(rank: int, layout: str) -> tuple[int, ...]:
    shape = SHAPES[rank]
    if layout == "NHWC" and rank > 2:
        shape = (shape[0], *shape[2:], shape[1])
    return shape


def _run(model, params, x, constant):
    sess = iabn_onnx.InferenceSession(model)
    feed = {"X": x} if constant else {"X": x, **params}
    return sess.run(None, feed)


@pytest.mark.parametrize("constant", [True, False], ids=["const_params", "input_params"])
@pytest.mark.parametrize("training", [0, 1], ids=["inference", "training"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("act", ["identity", "leaky_relu", "elu"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("rank", [2, 3, 4, 5], ids=lambda r: f"rank{r}")
def test_matches_reference(rank, layout, act, dtype, training, constant):
    attrs = InplaceABNAttrs(
        act=act, act_alpha=0.2, epsilon=1e-4, momentum=0.7, training_mode=training, data_layout=layout
    )
    shape = _shape(rank, layout)
    model, params = single_node_model(shape, attrs, dtype, constant_params=constant, seed=rank)
    x = rng(rank).standard_normal(shape).astype(dtype)
    outputs = _run(model, params, x, constant)
    expected = inplace_abn_reference(x, *params.values(), attrs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        assert got.dtype == np.dtype(dtype)
        assert_close(got, want, dtype)


@pytest.mark.parametrize("act", ["identity", "leaky_relu", "elu"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_matches_onnxruntime_native_ops(act, layout):
    """Independent oracle: onnxruntime's own BatchNormalization + LeakyRelu/Elu (float32)."""
    attrs = InplaceABNAttrs(act=act, act_alpha=0.1, data_layout=layout)
    shape = (4, 16, 9, 8) if layout == "NCHW" else (4, 9, 8, 16)
    model, params = single_node_model(shape, attrs)
    native = ort.InferenceSession(
        native_equivalent(shape, attrs, params).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    x = rng(3).standard_normal(shape).astype(np.float32)
    (ours,) = iabn_onnx.InferenceSession(model).run(None, {"X": x})
    (theirs,) = native.run(None, {"X": x})
    assert_close(ours, theirs, np.float32)


def test_float64_exact_attributes_beyond_six_digits():
    """Float attributes reach Python ops rounded to 6 digits; our path keeps the float32 value exactly."""
    attrs = InplaceABNAttrs(
        act="elu", act_alpha=0.123456789, epsilon=1.23456789e-4, momentum=0.987654321, training_mode=1
    )
    model, params = single_node_model((4, 5, 3), attrs, np.float64)
    x = rng(5).standard_normal((4, 5, 3)) * 3
    stored = {a.name: a.f for a in model.graph.node[0].attribute if a.type == onnx.AttributeProto.FLOAT}
    assert stored["act_alpha"] == attrs.act_alpha  # the float32 the model holds
    outputs = iabn_onnx.InferenceSession(model).run(None, {"X": x})
    expected = inplace_abn_reference(x, *params.values(), attrs)
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_accepts_path_bytes_and_modelproto(tmp_path):
    model, params = single_node_model((2, 3, 4), InplaceABNAttrs(act="leaky_relu", act_alpha=0.1))
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    before = model.SerializeToString()
    x = rng(6).standard_normal((2, 3, 4)).astype(np.float32)
    want = inplace_abn_reference(x, *params.values(), InplaceABNAttrs(act="leaky_relu", act_alpha=0.1))
    for source in (str(path), path, model.SerializeToString(), model):
        (y,) = iabn_onnx.InferenceSession(source).run(None, {"X": x})
        assert_close(y, want, np.float32)
    assert model.SerializeToString() == before  # argument not mutated


def test_user_session_options_are_registered_and_kept():
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert iabn_onnx.session_options(so) is so
    attrs = InplaceABNAttrs(act="leaky_relu", act_alpha=0.1)
    model, params = single_node_model((2, 3, 4), attrs)
    x = rng(7).standard_normal((2, 3, 4)).astype(np.float32)
    (y,) = iabn_onnx.InferenceSession(model, sess_options=so).run(None, {"X": x})
    assert_close(y, inplace_abn_reference(x, *params.values(), attrs), np.float32)
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC


def test_zero_size_batch_inference_gives_empty_output():
    attrs = InplaceABNAttrs(act="elu", act_alpha=1.0)
    model, _ = single_node_model(("N", 3, 4), attrs)
    (y,) = iabn_onnx.InferenceSession(model).run(None, {"X": np.zeros((0, 3, 4), np.float32)})
    assert y.shape == (0, 3, 4)


def test_nan_and_inf_propagate_like_batchnormalization():
    attrs = InplaceABNAttrs(act="leaky_relu", act_alpha=0.1)
    model, params = single_node_model((1, 3, 2), attrs)
    native = ort.InferenceSession(
        native_equivalent((1, 3, 2), attrs, params).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    x = np.array([[[np.nan, 1.0], [np.inf, -np.inf], [0.0, 2.0]]], np.float32)
    (ours,) = iabn_onnx.InferenceSession(model).run(None, {"X": x})
    (theirs,) = native.run(None, {"X": x})
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    finite = np.isfinite(theirs)
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=1e-5)
    np.testing.assert_array_equal(ours[~finite & ~np.isnan(theirs)], theirs[~finite & ~np.isnan(theirs)])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("training_mode", [0, 1], ids=["inference", "training"])
def test_fold_frozen_folds_only_frozen_nodes_after_a_producer(layout, training_mode):
    """Default sessions fold frozen Conv/Gemm-fed nodes (as onnxruntime folds Conv+BN); the rest use the kernel."""
    from iabn_onnx.examples import conv_net_model
    from iabn_onnx.op.reference import reference_evaluator

    model = conv_net_model(
        acts=("leaky_relu", "elu"), channels=8, image=8, data_layout=layout, training_mode=training_mode
    )
    default = iabn_onnx.InferenceSession(model)
    kernel_only = iabn_onnx.InferenceSession(model, fold_frozen=False)
    assert [n.name for n in kernel_only.inplace_abn_nodes] == ["abn0", "abn1", "abn_fc"]
    # NHWC nodes read a Transpose, not the Conv: they become a per-channel Mul + Add (faster than the
    # kernel, bench_routes); training-mode nodes stay in the kernel
    expected_kernel = ["abn0", "abn1", "abn_fc"] if training_mode else []
    assert [n.name for n in default.inplace_abn_nodes] == expected_kernel
    if layout == "NHWC" and not training_mode:
        routes = {r.node: r.route for r in default.routes}
        assert [routes["abn0"], routes["abn1"]] == ["per-channel Mul + Add"] * 2
    x = rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)
    want = reference_evaluator(model).run(None, {"X": x})[0]
    assert_close(default.run(None, {"X": x})[0], want)
    assert_close(kernel_only.run(None, {"X": x})[0], want)


def test_spinning_is_off_only_when_kernel_nodes_remain():
    import onnxruntime as ort

    from iabn_onnx.examples import chain_model, single_node_model

    def spinning(model, options=None):
        options = options or ort.SessionOptions()
        iabn_onnx.InferenceSession(model, options)
        try:
            return options.get_session_config_entry("session.intra_op.allow_spinning")
        except Exception:
            return None

    single, _ = single_node_model((2, 3, 4, 4), InplaceABNAttrs(training_mode=1))
    assert spinning(single) == "0"  # the kernel runs: onnxruntime's spinning threads would starve it
    assert spinning(chain_model(layers=2, channels=4)) is None  # everything folded: onnxruntime's default
    mine = ort.SessionOptions()
    mine.add_session_config_entry("session.intra_op.allow_spinning", "1")
    assert spinning(single, mine) == "1"  # the user's choice stands
