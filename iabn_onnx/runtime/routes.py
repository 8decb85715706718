"""Where each InplaceABN node went, as a session reports it; importable without onnx.

The JSON forms let the start-up cache (``start_cache.py``) keep a session's report; turning
them back into objects imports the schema, so a session builds them only when asked.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iabn_onnx.op.schema import InplaceABNAttrs
    from iabn_onnx.op.validation import CheckedNode

KERNEL = "kernel"
PRODUCER_FOLD = "producer fold"


@dataclass(frozen=True)
class Route:
    """Where one InplaceABN node went: ``route`` is "producer fold", "BatchNormalization",
    "per-channel Mul + Add" or "kernel"."""

    node: str
    route: str
    detail: str
    #: for the standard-op routes: the node's inputs and attributes, so values fed at run
    #: time can be checked as the kernel would check them
    inputs: tuple[str, ...] = ()
    attrs: InplaceABNAttrs | None = None

    def __str__(self) -> str:
        return f"{self.node}: {self.route} ({self.detail})"


def attrs_to_json(attrs: InplaceABNAttrs) -> dict[str, Any]:
    out = {f.name: getattr(attrs, f.name) for f in dataclasses.fields(attrs)}  # flat: asdict's deep copy is slow
    out["act"], out["data_layout"] = attrs.act.value, attrs.data_layout.value
    return out


def attrs_from_json(data: dict[str, Any]) -> InplaceABNAttrs:
    from iabn_onnx.op.schema import InplaceABNAttrs

    return InplaceABNAttrs(**data)


def route_to_json(route: Route) -> dict[str, Any]:
    attrs = None if route.attrs is None else attrs_to_json(route.attrs)
    return {
        "node": route.node,
        "route": route.route,
        "detail": route.detail,
        "inputs": list(route.inputs),
        "attrs": attrs,
    }


def route_from_json(data: dict[str, Any]) -> Route:
    attrs = None if data["attrs"] is None else attrs_from_json(data["attrs"])
    return Route(data["node"], data["route"], data["detail"], tuple(data["inputs"]), attrs)


def checked_to_json(node: CheckedNode) -> dict[str, Any]:
    return {"name": node.name, "attrs": attrs_to_json(node.attrs), "dtype": node.dtype}


def checked_from_json(data: dict[str, Any]) -> CheckedNode:
    from iabn_onnx.op.validation import CheckedNode

    return CheckedNode(data["name"], attrs_from_json(data["attrs"]), data["dtype"])
