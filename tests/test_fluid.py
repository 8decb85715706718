"""iabn_onnx.fluid: the seed's Paddle-fluid layer API, building ONNX.

References: a numpy recomputation of the layers (fc, inplace_abn via the float64
reference), and onnx's ReferenceEvaluator (with the numpy InplaceABN) for conv nets.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import iabn_onnx
import iabn_onnx.fluid as fluid
from iabn_onnx.fluid import FluidError
from iabn_onnx.op.reference import inplace_abn_reference, reference_evaluator
from iabn_onnx.op.schema import Activation, InplaceABNAttrs, Layout
from tests.conftest import assert_close, rng, run_isolated

SEED_EXAMPLE = """
import iabn_onnx.fluid as fluid
x = fluid.data(name='x', shape=[3, 7, 3, 7], dtype='float32')
hidden1 = fluid.layers.fc(input=x, size=200, param_attr='fc1.w')
hidden2 = fluid.layers.inplace_abn(input=hidden1)
hidden3 = fluid.layers.inplace_abn(input=hidden2, act='leaky_relu', act_alpha=0.2)
model = fluid.to_onnx(fetch_list=[hidden3], for_test=False)   # -> onnx.ModelProto
"""


@pytest.fixture
def program():
    main = fluid.Program()
    with fluid.program_guard(main):
        yield main


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The kernel's outputs (fold_frozen=False); the default session (frozen nodes folded) must agree."""
    kernel = iabn_onnx.InferenceSession(model, fold_frozen=False).run(None, feeds)
    for a, b in zip(iabn_onnx.InferenceSession(model).run(None, feeds), kernel):
        assert_close(a, b)
    return kernel


def _abn_nodes(model):
    return [n for n in model.graph.node if n.op_type == iabn_onnx.OP_TYPE]


def _randomize_parameters(program: fluid.Program, seed: int) -> dict[str, np.ndarray]:
    g = rng(seed)
    values = {}
    for name, value in fluid.parameters(program).items():
        if name.endswith(".w_2") or "var" in name:  # variances stay positive
            values[name] = g.uniform(0.3, 2.0, value.shape)
        else:
            values[name] = g.standard_normal(value.shape) * 0.5
    fluid.set_parameters(values, program)
    return fluid.parameters(program)


@pytest.mark.parametrize("for_test", [False, True], ids=["training", "for_test"])
def test_seed_example_runs_as_written(for_test, tmp_path):
    """The seed page's example, verbatim but for the import, in a fresh interpreter; numpy recomputation."""
    code = (
        SEED_EXAMPLE.replace("for_test=False", f"for_test={for_test}")
        + """
import json, numpy as np, iabn_onnx
params = fluid.parameters()
g = np.random.default_rng(0)
params = {k: (g.uniform(0.5, 2, v.shape) if k.endswith('.w_2') else g.standard_normal(v.shape)).astype(v.dtype)
          for k, v in params.items()}
fluid.set_parameters(params)
model = fluid.to_onnx(fetch_list=[hidden3], for_test=FOR_TEST)
xv = g.standard_normal((3, 7, 3, 7)).astype(np.float32)
y = iabn_onnx.InferenceSession(model).run(None, {'x': xv})[0]
np.savez(OUT_PATH, x=xv, y=y, **params)
print(json.dumps({'nodes': [n.op_type for n in model.graph.node],
                  'modes': [[a.i for a in n.attribute if a.name == 'training_mode'][0]
                            for n in model.graph.node if n.op_type == 'InplaceABN'],
                  'params': sorted(params)}))
""".replace("FOR_TEST", str(for_test)).replace("OUT_PATH", repr(str(tmp_path / "seed.npz")))
    )
    proc = run_isolated(code)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["nodes"] == ["Reshape", "MatMul", "Add", "InplaceABN", "InplaceABN"]
    assert info["modes"] == [int(not for_test)] * 2
    assert "fc1.w" in info["params"] and "inplace_abn_0.w_1" in info["params"]
    data = np.load(tmp_path / "seed.npz")
    hidden1 = data["x"].reshape(3, 147).astype(np.float64) @ data["fc1.w"] + data["fc_0.b_0"]
    first = InplaceABNAttrs(training_mode=int(not for_test))
    second = first.replace(act=Activation.LEAKY_RELU, act_alpha=0.2)
    p = [data[f"inplace_abn_{i}.{s}"] for i in (0, 1) for s in ("w_0", "b_0", "w_1", "w_2")]
    hidden2 = inplace_abn_reference(hidden1, *p[:4], first)
    hidden2 = hidden2[0] if isinstance(hidden2, tuple) else hidden2
    hidden3 = inplace_abn_reference(hidden2, *p[4:], second)
    hidden3 = hidden3[0] if isinstance(hidden3, tuple) else hidden3
    assert_close(data["y"], hidden3.astype(np.float32))


def test_default_parameters_follow_paddle(program):
    x = fluid.data(name="x", shape=[-1, 5], dtype="float32")
    fluid.layers.inplace_abn(input=x)
    params = fluid.parameters(program)
    np.testing.assert_array_equal(params["inplace_abn_0.w_0"], np.ones(5, np.float32))  # scale
    np.testing.assert_array_equal(params["inplace_abn_0.b_0"], np.zeros(5, np.float32))  # bias
    np.testing.assert_array_equal(params["inplace_abn_0.w_1"], np.zeros(5, np.float32))  # moving mean
    np.testing.assert_array_equal(params["inplace_abn_0.w_2"], np.ones(5, np.float32))  # moving variance


def test_named_parameters_and_numpy_initializer(program):
    x = fluid.data(name="x", shape=[None, 4, 6], dtype="float64")
    gamma = np.linspace(0.5, 2.0, 4)
    y = fluid.layers.inplace_abn(
        input=x,
        act="elu",
        act_alpha=0.5,
        is_test=True,
        epsilon=1e-4,
        param_attr=fluid.ParamAttr(name="gamma", initializer=fluid.initializer.NumpyArrayInitializer(gamma)),
        bias_attr="beta",
        moving_mean_name="mu",
        moving_variance_name="sigma2",
    )
    fluid.set_parameters({"mu": np.arange(4.0) / 4, "sigma2": np.full(4, 1.5)})
    model = fluid.to_onnx([y])
    (node,) = _abn_nodes(model)
    assert list(node.input[1:]) == ["gamma", "beta", "mu", "sigma2"]
    attrs = InplaceABNAttrs.from_node(node)
    assert (attrs.act, attrs.training_mode) == (Activation.ELU, 0)
    xv = rng(1).standard_normal((3, 4, 6))
    expected = inplace_abn_reference(xv, gamma, np.zeros(4), np.arange(4.0) / 4, np.full(4, 1.5), attrs)
    assert_close(_run(model, {"x": xv})[0], expected)


@pytest.mark.parametrize("use", ["is_test", "use_global_stats"])
def test_global_stats_flags_give_inference_nodes(program, use):
    x = fluid.data(name="x", shape=[2, 3], dtype="float32")
    y = fluid.layers.inplace_abn(input=x, **{use: True})
    (node,) = _abn_nodes(fluid.to_onnx([y], for_test=False))
    assert InplaceABNAttrs.from_node(node).training_mode == 0


@pytest.mark.parametrize(
    ("shape", "layout"),
    [
        ((4, 3), "NCHW"),
        ((2, 3, 5), "NCHW"),
        ((2, 5, 3), "NHWC"),
        ((2, 3, 4, 4), "NCHW"),
        ((2, 4, 4, 3), "NHWC"),
        ((2, 3, 2, 3, 3), "NCHW"),
        ((2, 2, 3, 3, 3), "NHWC"),
    ],
    ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else v,
)
@pytest.mark.parametrize("for_test", [False, True], ids=["training", "for_test"])
def test_ranks_and_layouts(program, shape, layout, for_test):
    x = fluid.data(name="x", shape=list(shape), dtype="float32")
    y = fluid.layers.inplace_abn(input=x, act="leaky_relu", act_alpha=0.1, data_layout=layout, momentum=0.8)
    params = _randomize_parameters(program, 2)
    model = fluid.to_onnx([y], for_test=for_test)
    onnx.checker.check_model(model, full_check=True)
    xv = rng(3).standard_normal(shape).astype(np.float32)
    attrs = InplaceABNAttrs(
        act=Activation.LEAKY_RELU,
        act_alpha=0.1,
        momentum=0.8,
        data_layout=Layout(layout),
        training_mode=int(not for_test),
    )
    expected = inplace_abn_reference(xv, *(params[f"inplace_abn_0.{s}"] for s in ("w_0", "b_0", "w_1", "w_2")), attrs)
    expected = expected[0] if isinstance(expected, tuple) else expected
    assert_close(_run(model, {"x": xv})[0], expected)


def _small_convnet(layout: str):
    """conv -> abn(leaky) -> maxpool -> conv -> abn(elu) -> residual add -> global avg pool -> fc."""
    shape = [None, 3, 16, 16] if layout == "NCHW" else [None, 16, 16, 3]
    x = fluid.data(name="image", shape=shape, dtype="float32")
    c1 = fluid.layers.conv2d(input=x, num_filters=8, filter_size=3, padding=1, bias_attr=False, data_format=layout)
    a1 = fluid.layers.inplace_abn(input=c1, act="leaky_relu", act_alpha=0.01, data_layout=layout)
    p1 = fluid.layers.pool2d(input=a1, pool_size=2, pool_type="max", pool_stride=2, data_format=layout)
    c2 = fluid.layers.conv2d(input=p1, num_filters=8, filter_size=[3, 3], padding=[1, 1], data_format=layout)
    a2 = fluid.layers.inplace_abn(input=c2, act="elu", data_layout=layout)
    s = fluid.layers.elementwise_add(a2, p1, act="relu")
    g = fluid.layers.pool2d(input=s, pool_type="avg", global_pooling=True, data_format=layout)
    return fluid.layers.fc(input=g, size=10, act="softmax")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("for_test", [False, True], ids=["training", "for_test"])
def test_small_convnet_against_reference_evaluator(program, layout, for_test):
    out = _small_convnet(layout)
    _randomize_parameters(program, 4)
    model = fluid.to_onnx([out], for_test=for_test)
    onnx.checker.check_model(model, full_check=True)
    assert [InplaceABNAttrs.from_node(n).training_mode for n in _abn_nodes(model)] == [int(not for_test)] * 2
    shape = (4, 3, 16, 16) if layout == "NCHW" else (4, 16, 16, 3)
    xv = rng(5).standard_normal(shape).astype(np.float32)
    expected = reference_evaluator(model).run(None, {"image": xv})[0]
    assert_close(_run(model, {"image": xv})[0], expected)


def test_conv_pool_options_against_reference_evaluator(program):
    x = fluid.data(name="x", shape=[2, 4, 11, 11], dtype="float32")
    c = fluid.layers.conv2d(
        input=x, num_filters=6, filter_size=[3, 2], stride=2, padding=[1, 0, 2, 1], dilation=1, groups=2
    )
    a = fluid.layers.inplace_abn(input=c, act="leaky_relu", act_alpha=0.3, is_test=True)
    p = fluid.layers.pool2d(
        input=a, pool_size=3, pool_type="avg", pool_stride=2, pool_padding=1, ceil_mode=True, exclusive=True
    )
    bias = fluid.data(name="bias", shape=[6], dtype="float32")
    out = fluid.layers.elementwise_add(p, bias, axis=1)
    _randomize_parameters(program, 6)
    model = fluid.to_onnx([out])
    feeds = {
        "x": rng(7).standard_normal((2, 4, 11, 11)).astype(np.float32),
        "bias": rng(8).standard_normal(6).astype(np.float32),
    }
    expected = reference_evaluator(model).run(None, feeds)[0]
    actual = _run(model, feeds)[0]
    assert actual.shape == tuple(d for d in out.shape)
    assert_close(actual, expected)


def test_fc_num_flatten_dims_and_shared_parameters(program):
    x = fluid.data(name="x", shape=[2, 3, 4, 5], dtype="float64")
    a = fluid.layers.fc(input=x, size=6, num_flatten_dims=2, param_attr="shared.w", bias_attr=False)
    b = fluid.layers.fc(input=x, size=6, num_flatten_dims=2, param_attr="shared.w", act="tanh")
    assert a.shape == b.shape == (2, 3, 6)
    with pytest.raises(FluidError, match=r"exists with shape \(20, 6\)"):
        fluid.layers.fc(input=x, size=7, num_flatten_dims=2, param_attr="shared.w")
    params = _randomize_parameters(program, 9)
    model = fluid.to_onnx([a, b])
    assert sum(i.name == "shared.w" for i in model.graph.initializer) == 1
    xv = rng(10).standard_normal((2, 3, 4, 5))
    expected_a = (xv.reshape(6, 20) @ params["shared.w"]).reshape(2, 3, 6)
    expected_b = np.tanh(expected_a + params["fc_1.b_0"])
    actual_a, actual_b = _run(model, {"x": xv})
    assert_close(actual_a, expected_a)
    assert_close(actual_b, expected_b)


def test_set_parameters_validates(program):
    x = fluid.data(name="x", shape=[2, 3], dtype="float32")
    fluid.layers.inplace_abn(input=x)
    with pytest.raises(FluidError, match="no parameter named 'nope'"):
        fluid.set_parameters({"nope": np.ones(3)})
    with pytest.raises(FluidError, match=r"has shape \(3,\), got \(4,\)"):
        fluid.set_parameters({"inplace_abn_0.w_0": np.ones(4)})
    fluid.set_parameters({"inplace_abn_0.w_0": np.arange(3)})  # ints are cast to the layer dtype
    assert fluid.parameters()["inplace_abn_0.w_0"].dtype == np.float32


@pytest.mark.parametrize(
    ("kwargs", "fault"),
    [
        ({"act": "relu"}, "act 'relu' is not supported"),
        ({"act": "sigmoid"}, "act 'sigmoid' is not supported"),
        ({"epsilon": 0.01}, r"outside Paddle's range \[0.0, 0.001\]"),
        ({"epsilon": -1e-5}, "outside Paddle's range"),
        ({"data_layout": "NWHC"}, "data_layout must be 'NCHW' or 'NHWC'"),
        ({"act": "leaky_relu", "act_alpha": -0.2}, "act_alpha"),
        ({"momentum": 1.5}, "momentum"),
    ],
    ids=["relu", "sigmoid", "eps-too-big", "eps-negative", "bad-layout", "alpha-negative", "momentum"],
)
def test_inplace_abn_rejects_what_paddle_rejects(program, kwargs, fault):
    x = fluid.data(name="x", shape=[2, 3, 4], dtype="float32")
    with pytest.raises(FluidError, match=fault):
        fluid.layers.inplace_abn(input=x, name="abn_bad", **kwargs)


@pytest.mark.parametrize("shape", [[5], [1, 2, 3, 4, 5, 6]], ids=["rank1", "rank6"])
def test_inplace_abn_rank_limits(program, shape):
    x = fluid.data(name="x", shape=shape, dtype="float32")
    with pytest.raises(FluidError, match="rank 2-5"):
        fluid.layers.inplace_abn(input=x)


def test_to_onnx_prunes_and_rejects_foreign_variables(program):
    x = fluid.data(name="x", shape=[2, 3], dtype="float32")
    unused = fluid.data(name="unused", shape=[2, 3], dtype="float32")
    fluid.layers.inplace_abn(input=unused)
    y = fluid.layers.inplace_abn(input=x, is_test=True)
    model = fluid.to_onnx([y])
    assert [i.name for i in model.graph.input] == ["x"]
    assert len(model.graph.node) == 1 and len(model.graph.initializer) == 4
    other = fluid.Program()
    with fluid.program_guard(other):
        z = fluid.data(name="z", shape=[2, 3], dtype="float32")
    with pytest.raises(FluidError, match="not a variable of this program"):
        fluid.to_onnx([z])
    with pytest.raises(FluidError, match="fetch_list is empty"):
        fluid.to_onnx([])


def test_folds_to_plain_onnxruntime(program):
    """A fluid model, frozen (for_test) and folded, runs on plain onnxruntime with the same numbers."""
    import onnxruntime as ort

    out = _small_convnet("NCHW")
    _randomize_parameters(program, 11)
    model = fluid.to_onnx([out], for_test=True)
    folded = iabn_onnx.fold(model)
    assert not _abn_nodes(folded)
    xv = rng(12).standard_normal((2, 3, 16, 16)).astype(np.float32)
    plain = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"])
    assert_close(plain.run(None, {"image": xv})[0], reference_evaluator(model).run(None, {"image": xv})[0])


def test_layers_data_prepends_the_batch_dimension(program):
    x = fluid.layers.data(name="x", shape=[3, 8, 8])
    assert x.shape == (-1, 3, 8, 8)
    y = fluid.layers.data(name="y", shape=[-1, 5], append_batch_size=True)
    assert y.shape == (-1, 5)
    out = fluid.layers.inplace_abn(fluid.layers.conv2d(x, num_filters=4, filter_size=3), act="elu", is_test=True)
    model = fluid.to_onnx([out])
    xv = rng(20).standard_normal((5, 3, 8, 8)).astype(np.float32)
    assert_close(_run(model, {"x": xv})[0], reference_evaluator(model).run(None, {"x": xv})[0])
