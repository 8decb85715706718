"""Intercepting the functional InplaceABN form during an export.

A user's own module may call ``inplace_abn(x, weight, bias, running_mean, running_var,
training, momentum, eps, activation, activation_param)`` (mapillary >= 1.0) or the
pre-1.0 ``inplace_abn(..., activation, slope)``, or ``inplace_abn_sync`` with the same
leading arguments. Their bodies call a C++/CUDA extension, so the export must never run
them: for the export only, the name is rebound, wherever the model's code looks it up,
to a function that emits one InplaceABN node.

Where: the namespaces of the modules that define the model's classes, and the modules
those namespaces hold (``from inplace_abn import functions``). What: by default the
callables named ``inplace_abn`` / ``inplace_abn_sync`` there; or exactly the callables
the caller passes. How each is read (its ``FunctionalForm``) comes from its signature
(a last parameter named ``slope`` means pre-1.0) and its source (``return x,
running_mean, running_var`` means it returns the statistics too), unless given.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .torch_modules import InplaceABNParams, plan_node

FUNCTION_NAMES = ("inplace_abn", "inplace_abn_sync")
#: the leading parameters both generations share, in order (the last is the slope before 1.0)
PARAMETERS = (
    "x",
    "weight",
    "bias",
    "running_mean",
    "running_var",
    "training",
    "momentum",
    "eps",
    "activation",
    "activation_param",
)
DEFAULTS = {"training": True, "momentum": 0.1, "eps": 1e-5, "activation": "leaky_relu", "activation_param": 0.01}
_RETURNS_STATS = re.compile(r"^\s*return\s+\w+\s*,\s*running_mean\s*,\s*running_var\b", re.MULTILINE)


@dataclass(frozen=True)
class FunctionalForm:
    """How to read one functional InplaceABN callable.

    ``slope``: pre-1.0, whose last argument is the leaky_relu slope and whose elu has a
    fixed alpha of 1.0. ``returns_stats``: it returns ``(y, running_mean, running_var)``.
    """

    slope: bool = False
    returns_stats: bool = False


def _implementation(fn: Callable[..., Any]) -> tuple[Callable[..., Any], bool]:
    """The function whose signature and source describe fn, and whether it takes ``ctx`` first.

    ``SomeFunction.apply`` (a torch.autograd.Function) is described by its ``forward``.
    """
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, type) and getattr(fn, "__name__", "") == "apply" and hasattr(owner, "forward"):
        return owner.forward, True
    return fn, False


def read_form(fn: Callable[..., Any]) -> FunctionalForm:
    target, has_ctx = _implementation(fn)
    try:
        names = list(inspect.signature(target).parameters)[1 if has_ctx else 0 :]
    except (TypeError, ValueError):
        names = []
    try:
        source = inspect.getsource(target)
    except (OSError, TypeError):
        source = ""
    return FunctionalForm(slope="slope" in names, returns_stats=bool(_RETURNS_STATS.search(source)))


def _replacement(name: str, form: FunctionalForm, apply_node: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        bound = dict(DEFAULTS)
        bound.update(zip(PARAMETERS, args))  # further positional arguments (group, ...) do not matter here
        for key, value in kwargs.items():
            key = "activation_param" if key == "slope" else key
            if key in PARAMETERS:
                bound[key] = value
        missing = [p for p in PARAMETERS[:5] if p not in bound]
        if missing:
            raise TypeError(f"{name}() missing argument {missing[0]!r}")
        param = bound["activation_param"]
        if form.slope and bound["activation"] == "elu":
            param = 1.0
        params = InplaceABNParams(
            weight=bound["weight"],
            bias=bound["bias"],
            running_mean=bound["running_mean"],
            running_var=bound["running_var"],
            eps=bound["eps"],
            activation=bound["activation"],
            activation_param=param,
            momentum=bound["momentum"],
        )
        y = apply_node(bound["x"], params, plan_node(params, bool(bound["training"]), f"call of {name}()"))
        return (y, bound["running_mean"], bound["running_var"]) if form.returns_stats else y

    return call


def _namespaces(model: Any) -> list[dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    for module in model.modules():
        defining = sys.modules.get(type(module).__module__)
        if defining is None:
            continue
        found.setdefault(id(defining), vars(defining))
        for value in list(vars(defining).values()):
            if isinstance(value, ModuleType):
                found.setdefault(id(value), vars(value))
    return list(found.values())


def _same(a: Any, b: Any) -> bool:
    try:
        return a is b or bool(a == b)
    except Exception:
        return False


@contextlib.contextmanager
def patched_functions(
    model: Any,
    functions: Iterable[Callable[..., Any]] | Mapping[Callable[..., Any], FunctionalForm] | None,
    apply_node: Callable[..., Any],
) -> Iterator[int]:
    """Rebind functional InplaceABN callables for the duration; always restore. Yields how many."""
    namespaces = _namespaces(model)
    if functions is None:
        targets = {}
        for ns in namespaces:
            for name in FUNCTION_NAMES:
                fn = ns.get(name)
                if callable(fn) and not getattr(fn, "_iabn_replacement", False):
                    targets.setdefault(id(fn), (fn, read_form(fn)))
        chosen = list(targets.values())
    elif isinstance(functions, Mapping):
        chosen = list(functions.items())
    else:
        chosen = [(fn, read_form(fn)) for fn in functions]
    saved: list[tuple[dict[str, Any], str, Any]] = []
    try:
        for fn, form in chosen:
            name = getattr(fn, "__name__", "inplace_abn")
            name = getattr(getattr(fn, "__self__", None), "__name__", name) if name == "apply" else name
            replacement = _replacement(name, form, apply_node)
            replacement._iabn_replacement = True  # type: ignore[attr-defined]
            for ns in namespaces:
                for key, value in list(ns.items()):
                    if callable(value) and _same(value, fn):
                        saved.append((ns, key, value))
                        ns[key] = replacement
        yield len(chosen)
    finally:
        for ns, key, value in reversed(saved):
            ns[key] = value
