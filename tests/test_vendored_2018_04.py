"""The April-2018 copy (``tests/vendored_2018_04``: CCNet-style ``libs/``, InPlaceABNSync with devices
and queues) on a CPU machine: import, eval forward, export, fold and the CLI.

References: the float64 numpy arithmetic of the published modules (``tests.test_torch_fallback.reference``)
and the network's own eager output.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import onnxruntime as ort  # noqa: E402

import iabn_onnx  # noqa: E402
from iabn_onnx.torch_fallback import uninstall_torch_fallback  # noqa: E402
from tests.conftest import assert_close, rng  # noqa: E402
from tests.test_torch_fallback import cli, randomize, reference, run_python  # noqa: E402

COPY = Path(__file__).parent / "vendored_2018_04"
_OWN_MODULES = ("libs", "functions", "ccnet_tiny")


@pytest.fixture
def copy_2018_04():
    iabn_onnx.install_torch_fallback()
    saved_path = list(sys.path)
    sys.path.insert(0, str(COPY))
    yield
    sys.path[:] = saved_path
    for name in [n for n in sys.modules if n.split(".")[0] in _OWN_MODULES]:
        del sys.modules[name]
    uninstall_torch_fallback()


def _net():
    import ccnet_tiny

    return randomize(ccnet_tiny.build()).eval()


def test_import_and_forward_fail_without_the_fallback_and_work_with_it():
    bare = run_python("import ccnet_tiny", COPY)
    assert bare.returncode != 0 and "CUDA_HOME" in bare.stderr
    fixed = run_python(
        "import iabn_onnx; iabn_onnx.install_torch_fallback(); import torch, ccnet_tiny;"
        "print(ccnet_tiny.build().eval()(torch.randn(1, 3, 16, 16)).shape)",
        COPY,
    )
    assert fixed.returncode == 0, fixed.stderr
    assert "torch.Size([1, 4, 16, 16])" in fixed.stdout


@pytest.mark.parametrize(("activation", "slope"), [("none", 0.01), ("leaky_relu", 0.2), ("leaky_relu", 0.0)])
def test_sync_module_eval_matches_the_published_arithmetic(copy_2018_04, activation, slope):
    from libs import InPlaceABNSync

    m = randomize(InPlaceABNSync(5, activation=activation, slope=slope)).eval()
    assert m.devices == [-1] and m.worker_queues == []  # a single device: its own master
    x = rng(1).standard_normal((2, 5, 4, 3)).astype(np.float32)
    with torch.no_grad():
        got = m(torch.from_numpy(x.copy())).numpy()  # in place: it overwrites its input
    params = [t.detach().numpy() for t in (m.weight, m.bias, m.running_mean, m.running_var)]
    act = "identity" if activation == "none" else activation
    assert_close(got, reference(x, *params, m.eps, act, slope).astype(np.float32))


def test_explicit_devices_are_overridden_only_without_cuda(copy_2018_04):
    from libs import InPlaceABNSync

    m = InPlaceABNSync(3, devices=[0, 1])
    assert m.devices == [-1] and m.worker_ids == [] and m.master_queue.maxsize == 0
    uninstall_torch_fallback()

    class Later(torch.nn.Module):  # defined after uninstall: not adapted
        def __init__(self, devices=None):
            super().__init__()
            self.devices = devices or []

        def forward(self, x):
            return self.master_queue, self.worker_queues

    assert Later().devices == []


def test_network_exports_folds_and_matches_eager(copy_2018_04):
    net = _net()
    x = torch.from_numpy(rng(2).standard_normal((2, 3, 16, 16)).astype(np.float32))
    with torch.no_grad():
        want = net(x).numpy()
    proto = iabn_onnx.export_torch(net, (x,))
    assert sum(n.op_type == "InplaceABN" for n in proto.graph.node) == 6
    feed = {proto.graph.input[0].name: x.numpy()}
    assert_close(iabn_onnx.InferenceSession(proto).run(None, feed)[0], want)
    folded = iabn_onnx.fold(proto)
    assert not any(n.op_type == "InplaceABN" for n in folded.graph.node)
    plain = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"])
    assert_close(plain.run(None, feed)[0], want)
    plain_net = iabn_onnx.replace_with_batchnorm(net, (x,))
    with torch.no_grad():
        np.testing.assert_allclose(plain_net(x).numpy(), want, rtol=1e-6, atol=1e-6)


def test_cli_export_torch_with_a_dataparallel_checkpoint(copy_2018_04, tmp_path):
    net = _net()
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, ckpt)
    out = tmp_path / "ccnet.onnx"
    proc = cli(
        "export-torch", "ccnet_tiny:build", "--checkpoint", str(ckpt), "--input-shape", "1,3,16,16", "-o", str(out),
        cwd=COPY,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "6 InplaceABN node(s)" in proc.stdout
    x = rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    assert_close(iabn_onnx.InferenceSession(str(out)).run(None, {"input": x})[0], want)
