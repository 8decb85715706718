"""The start-up cache: what a session made of a model file, kept for the next process.

Lowering a file needs onnx (about 0.15 s to import and set up here) and the lowering itself
(tens of ms); onnxruntime alone needs neither. So a session given a path keeps, per file, the
lowered outline it handed onnxruntime and what it reports (routes, kernel nodes), and a later
process with the same file, options and code reuses them without importing onnx.

Key: SHA-256 of the file's outline bytes (its graph and small tensors, each big tensor as an
offset and length into the file: ``outline.py``), the lowering options, and a fingerprint of
the code that lowers (this package's sources and onnx's version file, by size and mtime).
An entry also holds the SHA-256 of each stretch of the file the lowering read (the big
tensors it took values from, like a wide layer's scale); a hit re-reads and compares them, so
a file rewritten with the same layout but other values misses. Tensors the lowering never read
are read by onnxruntime from the session's copy of the file, as on a miss.

Where: ``$IABN_ONNX_CACHE_DIR``, else ``$XDG_CACHE_HOME/iabn_onnx``, else
``~/.cache/iabn_onnx``; ``IABN_ONNX_CACHE=0`` (or ``off``) turns it off. At most
``MAX_ENTRIES`` entries are kept (the least recently used go first). A cache that cannot be
read or written is skipped: the session lowers as it would without one.

This module imports neither onnx nor numpy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = 1
MAX_ENTRIES = 64
MODEL_FILE = "model.onnx"
META_FILE = "meta.json"


def cache_dir() -> Path | None:
    """The cache folder, or None when the cache is off."""
    if os.environ.get("IABN_ONNX_CACHE", "").strip().lower() in ("0", "off", "false", "no"):
        return None
    explicit = os.environ.get("IABN_ONNX_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "iabn_onnx"


_fingerprint: str | None = None


def code_fingerprint() -> str:
    """This package's sources and onnx's version file, by path, size and mtime (the lowering's code)."""
    global _fingerprint
    if _fingerprint is None:
        import importlib.util

        digest = hashlib.sha256(f"format {FORMAT}".encode())
        files = sorted(_sources(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        spec = importlib.util.find_spec("onnx")
        if spec is not None and spec.origin:
            files.append(os.path.join(os.path.dirname(spec.origin), "version.py"))
        for path in files:
            try:
                st = os.stat(path)
            except OSError:
                continue
            digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        _fingerprint = digest.hexdigest()
    return _fingerprint


def _sources(folder: str) -> list[str]:
    """The ``.py`` files under ``folder`` (os.scandir: ``Path.rglob`` took a few ms of every start-up)."""
    found: list[str] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        found += _sources(entry.path)
                elif entry.name.endswith(".py"):
                    found.append(entry.path)
    except OSError:  # an unreadable folder leaves its files out, as an unreadable file is left out below
        pass
    return found


def key(outline: bytes, options: dict[str, Any]) -> str:
    digest = hashlib.sha256(outline)
    digest.update(json.dumps(options, sort_keys=True).encode())
    digest.update(code_fingerprint().encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Entry:
    """A cached lowering: the model onnxruntime gets (None: the file as it is) and the session's facts."""

    model: bytes | None
    meta: dict[str, Any]


def _digest(path: Path, offset: int, length: int) -> str:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return hashlib.sha256(fh.read(length)).hexdigest()


def read_digests(path: Path, stretches: list[tuple[int, int]]) -> list[list[Any]]:
    """(offset, length, SHA-256) of each stretch of the file."""
    return [[offset, length, _digest(path, offset, length)] for offset, length in sorted(set(stretches))]


def lookup(k: str) -> Entry | None:
    """The entry for key ``k``, if there is a whole one; ``unchanged`` then says whether it still holds."""
    folder = cache_dir()
    if folder is None:
        return None
    entry = folder / k
    try:
        meta = json.loads((entry / META_FILE).read_text())
        if meta.get("format") != FORMAT:
            return None
        model = None
        if not meta["as_is"]:
            model = (entry / MODEL_FILE).read_bytes()
            if hashlib.sha256(model).hexdigest() != meta["model_sha256"]:
                return None
        os.utime(entry)  # recently used
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Entry(model, meta)


def unchanged(entry: Entry, source: Path) -> bool:
    """Whether the stretches of ``source`` the lowering read still hold what they held."""
    try:
        return all(_digest(source, offset, length) == sha for offset, length, sha in entry.meta.get("reads", []))
    except (OSError, ValueError, TypeError):
        return False


def store(k: str, model_path: str | None, meta: dict[str, Any]) -> None:
    """Keep an entry (the lowered model file, or None for a file onnxruntime takes as it is), in
    place of any entry under ``k`` (a session stores only after a miss: that one did not serve);
    never raises."""
    folder = cache_dir()
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".new_", dir=folder))
        try:
            extra: dict[str, Any] = {"format": FORMAT, "as_is": model_path is None}
            if model_path is not None:
                shutil.copyfile(model_path, work / MODEL_FILE)
                extra["model_sha256"] = hashlib.sha256((work / MODEL_FILE).read_bytes()).hexdigest()
            (work / META_FILE).write_text(json.dumps({**meta, **extra}))
            target = folder / k
            if target.exists():  # moved aside first: a directory is replaced only when empty
                old = Path(tempfile.mkdtemp(prefix=".old_", dir=folder))
                os.replace(target, old / k)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(work, target)  # atomic: a reader sees a whole entry or none
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _prune(folder)
    except OSError:
        pass


def _prune(folder: Path) -> None:
    entries = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(entries) <= MAX_ENTRIES:
        return
    entries.sort(key=lambda p: p.stat().st_mtime)
    for old in entries[: len(entries) - MAX_ENTRIES]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in [*folder.glob(".new_*"), *folder.glob(".old_*")]:  # left by a process that died meanwhile
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
