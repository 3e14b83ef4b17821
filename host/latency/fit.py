"""Whole-network calibration of a latency table: the least-squares correction fitted on measured calibration
networks (the table's ``calibration["fit"]``), which :class:`edgeshrink.host.latency.predict.TablePredictor`
applies.

Why: a standalone micro-model is not the layer inside the network. On ONNX Runtime's CPU provider each one pays
a ``ReorderInput`` / ``ReorderOutput`` pair (NCHW <-> NCHWc) and an output copy that the network does not pay,
while inside the network a convolution runs slower than alone because the other layers evict its weights and
activations from L1/L2. The two effects have opposite signs and different scaling, so summing entries is off by
several percent, and each configuration meets its own neighbours (docs/latency.md has the measurements).

What is fitted (relative least squares, with a weak ridge prior on the uncorrected model)::

    latency_ms ~= intercept_ms + sum over sites of (coef[class] + delta[family] + delta[family, in]
                                 + delta[family, out] + delta[configuration]) * (entry - overhead)
                  + a_w * conv weights (millions)

over random pruned architectures of the table's model, exported to ONNX and measured side by side after the
micro-models (:mod:`edgeshrink.host.latency.networks`). ``class`` is conv (conv2d sites) or other (the classifier,
standalone BN and unfused adds); the weights term stands for fetching weights that no longer sit in L2 inside
the network. Each configuration seen in the calibration networks gets a multiplicative correction ``delta``, and
so do its layer family and the family at its input and at its output channel count (shared levels, learnt from
more networks than one configuration appears in), ridge-penalised towards 0 with a strength picked by 5-fold
cross-validation (including "no corrections"); the cross-validated errors are stored with the fit. The error
keeps falling as networks are added, which is why builds should measure on the order of a hundred.

The correction is linear per layer site, so NetAdapt's per-layer lookups stay additive.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgeshrink.host.latency.predict import TablePredictor, correction_labels, site_class, site_params

FEATURES = ("intercept_ms", "conv", "other", "weights_ms_per_mparam")
RIDGE = 1e-4  # weight of the prior, in squared relative error per unit of (normalised) coefficient change
KEY_RIDGE_GRID = (1.0, 0.1, 0.03, 0.01, 0.003, 0.001)  # per-configuration penalties tried by cross-validation


def features(predictor, widths: Dict[str, int]) -> np.ndarray:
    """``[1, sum_conv (entry - overhead) ms, sum_other (entry - overhead) ms, conv weights (millions)]`` of one
    architecture, from the table's uncorrected entries."""
    f = np.array([1.0, 0.0, 0.0, 0.0])
    for key, ms in predictor.raw_sites(widths):
        f[1 if site_class(key.op) == "conv" else 2] += ms
        f[3] += site_params(key)
    return f


def _solve(A: np.ndarray, b: np.ndarray, rows: np.ndarray, prior_rows: np.ndarray,
           prior_b: np.ndarray) -> np.ndarray:
    """Least squares of ``A[rows] c ~= b[rows]`` stacked with the prior rows."""
    coef, *_ = np.linalg.lstsq(np.vstack([A[rows], prior_rows]), np.concatenate([b[rows], prior_b]), rcond=None)
    return coef


def fit(X: np.ndarray, y: np.ndarray, overhead_ms: float, K: Optional[np.ndarray] = None,
        ridge_grid: Sequence[float] = KEY_RIDGE_GRID, folds: int = 5, seed: int = 0) -> Dict[str, object]:
    """Fit the correction by relative least squares with a ridge prior on ``(overhead_ms, 1, 1, 0)``, plus
    per-configuration corrections when ``K`` is given.

    The per-configuration part adds ``delta_j * K[:, j]`` to a network's prediction, where column ``j`` sums
    the (entry - overhead) ms of the network's sites of configuration (or layer family) ``j``: a multiplicative
    correction of that entry, learnt from whole networks, which is what a standalone micro-model cannot see
    (the layer's neighbours, its place in the cache). Each ``delta_j`` has a ridge penalty ``lam * delta_j**2``
    on the squared relative error; ``lam`` is picked from ``ridge_grid`` (and "no per-configuration terms") by
    ``folds``-fold cross-validation on the networks, so the reported ``cv_*`` errors are held-out estimates.

    Args:
        X: ``(n, 4)`` features (see :func:`features`).
        y: ``(n,)`` measured latency (ms).
        K: ``(n, m)`` per-configuration sums (ms), or None.

    Returns:
        ``{"coefficients": {"intercept_ms", "conv", "other", "weights_ms_per_mparam"}, "deltas": (m,) array or
        None, "key_ridge": lam or None, "cv": [...], "fit_mean_abs_rel_error", "fit_max_abs_rel_error",
        "uncorrected_mean_abs_rel_error", "uncorrected_mean_rel_error"}``.

    Raises:
        ValueError: fewer than 3 networks or a non-positive measurement.
    """
    X, y = np.asarray(X, float), np.asarray(y, float)
    if len(y) < 3 or (y <= 0).any():
        raise ValueError("a calibration fit needs 3 or more networks with positive latency")
    prior = np.array([overhead_ms, 1.0, 1.0, 0.0])
    scale = np.array([float(np.mean(y)), 1.0, 1.0, float(np.mean(y)) / max(float(np.mean(X[:, 3])), 1e-9)])
    m = 0 if K is None else K.shape[1]
    A = np.hstack([X, K]) / y[:, None] if m else X / y[:, None]
    b = np.ones_like(y)
    prior_A = np.sqrt(RIDGE) * np.diag(1.0 / scale)
    prior_b = np.sqrt(RIDGE) * prior / scale

    def solve(rows: np.ndarray, lam: Optional[float]) -> np.ndarray:
        """Coefficients (4 + m) from ``rows``; ``lam`` None: no per-configuration terms (their deltas 0)."""
        if lam is None:
            return np.concatenate([_solve(A[:, :4], b, rows, prior_A, prior_b), np.zeros(m)])
        pa = np.zeros((4 + m, 4 + m))
        pa[:4, :4], pa[4:, 4:] = prior_A, np.sqrt(lam) * np.eye(m)
        return _solve(A, b, rows, pa, np.concatenate([prior_b, np.zeros(m)]))

    cv: List[Dict[str, object]] = []
    best: Optional[Dict[str, object]] = None
    if m and len(y) >= 2 * folds:
        order = np.random.default_rng(seed).permutation(len(y))
        parts = np.array_split(order, folds)
        for lam in [None, *ridge_grid]:
            errs = np.empty(len(y))
            for part in parts:
                errs[part] = A[part] @ solve(np.setdiff1d(order, part), lam) - 1
            row = {"key_ridge": lam, "cv_mean_abs_rel_error": float(np.abs(errs).mean()),
                   "cv_max_abs_rel_error": float(np.abs(errs).max())}
            cv.append(row)
            if best is None or row["cv_mean_abs_rel_error"] < best["cv_mean_abs_rel_error"]:
                best = row
    lam_best = best["key_ridge"] if best else None
    coef = solve(np.arange(len(y)), lam_best)
    err = A @ coef - 1
    raw = X @ prior / y - 1
    out = {"coefficients": dict(zip(FEATURES, (float(c) for c in coef[:4]))),
           "deltas": coef[4:] if lam_best is not None else None, "key_ridge": lam_best, "cv": cv,
           "fit_mean_abs_rel_error": float(np.abs(err).mean()), "fit_max_abs_rel_error": float(np.abs(err).max()),
           "uncorrected_mean_abs_rel_error": float(np.abs(raw).mean()),
           "uncorrected_mean_rel_error": float(raw.mean())}
    if best:
        out["cv_mean_abs_rel_error"] = best["cv_mean_abs_rel_error"]
        out["cv_max_abs_rel_error"] = best["cv_max_abs_rel_error"]
    return out


def correction_columns(predictor, networks: Sequence[Dict[str, int]]) -> Tuple[np.ndarray, List[tuple]]:
    """``(n, m)`` per-correction sums of (entry - overhead) ms and the ``m`` column labels
    ``(kind, LayerKey)`` of :func:`correction_labels`, for the configurations seen in ``networks`` (group
    widths)."""
    cols: Dict[tuple, int] = {}
    rows = []
    for widths in networks:
        r: Dict[int, float] = {}
        for key, ms in predictor.raw_sites(widths):
            for label in correction_labels(key):
                j = cols.setdefault(label, len(cols))
                r[j] = r.get(j, 0.0) + ms
        rows.append(r)
    K = np.zeros((len(rows), len(cols)))
    for i, r in enumerate(rows):
        for j, v in r.items():
            K[i, j] = v
    return K, list(cols)


def calibrate(table, space, networks: List[Dict[str, object]]) -> Dict[str, object]:
    """Fit ``table``'s correction on measured ``networks`` (``[{"widths", "measured_ms"}]``) of the model whose
    pruning ``space`` is given, with the per-configuration corrections of :func:`correction_labels` (see
    :func:`fit`), and return the ``calibration["fit"]`` block (the table is not changed)."""
    pred = TablePredictor(table, space, corrected=False)
    X = np.array([features(pred, n["widths"]) for n in networks])
    y = np.array([float(n["measured_ms"]) for n in networks])
    K, labels = correction_columns(pred, [n["widths"] for n in networks])
    out = fit(X, y, table.overhead_ms, K)
    deltas = out.pop("deltas")
    out["corrections"] = [] if deltas is None else [
        {"kind": kind, "key": key.to_dict(), "delta": float(d)} for (kind, key), d in zip(labels, deltas)]
    out.update({"method": "relative least squares, ridge prior on the uncorrected model; multiplicative "
                          "corrections per layer family, family x input channels, family x output channels and "
                          "configuration, with a ridge penalty chosen by 5-fold cross-validation",
                "model": pred.space.model_name, "formula": "intercept_ms + sum over sites of (coef[class] + "
                "delta[family] + delta[family, in] + delta[family, out] + delta[configuration]) * "
                "(entry - overhead_ms) + weights_ms_per_mparam * conv weights (millions); class is conv (conv2d "
                "sites) or other; a delta not in corrections is 0",
                "networks": [{"widths": n["widths"], "measured_ms": float(n["measured_ms"])} for n in networks]})
    return out


def fit_summary(fit_block: Dict[str, object]) -> Dict[str, object]:
    """A ``calibration["fit"]`` block for reports: without its networks, with the number of its corrections."""
    return {**{k: v for k, v in fit_block.items() if k not in ("networks", "corrections")},
            "corrections": len(fit_block.get("corrections", []))}
