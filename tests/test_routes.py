"""Default-session routes for frozen nodes of every layout, dtype and activation (``passes/route_choice.py``):
the route each takes, and its output against the float64 numpy reference."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import iabn_onnx
from iabn_onnx import InplaceABNAttrs
from iabn_onnx.examples import single_node_model
from iabn_onnx.op.reference import inplace_abn_reference
from iabn_onnx.op.schema import ONNX_OPSET, make_model, make_node, opset_import
from tests.conftest import assert_close, rng

# what bench_routes measured fastest (route_choice.KERNEL_WINS), written out independently
EXPECTED = {
    ("NCHW", np.float32): ("BatchNormalization", "BatchNormalization", "BatchNormalization"),
    ("NCHW", np.float16): ("BatchNormalization", "kernel", "BatchNormalization"),
    ("NCHW", np.float64): ("BatchNormalization", "kernel", "kernel"),
    ("NHWC", np.float32): ("per-channel Mul + Add",) * 3,
    ("NHWC", np.float16): ("kernel", "kernel", "kernel"),
    ("NHWC", np.float64): ("per-channel Mul + Add", "kernel", "per-channel Mul + Add"),
}
ACTS = ("identity", "leaky_relu", "elu")
CASES = [(layout, dtype, act) for (layout, dtype), act in itertools.product(EXPECTED, ACTS)]


def _attrs(act: str, layout: str) -> InplaceABNAttrs:
    return InplaceABNAttrs(act=act, act_alpha=0.1 if act == "leaky_relu" else 0.7, data_layout=layout)


@pytest.mark.parametrize(
    ("layout", "dtype", "act"), CASES, ids=[f"{lay}-{np.dtype(d).name}-{a}" for lay, d, a in CASES]
)
def test_route_and_value(layout, dtype, act):
    shape = (2, 6, 5, 4) if layout == "NCHW" else (2, 5, 4, 6)
    attrs = _attrs(act, layout)
    model, params = single_node_model(shape, attrs, dtype)
    session = iabn_onnx.InferenceSession(model)
    route = EXPECTED[(layout, dtype)][ACTS.index(act)]
    assert [r.route for r in session.routes] == [route], session.routes
    assert [n.name for n in session.inplace_abn_nodes] == (["abn0"] if route == "kernel" else [])
    x = rng(4).standard_normal(shape).astype(dtype) * 2
    want = inplace_abn_reference(x, *params.values(), attrs)
    assert_close(session.run(None, {"X": x})[0], want, dtype)


def test_nhwc_with_statistics_fed_at_run_time_uses_the_kernel():
    attrs = _attrs("leaky_relu", "NHWC")
    model, params = single_node_model((2, 3, 3, 4), attrs, np.float32, constant_params=False)
    session = iabn_onnx.InferenceSession(model)
    assert [r.route for r in session.routes] == ["kernel"]
    assert "non-constant scale" in session.routes[0].detail
    x = rng(5).standard_normal((2, 3, 3, 4)).astype(np.float32)
    want = inplace_abn_reference(x, *params.values(), attrs)
    assert_close(session.run(None, {"X": x, **params})[0], want, np.float32)


def test_nhwc_with_an_infinite_scale_uses_the_kernel():
    """Mul + Add would give NaN everywhere in that channel; the operator gives ±inf where x != mean."""
    attrs = _attrs("identity", "NHWC")
    model, params = single_node_model((1, 2, 2, 3), attrs, np.float32)
    scale = params["scale"].copy()
    scale[1] = np.inf
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(scale, "scale"))
    session = iabn_onnx.InferenceSession(model)
    assert [r.route for r in session.routes] == ["kernel"]
    x = rng(6).standard_normal((1, 2, 2, 3)).astype(np.float32)
    got = session.run(None, {"X": x})[0]
    want = inplace_abn_reference(x, scale, *list(params.values())[1:], attrs)
    np.testing.assert_array_equal(got[..., 1], want[..., 1])


def test_nhwc_feed_of_the_wrong_shape_names_the_node():
    """Mul + Add would broadcast a wrong channel count silently; the session checks X as the kernel does."""
    model, _ = single_node_model((2, 3, 3, 4), _attrs("elu", "NHWC"), np.float32)
    for i, dim in enumerate(model.graph.input[0].type.tensor_type.shape.dim):  # sizes left to the feed
        dim.dim_param = f"d{i}"
    session = iabn_onnx.InferenceSession(model)
    assert session.routes[0].route == "per-channel Mul + Add"
    with pytest.raises(iabn_onnx.InplaceABNError) as info:
        session.run(None, {"X": np.zeros((2, 3, 3, 1), np.float32)})
    assert info.value.node == "abn0"


def test_float16_leaky_relu_after_a_conv_stays_in_the_kernel():
    """Folding its affine map into the Conv would leave onnxruntime's float16 LeakyRelu, slower than the kernel."""
    g = rng(7)
    attrs = _attrs("leaky_relu", "NCHW")
    w = (g.standard_normal((4, 3, 3, 3)) / 5).astype(np.float16)
    params = {k: v.astype(np.float16) for k, v in single_node_model((1, 4, 2, 2), attrs, np.float16)[1].items()}
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["X", "W"], ["C"], name="conv", pads=[1, 1, 1, 1]),
            make_node(["C", *params], ["Y"], attrs, name="abn0"),
        ],
        "conv_abn",
        [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT16, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT16, [1, 4, 6, 6])],
        [numpy_helper.from_array(w, "W"), *(numpy_helper.from_array(v, k) for k, v in params.items())],
    )
    model = make_model(graph, [helper.make_opsetid("", ONNX_OPSET), opset_import()])
    session = iabn_onnx.InferenceSession(model)
    assert [r.route for r in session.routes] == ["kernel"]
    assert "slower than the kernel" in session.routes[0].detail
    x = g.standard_normal((1, 3, 6, 6)).astype(np.float16)
    conv = np.zeros((1, 4, 6, 6))
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    for i, j in itertools.product(range(6), range(6)):
        conv[0, :, i, j] = np.tensordot(w.astype(np.float64), padded[0, :, i : i + 3, j : j + 3], axes=3)
    want = inplace_abn_reference(conv, *(v.astype(np.float64) for v in params.values()), attrs)
    assert_close(session.run(None, {"X": x})[0], want, np.float16)
