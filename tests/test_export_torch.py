"""export_torch(): PyTorch models with mapillary / timm InplaceABN modules -> ONNX InplaceABN nodes.

Reference: the torch module itself (eval output, or train-mode output for
training-mode export), on inputs with a different batch size than the export's.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch  # the test extra installs it: no skip
from onnx import numpy_helper

import iabn_onnx
from iabn_onnx.exporters.torch_export import TorchExportError
from tests.conftest import assert_close
from tests.torch_replicas import ABN, InPlaceABN, InplaceAbn, InPlaceABNSync, randomize

BATCH = torch.export.Dim("batch", min=2, max=64)


def _iabn_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == iabn_onnx.DOMAIN and n.op_type == iabn_onnx.OP_TYPE]


def _export(net, example, training=None, **kwargs) -> onnx.ModelProto:
    dynamic = ({0: BATCH},)
    return iabn_onnx.export_torch(net, (example,), training=training, dynamic_shapes=dynamic, **kwargs)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The kernel's output (fold_frozen=False); the default session (frozen nodes folded) must agree."""
    outputs = []
    for fold_frozen in (False, True):
        session = iabn_onnx.InferenceSession(model, fold_frozen=fold_frozen)
        outputs.append(session.run(None, {session.get_inputs()[0].name: x})[0])
    assert_close(outputs[1], outputs[0])
    return outputs[0]


def _conv_block(norm: torch.nn.Module, channels: int = 6) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, channels, 3, padding=1), norm, torch.nn.Conv2d(channels, 4, 1))


# (case id, module factory, expected act, expected act_alpha)
MODULE_CASES = [
    ("InPlaceABN-leaky", lambda: InPlaceABN(6, activation="leaky_relu", activation_param=0.01), "leaky_relu", 0.01),
    ("InPlaceABN-elu", lambda: InPlaceABN(6, activation="elu", activation_param=0.7), "elu", 0.7),
    ("InPlaceABN-identity", lambda: InPlaceABN(6, activation="identity"), "identity", 1.0),
    ("InPlaceABN-eps1e-3-mom0.3", lambda: InPlaceABN(6, eps=1e-3, momentum=0.3), "leaky_relu", 0.01),
    ("InPlaceABN-affine-false", lambda: InPlaceABN(6, affine=False, activation="elu"), "elu", 0.01),
    ("InPlaceABNSync", lambda: InPlaceABNSync(6, activation="leaky_relu", activation_param=0.2), "leaky_relu", 0.2),
    ("ABN-leaky", lambda: ABN(6, activation="leaky_relu", activation_param=0.1), "leaky_relu", 0.1),
    ("ABN-relu", lambda: ABN(6, activation="relu"), "identity", 1.0),
    ("ABN-affine-false", lambda: ABN(6, affine=False, activation="identity"), "identity", 1.0),
    ("timm-InplaceAbn-leaky", lambda: InplaceAbn(6, act_layer="leaky_relu", act_param=1e-3), "leaky_relu", 1e-3),
    ("timm-InplaceAbn-elu", lambda: InplaceAbn(6, act_layer="elu", act_param=1.0), "elu", 1.0),
    ("timm-InplaceAbn-noact", lambda: InplaceAbn(6, apply_act=False), "identity", 1.0),
]


@pytest.mark.parametrize(("factory", "act", "alpha"), [c[1:] for c in MODULE_CASES], ids=[c[0] for c in MODULE_CASES])
def test_eval_export_matches_torch(factory, act, alpha):
    net = randomize(_conv_block(factory()), seed=1).eval()
    norm = net[1]
    model = _export(net, torch.randn(2, 3, 8, 8))
    onnx.checker.check_model(model, full_check=True)
    nodes = _iabn_nodes(model)
    assert len(nodes) == 1
    attrs = iabn_onnx.InplaceABNAttrs.from_node(nodes[0])
    assert (attrs.act.value, attrs.training_mode) == (act, 0)
    assert attrs.act_alpha == pytest.approx(alpha, rel=1e-6)
    assert attrs.epsilon == pytest.approx(norm.eps, rel=1e-6)
    assert attrs.momentum == pytest.approx(1 - norm.momentum, rel=1e-6)
    x = np.random.default_rng(3).standard_normal((5, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert_close(_run(model, x), expected)


def test_effective_scale_is_abs_weight_plus_eps():
    """mapillary scales by |w|+eps: the model stores that, not w (the hand-folding bug)."""
    norm = randomize(InPlaceABN(6, eps=1e-3), seed=2)
    assert (norm.weight < 0).any()
    model = _export(_conv_block(norm).eval(), torch.randn(2, 3, 8, 8))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    scale = inits[_iabn_nodes(model)[0].input[1]]
    np.testing.assert_allclose(scale, norm.weight.detach().abs().numpy() + 1e-3, rtol=1e-7)


@pytest.mark.parametrize(
    "factory",
    [
        lambda: InPlaceABN(6, activation="leaky_relu", activation_param=0.05),
        lambda: ABN(6, activation="elu"),
        lambda: InplaceAbn(6, act_layer="elu"),
    ],
    ids=["InPlaceABN", "ABN", "timm-InplaceAbn"],
)
def test_training_mode_export_matches_torch_train_forward(factory):
    net = randomize(_conv_block(factory()), seed=4).eval()
    model = _export(net, torch.randn(2, 3, 8, 8), training=torch.onnx.TrainingMode.TRAINING)
    onnx.checker.check_model(model, full_check=True)
    (node,) = _iabn_nodes(model)
    attrs = iabn_onnx.InplaceABNAttrs.from_node(node)
    assert attrs.training_mode == 1
    assert attrs.momentum == pytest.approx(0.9, rel=1e-6)  # PyTorch momentum 0.1 -> ONNX 0.9
    assert not net.training and not net[1].training, "export must restore the module's mode"
    x = np.random.default_rng(5).standard_normal((4, 3, 8, 8)).astype(np.float32)
    reference = copy.deepcopy(net).train()  # train forward updates buffers: use a copy
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    assert_close(_run(model, x), expected)


def test_no_running_stats_exports_batch_statistics():
    """track_running_stats=False: mapillary normalizes with batch statistics even in eval."""
    net = randomize(_conv_block(InPlaceABN(6, track_running_stats=False, activation="elu")), seed=6).eval()
    model = _export(net, torch.randn(2, 3, 8, 8))
    assert iabn_onnx.InplaceABNAttrs.from_node(_iabn_nodes(model)[0]).training_mode == 1
    x = np.random.default_rng(7).standard_normal((3, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert_close(_run(model, x), expected)


def test_cumulative_momentum_uses_next_step_factor():
    norm = InPlaceABN(6, momentum=None)
    norm.num_batches_tracked.fill_(3)
    model = _export(_conv_block(norm).eval(), torch.randn(2, 3, 8, 8), training=torch.onnx.TrainingMode.TRAINING)
    assert iabn_onnx.InplaceABNAttrs.from_node(_iabn_nodes(model)[0]).momentum == pytest.approx(1 - 1 / 4)


@pytest.mark.parametrize(
    ("shape", "net_factory"),
    [
        ((4, 6), lambda: torch.nn.Sequential(torch.nn.Linear(5, 6), InPlaceABN(6, activation="elu"))),
        ((4, 6, 9), lambda: torch.nn.Sequential(torch.nn.Conv1d(5, 6, 3), InPlaceABN(6))),
        ((2, 6, 4, 5, 5), lambda: torch.nn.Sequential(torch.nn.Conv3d(5, 6, 1), InplaceAbn(6, act_layer="elu"))),
    ],
    ids=["rank2-linear", "rank3-conv1d", "rank5-conv3d"],
)
def test_ranks(shape, net_factory):
    net = randomize(net_factory(), seed=8).eval()
    in_shape = (shape[0], 5, *shape[2:])
    model = _export(net, torch.randn(*in_shape))
    x = np.random.default_rng(9).standard_normal((3, *in_shape[1:])).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert_close(_run(model, x), expected)


def test_float64_model():
    # onnxruntime's CPU provider has no float64 Conv: a Linear network. ONNX float attributes are
    # float32, so act_alpha is one float32 represents exactly (0.3 would differ by 4e-8 relative).
    net = torch.nn.Sequential(torch.nn.Linear(5, 6), InPlaceABN(6, activation="leaky_relu", activation_param=0.25))
    net = randomize(net, seed=10).double().eval()
    model = _export(net, torch.randn(2, 5, dtype=torch.float64))
    x = np.random.default_rng(11).standard_normal((3, 5))
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert_close(_run(model, x), expected)


def test_residual_network_one_node_per_module_and_folds():
    """A small residual net: every module becomes a node; the fold of the export matches too."""

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
            self.abn1 = InPlaceABN(8, activation="leaky_relu", activation_param=1e-3)
            self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
            self.abn2 = InPlaceABN(8, activation="identity")

        def forward(self, x):
            return torch.relu(x + self.abn2(self.conv2(self.abn1(self.conv1(x)))))

    net = randomize(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), InPlaceABN(8), Block(), Block()), 12)
    net.eval()
    model = _export(net, torch.randn(2, 3, 16, 16))
    assert len(_iabn_nodes(model)) == 5
    x = np.random.default_rng(13).standard_normal((2, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert_close(_run(model, x), expected)
    folded = iabn_onnx.fold(model)
    assert not _iabn_nodes(folded)
    import onnxruntime as ort

    plain = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"])
    assert_close(plain.run(None, {plain.get_inputs()[0].name: x})[0], expected)


def test_model_is_left_as_it_was():
    net = randomize(_conv_block(InPlaceABN(6)), seed=14).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    _export(net, torch.randn(2, 3, 8, 8))
    assert net.training and net[1].training
    assert "forward" not in net[1].__dict__
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_writes_file(tmp_path):
    net = randomize(_conv_block(InPlaceABN(6)), seed=15).eval()
    path = tmp_path / "net.onnx"
    model = iabn_onnx.export_torch(net, (torch.randn(2, 3, 8, 8),), f=path)
    assert onnx.load(path) == model


@pytest.mark.parametrize(
    ("factory", "fault"),
    [
        (lambda: InPlaceABN(6, activation="relu"), "activation 'relu' is only valid for ABN"),
        (lambda: ABN(6, activation="gelu"), "unsupported activation 'gelu'"),
        (lambda: InPlaceABN(6, eps=0.5), "epsilon"),
        (lambda: InPlaceABN(6, activation="elu", activation_param=-1.0), "act_alpha"),
    ],
    ids=["relu-in-InPlaceABN", "unknown-act", "huge-eps", "negative-alpha"],
)
def test_unexportable_module_names_the_module(factory, fault):
    net = _conv_block(factory()).eval()
    with pytest.raises(TorchExportError, match=fault) as info:
        _export(net, torch.randn(2, 3, 8, 8))
    assert "1 (" in str(info.value)  # the module path in the Sequential
    assert "forward" not in net[1].__dict__


def test_lookalike_class_without_attributes_exports_as_torch_would():
    class ABN(torch.nn.Module):  # e.g. segmentation_models_pytorch's: a BatchNorm submodule, no eps attribute
        def __init__(self):
            super().__init__()
            self.bn = torch.nn.BatchNorm2d(6)

        def forward(self, x):
            return torch.relu(self.bn(x))

    net = randomize(_conv_block(ABN()), seed=16).eval()
    model = _export(net, torch.randn(2, 3, 8, 8))
    assert not _iabn_nodes(model)
    x = np.random.default_rng(17).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert_close(_run(model, x), expected)
