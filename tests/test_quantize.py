"""int8 in one command: ``iabn_onnx.quantize`` / ``iabn-onnx quantize`` (fold, then onnxruntime's quantizer).

The accuracy oracle is a network really trained on real data: ``tests/digits`` (scikit-learn's digits,
trained by ``train_digits.py`` through the torch fallback); its int8 model must keep held-out accuracy
within 1 point of fp32. Faults in calibration data raise an error naming the input and the fault.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import iabn_onnx
from iabn_onnx.quantization import WEIGHT_INPUT, CalibrationDataError, QuantizeCheckError, quantize_with_report

DIGITS = Path(__file__).parent / "digits"
MODELS = Path(__file__).resolve().parent.parent / "models"
HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None


def _digits():
    sys.path.insert(0, str(DIGITS))
    try:
        from train_digits import dataset
    finally:
        sys.path.remove(str(DIGITS))
    return dataset()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "iabn_onnx.cli", *args], capture_output=True, text=True, timeout=600, cwd=cwd
    )


@pytest.mark.skipif(not HAS_SKLEARN, reason="the held-out digits come from scikit-learn (the [test] extra)")
def test_cli_quantize_keeps_the_trained_networks_accuracy(tmp_path):
    facts = json.loads((DIGITS / "digits.json").read_text())
    x_train, _, x_test, y_test = _digits()
    np.savez(tmp_path / "calibration.npz", input=x_train[:64])
    np.savez(tmp_path / "held_out.npz", input=x_test, labels=y_test)
    model = DIGITS / "digits_inplace_abn.onnx"
    args = ["--calibration", "calibration.npz", "--check", "held_out.npz", "-o", "int8.onnx"]
    proc = _cli("quantize", str(model), *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    found = re.search(r"accuracy: fp32 ([\d.]+)%, int8 ([\d.]+)%", proc.stdout)
    assert found, proc.stdout
    fp32, int8 = (float(v) / 100 for v in found.groups())
    assert fp32 == pytest.approx(facts["accuracy_onnx"], abs=1e-4)  # the fixture's own figure
    assert fp32 - int8 <= 0.01
    int8_model = onnx.load(tmp_path / "int8.onnx")
    ops = {n.op_type for n in int8_model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and {n.domain for n in int8_model.graph.node} == {""}
    session = ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"])
    accuracy = float((session.run(None, {"input": x_test})[0].argmax(1) == y_test).mean())
    assert accuracy >= facts["accuracy_onnx"] - 0.01
    # a threshold the int8 model cannot meet: refused, nothing written
    again = _cli("quantize", str(model), *args[:-1], "refused.onnx", "--max-accuracy-drop", "-5", cwd=tmp_path)
    assert again.returncode == 1 and len(again.stderr.splitlines()) == 1, again.stderr
    assert "check failed, nothing written" in again.stderr and not (tmp_path / "refused.onnx").exists()


def test_api_takes_a_path_a_mapping_or_feeds_and_reports(tmp_path):
    """The frozen example net: what runs in int8, what stays float (Elu has no int8 kernel)."""
    g = np.random.default_rng(0)
    samples = g.standard_normal((16, 3, 16, 16)).astype(np.float32)
    path = MODELS / "convnet_elu.onnx"
    for calibration in ({"X": samples}, [{"X": samples[i : i + 2]} for i in range(0, 16, 2)]):
        model, report = quantize_with_report(path, calibration, check={"X": samples})
        assert report.quantized.get("Conv") == 2 and report.kept_float.get("Elu") == 2, report.lines()
        assert report.check is not None and report.check.top1_agreement >= 0.95
        assert not any(n.domain for n in model.graph.node)
    model = iabn_onnx.quantize(onnx.load(path).SerializeToString(), {"X": samples}, per_channel=False)
    assert isinstance(model, onnx.ModelProto)


@pytest.mark.parametrize("per_channel", [True, False, "auto"])
def test_weight_schemes(per_channel):
    """Per channel: symmetric weights (zero points 0), a scale per output channel; per tensor: asymmetric, one
    scale; auto: per layer, and the report says how many of each and why (measured here)."""
    samples = np.random.default_rng(5).standard_normal((8, 3, 16, 16)).astype(np.float32)
    model, report = quantize_with_report(MODELS / "convnet_leaky_relu.onnx", {"X": samples}, per_channel=per_channel)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    # every weighted node (two Conv and the Gemm), as the report counts them
    weights = [n.input[WEIGHT_INPUT[n.op_type]] for n in model.graph.node if n.op_type in WEIGHT_INPUT]
    assert len(weights) == 3
    dequantize = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    scales = [inits[dequantize[w].input[1]] for w in weights]
    zero_points = [inits[dequantize[w].input[2]] for w in weights]
    per_tensor = [s.ndim == 0 or s.size == 1 for s in scales]
    # symmetric exactly where the scales are per channel; asymmetric per-tensor weights: nonzero points
    assert [not z.any() for z in zero_points] == [not t for t in per_tensor]
    if per_channel == "auto":
        # the rule's three outcomes: compared candidates, nothing faster, or too little to gain to build one
        outcomes = ("calibration samples", "none faster beyond noise", "of the layers' time saved")
        assert any(o in report.weights for o in outcomes), report.weights
        mixed = re.match(r"per-channel symmetric int8 weights, per-tensor for (\d+) of (\d+)", report.weights)
        if mixed:
            assert sum(per_tensor) == int(mixed[1]) and 0 < int(mixed[1]) < int(mixed[2]) == len(weights)
        else:
            assert all(per_tensor) == report.weights.startswith("per-tensor") and len(set(per_tensor)) == 1
    else:
        assert per_tensor == [not per_channel] * len(scales) and report.weights.startswith(
            "per-channel" if per_channel else "per-tensor"
        )
    with pytest.raises(ValueError, match="per_channel"):
        iabn_onnx.quantize(MODELS / "convnet_leaky_relu.onnx", {"X": samples}, per_channel="sometimes")


def test_auto_probes_layers_and_quantizes_the_named_weights_per_tensor(tmp_path):
    """The auto choice's parts: onnxruntime's profiler gives a kernel time and the input shape of every Conv
    and Gemm of the int8 model (its layout transformer renames and runs channels-last the nodes it rewrites;
    names and shapes are mapped back); a layer alone runs in int8 with the whole model's calibrated ranges;
    the quantizer, given weight names, makes exactly those per-tensor asymmetric and the rest per-channel."""
    from onnxruntime.quantization import CalibrationMethod, quant_pre_process

    from iabn_onnx.quantization.calibrated import CalibratedQuantizer
    from iabn_onnx.quantization.weights import probe_model, profile_layers, weight_of_node

    samples = np.random.default_rng(6).standard_normal((8, 3, 16, 16)).astype(np.float32)
    folded = tmp_path / "folded.onnx"
    onnx.save(iabn_onnx.fold(MODELS / "convnet_leaky_relu.onnx"), str(folded))
    prepared = str(tmp_path / "prepared.onnx")
    quant_pre_process(str(folded), prepared, skip_symbolic_shape=True)
    float_model = onnx.load(prepared)
    weights = weight_of_node(float_model)
    assert len(weights) == 3  # two Conv, one Gemm
    feeds = [{"X": samples[i : i + 1]} for i in range(8)]
    quantizer = CalibratedQuantizer(prepared, str(tmp_path), feeds, [], CalibrationMethod.MinMax)
    per_channel = quantizer.build(False)
    chosen = {weights[next(n for n in weights if "conv" in n.lower())]}
    model = onnx.load(quantizer.build(chosen))
    dequantize = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            scale, zero_point = (inits[name] for name in dequantize[node.input[1]].input[1:3])
            assert (scale.size == 1) == (weights[node.name] in chosen), node.name
            assert bool(zero_point.any()) == (weights[node.name] in chosen), node.name  # asymmetric: a nonzero point
    profiled = profile_layers(per_channel, feeds[0], set(weights), str(tmp_path))
    assert set(profiled) == set(weights) and all(t > 0 for t, _ in profiled.values())
    shapes = {n: shape for n, (_, shape) in profiled.items()}
    assert shapes["conv0"] == [1, 3, 16, 16] and shapes["fc"] == [1, 8]  # conv0 ran channels-last
    part = tmp_path / "conv1.onnx"
    onnx.save(probe_model(float_model, {"conv1": shapes["conv1"]}), str(part))
    int8_part = quantizer.quantize_file(str(part), str(tmp_path / "conv1_int8.onnx"), True)
    assert quantizer.candidates == 2  # the one-layer model is no candidate
    x = np.random.default_rng(7).standard_normal(shapes["conv1"]).astype(np.float32)
    session = ort.InferenceSession(int8_part, providers=["CPUExecutionProvider"])
    assert session.run(None, {session.get_inputs()[0].name: x})[0].shape[:2] == (1, 8)
    part_inits = {i.name: i for i in onnx.load(int8_part).graph.initializer}
    ranges = [n for n in onnx.load(int8_part).graph.node if n.op_type == "QuantizeLinear"]
    assert ranges and all(n.input[1] in part_inits for n in ranges)  # ranges from the cache, as constants


@pytest.mark.parametrize("cache", [True, False], ids=["calibration-cache", "calibrator-parts"])
@pytest.mark.parametrize("faster", [False, True], ids=["nothing-faster", "probe-finds-faster"])
def test_auto_calibrates_once_and_builds_at_most_two_candidates(monkeypatch, faster, cache):
    """One call, with auto and a check: the calibration data is read once (onnxruntime's calibrator reads
    the reader to its end once), the probe's model and the mixed candidate reuse its ranges; through
    onnxruntime's calibration cache, and through its calibrator and QDQ quantizer (an onnxruntime without
    the cache, such as the 1.20 floor)."""
    from iabn_onnx.quantization import calibrated, data, weights

    if cache and not calibrated.has_calibration_cache():
        pytest.skip("this onnxruntime has no calibration cache")
    monkeypatch.setattr(calibrated, "has_calibration_cache", lambda: cache)
    monkeypatch.setattr(weights, "FASTER", 10.0 if faster else 0.0)  # every layer faster, or none
    passes = data.Reader.passes
    samples = np.random.default_rng(8).standard_normal((8, 3, 16, 16)).astype(np.float32)
    seen = []
    _, report = quantize_with_report(
        MODELS / "convnet_leaky_relu.onnx",
        {"X": samples},
        check={"X": samples},
        min_agreement=0,
        progress=lambda step, seconds: seen.append(step),
    )
    assert data.Reader.passes - passes == 1
    assert report.candidates == (2 if faster else 1)
    assert ("compare the two candidates" in seen) == faster and seen[-1] == "check"
    assert [s for s, _ in report.steps] == seen


def test_training_mode_batch_statistics_stay_float(tmp_path):
    g = np.random.default_rng(1)
    samples = g.standard_normal((8, 3, 16, 16)).astype(np.float32)
    model, report = quantize_with_report(MODELS / "convnet_training.onnx", [{"X": samples[:4]}, {"X": samples[4:]}])
    assert report.excluded and all("__" in name for name in report.excluded)
    assert report.kept_float.get("ReduceMean") == 6  # mean and variance of three nodes
    means = [n for n in model.graph.node if n.name.endswith("__batch_mean")]
    assert len(means) == 3
    quantized = {i for n in model.graph.node if n.op_type == "QuantizeLinear" for i in n.input}
    assert not quantized & {n.output[0] for n in means}  # the statistics are never rounded to int8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(None, {"X": samples[:4]})[0].shape == (4, 10)


@pytest.mark.parametrize(
    "data,says",
    [
        ({"Z": "good"}, "'Z' is not an input of the model"),
        ({}, "no samples for input 'X'"),
        ({"X": "wrong_shape"}, "input 'X' samples have shape [4, 16, 16], the model wants [3, 16, 16]"),
        ({"X": "wrong_dtype"}, "input 'X' must be float32, got float64"),
        ({"X": "empty"}, "input 'X' holds no sample"),
        ({"X": "nan"}, "input 'X' holds NaN or infinite values"),
        ([], "no feed"),
    ],
)
def test_bad_calibration_data_is_named(data, says):
    g = np.random.default_rng(2)
    arrays = {
        "good": g.standard_normal((4, 3, 16, 16)).astype(np.float32),
        "wrong_shape": g.standard_normal((4, 4, 16, 16)).astype(np.float32),
        "wrong_dtype": g.standard_normal((4, 3, 16, 16)),
        "empty": np.zeros((0, 3, 16, 16), np.float32),
        "nan": np.full((4, 3, 16, 16), np.nan, np.float32),
    }
    if isinstance(data, dict):
        data = {k: arrays[v] for k, v in data.items()}
    with pytest.raises(CalibrationDataError) as info:
        iabn_onnx.quantize(MODELS / "convnet_leaky_relu.onnx", data)
    assert says in str(info.value)


def test_cli_bad_calibration_is_one_line_and_writes_nothing(tmp_path):
    np.savez(tmp_path / "bad.npz", X=np.zeros((4, 3, 16, 16), np.float64))
    proc = _cli("quantize", str(MODELS / "convnet_elu.onnx"), "--calibration", "bad.npz", "-o", "q.onnx", cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "input 'X' must be float32" in proc.stderr and not (tmp_path / "q.onnx").exists()


def test_a_check_below_the_agreement_threshold_is_refused():
    samples = np.random.default_rng(3).standard_normal((8, 3, 16, 16)).astype(np.float32)
    with pytest.raises(QuantizeCheckError, match="agree on top-1"):
        iabn_onnx.quantize(MODELS / "convnet_elu.onnx", {"X": samples}, check={"X": samples}, min_top1_agreement=1.01)


def test_the_check_reports_what_onnxruntime_computes_for_both_models():
    """The check's figures against the returned int8 model and ``fold``'s fp32 model run here in onnxruntime:
    inputs three times wider than the calibration's, so that int8 clips and top-1 differs on some samples."""
    g = np.random.default_rng(0)
    calibration = g.standard_normal((4, 3, 16, 16)).astype(np.float32)
    held_out = (3 * g.standard_normal((64, 3, 16, 16))).astype(np.float32)
    labels = g.integers(0, 10, 64)
    path = MODELS / "convnet_elu.onnx"
    check = {"X": held_out, "labels": labels}
    int8, report = quantize_with_report(
        path, {"X": calibration}, check=check, min_top1_agreement=0, max_accuracy_drop=100
    )

    def run(model: onnx.ModelProto) -> np.ndarray:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"X": held_out})[0].astype(np.float64)

    fp32_out, int8_out = run(iabn_onnx.fold(path)), run(int8)
    agreement = float((fp32_out.argmax(1) == int8_out.argmax(1)).mean())
    assert 0.5 < agreement < 1  # the case this test is for: some samples disagree
    assert report.check is not None and report.check.samples == 64
    assert report.check.top1_agreement == pytest.approx(agreement, abs=1e-12)
    assert report.check.max_abs_diff == pytest.approx(np.abs(fp32_out - int8_out).max(), rel=1e-6)
    assert report.check.mean_abs_diff == pytest.approx(np.abs(fp32_out - int8_out).mean(), rel=1e-6)
    assert report.check.accuracy_fp32 == pytest.approx(float((fp32_out.argmax(1) == labels).mean()), abs=1e-12)
    assert report.check.accuracy_int8 == pytest.approx(float((int8_out.argmax(1) == labels).mean()), abs=1e-12)


def test_the_int8_file_runs_on_openvino(tmp_path):
    ov = pytest.importorskip("openvino")
    samples = np.random.default_rng(4).standard_normal((8, 3, 16, 16)).astype(np.float32)
    model = iabn_onnx.quantize(MODELS / "convnet_leaky_relu.onnx", {"X": samples})
    path = tmp_path / "int8.onnx"
    onnx.save(model, str(path))
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = np.asarray(compiled({"X": samples[:2]})[compiled.outputs[0]])
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"X": samples[:2]})[0]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=0.05 * float(np.abs(want).max()))  # both int8, rounding may differ


@pytest.mark.parametrize("kind", ["npz", "npy"])
def test_damaged_calibration_files_are_refused_or_read_as_numpy_reads_them(tmp_path, kind):
    """Byte mutants of a calibration file (seeded): each is refused with CalibrationDataError, or, when
    accepted, holds exactly what numpy's own reader finds there; no other exception escapes the reader."""
    import io
    import random

    x = np.random.default_rng(9).standard_normal((2, 3, 16, 16)).astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, X=x) if kind == "npz" else np.save(buf, x)
    good = buf.getvalue()
    model = onnx.load(MODELS / "convnet_leaky_relu.onnx")
    path = tmp_path / f"mutant.{kind}"
    outcomes = {"accepted": 0, "refused": 0}
    for seed in range(3):
        r = random.Random(seed)
        for _ in range(100):
            mutant = bytearray(good)
            for _ in range(r.randint(1, 8)):
                mutant[r.randrange(len(mutant))] = r.randrange(256)
            if r.random() < 0.2:
                mutant = mutant[: r.randrange(len(mutant))]
            path.write_bytes(bytes(mutant))
            try:
                got, _ = iabn_onnx.quantization.feeds(model, path)
            except CalibrationDataError:
                outcomes["refused"] += 1
                continue
            ref = np.load(path, allow_pickle=False)
            ref = ref["X"] if kind == "npz" else ref
            assert np.array_equal(np.concatenate([f["X"] for f in got]), ref, equal_nan=True)
            outcomes["accepted"] += 1
    assert outcomes["refused"] > 0, outcomes
