"""The numpy reference against hand-computed values and ONNX's own reference evaluator."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from iabn_onnx import InplaceABNAttrs, inplace_abn_reference
from iabn_onnx.op.schema import make_model
from tests.conftest import assert_close, rng


def test_hand_computed_leaky_relu():
    x = np.array([[1.0, -2.0], [3.0, 0.0]])  # N=2, C=2
    scale, bias = np.array([2.0, 1.0]), np.array([0.0, -1.0])
    mean, var = np.array([1.0, 0.0]), np.array([4.0, 1.0])
    attrs = InplaceABNAttrs(epsilon=0.0, act="leaky_relu", act_alpha=0.5)
    # channel 0: (x-1)/2*2+0 = x-1 ; channel 1: x/1*1-1 = x-1 ; leaky slope 0.5
    expected = np.array([[0.0, -1.5], [2.0, -0.5]])
    np.testing.assert_array_equal(inplace_abn_reference(x, scale, bias, mean, var, attrs), expected)


def test_hand_computed_elu_and_training():
    x = np.array([[0.0], [2.0]])  # N=2, C=1: batch mean 1, biased var 1
    one = np.array([1.0])
    attrs = InplaceABNAttrs(epsilon=0.0, act="elu", act_alpha=2.0, momentum=0.75, training_mode=1)
    y, rm, rv = inplace_abn_reference(x, one, np.array([0.0]), np.array([0.0]), np.array([1.0]), attrs)
    np.testing.assert_allclose(y, [[2.0 * np.expm1(-1.0)], [1.0]], rtol=1e-15)
    np.testing.assert_allclose(rm, [0.25], rtol=1e-15)  # 0*0.75 + 1*0.25
    np.testing.assert_allclose(rv, [1.0], rtol=1e-15)  # 1*0.75 + 1*0.25


def _onnx_bn_act(x, params, attrs, training):
    nodes = [
        helper.make_node(
            "BatchNormalization",
            ["x", "s", "b", "m", "v"],
            ["z", "rm", "rv"] if training else ["z"],
            epsilon=attrs.epsilon,
            momentum=attrs.momentum,
            training_mode=int(training),
        )
    ]
    if attrs.act.value == "leaky_relu":
        nodes.append(helper.make_node("LeakyRelu", ["z"], ["y"], alpha=attrs.act_alpha))
    elif attrs.act.value == "elu":
        nodes.append(helper.make_node("Elu", ["z"], ["y"], alpha=attrs.act_alpha))
    else:
        nodes.append(helper.make_node("Identity", ["z"], ["y"]))
    outs = ["y", "rm", "rv"] if training else ["y"]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, 11, None) for n in "xsbmv"],
        [helper.make_tensor_value_info(n, 11, None) for n in outs],
    )
    model = make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    return ReferenceEvaluator(model).run(None, dict(zip("xsbmv", [x, *params])))


@pytest.mark.parametrize("act", ["identity", "leaky_relu", "elu"])
@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (2, 3, 4, 5), (2, 3, 2, 3, 2)], ids=lambda s: f"rank{len(s)}")
def test_matches_onnx_reference_evaluator(act, training, shape):
    r = rng(1)
    x = r.standard_normal(shape)
    c = shape[1]
    params = [r.uniform(0.5, 1.5, c), r.standard_normal(c), r.standard_normal(c), r.uniform(0.5, 2, c)]
    attrs = InplaceABNAttrs(act=act, act_alpha=0.3, epsilon=1e-3, momentum=0.8, training_mode=int(training))
    ours = inplace_abn_reference(x, *params, attrs)
    theirs = _onnx_bn_act(x, params, attrs, training)
    ours = ours if isinstance(ours, tuple) else (ours,)
    # ONNX's evaluator computes BN's momentum update as running*momentum + batch*(1-momentum).
    for a, b in zip(ours, theirs):
        assert_close(a, b, np.float64)


def test_nhwc_equals_transposed_nchw():
    r = rng(2)
    x = r.standard_normal((2, 5, 3, 4))
    params = [r.uniform(0.5, 1.5, 4), r.standard_normal(4), r.standard_normal(4), r.uniform(0.5, 2, 4)]
    nhwc = inplace_abn_reference(x, *params, InplaceABNAttrs(data_layout="NHWC", act="elu", act_alpha=1.0))
    nchw = inplace_abn_reference(
        x.transpose(0, 3, 1, 2), *params, InplaceABNAttrs(data_layout="NCHW", act="elu", act_alpha=1.0)
    )
    assert_close(nhwc, nchw.transpose(0, 2, 3, 1), np.float64)
