"""``inplace_abn.group`` of mapillary 1.x: distributed-group helpers (they need torch.distributed)."""

from __future__ import annotations

from typing import Any

import torch.nn as nn


def active_group(active: bool) -> Any:
    raise RuntimeError(
        "inplace_abn.active_group: the iabn_onnx stand-in has no distributed support; install mapillary's inplace_abn"
    )


def set_active_group(module: nn.Module, group: Any) -> None:
    """Set ``group`` on every InPlaceABNSync module of ``module``, as mapillary does."""
    for m in module.modules():
        if hasattr(m, "set_group"):
            m.set_group(group)
