"""Start-up plus first run of a session, against plain onnxruntime on the folded model: fresh processes.

For each network (mapillary-style InPlaceABN, exported by ``export_torch``), one process per
sample, the three variants alternating so drift hits them alike:

* ``folded``: plain onnxruntime on ``iabn_onnx.fold``'s model (the anchor);
* ``session``: ``iabn_onnx.InferenceSession`` on the exported model, from the start-up cache
  (filled by one session made here first), as a file's second and later processes start;
* ``session_cold``: the same with the cache off (``IABN_ONNX_CACHE=0``), as a file's first process starts.

Each process imports numpy and onnxruntime (and iabn_onnx), creates the session with
ORT_ENABLE_ALL and runs one batch-8 input; the figure is the median over ``--processes``.
The package's bytecode is written first, as ``pip install`` does.

    python benchmarks/bench_session_startup.py [--networks resnet50 densenet121 wider_resnet20] [--processes 11]
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
    ap.add_argument("--processes", type=int, default=11)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--json", default=str(RESULTS / "session_startup.json"))
    args = ap.parse_args(argv)
    from benchmarks import bench_networks
    from benchmarks.timing import compile_package, write_results

    compile_package()
    results: dict = {"processes": args.processes, "batch": args.batch, "networks": {}}
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
            samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for _ in range(args.processes):
                for label, variant in VARIANTS.items():
                    samples[label].append(bench_networks.fresh_process(name, workdir, variant, args.batch)[1])
            medians = {label: statistics.median(s) for label, s in samples.items()}
            results["networks"][name] = {
                "startup_s": medians,
                "ratio_to_folded": {label: m / medians["folded"] for label, m in medians.items()},
                "samples_s": samples,
            }
            print(
                f"{name}: " + ", ".join(f"{k} {v:.2f} s ({v / medians['folded']:.2f}x)" for k, v in medians.items()),
                flush=True,
            )
    write_results(results, args.json)
    return results


if __name__ == "__main__":
    main()
