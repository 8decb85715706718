"""The example files: what ``iabn-onnx examples DIR`` writes, and what ``models/`` holds in a checkout.

* ``seed_example.onnx``       the seed page's fluid program (fc -> inplace_abn -> inplace_abn(leaky_relu 0.2)),
                              training mode, as ``fluid.to_onnx(..., for_test=False)`` writes it
* ``seed_example_test.onnx``  the same program with ``for_test=True`` (moving statistics)
* ``convnet_<act>.onnx``      a small conv net whose InplaceABN nodes all use <act>
* ``convnet_nhwc.onnx``       the conv net with NHWC InplaceABN nodes
* ``convnet_training.onnx``   the conv net in training mode (batch statistics)
* ``convnet_batchnorm.onnx``  the conv net as plain BatchNormalization + LeakyRelu/Elu (standard ops; input
                              for ``iabn-onnx convert``), no InplaceABN node

Every model carries the model-local InplaceABN function, so plain onnxruntime runs it too; the bytes are
the same on every run. ``iabn-onnx examples`` also writes, for the exporters' commands:

* ``paddle_cnn/model.pdmodel`` + ``model.pdiparams``: a Paddle saved inference model with four
  ``inplace_abn`` ops, as Paddle <= 2.5 wrote them (``examples.paddle_example_model``);
* ``tiny_net.py``: PyTorch model code written against mapillary's ``inplace_abn`` package, and, when torch
  is installed, ``tiny_net.pth``, a checkpoint of it (``{"state_dict": ...}``, as training scripts save);
* ``calibration.npz``: 16 samples for the conv nets' input ``X`` (what ``iabn-onnx quantize`` reads).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx


def seed_example(for_test: bool) -> onnx.ModelProto:
    from . import fluid

    main = fluid.Program(random_seed=0)
    with fluid.program_guard(main):
        x = fluid.data(name="x", shape=[3, 7, 3, 7], dtype="float32")
        hidden1 = fluid.layers.fc(input=x, size=200, param_attr="fc1.w")
        hidden2 = fluid.layers.inplace_abn(input=hidden1)
        hidden3 = fluid.layers.inplace_abn(input=hidden2, act="leaky_relu", act_alpha=0.2)
        # non-trivial moving statistics, so for_test differs visibly from training
        g = np.random.default_rng(7)
        stats = {
            f"inplace_abn_{i}.w_{k}": (g.uniform(0.5, 2.0, 200) if k == 2 else g.standard_normal(200))
            for i in (0, 1)
            for k in (1, 2)
        }
        fluid.set_parameters(stats)
        return fluid.to_onnx(fetch_list=[hidden3], for_test=for_test)


def batchnorm_convnet() -> onnx.ModelProto:
    """The conv net with each InplaceABN node written as BatchNormalization (+ LeakyRelu / Elu)."""
    from .examples import conv_net_model
    from .passes.to_batchnorm import batchnorm_form

    return batchnorm_form(conv_net_model(acts=("leaky_relu", "elu"), channels=8, image=16, seed=0))


def _conv(**kwargs: object) -> Callable[[], onnx.ModelProto]:
    def build() -> onnx.ModelProto:
        from .examples import conv_net_model
        from .op.function import add_function_fallback

        return add_function_fallback(conv_net_model(channels=8, image=16, seed=0, **kwargs))  # type: ignore[arg-type]

    return build


MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    "seed_example.onnx": lambda: seed_example(for_test=False),
    "seed_example_test.onnx": lambda: seed_example(for_test=True),
    "convnet_identity.onnx": _conv(acts=("identity", "identity")),
    "convnet_leaky_relu.onnx": _conv(acts=("leaky_relu", "leaky_relu")),
    "convnet_elu.onnx": _conv(acts=("elu", "elu")),
    "convnet_nhwc.onnx": _conv(acts=("leaky_relu", "elu"), data_layout="NHWC"),
    "convnet_training.onnx": _conv(acts=("leaky_relu", "elu"), training_mode=1),
    "convnet_batchnorm.onnx": batchnorm_convnet,
}

TINY_NET = '''"""A small network written against mapillary's inplace_abn package, as model zoos write them.
`iabn-onnx export-torch tiny_net:build ...` imports it with the InplaceABN fallback installed."""

import torch.nn as nn
from inplace_abn import ABN, InPlaceABN


class TinyNet(nn.Module):
    def __init__(self, num_classes=10, width=16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False),
            InPlaceABN(width, activation="leaky_relu", activation_param=0.01),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            InPlaceABN(2 * width, activation="elu", activation_param=1.0),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False),
            ABN(2 * width, activation="relu"),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def build(num_classes=10, width=16):
    return TinyNet(num_classes=num_classes, width=width)
'''


def model_files(out: Path) -> list[Path]:
    """Write the example models (``MODELS``) into the folder ``out``; return their paths."""
    written = []
    for name, build in MODELS.items():
        path = out / name
        path.write_bytes(build().SerializeToString(deterministic=True))
        written.append(path)
    return written


def planned(out: Path) -> list[Path]:
    """Every file ``write_examples`` writes into ``out``."""
    paddle = [out / "paddle_cnn" / n for n in ("model.pdmodel", "model.pdiparams")]
    return [out / n for n in MODELS] + paddle + [out / n for n in ("tiny_net.py", "tiny_net.pth", "calibration.npz")]


def write_examples(out: Path) -> list[Path]:
    """The example models, the Paddle saved program, and the PyTorch model code (with its checkpoint when
    torch is installed), written into the existing folder ``out``."""
    from .examples import paddle_example_model

    written = model_files(out)
    prefix = Path(paddle_example_model())
    (out / "paddle_cnn").mkdir(exist_ok=True)
    for suffix in (".pdmodel", ".pdiparams"):
        target = out / "paddle_cnn" / f"model{suffix}"
        shutil.copyfile(prefix.with_suffix(suffix), target)
        written.append(target)
    (out / "tiny_net.py").write_text(TINY_NET)
    written.append(out / "tiny_net.py")
    samples = np.random.default_rng(0).uniform(-1.0, 1.0, (16, 3, 16, 16)).astype(np.float32)
    np.savez(out / "calibration.npz", X=samples)
    written.append(out / "calibration.npz")
    checkpoint = _tiny_net_checkpoint(out / "tiny_net.pth")
    if checkpoint is not None:
        written.append(checkpoint)
    return written


def _tiny_net_checkpoint(path: Path) -> Path | None:
    """A seeded checkpoint of ``tiny_net.build()``, with trained-looking statistics; None without torch."""
    try:
        import torch
    except ImportError:
        return None
    import importlib.util
    import sys

    from .torch_fallback import install_torch_fallback

    install_torch_fallback()
    spec = importlib.util.spec_from_file_location("_iabn_tiny_net", path.with_suffix(".py"))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules.pop("_iabn_tiny_net", None)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    torch.manual_seed(0)
    net = module.build()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if getattr(m, "running_var", None) is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    torch.save({"state_dict": net.state_dict(), "epoch": 90}, path)
    return path


__all__ = ["MODELS", "model_files", "planned", "write_examples"]
