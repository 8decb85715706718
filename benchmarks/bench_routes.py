"""Route choice by measurement: for frozen nodes of each layout, dtype and activation, the fused kernel
against each standard-op form of the same node on plain onnxruntime.

Candidates, all computing the same node (checked against the float64 reference before timing):

* ``kernel``     iabn_onnx.InferenceSession(kernel_only=True): the fused kernel through the Python-op bridge
* ``mul_add``    per-channel Mul + Add (factor and shift computed in float64), then LeakyRelu/Elu (float64:
                 their expansion into Min/Mul/Relu/Add, Exp/Sub for elu, as onnxruntime has no double
                 LeakyRelu/Elu)
* ``batchnorm``  BatchNormalization, then the same activation; NHWC between two Transposes

Medians in one process, alternating blocks, each variant given about ``--budget`` seconds. The session's
routes follow the winners (``passes/batchnorm_form.py``, ``runtime/lowering.py``).

    python benchmarks/bench_routes.py [--budget 0.4]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402

import iabn_onnx  # noqa: E402
from benchmarks.timing import block_medians, repeats_for  # noqa: E402
from iabn_onnx.examples import single_node_model  # noqa: E402
from iabn_onnx.op.reference import inplace_abn_reference  # noqa: E402
from iabn_onnx.op.schema import ONNX_OPSET, Activation, InplaceABNAttrs, Layout, make_model  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SHAPES_NCHW = [(1, 64, 56, 56), (8, 64, 28, 28), (8, 64, 56, 56), (32, 256, 14, 14)]
TOLERANCE = {np.float16: 2e-2, np.float32: 1e-4, np.float64: 1e-10}


def _activation(z: str, y: str, act: Activation, alpha: float, dtype: type) -> tuple[list, list]:
    """Nodes and initializers for y = act(z), as the session would write them."""
    if act is Activation.IDENTITY:
        return [helper.make_node("Identity", [z], [y])], []
    if dtype != np.float64:
        op = "LeakyRelu" if act is Activation.LEAKY_RELU else "Elu"
        return [helper.make_node(op, [z], [y], alpha=alpha)], []
    inits = [numpy_helper.from_array(np.zeros((), dtype), "zero"), numpy_helper.from_array(np.array(alpha), "alpha")]
    nodes = [helper.make_node("Min", [z, "zero"], ["neg"])]
    if act is Activation.LEAKY_RELU:
        nodes.append(helper.make_node("Mul", ["neg", "alpha"], ["scaled"]))
    else:
        inits.append(numpy_helper.from_array(np.ones((), dtype), "one"))
        nodes += [
            helper.make_node("Exp", ["neg"], ["e"]),
            helper.make_node("Sub", ["e", "one"], ["em1"]),
            helper.make_node("Mul", ["em1", "alpha"], ["scaled"]),
        ]
    nodes += [helper.make_node("Relu", [z], ["pos"]), helper.make_node("Add", ["pos", "scaled"], [y])]
    return nodes, inits


def _batchnorm_form(shape, attrs: InplaceABNAttrs, params: dict[str, np.ndarray], dtype: type) -> onnx.ModelProto:
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    rank, nodes, x = len(shape), [], "X"
    nhwc = attrs.data_layout is Layout.NHWC
    if nhwc:
        nodes.append(helper.make_node("Transpose", ["X"], ["X_nchw"], perm=[0, rank - 1, *range(1, rank - 1)]))
        x = "X_nchw"
    nodes.append(helper.make_node("BatchNormalization", [x, *params], ["Z"], epsilon=attrs.epsilon))
    act_nodes, inits = _activation("Z", "A" if nhwc else "Y", attrs.act, attrs.act_alpha, dtype)
    nodes += act_nodes
    if nhwc:
        nodes.append(helper.make_node("Transpose", ["A"], ["Y"], perm=[0, *range(2, rank), 1]))
    graph = helper.make_graph(
        nodes,
        "batchnorm_form",
        [helper.make_tensor_value_info("X", elem, list(shape))],
        [helper.make_tensor_value_info("Y", elem, list(shape))],
        [*(numpy_helper.from_array(v, k) for k, v in params.items()), *inits],
    )
    return make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])


def _mul_add_form(shape, attrs: InplaceABNAttrs, params: dict[str, np.ndarray], dtype: type) -> onnx.ModelProto:
    """Y = act(X * s + t), s and t per channel, computed in float64 as the fold pass does."""
    scale, bias, mean, var = (params[k].astype(np.float64) for k in ("scale", "B", "mean", "var"))
    s = scale / np.sqrt(var + np.float64(np.float32(attrs.epsilon)))
    t = bias - mean * s
    rank, channels = len(shape), s.shape[0]
    broadcast = (channels,) if attrs.data_layout is Layout.NHWC else (channels,) + (1,) * (rank - 2)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    act_nodes, inits = _activation("Z", "Y", attrs.act, attrs.act_alpha, dtype)
    graph = helper.make_graph(
        [helper.make_node("Mul", ["X", "s"], ["S"]), helper.make_node("Add", ["S", "t"], ["Z"]), *act_nodes],
        "mul_add_form",
        [helper.make_tensor_value_info("X", elem, list(shape))],
        [helper.make_tensor_value_info("Y", elem, list(shape))],
        [
            numpy_helper.from_array(s.reshape(broadcast).astype(dtype), "s"),
            numpy_helper.from_array(t.reshape(broadcast).astype(dtype), "t"),
            *inits,
        ],
    )
    return make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])


def measure(shape: tuple[int, ...], layout: str, dtype: type, act: str, budget: float) -> dict:
    attrs = InplaceABNAttrs(
        act=Activation(act), act_alpha=0.01 if act == "leaky_relu" else 1.0, data_layout=Layout(layout)
    )
    if layout == "NHWC":
        shape = (shape[0], *shape[2:], shape[1])
    model, params = single_node_model(shape, attrs, dtype)
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    expected = inplace_abn_reference(x, *params.values(), attrs)
    kernel = iabn_onnx.InferenceSession(model, kernel_only=True)
    calls = {"kernel": lambda: kernel.run(None, {"X": x})}
    errors = {"kernel": float(np.max(np.abs(calls["kernel"]()[0].astype(np.float64) - expected)))}
    failed = {}
    for variant, build in (
        ("mul_add", lambda: _mul_add_form(shape, attrs, params, dtype)),
        ("batchnorm", lambda: _batchnorm_form(shape, attrs, params, dtype)),
    ):
        try:
            session = ort.InferenceSession(build().SerializeToString(), providers=["CPUExecutionProvider"])
            got = session.run(None, {"X": x})[0]
        except Exception as exc:  # no such kernel in onnxruntime's CPU provider
            failed[variant] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            continue
        error = float(np.max(np.abs(got.astype(np.float64) - expected)))
        errors[variant] = error
        if error > TOLERANCE[dtype] * (1 + float(np.max(np.abs(expected)))):
            failed[variant] = f"differs from the reference by {error:.3g}"
            continue
        calls[variant] = (lambda s: lambda: s.run(None, {"X": x}))(session)
    repeat = min(repeats_for(fn, budget / 2) for fn in calls.values())
    medians = block_medians(calls, max(5, repeat), blocks=5, warmup=1)
    return {
        "shape": list(shape),
        "layout": layout,
        "dtype": np.dtype(dtype).name,
        "act": act,
        "median_s": medians,
        "ratio_to_kernel": {k: v / medians["kernel"] for k, v in medians.items()},
        "max_abs_error": errors,  # against the float64 reference
        "max_abs_output": float(np.max(np.abs(expected))),
        "not_run": failed,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=0.4, help="seconds of calls per variant and case")
    ap.add_argument(
        "--shapes", nargs="+", default=[",".join(map(str, s)) for s in SHAPES_NCHW], help="NCHW shapes, as 8,64,28,28"
    )
    ap.add_argument("--json", default=str(RESULTS / "routes.json"))
    args = ap.parse_args(argv)
    shapes = [tuple(int(d) for d in text.split(",")) for text in args.shapes]
    cases = itertools.product(
        shapes, ["NCHW", "NHWC"], [np.float32, np.float16, np.float64], ["identity", "leaky_relu", "elu"]
    )
    rows = []
    for shape, layout, dtype, act in cases:
        row = measure(shape, layout, dtype, act, args.budget)
        rows.append(row)
        ratios = "  ".join(f"{k} {v:5.2f}x" for k, v in row["ratio_to_kernel"].items())
        print(f"{layout} {np.dtype(dtype).name:8s} {act:10s} {row['shape']!s:18s} {ratios}", flush=True)
    results = {"rows": rows, "onnxruntime": ort.__version__}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    from benchmarks.timing import environment

    results["environment"] = environment()
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
