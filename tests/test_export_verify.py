"""``export_torch`` verifies what it writes: every output against the eager model, at a second size on every
dynamic axis; the CLI's ``--dynamic-hw``; checkpoints read and fitted by the library.

References: the torch module's own eval output; sizes and messages computed by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import onnxruntime as ort  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import iabn_onnx  # noqa: E402
from iabn_onnx.exporters.torch_checkpoint import TorchCheckpointError, load_checkpoint  # noqa: E402
from iabn_onnx.exporters.torch_export import export_torch_with_report  # noqa: E402
from iabn_onnx.exporters.torch_verify import ExportVerifyError, second_size  # noqa: E402
from tests.conftest import assert_close, rng  # noqa: E402
from tests.test_torch_fallback import cli, randomize  # noqa: E402
from tests.test_vendored_2018_04 import copy_2018_04  # noqa: E402, F401
from tests.torch_replicas import InPlaceABN  # noqa: E402


class SegNet(nn.Module):
    """conv/InPlaceABN encoder at stride 4, two heads upsampled to the input size: (seg, [edge])."""

    def __init__(self, psp: bool = False):
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), InPlaceABN(8),
            nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False), InPlaceABN(8, activation="elu", activation_param=1.0),
        )  # fmt: skip
        self.psp = nn.AdaptiveAvgPool2d(3) if psp else None
        self.seg = nn.Conv2d(8, 4, 1)
        self.edge = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        f = self.enc(x)
        if self.psp is not None:
            f = f + F.interpolate(self.psp(f), size=f.shape[2:], mode="bilinear", align_corners=False)
        up = lambda t: F.interpolate(t, size=x.shape[2:], mode="bilinear", align_corners=False)
        return up(self.seg(f)), [up(self.edge(f))]


def _net(psp: bool = False) -> nn.Module:
    return randomize(SegNet(psp)).eval()


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(rng(seed).standard_normal(shape).astype(np.float32))


def test_names_follow_one_rule_and_every_output_is_verified():
    net = _net()
    proto, report = export_torch_with_report(net, (_x(1, 3, 32, 32),))
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["output.0", "output.1.0"]
    assert len(report.sizes) == 1 and set(report.sizes[0][1]) == {"output.0", "output.1.0"}


def test_dynamic_height_and_width_are_verified_at_a_second_size_and_run_at_a_third():
    net = _net()
    h, w = torch.export.Dim("h"), torch.export.Dim("w")
    proto, report = export_torch_with_report(net, (_x(1, 3, 32, 32),), dynamic_shapes=({2: h, 3: w},))
    assert [s for s, _ in report.sizes] == [[[1, 3, 32, 32]], [[1, 3, 40, 24]]]
    x = _x(1, 3, 48, 56, seed=3)
    with torch.no_grad():
        want = [t.numpy() for t in (net(x)[0], net(x)[1][0])]
    got = iabn_onnx.InferenceSession(proto).run(None, {"input": x.numpy()})
    for g, e in zip(got, want):
        assert_close(g, e)


def test_fixed_bin_adaptive_pooling_with_a_dynamic_size_is_refused_naming_the_module(tmp_path):
    net = _net(psp=True)
    h, w = torch.export.Dim("h"), torch.export.Dim("w")
    out = tmp_path / "psp.onnx"
    try:
        proto = iabn_onnx.export_torch(net, (_x(1, 3, 32, 32),), out, dynamic_shapes=({2: h, 3: w},))
    except ExportVerifyError as exc:
        assert "second size [[1, 3, 40, 24]]" in str(exc) and "psp (AdaptiveAvgPool2d(3))" in str(exc)
        assert not out.exists()
    else:  # a torch that exports it size-generically: then it must be right at another size
        x = _x(1, 3, 48, 40, seed=4)
        with torch.no_grad():
            want = net(x)[0].numpy()
        assert_close(iabn_onnx.InferenceSession(proto).run(None, {"input": x.numpy()})[0], want)
    fixed = iabn_onnx.export_torch(net, (_x(1, 3, 32, 32),))  # a fixed size is exact
    assert fixed.graph.output[0].name == "output.0"


def test_an_export_that_differs_from_eager_is_refused_unless_verify_is_off(copy_2018_04, tmp_path):  # noqa: F811
    """The April-2018 copy's InPlaceABN overwrites its input in eager mode; a model that reads that input
    again sees the activated values there, while the exported (functional) graph does not."""
    from libs import InPlaceABN as InPlace2018

    class ReadsItsInputAgain(nn.Module):
        def __init__(self):
            super().__init__()
            self.abn = InPlace2018(3)

        def forward(self, x):
            return self.abn(x) + x

    net = randomize(ReadsItsInputAgain()).eval()
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportVerifyError, match="output output differs from the model's eval output by"):
        iabn_onnx.export_torch(net, (_x(2, 3, 4, 4),), out)
    assert not out.exists()
    unchecked = iabn_onnx.export_torch(net, (_x(2, 3, 4, 4),), out, verify=False)
    assert out.exists() and unchecked.graph.output[0].name == "output"


def test_second_sizes_differ_and_keep_the_alignment():
    assert second_size(128, 2, 0, None) == 160 and second_size(128, 3, 1, None) == 96
    assert second_size(473, 2, 0, None) == 473 + 118 and second_size(1, 0, 0, None) == 2
    assert second_size(32, 2, 0, torch.export.Dim("h", max=32)) == 24  # within the Dim's bounds
    for size in (7, 16, 96, 224, 512):
        for k in (0, 1):
            new = second_size(size, 2 + k, k, None)
            assert (new != size and new % size != 0 and size % new != 0) or new < size


# -- the CLI ------------------------------------------------------------------------------
def _write_module(tmp_path, psp: bool) -> None:
    (tmp_path / "segnet.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parents[1])!r})\n"
        "from tests.test_export_verify import SegNet\n"
        f"def build():\n    return SegNet(psp={psp})\n"
    )


@pytest.mark.parametrize("psp", [False, True], ids=["plain", "psp"])
def test_cli_dynamic_hw(tmp_path, psp):
    _write_module(tmp_path, psp)
    out = tmp_path / "seg.onnx"
    args = ["export-torch", "segnet:build", "--input-shape", "1,3,32,32", "--dynamic-hw", "-o", str(out)]
    proc = cli(*args, cwd=tmp_path)
    if proc.returncode == 0:  # psp too, should a torch export adaptive pooling size-generically
        assert "verify at 1x3x32x32: 2 output(s)" in proc.stdout and "verify at 1x3x40x24: 2 output(s)" in proc.stdout
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        assert session.run(None, {"input": _x(1, 3, 24, 48).numpy()})[0].shape == (1, 4, 24, 48)
    else:
        assert psp and proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "psp (AdaptiveAvgPool2d(3))" in proc.stderr and "nothing written" in proc.stderr
        assert not out.exists()


# -- checkpoints, read by the library -------------------------------------------------------
def test_load_checkpoint_faults(tmp_path):
    net = _net()
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, good)
    fresh = SegNet()
    assert load_checkpoint(fresh, good) is fresh
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in net.state_dict().items())
    text = tmp_path / "text.pth"
    text.write_text("not a checkpoint\n")
    with pytest.raises(TorchCheckpointError, match=r"is not a torch\.save file"):
        load_checkpoint(SegNet(), text)
    truncated = tmp_path / "trunc.pth"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(TorchCheckpointError, match="truncated or damaged"):
        load_checkpoint(SegNet(), truncated)
    wide = randomize(nn.Sequential(nn.Conv2d(3, 9, 1), nn.Conv2d(9, 9, 1), nn.Conv2d(9, 9, 1), nn.Conv2d(9, 9, 1)))
    narrow = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1))
    torch.save(wide.state_dict(), tmp_path / "wide.pth")
    with pytest.raises(TorchCheckpointError) as info:
        load_checkpoint(narrow, tmp_path / "wide.pth")
    message = str(info.value)
    assert "8 shape mismatch(es): 0.weight: [9, 3, 1, 1] in the file, [4, 3, 1, 1] in the model" in message
    assert message.endswith("and 5 more") and len(message) < 400


@pytest.mark.parametrize(
    ("content", "says"),
    [("text", "is not a torch.save file"), ("truncated", "truncated or damaged")],
)
def test_cli_checkpoint_faults_are_one_line(tmp_path, content, says):
    _write_module(tmp_path, False)
    path = tmp_path / "ckpt.pth"
    if content == "text":
        path.write_text("hello\n")
    else:
        torch.save(SegNet().state_dict(), path)
        path.write_bytes(path.read_bytes()[:300])
    out = tmp_path / "o.onnx"
    proc = cli("export-torch", "segnet:build", "--checkpoint", str(path), "--input-shape", "1,3,32,32",
               "-o", str(out), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert says in proc.stderr and not out.exists()
