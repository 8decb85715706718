"""Single InplaceABN node across sizes, dtypes, activations and modes, four ways.

* ``native``      onnxruntime BatchNormalization + LeakyRelu/Elu (inference only: onnxruntime's
                  inference build rejects training-mode BatchNormalization; float64 only where
                  onnxruntime has the float64 kernels)
* ``stock_pyop``  the same node as an onnxruntime-extensions Python op returned through the
                  stock hook (``r.flatten().tolist()``), numpy inside
* ``ours``        iabn_onnx.InferenceSession: the fused numba kernel through our return path
* ``folded``      iabn_onnx.fold on plain onnxruntime (inference only: BatchNormalization+act for float32,
                  per-channel Mul+Add+act for float64)

Medians in one process, alternating blocks, each variant given about ``--budget`` seconds.
Writes JSON and a latency-vs-size plot (float32, leaky_relu, inference).

    python benchmarks/bench_single_node.py [--budget 0.3]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

import iabn_onnx  # noqa: E402
from benchmarks.timing import block_medians, environment, repeats_for  # noqa: E402
from iabn_onnx.examples import native_equivalent, single_node_model  # noqa: E402
from iabn_onnx.op.reference import inplace_abn_reference  # noqa: E402
from iabn_onnx.op.schema import Activation, InplaceABNAttrs  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SHAPES = [(1, 64, 7, 7), (8, 64, 28, 28), (8, 64, 56, 56), (32, 256, 28, 28)]
VARIANTS = ["native", "stock_pyop", "ours", "folded"]
STOCK_DOMAIN = "bench.stock"


def _register_stock_ops() -> None:
    """The same computation as a stock onnxruntime-extensions Python op (float and double)."""
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    def compute(x, scale, bias, mean, var, **kwargs):  # type: ignore[no-untyped-def]
        attrs = InplaceABNAttrs(**json.loads(kwargs["config"]))
        result = inplace_abn_reference(x, scale, bias, mean, var, attrs)
        return result[0] if isinstance(result, tuple) else result

    for suffix, dt in (("f32", PyCustomOpDef.dt_float), ("f64", PyCustomOpDef.dt_double)):
        onnx_op(
            op_type=f"{STOCK_DOMAIN}::StockABN_{suffix}",
            inputs=[dt] * 5,
            outputs=[dt],
            attrs={"config": PyCustomOpDef.dt_string},
        )(compute)


def _stock_model(model: onnx.ModelProto, attrs: InplaceABNAttrs, dtype: np.dtype) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    node = out.graph.node[0]
    config = json.dumps(
        {
            "epsilon": attrs.epsilon,
            "momentum": attrs.momentum,
            "act": attrs.act.value,
            "act_alpha": attrs.act_alpha,
            "training_mode": attrs.training_mode,
        }
    )
    del node.attribute[:]
    del node.output[1:]
    del out.graph.output[1:]
    node.domain, node.op_type = STOCK_DOMAIN, "StockABN_" + ("f32" if dtype == np.float32 else "f64")
    node.attribute.append(onnx.helper.make_attribute("config", config))
    imports = [o for o in out.opset_import if o.domain != iabn_onnx.DOMAIN]
    del out.opset_import[:]
    out.opset_import.extend([*imports, onnx.helper.make_opsetid(STOCK_DOMAIN, 1)])
    return out


def _plain(model: onnx.ModelProto, options: ort.SessionOptions | None = None) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def measure(shape: tuple[int, ...], dtype: type, act: str, training: int, budget: float) -> dict:
    attrs = InplaceABNAttrs(act=Activation(act), act_alpha=0.01 if act == "leaky_relu" else 1.0, training_mode=training)
    model, params = single_node_model(shape, attrs, dtype)
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    feed = {"X": x}
    calls, skipped = {}, {}
    ours = iabn_onnx.InferenceSession(model, kernel_only=True)  # the kernel, not the standard-op route
    calls["ours"] = lambda: ours.run(None, feed)
    from onnxruntime_extensions import get_library_path

    stock_options = ort.SessionOptions()
    stock_options.register_custom_ops_library(get_library_path())
    stock = _plain(_stock_model(model, attrs, np.dtype(dtype)), stock_options)
    calls["stock_pyop"] = lambda: stock.run(None, feed)
    if training:
        skipped["native"] = skipped["folded"] = "training mode: not expressible in inference onnxruntime"
    else:
        for variant, build in (
            ("native", lambda: native_equivalent(shape, attrs, params)),
            ("folded", lambda: iabn_onnx.fold(model)),
        ):
            try:
                session = _plain(build())
                session.run(None, feed)
                calls[variant] = (lambda s: lambda: s.run(None, feed))(session)
            except Exception as exc:  # e.g. no float64 LeakyRelu/Elu kernel in onnxruntime's CPU provider
                skipped[variant] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    repeat = min(repeats_for(fn, budget / 2) for fn in calls.values())
    medians = block_medians(calls, max(5, repeat), blocks=5, warmup=1)
    return {
        "shape": list(shape),
        "elements": math.prod(shape),
        "dtype": np.dtype(dtype).name,
        "act": act,
        "training_mode": training,
        "median_s": medians,
        "not_run": skipped,
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, training in zip(axes, (0, 1)):
        sel = [
            r for r in rows if r["dtype"] == "float32" and r["act"] == "leaky_relu" and r["training_mode"] == training
        ]
        sel.sort(key=lambda r: r["elements"])
        for variant in VARIANTS:
            pts = [(r["elements"], r["median_s"][variant] * 1e3) for r in sel if variant in r["median_s"]]
            if pts:
                ax.loglog(*zip(*pts), marker="o", label=variant)
        ax.set_xlabel("elements in X (shapes [1,64,7,7] .. [32,256,28,28])")
        ax.set_title(f"float32 leaky_relu, {'training' if training else 'inference'} mode")
        ax.grid(True, which="both", lw=0.3)
    axes[0].set_ylabel("median ms per run()")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=0.3, help="seconds of timed calls per variant and case")
    ap.add_argument("--shapes", nargs="+", help="e.g. 1,64,7,7 (default: four sizes up to 32,256,28,28)")
    ap.add_argument("--json", default=str(RESULTS / "single_node.json"))
    ap.add_argument("--png", default=str(RESULTS / "single_node.png"))
    args = ap.parse_args(argv)
    _register_stock_ops()
    rows = []
    print(f"{'shape':18s} {'dtype':8s} {'act':10s} {'mode':5s} " + " ".join(f"{v:>11s}" for v in VARIANTS))
    shapes = [tuple(int(d) for d in s.split(",")) for s in args.shapes] if args.shapes else SHAPES
    for shape, dtype, act, training in itertools.product(
        shapes, (np.float32, np.float64), ("identity", "leaky_relu", "elu"), (0, 1)
    ):
        row = measure(shape, dtype, act, training, args.budget)
        rows.append(row)
        cells = [f"{row['median_s'][v] * 1e3:9.3f}ms" if v in row["median_s"] else f"{'n/a':>11s}" for v in VARIANTS]
        print(
            f"{list(shape)!s:18s} {row['dtype']:8s} {act:10s} {'train' if training else 'infer':5s} " + " ".join(cells),
            flush=True,
        )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"rows": rows, "onnxruntime": ort.__version__, "environment": environment()}, f, indent=2)
    plot(rows, Path(args.png))
    print(f"wrote {args.json} and {args.png}")
    return rows


if __name__ == "__main__":
    main()
