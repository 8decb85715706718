"""Fold time: a 200-layer network (Conv 3x3 64->64 -> InplaceABN, 7.4 M weights) and the example nets.

Median of ``--repeat`` folds, in this process.

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

from iabn_onnx.examples import chain_model  # noqa: E402
from iabn_onnx.passes.fold import fold_with_report  # noqa: E402


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
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
