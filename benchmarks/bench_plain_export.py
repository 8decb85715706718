"""Torch's plain export, converted and folded, against torch's optimized export: paired timing.

For each network of ``benchmarks/architectures.py`` in BatchNorm2d + activation form (random weights,
randomized statistics), three models, each in an onnxruntime session of its own at ORT_ENABLE_ALL:

* ``torch_export_opt``  torch.onnx.export(dynamo, optimize=True): the anchor;
* ``plain_folded``      torch.onnx.export(dynamo, optimize=False), then ``iabn_onnx.convert``, then
                        ``iabn_onnx.fold``, on plain onnxruntime;
* ``plain_plugin``      the same export and ``convert``, in a default ``iabn_onnx.InferenceSession``.

Only these three sessions are alive, so no other session's threads share the cores. In each of
``--rounds`` rounds every variant makes one warm-up call and ``--calls`` timed calls, the order
rotating by one each round, so every variant takes every place equally often and always follows
another variant (a reversed order runs the ends twice in a row and the middle never). A round's
ratio is a variant's median call in that round over the anchor's in the same round (taken seconds
apart, so a slow drift of the machine cancels); the figure is the median of the round ratios, with
their 25th and 75th percentiles. Batch 8 takes half the rounds.

Also recorded: whether onnxruntime runs the anchor's graph for each variant (the same ops, initializers
of the same shapes, after its optimizations), what the fold did, and each output's largest difference
from torch eager.

    python benchmarks/bench_plain_export.py [--networks resnet50 ...] [--batches 1 8] [--rounds 24] [--calls 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402

from benchmarks.timing import quartiles  # noqa: E402

VARIANTS = ("torch_export_opt", "plain_folded", "plain_plugin")  # the anchor first
NETWORKS = ("resnet50", "tresnet_m", "densenet121", "wider_resnet20", "aspp_resnet50")


def export(name: str, workdir: Path):  # type: ignore[no-untyped-def]
    """Write the three models (named as bench_networks names them); return the eager net and the fold's facts."""
    import torch

    import iabn_onnx
    from benchmarks.architectures import IMAGE_SIZE, build, to_batchnorm
    from iabn_onnx.passes.fold import fold_with_report

    bn_net = to_batchnorm(build(name)).eval()
    side = IMAGE_SIZE.get(name, 224)
    x = torch.randn(1, 3, side, side)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=64)},)
    models = {}
    for optimize in (True, False):
        exported = torch.onnx.export(bn_net, (x,), dynamo=True, optimize=optimize, dynamic_shapes=dynamic)
        models[optimize] = exported.model_proto
    converted = iabn_onnx.convert(models[False])
    folded, report = fold_with_report(converted)
    for variant, model in (("torch_export_opt", models[True]), ("plain_plugin", converted), ("plain_folded", folded)):
        onnx.save(model, str(workdir / f"{name}.{variant}.onnx"))
    left = ("Expand", "CastLike", "Shape", "Concat", "BatchNormalization", "InplaceABN")
    facts = {
        "inplace_abn_nodes": sum(n.op_type == "InplaceABN" for n in converted.graph.node),
        "folded_into_producers": len(report.folded),
        "rewritten": len(report.rewritten),
        "left": len(report.left),
        "constant_nodes_evaluated": report.constants,
        "reshape_targets_made_constant": report.reshapes,
        "zero_biases_dropped": report.zero_biases,
        "ops_left_in_folded": {op: sum(n.op_type == op for n in folded.graph.node) for op in left},
    }
    return bn_net, side, facts


def paired_rounds(calls: dict[str, Callable[[], object]], rounds: int, per_round: int) -> dict[str, dict]:
    """Per variant: the median call over all rounds and the median (and quartiles) of its round ratios
    to the first variant's (see the module doc)."""
    names = list(calls)
    medians: dict[str, list[float]] = {k: [] for k in names}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for k in names[shift:] + names[:shift]:
            fn = calls[k]
            fn()  # warm-up: the caches after the other variant's calls
            times = []
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            medians[k].append(statistics.median(times))
    anchor = medians[names[0]]
    out = {}
    for k in names:
        ratios = [m / a for m, a in zip(medians[k], anchor)]
        q25, q75 = quartiles(ratios)
        out[k] = {
            "median_s": statistics.median(medians[k]),
            "ratio": statistics.median(ratios),
            "ratio_q25": q25,
            "ratio_q75": q75,
            "round_ratios": ratios,
        }
    return out


def time_network(name: str, workdir: Path, bn_net, side: int, batch: int, rounds: int, per_round: int) -> dict:  # type: ignore[no-untyped-def]
    import torch

    from benchmarks.bench_networks import _model_path, _session

    x = np.random.default_rng(batch).standard_normal((batch, 3, side, side)).astype(np.float32)
    with torch.no_grad():
        reference = bn_net(torch.from_numpy(x)).numpy()
    calls, diffs = {}, {}
    for variant in VARIANTS:
        session = _session(variant, _model_path(workdir, name, variant))
        feed = {session.get_inputs()[0].name: x}
        diffs[variant] = float(np.max(np.abs(session.run(None, feed)[0] - reference)))
        calls[variant] = (lambda s, f: lambda: s.run(None, f))(session, feed)
    timed = paired_rounds(calls, rounds, per_round)
    return {
        "batch": batch,
        "rounds": rounds,
        "calls_per_round": per_round,
        "variants": timed,
        "max_abs_diff_vs_eager": diffs,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--rounds", type=int, default=24, help="a multiple of 3 gives every order equally often")
    ap.add_argument("--calls", type=int, default=3, help="timed calls per variant per round")
    ap.add_argument("--json", default=str(RESULTS / "plain_export.json"))
    args = ap.parse_args(argv)
    import os

    import torch

    from benchmarks.bench_networks import same_graph_as_anchor
    from benchmarks.timing import write_results

    torch.set_num_threads(os.cpu_count() or 1)
    results: dict = {"anchor": VARIANTS[0], "networks": {}}
    with tempfile.TemporaryDirectory(prefix="iabn_plain_") as tmp:
        workdir = Path(tmp)
        os.environ["IABN_ONNX_CACHE_DIR"] = str(workdir / "start_cache")  # this run's own
        for name in args.networks:
            bn_net, side, facts = export(name, workdir)
            facts["same_graph_as_anchor"] = same_graph_as_anchor(name, workdir, VARIANTS[1:])
            runs = [
                time_network(name, workdir, bn_net, side, b, max(2, args.rounds // (2 if b > 1 else 1)), args.calls)
                for b in args.batches
            ]
            results["networks"][name] = {**facts, "runs": runs}
            for run in runs:
                cells = ", ".join(
                    f"{v} {t['median_s'] * 1e3:.1f} ms ({t['ratio']:.3f}x, {t['ratio_q25']:.3f}-{t['ratio_q75']:.3f})"
                    for v, t in run["variants"].items()
                )
                print(f"{name} batch {run['batch']}: {cells}; same graph: {facts['same_graph_as_anchor']}", flush=True)
    write_results(results, args.json)
    return results


if __name__ == "__main__":
    main()
