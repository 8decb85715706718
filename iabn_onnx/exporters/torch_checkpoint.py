"""A PyTorch checkpoint read safely and fitted strictly to a model: what ``iabn-onnx export-torch
--checkpoint`` does, for Python users too.

* Read with ``torch.load(weights_only=True)`` unless the caller trusts the file (full unpickling can run
  code from it). Before that, the file's kind is told from its first bytes, so a text file, a truncated
  archive or a plain pickle each get their own fault rather than the unpickler's.
* The state dict is the one under ``key`` (dotted), else ``state_dict`` or ``model`` when present, else the
  checkpoint itself; DataParallel's ``module.`` prefix is dropped.
* Loading is strict: missing or unexpected keys and shape mismatches are refused, naming the first
  three and counting the rest.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from typing import Any

from .torch_verify import first_line

ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format is a zip archive
PICKLE_PROTOCOL = 0x80  # the legacy format (and any pickle of protocol ≥ 2) starts with PROTO


class TorchCheckpointError(ValueError):
    """A checkpoint that cannot be read, holds no state dict, or does not fit the model; names the file."""


def _few(items: list[str], shown: int = 3) -> str:
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def read_checkpoint(path: str | os.PathLike[str], trust: bool = False) -> Any:
    """The object ``torch.save`` wrote to ``path``; TorchCheckpointError naming the fault."""
    import torch

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise TorchCheckpointError(f"checkpoint {path} is empty")
    if head == ZIP_MAGIC:
        if not zipfile.is_zipfile(path):
            raise TorchCheckpointError(f"checkpoint {path} is truncated or damaged (an incomplete zip archive)")
    elif head[0] != PICKLE_PROTOCOL:
        raise TorchCheckpointError(f"{path} is not a torch.save file (it starts with {head!r})")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        if not trust:
            why = re.search(r"(?:unsupported|Unsupported global:) (GLOBAL [\w.]+)", str(exc))
            raise TorchCheckpointError(
                f"refused checkpoint {path}: reading it needs full unpickling, which can run code from the file"
                f"{f' (it holds {why.group(1)})' if why else ''}; trust it (--trust-checkpoint) only if you "
                "trust its source"
            ) from None
        raise TorchCheckpointError(f"checkpoint {path} is truncated or damaged ({first_line(exc)})") from None
    except (EOFError, OSError, RuntimeError, ValueError) as exc:
        if isinstance(exc, RuntimeError) and "magic number" in str(exc):
            raise TorchCheckpointError(f"{path} is a pickle but not a torch.save file") from None
        raise TorchCheckpointError(f"checkpoint {path} is truncated or damaged ({first_line(exc)})") from None


def state_dict_of(checkpoint: Any, key: str | None = None, path: str = "the checkpoint") -> dict[str, Any]:
    """The state dict a checkpoint holds (see the module doc)."""
    import torch

    found: Any = checkpoint
    if key is not None:
        for part in key.split("."):
            if not isinstance(found, dict) or part not in found:
                keys = sorted(map(str, found))[:10] if isinstance(found, dict) else type(found).__name__
                raise TorchCheckpointError(f"checkpoint {path} has no key {key!r} (it holds {keys})")
            found = found[part]
    elif isinstance(checkpoint, dict):
        for candidate in ("state_dict", "model"):
            if candidate in checkpoint and isinstance(checkpoint[candidate], (dict, torch.nn.Module)):
                found = checkpoint[candidate]
                break
    if isinstance(found, torch.nn.Module):
        found = found.state_dict()
    if not isinstance(found, dict) or not all(isinstance(v, torch.Tensor) for v in found.values()):
        raise TorchCheckpointError(
            f"checkpoint {path}: no state dict of tensors found" + ("" if key else " (name where it is with a key)")
        )
    names = list(found)
    if names and all(n.startswith("module.") for n in names):  # saved from DataParallel
        found = {n[len("module.") :]: v for n, v in found.items()}
    return found


def load_strict(model: Any, state: dict[str, Any], path: str = "the checkpoint") -> None:
    """``model.load_state_dict(state)``, refusing any misfit with its first three instances and a count."""
    own = model.state_dict()
    mismatched = [
        f"{k}: {list(v.shape)} in the file, {list(own[k].shape)} in the model"
        for k, v in state.items()
        if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)
    ]
    if mismatched:
        raise TorchCheckpointError(
            f"checkpoint {path} does not fit the model: {len(mismatched)} shape mismatch(es): {_few(mismatched)}"
        )
    result = model.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        parts = [f"{len(missing)} missing key(s): {_few(missing)}"] if missing else []
        parts += [f"{len(unexpected)} unexpected key(s): {_few(unexpected)}"] if unexpected else []
        raise TorchCheckpointError(f"checkpoint {path} does not fit the model (strict load): {'; '.join(parts)}")


def load_checkpoint(model: Any, path: str | os.PathLike[str], *, key: str | None = None, trust: bool = False) -> Any:
    """Read ``path`` safely, take its state dict (under ``key``) and load it strictly into ``model``;
    return ``model``. Raises FileNotFoundError or TorchCheckpointError naming the file and the fault."""
    path = os.fspath(path)
    load_strict(model, state_dict_of(read_checkpoint(path, trust), key, path), path)
    return model


__all__ = ["TorchCheckpointError", "load_checkpoint", "load_strict", "read_checkpoint", "state_dict_of"]
