"""What importing the package and the CLI cost: fresh processes, medians.

* ``import iabn_onnx`` on top of ``import onnx, onnxruntime`` (torch installed or not: the kernel
  machinery, which would import it, loads only when a session needs the kernel);
* ``iabn-onnx --help`` wall time;
* which of torch, numba and onnxruntime-extensions ``import iabn_onnx`` loaded (none is the goal),
  and which of onnx and numpy ``--help`` loaded (none);
* ``import ml_dtypes`` alone (onnx imports it; 0.7.0 took 0.9-1.2 s here, 0.6.0 0.01 s), with
  the versions every figure was taken with.

The package's bytecode is written first, as ``pip install`` does.

    python benchmarks/bench_startup.py [--repeat 7] [--json benchmarks/results/startup.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
IMPORT = """
import time; t0 = time.perf_counter()
import onnx, onnxruntime
t1 = time.perf_counter()
import iabn_onnx
t2 = time.perf_counter()
import json, sys
print(json.dumps({"base_s": t1 - t0, "extra_s": t2 - t1,
                  "loaded": [m for m in ("torch", "numba", "onnxruntime_extensions") if m in sys.modules]}))
"""
HELP = """
import json, sys
from iabn_onnx.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
print(json.dumps([m for m in ("onnx", "numpy", "onnxruntime", "torch") if m in sys.modules]), file=sys.stderr)
"""
ML_DTYPES = "import time; t0 = time.perf_counter(); import ml_dtypes; print(time.perf_counter() - t0)"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "startup.json"))
    args = ap.parse_args(argv)
    from benchmarks.timing import compile_package

    compile_package()
    runs = [
        json.loads(
            subprocess.run([sys.executable, "-c", IMPORT], capture_output=True, text=True, check=True, cwd=ROOT).stdout
        )
        for _ in range(args.repeat)
    ]
    helps = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "iabn_onnx.cli", "--help"], capture_output=True, check=True, cwd=ROOT)
        helps.append(time.perf_counter() - t0)
    help_loaded = json.loads(
        subprocess.run([sys.executable, "-c", HELP], capture_output=True, text=True, check=True, cwd=ROOT).stderr
    )
    ml_dtypes = [
        float(subprocess.run([sys.executable, "-c", ML_DTYPES], capture_output=True, text=True, check=True).stdout)
        for _ in range(args.repeat)
    ]
    from benchmarks.timing import environment

    results = {
        "import_onnx_onnxruntime_s": statistics.median(r["base_s"] for r in runs),
        "import_iabn_onnx_extra_s": statistics.median(r["extra_s"] for r in runs),
        "import_loaded": sorted({m for r in runs for m in r["loaded"]}),
        "cli_help_s": statistics.median(helps),
        "cli_help_loaded": help_loaded,
        "import_ml_dtypes_s": statistics.median(ml_dtypes),
        "environment": environment(),
        "torch_installed": subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0,
    }
    print(json.dumps(results, indent=2))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
