"""export_torch() on the pre-1.0 InplaceABN module, the functional form, and user-described classes.

Reference: the replica modules' own eval (or train) output, computed by their numpy
"extension"; plugin (kernel and default session) and folded (plain onnxruntime) must match.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import iabn_onnx
from iabn_onnx.exporters.torch_export import FunctionalForm, InplaceABNParams, TorchExportError
from tests import torch_replicas as v1
from tests import torch_replicas_pre1 as pre1
from tests.conftest import assert_close
from tests.torch_replicas import InplaceAbn, randomize
from tests.torch_replicas import inplace_abn as v1_inplace_abn
from tests.torch_replicas_pre1 import inplace_abn, inplace_abn_sync

BATCH = torch.export.Dim("batch", min=2, max=64)


def _nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == iabn_onnx.DOMAIN and n.op_type == iabn_onnx.OP_TYPE]


def _export(net, example, **kwargs) -> onnx.ModelProto:
    return iabn_onnx.export_torch(net, (example,), dynamic_shapes=({0: BATCH},), **kwargs)


def _check_all_paths(model: onnx.ModelProto, x: np.ndarray, expected: np.ndarray, folded_nodes: int = 0) -> None:
    """Kernel-only session, default session, and the folded model on plain onnxruntime."""
    for fold_frozen in (False, True):
        session = iabn_onnx.InferenceSession(model, fold_frozen=fold_frozen)
        assert_close(session.run(None, {session.get_inputs()[0].name: x})[0], expected)
    folded = iabn_onnx.fold(model)
    assert len(_nodes(folded)) == folded_nodes
    plain = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"])
    assert_close(plain.run(None, {plain.get_inputs()[0].name: x})[0], expected)


def _eval_output(net: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return copy.deepcopy(net)(torch.from_numpy(x)).numpy()


def _block(norm: torch.nn.Module, channels: int = 6) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, channels, 3, padding=1), norm, torch.nn.Conv2d(channels, 4, 1))


# (case id, factory, act, act_alpha, trailing Relu)
PRE1_CASES = [
    ("InPlaceABN-leaky", lambda: pre1.InPlaceABN(6, slope=0.05), "leaky_relu", 0.05, False),
    ("InPlaceABN-elu", lambda: pre1.InPlaceABN(6, activation="elu", slope=0.3), "elu", 1.0, False),
    ("InPlaceABN-none", lambda: pre1.InPlaceABN(6, activation="none"), "identity", 1.0, False),
    ("InPlaceABN-affine-off", lambda: pre1.InPlaceABN(6, affine=False, activation="elu"), "elu", 1.0, False),
    ("InPlaceABNSync-leaky", lambda: pre1.InPlaceABNSync(6, eps=1e-3, momentum=0.3), "leaky_relu", 0.01, False),
    ("InPlaceABNSync-affine-off", lambda: pre1.InPlaceABNSync(6, affine=False), "leaky_relu", 0.01, False),
    ("ABN-relu", lambda: pre1.ABN(6, activation="relu"), "identity", 1.0, True),
    ("ABN-elu", lambda: pre1.ABN(6, activation="elu"), "elu", 1.0, False),
    ("ABN-none-affine-off", lambda: pre1.ABN(6, affine=False, activation="none"), "identity", 1.0, False),
]


@pytest.mark.parametrize(
    ("factory", "act", "alpha", "relu"), [c[1:] for c in PRE1_CASES], ids=[c[0] for c in PRE1_CASES]
)
def test_pre1_module_exports_one_node(factory, act, alpha, relu):
    net = randomize(_block(factory()), seed=21).eval()
    norm = net[1]
    x = np.random.default_rng(22).standard_normal((3, 3, 8, 8)).astype(np.float32)
    model = _export(net, torch.randn(2, 3, 8, 8))
    onnx.checker.check_model(model, full_check=True)
    (node,) = _nodes(model)
    attrs = iabn_onnx.InplaceABNAttrs.from_node(node)
    assert (attrs.act.value, attrs.training_mode) == (act, 0)
    assert attrs.act_alpha == pytest.approx(alpha, rel=1e-6)
    assert attrs.epsilon == pytest.approx(norm.eps, rel=1e-6)
    assert attrs.momentum == pytest.approx(1 - norm.momentum, rel=1e-6)
    assert ("Relu" in [n.op_type for n in model.graph.node]) == relu
    _check_all_paths(model, x, _eval_output(net, x))


def test_replica_like_the_real_module_cannot_be_traced_by_torch():
    """Without export_torch, torch.onnx.export traces into the (stand-in) C++ extension and fails."""
    net = _block(pre1.InPlaceABNSync(6)).eval()
    with pytest.raises(torch.onnx.OnnxExporterError, match=r"Failed to export the model with torch\.export"):
        torch.onnx.export(net, (torch.randn(2, 3, 8, 8),), dynamo=True)


def test_pre1_training_export_matches_train_forward():
    net = randomize(_block(pre1.InPlaceABNSync(6, activation="elu")), seed=23).eval()
    model = _export(net, torch.randn(2, 3, 8, 8), training=torch.onnx.TrainingMode.TRAINING)
    assert iabn_onnx.InplaceABNAttrs.from_node(_nodes(model)[0]).training_mode == 1
    assert not net.training
    x = np.random.default_rng(24).standard_normal((4, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = copy.deepcopy(net).train()(torch.from_numpy(x)).numpy()
    session = iabn_onnx.InferenceSession(model)
    assert_close(session.run(None, {session.get_inputs()[0].name: x})[0], expected)


class FunctionalBlock(torch.nn.Module):
    """A user's own module calling the functional form (positional and keyword arguments)."""

    def __init__(self, channels: int, sync: bool, activation: str, slope: float, generation: str = "pre-1.0") -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.weight = torch.nn.Parameter(torch.ones(channels))
        self.bias = torch.nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.sync, self.activation, self.slope, self.generation = sync, activation, slope, generation

    def forward(self, x):
        x = self.conv(x)
        if self.sync:  # this copy returns (x, running_mean, running_var)
            y, _, _ = inplace_abn_sync(
                x, self.weight, self.bias, self.running_mean, self.running_var, self.training, 0.1, 1e-5,
                self.activation, self.slope,
            )  # fmt: skip
            return y
        if self.generation == "1.0":  # keyword arguments, as mapillary >= 1.0 allows
            return v1_inplace_abn(
                x, self.weight, self.bias, self.running_mean, self.running_var, training=self.training,
                eps=1e-5, activation=self.activation, activation_param=self.slope,
            )  # fmt: skip
        return inplace_abn(
            x, self.weight, self.bias, self.running_mean, self.running_var, self.training, 0.1, 1e-5,
            self.activation, self.slope,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("sync", "activation", "slope", "generation", "act", "alpha"),
    [
        (False, "leaky_relu", 0.1, "pre-1.0", "leaky_relu", 0.1),
        (True, "elu", 0.1, "pre-1.0", "elu", 1.0),
        (True, "none", 0.1, "pre-1.0", "identity", 1.0),
        (False, "elu", 0.4, "1.0", "elu", 0.4),
        (False, "identity", 0.4, "1.0", "identity", 1.0),
    ],
    ids=["inplace_abn-leaky", "inplace_abn_sync-elu", "inplace_abn_sync-none", "v1-keywords-elu", "v1-identity"],
)
def test_functional_form_is_intercepted(sync, activation, slope, generation, act, alpha):
    block = FunctionalBlock(6, sync, activation, slope, generation)
    net = randomize(torch.nn.Sequential(torch.nn.Conv2d(3, 6, 1), block), 25)
    net.eval()
    model = _export(net, torch.randn(2, 3, 8, 8))
    (node,) = _nodes(model)
    attrs = iabn_onnx.InplaceABNAttrs.from_node(node)
    assert (attrs.act.value, attrs.act_alpha) == (act, pytest.approx(alpha, rel=1e-6))
    assert inplace_abn is pre1._InPlaceABN.apply or inplace_abn == pre1._InPlaceABN.apply  # restored
    assert globals()["inplace_abn_sync"] == pre1._InPlaceABNSync.apply
    assert globals()["v1_inplace_abn"] is v1.inplace_abn
    x = np.random.default_rng(26).standard_normal((3, 3, 8, 8)).astype(np.float32)
    _check_all_paths(model, x, _eval_output(net, x))


def test_functional_form_stated_explicitly():
    """An alias under another name, with its form given: what a user does when discovery cannot see it."""
    net = randomize(torch.nn.Sequential(torch.nn.Conv2d(3, 6, 1), FunctionalBlock(6, True, "elu", 0.1)), 27).eval()
    form = FunctionalForm(slope=True, returns_stats=True)
    model = _export(net, torch.randn(2, 3, 8, 8), functions={inplace_abn_sync: form})
    assert iabn_onnx.InplaceABNAttrs.from_node(_nodes(model)[0]).act_alpha == 1.0
    x = np.random.default_rng(28).standard_normal((2, 3, 8, 8)).astype(np.float32)
    _check_all_paths(model, x, _eval_output(net, x))


class MyNorm(torch.nn.Module):
    """An in-house InplaceABN copy under another name and other attribute names."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = torch.nn.Parameter(torch.randn(channels))
        self.beta = torch.nn.Parameter(torch.randn(channels))
        self.register_buffer("mu", torch.randn(channels))
        self.register_buffer("sigma2", torch.rand(channels) + 0.5)
        self.leak = 0.2

    def forward(self, x):
        y = pre1._extension(x, self.gamma, self.beta, self.mu, self.sigma2, False, 0.1, 1e-5, "leaky_relu", self.leak)
        return y


def _describe_my_norm(m: MyNorm) -> dict:
    return dict(
        weight=m.gamma, bias=m.beta, running_mean=m.mu, running_var=m.sigma2, eps=1e-5,
        activation="leaky_relu", activation_param=m.leak,
    )  # fmt: skip


@pytest.mark.parametrize("key", [MyNorm, "MyNorm"], ids=["by-class", "by-name"])
def test_user_described_class(key):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), MyNorm(6)).eval()
    model = _export(net, torch.randn(2, 3, 8, 8), modules={key: _describe_my_norm})
    (node,) = _nodes(model)
    assert iabn_onnx.InplaceABNAttrs.from_node(node).act_alpha == pytest.approx(0.2)
    x = np.random.default_rng(29).standard_normal((2, 3, 8, 8)).astype(np.float32)
    _check_all_paths(model, x, _eval_output(net, x))


def test_user_description_as_params_object():
    def describe(m):
        return InplaceABNParams(
            m.gamma, m.beta, m.mu, m.sigma2, eps=1e-5, activation="leaky_relu", activation_param=0.2
        )

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), MyNorm(6)).eval()
    model = _export(net, torch.randn(2, 3, 8, 8), modules={MyNorm: describe})
    x = np.random.default_rng(30).standard_normal((2, 3, 8, 8)).astype(np.float32)
    _check_all_paths(model, x, _eval_output(net, x))


@pytest.mark.parametrize(
    ("describe", "fault"),
    [
        (lambda m: {"weight": m.gamma, "bias": m.beta, "running_mean": m.mu, "eps": 1e-5, "activation": "elu"},
         r"1 \(MyNorm\): the description lacks 'running_var'"),
        (lambda m: {**_describe_my_norm(m), "slope": 0.1}, r"unknown field 'slope'"),
        (lambda m: 42, r"returned int"),
        (lambda m: {**_describe_my_norm(m), "activation": "gelu"}, r"unsupported activation 'gelu'"),
    ],
    ids=["missing-field", "unknown-field", "not-a-mapping", "bad-activation"],
)  # fmt: skip
def test_bad_user_description_names_module_and_fault(describe, fault):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), MyNorm(6)).eval()
    with pytest.raises(TorchExportError, match=fault):
        _export(net, torch.randn(2, 3, 8, 8), modules={MyNorm: describe})
    assert "forward" not in net[1].__dict__


class InPlaceABNSync(torch.nn.Module):
    """A look-alike named like the real class, missing an attribute, with an untraceable forward."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(channels))
        self.bias = torch.nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.eps, self.momentum = 1e-5, 0.1  # no activation / slope attributes

    def forward(self, x):
        return pre1._extension(
            x, self.weight, self.bias, self.running_mean, self.running_var, False, 0.1, 1e-5, "none", 0.0
        )


def test_unrecognized_lookalike_failure_says_which_attribute_is_missing():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), InPlaceABNSync(6)).eval()
    with pytest.raises(TorchExportError, match=r"1 \(InPlaceABNSync\): missing attribute 'activation'") as info:
        _export(net, torch.randn(2, 3, 8, 8))
    assert "modules={cls: describe}" in str(info.value)


class Mixed(torch.nn.Module):
    """Every generation in one network: pre-1.0, 1.0, timm, functional, a described class, ABN(relu)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), pre1.InPlaceABNSync(8, slope=0.02))
        self.b1 = torch.nn.Sequential(
            torch.nn.Conv2d(8, 8, 3, padding=1, bias=False), v1.InPlaceABN(8, activation="elu", activation_param=0.5)
        )
        self.b2 = FunctionalBlock(8, sync=False, activation="leaky_relu", slope=0.1)
        self.b3 = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 1), InplaceAbn(8, act_layer="leaky_relu", act_param=1e-3))
        self.b4 = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 1), pre1.ABN(8, activation="relu"))
        self.b5 = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 1), MyNorm(8))
        self.post = pre1.InPlaceABN(8, activation="none")  # after an Add: nothing to fold into

    def forward(self, x):
        x = self.stem(x)
        x = x + self.b2(self.b1(x))
        return self.post(self.b5(self.b4(self.b3(x))) + x)  # fmt: skip


def test_network_mixing_generations():
    net = randomize(Mixed(), seed=31).eval()
    model = _export(net, torch.randn(2, 3, 16, 16), modules={MyNorm: _describe_my_norm})
    onnx.checker.check_model(model, full_check=True)
    acts = [iabn_onnx.InplaceABNAttrs.from_node(n).act.value for n in _nodes(model)]
    assert acts == ["leaky_relu", "elu", "leaky_relu", "leaky_relu", "identity", "leaky_relu", "identity"]
    x = np.random.default_rng(32).standard_normal((3, 3, 16, 16)).astype(np.float32)
    _check_all_paths(model, x, _eval_output(net, x))
