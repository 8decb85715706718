"""Every command and snippet in README.md runs, so the README cannot rot.

* The two set-up commands: the test command is exactly ``.ci/run``'s (CI runs it); the demo half of the
  first one runs here (the ``pip install`` halves are what CI's fresh install does).
* Every ```python block runs as a saved script (``python snippet.py``) from an empty temporary folder, with the
  repository off ``sys.path``, as a user would run it: a snippet that needs the checkout's ``tests/`` or
  ``models/`` fails. A line ``print(...)    # expected`` must print ``expected``.
* Every other ```bash line runs in that scratch directory; benchmark scripts get flags that shrink them
  (fewer sizes, one repeat) and write their results to the scratch directory.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SETUP_DEMO = "pip install -e . && iabn-onnx demo"
SETUP_TESTS = 'pip install -e ".[test]" && python -m pytest -q'


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _bash_lines() -> list[str]:
    return [line.strip() for block in _blocks("bash") for line in block.splitlines() if line.strip()]


# benchmark scripts: extra flags that make them finish in seconds (results go to the scratch dir)
SHRINK = {
    "benchmarks/bench_single_node.py": "--shapes 1,64,7,7 --budget 0.01 --json s.json --png s.png",
    "benchmarks/bench_networks.py": "--networks resnet50 --batches 1 --repeat 1 --no-rss --json n.json --png n.png",
    "benchmarks/bench_kernel.py": "--repeat 5 --json k.json",
    "benchmarks/bench_routes.py": "--shapes 1,8,4,4 --budget 0.01 --json r.json",
    "benchmarks/bench_fold.py": "--layers 20 --repeat 1 --json f.json",
    "benchmarks/bench_session_churn.py": "--sessions 20 --json c.json",
    "benchmarks/bench_startup.py": "--repeat 1 --json st.json",
    "benchmarks/bench_session_startup.py": "--networks wider_resnet20 --processes 1 --json ss.json",
    "benchmarks/bench_plain_export.py": "--networks wider_resnet20 --batches 1 --rounds 2 --calls 1 --json pe.json",
    "benchmarks/bench_install_size.py": "--json i.json",
    "benchmarks/bench_paddle.py": "--batches 1 --repeat 1 --side 32 --width 8 --json p.json",
    "benchmarks/report.py": "--readme README.md",  # the scratch copy, not the repository's README
}
COMMANDS = [line for line in _bash_lines() if not line.startswith("pip install")]


def _scratch(tmp_path: Path) -> Path:
    (tmp_path / "models").symlink_to(ROOT / "models")
    (tmp_path / "benchmarks").symlink_to(ROOT / "benchmarks")
    (tmp_path / "tests").symlink_to(ROOT / "tests")  # the Paddle checkpoint fixtures
    (tmp_path / "README.md").write_text(README)
    return tmp_path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def test_setup_commands_are_the_documented_two_and_ci_runs_the_test_command():
    setup = [line for line in _bash_lines() if line.startswith("pip install")]
    assert setup == [SETUP_DEMO, SETUP_TESTS]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert SETUP_TESTS in [line.strip() for line in ci]


def test_demo_runs(tmp_path):
    command = SETUP_DEMO.split("&&", 1)[1].strip()
    proc = subprocess.run(
        shlex.split(command), cwd=_scratch(tmp_path), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "InplaceABN nodes" in proc.stdout and "max |diff|" in proc.stdout


def _outside_env() -> dict[str, str]:
    """The environment without the repository on PYTHONPATH: the package comes from its install."""
    env = dict(os.environ)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != ROOT]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


@pytest.mark.parametrize("snippet", _blocks("python"), ids=lambda s: s.strip().splitlines()[0][:40])
def test_python_snippet(snippet, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "snippet.py").write_text(snippet)
    proc = subprocess.run(
        [sys.executable, "snippet.py"], cwd=folder, env=_outside_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    for expected in re.findall(r"^print\(.*\)\s+#\s+(.+)$", snippet, flags=re.M):
        assert expected.strip() in proc.stdout, (expected, proc.stdout)


#: what a command needs beyond the test extra (CI installs it; elsewhere the command is skipped)
NEEDS = {"benchmarks/bench_paddle.py": "paddle"}


@pytest.mark.parametrize("command", COMMANDS)
def test_bash_command(command, tmp_path):
    args = shlex.split(command)
    needed = NEEDS.get(args[1]) if len(args) > 1 else None
    if needed and importlib.util.find_spec(needed) is None:
        pytest.skip(f"{args[1]} needs {needed}")
    if args[0] == "python" and len(args) > 1 and args[1].startswith("benchmarks/"):
        # without a shrink entry, a benchmark would write its full results over the repository's
        assert args[1] in SHRINK, f"{args[1]}: add its quick flags to SHRINK"
    if args[0] == "python" and len(args) > 1 and args[1] in SHRINK:
        args = [sys.executable, *args[1:], *shlex.split(SHRINK[args[1]])]
    elif args[0] == "python":
        args[0] = sys.executable
    proc = subprocess.run(args, cwd=_scratch(tmp_path), env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.strip(), "every documented command reports what it did"


def test_readme_figures_are_rendered_from_the_results():
    """Every report block in the README is exactly what benchmarks/report.py renders from the JSON."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import report

    for name in report.BLOCKS:
        match = report.block_pattern(name).search(README)
        assert match, f"README has no <!-- report:{name} --> block"
        assert match.group(1) == report.render(name), f"README block {name!r}: run python benchmarks/report.py --write"
