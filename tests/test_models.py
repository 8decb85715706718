"""models/: the committed example models are what models/make_models.py generates, and they run.

Reference: onnx's ReferenceEvaluator with the float64 numpy InplaceABN.
"""

from __future__ import annotations

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
