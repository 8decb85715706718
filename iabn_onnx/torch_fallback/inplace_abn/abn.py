"""``inplace_abn.abn`` of mapillary 1.x: ``ABN``, ``InPlaceABN``, ``InPlaceABNSync``.

Constructor signatures, attributes, parameters and buffers (``weight``, ``bias``,
``running_mean``, ``running_var``, ``num_batches_tracked``), the state-dict version-2 upgrade
and the momentum/training rules are mapillary 1.x's (``inplace_abn/abn.py``).
"""

from typing import Any, ClassVar, Optional

import torch
import torch.nn as nn
import torch.nn.functional as functional

from .functions import inplace_abn, inplace_abn_sync

# No ``from __future__ import annotations`` here, and typing's Optional: the modules compile with
# torch.jit.script (mapillary's ABN does; the TResNet repository scripts its converted network).


class ABN(nn.Module):
    """Activated Batch Normalization: ``F.batch_norm`` (scale ``weight``) then the activation
    (relu, leaky_relu, elu or identity)."""

    _version = 2
    running_mean: Optional[torch.Tensor]
    running_var: Optional[torch.Tensor]
    num_batches_tracked: Optional[torch.Tensor]
    __constants__: ClassVar[list[str]] = [
        "track_running_stats",
        "momentum",
        "eps",
        "num_features",
        "affine",
        "activation",
    ]

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        activation: str = "leaky_relu",
        activation_param: float = 0.01,
    ):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.activation = activation
        self.activation_param = activation_param
        if self.affine:
            self.weight = nn.Parameter(torch.empty(num_features))
            self.bias = nn.Parameter(torch.empty(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.register_parameter("running_mean", None)
            self.register_parameter("running_var", None)
            self.register_parameter("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.running_mean is not None and self.running_var is not None and self.num_batches_tracked is not None:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def _get_momentum_and_training(self) -> tuple[float, bool]:
        momentum = 0.0 if self.momentum is None else self.momentum
        tracked = self.num_batches_tracked
        if self.training and self.track_running_stats and tracked is not None:
            tracked.add_(1)  # in place, as mapillary's ``+= 1`` on the buffer
            momentum = 1.0 / float(tracked.item()) if self.momentum is None else momentum
        training = True if self.training else (self.running_mean is None and self.running_var is None)
        return momentum, training

    def _get_running_stats(self) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        keep = not self.training or self.track_running_stats
        return (self.running_mean if keep else None), (self.running_var if keep else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        momentum, training = self._get_momentum_and_training()
        running_mean, running_var = self._get_running_stats()
        x = functional.batch_norm(x, running_mean, running_var, self.weight, self.bias, training, momentum, self.eps)
        if self.activation == "relu":
            return functional.relu(x)
        if self.activation == "leaky_relu":
            return functional.leaky_relu(x, negative_slope=self.activation_param)
        if self.activation == "elu":
            return functional.elu(x, alpha=self.activation_param)
        if self.activation == "identity":
            return x
        raise RuntimeError("Unknown activation function " + self.activation)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):  # type: ignore[no-untyped-def]
        version = local_metadata.get("version", None)
        if (version is None or version < 2) and self.track_running_stats:
            # version 2 added num_batches_tracked, with a default of 0 (as mapillary does)
            key = prefix + "num_batches_tracked"
            if key not in state_dict:
                state_dict[key] = torch.tensor(0, dtype=torch.long)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        rep = "{num_features}, eps={eps}, momentum={momentum}, affine={affine}, activation={activation}"
        if self.activation in ["leaky_relu", "elu"]:
            rep += "[{activation_param}]"
        return rep.format(**self.__dict__)


class InPlaceABN(ABN):
    """InPlace Activated Batch Normalization: scale ``|weight| + eps``; leaky_relu, elu or identity."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        activation: str = "leaky_relu",
        activation_param: float = 0.01,
    ):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, activation, activation_param)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        momentum, training = self._get_momentum_and_training()
        running_mean, running_var = self._get_running_stats()
        return inplace_abn(x, self.weight, self.bias, running_mean, running_var, training, momentum, self.eps,
                           self.activation, self.activation_param)  # fmt: skip


class InPlaceABNSync(ABN):
    """``InPlaceABN`` whose batch statistics are synchronized across processes (this stand-in
    trains only in a single process)."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        activation: str = "leaky_relu",
        activation_param: float = 0.01,
        group: Any = None,
    ):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, activation, activation_param)
        self.group = group

    def set_group(self, group: Any) -> None:
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        momentum, training = self._get_momentum_and_training()
        running_mean, running_var = self._get_running_stats()
        if torch.jit.is_scripting():  # one process: what inplace_abn_sync computes without a process group
            return inplace_abn(x, self.weight, self.bias, running_mean, running_var, training, momentum, self.eps,
                               self.activation, self.activation_param)  # fmt: skip
        return inplace_abn_sync(x, self.weight, self.bias, running_mean, running_var, training, momentum, self.eps,
                                self.activation, self.activation_param, self.group)  # fmt: skip


__all__ = ["ABN", "InPlaceABN", "InPlaceABNSync"]
