"""The ``iabn-onnx`` subcommands (``cli.py`` parses the arguments and maps errors to exit codes).

One module for every subcommand, so that they share one loader and one atomic writer; each
``cmd_*`` function is short. ``cli.py`` imports this module only once a command runs, so
``--help`` and ``--version`` load neither numpy nor onnx.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx

from .cli_errors import EXIT_OK, EXIT_REJECTED, EXIT_USAGE, CliError
from .exporters.torch_verify import first_line as _first_line
from .graph import save_model
from .op.schema import InplaceABNAttrs, is_inplace_abn
from .runtime.session import InferenceSession, ModelLoadError, load_model_file

PROGRESS_AFTER = 5.0  # seconds: a step shorter than this prints no progress line


def _progress(message: str) -> None:
    """Phase lines for the long commands, on stderr and only to a terminal: stdout carries the
    report, and a failure is then exactly one stderr line wherever stderr is captured."""
    if sys.stderr.isatty():
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


def _check_output_path(out: str, force: bool) -> Path:
    """The one rule of every command that writes a file: the folder must exist (it is not created),
    and an existing file is replaced only with ``--force``."""
    target = Path(out)
    if target.is_dir():
        raise CliError(f"output {out} is a directory; name a file", EXIT_USAGE)
    folder = target.parent
    if not folder.is_dir():
        raise CliError(f"cannot write {out}: no such folder {folder}", EXIT_USAGE)
    if target.exists() and not force:
        raise CliError(f"{out} exists (pass --force to overwrite it)", EXIT_USAGE)
    return target


def _save_atomic(
    model: onnx.ModelProto,
    out: str,
    force: bool,
    external_source: bool = False,
    before_commit: Callable[[], None] | None = None,
) -> None:
    """Write into a temporary folder beside ``out``, run ``before_commit``, then move into place.

    Nothing is left at ``out`` (nor at ``OUT.data``) when writing or ``before_commit`` fails.
    Tensors go to ``OUT.data`` (external data) when the model is too big for one message or the
    input kept its tensors in external data.
    """
    target = _check_output_path(out, force)
    try:
        staging = tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}", EXIT_USAGE) from None
    staged = os.path.join(staging, target.name)  # the final name: external data refers to it
    try:
        if save_model(model, staged, external=external_source):
            # onnx.save moved the tensors out of the in-memory model; --verify still needs them
            from onnx.external_data_helper import load_external_data_for_model

            load_external_data_for_model(model, staging)
        if before_commit is not None:
            before_commit()
        for name in sorted(os.listdir(staging), reverse=True):  # OUT.data before OUT
            os.replace(os.path.join(staging, name), target.parent / name)
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}", EXIT_USAGE) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


_NP_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


def random_feed(session: InferenceSession, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for every graph input, symbolic dims set to ``batch``."""
    rng = np.random.default_rng(seed)
    feed = {}
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) else batch for d in inp.shape]
        dtype = _NP_DTYPES.get(inp.type)
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
    """Run a small conv net with InplaceABN nodes (built, or --model) as a user would: the default
    session (saying where each node went), against the folded model on plain onnxruntime; the
    every-node-in-the-kernel session is timed too, labelled as such."""
    import onnxruntime as ort

    from .examples import conv_net_model
    from .passes.fold import fold_with_report

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
    sess = InferenceSession(model)  # the default session: each node to its fastest exact route
    t_session = time.perf_counter() - t0
    print(f"default session created in {t_session * 1e3:.1f} ms; routes:")
    for route in sess.routes:
        print(f"  {route}")
    feed = random_feed(sess, batch=args.batch)
    t0 = time.perf_counter()
    (y,) = sess.run(None, feed)
    t_first = time.perf_counter() - t0
    print(_summary("output", y))
    per_run = _median_time(lambda: sess.run(None, feed), args.repeat)
    rows = [("default session (iabn_onnx.InferenceSession)", per_run, y)]
    folded, report = fold_with_report(model)
    if report.left and not folded.functions:
        print(f"fold left {len(report.left)} node(s) ({report.left[0][1]}); no plain-onnxruntime run")
    else:
        plain = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"])
        (y_folded,) = plain.run(None, feed)
        rows.append(
            ("folded model, plain onnxruntime", _median_time(lambda: plain.run(None, feed), args.repeat), y_folded)
        )
    kernel = InferenceSession(model, kernel_only=True)
    t0 = time.perf_counter()
    (y_kernel,) = kernel.run(None, feed)
    t_kernel_first = time.perf_counter() - t0
    kernel_time = _median_time(lambda: kernel.run(None, feed), args.repeat)
    rows.append(("every node in the Python kernel (kernel_only=True)", kernel_time, y_kernel))
    print(f"median run time over {args.repeat} runs, batch {args.batch} (same inputs):")
    for label, seconds, out in rows:
        diff = float(np.max(np.abs(np.asarray(out, np.float64) - y))) if out is not y else 0.0
        ratio = f"{seconds / per_run:.2f}x the default session"
        print(f"  {label:52s} {seconds * 1e3:8.3f} ms  ({ratio}; max |diff| {diff:.2g})")
    print(
        f"first runs include one-time set-up: default session {t_first * 1e3:.1f} ms, "
        f"kernel-only session {t_kernel_first * 1e3:.1f} ms (the kernel's first call: numba compiles it, or loads "
        "it from its cache, once per process)"
    )
    return EXIT_OK


def _read_array_file(path: str) -> dict[str, np.ndarray] | np.ndarray:
    if not os.path.isfile(path):
        raise CliError(f"no such input file: {path}", EXIT_USAGE)
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                return {k: data[k] for k in data.files}
        return np.asarray(data)
    except Exception as exc:
        raise CliError(f"cannot read input file {path}: not a .npy/.npz array file ({exc})", EXIT_USAGE) from None


def _input_feed(sess: InferenceSession, paths: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays of .npz (by input name) and .npy (in input order) files, checked against the model."""
    inputs = sess.get_inputs()
    names = [i.name for i in inputs]
    feed: dict[str, np.ndarray] = {}
    positional = 0
    for path in paths:
        data = _read_array_file(path)
        if isinstance(data, dict):
            for key, array in data.items():
                if key not in names:
                    raise CliError(
                        f"{path} holds '{key}', which is not an input of the model (inputs: {names})", EXIT_USAGE
                    )
                feed[key] = array
            continue
        free = [n for n in names if n not in feed]
        if positional >= len(free):
            raise CliError(f"the model has {len(names)} input(s) {names}; {path} is one array too many", EXIT_USAGE)
        feed[free[positional]] = data
        positional += 1
    missing = [n for n in names if n not in feed]
    if missing:
        raise CliError(f"input '{missing[0]}' was not given (the model's inputs: {names})", EXIT_USAGE)
    for inp in inputs:
        array = feed[inp.name]
        want_dtype = _NP_DTYPES.get(inp.type)
        shape_ok = len(array.shape) == len(inp.shape) and all(
            not isinstance(d, int) or d == n for d, n in zip(inp.shape, array.shape)
        )
        if (want_dtype is not None and array.dtype != want_dtype) or not shape_ok:
            want_shape = [d if isinstance(d, int) else (d or "?") for d in inp.shape]
            want = np.dtype(want_dtype).name if want_dtype else inp.type
            raise CliError(
                f"input '{inp.name}' expects shape {want_shape} {want}, got shape {list(array.shape)} {array.dtype}",
                EXIT_USAGE,
            )
    return feed


def cmd_examples(args: argparse.Namespace) -> int:
    from .example_files import planned, write_examples

    folder = Path(args.folder)
    if folder.exists() and not folder.is_dir():
        raise CliError(f"{folder} is not a folder", EXIT_USAGE)
    if not folder.parent.is_dir():
        raise CliError(f"cannot write {folder}: no such folder {folder.parent}", EXIT_USAGE)
    taken = [p for p in planned(folder) if p.exists()]
    if taken and not args.force:
        more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
        raise CliError(f"{taken[0]}{more} exist (pass --force to overwrite them)", EXIT_USAGE)
    folder.mkdir(exist_ok=True)
    try:
        written = write_examples(folder)
    except OSError as exc:
        raise CliError(f"cannot write {folder}: {exc.strerror or exc}", EXIT_USAGE) from None
    for path in written:
        print(path)
    if not any(p.name == "tiny_net.pth" for p in written):
        from .extras import install_line

        print(f"(no tiny_net.pth: writing the checkpoint needs torch, {install_line('torch')})")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    save = None
    if args.save:
        save = args.save if args.save.endswith(".npz") else args.save + ".npz"  # np.savez appends it
        _check_output_path(save, args.force)
    try:
        sess = InferenceSession(args.model)  # from the path: the session reads the file without its weights
    except (FileNotFoundError, ModelLoadError) as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    feed = _input_feed(sess, args.inputs) if args.inputs else random_feed(sess, batch=args.batch, seed=args.seed)
    outputs = sess.run(None, feed)
    names = [o.name for o in sess.get_outputs()]
    routes = Counter(route.route for route in sess.routes)
    how = ", ".join(f"{n} {route}" for route, n in sorted(routes.items()))
    print(f"ran {args.model}: {len(sess.routes)} InplaceABN node(s)" + (f" ({how})" if how else ""))
    for name, arr in zip(names, outputs):
        print(_summary(name, arr))
    if save:
        try:
            np.savez(save, **dict(zip(names, outputs)))
        except OSError as exc:
            raise CliError(f"cannot write {save}: {exc.strerror or exc}", EXIT_USAGE) from None
        print(f"saved outputs to {save}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """Every InplaceABN node first (the first fault is the one error line), then onnx.checker, then the fold plan."""
    from .op.validation import check_model_nodes
    from .passes.fold import plan_fold

    model = _load(args.model)
    checked = check_model_nodes(model)  # InplaceABNError: one error line, exit 1, no "ok" before it
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise CliError(f"onnx.checker: {str(exc).strip().splitlines()[0]}", EXIT_REJECTED) from None
    print("onnx.checker (full_check): ok")
    print(f"{len(checked)} InplaceABN node(s)")
    for info in checked:
        a = info.attrs
        print(
            f"  {info.name}: act={a.act.value} alpha={a.act_alpha:g} eps={a.epsilon:g} "
            f"training_mode={a.training_mode} layout={a.data_layout.value}"
        )
    for line in plan_fold(model):
        print(f"  fold: {line}")
    return EXIT_OK


def cmd_fold(args: argparse.Namespace) -> int:
    from .passes.fold import fold_with_report

    model, external = _load_file(args.model)  # no progress line before: a bad file gets exactly one error line
    _check_output_path(args.output, args.force)
    _progress(f"loaded {args.model} ({model.ByteSize() / 2**20:.1f} MB)")
    _progress(f"folding {sum(is_inplace_abn(n) for n in model.graph.node)} InplaceABN node(s)")
    t0 = time.perf_counter()
    folded, report = fold_with_report(model, keep_invalid=args.keep_invalid)
    elapsed = time.perf_counter() - t0
    verify_lines: list[str] = []

    def verify() -> None:
        if args.verify:
            verify_lines.extend(_verify(model, folded, args.batch))

    _progress(f"writing {args.output}" + (" after verifying" if args.verify else ""))
    _save_atomic(folded, args.output, args.force, external, before_commit=verify)
    for line in [*report.lines(), *verify_lines]:
        print(line)
    print(f"size: {model.ByteSize()} -> {folded.ByteSize()} bytes; folded in {elapsed * 1e3:.1f} ms")
    print(f"wrote {args.output}")
    return EXIT_OK


#: --verify accepts the folded model when every output is within this of the kernel's,
#: relative to max(|reference|, 1): the fold reassociates float arithmetic, nothing more
VERIFY_TOLERANCE = {np.dtype(np.float16): 1e-2, np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


def _verify(before: onnx.ModelProto, after: onnx.ModelProto, batch: int) -> list[str]:
    """Both models on the same random inputs; CliError (exit 1) when an output differs."""
    import onnxruntime as ort

    _progress("verifying: running both models on random inputs")
    sess_before = InferenceSession(before, kernel_only=True)  # every node in the kernel, not folded
    feed = random_feed(sess_before, batch=batch, seed=1)
    ref = sess_before.run(None, feed)
    if any(n.domain for n in after.graph.node if n.domain not in ("", "ai.onnx")):
        got = InferenceSession(after, kernel_only=True).run(None, feed)
    else:
        got = ort.InferenceSession(after.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    lines = []
    for o, a, b in zip(sess_before.get_outputs(), ref, got):
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        absd = float(np.max(np.abs(a64 - b64))) if a64.size else 0.0
        reld = float(np.max(np.abs(a64 - b64) / np.maximum(np.abs(a64), 1.0))) if a64.size else 0.0
        tolerance = VERIFY_TOLERANCE.get(np.asarray(a).dtype, 1e-4)
        if not reld <= tolerance:  # NaN fails too
            raise CliError(
                f"verify failed: output {o.name} differs by {reld:.3g} (> {tolerance:g}); nothing written",
                EXIT_REJECTED,
            )
        lines.append(f"verify {o.name}: max abs diff {absd:.3g}, max rel diff {reld:.3g}")
    return lines


def cmd_convert(args: argparse.Namespace) -> int:
    from .passes.convert import convert_with_report

    model, external = _load_file(args.model)
    _check_output_path(args.output, args.force)
    _progress(f"loaded {args.model} ({model.ByteSize() / 2**20:.1f} MB); converting")
    converted, report = convert_with_report(
        model, function_fallback=not args.no_function, keep_invalid=args.keep_invalid
    )
    _progress(f"writing {args.output}")
    _save_atomic(converted, args.output, args.force, external_source=external)
    for line in report.lines():
        print(line)
    print(f"wrote {args.output}")
    return EXIT_OK


def step_printer(quiet: bool) -> Callable[[str, float], None] | None:
    """The progress callback of the long commands: one stderr line per step that took PROGRESS_AFTER
    seconds or more (``IABN_ONNX_PROGRESS_AFTER`` overrides), none with ``--quiet``."""
    if quiet:
        return None
    try:
        after = float(os.environ.get("IABN_ONNX_PROGRESS_AFTER", PROGRESS_AFTER))
    except ValueError:
        after = PROGRESS_AFTER

    def print_step(step: str, seconds: float) -> None:
        if seconds >= after:
            print(f"iabn-onnx: {step}: {seconds:.1f} s", file=sys.stderr, flush=True)

    return print_step


def _write_json(path: str, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")


def cmd_quantize(args: argparse.Namespace) -> int:
    from .quantization import CalibrationDataError, CheckOutputError, QuantizeCheckError, quantize_with_report

    _check_output_path(args.output, args.force)
    model = _load(args.model)
    try:
        quantized, report = quantize_with_report(
            model,
            args.calibration,
            per_channel={"auto": "auto", "per-channel": True, "per-tensor": False}[args.weights],
            check=args.check,
            max_accuracy_drop=args.max_accuracy_drop,
            min_agreement=args.min_agreement,
            ignore_index=args.ignore_index,
            check_outputs=args.check_output,
            progress=step_printer(args.quiet),
            reduce_range={"auto": "auto", "7": True, "8": False}[args.weight_bits],
        )
    except (FileNotFoundError, CalibrationDataError) as exc:  # "no such calibration file: ...", or its fault
        raise CliError(str(exc), EXIT_USAGE) from None
    except QuantizeCheckError as exc:
        if args.report:
            _write_json(args.report, exc.report.to_json())
        raise CliError(f"check failed, nothing written: {exc}", EXIT_REJECTED) from None
    except CheckOutputError as exc:  # a --check-output naming no output with a class axis
        raise CliError(str(exc), EXIT_USAGE) from None
    _save_atomic(quantized, args.output, args.force)
    if args.report:
        _write_json(args.report, report.to_json())
    for line in report.lines():
        print(line)
    print(f"wrote {args.output}")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    import onnxruntime as ort

    from .passes.fold import fold

    model = _load(args.model)
    plugin = InferenceSession(model)
    feed = random_feed(plugin, batch=args.batch)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not any(is_inplace_abn(n) for n in model.graph.node):  # the three forms would be one graph
        print(f"{args.model} has no InplaceABN node: timing it once, as onnxruntime runs it")
        rows = [("the model (no InplaceABN node)", lambda: plugin.run(None, feed))]
    else:
        kernel_only = InferenceSession(model, kernel_only=True)
        folded = ort.InferenceSession(fold(model).SerializeToString(), so, providers=["CPUExecutionProvider"])
        rows = [
            ("plugin (default session)", lambda: plugin.run(None, feed)),
            ("plugin, every node in the kernel", lambda: kernel_only.run(None, feed)),
            ("folded, plain onnxruntime", lambda: folded.run(None, feed)),
        ]
    if args.baseline:
        base = ort.InferenceSession(_load(args.baseline).SerializeToString(), so, providers=["CPUExecutionProvider"])
        rows.append((f"baseline {args.baseline}", lambda: base.run(None, feed)))
    first = None
    for i, (label, fn) in enumerate(rows):
        _progress(f"[{i + 1}/{len(rows)}] timing {label}")
        t = _median_time(fn, args.repeat)
        first = first or t
        print(f"{label:40s} {t * 1e3:9.3f} ms  ({t / first:.2f}x the first row)")
    return EXIT_OK


# -- export-torch ------------------------------------------------------------------


def _literal(text: str, what: str) -> object:
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise CliError(
            f"{what} {text!r} is not a Python literal (quote strings: --kwarg name=\"'x'\")", EXIT_USAGE
        ) from None


def _factory_args(args: argparse.Namespace) -> tuple[list[object], dict[str, object]]:
    positional = [_literal(a, "--arg") for a in args.arg]
    keywords: dict[str, object] = {}
    for item in args.kwarg:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise CliError(f"--kwarg {item!r} is not KEY=VALUE with KEY a Python name", EXIT_USAGE)
        keywords[key] = _literal(value, f"--kwarg {key}=")
    return positional, keywords


def _import_callable(target: str) -> Callable[..., object]:
    import importlib

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise CliError(f"{target!r} is not MODULE:CALLABLE (e.g. networks.resnet:resnet50)", EXIT_USAGE)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: object = importlib.import_module(module_name)
    except Exception as exc:  # the model's own import: anything it raises is the user's to fix
        raise CliError(f"cannot import {module_name}: {type(exc).__name__}: {exc}", EXIT_USAGE) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CliError(f"{module_name} has no attribute {attr!r}", EXIT_USAGE)
        obj = getattr(obj, part)
    if not callable(obj):
        raise CliError(f"{target} is not callable", EXIT_USAGE)
    return obj  # type: ignore[return-value]


def _quiet_torch() -> None:
    """Keep torch's import-time and export chatter (torchvision missing, deprecations) off our
    output; called after ``import torch``, whose logging set-up would reset the levels."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|onnxscript|onnx_ir)(\.|$)")
    for name in ("torch.onnx", "torch._export", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.ERROR)


def cmd_export_torch(args: argparse.Namespace) -> int:
    _check_output_path(args.output, args.force)
    from .extras import require

    require("export-torch", "torch", ("torch",))
    import torch

    _quiet_torch()
    from .exporters.torch_checkpoint import TorchCheckpointError, load_checkpoint
    from .exporters.torch_export import TorchExportError, export_torch_with_report
    from .exporters.torch_verify import ExportVerifyError
    from .torch_fallback import install_torch_fallback

    install_torch_fallback()
    positional, keywords = _factory_args(args)
    factory = _import_callable(args.target)
    _progress(f"building {args.target}")
    try:
        model = factory(*positional, **keywords)
    except Exception as exc:
        raise CliError(f"{args.target}(...) failed: {type(exc).__name__}: {_first_line(exc)}", EXIT_USAGE) from None
    if not isinstance(model, torch.nn.Module):
        raise CliError(f"{args.target}(...) returned {type(model).__name__}, not a torch.nn.Module", EXIT_USAGE)
    if args.checkpoint:
        _progress(f"loading {args.checkpoint}")
        try:
            load_checkpoint(model, args.checkpoint, key=args.checkpoint_key, trust=args.trust_checkpoint)
        except (FileNotFoundError, TorchCheckpointError) as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
    model.eval()
    example = torch.randn(*args.input_shape, generator=torch.Generator().manual_seed(0))
    dynamic = {0: torch.export.Dim("batch")} if args.dynamic_batch else {}
    if args.dynamic_hw:
        if len(args.input_shape) != 4:
            raise CliError(f"--dynamic-hw needs an N,C,H,W input shape, got {list(args.input_shape)}", EXIT_USAGE)
        dynamic |= {2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    kwargs: dict[str, object] = {"dynamic_shapes": (dynamic,)} if dynamic else {}
    steps = step_printer(args.quiet)
    started = time.perf_counter()
    _progress("exporting")
    try:
        proto, verified = export_torch_with_report(model, (example,), **kwargs)
    except ExportVerifyError as exc:
        raise CliError(f"{exc}; nothing written", EXIT_REJECTED) from None
    except TorchExportError as exc:
        code = EXIT_USAGE if "the model fails on inputs" in str(exc) else EXIT_REJECTED
        raise CliError(str(exc), code) from None
    except Exception as exc:
        raise CliError(f"export failed: {type(exc).__name__}: {_first_line(exc)}", EXIT_REJECTED) from None
    if steps is not None:
        steps("export and verify", time.perf_counter() - started)
    names = [o.name for o in proto.graph.output]
    nodes = sum(is_inplace_abn(n) for n in proto.graph.node)
    lines = [f"exported {args.target}: {nodes} InplaceABN node(s), {len(proto.graph.node)} nodes in all"]
    if len(names) > 1:
        lines.append(f"{len(names)} outputs: {', '.join(names)}")
    lines += verified.lines()
    if args.fold:
        import onnxruntime as ort

        from .exporters.torch_verify import compare_outputs, eager_outputs
        from .passes.fold import fold_with_report

        proto, report = fold_with_report(proto)
        lines.extend(report.lines())
        if any(is_inplace_abn(n) for n in proto.graph.node) and not proto.functions:
            raise CliError("fold left InplaceABN nodes and the model has no function fallback", EXIT_REJECTED)
        plain = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        _, expected = eager_outputs(model, (example,))
        try:
            diffs = compare_outputs(names, expected, plain.run(None, {"input": example.numpy()}), "verify (folded)")
        except ExportVerifyError as exc:
            raise CliError(f"{exc}; nothing written", EXIT_REJECTED) from None
        lines.append(f"verify (folded, plain onnxruntime): max rel diff {max(diffs.values()):.3g}")
    _save_atomic(proto, args.output, args.force)
    for line in lines:
        print(line)
    print(f"wrote {args.output}")
    return EXIT_OK


# -- export-paddle -------------------------------------------------------------------
def cmd_export_paddle(args: argparse.Namespace) -> int:
    from .exporters.paddle_export import PaddleExportError, export_paddle
    from .fluid.checkpoint import CheckpointError
    from .fluid.program_desc import ProgramError

    _check_output_path(args.output, args.force)
    _progress(f"converting {args.model}")
    try:
        model = export_paddle(args.model, args.params, function_fallback=not args.no_function)
    except (FileNotFoundError, ProgramError, CheckpointError, PaddleExportError) as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    nodes = sum(is_inplace_abn(n) for n in model.graph.node)
    lines = [f"exported {args.model}: {nodes} InplaceABN node(s), {len(model.graph.node)} nodes in all"]
    if args.fold:
        from .passes.fold import fold_with_report

        model, report = fold_with_report(model)
        lines.extend(report.lines())
    _save_atomic(model, args.output, args.force)
    for line in lines:
        print(line)
    print(f"wrote {args.output}")
    return EXIT_OK
