"""Optional dependencies: a function that needs an extra says which, with the line that installs it."""

from __future__ import annotations

import importlib.util
import json
import shlex
from urllib.parse import unquote, urlparse

#: extra -> the modules it brings (pyproject.toml's optional dependencies)
EXTRAS = {"torch": ("torch", "onnxscript"), "paddle": ("paddle2onnx",)}
#: PyPI's torch for Linux is the CUDA build (several GB); PyTorch's own index has the CPU build
CPU_TORCH = "pip install torch --index-url https://download.pytorch.org/whl/cpu"


class MissingExtraError(ImportError):
    """A feature whose extra is not installed: the message names the feature, the missing module and the pip
    line that installs the extra (the CLI exits 2 with it)."""

    def __init__(self, feature: str, module: str, extra: str) -> None:
        super().__init__(f"{feature} needs {module}: {install_line(extra)}", name=module)
        self.extra = extra


def install_line(extra: str) -> str:
    """The pip command that adds ``extra`` to this install. An install from a folder (a checkout, editable or
    not) is named by that folder, as pip recorded it (PEP 610's ``direct_url.json``); any other by name."""
    from importlib import metadata

    line = f"pip install 'iabn-onnx[{extra}]'"
    recorded: object = {}
    # every copy of the metadata on the path: a checkout's own iabn_onnx.egg-info can come before the install's
    for dist in metadata.distributions(name="iabn-onnx"):
        try:
            recorded = json.loads(dist.read_text("direct_url.json") or "{}")
        except (ValueError, OSError):
            continue
        if recorded:
            break
    if not isinstance(recorded, dict):
        recorded = {}
    url = recorded.get("url", "")
    url = url if isinstance(url, str) else ""
    if url.startswith("file://") and isinstance(recorded.get("dir_info"), dict):
        editable = "-e " if recorded["dir_info"].get("editable") else ""
        line = f"pip install {editable}{shlex.quote(unquote(urlparse(url).path) + f'[{extra}]')}"
    if extra == "torch":
        line += f" (for the CPU build, first: {CPU_TORCH})"
    return line


def require(feature: str, extra: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise MissingExtraError naming ``feature``, the missing module and the pip line (``install_line``)
    unless every module of ``extra`` (or ``modules``) can be imported."""
    for module in modules or EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package missing, or a module set to None
            found = False
        if not found:
            raise MissingExtraError(feature, module, extra)


__all__ = ["CPU_TORCH", "EXTRAS", "MissingExtraError", "install_line", "require"]
