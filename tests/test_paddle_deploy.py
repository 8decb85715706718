"""Paddle 2.x deployment scripts run a saved program holding inplace_abn ops with only their import changed.

Two scripts written the way Paddle's own deploy examples (PaddleClas, PaddleSeg, PaddleDetection) are:
``paddle.inference`` (Config -> create_predictor -> handles) and ``paddle.static``
(Executor + load_inference_model). Each runs twice, in processes of its own, with the same text but the
import: real Paddle 2.6.2 on the ``batch_norm`` form of the program (``cnn_batchnorm``, which Paddle
can still load), and ``iabn_onnx.inference`` / ``iabn_onnx.static`` on the ``inplace_abn`` form
(``cnn``), which Paddle 2.6 refuses. One predictor serves batches of 1, 4 and 3.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import iabn_onnx
from iabn_onnx.inference import InferenceError
from tests.conftest import TOLERANCES

PROGRAMS = Path(__file__).parent / "paddle_fixtures" / "programs"
HAS_PADDLE = importlib.util.find_spec("paddle") is not None
HAS_PADDLE2ONNX = importlib.util.find_spec("paddle2onnx") is not None
pytestmark = pytest.mark.skipif(not HAS_PADDLE2ONNX, reason="reading a saved program needs the [paddle] extra")

PREDICTOR_SCRIPT = """
{imports}
import sys
import numpy as np

config = inference.Config(sys.argv[1] + ".pdmodel", sys.argv[1] + ".pdiparams")
config.disable_gpu()
config.switch_ir_optim(True)
config.enable_memory_optim()
config.set_cpu_math_library_num_threads(2)
predictor = inference.create_predictor(config)
input_names = predictor.get_input_names()
input_handle = predictor.get_input_handle(input_names[0])
outputs = {{}}
for batch in (1, 4, 3):
    x = np.random.default_rng(batch).standard_normal((batch, 3, 8, 8)).astype("float32")
    input_handle.reshape(x.shape)
    input_handle.copy_from_cpu(x)
    predictor.run()
    output_names = predictor.get_output_names()
    output_handle = predictor.get_output_handle(output_names[0])
    outputs[f"batch{{batch}}"] = output_handle.copy_to_cpu()
np.savez(sys.argv[2], **outputs)
"""

STATIC_SCRIPT = """
{imports}
import sys
import numpy as np

exe = static.Executor(static.cpu_places()[0])
[program, feed_target_names, fetch_targets] = static.load_inference_model(sys.argv[1], exe)
outputs = {{}}
for batch in (1, 4, 3):
    x = np.random.default_rng(batch).standard_normal((batch, 3, 8, 8)).astype("float32")
    results = exe.run(program, feed={{feed_target_names[0]: x}}, fetch_list=fetch_targets)
    outputs[f"batch{{batch}}"] = np.array(results[0])
np.savez(sys.argv[2], **outputs)
"""

#: Paddle 2.6.2's libpaddle exports a zlib of its own. When Python's zlib module first loads after it (a fresh
#: venv; other setups load zlib at start-up), the module calls that copy. numpy 2.4's Cython modules decompress
#: their strings with it at import: then ``np.random`` raises zlib.error, or the process segfaults.
ZLIB_BEFORE_PADDLE = "import zlib  # before paddle, whose own zlib would shadow it\n"
IMPORTS = {
    ("predictor", "paddle"): ZLIB_BEFORE_PADDLE + "from paddle import inference",
    ("predictor", "ours"): "from iabn_onnx import inference",
    ("static", "paddle"): ZLIB_BEFORE_PADDLE + "import paddle\npaddle.enable_static()\nfrom paddle import static",
    ("static", "ours"): "import iabn_onnx.static as static",
}


def _run(kind: str, who: str, prefix: Path, out: Path) -> dict[str, np.ndarray]:
    template = PREDICTOR_SCRIPT if kind == "predictor" else STATIC_SCRIPT
    script = textwrap.dedent(template).format(imports=IMPORTS[(kind, who)])
    proc = subprocess.run(
        [sys.executable, "-c", script, str(prefix), str(out)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(out))


@pytest.mark.skipif(not HAS_PADDLE, reason="the reference is real Paddle (pip install paddlepaddle==2.6.2)")
@pytest.mark.parametrize("kind", ["predictor", "static"])
def test_deploy_script_matches_real_paddle(tmp_path, kind):
    theirs = _run(kind, "paddle", PROGRAMS / "cnn_batchnorm" / "model", tmp_path / "paddle.npz")
    ours = _run(kind, "ours", PROGRAMS / "cnn" / "model", tmp_path / "ours.npz")
    assert sorted(ours) == sorted(theirs) == ["batch1", "batch3", "batch4"]
    rtol, atol = TOLERANCES[np.dtype(np.float32)]
    for key in theirs:
        assert ours[key].shape == theirs[key].shape, key
        np.testing.assert_allclose(ours[key], theirs[key], rtol=rtol, atol=atol, err_msg=key)


def test_the_inplace_abn_program_runs_and_reproduces_paddles_reference(tmp_path):
    """Without Paddle installed: the predictor against the outputs Paddle 2.6.2 wrote for the fixture."""
    reference = np.load(PROGRAMS / "reference.npz")
    config = iabn_onnx.inference.Config(
        str(PROGRAMS / "cnn" / "model.pdmodel"), str(PROGRAMS / "cnn" / "model.pdiparams")
    )
    predictor = iabn_onnx.inference.create_predictor(config)
    (got,) = predictor.run([reference["cnn.x"]])
    np.testing.assert_allclose(got, reference["cnn.y"], rtol=1e-5, atol=1e-5)
    static = iabn_onnx.static
    exe = static.Executor(static.CPUPlace())
    program, feeds, fetches = static.load_inference_model(str(PROGRAMS / "cnn_vars"), exe)
    (again,) = exe.run(program, feed={feeds[0]: reference["cnn.x"]}, fetch_list=fetches)
    np.testing.assert_allclose(again, reference["cnn.y"], rtol=1e-5, atol=1e-5)
    folder = iabn_onnx.inference.create_predictor(iabn_onnx.inference.Config(str(PROGRAMS / "cnn_combined")))
    assert folder.get_input_names() == predictor.get_input_names()


def test_what_needs_a_device_or_order_is_refused():
    config = iabn_onnx.inference.Config(
        str(PROGRAMS / "cnn" / "model.pdmodel"), str(PROGRAMS / "cnn" / "model.pdiparams")
    )
    for call in (lambda: config.enable_use_gpu(100, 0), lambda: config.enable_tensorrt_engine()):
        with pytest.raises(InferenceError, match="CPU only"):
            call()
    predictor = iabn_onnx.inference.create_predictor(config)
    with pytest.raises(InferenceError, match="copy_from_cpu"):
        predictor.run()
    with pytest.raises(InferenceError, match="run"):
        predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
    with pytest.raises(InferenceError, match="no input named"):
        predictor.get_input_handle("nope")
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape([2, 3, 8, 8])
    with pytest.raises(InferenceError, match="reshaped to"):
        handle.copy_from_cpu(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(Exception, match="CPU only"):
        iabn_onnx.static.cuda_places()
