"""Segmentation: mIoU and RMI against hand computations on tiny tensors, the Cityscapes reader on a folder in the
official layout (real PNG files), and its refusals."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from edgeshrink.host.data import load_dataset
from edgeshrink.host.errors import DatasetError
from edgeshrink.host.seg import RMILoss, cityscapes_lut, confusion_matrix, evaluate_segmentation, iou_from_confusion
from tests.cityscapes_data import write_cityscapes
from tests.conftest import one_line_error


def test_miou_from_the_confusion_matrix_by_hand():
    target = torch.tensor([[[0, 0, 1], [1, 2, 255]]])
    pred = torch.tensor([[[0, 1, 1], [1, 2, 0]]])  # the last pixel is ignored, whatever it predicts
    cm = confusion_matrix(pred, target, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    got = iou_from_confusion(cm)
    # class 0: TP 1, FN 1 -> 1/2; class 1: TP 2, FP 1 -> 2/3; class 2: 1/1; class 3 neither labelled nor predicted
    assert got["per_class_iou"][:3] == pytest.approx([50.0, 200 / 3, 100.0]) and got["per_class_iou"][3] is None
    assert got["miou"] == pytest.approx((50 + 200 / 3 + 100) / 3)
    assert got["pixel_acc"] == pytest.approx(80.0)  # 4 of the 5 labelled pixels


def test_evaluate_segmentation_counts_pixels_and_reduces_the_confusion_matrix():
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 0] = 5.0  # predicts class 0 everywhere
    y = torch.tensor([[[0, 1], [0, 255]]])
    model = torch.nn.Identity()
    got = evaluate_segmentation(model, [(logits, y)], 3)
    assert got["top1"] == pytest.approx(200 / 3)  # 2 of 3 labelled pixels
    assert got["miou"] == pytest.approx((200 / 3 + 0.0) / 2)  # class 0: TP 2, FP 1; class 1: FN 1; class 2 absent
    assert got["top5"] == pytest.approx(100.0)  # 3 classes: every label is within the top 5
    doubled = evaluate_segmentation(model, [(logits, y)], 3, reduce=lambda t: 2 * t)  # two ranks holding the same
    assert doubled["miou"] == pytest.approx(got["miou"]) and doubled["loss"] == pytest.approx(got["loss"])


def _rmi_by_hand(logits: np.ndarray, labels: np.ndarray, pool: int, lam: float = 0.5, alpha: float = 5e-4) -> float:
    """Zhao et al. 2019, Eq. (12)-(16), written out with loops over the image's 3x3 regions (one image)."""
    c, h, w = logits.shape
    valid = labels != 255
    onehot = np.stack([(labels == k) & valid for k in range(c)]).astype(np.float64)
    sig = 1 / (1 + np.exp(-logits.astype(np.float64)))
    bce = -(onehot * np.log(sig) + (1 - onehot) * np.log(1 - sig)) * valid
    bce = bce.sum() / (valid.sum() + 1)
    probs = sig * valid + 1e-6
    if pool > 1:
        def avg(a):
            hh, ww = a.shape[1] // pool, a.shape[2] // pool
            return a[:, :hh * pool, :ww * pool].reshape(c, hh, pool, ww, pool).mean(axis=(2, 4))
        onehot, probs = avg(onehot), avg(probs)
    total = 0.0
    for k in range(c):
        ys, ps = [], []
        for i in range(onehot.shape[1] - 2):
            for j in range(onehot.shape[2] - 2):
                ys.append(onehot[k, i:i + 3, j:j + 3].reshape(-1))
                ps.append(probs[k, i:i + 3, j:j + 3].reshape(-1))
        Y, P = np.array(ys).T, np.array(ps).T  # (9, M)
        Y, P = Y - Y.mean(1, keepdims=True), P - P.mean(1, keepdims=True)
        sy, sp, syp = Y @ Y.T, P @ P.T, Y @ P.T
        cond = sy - syp @ np.linalg.inv(sp + alpha * np.eye(9)) @ syp.T
        sign, logdet = np.linalg.slogdet(cond + alpha * np.eye(9))
        assert sign > 0
        total += 0.5 * logdet / 9
    return lam * bce + (1 - lam) * total


@pytest.mark.parametrize("size,pool", [(6, 1), (16, 3)])
def test_rmi_equals_the_papers_formula_computed_by_hand(size, pool):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(1, 3, size, size, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (1, size, size), generator=g)
    labels[0, 0, :2] = 255
    loss = RMILoss(3, pool_size=pool, pool_stride=pool)(logits, labels)
    assert float(loss) == pytest.approx(_rmi_by_hand(logits[0].numpy(), labels[0].numpy(), pool), rel=1e-6)


def test_rmi_prefers_the_right_map_and_has_a_gradient():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (2, 24, 24), generator=g)
    right = (torch.nn.functional.one_hot(labels, 2).permute(0, 3, 1, 2).float() * 8 - 4).requires_grad_(True)
    wrong = -right.detach()
    loss = RMILoss(2)
    assert float(loss(right, labels).detach()) < float(loss(wrong, labels))
    loss(right, labels).backward()
    assert right.grad is not None and torch.isfinite(right.grad).all() and right.grad.abs().sum() > 0


def test_cityscapes_label_ids_map_to_the_official_train_ids():
    lut = cityscapes_lut()
    # cityscapesscripts' labels.py: road 7 -> 0, sidewalk 8 -> 1, building 11 -> 2, pole 17 -> 5, sky 23 -> 10,
    # car 26 -> 13, train 31 -> 16, bicycle 33 -> 18; parking 9, guard rail 14 and caravan 29 are ignored
    assert [int(lut[i]) for i in (7, 8, 11, 17, 23, 26, 31, 33)] == [0, 1, 2, 5, 10, 13, 16, 18]
    assert {int(lut[i]) for i in (0, 1, 4, 9, 14, 29, 30)} == {255}
    assert sorted(set(int(v) for v in lut[:34]) - {255}) == list(range(19))


def test_cityscapes_reader_on_the_official_layout(tmp_path):
    root = write_cityscapes(tmp_path / "cs", n_train=10, n_val=3, h=64, w=128)
    data = load_dataset("cityscapes", str(root), image_size=32)
    assert data.task == "segmentation" and data.num_classes == 19 and data.metrics[0] == "miou"
    assert (len(data.train), len(data.val), len(data.test)) == (9, 1, 3)  # a tenth of train held out; val is test
    assert tuple(data.train.images.shape[1:]) == (3, 32, 64) and tuple(data.train.labels.shape[1:]) == (32, 64)
    # road, pole, sky and car of the written scenes, and the ignored ids 0 and 4
    assert set(data.test.labels.unique().tolist()) == {0, 5, 10, 13, 255}
    x, y = next(data.batches("train", 4, shuffle=True, augment=True, generator=torch.Generator().manual_seed(0)))
    assert x.shape == (4, 3, 32, 64) and y.shape == (4, 32, 64) and y.dtype == torch.int64
    assert set(y.unique().tolist()) <= {0, 5, 10, 13, 255}


def test_cityscapes_refusals_name_the_folder_and_the_pattern(tmp_path, host_cli):
    from PIL import Image

    root = write_cityscapes(tmp_path / "nolabels", n_train=3, n_val=2, h=32, w=64, labels=False)
    with pytest.raises(DatasetError, match=r"has no label .*gtFine/train/CITY/\*_gtFine_labelIds.png"):
        load_dataset("cityscapes", str(root), image_size=16)
    bad = write_cityscapes(tmp_path / "badid", n_train=3, n_val=2, h=32, w=64)
    lab = next((bad / "gtFine" / "val").glob("*/*_labelIds.png"))
    Image.fromarray(np.full((32, 64), 40, dtype=np.uint8)).save(lab)
    r = host_cli("train", "--model", "hrnet_w18_small_seg", "--dataset", "cityscapes", "--data-dir", bad,
                 "--image-size", "16", "--epochs", "1", "--out", tmp_path / "o")
    one_line_error(r, "label id 40, outside Cityscapes' labelIds 0..33", str(lab))
    r = host_cli("train", "--model", "hrnet_w18_small_seg", "--dataset", "cityscapes", "--data-dir", tmp_path / "none",
                 "--epochs", "1", "--out", tmp_path / "o")
    one_line_error(r, "leftImg8bit/{train,val}/CITY/*_leftImg8bit.png")
    good = write_cityscapes(tmp_path / "good", n_train=3, n_val=2, h=32, w=64)
    r = host_cli("train", "--model", "resnet20", "--dataset", "cityscapes", "--data-dir", good,
                 "--image-size", "16", "--epochs", "1", "--out", tmp_path / "o")
    one_line_error(r, "resnet20 is a classification network and cityscapes a segmentation dataset")
    r = host_cli("train", "--model", "resnet20", "--criterion", "rmi", "--epochs", "1", "--out", tmp_path / "o")
    one_line_error(r, "--criterion rmi is a segmentation loss")
    r = host_cli("train", "--model", "resnet20", "--metrics", "miou,top1", "--epochs", "1", "--out", tmp_path / "o")
    one_line_error(r, "--metrics miou needs a segmentation dataset")
    assert not (tmp_path / "o").exists()
