"""A Paddle saved program with inplace_abn ops, exported by export_paddle, against Paddle 2.6.2 itself.

The network: a ResNet-style CNN (stem conv, residual blocks conv-BN-leaky_relu / conv-BN + add, a
strided stage, global pool, fc) built with Paddle's ``batch_norm`` + ``leaky_relu``, saved with
``save_inference_model``, and rewritten into Paddle <= 2.5's ``inplace_abn`` ops as the test fixtures
are (``tests/paddle_fixtures/make_program_fixtures.py``). Variants, timed in this one process in
alternating blocks (medians), batch 1 and 8:

* ``paddle_executor``  Paddle's static Executor on the batch_norm program (the reference output)
* ``paddle_inference`` Paddle's ``paddle.inference`` predictor on the batch_norm saved model
* ``session``          ``iabn_onnx.export_paddle`` of the inplace_abn program, default InferenceSession
* ``folded``           the same, ``iabn_onnx.fold``, plain onnxruntime (ORT_ENABLE_ALL)

Needs paddlepaddle 2.6.2 (``pip install paddlepaddle==2.6.2``) beside the ``[paddle]`` extra.

    python benchmarks/bench_paddle.py [--batches 1 8] [--repeat 100] [--json benchmarks/results/paddle.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

VARIANTS = ["paddle_executor", "paddle_inference", "session", "folded"]
ANCHOR = "paddle_inference"  # Paddle's own deployment path


def _fixture_tools():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "make_program_fixtures", ROOT / "tests" / "paddle_fixtures" / "make_program_fixtures.py"
    )
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def build(width: int, side: int):  # type: ignore[no-untyped-def]
    import paddle
    import paddle.nn.functional as F

    def conv_bn(x, cout, k, stride=1, act=True):  # type: ignore[no-untyped-def]
        c = paddle.static.nn.conv2d(x, cout, k, stride=stride, padding=k // 2, bias_attr=False)
        b = paddle.static.nn.batch_norm(c, is_test=True)
        return F.leaky_relu(b, 0.01) if act else b

    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
        x = paddle.static.data("x", [-1, 3, side, side], "float32")
        h = conv_bn(x, width, 3, stride=2)
        for stage, cout in enumerate((width, 2 * width)):
            if stage:
                h = conv_bn(h, cout, 3, stride=2)
            for _ in range(2):
                h = F.leaky_relu(paddle.add(h, conv_bn(conv_bn(h, cout, 3), cout, 3, act=False)), 0.01)
        pooled = paddle.flatten(F.adaptive_avg_pool2d(h, 1), 1)
        out = paddle.static.nn.fc(pooled, 10)
    return main, startup, x, out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--repeat", type=int, default=100, help="timed calls per variant (batch 8 uses half)")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--side", type=int, default=112)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "paddle.json"))
    args = ap.parse_args(argv)
    import onnxruntime as ort
    import paddle
    from paddle import inference

    import iabn_onnx
    from benchmarks.timing import block_medians, write_results

    paddle.enable_static()
    tools = _fixture_tools()
    exe = paddle.static.Executor(paddle.CPUPlace())
    program, startup, x, out = build(args.width, args.side)
    exe.run(startup)
    tools._randomize(program, np.random.default_rng(0))  # signed scales, non-trivial statistics
    for var in program.list_vars():  # He-scaled weights keep a deep net's activations of order 1
        value = np.array(paddle.static.global_scope().find_var(var.name).get_tensor()) if var.persistable else None
        if value is not None and value.ndim >= 2:
            std = np.sqrt(2.0 / np.prod(value.shape[1:])) if value.ndim == 4 else np.sqrt(1.0 / value.shape[0])
            fresh = np.random.default_rng(1).standard_normal(value.shape) * std
            tools._scope_set(var.name, fresh.astype(np.float32))
    results: dict = {"network": {"width": args.width, "side": args.side}, "runs": []}
    with tempfile.TemporaryDirectory(prefix="iabn_bench_paddle_") as tmp:
        bn_prefix, abn_prefix = Path(tmp) / "bn" / "model", Path(tmp) / "abn" / "model"
        paddle.static.save_inference_model(str(bn_prefix), [x], [out], exe, program=program)
        abn_prefix.parent.mkdir()
        abn = tools.rewrite_to_inplace_abn(bn_prefix.with_suffix(".pdmodel").read_bytes(), [""] * 64, False)
        abn_prefix.with_suffix(".pdmodel").write_bytes(abn)
        abn_prefix.with_suffix(".pdiparams").write_bytes(bn_prefix.with_suffix(".pdiparams").read_bytes())
        model = iabn_onnx.export_paddle(abn_prefix)
        results["inplace_abn_nodes"] = sum(n.op_type == "InplaceABN" for n in model.graph.node)
        session = iabn_onnx.InferenceSession(model)
        results["routes"] = sorted({r.route for r in session.routes})
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        folded = ort.InferenceSession(iabn_onnx.fold(model).SerializeToString(), so, providers=["CPUExecutionProvider"])
        config = inference.Config(str(bn_prefix.with_suffix(".pdmodel")), str(bn_prefix.with_suffix(".pdiparams")))
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(os.cpu_count() or 1)
        config.disable_glog_info()
        predictor = inference.create_predictor(config)
        handle_in = predictor.get_input_handle(predictor.get_input_names()[0])
        handle_out = predictor.get_output_handle(predictor.get_output_names()[0])

        def predict(batch: np.ndarray) -> np.ndarray:
            handle_in.copy_from_cpu(batch)
            predictor.run()
            return handle_out.copy_to_cpu()

        for batch in args.batches:
            data = np.random.default_rng(batch).standard_normal((batch, 3, args.side, args.side)).astype(np.float32)
            calls = {
                "paddle_executor": lambda d=data: exe.run(program, feed={"x": d}, fetch_list=[out])[0],
                "paddle_inference": lambda d=data: predict(d),
                "session": lambda d=data: session.run(None, {"x": d})[0],
                "folded": lambda d=data: folded.run(None, {"x": d})[0],
            }
            reference = calls["paddle_executor"]()
            scale = max(float(np.max(np.abs(reference))), 1.0)
            diffs = {k: float(np.max(np.abs(fn() - reference))) / scale for k, fn in calls.items()}
            repeat = max(3, args.repeat // (2 if batch > 1 else 1))
            medians = block_medians(calls, repeat, blocks=min(5, repeat), warmup=3)
            run = {
                "batch": batch,
                "median_s": medians,
                "ratio_to_" + ANCHOR: {k: v / medians[ANCHOR] for k, v in medians.items()},
                "max_rel_diff_vs_paddle": diffs,
                "reference_max_abs": float(np.max(np.abs(reference))),
            }
            results["runs"].append(run)
            print(f"batch {batch}:")
            for k in VARIANTS:
                ratio = run["ratio_to_" + ANCHOR][k]
                print(f"  {k:17s} {medians[k] * 1e3:8.2f} ms  {ratio:5.2f}x  max|diff| {diffs[k]:.1e}")
    write_results(results, args.json, paddlepaddle=paddle.__version__)
    return results


if __name__ == "__main__":
    main()
