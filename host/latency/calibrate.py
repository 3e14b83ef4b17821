"""Whole-network calibration of a latency table: calibration networks measured with the micro-models, and a
least-squares correction fitted on them (the table's ``calibration["fit"]``).

Why: a standalone micro-model is not the layer inside the network. On ONNX Runtime's CPU provider each one
pays a ``ReorderInput`` / ``ReorderOutput`` pair (NCHW <-> NCHWc) and an output copy that the network does not
pay, while inside the network a convolution runs 5-15% slower than alone because the other layers evict its
weights and activations from L1/L2 (measured with ORT's profiler on resnet20: a 16->16 3x3 conv at 32x32 takes
34 us standalone, 39-41 us in the network). The two effects have opposite signs and different scaling, so
summing entries over-predicts by 4-10%.

What is fitted (relative least squares, with a weak ridge prior on the uncorrected model):

    latency_ms ~= intercept_ms + a_conv * sum_conv (entry - overhead) + a_other * sum_other (entry - overhead)
                  + a_w * conv weights (millions)

over ``n`` random pruned architectures of the table's model, exported to ONNX and measured in the same rounds
as the micro-models (so they see the same device speed). ``conv`` sums the conv2d sites, ``other`` the
classifier, standalone BN and unfused adds; the weights term stands for fetching weights that no longer sit
in L2 inside the network. The correction is linear per layer site, so NetAdapt's per-layer lookups stay
additive: each site contributes ``a * (entry - overhead) + a_w * its weights``.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, List, Sequence, Tuple

import numpy as np

FEATURES = ("intercept_ms", "conv", "other", "weights_ms_per_mparam")
RIDGE = 1e-4  # weight of the prior, in squared relative error per unit of (normalised) coefficient change


def site_class(op: str) -> str:
    """Which fitted coefficient a site of ``op`` uses."""
    return "conv" if op == "conv2d" else "other"


def arch_id(widths: Dict[str, int]) -> str:
    """A stable file name for an architecture (group widths)."""
    blob = json.dumps(sorted(widths.items())).encode()
    return "net_" + hashlib.sha1(blob).hexdigest()[:12]


def calibration_archs(space, granularity: int, n: int, seed: int = 1) -> List[Dict[str, int]]:
    """The unpruned model plus ``n - 1`` random architectures on the table's grid (seeded)."""
    from host.latency.validate import sample_widths

    full = space.full_widths
    rest = [w for w in sample_widths(space, granularity, n, seed) if w != full]
    return ([full] + rest)[:n]


def _export_worker(args: Tuple[str, int, List[int], List[Tuple[Dict[str, int], str]]]) -> List[str]:
    model_name, num_classes, shape, jobs = args
    import models
    from host.export.onnx import export_onnx
    from host.latency.space import build_space

    space = build_space(models.create(model_name, num_classes), shape)
    done = []
    for widths, path in jobs:
        if not os.path.exists(path):
            m = models.create(model_name, num_classes, space.spec_from_widths(widths)).eval()
            export_onnx(m, shape, path + ".tmp.onnx")
            os.replace(path + ".tmp.onnx", path)
        done.append(path)
    return done


def export_archs(model_name: str, num_classes: int, shape: Sequence[int], archs: Sequence[Dict[str, int]],
                 folder: str, jobs: int = 1) -> List[str]:
    """Export each architecture to ``folder/<arch_id>.onnx`` (existing files are kept: resumable); returns the
    file names in order. ``jobs`` > 1 exports in spawned processes."""
    os.makedirs(folder, exist_ok=True)
    names = [arch_id(w) + ".onnx" for w in archs]
    todo = [(w, os.path.join(folder, nm)) for w, nm in zip(archs, names) if not os.path.exists(os.path.join(folder, nm))]
    if todo:
        if jobs <= 1 or len(todo) < 2:
            _export_worker((model_name, num_classes, list(shape), todo))
        else:
            chunks = [todo[i::jobs] for i in range(jobs)]
            with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
                list(pool.map(_export_worker, [(model_name, num_classes, list(shape), c) for c in chunks]))
    return names


def site_params(key) -> float:
    """Weights of a conv site in millions (what is fetched from beyond L2 when the network's working set
    does not fit); 0 for other ops."""
    if key.op != "conv2d":
        return 0.0
    return key.in_channels // key.groups * key.out_channels * key.kernel[0] * key.kernel[1] / 1e6


def features(predictor, widths: Dict[str, int]) -> np.ndarray:
    """``[1, sum_conv (entry - overhead) ms, sum_other (entry - overhead) ms, conv weights (millions)]`` of one
    architecture, from the table's uncorrected entries."""
    f = np.array([1.0, 0.0, 0.0, 0.0])
    for key, ms in predictor.raw_sites(widths):
        f[1 if site_class(key.op) == "conv" else 2] += ms
        f[3] += site_params(key)
    return f


def fit(X: np.ndarray, y: np.ndarray, overhead_ms: float) -> Dict[str, object]:
    """Fit the correction by relative least squares with a ridge prior on ``(overhead_ms, 1, 1)``.

    Args:
        X: ``(n, 3)`` features (see :func:`features`).
        y: ``(n,)`` measured latency (ms).

    Returns:
        ``{"coefficients": {"intercept_ms", "conv", "other"}, "fit_mean_abs_rel_error",
        "fit_max_abs_rel_error", "uncorrected_mean_abs_rel_error", "networks"}``.

    Raises:
        ValueError: fewer than 3 networks or a non-positive measurement.
    """
    X, y = np.asarray(X, float), np.asarray(y, float)
    if len(y) < 3 or (y <= 0).any():
        raise ValueError("a calibration fit needs 3 or more networks with positive latency")
    prior = np.array([overhead_ms, 1.0, 1.0, 0.0])
    scale = np.array([float(np.mean(y)), 1.0, 1.0, float(np.mean(y)) / max(float(np.mean(X[:, 3])), 1e-9)])
    A = np.vstack([X / y[:, None], np.sqrt(RIDGE) * np.diag(1.0 / scale)])
    b = np.concatenate([np.ones_like(y), np.sqrt(RIDGE) * prior / scale])
    coef, *_ = np.linalg.lstsq(A, b, rcond=None)
    err = X @ coef / y - 1
    raw = X @ prior / y - 1
    return {"coefficients": dict(zip(FEATURES, (float(c) for c in coef))),
            "fit_mean_abs_rel_error": float(np.abs(err).mean()), "fit_max_abs_rel_error": float(np.abs(err).max()),
            "uncorrected_mean_abs_rel_error": float(np.abs(raw).mean()),
            "uncorrected_mean_rel_error": float(raw.mean())}


def calibrate(table, space, networks: List[Dict[str, object]]) -> Dict[str, object]:
    """Fit ``table``'s correction on measured ``networks`` (``[{"widths", "measured_ms"}]``) of the model whose
    pruning ``space`` is given, and return the ``calibration["fit"]`` block (the table is not changed)."""
    from host.latency.table import TablePredictor

    pred = TablePredictor(table, space, corrected=False)
    X = np.array([features(pred, n["widths"]) for n in networks])
    y = np.array([float(n["measured_ms"]) for n in networks])
    out = fit(X, y, table.overhead_ms)
    out.update({"method": "relative least squares, ridge prior on the uncorrected model",
                "model": pred.space.model_name, "formula": "intercept_ms + conv * sum over conv2d sites of "
                "(entry - overhead_ms) + other * sum over other sites of (entry - overhead_ms) + "
                "weights_ms_per_mparam * conv weights (millions)",
                "networks": [{"widths": n["widths"], "measured_ms": float(n["measured_ms"])} for n in networks]})
    return out
