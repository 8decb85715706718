"""Zero slope: leaky_relu / elu with act_alpha = 0 is ReLU, and every path serves it exactly.

mapillary's ``InPlaceABN(activation="leaky_relu", activation_param=0.0)`` is what ReLU-trained
networks use (ReLU itself is not invertible, so the module offers no "relu"). References: the torch
module, the float64 numpy reference, onnx's reference evaluator, and a hand-built onnxruntime graph
of standard ops (Conv → BatchNormalization with scale |w| + eps → Relu).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import iabn_onnx
from iabn_onnx.examples import single_node_model
from iabn_onnx.op.function import add_function_fallback
from iabn_onnx.op.reference import reference_evaluator
from iabn_onnx.op.schema import Activation, InplaceABNAttrs
from tests.conftest import assert_close, rng


def plain_session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("act", ["leaky_relu", "elu"])
def test_session_fold_and_function_match_the_reference(act, dtype):
    attrs = InplaceABNAttrs(act=Activation(act), act_alpha=0.0, epsilon=1e-3)
    assert attrs.is_relu and attrs.onnx_activation() == ("Relu", {})
    shape = (2, 3, 4, 5)
    model, _ = single_node_model(shape, attrs, dtype)
    x = rng(3).standard_normal(shape).astype(dtype)
    want = reference_evaluator(model).run(None, {"X": x})[0]
    assert (want >= 0).all() and (want == 0).any()  # ReLU: negatives become exactly 0
    assert_close(iabn_onnx.InferenceSession(model).run(None, {"X": x})[0], want, dtype)
    fallback = plain_session(add_function_fallback(model)).run(None, {"X": x})[0]
    assert np.isfinite(fallback).all()
    assert_close(fallback, want, dtype)
    folded = iabn_onnx.fold(model)
    assert not any(n.op_type == "InplaceABN" for n in folded.graph.node)
    assert "Relu" in [n.op_type for n in folded.graph.node]
    assert_close(plain_session(folded).run(None, {"X": x})[0], want, dtype)


def _hand_built(conv_w: np.ndarray, w, b, mean, var, eps) -> onnx.ModelProto:
    """Conv → BatchNormalization(scale = |w| + eps) → Relu, in standard ops only."""
    c_in = conv_w.shape[1]
    inits = [
        onnx.numpy_helper.from_array(conv_w, "W"),
        onnx.numpy_helper.from_array((np.abs(w) + eps).astype(np.float32), "s"),
        onnx.numpy_helper.from_array(b, "b"),
        onnx.numpy_helper.from_array(mean, "m"),
        onnx.numpy_helper.from_array(var, "v"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"], epsilon=eps),
        helper.make_node("Relu", ["n"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "hand",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, c_in, None, None])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)  # the floor reads 10


@pytest.mark.parametrize("act", ["leaky_relu", "elu"])
def test_torch_module_with_zero_slope_exports_and_folds_to_conv_relu(act):
    torch = pytest.importorskip("torch")
    from tests.test_torch_fallback import randomize
    from tests.torch_replicas import InPlaceABN

    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1, bias=False), InPlaceABN(6, activation=act, activation_param=0.0)
    )
    randomize(net).eval()
    x = torch.from_numpy(rng(5).standard_normal((2, 3, 12, 12)).astype(np.float32))
    with torch.no_grad():
        want = net(x).numpy()
    proto = iabn_onnx.export_torch(net, (x,))
    (node,) = [n for n in proto.graph.node if n.op_type == "InplaceABN"]
    assert helper.get_attribute_value(next(a for a in node.attribute if a.name == "act_alpha")) == 0.0
    feed = {proto.graph.input[0].name: x.numpy()}
    assert_close(iabn_onnx.InferenceSession(proto).run(None, feed)[0], want)
    folded = iabn_onnx.fold(proto)
    assert [n.op_type for n in folded.graph.node] == ["Conv", "Relu"]
    assert_close(plain_session(folded).run(None, feed)[0], want)
    bn = net[1]
    hand = _hand_built(
        net[0].weight.detach().numpy(),
        *(t.detach().numpy() for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var)),
        bn.eps,
    )
    assert_close(plain_session(folded).run(None, feed)[0], plain_session(hand).run(None, {"x": x.numpy()})[0])


def test_fallback_module_with_zero_slope():
    """The fallback's own ``inplace_abn`` package accepts activation_param=0 and exports it as ReLU."""
    torch = pytest.importorskip("torch")
    from iabn_onnx.torch_fallback import uninstall_torch_fallback

    iabn_onnx.install_torch_fallback()
    try:
        from inplace_abn import InPlaceABN

        from tests.test_torch_fallback import randomize

        net = randomize(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), InPlaceABN(4, activation_param=0.0))).eval()
        x = torch.from_numpy(rng(6).standard_normal((1, 3, 6, 6)).astype(np.float32))
        with torch.no_grad():
            want = net(x).numpy()
        assert (want >= 0).all()
        folded = iabn_onnx.fold(iabn_onnx.export_torch(net, (x,)))
        assert [n.op_type for n in folded.graph.node] == ["Conv", "Relu"]
        assert_close(plain_session(folded).run(None, {folded.graph.input[0].name: x.numpy()})[0], want)
    finally:
        uninstall_torch_fallback()


@pytest.mark.parametrize("alpha", [-0.01, float("nan"), float("inf")])
def test_negative_or_non_finite_alpha_is_refused(alpha):
    (fault,) = InplaceABNAttrs(act=Activation.LEAKY_RELU, act_alpha=alpha).faults()
    assert "must be finite and >= 0 for act='leaky_relu'" in fault
    assert InplaceABNAttrs(act=Activation.IDENTITY, act_alpha=alpha).faults() == []  # identity ignores it


@pytest.mark.parametrize("for_test", [False, True], ids=["training", "for_test"])
def test_fluid_layer_with_zero_slope(for_test):
    """Paddle's layer with act_alpha=0: the ONNX node runs in both modes and equals the numpy reference."""
    import iabn_onnx.fluid as fluid
    from iabn_onnx.op.reference import inplace_abn_reference

    main = fluid.Program()
    with fluid.program_guard(main):
        x = fluid.data(name="x", shape=[2, 3, 4, 4], dtype="float32")
        y = fluid.layers.inplace_abn(input=x, act="leaky_relu", act_alpha=0.0)
        g = rng(4)
        params = {
            n: (g.uniform(0.3, 2.0, v.shape) if n.endswith(".w_2") else g.standard_normal(v.shape))
            for n, v in fluid.parameters(main).items()
        }
        fluid.set_parameters(params, main)
        model = fluid.to_onnx([y], for_test=for_test)
    xv = rng(5).standard_normal((2, 3, 4, 4)).astype(np.float32)
    attrs = InplaceABNAttrs(act=Activation.LEAKY_RELU, act_alpha=0.0, training_mode=int(not for_test))
    want = inplace_abn_reference(xv, *(params[f"inplace_abn_0.{s}"] for s in ("w_0", "b_0", "w_1", "w_2")), attrs)
    want = want[0] if isinstance(want, tuple) else want
    assert_close(iabn_onnx.InferenceSession(model).run(None, {"x": xv})[0], want)


def test_quantize_a_zero_slope_network():
    """int8 of Conv → InPlaceABN(slope 0) → Conv: the ReLU is quantized with its Conv, never a LeakyRelu."""
    torch = pytest.importorskip("torch")
    from tests.test_torch_fallback import randomize
    from tests.torch_replicas import InPlaceABN

    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), InPlaceABN(8, activation_param=0.0), torch.nn.Conv2d(8, 4, 1)
    )
    randomize(net).eval()
    samples = rng(7).standard_normal((8, 3, 12, 12)).astype(np.float32)
    proto = iabn_onnx.export_torch(net, (torch.from_numpy(samples[:1]),))
    name = proto.graph.input[0].name
    int8 = iabn_onnx.quantize(proto, {name: samples[:1]}, per_channel=True)
    ops = [n.op_type for n in int8.graph.node]
    assert "QuantizeLinear" in ops and "LeakyRelu" not in ops and "InplaceABN" not in ops
    with torch.no_grad():
        want = net(torch.from_numpy(samples[:1])).numpy()
    got = plain_session(int8).run(None, {name: samples[:1]})[0]
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()  # int8: a few quantization steps
