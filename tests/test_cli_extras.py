"""A missing extra, from every command that needs one: exit 2, one stderr line naming the pip install.

The extras are installed where the suite runs, so each case hides one from a fresh interpreter: a
``sitecustomize`` on its path puts a finder first on ``sys.meta_path`` that refuses the extra's modules, as
an interpreter without them would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HIDE = """
import importlib.abc, sys
class _Hidden(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {hidden!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _Hidden())
"""


def _cli(tmp_path: Path, hidden: set[str], *args: str) -> subprocess.CompletedProcess:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(HIDE.format(hidden=sorted(hidden)))
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"}
    return subprocess.run(
        [sys.executable, "-m", "iabn_onnx.cli", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("hidden", "args", "says"),
    [
        ({"torch"}, ["export-torch", "m:build", "--input-shape", "1,3,8,8", "-o", "o.onnx"], "iabn-onnx[torch]"),
        ({"paddle2onnx"}, ["export-paddle", "{prefix}", "-o", "o.onnx"], "iabn-onnx[paddle]"),
    ],
    ids=["export-torch", "export-paddle"],
)
def test_a_missing_extra_is_exit_2_and_one_line(tmp_path, hidden, args, says):
    from iabn_onnx.examples import paddle_example_model

    prefix = paddle_example_model()
    proc = _cli(tmp_path, hidden, *[a.replace("{prefix}", prefix) for a in args])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and f"pip install '{says}'" in lines[0], proc.stderr
    assert "ImportError" not in lines[0] and not (tmp_path / "o.onnx").exists()
