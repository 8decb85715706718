"""``iabn_onnx.InferenceSession``: onnxruntime with InplaceABN nodes supported.

A drop-in for ``onnxruntime.InferenceSession`` that
1. validates every InplaceABN node once, before onnxruntime sees the model
   (a bad model raises ``InplaceABNError`` naming the node);
2. routes each node to the fastest implementation exact for it (``lowering.py``):
   folded into its producer, BatchNormalization + activation, or the fused kernel;
3. turns a fault found by a kernel during ``run()`` into a Python exception,
   instead of the process abort the Python-op bridge would give.

The kernel machinery (onnxruntime-extensions, numba, and through the former torch when
installed) is imported only when a node needs the kernel. Given a path, the session reads
only the model's graph (``outline.py``) and onnxruntime reads the weights from a private copy
of the file; the session holds no copy of the model once onnxruntime has it, and a file with
no InplaceABN node goes to onnxruntime as is. What a session made of a file is kept in the
start-up cache (``start_cache.py``): a later process given the same file and options starts
without importing onnx or lowering again.

Every way in (a cache hit, a lowering, a file onnxruntime takes as it is) yields one ``_Prepared``:
the model file onnxruntime reads and the session's report, from which ``_adopt`` sets the state.
Only protobuf's parser decides what a model file holds: the outline's walk finds where the weights
are, and the outline itself, every byte of the file but the weights', is parsed by protobuf before
anything is lowered (a cache hit is keyed by those same bytes, parsed when the entry was made).
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnxruntime as ort

from ..model_source import (
    ModelLoadError,
    ModelSource,
    load_model,
    load_model_file,
    model_file,
    no_graph,
    unreadable,
    utf8_checked,
)
from ..op.names import DOMAIN
from . import start_cache
from .outline import Outline, Walked, parse_outline, walk_outline
from .routes import Route, checked_from_json, checked_to_json, route_from_json, route_to_json

if TYPE_CHECKING:
    import onnx

    from .lowering import LoweredNode


def _walk_outline(path: Path) -> Walked:
    """The outline of a model file as bytes (``outline.py``), with the errors ``load_model_file`` gives."""
    try:
        return walk_outline(path)
    except Exception as exc:  # WireError
        raise unreadable(str(path), exc) from None


def _parse_outline(walked: Walked, path: Path) -> Outline:
    try:
        outline = parse_outline(walked)
    except Exception as exc:  # protobuf's DecodeError
        raise unreadable(str(path), exc) from None
    utf8_checked(outline.model, str(path))
    return outline


class _PrivateCopy:
    """The private copy of a model file that onnxruntime reads the weights from (a session cannot fault
    when the user's file is rewritten in place). Made on a thread of its own (the kernel copies without
    the GIL) while the cache is looked up or the graph lowered; the ``with`` block owns the thread and
    waits for it on the way out, after an error too. ``finish`` waits and checks that the source did
    not change since ``before``. Without ``wanted`` it copies nothing and ``target`` is None."""

    def __init__(self, source: Path, tmp: str, before: tuple[int, int, int], wanted: bool) -> None:
        self.source, self.before = source, before
        self.target = os.path.join(tmp, source.name) if wanted else None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._copy, name="iabn_onnx model copy", daemon=True)
        if wanted:
            self._thread.start()

    def _copy(self) -> None:
        try:
            shutil.copyfile(self.source, self.target)  # type: ignore[arg-type]
        except BaseException as exc:  # re-raised by finish(), on the caller's thread
            self.error = exc

    def __enter__(self) -> _PrivateCopy:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self._thread.join()  # the folder goes away next: the copy ends first

    def finish(self) -> None:
        if self.target is None:
            return
        self._thread.join()
        if self.error is not None:
            raise self.error
        if _identity(self.source) != self.before:
            raise ModelLoadError(f"{self.source}: the file changed while the session read it")


#: the names a lowered model takes in the session's folder (two: the private copy may hold one)
_LOWERED_NAMES = ("model.onnx", "model_lowered.onnx")


def _lowered_path(tmp: str, taken: str | None) -> str:
    """Where the lowered model goes in ``tmp``; ``taken``: the copy of the original file, under the
    original's name, in the same folder."""
    return next(p for p in (os.path.join(tmp, n) for n in _LOWERED_NAMES) if p != taken)


def _identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


SPINNING_KEY = "session.intra_op.allow_spinning"
#: marks a SessionOptions the kernel library is registered on (registering twice is an error);
#: kept on the options object itself, so nothing outlives it
REGISTERED_KEY = "iabn_onnx.kernels_registered"


def _config_entry(so: ort.SessionOptions, key: str) -> str | None:
    try:
        return so.get_session_config_entry(key)
    except Exception:  # onnxruntime raises when the key was never set
        return None


def session_options(options: ort.SessionOptions | None = None) -> ort.SessionOptions:
    """SessionOptions with the InplaceABN kernels registered.

    Pass your own ``SessionOptions`` to register on it (it is modified and
    returned). Execution mode is set to sequential: kernel faults are
    reported to the thread that called ``run()``. ``InferenceSession`` also turns
    intra-op thread spinning off when the model keeps kernel nodes, unless you set
    ``session.intra_op.allow_spinning`` yourself.
    """
    from iabn_onnx.custom_ops import registration  # loads onnxruntime-extensions and numba

    registration.register()
    so = options if options is not None else ort.SessionOptions()
    if so.execution_mode != ort.ExecutionMode.ORT_SEQUENTIAL:
        warnings.warn(
            "iabn_onnx sets execution_mode to ORT_SEQUENTIAL so kernel errors reach the calling thread",
            stacklevel=2,
        )
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if _config_entry(so, REGISTERED_KEY) is None:
        so.register_custom_ops_library(registration.library_path())
        so.add_session_config_entry(REGISTERED_KEY, "1")
    return so


@functools.cache
def _shared_kernel_options() -> ort.SessionOptions:
    """The options of every kernel session the caller gave none for: registering the kernel library
    on fresh options for each session grew memory by about 1.5 KB a session (3.7 MB over 2,500);
    onnxruntime copies the options into each session, so one registered object serves them all."""
    return session_options(None)


def _has_inplace_abn(model: onnx.ModelProto) -> bool:
    from ..graph import graphs

    return any(n.domain == DOMAIN for g in graphs(model.graph) for n in g.node)


def _check_feed(routes: list[Route], feed: dict[str, Any], static: dict[str, tuple[int, ...]]) -> None:
    """The kernel's run-time checks, for standard-op routes whose inputs are fed directly."""
    import numpy as np

    from ..op.schema import InplaceABNError, shape_faults

    for route in routes:
        assert route.attrs is not None
        arrays = [feed.get(name) for name in route.inputs]
        shapes = [static.get(n) if a is None else tuple(np.shape(a)) for n, a in zip(route.inputs, arrays)]
        faults = shape_faults(shapes[0], shapes[1:], route.attrs)
        if faults:
            raise InplaceABNError(route.node, "; ".join(faults))
        dtypes = {getattr(a, "dtype", None) for a in arrays if a is not None}
        if len(dtypes) > 1:
            raise InplaceABNError(route.node, f"inputs differ in dtype: {sorted(str(d) for d in dtypes)}")


@dataclass(frozen=True)
class _Settings:
    """What, beyond the model, decides how it is lowered (and so keys the start-up cache)."""

    kernel_only: bool
    fuses_conv: bool  # onnxruntime will fuse Conv+BatchNormalization at load

    def cache_options(self) -> dict[str, bool]:
        return {"kernel_only": self.kernel_only, "fuses_conv": self.fuses_conv}


#: the report of a model that reaches onnxruntime as given (no InplaceABN node)
_AS_IS: dict[str, Any] = {
    "kernel": False,
    "routes": [],
    "kernel_nodes": [],
    "standard_routes": [],
    "static_shapes": {},
    "fed_routes": [],
}


@dataclass(frozen=True)
class _Prepared:
    """What a session is made of, whichever way it came (a cache hit, a lowering, a file as it is):
    the model file onnxruntime reads, and the session's report as JSON (routes, kernel nodes, the
    feeds checked at run time)."""

    path: str
    report: dict[str, Any]
    origin: str  # "as is", "cache" or "lowered": which way it came (tests ask)


def _prepare(model: ModelSource, settings: _Settings, tmp: str) -> _Prepared:
    """The model file for onnxruntime, in ``tmp`` unless it is the user's own file as it is."""
    if isinstance(model, (str, os.PathLike)):
        return _prepare_file(model_file(model), settings, tmp)
    prepared, _ = _lowered(load_model(model), settings, "", tmp, taken=None)
    return prepared


def _prepare_file(source: Path, settings: _Settings, tmp: str) -> _Prepared:
    """A model file: the file itself when it has no node of ours, else a cache hit, else a lowering of its
    outline (``outline.py``: the graph without the weights, checked by protobuf's parser), kept in the cache."""
    before = _identity(source)  # a change from here on fails the private copy's finish()
    walked = _walk_outline(source)
    if not walked.has_graph:
        raise no_graph(source)
    if DOMAIN.encode() not in walked.data:
        # A node of our domain names it in the graph's bytes: with no such node there is nothing to
        # change, and onnxruntime reads the file (and its external data) as it is, with its own parser.
        return _Prepared(os.fspath(source), _AS_IS, "as is")
    # The outline's big tensors point into the file and onnxruntime memory-maps them: it reads a
    # private copy, made while the cache is looked up or the graph lowered.
    points_into_file = walked.points_into_file
    wanted = points_into_file and not walked.own_external_data
    with _PrivateCopy(source, tmp, before, wanted) as copy:
        key = None
        if start_cache.cache_dir() is not None and not walked.own_external_data:
            key = start_cache.key(walked.data, settings.cache_options())
            hit = _from_cache(start_cache.lookup(key), source, tmp, copy)
            if hit is not None:
                return hit
        outline = _parse_outline(walked, source)  # protobuf's verdict on every byte but the weights'
        del walked
        if not _has_inplace_abn(outline.model):
            if key is not None and not outline.own_external_data:
                start_cache.store(key, None, {})
            return _Prepared(os.fspath(source), _AS_IS, "as is")
        if outline.own_external_data:  # tensors in files of their own: the whole model, and no cache entry
            proto, base_dir, key = load_model_file(source)[0], "", None
        else:  # small tensors are in the outline; the big ones are read from the file
            proto, base_dir = outline.model, str(source.parent) if points_into_file else ""
        del outline
        prepared, reads = _lowered(proto, settings, base_dir, tmp, taken=copy.target)
        del proto
        if key is not None and any(location != source.name for location, _, _ in reads):
            key = None  # it read another file: an entry could not tell when that one changed
        copy.finish()  # the file did not change while it was walked, copied, lowered and read
        if key is not None:
            meta = {
                **prepared.report,
                "points_into_file": copy.target is not None,
                "reads": start_cache.read_digests(source, [(offset, length) for _, offset, length in reads]),
                "model_name": os.path.basename(prepared.path),
            }
            start_cache.store(key, prepared.path, meta)
        return prepared


def _from_cache(entry: start_cache.Entry | None, source: Path, tmp: str, copy: _PrivateCopy) -> _Prepared | None:
    """A cache entry's model written to ``tmp``, or None (a miss) when there is no entry, it is not one
    this code wrote, or the stretches of ``source`` the lowering read have changed since."""
    if entry is None:
        return None
    if entry.model is None:
        return _Prepared(os.fspath(source), _AS_IS, "as is")
    meta = entry.meta
    try:  # an entry this code wrote has every field; any other is a miss
        model_name = meta["model_name"]
        points_into_file = bool(meta["points_into_file"])
        report = {name: meta[name] for name in _AS_IS}
        _validate_report(report)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if model_name not in _LOWERED_NAMES:
        return None
    if points_into_file and copy.target is None:  # the walk found no tensor in the file: not this file's entry
        return None
    path = os.path.join(tmp, model_name)
    if path == copy.target:  # the lowered model never takes the copy's name
        return None
    if not start_cache.unchanged(entry, source):  # checked after the copy began, which checks the rest
        return None
    with open(path, "wb") as fh:
        fh.write(entry.model)
    if points_into_file:
        copy.finish()
    return _Prepared(path, report, "cache")


def _validate_report(report: dict[str, Any]) -> None:
    """Raises (KeyError, TypeError, ValueError) unless ``report`` has the shape ``_lowered`` gives it."""
    report["kernel"] = bool(report["kernel"])
    report["standard_routes"] = [str(name) for name in report["standard_routes"]]
    report["static_shapes"] = {str(n): [int(d) for d in dims] for n, dims in report["static_shapes"].items()}
    [route_from_json(r) for r in report["fed_routes"]]  # imports the schema only when there are any
    if not isinstance(report["routes"], list) or not isinstance(report["kernel_nodes"], list):
        raise TypeError("routes and kernel_nodes are lists")


def _lowered(
    proto: onnx.ModelProto, settings: _Settings, base_dir: str, tmp: str, taken: str | None
) -> tuple[_Prepared, list[tuple[str, int, int]]]:
    """Route and lower ``proto`` (changed in place) and write it to ``tmp`` under a name other than ``taken``
    (the private copy's); also the external-data stretches the lowering read (location, offset, length).

    onnxruntime reads the model from a file, as it would the original: handing it serialized
    bytes kept them alive beside its own copy (ResNet-50 peak 570 MB, from a file 470 MB).
    """
    from ..graph import recording_external_reads, save_model
    from .lowering import lower

    declared = {i.name: list(i.dims) for i in proto.graph.initializer}  # before lowering drops some
    with recording_external_reads() as reads:
        proto, kernel_nodes, routes = lower(
            proto, kernel_only=settings.kernel_only, onnxruntime_fuses_conv=settings.fuses_conv, base_dir=base_dir
        )
    graph_inputs = {i.name for i in proto.graph.input}
    # standard-op routes reading graph inputs: their feed is checked as the kernel would check it
    fed = [r for r in routes if r.attrs is not None and graph_inputs.intersection(r.inputs)]
    wanted = {name for r in fed for name in r.inputs}
    report = {
        "kernel": bool(kernel_nodes),
        "routes": [route_to_json(r) for r in routes],
        "kernel_nodes": [checked_to_json(n) for n in kernel_nodes],
        "standard_routes": sorted({r.node for r in routes if r.attrs is not None}),
        "static_shapes": {name: declared[name] for name in sorted(wanted) if name in declared},
        "fed_routes": [route_to_json(r) for r in fed],
    }
    path = _lowered_path(tmp, taken)
    save_model(proto, path)
    return _Prepared(path, report, "lowered"), list(reads)


class InferenceSession:
    """Like ``onnxruntime.InferenceSession``, with InplaceABN nodes supported.

    ``model`` is a path, serialized bytes, or an ``onnx.ModelProto`` (not
    modified). Other arguments are passed to onnxruntime.

    Each node takes the fastest route exact for it (``passes/route_choice.py``, measured):
    frozen nodes (training_mode=0) right after a Conv become BatchNormalization, which
    onnxruntime folds into the Conv at load; those after a ConvTranspose, Gemm or MatMul
    fold into that layer here; other frozen NCHW nodes become BatchNormalization +
    activation (their statistics may be fed at run time) and NHWC ones a per-channel
    Mul + Add + activation; training-mode nodes, and the kinds where the kernel is
    faster or the only exact form (float16 leaky_relu, NHWC float16, float64
    leaky_relu), run in the fused kernel.
    ``routes`` says where each node went and why; ``inplace_abn_nodes`` lists the
    nodes the kernel runs. ``kernel_only=True`` (or the older ``fold_frozen=False``)
    runs every node in the kernel, for validation and tests.
    """

    def __init__(
        self,
        model: ModelSource,
        sess_options: ort.SessionOptions | None = None,
        providers: Sequence[Any] | None = None,
        provider_options: Sequence[dict[str, Any]] | None = None,
        fold_frozen: bool = True,
        kernel_only: bool = False,
        **kwargs: Any,
    ) -> None:
        if providers is None:
            providers = ["CPUExecutionProvider"]
        options = {"providers": providers, "provider_options": provider_options, **kwargs}
        level = (sess_options or ort.SessionOptions()).graph_optimization_level
        settings = _Settings(
            kernel_only=kernel_only or not fold_frozen,
            fuses_conv=level != ort.GraphOptimizationLevel.ORT_DISABLE_ALL,  # Conv+BatchNormalization is basic
        )
        with tempfile.TemporaryDirectory(prefix="iabn_onnx_") as tmp:
            prepared = _prepare(model, settings, tmp)
            del model
            self._adopt(prepared)
            self._start(prepared.path, sess_options, options)

    def _adopt(self, prepared: _Prepared) -> None:
        """The session's state, from its report: the one place it is set, whichever way the model came."""
        report = self._report = prepared.report
        self._origin = prepared.origin
        self._kernel = bool(report["kernel"])
        self._standard_routes: set[str] = set(report["standard_routes"])
        self._static_shapes = {name: tuple(dims) for name, dims in report["static_shapes"].items()}
        self._fed_routes: list[Route] = [route_from_json(r) for r in report["fed_routes"]]
        self._routes: list[Route] | None = None  # read from the report when asked for
        self._kernel_nodes: list[LoweredNode] | None = None

    def _start(self, path: str, sess_options: ort.SessionOptions | None, options: dict[str, Any]) -> None:
        """onnxruntime's session on the model file ``path``."""
        so = sess_options
        if self._kernel:
            so = session_options(sess_options) if sess_options is not None else _shared_kernel_options()
            if _config_entry(so, SPINNING_KEY) is None:
                # spinning intra-op threads starve the Python kernel, which runs on the calling
                # thread: ResNet-50 with 53 kernel nodes took 255 ms spinning, 68 ms not
                so.add_session_config_entry(SPINNING_KEY, "0")
        with self._fault_slot() as faults:
            self._session = ort.InferenceSession(path, so, **options)
        if faults:
            raise faults[0].to_exception()

    @property
    def routes(self) -> list[Route]:
        """Where each InplaceABN node went and why, in graph order."""
        if self._routes is None:
            self._routes = [route_from_json(r) for r in self._report["routes"]]
        return self._routes

    @property
    def inplace_abn_nodes(self) -> list[LoweredNode]:
        """The InplaceABN nodes the fused kernel runs."""
        if self._kernel_nodes is None:
            self._kernel_nodes = [checked_from_json(n) for n in self._report["kernel_nodes"]]
        return self._kernel_nodes

    def _fault_slot(self) -> Any:
        """The kernel's per-thread fault slot (a no-op when no node runs in the kernel)."""
        if not self._kernel:
            import contextlib

            return contextlib.nullcontext([])
        from iabn_onnx.custom_ops import registration

        return registration.ErrorSlot()

    @property
    def nodes(self) -> list[LoweredNode]:
        """The InplaceABN nodes the fused kernel runs."""
        return list(self.inplace_abn_nodes)

    def run(
        self,
        output_names: Sequence[str] | None,
        input_feed: dict[str, Any],
        run_options: ort.RunOptions | None = None,
    ) -> list[Any]:
        """As ``onnxruntime.InferenceSession.run``; kernel faults raise InplaceABNError."""
        if self._fed_routes:
            _check_feed(self._fed_routes, input_feed, self._static_shapes)
        if not self._kernel:
            try:
                return self._session.run(output_names, input_feed, run_options)
            except Exception as exc:
                raise self._named(exc) from exc
        with self._fault_slot() as faults:
            try:
                outputs = self._session.run(output_names, input_feed, run_options)
            except Exception as exc:
                if faults:
                    raise faults[0].to_exception() from exc
                raise self._named(exc) from exc
        if faults:
            raise faults[0].to_exception()
        return outputs

    def _named(self, exc: Exception) -> Exception:
        """onnxruntime's error for a node we routed to standard ops, as an InplaceABNError naming it."""
        from ..op.schema import InplaceABNError

        text = " ".join(str(exc).split())
        for name in self._standard_routes:
            if f"'{name}'" in text:
                return InplaceABNError(name, f"onnxruntime rejected its standard-op form: {text}")
        return exc

    def __getattr__(self, name: str) -> Any:
        # get_inputs, get_outputs, get_providers, ... come from onnxruntime.
        return getattr(self.__dict__["_session"], name)


def __getattr__(name: str) -> Any:
    if name == "InplaceABNError":  # kept importable from here; it lives with the schema (onnx)
        from ..op.schema import InplaceABNError

        return InplaceABNError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["InferenceSession", "ModelLoadError", "Route", "load_model", "session_options"]
