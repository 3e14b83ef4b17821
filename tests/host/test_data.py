"""Datasets on real small inputs: the bundled digits, CIFAR archives and image folders the tests write."""

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from edgeshrink.host.data import load_cifar, load_dataset, load_imagefolder
from edgeshrink.host.errors import DatasetError


def test_digits_is_the_real_bundled_set_split_stratified(digits):
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    assert digits.train.images.shape[1:] == (3, 32, 32) and digits.train.images.dtype == torch.uint8
    assert torch.equal(digits.train.images[:, 0], digits.train.images[:, 2])  # replicated grey channel
    for split in (digits.train, digits.val, digits.test):
        counts = torch.bincount(split.labels, minlength=10).float()
        assert counts.min() / counts.max() > 0.85  # stratified: every class about equally present
    # fixed and seeded: the same split every time, a different one with another seed
    from edgeshrink.host.data import load_digits

    again, other = load_digits(seed=0), load_digits(seed=1)
    assert torch.equal(again.test.images, digits.test.images)
    assert not torch.equal(other.test.images, digits.test.images)


def test_digits_splits_are_disjoint(digits):
    def rows(split):
        return {bytes(x.numpy().tobytes()) + bytes([int(y)]) for x, y in zip(split.images, split.labels)}

    tr, va, te = rows(digits.train), rows(digits.val), rows(digits.test)
    # a few digits images are exact duplicates in the source data; overlap must stay at that level
    assert len(tr & te) <= 3 and len(tr & va) <= 3


def test_batches_are_normalised_and_augmented(digits):
    g = torch.Generator().manual_seed(0)
    x, y = next(digits.batches("train", 256, shuffle=True, augment=False, generator=g))
    assert x.shape == (256, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (256,)
    assert abs(float(x.mean())) < 0.2 and 0.7 < float(x.std()) < 1.3
    xa, _ = next(digits.batches("train", 256, shuffle=False, augment=True, generator=torch.Generator().manual_seed(1)))
    xp, _ = next(digits.batches("train", 256, shuffle=False, augment=False))
    assert xa.shape == xp.shape and not torch.equal(xa, xp)  # random crops moved the digits


def _write_cifar10(root, n_train=20, n_test=10, as_tar=True):
    rng = np.random.default_rng(0)
    members = {}
    for i in range(1, 6):
        members[f"data_batch_{i}"] = {b"data": rng.integers(0, 256, (n_train, 3072), dtype=np.uint8),
                                      b"labels": [int(v) for v in rng.integers(0, 10, n_train)]}
    members["test_batch"] = {b"data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8),
                             b"labels": [int(v) for v in np.arange(n_test) % 10]}
    if as_tar:
        with tarfile.open(os.path.join(root, "cifar-10-python.tar.gz"), "w:gz") as tar:
            for name, d in members.items():
                blob = pickle.dumps(d, protocol=2)
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    else:
        os.makedirs(os.path.join(root, "cifar-10-batches-py"))
        for name, d in members.items():
            with open(os.path.join(root, "cifar-10-batches-py", name), "wb") as f:
                pickle.dump(d, f, protocol=2)
    return members


@pytest.mark.parametrize("as_tar", [True, False])
def test_cifar10_reads_the_official_archive_format(tmp_path, as_tar):
    members = _write_cifar10(str(tmp_path), as_tar=as_tar)
    d = load_cifar("cifar10", str(tmp_path), val_size=10)
    assert d.num_classes == 10 and len(d.train) + len(d.val) == 100 and len(d.test) == 10
    first = members["test_batch"][b"data"][0].reshape(3, 32, 32)
    assert np.array_equal(d.test.images[0].numpy(), first)  # channel-major rows, as the archive stores them
    assert d.test.labels.tolist() == list(range(10))
    assert d.augment == "crop4+flip" and d.mean == (0.4914, 0.4822, 0.4465)


def test_cifar100_reads_fine_labels(tmp_path):
    rng = np.random.default_rng(0)
    with tarfile.open(tmp_path / "cifar-100-python.tar.gz", "w:gz") as tar:
        for name, n in (("train", 200), ("test", 20)):
            blob = pickle.dumps({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                                 b"fine_labels": [int(v) for v in np.arange(n) % 100],
                                 b"coarse_labels": [0] * n}, protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    d = load_dataset("cifar100", str(tmp_path))
    assert d.num_classes == 100 and len(d.test) == 20 and int(d.test.labels.max()) == 19


def test_missing_cifar_names_the_folder_and_file_it_expected(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset("cifar10", str(tmp_path / "nowhere"))
    msg = str(e.value)
    assert "cifar-10-batches-py" in msg and "cifar-10-python.tar.gz" in msg and "nowhere" in msg and "--download" in msg


def test_cifar_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    os.makedirs(tmp_path / "cifar-10-batches-py")
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(tmp_path / "cifar-10-batches-py" / name, "wb") as f:
            pickle.dump({b"data": Evil(), b"labels": []}, f, protocol=2)
    with pytest.raises(Exception, match="not allowed"):
        load_cifar("cifar10", str(tmp_path))


def test_imagefolder_reads_class_folders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        os.makedirs(tmp_path / c)
        for i in range(20):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    d = load_imagefolder(str(tmp_path), size=32)
    assert d.num_classes == 2 and len(d.train) + len(d.val) + len(d.test) == 40
    assert d.train.images.shape[1:] == (3, 32, 32)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DatasetError, match="is not a folder"):
        load_imagefolder(str(tmp_path / "missing"))
    os.makedirs(tmp_path / "only")
    with pytest.raises(DatasetError, match="at least two class folders"):
        load_imagefolder(str(tmp_path))


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")


def write_idx(path, arr: np.ndarray, gz: bool = True) -> None:
    """An IDX file of unsigned bytes (LeCun's MNIST format), as Zalando ships Fashion-MNIST."""
    import gzip

    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = head + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def small_fashion(root, n_train=200, n_test=30, gz=True):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    sets = {}
    for split, n, stem in (("train", n_train, "train"), ("test", n_test, "t10k")):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = np.arange(n, dtype=np.uint8) % 10
        sfx = ".gz" if gz else ""
        write_idx(root / f"{stem}-images-idx3-ubyte{sfx}", x, gz)
        write_idx(root / f"{stem}-labels-idx1-ubyte{sfx}", y, gz)
        sets[split] = (x, y)
    return sets


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_the_idx_files(tmp_path, gz):
    from edgeshrink.host.data import load_fashion_mnist

    sets = small_fashion(tmp_path / "fm", gz=gz)
    d = load_fashion_mnist(str(tmp_path / "fm"), seed=0, val_size=50)
    assert (len(d.train), len(d.val), len(d.test)) == (150, 50, 30) and d.num_classes == 10
    assert d.input_shape == (1, 3, 32, 32) and d.augment == "crop4+flip"
    x, y = sets["test"]
    # the official test set in file order: zero-padded by 2 pixels to 32x32, one grey channel replicated to three
    assert torch.equal(d.test.images[:, 0, 2:30, 2:30], torch.from_numpy(x))
    assert torch.equal(d.test.images[:, 1], d.test.images[:, 0]) and torch.equal(d.test.images[:, 2], d.test.images[:, 0])
    assert int(d.test.images[:, :, :2].sum()) == 0 and int(d.test.images[:, :, :, 30:].sum()) == 0
    assert torch.equal(d.test.labels, torch.from_numpy(y.astype(np.int64)))
    assert torch.bincount(d.val.labels).tolist() == [5] * 10  # stratified hold-out
    # the hold-out is taken from the training images, none lost or repeated
    tx = sets["train"][0]
    got = sorted(bytes(im[0, 2:30, 2:30].numpy()) for im in torch.cat([d.train.images, d.val.images]))
    assert got == sorted(bytes(im) for im in tx)


def test_fashion_mnist_train_subset_is_stratified_and_leaves_val_and_test(tmp_path):
    small_fashion(tmp_path / "fm", n_train=400)
    full = load_dataset("fashion-mnist", str(tmp_path / "fm"))
    d = load_dataset("fashion-mnist", str(tmp_path / "fm"), train_subset=100)
    assert len(d.train) == 100 and torch.bincount(d.train.labels).tolist() == [10] * 10
    assert torch.equal(d.val.images, full.val.images) and torch.equal(d.test.labels, full.test.labels)
    with pytest.raises(DatasetError, match="--train-subset must be between 10"):
        load_dataset("fashion-mnist", str(tmp_path / "fm"), train_subset=5)


@pytest.mark.parametrize("damage,needle", [
    (lambda p: p.write_bytes(p.read_bytes()[:-100]), "data bytes"),
    (lambda p: p.write_bytes(b"\x00\x00\x08\x01" + p.read_bytes()[4:]), "not an IDX file of 3-dimensional"),
    (lambda p: p.unlink(), "no train-images-idx3-ubyte.gz"),
])
def test_fashion_mnist_refuses_damaged_files(tmp_path, damage, needle):
    small_fashion(tmp_path / "fm", gz=False)
    damage(tmp_path / "fm" / "train-images-idx3-ubyte")
    with pytest.raises(DatasetError, match=needle):
        load_dataset("fashion-mnist", str(tmp_path / "fm"))


def test_missing_fashion_mnist_names_the_package_and_the_folder(tmp_path):
    with pytest.raises(DatasetError, match="dataset-fashion-mnist") as e:
        load_dataset("fashion-mnist", str(tmp_path / "absent"))
    assert str(tmp_path / "absent") in str(e.value) and "/usr/share/datasets/fashion-mnist" in str(e.value)


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
def test_the_real_fashion_mnist():
    from edgeshrink.host.data import FASHION_MNIST_DIR

    d = load_dataset("fashion-mnist")
    assert (len(d.train), len(d.val), len(d.test)) == (55_000, 5_000, 10_000)
    # Zalando's release: 6,000 training and 1,000 test images per class
    assert (torch.bincount(d.train.labels) + torch.bincount(d.val.labels)).tolist() == [6000] * 10
    assert torch.bincount(d.test.labels).tolist() == [1000] * 10 and torch.bincount(d.val.labels).tolist() == [500] * 10
    x = torch.cat([d.train.images, d.val.images]).float() / 255
    assert x.mean().item() == pytest.approx(d.mean[0], abs=1e-3) and x.std().item() == pytest.approx(d.std[0], abs=1e-3)
    assert FASHION_MNIST_DIR == "/usr/share/datasets/fashion-mnist"
