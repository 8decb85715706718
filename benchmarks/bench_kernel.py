"""Single-node InplaceABN benchmark: our kernel vs onnxruntime's native BatchNormalization + LeakyRelu.

Prints the five figures of the core issue. Both sessions are timed in one
process, in alternating blocks, and reported as medians; the ratio is
the point, absolute times on a shared machine are noisy.

    python benchmarks/bench_kernel.py [--repeat 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

import iabn_onnx
from iabn_onnx import InplaceABNAttrs
from iabn_onnx.examples import native_equivalent, single_node_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.timing import block_medians


def compare(shape: tuple[int, ...], training: bool, repeat: int) -> dict[str, float]:
    attrs = InplaceABNAttrs(act="leaky_relu", act_alpha=0.01, training_mode=int(training))
    model, params = single_node_model(shape, attrs)
    ours = iabn_onnx.InferenceSession(model, kernel_only=True)  # the kernel, not the standard-op route
    native = ort.InferenceSession(
        native_equivalent(shape, attrs.replace(training_mode=0), params).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    feed = {"X": x}
    med = block_medians({"ours": lambda: ours.run(None, feed), "native": lambda: native.run(None, feed)}, repeat)
    return {
        "shape": list(shape),
        "training_mode": int(training),
        "ours_s": med["ours"],
        "native_inference_s": med["native"],
        "ratio": med["ours"] / med["native"],
        "delta_us": (med["ours"] - med["native"]) * 1e6,
    }


COLD_START = """
import time; t0 = time.perf_counter()
import numpy as np, iabn_onnx
from iabn_onnx.examples import single_node_model
from iabn_onnx import InplaceABNAttrs
m, _ = single_node_model((8, 64, 56, 56), InplaceABNAttrs(act="leaky_relu", act_alpha=0.01))
s = iabn_onnx.InferenceSession(m, kernel_only=True)
s.run(None, {"X": np.zeros((8, 64, 56, 56), np.float32)})
print(time.perf_counter() - t0)
"""


def cold_start() -> float:
    """Seconds from interpreter start to the first result, in a fresh process (numba cache warm)."""
    subprocess.run([sys.executable, "-c", COLD_START], check=True, capture_output=True)  # warm the cache
    out = subprocess.run([sys.executable, "-c", COLD_START], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument(
        "--json",
        default=str(Path(__file__).resolve().parent / "results" / "kernel.json"),
        help="write results here (default: benchmarks/results/kernel.json)",
    )
    args = ap.parse_args(argv)
    rows = [
        ("[8,64,56,56] inference", compare((8, 64, 56, 56), False, args.repeat), "ratio", 1.5),
        ("[1,64,7,7] inference", compare((1, 64, 7, 7), False, args.repeat * 5), "delta_us", 25.0),
        ("[32,256,28,28] inference", compare((32, 256, 28, 28), False, max(20, args.repeat // 10)), "ratio", 2.5),
        ("[8,64,56,56] training vs native inference", compare((8, 64, 56, 56), True, args.repeat), "ratio", 3.0),
    ]
    results = {"rows": [], "cold_start_s": cold_start()}
    print(f"{'case':44s} {'ours':>10s} {'native':>10s} {'figure':>14s} {'goal':>8s}")
    for label, r, key, goal in rows:
        fig = f"{r[key]:.2f}x" if key == "ratio" else f"+{r[key]:.1f} us"
        goal_s = f"<={goal}x" if key == "ratio" else f"<=+{goal}us"
        print(f"{label:44s} {r['ours_s'] * 1e3:8.3f}ms {r['native_inference_s'] * 1e3:8.3f}ms {fig:>14s} {goal_s:>8s}")
        results["rows"].append({"case": label, **r, "goal_key": key, "goal": goal})
    print(f"cold start (import, session, first run, fresh process): {results['cold_start_s']:.2f} s (goal <= 3 s)")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    from benchmarks.timing import environment

    results["environment"] = environment()
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
