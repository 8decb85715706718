"""A test run leaves nothing in the temporary directory but pytest's own ``pytest-of-<user>`` folder (and the
one file onnxruntime keeps there for every process).

Reference: the directory's listing before and after a run of tests that use the start-up cache, the fuzz
workers (each with its own cache folder) and the CLI, in a fresh temporary directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_run_removes_every_folder_it_makes(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("IABN_ONNX_CACHE_DIR", "PYTHONPATH")}
    env["TMPDIR"] = str(tmp)
    tests = [
        "tests/test_start_cache.py",
        "tests/test_corrupt_input.py::test_parameter_file_mutants",
        "tests/test_cli_mistakes.py",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    # onnxruntime 1.32 itself keeps one file, ``$TMPDIR/.ses`` (a timestamp and a session id), for every process
    left = sorted(p.name for p in tmp.iterdir() if not p.name.startswith("pytest-of-") and p.name != ".ses")
    assert left == [], left
