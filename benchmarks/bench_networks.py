"""Real architectures side by side, batch 1 and 8: ResNet-50, TResNet-M, DenseNet-121 (InplaceABN after
Concat), a pre-activation WiderResNet-20 (after Add; 112x112) and a DeepLabV3 ASPP head on ResNet-50 (after
Concat and Add); 224x224 unless noted.

Variants, all timed in this one process in alternating blocks (medians), onnxruntime
at ORT_ENABLE_ALL:

* ``torch_eager``      the PyTorch model (BatchNorm2d + LeakyReLU form), CPU, no_grad
* ``torch_export_opt`` the native anchor: the same network in BatchNorm2d + activation form through
                       torch.onnx.export(dynamo, optimize=True) (BatchNorm folded by torch where it can)
* ``plugin``           iabn_onnx.export_torch of the InplaceABN model, run by iabn_onnx.InferenceSession
                       (default routes: producer fold, BatchNormalization + activation, kernel)
* ``plugin_kernel_only`` the same model and session with ``kernel_only=True``: every node in the kernel
* ``folded``           iabn_onnx.fold(plugin) on plain onnxruntime
* ``onnxoptimizer``    onnxoptimizer fuse_bn_into_conv on torch's unoptimized (BatchNormalization) export
* ``onnxslim``         onnxslim.slim on the same unoptimized export
* ``plain_plugin``     torch's *plain* export of the BatchNorm2d form (optimize=False: BatchNormalization
                       kept, Conv biases computed by Expand/CastLike subgraphs), iabn_onnx.convert, then
                       the default session
* ``plain_folded``     the same, then iabn_onnx.fold, on plain onnxruntime
* ``onnxslim_raw``     onnxslim.slim on that plain export as it is

On torch's raw unoptimized export neither tool folds anything (a bias-free Conv gets its
zero bias from an Expand node, which they do not fold); both get that export after
onnxscript's constant folding (no BatchNorm fusion), and the JSON records both counts.

Also: what each tool left as BatchNormalization, every variant's max difference from
torch eager, the fold time, and each variant's peak RSS and start-up (the median of five fresh
processes per variant, variants alternating: imports, session, first batch-8 run). Writes JSON and
a bar chart.

    python benchmarks/bench_networks.py [--networks resnet50 densenet121 ...] [--repeat 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
#: the environment fresh processes get: this one's before any import could change it (the benchmark
#: tools and torch import libraries that set variables for their own process)
CLEAN_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
VARIANTS = [
    "torch_eager",
    "torch_export_opt",
    "plugin",
    "plugin_kernel_only",
    "folded",
    "onnxoptimizer",
    "onnxslim",
    "plain_plugin",
    "plain_folded",
    "onnxslim_raw",
]
ANCHOR = "torch_export_opt"
#: variants whose optimized graph is compared with the anchor's (same_graph_as_anchor)
GRAPH_CHECKED = ("plugin", "folded", "plain_plugin", "plain_folded")
SESSION_VARIANTS = ("plugin", "plugin_kernel_only", "plain_plugin")  # run by iabn_onnx.InferenceSession
#: fresh-process variants beyond VARIANTS: (the variant whose model and code they run, extra environment).
#: Sessions start from the benchmark's own start-up cache, filled by the in-process timing (as a
#: file's second and later processes do); ``plugin_cold`` starts with the cache off, as a file's
#: first process does.
FRESH_EXTRA = {"plugin_cold": ("plugin", {"IABN_ONNX_CACHE": "0"})}


def _ort_options() -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


def _session(variant: str, path: str):  # type: ignore[no-untyped-def]
    if variant in SESSION_VARIANTS:
        import iabn_onnx

        return iabn_onnx.InferenceSession(path, _ort_options(), kernel_only=variant == "plugin_kernel_only")
    return ort.InferenceSession(path, _ort_options(), providers=["CPUExecutionProvider"])


def _optimized_graph(variant: str, path: str, out: Path) -> dict:
    """Op counts and initializer shapes of the graph onnxruntime runs for ``variant``, as its
    ORT_ENABLE_ALL optimizations leave it (written to ``out``)."""
    so = _ort_options()
    so.optimized_model_filepath = str(out)
    so.log_severity_level = 3  # the warning that an NCHWc graph is hardware-specific
    if variant in SESSION_VARIANTS:
        import iabn_onnx

        iabn_onnx.InferenceSession(path, so)
    else:
        ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    model = onnx.load(str(out), load_external_data=False)
    out.unlink()
    ops: dict[str, int] = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {"ops": ops, "initializer_shapes": sorted(list(i.dims) for i in model.graph.initializer)}


def same_graph_as_anchor(name: str, workdir: Path, variants: tuple[str, ...]) -> dict[str, bool]:
    """Whether onnxruntime runs, for each variant, the anchor's graph: the same ops as many times
    and initializers of the same shapes (a speed difference between them is then noise)."""
    graph = {v: _optimized_graph(v, _model_path(workdir, name, v), workdir / f"{name}.{v}.opt.onnx") for v in variants}
    anchor = _optimized_graph(ANCHOR, _model_path(workdir, name, ANCHOR), workdir / f"{name}.anchor.opt.onnx")
    return {v: g == anchor for v, g in graph.items()}


def _count(model: onnx.ModelProto, op_type: str) -> int:
    return sum(n.op_type == op_type for n in model.graph.node)


def _constants_folded(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxscript constant folding only (Expand-of-zeros biases become initializers; BN stays)."""
    import onnxscript.optimizer

    out = onnx.ModelProto()
    out.CopyFrom(model)
    onnxscript.optimizer.fold_constants(out)
    return out


def _conv_inputs_computed(model: onnx.ModelProto) -> int:
    """Conv weight/bias inputs that a node computes (rather than an initializer holding them)."""
    produced = {o: n.op_type for n in model.graph.node for o in n.output}
    return sum(1 for n in model.graph.node if n.op_type == "Conv" for name in n.input[1:] if name in produced)


def export_all(name: str, workdir: Path) -> dict:
    """Export every ONNX variant of one network to workdir; return facts about them."""
    import onnxoptimizer
    import onnxslim
    import torch

    import iabn_onnx
    from benchmarks.architectures import build, to_batchnorm

    net = build(name)
    bn_net = to_batchnorm(net)
    x = torch.randn(1, 3, _side(name), _side(name))
    dynamic = ({0: torch.export.Dim("batch", min=1, max=64)},)
    facts: dict = {}
    t0 = time.perf_counter()
    plugin = iabn_onnx.export_torch(net, (x,), dynamic_shapes=dynamic)
    facts["export_torch_s"] = time.perf_counter() - t0
    fold_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        folded, report = iabn_onnx.passes.fold.fold_with_report(plugin)
        fold_times.append(time.perf_counter() - t0)
    facts["fold_s"] = sorted(fold_times)[1]
    facts["inplace_abn_nodes"] = sum(n.op_type == "InplaceABN" for n in plugin.graph.node)
    facts["folded_into"] = {}
    for _, how in report.folded:  # "into Conv 'name'"
        kind = how.removeprefix("into ").split(" '")[0]
        facts["folded_into"][kind] = facts["folded_into"].get(kind, 0) + 1
    for _, form, _ in report.rewritten:  # BatchNormalization, per-channel Mul + Add
        facts["folded_into"][form] = facts["folded_into"].get(form, 0) + 1
    torch_opt = torch.onnx.export(bn_net, (x,), dynamo=True, optimize=True, dynamic_shapes=dynamic).model_proto
    torch_raw = torch.onnx.export(bn_net, (x,), dynamo=True, optimize=False, dynamic_shapes=dynamic).model_proto
    facts["raw_export_batchnorm_left"] = {
        "onnxoptimizer": _count(onnxoptimizer.optimize(torch_raw, ["fuse_bn_into_conv"]), "BatchNormalization"),
        "onnxslim": _count(onnxslim.slim(torch_raw), "BatchNormalization"),
    }
    torch_bn = _constants_folded(torch_raw)
    converted = iabn_onnx.convert(torch_raw)
    plain_folded, plain_report = iabn_onnx.passes.fold.fold_with_report(converted)
    facts["plain_export"] = {
        "inplace_abn_nodes": _count(converted, "InplaceABN"),
        "folded_into_producers": len(plain_report.folded),
        "rewritten": len(plain_report.rewritten),
        "left": len(plain_report.left),
        "constant_nodes_evaluated": plain_report.constants,
        "ops_left": {op: _count(plain_folded, op) for op in ("Expand", "CastLike", "Shape", "Constant")},
        "conv_inputs_from_subgraphs": _conv_inputs_computed(plain_folded),
    }
    models = {
        "torch_export_opt": torch_opt,
        "plugin": plugin,
        "folded": folded,
        "onnxoptimizer": onnxoptimizer.optimize(torch_bn, ["fuse_bn_into_conv"]),
        "onnxslim": onnxslim.slim(torch_bn),
        "plain_plugin": converted,
        "plain_folded": plain_folded,
        "onnxslim_raw": onnxslim.slim(torch_raw),
    }
    facts["batchnorm_nodes_before"] = _count(torch_bn, "BatchNormalization")
    facts["batchnorm_nodes_left"] = {k: _count(m, "BatchNormalization") for k, m in models.items()}
    facts["inplace_abn_nodes_left"] = {k: _count(m, "InplaceABN") for k, m in models.items()}
    for key, model in models.items():
        onnx.save(model, str(workdir / f"{name}.{key}.onnx"))
    torch.save(bn_net, workdir / f"{name}.torch_eager.pt")
    return facts


def time_network(name: str, workdir: Path, batch: int, repeat: int) -> dict:
    import torch

    from benchmarks.timing import block_medians

    torch.set_num_threads(os.cpu_count() or 1)
    bn_net = torch.load(workdir / f"{name}.torch_eager.pt", weights_only=False)
    x = np.random.default_rng(batch).standard_normal((batch, 3, _side(name), _side(name))).astype(np.float32)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        reference = bn_net(xt).numpy()
    calls, diffs = {}, {}

    def eager() -> object:
        with torch.no_grad():
            return bn_net(xt)

    calls["torch_eager"] = eager
    for variant in VARIANTS[1:]:
        session = _session(variant, _model_path(workdir, name, variant))
        feed = {session.get_inputs()[0].name: x}
        diffs[variant] = float(np.max(np.abs(session.run(None, feed)[0] - reference)))
        calls[variant] = (lambda s, f: lambda: s.run(None, f))(session, feed)
    medians = block_medians(calls, repeat, blocks=min(8, repeat), warmup=1)
    base = medians["torch_export_opt"]
    return {
        "batch": batch,
        "median_s": medians,
        "ratio_to_torch_export_opt": {k: v / base for k, v in medians.items()},
        "max_abs_diff_vs_eager": diffs,
        "reference_max_abs": float(np.max(np.abs(reference))),
    }


RSS_CHILD = """
import time
t0 = time.perf_counter()
import sys
import numpy as np
variant, path, batch, side = {variant!r}, {path!r}, {batch}, {side}
x = np.random.default_rng(0).standard_normal((batch, 3, side, side)).astype(np.float32)
if variant == "torch_eager":
    import torch
    torch.set_grad_enabled(False)
    net = torch.load(path, weights_only=False)
    run = lambda: net(torch.from_numpy(x))
elif variant in {session_variants!r}:
    import onnxruntime as ort
    import iabn_onnx
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = iabn_onnx.InferenceSession(path, so, kernel_only=variant == "plugin_kernel_only")
    run = lambda: s.run(None, {{s.get_inputs()[0].name: x}})
else:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    run = lambda: s.run(None, {{s.get_inputs()[0].name: x}})
run()
startup = time.perf_counter() - t0  # imports, model load, session, first run
for _ in range(2):
    run()
# VmHWM, not ru_maxrss: Linux carries the parent's ru_maxrss across fork+exec
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print(int(hwm.split()[1]) / 1024, startup)
"""


def _model_path(workdir: Path, name: str, variant: str) -> str:
    if variant == "torch_eager":
        return str(workdir / f"{name}.torch_eager.pt")
    return str(workdir / f"{name}.{variant.removesuffix('_kernel_only')}.onnx")


def _side(name: str) -> int:
    from benchmarks.architectures import IMAGE_SIZE

    return IMAGE_SIZE.get(name, 224)


def fresh_process(name: str, workdir: Path, variant: str, batch: int) -> tuple[float, float]:
    """Peak RSS (MB) and start-up plus first run (s) of one variant (or FRESH_EXTRA entry) in a fresh process."""
    variant, extra_env = FRESH_EXTRA.get(variant, (variant, {}))
    code = RSS_CHILD.format(
        variant=variant,
        path=_model_path(workdir, name, variant),
        batch=batch,
        side=_side(name),
        session_variants=SESSION_VARIANTS,
    )
    env = {**CLEAN_ENV, **extra_env}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    rss, startup = out.stdout.strip().splitlines()[-1].split()
    return float(rss), float(startup)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(net, run["batch"], run) for net, r in results["networks"].items() for run in r["runs"]]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(VARIANTS)
    for i, variant in enumerate(VARIANTS):
        ratios = [run["ratio_to_torch_export_opt"][variant] for _, _, run in groups]
        ax.bar([g + i * width for g in range(len(groups))], ratios, width, label=variant)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    ax.set_xticklabels([f"{net}\nbatch {b}" for net, b, _ in groups])
    ax.set_ylabel("median latency / torch export (BN folded)")
    ax.set_title("InplaceABN networks, onnxruntime CPU (lower is better)")
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def machine() -> dict:
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "torch": torch.__version__,
        "peak_rss_parent_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--networks", nargs="+", default=["resnet50", "tresnet_m", "densenet121", "wider_resnet20", "aspp_resnet50"]
    )
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--repeat", type=int, default=60, help="timed calls per variant (batch 8 uses half)")
    ap.add_argument(
        "--processes", type=int, default=5, help="fresh processes per variant for peak RSS and start-up (median)"
    )
    ap.add_argument("--no-rss", action="store_true", help="skip the per-variant peak-RSS processes")
    ap.add_argument(
        "--fresh-processes-only",
        action="store_true",
        help="rerun only the fresh processes (peak RSS, start-up), keeping the latency runs --json holds",
    )
    ap.add_argument("--json", default=str(RESULTS / "networks.json"))
    ap.add_argument("--png", default=str(RESULTS / "networks.png"))
    args = ap.parse_args(argv)
    results: dict = {"networks": {}}
    kept = json.loads(Path(args.json).read_text())["networks"] if args.fresh_processes_only else {}
    if kept:
        results["latency_runs_kept"] = True  # from the previous run of the same file, same versions
    from benchmarks.timing import compile_package

    compile_package()  # fresh processes then import the package as installed, not compile it
    with tempfile.TemporaryDirectory(prefix="iabn_bench_") as tmp:
        workdir = Path(tmp)
        os.environ["IABN_ONNX_CACHE_DIR"] = str(workdir / "start_cache")  # this run's own; children inherit it
        os.environ.pop("IABN_ONNX_CACHE", None)
        CLEAN_ENV.update(IABN_ONNX_CACHE_DIR=os.environ["IABN_ONNX_CACHE_DIR"])
        CLEAN_ENV.pop("IABN_ONNX_CACHE", None)
        for name in args.networks:
            facts = export_all(name, workdir)
            facts["same_graph_as_anchor"] = same_graph_as_anchor(name, workdir, GRAPH_CHECKED)
            if kept:
                runs = kept[name]["runs"]
                for v in SESSION_VARIANTS:  # the start-up cache the in-process timing would have filled
                    _session(v, _model_path(workdir, name, v))
            else:
                runs = [
                    time_network(name, workdir, b, max(3, args.repeat // (2 if b > 1 else 1))) for b in args.batches
                ]
            rss, startup, samples = {}, {}, {v: [] for v in [*VARIANTS, *FRESH_EXTRA]}
            if not args.no_rss:
                for _ in range(args.processes):  # variants alternate, so drift hits them all alike
                    for v in samples:
                        samples[v].append(fresh_process(name, workdir, v, max(args.batches)))
                for v, pairs in samples.items():
                    rss[v] = statistics.median(p[0] for p in pairs)
                    startup[v] = statistics.median(p[1] for p in pairs)
            results["networks"][name] = {
                **facts,
                "runs": runs,
                "peak_rss_mb": rss,
                "startup_s": startup,
                "fresh_processes": {v: [list(p) for p in pairs] for v, pairs in samples.items()},
            }
            print(
                f"\n{name}: {facts['inplace_abn_nodes']} InplaceABN nodes, fold {facts['fold_s'] * 1e3:.0f} ms, "
                f"BatchNormalization left: {facts['batchnorm_nodes_left']}"
            )
            for run in runs:
                print(f"  batch {run['batch']}:")
                for v in VARIANTS:
                    diff = run["max_abs_diff_vs_eager"].get(v, 0.0)
                    print(
                        f"    {v:17s} {run['median_s'][v] * 1e3:9.1f} ms  {run['ratio_to_torch_export_opt'][v]:5.2f}x"
                        f"  max|diff| {diff:.2e}  peak RSS {rss.get(v, float('nan')):.0f} MB"
                        f"  start-up {startup.get(v, float('nan')):.2f} s"
                    )
    results["machine"] = machine()
    from benchmarks.timing import environment

    results["environment"] = environment()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    plot(results, Path(args.png))
    print(f"\nwrote {args.json} and {args.png}")
    return results


if __name__ == "__main__":
    main()
