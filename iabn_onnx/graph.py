"""Small graph helpers shared by the lowering, fold and convert code."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import GraphProto, NodeProto, TensorProto, helper, numpy_helper

from .fresh_names import fresh_name as fresh_name  # re-exported: the passes import it from here


def subgraphs(graph: GraphProto) -> Iterator[GraphProto]:
    """Every subgraph (If/Loop/Scan bodies) nested in graph, depth first; not graph itself."""
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield attr.g
                yield from subgraphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield g
                    yield from subgraphs(g)


def graphs(graph: GraphProto) -> Iterator[GraphProto]:
    """graph itself, then every subgraph nested in it."""
    yield graph
    yield from subgraphs(graph)


def used_names(graph: GraphProto) -> set[str]:
    """Every value and node name in graph, subgraphs too: fresh names avoid them all."""
    used: set[str] = set()
    for g in graphs(graph):
        for n in g.node:
            used.update(n.input)
            used.update(n.output)
            used.add(n.name)
        used.update(i.name for i in g.initializer)
        used.update(i.name for i in g.input)
    return used


def node_attr(node: NodeProto, name: str, default: object = None) -> object:
    """The value of ``node``'s attribute ``name``, or ``default`` when it has none."""
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def attribute_tensors(graph: GraphProto) -> Iterator[TensorProto]:
    """The tensors in the attributes of graph's own nodes (a Constant's value, say); not of subgraphs."""
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors


def tensors(graph: GraphProto) -> Iterator[TensorProto]:
    """The initializers and node-attribute tensors of graph and of every subgraph in it."""
    for g in graphs(graph):
        yield from g.initializer
        yield from attribute_tensors(g)


#: serialized models above this size are written with external data (protobuf cannot hold more
#: than 2 GiB in one message; this leaves room for everything but the tensors)
INLINE_LIMIT = 1 << 30


#: an input a feed must give: its dtype and dims (None where symbolic)
InputSpec = tuple[np.dtype, tuple[int | None, ...]]


def feed_inputs(model: onnx.ModelProto, exclude: Iterable[str] = ()) -> dict[str, InputSpec]:
    """The main graph's inputs that are not initializers (nor in ``exclude``), by name, in order."""
    skip = {i.name for i in model.graph.initializer} | set(exclude)
    found = {}
    for vi in model.graph.input:
        if vi.name in skip:
            continue
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim)
        found[vi.name] = (np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)), dims)
    return found


def save_model(model: onnx.ModelProto, path: str, external: bool = False) -> bool:
    """Write ``model`` to ``path``, serializing it once; return whether its tensors went to external data.

    They go to ``<file name>.data`` beside ``path`` when ``external`` is asked for or the model is too
    big for one protobuf message (asking ``ByteSize()`` first costs as much as serializing: 0.18 s on
    ResNet-50). External data is written by ``onnx.save``, which moves the tensors out of ``model``.
    """
    data = None
    if not external:
        try:
            data = model.SerializeToString()
        except (ValueError, RuntimeError):  # protobuf: "exceeds maximum protobuf size of 2GB"
            data = None
    if data is not None and len(data) < INLINE_LIMIT:
        with open(path, "wb") as fh:
            fh.write(data)
        return False
    del data
    location = os.path.basename(path) + ".data"
    onnx.save(model, path, save_as_external_data=True, location=location)
    return True


def drop_unused_initializers(model: onnx.ModelProto) -> None:
    """In place: remove main-graph initializers no node (of any subgraph either) reads, unless they are graph
    inputs or outputs."""
    graph = model.graph
    used = {name for g in graphs(graph) for n in g.node for name in n.input}
    used |= {o.name for o in graph.output} | {i.name for i in graph.input}
    keep = [i for i in graph.initializer if i.name in used]
    if len(keep) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep)


def set_opset_import(model: onnx.ModelProto, domain: str, version: int) -> None:
    """In place: import ``domain`` at ``version`` (replacing another version of it)."""
    for imp in model.opset_import:
        if imp.domain == domain:
            imp.version = version
            return
    model.opset_import.append(onnx.helper.make_opsetid(domain, version))


def ensure_opset_import(model: onnx.ModelProto, domain: str, version: int) -> None:
    """In place: import ``domain`` at ``version`` unless the model already imports it."""
    if not any(o.domain == domain for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(domain, version))


def drop_opset_import(model: onnx.ModelProto, domain: str) -> None:
    """In place: remove the import of ``domain``, if any."""
    kept = [o for o in model.opset_import if o.domain != domain]
    if len(kept) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(kept)


# initializers at most this many elements keep their data for shape inference (Reshape
# shapes, axes); larger ones become typed graph inputs, so inference never copies weights
_SHAPE_DATA_LIMIT = 64


def infer_shapes_light(
    model: onnx.ModelProto, stand_in: Callable[[onnx.NodeProto], list[onnx.NodeProto] | None] | None = None
) -> onnx.ModelProto:
    """onnx shape inference on a weight-free view of model (inferred types and shapes only).

    Serializing a 100 MB model for ``infer_shapes`` dominated fold and session
    start-up; the result here has the same value_info without the big tensors.
    ``stand_in(node)``: the nodes inference sees in place of ``node`` (None: the node itself),
    in every graph of the view.
    """
    source = model.graph
    light = onnx.ModelProto(ir_version=model.ir_version, producer_name=model.producer_name)
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    graph = light.graph
    graph.name = source.name
    graph.node.extend(source.node)
    graph.input.extend(source.input)
    graph.output.extend(source.output)
    graph.value_info.extend(source.value_info)
    graph.sparse_initializer.extend(source.sparse_initializer)
    declared = {i.name for i in source.input}
    for tensor in source.initializer:
        size = 1
        for d in tensor.dims:
            size *= d
        if size <= _SHAPE_DATA_LIMIT:
            graph.initializer.append(tensor)
        elif tensor.name not in declared:  # as a typed input, built field by field (helper's copies cost ms)
            typed = graph.input.add()
            typed.name = tensor.name
            tensor_type = typed.type.tensor_type
            tensor_type.elem_type = tensor.data_type
            for d in tensor.dims:  # size > _SHAPE_DATA_LIMIT: never 0-d
                tensor_type.shape.dim.add().dim_value = d
    if stand_in is not None:
        for g in graphs(graph):  # lazily: a subgraph is reached in its parent's new node list
            nodes = [replacement for node in g.node for replacement in (stand_in(node) or [node])]
            del g.node[:]
            g.node.extend(nodes)
    try:
        return onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False)
    except Exception:  # inference is a best effort: callers treat unknown shapes as unknown
        return light


_recording = threading.local()


@contextlib.contextmanager
def recording_external_reads() -> Iterator[list[tuple[str, int, int]]]:
    """Within the block (this thread), each external-data read ``tensor_array`` makes is listed
    as (location, offset, length): what a result computed in the block depends on, beyond the graph."""
    previous = getattr(_recording, "reads", None)
    _recording.reads = reads = []
    try:
        yield reads
    finally:
        _recording.reads = previous


def tensor_array(tensor: TensorProto, base_dir: str | os.PathLike[str] = "") -> np.ndarray:
    """The value of ``tensor``, reading external data relative to ``base_dir``; ``tensor`` is not changed."""
    if tensor.data_location != TensorProto.EXTERNAL:
        return numpy_helper.to_array(tensor)
    info = {entry.key: entry.value for entry in tensor.external_data}
    loaded = TensorProto()
    loaded.CopyFrom(tensor)
    del loaded.external_data[:]
    loaded.data_location = TensorProto.DEFAULT
    with open(Path(base_dir) / info["location"], "rb") as fh:
        fh.seek(int(info.get("offset", 0)))
        length = int(info["length"]) if "length" in info else -1
        loaded.raw_data = fh.read(length)
    if length >= 0 and len(loaded.raw_data) != length:
        raise ValueError(f"tensor '{tensor.name}': external data ends after {len(loaded.raw_data)} of {length} bytes")
    reads = getattr(_recording, "reads", None)
    if reads is not None:
        reads.append((info["location"], int(info.get("offset", 0)), len(loaded.raw_data)))
    return numpy_helper.to_array(loaded)
