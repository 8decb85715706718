"""Timing helpers shared by the benchmark scripts: medians over alternating blocks, in one process."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def block_medians(
    fns: dict[str, Callable[[], object]],
    repeat: int,
    blocks: int = 5,
    warmup: int = 3,
    warmup_seconds: float = 0.0,
) -> dict[str, float]:
    """Median per-call seconds of each function, timed in alternating blocks.

    Blocks (rather than call-by-call interleaving) keep one session's spinning
    thread pool from stealing the cores of the next call of the other. Every other
    round runs the functions in reverse order, so a drift within a round does not
    favour the ones timed first. A block starts with ``warmup`` calls, and more
    until ``warmup_seconds`` have passed: onnxruntime's worker threads of the
    session timed before keep spinning for tens of milliseconds, and on two cores
    the first calls of an 8 ms int8 run after a switch took twice as long.
    """
    times: dict[str, list[float]] = {k: [] for k in fns}
    per_block = max(1, repeat // blocks)
    names = list(fns)
    for round_ in range(blocks):
        for k in names if round_ % 2 == 0 else names[::-1]:
            fn = fns[k]
            start = time.perf_counter()
            done = 0
            while done < warmup or time.perf_counter() - start < warmup_seconds:
                fn()
                done += 1
            for _ in range(per_block):
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def quartiles(values: list[float]) -> tuple[float, float]:
    """The 25th and 75th percentiles (both the value itself for one sample)."""
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def repeats_for(fn: Callable[[], object], budget_s: float, lo: int = 5, hi: int = 200) -> int:
    """How many calls fit in budget_s (one timed probe call)."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-6)
    return int(min(hi, max(lo, budget_s / one)))


def compile_package() -> None:
    """Write the package's bytecode, as ``pip install`` does for an installed package, so fresh
    processes time importing it rather than compiling it: an editable install under
    PYTHONDONTWRITEBYTECODE (set on this machine) would otherwise compile every module in every process."""
    import compileall
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    for folder in ("iabn_onnx", "custom_ops"):
        compileall.compile_dir(root / folder, quiet=1)


#: the x86 instructions int8 and bf16 speed (and int8 accuracy: ``quantization/cpu.py``) depend on
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_flags() -> dict[str, bool]:
    """Which of ISA_FLAGS this CPU has, as Linux reports them (all False where they cannot be read)."""
    from iabn_onnx.quantization.cpu import cpu_flags as read_flags  # the reader quantize's rule uses

    flags = read_flags() or set()
    return {flag: flag in flags for flag in ISA_FLAGS}


def environment() -> dict:
    """Where a figure was taken: the machine and the versions it ran, read without importing them."""
    import os
    import platform
    from importlib import metadata

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    versions = {}
    for dist in ("onnx", "onnxruntime", "onnxruntime-extensions", "numpy", "ml_dtypes", "torch", "numba"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    isa = [flag for flag, present in cpu_flags().items() if present]  # "AMD EPYC" alone names Zen 3 and Zen 4
    return {"cores": os.cpu_count(), "cpu": cpu, "isa": isa, "python": platform.python_version(), "versions": versions}


def write_results(results: dict, path: str, **versions: str) -> None:
    """Record where the figures were taken (``environment()``, plus ``versions`` of what else ran), write
    ``results`` to ``path`` as JSON and say so."""
    import json
    from pathlib import Path

    results["environment"] = {**environment(), **versions}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")
