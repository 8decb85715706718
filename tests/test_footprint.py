"""What importing the package and creating sessions load and leave behind, each in a fresh process."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_isolated

HEAVY = ("torch", "numba", "onnxruntime_extensions", "iabn_onnx.fluid", "iabn_onnx.exporters")


def _loaded(code: str) -> dict:
    proc = run_isolated(
        code
        + f"""
import json, sys
print(json.dumps({{"loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_loads_only_the_schema():
    assert _loaded("import iabn_onnx\n")["loaded"] == []


def test_a_session_on_standard_routes_loads_no_kernel_machinery(tmp_path):
    from iabn_onnx.examples import conv_net_model

    path = tmp_path / "net.onnx"
    path.write_bytes(conv_net_model(channels=16).SerializeToString())
    code = f"""
import numpy as np, iabn_onnx
s = iabn_onnx.InferenceSession({str(path)!r})
assert {{r.route for r in s.routes}} == {{"BatchNormalization", "producer fold"}}, s.routes
s.run(None, {{"X": np.zeros((1, 3, 32, 32), np.float32)}})
"""
    assert _loaded(code)["loaded"] == []


@pytest.mark.parametrize("before", [None, "upb"], ids=["unset", "set"])
def test_the_kernel_machinery_leaves_the_protobuf_choice_of_child_processes_alone(before):
    """onnxruntime-extensions sets PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python when imported; every
    process started afterwards would parse ONNX with pure-Python protobuf."""
    setup = "" if before is None else f"os.environ['PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION'] = {before!r}\n"
    proc = run_isolated(
        "import os\n"
        + setup
        + """
import iabn_onnx
from iabn_onnx.examples import conv_net_model
s = iabn_onnx.InferenceSession(conv_net_model(channels=16), kernel_only=True)
import sys
assert "onnxruntime_extensions" in sys.modules
print(repr(os.environ.get("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION")))
"""
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == repr(before)


def test_public_names_load_on_first_use():
    code = """
import iabn_onnx
names = sorted(iabn_onnx.__all__)
assert set(names) <= set(dir(iabn_onnx))
for name in names:
    getattr(iabn_onnx, name)
assert iabn_onnx.passes.fold.fold_with_report is not None  # subpackages too, after a bare import
try:
    iabn_onnx.no_such_name
except AttributeError as exc:
    print("AttributeError", exc)
"""
    proc = run_isolated(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "AttributeError module 'iabn_onnx' has no attribute 'no_such_name'" in proc.stdout
