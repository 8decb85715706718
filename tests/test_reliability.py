"""Reliability: the bad-input matrix through fold, convert and the CLI; odd inputs; load; soak; many sessions.

References: the float64 numpy reference, onnxruntime's native BatchNormalization, single-threaded results.
Cases that could abort run in a fresh interpreter. ``--run-slow`` adds the 1 GiB input and the 100,000-run soak.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import iabn_onnx
from iabn_onnx import InplaceABNAttrs, InplaceABNError, inplace_abn_reference
from iabn_onnx.examples import native_equivalent, single_node_model
from iabn_onnx.op.schema import make_model
from iabn_onnx.passes.fold import fold_with_report
from tests.bad_models import MODEL_CASES
from tests.conftest import TOLERANCES, assert_close, rng, run_isolated

ROOT = Path(__file__).resolve().parents[1]


# -- the bad-model matrix through fold, convert and the CLI ----------------------
def _named(exc: InplaceABNError) -> bool:
    return exc.node in ("abn0", "<model>")


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_fold_and_convert_reject_a_bad_node_unless_asked_to_keep_it(case):
    """fold and convert raise naming the node; with keep_invalid they leave it as it is, reported."""
    factory, fault = MODEL_CASES[case]
    model = factory()
    before = model.SerializeToString()
    for transform in (fold_with_report, iabn_onnx.convert):
        with pytest.raises(InplaceABNError) as info:
            transform(model)
        assert _named(info.value) and fault in info.value.fault, info.value
    try:
        folded, report = fold_with_report(model, keep_invalid=True)
    except InplaceABNError as exc:  # an unknown opset version of our domain cannot be kept
        assert exc.node == "<model>" and "opset" in exc.fault
    else:
        assert report.count == 0, report.lines()
        assert [n.op_type for n in folded.graph.node] == [n.op_type for n in model.graph.node]
        assert report.left[0][0] == "abn0" and fault in report.left[0][1]
        converted = iabn_onnx.convert(model, keep_invalid=True)
        assert [n.op_type for n in converted.graph.node] == [n.op_type for n in model.graph.node]
    assert model.SerializeToString() == before  # arguments are never mutated


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_cli_check_fold_and_convert_reject_bad_model_with_one_line(case, tmp_path, capsys):
    """In-process (no command runs a kernel, so nothing can abort): exit 1, exactly one stderr line
    naming the node and the fault, nothing written, and no "ok" printed before the fault."""
    from iabn_onnx.cli import main

    factory, fault = MODEL_CASES[case]
    path = tmp_path / "bad.onnx"
    onnx.save(factory(), path)
    for args in (["check"], ["fold", "-o", str(tmp_path / "o.onnx")], ["convert", "-o", str(tmp_path / "c.onnx")]):
        assert main([args[0], str(path), *args[1:]]) == 1, args
        out = capsys.readouterr()
        lines = out.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"iabn-onnx {args[0]}: error:"), out.err
        assert ("abn0" in lines[0] or "opset" in lines[0]) and fault in lines[0], lines[0]
        assert "ok" not in out.out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


# -- odd inputs -------------------------------------------------------------------
def _session_and_reference(shape=(2, 4, 3, 3), training_mode=0, dtype=np.float32):
    attrs = InplaceABNAttrs(act="elu", act_alpha=0.7, training_mode=training_mode)
    model, params = single_node_model(shape, attrs, dtype)
    return iabn_onnx.InferenceSession(model), lambda x: inplace_abn_reference(x, *params.values(), attrs)


@pytest.mark.parametrize(
    "make_x",
    [
        lambda x: x.transpose(0, 1, 3, 2),  # non-contiguous view (square spatial dims keep the shape)
        lambda x: np.asfortranarray(x),
        lambda x: x[..., ::-1],  # negative strides
        lambda x: (x.setflags(write=False), x)[1],  # read-only
    ],
    ids=["transposed-view", "fortran-order", "negative-strides", "read-only"],
)
def test_noncontiguous_and_readonly_inputs(make_x):
    session, reference = _session_and_reference()
    x = make_x(rng(1).standard_normal((2, 4, 3, 3)).astype(np.float32))
    before = x.copy()
    assert_close(session.run(None, {"X": x})[0], reference(np.ascontiguousarray(x)))
    np.testing.assert_array_equal(x, before)  # the input is never written


def test_wrong_input_dtype_is_a_python_exception():
    session, _ = _session_and_reference()
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    with pytest.raises(InvalidArgument, match=r"(?i)type|double|float"):  # onnxruntime's input type check
        session.run(None, {"X": np.ones((2, 4, 3, 3), np.float64)})
    assert session.run(None, {"X": np.ones((2, 4, 3, 3), np.float32)})[0].shape == (2, 4, 3, 3)


def _fed_params_model(attrs: InplaceABNAttrs):
    return single_node_model((2, 3, 4), attrs, np.float32, constant_params=False)


def _assert_same_specials(ours: np.ndarray, theirs: np.ndarray) -> None:
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    both = ~np.isnan(theirs)
    np.testing.assert_allclose(ours[both], theirs[both], rtol=1e-5, atol=1e-5)  # inf == inf


@pytest.mark.parametrize(
    ("param", "value", "like_native"),
    [("mean", np.nan, True), ("var", np.inf, True), ("var", -1.0, True), ("B", np.nan, True), ("scale", np.inf, False)],
    ids=["nan-mean", "inf-var", "negative-var", "nan-bias", "inf-scale"],
)
def test_odd_statistics_give_documented_results(param, value, like_native):
    """NaN/Inf/negative statistics: the kernel gives what the float64 reference gives, and for NaN statistics
    and bad variances also what onnxruntime's BatchNormalization gives. An infinite scale differs from
    onnxruntime's: it folds scale and shift first (inf·x − inf·mean gives NaN where x ≠ mean), while
    (x − mean)·inf + B is ±inf there. The default session routes this node (statistics fed at run time) to
    BatchNormalization, so it gives onnxruntime's result in every case."""
    attrs = InplaceABNAttrs(act="leaky_relu", act_alpha=0.1)
    model, params = _fed_params_model(attrs)
    params = {k: v.copy() for k, v in params.items()}
    params[param][1] = value
    x = rng(2).standard_normal((2, 3, 4)).astype(np.float32)
    with np.errstate(invalid="ignore"):
        reference = inplace_abn_reference(x, *params.values(), attrs)
    kernel = iabn_onnx.InferenceSession(model, kernel_only=True).run(None, {"X": x, **params})[0]
    _assert_same_specials(kernel, reference)
    native_model = native_equivalent((2, 3, 4), attrs, params)
    native = ort.InferenceSession(native_model.SerializeToString(), providers=["CPUExecutionProvider"])
    native_y = native.run(None, {"X": x})[0]
    if like_native:
        _assert_same_specials(kernel, native_y)
    default = iabn_onnx.InferenceSession(model)
    assert [r.route for r in default.routes] == ["BatchNormalization"]
    _assert_same_specials(default.run(None, {"X": x, **params})[0], native_y)


@pytest.mark.slow
def test_one_gibibyte_input():
    """X of 1 GiB (float32, 2^28 elements) runs and is right, in a fresh process (memory is freed after)."""
    code = f"""
import sys; sys.path.insert(0, {str(ROOT)!r})
import numpy as np, iabn_onnx
from iabn_onnx import InplaceABNAttrs
from iabn_onnx.examples import single_node_model
attrs = InplaceABNAttrs(act="leaky_relu", act_alpha=0.1)
shape = (4, 16, 2048, 2048)  # 2^28 float32 = 1 GiB
model, p = single_node_model(("N", 16, 2048, 2048), attrs)
x = np.empty(shape, np.float32)
x[:] = np.linspace(-3, 3, 2048, dtype=np.float32)
(y,) = iabn_onnx.InferenceSession(model, kernel_only=True).run(None, {{"X": x}})  # the kernel's copies at 1 GiB
s = (p["scale"] / np.sqrt(p["var"].astype(np.float64) + attrs.epsilon))
for c in (0, 7, 15):
    z = (x[3, c, 100].astype(np.float64) - p["mean"][c]) * s[c] + p["B"][c]
    want = np.where(z >= 0, z, 0.1 * z)
    assert np.allclose(y[3, c, 100], want, rtol=1e-5, atol=1e-5), c  # float32: the suite's table
print("OK", y.nbytes)
"""
    proc = run_isolated(code, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"OK {2**30}" in proc.stdout


# -- under load ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("training_mode", [0, 1], ids=["inference", "training"])
def test_eight_threads_by_500_runs_equal_single_threaded(training_mode, dtype):
    """8 threads x 500 distinct inputs on one session: each output equals the single-threaded one, and the
    single-threaded outputs equal the float64 reference."""
    session, reference = _session_and_reference((2, 8, 6, 6), training_mode, dtype)
    inputs = [rng(1000 + i).standard_normal((2, 8, 6, 6)).astype(dtype) for i in range(8 * 500)]
    expected = [session.run(None, {"X": x}) for x in inputs]
    for k in (0, len(inputs) - 1):
        want = reference(inputs[k])
        for got, w in zip(expected[k], want if isinstance(want, tuple) else (want,)):
            assert_close(got, w, dtype)
    mismatches: list[int] = []

    def worker(thread: int) -> None:
        for k in range(thread, len(inputs), 8):
            got = session.run(None, {"X": inputs[k]})
            if not all(np.array_equal(g, e) for g, e in zip(got, expected[k])):
                mismatches.append(k)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert mismatches == []


SOAK = """
import sys; sys.path.insert(0, {root!r})
import json, numpy as np, iabn_onnx
from iabn_onnx import InplaceABNAttrs
from iabn_onnx.examples import single_node_model

def rss_mb():
    return int([l for l in open("/proc/self/status") if l.startswith("VmRSS:")][0].split()[1]) / 1024

sessions = []
for dtype, training in ((np.float32, 0), (np.float32, 1), (np.float64, 0), (np.float16, 0)):
    m, _ = single_node_model((4, 16, 16, 16), InplaceABNAttrs(act="elu", training_mode=training), dtype)
    x = np.random.default_rng(0).standard_normal((4, 16, 16, 16)).astype(dtype)
    sessions.append((iabn_onnx.InferenceSession(m, kernel_only=True), x))  # the kernel bridge is what could leak
runs = {runs}
warm = runs // 10
for i in range(runs):
    s, x = sessions[i % len(sessions)]
    s.run(None, {{"X": x}})
    if i == warm:
        base = rss_mb()
print(json.dumps({{"base_mb": base, "end_mb": rss_mb()}}))
"""


@pytest.mark.parametrize("runs", [10_000, pytest.param(100_000, marks=pytest.mark.slow)])
def test_soak_resident_memory_is_flat(runs):
    proc = run_isolated(SOAK.format(root=str(ROOT), runs=runs), timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    growth = (result["end_mb"] - result["base_mb"]) / result["base_mb"]
    assert growth < 0.05, result


def test_sessions_with_different_models_and_a_plain_session_do_not_disturb_each_other():
    """Registration is process-global: a float32 inference, a float64 training and a plain onnxruntime
    session, run concurrently, each give their own reference result."""
    a_attrs = InplaceABNAttrs(act="leaky_relu", act_alpha=0.2)
    b_attrs = InplaceABNAttrs(act="elu", act_alpha=0.5, training_mode=1, data_layout="NHWC", momentum=0.7)
    a_model, a_params = single_node_model((2, 5, 7), a_attrs, np.float32)
    b_model, b_params = single_node_model((3, 4, 4, 6), b_attrs, np.float64)
    plain_model = native_equivalent((2, 5, 7), a_attrs, a_params)
    sessions = {
        "a": (
            iabn_onnx.InferenceSession(a_model),
            (2, 5, 7),
            np.float32,
            lambda x: [inplace_abn_reference(x, *a_params.values(), a_attrs)],
        ),
        "b": (
            iabn_onnx.InferenceSession(b_model),
            (3, 4, 4, 6),
            np.float64,
            lambda x: list(inplace_abn_reference(x, *b_params.values(), b_attrs)),
        ),
        "plain": (
            ort.InferenceSession(plain_model.SerializeToString(), providers=["CPUExecutionProvider"]),
            (2, 5, 7),
            np.float32,
            lambda x: [inplace_abn_reference(x, *a_params.values(), a_attrs)],
        ),
    }
    failures: list[str] = []

    def worker(key: str, seed: int) -> None:
        session, shape, dtype, reference = sessions[key]
        rtol, atol = TOLERANCES[np.dtype(dtype)]
        for k in range(200):
            x = rng(seed * 1000 + k).standard_normal(shape).astype(dtype)
            for got, want in zip(session.run(None, {"X": x}), reference(x)):
                if not np.allclose(got, want, rtol=rtol, atol=atol):
                    failures.append(f"{key} run {k}")
                    return

    threads = [threading.Thread(target=worker, args=(key, i)) for i, key in enumerate(sessions) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_convert_of_a_bad_batchnormalization_reports_and_keeps_it():
    """Bad BatchNormalization attributes: convert skips with a reason, and the model keeps running natively."""
    nodes = [helper.make_node("BatchNormalization", ["X", "s", "b", "m", "v"], ["Y"], name="bn", epsilon=0.5)]
    params = {k: np.ones(3, np.float32) for k in "sbmv"}
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, [2, 3])],
        [onnx.numpy_helper.from_array(v, k) for k, v in params.items()],
    )
    model = make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    converted, report = iabn_onnx.passes.convert.convert_with_report(model)
    assert not report.converted and "epsilon" in report.skipped[0][1]
    assert converted.graph.node[0].op_type == "BatchNormalization"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("act", ["leaky_relu", "elu"])
def test_special_values_in_x_match_the_reference(act, dtype):
    """NaN stays NaN, ±inf and huge values saturate as the float64 reference does (elu's own expm1 too)."""
    attrs = InplaceABNAttrs(act=act, act_alpha=0.5)
    model, params = single_node_model((1, 3, 6), attrs, dtype)
    x = np.array(
        [
            [
                [np.nan, -np.inf, np.inf, -1e30, 1e30, 0.0],
                [-0.0, -1e-20, -1e-7, -3.0, -87.5, -700.0],
                [1.0, 2.0, -100.0, -1000.0, 1e-30, -1e-30],
            ]
        ],
        dtype,
    )
    ours = iabn_onnx.InferenceSession(model).run(None, {"X": x})[0]
    with np.errstate(invalid="ignore", over="ignore"):
        reference = inplace_abn_reference(x, *params.values(), attrs)
    _assert_same_specials(ours, reference)
