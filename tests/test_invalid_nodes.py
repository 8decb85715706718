"""An invalid InplaceABN node fails the same way everywhere: act="gelu", act_alpha=-0.1, data_layout="NCDHW".

fold, convert, check, onnx.checker (full_check), onnx shape inference and both sessions reject it,
naming the node and the fault; plain onnxruntime, which can only run the model-local function,
gives NaN for every output (documented in op/function.py and the README). The exporters cannot
write such a node.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper

import iabn_onnx
import iabn_onnx.fluid as fluid
from iabn_onnx import InplaceABNAttrs, InplaceABNError
from iabn_onnx.examples import single_node_model
from iabn_onnx.op.function import add_function_fallback
from tests.conftest import rng

# (case id, attribute overrides written into the node, words of the fault)
INVALID = [
    ("act-gelu", {"act": "gelu"}, "unknown act 'gelu'"),
    ("alpha-negative", {"act": "leaky_relu", "act_alpha": -0.1}, "must be finite and >= 0 for act='leaky_relu'"),
    ("layout-NCDHW", {"data_layout": "NCDHW"}, "unknown data_layout 'NCDHW'"),
]
IDS = [c[0] for c in INVALID]


def _model(overrides: dict, training: int = 0) -> onnx.ModelProto:
    model, _ = single_node_model((2, 3, 4, 4), InplaceABNAttrs(act="elu", training_mode=training), np.float32)
    node = model.graph.node[0]
    for name, value in overrides.items():
        kept = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend(kept)
        node.attribute.append(helper.make_attribute(name, value))
    return model


@pytest.mark.parametrize(("overrides", "fault"), [c[1:] for c in INVALID], ids=IDS)
def test_python_api_and_onnx_tools_reject(overrides, fault):
    model = _model(overrides)
    for reject in (
        iabn_onnx.fold,
        iabn_onnx.convert,
        lambda m: onnx.checker.check_model(m, full_check=True),
        lambda m: onnx.shape_inference.infer_shapes(m, strict_mode=True),
        lambda m: onnx.shape_inference.infer_shapes(m),
        iabn_onnx.InferenceSession,
        lambda m: iabn_onnx.InferenceSession(m, kernel_only=True),
    ):
        with pytest.raises(InplaceABNError, match=fault) as info:
            reject(model)
        assert info.value.node == "abn0"
    kept = iabn_onnx.fold(model, keep_invalid=True)  # asked to keep going: the node stays as it is
    assert [n.op_type for n in kept.graph.node] == ["InplaceABN"]


@pytest.mark.parametrize(("overrides", "fault"), [c[1:] for c in INVALID], ids=IDS)
def test_cli_rejects_with_one_line(overrides, fault, tmp_path, capsys):
    from iabn_onnx.cli import main

    path = tmp_path / "bad.onnx"
    onnx.save(_model(overrides), path)
    for args in (["check", str(path)], ["fold", str(path), "-o", str(tmp_path / "f.onnx")]):
        assert main(args) == 1
        out = capsys.readouterr()
        assert out.out == "" and len(out.err.splitlines()) == 1 and fault in out.err
    assert main(["convert", str(path), "-o", str(tmp_path / "c.onnx")]) == 1
    assert fault in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


@pytest.mark.parametrize("training", [0, 1], ids=["inference", "training"])
@pytest.mark.parametrize(("overrides", "fault"), [c[1:] for c in INVALID], ids=IDS)
def test_plain_onnxruntime_function_gives_nan(overrides, fault, training):
    """The documented plain-onnxruntime behaviour: every output NaN, never a silently wrong value."""
    model = add_function_fallback(_model(overrides, training))  # training: Y and both running statistics
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"X": rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)})
    assert len(outputs) == 1 + 2 * training
    for out in outputs:
        assert np.isnan(out).all()


def test_plain_onnxruntime_function_is_exact_for_valid_attributes():
    """The NaN guard does not touch valid nodes (the reference comparison lives in test_function_fallback)."""
    session = ort.InferenceSession(
        add_function_fallback(_model({})).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    assert np.isfinite(session.run(None, {"X": np.ones((2, 3, 4, 4), np.float32)})[0]).all()


def test_exporters_cannot_write_an_invalid_node():
    from iabn_onnx.exporters.torch_export import TorchExportError
    from tests.torch_replicas import InPlaceABN

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), InPlaceABN(4, activation="gelu")).eval()
    with pytest.raises(TorchExportError, match="unsupported activation 'gelu'"):
        iabn_onnx.export_torch(net, (torch.randn(2, 3, 4, 4),))
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), InPlaceABN(4, activation="leaky_relu", activation_param=-0.1))
    with pytest.raises(TorchExportError, match="act_alpha"):
        iabn_onnx.export_torch(net.eval(), (torch.randn(2, 3, 4, 4),))
    program = fluid.Program()
    with fluid.program_guard(program):
        x = fluid.data(name="x", shape=[2, 3, 4, 4], dtype="float32")
        for kwargs in ({"act": "gelu"}, {"act": "leaky_relu", "act_alpha": -0.1}, {"data_layout": "NCDHW"}):
            with pytest.raises(fluid.FluidError):
                fluid.layers.inplace_abn(input=x, **kwargs)
    # convert keeps a LeakyRelu(alpha<0) separate instead of writing a negative act_alpha
    bn, _ = single_node_model((2, 3, 4, 4), InplaceABNAttrs(), np.float32)
    from iabn_onnx.passes.to_batchnorm import batchnorm_form

    bn_model = batchnorm_form(bn)
    relu = helper.make_node("LeakyRelu", [bn_model.graph.output[0].name], ["Z"], alpha=-0.1)
    bn_model.graph.node.append(relu)
    bn_model.graph.output[0].name = "Z"
    converted = iabn_onnx.convert(bn_model)
    for node in converted.graph.node:
        if node.op_type == "InplaceABN":
            InplaceABNAttrs.from_node(node)  # valid
    assert "LeakyRelu" in [n.op_type for n in converted.graph.node]
