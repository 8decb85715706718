"""The check's measures, as plain numpy functions of model outputs and labels.

A "class axis" is axis 1 of an output of rank ≥ 2 with at least 2 entries there: a classifier's (N, C)
logits, or a segmentation network's (N, C, H, W) scores. Predictions are the argmax over it.
"""

from __future__ import annotations

import numpy as np

#: the label value that masks leave out of accuracy and IoU by default (Cityscapes', Pascal VOC's, mmseg's)
IGNORE_INDEX = 255


def class_axis(shape: tuple[int, ...]) -> int | None:
    """1 when ``shape`` (an output's, batch first) has a class axis there, else None."""
    return 1 if len(shape) >= 2 and shape[1] >= 2 else None


def agreement(a: np.ndarray, b: np.ndarray, axis: int = 1) -> float:
    """The fraction of positions (samples, or pixels) where the argmax over ``axis`` is the same."""
    return float(np.mean(np.argmax(a, axis=axis) == np.argmax(b, axis=axis)))


def abs_diff(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(max, mean) of |a − b|, in float64."""
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    return float(diff.max()), float(diff.mean())


def relative_error(reference: np.ndarray, other: np.ndarray) -> float:
    """max |reference − other| over max |reference| (0 when both are all zero)."""
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    err = float(np.max(np.abs(np.asarray(reference, np.float64) - other))) if reference.size else 0.0
    return err / scale if scale > 0 else (0.0 if err == 0 else float("inf"))


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, classes: int, ignore_index: int) -> np.ndarray:
    """(classes, classes) counts, row = label, column = prediction, over positions whose label is not
    ``ignore_index``. Raises ValueError for any other label outside [0, classes)."""
    labels = np.asarray(labels).ravel()
    predicted = np.asarray(predicted).ravel()
    keep = labels != ignore_index
    labels, predicted = labels[keep].astype(np.int64), predicted[keep].astype(np.int64)
    bad = (labels < 0) | (labels >= classes)
    if bad.any():
        raise ValueError(
            f"label {int(labels[bad][0])} is outside [0, {classes}) and is not the ignore value {ignore_index}"
        )
    return np.bincount(labels * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def accuracy(confusion: np.ndarray) -> float | None:
    """Correct over counted positions (pixel accuracy for masks); None when nothing was counted."""
    total = int(confusion.sum())
    return float(np.trace(confusion)) / total if total else None


def mean_iou(confusion: np.ndarray) -> float | None:
    """The mean over classes of TP / (TP + FP + FN), over the classes present in the labels or the
    predictions (a class that is in neither has no IoU, and is left out); None when there is none."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    present = union > 0
    return float(np.mean(tp[present] / union[present])) if present.any() else None


__all__ = [
    "IGNORE_INDEX",
    "abs_diff",
    "accuracy",
    "agreement",
    "class_axis",
    "confusion_matrix",
    "mean_iou",
    "relative_error",
]
