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
                  + (a_w + a_s * g(W)) * conv weights W (millions)
    g(W) = 1 / (1 + exp(-(ln W - ln W_c) / s))

over random pruned architectures of the table's model, exported to ONNX and measured side by side after the
micro-models (:mod:`edgeshrink.host.latency.networks`). ``class`` is conv (conv2d sites) or other (the classifier,
standalone BN and unfused adds); the weights term stands for fetching weights that no longer sit in L2 inside
the network. The streamed-weights term ``a_s * g(W) * W`` is the cost of reading the weights from memory once
the network's weights no longer fit in the last-level cache: every micro-model is timed with its few weights
cached, and so is a network whose weights fit, but when they do not, each inference streams them from DRAM
(each conv then costs its entry plus its bytes over the memory bandwidth, as profiling ResNet-18 at 96x96 per
node shows). The switch is the logistic gate ``g`` at ``W_c`` million weights (the cache's share available to the
process, which on a shared machine is less than its size and changes between sessions), picked with its
sharpness ``s`` by the same cross-validation from a grid over the networks' range, and kept only where it beats
"no gate" by ``GATE_GAIN``; docs/latency.md has the measurements. Each configuration seen in the calibration networks gets a multiplicative correction ``delta``, and
so do its layer family and the family at its input and at its output channel count (shared levels, learnt from
more networks than one configuration appears in), ridge-penalised towards 0 with a strength picked by 5-fold
cross-validation (including "no corrections"); the cross-validated errors are stored with the fit. The error
keeps falling as networks are added, which is why builds should measure on the order of a hundred.

The correction is linear per layer site, so NetAdapt's per-layer lookups stay additive.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgeshrink.host.latency.predict import TablePredictor, correction_labels, site_class, site_params, weight_gate

FEATURES = ("intercept_ms", "conv", "other", "weights_ms_per_mparam", "streamed_ms_per_mparam")
RIDGE = 1e-4  # weight of the prior, in squared relative error per unit of (normalised) coefficient change
KEY_RIDGE_GRID = (1.0, 0.1, 0.03, 0.01, 0.003, 0.001)  # per-configuration penalties tried by cross-validation
GATE_POINTS = 12  # cache thresholds W_c tried, spaced geometrically over the calibration networks' weights
GATE_WIDTHS = (0.1, 0.25)  # sharpness s of the gate, in ln(weights)
GATE_GAIN = 0.9  # a gate is kept only when its cross-validated mean error is below this fraction of no gate's


def gate_grid(weights_m: np.ndarray) -> List[Optional[Dict[str, float]]]:
    """Candidate gates: none, then ``GATE_POINTS`` thresholds spaced geometrically between the 10th and 90th
    percentile of the networks' weights (a gate outside their range cannot be told from a constant) times
    ``GATE_WIDTHS``."""
    lo, hi = np.percentile(weights_m, [10, 90])
    if not hi > lo * 1.05:
        return [None]
    return [None] + [{"mparams": float(c), "log_width": float(w)}
                     for c in np.geomspace(lo, hi, GATE_POINTS) for w in GATE_WIDTHS]


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
        ridge_grid: Sequence[float] = KEY_RIDGE_GRID, folds: int = 5, seed: int = 0,
        gates: Optional[Sequence[Optional[Dict[str, float]]]] = None) -> Dict[str, object]:
    """Fit the correction by relative least squares with a ridge prior on ``(overhead_ms, 1, 1, 0, 0)``, plus
    per-configuration corrections when ``K`` is given and the streamed-weights gate.

    The per-configuration part adds ``delta_j * K[:, j]`` to a network's prediction, where column ``j`` sums
    the (entry - overhead) ms of the network's sites of configuration (or layer family) ``j``: a multiplicative
    correction of that entry, learnt from whole networks, which is what a standalone micro-model cannot see
    (the layer's neighbours, its place in the cache). Each ``delta_j`` has a ridge penalty ``lam * delta_j**2``
    on the squared relative error. The gate of the streamed-weights term (:func:`gate_grid`, "no gate" included)
    and then ``lam`` from ``ridge_grid`` (and "no per-configuration terms") are picked by ``folds``-fold
    cross-validation on the networks, so the reported ``cv_*`` errors are held-out estimates.
    With fewer than ``2 * folds`` networks nothing is cross-validated: no corrections, no gate.

    Args:
        X: ``(n, 4)`` features (see :func:`features`); column 3 is the conv weights in millions.
        y: ``(n,)`` measured latency (ms).
        K: ``(n, m)`` per-configuration sums (ms), or None.
        gates: the gate candidates (default :func:`gate_grid` of ``X[:, 3]``; ``[None]`` fits no gate).

    Returns:
        ``{"coefficients": {"intercept_ms", "conv", "other", "weights_ms_per_mparam", "streamed_ms_per_mparam"},
        "weight_cache": {"mparams", "log_width"} or None, "deltas": (m,) array or None, "key_ridge": lam or None,
        "cv": [...], "fit_mean_abs_rel_error", "fit_max_abs_rel_error", "uncorrected_mean_abs_rel_error",
        "uncorrected_mean_rel_error"}``.

    Raises:
        ValueError: fewer than 3 networks, a non-positive measurement or a feature matrix not ``(n, 4)``.
    """
    X, y = np.asarray(X, float), np.asarray(y, float)
    if len(y) < 3 or (y <= 0).any():
        raise ValueError("a calibration fit needs 3 or more networks with positive latency")
    if X.ndim != 2 or X.shape != (len(y), 4):
        raise ValueError(f"calibration features must be ({len(y)}, 4), not {X.shape}")
    nf = len(FEATURES)
    prior = np.array([overhead_ms, 1.0, 1.0, 0.0, 0.0])
    per_w = float(np.mean(y)) / max(float(np.mean(X[:, 3])), 1e-9)
    scale = np.array([float(np.mean(y)), 1.0, 1.0, per_w, per_w])
    m = 0 if K is None else K.shape[1]
    b = np.ones_like(y)
    prior_A = np.sqrt(RIDGE) * np.diag(1.0 / scale)
    prior_b = np.sqrt(RIDGE) * prior / scale

    def design(gate: Optional[Dict[str, float]]) -> np.ndarray:
        streamed = (weight_gate(X[:, 3], gate) * X[:, 3])[:, None]
        return np.hstack([X, streamed, K] if m else [X, streamed]) / y[:, None]

    def solve(A: np.ndarray, rows: np.ndarray, lam: Optional[float]) -> np.ndarray:
        """Coefficients (5 + m) from ``rows``; ``lam`` None: no per-configuration terms (their deltas 0)."""
        if lam is None:
            return np.concatenate([_solve(A[:, :nf], b, rows, prior_A, prior_b), np.zeros(m)])
        pa = np.zeros((nf + m, nf + m))
        pa[:nf, :nf], pa[nf:, nf:] = prior_A, np.sqrt(lam) * np.eye(m)
        return _solve(A, b, rows, pa, np.concatenate([prior_b, np.zeros(m)]))

    cv: List[Dict[str, object]] = []
    lam_best, gate_best, best = None, None, None
    if len(y) >= 2 * folds:
        order = np.random.default_rng(seed).permutation(len(y))
        parts = np.array_split(order, folds)

        def held_out(gate: Optional[Dict[str, float]], lam: Optional[float]) -> Dict[str, object]:
            A = design(gate)
            errs = np.empty(len(y))
            for part in parts:
                errs[part] = A[part] @ solve(A, np.setdiff1d(order, part), lam) - 1
            row = {"key_ridge": lam, "weight_cache": gate, "cv_mean_abs_rel_error": float(np.abs(errs).mean()),
                   "cv_max_abs_rel_error": float(np.abs(errs).max())}
            cv.append(row)
            return row

        # Two stages keep the cost at one pass over the gates with the five plain features, then one over the
        # penalties: the gate is a whole-network effect that the per-configuration terms do not stand in for.
        rows = [held_out(g, None) for g in (gate_grid(X[:, 3]) if gates is None else gates)]
        plain = next((r for r in rows if r["weight_cache"] is None), None)
        gated = min((r for r in rows if r["weight_cache"] is not None), key=lambda r: r["cv_mean_abs_rel_error"],
                    default=None)
        # parsimony: a gate must earn its two extra parameters on held-out networks
        keep = gated is not None and (plain is None or gated["cv_mean_abs_rel_error"]
                                      < GATE_GAIN * plain["cv_mean_abs_rel_error"])
        best = gated if keep else plain
        if m:
            best = min([best] + [held_out(best["weight_cache"], lam) for lam in ridge_grid],
                       key=lambda r: r["cv_mean_abs_rel_error"])
        lam_best, gate_best = best["key_ridge"], best["weight_cache"]
    A = design(gate_best)
    coef = solve(A, np.arange(len(y)), lam_best)
    err = A @ coef - 1
    raw = X @ prior[:4] / y - 1
    out = {"coefficients": dict(zip(FEATURES, (float(c) for c in coef[:nf]))), "weight_cache": gate_best,
           "deltas": coef[nf:] if lam_best is not None else None, "key_ridge": lam_best, "cv": cv,
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
                          "configuration, with a ridge penalty chosen by 5-fold cross-validation jointly with the "
                          "streamed-weights gate",
                "model": pred.space.model_name, "sites": len(pred.space.sites), "formula": "intercept_ms + sum over sites of (coef[class] + "
                "delta[family] + delta[family, in] + delta[family, out] + delta[configuration]) * "
                "(entry - overhead_ms) + (weights_ms_per_mparam + streamed_ms_per_mparam * g(W)) * conv weights W "
                "(millions); g(W) = 1 / (1 + exp(-(ln W - ln weight_cache.mparams) / weight_cache.log_width)), 0 "
                "when weight_cache is null; class is conv (conv2d sites) or other; a delta not in corrections is 0",
                "networks": [{"widths": n["widths"], "measured_ms": float(n["measured_ms"])} for n in networks]})
    return out


def fit_summary(fit_block: Dict[str, object]) -> Dict[str, object]:
    """A ``calibration["fit"]`` block for reports: without its networks, with the number of its corrections."""
    return {**{k: v for k, v in fit_block.items() if k not in ("networks", "corrections")},
            "corrections": len(fit_block.get("corrections", []))}
