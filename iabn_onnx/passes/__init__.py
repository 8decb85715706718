"""Graph passes over InplaceABN nodes: ``fold`` and ``convert``, and the rules they apply (one per module)."""

from __future__ import annotations

import importlib
import types


def __getattr__(name: str) -> types.ModuleType:
    # ``iabn_onnx.passes.fold`` works after a bare ``import iabn_onnx``, which loads no pass eagerly
    try:
        module = importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = module
    return module
