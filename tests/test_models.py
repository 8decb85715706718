"""models/: the committed example models are what models/make_models.py generates, and they run.

Reference: onnx's ReferenceEvaluator with the float64 numpy InplaceABN.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import iabn_onnx
from iabn_onnx.op.reference import reference_evaluator
from tests.conftest import assert_close, rng

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
sys.path.insert(0, str(MODELS_DIR.parent))
from models.make_models import MODELS, generate  # noqa: E402

NAMES = sorted(MODELS)


def test_regenerated_models_match_committed_bytes(tmp_path):
    generate(tmp_path)
    for name in NAMES:
        committed = (MODELS_DIR / name).read_bytes()
        assert (tmp_path / name).read_bytes() == committed, f"{name}: run python models/make_models.py"
        assert len(committed) < 1024 * 1024


def _feed(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    feeds = {}
    for i, vi in enumerate(model.graph.input):
        dims = [d.dim_value if d.HasField("dim_value") else 4 for d in vi.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        feeds[vi.name] = rng(10 + i).standard_normal(dims).astype(dtype)
    return feeds


@pytest.mark.parametrize("name", NAMES)
def test_committed_model_runs_and_matches_reference(name):
    model = onnx.load(MODELS_DIR / name)
    onnx.checker.check_model(model, full_check=True)
    feed = _feed(model)
    expected = reference_evaluator(model).run(None, feed)
    for actual in (
        iabn_onnx.InferenceSession(model).run(None, feed),
        iabn_onnx.InferenceSession(model, fold_frozen=False).run(None, feed),
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed),
    ):
        for a, e in zip(actual, expected):
            assert_close(a, e, np.float32)


def test_examples_command_writes_the_models_the_program_and_the_torch_code(tmp_path):
    """`iabn-onnx examples DIR` (for a pip install, which has no models/): the same bytes as models/, the
    Paddle saved program, tiny_net.py and its checkpoint; a second run keeps them unless --force."""
    import subprocess

    out = tmp_path / "ex"
    run = lambda *a: subprocess.run(
        [sys.executable, "-m", "iabn_onnx.cli", "examples", str(out), *a], capture_output=True, text=True, timeout=300
    )
    proc = run()
    assert proc.returncode == 0, proc.stderr
    for name in NAMES:
        assert (out / name).read_bytes() == (MODELS_DIR / name).read_bytes(), name
    assert (out / "paddle_cnn" / "model.pdmodel").is_file() and (out / "paddle_cnn" / "model.pdiparams").is_file()
    assert "from inplace_abn import" in (out / "tiny_net.py").read_text()
    has_torch = importlib.util.find_spec("torch") is not None
    assert (out / "tiny_net.pth").is_file() == has_torch
    from iabn_onnx.example_files import planned

    written = {p for p in out.rglob("*") if p.is_file()}
    assert written == {p for p in planned(out) if has_torch or p.name != "tiny_net.pth"}  # what --force guards
    again = run()
    assert again.returncode == 2 and "exist (pass --force" in again.stderr
    assert run("--force").returncode == 0
