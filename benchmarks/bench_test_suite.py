"""What the default test suite costs here: wall time and the peak resident memory of its process tree.

    python benchmarks/bench_test_suite.py [--json benchmarks/results/test_suite.json]

Runs ``python -m pytest -q`` (what .ci/run runs; with ``-rf``, which only adds the names of failed tests) and
records its closing line and those names.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "test_suite.json"))
    args = ap.parse_args(argv)
    from benchmarks.timing import environment

    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    # the largest resident set of any finished child process (pytest, or a subprocess a test started)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    results = {
        "wall_s": wall,
        "peak_rss_mb": peak_mb,
        "cores": os.cpu_count(),
        "summary": summary,
        "returncode": proc.returncode,
        "failed": [line for line in proc.stdout.splitlines() if line.startswith("FAILED ")],  # what -rf names
        "environment": environment(),
    }
    print(json.dumps(results, indent=2))
    Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
