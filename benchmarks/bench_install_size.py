"""What each install line of the README puts on disk, as pip resolves it: every line runs in a venv of its own,
made fresh with `python -m venv` and given exactly that line's `pip install` commands from the repository.

Measured per line: the venv's size on disk beyond an empty venv's, the distributions pip chose (torch's version
and build among them), the time the install took, and `iabn-onnx --version` from the new venv. Each venv is
removed once measured. pip's own configuration on the machine (an index, a constraint file) decides what it
resolves, so it is recorded too, and each line is also resolved from PyPI alone, as a user's machine with no
configuration would (a dry run: the distributions and their download sizes; `--no-pypi` skips it).

    python benchmarks/bench_install_size.py [--lines base torch ...] [--json benchmarks/results/install_size.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: what each extra is for (the README's extras table)
PURPOSE = {
    "": "sessions, fold, convert, quantize, building programs with `fluid`, the CLI",
    "torch": "export_torch, the torch fallback, replace_with_batchnorm, export-torch",
    "paddle": "export_paddle, loading saved programs (`inference`, `static`, `fluid.io.load_inference_model`), "
    "export-paddle (paddle2onnx 1.3.1; no Paddle)",
    "bench": "the benchmark scripts (bench_paddle.py also needs paddlepaddle 2.6.2)",
    "test": "the test suite (the benchmark tools too, OpenVINO and scikit-learn for the portability and int8 tests)",
}
#: the CPU build of torch, installed before `[torch]` in the line "torch-cpu" (`--cpu-torch` to change it; the
#: README gives PyTorch's CPU index, which this machine cannot reach, and this pin resolves to the same
#: 2.13.0+cpu wheel here)
CPU_TORCH = "torch==2.13.0"


def install_lines(cpu_torch: str) -> dict[str, dict]:
    """Each measured line: its extra (a key of PURPOSE) and the pip argument lists it runs, in order."""
    lines = {"base": {"extra": "", "pip": [["-e", "."]]}}
    lines["torch"] = {"extra": "torch", "pip": [["-e", ".[torch]"]]}
    # PyPI alone has no CPU build of torch for Linux: that resolution would only repeat the line above
    lines["torch-cpu"] = {"extra": "torch", "pip": [cpu_torch.split(), ["-e", ".[torch]"]], "pypi": False}
    for extra in ("paddle", "bench", "test"):
        lines[extra] = {"extra": extra, "pip": [["-e", f".[{extra}]"]]}
    for line in lines.values():
        line.setdefault("pypi", True)
    return lines


# run by the venv's own interpreter: every distribution it holds, with its version and size on disk
_INVENTORY = """
import json, sys
from importlib import metadata
out = {}
for dist in metadata.distributions():
    size = 0
    for f in dist.files or []:
        try:
            size += f.locate().stat().st_size
        except OSError:
            pass
    out[dist.metadata["Name"].lower().replace("_", "-")] = [dist.version, size]
json.dump(out, sys.stdout)
"""


def tree_bytes(path: Path) -> int:
    """Bytes of every file under ``path``, symlinks as links (`du -b --apparent-size` minus its folders' own)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def _run(cmd: list[str], cwd: Path = ROOT, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, **kw)


def measure_line(name: str, line: dict, workdir: Path, pip_options: list[str]) -> dict:
    """Make a fresh venv, run the line's pip commands in it, and measure what they left."""
    venv = workdir / name
    _run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    empty = tree_bytes(venv)
    # run outside the checkout, whose iabn_onnx.egg-info would otherwise count as installed
    before = set(json.loads(_run([python, "-c", _INVENTORY], cwd=workdir, check=True).stdout))
    commands = []
    t0 = time.perf_counter()
    for args in line["pip"]:
        cmd = [python, "-m", "pip", "install", *args, *pip_options]
        commands.append("pip install " + " ".join(f'"{a}"' if "[" in a else a for a in args))
        done = _run(cmd)
        if done.returncode:
            raise SystemExit(f"{name}: `{' '.join(cmd)}` failed:\n{done.stderr[-2000:]}")
    seconds = time.perf_counter() - t0
    inventory = json.loads(_run([python, "-c", _INVENTORY], cwd=workdir, check=True).stdout)
    version = _run([str(venv / "bin" / "iabn-onnx"), "--version"], cwd=workdir)
    added = {n: v for n, v in sorted(inventory.items()) if n not in before}
    row = {
        "extra": line["extra"],
        "commands": commands,
        "mb": (tree_bytes(venv) - empty) / 2**20,
        "install_s": seconds,
        "distributions": {n: v for n, (v, _) in added.items()},
        "distribution_mb": {n: size / 2**20 for n, (_, size) in added.items()},
        "iabn_onnx_version": (version.stdout or version.stderr).strip().splitlines()[:1],
        "pip": _run([python, "-m", "pip", "--version"]).stdout.split(" from ")[0],
    }
    shutil.rmtree(venv)
    return row


def _download_bytes(url: str) -> int | None:
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=60) as answer:
            return int(answer.headers["Content-Length"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def pypi_resolution(line: dict, workdir: Path) -> dict:
    """What pip takes from PyPI alone, as on a machine with no pip configuration of its own: the line's commands
    resolved together by `pip install --isolated --dry-run --report` (no config file, no PIP_* variables), and
    the size of every file it would download."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    report = workdir / "pypi_report.json"
    args = [a for cmd in line["pip"] for a in cmd]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--isolated",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--report",
        str(report),
        *args,
    ]
    done = _run(cmd, env=env)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1:] or ["failed"]}
    chosen = {
        i["metadata"]["name"].lower().replace("_", "-"): (i["metadata"]["version"], i["download_info"]["url"])
        for i in json.loads(report.read_text())["install"]
    }
    sizes = {n: _download_bytes(url) for n, (_, url) in chosen.items() if url.startswith("http")}
    return {
        "distributions": {n: v for n, (v, _) in sorted(chosen.items())},
        "download_mb": {n: b / 2**20 for n, b in sizes.items() if b is not None},
        "unsized": sorted(n for n, b in sizes.items() if b is None),
    }


def pip_configuration() -> dict:
    """What pip on this machine is told beyond PyPI: its config entries, and any constraint file's lines."""
    listed = _run([sys.executable, "-m", "pip", "config", "list"]).stdout.splitlines()
    constraints: list[str] = []
    local_wheels: set[str] = set()
    for entry in listed:
        key, _, value = entry.partition("=")
        for path in value.strip("'\"").split():
            if key.endswith(".constraint") and Path(path).is_file():
                lines = Path(path).read_text().splitlines()
                constraints += [c.strip() for c in lines if c.strip() and not c.startswith("#")]
            elif key.endswith(".find-links") and Path(path).is_dir():
                local_wheels |= {w.name for w in Path(path).glob("*.whl")}
    return {"config": listed, "constraints": sorted(set(constraints)), "find_links_wheels": sorted(local_wheels)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", nargs="+", help="which lines to measure (default: all)")
    ap.add_argument("--cpu-torch", default=CPU_TORCH, help="pip's argument for the CPU build of torch")
    ap.add_argument("--pip-option", action="append", default=[], help="passed to every `pip install`")
    ap.add_argument("--no-pypi", action="store_true", help="skip what PyPI alone would resolve (needs PyPI)")
    ap.add_argument("--workdir", help="where the venvs are made (default: a temporary folder)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "install_size.json"))
    args = ap.parse_args(argv)
    lines = install_lines(args.cpu_torch)
    chosen = args.lines or list(lines)
    unknown = sorted(set(chosen) - set(lines))
    if unknown:
        ap.error(f"unknown lines {unknown}; choose from {list(lines)}")
    if "base" not in chosen:
        chosen.insert(0, "base")  # every other line is measured beyond it
    results: dict = {"lines": {}, "pip_options": args.pip_option, "pip_configuration": pip_configuration()}
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="iabn_install_") as tmp:
        for name in chosen:
            row = measure_line(name, lines[name], Path(tmp), args.pip_option)
            if not args.no_pypi and lines[name]["pypi"]:
                row["pypi"] = pypi_resolution(lines[name], Path(tmp))
            if name != "base":
                row["adds_mb"] = row["mb"] - results["lines"]["base"]["mb"]
            results["lines"][name] = row
            print(
                f"{name}: {row['mb']:.0f} MB, {len(row['distributions'])} distributions, {row['install_s']:.0f} s",
                flush=True,
            )
    from benchmarks.timing import write_results

    write_results(results, args.json)
    return results


if __name__ == "__main__":
    main()
