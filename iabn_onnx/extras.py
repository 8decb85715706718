"""Optional dependencies: a function that needs an extra says which, with the line that installs it."""

from __future__ import annotations

import importlib.util

#: extra -> the modules it brings (pyproject.toml's optional dependencies)
EXTRAS = {"torch": ("torch", "onnxscript"), "paddle": ("paddle2onnx",)}


def require(feature: str, extra: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise ImportError naming ``feature``, the missing module and ``pip install 'iabn-onnx[extra]'``
    unless every module of ``extra`` (or ``modules``) can be imported."""
    for module in modules or EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package missing, or a module set to None
            found = False
        if not found:
            raise ImportError(f"{feature} needs {module}: pip install 'iabn-onnx[{extra}]'", name=module)


__all__ = ["EXTRAS", "require"]
