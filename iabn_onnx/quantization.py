"""int8 in one call: ``fold``, then onnxruntime's own static quantizer (QDQ), then an optional check.

    model -> fold (no custom node: the Conv/Gemm fusions quantization needs are open)
          -> spatial ReduceMean as GlobalAveragePool, BatchNormalization (fold's form for a node with no
             producer) as a depthwise 1x1 Conv (``passes.global_average_pool``, ``passes.batchnorm_as_conv``):
             onnxruntime has int8 kernels for those, and runs the others in float between Q/DQ
          -> onnxruntime.quantization.quant_pre_process (its shape inference and graph optimization)
          -> onnxruntime.quantization.quantize_static (QDQ; QUInt8 activations; QInt8 weights, per layer
             symmetric per channel, or asymmetric per tensor where that layer measures faster here and
             the whole model as accurate; MinMax calibration)
          -> [check: the fp32 and int8 models on held-out samples]

Why per layer: onnxruntime's QLinearConv runs symmetric weights through its direct int8 convolution
(VNNI) and asymmetric ones through its int8 GEMM (AMX where the CPU has it); which is faster depends on
the layer's shape and on the CPU. ``per_channel="auto"`` quantizes both ways, reads each layer's kernel
time from onnxruntime's profiler (one sample, and a batch of up to 8), and quantizes once more with
per-tensor weights where those were 3% faster or more; it keeps that model if it is faster as a whole
(per sample over both batches, and slower at neither) and agrees with fp32 on the calibration samples as
well as the per-channel one does.

Nothing here quantizes anything itself: the quantizer is onnxruntime's. What stays float is the
quantizer's choice for ops without an int8 kernel (Elu, for one), and ours for the batch statistics
of training-mode nodes (their standard-op form is excluded: statistics of int8 values would be
coarse); the report names them.

Calibration and check data: a ``.npz`` path or a mapping from input name to the samples stacked on
axis 0, or an iterable of feed dicts. A check set may also hold ``labels`` (integer class per sample)
for accuracy. Faults in the data raise ``CalibrationDataError`` naming the input and the fault; a
check past its threshold raises ``QuantizeCheckError`` (the CLI then writes nothing).
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .graph import InputSpec, feed_inputs
from .model_source import ModelSource, as_model
from .quiet_logging import quiet_logger

Samples = str | os.PathLike | Mapping[str, Any] | Iterable[Mapping[str, Any]]
LABELS = "labels"


class CalibrationDataError(ValueError):
    """Calibration or check data that does not fit the model: names, shapes, dtypes, empty, NaN."""


class QuantizeCheckError(ValueError):
    """The int8 model differs from the fp32 one past the threshold the caller set."""

    def __init__(self, message: str, report: QuantizeReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class CheckResult:
    """The fp32 and int8 models on held-out samples (first output; top-1 over its last axis)."""

    samples: int
    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    accuracy_fp32: float | None = None
    accuracy_int8: float | None = None

    def lines(self) -> list[str]:
        out = [
            f"check on {self.samples} samples: top-1 agreement {self.top1_agreement:.2%}, "
            f"max |diff| {self.max_abs_diff:.3g}, mean |diff| {self.mean_abs_diff:.3g}"
        ]
        if self.accuracy_fp32 is not None and self.accuracy_int8 is not None:
            drop = (self.accuracy_fp32 - self.accuracy_int8) * 100
            out.append(
                f"accuracy: fp32 {self.accuracy_fp32:.2%}, int8 {self.accuracy_int8:.2%} ({drop:.2f} points lost)"
            )
        return out


@dataclass
class QuantizeReport:
    fold_lines: list[str] = field(default_factory=list)
    quantized: dict[str, int] = field(default_factory=dict)  # op type -> nodes running in int8
    kept_float: dict[str, int] = field(default_factory=dict)  # op type -> nodes running in float
    excluded: list[str] = field(default_factory=list)  # nodes kept float on purpose (batch statistics)
    calibration_samples: int = 0
    global_pools: int = 0  # ReduceMean over the spatial axes given to the quantizer as GlobalAveragePool
    batchnorm_convs: int = 0  # BatchNormalization given to the quantizer as a depthwise 1x1 Conv
    weights: str = ""  # which weight scheme, and why
    check: CheckResult | None = None

    def lines(self) -> list[str]:
        out = [f"fold: {line}" for line in self.fold_lines]
        q = ", ".join(f"{n} {op}" for op, n in sorted(self.quantized.items()))
        out.append(f"int8 (QDQ) after calibration on {self.calibration_samples} samples: {q or 'no node'}")
        if self.global_pools:
            out.append(f"{self.global_pools} ReduceMean over the spatial axes quantized as GlobalAveragePool")
        if self.batchnorm_convs:
            out.append(f"{self.batchnorm_convs} BatchNormalization quantized as a depthwise 1x1 Conv")
        if self.weights:
            out.append(f"weights: {self.weights}")
        if self.kept_float:
            f = ", ".join(f"{n} {op}" for op, n in sorted(self.kept_float.items()))
            out.append(f"in float (no int8 kernel in onnxruntime, or batch statistics): {f}")
        if self.excluded:
            out.append(f"batch statistics of training-mode nodes kept in float: {len(self.excluded)} nodes")
        if self.check is not None:
            out += self.check.lines()
        return out


# -- data ------------------------------------------------------------------------------------
def _load(data: Samples, what: str) -> tuple[Mapping[str, Any] | None, list[Mapping[str, Any]] | None, str]:
    """(stacked samples by name, or feed dicts) and where they came from."""
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such {what} file: {path}")
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}, None, path
        except (OSError, ValueError, EOFError) as exc:
            raise CalibrationDataError(f"{path}: not a readable .npz of arrays ({exc})") from None
    if isinstance(data, Mapping):
        return data, None, f"the {what} mapping"
    return None, list(data), f"the {what} feeds"


def _check_array(value: Any, name: str, spec: InputSpec, where: str, stacked: bool) -> np.ndarray:
    array = np.asarray(value)
    dtype, dims = spec
    if array.dtype != dtype:
        raise CalibrationDataError(f"{where}: input '{name}' must be {dtype.name}, got {array.dtype.name}")
    sample_dims = dims[1:] if stacked else dims
    shape = array.shape[1:] if stacked else array.shape
    if stacked and array.ndim == 0:
        raise CalibrationDataError(f"{where}: input '{name}' is a scalar, not samples stacked on axis 0")
    if len(shape) != len(sample_dims) or any(d is not None and d != n for d, n in zip(sample_dims, shape)):
        want = ["N" if d is None else d for d in sample_dims]
        raise CalibrationDataError(
            f"{where}: input '{name}' samples have shape {list(shape)}, the model wants {want}"
            + (" (after the sample axis)" if stacked else "")
        )
    if array.size == 0 or (stacked and array.shape[0] == 0):
        raise CalibrationDataError(f"{where}: input '{name}' holds no sample")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise CalibrationDataError(f"{where}: input '{name}' holds NaN or infinite values")
    return array


def feeds(
    model: onnx.ModelProto, data: Samples, what: str = "calibration"
) -> tuple[list[dict[str, np.ndarray]], np.ndarray | None]:
    """The feeds ``data`` gives, checked against the model's inputs; and the labels, when it has them."""
    specs = feed_inputs(model)
    names = set(specs)
    stacked, feed_list, where = _load(data, what)
    labels = None
    if stacked is not None:
        extra = sorted(set(stacked) - names - {LABELS})
        if extra:
            raise CalibrationDataError(f"{where}: '{extra[0]}' is not an input of the model (inputs: {sorted(names)})")
        missing = sorted(names - set(stacked))
        if missing:
            raise CalibrationDataError(f"{where}: no samples for input '{missing[0]}'")
        arrays = {n: _check_array(stacked[n], n, spec, where, stacked=True) for n, spec in specs.items()}
        counts = {len(a) for a in arrays.values()}
        if len(counts) != 1:
            raise CalibrationDataError(f"{where}: the inputs hold different numbers of samples ({sorted(counts)})")
        (count,) = counts
        if LABELS in stacked:
            labels = np.asarray(stacked[LABELS])
            if labels.shape != (count,) or labels.dtype.kind not in "iu":
                raise CalibrationDataError(f"{where}: 'labels' must be {count} integers, one per sample")
        batch = next((dims[0] for _, dims in specs.values() if dims and dims[0] is not None), 1)
        out = [{n: a[i : i + batch] for n, a in arrays.items()} for i in range(0, count - batch + 1, batch)]
        if not out:
            raise CalibrationDataError(f"{where}: {count} samples, fewer than the model's batch of {batch}")
        return out, labels
    assert feed_list is not None
    if not feed_list:
        raise CalibrationDataError(f"{where}: no feed")
    checked = []
    for k, feed in enumerate(feed_list):
        extra = sorted(set(feed) - names)
        if extra:
            raise CalibrationDataError(f"{where}, feed {k}: '{extra[0]}' is not an input of the model")
        missing = sorted(names - set(feed))
        if missing:
            raise CalibrationDataError(f"{where}, feed {k}: no value for input '{missing[0]}'")
        checked.append(
            {n: _check_array(feed[n], n, spec, f"{where}, feed {k}", stacked=False) for n, spec in specs.items()}
        )
    return checked, None


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader protocol over checked feeds."""

    def __init__(self, feed_list: list[dict[str, np.ndarray]]) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(feed_list)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


# -- quantize --------------------------------------------------------------------------------
def quantize(
    model: ModelSource,
    calibration: Samples,
    *,
    per_channel: bool | str = "auto",
    check: Samples | None = None,
    max_accuracy_drop: float = 1.0,
    min_top1_agreement: float = 0.95,
    calibrate_method: str = "MinMax",
) -> onnx.ModelProto:
    """The int8 (QDQ) model of ``model`` (a path, bytes or ModelProto, never changed); see the module doc.

    ``per_channel``: True, symmetric int8 weights with a scale per output channel; False, asymmetric weights
    with one scale per tensor, which onnxruntime runs through its int8 GEMM (AMX where the CPU has it);
    ``"auto"`` (default), per layer: per-tensor where that layer measures faster here, if the model then
    agrees with fp32 on the calibration samples as well as the per-channel one (the report gives both).

    With ``check``, refuses (``QuantizeCheckError``) when top-1 agreement falls below
    ``min_top1_agreement`` or, given labels, accuracy drops by more than ``max_accuracy_drop`` points.
    """
    return quantize_with_report(
        model,
        calibration,
        per_channel=per_channel,
        check=check,
        max_accuracy_drop=max_accuracy_drop,
        min_top1_agreement=min_top1_agreement,
        calibrate_method=calibrate_method,
    )[0]


def quantize_with_report(
    model: ModelSource,
    calibration: Samples,
    *,
    per_channel: bool | str = "auto",
    check: Samples | None = None,
    max_accuracy_drop: float = 1.0,
    min_top1_agreement: float = 0.95,
    calibrate_method: str = "MinMax",
) -> tuple[onnx.ModelProto, QuantizeReport]:
    """``quantize``, and what it did (``QuantizeReport.lines()``)."""
    from onnxruntime.quantization import CalibrationMethod, quant_pre_process

    from .op.validation import type_table
    from .passes.batchnorm_as_conv import batchnorms_as_convs
    from .passes.fold import fold_with_report
    from .passes.global_average_pool import global_average_pools
    from .passes.standard_form import TRAINING_ROUTE

    if per_channel not in (True, False, "auto"):
        raise ValueError(f"per_channel must be True, False or 'auto', got {per_channel!r}")
    folded, fold_report = fold_with_report(as_model(model))
    if fold_report.left:
        raise ValueError(f"cannot quantize: fold left {len(fold_report.left)} node(s): {fold_report.left[0]}")
    calibration_feeds, _ = feeds(folded, calibration, "calibration")
    check_feeds, labels = feeds(folded, check, "check") if check is not None else (None, None)
    report = QuantizeReport(fold_report.lines(), calibration_samples=sum(_count(f) for f in calibration_feeds))
    training = {name for name, route, _ in fold_report.rewritten if route == TRAINING_ROUTE}
    report.excluded = [n.name for n in folded.graph.node if any(n.name.startswith(f"{t}__") for t in training)]
    try:
        method = CalibrationMethod[calibrate_method]
    except KeyError:
        raise ValueError(
            f"calibrate_method {calibrate_method!r}: one of {[m.name for m in CalibrationMethod]}"
        ) from None
    # the quantizer's advice goes to the root logger; the report says what matters
    with tempfile.TemporaryDirectory(prefix="iabn_quantize_") as tmp, quiet_logger():
        ready_path, prepared = os.path.join(tmp, "int8_ready.onnx"), os.path.join(tmp, "prepared.onnx")
        int8_ready = onnx.ModelProto()  # what the quantizer gets: the same function, ops with int8 kernels
        int8_ready.CopyFrom(folded)
        types = type_table(int8_ready)  # the rules rename no value
        report.global_pools = global_average_pools(int8_ready, types)
        report.batchnorm_convs = batchnorms_as_convs(int8_ready, types)
        onnx.save(int8_ready, ready_path)
        quant_pre_process(ready_path, prepared, skip_symbolic_shape=True)
        made = itertools.count()

        def quantize_static(per_tensor: bool | set[str]) -> onnx.ModelProto:
            out = os.path.join(tmp, f"int8_{next(made)}.onnx")
            return _quantize_static(prepared, out, calibration_feeds, per_tensor, report.excluded, method)

        if per_channel != "auto":
            quantized = quantize_static(not per_channel)
            report.weights = PER_CHANNEL if per_channel else PER_TENSOR
        else:
            both = {False: quantize_static(False), True: quantize_static(True)}
            weights = _weight_of_node(onnx.load(prepared, load_external_data=False))
            batches = _timing_batches(calibration_feeds, _session(both[False]))
            faster = _faster_per_tensor(both, weights, batches, tmp)
            every = set(weights.values())
            candidate = both[bool(faster)] if not faster or faster == every else quantize_static(faster)
            quantized, report.weights = _choose_weights(
                folded, both[False], candidate, len(faster), len(every), calibration_feeds, batches
            )
    report.quantized, report.kept_float = _census(quantized)
    if check_feeds is not None:
        report.check = _check(folded, quantized, check_feeds, labels)
        _enforce(report, max_accuracy_drop, min_top1_agreement)
    return quantized, report


PER_CHANNEL = "per-channel symmetric int8 weights"
PER_TENSOR = "per-tensor asymmetric int8 weights"
#: op type -> the input holding its weight; a symmetric weight sends onnxruntime's QLinearConv through its
#: direct int8 convolution (VNNI), an asymmetric one (nonzero zero point) through its int8 GEMM (AMX where the
#: CPU has it): which is faster depends on the layer's shape, so ``auto`` measures each
WEIGHT_INPUT = {"Conv": 1, "Gemm": 1, "MatMul": 1}


def _quantize_static(
    prepared: str,
    out: str,
    feed_list: list[dict[str, np.ndarray]],
    per_tensor: bool | set[str],
    excluded: list[str],
    method: Any,
) -> onnx.ModelProto:
    """onnxruntime's static QDQ quantizer: uint8 activations, int8 weights, symmetric with a scale per output
    channel, or asymmetric with one scale per tensor: every weight (True), none (False) or those named."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    named = per_tensor if isinstance(per_tensor, set) else set()
    quantize_static(
        prepared,
        out,
        _Reader(feed_list),
        quant_format=QuantFormat.QDQ,
        per_channel=per_tensor is not True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded,
        calibrate_method=method,
        extra_options={
            "WeightSymmetric": per_tensor is not True,
            "TensorQuantOverrides": {name: [{"symmetric": False}] for name in sorted(named)},
        },
    )
    return onnx.load(out)


def _weight_of_node(model: onnx.ModelProto) -> dict[str, str]:
    """Node name -> its weight initializer, for the nodes whose weight scheme picks their int8 kernel."""
    inits = {i.name for i in model.graph.initializer}
    return {
        n.name: n.input[WEIGHT_INPUT[n.op_type]]
        for n in model.graph.node
        if n.op_type in WEIGHT_INPUT and n.name and len(n.input) > 1 and n.input[WEIGHT_INPUT[n.op_type]] in inits
    }


def _timing_batches(feed_list: list[dict[str, np.ndarray]], session: Any) -> list[dict[str, np.ndarray]]:
    """The first calibration feed (one sample when the batch is free: latency) and, when the model takes it,
    up to 8 calibration samples in one batch (throughput)."""
    batches = [feed_list[0]]
    if len(feed_list) > 1:
        try:
            stacked = {name: np.concatenate([f[name] for f in feed_list[:8]]) for name in feed_list[0]}
            session.run(None, stacked)
            batches.append(stacked)
        except Exception:  # feeds of different shapes, or a static batch dimension
            pass
    return batches


def _session(model: onnx.ModelProto, options: Any = None) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _warm_up(session: Any, batch: dict[str, np.ndarray], seconds: float = 0.1) -> int:
    """Run ``session`` for ten runs' time, up to ``seconds`` (once at least); return how many runs. The worker
    threads of the session run before spin on for tens of milliseconds: on two cores they doubled the first
    runs of an 8 ms int8 model after a switch."""
    import time

    start = time.perf_counter()
    session.run(None, batch)
    until = start + min(seconds, 10 * (time.perf_counter() - start))
    runs = 1
    while time.perf_counter() < until:
        session.run(None, batch)
        runs += 1
    return runs


def _kernel_times(
    models: dict[bool, onnx.ModelProto], batches: list[dict[str, np.ndarray]], tmp: str
) -> dict[bool, dict[str, tuple[float, ...]]]:
    """For each model, node name -> its kernel's time per sample at each batch, from onnxruntime's profiler:
    the time of the int8 kernel the node became. Medians of 40 runs of one sample and 8 of the larger batch,
    in alternating blocks (so that a drift of the machine touches both models alike), each after a warm-up."""
    import json
    import re
    import statistics

    import onnxruntime as ort

    runs = [10, 2]  # per block: 1 sample, up to 8
    sessions = {}
    for key, model in models.items():
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, f"profile_{key}")
        sessions[key] = _session(model, options)
    plans: dict[bool, list[int | None]] = {key: [] for key in sessions}  # each run: a batch's index, or None
    for block in range(4):
        for key in sorted(sessions, reverse=bool(block % 2)):
            for k, batch in enumerate(batches):
                plans[key] += [None] * _warm_up(sessions[key], batch) + [k] * runs[k]
                for _ in range(runs[k]):
                    sessions[key].run(None, batch)
    times = {}
    for key, session in sessions.items():
        plan = plans[key]
        with open(session.end_profiling()) as f:
            events = json.load(f)
        durations: dict[str, list[float]] = {}
        for e in events:
            if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
                # onnxruntime's layout transformer renames the nodes it rewrites NAME_token_N
                name = re.sub(r"(_token_\d+)*_kernel_time$", "", e["name"])
                durations.setdefault(name, []).append(e["dur"] * 1e-6)
        times[key] = {
            name: tuple(
                statistics.median(t for t, k in zip(d, plan) if k == index) / _count(batch)
                for index, batch in enumerate(batches)
            )
            for name, d in durations.items()
            if len(d) == len(plan)  # a node that ran once a run
        }
    return times


def _faster_per_tensor(
    both: dict[bool, onnx.ModelProto], weights: dict[str, str], batches: list[dict[str, np.ndarray]], tmp: str
) -> set[str]:
    """The weights whose node's int8 kernel, with per-tensor asymmetric weights rather than per-channel
    symmetric ones, takes at least 3% less time per sample over both batches and is slower at neither, here."""
    times = _kernel_times(both, batches, tmp)
    per_channel, per_tensor = times[False], times[True]
    return {
        weight
        for node, weight in weights.items()
        if node in per_channel
        and node in per_tensor
        and sum(per_tensor[node]) < 0.97 * sum(per_channel[node])
        and all(t <= c for t, c in zip(per_tensor[node], per_channel[node]))
    }


def _choose_weights(
    fp32: onnx.ModelProto,
    per_channel: onnx.ModelProto,
    candidate: onnx.ModelProto,
    n_per_tensor: int,
    n_weights: int,
    feed_list: list[dict[str, np.ndarray]],
    batches: list[dict[str, np.ndarray]],
) -> tuple[onnx.ModelProto, str]:
    """The candidate (per-tensor weights where their node measured faster) if the whole model measures faster
    than per-channel's (time per sample over one sample and a batch of up to 8, at least 3% less, and no batch
    3% slower; alternating runs, medians) and agrees with fp32 on the calibration samples as well as
    per-channel does (top-1, and mean |diff| within 1.5×)."""
    import statistics
    import time

    if n_per_tensor == 0:
        return per_channel, f"{PER_CHANNEL} (no layer measured faster with per-tensor weights here)"
    label = (
        PER_TENSOR
        if n_per_tensor == n_weights
        else f"{PER_CHANNEL}, per-tensor asymmetric for {n_per_tensor} of {n_weights}"
    )
    models = {"per-channel": per_channel, "candidate": candidate}
    sessions = {k: _session(m) for k, m in models.items()}
    reference = _outputs(_session(fp32), feed_list)
    compared = {k: _compare(reference, _outputs(s, feed_list), None) for k, s in sessions.items()}
    agreement = {k: c.top1_agreement for k, c in compared.items()}
    mean_diff = {k: c.mean_abs_diff for k, c in compared.items()}
    per_sample = {k: 0.0 for k in sessions}
    speed = []  # per batch: per-channel's time over the candidate's
    for batch in batches:
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for round_ in range(5):
            for k in sorted(sessions, reverse=bool(round_ % 2)):
                _warm_up(sessions[k], batch)
                for _ in range(max(2, 8 // _count(batch))):
                    t0 = time.perf_counter()
                    sessions[k].run(None, batch)
                    times[k].append(time.perf_counter() - t0)
        median = {k: statistics.median(v) for k, v in times.items()}
        speed.append((_count(batch), median["per-channel"] / median["candidate"]))
        for k in sessions:
            per_sample[k] += median[k] / _count(batch)
    faster = per_sample["per-channel"] / per_sample["candidate"]
    as_good = (
        agreement["candidate"] >= agreement["per-channel"]
        and mean_diff["candidate"] <= 1.5 * mean_diff["per-channel"] + 1e-12
    )
    at = ", ".join(f"{ratio:.2f}× at batch {n}" for n, ratio in speed)
    why = (
        f"per-channel's speed here: {at}; top-1 agreement with fp32 on the calibration samples "
        f"{agreement['candidate']:.0%} vs {agreement['per-channel']:.0%}, mean |diff| {mean_diff['candidate']:.3g} "
        f"vs {mean_diff['per-channel']:.3g}"
    )
    if faster >= 1.03 and all(ratio >= 0.97 for _, ratio in speed) and as_good:
        return candidate, f"{label} ({why})"
    return per_channel, f"{PER_CHANNEL} (tried {label}: {why})"


def _count(feed: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(feed.values())).shape[0]) if feed else 0


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


def _check(
    fp32: onnx.ModelProto, int8: onnx.ModelProto, feed_list: list[dict[str, np.ndarray]], labels: np.ndarray | None
) -> CheckResult:
    return _compare(_outputs(_session(fp32), feed_list), _outputs(_session(int8), feed_list), labels)


def _outputs(session: Any, feed_list: list[dict[str, np.ndarray]]) -> np.ndarray:
    """The first output over every feed, stacked on axis 0, in float64."""
    return np.concatenate([session.run(None, f)[0] for f in feed_list]).astype(np.float64)


def _compare(a: np.ndarray, b: np.ndarray, labels: np.ndarray | None) -> CheckResult:
    """fp32 outputs ``a`` against int8 outputs ``b`` (and both against ``labels``, when given)."""
    diff = np.abs(a - b)
    top_a, top_b = a.reshape(len(a), -1).argmax(-1), b.reshape(len(b), -1).argmax(-1)
    result = CheckResult(len(a), float((top_a == top_b).mean()), float(diff.max()), float(diff.mean()))
    if labels is not None:
        labels = labels[: len(a)]
        result.accuracy_fp32 = float((top_a == labels).mean())
        result.accuracy_int8 = float((top_b == labels).mean())
    return result


def _enforce(report: QuantizeReport, max_accuracy_drop: float, min_top1_agreement: float) -> None:
    check = report.check
    assert check is not None
    if check.accuracy_fp32 is not None and check.accuracy_int8 is not None:
        drop = (check.accuracy_fp32 - check.accuracy_int8) * 100
        if drop > max_accuracy_drop:
            raise QuantizeCheckError(
                f"int8 accuracy {check.accuracy_int8:.2%} is {drop:.2f} points below fp32's "
                f"{check.accuracy_fp32:.2%} (allowed: {max_accuracy_drop:g})",
                report,
            )
    elif check.top1_agreement < min_top1_agreement:
        raise QuantizeCheckError(
            f"int8 and fp32 agree on top-1 for {check.top1_agreement:.2%} of the check samples "
            f"(required: {min_top1_agreement:.0%})",
            report,
        )


def write_samples(path: str | os.PathLike[str], samples: Mapping[str, np.ndarray]) -> Path:
    """Save samples (input name -> samples stacked on axis 0, optionally ``labels``) as the .npz the
    CLI's ``--calibration`` and ``--check`` read."""
    np.savez(path, **{k: np.asarray(v) for k, v in samples.items()})
    return Path(path)


__all__ = [
    "CalibrationDataError",
    "CheckResult",
    "QuantizeCheckError",
    "QuantizeReport",
    "feeds",
    "quantize",
    "quantize_with_report",
    "write_samples",
]
