"""Whether int8 weights keep all 8 bits, by what the CPU's int8 dot product can hold.

onnxruntime's x86-64 kernels for uint8 activations × int8 weights (what ``quantize`` writes) multiply with
VPMADDUBSW where the CPU has no VNNI: it adds two uint8×int8 products into an int16, which saturates once
both are large (255 · 127 · 2 > 32767). The error is silent and grows with the layer. With 7-bit weights
(onnxruntime's ``reduce_range``: at most 64) the pair fits (255 · 64 · 2 < 32767). VNNI (VPDPBUSD) and AMX
add into int32 and never saturate; ARM's kernels widen before adding (onnxruntime's design, not measured
here). OpenVINO's documentation of the same "saturation issue" gives the same remedy. Measured on an
AVX2-only CPU: ``tests/test_quantize_saturation.py``, ``benchmarks/bench_weight_bits.py``.

The rule applies to the machine that quantizes; a file meant for other CPUs too takes ``reduce_range=True``.
"""

from __future__ import annotations

import platform

#: x86 flags (as /proc/cpuinfo names them) whose int8 dot product adds into int32
INT32_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags() -> set[str] | None:
    """This CPU's feature flags as Linux reports them; None where they cannot be read."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def int8_dot_saturates(machine: str | None = None, flags: set[str] | None = None) -> bool:
    """Whether onnxruntime's uint8×int8 kernels on this CPU can saturate with 8-bit weights: an x86-64 CPU
    without VNNI or AMX, or one whose flags cannot be read (7-bit weights are safe everywhere)."""
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    flags = cpu_flags() if flags is None else flags
    return flags is None or not any(f in flags for f in INT32_DOT_FLAGS)


def resolve_reduce_range(reduce_range: bool | str) -> tuple[bool, str]:
    """``reduce_range`` (True, False or ``"auto"``) as a bool, and the report's line saying why."""
    if reduce_range == "auto":
        if int8_dot_saturates():
            return True, "7-bit (this CPU has no VNNI: its int8 dot product saturates with 8-bit weights)"
        return False, "8-bit (this CPU adds int8 products into int32: VNNI or AMX, or not x86)"
    if reduce_range is True:
        return True, "7-bit (reduce_range=True)"
    if reduce_range is False:
        return False, "8-bit (reduce_range=False)"
    raise ValueError(f"reduce_range must be True, False or 'auto', got {reduce_range!r}")


__all__ = ["INT32_DOT_FLAGS", "cpu_flags", "int8_dot_saturates", "resolve_reduce_range"]
