"""Stand-in for mapillary's ``inplace_abn`` 1.x package, in plain PyTorch (no compiled backend).

Served as ``inplace_abn`` by ``iabn_onnx.install_torch_fallback()`` when the real package is
not importable. Same public API, constructor signatures, parameters, buffers and
``state_dict`` keys as mapillary 1.x, so its checkpoints load strictly; forward computes
what the published CPU code computes (see ``iabn_onnx.torch_fallback.arith``).
"""

from .abn import ABN, InPlaceABN, InPlaceABNSync
from .functions import inplace_abn, inplace_abn_sync
from .group import active_group, set_active_group

__version__ = "1.1.0"
#: marks this package as iabn_onnx's stand-in, not mapillary's build
IABN_ONNX_FALLBACK = True

__all__ = ["ABN", "InPlaceABN", "InPlaceABNSync", "active_group", "inplace_abn", "inplace_abn_sync", "set_active_group"]
