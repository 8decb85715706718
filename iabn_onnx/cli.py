"""The ``iabn-onnx`` command line.

Exit codes: 0 success, 1 the model or its inputs were rejected, 2 usage error
(argparse), missing file, or a file that is not an ONNX model.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx

from .op.schema import InplaceABNAttrs, InplaceABNError, is_inplace_abn
from .runtime.session import InferenceSession, ModelLoadError, load_model_file

EXIT_OK, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _progress(message: str) -> None:
    """Phase lines for the long commands, on stderr (stdout carries the report)."""
    print(f"iabn-onnx: {message}", file=sys.stderr, flush=True)


def _load(path: str) -> onnx.ModelProto:
    return _load_file(path)[0]


def _load_file(path: str) -> tuple[onnx.ModelProto, bool]:
    """The model and whether its tensors were in external data (the file is read once)."""
    try:
        return load_model_file(path)
    except FileNotFoundError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    except ModelLoadError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def _save_atomic(
    model: onnx.ModelProto, out: str, overwrite_ok: bool, source: str | None = None, external_source: bool = False
) -> None:
    """Write via a temporary file in the target folder, then rename.

    Tensors go to ``OUT.data`` (external data) when the model is near protobuf's 2 GiB limit or the
    input kept its tensors in external data.
    """
    target = Path(out)
    if source is not None and target.exists() and target.resolve() == Path(source).resolve() and not overwrite_ok:
        raise CliError(f"refusing to overwrite the input {out} (pass --force)", EXIT_USAGE)
    target.parent.mkdir(parents=True, exist_ok=True)
    external = external_source or model.ByteSize() > (1 << 31) - (1 << 26)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        if external:
            onnx.save(model, tmp, save_as_external_data=True, location=target.name + ".data")
        else:
            onnx.save(model, tmp)
        os.replace(tmp, target)
        if external:  # onnx.save moved the tensors out of the in-memory model; --verify still needs them
            from onnx.external_data_helper import load_external_data_for_model

            load_external_data_for_model(model, str(target.parent))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def random_feed(session: InferenceSession, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for every graph input, symbolic dims set to ``batch``."""
    rng = np.random.default_rng(seed)
    feed = {}
    type_map = {
        "tensor(float)": np.float32,
        "tensor(double)": np.float64,
        "tensor(float16)": np.float16,
        "tensor(int64)": np.int64,
        "tensor(int32)": np.int32,
    }
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) else batch for d in inp.shape]
        dtype = type_map.get(inp.type)
        if dtype is None:
            raise CliError(f"cannot make random data for input {inp.name} of type {inp.type}", EXIT_REJECTED)
        data = rng.standard_normal(shape)
        if inp.name in ("var",) or inp.name.endswith("var"):
            data = np.abs(data) + 0.5
        feed[inp.name] = data.astype(dtype)
    return feed


def _summary(name: str, arr: np.ndarray) -> str:
    a = np.asarray(arr)
    if a.size == 0 or not np.issubdtype(a.dtype, np.number):
        return f"  {name}: shape={list(a.shape)} dtype={a.dtype}"
    f = a.astype(np.float64)
    return (
        f"  {name}: shape={list(a.shape)} dtype={a.dtype} mean={np.nanmean(f):.6g} std={np.nanstd(f):.6g} "
        f"min={np.nanmin(f):.6g} max={np.nanmax(f):.6g} nan={int(np.isnan(f).sum())}"
    )


def _median_time(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# -- subcommands -----------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    """Run a small conv net with InplaceABN nodes (built, or --model) through onnxruntime, time it, fold it."""
    from .examples import conv_net_model

    if args.model:
        model = _load(args.model)
        where = f"loaded {args.model}:"
    else:
        model = conv_net_model(acts=("leaky_relu", "elu", "identity"), seed=0)
        where = "built a"
    nodes = [n for n in model.graph.node if is_inplace_abn(n)]
    print(f"{where} {len(model.graph.node)}-node conv net with {len(nodes)} InplaceABN nodes:")
    for n in nodes:
        a = InplaceABNAttrs.from_node(n)
        print(f"  {n.name}: act={a.act.value} act_alpha={a.act_alpha:g} epsilon={a.epsilon:g}")
    t0 = time.perf_counter()
    sess = InferenceSession(model, fold_frozen=False)  # every node in the fused kernel
    t_session = time.perf_counter() - t0
    feed = random_feed(sess, batch=args.batch)
    t0 = time.perf_counter()
    (y,) = sess.run(None, feed)
    t_first = time.perf_counter() - t0
    print(f"session created in {t_session * 1e3:.1f} ms; first run {t_first * 1e3:.1f} ms")
    print(_summary("output", y))
    per_run = _median_time(lambda: sess.run(None, feed), args.repeat)
    print(f"median run time over {args.repeat} runs (batch {args.batch}): {per_run * 1e3:.3f} ms")
    from .passes.fold import fold_with_report

    folded, report = fold_with_report(model)
    import onnxruntime as ort

    if report.left and not folded.functions:
        print(f"fold left {len(report.left)} node(s) ({report.left[0][1]}); no plain-onnxruntime run")
        return EXIT_OK
    plain = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"])
    (y_folded,) = plain.run(None, feed)
    diff = float(np.max(np.abs(y_folded - y)))
    folded_time = _median_time(lambda: plain.run(None, feed), args.repeat)
    how = (
        "to standard ops" if not report.left else f"{report.count} of {len(nodes)} (the rest via the model's function)"
    )
    print(f"folded {how}: plain onnxruntime {folded_time * 1e3:.3f} ms, max |diff| {diff:.3g}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    model = _load(args.model)
    sess = InferenceSession(model)
    if args.inputs:
        feed = {}
        for path in args.inputs:
            if not os.path.exists(path):
                raise CliError(f"no such input file: {path}", EXIT_USAGE)
            if path.endswith(".npz"):
                with np.load(path) as data:
                    feed.update({k: data[k] for k in data.files})
            else:
                name = sess.get_inputs()[len(feed)].name
                feed[name] = np.load(path)
    else:
        feed = random_feed(sess, batch=args.batch, seed=args.seed)
    outputs = sess.run(None, feed)
    names = [o.name for o in sess.get_outputs()]
    print(f"ran {args.model}: {len(sess.nodes)} InplaceABN node(s)")
    for name, arr in zip(names, outputs):
        print(_summary(name, arr))
    if args.save:
        np.savez(args.save, **dict(zip(names, outputs)))
        print(f"saved outputs to {args.save}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from .passes.fold import plan_fold

    model = _load(args.model)
    problems = []
    try:
        onnx.checker.check_model(model, full_check=True)
        print("onnx.checker (full_check): ok")
    except Exception as exc:
        problems.append(f"onnx.checker: {exc}")
    nodes = [n for n in model.graph.node if is_inplace_abn(n)]
    print(f"{len(nodes)} InplaceABN node(s)")
    try:
        from .runtime.lowering import lower

        _, lowered = lower(model)
        for info in lowered:
            a = info.attrs
            print(
                f"  {info.name}: act={a.act.value} alpha={a.act_alpha:g} eps={a.epsilon:g} "
                f"training_mode={a.training_mode} layout={a.data_layout.value}"
            )
    except InplaceABNError as exc:
        problems.append(str(exc))
    if not problems:
        for line in plan_fold(model):
            print(f"  fold: {line}")
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return EXIT_REJECTED if problems else EXIT_OK


def cmd_fold(args: argparse.Namespace) -> int:
    from .passes.fold import fold_with_report

    model, external = _load_file(args.model)  # no progress line before: a bad file gets exactly one error line
    _progress(f"loaded {args.model} ({model.ByteSize() / 2**20:.1f} MB)")
    _progress(f"folding {sum(is_inplace_abn(n) for n in model.graph.node)} InplaceABN node(s)")
    t0 = time.perf_counter()
    folded, report = fold_with_report(model)
    elapsed = time.perf_counter() - t0
    _progress(f"writing {args.output}")
    _save_atomic(folded, args.output, args.force, source=args.model, external_source=external)
    for line in report.lines():
        print(line)
    print(f"size: {model.ByteSize()} -> {folded.ByteSize()} bytes; folded in {elapsed * 1e3:.1f} ms")
    print(f"wrote {args.output}")
    if args.verify:
        _verify(model, folded, args.batch)
    return EXIT_OK


def _verify(before: onnx.ModelProto, after: onnx.ModelProto, batch: int) -> None:
    import onnxruntime as ort

    _progress("verifying: running both models on random inputs")
    sess_before = InferenceSession(before, fold_frozen=False)  # every node in the kernel, not folded
    feed = random_feed(sess_before, batch=batch, seed=1)
    ref = sess_before.run(None, feed)
    if any(n.domain for n in after.graph.node if n.domain not in ("", "ai.onnx")):
        got = InferenceSession(after, fold_frozen=False).run(None, feed)
    else:
        got = ort.InferenceSession(after.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    for o, a, b in zip(sess_before.get_outputs(), ref, got):
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        absd = float(np.max(np.abs(a64 - b64))) if a64.size else 0.0
        reld = float(np.max(np.abs(a64 - b64) / np.maximum(np.abs(a64), 1e-6))) if a64.size else 0.0
        print(f"verify {o.name}: max abs diff {absd:.3g}, max rel diff {reld:.3g}")


def cmd_convert(args: argparse.Namespace) -> int:
    from .exporters.convert import convert_with_report

    model, external = _load_file(args.model)
    _progress(f"loaded {args.model} ({model.ByteSize() / 2**20:.1f} MB); converting")
    converted, report = convert_with_report(model, function_fallback=not args.no_function)
    _progress(f"writing {args.output}")
    _save_atomic(converted, args.output, args.force, source=args.model, external_source=external)
    for line in report.lines():
        print(line)
    print(f"wrote {args.output}")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    import onnxruntime as ort

    from .passes.fold import fold

    model = _load(args.model)
    plugin = InferenceSession(model)
    kernel_only = InferenceSession(model, fold_frozen=False)
    feed = random_feed(plugin, batch=args.batch)
    rows = [
        ("plugin (default session)", lambda: plugin.run(None, feed)),
        ("plugin, every node in the kernel", lambda: kernel_only.run(None, feed)),
    ]
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    folded = ort.InferenceSession(fold(model).SerializeToString(), so, providers=["CPUExecutionProvider"])
    rows.append(("folded, plain onnxruntime", lambda: folded.run(None, feed)))
    if args.baseline:
        base = ort.InferenceSession(_load(args.baseline).SerializeToString(), so, providers=["CPUExecutionProvider"])
        rows.append((f"baseline {args.baseline}", lambda: base.run(None, feed)))
    first = None
    for i, (label, fn) in enumerate(rows):
        _progress(f"[{i + 1}/{len(rows)}] timing {label}")
        t = _median_time(fn, args.repeat)
        first = first or t
        print(f"{label:40s} {t * 1e3:9.3f} ms  ({t / first:.2f}x plugin)")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iabn-onnx", description="InplaceABN for ONNX and onnxruntime.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="build a small InplaceABN conv net, run and time it")
    d.add_argument("--model", help="run this model (e.g. models/convnet_elu.onnx) instead of the built-in net")
    d.add_argument("--batch", type=int, default=8)
    d.add_argument("--repeat", type=int, default=50)
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("run", help="run a model on .npy/.npz inputs or random inputs")
    r.add_argument("model")
    r.add_argument("--inputs", nargs="*", help=".npz (by name) or .npy files (in input order)")
    r.add_argument("--batch", type=int, default=1, help="size of symbolic dims for random inputs")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--save", help="write outputs to this .npz")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check", help="validate a model: schema, attributes, shapes, what would fold")
    c.add_argument("model")
    c.set_defaults(func=cmd_check)

    f = sub.add_parser("fold", help="fold frozen InplaceABN nodes into standard ops")
    f.add_argument("model")
    f.add_argument("-o", "--output", required=True)
    f.add_argument("--verify", action="store_true", help="compare both models on random inputs")
    f.add_argument("--batch", type=int, default=1)
    f.add_argument("--force", action="store_true", help="allow overwriting the input file")
    f.set_defaults(func=cmd_fold)

    v = sub.add_parser("convert", help="BatchNormalization (+LeakyRelu/Elu) -> InplaceABN")
    v.add_argument("model")
    v.add_argument("-o", "--output", required=True)
    v.add_argument("--force", action="store_true", help="allow overwriting the input file")
    v.add_argument(
        "--no-function",
        action="store_true",
        help="do not embed the InplaceABN function (without it, plain onnxruntime cannot run the result)",
    )
    v.set_defaults(func=cmd_convert)

    b = sub.add_parser("bench", help="time a model: plugin vs folded vs an optional baseline")
    b.add_argument("model")
    b.add_argument("--baseline", help="another ONNX model to time on the same inputs")
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--repeat", type=int, default=50)
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        print(f"iabn-onnx {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except InplaceABNError as exc:
        print(f"iabn-onnx {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_REJECTED


if __name__ == "__main__":
    sys.exit(main())
