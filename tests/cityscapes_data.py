"""A small Cityscapes folder in the official layout, written by the tests: real PNG files, ``labelIds`` label maps.

The scenes are synthetic but learnable: the sky (labelId 23) above a horizon, road (7) below it, a car (26) box and
a pole (17) of random sizes and places; the image's colours follow the classes, with noise. Some pixels carry
labelIds that Cityscapes ignores (0, 4), so the ignored label is exercised."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np

COLOURS: Dict[int, tuple] = {23: (70, 130, 180), 7: (128, 64, 128), 26: (0, 0, 142), 17: (153, 153, 153),
                             0: (0, 0, 0), 4: (20, 20, 20)}


def scene(rng: np.random.Generator, h: int, w: int):
    """``(image (h, w, 3) uint8, labelIds (h, w) uint8)``."""
    lab = np.full((h, w), 23, dtype=np.uint8)
    horizon = int(rng.integers(h // 3, 2 * h // 3))
    lab[horizon:] = 7
    ch, cw = int(rng.integers(h // 6, h // 3)), int(rng.integers(w // 8, w // 4))
    top, left = int(rng.integers(horizon - ch // 2, h - ch)), int(rng.integers(0, w - cw))
    lab[top:top + ch, left:left + cw] = 26
    px = int(rng.integers(0, w - 3))
    lab[h // 8:horizon, px:px + 3] = 17
    lab[:2, :] = 0  # "unlabeled": ignored
    lab[-2:, :w // 4] = 4  # "static": ignored
    img = np.zeros((h, w, 3), dtype=np.float64)
    for k, c in COLOURS.items():
        img[lab == k] = c
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), lab


def write_cityscapes(root: Path, n_train: int = 8, n_val: int = 4, h: int = 64, w: int = 128, seed: int = 0,
                     labels: bool = True) -> Path:
    """Write ``root/leftImg8bit/{train,val}/CITY/*_leftImg8bit.png`` and (``labels``) the ``gtFine`` label maps."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n, city in (("train", n_train, "aachen"), ("val", n_val, "frankfurt")):
        (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
        (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, lab = scene(rng, h, w)
            stem = f"{city}_{i:06d}_000019"
            Image.fromarray(img).save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            if labels:
                Image.fromarray(lab).save(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
    return root
