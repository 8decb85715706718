"""The int8 check on dense outputs: every output, agreement per pixel, masks with an ignore value, mIoU.

References: the metrics computed here by hand on small cases, and direct recomputation from onnxruntime's
outputs of the fp32 (folded) and int8 models.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import iabn_onnx
from iabn_onnx.examples import single_node_model
from iabn_onnx.op.schema import Activation, InplaceABNAttrs
from iabn_onnx.quantization import CalibrationDataError, QuantizeCheckError, metrics, quantize_with_report
from tests.conftest import rng


# -- the metrics, against hand-computed values ----------------------------------------
def test_confusion_accuracy_and_miou_on_a_hand_computed_case():
    labels = np.array([[0, 0, 1, 255], [2, 2, 255, 255]])  # 255: an ignored band
    predicted = np.array([[0, 1, 1, 3], [2, 0, 1, 1]])  # class 3 predicted only where ignored
    conf = metrics.confusion_matrix(predicted, labels, classes=4, ignore_index=255)
    # counted: (0,0) (0,1) (1,1) (2,2) (2,0)
    assert conf.sum() == 5 and conf[0, 0] == 1 and conf[0, 1] == 1 and conf[1, 1] == 1 and conf[2, 0] == 1
    assert metrics.accuracy(conf) == pytest.approx(3 / 5)
    # IoU: class 0: 1/(1+1+1)=1/3; class 1: 1/(1+1+0)=1/2; class 2: 1/(1+0+1)=1/2; class 3: absent, left out
    assert metrics.mean_iou(conf) == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3)
    with pytest.raises(ValueError, match="label 7 is outside"):
        metrics.confusion_matrix(predicted, np.full_like(labels, 7), 4, 255)
    assert metrics.accuracy(np.zeros((2, 2), np.int64)) is None and metrics.mean_iou(np.zeros((2, 2))) is None


def test_agreement_class_axis_and_relative_error():
    a = np.array([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2): pixel 0 -> class 0, pixel 1 -> class 1
    b = np.array([[[[1.0, 2.0]], [[0.0, 1.0]]]])  # pixel 1 -> class 0
    assert metrics.agreement(a, b) == 0.5
    assert metrics.class_axis((4, 3, 8, 8)) == 1 and metrics.class_axis((4, 1, 8, 8)) is None
    assert metrics.class_axis((4,)) is None
    assert metrics.abs_diff(a, b) == (2.0, 0.5)
    assert metrics.relative_error(a, b) == 2.0


# -- a three-output parsing network ---------------------------------------------------
OUTPUTS = {"parsing": 5, "fusion": 5, "edge": 2}


def parsing_model(seed: int = 0) -> onnx.ModelProto:
    """X -> Conv -> InplaceABN(leaky) -> three 1x1 Conv heads: parsing (5 classes), fusion (5), edge (2)."""
    g = rng(seed)
    attrs = InplaceABNAttrs(act=Activation.LEAKY_RELU, act_alpha=0.1)
    trunk, _ = single_node_model((1, 8, 12, 12), attrs, np.float32)
    abn = onnx.NodeProto()
    abn.CopyFrom(trunk.graph.node[0])
    abn.input[0] = "stem_out"
    nodes = [helper.make_node("Conv", ["X", "W0"], ["stem_out"], pads=[1, 1, 1, 1], name="stem"), abn]
    inits = [numpy_helper.from_array(g.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.5, "W0")]
    inits += list(trunk.graph.initializer)
    for name, classes in OUTPUTS.items():
        inits.append(numpy_helper.from_array(g.standard_normal((classes, 8, 1, 1)).astype(np.float32), f"W_{name}"))
        nodes.append(helper.make_node("Conv", [abn.output[0], f"W_{name}"], [name], name=f"head_{name}"))
    graph = helper.make_graph(
        nodes,
        "parsing",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3, 12, 12])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, c, 12, 12]) for n, c in OUTPUTS.items()],
        inits,
    )
    model = helper.make_model(graph, opset_imports=list(trunk.opset_import), ir_version=trunk.ir_version)
    onnx.checker.check_model(model, full_check=True)
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"X": x})))


@pytest.fixture(scope="module")
def parsing():
    model = parsing_model()
    g = rng(1)
    calibration = g.standard_normal((8, 3, 12, 12)).astype(np.float32)
    held_out = g.standard_normal((6, 3, 12, 12)).astype(np.float32)
    return model, calibration, held_out


def test_every_output_is_checked_per_pixel_as_onnxruntime_computes_it(parsing):
    model, calibration, held_out = parsing
    int8, report = quantize_with_report(model, {"X": calibration}, check={"X": held_out}, per_channel=True)
    fp32_out, int8_out = _run(iabn_onnx.fold(model), held_out), _run(int8, held_out)
    check = report.check
    assert check is not None and check.samples == 6 and list(check.outputs) == list(OUTPUTS)
    assert check.thresholded == list(OUTPUTS)  # each has a class axis
    for name in OUTPUTS:
        a, b = fp32_out[name].astype(np.float64), int8_out[name].astype(np.float64)
        o = check.outputs[name]
        assert o.class_axis == 1 and o.positions == 6 * 12 * 12
        assert o.agreement == pytest.approx(float((a.argmax(1) == b.argmax(1)).mean()), abs=1e-12)
        assert o.max_abs_diff == pytest.approx(np.abs(a - b).max(), rel=1e-6)
        assert o.mean_abs_diff == pytest.approx(np.abs(a - b).mean(), rel=1e-6)
        assert o.agreement > 0.9  # per pixel; the flattened argmax of the old check gave far less
    as_json = report.to_json()["check"]
    assert as_json["outputs"]["edge"]["miou_fp32"] is None and as_json["samples"] == 6
    assert json.loads(json.dumps(report.to_json())) == report.to_json()


def _masks(shape: tuple[int, ...], classes: int, seed: int) -> np.ndarray:
    """Random masks with an ignored band (rows 0–1) and class ``classes - 1`` never present."""
    masks = rng(seed).integers(0, classes - 1, shape)
    masks[:, :2, :] = 255
    return masks


def _hand_pixel_accuracy_and_miou(pred: np.ndarray, masks: np.ndarray, classes: int) -> tuple[float, float]:
    keep = masks != 255
    accuracy = float((pred[keep] == masks[keep]).mean())
    ious = []
    for c in range(classes):
        inter = np.sum((pred == c) & (masks == c) & keep)
        union = np.sum(((pred == c) | (masks == c)) & keep)
        if union:
            ious.append(inter / union)
    return accuracy, float(np.mean(ious))


def test_masks_give_pixel_accuracy_and_miou_for_both_models(parsing):
    model, calibration, held_out = parsing
    masks = _masks((6, 12, 12), 5, seed=2)
    check = {"X": held_out, "labels": masks}
    int8, report = quantize_with_report(
        model, {"X": calibration}, check=check, per_channel=True, max_accuracy_drop=100, check_outputs=["parsing"]
    )
    assert report.check is not None and report.check.thresholded == ["parsing"]
    o = report.check.outputs["parsing"]
    fp32_pred = _run(iabn_onnx.fold(model), held_out)["parsing"].argmax(1)
    int8_pred = _run(int8, held_out)["parsing"].argmax(1)
    for pred, acc, miou in ((fp32_pred, o.accuracy_fp32, o.miou_fp32), (int8_pred, o.accuracy_int8, o.miou_int8)):
        want_acc, want_miou = _hand_pixel_accuracy_and_miou(pred, masks, 5)
        assert acc == pytest.approx(want_acc, abs=1e-12) and miou == pytest.approx(want_miou, abs=1e-12)
    assert report.check.outputs["fusion"].accuracy_fp32 is None  # labels go to the named output only
    assert any("mIoU: fp32" in line for line in report.lines())


def test_a_refusal_names_the_output_and_carries_the_report(parsing):
    model, calibration, held_out = parsing
    with pytest.raises(QuantizeCheckError, match="output 'parsing': int8 and fp32 agree on the argmax") as info:
        quantize_with_report(model, {"X": calibration}, check={"X": held_out}, per_channel=True, min_agreement=1.01)
    assert info.value.report.check.outputs["edge"].agreement is not None
    assert info.value.report.to_json()["refused"].startswith("output 'parsing'")
    masks = _masks((6, 12, 12), 5, seed=3)
    with pytest.raises(QuantizeCheckError, match=r"output 'parsing': int8 (pixel accuracy|mIoU) .* points below"):
        quantize_with_report(
            model,
            {"X": calibration},
            check={"X": held_out, "labels": masks},
            per_channel=True,
            max_accuracy_drop=-100,
        )


@pytest.mark.parametrize(
    ("labels", "says"),
    [
        (np.zeros(6, np.int64), "fit no output with a class axis"),
        (np.full((6, 12, 12), 9), "hold class 9, but output 'parsing' has 5 classes"),
        (np.zeros((6, 12, 12), np.float32), "'labels' must be integers"),
        (np.zeros((5, 12, 12), np.int64), "'labels' must be integers, class ids (6,) or masks (6, H, W)"),
    ],
    ids=["class-ids-on-dense", "out-of-range", "float", "count"],
)
def test_labels_that_fit_nothing_are_named(parsing, labels, says):
    model, calibration, held_out = parsing
    with pytest.raises(CalibrationDataError) as info:
        quantize_with_report(model, {"X": calibration}, check={"X": held_out, "labels": labels}, per_channel=True)
    assert says in str(info.value)


# -- the CLI ---------------------------------------------------------------------------
def _cli(*args: str, cwd, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | (env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "iabn_onnx.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )


def test_cli_report_equals_recomputation_and_is_written_when_refused(parsing, tmp_path):
    model, calibration, held_out = parsing
    onnx.save(model, str(tmp_path / "parsing.onnx"))
    np.savez(tmp_path / "cal.npz", X=calibration)
    np.savez(tmp_path / "chk.npz", X=held_out)
    args = ["parsing.onnx", "--calibration", "cal.npz", "--check", "chk.npz", "--weights", "per-channel"]
    proc = _cli("quantize", *args, "-o", "int8.onnx", "--report", "r.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads((tmp_path / "r.json").read_text())["check"]["outputs"]
    fp32_out = _run(iabn_onnx.fold(model), held_out)
    int8_out = _run(onnx.load(str(tmp_path / "int8.onnx")), held_out)
    for name in OUTPUTS:
        a, b = fp32_out[name].astype(np.float64), int8_out[name].astype(np.float64)
        assert got[name]["agreement"] == pytest.approx(float((a.argmax(1) == b.argmax(1)).mean()), abs=1e-12)
        assert got[name]["max_abs_diff"] == pytest.approx(np.abs(a - b).max(), rel=1e-6)
        assert got[name]["class_axis"] == 1 and got[name]["miou_int8"] is None
    refused = _cli("quantize", *args, "-o", "no.onnx", "--report", "no.json", "--min-agreement", "1.01", cwd=tmp_path)
    assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1
    assert "output 'parsing'" in refused.stderr and not (tmp_path / "no.onnx").exists()
    assert json.loads((tmp_path / "no.json").read_text())["refused"].startswith("output 'parsing'")
    unknown = _cli("quantize", *args, "-o", "no.onnx", "--check-output", "mask", cwd=tmp_path)
    assert unknown.returncode == 2 and "check output 'mask' is not an output" in unknown.stderr
    assert not (tmp_path / "no.onnx").exists()


def test_cli_progress_lines_and_quiet(parsing, tmp_path):
    model, calibration, _ = parsing
    onnx.save(model, str(tmp_path / "parsing.onnx"))
    np.savez(tmp_path / "cal.npz", X=calibration)
    args = ["quantize", "parsing.onnx", "--calibration", "cal.npz", "-o", "int8.onnx", "--force"]
    every = {"IABN_ONNX_PROGRESS_AFTER": "0"}  # as a long step would: every step prints its time
    proc = _cli(*args, cwd=tmp_path, env_extra=every)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert any(line.startswith("iabn-onnx: calibrate and quantize") for line in lines), lines
    assert all(line.startswith("iabn-onnx: ") and line.endswith(" s") for line in lines)
    quiet = _cli(*args, "--quiet", cwd=tmp_path, env_extra=every)
    assert quiet.returncode == 0 and quiet.stderr == ""
    short = _cli(*args, cwd=tmp_path)  # steps of a small model are short: no lines
    assert short.returncode == 0 and short.stderr == ""
