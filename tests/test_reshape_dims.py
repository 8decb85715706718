"""Reshape targets built from dimensions (passes/reshape_dims.py) and Conv biases of zeros
(passes/zero_bias.py): every rewritten model is checked against onnx's ReferenceEvaluator on the
unchanged one, at more than one batch size; a torch net's plain export, converted and folded, is
checked against torch's optimized export, graph for graph after onnxruntime's optimizations."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import iabn_onnx
from iabn_onnx.graph import drop_unused_initializers
from iabn_onnx.op.validation import type_table
from iabn_onnx.passes.fold import fold_with_report
from iabn_onnx.passes.reshape_dims import constant_reshape_targets
from iabn_onnx.passes.zero_bias import drop_zero_biases
from tests.conftest import assert_close, rng

F = TensorProto.FLOAT
I64 = TensorProto.INT64


def _ints(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def flatten_model(chain: str, allowzero: int = 1, extra_output: bool = False) -> onnx.ModelProto:
    """X[N,3,4,4] -> ReduceMean -> T[N,3,1,1] -> Reshape(T, target) -> Y, the target built from
    Shape(X) the way ``chain`` names (torch's plain export writes "squeeze")."""
    nodes = [helper.make_node("ReduceMean", ["X", "axes"], ["T"], keepdims=1)]
    inits = [_ints("axes", [2, 3]), _ints("rest", [3]), _ints("minus1", [-1])]
    if chain == "squeeze":  # Shape(X, 0, 1) -> Squeeze -> Reshape([-1]) -> Concat(., [3])
        nodes += [
            helper.make_node("Shape", ["X"], ["n1"], start=0, end=1),
            helper.make_node("Squeeze", ["n1"], ["n"]),
            helper.make_node("Reshape", ["n", "minus1"], ["n_vec"]),
        ]
    elif chain == "gather":  # Shape(X) -> Gather(0) -> Unsqueeze -> Concat(., [3])
        nodes += [
            helper.make_node("Shape", ["X"], ["s"]),
            helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
            helper.make_node("Unsqueeze", ["n", "axis0"], ["n_vec"]),
        ]
        inits += [numpy_helper.from_array(np.array(0, np.int64), "zero"), _ints("axis0", [0])]
    elif chain == "slice":  # Shape(X) -> Slice(0, 1) -> Cast(int64) -> Concat(., [3])
        nodes += [
            helper.make_node("Shape", ["X"], ["s"]),
            helper.make_node("Slice", ["s", "start", "end"], ["n_cast"]),
            helper.make_node("Cast", ["n_cast"], ["n_vec"], to=TensorProto.INT64),
        ]
        inits += [_ints("start", [0]), _ints("end", [1])]
    nodes += [
        helper.make_node("Concat", ["n_vec", "rest"], ["target"], axis=0),
        helper.make_node("Reshape", ["T", "target"], ["Y"], allowzero=allowzero),
    ]
    outputs = [helper.make_tensor_value_info("Y", F, None)]
    if extra_output:
        outputs.append(helper.make_tensor_value_info("target", TensorProto.INT64, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", F, ["N", 3, 4, 4])], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def _rewritten(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    count = constant_reshape_targets(copy, type_table(copy))
    drop_unused_initializers(copy)  # the callers' clean-up
    return copy, count


def _ort(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _same_results(original: onnx.ModelProto, rewritten: onnx.ModelProto, batches=(1, 5)) -> None:
    """The rewritten model gives onnxruntime's results on the original bit for bit, and the
    reference evaluator's on the original to float32 tolerance (its ReduceMean rounds otherwise)."""
    reference, before, after = ReferenceEvaluator(original), _ort(original), _ort(rewritten)
    for n in batches:
        feed = {"X": rng(n).standard_normal((n, 3, 4, 4)).astype(np.float32)}
        for r, b, a in zip(reference.run(None, feed), before.run(None, feed), after.run(None, feed)):
            assert r.shape == b.shape == a.shape
            np.testing.assert_array_equal(a, b)
            if a.dtype == np.float32:
                assert_close(a, r)
            else:
                np.testing.assert_array_equal(a, r)


@pytest.mark.parametrize("chain", ["squeeze", "gather", "slice"])
def test_target_from_the_batch_dimension_becomes_constant(chain):
    model = flatten_model(chain)
    out, count = _rewritten(model)
    assert count == 1
    assert [n.op_type for n in out.graph.node] == ["ReduceMean", "Reshape"]  # the chain went with it
    reshape = out.graph.node[1]
    target = {i.name: i for i in out.graph.initializer}[reshape.input[1]]
    assert numpy_helper.to_array(target).tolist() == [0, 3]
    assert all(a.name != "allowzero" or a.i == 0 for a in reshape.attribute)
    _same_results(model, out)


def test_a_chain_someone_else_reads_stays():
    model = flatten_model("squeeze", extra_output=True)
    out, count = _rewritten(model)
    assert count == 1
    assert Counter(n.op_type for n in out.graph.node)["Concat"] == 1  # the graph output still needs it
    _same_results(model, out)


def _with_target(elements: list, x_dims=("N", 3, 4, 4), allowzero=0) -> onnx.ModelProto:
    """Reshape(X, Concat(pieces)): a piece "Z0" is Shape(Z)[0:1] of a second input Z["M", 2],
    "X0"/"X1" is Shape(X)[k:k+1], a number is itself."""
    nodes, inits, pieces = [], [], []
    for k, e in enumerate(elements):
        name = f"p{k}"
        if isinstance(e, int):
            inits.append(_ints(name, [e]))
        else:
            source, dim = e[0], int(e[1])
            nodes.append(helper.make_node("Shape", [source], [name], start=dim, end=dim + 1))
        pieces.append(name)
    nodes += [
        helper.make_node("Concat", pieces, ["target"], axis=0),
        helper.make_node("Reshape", ["X", "target"], ["Y"], allowzero=allowzero),
        helper.make_node("Shape", ["Z"], ["z_shape"]),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("X", F, list(x_dims)), helper.make_tensor_value_info("Z", F, ["M", 2])],
        [helper.make_tensor_value_info("Y", F, None), helper.make_tensor_value_info("z_shape", I64, None)],
        inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


@pytest.mark.parametrize(
    "elements, allowzero, why",
    [
        (["Z0", 48], 0, "another tensor's dimension"),
        ([48, "X0"], 0, "the right dimension in the wrong place"),
        (["X0", 0, 48], 1, "allowzero=1 reads a 0 as size 0"),
    ],
)
def test_targets_the_rule_must_leave(elements, allowzero, why):
    model = _with_target(elements, allowzero=allowzero)
    out, count = _rewritten(model)
    assert count == 0, why
    assert out.SerializeToString() == model.SerializeToString()


def test_two_dimensions_in_place_and_a_number():
    model = _with_target(["X0", "X1", -1])
    out, count = _rewritten(model)
    assert count == 1
    assert "Concat" not in [n.op_type for n in out.graph.node]
    for n in (1, 3):
        feed = {"X": rng(n).standard_normal((n, 3, 4, 4)).astype(np.float32), "Z": np.zeros((2, 2), np.float32)}
        for want, got in zip(ReferenceEvaluator(model).run(None, feed), _ort(out).run(None, feed)):
            np.testing.assert_array_equal(got, want)


def conv_model(bias: np.ndarray | None, bias_is_input: bool = False) -> onnx.ModelProto:
    g = rng(3)
    inits = [numpy_helper.from_array((g.standard_normal((4, 3, 3, 3)) / 4).astype(np.float32), "W")]
    inputs = [helper.make_tensor_value_info("X", F, ["N", 3, 4, 4])]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias.astype(np.float32), "B"))
        if bias_is_input:
            inputs.append(helper.make_tensor_value_info("B", F, [4]))
    node = helper.make_node("Conv", ["X", "W"] + (["B"] if bias is not None else []), ["Y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("Y", F, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


@pytest.mark.parametrize(
    "bias, bias_is_input, dropped",
    [(np.zeros(4), False, 1), (np.array([0, 0, 1e-30, 0]), False, 0), (np.zeros(4), True, 0)],
    ids=["zeros", "one-tiny-nonzero", "a-graph-input"],
)
def test_conv_bias_of_zeros_is_dropped_and_nothing_else(bias, bias_is_input, dropped):
    model = conv_model(bias, bias_is_input)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    assert drop_zero_biases(out) == dropped
    drop_unused_initializers(out)
    assert len(out.graph.node[0].input) == (2 if dropped else 3)
    _same_results(model, out)


# -- a torch net, end to end ---------------------------------------------------------------
def _optimized(model: onnx.ModelProto, tmp_path, name: str, session=ort.InferenceSession):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / f"{name}.opt.onnx")
    session(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    opt = onnx.load(so.optimized_model_filepath, load_external_data=False)
    ops = Counter(
        (n.op_type, tuple(sorted(a.name for a in n.attribute if a.name != "allowzero"))) for n in opt.graph.node
    )
    return ops, sorted(tuple(i.dims) for i in opt.graph.initializer)


def test_plain_torch_export_folds_to_the_graph_of_torchs_optimized_export(tmp_path):
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.LeakyReLU(0.01),
                nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.LeakyReLU(0.01),
            )  # fmt: skip
            self.head = nn.Linear(8, 5)

        def forward(self, x):
            return self.head(self.body(x).mean((2, 3), keepdim=True).flatten(1))

    torch.manual_seed(0)
    net = Net().eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 8, 8)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=64)},)

    def export(optimize: bool) -> onnx.ModelProto:
        exported = torch.onnx.export(net, (x,), dynamic_shapes=dynamic, dynamo=True, optimize=optimize, verbose=False)
        return exported.model_proto

    plain, best = export(False), export(True)
    converted = iabn_onnx.convert(plain)
    folded, report = fold_with_report(converted)
    assert report.reshapes == 1 and report.zero_biases == 2, report.lines()
    assert not {"Shape", "Concat", "Squeeze", "Expand", "CastLike"} & {n.op_type for n in folded.graph.node}
    want = _optimized(best, tmp_path, "best")
    assert _optimized(folded, tmp_path, "folded") == want
    assert _optimized(converted, tmp_path, "session", iabn_onnx.InferenceSession) == want
    with torch.no_grad():
        for n in (1, 3):
            xn = torch.randn(n, 3, 8, 8)
            got = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"]).run(
                None, {folded.graph.input[0].name: xn.numpy()}
            )[0]
            assert_close(got, net(xn).numpy())


def test_tensors_in_missing_external_files_are_left_alone():
    """Neither rule reads what it cannot: a bias and a target piece whose external data is missing
    stay as they are, for onnxruntime's loader to report."""
    conv = conv_model(np.zeros(4))
    bias = next(i for i in conv.graph.initializer if i.name == "B")
    onnx.external_data_helper.set_external_data(bias, "missing.bin", offset=0, length=16)
    bias.data_location = TensorProto.EXTERNAL
    bias.ClearField("raw_data")
    bias.ClearField("float_data")
    assert drop_zero_biases(conv) == 0
    model = flatten_model("squeeze")
    rest = next(i for i in model.graph.initializer if i.name == "rest")
    onnx.external_data_helper.set_external_data(rest, "missing.bin", offset=0, length=8)
    rest.data_location = TensorProto.EXTERNAL
    rest.ClearField("raw_data")
    rest.ClearField("int64_data")
    assert constant_reshape_targets(model, type_table(model)) == 0
