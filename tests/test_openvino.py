"""A folded file runs on a runtime that is not onnxruntime: OpenVINO, with its f32 precision hint.

OpenVINO reads ONNX directly but cannot read ``ai.iabn`` nodes, nor the function fallback's body once
inlined (``ai.onnx.ml.LabelEncoder``, ``ReduceSum`` with non-static axes). ``fold`` leaves neither,
training-mode nodes included, so every folded example model and exported network runs there; the
reference is our session on the unfolded model. On CPUs with AMX, OpenVINO's default precision is
bf16 (about 1e-3 off), so the tests ask for f32. Skipped without OpenVINO (the [test] extra has it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest

import iabn_onnx
from iabn_onnx.example_files import MODELS

ov = pytest.importorskip("openvino")

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
PROGRAMS = Path(__file__).parent / "paddle_fixtures" / "programs"
RTOL = 1e-5


def _openvino_outputs(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(feed)
    return [np.asarray(result[output]) for output in compiled.outputs]


def _feed(model: onnx.ModelProto, batch: int = 2) -> dict[str, np.ndarray]:
    g = np.random.default_rng(0)
    inits = {i.name for i in model.graph.initializer}
    feed = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else batch for d in inp.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
        feed[inp.name] = g.standard_normal(dims).astype(dtype)
    return feed


def _check(model: onnx.ModelProto, tmp_path: Path, name: str) -> None:
    folded = iabn_onnx.fold(model)
    assert {n.domain for n in folded.graph.node} <= {"", "ai.onnx"} and not folded.functions
    path = tmp_path / f"{name}.folded.onnx"
    onnx.save(folded, str(path))
    feed = _feed(model)
    want = iabn_onnx.InferenceSession(model).run(None, feed)
    got = _openvino_outputs(path, feed)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        scale = max(1.0, float(np.max(np.abs(b))))
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL * scale, err_msg=name)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_folded_example_models_run_on_openvino(tmp_path, name):
    _check(onnx.load(MODELS_DIR / name), tmp_path, name)


@pytest.mark.parametrize("program", ["cnn", "nhwc", "training"])
def test_folded_paddle_programs_run_on_openvino(tmp_path, program):
    if importlib.util.find_spec("paddle2onnx") is None:  # not importorskip: its package imports Paddle, which
        pytest.skip("export_paddle needs the [paddle] extra")  # export_paddle's converter does not need
    _check(iabn_onnx.export_paddle(str(PROGRAMS / program / "model")), tmp_path, program)


def test_a_folded_torch_export_runs_on_openvino(tmp_path):
    torch = pytest.importorskip("torch")
    iabn_onnx.install_torch_fallback()
    try:
        from inplace_abn import ABN, InPlaceABN

        torch.manual_seed(0)
        net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1, bias=False),
            InPlaceABN(8, activation="leaky_relu", activation_param=0.01),
            torch.nn.Conv2d(8, 8, 3, stride=2, padding=1),
            InPlaceABN(8, activation="elu", activation_param=1.0),
            torch.nn.Conv2d(8, 4, 1, bias=False),
            ABN(4, activation="identity"),
        ).eval()
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, ABN):
                    m.weight.normal_()
                    m.running_var.uniform_(0.5, 2.0)
                    m.running_mean.normal_()
        model = iabn_onnx.export_torch(net, (torch.randn(1, 3, 16, 16),))
    finally:
        iabn_onnx.uninstall_torch_fallback()
    _check(model, tmp_path, "torch_net")
