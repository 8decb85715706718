"""Every public function that takes a model takes what ``InferenceSession`` takes: a path, serialized
bytes or a ``ModelProto`` (never changed), and gives a ``ModelProto``; a missing extra is an
ImportError with the line that installs it."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import iabn_onnx
from iabn_onnx.examples import conv_net_model
from iabn_onnx.passes.fold import plan_fold
from tests.conftest import assert_close, rng, run_isolated
from tests.test_fold import _reference_eval_with_iabn


def _sources(model: onnx.ModelProto, tmp_path) -> dict[str, object]:
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    return {"path": path, "str path": str(path), "bytes": model.SerializeToString(), "ModelProto": model}


@pytest.mark.parametrize("kind", ["path", "str path", "bytes", "ModelProto"])
def test_fold_convert_and_plan_take_every_source(tmp_path, kind):
    model = conv_net_model(channels=8, image=8)
    before = model.SerializeToString()
    source = _sources(model, tmp_path)[kind]
    folded = iabn_onnx.fold(source)
    assert isinstance(folded, onnx.ModelProto)
    assert not any(n.domain == iabn_onnx.DOMAIN for n in folded.graph.node)
    feed = {"X": rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    got = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert_close(got, _reference_eval_with_iabn(model, feed)[0])
    assert plan_fold(source)[-1].startswith("4 folded into producers")
    from iabn_onnx.passes.to_batchnorm import batchnorm_form

    bn = batchnorm_form(model)
    (tmp_path / "bn").mkdir()
    converted = iabn_onnx.convert(_sources(bn, tmp_path / "bn")[kind])
    assert sum(n.op_type == iabn_onnx.OP_TYPE for n in converted.graph.node) == 4
    assert model.SerializeToString() == before  # never changed


def test_a_missing_or_corrupt_source_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model file"):
        iabn_onnx.fold(tmp_path / "nope.onnx")
    (tmp_path / "notes.txt").write_text("not a model\n")
    with pytest.raises(iabn_onnx.ModelLoadError, match=r"notes\.txt: not a valid ONNX model"):
        iabn_onnx.convert(tmp_path / "notes.txt")
    with pytest.raises(iabn_onnx.ModelLoadError, match="bytes: not a valid ONNX model"):
        iabn_onnx.fold(b"\xff\xff\xff")


def test_a_missing_extra_names_the_install_line():
    proc = run_isolated(
        """
        import sys
        for name in ("torch", "onnxscript", "paddle2onnx"):
            sys.modules[name] = None  # as if the extras were not installed
        import iabn_onnx
        calls = {
            "export_torch": lambda: iabn_onnx.export_torch(object(), ()),
            "install_torch_fallback": iabn_onnx.install_torch_fallback,
            "replace_with_batchnorm": lambda: iabn_onnx.replace_with_batchnorm(object()),
            "export_paddle": lambda: iabn_onnx.export_paddle("model"),
        }
        for name, call in calls.items():
            try:
                call()
            except ImportError as exc:
                print(name, "|", exc)
        """
    )
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" | ") for line in proc.stdout.splitlines())
    from iabn_onnx.extras import install_line  # its wording: tests/test_cli_extras.py

    assert lines == {
        "export_torch": f"export_torch needs torch: {install_line('torch')}",
        "install_torch_fallback": f"install_torch_fallback needs torch: {install_line('torch')}",
        "replace_with_batchnorm": f"replace_with_batchnorm needs torch: {install_line('torch')}",
        "export_paddle": f"export_paddle needs paddle2onnx: {install_line('paddle')}",
    }
