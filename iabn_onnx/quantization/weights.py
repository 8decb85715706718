"""``per_channel="auto"``: per-channel symmetric int8 weights, or per-tensor asymmetric ones on the layers
where those measure faster here, at a cost bounded by the calibration's.

Why it matters: onnxruntime's QLinearConv runs symmetric weights through its direct int8 convolution (VNNI)
and asymmetric ones through its int8 GEMM (AMX where the CPU has it); which is faster depends on the layer's
shape and on the CPU.

    per-channel model (built first, with the calibration)
      -> profile it once at the batch the user runs (the first calibration feed): each layer's kernel time
         and input shape (onnxruntime's profiler)
      -> probe: the PROBE_LAYERS slowest layers (distinct shapes), side by side in one model, in both weight
         forms (the same calibrated ranges), their kernels timed by the profiler, the two models alternated,
         within PROBE_SHARE of the calibration's time
      -> no layer 3% faster per tensor, or the layers of the faster shapes would save under 3% of all the
         layers' time: keep the per-channel model (one candidate; the report says why)
      -> else one more candidate, per tensor on every layer of a faster shape, kept if the whole model is
         3% faster and agrees with fp32 on the calibration samples as well (``check.agreement_score``)
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import helper

from .calibrated import CalibratedQuantizer
from .check import agreement_score, compare, run_outputs
from .data import count

PER_CHANNEL = "per-channel symmetric int8 weights"
PER_TENSOR = "per-tensor asymmetric int8 weights"
#: op type -> the input holding its weight (whose scheme picks the int8 kernel)
WEIGHT_INPUT = {"Conv": 1, "Gemm": 1, "MatMul": 1}
PROBE_LAYERS = 4
PROBE_SHARE = 0.1  # of the calibration's time, for timing the probe (it also quantizes and profiles)
FASTER = 0.97  # a time ratio below this is faster beyond run-to-run noise (about 1% here)


def weight_of_node(model: onnx.ModelProto) -> dict[str, str]:
    """Node name -> its weight initializer, for the nodes whose weight scheme picks their int8 kernel."""
    inits = {i.name for i in model.graph.initializer}
    return {
        n.name: n.input[WEIGHT_INPUT[n.op_type]]
        for n in model.graph.node
        if n.op_type in WEIGHT_INPUT and n.name and len(n.input) > 1 and n.input[WEIGHT_INPUT[n.op_type]] in inits
    }


def session(path: str, options: Any = None) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def warm_up(sess: Any, batch: dict[str, np.ndarray], seconds: float = 0.1) -> int:
    """Run ``sess`` for ten runs' time, up to ``seconds`` (once at least); return how many runs. The worker
    threads of the session run before spin on for tens of milliseconds: on two cores they doubled the first
    runs of an 8 ms int8 model after a switch."""
    start = time.perf_counter()
    sess.run(None, batch)
    until = start + min(seconds, 10 * (time.perf_counter() - start))
    runs = 1
    while time.perf_counter() < until:
        sess.run(None, batch)
        runs += 1
    return runs


def _profiling(tmp: str, prefix: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tmp, prefix)
    return options


def _kernel_events(sess: Any, nodes: set[str]) -> dict[str, list[tuple[float, list[int], bool]]]:
    """Node name -> per run (kernel seconds, its data input's shape as run, whether the layout transformer
    renamed it), from the profile ``sess`` wrote, for the ``nodes`` asked. The layout transformer renames the
    nodes it rewrites ``NAME_token_N`` and runs them channels-last; the name is mapped back here."""
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    found: dict[str, list[tuple[float, list[int], bool]]] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        raw = e["name"][: -len("_kernel_time")]
        name = re.sub(r"(_token_\d+)*$", "", raw)
        if name in nodes:
            shapes = e.get("args", {}).get("input_type_shape") or [{}]
            shape = next(iter(shapes[0].values()), [])
            found.setdefault(name, []).append((e["dur"] * 1e-6, list(shape), raw != name))
    return found


def profile_layers(
    path: str, batch: dict[str, np.ndarray], nodes: set[str], tmp: str, runs: int = 3
) -> dict[str, tuple[float, list[int]]]:
    """Node name -> (median kernel seconds, the shape of its data input in ONNX's channels-first order),
    from onnxruntime's profiler, for the ``nodes`` that ran once a run."""
    sess = session(path, _profiling(tmp, "profile"))
    warm = warm_up(sess, batch)
    for _ in range(runs):
        sess.run(None, batch)
    return {
        name: (statistics.median(t for t, _, _ in rows[warm:]), _nchw(rows[-1][1]) if rows[-1][2] else rows[-1][1])
        for name, rows in _kernel_events(sess, nodes).items()
        if len(rows) == warm + runs
    }


def _nchw(shape: list[int]) -> list[int]:
    """A channels-last shape (as the layout transformer runs a Conv) in ONNX's channels-first order."""
    return [shape[0], shape[-1], *shape[1:-1]] if len(shape) >= 3 else shape


def probe_model(model: onnx.ModelProto, layers: dict[str, list[int]]) -> onnx.ModelProto:
    """The nodes ``layers`` names (node -> its data input's shape) of ``model``, side by side: each with its
    data input (float), its initializers and its output. Tensor names are kept, so the calibrated ranges of
    the whole model apply; two layers reading one tensor share that input."""
    nodes = {n.name: n for n in model.graph.node}
    inits = {i.name: i for i in model.graph.initializer}
    picked = [nodes[name] for name in layers]
    inputs: dict[str, onnx.ValueInfoProto] = {}
    for node in picked:
        data = next(i for i in node.input if i and i not in inits)
        inputs.setdefault(data, helper.make_tensor_value_info(data, onnx.TensorProto.FLOAT, layers[node.name]))
    graph = helper.make_graph(
        picked,
        "probe",
        list(inputs.values()),
        [helper.make_tensor_value_info(n.output[0], onnx.TensorProto.FLOAT, None) for n in picked],
        [inits[i] for n in picked for i in dict.fromkeys(n.input) if i in inits],
    )
    return helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)


def _signature(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], shape: list[int]) -> tuple:
    """Layers of one signature (op, weight shape, input shape, attributes) run the same kernel alike."""
    weight = inits[node.input[WEIGHT_INPUT[node.op_type]]]
    attrs = tuple(sorted((a.name, str(helper.get_attribute_value(a))) for a in node.attribute))
    return node.op_type, tuple(weight.dims), tuple(shape), attrs


def probed_shape(value: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value for d in value.type.tensor_type.shape.dim]


def _kernel_medians(
    paths: dict[str, str], feed: dict[str, np.ndarray], nodes: set[str], tmp: str, seconds: float, min_runs: int = 5
) -> dict[str, dict[str, float]]:
    """Per model, node -> the median of its kernel's time (onnxruntime's profiler) over runs of both models
    alternated (a drift touches both alike) for ``seconds``, at least ``min_runs`` each, after a warm-up."""
    sessions = {}
    for key, path in paths.items():
        options = _profiling(tmp, f"probe_profile_{key}")
        # no spinning: the threads of the session run last would spin on and slow the other's kernels
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions[key] = session(path, options)
    warm = {key: warm_up(s, feed) for key, s in sessions.items()}
    until = time.perf_counter() + seconds
    rounds = 0
    while rounds < min_runs or time.perf_counter() < until:
        for key in sorted(sessions, reverse=bool(rounds % 2)):
            sessions[key].run(None, feed)
        rounds += 1
    out = {}
    for key, sess in sessions.items():
        rows = _kernel_events(sess, nodes)
        out[key] = {
            n: statistics.median(t for t, _, _ in r[warm[key] :]) for n, r in rows.items() if len(r) > warm[key]
        }
    return out


def _alternate(paths: dict[str, str], batch: dict[str, np.ndarray], seconds: float, min_runs: int = 5) -> dict:
    """Median seconds per run of each model, run alternately (a drift touches both alike) for ``seconds``."""
    sessions = {k: session(p) for k, p in paths.items()}
    for s in sessions.values():
        warm_up(s, batch)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    until = time.perf_counter() + seconds
    rounds = 0
    while rounds < min_runs or time.perf_counter() < until:
        for k in sorted(sessions, reverse=bool(rounds % 2)):
            t0 = time.perf_counter()
            sessions[k].run(None, batch)
            times[k].append(time.perf_counter() - t0)
        rounds += 1
    return {k: statistics.median(v) for k, v in times.items()}


def choose_weights(
    quantizer: CalibratedQuantizer,
    per_channel: str,
    fp32: str,
    feed_list: list[dict[str, np.ndarray]],
    step: Callable[[str], Any],
) -> tuple[str, str]:
    """(path of the int8 model to keep, why); ``per_channel`` is the per-channel model's path, ``fp32`` the
    float model's; ``step(name)`` is a context manager timing a step for the progress lines."""
    tmp = quantizer.tmp
    budget = max(quantizer.calibration_seconds, 1.0)
    batch = feed_list[0]
    with step("probe the weight forms on the largest layers"):
        started = time.perf_counter()
        model = onnx.load(quantizer.prepared)
        weights = weight_of_node(model)
        profiled = profile_layers(per_channel, batch, set(weights), tmp)
        nodes = {n.name: n for n in model.graph.node}
        inits = {i.name: i for i in model.graph.initializer}
        signatures = {name: _signature(nodes[name], inits, shape) for name, (_, shape) in profiled.items()}
        slowest: dict[tuple, str] = {}
        for name in sorted(profiled, key=lambda n: -profiled[n][0]):
            slowest.setdefault(signatures[name], name)
            if len(slowest) == PROBE_LAYERS:
                break
        probed = {name: list(sig[2]) for sig, name in slowest.items()}
        part = os.path.join(tmp, "probe.onnx")
        onnx.save(probe_model(model, probed), part)
        del model, nodes, inits
        pair = {
            "channel": quantizer.quantize_file(part, os.path.join(tmp, "probe_channel.onnx"), False),
            "tensor": quantizer.quantize_file(part, os.path.join(tmp, "probe_tensor.onnx"), True),
        }
        feed = {
            i.name: np.random.default_rng(k).standard_normal(probed_shape(i)).astype(np.float32)
            for k, i in enumerate(onnx.load(part, load_external_data=False).graph.input)
        }
        kernel = _kernel_medians(pair, feed, set(probed), tmp, PROBE_SHARE * budget)
        ratios = {
            sig: kernel["tensor"][name] / kernel["channel"][name]
            for sig, name in slowest.items()
            if name in kernel["tensor"] and name in kernel["channel"]
        }
        probe_seconds = time.perf_counter() - started
    shown = ", ".join(f"{ratios[s]:.2f}×" for s in ratios)
    faster = {s for s, r in ratios.items() if r < FASTER}
    where = f"on the {len(ratios)} slowest layer shapes here, at batch {count(batch)}"
    # what per-tensor weights would save on the layers of the faster shapes, as a share of every layer's time
    total = sum(t for t, _ in profiled.values())
    saving = sum(profiled[n][0] * (1 - ratios[sig]) for n, sig in signatures.items() if sig in faster)
    share = saving / total if total > 0 else 0.0
    if not faster or share < 1 - FASTER:
        why = "none faster beyond noise" if not faster else f"an estimated {share:.1%} of the layers' time saved"
        return per_channel, (
            f"{PER_CHANNEL} (per-tensor weights took {shown or 'no measured'} of per-channel's time {where}: "
            f"{why}, so no other candidate was built; choosing took {probe_seconds:.2f} s, "
            f"the calibration {quantizer.calibration_seconds:.2f} s)"
        )
    chosen = {weights[n] for n, sig in signatures.items() if sig in faster}
    every = set(weights.values())
    label = PER_TENSOR if chosen == every else f"{PER_CHANNEL}, per-tensor for {len(chosen)} of {len(every)}"
    with step("build the mixed candidate"):
        mixed = quantizer.build(chosen)
    with step("compare the two candidates"):
        fp32_session = session(fp32)
        names = [o.name for o in fp32_session.get_outputs()]
        reference = run_outputs(fp32_session, feed_list)
        del fp32_session
        scores = {}
        for key, path in (("per-channel", per_channel), ("candidate", mixed)):
            result = compare(names, reference, run_outputs(session(path), feed_list), feed_list)
            scores[key] = agreement_score(result)
        median = _alternate({"per-channel": per_channel, "candidate": mixed}, batch, 0.5 * budget)
    speed = median["per-channel"] / median["candidate"]
    as_good = scores["candidate"][0] >= scores["per-channel"][0] and (
        scores["candidate"][1] <= 1.5 * scores["per-channel"][1] + 1e-12
    )
    why = (
        f"per-layer probe {shown} {where}; whole model {speed:.2f}× per-channel's speed; agreement with fp32 on "
        f"the calibration samples {scores['candidate'][0]:.2%} vs {scores['per-channel'][0]:.2%}, mean |diff| "
        f"{scores['candidate'][1]:.3g} vs {scores['per-channel'][1]:.3g}"
    )
    if speed >= 1 / FASTER and as_good:
        return mixed, f"{label} ({why})"
    return per_channel, f"{PER_CHANNEL} (tried {label}: {why})"


__all__ = ["PER_CHANNEL", "PER_TENSOR", "PROBE_LAYERS", "WEIGHT_INPUT", "choose_weights", "weight_of_node"]
