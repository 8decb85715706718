"""Train the segmentation fixture: a small InplaceABN encoder-decoder on a real dataset from a pip package.

    python tests/digits_seg/train_digits_seg.py   (needs torch and scikit-learn; a few minutes on 2 cores)

Data: scikit-learn's handwritten digits (``sklearn.datasets.load_digits``), split as ``tests/digits`` splits
them (80/20, ``random_state=0``, stratified). ``canvases`` pastes two digits, each upsampled 2x to 16x16,
at random places on a 32x32 canvas (seeded); each pixel's label is its digit + 1 where the digit's ink is
≥ 0.5, 0 (background) where no ink is, and 255 (ignored) on the faint rim (ink in (0, 0.5)). Training canvases
use training digits only, the held-out ones held-out digits only.

The network is mapillary-style model code (``from inplace_abn import InPlaceABN``) run through
``iabn_onnx.install_torch_fallback()``: two stride-2 stages, a dilated context block, a decoder with a skip
connection and a bilinear upsample to the input size; 11 classes. Trained with Adam from seed 0, exported by
``iabn_onnx.export_torch`` with a dynamic batch, height and width (verified at a second size). Writes
``digits_seg.onnx`` and ``digits_seg.json`` (the held-out pixel accuracy and mIoU of the eager and ONNX
models), which ``tests/test_quantize_segmentation.py`` holds the int8 model to.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
EPOCHS = 12
SEED = 0
CLASSES = 11  # background + 10 digits
IGNORE = 255
TRAIN_CANVASES, HELD_OUT_CANVASES = 3000, 200


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, random_state=0, stratify=digits.target
    )
    return x_train, y_train, x_test, y_test


def canvases(images: np.ndarray, labels: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(images [count, 1, 32, 32] float32, masks [count, 32, 32] int64): see the module doc."""
    g = np.random.default_rng(seed)
    x = np.zeros((count, 1, 32, 32), np.float32)
    y = np.zeros((count, 32, 32), np.int64)
    for k in range(count):
        for _ in range(2):
            i = int(g.integers(len(images)))
            digit = np.kron(images[i], np.ones((2, 2), np.float32))  # 16x16
            r, c = (int(v) for v in g.integers(0, 17, 2))
            window = x[k, 0, r : r + 16, c : c + 16]
            np.maximum(window, digit, out=window)
            mask = y[k, r : r + 16, c : c + 16]
            mask[(digit > 0) & (digit < 0.5) & (mask == 0)] = IGNORE
            mask[digit >= 0.5] = labels[i] + 1
    return x, y


def dataset() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train canvases, train masks, held-out canvases, held-out masks)."""
    x_train, y_train, x_test, y_test = _digits()
    a, b = canvases(x_train, y_train, TRAIN_CANVASES, SEED)
    c, d = canvases(x_test, y_test, HELD_OUT_CANVASES, SEED + 1)
    return a, b, c, d


def network():  # type: ignore[no-untyped-def]
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from inplace_abn import InPlaceABN

    def block(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
            InPlaceABN(c_out, activation="leaky_relu", activation_param=0.01),
        )

    class DigitsSeg(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = block(1, 16)
            self.down1 = block(16, 32, stride=2)
            self.down2 = block(32, 48, stride=2)
            self.context = block(48, 48, dilation=2)
            self.reduce = nn.Sequential(nn.Conv2d(48, 32, 1, bias=False), InPlaceABN(32, activation="identity"))
            self.fuse = block(64, 32)
            self.classifier = nn.Conv2d(32, CLASSES, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = self.stem(x)
            d1 = self.down1(s)
            d2 = self.context(self.down2(d1))
            up = F.interpolate(self.reduce(d2), size=d1.shape[2:], mode="bilinear", align_corners=False)
            out = self.classifier(self.fuse(torch.cat([up, d1], 1)))
            return F.interpolate(out, size=x.shape[2:], mode="bilinear", align_corners=False)

    return DigitsSeg()


def pixel_accuracy_and_miou(pred: np.ndarray, masks: np.ndarray) -> tuple[float, float]:
    """Pixel accuracy and mIoU over the classes present, 255 left out."""
    keep = masks != IGNORE
    accuracy = float((pred[keep] == masks[keep]).mean())
    ious = []
    for c in range(CLASSES):
        union = np.sum(((pred == c) | (masks == c)) & keep)
        if union:
            ious.append(np.sum((pred == c) & (masks == c) & keep) / union)
    return accuracy, float(np.mean(ious))


def main() -> None:
    import onnx
    import torch

    import iabn_onnx

    iabn_onnx.install_torch_fallback()
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    x_train, y_train, x_test, y_test = dataset()
    net = network()
    optimizer = torch.optim.Adam(net.parameters(), lr=4e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, EPOCHS)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    g = torch.Generator().manual_seed(SEED)
    for epoch in range(EPOCHS):
        net.train()
        order = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 32):
            batch = order[i : i + 32]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(xt[batch]), yt[batch], ignore_index=IGNORE)
            loss.backward()
            optimizer.step()
        schedule.step()
        print(f"epoch {epoch}: loss {loss.item():.3f}", flush=True)
    net.eval()
    with torch.no_grad():
        eager = net(torch.from_numpy(x_test)).argmax(1).numpy()
    dims = {
        0: torch.export.Dim("batch", max=4096),
        2: torch.export.Dim("h", max=4096),
        3: torch.export.Dim("w", max=4096),
    }
    model = iabn_onnx.export_torch(net, (torch.from_numpy(x_test[:2]),), dynamic_shapes=(dims,))
    onnx.save(model, HERE / "digits_seg.onnx")
    scores = iabn_onnx.InferenceSession(model).run(None, {"input": x_test})[0]
    acc_eager, miou_eager = pixel_accuracy_and_miou(eager, y_test)
    acc_onnx, miou_onnx = pixel_accuracy_and_miou(scores.argmax(1), y_test)
    facts = {
        "dataset": "sklearn digits, split as tests/digits; two 16x16 digits per 32x32 canvas (module doc)",
        "train_canvases": TRAIN_CANVASES,
        "held_out_canvases": HELD_OUT_CANVASES,
        "classes": CLASSES,
        "ignore_index": IGNORE,
        "epochs": EPOCHS,
        "pixel_accuracy_eager": acc_eager,
        "miou_eager": miou_eager,
        "pixel_accuracy_onnx": acc_onnx,
        "miou_onnx": miou_onnx,
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__},
    }
    (HERE / "digits_seg.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(json.dumps(facts, indent=2))


if __name__ == "__main__":
    main()
