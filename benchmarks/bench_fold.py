"""Fold time of a 200-layer network, and what each BatchNorm-folding tool folds into which layer.

* Fold time: a 200-layer chain (Conv 3x3 64->64 -> InplaceABN, 7.4 M weights), median of ``--repeat``.
* Capability: for each producer kind (Conv, grouped ConvTranspose, Gemm with transB, MatMul+Add) followed by
  BatchNormalization + LeakyRelu, what onnxoptimizer's fuse_bn_into_conv and onnxslim leave, against
  iabn_onnx (convert, then fold). "folded" means no BatchNormalization and no extra Mul/Add is left.

    python benchmarks/bench_fold.py [--layers 200] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from iabn_onnx.examples import chain_model  # noqa: E402
from iabn_onnx.passes.fold import fold_with_report  # noqa: E402


def _op_counts(model) -> dict[str, int]:  # type: ignore[no-untyped-def]
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def capability() -> dict[str, dict[str, str]]:
    """Producer kind -> tool -> what the tool left (a short verdict)."""
    import onnx
    import onnxoptimizer
    import onnxslim

    import iabn_onnx
    from iabn_onnx.passes.to_batchnorm import batchnorm_form
    from tests.fold_cases import producer_model

    tools = {
        "onnxoptimizer fuse_bn_into_conv": lambda m: onnxoptimizer.optimize(m, ["fuse_bn_into_conv"]),
        "onnxslim": lambda m: onnxslim.slim(m),
        "iabn_onnx convert + fold (BN model)": lambda m: iabn_onnx.fold(iabn_onnx.convert(m)),
    }
    table: dict[str, dict[str, str]] = {}
    for kind in ("Conv", "ConvTranspose", "Gemm", "MatMulAdd"):
        iabn_model = producer_model(kind, "leaky_relu", np.float32)[0]
        model = batchnorm_form(iabn_model)  # MatMul's channels are last: its BN form has Transposes
        before = _op_counts(model)
        row = {
            "iabn_onnx fold (InplaceABN model)": "folded"
            if iabn_onnx.passes.fold.fold_with_report(iabn_model)[1]
            .folded[0][1]
            .startswith(f"into {kind.removesuffix('Add')}")
            else "per-channel Mul/Add"
        }
        for tool, run in tools.items():
            try:
                after = _op_counts(run(onnx.load_from_string(model.SerializeToString())))
            except Exception as exc:  # a tool that fails on the input is a result too
                row[tool] = f"error: {type(exc).__name__}"
                continue
            extra = sum(after.get(op, 0) - before.get(op, 0) for op in ("Mul", "Add"))
            if after.get("BatchNormalization", 0) or after.get("InplaceABN", 0):
                row[tool] = "left BatchNormalization"
            elif extra > 0:
                row[tool] = "per-channel Mul/Add"
            else:
                row[tool] = "folded"
        table[kind] = row
    return table


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=200)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "fold.json"))
    args = ap.parse_args(argv)
    model = chain_model(layers=args.layers, channels=args.channels)
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        _, report = fold_with_report(model)
        times.append(time.perf_counter() - t0)
    result = {
        "layers": args.layers,
        "channels": args.channels,
        "model_mb": model.ByteSize() / 2**20,
        "folded": report.count,
        "left": len(report.left),
        "fold_median_s": statistics.median(times),
        "fold_all_s": times,
    }
    print(
        f"fold of a {args.layers}-layer chain ({result['model_mb']:.1f} MB): {report.count} folded, "
        f"{len(report.left)} left, median {result['fold_median_s']:.3f} s over {args.repeat} runs (goal < 2 s)"
    )
    result["capability"] = capability()
    for kind, row in result["capability"].items():
        print(f"{kind:14s} " + "  ".join(f"{tool}: {verdict}" for tool, verdict in row.items()))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    from benchmarks.timing import environment

    result["environment"] = environment()
    Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
