"""Generate the small example models in this folder (deterministic: same bytes every run).

    python models/make_models.py [--out models]

* ``seed_example.onnx``       the seed page's fluid program (fc -> inplace_abn -> inplace_abn(leaky_relu 0.2)),
                              training mode, as ``fluid.to_onnx(..., for_test=False)`` writes it
* ``seed_example_test.onnx``  the same program with ``for_test=True`` (moving statistics)
* ``convnet_<act>.onnx``      a small conv net whose InplaceABN nodes all use <act>
* ``convnet_nhwc.onnx``       the conv net with NHWC InplaceABN nodes
* ``convnet_training.onnx``   the conv net in training mode (batch statistics)
* ``convnet_batchnorm.onnx``  the conv net as plain BatchNormalization + LeakyRelu/Elu (standard ops; input
                              for ``iabn-onnx convert``), no InplaceABN node

Every model carries the model-local InplaceABN function, so plain onnxruntime runs it too.
``tests/test_models.py`` regenerates them and compares bytes with the committed files.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from iabn_onnx import add_function_fallback
from iabn_onnx.examples import conv_net_model
from iabn_onnx.passes.to_batchnorm import batchnorm_form

HERE = Path(__file__).resolve().parent


def seed_example(for_test: bool) -> onnx.ModelProto:
    import iabn_onnx.fluid as fluid

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
    return batchnorm_form(conv_net_model(acts=("leaky_relu", "elu"), channels=8, image=16, seed=0))


def _conv(**kwargs: object) -> Callable[[], onnx.ModelProto]:
    return lambda: add_function_fallback(conv_net_model(channels=8, image=16, seed=0, **kwargs))


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


def generate(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in MODELS.items():
        path = out / name
        path.write_bytes(build().SerializeToString(deterministic=True))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args(argv)
    for path in generate(Path(args.out)):
        print(f"{path}  {path.stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
