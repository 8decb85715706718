"""int8 in one call: ``fold``, then onnxruntime's own static quantizer (QDQ), then an optional check.

    model -> fold (no custom node: the Conv/Gemm fusions quantization needs are open)
          -> spatial ReduceMean as GlobalAveragePool, BatchNormalization (fold's form for a node with no
             producer) as a depthwise 1x1 Conv (``passes.global_average_pool``, ``passes.batchnorm_as_conv``):
             onnxruntime has int8 kernels for those, and runs the others in float between Q/DQ
          -> onnxruntime.quantization.quant_pre_process (its shape inference and graph optimization)
          -> onnxruntime.quantization.quantize_static, calibrated once (``calibrated``: QDQ, QUInt8
             activations, QInt8 weights, 7-bit where the CPU's int8 dot product saturates (``cpu``),
             MinMax by default)
          -> weights per channel, per tensor, or ``auto`` (``weights``: probed on the largest layers, at a
             cost bounded by the calibration's; at most two candidates)
          -> [check: the fp32 and int8 models on held-out samples, every output (``check``, ``metrics``)]

One room a concern: ``data`` (calibration and check samples), ``calibrated`` (the quantizer, calibrated
once), ``weights`` (the auto choice), ``check`` and ``metrics`` (the comparison, in the task's terms:
top-1 for a classifier's output, per pixel for a dense one, accuracy and mIoU with labels), ``report``.
(The package is ``quantization`` because ``iabn_onnx.quantize`` is the function.)

Nothing here quantizes anything itself: the quantizer and the calibrator are onnxruntime's. What stays
float is the quantizer's choice for ops without an int8 kernel (Elu, for one), and ours for the batch
statistics of training-mode nodes (their standard-op form is excluded: statistics of int8 values would be
coarse); the report names them. Models live in a temporary folder between steps, so that one is in
memory at a time beside the session running.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

import numpy as np
import onnx

from ..model_source import ModelSource, as_model
from ..quiet_logging import quiet_logger
from .check import CheckOutputError, CheckResult, OutputCheck, QuantizeCheckError, compare, enforce, run_outputs
from .data import LABELS, CalibrationDataError, Samples, count, feeds, write_samples
from .metrics import IGNORE_INDEX
from .report import ProgressCallback, QuantizeReport, Steps
from .weights import PER_CHANNEL, PER_TENSOR, WEIGHT_INPUT, choose_weights, weight_of_node


def quantize(
    model: ModelSource,
    calibration: Samples,
    *,
    per_channel: bool | str = "auto",
    check: Samples | None = None,
    max_accuracy_drop: float = 1.0,
    min_agreement: float = 0.95,
    ignore_index: int = IGNORE_INDEX,
    check_outputs: Sequence[str] = (),
    calibrate_method: str = "MinMax",
    progress: ProgressCallback | None = None,
    min_top1_agreement: float | None = None,
    reduce_range: bool | str = "auto",
) -> onnx.ModelProto:
    """The int8 (QDQ) model of ``model`` (a path, bytes or ModelProto, never changed); see the module doc.

    ``per_channel``: True, symmetric int8 weights with a scale per output channel; False, asymmetric weights
    with one scale per tensor, which onnxruntime runs through its int8 GEMM (AMX where the CPU has it);
    ``"auto"`` (default): per-tensor on the layers where that measures faster here, if the model stays as
    accurate (the report says what was measured).

    ``reduce_range``: True, 7-bit weights, which no CPU's int8 kernel saturates; False, 8-bit; ``"auto"``
    (default): 7-bit where this CPU's int8 dot product saturates with 8 (x86 without VNNI: ``cpu.py``).
    Pass True for a file that will also be served on such CPUs.

    With ``check`` (samples, optionally ``labels``: class ids (N,) or masks (N, H, W), ``ignore_index``
    left out), every output is compared; the thresholds apply to the outputs with a class axis, or to
    ``check_outputs``: where labels fit, accuracy (and mIoU, for masks) may drop at most
    ``max_accuracy_drop`` points, elsewhere the argmax must agree on ``min_agreement`` of the samples or
    pixels. Past them: ``QuantizeCheckError`` (its ``report`` says why). ``progress(step, seconds)`` is
    called as each step ends. ``min_top1_agreement`` is the former name of ``min_agreement``.
    """
    return quantize_with_report(
        model,
        calibration,
        per_channel=per_channel,
        check=check,
        max_accuracy_drop=max_accuracy_drop,
        min_agreement=min_agreement,
        ignore_index=ignore_index,
        check_outputs=check_outputs,
        calibrate_method=calibrate_method,
        progress=progress,
        min_top1_agreement=min_top1_agreement,
        reduce_range=reduce_range,
    )[0]


def quantize_with_report(
    model: ModelSource,
    calibration: Samples,
    *,
    per_channel: bool | str = "auto",
    check: Samples | None = None,
    max_accuracy_drop: float = 1.0,
    min_agreement: float = 0.95,
    ignore_index: int = IGNORE_INDEX,
    check_outputs: Sequence[str] = (),
    calibrate_method: str = "MinMax",
    progress: ProgressCallback | None = None,
    min_top1_agreement: float | None = None,
    reduce_range: bool | str = "auto",
) -> tuple[onnx.ModelProto, QuantizeReport]:
    """``quantize``, and what it did (``QuantizeReport.lines()`` and ``to_json()``). When the check refuses,
    the ``QuantizeCheckError`` carries the whole report."""
    from onnxruntime.quantization import CalibrationMethod, quant_pre_process

    from ..op.validation import type_table
    from ..passes.batchnorm_as_conv import batchnorms_as_convs
    from ..passes.fold import fold_with_report
    from ..passes.global_average_pool import global_average_pools
    from ..passes.standard_form import TRAINING_ROUTE
    from .calibrated import CalibratedQuantizer
    from .cpu import resolve_reduce_range

    if min_top1_agreement is not None:
        min_agreement = min_top1_agreement
    if per_channel not in (True, False, "auto"):
        raise ValueError(f"per_channel must be True, False or 'auto', got {per_channel!r}")
    seven_bits, weight_bits = resolve_reduce_range(reduce_range)
    try:
        method = CalibrationMethod[calibrate_method]
    except KeyError:
        raise ValueError(
            f"calibrate_method {calibrate_method!r}: one of {[m.name for m in CalibrationMethod]}"
        ) from None
    steps = Steps(progress)
    with steps.step("fold"):
        folded, fold_report = fold_with_report(as_model(model))
    if fold_report.left:
        raise ValueError(f"cannot quantize: fold left {len(fold_report.left)} node(s): {fold_report.left[0]}")
    calibration_feeds, _ = feeds(folded, calibration, "calibration")
    check_feeds, labels = feeds(folded, check, "check") if check is not None else (None, None)
    report = QuantizeReport(fold_report.lines(), calibration_samples=sum(count(f) for f in calibration_feeds))
    report.weight_bits = weight_bits
    report.steps = steps.done
    training = {name for name, route, _ in fold_report.rewritten if route == TRAINING_ROUTE}
    report.excluded = [n.name for n in folded.graph.node if any(n.name.startswith(f"{t}__") for t in training)]
    # the quantizer's advice goes to the root logger; the report says what matters
    with tempfile.TemporaryDirectory(prefix="iabn_quantize_") as tmp, quiet_logger():
        fp32_path, ready_path = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8_ready.onnx")
        prepared = os.path.join(tmp, "prepared.onnx")
        onnx.save(folded, fp32_path)
        types = type_table(folded)  # the rules rename no value; ``folded`` is ours, its file is saved
        report.global_pools = global_average_pools(folded, types)
        report.batchnorm_convs = batchnorms_as_convs(folded, types)
        onnx.save(folded, ready_path)
        del folded, types
        with steps.step("prepare (onnxruntime's quant_pre_process)"):
            quant_pre_process(ready_path, prepared, skip_symbolic_shape=True)
        quantizer = CalibratedQuantizer(prepared, tmp, calibration_feeds, report.excluded, method, seven_bits)
        if per_channel != "auto":
            with steps.step("calibrate and quantize"):
                chosen = quantizer.build(not per_channel)
            report.weights = PER_CHANNEL if per_channel else PER_TENSOR
        else:
            with steps.step("calibrate and quantize (per-channel weights)"):
                first = quantizer.build(False)
            chosen, report.weights = choose_weights(quantizer, first, fp32_path, calibration_feeds, steps.step)
        report.candidates = quantizer.candidates
        quantized = onnx.load(chosen)
        report.quantized, report.kept_float = _census(quantized)
        if check_feeds is not None:
            with steps.step("check"):
                report.check = _check(fp32_path, chosen, check_feeds, labels, ignore_index, check_outputs)
            try:
                enforce(report.check, report, max_accuracy_drop, min_agreement)
            except QuantizeCheckError as exc:
                report.refused = str(exc)
                raise
    return quantized, report


def _check(
    fp32: str,
    int8: str,
    feed_list: list[dict[str, np.ndarray]],
    labels: np.ndarray | None,
    ignore_index: int,
    check_outputs: Sequence[str],
) -> CheckResult:
    """Both models on the check feeds; one session alive at a time."""
    from .weights import session

    reference_session = session(fp32)
    names = [o.name for o in reference_session.get_outputs()]
    reference = run_outputs(reference_session, feed_list)
    del reference_session
    int8_session = session(int8)
    return compare(
        names,
        reference,
        (int8_session.run(None, f) for f in feed_list),
        feed_list,
        labels,
        ignore_index,
        check_outputs,
    )


_QDQ = {"QuantizeLinear", "DequantizeLinear"}
_MOVES = {"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Cast", "Shape", "Gather"}
#: ops whose QDQ group onnxruntime's CPU provider runs as an int8 kernel (its QDQ selectors: QLinearConv,
#: MatMulInteger/QGemm, QLinearAdd/Mul, QLinearLeakyRelu/Sigmoid, QLinearAveragePool/GlobalAveragePool,
#: QLinearConcat, MaxPool and Resize on int8 data); others between Q/DQ run in float
INT8_KERNELS = {"Conv", "MatMul", "Gemm", "Add", "Mul", "LeakyRelu", "Sigmoid", "AveragePool",
                "GlobalAveragePool", "Concat", "MaxPool", "Resize", "ConvTranspose", "Softmax"}  # fmt: skip


def _census(model: onnx.ModelProto) -> tuple[dict[str, int], dict[str, int]]:
    """Op types running in int8 (a Q/DQ group onnxruntime has an int8 kernel for), and those in float:
    between Q/DQ without an int8 kernel (Elu, for one), or outside Q/DQ (excluded, or not quantized)."""
    produced_by = {o: n.op_type for n in model.graph.node for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    quantized: dict[str, int] = {}
    kept: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in _QDQ or node.op_type in _MOVES:
            continue
        data = [i for i in node.input if i and i not in inits]
        in_qdq = bool(data) and all(produced_by.get(i) == "DequantizeLinear" for i in data)
        target = quantized if in_qdq and node.op_type in INT8_KERNELS else kept
        target[node.op_type] = target.get(node.op_type, 0) + 1
    return quantized, kept


__all__ = [
    "INT8_KERNELS",
    "LABELS",
    "PER_CHANNEL",
    "PER_TENSOR",
    "WEIGHT_INPUT",
    "CalibrationDataError",
    "CheckOutputError",
    "CheckResult",
    "OutputCheck",
    "QuantizeCheckError",
    "QuantizeReport",
    "feeds",
    "quantize",
    "quantize_with_report",
    "weight_of_node",
    "write_samples",
]
