"""Bad models, files and inputs: a clean Python exception naming the node and fault; the process lives.

Every case runs in a fresh interpreter, since the failure guarded against is an abort.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.bad_models import MODEL_CASES, RUN_CASES
from tests.conftest import run_isolated

ROOT = Path(__file__).resolve().parents[1]

PROGRAM = """
import json, sys
sys.path.insert(0, {root!r})
import iabn_onnx
from tests import bad_models
kind, case = {kind!r}, {case!r}
result = {{}}
if kind == "model":
    factory, words = bad_models.MODEL_CASES[case]
    feed = None
else:
    factory, feed, words = bad_models.RUN_CASES[case]
model = factory()
try:
    sess = iabn_onnx.InferenceSession(model)
    result["session"] = "created"
    if feed is not None:
        sess.run(None, feed)
        result["run"] = "returned"
except Exception as exc:
    result["exception"] = type(exc).__name__
    result["message"] = str(exc)
    if feed is not None and "session" in result:
        # the session still works after a fault
        import numpy as np
        good = {{k: (np.ones((2, 4, 3), np.float32) if k == "X" else np.ones(4, np.float32)) for k in feed}}
        result["after"] = [o.shape for o in sess.run(None, good)]
print("RESULT " + json.dumps(result))
"""


def _run(kind: str, case: str) -> dict:
    proc = run_isolated(PROGRAM.format(root=str(ROOT), kind=kind, case=case))
    assert proc.returncode == 0, f"process died (rc={proc.returncode}): {proc.stderr[-2000:]}"
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_bad_model_raises_at_session_creation(case):
    words = MODEL_CASES[case][1]
    result = _run("model", case)
    assert "session" not in result, result
    assert result["exception"] == "InplaceABNError", result
    assert "abn0" in result["message"] or "<model>" in result["message"]
    assert words in result["message"], result["message"]


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_bad_input_raises_from_run_and_session_survives(case):
    words = RUN_CASES[case][2]
    result = _run("run", case)
    assert result.get("session") == "created", result
    assert "run" not in result, result
    assert result["exception"] == "InplaceABNError", result
    assert "abn0" in result["message"]
    assert words in result["message"], result["message"]
    assert result["after"][0] == [2, 4, 3]


@pytest.mark.parametrize(
    "content, error",
    [
        (b"", "ModelLoadError"),
        (b"not an onnx model \x00\xff", "ModelLoadError"),
        ("truncated", "ModelLoadError"),
        ("tensor", "ModelLoadError"),
    ],
    ids=["zero_bytes", "not_onnx", "truncated", "another_protobuf"],
)
def test_bad_files_raise(tmp_path, content, error):
    path = tmp_path / "bad.onnx"
    if content == "truncated":
        from iabn_onnx.examples import single_node_model

        data = single_node_model((2, 4, 3))[0].SerializeToString()
        content = data[: len(data) // 2]
    elif content == "tensor":  # well-formed protobuf, but a TensorProto: no graph
        from onnx import numpy_helper

        content = numpy_helper.from_array(np.arange(600, dtype=np.float32), "w").SerializeToString()
    path.write_bytes(content)
    proc = run_isolated(
        f"""
        import iabn_onnx
        try:
            iabn_onnx.InferenceSession({str(path)!r})
            print("CREATED")
        except Exception as exc:
            print("EXC", type(exc).__name__, exc)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"EXC {error}"), proc.stdout
    assert "bad.onnx" in proc.stdout


def test_missing_file_raises_file_not_found(tmp_path):
    import iabn_onnx

    with pytest.raises(FileNotFoundError, match=r"nope\.onnx"):
        iabn_onnx.InferenceSession(tmp_path / "nope.onnx")
