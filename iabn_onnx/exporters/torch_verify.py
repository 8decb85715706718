"""An export checked where it claims to work: every output against the model's eval output, at the example's
size and, for every dynamic axis, at a second size.

Names, one rule for the CLI and the API (unless the caller passes ``input_names`` / ``output_names``): one
tensor input is ``input``, several are ``input.0``, ``input.1``, ...; one tensor output is ``output``, a
structure's leaves are named by their path as ``torch.onnx.export`` flattens them (tuple and list items in
order, dict values in insertion order): ``output.0.1``, ``output.seg``.

The second size differs from the example's on every dynamic axis: the batch grows by one; a spatial axis
moves by about a quarter, in steps aligned as the example is (its largest power-of-two factor, up to 32
and a quarter of the size, so that strided networks still fit), up for the first spatial axis and down
for the next, never to a multiple of the example's. Adaptive pooling to fixed bins (a PSP head's 1, 2, 3,
6) is written with indices for the example's size: a file that fails there is refused, naming the op,
the size and such modules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .torch_modules import TorchExportError

#: the largest difference relative to the output's scale (``max_rel_diff``) an export may have from eager
EXPORT_TOLERANCE = {"float32": 1e-5, "float64": 1e-10, "float16": 1e-2}
MAX_ALIGN = 32


class ExportVerifyError(TorchExportError):
    """The exported file does not compute what the model computes (an output, or a second input size)."""


@dataclass
class VerifyReport:
    """What verification measured: per size, per output, the largest relative difference."""

    input_names: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    sizes: list[tuple[list[list[int]], dict[str, float]]] = field(default_factory=list)
    skipped: str = ""

    def lines(self) -> list[str]:
        if self.skipped:
            return [f"verify: skipped ({self.skipped})"]
        out = []
        for shapes, diffs in self.sizes:
            at = ", ".join("x".join(map(str, s)) for s in shapes)
            worst = max(diffs.values(), default=0.0)
            out.append(f"verify at {at}: {len(diffs)} output(s) match the eager model, max rel diff {worst:.3g}")
        return out


def flat_outputs(outputs: Any) -> tuple[list[str], list[np.ndarray]]:
    """The model's outputs as named here (see the module doc), as numpy arrays."""
    import torch
    from torch.utils import _pytree as pytree

    if isinstance(outputs, torch.Tensor):
        return ["output"], [outputs.detach().numpy()]
    leaves, _ = pytree.tree_flatten_with_path(outputs)
    names, arrays = [], []
    for path, leaf in leaves:
        name = "output" + "".join(f".{_key_text(k)}" for k in path)
        if not isinstance(leaf, torch.Tensor):
            raise TorchExportError(f"the model's output {name} is a {type(leaf).__name__}, not a tensor")
        names.append(name)
        arrays.append(leaf.detach().numpy())
    if not names:
        raise TorchExportError(f"the model returns {type(outputs).__name__} holding no tensor")
    return names, arrays


def _key_text(key: object) -> str:
    for attr in ("idx", "key", "name"):  # pytree's SequenceKey, MappingKey, GetAttrKey
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def input_names(args: Sequence[Any]) -> list[str]:
    import torch

    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    return ["input"] if len(tensors) == 1 else [f"input.{k}" for k in range(len(tensors))]


def eager_outputs(
    model: Any, args: Sequence[Any], kwargs: dict[str, Any] | None = None
) -> tuple[list[str], list[np.ndarray]]:
    """The model's eval outputs on copies of ``args`` (InPlaceABN overwrites its input), named; called as
    ``torch.onnx.export`` calls it (a trailing dict of ``args`` is keyword arguments, as are ``kwargs``)."""
    import torch

    def copy(a: Any) -> Any:
        return a.clone() if isinstance(a, torch.Tensor) else a

    positional, keywords = list(args), dict(kwargs or {})
    if positional and isinstance(positional[-1], dict):
        keywords = {**positional.pop(), **keywords}
    with torch.no_grad():
        try:
            outputs = model(*map(copy, positional), **{k: copy(v) for k, v in keywords.items()})
        except Exception as exc:
            shapes = [list(a.shape) for a in args if isinstance(a, torch.Tensor)]
            raise TorchExportError(
                f"the model fails on inputs of shape {shapes}: {type(exc).__name__}: {first_line(exc)}"
            ) from None
    return flat_outputs(outputs)


def first_line(exc: BaseException) -> str:
    """An exception's first line of text, or its type's name: what a one-line error shows of it."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def max_rel_diff(expected: np.ndarray, got: np.ndarray) -> float:
    """max |expected − got| over max(max |expected|, 1): the error relative to the output's own scale (a
    trained network's logits reach tens; float32 reassociation then moves them by more than 1e-5)."""
    a64, b64 = np.asarray(expected, np.float64), np.asarray(got, np.float64)
    return float(np.max(np.abs(a64 - b64)) / max(float(np.max(np.abs(a64))), 1.0)) if a64.size else 0.0


def compare_outputs(names: Sequence[str], expected: Sequence[np.ndarray], got: Sequence[Any], where: str) -> dict:
    """name -> max rel diff; ExportVerifyError naming the first output that differs past EXPORT_TOLERANCE."""
    if len(got) != len(expected):
        raise ExportVerifyError(f"{where}: the file has {len(got)} outputs, the model {len(expected)}")
    diffs = {}
    for name, e, g in zip(names, expected, got):
        g = np.asarray(g)
        if g.shape != np.shape(e):
            raise ExportVerifyError(
                f"{where}: output {name} has shape {list(g.shape)}, the model's has {list(np.shape(e))}"
            )
        rel = max_rel_diff(e, g)
        tolerance = EXPORT_TOLERANCE.get(np.asarray(e).dtype.name, 1e-5)
        if not rel <= tolerance:  # NaN fails too
            raise ExportVerifyError(
                f"{where}: output {name} differs from the model's eval output by {rel:.3g} (> {tolerance:g})"
            )
        diffs[name] = rel
    return diffs


def dynamic_axes(dynamic_shapes: Any, count: int) -> list[dict[int, Any]]:
    """Per tensor input, its dynamic axes (axis -> torch.export.Dim or spec), from ``dynamic_shapes``
    as a tuple/list of per-input dicts, or a dict keyed by argument name (taken in order)."""
    if dynamic_shapes is None:
        return [{} for _ in range(count)]
    specs = list(dynamic_shapes.values()) if isinstance(dynamic_shapes, Mapping) else list(dynamic_shapes)
    out = []
    for k in range(count):
        spec = specs[k] if k < len(specs) else None
        if isinstance(spec, Mapping):
            out.append({int(axis): dim for axis, dim in spec.items() if dim is not None})
        elif isinstance(spec, (list, tuple)):
            out.append({axis: dim for axis, dim in enumerate(spec) if dim is not None})
        else:
            out.append({})
    return out


def _bounds(dim: Any) -> tuple[int, int]:
    low = getattr(dim, "min", None)
    high = getattr(dim, "max", None)
    return (int(low) if isinstance(low, int) else 1), (int(high) if isinstance(high, int) else 1 << 30)


def second_size(size: int, axis: int, spatial_index: int, dim: Any) -> int:
    """A size for a dynamic axis that differs from ``size`` (see the module doc)."""
    low, high = _bounds(dim)
    if axis == 0:
        candidates = [size + 1, size - 1]
    else:
        align, cap = 1, max(1, min(MAX_ALIGN, size // 4))
        while size % (align * 2) == 0 and align * 2 <= cap:
            align *= 2
        step = max(align, (size // 4) // align * align)
        up, down = size + step, size - step
        if up % size == 0:
            up += align
        candidates = [down, up] if spatial_index % 2 else [up, down]
    for c in candidates:
        if low <= c <= high and c > 0 and c != size:
            return c
    return size


def second_inputs(args: Sequence[Any], axes: list[dict[int, Any]], seed: int = 1) -> tuple[Any, ...] | None:
    """``args`` with every dynamic axis moved to a second size (random values); None when none moves."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    out, moved, k = [], False, 0
    for a in args:
        if not isinstance(a, torch.Tensor):
            out.append(a)
            continue
        shape = list(a.shape)
        spatial = 0
        for axis in sorted(axes[k] if k < len(axes) else {}):
            new = second_size(shape[axis], axis, spatial, axes[k][axis])
            if axis > 0:
                spatial += 1
            moved |= new != shape[axis]
            shape[axis] = new
        k += 1
        if a.is_floating_point():
            out.append(torch.randn(*shape, generator=generator, dtype=a.dtype))
        else:
            out.append(a.new_zeros(shape) if list(a.shape) != shape else a.clone())
    return tuple(out) if moved else None


def fixed_bin_pools(model: Any) -> list[str]:
    """Modules that pool adaptively to a fixed number of bins other than 1 (their indices depend on the size)."""
    import torch

    adaptive = tuple(
        getattr(torch.nn, n)
        for n in (
            "AdaptiveAvgPool1d",
            "AdaptiveAvgPool2d",
            "AdaptiveAvgPool3d",
            "AdaptiveMaxPool1d",
            "AdaptiveMaxPool2d",
            "AdaptiveMaxPool3d",
        )
    )
    found = []
    for name, m in model.named_modules():
        if isinstance(m, adaptive):
            size = m.output_size
            sizes = size if isinstance(size, (tuple, list)) else (size,)
            if any(s not in (1, None) for s in sizes):
                found.append(f"{name} ({type(m).__name__}({size}))")
    return found


def verify(
    model: Any,
    proto: Any,
    args: Sequence[Any],
    names: Sequence[str],
    expected: Sequence[np.ndarray],
    dynamic_shapes: Any = None,
) -> VerifyReport:
    """Run ``proto`` in our session at the example's size and at a second size on every dynamic axis."""
    import torch

    from ..runtime.session import InferenceSession

    session = InferenceSession(proto)
    feed_names = [i.name for i in session.get_inputs()]
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    report = VerifyReport(feed_names, list(names))
    if len(feed_names) != len(tensors):
        report.skipped = f"the file has {len(feed_names)} inputs for {len(tensors)} example tensors"
        return report

    def run(inputs: Sequence[Any], where: str) -> list[Any]:
        feed = {n: t.numpy() for n, t in zip(feed_names, [a for a in inputs if isinstance(a, torch.Tensor)])}
        try:
            return session.run(None, feed)
        except Exception as exc:
            pools = fixed_bin_pools(model)
            why = (
                f"; adaptive pooling to fixed bins cannot be exported with a dynamic size: {', '.join(pools)} "
                "(export at a fixed size for each size you serve)"
                if pools
                else ""
            )
            raise ExportVerifyError(f"{where}: onnxruntime fails: {first_line(exc)}{why}") from None

    shapes = [list(t.shape) for t in tensors]
    diffs = compare_outputs(names, expected, run(args, f"at {shapes}"), f"verify at {shapes}")
    report.sizes.append((shapes, diffs))
    second = second_inputs(args, dynamic_axes(dynamic_shapes, len(tensors)))
    if second is not None:
        shapes2 = [list(a.shape) for a in second if isinstance(a, torch.Tensor)]
        names2, expected2 = eager_outputs(model, second)
        got = run(second, f"the exported file at the second size {shapes2}")
        try:
            diffs2 = compare_outputs(names2, expected2, got, f"verify at the second size {shapes2}")
        except ExportVerifyError as exc:
            pools = fixed_bin_pools(model)
            if pools:
                raise ExportVerifyError(
                    f"{exc}; adaptive pooling to fixed bins cannot be exported with a dynamic size: "
                    f"{', '.join(pools)} (export at a fixed size for each size you serve)"
                ) from None
            raise
        report.sizes.append((shapes2, diffs2))
    return report


__all__ = [
    "EXPORT_TOLERANCE",
    "ExportVerifyError",
    "VerifyReport",
    "eager_outputs",
    "flat_outputs",
    "input_names",
    "second_inputs",
    "verify",
]
