"""Property-based equivalence of fold and convert on random graphs (hypothesis).

Graphs: chains of Conv / ConvTranspose (rank 3-4) or Gemm / MatMul (rank 2) layers, with InplaceABN nodes at
random positions (random act, alpha, epsilon, layout, training mode, constant or fed parameters), shared
weights, producer outputs with a second consumer, and float32 or float64.

Oracle: onnx's ReferenceEvaluator with the float64 numpy InplaceABN, on the original model.
Properties: fold's result passes the full checker, never has more InplaceABN nodes than the input, and computes
the same; convert of the BatchNormalization form of the same graph computes the same and passes the checker.

CI runs a bounded, derandomized number of examples (the hypothesis profile is in conftest.py);
the ``slow`` variants (``--run-slow``) run 2000 examples of each property.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

import iabn_onnx
from iabn_onnx.op.reference import reference_evaluator
from iabn_onnx.op.schema import Activation, InplaceABNAttrs, Layout, make_model, make_node, opset_import
from iabn_onnx.passes.fold import fold_with_report
from iabn_onnx.passes.to_batchnorm import batchnorm_form
from tests.conftest import TOLERANCES

# Wider than the suite's per-dtype table on purpose: each folded layer reassociates a dot product
# (W·s summed instead of (W summed)·s), and up to four layers chain, so rounding compounds with depth.
FUZZ_TOLERANCE = {
    np.float32: tuple(t * 20 for t in TOLERANCES[np.dtype(np.float32)]),
    np.float64: tuple(t * 1000 for t in TOLERANCES[np.dtype(np.float64)]),
}


@dataclass
class Builder:
    dtype: type
    rng: np.random.Generator
    nodes: list = field(default_factory=list)
    inits: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    feeds: dict = field(default_factory=dict)
    count: int = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}{self.count}"

    def init(self, base: str, array: np.ndarray) -> str:
        name = self.name(base)
        self.inits[name] = array.astype(self.dtype)
        return name

    def elem(self) -> int:
        return helper.np_dtype_to_tensor_dtype(np.dtype(self.dtype))


def _layer(b: Builder, draw, x: str, shape: list[int], weights: dict) -> tuple[str, list[int]]:
    rank, c = len(shape), shape[1]
    if rank == 2:
        kind = draw(st.sampled_from(["Gemm", "MatMul"]))
        c_out = draw(st.sampled_from([c, 3, 4]))
        trans_b = draw(st.booleans())
        key = (kind, c, c_out, trans_b)
        w_shape = (c_out, c) if (kind == "Gemm" and trans_b) else (c, c_out)
        if key in weights and draw(st.booleans()):
            w = weights[key]  # shared weight
        else:
            w = weights[key] = b.init("w", b.rng.standard_normal(w_shape) / np.sqrt(c))
        y = b.name(kind.lower())
        if kind == "Gemm":
            ins = [x, w] + ([b.init("c", b.rng.standard_normal(c_out))] if draw(st.booleans()) else [])
            b.nodes.append(
                helper.make_node("Gemm", ins, [y], name=y, transB=int(trans_b), alpha=draw(st.sampled_from([1.0, 0.5])))
            )
        else:
            b.nodes.append(helper.make_node("MatMul", [x, w], [y], name=y))
            if draw(st.booleans()):
                z = b.name("add")
                b.nodes.append(helper.make_node("Add", [y, b.init("bias", b.rng.standard_normal(c_out))], [z], name=z))
                y = z
        return y, [shape[0], c_out]
    kind = draw(st.sampled_from(["Conv", "Conv", "ConvTranspose"]))
    c_out = draw(st.sampled_from([c, 4, 6]))
    group = 2 if (kind == "Conv" and c % 2 == 0 and c_out % 2 == 0 and draw(st.booleans())) else 1
    k = draw(st.sampled_from([1, 3]))
    spatial = rank - 2
    w_shape = (c_out, c // group, *[k] * spatial) if kind == "Conv" else (c, c_out // group, *[k] * spatial)
    key = (kind, w_shape, group)
    if key in weights and draw(st.booleans()):
        w = weights[key]
    else:
        w = weights[key] = b.init("w", b.rng.standard_normal(w_shape) / np.sqrt(c * k**spatial))
    ins = [x, w] + ([b.init("bias", b.rng.standard_normal(c_out))] if draw(st.booleans()) else [])
    y = b.name(kind.lower())
    pads = [k // 2] * (2 * spatial)
    b.nodes.append(helper.make_node(kind, ins, [y], name=y, group=group, pads=pads, kernel_shape=[k] * spatial))
    return y, [shape[0], c_out, *shape[2:]]


def _inplace_abn(b: Builder, draw, x: str, shape: list[int]) -> str:
    act = draw(st.sampled_from(list(Activation)))
    layout = Layout.NHWC if (len(shape) > 2 and draw(st.integers(0, 3)) == 0) else Layout.NCHW
    attrs = InplaceABNAttrs(
        epsilon=draw(st.sampled_from([1e-5, 1e-3, 0.0])),
        momentum=draw(st.sampled_from([0.9, 0.5])),
        act=act,
        act_alpha=draw(st.sampled_from([0.01, 0.3, 1.0, 2.0])) if act is not Activation.IDENTITY else 1.0,
        training_mode=int(draw(st.integers(0, 6)) == 0),
        data_layout=layout,
    )
    c = shape[1]
    params = [
        b.rng.uniform(0.5, 1.5, c),
        b.rng.standard_normal(c),
        b.rng.standard_normal(c) * 0.3,
        b.rng.uniform(0.5, 2.0, c),
    ]
    if draw(st.integers(0, 8)) == 0:  # fed statistics: not foldable
        names = []
        for role, value in zip(("scale", "B", "mean", "var"), params):
            name = b.name(role)
            b.inputs.append(helper.make_tensor_value_info(name, b.elem(), [c]))
            b.feeds[name] = value.astype(b.dtype)
            names.append(name)
    else:
        names = [b.init(role, value) for role, value in zip(("scale", "B", "mean", "var"), params)]
    src = x
    if layout is Layout.NHWC:
        src = b.name("to_nhwc")
        perm = [0, *range(2, len(shape)), 1]
        b.nodes.append(helper.make_node("Transpose", [x], [src], name=src, perm=perm))
    y = b.name("abn")
    b.nodes.append(make_node([src, *names], [y], attrs, name=y))
    if layout is Layout.NHWC:
        back = b.name("to_nchw")
        rank = len(shape)
        b.nodes.append(helper.make_node("Transpose", [y], [back], name=back, perm=[0, rank - 1, *range(1, rank - 1)]))
        y = back
    return y


@st.composite
def random_graphs(draw) -> tuple[onnx.ModelProto, dict[str, np.ndarray], type]:
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rank = draw(st.sampled_from([2, 3, 4]))
    c = draw(st.sampled_from([2, 4]))
    shape = [2, c] + [3] * (rank - 2)
    b = Builder(dtype, np.random.default_rng(draw(st.integers(0, 2**16))))
    b.inputs.append(helper.make_tensor_value_info("X", b.elem(), shape))
    b.feeds["X"] = b.rng.standard_normal(shape).astype(dtype)
    x, weights = "X", {}
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.integers(0, 3)):  # mostly a layer first; sometimes InplaceABN on the previous node directly
            x, shape = _layer(b, draw, x, shape, weights)
        if draw(st.integers(0, 5)) == 0:  # a second consumer of the producer's output
            extra = b.name("extra")
            b.nodes.append(helper.make_node("Neg", [x], [extra], name=extra))
            b.outputs.append(helper.make_tensor_value_info(extra, b.elem(), shape))
        if draw(st.integers(0, 3)):
            x = _inplace_abn(b, draw, x, shape)
    b.outputs.insert(0, helper.make_tensor_value_info(x, b.elem(), shape))
    graph = helper.make_graph(
        b.nodes, "fuzz", b.inputs, b.outputs, [numpy_helper.from_array(v, k) for k, v in b.inits.items()]
    )
    model = make_model(graph, opset_imports=[helper.make_opsetid("", 17), opset_import()])
    return model, b.feeds, dtype


def _assert_equivalent(actual: list, expected: list, dtype: type) -> None:
    rtol, atol = FUZZ_TOLERANCE[dtype]
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64), rtol=rtol, atol=atol)


def _iabn_count(model: onnx.ModelProto) -> int:
    return sum(n.domain == iabn_onnx.DOMAIN for n in model.graph.node)


def _fold_property(case):
    model, feeds, dtype = case
    before = model.SerializeToString()
    expected = reference_evaluator(model).run(None, feeds)
    folded, report = fold_with_report(model)
    assert model.SerializeToString() == before
    onnx.checker.check_model(folded, full_check=True)
    assert _iabn_count(folded) <= _iabn_count(model)
    assert report.count + len(report.left) == _iabn_count(model)
    for _, how in report.folded:  # shown by --hypothesis-show-statistics: which rules the examples reach
        event(how.split(" '")[0])
    for _, why in report.left:
        event("left: " + why.split("(")[0][:40])
    _assert_equivalent(reference_evaluator(folded).run(None, feeds), expected, dtype)


def _convert_property(case):
    model, feeds, dtype = case
    bn_model = batchnorm_form(model)
    expected = reference_evaluator(model).run(None, feeds)
    converted, report = iabn_onnx.passes.convert.convert_with_report(bn_model, function_fallback=False)
    onnx.checker.check_model(converted, full_check=True)
    assert len(report.converted) == _iabn_count(model)
    _assert_equivalent(reference_evaluator(converted).run(None, feeds), expected, dtype)


@given(random_graphs())
def test_fold_keeps_random_graphs_equivalent(case):
    _fold_property(case)


@given(random_graphs())
def test_convert_keeps_random_batchnorm_graphs_equivalent(case):
    _convert_property(case)


@pytest.mark.slow
@settings(max_examples=2000)
@given(random_graphs())
def test_fold_keeps_random_graphs_equivalent_2000(case):
    _fold_property(case)


@pytest.mark.slow
@settings(max_examples=2000)
@given(random_graphs())
def test_convert_keeps_random_batchnorm_graphs_equivalent_2000(case):
    _convert_property(case)
