"""Registration of the InplaceABN kernels with onnxruntime-extensions.

Why this is more than an ``@onnx_op`` decorator
-----------------------------------------------
onnxruntime-extensions runs a Python op through one process-global hook
(``PyCustomOpDef.install_hooker``). Its stock hook has two properties we
cannot ship with:

* it returns every output as ``array.flatten().tolist()``, a Python float
  per element (hundreds of times slower than the kernel itself);
* any exception raised there (or a malformed return) reaches C++ code that
  calls ``std::terminate``: the host process dies.

So we install our own hook. For our ops it returns C-contiguous arrays of
the declared dtype (the C++ side memcpys them) and it never raises: a fault
is recorded in a per-thread error slot and the kernel returns NaN outputs
of the right shape. ``iabn_onnx.InferenceSession.run`` opens that slot
before calling onnxruntime and raises the recorded fault as a Python
exception naming the node. Everyone else's Python ops are passed on to the
stock hook unchanged.

The kernels are registered as internal ops in ``RUNTIME_DOMAIN`` with a
fixed arity (onnxruntime-extensions has no optional inputs or outputs) and
a single string attribute, ``config``, holding the node's exact attributes
as JSON (the float attributes a Python op receives are rounded to 6
significant digits; JSON keeps every bit). ``iabn_onnx.runtime.lowering``
rewrites public ``InplaceABN`` nodes to these ops.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_PROTOBUF_KEY = "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"
_protobuf_choice = os.environ.get(_PROTOBUF_KEY)
import onnxruntime_extensions  # noqa: E402  (its cvt module sets PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python)
from onnxruntime_extensions import PyCustomOpDef, get_library_path  # noqa: E402

# Undo that: this process keeps the protobuf it loaded, but every process it starts would parse ONNX
# with pure-Python protobuf (a child's ResNet-50 session start-up went from 0.75 to 1.05 s).
if _protobuf_choice is None:
    os.environ.pop(_PROTOBUF_KEY, None)
else:
    os.environ[_PROTOBUF_KEY] = _protobuf_choice

# after onnxruntime-extensions (and the torch it imports): the kernels' OpenMP layer loads second,
# as measured in bench_kernel (training 2.0x native this way, 2.2x the other way round)
from iabn_onnx.op.schema import INPUT_NAMES, InplaceABNAttrs, InplaceABNError, shape_faults  # noqa: E402

from . import kernels  # noqa: E402
from .names import CONFIG_ATTR, INFERENCE_OP, RUNTIME_DOMAIN, TRAINING_OP  # noqa: E402

log = logging.getLogger("iabn_onnx.runtime")


_DTYPES = {np.dtype(np.float32): PyCustomOpDef.dt_float, np.dtype(np.float64): PyCustomOpDef.dt_double}
KERNEL_DTYPES = tuple(_DTYPES)


# -- node configuration ------------------------------------------------------
@dataclass(frozen=True)
class NodeConfig:
    """What one lowered node needs at run time: its name and exact attributes."""

    node: str
    attrs: InplaceABNAttrs
    alpha_by_dtype: dict[np.dtype, np.ndarray] = field(compare=False, hash=False, repr=False)


_config_cache: dict[str, NodeConfig] = {}
_config_lock = threading.Lock()


def decode_config(text: str) -> NodeConfig:
    cfg = _config_cache.get(text)
    if cfg is not None:
        return cfg
    attrs, extra = InplaceABNAttrs.decode(text)
    node = str(extra["node"])
    attrs = attrs.validate(node)
    alphas = {dt: np.array([attrs.act_alpha], dtype=dt) for dt in KERNEL_DTYPES}
    cfg = NodeConfig(node, attrs, alphas)
    with _config_lock:
        if len(_config_cache) > 4096:  # bounded: configs are per model node
            _config_cache.clear()
        _config_cache[text] = cfg
    return cfg


# -- the per-thread error slot ------------------------------------------------
@dataclass
class KernelFault:
    node: str
    fault: str
    error: BaseException

    def to_exception(self) -> InplaceABNError:
        exc = InplaceABNError(self.node, self.fault)
        exc.__cause__ = self.error if not isinstance(self.error, InplaceABNError) else None
        return exc


_slot = threading.local()


class ErrorSlot:
    """Context manager that collects kernel faults raised in this thread."""

    def __enter__(self) -> list[KernelFault]:
        self.previous = getattr(_slot, "faults", None)
        self.faults: list[KernelFault] = []
        _slot.faults = self.faults
        return self.faults

    def __exit__(self, *exc_info: object) -> None:
        _slot.faults = self.previous


def _record(fault: KernelFault) -> None:
    faults = getattr(_slot, "faults", None)
    if faults is None:  # a call from outside iabn_onnx.InferenceSession.run: only a log line can tell
        log.error("%s (outputs set to NaN)", fault.to_exception())
    else:
        faults.append(fault)


# -- output buffers -------------------------------------------------------------
_buffers = threading.local()
_MAX_CACHED_BUFFERS = 4


def _output_buffer(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A reusable per-thread output array.

    The C++ side copies the returned array into onnxruntime's output before
    this thread can call a kernel again, so reusing it is safe and saves the
    page faults of a fresh allocation on every call.
    """
    cache: dict[tuple[tuple[int, ...], np.dtype], np.ndarray] | None = getattr(_buffers, "cache", None)
    if cache is None:
        cache = _buffers.cache = {}
    key = (shape, dtype)
    buf = cache.pop(key, None)
    if buf is None:
        if len(cache) >= _MAX_CACHED_BUFFERS:
            cache.pop(next(iter(cache)))
        buf = np.empty(shape, dtype)
    cache[key] = buf  # most recently used last
    return buf


# -- the kernels ------------------------------------------------------------------
def _check_inputs(cfg: NodeConfig, x: np.ndarray, params: Sequence[np.ndarray]) -> None:
    faults = shape_faults(x.shape, [p.shape for p in params], cfg.attrs)
    if faults:
        raise InplaceABNError(cfg.node, "; ".join(faults))
    for name, p in zip(INPUT_NAMES[1:], params):
        if p.dtype != x.dtype:
            raise InplaceABNError(cfg.node, f"{name} has dtype {p.dtype} but X has dtype {x.dtype}")


def run_inference(cfg: NodeConfig, x, scale, bias, mean, var) -> tuple[np.ndarray]:
    _check_inputs(cfg, x, (scale, bias, mean, var))
    attrs = cfg.attrs
    y = _output_buffer(x.shape, x.dtype)
    if x.size:
        kernels.infer(
            x,
            scale,
            bias,
            mean,
            var,
            attrs.epsilon,
            attrs.act.code,
            cfg.alpha_by_dtype[x.dtype],
            attrs.channel_axis(x.ndim),
            y,
        )
    return (y,)


def run_training(cfg: NodeConfig, x, scale, bias, mean, var) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    _check_inputs(cfg, x, (scale, bias, mean, var))
    attrs = cfg.attrs
    axis = attrs.channel_axis(x.ndim)
    if x.size == 0:
        raise InplaceABNError(cfg.node, f"training_mode=1 needs a non-empty batch, X has shape {list(x.shape)}")
    batch_mean, batch_var = kernels.batch_stats(x, axis)
    y = _output_buffer(x.shape, x.dtype)
    kernels.infer(
        x,
        scale,
        bias,
        batch_mean.astype(x.dtype),
        batch_var.astype(x.dtype),
        attrs.epsilon,
        attrs.act.code,
        cfg.alpha_by_dtype[x.dtype],
        axis,
        y,
        after_reduction=True,
    )
    m = attrs.momentum
    running_mean = (mean.astype(np.float64) * m + batch_mean * (1.0 - m)).astype(mean.dtype)
    running_var = (var.astype(np.float64) * m + batch_var * (1.0 - m)).astype(var.dtype)
    return y, running_mean, running_var


@dataclass(frozen=True)
class KernelSpec:
    op_type: str
    dtype: np.dtype
    run: Callable[..., tuple[np.ndarray, ...]]
    n_outputs: int

    def placeholder(self, feed: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        """NaN outputs of the shapes onnxruntime expects, for a failed call."""
        try:
            x = feed[0]
            channels = feed[3].shape[0] if feed[3].ndim == 1 else 1
            shapes = [x.shape] + [(channels,)] * (self.n_outputs - 1)
            return tuple(np.full(s, np.nan, self.dtype) for s in shapes)
        except BaseException:
            return tuple(np.empty((0,), self.dtype) for _ in range(self.n_outputs))


_specs: dict[int, KernelSpec] = {}


def _invoke(k_id: int, feed: Sequence[np.ndarray], attributes: dict[str, str]) -> tuple[Any, ...]:
    spec = _specs.get(k_id)
    if spec is None:
        return _stock_hook(k_id, feed, attributes)
    try:
        cfg = decode_config(attributes[CONFIG_ATTR])
        try:
            outputs = spec.run(cfg, *feed)
        except InplaceABNError as exc:
            _record(KernelFault(exc.node, exc.fault, exc))
            outputs = spec.placeholder(feed)
        except BaseException as exc:
            _record(KernelFault(cfg.node, f"{type(exc).__name__}: {exc}", exc))
            outputs = spec.placeholder(feed)
    except BaseException as exc:
        _record(KernelFault("<unknown>", f"bad runtime config: {type(exc).__name__}: {exc}", exc))
        outputs = spec.placeholder(feed)
    result: list[Any] = [k_id]
    for out in outputs:
        result.append(out.shape)
        result.append(out)
    return tuple(result)


#: the onnxruntime-extensions releases whose private hook API (below) this bridge was tested with
SUPPORTED_EXTENSIONS = "0.13 to 0.15"


def _private(path: str) -> Any:
    """A private onnxruntime-extensions name the bridge relies on, or a clear error naming it."""
    obj: Any = onnxruntime_extensions
    for part in path.split("."):
        if not hasattr(obj, part):
            version = getattr(onnxruntime_extensions, "__version__", "unknown")
            raise ImportError(
                f"onnxruntime-extensions {version} has no {path}, which iabn_onnx's kernel bridge needs; "
                f"supported versions: {SUPPORTED_EXTENSIONS}"
            )
        obj = getattr(obj, part)
    return obj


_stock_hook: Callable[..., Any] = _private("_ocos._on_pyop_invocation")
_private("Opdef.create")
_private("PyCustomOpDef.install_hooker")
_registered = False
_register_lock = threading.Lock()


def register() -> None:
    """Declare the Python ops and install the hook (idempotent).

    Must run before ``SessionOptions.register_custom_ops_library``.
    """
    global _registered
    with _register_lock:
        if _registered:
            return
        Opdef = onnxruntime_extensions.Opdef
        for op_type, run, n_outputs in ((INFERENCE_OP, run_inference, 1), (TRAINING_OP, run_training, 3)):
            for dtype, dt_code in _DTYPES.items():
                opdef = Opdef.create(
                    run,
                    op_type=f"{RUNTIME_DOMAIN}::{op_type}",
                    inputs=[dt_code] * 5,
                    outputs=[dt_code] * n_outputs,
                    attrs={CONFIG_ATTR: PyCustomOpDef.dt_string},
                )
                native = getattr(opdef, "_nativedef", None)
                if native is None or not hasattr(native, "obj_id"):
                    raise ImportError(
                        "onnxruntime-extensions' Opdef has no _nativedef.obj_id, which iabn_onnx's kernel bridge "
                        f"needs; supported versions: {SUPPORTED_EXTENSIONS}"
                    )
                _specs[native.obj_id] = KernelSpec(op_type, dtype, run, n_outputs)
        PyCustomOpDef.install_hooker(_invoke)
        _registered = True


def library_path() -> str:
    return get_library_path()
