"""The extras table's benchmark: a fresh venv per install line, measured from outside it, and the table's wording.

The sizes are checked against `du` (coreutils), the venv's contents against its own pip's listing, and the
rendered cells against hand-made inventories (a CUDA torch, a CPU torch, nothing beyond the base install).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import bench_install_size as bench  # noqa: E402
from benchmarks.report import _took  # noqa: E402


@pytest.mark.skipif(shutil.which("du") is None, reason="needs coreutils du")
def test_tree_bytes_equals_du_apparent_size(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"x" * 12345)
    (tmp_path / "g").write_bytes(b"y" * 7)
    (tmp_path / "link").symlink_to(tmp_path / "g")  # counted as the link, not its target
    du = subprocess.run(["du", "-sb", "--apparent-size", str(tmp_path)], capture_output=True, text=True, check=True)
    dirs = sum(p.lstat().st_size for p in [tmp_path, tmp_path / "a"])  # du also counts the folders themselves
    assert bench.tree_bytes(tmp_path) == int(du.stdout.split()[0]) - dirs


def test_a_fresh_venv_holds_what_its_pip_installed_and_is_removed(tmp_path):
    line = bench.install_lines(bench.CPU_TORCH)["base"]
    row = bench.measure_line("base", line, tmp_path, ["--no-deps"])
    assert row["commands"] == ["pip install -e ."]
    assert row["distributions"] == {"iabn-onnx": "0.1.0"}  # pip and setuptools were there before
    assert 0 < row["mb"] < 5
    assert row["iabn_onnx_version"][0].startswith("iabn-onnx 0.1.0")
    assert row["pip"].startswith("pip ")
    assert not (tmp_path / "base").exists()


def test_lines_are_the_readmes_install_commands():
    lines = bench.install_lines("torch==2.13.0")
    assert set(lines) == {"base", "torch", "torch-cpu", "paddle", "bench", "test"}
    assert lines["torch-cpu"]["pip"] == [["torch==2.13.0"], ["-e", ".[torch]"]]
    assert lines["torch-cpu"]["pypi"] is False and all(lines[n]["pypi"] for n in lines if n != "torch-cpu")
    assert {line["extra"] for line in lines.values()} == set(bench.PURPOSE)


def test_the_cell_names_torchs_build_and_the_largest_others():
    base = {"numpy": "2.4.6", "onnx": "1.23.2"}
    cuda = {**base, "torch": "2.14.1", "triton": "3.7.1", "nvidia-cublas": "13", "nvidia-cudnn-cu13": "9",
            "sympy": "1.14.0", "networkx": "3.6.1", "jinja2": "3.1.6"}
    mb = {"sympy": 70.0, "networkx": 20.0, "jinja2": 1.0, "torch": 900.0}
    assert _took(cuda, mb, base) == (
        "torch 2.14.1 (the CUDA build: 2 `nvidia-*` distributions, triton 3.7.1), sympy 1.14.0, networkx 3.6.1; "
        "7 distributions"
    )
    cpu = {**base, "torch": "2.13.0+cpu", "sympy": "1.14.0"}
    assert _took(cpu, mb, base) == "torch 2.13.0+cpu (the CPU build), sympy 1.14.0; 2 distributions"
    assert _took(base, mb, base) == "nothing beyond the base install"
    assert _took(base, {"numpy": 30.0, "onnx": 9.0}, {}) == "numpy 2.4.6, onnx 1.23.2; 2 distributions"


def test_pip_configuration_reads_constraint_files_and_local_wheels(tmp_path, monkeypatch):
    (tmp_path / "c.txt").write_text("# a cap\ntorch<=2.14.1\n")
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    listed = f"global.constraint='{tmp_path / 'c.txt'}'\nglobal.find-links='{tmp_path / 'wheels'}'\n"
    monkeypatch.setattr(bench, "_run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 0, listed, ""))
    told = bench.pip_configuration()
    assert told["constraints"] == ["torch<=2.14.1"]
    assert told["find_links_wheels"] == ["torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"]
    json.dumps(told)
