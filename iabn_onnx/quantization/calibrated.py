"""onnxruntime's static QDQ quantizer, calibrated once per ``quantize`` call.

The first model built runs onnxruntime's calibration (``quantize_static`` with a ``calibration_cache_path``:
its calibrator's ``TensorsData``, saved by onnxruntime as JSON); every later model of the same call
(the other weight form, a mixed candidate, the probe's one-layer models) loads those ranges instead of
reading the data again. Models are written to and read from the temporary folder, so none stays in
memory here.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from .data import Reader


class CalibratedQuantizer:
    """Builds int8 models of ``prepared`` (a path) with uint8 activations and int8 weights: symmetric per
    output channel, or asymmetric per tensor for every weight (``True``), none (``False``) or those named."""

    def __init__(
        self, prepared: str, tmp: str, feed_list: list[dict[str, np.ndarray]], excluded: list[str], method: Any
    ) -> None:
        self.prepared, self.tmp, self.excluded, self.method = prepared, tmp, excluded, method
        self._feeds = feed_list
        self.cache = os.path.join(tmp, "calibration.json")
        self.candidates = 0  # whole models built
        self.calibration_seconds = 0.0  # the first build: calibration and quantization

    def build(self, per_tensor: bool | set[str]) -> str:
        """A whole int8 model; its path."""
        self.candidates += 1
        out = os.path.join(self.tmp, f"int8_{self.candidates}.onnx")
        start = time.perf_counter()
        first = not os.path.exists(self.cache)
        self.quantize_file(self.prepared, out, per_tensor)
        if first:
            self.calibration_seconds = time.perf_counter() - start
        return out

    def quantize_file(self, model_path: str, out: str, per_tensor: bool | set[str]) -> str:
        """``model_path`` (whose tensors were calibrated: the prepared model, or a part of it) in int8."""
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        named = per_tensor if isinstance(per_tensor, set) else set()
        reader = None if os.path.exists(self.cache) else Reader(self._feeds)
        quantize_static(
            model_path,
            out,
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=per_tensor is not True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=self.excluded,
            calibrate_method=self.method,
            calibration_cache_path=self.cache,
            extra_options={
                "WeightSymmetric": per_tensor is not True,
                "TensorQuantOverrides": {name: [{"symmetric": False}] for name in sorted(named)},
            },
        )
        return out


__all__ = ["CalibratedQuantizer"]
