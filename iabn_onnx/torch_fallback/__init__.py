"""Run InplaceABN models on a machine where the InplaceABN extension cannot be built.

``install_torch_fallback()``, called before the model's code is imported, makes two things
work in plain PyTorch:

* ``import inplace_abn`` (mapillary 1.x's package) where the real package is not importable:
  a stand-in with the same classes and state-dict keys (``torch_fallback/inplace_abn``);
* ``torch.utils.cpp_extension.load(...)`` of InplaceABN's own C++/CUDA sources (every source
  named ``inplace_abn*.cpp/.cc/.cu``), as 2018-era vendored copies call at import: it returns a
  pure-PyTorch module with that extension's functions (``backend_2018``) instead of compiling.
  Every other ``load`` goes to torch untouched;
* the April-2018 ``InPlaceABNSync`` (``devices`` and master/worker queues), whose forward needs a
  CUDA device to call its master: classes of that shape defined from now on run as on one device
  (``single_device``).

A real, importable ``inplace_abn`` is never shadowed: the stand-in answers only when no other
finder finds the package, or when what they find is mapillary's source tree without its
compiled ``_backend``. ``uninstall_torch_fallback()`` undoes both.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

PACKAGE = "inplace_abn"
_STAND_IN = Path(__file__).with_name("inplace_abn")
_SOURCE_SUFFIXES = (".cpp", ".cc", ".cu")
_lock = threading.Lock()
_state: dict[str, Any] = {}


def is_backend_sources(sources: Any) -> bool:
    """True when every source file is InplaceABN's own (``inplace_abn*.cpp`` / ``.cc`` / ``.cu``)."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    try:
        names = [os.path.basename(os.fspath(s)) for s in sources]
    except TypeError:
        return False
    return bool(names) and all(n.startswith(PACKAGE) and n.endswith(_SOURCE_SUFFIXES) for n in names)


def _lacks_backend(spec: importlib.machinery.ModuleSpec) -> bool:
    """mapillary's source tree (``functions.py`` importing ``_backend``) without the built extension."""
    for location in spec.submodule_search_locations or ():
        folder = Path(location)
        functions = folder / "functions.py"
        try:
            if "import _backend" not in functions.read_text(errors="replace"):
                continue
        except OSError:
            continue
        built = any(
            p.name.startswith("_backend") and p.name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
            for p in folder.iterdir()
        )
        return not built
    return False


class _StandInFinder(importlib.abc.MetaPathFinder):
    """Serves the stand-in ``inplace_abn`` when nothing else provides an importable one."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != PACKAGE:
            return None  # submodules are found through the package's __path__
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            other = finder.find_spec(fullname, path, target)
            if other is not None:
                return None if not _lacks_backend(other) else self._spec()
        return self._spec()

    @staticmethod
    def _spec() -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_file_location(
            PACKAGE, _STAND_IN / "__init__.py", submodule_search_locations=[str(_STAND_IN)]
        )


def _load_backend(original: Any) -> Any:
    from . import backend_2018

    def load(name: str, sources: Sequence[Any] | Any, *args: Any, **kwargs: Any) -> Any:
        if is_backend_sources(sources):
            return backend_2018
        return original(name, sources, *args, **kwargs)

    load.__wrapped__ = original  # type: ignore[attr-defined]
    load.__doc__ = original.__doc__
    return load


def _import_cpp_extension() -> Any:
    """``torch.utils.cpp_extension``, without the one line a CUDA build of torch logs on importing it where
    there is no CUDA ("No CUDA runtime is found, using CUDA_HOME=..."): the fallback is for that machine."""
    import logging

    def no_cuda_note(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")

    logger = logging.getLogger("torch.utils.cpp_extension")
    logger.addFilter(no_cuda_note)
    try:
        import torch.utils.cpp_extension as cpp_extension
    finally:
        logger.removeFilter(no_cuda_note)
    return cpp_extension


def install_torch_fallback() -> None:
    """Make InplaceABN model code importable and runnable in plain PyTorch (see the module doc).

    Call it before the model's code is imported; calling it again does nothing.
    """
    from ..extras import require

    require("install_torch_fallback", "torch", ("torch",))
    with _lock:
        if _state:
            return
        cpp_extension = _import_cpp_extension()

        from . import single_device

        finder = _StandInFinder()
        sys.meta_path.insert(0, finder)
        original = cpp_extension.load
        cpp_extension.load = _load_backend(original)
        single_device.install()
        _state.update(finder=finder, load=original, patched=cpp_extension.load)


def uninstall_torch_fallback() -> None:
    """Undo ``install_torch_fallback``: the finder and the ``load`` wrapper go, and so do the
    stand-in modules already imported (code that holds them keeps its references)."""
    with _lock:
        if not _state:
            return
        import torch.utils.cpp_extension as cpp_extension

        if _state["finder"] in sys.meta_path:
            sys.meta_path.remove(_state["finder"])
        if cpp_extension.load is _state["patched"]:
            cpp_extension.load = _state["load"]
        from . import single_device

        single_device.uninstall()
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            if is_stand_in(sys.modules[name]):
                del sys.modules[name]
        _state.clear()


def is_stand_in(module: ModuleType) -> bool:
    """Whether ``module`` is (part of) the stand-in package rather than mapillary's."""
    origin = getattr(module, "__file__", None)
    return origin is not None and Path(origin).resolve().is_relative_to(_STAND_IN.resolve())


def torch_fallback_installed() -> bool:
    return bool(_state)


__all__ = [
    "install_torch_fallback",
    "is_backend_sources",
    "is_stand_in",
    "torch_fallback_installed",
    "uninstall_torch_fallback",
]
