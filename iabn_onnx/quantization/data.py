"""Calibration and check samples: read once, checked against the model's inputs, fed to onnxruntime.

``data`` is a ``.npz`` path (arrays by input name, samples stacked on axis 0), a ``.npy`` path (one array:
the samples of a model's only input), a mapping of the same, or an iterable of feed dicts. A check set
may also hold ``labels``: integer class ids, one per sample (N,), or masks (N, H, W) for a dense output.
Faults raise ``CalibrationDataError`` naming the file or input and the fault.
"""

from __future__ import annotations

import os
import tokenize
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..graph import InputSpec, feed_inputs

Samples = str | os.PathLike | Mapping[str, Any] | Iterable[Mapping[str, Any]]
LABELS = "labels"


class CalibrationDataError(ValueError):
    """Calibration or check data that does not fit the model: names, shapes, dtypes, empty, NaN."""


def _read_file(path: str, what: str, inputs: list[str]) -> Mapping[str, Any]:
    """The arrays of a ``.npz`` (by name) or ``.npy`` (the only input's samples) file; one fault per kind."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such {what} file: {path}")
    with open(path, "rb") as f:
        head = f.read(6)
    # numpy takes any file that is neither .npy nor .npz for a pickle: tell them apart by their first bytes
    if not head.startswith((b"PK\x03\x04", b"\x93NUMPY")):
        kind = "a pickled object" if head[:1] == b"\x80" else "not a NumPy .npz file"
        raise CalibrationDataError(f"{path}: {kind} (expected a .npz of arrays by input name)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:  # an .npy of objects, or a damaged header
        kind = "a pickled object" if "pickle" in str(exc) else "a damaged .npy or .npz file"
        raise CalibrationDataError(f"{path}: {kind} (expected a .npz of arrays by input name)") from None
    except (OSError, EOFError, zipfile.BadZipFile, SyntaxError, tokenize.TokenError) as exc:
        raise CalibrationDataError(f"{path}: truncated or damaged ({type(exc).__name__})") from None
    if isinstance(loaded, np.ndarray):  # a bare .npy array
        if len(inputs) != 1:
            raise CalibrationDataError(
                f"{path}: one array, but the model has {len(inputs)} inputs {inputs}; "
                "give a .npz of arrays by input name"
            )
        return {inputs[0]: loaded}
    try:
        with loaded as npz:
            return {k: npz[k] for k in npz.files}
    # a damaged member: zip's CRC, or numpy's header parser (which tokenizes the header's dict literal)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, SyntaxError, tokenize.TokenError) as exc:
        raise CalibrationDataError(f"{path}: truncated or damaged .npz ({type(exc).__name__})") from None


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


def _labels(value: Any, count: int, where: str) -> np.ndarray:
    labels = np.asarray(value)
    if labels.dtype.kind not in "iu" or labels.ndim not in (1, 3) or labels.shape[0] != count:
        raise CalibrationDataError(
            f"{where}: 'labels' must be integers, class ids ({count},) or masks ({count}, H, W); "
            f"got {labels.dtype.name} {list(labels.shape)}"
        )
    return labels


def feeds(
    model: onnx.ModelProto, data: Samples, what: str = "calibration"
) -> tuple[list[dict[str, np.ndarray]], np.ndarray | None]:
    """The feeds ``data`` gives, checked against the model's inputs; and the labels, when it has them."""
    specs = feed_inputs(model)
    names = set(specs)
    if isinstance(data, (str, os.PathLike)):
        where = os.fspath(data)
        stacked: Mapping[str, Any] | None = _read_file(where, what, list(specs))
    elif isinstance(data, Mapping):
        stacked, where = data, f"the {what} mapping"
    else:
        stacked, where = None, f"the {what} feeds"
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
        labels = _labels(stacked[LABELS], count, where) if LABELS in stacked else None
        batch = next((dims[0] for _, dims in specs.values() if dims and dims[0] is not None), 1)
        out = [{n: a[i : i + batch] for n, a in arrays.items()} for i in range(0, count - batch + 1, batch)]
        if not out:
            raise CalibrationDataError(f"{where}: {count} samples, fewer than the model's batch of {batch}")
        return out, labels
    feed_list = list(data)  # type: ignore[arg-type]
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


def count(feed: Mapping[str, np.ndarray]) -> int:
    """Samples in one feed (its first input's leading axis)."""
    return int(next(iter(feed.values())).shape[0]) if feed else 0


class Reader:
    """onnxruntime.quantization's CalibrationDataReader protocol over checked feeds; ``passes`` counts how
    often any reader was read to its end (the calibration is to read its data once)."""

    passes = 0

    def __init__(self, feed_list: list[dict[str, np.ndarray]]) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(feed_list)

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed = next(self._feeds, None)
        if feed is None:
            Reader.passes += 1
        return feed


def write_samples(path: str | os.PathLike[str], samples: Mapping[str, np.ndarray]) -> Path:
    """Save samples (input name -> samples stacked on axis 0, optionally ``labels``) as the .npz the
    CLI's ``--calibration`` and ``--check`` read."""
    np.savez(path, **{k: np.asarray(v) for k, v in samples.items()})
    return Path(path)


__all__ = ["LABELS", "CalibrationDataError", "Reader", "Samples", "count", "feeds", "write_samples"]
