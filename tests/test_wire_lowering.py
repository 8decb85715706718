"""The wire-level lowering (``runtime/wire_lowering.py``) against the parsed-model lowering (``lowering.lower``).

For every model here, either ``lower_outline`` declines (None) or its bytes parse to exactly the model
``lower`` writes, with the same routes; the cases it must take are listed, so that declining
everything fails.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import iabn_onnx
from iabn_onnx import InplaceABNAttrs
from iabn_onnx.op import onnx_enums
from iabn_onnx.op.function import add_function_fallback
from iabn_onnx.op.schema import ONNX_OPSET, make_model, make_node, opset_import
from iabn_onnx.runtime.lowering import lower
from iabn_onnx.runtime.outline import parse_outline, walk_outline
from iabn_onnx.runtime.routes import route_to_json
from iabn_onnx.runtime.wire_lowering import lower_outline
from tests import bad_models
from tests.conftest import assert_close, run_isolated
from tests.fold_cases import producer_model

C = 32  # parameters of 32 float32 channels are 128 bytes: kept in the outline; the weights point into the file


def test_enum_numbers_are_onnx_own():
    assert (onnx_enums.FLOAT, onnx_enums.FLOAT16, onnx_enums.DOUBLE) == (
        TensorProto.FLOAT,
        TensorProto.FLOAT16,
        TensorProto.DOUBLE,
    )
    assert onnx_enums.EXTERNAL == TensorProto.EXTERNAL
    for code, name in onnx_enums.ATTRIBUTE_TYPES.items():
        assert onnx.AttributeProto.AttributeType.Value(name) == code
    kinds = (onnx_enums.ATTR_FLOAT, onnx_enums.ATTR_INT, onnx_enums.ATTR_STRING)
    kinds += (onnx_enums.ATTR_GRAPH, onnx_enums.ATTR_GRAPHS)
    A = onnx.AttributeProto
    assert kinds == (A.FLOAT, A.INT, A.STRING, A.GRAPH, A.GRAPHS)
    assert onnx_enums.dtype_name(TensorProto.INT64) == "int64"
    assert onnx_enums.dtype_name(TensorProto.FLOAT16) == "float16"


def test_the_graph_rules_it_declines_for_are_the_passes_own():
    """The op sets ``wire_lowering`` declines on restate what the graph rules act on (their modules import
    onnx): a rule that learns a new op must show up here."""
    from iabn_onnx.passes import constant_subgraphs, zero_bias
    from iabn_onnx.runtime import wire_lowering

    evaluated = set(constant_subgraphs.EVALUATORS) | {"Constant", "Shape", "Size", "CastLike"}
    assert evaluated == wire_lowering._RULE_OPS | wire_lowering._CONSTANT_INPUT_OPS
    assert zero_bias.PRODUCERS == {"Conv", "ConvTranspose"}  # the biases _no_graph_rule reads


def _both(model: onnx.ModelProto, tmp_path, fuses: bool = True):
    """(wire-level result or None, parsed-model result or the exception it raised)."""
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    walked = walk_outline(path)
    wire = lower_outline(walked.data, path, fuses)
    try:
        reference = lower(parse_outline(walked).model, onnxruntime_fuses_conv=fuses, base_dir=str(tmp_path))
    except Exception as exc:
        reference = exc
    return wire, reference


def _assert_same(wire, reference) -> None:
    assert not isinstance(reference, Exception), reference
    model, kernel_nodes, routes = reference
    got = onnx.load_model_from_string(wire.data)
    assert got.SerializeToString(deterministic=True) == model.SerializeToString(deterministic=True)
    assert wire.report["routes"] == [route_to_json(r) for r in routes]
    assert not kernel_nodes and not wire.report["kernel"]


def _check(model: onnx.ModelProto, tmp_path, fuses: bool = True) -> bool:
    """Whether the wire-level lowering took the model (and then that it matched)."""
    wire, reference = _both(model, tmp_path, fuses)
    if wire is not None:
        _assert_same(wire, reference)
    return wire is not None


# -- graphs a network is made of --------------------------------------------------------------------------
def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _init(inits: list, name: str, array: np.ndarray) -> str:
    inits.append(numpy_helper.from_array(array, name))
    return name


def _abn(inits, x, y, name, act="leaky_relu", dtype=np.float32, seed=0, **attrs):
    rng = _rng(seed)
    params = [
        _init(inits, f"{name}.scale", (np.abs(rng.standard_normal(C)) + 0.1).astype(dtype)),
        _init(inits, f"{name}.bias", rng.standard_normal(C).astype(dtype)),
        _init(inits, f"{name}.mean", rng.standard_normal(C).astype(dtype)),
        _init(inits, f"{name}.var", (np.abs(rng.standard_normal(C)) + 0.5).astype(dtype)),
    ]
    return make_node([x, *params], [y], InplaceABNAttrs(act=act, act_alpha=0.1, **attrs), name=name)


def network(
    dtype=np.float32,
    act="leaky_relu",
    declare_types: bool = True,
    conv_bias: float | None = None,
    extra_nodes=(),
    extra_inits=(),
    unnamed: bool = False,
    function: bool = False,
    taken_names: bool = False,
) -> onnx.ModelProto:
    """Conv -> ABN -> Conv -> ABN -> Add (residual) -> ABN -> Concat -> ABN -> MaxPool -> ABN -> Y:
    every place an ABN sits in mapillary's networks."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    rng = _rng(1)
    inits: list = []
    w1 = _init(inits, "w1", (rng.standard_normal((C, 3, 3, 3)) * 0.2).astype(dtype))
    w2 = _init(inits, "w2", (rng.standard_normal((C, C, 3, 3)) * 0.05).astype(dtype))
    conv1_inputs = ["X", w1]
    if conv_bias is not None:
        conv1_inputs.append(_init(inits, "b1", np.full(C, conv_bias, dtype)))
    nodes = [
        helper.make_node("Conv", conv1_inputs, ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        _abn(inits, "c1", "a1", "abn1", act, dtype, 1),
        helper.make_node("Conv", ["a1", w2], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        _abn(inits, "c2", "a2", "abn2", "identity", dtype, 2),
        helper.make_node("Add", ["a1", "a2"], ["s"], name="residual"),
        _abn(inits, "s", "a3", "abn3", act, dtype, 3),
        helper.make_node("Concat", ["a3", "a2"], ["cat"], name="cat", axis=1),
        helper.make_node("Conv", ["cat", _init(inits, "w3", np.ones((C, 2 * C, 1, 1), dtype) / C)], ["c3"], name="c3"),
        helper.make_node("MaxPool", ["c3"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        _abn(inits, "p", "Y", "abn4", act, dtype, 4),
        *extra_nodes,
    ]
    inits.extend(extra_inits)
    if unnamed:
        nodes[1].name = ""
        nodes[5].name = ""
    if taken_names:  # the names the lowering would pick first are already values and nodes
        nodes.insert(0, helper.make_node("Identity", ["X"], ["a1__bn"], name="abn1__leaky_relu"))
        nodes.insert(1, helper.make_node("Identity", ["a1__bn"], ["a1__bn_1"], name="side"))
    value_info = []
    if declare_types:
        value_info = [
            helper.make_tensor_value_info("s", elem, ["N", C, 8, 8]),
            helper.make_tensor_value_info("p", elem, ["N", C, 4, 4]),
        ]
    outputs = [helper.make_tensor_value_info("Y", elem, ["N", C, 4, 4])]
    if taken_names:
        outputs.append(helper.make_tensor_value_info("a1__bn_1", elem, None))
    graph = helper.make_graph(
        nodes, "net", [helper.make_tensor_value_info("X", elem, ["N", 3, 8, 8])], outputs, inits, value_info=value_info
    )
    model = make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET), opset_import()])
    return add_function_fallback(model) if function else model


TAKEN = {
    "float32": lambda: network(),
    "elu": lambda: network(act="elu"),
    "identity": lambda: network(act="identity"),
    "float16_elu": lambda: network(np.float16, "elu"),
    "float64_identity": lambda: network(np.float64, "identity"),
    "conv_bias": lambda: network(conv_bias=0.5),
    "unnamed_nodes": lambda: network(unnamed=True),
    "function_fallback": lambda: network(function=True),
    "taken_names": lambda: network(taken_names=True),
}


@pytest.mark.parametrize("case", sorted(TAKEN))
def test_the_common_networks_are_lowered_on_the_wire_as_the_parsed_model_is(case, tmp_path):
    assert _check(TAKEN[case](), tmp_path)


def _constant_node():
    return helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.ones(1, np.float32)))


def _external_tensor_attribute():
    tensor = numpy_helper.from_array(np.ones(4, np.float32), "t")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "t.bin"  # beside the model, where the session's copy is not
    return helper.make_node("Foo", ["a1"], ["foo"], domain="my.ops", value=tensor)


DECLINED = {
    "external_tensor_attribute": lambda: network(extra_nodes=[_external_tensor_attribute()]),
    "float16_leaky_relu": lambda: network(np.float16),  # the kernel's cell
    "float64_leaky_relu": lambda: network(np.float64),
    "undeclared_types": lambda: network(declare_types=False),  # X after Add/MaxPool: shape inference's to type
    "zero_conv_bias": lambda: network(conv_bias=0.0),  # zero_bias drops it
    "constant_node": lambda: network(extra_nodes=[_constant_node()]),
    "shape_node": lambda: network(extra_nodes=[helper.make_node("Shape", ["w1"], ["w1_shape"])]),
    "constant_inputs": lambda: network(
        extra_nodes=[helper.make_node("Unsqueeze", ["w1", "axes"], ["w1u"])],
        extra_inits=[numpy_helper.from_array(np.zeros(1, np.int64), "axes")],
    ),
    "unused_initializer": lambda: network(extra_inits=[numpy_helper.from_array(np.ones(3, np.float32), "spare")]),
    "subgraph": lambda: network(
        extra_nodes=[
            helper.make_node(
                "If",
                ["cond"],
                ["branch"],
                then_branch=helper.make_graph(
                    [helper.make_node("Identity", ["w1"], ["t"])],
                    "then",
                    [],
                    [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)],
                ),
                else_branch=helper.make_graph(
                    [helper.make_node("Identity", ["w2"], ["e"])],
                    "else",
                    [],
                    [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)],
                ),
            )
        ],
        extra_inits=[numpy_helper.from_array(np.array(True), "cond")],
    ),
}


@pytest.mark.parametrize("case", sorted(DECLINED))
def test_what_the_wire_level_lowering_does_not_do_goes_to_the_parsed_model(case, tmp_path):
    assert not _check(DECLINED[case](), tmp_path)


def test_a_scale_that_is_not_finite_is_declined(tmp_path):
    model = network()
    scale = next(t for t in model.graph.initializer if t.name == "abn3.scale")
    values = numpy_helper.to_array(scale).copy()
    values[3] = np.inf
    scale.CopyFrom(numpy_helper.from_array(values, scale.name))
    assert not _check(model, tmp_path)


def test_a_graph_without_a_default_opset_import_gets_one(tmp_path):
    """lower adds ONNX opset 17 for BatchNormalization when the model imports no default domain."""
    inits: list = []
    nodes = [helper.make_node("Relu", ["X"], ["r"], name="relu"), _abn(inits, "r", "Y", "abn")]
    vi = [helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, C, 2, 2])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, C, 2, 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, C, 2, 2])],
        inits,
        value_info=vi,
    )
    model = make_model(graph, opset_imports=[opset_import()])
    assert _check(model, tmp_path)


FOLD_KINDS = ["Conv", "ConvNoBias", "ConvTranspose", "GemmB", "GemmBC", "MatMul", "MatMulAdd"]


@pytest.mark.parametrize("kind", FOLD_KINDS)
@pytest.mark.parametrize("fuses", [True, False])
@pytest.mark.parametrize(
    "variant", ["plain", "second_consumer", "producer_is_output", "training", "params_as_inputs", "nhwc"]
)
def test_producer_cases_match_or_decline(kind, fuses, variant, tmp_path):
    options = {v: True for v in ("second_consumer", "producer_is_output", "params_as_inputs") if v == variant}
    model, _ = producer_model(
        kind,
        "leaky_relu",
        np.float32,
        layout="NHWC" if variant == "nhwc" else "NCHW",
        training=int(variant == "training"),
        **options,
    )
    taken = _check(model, tmp_path, fuses)
    # only a Conv's sole reader that onnxruntime's fusion takes: every other case folds, or may
    expected = kind in ("Conv", "ConvNoBias") and fuses and variant == "plain"
    assert taken == expected


@pytest.mark.parametrize("case", sorted(bad_models.MODEL_CASES))
def test_invalid_nodes_are_left_to_the_parsed_model_which_names_them(case, tmp_path):
    build, _ = bad_models.MODEL_CASES[case]
    wire, reference = _both(build(), tmp_path)
    assert wire is None
    assert isinstance(reference, iabn_onnx.InplaceABNError)


def test_a_file_first_session_imports_no_onnx_and_computes_what_the_folded_model_does(tmp_path):
    """With the cache off, a session on the file lowers it without onnx; its output is the
    float64 reference's, its routes those of a session given the parsed model."""
    path = tmp_path / "net.onnx"
    model = network(function=True)
    onnx.save(model, str(path))
    x = _rng(5).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = f"""
        import os, sys
        os.environ["IABN_ONNX_CACHE"] = "0"
        import numpy as np
        import iabn_onnx
        s = iabn_onnx.InferenceSession({str(path)!r})
        y = s.run(None, {{"X": np.load({str(tmp_path / "x.npy")!r})}})[0]
        np.save({str(tmp_path / "y.npy")!r}, y)
        print("onnx" in sys.modules, [r.route for r in s.routes], [r.detail for r in s.routes])
    """
    out = run_isolated(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(" [", 1)[0] == "False", out.stdout
    parsed = iabn_onnx.InferenceSession(model).routes
    assert out.stdout.strip().split(" ", 1)[1] == f"{[r.route for r in parsed]} {[r.detail for r in parsed]}"
    expected = _reference(model, x)
    assert_close(np.load(tmp_path / "y.npy"), expected, np.float32)


def _reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The network in float64: onnx's reference evaluator, InplaceABN by the operator's numpy reference."""
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    from iabn_onnx import inplace_abn_reference

    class InplaceABN(OpRun):
        op_domain = iabn_onnx.DOMAIN

        def _run(self, x, scale, b, mean, var, **kw):
            return (inplace_abn_reference(x, scale, b, mean, var, InplaceABNAttrs.from_node(self.onnx_node)),)

    wide = onnx.ModelProto()
    wide.CopyFrom(model)
    del wide.functions[:]
    for t in wide.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
    for vi in [*wide.graph.input, *wide.graph.output, *wide.graph.value_info]:
        vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    return ReferenceEvaluator(wide, new_ops=[InplaceABN]).run(None, {"X": x.astype(np.float64)})[0]


def test_a_network_export_torch_wrote_is_lowered_on_the_wire_as_the_parsed_model_is(tmp_path):
    """mapillary's blocks (Conv -> InPlaceABN, a residual sum, a concatenation, pooling) through
    ``export_torch``, the file a session is given."""
    import torch
    from torch import nn

    from tests.torch_replicas import InPlaceABN, randomize

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), InPlaceABN(C))
            self.body = nn.Sequential(nn.Conv2d(C, C, 3, padding=1, bias=False), InPlaceABN(C, activation="identity"))
            self.after_sum = InPlaceABN(C, activation="elu", activation_param=1.0)
            self.after_cat = InPlaceABN(2 * C)
            self.head = nn.Linear(2 * C, 10)

        def forward(self, x):
            a = self.stem(x)
            s = self.after_sum(a + self.body(a))
            c = self.after_cat(torch.nn.functional.max_pool2d(torch.cat([s, a], 1), 2))
            return self.head(c.mean((2, 3)))

    net = randomize(Net().eval(), seed=3)
    model = iabn_onnx.export_torch(net, (torch.randn(2, 3, 8, 8),))
    assert _check(model, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "tresnet_m", "densenet121", "wider_resnet20", "aspp_resnet50"])
def test_every_benchmark_network_is_lowered_on_the_wire_as_the_parsed_model_is(name, tmp_path):
    """The networks of ``benchmarks/architectures.py``, exported as ``bench_session_startup.py`` exports them."""
    import torch

    from benchmarks.architectures import IMAGE_SIZE, build

    side = IMAGE_SIZE.get(name, 224)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=64)},)
    model = iabn_onnx.export_torch(build(name), (torch.randn(1, 3, side, side),), dynamic_shapes=dynamic)
    assert _check(model, tmp_path)
