"""Sessions created, run and dropped in a loop: resident memory after 500, 1000, 2000 and 3000.

Three cases, each in one fresh process: a training-mode node (the kernel route: the kernel library is
registered on session options), a frozen node (the BatchNormalization route: plain onnxruntime), and the
frozen node's model read from a file (the outline, a private copy of the file, a copying thread).

    python benchmarks/bench_session_churn.py [--sessions 3000] [--json benchmarks/results/session_churn.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import gc, json, sys
sys.path.insert(0, {root!r})
import numpy as np, iabn_onnx
from iabn_onnx import InplaceABNAttrs
from iabn_onnx.examples import single_node_model

def rss_mb():
    return int([l for l in open("/proc/self/status") if l.startswith("VmRSS:")][0].split()[1]) / 1024

attrs = InplaceABNAttrs(act="leaky_relu", act_alpha=0.1, training_mode={training})
data = single_node_model((2, 512, 2, 2), attrs)[0].SerializeToString()  # 2 KB parameters: a file is copied
if {from_file}:  # the session reads the file's outline and gives onnxruntime a private copy
    import tempfile
    path = tempfile.mkdtemp() + "/model.onnx"
    open(path, "wb").write(data)
    data = path
x = np.ones((2, 512, 2, 2), np.float32)
marks = {{}}
for i in range({sessions}):
    s = iabn_onnx.InferenceSession(data)
    s.run(None, {{"X": x}})
    del s
    if i + 1 in {marks}:
        gc.collect()
        marks[i + 1] = rss_mb()
print(json.dumps(marks))
"""


def churn(training: int, sessions: int, from_file: bool = False) -> dict[str, float]:
    marks = sorted({min(500, sessions), min(1000, sessions), min(2000, sessions), sessions})
    code = CHILD.format(root=str(ROOT), training=training, sessions=sessions, marks=marks, from_file=from_file)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=3000)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "session_churn.json"))
    args = ap.parse_args(argv)
    results = {"sessions": args.sessions, "routes": {}}
    for route, training, from_file in (
        ("kernel", 1, False),
        ("BatchNormalization", 0, False),
        ("BatchNormalization, model from a file", 0, True),
    ):
        marks = churn(training, args.sessions, from_file)
        first, last = marks[min(marks, key=int)], marks[max(marks, key=int)]
        results["routes"][route] = {"rss_mb": marks, "growth_after_first_mb": last - first}
        print(f"{route:20s} RSS {marks} MB; growth after the first mark {last - first:.2f} MB")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    from benchmarks.timing import environment

    results["environment"] = environment()
    Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
