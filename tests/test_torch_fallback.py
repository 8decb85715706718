"""install_torch_fallback, replace_with_batchnorm and `iabn-onnx export-torch` on a CPU machine
without the InplaceABN extension.

User code: ``tests/vendored_2018`` (a 2018 copy whose import compiles its backend with
``cpp_extension.load``) and ``tests/mapillary_1x`` (code written against ``from inplace_abn
import ...``). The independent reference is a float64 numpy computation of mapillary's
published arithmetic, written here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")

import iabn_onnx  # noqa: E402
from iabn_onnx.torch_fallback import is_stand_in, uninstall_torch_fallback  # noqa: E402
from tests.conftest import assert_close, rng  # noqa: E402

HERE = Path(__file__).parent
VENDORED = HERE / "vendored_2018"
MAPILLARY_1X = HERE / "mapillary_1x"
ABN_KEYS = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]  # mapillary 1.x's ABN


def reference(x, w, b, mean, var, eps, activation, param, abs_scale=True, training=False):
    """float64 numpy: act((x - mean)/sqrt(var + eps)·s + b), s = |w| + eps (InPlaceABN) or w (ABN)."""
    x = np.asarray(x, np.float64)
    axes = tuple(i for i in range(x.ndim) if i != 1)
    shape = [1, -1] + [1] * (x.ndim - 2)
    if training:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    s = np.ones(x.shape[1]) if w is None else (np.abs(w) + eps if abs_scale else np.asarray(w, np.float64))
    b = np.zeros(x.shape[1]) if b is None else np.asarray(b, np.float64)
    y = (x - np.reshape(mean, shape)) / np.sqrt(np.reshape(var, shape) + eps) * s.reshape(shape) + b.reshape(shape)
    if activation == "leaky_relu":
        return np.where(y >= 0, y, y * param)
    if activation == "elu":
        return np.where(y >= 0, y, param * np.expm1(np.minimum(y, 0)))
    if activation == "relu":
        return np.maximum(y, 0)
    return y


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Trained-looking parameters: negative weights, non-trivial statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if getattr(m, "running_var", None) is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if getattr(m, "weight", None) is not None and type(m).__name__ in ("ABN", "InPlaceABN", "InPlaceABNSync"):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))
    return model


@pytest.fixture
def fallback():
    """The fallback installed, the user-code folders importable; all undone afterwards."""
    iabn_onnx.install_torch_fallback()
    saved_path = list(sys.path)
    sys.path[:0] = [str(VENDORED), str(MAPILLARY_1X)]
    yield
    sys.path[:] = saved_path
    for name in [n for n in sys.modules if n.split(".")[0] in ("modules", "networks", "tiny_models")]:
        del sys.modules[name]
    uninstall_torch_fallback()


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)


# -- the import itself ------------------------------------------------------------
def test_vendored_import_fails_without_the_fallback_and_works_with_it():
    bare = run_python("import networks.tiny_net", VENDORED)
    assert bare.returncode != 0 and "CUDA_HOME" in bare.stderr  # what a user sees today
    fixed = run_python(
        "import iabn_onnx; iabn_onnx.install_torch_fallback(); import torch, networks.tiny_net as t;"
        "print(t.build().eval()(torch.randn(1, 3, 8, 8)).shape)",
        VENDORED,
    )
    assert fixed.returncode == 0, fixed.stderr
    assert "torch.Size([1, 3, 4, 4])" in fixed.stdout


def test_package_import_fails_without_the_fallback():
    bare = run_python("import inplace_abn", MAPILLARY_1X)
    assert bare.returncode != 0 and "No module named 'inplace_abn'" in bare.stderr


def test_install_is_idempotent_and_undone(fallback):
    import inplace_abn
    import torch.utils.cpp_extension as cpp

    iabn_onnx.install_torch_fallback()
    assert is_stand_in(inplace_abn)
    assert cpp.load(name="inplace_abn", sources=["x/inplace_abn.cpp", "x/inplace_abn_cuda.cu"]).__name__.endswith(
        "backend_2018"
    )
    uninstall_torch_fallback()
    assert "inplace_abn" not in sys.modules
    assert not hasattr(cpp.load, "__wrapped__")
    with pytest.raises(ImportError):
        import inplace_abn
    iabn_onnx.install_torch_fallback()  # the fixture's teardown uninstalls again


def test_other_extensions_pass_through():
    from iabn_onnx.torch_fallback import _load_backend, backend_2018

    calls = []
    load = _load_backend(lambda *a, **k: calls.append(a[0]))
    assert load(name="inplace_abn", sources=["s/inplace_abn.cpp", "s/inplace_abn_cpu.cpp"]) is backend_2018
    load("other", ["a/inplace_abn.cpp", "a/other_op.cpp"], verbose=False)  # mixed: not InplaceABN's backend
    load("mine", ["b/my_op.cu"])
    assert calls == ["other", "mine"]


def _fake_package(root: Path, built: bool) -> None:
    pkg = root / "inplace_abn"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("REAL = True\n")
    (pkg / "functions.py").write_text("from . import _backend\n")
    if built:
        (pkg / "_backend.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")


@pytest.mark.parametrize("built", [True, False])
def test_real_package_is_never_shadowed(tmp_path, built):
    """An installed (built) mapillary package wins; its source tree without _backend does not."""
    _fake_package(tmp_path, built)
    proc = run_python(
        "import iabn_onnx; iabn_onnx.install_torch_fallback(); import inplace_abn;"
        "print(getattr(inplace_abn, 'REAL', False), getattr(inplace_abn, 'IABN_ONNX_FALLBACK', False))",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == (["True", "False"] if built else ["False", "True"])


# -- the stand-in package: mapillary 1.x's API ------------------------------------
def test_state_dict_keys_and_strict_load(fallback):
    from inplace_abn import ABN, InPlaceABN, InPlaceABNSync

    for cls in (ABN, InPlaceABN, InPlaceABNSync):
        assert list(cls(4).state_dict()) == ABN_KEYS
        assert list(cls(4, affine=False, track_running_stats=False).state_dict()) == []
    saved = randomize(torch.nn.Sequential(InPlaceABN(4))).state_dict()
    del saved["0.num_batches_tracked"]  # a version-1 checkpoint: mapillary fills in the counter
    saved._metadata = {"0": {"version": 1}}
    target = torch.nn.Sequential(InPlaceABN(4))
    target.load_state_dict(saved, strict=True)
    assert torch.equal(target[0].running_var, saved["0.running_var"])


@pytest.mark.parametrize(
    ("cls_name", "activation", "param"),
    [
        ("InPlaceABN", "leaky_relu", 0.2),
        ("InPlaceABN", "elu", 0.5),
        ("InPlaceABNSync", "identity", 0.01),
        ("ABN", "relu", 0.01),
        ("ABN", "elu", 1.3),
    ],
)
def test_eval_and_training_forward_match_the_published_arithmetic(fallback, cls_name, activation, param):
    import inplace_abn

    module = randomize(getattr(inplace_abn, cls_name)(6, eps=1e-3, activation=activation, activation_param=param))
    abs_scale = cls_name != "ABN"
    x = torch.from_numpy(rng(3).standard_normal((4, 6, 5, 3)).astype(np.float32))
    w, b = module.weight.detach().numpy(), module.bias.detach().numpy()
    mean0, var0 = module.running_mean.numpy().copy(), module.running_var.numpy().copy()
    module.eval()
    assert_close(module(x).detach().numpy(), reference(x, w, b, mean0, var0, 1e-3, activation, param, abs_scale))
    module.train()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # inplace_abn_sync outside a process group says so
        y = module(x)
    assert_close(y.detach().numpy(), reference(x, w, b, None, None, 1e-3, activation, param, abs_scale, True))
    x64 = x.numpy().astype(np.float64)
    axes = (0, 2, 3)
    n = x64.size // 6
    assert_close(module.running_mean.numpy(), 0.9 * mean0 + 0.1 * x64.mean(axis=axes))
    assert_close(module.running_var.numpy(), 0.9 * var0 + 0.1 * x64.var(axis=axes) * n / (n - 1))  # unbiased
    assert int(module.num_batches_tracked) == 1


def test_cumulative_momentum_and_gradients(fallback):
    from inplace_abn import InPlaceABN

    module = randomize(InPlaceABN(3, momentum=None, activation="leaky_relu", activation_param=0.1)).train()
    xs = [torch.from_numpy(rng(s).standard_normal((4, 3, 2, 2)).astype(np.float32)) for s in range(3)]
    for x in xs:
        module(x)
    means = [x.numpy().astype(np.float64).mean(axis=(0, 2, 3)) for x in xs]
    assert_close(module.running_mean.numpy(), np.mean(means, axis=0))  # cumulative average from zero, 1/k factors
    w = module.weight.detach().clone().double().requires_grad_()
    x = xs[0].double().requires_grad_()
    torch.autograd.gradcheck(
        lambda x, w: iabn_onnx.torch_fallback.arith.inplace_abn_forward(
            x, w, module.bias.double(), None, None, True, 0.1, 1e-5, "leaky_relu", 0.1
        ),
        (x, w),
    )


def test_single_sample_per_channel_is_refused_in_training(fallback):
    from inplace_abn import InPlaceABN

    with pytest.raises(ValueError, match="single sample per channel"):
        InPlaceABN(3).train()(torch.ones(1, 3))


# -- the 2018 backend -------------------------------------------------------------
def test_2018_backend_functions_match_the_published_source(fallback):
    from iabn_onnx.torch_fallback import backend_2018 as be

    x = torch.from_numpy(rng(5).standard_normal((3, 4, 5)).astype(np.float64))
    w = torch.tensor([0.5, -1.5, 2.0, -0.1], dtype=torch.float64)
    b = torch.tensor([0.1, 0.2, -0.3, 0.0], dtype=torch.float64)
    mean, var = be.mean_var(x)
    assert_close(mean.numpy(), x.numpy().mean(axis=(0, 2)))
    assert_close(var.numpy(), x.numpy().var(axis=(0, 2)))  # biased
    z = x.clone()
    out = be.forward(z, mean, var, w, b, True, 1e-5)
    assert out is z  # in place, as the caller relies on
    assert_close(z.numpy(), reference(x, w.numpy(), b.numpy(), mean.numpy(), var.numpy(), 1e-5, "identity", 0))
    plain = x.clone()
    be.forward(plain, mean, var, x.new_empty(0), x.new_empty(0), False, 1e-5)  # affine=False: no scale, no bias
    assert_close(plain.numpy(), reference(x, None, None, mean.numpy(), var.numpy(), 1e-5, "identity", 0))
    act = z.clone()
    be.leaky_relu_forward(act, 0.2)
    dz = torch.ones_like(act)
    be.leaky_relu_backward(act, dz, 0.2)
    assert_close(act.numpy(), z.numpy())  # inverted in place
    assert_close(dz.numpy(), np.where(z.numpy() < 0, 0.2, 1.0))
    act = z.clone()
    be.elu_forward(act)
    be.elu_backward(act, torch.ones_like(act))
    assert_close(act.numpy(), z.numpy())


def test_2018_function_gradient_matches_autograd(fallback):
    """The vendored Function's backward (edz_eydz + backward through the stand-in) against autograd."""
    from modules.functions import inplace_abn

    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    w = torch.tensor([0.7, -1.2, 1.9], dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    y = inplace_abn(
        leaves[0].clone(),
        leaves[1],
        leaves[2],
        torch.zeros(3, dtype=torch.float64),
        torch.ones(3, dtype=torch.float64),
        True,
        0.1,
        1e-5,
        "leaky_relu",
        0.1,
    )
    upstream = torch.randn(y.shape, generator=g, dtype=torch.float64)
    y.backward(upstream.clone())  # the published backward scales its incoming gradient in place
    ref = [t.clone().requires_grad_() for t in (x, w, b)]
    arith = iabn_onnx.torch_fallback.arith
    arith.inplace_abn_forward(ref[0], ref[1], ref[2], None, None, True, 0.1, 1e-5, "leaky_relu", 0.1).backward(upstream)
    for got, want in zip(leaves, ref):
        assert_close(got.grad.numpy(), want.grad.numpy(), np.float32)  # float64 math, reassociated


# -- whole networks: eval output, export, fold -------------------------------------
def _vendored_net():
    import networks.tiny_net as tiny

    return randomize(tiny.build()).eval(), 4


def _mapillary_net():
    import tiny_models

    return randomize(tiny_models.tiny_resnet(activation_param=0.3)).eval(), 5


@pytest.mark.parametrize("make", [_vendored_net, _mapillary_net], ids=["vendored-2018", "mapillary-1x"])
def test_network_exports_one_node_per_module_plugin_and_folded(fallback, make):
    net, modules = make()
    x = torch.from_numpy(rng(7).standard_normal((2, 3, 16, 16)).astype(np.float32))
    with torch.no_grad():
        want = net(x).numpy()
    proto = iabn_onnx.export_torch(net, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    assert sum(n.op_type == "InplaceABN" for n in proto.graph.node) == modules
    feed = {proto.graph.input[0].name: x.numpy()}
    assert_close(iabn_onnx.InferenceSession(proto).run(None, feed)[0], want)
    folded = iabn_onnx.fold(proto)
    assert not any(n.op_type == "InplaceABN" for n in folded.graph.node)
    plain = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"])
    assert_close(plain.run(None, feed)[0], want)


@pytest.mark.parametrize("make", [_vendored_net, _mapillary_net], ids=["vendored-2018", "mapillary-1x"])
def test_replace_with_batchnorm_gives_standard_modules(fallback, make):
    net, _ = make()
    x = torch.from_numpy(rng(8).standard_normal((2, 3, 16, 16)).astype(np.float32))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    plain_net = iabn_onnx.replace_with_batchnorm(net, (x,))
    names = {type(m).__name__ for m in plain_net.modules()}
    assert not names & {"ABN", "InPlaceABN", "InPlaceABNSync", "InplaceAbn"}
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # the original is untouched
    with torch.no_grad():
        want, got = net(x).numpy(), plain_net(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    scripted = torch.jit.script(plain_net)
    np.testing.assert_allclose(scripted(x).detach().numpy(), want, rtol=1e-6, atol=1e-6)
    torch.export.export(plain_net, (x,))
    exported = torch.onnx.export(plain_net, (x,), dynamo=True, verbose=False).model_proto
    sess = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    assert_close(sess.run(None, {exported.graph.input[0].name: x.numpy()})[0], want)
    converted = iabn_onnx.convert(
        torch.onnx.export(plain_net, (x,), dynamo=True, optimize=False, verbose=False).model_proto
    )
    assert any(n.op_type == "InplaceABN" for n in converted.graph.node)


def test_replace_with_batchnorm_ranks_and_pre1_and_timm():
    """BatchNorm1d/3d from the example input's rank; pre-1.0 and timm modules (replicas)."""
    from tests.torch_replicas import InplaceAbn
    from tests.torch_replicas_pre1 import InPlaceABNSync as Pre1Sync

    net = torch.nn.Sequential(Pre1Sync(4, activation="elu"), InplaceAbn(4, act_layer="leaky_relu"))
    randomize(net).eval()
    for shape, cls in (((3, 4), torch.nn.BatchNorm1d), ((2, 4, 3, 3, 3), torch.nn.BatchNorm3d)):
        x = torch.from_numpy(rng(9).standard_normal(shape).astype(np.float32))
        plain_net = iabn_onnx.replace_with_batchnorm(net, (x,))
        assert isinstance(plain_net[0][0], cls) and isinstance(plain_net[1][0], cls)
        with torch.no_grad():
            np.testing.assert_allclose(plain_net(x).numpy(), net(x).numpy(), rtol=1e-6, atol=1e-6)


# -- the CLI ----------------------------------------------------------------------
def cli(*args: str, cwd: Path = VENDORED) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-m", "iabn_onnx.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )


@pytest.fixture
def vendored_checkpoint(tmp_path, fallback):
    net, _ = _vendored_net()
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 9, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    return path, net


def test_cli_export_torch_end_to_end(vendored_checkpoint, tmp_path):
    path, net = vendored_checkpoint
    out = tmp_path / "net.onnx"
    proc = cli(
        "export-torch",
        "networks.tiny_net:build",
        "--kwarg",
        "num_classes=3",
        "--checkpoint",
        str(path),
        "--input-shape",
        "1,3,16,16",
        "--dynamic-batch",
        "-o",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no torch warnings on our output
    assert "4 InplaceABN node(s)" in proc.stdout
    x = rng(11).standard_normal((3, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    assert_close(iabn_onnx.InferenceSession(str(out)).run(None, {"input": x})[0], want)
    folded = tmp_path / "folded.onnx"
    proc = cli(
        "export-torch",
        "networks.tiny_net:build",
        "--checkpoint",
        str(path),
        "--checkpoint-key",
        "state_dict",
        "--input-shape",
        "1,3,16,16",
        "-o",
        str(folded),
        "--fold",
    )
    assert proc.returncode == 0, proc.stderr
    assert "4 folded into producers, 0 rewritten as standard ops, 0 left" in proc.stdout
    x1 = x[:1]
    with torch.no_grad():
        want1 = net(torch.from_numpy(x1)).numpy()
    sess = ort.InferenceSession(str(folded), providers=["CPUExecutionProvider"])
    assert_close(sess.run(None, {"input": x1})[0], want1)


def test_cli_export_torch_strict_mismatch_and_hostile_pickle(vendored_checkpoint, tmp_path):
    path, _ = vendored_checkpoint
    out = tmp_path / "net.onnx"
    proc = cli(
        "export-torch",
        "networks.tiny_net:build",
        "--kwarg",
        "num_classes=5",
        "--checkpoint",
        str(path),
        "--input-shape",
        "1,3,16,16",
        "-o",
        str(out),
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "does not fit the model" in proc.stderr and "classifier.weight" in proc.stderr
    state = torch.load(path)["state_dict"]
    state.pop("module.stem_bn.running_var")
    state["module.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "partial.pth")
    proc = cli(
        "export-torch",
        "networks.tiny_net:build",
        "--checkpoint",
        str(tmp_path / "partial.pth"),
        "--input-shape",
        "1,3,16,16",
        "-o",
        str(out),
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "missing key(s): stem_bn.running_var" in proc.stderr and "unexpected key(s): extra" in proc.stderr
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.pth"
    hostile.write_bytes(
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"""
import os, pickle, sys, torch
class Payload:
    def __reduce__(self):
        return (os.system, ("touch {marker}",))
torch.save({{"state_dict": Payload()}}, sys.stdout.buffer)
""",
            ],
            capture_output=True,
            check=True,
        ).stdout
    )
    proc = cli(
        "export-torch",
        "networks.tiny_net:build",
        "--checkpoint",
        str(hostile),
        "--input-shape",
        "1,3,16,16",
        "-o",
        str(out),
    )
    assert proc.returncode == 2 and "refused checkpoint" in proc.stderr and "--trust-checkpoint" in proc.stderr
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["networks.tiny_net"], "is not MODULE:CALLABLE"),
        (["networks.absent:build"], "cannot import networks.absent"),
        (["networks.tiny_net:nothing"], "has no attribute 'nothing'"),
        (["networks.tiny_net:build", "--kwarg", "width=eight"], "is not a Python literal"),
        (["networks.tiny_net:build", "--arg", "__import__('os')"], "is not a Python literal"),
        (["networks.tiny_net:build", "--checkpoint", "missing.pth"], "no such checkpoint file"),
    ],
)
def test_cli_export_torch_mistakes(tmp_path, args, message):
    proc = cli("export-torch", *args, "--input-shape", "1,3,16,16", "-o", str(tmp_path / "o.onnx"))
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr


# -- TorchScript ------------------------------------------------------------------
@pytest.mark.parametrize("cls_name", ["ABN", "InPlaceABN", "InPlaceABNSync"])
@pytest.mark.parametrize("activation,param", [("leaky_relu", 0.02), ("elu", 0.7), ("identity", 0.01)])
def test_modules_script_and_trace_as_eager(fallback, cls_name, activation, param):
    """mapillary's ABN scripts; its InPlaceABN neither scripts nor traces. The stand-ins do all three,
    eval and training alike (the running statistics move as eager's do)."""
    import warnings

    import inplace_abn

    module = randomize(getattr(inplace_abn, cls_name)(6, eps=1e-3, activation=activation, activation_param=param))
    for name in ("num_features", "eps", "momentum", "affine", "activation", "activation_param"):
        assert hasattr(module, name), name  # what user conversion code reads
    x = torch.from_numpy(rng(3).standard_normal((4, 6, 5, 3)).astype(np.float32))
    module.eval()
    w, b = module.weight.detach().numpy(), module.bias.detach().numpy()
    expected = reference(x, w, b, module.running_mean.numpy(), module.running_var.numpy(), 1e-3, activation, param,
                         cls_name != "ABN")  # fmt: skip
    scripted = torch.jit.script(module)
    with torch.no_grad():
        traced = torch.jit.trace(module, x)
        for compiled in (scripted, traced):
            assert_close(compiled(x).numpy(), expected)
    twin = randomize(getattr(inplace_abn, cls_name)(6, eps=1e-3, activation=activation, activation_param=param))
    scripted_twin = torch.jit.script(twin)
    module.train()
    scripted_twin.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert_close(scripted_twin(x).detach().numpy(), module(x).detach().numpy())
    assert_close(scripted_twin.running_var.numpy(), module.running_var.numpy())
    assert int(scripted_twin.num_batches_tracked) == int(module.num_batches_tracked) == 1


def test_tresnet_conversion_then_script_matches_the_inplace_abn_network(fallback):
    """The original TResNet inference path: ``InplacABN_to_ABN`` (a replica), then ``torch.jit.script``."""
    import inplace_abn

    from tests.torch_replicas import inplacabn_to_abn

    def block(c_in: int, c_out: int, act: str, param: float) -> torch.nn.Module:
        conv = torch.nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        return torch.nn.Sequential(conv, inplace_abn.InPlaceABN(c_out, activation=act, activation_param=param))

    torch.manual_seed(0)
    net = torch.nn.Sequential(block(3, 8, "leaky_relu", 1e-3), block(8, 8, "identity", 0.01), block(8, 4, "elu", 1.0))
    net = randomize(net).eval()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = net(x).numpy()
        converted = inplacabn_to_abn(net, inplace_abn.ABN, inplace_abn.InPlaceABN)
        assert not any(isinstance(m, inplace_abn.InPlaceABN) for m in converted.modules())
        scripted = torch.jit.script(converted)
        assert_close(scripted(x).numpy(), expected)


@pytest.mark.parametrize(
    "as_dict,names",
    [
        (False, ["output.0.0", "output.0.1", "output.1.0"]),
        (True, ["output.seg", "output.aux.fusion", "output.aux.edge"]),
    ],
)
def test_cli_export_torch_nested_outputs(fallback, tmp_path, as_dict, names):
    """Nested lists (the human-parsing network's [[parsing, fusion], [edge]]) and dicts: every output is
    exported under its path's name, in torch.onnx.export's order, and verified."""
    import tiny_models

    torch.manual_seed(0)
    net = randomize(tiny_models.two_head_parsing(as_dict=as_dict)).eval()
    checkpoint = tmp_path / "heads.pth"
    torch.save({"state_dict": net.state_dict()}, checkpoint)
    out = tmp_path / "heads.onnx"
    args = ["--checkpoint", str(checkpoint), "--input-shape", "1,3,12,12", "-o", str(out), "--fold"]
    proc = cli("export-torch", "tiny_models:two_head_parsing", "--kwarg", f"as_dict={as_dict}", *args, cwd=MAPILLARY_1X)
    assert proc.returncode == 0, proc.stderr
    assert f"3 outputs: {', '.join(names)}" in proc.stdout
    assert proc.stdout.count("max rel diff") == 2  # the session's and the folded model's verification
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == names
    x = rng(2).standard_normal((1, 3, 12, 12)).astype(np.float32)
    with torch.no_grad():
        leaves = torch.utils._pytree.tree_leaves(net(torch.from_numpy(x)))
    for got, want in zip(session.run(None, {"input": x}), leaves):
        assert_close(got, want.numpy())
