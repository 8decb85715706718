"""The ``iabn-onnx`` command line: the argument parser and the one error path.

Exit codes: 0 success; 1 the model was rejected (an invalid InplaceABN node, a
failed ``--verify``, a model onnxruntime cannot run, an export whose output differs
from the model's); 2 usage, file or input errors (bad arguments, a missing or
unreadable file, an output that exists without ``--force`` or whose folder does not
exist, inputs that do not fit the model, model code that cannot be imported, a
checkpoint that does not load). Every failure is one line on stderr; nothing is
written on failure.

This module imports only the standard library: the subcommands live in
``cli_commands.py``, imported when one runs, so ``--help`` and ``--version`` are fast.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from .cli_errors import EXIT_OK, EXIT_REJECTED, EXIT_USAGE, CliError

__all__ = ["EXIT_OK", "EXIT_REJECTED", "EXIT_USAGE", "CliError", "build_parser", "main", "versions"]


#: what the extras bring, and the runtimes the docs compare with
OPTIONAL_DISTRIBUTIONS = ("torch", "onnxscript", "paddle2onnx", "paddlepaddle", "openvino", "numba", "scikit-learn")


def versions() -> str:
    """iabn-onnx's version and those of what it runs on, read from the installed metadata."""
    from importlib import metadata

    from . import __version__

    parts = [f"iabn-onnx {__version__}"]
    for dist in ("onnx", "onnxruntime", "onnxruntime-extensions", "numpy", "ml_dtypes"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    optional = []  # the extras' packages, named only when installed (read from metadata: nothing is imported)
    for dist in OPTIONAL_DISTRIBUTIONS:
        try:
            optional.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(parts) + (f"; optional: {', '.join(optional)}" if optional else "")


class _Version(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> NoReturn:
        print(versions())
        parser.exit(EXIT_OK)


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected whole numbers separated by commas (N,C,H,W), got {text!r}"
        ) from None
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"every dimension must be >= 1, got {text!r}")
    return dims


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="iabn-onnx", description="InplaceABN for ONNX and onnxruntime.", allow_abbrev=False)
    p.add_argument("--version", action=_Version, help="print the versions of iabn-onnx and its runtime, then exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser = functools.partial(sub.add_parser, allow_abbrev=False)  # --out is not --output
    force_help = "overwrite an existing output file (without it, an existing file is refused and kept)"
    batch_help = "size given to symbolic (batch) dimensions of random inputs (default: %(default)s)"
    repeat_help = "timed runs; the median is reported (default: %(default)s)"
    keep_help = "leave invalid InplaceABN nodes as they are instead of rejecting the model"

    d = parser("demo", help="build a small InplaceABN conv net, run, time and fold it")
    d.add_argument("--model", help="run this model (e.g. models/convnet_elu.onnx) instead of the built-in net")
    d.add_argument("--batch", type=_at_least_one, default=8, help=batch_help)
    d.add_argument("--repeat", type=_at_least_one, default=50, help=repeat_help)
    d.set_defaults(func="cmd_demo")

    e = parser(
        "examples",
        help="write the example files the README's commands use into a folder",
        description="Write small example models (frozen, training-mode, NHWC, BatchNormalization form), a Paddle "
        "saved program with inplace_abn ops (paddle_cnn/) and PyTorch model code with a checkpoint (tiny_net.py, "
        "tiny_net.pth; the checkpoint when torch is installed) into FOLDER, created if it does not exist.",
    )
    e.add_argument("folder", metavar="FOLDER", help="where to write them (its parent folder must exist)")
    e.add_argument("--force", action="store_true", help=force_help)
    e.set_defaults(func="cmd_examples")

    r = parser("run", help="run a model on .npy/.npz inputs or random inputs and summarize the outputs")
    r.add_argument("model", help="the ONNX model file")
    r.add_argument(
        "--inputs", nargs="+", metavar="FILE", help=".npz files (arrays by input name) or .npy files (in input order)"
    )
    r.add_argument("--batch", type=_at_least_one, default=1, help=batch_help)
    r.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: %(default)s)")
    r.add_argument("--save", metavar="FILE", help="write the outputs to this .npz file (.npz is appended if missing)")
    r.add_argument("--force", action="store_true", help=force_help)
    r.set_defaults(func="cmd_run")

    c = parser("check", help="validate a model: InplaceABN nodes, onnx.checker, what would fold")
    c.add_argument("model", help="the ONNX model file")
    c.set_defaults(func="cmd_check")

    f = parser("fold", help="rewrite every InplaceABN node as standard ONNX ops (frozen ones into their producers)")
    f.add_argument("model", help="the ONNX model file")
    f.add_argument("-o", "--output", required=True, help="where to write the folded model")
    f.add_argument(
        "--verify",
        action="store_true",
        help="compare both models on random inputs before writing; exit 1 if they differ",
    )
    f.add_argument("--batch", type=_at_least_one, default=1, help="batch size for --verify (default: %(default)s)")
    f.add_argument("--force", action="store_true", help=force_help)
    f.add_argument("--keep-invalid", action="store_true", help=keep_help)
    f.set_defaults(func="cmd_fold")

    v = parser("convert", help="BatchNormalization (+LeakyRelu/Elu) -> InplaceABN")
    v.add_argument("model", help="the ONNX model file")
    v.add_argument("-o", "--output", required=True, help="where to write the converted model")
    v.add_argument("--force", action="store_true", help=force_help)
    v.add_argument(
        "--no-function",
        action="store_true",
        help="do not embed the InplaceABN function (without it, plain onnxruntime cannot run the result)",
    )
    v.add_argument("--keep-invalid", action="store_true", help=keep_help)
    v.set_defaults(func="cmd_convert")

    q = parser(
        "quantize",
        help="fold, then quantize to int8 (QDQ) with onnxruntime's quantizer; optionally check accuracy",
        description="Fold MODEL, quantize it with onnxruntime.quantization (static QDQ: uint8 activations, int8 "
        "weights per channel or per tensor, layer by layer, whichever measures faster here while the model stays "
        "as accurate) calibrated on the "
        "samples in DATA.npz (arrays by input name, samples stacked on axis 0; a .npy for a one-input model), "
        "and write OUTPUT. With --check, compare every output of the fp32 and int8 models on held-out samples: "
        "argmax agreement over the class axis (per sample for a classifier, per pixel for a segmentation "
        "map), |diff|; a 'labels' array (class ids (N,) or masks (N,H,W)) adds accuracy and mIoU. Refuse to "
        "write when an output with a class axis (or one named by --check-output) is past the thresholds. "
        "Steps that take longer than a few seconds print their time on stderr.",
    )
    q.add_argument("model", help="the ONNX model file")
    q.add_argument("--calibration", required=True, metavar="DATA.npz", help="calibration samples by input name")
    q.add_argument("-o", "--output", required=True, help="where to write the int8 model")
    q.add_argument("--check", metavar="DATA.npz", help="held-out samples (and optionally 'labels') to check on")
    q.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=1.0,
        metavar="POINTS",
        help="with labels: refuse when int8 accuracy (and mIoU, with masks) is this many points below fp32's "
        "(default: %(default)s)",
    )
    q.add_argument(
        "--min-agreement",
        type=float,
        default=0.95,
        metavar="FRACTION",
        help="without labels: refuse when fp32 and int8 agree on the argmax (per sample, or per pixel) for "
        "less (default: %(default)s)",
    )
    q.add_argument(
        "--ignore-index",
        type=int,
        default=255,
        metavar="LABEL",
        help="mask value left out of pixel accuracy and mIoU (default: %(default)s)",
    )
    q.add_argument(
        "--check-output",
        action="append",
        default=[],
        metavar="NAME",
        help="apply the thresholds to this output only (repeatable; default: every output with a class axis)",
    )
    q.add_argument("--report", metavar="FILE.json", help="write the whole report as JSON (also when refused)")
    q.add_argument("--quiet", action="store_true", help="print no progress lines on stderr")
    q.add_argument(
        "--weights",
        choices=["auto", "per-channel", "per-tensor"],
        default="auto",
        help="int8 weight scales per output channel (symmetric) or per tensor (asymmetric: onnxruntime's int8 "
        "GEMM, AMX where the CPU has it); auto: per tensor for the layers where it measures faster here, if the "
        "model stays as accurate (default: %(default)s)",
    )
    q.add_argument(
        "--weight-bits",
        choices=["auto", "7", "8"],
        default="auto",
        help="7: weights in 7 bits (onnxruntime's reduce_range), which no CPU's int8 kernel saturates; auto: 7 "
        "where this CPU's int8 dot product saturates with 8 (x86 without VNNI or AMX), else 8; pass 7 for a "
        "file also served on such CPUs (default: %(default)s)",
    )
    q.add_argument("--force", action="store_true", help=force_help)
    q.set_defaults(func="cmd_quantize")

    b = parser(
        "bench",
        help="time a model: plugin vs folded vs an optional baseline",
        description="Time MODEL on random inputs: in the default session (InplaceABN nodes routed to standard ops "
        "or the plugin's kernel), with every node in the kernel, and folded on plain onnxruntime; and BASELINE on "
        "the same inputs. Medians of --repeat runs. A model without InplaceABN nodes is timed once.",
    )
    b.add_argument("model", help="the ONNX model file")
    b.add_argument("--baseline", metavar="MODEL", help="another ONNX model to time on the same inputs")
    b.add_argument("--batch", type=_at_least_one, default=1, help=batch_help)
    b.add_argument("--repeat", type=_at_least_one, default=50, help=repeat_help)
    b.set_defaults(func="cmd_bench")

    t = parser(
        "export-torch",
        help="build a PyTorch model from its code and checkpoint and export it to ONNX",
        description="Import MODULE:CALLABLE (the working directory is on sys.path) with the InplaceABN fallback "
        "installed, build the model, load the checkpoint strictly, export it with one InplaceABN node per module, "
        "check the ONNX output against the model's own eval output, and write it atomically.",
    )
    t.add_argument("target", metavar="MODULE:CALLABLE", help="e.g. networks.AugmentCE2P:resnet101")
    t.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="V",
        help="a positional argument of the factory, as a Python literal (repeatable)",
    )
    t.add_argument(
        "--kwarg",
        action="append",
        default=[],
        metavar="K=V",
        help="a keyword argument of the factory, V as a Python literal (repeatable)",
    )
    t.add_argument("--checkpoint", metavar="FILE", help="a torch.save file: a state dict, or a dict holding one")
    t.add_argument(
        "--checkpoint-key",
        metavar="KEY",
        help="where the state dict is in the checkpoint (dotted for "
        "nesting); default: 'state_dict' or 'model' when present, else the checkpoint itself",
    )
    t.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="unpickle the checkpoint fully (runs code from "
        "the file; only for files you trust); by default only tensors and plain containers are read",
    )
    t.add_argument("--input-shape", required=True, type=_shape, metavar="N,C,H,W", help="the example input's shape")
    t.add_argument("--dynamic-batch", action="store_true", help="export with a symbolic batch dimension")
    t.add_argument(
        "--dynamic-hw",
        action="store_true",
        help="export with a symbolic height and width (checked at a second image size before writing)",
    )
    t.add_argument("-o", "--output", required=True, help="where to write the ONNX model")
    t.add_argument("--fold", action="store_true", help="fold the InplaceABN nodes into standard ops before writing")
    t.add_argument("--force", action="store_true", help=force_help)
    t.add_argument("--quiet", action="store_true", help="print no progress lines on stderr")
    t.set_defaults(func="cmd_export_torch")

    pd = parser(
        "export-paddle",
        help="convert a Paddle saved inference model with inplace_abn ops to ONNX",
        description="Read what save_inference_model wrote (a 2.x prefix such as infer/model, a __model__ or "
        ".pdmodel file, or its folder; parameters in a combined file or one file per variable) and write ONNX "
        "with one InplaceABN node per inplace_abn op.",
    )
    pd.add_argument(
        "model", metavar="MODEL", help="the program: infer/model, infer/model.pdmodel, dir/__model__ or dir"
    )
    pd.add_argument("params", metavar="PARAMS", nargs="?", help="the combined parameter file, when not beside it")
    pd.add_argument("-o", "--output", required=True, help="where to write the ONNX model")
    pd.add_argument("--fold", action="store_true", help="fold the InplaceABN nodes into standard ops before writing")
    pd.add_argument("--no-function", action="store_true", help="do not embed the InplaceABN function")
    pd.add_argument("--force", action="store_true", help=force_help)
    pd.set_defaults(func="cmd_export_paddle")
    return p


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _is_operator_error(exc: BaseException) -> bool:
    """An InplaceABNError (an invalid node), without importing the schema module to ask."""
    schema = sys.modules.get("iabn_onnx.op.schema")
    return schema is not None and isinstance(exc, schema.InplaceABNError)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    where = f"iabn-onnx {args.command}: error:"
    from .extras import MissingExtraError  # standard library only

    try:
        from . import cli_commands

        return getattr(cli_commands, args.func)(args)
    except CliError as exc:
        print(f"{where} {_one_line(exc)}", file=sys.stderr)
        return exc.code
    except BrokenPipeError:
        # the reader closed stdout (`| head`): stop quietly, and keep Python's exit-time flush quiet too
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except MissingExtraError as exc:  # "X needs Y: pip install ..."
        print(f"{where} {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except ImportError as exc:  # not a missing extra: a fault like any other
        print(f"{where} {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_REJECTED
    except KeyboardInterrupt:
        print(f"{where} interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"{where} out of memory", file=sys.stderr)
        return EXIT_REJECTED
    except Exception as exc:  # onnxruntime's own rejections and anything unforeseen: still one line
        if _is_operator_error(exc):  # the message names the node and the fault
            print(f"{where} {_one_line(exc)}", file=sys.stderr)
            return EXIT_REJECTED
        print(f"{where} {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_REJECTED


if __name__ == "__main__":
    # `python -m iabn_onnx.cli` runs this file as __main__; the commands raise iabn_onnx.cli's CliError
    from iabn_onnx.cli import main as _main

    sys.exit(_main())
