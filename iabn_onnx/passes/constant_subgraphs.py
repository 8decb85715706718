"""Rule: small constant subgraphs become initializers, so the fold and route rules see constants.

before:  Constant(0) -> CastLike(·, X) -> Expand(·, Expand(Slice(Shape(W), 0, 1), [1])) -> Conv.B
after:   initializer zeros[C] -> Conv.B                 (torch's plain export of a bias-free Conv)
before:  Constant(value=γ) -> InplaceABN.scale          (paddle2onnx writes parameters this way)
after:   initializer γ -> InplaceABN.scale

Which nodes (main graph, default domain): ``Constant``, and ``Shape``, ``Size``, ``CastLike``,
``Cast``, ``Expand``, ``Reshape``, ``Unsqueeze``, ``Squeeze``, ``Concat``, ``Slice``, ``Gather``,
``ConstantOfShape`` and ``Identity`` whose inputs are all constant: initializers that are not
graph inputs, or outputs of nodes already evaluated. Two inputs need less than a value:
``Shape``/``Size`` need only a static shape (an initializer's dims, or shape inference's), and
``CastLike``'s second input only a known dtype.

Limit: a node is evaluated when its inputs and outputs hold at most ``MAX_ELEMENTS`` elements
each (biases, scales, shapes; never a weight-sized tensor computed at fold time). A ``Constant``
is moved to an initializer whatever its size (its bytes exist already). Nodes whose outputs are
graph outputs stay. Evaluated nodes are removed; what they read and no one else reads goes with
the caller's clean-up of unused initializers.

Why our own evaluator: each op above is a line of numpy; onnx's ReferenceEvaluator costs a
session per node (measured in ``benchmarks/bench_fold.py``), and the tests check every op here
against it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import NodeProto, helper, numpy_helper

from ..graph import node_attr as _attr
from ..graph import tensor_array
from ..op.validation import TensorInfo

MAX_ELEMENTS = 1 << 16  # 65,536


def _axes(node: NodeProto, inputs: list[np.ndarray | None], position: int) -> list[int] | None:
    """Axes from an input (opset >= 13) or the ``axes`` attribute (earlier)."""
    if len(inputs) > position and inputs[position] is not None:
        return [int(a) for a in np.asarray(inputs[position]).ravel()]
    axes = _attr(node, "axes")
    return None if axes is None else [int(a) for a in axes]  # type: ignore[union-attr]


def _shape(node: NodeProto, shape: tuple[int, ...]) -> np.ndarray:
    start, end = int(_attr(node, "start", 0)), _attr(node, "end")  # type: ignore[arg-type]
    return np.array(shape[start : None if end is None else int(end)], dtype=np.int64)  # type: ignore[arg-type]


def _reshape(node: NodeProto, x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    dims = [int(d) for d in shape]
    if not _attr(node, "allowzero", 0):
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _squeeze(node: NodeProto, inputs: list[np.ndarray | None]) -> np.ndarray:
    axes = _axes(node, inputs, 1)
    x = inputs[0]
    assert x is not None
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(a % x.ndim for a in axes))


def _unsqueeze(node: NodeProto, inputs: list[np.ndarray | None]) -> np.ndarray:
    axes = _axes(node, inputs, 1) or []
    x = inputs[0]
    assert x is not None
    rank = x.ndim + len(axes)
    for a in sorted(a % rank for a in axes):
        x = np.expand_dims(x, a)
    return x


def _slice(node: NodeProto, inputs: list[np.ndarray | None]) -> np.ndarray:
    x = inputs[0]
    assert x is not None
    if len(inputs) > 1:  # opset >= 10: starts, ends, axes, steps as inputs
        starts, ends = inputs[1], inputs[2]
        axes = inputs[3] if len(inputs) > 3 and inputs[3] is not None else None
        steps = inputs[4] if len(inputs) > 4 and inputs[4] is not None else None
    else:
        starts, ends, axes, steps = _attr(node, "starts"), _attr(node, "ends"), _attr(node, "axes"), None
    starts_list = [int(s) for s in np.asarray(starts).ravel()]
    ends_list = [int(e) for e in np.asarray(ends).ravel()]
    axes_list = list(range(len(starts_list))) if axes is None else [int(a) % x.ndim for a in np.asarray(axes).ravel()]
    steps_list = [1] * len(starts_list) if steps is None else [int(s) for s in np.asarray(steps).ravel()]
    index = [slice(None)] * x.ndim
    for axis, start, end, step in zip(axes_list, starts_list, ends_list, steps_list):
        if step == 0:
            raise ValueError("Slice step 0")
        index[axis] = slice(start, end, step)  # Python clamps out-of-range bounds as ONNX does
    return x[tuple(index)]


def _gather(node: NodeProto, inputs: list[np.ndarray | None]) -> np.ndarray:
    data, indices = inputs[0], inputs[1]
    assert data is not None and indices is not None
    axis = int(_attr(node, "axis", 0)) % data.ndim  # type: ignore[arg-type]
    return np.take(data, np.where(indices < 0, indices + data.shape[axis], indices), axis=axis)


def _constant_of_shape(node: NodeProto, inputs: list[np.ndarray | None]) -> np.ndarray:
    value = _attr(node, "value")
    fill = numpy_helper.to_array(value).ravel() if value is not None else np.zeros(1, np.float32)
    shape = inputs[0]
    assert shape is not None
    return np.full([int(d) for d in shape], fill[0], dtype=fill.dtype)


def _cast(x: np.ndarray, elem_type: int) -> np.ndarray:
    return x.astype(helper.tensor_dtype_to_np_dtype(elem_type))


#: op -> numpy evaluation from the node and its constant inputs (Shape, Size and CastLike are
#: handled apart: they need less than their input's value)
EVALUATORS: dict[str, Callable[[NodeProto, list[np.ndarray | None]], np.ndarray]] = {
    "Identity": lambda n, i: np.array(i[0]),
    "Cast": lambda n, i: _cast(i[0], int(_attr(n, "to"))),  # type: ignore[arg-type]
    "Expand": lambda n, i: np.array(np.broadcast_to(i[0], np.broadcast_shapes(i[0].shape, tuple(i[1])))),
    "Reshape": lambda n, i: _reshape(n, i[0], i[1]),
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Concat": lambda n, i: np.concatenate(i, axis=int(_attr(n, "axis"))),  # type: ignore[arg-type]
    "Slice": _slice,
    "Gather": _gather,
    "ConstantOfShape": _constant_of_shape,
}
#: dtypes the evaluator computes in (numpy has them natively)
_NUMERIC = {
    onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.INT64,
    onnx.TensorProto.INT32, onnx.TensorProto.INT16, onnx.TensorProto.INT8, onnx.TensorProto.UINT8,
    onnx.TensorProto.BOOL,
}  # fmt: skip


def _constant_value(node: NodeProto) -> np.ndarray | None:
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name == "value_float":
            return np.array(a.f, np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), np.float32)
        if a.name == "value_int":
            return np.array(a.i, np.int64)
        if a.name == "value_ints":
            return np.array(list(a.ints), np.int64)
    return None  # sparse_value, strings: left as they are


def constants_to_initializers(model: onnx.ModelProto) -> int:
    """In place: main-graph Constant nodes holding a tensor become initializers of the same name
    (paddle2onnx writes every parameter as one); return how many. Graph outputs stay nodes."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    kept, moved = [], 0
    for node in graph.node:
        value = _constant_value(node) if node.op_type == "Constant" and node.domain in ("", "ai.onnx") else None
        if value is None or node.output[0] in outputs:
            kept.append(node)
            continue
        graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        moved += 1
    if moved:
        del graph.node[:]
        graph.node.extend(kept)
    return moved


def fold_constant_subgraphs(model: onnx.ModelProto, types: dict[str, TensorInfo], base_dir: str = "") -> int:
    """In place: evaluate the main graph's constant subgraphs into initializers (see the module
    doc); return how many nodes became initializers. ``types`` is ``type_table(model)``."""
    if model.ir_version and model.ir_version < 4:  # initializers must also be graph inputs there
        return 0
    graph = model.graph
    graph_inputs = {i.name for i in graph.input}
    graph_outputs = {o.name for o in graph.output}
    inits = {i.name: i for i in graph.initializer if i.name not in graph_inputs}
    values: dict[str, np.ndarray] = {}  # outputs evaluated here

    def value(name: str) -> np.ndarray | None:
        if name in values:
            return values[name] if values[name].size <= MAX_ELEMENTS else None
        init = inits.get(name)
        if init is None or init.data_type not in _NUMERIC or int(np.prod(init.dims)) > MAX_ELEMENTS:
            return None
        return tensor_array(init, base_dir)

    def static_shape(name: str) -> tuple[int, ...] | None:
        if name in values:
            return values[name].shape
        if name in inits:
            return tuple(inits[name].dims)
        info = types.get(name)
        if info is None or info.shape is None or any(d is None for d in info.shape):
            return None
        return tuple(int(d) for d in info.shape)  # type: ignore[arg-type]

    def elem_type(name: str) -> int | None:
        if name in values:
            return helper.np_dtype_to_tensor_dtype(values[name].dtype)
        info = types.get(name)
        return info.elem_type if info is not None else None

    def evaluate(node: NodeProto) -> np.ndarray | None:
        op = node.op_type
        if op == "Constant":
            return _constant_value(node)
        if op in ("Shape", "Size"):
            shape = static_shape(node.input[0])
            if shape is None:
                return None
            return _shape(node, shape) if op == "Shape" else np.array(int(np.prod(shape)), np.int64)
        if op == "CastLike":
            target = elem_type(node.input[1]) if len(node.input) > 1 else None
            x = value(node.input[0]) if target in _NUMERIC else None
            return None if x is None else _cast(x, target)  # type: ignore[arg-type]
        evaluator = EVALUATORS.get(op)
        if evaluator is None:  # before reading any input: most nodes are not evaluated
            return None
        data = [value(name) if name else None for name in node.input]
        if any(d is None for name, d in zip(node.input, data) if name):
            return None
        if op == "Cast" and int(_attr(node, "to")) not in _NUMERIC:  # type: ignore[arg-type]
            return None
        return evaluator(node, data)

    kept: list[NodeProto] = []
    folded = 0
    for node in graph.node:
        result = None
        if node.domain in ("", "ai.onnx") and len(node.output) == 1 and node.output[0] not in graph_outputs:
            try:
                result = evaluate(node)
            except Exception:  # a malformed node is left as it is, for onnxruntime to report
                result = None
        if result is None or (node.op_type != "Constant" and result.size > MAX_ELEMENTS):
            kept.append(node)
            continue
        values[node.output[0]] = result
        graph.initializer.append(numpy_helper.from_array(np.asarray(result), node.output[0]))
        folded += 1
    if folded:
        del graph.node[:]
        graph.node.extend(kept)
    return folded


__all__ = ["EVALUATORS", "MAX_ELEMENTS", "constants_to_initializers", "fold_constant_subgraphs"]
