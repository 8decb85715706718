"""The trained segmentation fixture (``tests/digits_seg``): int8 keeps its mIoU, checked with masks.

Reference: the fixture's own figures (``digits_seg.json``, written by its training script from the eager
model), and pixel accuracy / mIoU recomputed here from onnxruntime's outputs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

HERE = Path(__file__).parent
FIXTURE = HERE / "digits_seg"
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None, reason="the digits come from scikit-learn (the [test] extra)"
)


def _data():
    sys.path.insert(0, str(FIXTURE))
    try:
        import train_digits_seg as t
    finally:
        sys.path.remove(str(FIXTURE))
    return t, t.dataset()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-m", "iabn_onnx.cli", *args], capture_output=True, text=True, timeout=900, cwd=cwd, env=env
    )


def test_int8_keeps_the_trained_segmenters_miou_within_one_point(tmp_path):
    facts = json.loads((FIXTURE / "digits_seg.json").read_text())
    t, (x_train, _, x_test, y_test) = _data()
    np.savez(tmp_path / "cal.npz", input=x_train[:16])
    np.savez(tmp_path / "chk.npz", input=x_test, labels=y_test)
    args = ["--calibration", "cal.npz", "--check", "chk.npz", "--report", "r.json", "-o", "int8.onnx"]
    proc = _cli("quantize", str(FIXTURE / "digits_seg.onnx"), *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "r.json").read_text())["check"]["outputs"]["output"]
    assert out["miou_fp32"] == pytest.approx(facts["miou_onnx"], abs=1e-9)  # the fixture's own figure
    assert out["accuracy_fp32"] == pytest.approx(facts["pixel_accuracy_onnx"], abs=1e-9)
    assert out["miou_fp32"] - out["miou_int8"] <= 0.01
    assert out["agreement"] >= 0.95
    session = ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"])
    pred = session.run(None, {"input": x_test})[0].argmax(1)
    accuracy, miou = t.pixel_accuracy_and_miou(pred, y_test)
    assert out["accuracy_int8"] == pytest.approx(accuracy, abs=1e-9) and out["miou_int8"] == pytest.approx(miou)
    # served at another image size: the export's dynamic height and width
    big = np.zeros((2, 1, 48, 40), np.float32)
    big[:, :, 8:40, 4:36] = x_test[:2]
    assert session.run(None, {"input": big})[0].shape == (2, 11, 48, 40)
