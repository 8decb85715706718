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
        ({"torch"}, ["export-torch", "m:build", "--input-shape", "1,3,8,8", "-o", "o.onnx"], "torch"),
        ({"paddle2onnx"}, ["export-paddle", "{prefix}", "-o", "o.onnx"], "paddle"),
    ],
    ids=["export-torch", "export-paddle"],
)
def test_a_missing_extra_is_exit_2_and_one_line(tmp_path, hidden, args, says):
    from iabn_onnx.examples import paddle_example_model
    from iabn_onnx.extras import install_line

    prefix = paddle_example_model()
    proc = _cli(tmp_path, hidden, *[a.replace("{prefix}", prefix) for a in args])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].endswith(install_line(says)), proc.stderr
    assert "ImportError" not in lines[0] and not (tmp_path / "o.onnx").exists()


class _Dist:
    """An installed copy of the metadata, as importlib.metadata gives it: only direct_url.json is read."""

    def __init__(self, direct_url: str | None) -> None:
        self.direct_url = direct_url

    def read_text(self, name: str) -> str | None:
        return self.direct_url if name == "direct_url.json" else None


@pytest.mark.parametrize(
    ("copies", "line"),
    [
        ([None], "pip install 'iabn-onnx[paddle]'"),  # a wheel from an index: pip records no direct_url.json
        (['{"url": "file:///home/u/iabn%20onnx", "dir_info": {"editable": true}}'],
         "pip install -e '/home/u/iabn onnx[paddle]'"),
        (['{"url": "file:///src/iabn", "dir_info": {}}'], "pip install '/src/iabn[paddle]'"),
        (['{"url": "https://example.org/iabn.whl", "archive_info": {}}'], "pip install 'iabn-onnx[paddle]'"),
        ([None, '{"url": "file:///src/iabn", "dir_info": {"editable": true}}'], "pip install -e '/src/iabn[paddle]'"),
        (["{not json", '["a list"]'], "pip install 'iabn-onnx[paddle]'"),
    ],
    ids=["index", "editable-checkout", "folder", "url", "egg-info-first", "damaged"],
)  # fmt: skip
def test_the_install_line_names_where_this_copy_came_from(monkeypatch, copies, line):
    from importlib import metadata

    from iabn_onnx.extras import install_line

    monkeypatch.setattr(metadata, "distributions", lambda **kw: [_Dist(c) for c in copies])
    assert install_line("paddle") == line
    assert install_line("torch") == line.replace("[paddle]", "[torch]") + (
        " (for the CPU build, first: pip install torch --index-url https://download.pytorch.org/whl/cpu)"
    )


def test_pip_accepts_the_install_line_of_this_checkout():
    import shlex

    from iabn_onnx.extras import install_line

    words = shlex.split(install_line("paddle"))
    assert words[:2] == ["pip", "install"]
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", *words[2:]], cwd=ROOT,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "iabn-onnx" in proc.stdout
