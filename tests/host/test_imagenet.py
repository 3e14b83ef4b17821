"""ImageNet in its standard folder layout (ROOT/train/WNID/*.JPEG, ROOT/val/WNID/*.JPEG), on a small folder of real
JPEG files the test writes: the usual resize / centre crop, random crops in training, the split, the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeshrink.host.data import IMAGENET_MEAN, export_inputs, load_dataset
from edgeshrink.host.errors import DatasetError

WNIDS = ("n01440764", "n01443537", "n01484850")


def write_imagenet(root, per_class=(6, 2), seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "val"), per_class):
        for k, wnid in enumerate(WNIDS):
            (root / split / wnid).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = int(rng.integers(40, 80)), int(rng.integers(40, 80))  # any size and aspect, as ImageNet's
                img = np.full((h, w, 3), 60 * (k + 1), dtype=np.uint8)
                img[h // 2 - h // 8:h // 2 + h // 8, w // 2 - w // 8:w // 2 + w // 8] = 255  # a bright centre
                Image.fromarray(img).save(root / split / wnid / f"{wnid}_{i}.JPEG", quality=95)
    return root


def test_imagenet_folders_resize_crop_and_split(tmp_path):
    root = write_imagenet(tmp_path / "imagenet")
    data = load_dataset("imagenet", str(root), image_size=32)
    assert data.num_classes == 3 and data.mean == IMAGENET_MEAN
    assert data.input_shape == (1, 3, 32, 32)
    assert tuple(data.train.images.shape[1:]) == (3, 37, 37)  # the shorter side to 32 * 256 / 224, square
    assert len(data.test) == 6 and len(data.train) + len(data.val) == 18 and len(data.val) == 9  # at most half
    x, y = next(data.batches("test", 6))
    assert x.shape == (6, 3, 32, 32) and y.tolist() == [0, 0, 1, 1, 2, 2]
    # the centre crop keeps the centre: the bright square sits at the middle of every evaluated image, not its corners
    crop = data.test.images[:, :, 2:34, 2:34]  # (37 - 32) // 2 = 2 pixels off each side
    assert bool((crop[:, 0, 16, 16] > 230).all()) and bool((crop[:, 0, 0, 0] < 200).all())
    xa, _ = next(data.batches("train", 8, shuffle=True, augment=True, generator=torch.Generator().manual_seed(0)))
    assert xa.shape == (8, 3, 32, 32)
    n = export_inputs(data, "test", str(tmp_path / "in.npz"))
    assert n == 6 and np.load(tmp_path / "in.npz")["x"].shape == (6, 3, 32, 32)


def test_imagenet_refusals(tmp_path):
    with pytest.raises(DatasetError, match=r"expected .*/train/WNID/\*.JPEG"):
        load_dataset("imagenet", str(tmp_path / "nothing"))
    root = write_imagenet(tmp_path / "imagenet")
    (root / "val" / "n09999999").mkdir()
    with pytest.raises(DatasetError, match="class folders that train lacks: n09999999"):
        load_dataset("imagenet", str(root), image_size=32)
    with pytest.raises(DatasetError, match="imagenet needs --data-dir"):
        load_dataset("imagenet")
