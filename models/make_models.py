"""Generate the small example models in this folder (deterministic: same bytes every run); they are
``iabn_onnx/example_files.py``'s, which ``iabn-onnx examples DIR`` writes for a pip-installed package.

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
from pathlib import Path

from iabn_onnx.example_files import MODELS, model_files

HERE = Path(__file__).resolve().parent
__all__ = ["MODELS", "generate"]  # tests/test_models.py checks every model here


def generate(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    return model_files(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args(argv)
    for path in generate(Path(args.out)):
        print(f"{path}  {path.stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
