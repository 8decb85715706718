"""Train the digits fixture: a small InplaceABN network on a real dataset that ships in a pip package.

    python tests/digits/train_digits.py        (needs torch and scikit-learn; about a minute on 2 cores)

Data: scikit-learn's handwritten digits (``sklearn.datasets.load_digits``: 1797 8x8 images, values 0-16),
scaled to [0, 1] and split 80/20 with ``train_test_split(random_state=0, stratify=labels)``. The network
is mapillary-style model code (``from inplace_abn import InPlaceABN``) run through
``iabn_onnx.install_torch_fallback()``, trained with Adam for ``EPOCHS`` epochs from seed 0, and exported
with ``iabn_onnx.export_torch`` (a dynamic batch). Writes ``digits_inplace_abn.onnx`` (the weights, in
ONNX) and ``digits.json`` (the held-out accuracy of the eager model and of the ONNX one, and the split),
which ``tests/test_quantize.py`` holds the int8 model to.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
EPOCHS = 40
SEED = 0


def dataset() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, held-out images, held-out labels): images [N, 1, 8, 8] float32 in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, random_state=0, stratify=digits.target
    )
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)


def network():  # type: ignore[no-untyped-def]
    import torch.nn as nn
    from inplace_abn import InPlaceABN

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False),
        InPlaceABN(16, activation="leaky_relu", activation_param=0.01),
        nn.Conv2d(16, 32, 3, padding=1, bias=False),
        InPlaceABN(32, activation="leaky_relu", activation_param=0.01),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False),
        InPlaceABN(64, activation="elu", activation_param=1.0),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def main() -> None:
    import onnx
    import torch

    import iabn_onnx

    iabn_onnx.install_torch_fallback()
    torch.manual_seed(SEED)
    x_train, y_train, x_test, y_test = dataset()
    net = network()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    g = torch.Generator().manual_seed(SEED)
    for _ in range(EPOCHS):
        net.train()
        order = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 64):
            batch = order[i : i + 64]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[batch]), yt[batch]).backward()
            optimizer.step()
    net.eval()
    with torch.no_grad():
        eager = float((net(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},)
    model = iabn_onnx.export_torch(net, (torch.from_numpy(x_test[:2]),), dynamic_shapes=dynamic)
    onnx.save(model, HERE / "digits_inplace_abn.onnx")
    logits = iabn_onnx.InferenceSession(model).run(None, {model.graph.input[0].name: x_test})[0]
    exported = float((logits.argmax(1) == y_test).mean())
    facts = {
        "dataset": "sklearn.datasets.load_digits, /16, train_test_split(test_size=0.2, random_state=0, stratify)",
        "held_out": len(y_test),
        "epochs": EPOCHS,
        "accuracy_eager": eager,
        "accuracy_onnx": exported,
        "input": model.graph.input[0].name,
    }
    (HERE / "digits.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(json.dumps(facts, indent=2))


if __name__ == "__main__":
    main()
