"""Paddle saved programs with inplace_abn ops: export_paddle, fluid.io.load_inference_model +
Executor.run, and the CLI, against Paddle 2.6.2's own outputs.

The fixtures (``paddle_fixtures/programs``) come from ``paddle_fixtures/make_program_fixtures.py``
run with real Paddle 2.6.2: each network built with batch_norm + activation and run by Paddle's
executor (the reference), then saved and its ProgramDesc rewritten into the inplace_abn ops Paddle
<= 2.5 wrote. Needs the ``[paddle]`` extra (paddle2onnx); the suite skips these tests without it.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

if importlib.util.find_spec("paddle2onnx") is None:  # its package imports Paddle; the converter does not
    pytest.skip("needs the [paddle] extra (paddle2onnx)", allow_module_level=True)

import iabn_onnx
import iabn_onnx.fluid as fluid
from iabn_onnx.exporters.paddle_export import PaddleExportError
from iabn_onnx.fluid.checkpoint import CheckpointError
from iabn_onnx.fluid.program_desc import ProgramError, read_program
from iabn_onnx.op.schema import InplaceABNAttrs

PROGRAMS = Path(__file__).parent / "paddle_fixtures" / "programs"
REF = np.load(PROGRAMS / "reference.npz")
RTOL = 1e-5  # float32, relative to max(|Paddle's output|, 1)

#: (network, model_path, params_path) for every layout save_inference_model wrote
LAYOUTS = {
    "2.x prefix": ("cnn", PROGRAMS / "cnn" / "model", None),
    "2.x .pdmodel file": ("cnn", PROGRAMS / "cnn" / "model.pdmodel", None),
    "1.x per-variable files": ("cnn", PROGRAMS / "cnn_vars", None),
    "1.x combined __params__": ("cnn", PROGRAMS / "cnn_combined" / "__model__", "__params__"),
    "custom names": ("cnn", PROGRAMS / "cnn_custom" / "network.prog", "weights.bin"),
    "NHWC": ("nhwc", PROGRAMS / "nhwc" / "model", None),
    "training mode": ("training", PROGRAMS / "training", None),
}  # fmt: skip
#: what each network's inplace_abn ops are (activation, alpha, epsilon, layout, training), in program order
EXPECTED = {
    "cnn": [("leaky_relu", 0.2, 1e-5, "NCHW", 0), ("identity", 1.0, 1e-3, "NCHW", 0), ("elu", 0.5, 1e-5, "NCHW", 0),
            ("identity", 1.0, 1e-5, "NCHW", 0)],
    "nhwc": [("leaky_relu", 0.1, 1e-5, "NHWC", 0), ("elu", 1.3, 1e-4, "NHWC", 0)],
    "training": [("leaky_relu", 0.2, 1e-5, "NCHW", 1), ("elu", 1.0, 1e-5, "NCHW", 1)],
}  # fmt: skip


def close(got: np.ndarray, want: np.ndarray) -> None:
    rel = np.max(np.abs(got.astype(np.float64) - want) / np.maximum(np.abs(want), 1.0))
    assert got.shape == want.shape and rel <= RTOL, rel


def moving_after(name: str) -> dict[str, np.ndarray]:
    prefix = f"{name}."
    return {k[len(prefix) : -len(".after")]: REF[k] for k in REF.files if k.startswith(prefix) and k.endswith(".after")}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_export_paddle_matches_paddle_in_the_session_and_folded(layout):
    network, model_path, params_path = LAYOUTS[layout]
    model = iabn_onnx.export_paddle(model_path, params_path)
    nodes = [n for n in model.graph.node if n.op_type == "InplaceABN"]
    ops = [op for op in read_program(PROGRAMS / network / "model.pdmodel").global_block.ops if op.type == "inplace_abn"]
    assert len(nodes) == len(ops) == len(EXPECTED[network])  # one node per op
    for node, (act, alpha, eps, data_layout, training) in zip(nodes, EXPECTED[network]):
        a = InplaceABNAttrs.from_node(node)
        assert (a.act.value, a.data_layout.value, a.training_mode) == (act, data_layout, training)
        assert a.act_alpha == pytest.approx(alpha, rel=1e-6) and a.epsilon == pytest.approx(eps, rel=1e-6)
    assert not any(n.domain == "Paddle" for n in model.graph.node)
    x, want = REF[f"{network}.x"], REF[f"{network}.y"]
    outputs = iabn_onnx.InferenceSession(model).run(None, {"x": x})
    close(outputs[0], want)
    if network == "training":  # the updated moving statistics are outputs, equal to Paddle's
        after = moving_after(network)
        names = [o.name for o in model.graph.output[1:]]
        assert sorted(n.removesuffix(".updated") for n in names) == sorted(after)
        for name, value in zip(names, outputs[1:]):
            close(value, after[name.removesuffix(".updated")])
        return
    folded = iabn_onnx.fold(model)
    assert not any(n.op_type == "InplaceABN" for n in folded.graph.node)
    plain = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"])
    close(plain.run(None, {"x": x})[0], want)


@pytest.mark.parametrize(
    ("network", "dirname", "kwargs"),
    [
        ("cnn", PROGRAMS / "cnn" / "model", {}),
        ("cnn", PROGRAMS / "cnn_vars", {}),
        ("cnn", PROGRAMS / "cnn_combined", {"params_filename": "__params__"}),
        ("cnn", PROGRAMS / "cnn_custom", {"model_filename": "network.prog", "params_filename": "weights.bin"}),
        ("nhwc", PROGRAMS / "nhwc" / "model", {}),
    ],
)
def test_paddle_inference_script_runs_with_only_the_import_changed(network, dirname, kwargs):
    exe = fluid.Executor(fluid.CPUPlace())
    assert exe.run(fluid.default_startup_program()) == []
    [program, feed_names, fetch_targets] = fluid.io.load_inference_model(str(dirname), exe, **kwargs)
    assert feed_names == ["x"] and len(fetch_targets) == 1
    (y,) = exe.run(program, feed={feed_names[0]: REF[f"{network}.x"]}, fetch_list=fetch_targets)
    close(y, REF[f"{network}.y"])
    scale = np.array(fluid.global_scope().find_var("batch_norm_0.w_0").get_tensor())
    assert (scale < 0).any()  # the fixture's negative γ, read as Paddle reads a variable


def test_training_program_updates_its_moving_statistics_as_paddle_does():
    exe = fluid.Executor(fluid.CPUPlace())
    [program, feeds, fetches] = fluid.io.load_inference_model(str(PROGRAMS / "training"), exe)
    before = {k: np.array(fluid.global_scope().find_var(k).get_tensor()) for k in moving_after("training")}
    (y,) = exe.run(program, feed={feeds[0]: REF["training.x"]}, fetch_list=fetches)
    close(y, REF["training.y"])
    for name, want in moving_after("training").items():
        close(before[name], REF[f"training.{name}.before"])
        close(np.array(fluid.global_scope().find_var(name).get_tensor()), want)
    exe.run(program, feed={feeds[0]: REF["training.x"]}, fetch_list=fetches)  # a second step moves them again
    changed = [n for n, want in moving_after("training").items() if not np.allclose(program.parameters[n], want)]
    assert changed


def test_feeds_are_checked():
    exe = fluid.Executor(fluid.CPUPlace())
    [program, _, fetches] = fluid.io.load_inference_model(str(PROGRAMS / "cnn" / "model"), exe)
    x = REF["cnn.x"]
    for feed, message in [
        ({}, "feed lacks 'x'"),
        ({"x": x, "y": x}, "feed names 'y'"),
        ({"x": x.astype(np.float64)}, "must be float32, got float64"),
        ({"x": x[:, :2]}, "must have shape [-1, 3, 8, 8], got [4, 2, 8, 8]"),
    ]:
        with pytest.raises(fluid.FluidError, match=re.escape(message)):
            exe.run(program, feed=feed, fetch_list=fetches)
    with pytest.raises(fluid.FluidError, match="not a fetch target"):
        exe.run(program, feed={"x": x}, fetch_list=["conv2d_0.tmp_0"])


def test_layer_built_program_runs_and_trains_its_moving_statistics():
    program = fluid.Program()
    with fluid.program_guard(program):
        x = fluid.data(name="x", shape=[4, 6, 3, 3], dtype="float32")
        y = fluid.layers.inplace_abn(input=x, act="leaky_relu", act_alpha=0.2, momentum=0.8)
    exe = fluid.Executor(fluid.CPUPlace())
    xv = np.random.default_rng(0).standard_normal((4, 6, 3, 3)).astype(np.float32)
    (out,) = exe.run(program, feed={"x": xv}, fetch_list=[y])
    x64 = xv.astype(np.float64)
    mean, var = x64.mean(axis=(0, 2, 3)), x64.var(axis=(0, 2, 3))  # biased, as Paddle's running update
    z = (x64 - mean.reshape(1, -1, 1, 1)) / np.sqrt(var.reshape(1, -1, 1, 1) + 1e-5)
    close(out, np.where(z >= 0, z, 0.2 * z))
    close(program.parameters["inplace_abn_0.w_1"], 0.2 * mean)  # moving = moving·m + batch·(1−m), from 0
    close(program.parameters["inplace_abn_0.w_2"], 0.8 + 0.2 * var)  # from 1


def test_cli_export_paddle_every_layout(tmp_path):
    for i, (network, model_path, params_path) in enumerate(LAYOUTS.values()):
        out = tmp_path / f"m{i}.onnx"
        args = [str(model_path), *([str(params_path)] if params_path else []), "-o", str(out)]
        proc = subprocess.run([sys.executable, "-m", "iabn_onnx.cli", "export-paddle", *args, "--fold"],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert f"{len(EXPECTED[network])} InplaceABN node(s)" in proc.stdout
        (y, *_) = iabn_onnx.InferenceSession(str(out)).run(None, {"x": REF[f"{network}.x"]})
        close(y, REF[f"{network}.y"])


# -- what must fail, cleanly ------------------------------------------------------------------------
def _program_with_unknown_op(tmp_path: Path) -> Path:
    folder = tmp_path / "unknown"
    shutil.copytree(PROGRAMS / "cnn", folder)
    data = (folder / "model.pdmodel").read_bytes()
    op_type = b"\x1a\x06concat"  # OpDesc.type, field 3: the same length keeps the message valid
    assert data.count(op_type) == 1
    (folder / "model.pdmodel").write_bytes(data.replace(op_type, b"\x1a\x06zoncat"))
    return folder / "model"


def test_unsupported_op_is_a_python_error_and_the_process_survives(tmp_path):
    prefix = _program_with_unknown_op(tmp_path)
    with pytest.raises(PaddleExportError, match="cannot convert these ops: zoncat"):
        iabn_onnx.export_paddle(prefix)
    # what the isolation prevents: paddle2onnx itself aborts its process on that op
    from iabn_onnx.exporters.paddle2onnx_child import CUSTOM_OPS

    bare = subprocess.run(
        [sys.executable, "-c", "import sys; from iabn_onnx.exporters.paddle2onnx_child import converter; "
         f"converter().export(sys.argv[1], sys.argv[2], 17, False, False, False, True, True, {CUSTOM_OPS!r}, "
         "'onnxruntime', '', '', False)", f"{prefix}.pdmodel", f"{prefix}.pdiparams"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bare.returncode < 0  # killed by a signal (SIGABRT)


@pytest.mark.parametrize("what", ["program", "params"])
def test_truncated_files_name_the_file(tmp_path, what):
    folder = tmp_path / "cut"
    shutil.copytree(PROGRAMS / "cnn", folder)
    target = folder / ("model.pdmodel" if what == "program" else "model.pdiparams")
    target.write_bytes(target.read_bytes()[: target.stat().st_size * 2 // 3])
    with pytest.raises(ProgramError if what == "program" else CheckpointError, match=re.escape(str(target))):
        iabn_onnx.export_paddle(folder / "model")


def test_missing_parameter_files_are_listed(tmp_path):
    folder = tmp_path / "vars"
    shutil.copytree(PROGRAMS / "cnn_vars", folder)
    (folder / "batch_norm_2.w_1").unlink()
    (folder / "conv2d_1.b_0").unlink()
    message = "2 of the program's 22 persistable variables have no file: batch_norm_2.w_1, conv2d_1.b_0"
    with pytest.raises(CheckpointError, match=re.escape(message)):
        iabn_onnx.export_paddle(folder)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: (tmp / "absent", None), "no such Paddle model"),
        (lambda tmp: (Path(__file__), None), "not a readable Paddle program"),
        (_program_with_unknown_op, "cannot convert these ops: zoncat"),
    ],
    ids=["missing", "foreign", "unsupported-op"],
)
def test_cli_failures_are_one_line_exit_2(tmp_path, make, message):
    made = make(tmp_path)
    model_path = made[0] if isinstance(made, tuple) else made
    proc = subprocess.run(
        [sys.executable, "-m", "iabn_onnx.cli", "export-paddle", str(model_path), "-o", str(tmp_path / "o.onnx")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr
    assert not (tmp_path / "o.onnx").exists()


def test_packaged_example_is_the_fixture():
    from iabn_onnx.examples import paddle_example_model

    prefix = Path(paddle_example_model())
    for suffix in (".pdmodel", ".pdiparams"):
        assert prefix.with_suffix(suffix).read_bytes() == (PROGRAMS / "cnn" / "model").with_suffix(suffix).read_bytes()
