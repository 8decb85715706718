"""int8 at a segmentation size: ``iabn_onnx.quantize`` beside onnxruntime's quantizer by hand, per network.

For each network (the segmentation networks of ``architectures.py``: ASPP-ResNet-50, and WiderResNet-20's
trunk with a 1x1 classifier), at ``--size`` (512) and batch 1:

* the folded fp32 file (``export_torch`` then ``fold``) and ``--samples`` (8) random calibration images;
* ``quantize``: ``iabn_onnx.quantize(folded, samples)`` with its defaults, in a fresh process;
* ``by_hand``: onnxruntime's ``quant_pre_process`` + ``quantize_static`` (QDQ, QUInt8 activations,
  per-channel QInt8 weights, MinMax) on the same file and samples, in a fresh process;
* for each: wall time and peak RSS above the process's RSS once its libraries are imported
  (``VmHWM`` − ``VmRSS`` before the work), from the child itself;
* the median time of a batch-1 run of the fp32, ``quantize`` and ``by_hand`` files on onnxruntime
  (alternating blocks, one process), the speed-ups over fp32, and each int8 file's pixel agreement with
  fp32 (argmax over the class axis);
* where int8 time goes: onnxruntime's profiler on both the fp32 and the ``quantize`` file, the Conv
  kernels summed by layer class (1x1, 3x3, dilated 3x3, depthwise, other), with each class's speed-up.

    python benchmarks/bench_quantize_segmentation.py [--networks aspp_resnet50 wider_resnet20_seg] [--size 512]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
import numpy as np, onnx, onnxruntime
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static
import iabn_onnx, iabn_onnx.quantization
samples = dict(np.load({samples!r}))
base = rss("VmRSS")
start = time.perf_counter()
weights = None
if {mode!r} == "quantize":
    model, report = iabn_onnx.quantization.quantize_with_report({folded!r}, samples)
    onnx.save(model, {out!r})
    weights = report.weights
else:
    class Reader:
        def __init__(self):
            name, x = next(iter(samples.items()))
            self.feeds = iter([{{name: x[i : i + 1]}} for i in range(len(x))])
        def get_next(self):
            return next(self.feeds, None)
    prepared = {out!r} + ".prepared.onnx"
    quant_pre_process({folded!r}, prepared, skip_symbolic_shape=True)
    quantize_static(prepared, {out!r}, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "peak_rss_bytes": rss("VmHWM") - base, "weights": weights}}))
"""


def wider_resnet20_seg(num_classes: int = 19):  # type: ignore[no-untyped-def]
    """WiderResNet-20's trunk (mapillary's channel plan) with a 1x1 classifier: dense output at stride 16."""
    import torch.nn as nn

    from benchmarks.architectures import wider_resnet20

    trunk = list(wider_resnet20().children())[:-3]  # without pooling, flatten and classifier
    return nn.Sequential(*trunk, nn.Conv2d(2048, num_classes, 1))


def build(name: str):  # type: ignore[no-untyped-def]
    from benchmarks.architectures import build as build_named
    from benchmarks.architectures import randomize

    if name == "wider_resnet20_seg":
        return randomize(wider_resnet20_seg(), 0).eval()
    return build_named(name)


def child(mode: str, folded: Path, samples: Path, out: Path) -> dict:
    code = CHILD.format(root=str(ROOT), mode=mode, folded=str(folded), samples=str(samples), out=str(out))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=7200)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def layer_class(node) -> str:  # type: ignore[no-untyped-def]
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    kernel = list(attrs.get("kernel_shape", []))
    if attrs.get("group", 1) > 1:
        return "depthwise / grouped"
    if kernel == [1, 1]:
        return "1x1"
    if kernel == [3, 3]:
        return "dilated 3x3" if any(d > 1 for d in attrs.get("dilations", [1, 1])) else "3x3"
    return "other conv"


def profile_by_class(path: Path, folded: Path, x: np.ndarray, tmp: Path, runs: int = 5) -> dict[str, float]:
    """Per layer class, the median over runs of the summed Conv kernel seconds (QLinearConv in int8)."""
    import re

    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(folded), load_external_data=False).graph
    classes = {n.name: layer_class(n) for n in graph.node if n.op_type == "Conv"}
    classes |= {n.output[0]: layer_class(n) for n in graph.node if n.op_type == "Conv"}
    # onnxruntime fuses a Conv with the activation after it and names the fused kernel after either node, or
    # after its output (the NCHWc transformer: ``<output>_nchwc``)
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    for n in graph.node:
        if n.op_type == "Conv":
            for c in consumers.get(n.output[0], []):
                if c.op_type in ("Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "Tanh"):
                    classes.setdefault(c.name, classes[n.name])
                    classes.setdefault(c.output[0], classes[n.name])
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp / f"profile_{path.stem}")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    for _ in range(2):
        session.run(None, feed)
    for _ in range(runs):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    per_run: dict[str, list[float]] = {}
    seen: dict[str, int] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        if e.get("args", {}).get("op_name") not in ("Conv", "QLinearConv", "FusedConv"):
            continue
        name = re.sub(r"(_nchwc|_token_\d+|_fused)*_kernel_time$", "", e["name"])
        cls = classes.get(name, "other conv")
        k = seen.get(name, 0)
        seen[name] = k + 1
        if k < 2:  # the warm-up runs
            continue
        per_run.setdefault(cls, [0.0] * runs)[min(k - 2, runs - 1)] += e["dur"] * 1e-6
    return {cls: statistics.median(v) for cls, v in per_run.items()}


def bench_network(name: str, size: int, samples: int, repeat: int, tmp: Path) -> dict:
    import onnx
    import onnxruntime as ort
    import torch

    import iabn_onnx
    from benchmarks.timing import block_medians

    net = build(name)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    folded = tmp / f"{name}.folded.onnx"
    onnx.save(iabn_onnx.fold(iabn_onnx.export_torch(net, (x,))), str(folded))
    del net
    cal = tmp / f"{name}.samples.npz"
    np.savez(cal, input=np.random.default_rng(0).standard_normal((samples, 3, size, size)).astype(np.float32))
    files = {"fp32": folded, "quantize": tmp / f"{name}.quantize.onnx", "by_hand": tmp / f"{name}.by_hand.onnx"}
    cost = {mode: child(mode, folded, cal, files[mode]) for mode in ("by_hand", "quantize")}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    feed_x = np.random.default_rng(1).standard_normal((1, 3, size, size)).astype(np.float32)
    sessions = {k: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for k, p in files.items()}
    calls = {k: (lambda sess: lambda: sess.run(None, {"input": feed_x})[0])(v) for k, v in sessions.items()}
    outputs = {k: fn() for k, fn in calls.items()}
    medians = block_medians(calls, repeat, blocks=min(5, repeat), warmup=1, warmup_seconds=0.2)
    del sessions, calls
    agreement = {k: float((v.argmax(1) == outputs["fp32"].argmax(1)).mean()) for k, v in outputs.items() if k != "fp32"}
    fp32_classes = profile_by_class(folded, folded, feed_x, tmp)
    int8_classes = profile_by_class(files["quantize"], folded, feed_x, tmp)
    return {
        "size": size,
        "batch": 1,
        "calibration_samples": samples,
        "cost": cost,
        "median_s": medians,
        "speedup_vs_fp32": {k: medians["fp32"] / v for k, v in medians.items() if k != "fp32"},
        "pixel_agreement_with_fp32": agreement,
        "conv_seconds_by_class": {"fp32": fp32_classes, "int8": int8_classes},
        "conv_speedup_by_class": {c: fp32_classes[c] / int8_classes[c] for c in fp32_classes if c in int8_classes},
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", nargs="+", default=["aspp_resnet50", "wider_resnet20_seg"])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--json", default=str(RESULTS / "quantize_segmentation.json"))
    args = ap.parse_args(argv)
    import torch

    from benchmarks.timing import cpu_flags, write_results

    torch.set_num_threads(os.cpu_count() or 1)
    results: dict = {"cpu_flags": cpu_flags(), "repeat": args.repeat, "networks": {}}
    with tempfile.TemporaryDirectory(prefix="iabn_quantize_seg_bench_") as tmp:
        for name in args.networks:
            row = bench_network(name, args.size, args.samples, args.repeat, Path(tmp))
            results["networks"][name] = row
            c = row["cost"]
            print(
                f"{name} {args.size}px: quantize {c['quantize']['seconds']:.1f} s / "
                f"{c['quantize']['peak_rss_bytes'] / 2**30:.2f} GiB, by hand {c['by_hand']['seconds']:.1f} s / "
                f"{c['by_hand']['peak_rss_bytes'] / 2**30:.2f} GiB; int8 {row['speedup_vs_fp32']}",
                flush=True,
            )
    write_results(results, args.json)
    return results


if __name__ == "__main__":
    main()
