"""int8 with 8-bit and with 7-bit weights (onnxruntime's ``reduce_range``) on this CPU: what each keeps.

``quantize`` takes 7 bits where the CPU's int8 dot product saturates with 8 (``iabn_onnx/quantization/cpu.py``:
x86 without VNNI or AMX). This measures both ranges here, per-channel weights, the same calibration:

* the trained fixtures (scikit-learn's digits, the ``[test]`` extra): the segmenter of ``tests/digits_seg`` on
  its 200 held-out canvases (pixel accuracy, mIoU) and the classifier of ``tests/digits`` on its held-out
  digits (accuracy), for fp32 and both int8 files;
* with torch, a segmentation network of ``bench_quantize_segmentation.py`` (``--network``, at ``--size``,
  batch 1, random weights and inputs): the median time of the fp32 and both int8 files on onnxruntime
  (alternating blocks, one process) and each int8 file's pixel agreement with fp32 (argmax over classes).

    python benchmarks/bench_weight_bits.py [--network wider_resnet20_seg] [--size 256] [--json ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BITS = {"int8_8bit": False, "int8_7bit": True}


def _fixture(folder: str, module: str):  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(ROOT / "tests" / folder))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.pop(0)


def fixture_rows(samples: int) -> dict:
    """Both trained fixtures in fp32 and in each weight range, as the check reports them."""
    from iabn_onnx.quantization import quantize_with_report

    rows: dict = {}
    cases = {
        "digits_seg": ("digits_seg", "train_digits_seg", "digits_seg.onnx"),
        "digits": ("digits", "train_digits", "digits_inplace_abn.onnx"),
    }
    for name, (folder, module, onnx_file) in cases.items():
        x_train, _, x_test, y_test = _fixture(folder, module).dataset()
        row: dict = {"held_out": len(x_test)}
        for key, seven in BITS.items():
            _, report = quantize_with_report(
                str(ROOT / "tests" / folder / onnx_file), {"input": x_train[:samples]},
                check={"input": x_test, "labels": y_test}, per_channel=True, reduce_range=seven,
                max_accuracy_drop=100.0, min_agreement=0.0,  # measure, never refuse
            )  # fmt: skip
            (output,) = report.check.to_json()["outputs"].values()
            row[key] = {"weight_bits": report.weight_bits, **output}
        rows[name] = row
        print(name, {k: (row[k]["accuracy_int8"], row[k]["miou_int8"]) for k in BITS}, flush=True)
    return rows


def network_row(name: str, size: int, samples: int, repeat: int, tmp: Path) -> dict:
    """A segmentation network's fp32 and int8 files timed side by side, with their pixel agreement."""
    import onnx
    import onnxruntime as ort
    import torch

    import iabn_onnx
    from benchmarks.bench_quantize_segmentation import build
    from benchmarks.timing import block_medians

    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    folded = iabn_onnx.fold(iabn_onnx.export_torch(build(name), (x,)))
    cal = {"input": np.random.default_rng(0).standard_normal((samples, 3, size, size)).astype(np.float32)}
    files = {"fp32": tmp / "fp32.onnx"}
    onnx.save(folded, str(files["fp32"]))
    for key, seven in BITS.items():
        files[key] = tmp / f"{key}.onnx"
        onnx.save(iabn_onnx.quantize(folded, cal, per_channel=True, reduce_range=seven), str(files[key]))
    del folded
    feed = {"input": np.random.default_rng(1).standard_normal((1, 3, size, size)).astype(np.float32)}
    sessions = {k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for k, p in files.items()}
    calls = {k: (lambda s: lambda: s.run(None, feed)[0])(v) for k, v in sessions.items()}
    outputs = {k: fn() for k, fn in calls.items()}
    medians = block_medians(calls, repeat, blocks=min(5, repeat), warmup=1, warmup_seconds=0.2)
    return {
        "network": name,
        "size": size,
        "batch": 1,
        "calibration_samples": samples,
        "median_s": medians,
        "pixel_agreement_with_fp32": {
            k: float((outputs[k].argmax(1) == outputs["fp32"].argmax(1)).mean()) for k in BITS
        },
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--network", default="wider_resnet20_seg", help="a network of bench_quantize_segmentation.py")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--samples", type=int, default=16, help="calibration samples")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--no-network", action="store_true", help="only the trained fixtures (no torch needed)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "weight_bits.json"))
    args = ap.parse_args(argv)
    from benchmarks.timing import cpu_flags, write_results
    from iabn_onnx.quantization.cpu import int8_dot_saturates

    results: dict = {"cpu_flags": cpu_flags(), "saturates": int8_dot_saturates()}
    results["fixture_calibration_samples"] = args.samples
    results["fixtures"] = fixture_rows(args.samples)
    if not args.no_network and importlib.util.find_spec("torch") is not None:
        with tempfile.TemporaryDirectory(prefix="iabn_weight_bits_") as tmp:
            results["network"] = network_row(args.network, args.size, args.samples, args.repeat, Path(tmp))
        print(args.network, results["network"]["median_s"], results["network"]["pixel_agreement_with_fp32"])
    write_results(results, args.json)
    return results


if __name__ == "__main__":
    main()
