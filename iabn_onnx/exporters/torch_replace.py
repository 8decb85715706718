"""InplaceABN modules -> standard ``nn.BatchNorm*d`` + activation, for tools that want only
standard modules (TorchScript, ``torch.export``, a plain ``torch.onnx.export``, serving).

Which modules, and what each computes, comes from ``torch_modules`` (every generation that
``export_torch`` recognizes, timm's ``InplaceAbn``, and classes described with ``modules=``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .torch_modules import Describe, InplaceABNParams, TorchExportError, module_params

_BATCHNORMS = {2: "BatchNorm1d", 3: "BatchNorm1d", 4: "BatchNorm2d", 5: "BatchNorm3d"}


def _params(where: str, module: Any, modules: Mapping[type | str, Describe]) -> InplaceABNParams | None:
    params = module_params(where, module, modules)
    if isinstance(params, str):
        raise TorchExportError(f"{where}: named like InplaceABN but not recognized: {params}")
    return params


def _input_ranks(model: Any, targets: dict[str, Any], example_inputs: tuple[Any, ...]) -> dict[str, int]:
    """The rank of each target module's input, from one eval forward of the original (restored after)."""
    import torch

    ranks: dict[str, int] = {}

    def recorder(path: str) -> Any:
        def hook(_module: Any, args: tuple[Any, ...]) -> None:  # returns None: the inputs stay as they are
            ranks.setdefault(path, args[0].dim())

        return hook

    hooks = [module.register_forward_pre_hook(recorder(path)) for path, module in targets.items()]
    saved = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for hook in hooks:
            hook.remove()
        for m, was_training in saved:
            m.training = was_training
    return ranks


def _replacement(params: InplaceABNParams, rank: int, where: str) -> Any:
    import torch
    from torch import nn

    from .torch_modules import IDENTITY_NAMES

    activation = params.activation
    if activation in IDENTITY_NAMES:
        act: nn.Module = nn.Identity()
    elif activation == "leaky_relu":
        act = nn.LeakyReLU(float(params.activation_param))
    elif activation == "elu":
        act = nn.ELU(float(params.activation_param))
    elif activation == "relu" and not params.abs_scale:
        act = nn.ReLU()
    else:
        raise TorchExportError(f"{where}: unsupported activation {activation!r}")
    like = next(
        t
        for t in (params.weight, params.running_mean, params.bias, params.running_var, torch.zeros(0))
        if t is not None
    )
    channels = next(
        len(t) for t in (params.weight, params.running_mean, params.bias, params.running_var) if t is not None
    )
    has_stats = params.running_mean is not None and params.running_var is not None
    affine = params.weight is not None or params.bias is not None
    cls = getattr(nn, _BATCHNORMS.get(rank, "BatchNorm2d"))
    bn = cls(
        channels,
        eps=float(params.eps),
        momentum=params.momentum,
        affine=affine,
        track_running_stats=has_stats,
        device=like.device,
        dtype=like.dtype,
    )
    with torch.no_grad():
        if affine:
            if params.weight is not None:
                scale = params.weight.abs() + params.eps if params.abs_scale else params.weight
                bn.weight.copy_(scale)
            if params.bias is not None:
                bn.bias.copy_(params.bias)
        if has_stats:
            bn.running_mean.copy_(params.running_mean)
            bn.running_var.copy_(params.running_var)
            if params.num_batches_tracked is not None:
                bn.num_batches_tracked.copy_(params.num_batches_tracked)
    return nn.Sequential(bn, act)


def replace_with_batchnorm(
    model: Any,
    example_inputs: tuple[Any, ...] | Any = None,
    *,
    modules: Mapping[type | str, Describe] | None = None,
) -> Any:
    """A copy of ``model`` in which every InplaceABN-family module is ``nn.Sequential(bn, act)``.

    ``bn`` is ``nn.BatchNorm1d/2d/3d`` holding the *effective* scale (``|w| + eps`` for
    ``InPlaceABN``/``InPlaceABNSync``/timm's ``InplaceAbn``, ``w`` for ``ABN``), the bias, the
    running statistics, ``eps`` and PyTorch's ``momentum``; ``act`` is ``nn.LeakyReLU``,
    ``nn.ELU``, ``nn.ReLU`` (``ABN`` only) or ``nn.Identity``. The copy's eval output equals the
    original's; ``model`` is not touched. ``modules`` describes other classes, as in ``export_torch``.

    Which BatchNorm class: with ``example_inputs`` the original runs once in eval mode to see
    each module's input rank (2-3: BatchNorm1d, 4: BatchNorm2d, 5: BatchNorm3d); without
    them every replacement is BatchNorm2d (N x C x H x W inputs).

    State-dict keys of a replaced module gain ``.0`` (its BatchNorm) in the copy.

    Training the copy differs from training the original: the copy learns the effective scale
    directly (it may turn negative, and its gradient is not multiplied by ``sign(w)``), does
    not work in place, and an ``InPlaceABNSync`` becomes an unsynchronized BatchNorm. Running
    statistics update the same way (PyTorch momentum, unbiased variance).
    """
    from ..extras import require

    require("replace_with_batchnorm", "torch", ("torch",))
    if example_inputs is not None and not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    modules = modules or {}
    targets: dict[str, Any] = {}
    plans: dict[int, InplaceABNParams] = {}
    for path, module in model.named_modules(remove_duplicate=False):  # a shared module: every place it sits
        if any(path.startswith(t + ".") for t in targets if t):
            continue  # inside a module that is replaced whole
        if id(module) not in plans:
            params = _params(f"{path or '<root>'} ({type(module).__name__})", module, modules)
            if params is None:
                continue
            plans[id(module)] = params
        targets[path] = module
    ranks = _input_ranks(model, targets, example_inputs) if example_inputs is not None and targets else {}
    made: dict[int, Any] = {}
    replacements = {}
    for path, m in targets.items():
        if id(m) not in made:
            new = _replacement(plans[id(m)], ranks.get(path, 4), f"{path or '<root>'} ({type(m).__name__})")
            made[id(m)] = new.train(m.training)
        replacements[path] = made[id(m)]
    if "" in replacements:
        return replacements[""]
    # the copy must not share the replaced modules' tensors, and must not copy them needlessly either
    memo = {id(m): None for m in targets.values()}
    copied = copy.deepcopy(model, memo)
    for path, new in replacements.items():
        parent_path, _, name = path.rpartition(".")
        parent = copied.get_submodule(parent_path) if parent_path else copied
        setattr(parent, name, new)
    return copied


__all__ = ["replace_with_batchnorm"]
