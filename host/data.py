"""Datasets, by name: ``digits`` (embedded default), ``fashion-mnist`` (the real benchmark), ``cifar10``, ``cifar100``,
``imagefolder``, ``imagenet`` (its standard folders), ``cityscapes`` (semantic segmentation).

Every dataset is held in memory as uint8 images ``(N, 3, H, W)`` with int64 labels ``(N,)`` (a segmentation
dataset: uint8 label maps ``(N, H, W)``, 255 ignored) and three splits: ``train`` (fitting), ``val`` (held out from
the training data: NetAdapt's short-term evaluation and model selection) and ``test`` (reported only). Batches are
normalised per channel and augmented on the fly as is usual for each dataset.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits as _load
from sklearn.model_selection import train_test_split

from edgeshrink.host import safe_pickle
from edgeshrink.host.errors import DatasetError
from edgeshrink.host.io import atomic_path, prepare_file
from edgeshrink.host.names import DATASET_NAMES
from edgeshrink.host.seg import CITYSCAPES_CLASSES, CITYSCAPES_MAX_ID, cityscapes_lut

CIFAR_MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
CIFAR_STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}
CIFAR_ARCHIVES = {
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py", "c58f30108f718f92721af3b95e74349a",
                [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"),
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python", "eb9058c3a382ffc7106e4002c42a8d85",
                 ["train"], ["test"], b"fine_labels"),
}
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"


@dataclass
class Split:
    images: torch.Tensor  # (N, 3, H, W) uint8
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    mean: Tuple[float, float, float]  # per-channel mean of images scaled to [0, 1]
    std: Tuple[float, float, float]
    augment: str  # "crop4+flip" (CIFAR), "crop2" (digits: no flips, they change the class), "center+flip"
    #   (ImageNet: random crop of the input size from the stored resize, centre crop to evaluate), "scale+crop+flip"
    #   (segmentation: random scale 0.5-2, crop, flip of image and label map together)
    task: str = "classification"  # or "segmentation" (labels are (N, H, W) maps)
    metrics: Tuple[str, ...] = ("top1", "top5")  # what evaluation reports; the first selects models (NetAdapt)
    crop: Optional[Tuple[int, int]] = None  # the network's input (H, W) when the stored images are larger (ImageNet)

    @property
    def input_shape(self) -> Tuple[int, int, int, int]:
        if self.crop is not None:
            return (1, self.train.images.shape[1], *self.crop)
        return (1, *self.train.images.shape[1:])

    @property
    def ignore_index(self) -> int:
        return 255

    def normalize(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` -> float32, normalised per channel."""
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x_uint8.float() / 255.0 - mean) / std

    def batches(self, split: str, batch_size: int, shuffle: bool = False, augment: bool = False,
                generator: Optional[torch.Generator] = None) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """Yield normalised ``(x (B, 3, H, W) float32, y (B,) int64)`` batches of ``split``."""
        s: Split = getattr(self, split)
        idx = torch.randperm(len(s), generator=generator) if shuffle else torch.arange(len(s))
        for i in range(0, len(s), batch_size):
            j = idx[i:i + batch_size]
            x, y = s.images[j], s.labels[j]
            if self.task == "segmentation":
                if augment:
                    x, y = _augment_segmentation(x, y, self.input_shape[2:], generator)
                yield self.normalize(x), y.long()
                continue
            if self.crop is not None:
                x = _random_crop(x, self.crop, generator) if augment else _center_crop(x, self.crop)
                if augment:
                    flip = torch.rand(len(x), generator=generator) < 0.5
                    x[flip] = x[flip].flip(-1)
            elif augment:
                x = _augment(x, self.augment, generator)
            yield self.normalize(x), y

    def with_split(self, split: str, new: "Split") -> "Dataset":
        """This dataset with ``split`` replaced (a subset for training or evaluation)."""
        return replace(self, **{split: new})


def _augment(x: torch.Tensor, kind: str, g: Optional[torch.Generator]) -> torch.Tensor:
    """Random crop with zero padding (4 px for CIFAR, 2 px for digits) and, for CIFAR, horizontal flips."""
    pad = 4 if kind.startswith("crop4") else 2
    n, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h))  # (n, h)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w))  # (n, w)
    out = xp[torch.arange(n).view(n, 1, 1, 1), torch.arange(3).view(1, 3, 1, 1),
             rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]
    if kind.endswith("flip"):
        flip = torch.rand(n, generator=g) < 0.5
        out[flip] = out[flip].flip(-1)
    return out


def _center_crop(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return x[..., top:top + size[0], left:left + size[1]]


def _random_crop(x: torch.Tensor, size: Tuple[int, int], g: Optional[torch.Generator]) -> torch.Tensor:
    h, w = x.shape[-2:]
    out = torch.empty((*x.shape[:-2], *size), dtype=x.dtype)
    for k in range(len(x)):
        top = int(torch.randint(0, h - size[0] + 1, (1,), generator=g))
        left = int(torch.randint(0, w - size[1] + 1, (1,), generator=g))
        out[k] = x[k, ..., top:top + size[0], left:left + size[1]]
    return out


SEG_SCALES = (0.5, 2.0)  # random scale range of segmentation training (the HRNet / NN-shrinking recipes)


def _augment_segmentation(x: torch.Tensor, y: torch.Tensor, size: Sequence[int],
                          g: Optional[torch.Generator]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random scale in :data:`SEG_SCALES` (bilinear image, nearest labels), a random crop of ``size`` (padded with
    zeros and the ignored label where the scaled image is smaller) and a horizontal flip, per image; uint8 in and
    out, ``x (B, 3, H, W)``, ``y (B, H, W)``."""
    ch, cw = int(size[0]), int(size[1])
    xs = torch.zeros((len(x), x.shape[1], ch, cw), dtype=torch.uint8)
    ys = torch.full((len(x), ch, cw), 255, dtype=torch.uint8)
    lo, hi = SEG_SCALES
    for k in range(len(x)):
        s = lo + (hi - lo) * float(torch.rand(1, generator=g))
        h, w = max(int(round(x.shape[-2] * s)), 1), max(int(round(x.shape[-1] * s)), 1)
        xi = F.interpolate(x[k:k + 1].float(), size=(h, w), mode="bilinear", align_corners=False)
        yi = F.interpolate(y[k:k + 1, None].float(), size=(h, w), mode="nearest")[:, 0]
        top = int(torch.randint(0, max(h - ch, 0) + 1, (1,), generator=g))
        left = int(torch.randint(0, max(w - cw, 0) + 1, (1,), generator=g))
        xi, yi = xi[..., top:top + ch, left:left + cw], yi[..., top:top + ch, left:left + cw]
        if float(torch.rand(1, generator=g)) < 0.5:
            xi, yi = xi.flip(-1), yi.flip(-1)
        xs[k, :, :xi.shape[-2], :xi.shape[-1]] = xi[0].round().clamp(0, 255).to(torch.uint8)
        ys[k, :yi.shape[-2], :yi.shape[-1]] = yi[0].to(torch.uint8)
    return xs, ys


def _stratified(labels: np.ndarray, fractions: Tuple[float, ...], seed: int) -> List[np.ndarray]:
    """Split indices into parts of the given fractions, class by class, with a fixed seed."""
    idx = np.arange(len(labels))
    parts = []
    rest, rest_frac = idx, 1.0
    for frac in fractions[:-1]:
        take, rest = train_test_split(rest, train_size=frac / rest_frac, stratify=labels[rest], random_state=seed)
        parts.append(np.sort(take))
        rest_frac -= frac
    parts.append(np.sort(rest))
    return parts


def _split(images: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> Split:
    return Split(torch.from_numpy(np.ascontiguousarray(images[idx])), torch.from_numpy(labels[idx].astype(np.int64)))


def _channel_stats(images: torch.Tensor) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    x = images.float() / 255.0
    return tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())


def load_digits(seed: int = 0, size: int = 32) -> Dataset:
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes), resized to
    ``size`` x ``size`` (bilinear), replicated to 3 channels; stratified 60/20/20 train/val/test split
    with a fixed seed."""
    d = _load()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1).numpy()
    y = d.target.astype(np.int64)
    tr, va, te = _stratified(y, (0.6, 0.2, 0.2), seed)
    train = _split(x, y, tr)
    mean, std = _channel_stats(train.images)
    return Dataset("digits", train, _split(x, y, va), _split(x, y, te), 10, mean, std, "crop2")


def _cifar_members(name: str, data_dir: Path, download: bool) -> Dict[str, dict]:
    """The unpickled batches of a CIFAR archive (extracted folder or .tar.gz in ``data_dir``)."""
    archive, folder, md5, train_files, test_files, _ = CIFAR_ARCHIVES[name]
    folder_path, archive_path = data_dir / folder, data_dir / archive
    wanted = train_files + test_files
    if not folder_path.is_dir() and not archive_path.is_file():
        if download:
            _download(CIFAR_URL + archive, archive_path, md5)
        else:
            raise DatasetError(f"{name}: expected {folder_path}/ or {archive_path} (pass --download to fetch "
                               f"{archive} when online)")
    out = {}
    try:
        if folder_path.is_dir():
            for m in wanted:
                with open(folder_path / m, "rb") as f:
                    out[m] = safe_pickle.load(f, encoding="latin1")
        else:
            with tarfile.open(archive_path, "r:gz") as tar:
                for m in wanted:
                    f = tar.extractfile(f"{folder}/{m}")
                    if f is None:
                        raise KeyError(m)
                    out[m] = safe_pickle.load(f, encoding="latin1")
    except (KeyError, FileNotFoundError) as e:
        raise DatasetError(f"{name}: {folder_path if folder_path.is_dir() else archive_path} lacks {e}") from None
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise DatasetError(f"{name}: cannot read {archive_path if archive_path.exists() else folder_path}: {e}") from None
    return out


def _download(url: str, dst: Path, md5: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            for chunk in iter(lambda: r.read(1 << 20), b""):
                f.write(chunk)
    except OSError as e:
        raise DatasetError(f"could not download {url} to {dst}: {e}; put the file there by hand") from None
    digest = hashlib.md5(tmp.read_bytes()).hexdigest()
    if digest != md5:
        tmp.unlink()
        raise DatasetError(f"{url}: md5 {digest} does not match {md5}")
    os.replace(tmp, dst)


def load_cifar(name: str, data_dir: str, seed: int = 0, val_size: int = 5000, download: bool = False) -> Dataset:
    """CIFAR-10 / CIFAR-100 from the official python archives in ``data_dir`` (Krizhevsky 2009).

    The pickled batches are read with a restricted unpickler (numpy arrays only). ``val_size`` training
    images (stratified, seeded) are held out as the val split; test is the official test set.

    Raises:
        DatasetError: the folder/archive is missing (naming the expected paths) or unreadable.
    """
    _, _, _, train_files, test_files, label_key = CIFAR_ARCHIVES[name]
    members = _cifar_members(name, Path(data_dir), download)

    def stack(files):
        xs, ys = [], []
        for m in files:
            d = {k.encode("latin1") if isinstance(k, str) else k: v for k, v in members[m].items()}
            if b"data" not in d or label_key not in d:
                raise DatasetError(f"{name}: batch {m} lacks 'data' or '{label_key.decode()}'")
            xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[label_key], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    xtr, ytr = stack(train_files)
    xte, yte = stack(test_files)
    val_frac = min(max(val_size / len(ytr), 0.0), 0.5)
    tr, va = _stratified(ytr, (1 - val_frac, val_frac), seed)
    num_classes = 10 if name == "cifar10" else 100
    return Dataset(name, _split(xtr, ytr, tr), _split(xtr, ytr, va), _split(xte, yte, np.arange(len(yte))),
                   num_classes, CIFAR_MEAN[name], CIFAR_STD[name], "crop4+flip")


FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist package puts the files
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                       "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,) * 3, (0.3530,) * 3  # of the 60,000 training images, at 28x28
IDX_MAX_ITEMS = 10_000_000


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file (LeCun's MNIST format, gzip-compressed or not) of unsigned bytes: magic ``0x0000 08 ndim``, then
    ``ndim`` big-endian uint32 sizes, then the data. Returns a uint8 array of those sizes.

    Raises:
        DatasetError: unreadable, not IDX unsigned-byte data of ``ndim`` dimensions, or truncated.
    """
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DatasetError(f"{path}: cannot read: {e}") from None
    if len(raw) < 4 + 4 * ndim or raw[:2] != b"\0\0" or raw[2] != 0x08 or raw[3] != ndim:
        raise DatasetError(f"{path}: not an IDX file of {ndim}-dimensional unsigned bytes")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    if not 0 < dims[0] <= IDX_MAX_ITEMS or any(not 0 < d <= 4096 for d in dims[1:]):
        raise DatasetError(f"{path}: implausible IDX sizes {dims}")
    body = raw[4 + 4 * ndim:]
    if len(body) != int(np.prod(dims)):
        raise DatasetError(f"{path}: {len(body)} data bytes, the header's sizes {dims} need {int(np.prod(dims))}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _idx_file(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise DatasetError(f"fashion-mnist: {root} has no {stem}.gz; install Debian's dataset-fashion-mnist package "
                       f"(apt-get install dataset-fashion-mnist puts it in {FASHION_MNIST_DIR}) or pass --data-dir")


def load_fashion_mnist(data_dir: Optional[str] = None, seed: int = 0, val_size: int = 5000) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017: 70,000 real 28x28 grey-scale images of Zalando's articles, 10 classes) from
    its four IDX files in ``data_dir`` (default :data:`FASHION_MNIST_DIR`). ``val_size`` training images (stratified,
    seeded) are held out as val; test is the official 10,000. Images are zero-padded to 32x32 and replicated to 3
    channels (as digits); training batches are augmented with a random 4-pixel crop and horizontal flips.

    Raises:
        DatasetError: the folder or a file is missing (naming the Debian package), or a file is not valid IDX.
    """
    root = Path(data_dir or FASHION_MNIST_DIR)
    if not root.is_dir():
        raise DatasetError(f"fashion-mnist: {root} is not a folder; install Debian's dataset-fashion-mnist package "
                           f"(apt-get install dataset-fashion-mnist puts it in {FASHION_MNIST_DIR}) or pass --data-dir")
    parts = {}
    for split, (images, labels) in FASHION_MNIST_FILES.items():
        x, y = read_idx(_idx_file(root, images), 3), read_idx(_idx_file(root, labels), 1)
        if len(x) != len(y) or x.shape[1:] != (28, 28):
            raise DatasetError(f"fashion-mnist: {split} has {len(x)} images of {x.shape[1:]} and {len(y)} labels; "
                               "expected as many 28x28 images as labels")
        if y.max() > 9:
            raise DatasetError(f"fashion-mnist: {split} labels must be 0-9, found {int(y.max())}")
        x = np.pad(x, ((0, 0), (2, 2), (2, 2)))[:, None].repeat(3, axis=1)  # (N, 3, 32, 32)
        parts[split] = (x, y.astype(np.int64))
    (xtr, ytr), (xte, yte) = parts["train"], parts["test"]
    val_frac = min(max(val_size / len(ytr), 0.0), 0.5)
    tr, va = _stratified(ytr, (1 - val_frac, val_frac), seed)
    # the padding adds zeros, so the statistics are those of the padded images
    scale = 28 * 28 / (32 * 32)
    mean = tuple(m * scale for m in FASHION_MNIST_MEAN)
    std = tuple(float(np.sqrt((s * s + m * m) * scale - mm * mm)) for s, m, mm in zip(FASHION_MNIST_STD, FASHION_MNIST_MEAN, mean))
    return Dataset("fashion-mnist", _split(xtr, ytr, tr), _split(xtr, ytr, va), _split(xte, yte, np.arange(len(yte))),
                   10, mean, std, "crop4+flip")


def subset_train(data: Dataset, n: int, seed: int = 0) -> Dataset:
    """``data`` with a stratified, seeded subset of ``n`` training images (``--train-subset``); val and test unchanged.

    Raises:
        DatasetError: ``n`` below the number of classes or not below the training split's size.
    """
    size = len(data.train)
    if data.task == "segmentation":  # label maps: a seeded random subset (no class to stratify by)
        if not 1 <= n < size:
            raise DatasetError(f"--train-subset must be between 1 and {size - 1} ({data.name} has {size} training "
                               f"images), got {n}")
        take = torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:n].sort().values
        return data.with_split("train", Split(data.train.images[take], data.train.labels[take]))
    if not data.num_classes <= n < size:
        raise DatasetError(f"--train-subset must be between {data.num_classes} (the classes) and {size - 1} "
                           f"({data.name} has {size} training images), got {n}")
    labels = data.train.labels.numpy()
    take, _ = _stratified(labels, (n / size, 1 - n / size), seed)
    sub = Split(data.train.images[torch.from_numpy(take)], data.train.labels[torch.from_numpy(take)])
    return data.with_split("train", sub)


IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".gif", ".webp"}


def read_class_folders(folder: Path, classes: List[str], what: str, transform) -> Tuple[np.ndarray, np.ndarray]:
    """The images of ``folder/CLASS/*`` for each of ``classes`` (label = its index), each converted to RGB and passed
    through ``transform(PIL image) -> PIL image`` (all to one size): ``(uint8 (N, 3, H, W), int64 (N,))``.

    Raises:
        DatasetError: an unreadable image, or no image at all (``what`` names the dataset).
    """
    xs, ys = [], []
    for ci, c in enumerate(classes):
        for p in sorted((folder / c).iterdir()) if (folder / c).is_dir() else []:
            if p.suffix.lower() in IMAGE_EXTS:
                xs.append(np.asarray(transform(_read_rgb(p, what)), dtype=np.uint8).transpose(2, 0, 1))
                ys.append(ci)
    if not xs:
        raise DatasetError(f"{what}: no images under {folder}")
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def _read_rgb(path: Path, what: str):
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError as e:
        raise DatasetError(f"{what}: cannot read {path}: {e}") from None


def load_imagefolder(root: str, seed: int = 0, size: int = 32) -> Dataset:
    """Images in class folders (``root/CLASS/*.png``), or pre-split ``root/{train,val,test}/CLASS/*``.

    Images are converted to RGB and resized to ``size`` x ``size``. Without pre-split folders the images
    are split 70/15/15, stratified, with a fixed seed. Normalisation statistics come from the train split.

    Raises:
        DatasetError: missing folder, no class folders, an unreadable image.
    """
    rootp = Path(root)
    if not rootp.is_dir():
        raise DatasetError(f"imagefolder: {rootp} is not a folder (expected {rootp}/CLASS/IMAGE files)")

    def read(folder: Path, classes: List[str]) -> Tuple[np.ndarray, np.ndarray]:
        return read_class_folders(folder, classes, "imagefolder",
                                  lambda im: im.resize((size, size), Image.BILINEAR))

    presplit = (rootp / "train").is_dir() and (rootp / "test").is_dir()
    base = rootp / "train" if presplit else rootp
    classes = sorted(p.name for p in base.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DatasetError(f"imagefolder: {base} needs at least two class folders, found {len(classes)}")
    if presplit:
        xtr, ytr = read(rootp / "train", classes)
        xte, yte = read(rootp / "test", classes)
        if (rootp / "val").is_dir():
            xva, yva = read(rootp / "val", classes)
            train, val = _split(xtr, ytr, np.arange(len(ytr))), _split(xva, yva, np.arange(len(yva)))
        else:
            tr, va = _stratified(ytr, (0.85, 0.15), seed)
            train, val = _split(xtr, ytr, tr), _split(xtr, ytr, va)
        test = _split(xte, yte, np.arange(len(yte)))
    else:
        x, y = read(rootp, classes)
        tr, va, te = _stratified(y, (0.7, 0.15, 0.15), seed)
        train, val, test = _split(x, y, tr), _split(x, y, va), _split(x, y, te)
    mean, std = _channel_stats(train.images)
    return Dataset("imagefolder", train, val, test, len(classes), mean, std, "crop4+flip")


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load_imagenet(root: str, seed: int = 0, size: int = 224, val_size: int = 10000) -> Dataset:
    """ImageNet (ILSVRC-2012) in its standard folder layout, ``ROOT/train/WNID/*.JPEG`` and ``ROOT/val/WNID/*.JPEG``
    (the validation images sorted into class folders), through the image-folder reader (:func:`read_class_folders`):
    each image's shorter side resized to ``size * 256 / 224`` and centre-cropped square (the usual "resize 256, crop
    224"), held in memory as uint8; training batches take a random ``size`` crop and a horizontal flip, evaluation
    the centre crop; ImageNet's mean and std. ``val_size`` training images (seeded, at most half) are held out as val; the official val folder
    is the test split. Classes are the sorted folder names of ``train``.

    Raises:
        DatasetError: ``train`` or ``val`` missing (naming the layout), fewer than two classes, a class folder of val
            that train lacks, an unreadable image.
    """
    rootp = Path(root)
    for sub in ("train", "val"):
        if not (rootp / sub).is_dir():
            raise DatasetError(f"imagenet: {rootp / sub} is not a folder (expected {rootp}/train/WNID/*.JPEG and "
                               f"{rootp}/val/WNID/*.JPEG)")
    classes = sorted(p.name for p in (rootp / "train").iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DatasetError(f"imagenet: {rootp / 'train'} needs at least two class folders, found {len(classes)}")
    extra = sorted({p.name for p in (rootp / "val").iterdir() if p.is_dir()} - set(classes))
    if extra:
        raise DatasetError(f"imagenet: {rootp / 'val'} has class folders that train lacks: {', '.join(extra[:3])}")
    stored = int(round(size * 256 / 224))

    def resize_crop(im):  # the shorter side to `stored`, then the centre square
        s = stored / min(im.size)
        im = im.resize((max(stored, round(im.size[0] * s)), max(stored, round(im.size[1] * s))), Image.BILINEAR)
        left, top = (im.size[0] - stored) // 2, (im.size[1] - stored) // 2
        return im.crop((left, top, left + stored, top + stored))

    xtr, ytr = read_class_folders(rootp / "train", classes, "imagenet", resize_crop)
    xte, yte = read_class_folders(rootp / "val", classes, "imagenet", resize_crop)
    val_frac = min(max(val_size / len(ytr), 1 / len(ytr)), 0.5)
    perm = np.random.default_rng(seed).permutation(len(ytr))
    nv = max(1, int(round(val_frac * len(ytr))))
    va, tr = np.sort(perm[:nv]), np.sort(perm[nv:])
    return Dataset("imagenet", _split(xtr, ytr, tr), _split(xtr, ytr, va), _split(xte, yte, np.arange(len(yte))),
                   len(classes), IMAGENET_MEAN, IMAGENET_STD, "center+flip", crop=(size, size))


CITYSCAPES_SIZE = 256  # default working height (width twice it): a quarter of Cityscapes' 1024x2048


def _cityscapes_pairs(root: Path, split: str) -> List[Tuple[Path, Path]]:
    img_dir, lab_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    pattern = f"leftImg8bit/{split}/CITY/*_leftImg8bit.png"
    if not img_dir.is_dir():
        raise DatasetError(f"cityscapes: {img_dir} is not a folder (expected {root}/{pattern} and "
                           f"{root}/gtFine/{split}/CITY/*_gtFine_labelIds.png)")
    images = sorted(img_dir.glob("*/*_leftImg8bit.png"))
    if not images:
        raise DatasetError(f"cityscapes: no images matching {root}/{pattern}")
    pairs = []
    for im in images:
        lab = lab_dir / im.parent.name / im.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")
        if not lab.is_file():
            raise DatasetError(f"cityscapes: {im} has no label {lab} (expected "
                               f"{root}/gtFine/{split}/CITY/*_gtFine_labelIds.png beside every image)")
        pairs.append((im, lab))
    return pairs


def load_cityscapes(root: str, seed: int = 0, size: Optional[int] = None, val_size: Optional[int] = None) -> Dataset:
    """Cityscapes fine annotations (Cordts et al. CVPR 2016) in the official layout:
    ``ROOT/leftImg8bit/{train,val}/CITY/*_leftImg8bit.png`` with ``ROOT/gtFine/{train,val}/CITY/*_gtFine_labelIds.png``.

    Label ids map to the 19 training classes (:func:`edgeshrink.host.seg.cityscapes_lut`), the rest to 255 (ignored).
    Images are held in memory resized to ``size`` x ``2 * size`` (bilinear; labels nearest; default
    :data:`CITYSCAPES_SIZE`); training batches are randomly scaled (0.5-2), cropped back to that size and flipped.
    The official val split is the test split; ``val_size`` training images (seeded; default a tenth, at least one)
    are held out as val, the split models are selected on. ImageNet's mean and std (the usual initialisation).

    Raises:
        DatasetError: a folder or a label file missing (naming the pattern), an unreadable file, a label map of
            another size than its image, or a label id outside Cityscapes' 0..33.
    """
    rootp = Path(root)
    if not rootp.is_dir():
        raise DatasetError(f"cityscapes: {rootp} is not a folder (expected {rootp}/leftImg8bit/{{train,val}}/CITY/"
                           "*_leftImg8bit.png and gtFine/{train,val}/CITY/*_gtFine_labelIds.png)")
    h = int(size or CITYSCAPES_SIZE)
    w = 2 * h
    lut = cityscapes_lut()

    def read(pairs):
        xs = np.empty((len(pairs), 3, h, w), dtype=np.uint8)
        ys = np.empty((len(pairs), h, w), dtype=np.uint8)
        for k, (ip, lp) in enumerate(pairs):
            im = _read_rgb(ip, "cityscapes")
            try:
                with Image.open(lp) as lab_im:
                    lab = np.asarray(lab_im)
            except OSError as e:
                raise DatasetError(f"cityscapes: cannot read {lp}: {e}") from None
            if lab.ndim != 2 or lab.shape != (im.size[1], im.size[0]):
                raise DatasetError(f"cityscapes: {lp} is {lab.shape}, its image {im.size[1]}x{im.size[0]}; expected "
                                   "a single-channel label map of the image's size")
            if lab.max() > CITYSCAPES_MAX_ID or lab.min() < 0:
                raise DatasetError(f"cityscapes: {lp} has label id {int(lab.max())}, outside Cityscapes' labelIds "
                                   f"0..{CITYSCAPES_MAX_ID}")
            xs[k] = np.asarray(im.resize((w, h), Image.BILINEAR), dtype=np.uint8).transpose(2, 0, 1)
            ys[k] = lut[np.asarray(Image.fromarray(lab.astype(np.uint8)).resize((w, h), Image.NEAREST))]
        return xs, ys

    xtr, ytr = read(_cityscapes_pairs(rootp, "train"))
    xte, yte = read(_cityscapes_pairs(rootp, "val"))
    nv = int(val_size) if val_size is not None else max(1, len(ytr) // 10)
    if not 1 <= nv < len(ytr):
        raise DatasetError(f"cityscapes: {len(ytr)} training images cannot spare {nv} for val")
    perm = np.random.default_rng(seed).permutation(len(ytr))
    va, tr = np.sort(perm[:nv]), np.sort(perm[nv:])

    def split(x, y, idx):
        return Split(torch.from_numpy(np.ascontiguousarray(x[idx])), torch.from_numpy(np.ascontiguousarray(y[idx])))

    data = Dataset("cityscapes", split(xtr, ytr, tr), split(xtr, ytr, va), split(xte, yte, np.arange(len(yte))),
                   len(CITYSCAPES_CLASSES), IMAGENET_MEAN, IMAGENET_STD, "scale+crop+flip", task="segmentation",
                   metrics=("miou", "top1", "top5"))
    return data


DATASETS: Dict[str, Callable[..., Dataset]] = {
    "digits": lambda data_dir=None, seed=0, download=False: load_digits(seed),
    "fashion-mnist": lambda data_dir=None, seed=0, download=False: load_fashion_mnist(data_dir, seed),
    "cifar10": lambda data_dir=None, seed=0, download=False: load_cifar("cifar10", data_dir or "data", seed, download=download),
    "cifar100": lambda data_dir=None, seed=0, download=False: load_cifar("cifar100", data_dir or "data", seed, download=download),
    "imagefolder": lambda data_dir=None, seed=0, download=False: load_imagefolder(data_dir or "data", seed),
    "imagenet": lambda data_dir=None, seed=0, download=False: load_imagenet(data_dir or "data", seed),
    "cityscapes": lambda data_dir=None, seed=0, download=False: load_cityscapes(data_dir or "data", seed),
}
assert tuple(DATASETS) == DATASET_NAMES, "a dataset's name belongs in host/names.py too (the command line's list)"
NEEDS_DATA_DIR = {"imagefolder": "ROOT/CLASS/IMAGE files",
                  "imagenet": "ROOT/train/WNID/*.JPEG and ROOT/val/WNID/*.JPEG",
                  "cityscapes": "ROOT/leftImg8bit/{train,val}/CITY/*_leftImg8bit.png and ROOT/gtFine/..."}


def resize_images(data: Dataset, size: int) -> Dataset:
    """Every split resized to ``size`` x ``size`` (bilinear, antialiased when shrinking), still uint8: how a network
    for larger inputs (96-512 pixels on edge devices) is trained and pruned on a small-image dataset.

    Raises:
        DatasetError: a segmentation dataset (its loader takes the size: labels are resized with the images).
    """
    if data.task == "segmentation":
        raise DatasetError(f"{data.name}: resize a segmentation dataset through its loader (--image-size)")
    if data.input_shape[2:] == (size, size):
        return data

    def one(sp: Split) -> Split:
        out = []
        for i in range(0, len(sp), 1024):
            x = sp.images[i:i + 1024].float()
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=size < sp.images.shape[-1])
            out.append(x.round().clamp(0, 255).to(torch.uint8))
        return Split(torch.cat(out), sp.labels)

    return replace(data, train=one(data.train), val=one(data.val), test=one(data.test))


def export_inputs(data: Dataset, split: str, out: str, limit: Optional[int] = None) -> int:
    """Write ``split`` of ``data`` as the dynamic runner's input set (``device bench MODEL --inputs``): ``x``
    ``(N, 3, H, W)`` float32 normalised as :meth:`Dataset.batches` gives it to the networks (centre-cropped where the
    dataset crops), ``y`` ``(N,)`` int64;
    the first ``limit`` images when given. Written atomically; returns N.

    Raises:
        OutputError: ``out`` cannot be written.
    """
    prepare_file(out, "-o")
    s: Split = getattr(data, split)
    n = len(s) if limit is None else min(int(limit), len(s))
    images = s.images[:n] if data.crop is None else _center_crop(s.images[:n], data.crop)
    x = data.normalize(images).numpy().astype(np.float32)
    y = s.labels[:n].numpy().astype(np.int64)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a temporary name
            np.savez(f, x=x, y=y)
    return n


def load_dataset(name: str, data_dir: Optional[str] = None, seed: int = 0, download: bool = False,
                 train_subset: Optional[int] = None, image_size: Optional[int] = None) -> Dataset:
    """A dataset by name (see :data:`DATASETS`), optionally with a stratified subset of ``train_subset`` training
    images (:func:`subset_train`) and its images resized to ``image_size`` pixels square (:func:`resize_images`;
    digits is resized from its 8x8 originals; cityscapes is held at ``image_size`` x ``2 * image_size``, imagenet
    crops ``image_size`` square).

    Raises:
        DatasetError: unknown name, the dataset's files are missing or unreadable, a bad ``train_subset`` or an
            ``image_size`` outside 8..1024.
    """
    if image_size is not None and not 8 <= int(image_size) <= 1024:
        raise DatasetError(f"--image-size must be 8..1024 pixels, got {image_size}")
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if name in NEEDS_DATA_DIR and not data_dir:
        raise DatasetError(f"{name} needs --data-dir ROOT ({NEEDS_DATA_DIR[name]})")
    if name == "digits" and image_size:
        data = load_digits(seed, int(image_size))
    elif name == "cityscapes":
        data = load_cityscapes(data_dir, seed, size=image_size)
    elif name == "imagenet":
        data = load_imagenet(data_dir, seed, size=int(image_size or 224))
    else:
        data = DATASETS[name](data_dir=data_dir, seed=seed, download=download)
        if image_size:
            data = resize_images(data, int(image_size))
    return data if train_subset is None else subset_train(data, int(train_subset), seed)
