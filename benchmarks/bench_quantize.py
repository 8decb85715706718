"""int8 against fp32: ``iabn_onnx.quantize`` on the networks of ``architectures.py``, one process.

For each network (mapillary-style InPlaceABN, exported by ``export_torch``), at each batch size, the
medians of alternating blocks of runs (``timing.block_medians``) of:

* ``torch_export_opt``: the same network in BatchNorm2d+activation form, ``torch.onnx.export(dynamo=True,
  optimize=True)``, on onnxruntime (the anchor: torch's best fp32 export);
* ``folded``: ``iabn_onnx.fold``'s fp32 model on onnxruntime;
* ``int8``: ``iabn_onnx.quantize``'s QDQ model (calibrated on 16 random inputs; the weights its default chose
  layer by layer, by measurement, recorded) on onnxruntime; ``int8_per_channel``: the same with per-channel
  weights forced;
* with OpenVINO installed: ``openvino_f32`` (the folded file, ``INFERENCE_PRECISION_HINT=f32``),
  ``openvino_default`` (the folded file, OpenVINO's default precision: bf16 on CPUs with AMX or avx512_bf16) and
  ``openvino_int8_per_channel`` (the per-channel int8 file: OpenVINO's fast int8 kernels want symmetric
  weights, and ran the per-tensor asymmetric one at less than half that speed).

Every session uses both cores; onnxruntime runs with ORT_ENABLE_ALL. Each block starts with 0.2 s of
untimed runs: the worker threads of the session timed before spin on, and stole a core from the first
calls of a short int8 run. The onnxruntime variants are timed
together, then the OpenVINO ones beside a second session of the anchor (OpenVINO's worker threads, alive in
the same process, slowed onnxruntime's short int8 runs). The speed-up is the anchor's median over the
variant's, in the same phase. Also recorded: the top-1 agreement of int8 with fp32 on the timed batch,
and the CPU's ISA flags that decide int8 and bf16 speed (avx512_vnni, amx_int8, ...).

    python benchmarks/bench_quantize.py [--networks resnet50 tresnet_m ...] [--batches 1 8] [--repeat 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

#: network -> the weight scheme quantize's default chose, and why
WEIGHTS: dict[str, str] = {}
from benchmarks.timing import cpu_flags  # noqa: E402


def export(name: str, workdir: Path) -> dict[str, Path]:
    import onnx
    import torch

    import iabn_onnx
    from benchmarks.architectures import IMAGE_SIZE, build, to_batchnorm
    from iabn_onnx.quantization import quantize_with_report

    side = IMAGE_SIZE.get(name, 224)
    net = build(name)
    x = torch.randn(1, 3, side, side)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=64)},)
    plugin = iabn_onnx.export_torch(net, (x,), dynamic_shapes=dynamic)
    torch_opt = torch.onnx.export(to_batchnorm(net), (x,), dynamo=True, optimize=True, dynamic_shapes=dynamic)
    folded = iabn_onnx.fold(plugin)
    calibration = np.random.default_rng(0).standard_normal((16, 3, side, side)).astype(np.float32)
    samples = {folded.graph.input[0].name: calibration}
    int8, report = quantize_with_report(folded, samples)  # the default: the weight scheme measured here
    per_channel = iabn_onnx.quantize(folded, samples, per_channel=True)
    paths = {k: workdir / f"{name}.{k}.onnx" for k in ("torch_export_opt", "folded", "int8", "int8_per_channel")}
    onnx.save(torch_opt.model_proto, str(paths["torch_export_opt"]))
    onnx.save(folded, str(paths["folded"]))
    onnx.save(int8, str(paths["int8"]))
    onnx.save(per_channel, str(paths["int8_per_channel"]))
    WEIGHTS[name] = report.weights
    return paths


def _ort_calls(paths: dict[str, Path], x: np.ndarray) -> dict[str, object]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    calls = {}
    for variant, path in paths.items():
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        calls[variant] = (lambda s, f: lambda: s.run(None, f)[0])(session, feed)
    return calls


def _openvino_calls(paths: dict[str, Path], x: np.ndarray) -> dict[str, object]:
    import openvino as ov

    core = ov.Core()
    calls = {}
    for variant, path, config in (
        ("openvino_f32", paths["folded"], {"INFERENCE_PRECISION_HINT": "f32"}),
        ("openvino_default", paths["folded"], {}),
        ("openvino_int8_per_channel", paths["int8_per_channel"], {}),
    ):
        compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        request = compiled.create_infer_request()
        output = compiled.outputs[0]
        calls[variant] = (lambda r, o: lambda: np.asarray(r.infer({0: x})[o]))(request, output)
    return calls


def _phase(calls: dict[str, object], repeat: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    from benchmarks.timing import block_medians

    outputs = {k: np.asarray(fn()) for k, fn in calls.items()}  # type: ignore[operator]
    medians = block_medians(calls, repeat, blocks=min(5, repeat), warmup=1, warmup_seconds=0.2)  # type: ignore[arg-type]
    return medians, outputs


def time_network(name: str, paths: dict[str, Path], batch: int, repeat: int) -> dict:
    """Two phases, each against the anchor timed beside it: onnxruntime's sessions alone (no other runtime's
    threads alive), then OpenVINO's, when it is installed."""
    import importlib.util

    from benchmarks.architectures import IMAGE_SIZE

    side = IMAGE_SIZE.get(name, 224)
    x = np.random.default_rng(batch).standard_normal((batch, 3, side, side)).astype(np.float32)
    medians, outputs = _phase(_ort_calls(paths, x), repeat)
    speedup = {k: medians["torch_export_opt"] / v for k, v in medians.items()}
    if importlib.util.find_spec("openvino") is not None:
        anchor = {
            "torch_export_opt": _ort_calls({"torch_export_opt": paths["torch_export_opt"]}, x)["torch_export_opt"]
        }
        ov_medians, ov_outputs = _phase({**anchor, **_openvino_calls(paths, x)}, repeat)
        speedup.update(
            {k: ov_medians["torch_export_opt"] / v for k, v in ov_medians.items() if k != "torch_export_opt"}
        )
        medians.update({k: v for k, v in ov_medians.items() if k != "torch_export_opt"})
        outputs.update(ov_outputs)
    top1 = {k: float((v.reshape(batch, -1).argmax(1) == outputs["folded"].reshape(batch, -1).argmax(1)).mean())
            for k, v in outputs.items()}  # fmt: skip
    return {
        "batch": batch,
        "median_s": medians,
        "speedup_vs_torch_export_opt": speedup,
        "top1_agreement_with_folded": top1,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", nargs="+", default=["resnet50", "tresnet_m", "densenet121", "wider_resnet20",
                                                      "aspp_resnet50"])  # fmt: skip
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--json", default=str(RESULTS / "quantize.json"))
    args = ap.parse_args(argv)
    import torch

    from benchmarks.timing import write_results

    torch.set_num_threads(os.cpu_count() or 1)
    results: dict = {"cpu_flags": cpu_flags(), "repeat": args.repeat, "networks": {}}
    with tempfile.TemporaryDirectory(prefix="iabn_quantize_bench_") as tmp:
        for name in args.networks:
            paths = export(name, Path(tmp))
            rows = [time_network(name, paths, batch, args.repeat) for batch in args.batches]
            results["networks"][name] = rows
            results.setdefault("weights", {})[name] = WEIGHTS[name]
            for row in rows:
                speed = ", ".join(f"{k} {v:.2f}x" for k, v in row["speedup_vs_torch_export_opt"].items())
                print(f"{name} batch {row['batch']}: {speed}", flush=True)
    versions = {}
    try:
        import openvino

        versions["openvino"] = openvino.__version__
    except ImportError:
        pass
    write_results(results, args.json, **versions)
    return results


if __name__ == "__main__":
    main()
