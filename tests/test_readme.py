"""Every command and snippet in README.md and docs/ runs, so the pages cannot rot.

* The README's two set-up commands: the test command is exactly ``.ci/run``'s (CI runs it); the demo half of the
  first one runs here (the ``pip install`` halves are what CI's fresh install does).
* Every ```python block of README.md and docs/*.md runs as a saved script (``python snippet.py``) from an empty
  folder, with the repository off ``sys.path``, as a user would run it. A line ``print(...)    # expected`` must
  print ``expected``.
* The README's other ```bash lines run in order, as one shell script, from one empty folder, with the package
  as installed: what a reader does after ``pip install`` (``iabn-onnx examples`` writes the files they use).
* docs/benchmarks.md's ```bash lines are the benchmark scripts: each runs in a scratch folder of a checkout, with
  flags that shrink it (fewer sizes, one repeat), writing its results there.
* Every report block in those pages is what ``benchmarks/report.py`` renders from the results files; the README
  has at most 300 lines, and every relative link in the pages points to a file that exists.
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
DOCS = {p.name: p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}
SETUP_DEMO = "pip install -e . && iabn-onnx demo"
SETUP_TESTS = 'pip install -e ".[test]" && python -m pytest -q'


def _blocks(language: str, text: str = README) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def _bash_lines(text: str = README) -> list[str]:
    return [line.strip() for block in _blocks("bash", text) for line in block.splitlines() if line.strip()]


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
    # one fresh venv each for the base and one extra, the project alone (no network for its dependencies)
    "benchmarks/bench_install_size.py": "--lines base paddle --pip-option=--no-deps --no-pypi --json i.json",
    "benchmarks/bench_paddle.py": "--batches 1 --repeat 1 --side 32 --width 8 --json p.json",
    "benchmarks/bench_quantize.py": "--networks wider_resnet20 --batches 1 --repeat 1 --json q.json",
    "benchmarks/bench_weight_bits.py": "--no-network --samples 4 --json wb.json",
    # the scratch copies of the pages, not the repository's
    "benchmarks/report.py": "--pages README.md docs/benchmarks.md docs/deployment.md",
}
README_COMMANDS = [line for line in _bash_lines() if not line.startswith("pip install")]
BENCHMARK_COMMANDS = _bash_lines(DOCS["benchmarks.md"])


def _outside_env() -> dict[str, str]:
    """The environment without the repository on PYTHONPATH: the package comes from its install. The running
    interpreter's scripts come first on PATH, as in an activated venv: ``python`` and ``iabn-onnx`` are those of
    the install under test (the floor job runs its venv's python without activating it)."""
    env = dict(os.environ)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != ROOT]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def test_setup_commands_are_the_documented_two_and_ci_runs_the_test_command():
    setup = [line for line in _bash_lines() if line.startswith("pip install")]
    assert setup == [SETUP_DEMO, SETUP_TESTS]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert SETUP_TESTS in [line.strip() for line in ci]


def test_demo_runs(tmp_path):
    command = SETUP_DEMO.split("&&", 1)[1].strip()
    proc = subprocess.run(
        shlex.split(command), cwd=tmp_path, env=_outside_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "InplaceABN nodes" in proc.stdout and "max |diff|" in proc.stdout


SNIPPETS = [(name, s) for name, text in [("README.md", README), *DOCS.items()] for s in _blocks("python", text)]


@pytest.mark.parametrize(
    ("page", "snippet"), SNIPPETS, ids=[f"{p}:{s.strip().splitlines()[0][:40]}" for p, s in SNIPPETS]
)
def test_python_snippet(page, snippet, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "snippet.py").write_text(snippet)
    proc = subprocess.run(
        [sys.executable, "snippet.py"], cwd=folder, env=_outside_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    for expected in re.findall(r"^print\(.*\)\s+#\s+(.+)$", snippet, flags=re.M):
        assert expected.strip() in proc.stdout, (expected, proc.stdout)


def test_readme_commands_run_in_order_from_an_empty_folder(tmp_path):
    """As a reader types them after ``pip install``: one shell, one empty folder, the installed package."""
    assert README_COMMANDS and README_COMMANDS[0].startswith("iabn-onnx examples")
    lines = []
    for command in README_COMMANDS:
        lines += [f"echo '$ {command}'", command]
    script = "set -e\n" + "\n".join(lines) + "\n"
    proc = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=_outside_env(), capture_output=True, text=True, timeout=900
    )
    ran = [line[2:] for line in proc.stdout.splitlines() if line.startswith("$ ")]
    assert proc.returncode == 0, f"failed at: {ran[-1] if ran else '?'}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert ran == README_COMMANDS


def _scratch(tmp_path: Path) -> Path:
    (tmp_path / "models").symlink_to(ROOT / "models")
    (tmp_path / "benchmarks").symlink_to(ROOT / "benchmarks")
    (tmp_path / "tests").symlink_to(ROOT / "tests")  # the Paddle checkpoint fixtures
    (tmp_path / "README.md").write_text(README)
    (tmp_path / "docs").mkdir()
    for name, text in DOCS.items():
        (tmp_path / "docs" / name).write_text(text)
    return tmp_path


#: what a command needs beyond the test extra (CI installs it; elsewhere the command is skipped)
NEEDS = {"benchmarks/bench_paddle.py": "paddle"}


@pytest.mark.parametrize("command", BENCHMARK_COMMANDS)
def test_benchmark_command(command, tmp_path):
    args = shlex.split(command)
    assert args[0] == "python" and args[1] in SHRINK, f"{command}: add its quick flags to SHRINK"
    needed = NEEDS.get(args[1])
    if needed and importlib.util.find_spec(needed) is None:
        pytest.skip(f"{args[1]} needs {needed}")
    args = [sys.executable, *args[1:], *shlex.split(SHRINK[args[1]])]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(args, cwd=_scratch(tmp_path), env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.strip(), "every documented command reports what it did"


def test_every_figure_is_rendered_from_the_results():
    """Every report block in the pages is exactly what benchmarks/report.py renders from the JSON."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import report

    found = set()
    for page in report.PAGES:
        text = page.read_text()
        for name in report.BLOCKS:
            for match in report.block_pattern(name).finditer(text):
                found.add(name)
                assert match.group(1) == report.render(name), f"{page.name} block {name!r}: run report.py --write"
    assert found == set(report.BLOCKS)


def test_readme_is_short_and_every_link_exists():
    assert len(README.splitlines()) <= 300
    for name, text in [("README.md", README), *(("docs/" + n, t) for n, t in DOCS.items())]:
        base = ROOT if name == "README.md" else ROOT / "docs"
        for target in re.findall(r"\]\(([^)#]+?)\)", text):
            if "://" not in target:
                assert (base / target).exists(), f"{name} links to {target}, which does not exist"
