"""onnxruntime's static QDQ quantizer, calibrated once per ``quantize`` call.

The first model built runs onnxruntime's calibration (``quantize_static`` with a ``calibration_cache_path``:
its calibrator's ``TensorsData``, saved by onnxruntime as JSON); every later model of the same call
(the other weight form, a mixed candidate, the probe's model) loads those ranges instead of reading the
data again. An onnxruntime without that option (the 1.20 floor) gets the same from the parts its
``quantize_static`` is made of: ``create_calibrator`` once, then ``QDQQuantizer`` with those ranges.
Models are written to and read from the temporary folder, so none stays in memory here.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from .data import Reader


def has_calibration_cache() -> bool:
    """Whether this onnxruntime's ``quantize_static`` takes ``calibration_cache_path`` (1.32 does, 1.20 not)."""
    import inspect

    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


class CalibratedQuantizer:
    """Builds int8 models of ``prepared`` (a path) with uint8 activations and int8 weights: symmetric per
    output channel, or asymmetric per tensor for every weight (``True``), none (``False``) or those named;
    7-bit weights with ``reduce_range``."""

    def __init__(
        self,
        prepared: str,
        tmp: str,
        feed_list: list[dict[str, np.ndarray]],
        excluded: list[str],
        method: Any,
        reduce_range: bool = False,
    ) -> None:
        self.prepared, self.tmp, self.excluded, self.method = prepared, tmp, excluded, method
        self.reduce_range = reduce_range  # 7-bit weights (``cpu.py``)
        self._feeds = feed_list
        self.cache = os.path.join(tmp, "calibration.json")
        self._ranges: Any = None  # the calibrated TensorsData, where onnxruntime has no calibration cache
        self.candidates = 0  # whole models built
        self.calibration_seconds = 0.0  # the first build: calibration and quantization

    def build(self, per_tensor: bool | set[str]) -> str:
        """A whole int8 model; its path."""
        self.candidates += 1
        out = os.path.join(self.tmp, f"int8_{self.candidates}.onnx")
        start = time.perf_counter()
        first = not os.path.exists(self.cache) and self._ranges is None
        self.quantize_file(self.prepared, out, per_tensor)
        if first:
            self.calibration_seconds = time.perf_counter() - start
        return out

    def quantize_file(self, model_path: str, out: str, per_tensor: bool | set[str]) -> str:
        """``model_path`` (whose tensors were calibrated: the prepared model, or a part of it) in int8."""
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        named = per_tensor if isinstance(per_tensor, set) else set()
        extra_options = {
            "WeightSymmetric": per_tensor is not True,
            "TensorQuantOverrides": {name: [{"symmetric": False}] for name in sorted(named)},
        }
        if not has_calibration_cache():
            return self._quantize_with_ranges(model_path, out, per_tensor is not True, extra_options)
        reader = None if os.path.exists(self.cache) else Reader(self._feeds)
        quantize_static(
            model_path,
            out,
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=per_tensor is not True,
            reduce_range=self.reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=self.excluded,
            calibrate_method=self.method,
            calibration_cache_path=self.cache,
            extra_options=extra_options,
        )
        return out

    def _quantize_with_ranges(self, model_path: str, out: str, per_channel: bool, extra_options: dict) -> str:
        """For an onnxruntime without the calibration cache (before 1.32): what its ``quantize_static`` does
        inside (``create_calibrator`` once, then its ``QDQQuantizer`` with those ``TensorsData``)."""
        import tempfile
        from pathlib import Path

        from onnxruntime.quantization import QuantType
        from onnxruntime.quantization.calibrate import create_calibrator
        from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
        from onnxruntime.quantization.quant_utils import load_model_with_shape_infer
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        ops = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
        if self._ranges is None:
            with tempfile.TemporaryDirectory(prefix="calibration_", dir=self.tmp) as work:
                calibrator = create_calibrator(
                    Path(self.prepared),
                    ops,
                    augmented_model_path=os.path.join(work, "augmented_model.onnx"),
                    calibrate_method=self.method,
                )
                calibrator.collect_data(Reader(self._feeds))
                self._ranges = calibrator.compute_data()
                del calibrator
        quantizer = QDQQuantizer(
            load_model_with_shape_infer(Path(model_path)),
            per_channel,
            self.reduce_range,
            QuantType.QInt8,
            QuantType.QUInt8,
            self._ranges,
            [],  # nodes_to_quantize: all
            self.excluded,
            ops,
            extra_options,
        )
        quantizer.quantize_model()
        quantizer.model.save_model_to_file(out, False)
        return out


__all__ = ["CalibratedQuantizer"]
