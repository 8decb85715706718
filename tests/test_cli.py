"""The iabn-onnx CLI: every subcommand, and each error exit."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import iabn_onnx
from iabn_onnx.examples import conv_net_model
from tests.conftest import assert_close, rng


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iabn_onnx.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "net.onnx"
    onnx.save(conv_net_model(channels=8, image=8), path)
    return path


def test_fold_writes_equivalent_standard_model_and_verifies(model_path, tmp_path):
    out = tmp_path / "folded.onnx"
    proc = cli("fold", str(model_path), "-o", str(out), "--verify", "--batch", "2")
    assert proc.returncode == 0, proc.stderr
    assert "4 folded into producers, 0 rewritten as standard ops, 0 left" in proc.stdout
    assert "verify Y: max abs diff" in proc.stdout
    folded = onnx.load(out)
    assert not any(n.domain == iabn_onnx.DOMAIN for n in folded.graph.node)
    x = rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    want = iabn_onnx.InferenceSession(model_path, fold_frozen=False).run(None, {"X": x})[0]
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    assert_close(got, want, np.float32)


def test_fold_refuses_to_overwrite_input(model_path):
    before = model_path.read_bytes()
    proc = cli("fold", str(model_path), "-o", str(model_path))
    assert proc.returncode == 2
    assert "exists (pass --force to overwrite it)" in proc.stderr
    assert model_path.read_bytes() == before


def test_run_saves_outputs_matching_session(model_path, tmp_path):
    x = rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", X=x)
    proc = cli("run", str(model_path), "--inputs", str(tmp_path / "in.npz"), "--save", str(tmp_path / "out.npz"))
    assert proc.returncode == 0, proc.stderr
    assert "Y: shape=[3, 10]" in proc.stdout
    with np.load(tmp_path / "out.npz") as out:
        want = iabn_onnx.InferenceSession(model_path, fold_frozen=False).run(None, {"X": x})[0]
        assert_close(out["Y"], want, np.float32)


def test_check_reports_nodes_and_fold_plan(model_path):
    proc = cli("check", str(model_path))
    assert proc.returncode == 0, proc.stderr
    assert "4 InplaceABN node(s)" in proc.stdout
    assert "fold: folded abn0: into Conv 'conv0'" in proc.stdout


def test_check_rejects_bad_model_with_exit_1(tmp_path):
    model = conv_net_model(channels=8, image=8)
    for a in model.graph.node[1].attribute:
        if a.name == "act":
            a.s = b"relu"
    path = tmp_path / "bad.onnx"
    onnx.save(model, path)
    proc = cli("check", str(path))
    assert proc.returncode == 1
    assert "abn0" in proc.stderr and "act" in proc.stderr


def test_bench_prints_both_rows(model_path):
    proc = cli("bench", str(model_path), "--repeat", "3")
    assert proc.returncode == 0, proc.stderr
    for row in ("plugin (default session)", "plugin, every node in the kernel", "folded, plain onnxruntime"):
        assert row in proc.stdout
    assert proc.stderr == ""  # progress goes to a terminal only


def test_demo_runs_and_reports_fold_difference():
    proc = cli("demo", "--repeat", "3", "--batch", "2")
    assert proc.returncode == 0, proc.stderr
    assert "4 InplaceABN nodes" in proc.stdout
    assert "default session" in proc.stdout and "folded model, plain onnxruntime" in proc.stdout
    assert "(kernel_only=True)" in proc.stdout and "first runs include one-time set-up" in proc.stdout
    assert "BatchNormalization (onnxruntime folds it into Conv 'conv0' at load)" in proc.stdout  # the routes
    diffs = [float(part.split(")")[0]) for part in proc.stdout.split("max |diff| ")[1:]]
    assert len(diffs) == 3 and max(diffs) < 1e-4


@pytest.mark.parametrize("sub", ["fold", "run", "check", "convert", "bench"])
@pytest.mark.parametrize("kind", ["missing", "empty", "not_onnx", "truncated"])
def test_file_errors_exit_2_with_one_line(sub, kind, tmp_path, model_path):
    path = tmp_path / "in.onnx"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "not_onnx":
        path.write_text("hello, I am a text file\n")
    elif kind == "truncated":
        data = model_path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    extra = ["-o", str(tmp_path / "out.onnx")] if sub in ("fold", "convert") else []
    proc = cli(sub, str(path), *extra)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"iabn-onnx {sub}: error:")
    assert not (tmp_path / "out.onnx").exists()


def test_usage_errors_exit_2():
    assert cli().returncode == 2
    assert cli("fold", "x.onnx").returncode == 2  # missing -o
    for sub in ("demo", "run", "check", "fold", "convert", "bench"):
        proc = cli(sub, "--help")
        assert proc.returncode == 0 and "usage:" in proc.stdout


def test_fold_keeps_external_data_and_reports_progress_to_a_terminal(tmp_path, capsys, monkeypatch):
    """A model whose tensors live in external data is folded and written with external data."""
    from onnx.external_data_helper import uses_external_data

    from iabn_onnx.cli import main

    source = tmp_path / "ext.onnx"
    model = conv_net_model(channels=8, image=8)
    on_disk = onnx.ModelProto()
    on_disk.CopyFrom(model)  # onnx.save with external data empties the tensors of what it saves
    onnx.save(on_disk, source, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    out = tmp_path / "out" / "folded.onnx"
    out.parent.mkdir()  # an output's folder must exist: the CLI creates none
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["fold", str(source), "-o", str(out), "--verify"]) == 0
    err = capsys.readouterr().err
    assert "loaded" in err and "writing" in err and "verifying" in err
    assert (tmp_path / "out" / "folded.onnx.data").is_file()
    header = onnx.load(out, load_external_data=False)
    assert any(uses_external_data(t) for t in header.graph.initializer)
    folded = onnx.load(out)
    x = rng(4).standard_normal((2, 3, 8, 8)).astype(np.float32)
    want = iabn_onnx.InferenceSession(model, fold_frozen=False).run(None, {"X": x})[0]
    got = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    assert_close(got, want, np.float32)
