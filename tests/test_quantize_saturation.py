"""7-bit weights where the CPU's int8 dot product saturates (``quantization/cpu.py``).

Reference: ONNX's reference evaluator on the very QDQ file onnxruntime runs (it dequantizes and convolves in
float: exact, no saturation), and the file's own integer weights. The hardware case checks the rule against
this CPU: where ``int8_dot_saturates()`` says so, onnxruntime's 8-bit file must be visibly off the exact
QDQ arithmetic; where it does not, it must match. The 7-bit file must match everywhere.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import iabn_onnx
from iabn_onnx.quantization.cpu import int8_dot_saturates, resolve_reduce_range


def _positive_conv() -> tuple[onnx.ModelProto, np.ndarray]:
    """A Conv whose weights and inputs all sit near the top of their ranges: every pair of uint8×int8
    products is near 255·127·2, twice what an int16 holds."""
    rng = np.random.default_rng(0)
    w = rng.uniform(0.5, 1.0, (8, 16, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        "positive_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8, 8, 8])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10  # the onnxruntime floor's
    return model, rng.uniform(0.9, 1.0, (4, 16, 8, 8)).astype(np.float32)


def _conv_weights(model: onnx.ModelProto) -> np.ndarray:
    (weights,) = [numpy_helper.to_array(i) for i in model.graph.initializer if len(i.dims) == 4]
    assert weights.dtype == np.int8
    return weights


def _ort_and_exact(model: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0], ReferenceEvaluator(model).run(None, {"x": x})[0]


@pytest.mark.parametrize(
    ("machine", "flags", "saturates"),
    [
        ("x86_64", {"avx2", "fma"}, True),  # AMD Zen 3, Intel before Cascade Lake
        ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, False),
        ("x86_64", {"avx2", "avx_vnni"}, False),  # Alder Lake's VEX VNNI
        ("x86_64", {"avx2", "amx_int8"}, False),
        ("AMD64", {"avx2"}, True),  # Windows' name for x86-64
        ("aarch64", {"asimd"}, False),
        ("arm64", set(), False),
    ],
)
def test_which_cpus_saturate(machine, flags, saturates):
    assert int8_dot_saturates(machine, flags) is saturates


def test_the_unknown_x86_case_takes_seven_bits(monkeypatch):
    import iabn_onnx.quantization.cpu as cpu

    monkeypatch.setattr(cpu, "cpu_flags", lambda: None)  # not Linux: 7 bits are safe everywhere
    assert cpu.int8_dot_saturates("x86_64") is True
    assert cpu.resolve_reduce_range("auto")[0] is True


def test_reduce_range_takes_true_false_or_auto():
    assert resolve_reduce_range(True)[0] is True and resolve_reduce_range(False)[0] is False
    model, x = _positive_conv()
    with pytest.raises(ValueError, match="reduce_range must be True, False or 'auto'"):
        iabn_onnx.quantize(model, {"x": x}, reduce_range="yes")


def test_seven_bit_weights_stay_within_64_and_match_the_exact_arithmetic_on_this_cpu():
    model, x = _positive_conv()
    quantized, report = iabn_onnx.quantization.quantize_with_report(model, {"x": x}, per_channel=True,
                                                                     reduce_range=True)  # fmt: skip
    weights = _conv_weights(quantized)
    assert np.abs(weights.astype(int)).max() <= 64 and weights.max() >= 60  # 7 bits, used to the full
    got, exact = _ort_and_exact(quantized, x)
    step = float(np.abs(exact).max()) / 255  # one step of the output's uint8 scale
    assert np.abs(got - exact).max() <= step
    assert "weight range: 7-bit (reduce_range=True)" in report.lines()


def test_eight_bit_weights_saturate_exactly_where_the_rule_says():
    model, x = _positive_conv()
    quantized = iabn_onnx.quantize(model, {"x": x}, per_channel=True, reduce_range=False)
    assert _conv_weights(quantized).max() == 127
    got, exact = _ort_and_exact(quantized, x)
    off = np.abs(got - exact).max() / np.abs(exact).max()
    if int8_dot_saturates():
        assert off > 0.1, f"this CPU was said to saturate, but the 8-bit file is only {off:.3%} off"
    else:
        assert off <= 1 / 255, f"this CPU was said not to saturate, but the 8-bit file is {off:.3%} off"


def test_auto_follows_this_cpu_and_the_cli_passes_weight_bits(tmp_path):
    from iabn_onnx.cli import main

    model, x = _positive_conv()
    quantized, report = iabn_onnx.quantization.quantize_with_report(model, {"x": x}, per_channel=True)
    assert bool(np.abs(_conv_weights(quantized).astype(int)).max() <= 64) is int8_dot_saturates()
    assert report.weight_bits.startswith("7-bit" if int8_dot_saturates() else "8-bit")
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", x=x)
    for bits, top in (("7", 64), ("8", 127)):
        out = tmp_path / f"int8_{bits}.onnx"
        args = [str(tmp_path / "m.onnx"), "--calibration", str(tmp_path / "c.npz"), "-o", str(out)]
        assert main(["quantize", *args, "--weights", "per-channel", "--weight-bits", bits]) == 0
        assert np.abs(_conv_weights(onnx.load(out)).astype(int)).max() == top
