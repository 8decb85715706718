"""The int8 model against the fp32 one on held-out samples, output by output, in the task's terms.

Every output is compared. One with a class axis (``metrics.class_axis``) gets the agreement of the argmax
over that axis: per sample for a classifier's (N, C), per pixel for a dense (N, C, H, W). Every output gets
max and mean |diff| and a relative error. ``labels`` (class ids (N,), or masks (N, H, W) with an ignore
value) go to the outputs whose shape they fit and add accuracy (pixel accuracy for masks) and, for masks,
mIoU for both models. Thresholds apply to the outputs with a class axis, or to those the caller names.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from . import metrics
from .data import CalibrationDataError, count


class QuantizeCheckError(ValueError):
    """The int8 model differs from the fp32 one past the threshold the caller set; ``report`` says how."""

    def __init__(self, message: str, report: Any) -> None:
        super().__init__(message)
        self.report = report


class CheckOutputError(ValueError):
    """A named check output that the model does not have, or that has no class axis."""


@dataclass
class OutputCheck:
    """One output's figures (fractions; None where there is no data for it)."""

    class_axis: int | None
    agreement: float | None
    max_abs_diff: float
    mean_abs_diff: float
    relative_error: float
    positions: int  # samples, or pixels: what ``agreement`` counts
    accuracy_fp32: float | None = None
    accuracy_int8: float | None = None
    miou_fp32: float | None = None
    miou_int8: float | None = None

    positions_per_sample: int = 1

    @property
    def unit(self) -> str:
        return "samples" if self.positions_per_sample == 1 else "pixels"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("positions_per_sample")
        return out


@dataclass
class CheckResult:
    """The check on ``samples`` held-out samples: every output by name; ``thresholded``: those the
    thresholds applied to."""

    samples: int
    outputs: dict[str, OutputCheck] = field(default_factory=dict)
    thresholded: list[str] = field(default_factory=list)
    ignore_index: int = metrics.IGNORE_INDEX

    # the first thresholded output's figures, as the check reported them when it read only one output
    @property
    def primary(self) -> OutputCheck:
        return self.outputs[self.thresholded[0] if self.thresholded else next(iter(self.outputs))]

    @property
    def top1_agreement(self) -> float | None:
        return self.primary.agreement

    @property
    def max_abs_diff(self) -> float:
        return self.primary.max_abs_diff

    @property
    def mean_abs_diff(self) -> float:
        return self.primary.mean_abs_diff

    @property
    def accuracy_fp32(self) -> float | None:
        return self.primary.accuracy_fp32

    @property
    def accuracy_int8(self) -> float | None:
        return self.primary.accuracy_int8

    def lines(self) -> list[str]:
        out = []
        for name, o in self.outputs.items():
            mark = "" if name in self.thresholded else " (figures only)"
            head = f"check '{name}'{mark} on {self.samples} samples: "
            if o.agreement is not None:
                what = "top-1 agreement" if o.unit == "samples" else f"argmax agreement over {o.positions:,} pixels"
                head += f"{what} {o.agreement:.2%}, "
            out.append(
                head + f"max |diff| {o.max_abs_diff:.3g}, mean |diff| {o.mean_abs_diff:.3g}, "
                f"relative error {o.relative_error:.3g}"
            )
            kind = "accuracy" if o.unit == "samples" else "pixel accuracy"
            for what, fp32, int8 in ((kind, o.accuracy_fp32, o.accuracy_int8), ("mIoU", o.miou_fp32, o.miou_int8)):
                if fp32 is not None and int8 is not None:
                    drop = (fp32 - int8) * 100
                    out.append(f"check '{name}' {what}: fp32 {fp32:.2%}, int8 {int8:.2%} ({drop:.2f} points lost)")
        if not self.thresholded:
            out.append("check: no output has a class axis, so no threshold applied (figures only)")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "ignore_index": self.ignore_index,
            "thresholded": list(self.thresholded),
            "outputs": {name: o.to_json() for name, o in self.outputs.items()},
        }


def run_outputs(session: Any, feed_list: Sequence[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """Every output of ``session`` for each feed (feed-major)."""
    return [session.run(None, f) for f in feed_list]


class _Accumulator:
    """One output's figures over feeds, without stacking them (dense outputs are large)."""

    def __init__(self, shape: tuple[int, ...], labels_classes: int | None, ignore_index: int) -> None:
        self.class_axis = metrics.class_axis(shape)
        self.per_sample = int(np.prod(shape[2:])) if self.class_axis is not None else 1
        self.agree = self.positions = 0
        self.max_diff = self.sum_diff = self.max_ref = 0.0
        self.elements = 0
        self.ignore_index = ignore_index
        self.confusion = None
        if labels_classes is not None:
            self.confusion = {k: np.zeros((labels_classes, labels_classes), np.int64) for k in ("fp32", "int8")}

    def add(self, ref: np.ndarray, got: np.ndarray, labels: np.ndarray | None) -> None:
        ref64, got64 = np.asarray(ref, np.float64), np.asarray(got, np.float64)
        diff = np.abs(ref64 - got64)
        if diff.size:
            self.max_diff = max(self.max_diff, float(diff.max()))
            self.max_ref = max(self.max_ref, float(np.abs(ref64).max()))
        self.sum_diff += float(diff.sum())
        self.elements += diff.size
        if self.class_axis is not None:
            pred_ref, pred_got = ref.argmax(self.class_axis), got.argmax(self.class_axis)
            self.agree += int((pred_ref == pred_got).sum())
            self.positions += pred_ref.size
            if self.confusion is not None and labels is not None:
                classes = self.confusion["fp32"].shape[0]
                labels = labels.reshape(pred_ref.shape)
                self.confusion["fp32"] += metrics.confusion_matrix(pred_ref, labels, classes, self.ignore_index)
                self.confusion["int8"] += metrics.confusion_matrix(pred_got, labels, classes, self.ignore_index)

    def result(self, dense_labels: bool) -> OutputCheck:
        rel = self.max_diff / self.max_ref if self.max_ref > 0 else (0.0 if self.max_diff == 0 else float("inf"))
        out = OutputCheck(
            class_axis=self.class_axis,
            agreement=self.agree / self.positions if self.class_axis is not None and self.positions else None,
            max_abs_diff=self.max_diff,
            mean_abs_diff=self.sum_diff / self.elements if self.elements else 0.0,
            relative_error=rel,
            positions=self.positions if self.class_axis is not None else 0,
            positions_per_sample=self.per_sample,
        )
        if self.confusion is not None:
            out.accuracy_fp32 = metrics.accuracy(self.confusion["fp32"])
            out.accuracy_int8 = metrics.accuracy(self.confusion["int8"])
            if dense_labels:
                out.miou_fp32 = metrics.mean_iou(self.confusion["fp32"])
                out.miou_int8 = metrics.mean_iou(self.confusion["int8"])
        return out


def _fits(labels: np.ndarray, shape: tuple[int, ...]) -> bool:
    """Whether labels of one sample fit an output of one sample's ``shape`` (batch axis dropped)."""
    if metrics.class_axis((1, *shape)) is None:
        return False
    spatial = tuple(shape[1:])
    if labels.ndim == 1:
        return all(d == 1 for d in spatial)
    return spatial == tuple(labels.shape[1:])


def compare(
    names: Sequence[str],
    reference: Sequence[Sequence[np.ndarray]],
    outputs: Iterable[Sequence[np.ndarray]],
    feed_list: Sequence[dict[str, np.ndarray]],
    labels: np.ndarray | None = None,
    ignore_index: int = metrics.IGNORE_INDEX,
    check_outputs: Sequence[str] = (),
) -> CheckResult:
    """Figures of ``outputs`` (per feed, the int8 model's) against ``reference`` (fp32's), every output."""
    if not reference:
        raise CalibrationDataError("the check set holds no feed")
    unknown = [n for n in check_outputs if n not in names]
    if unknown:
        raise CheckOutputError(f"check output '{unknown[0]}' is not an output of the model (outputs: {list(names)})")
    shapes = {n: tuple(np.shape(a)[1:]) for n, a in zip(names, reference[0])}
    candidates = [n for n in names if metrics.class_axis((1, *shapes[n])) is not None]
    for n in check_outputs:
        if n not in candidates:
            raise CheckOutputError(
                f"check output '{n}' has no class axis (shape {['N', *shapes[n]]}): nothing to agree on"
            )
    thresholded = list(check_outputs) or candidates
    labelled: list[str] = []
    if labels is not None:
        shaped = [n for n in thresholded if _fits(labels, shapes[n])]
        if not shaped:
            described = ", ".join(f"{n} {['N', *shapes[n]]}" for n in names)
            raise CalibrationDataError(
                f"check 'labels' of shape {list(labels.shape)} fit no output with a class axis "
                f"(outputs: {described}); class ids fit (N, C), masks (N, H, W) fit (N, C, H, W)"
            )
        values = labels[labels != ignore_index]
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < 0:
            raise CalibrationDataError(f"check 'labels' hold class {low} (and {ignore_index} is the ignore value)")
        # labels go to the outputs of their shape with classes enough (a parsing map, not its 2-class edge map)
        labelled = [n for n in shaped if high < shapes[n][0]]
        if not labelled:
            n = shaped[0]
            raise CalibrationDataError(
                f"check 'labels' hold class {high}, but output '{n}' has {shapes[n][0]} classes "
                f"(and {ignore_index} is the ignore value)"
            )
    acc = {n: _Accumulator((1, *shapes[n]), shapes[n][0] if n in labelled else None, ignore_index) for n in names}
    start = 0
    for ref, got, feed in zip(reference, outputs, feed_list):
        k = count(feed) if feed else len(ref[0])
        batch_labels = labels[start : start + k] if labels is not None else None
        start += k
        for n, r, g in zip(names, ref, got):
            acc[n].add(np.asarray(r), np.asarray(g), batch_labels if n in labelled else None)
    dense = labels is not None and labels.ndim == 3
    return CheckResult(
        samples=start,
        outputs={n: a.result(dense) for n, a in acc.items()},
        thresholded=thresholded,
        ignore_index=ignore_index,
    )


def enforce(result: CheckResult, report: Any, max_accuracy_drop: float, min_agreement: float) -> None:
    """Raise QuantizeCheckError, naming the output, for the first thresholded output past a threshold:
    accuracy (and mIoU, with masks) dropping more than ``max_accuracy_drop`` points where labels fit it,
    argmax agreement below ``min_agreement`` elsewhere."""
    for name in result.thresholded:
        o = result.outputs[name]
        if o.accuracy_fp32 is not None and o.accuracy_int8 is not None:
            kind = "pixel accuracy" if o.unit == "pixels" else "accuracy"
            figures = [(kind, o.accuracy_fp32, o.accuracy_int8)]
            if o.miou_fp32 is not None and o.miou_int8 is not None:
                figures.append(("mIoU", o.miou_fp32, o.miou_int8))
            for what, fp32, int8 in figures:
                drop = (fp32 - int8) * 100
                if drop > max_accuracy_drop:
                    raise QuantizeCheckError(
                        f"output '{name}': int8 {what} {int8:.2%} is {drop:.2f} points below fp32's {fp32:.2%} "
                        f"(allowed: {max_accuracy_drop:g})",
                        report,
                    )
        elif o.agreement is not None and not o.agreement >= min_agreement:
            where = "top-1 for" if o.unit == "samples" else "the argmax over the class axis at"
            raise QuantizeCheckError(
                f"output '{name}': int8 and fp32 agree on {where} {o.agreement:.2%} of the check {o.unit} "
                f"(required: {min_agreement:.0%})",
                report,
            )


def agreement_score(result: CheckResult) -> tuple[float, float]:
    """(lowest agreement over the thresholded outputs, or 1 without any; mean |diff| over every output):
    the measure ``auto`` compares its weight candidates by."""
    agreements = [result.outputs[n].agreement for n in result.thresholded]
    low = min((a for a in agreements if a is not None), default=1.0)
    return low, float(np.mean([o.mean_abs_diff for o in result.outputs.values()]))


__all__ = [
    "CheckOutputError",
    "CheckResult",
    "OutputCheck",
    "QuantizeCheckError",
    "agreement_score",
    "compare",
    "enforce",
    "run_outputs",
]
