"""What ``quantize`` did: its steps and their times, what runs in int8, the weights chosen, the check."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .check import CheckResult

#: ``progress(step, seconds)``: called as each step of ``quantize`` ends
ProgressCallback = Callable[[str, float], None]


class Steps:
    """Times the steps of one call and tells ``callback`` as each ends."""

    def __init__(self, callback: ProgressCallback | None = None) -> None:
        self.callback = callback
        self.done: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        self.done.append((name, seconds))
        if self.callback is not None:
            self.callback(name, seconds)


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
    weight_bits: str = ""  # 7 or 8 bits, and why (``cpu.py``)
    candidates: int = 0  # whole int8 models built
    steps: list[tuple[str, float]] = field(default_factory=list)  # (step, seconds)
    check: CheckResult | None = None
    refused: str | None = None  # the check's refusal, when it refused

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
        if self.weight_bits:
            out.append(f"weight range: {self.weight_bits}")
        if self.kept_float:
            f = ", ".join(f"{n} {op}" for op, n in sorted(self.kept_float.items()))
            out.append(f"in float (no int8 kernel in onnxruntime, or batch statistics): {f}")
        if self.excluded:
            out.append(f"batch statistics of training-mode nodes kept in float: {len(self.excluded)} nodes")
        if self.check is not None:
            out += self.check.lines()
        return out

    def to_json(self) -> dict[str, Any]:
        """The whole report as JSON-ready data (figures as fractions; None where there is no data)."""
        return {
            "check": self.check.to_json() if self.check is not None else None,
            "refused": self.refused,
            "weights": self.weights,
            "weight_bits": self.weight_bits,
            "candidates": self.candidates,
            "calibration_samples": self.calibration_samples,
            "quantized": dict(self.quantized),
            "kept_float": dict(self.kept_float),
            "excluded": list(self.excluded),
            "global_pools": self.global_pools,
            "batchnorm_convs": self.batchnorm_convs,
            "fold": list(self.fold_lines),
            "steps": [{"step": name, "seconds": seconds} for name, seconds in self.steps],
        }


__all__ = ["ProgressCallback", "QuantizeReport", "Steps"]
