"""Run a function once a module has been imported, without importing it.

``import iabn_onnx`` registers the operator's schema with onnx, but importing onnx costs
0.25-1 s (its ml_dtypes import), which ``iabn-onnx --help`` should not pay. So the schema
is registered right away when onnx is already loaded, and otherwise the moment onnx's own
import finishes: a one-shot meta-path finder wraps onnx's loader.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any


class _ThenLoader(importlib.abc.Loader):
    """The module's own loader, then ``then()``; every other attribute is the original's."""

    def __init__(self, loader: Any, then: Callable[[], None]) -> None:
        self._loader, self._then = loader, then

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        self._then()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _AfterImport(importlib.abc.MetaPathFinder):
    def __init__(self, name: str, then: Callable[[], None]) -> None:
        self.name, self.then = name, then

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)  # one shot; the other finders locate the module
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenLoader(spec.loader, self.then)
        return spec


def after_import(name: str, then: Callable[[], None]) -> None:
    """Call ``then()`` now if ``name`` is imported, else right after its import completes."""
    module = sys.modules.get(name)
    if module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False):
        then()
        return
    sys.meta_path.insert(0, _AfterImport(name, then))
