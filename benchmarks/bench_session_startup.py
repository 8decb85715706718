"""Start-up plus first run of a session, against plain onnxruntime on the folded model: fresh processes.

For each network (mapillary-style InPlaceABN, exported by ``export_torch``), one process per
sample, in rounds of one process per variant, the order rotating from round to round so that
neither drift nor a variant's place in the round (right after another's 100 MB file copy, say)
favours one of them:

* ``folded``: plain onnxruntime on ``iabn_onnx.fold``'s model (the anchor);
* ``session``: ``iabn_onnx.InferenceSession`` on the exported model, from the start-up cache
  (filled by one session made here first), as a file's second and later processes start;
* ``session_cold``: the same with the cache off (``IABN_ONNX_CACHE=0``), as a file's first process starts.

Each process imports numpy and onnxruntime (and iabn_onnx), creates the session with
ORT_ENABLE_ALL and runs one batch-8 input. Per variant: the median time over ``--processes``
rounds, and the median (with the 25th-75th percentile) of its ratio to the anchor in the same round.
The package's bytecode is written first, as ``pip install`` does.

    python benchmarks/bench_session_startup.py [--networks resnet50 densenet121 wider_resnet20] [--processes 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

VARIANTS = {"folded": "folded", "session": "plugin", "session_cold": "plugin_cold"}  # -> bench_networks' names


def _export(name: str, workdir: Path) -> None:
    """The two files the variants read: ``export_torch``'s model and ``fold``'s, named as bench_networks names them."""
    import onnx
    import torch

    import iabn_onnx
    from benchmarks.architectures import IMAGE_SIZE, build

    side = IMAGE_SIZE.get(name, 224)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=64)},)
    model = iabn_onnx.export_torch(build(name), (torch.randn(1, 3, side, side),), dynamic_shapes=dynamic)
    onnx.save(model, str(workdir / f"{name}.plugin.onnx"))
    onnx.save(iabn_onnx.fold(model), str(workdir / f"{name}.folded.onnx"))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", nargs="+", default=["resnet50", "densenet121", "wider_resnet20"])
    ap.add_argument("--processes", type=int, default=15)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--json", default=str(RESULTS / "session_startup.json"))
    args = ap.parse_args(argv)
    from benchmarks import bench_networks
    from benchmarks.timing import compile_package, quartiles, write_results

    compile_package()
    results: dict = {"processes": args.processes, "batch": args.batch, "order": "rotating", "networks": {}}
    with tempfile.TemporaryDirectory(prefix="iabn_startup_") as tmp:
        workdir = Path(tmp)
        cache = str(workdir / "start_cache")  # this run's own; the children inherit it
        os.environ["IABN_ONNX_CACHE_DIR"] = cache
        os.environ.pop("IABN_ONNX_CACHE", None)
        bench_networks.CLEAN_ENV.update(IABN_ONNX_CACHE_DIR=cache)
        bench_networks.CLEAN_ENV.pop("IABN_ONNX_CACHE", None)
        for name in args.networks:
            _export(name, workdir)
            bench_networks._session("plugin", bench_networks._model_path(workdir, name, "plugin"))  # fills the cache
            labels = list(VARIANTS)
            samples: dict[str, list[float]] = {v: [] for v in labels}
            for r in range(args.processes):
                for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
                    samples[label].append(bench_networks.fresh_process(name, workdir, VARIANTS[label], args.batch)[1])
            ratios = {v: [a / b for a, b in zip(samples[v], samples["folded"])] for v in labels}
            results["networks"][name] = {
                "startup_s": {v: statistics.median(s) for v, s in samples.items()},
                "ratio_to_folded": {v: statistics.median(rs) for v, rs in ratios.items()},
                "ratio_quartiles": {v: quartiles(rs) for v, rs in ratios.items()},
                "samples_s": samples,
            }
            r = results["networks"][name]["ratio_to_folded"]
            print(f"{name}: " + ", ".join(f"{v} {r[v]:.2f}x" for v in labels), flush=True)
    write_results(results, args.json)
    return results


if __name__ == "__main__":
    main()
