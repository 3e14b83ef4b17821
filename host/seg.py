"""Semantic segmentation: the Cityscapes label mapping, mIoU from a confusion matrix, and the Region Mutual
Information loss.

- Cityscapes (Cordts et al. CVPR 2016): the 34 ``labelIds`` of ``*_gtFine_labelIds.png`` map to the 19 training
  classes of the official benchmark (``cityscapesscripts/helpers/labels.py``, ``trainId``); every other id is
  ignored (:data:`IGNORE_INDEX`, 255), as in the official evaluation.
- mIoU: per class ``TP / (TP + FP + FN)`` over the labelled pixels, classes absent from both the labels and the
  predictions left out of the mean (the official script's NaN handling).
- RMI (Zhao et al. NeurIPS 2019, "Region Mutual Information Loss for Semantic Segmentation"): each pixel with its
  3x3 neighbourhood is a point of a ``d = 9`` dimensional distribution; the loss is the lower bound of the mutual
  information between the label and prediction regions, Eq. (12)-(14):
  ``-I_l(Y; P) = 1/2 log det(Sigma_Y - Cov(Y, P) Sigma_P^-1 Cov(Y, P)^T)``, per class and per image, divided by
  ``d``, summed over classes and averaged over images, combined with the (binary) cross-entropy as Eq. (16):
  ``lambda * L_bce + (1 - lambda) * L_rmi`` with ``lambda = 0.5``. The paper's defaults: probabilities from a
  sigmoid, both maps down-sampled by 3x3 average pooling with stride 3 before the regions are taken, a small
  ``5e-4 * I`` added where a matrix is inverted or its determinant taken; covariances are sums over the regions,
  as the authors' code computes them.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE_INDEX = 255
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle")
# labelId -> trainId (cityscapesscripts' labels.py); ids 0..33 exist, the rest are not Cityscapes labels
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                        26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_MAX_ID = 33


def cityscapes_lut() -> np.ndarray:
    """A 256-entry uint8 table from ``labelId`` to ``trainId`` (255 for ignored ids and for ids past 33)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for k, v in CITYSCAPES_TRAIN_IDS.items():
        lut[k] = v
    return lut


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``(num_classes, num_classes)`` int64 counts, rows the label, columns the prediction, over the pixels whose
    label is not ``ignore_index``. ``pred`` and ``target`` are integer tensors of one shape (``(N, H, W)``)."""
    valid = target != ignore_index
    t, p = target[valid].long(), pred[valid].long()
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).view(num_classes, num_classes)


def iou_from_confusion(cm: torch.Tensor) -> Dict[str, object]:
    """``{"miou": %, "per_class_iou": [% or None], "pixel_acc": %}`` of a confusion matrix (:func:`confusion_matrix`);
    a class with no labelled and no predicted pixel gets None and is left out of the mean."""
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    per = [None if u == 0 else float(100.0 * t / u) for t, u in zip(tp.tolist(), union.tolist())]
    seen = [v for v in per if v is not None]
    total = float(cm.sum())
    return {"miou": float(np.mean(seen)) if seen else 0.0, "per_class_iou": per,
            "pixel_acc": 100.0 * float(tp.sum()) / total if total else 0.0}


def _regions(x: torch.Tensor, radius: int) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, C, radius**2, M)``: every pixel's ``radius x radius`` neighbourhood (pixels whose
    neighbourhood lies inside the map), one row per position in the square, ``M = (H - r + 1) * (W - r + 1)``."""
    n, c, h, w = x.shape
    hh, ww = h - radius + 1, w - radius + 1
    rows = [x[:, :, dy:dy + hh, dx:dx + ww].reshape(n, c, -1) for dy in range(radius) for dx in range(radius)]
    return torch.stack(rows, dim=2)


class RMILoss(nn.Module):
    """The Region Mutual Information loss combined with the binary cross-entropy (see the module doc).

    Args:
        num_classes: channels of the logits.
        radius: the square region's side (3: ``d = 9``).
        pool_size / pool_stride: average pooling of labels and probabilities before the regions (3 / 3); a stride
            of 1 and size 1 leave the maps as they are.
        weight_lambda: ``lambda`` of Eq. (16), the cross-entropy's share.
        pos_alpha: added to the diagonal where a covariance is inverted or its log-determinant taken.

    Call: ``loss(logits (N, C, H, W), labels (N, H, W) int64 with ignore_index) -> scalar``.
    """

    def __init__(self, num_classes: int, radius: int = 3, pool_size: int = 3, pool_stride: int = 3,
                 weight_lambda: float = 0.5, pos_alpha: float = 5e-4, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.num_classes, self.radius = num_classes, radius
        self.pool_size, self.pool_stride = pool_size, pool_stride
        self.weight_lambda, self.pos_alpha, self.ignore_index = weight_lambda, pos_alpha, ignore_index

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        valid = (labels != self.ignore_index)
        onehot = F.one_hot(torch.where(valid, labels, torch.zeros_like(labels)), self.num_classes)
        onehot = onehot.permute(0, 3, 1, 2).to(logits.dtype) * valid.unsqueeze(1)
        mask = valid.unsqueeze(1).to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, onehot, weight=mask.expand_as(logits), reduction="sum")
        bce = bce / (mask.sum() + 1.0)
        return self.weight_lambda * bce + (1.0 - self.weight_lambda) * self.rmi_lower_bound(logits, onehot, mask)

    def rmi_lower_bound(self, logits: torch.Tensor, onehot: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``-I_l(Y; P) / d`` summed over classes, averaged over images (Eq. 14)."""
        probs = torch.sigmoid(logits) * mask + 1e-6
        y = onehot
        if self.pool_stride > 1:
            y = F.avg_pool2d(y, self.pool_size, self.pool_stride)
            probs = F.avg_pool2d(probs, self.pool_size, self.pool_stride)
        d = self.radius * self.radius
        ly = _regions(y, self.radius).double()
        lp = _regions(probs, self.radius).double()
        ly = ly - ly.mean(dim=3, keepdim=True)
        lp = lp - lp.mean(dim=3, keepdim=True)
        eye = torch.eye(d, dtype=torch.float64, device=logits.device)
        cov_y = ly @ ly.transpose(2, 3)
        cov_p = lp @ lp.transpose(2, 3)
        cov_yp = ly @ lp.transpose(2, 3)
        cond = cov_y - cov_yp @ torch.linalg.solve(cov_p + self.pos_alpha * eye, cov_yp.transpose(2, 3))
        cond = 0.5 * (cond + cond.transpose(2, 3))  # symmetric up to rounding; Cholesky wants it exactly
        logdet = 2.0 * torch.log(torch.diagonal(torch.linalg.cholesky(cond + self.pos_alpha * eye), dim1=2,
                                                dim2=3)).sum(-1)
        per = 0.5 * logdet / d  # (N, C)
        return per.sum(dim=1).mean().to(logits.dtype)


CRITERIA = ("crossentropy", "rmi")


def make_criterion(name: str, num_classes: int, task: str, label_smoothing: float = 0.0) -> nn.Module:
    """The training loss by name: ``crossentropy`` (with the ignored label for segmentation) or ``rmi``
    (segmentation only).

    Raises:
        ValueError: an unknown name, or ``rmi`` for a classification task.
    """
    if name not in CRITERIA:
        raise ValueError(f"unknown criterion {name!r}; known: {', '.join(CRITERIA)}")
    if name == "rmi":
        if task != "segmentation":
            raise ValueError("--criterion rmi is a segmentation loss; the dataset is a classification one")
        return RMILoss(num_classes)
    if task == "segmentation":
        return nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing)
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, batches, num_classes: int,
                          reduce=None) -> Dict[str, object]:
    """mIoU, per-class IoU, pixel top-1 / top-5 (in %) and the mean cross-entropy over the labelled pixels of
    ``batches`` (``(x (B, 3, H, W), y (B, H, W))``). ``reduce(tensor) -> tensor`` sums a tensor over the ranks of a
    distributed run (the confusion matrix, counts) before the metrics are taken."""
    model.eval()
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    sums = torch.zeros(3, dtype=torch.float64)  # loss sum, top-5 hits, labelled pixels
    for x, y in batches:
        logits = model(x)
        cm += confusion_matrix(logits.argmax(1), y, num_classes).cpu()
        valid = y != IGNORE_INDEX
        sums[0] += F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum").item()
        k = min(5, num_classes)
        top = logits.topk(k, dim=1).indices  # (B, k, H, W)
        sums[1] += ((top == y.unsqueeze(1)).any(1) & valid).sum().item()
        sums[2] += valid.sum().item()
    if reduce is not None:
        cm, sums = reduce(cm), reduce(sums)
    out = iou_from_confusion(cm)
    n = max(float(sums[2]), 1.0)
    return {"miou": out["miou"], "top1": out["pixel_acc"], "top5": 100.0 * float(sums[1]) / n,
            "loss": float(sums[0]) / n, "per_class_iou": out["per_class_iou"]}


def parse_metrics(text: Optional[str], task: str) -> Sequence[str]:
    """``--metrics miou,top1,top5`` -> the names, the first the one models are selected by (NetAdapt's short-term
    score). None: ``miou,top1,top5`` for segmentation, ``top1,top5`` for classification.

    Raises:
        ValueError: an unknown or repeated name, or ``miou`` on a classification task.
    """
    if text is None:
        return ("miou", "top1", "top5") if task == "segmentation" else ("top1", "top5")
    names = [t.strip() for t in text.split(",") if t.strip()]
    known = ("miou", "top1", "top5")
    if not names or any(n not in known for n in names) or len(set(names)) != len(names):
        raise ValueError(f"--metrics must be distinct names of {', '.join(known)}, got {text!r}")
    if "miou" in names and task != "segmentation":
        raise ValueError("--metrics miou needs a segmentation dataset (cityscapes)")
    return tuple(names)
