"""What each extra adds to an install: the size on disk of the distributions it pulls in beyond the base
install, read from the installed packages' metadata (their RECORD files) in this environment.

    python benchmarks/bench_install_size.py [--json benchmarks/results/install_size.json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
#: what each extra is for (the README's extras table)
PURPOSE = {
    "": "sessions, fold, convert, quantize, building programs with `fluid`, the CLI",
    "torch": "export_torch, the torch fallback, replace_with_batchnorm, export-torch (the CPU build of torch: see "
    "below)",
    "paddle": "export_paddle, loading saved programs (`inference`, `static`, `fluid.io.load_inference_model`), "
    "export-paddle (paddle2onnx 1.3.1; no Paddle)",
    "bench": "the benchmark scripts (bench_paddle.py also needs paddlepaddle 2.6.2)",
    "test": "the test suite (the benchmark tools too, OpenVINO and scikit-learn for the portability and int8 tests)",
}


def _name(requirement: str) -> tuple[str, str | None]:
    """A requirement's distribution name and the extra it belongs to (None: the base install)."""
    name = re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0]
    extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", requirement)
    return name.lower().replace("_", "-"), (extra.group(1) if extra else None)


def closure(names: set[str]) -> set[str]:
    """The installed distributions these need, themselves included."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for req in dist.requires or []:
            dep, extra = _name(req)
            if extra is None:
                todo.append(dep)
    return seen


def size_mb(names: set[str]) -> float:
    total = 0
    for name in names:
        for f in metadata.distribution(name).files or []:
            try:
                total += f.locate().stat().st_size
            except OSError:
                pass
    return total / 2**20


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "install_size.json"))
    args = ap.parse_args(argv)
    reqs = [_name(r) for r in metadata.distribution("iabn-onnx").requires or []]
    base = closure({n for n, extra in reqs if extra is None})
    from benchmarks.timing import environment

    results: dict = {"base_mb": size_mb(base), "extras": {}, "environment": environment()}
    for extra in ("torch", "paddle", "bench", "test"):
        added = closure({n for n, e in reqs if e == extra}) - base
        results["extras"][extra] = {
            "adds_mb": size_mb(added),
            "largest": sorted(added, key=lambda n: -size_mb({n}))[:3],
        }
    print(json.dumps(results, indent=2))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
