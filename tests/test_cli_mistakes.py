"""CLI mistakes: each exits 1 (model rejected) or 2 (usage, file, input), with exactly one stderr line,
no traceback, and nothing written. Each runs in a real process, as a user would see it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from iabn_onnx.examples import conv_net_model
from tests.bad_models import MODEL_CASES


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "iabn_onnx.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "net.onnx"
    onnx.save(conv_net_model(channels=8, image=8), path)  # input X: [N, 3, 8, 8] float32
    return path


def _write(tmp: Path) -> None:
    """Input files some mistakes need (they exist before the command runs)."""
    (tmp / "a_dir").mkdir()
    (tmp / "dir.npz").mkdir()
    (tmp / "text.npy").write_text("not an array\n")
    x = np.zeros((2, 3, 8, 8), np.float32)
    np.save(tmp / "x.npy", x)
    np.save(tmp / "x2.npy", x)
    np.save(tmp / "wrong_shape.npy", np.zeros((2, 4, 8, 8), np.float32))
    np.save(tmp / "wrong_dtype.npy", x.astype(np.float64))
    np.savez(tmp / "wrong_key.npz", Z=x)
    np.save(tmp / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp / "a_file").write_text("")
    (tmp / "kept.onnx").write_text("a user's file, not to be replaced\n")
    (tmp / "kept.npz").write_text("a user's file, not to be replaced\n")
    (tmp / "notes.txt").write_text("not an ONNX model at all, just some notes\n")
    onnx.save(MODEL_CASES["unknown_act"][0](), tmp / "bad.onnx")


M = "{model}"
# (case id, arguments, exit code, what the error line must say)
MISTAKES = [
    ("fold-output-is-a-directory", ["fold", M, "-o", "a_dir"], 2, "is a directory"),
    ("fold-output-unwritable", ["fold", M, "-o", "/proc/nope.onnx"], 2, "cannot write /proc/nope.onnx"),
    ("fold-output-under-a-file", ["fold", M, "-o", "a_file/sub/x.onnx"], 2, "cannot write"),
    ("convert-output-is-a-directory", ["convert", M, "-o", "a_dir"], 2, "is a directory"),
    ("run-batch-negative", ["run", M, "--batch", "-1"], 2, "must be >= 1"),
    ("run-batch-not-a-number", ["run", M, "--batch", "abc"], 2, "whole number"),
    ("demo-batch-negative", ["demo", "--batch", "-3"], 2, "must be >= 1"),
    ("demo-batch-zero", ["demo", "--batch", "0"], 2, "must be >= 1"),
    ("demo-repeat-zero", ["demo", "--repeat", "0"], 2, "must be >= 1"),
    ("bench-repeat-zero", ["bench", M, "--repeat", "0"], 2, "must be >= 1"),
    ("run-inputs-text-file", ["run", M, "--inputs", "text.npy"], 2, "cannot read input file text.npy"),
    ("run-inputs-object-array", ["run", M, "--inputs", "objects.npy"], 2, "cannot read input file objects.npy"),
    ("run-inputs-missing-file", ["run", M, "--inputs", "nope.npy"], 2, "no such input file: nope.npy"),
    ("run-inputs-two-arrays-one-input", ["run", M, "--inputs", "x.npy", "x2.npy"], 2, "one array too many"),
    ("run-inputs-wrong-shape", ["run", M, "--inputs", "wrong_shape.npy"], 2, "'X' expects shape ["),
    ("run-inputs-wrong-dtype", ["run", M, "--inputs", "wrong_dtype.npy"], 2, "float32, got shape [2, 3, 8, 8] float64"),
    ("run-inputs-npz-wrong-key", ["run", M, "--inputs", "wrong_key.npz"], 2, "holds 'Z', which is not an input"),
    ("run-save-is-a-directory", ["run", M, "--save", "dir.npz"], 2, "is a directory"),
    ("run-invalid-model", ["run", "bad.onnx"], 1, "unknown act 'relu'"),
    ("fold-invalid-model", ["fold", "bad.onnx", "-o", "out.onnx"], 1, "unknown act 'relu'"),
    ("convert-invalid-model", ["convert", "bad.onnx", "-o", "out.onnx"], 1, "unknown act 'relu'"),
    ("check-invalid-model", ["check", "bad.onnx"], 1, "unknown act 'relu'"),
    ("fold-missing-output-option", ["fold", M], 2, "-o/--output"),
    ("unknown-command", ["frobnicate"], 2, "invalid choice"),
    ("no-command", [], 2, "required"),
    ("fold-unknown-option", ["fold", M, "-o", "out.onnx", "--fast"], 2, "unrecognized arguments"),
    # one rule for every command that writes a file: an existing file is kept without --force, and a
    # missing folder is not created
    ("fold-output-exists", ["fold", M, "-o", "kept.onnx"], 2, "kept.onnx exists (pass --force"),
    ("convert-output-exists", ["convert", M, "-o", "kept.onnx"], 2, "kept.onnx exists (pass --force"),
    ("fold-overwrites-its-input", ["fold", "bad.onnx", "-o", "bad.onnx"], 2, "bad.onnx exists (pass --force"),
    ("run-save-exists", ["run", M, "--save", "kept.npz"], 2, "kept.npz exists (pass --force"),
    ("fold-output-folder-missing", ["fold", M, "-o", "no/such/dir/out.onnx"], 2, "no such folder no/such/dir"),
    ("convert-output-folder-missing", ["convert", M, "-o", "nodir/out.onnx"], 2, "no such folder nodir"),
    # no option prefixes: --out is not --output, --input is not --inputs
    ("fold-option-prefix", ["fold", M, "--out", "out.onnx"], 2, "--out"),
    ("run-option-prefix", ["run", M, "--input", "x.npy"], 2, "--input"),
    (
        "quantize-no-calibration-file",
        ["quantize", M, "--calibration", "nope.npz", "-o", "q.onnx"],
        2,
        "no such calibration file: nope.npz",
    ),
    (
        "quantize-calibration-text-file",
        ["quantize", M, "--calibration", "notes.txt", "-o", "q.onnx"],
        2,
        "notes.txt: not a NumPy .npz file (expected a .npz of arrays by input name)",
    ),
    (
        "quantize-calibration-pickled-objects",
        ["quantize", M, "--calibration", "objects.npy", "-o", "q.onnx"],
        2,
        "objects.npy: a pickled object",
    ),
    (
        "quantize-calibration-npy-wrong-shape",
        ["quantize", M, "--calibration", "wrong_shape.npy", "-o", "q.onnx"],
        2,
        "input 'X' samples have shape [4, 8, 8], the model wants [3, 8, 8]",
    ),
    (
        "quantize-check-output-unknown",
        ["quantize", M, "--calibration", "x.npy", "--check", "x.npy", "--check-output", "nope", "-o", "q.onnx"],
        2,
        "check output 'nope' is not an output of the model",
    ),
    # an unreadable model file: one wording, whichever command reads it
    (
        "run-not-a-model",
        ["run", "notes.txt"],
        2,
        "notes.txt: not a valid ONNX model: the protobuf wire format is corrupt",
    ),
    (
        "check-not-a-model",
        ["check", "notes.txt"],
        2,
        "notes.txt: not a valid ONNX model: the protobuf wire format is corrupt",
    ),
    (
        "fold-not-a-model",
        ["fold", "notes.txt", "-o", "o.onnx"],
        2,
        "notes.txt: not a valid ONNX model: the protobuf wire format is corrupt",
    ),
    (
        "convert-not-a-model",
        ["convert", "notes.txt", "-o", "o.onnx"],
        2,
        "notes.txt: not a valid ONNX model: the protobuf wire format is corrupt",
    ),
]


@pytest.mark.parametrize(("args", "code", "says"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_mistake_gives_one_line_and_writes_nothing(args, code, says, model_path, tmp_path):
    _write(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = cli(*[str(model_path) if a == M else a for a in args], cwd=tmp_path)
    lines = proc.stderr.splitlines()
    assert proc.returncode == code, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("iabn-onnx") and "error:" in lines[0], lines[0]
    assert says in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "kept.onnx").read_text() == "a user's file, not to be replaced\n"


def test_mistakes_matrix_is_large_enough():
    assert len(MISTAKES) >= 15


def test_closed_stdout_ends_quietly(model_path, tmp_path):
    """`iabn-onnx check m.onnx | head -1`: no BrokenPipeError traceback."""
    proc = subprocess.run(
        f"{sys.executable} -m iabn_onnx.cli check {model_path} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.stdout.count("\n") == 1
    assert proc.stderr == ""


def test_run_save_names_the_file_it_wrote(model_path, tmp_path):
    proc = cli("run", str(model_path), "--save", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "saved outputs to out.npz" in proc.stdout
    assert (tmp_path / "out.npz").is_file() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("external", [False, True], ids=["inline", "external-data"])
def test_failed_verify_writes_nothing(model_path, tmp_path, capsys, monkeypatch, external):
    """--verify runs before the rename: a folded model that differs is never written, nor its data file."""
    from iabn_onnx import cli as cli_module
    from iabn_onnx.passes import fold as fold_module

    source = model_path
    if external:  # an input with external data is written with external data: OUT and OUT.data
        source = tmp_path / "in" / "ext.onnx"
        source.parent.mkdir()
        onnx.save(onnx.load(model_path), source, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    real = fold_module.fold_with_report

    def broken_fold(model, **kwargs):
        folded, report = real(model, **kwargs)
        conv = folded.graph.node[0]
        weight = next(t for t in folded.graph.initializer if t.name == conv.input[1])
        weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) * 1.5, weight.name))
        return folded, report

    monkeypatch.setattr(fold_module, "fold_with_report", broken_fold)
    code = cli_module.main(["fold", str(source), "-o", str(out_dir / "out.onnx"), "--verify"])
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    assert len(err) == 1 and "verify failed: output Y differs" in err[0], err
    assert list(out_dir.iterdir()) == []


def test_every_option_has_help():
    from iabn_onnx.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    assert {c.dest for c in sub._choices_actions} == set(sub.choices)
    assert all(c.help for c in sub._choices_actions)
    for name, command in sub.choices.items():
        for action in command._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
