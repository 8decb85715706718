"""2018 ``InPlaceABNSync`` modules built around ``devices`` and master/worker queues, run on one CPU.

The April-2018 copy (CCNet-style ``libs/bn.py``) sets, at construction,
``self.devices = devices if devices else list(range(torch.cuda.device_count()))`` with a master queue
and one worker queue per extra device, and its ``forward`` picks master or worker by
``x.get_device() == self.devices[0]``. Without CUDA the list is empty and that line raises
``IndexError``.

On one GPU such a module is its own master with no workers. While the fallback is installed, every
class of that shape (an ``__init__`` taking ``devices``, a ``forward`` reading ``master_queue`` and
``worker_queues``) gets that state after its own ``__init__`` when CUDA is unavailable:
``devices = [-1]`` (a CPU tensor's ``get_device()``), no worker ids, a master queue of size 0 and no
worker queues. Its eval forward then runs unchanged; nothing of the user's copy is edited.
"""

from __future__ import annotations

import functools
import queue
from typing import Any

import torch

CPU_DEVICE = -1  # torch.Tensor.get_device() of a CPU tensor
_QUEUE_NAMES = frozenset({"master_queue", "worker_queues"})


def is_devices_and_queues(cls: type) -> bool:
    """Whether ``cls`` itself defines the April-2018 ``devices`` + queues ``__init__`` and ``forward``."""
    init, forward = cls.__dict__.get("__init__"), cls.__dict__.get("forward")
    code, forward_code = getattr(init, "__code__", None), getattr(forward, "__code__", None)
    if code is None or forward_code is None:
        return False
    params = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    return "devices" in params and _QUEUE_NAMES <= set(forward_code.co_names)


def single_device_init(init: Any) -> Any:
    """``init``, then the state of a module on a single device when CUDA is unavailable."""

    @functools.wraps(init)
    def __init__(self: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if not torch.cuda.is_available():
            self.devices = [CPU_DEVICE]
            self.worker_ids = []
            self.master_queue = queue.Queue(0)
            self.worker_queues = []

    __init__.__iabn_single_device__ = True  # type: ignore[attr-defined]
    return __init__


def _adapt_subclass(cls: type, **kwargs: Any) -> None:
    super(torch.nn.Module, cls).__init_subclass__(**kwargs)
    if is_devices_and_queues(cls) and not getattr(cls.__init__, "__iabn_single_device__", False):
        cls.__init__ = single_device_init(cls.__init__)


def install() -> None:
    """Adapt every ``torch.nn.Module`` subclass defined from now on (see the module doc)."""
    torch.nn.Module.__init_subclass__ = classmethod(_adapt_subclass)  # type: ignore[assignment]


def uninstall() -> None:
    """Stop adapting new subclasses; classes already adapted keep their single-device ``__init__``."""
    if "__init_subclass__" in vars(torch.nn.Module):
        del torch.nn.Module.__init_subclass__
