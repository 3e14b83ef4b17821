"""Predicting a network's latency from a latency table: ``TablePredictor.predict_ms(widths) -> ms``, what
NetAdapt and every other method need.

Every entry was measured as a standalone micro-model that pays the fixed per-inference overhead (session run,
input binding, output fetch) once, so a network's latency is predicted as ``overhead_ms + sum over layer sites of
(entry_ms - overhead_ms)``: the overhead counted once, not once per layer (NetAdapt, Yang et al. 2018, Sec. 4.1,
builds its latency model from per-layer lookups the same way). When the calibration holds a ``fit`` (whole
calibration networks measured with the micro-models, :mod:`edgeshrink.host.latency.fit`), each site's ``entry -
overhead`` is scaled by its class's fitted coefficient plus its corrections, and the fitted intercept replaces the
overhead::

    latency_ms = intercept_ms + sum over sites of (coef[class] + delta[family] + delta[family, in]
                 + delta[family, out] + delta[configuration]) * (entry - overhead)
                 + (a_w + a_s * g(W)) * conv weights W (millions)

where ``g`` is the fit's streamed-weights gate (:func:`weight_gate`, fitted by :mod:`edgeshrink.host.latency.fit`):
0 while the network's weights fit in the cache, 1 once every inference reads them from memory. It depends on the whole
network's weights, so a site's share (``layer_ms``) is its own weights times the gate of the network it sits in.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Dict, List, Optional, Tuple

import numpy as np

from edgeshrink.host.errors import TableError
from edgeshrink.host.latency.key import LayerKey, family, family_at_in, family_at_out
from edgeshrink.host.latency.space import PruningSpace, build_space
from edgeshrink.host.latency.table import LatencyTable, fmt_shape


def space_for_table(table: LatencyTable, model) -> PruningSpace:
    """``model``'s pruning space at the table's input shape, with the table's fusion rules."""
    return build_space(model, table.input_shape, fusion=table.fusion_rules)


def site_class(op: str) -> str:
    """Which fitted coefficient a site of ``op`` uses: ``conv`` (dense and depthwise conv sites) or ``other``."""
    return "conv" if op in ("conv2d", "dwconv2d") else "other"


def site_params(key: LayerKey) -> float:
    """Weights of a conv site in millions (what is fetched from beyond L2 when the network's working set
    does not fit); 0 for other ops."""
    if key.op == "dwconv2d":
        return key.in_channels * key.kernel[0] * key.kernel[1] / 1e6
    if key.op != "conv2d":
        return 0.0
    return key.in_channels // key.groups * key.out_channels * key.kernel[0] * key.kernel[1] / 1e6


def weight_gate(weights_m, cache: Optional[Dict[str, float]]):
    """``g(W)`` of the streamed-weights term for conv weights ``weights_m`` (millions, scalar or array): the
    logistic switch at ``cache["mparams"]`` with sharpness ``cache["log_width"]``; 0 without a gate."""
    if not cache:
        return 0.0 * np.asarray(weights_m, float)
    z = (np.log(np.maximum(np.asarray(weights_m, float), 1e-12)) - np.log(cache["mparams"])) / cache["log_width"]
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


@lru_cache(maxsize=None)
def correction_labels(key: LayerKey) -> Tuple[tuple, ...]:
    """The corrections a site of configuration ``key`` takes: its family's, its family's at its input channel
    count (``"in"``), at its output channel count (``"out"``), and its own (``"key"``). The shared levels carry
    what one configuration's few networks cannot."""
    return (("family", family(key)), ("in", family_at_in(key)), ("out", family_at_out(key)), ("key", key))


class TablePredictor:
    """A latency model over one pruning space: ``predict_ms(widths) -> float`` (what NetAdapt needs).

    Args:
        table: the latency table.
        space: the model's pruning space; its input shape must be the table's.

        corrected: apply the table's fitted calibration (``calibration.fit``).
        transfer: apply a fit learned on another model's calibration networks too (the default: measured in
            bench/calibration_transfer.py, it helps each model tried; ``transferred`` then says so,
            :attr:`calibration_networks` is empty, its networks being another model's, and the intercept is moved
            per site, :attr:`intercept_rule`). False: the plain sum of the entries for another model.

    Raises:
        TableError: input shape differs, or the table lacks the unpruned model's configurations
            (a table built for another model).
    """

    def __init__(self, table: LatencyTable, space: PruningSpace, corrected: bool = True, transfer: bool = True):
        if space.fusion != table.fusion_rules:
            raise TableError("the pruning space and the table disagree on what the runtime fuses; build the space "
                             "with TablePredictor.for_model")
        if list(space.input_shape) != list(table.input_shape):
            raise TableError(f"latency table was measured at input {fmt_shape(table.input_shape)}, "
                             f"not {fmt_shape(space.input_shape)}")
        self.table, self.space = table, space
        self.intercept_rule = "as fitted"
        fit = table.calibration.get("fit") if corrected else None
        # A fit learned on another model's networks applies to this one (unless ``transfer`` is False): its
        # coefficients are per op class, its corrections per layer family and configuration and its cache gate the
        # device's, all of which a model built from the same layer types shares; only the intercept is per model,
        # and it is moved per site (_transferred_intercept).
        self.transferred = bool(fit) and fit.get("model") not in (None, space.model_name)
        if self.transferred and not transfer:
            fit, self.transferred = None, False
        self.fit = fit
        coef = (fit or {}).get("coefficients", {})
        self._intercept = float(coef.get("intercept_ms", table.overhead_ms))
        if self.transferred:
            self._intercept = self._transferred_intercept(fit)
        self._scale = {"conv": float(coef.get("conv", 1.0)), "other": float(coef.get("other", 1.0))}
        self._per_mparam = float(coef.get("weights_ms_per_mparam", 0.0))
        self._streamed = float(coef.get("streamed_ms_per_mparam", 0.0))
        self._cache = (fit or {}).get("weight_cache")
        self._delta: Dict[tuple, float] = {
            (c["kind"], LayerKey.from_dict(c["key"])): float(c["delta"]) for c in (fit or {}).get("corrections", [])}
        self.predict_ms(space.full_widths)  # fails early on a table for another model

    def _transferred_intercept(self, fit: Dict[str, object]) -> float:
        """The intercept of a fit moved to this model: the overhead once, plus the fitted excess over it scaled by
        this model's site count over the fit model's. Within one model's networks every network has the same
        sites, so a per-site cost (each node's dispatch inside the network, which a micro-model's overhead does not
        hold) is fitted into the intercept; a deeper or shallower model pays it per site. The fit model's count
        is ``fit["sites"]`` (recorded since this rule), else counted from the fit's model when it resolves, else
        the intercept is moved unchanged (``intercept_rule`` says which)."""
        ovh, ic = self.table.overhead_ms, float(fit.get("coefficients", {}).get("intercept_ms", self.table.overhead_ms))
        n_fit = fit.get("sites")
        if n_fit is None:
            try:
                from edgeshrink import models

                n_fit = len(space_for_table(self.table, models.create_model(str(fit["model"]))).sites)
            except Exception:  # a user's model that no longer resolves here: nothing to count
                self.intercept_rule = "as fitted (the fit's model has no site count here)"
                return ic
        self.intercept_rule = f"per site ({len(self.space.sites)} sites here, {int(n_fit)} in {fit['model']})"
        return ovh + (ic - ovh) * len(self.space.sites) / max(1, int(n_fit))

    @classmethod
    def for_model(cls, table: LatencyTable, model, corrected: bool = True, transfer: bool = True) -> "TablePredictor":
        """Trace ``model`` at the table's input shape with the table's fusion rules. ``corrected=False``
        ignores a fitted calibration (what the fit itself is computed from); ``transfer=False`` ignores one fitted
        on another model's networks."""
        return cls(table, space_for_table(table, model), corrected, transfer)

    @property
    def intercept_ms(self) -> float:
        """The constant of the prediction (ms): the fit's intercept (moved per site when transferred), or the
        overhead without a fit."""
        return self._intercept

    @property
    def calibration_networks(self) -> List[Dict[str, object]]:
        """The fit's calibration networks when they are this model's (empty for a transferred or no fit)."""
        return [] if self.transferred or not self.fit else list(self.fit.get("networks", []))

    def fit_record(self) -> Dict[str, object]:
        """What a report says of the calibration it predicted with: ``{"scope", "model", "intercept_rule"}``."""
        return {"scope": self.fit_scope(), "model": (self.fit or self.table.calibration.get("fit") or {}).get("model"),
                "intercept_rule": self.intercept_rule}

    def transfer_note(self) -> Optional[str]:
        """One log line when the fit applied is another model's (None otherwise)."""
        if not self.transferred:
            return None
        return (f"calibration: the table's fit is {self.fit['model']}'s, applied to {self.space.model_name} outside "
                f"the networks it was fitted on (intercept {self.intercept_rule}); a table built for this model "
                "fits its own")

    def fit_scope(self) -> str:
        """``"fitted"`` (this model's networks), ``"transferred"`` (another model's: outside the networks it was
        fitted on), ``"not transferred"`` (the table has another model's fit, not applied) or ``"none"``."""
        if self.fit:
            return "transferred" if self.transferred else "fitted"
        other = self.table.calibration.get("fit")
        return "not transferred" if other and other.get("model") not in (None, self.space.model_name) else "none"

    def layer_ms(self, widths: Dict[str, int]) -> List[float]:
        """Per-site latency in ms, in site order: entry minus overhead, times the site's fitted coefficient plus
        its corrections (family, input and output channel count, configuration; 0 where the fit has none),
        plus the weights terms (the streamed one gated by the whole network's weights)."""
        d = self._delta
        sites = self.raw_sites(widths)
        per_w = self._per_mparam
        if self._cache and self._streamed:
            per_w += self._streamed * float(weight_gate(sum(site_params(k) for k, _ in sites), self._cache))
        if not d:
            return [self._scale[site_class(key.op)] * ms + per_w * site_params(key) for key, ms in sites]
        return [(self._scale[site_class(key.op)] + sum(d.get(label, 0.0) for label in correction_labels(key))) * ms
                + per_w * site_params(key) for key, ms in sites]

    def raw_sites(self, widths: Dict[str, int]) -> List[tuple]:
        """``(layer key, entry latency (the table's statistic) - overhead in ms)`` per site, uncorrected, in site order.

        Raises:
            TableError: the table has no entry for a site's configuration.
        """
        out = []
        ovh = self.table.overhead_ms
        for site in self.space.sites:
            key = site.key(widths)
            e = self.table.lookup(key)
            if e is None:
                built = ", ".join(self.table.models) or "unknown models"
                raise TableError(
                    f"latency table (built for {built}, granularity {self.table.build.get('granularity', '?')}) has no "
                    f"entry for {self.space.model_name} layer {site.name}: {key.op} {key.in_channels}->{key.out_channels} "
                    f"at {key.in_hw[0]}x{key.in_hw[1]}")
            out.append((key, e.ms(self.table.statistic) - ovh))
        return out

    def predict_ms(self, widths: Dict[str, int]) -> float:
        """Predicted latency in ms of the model at these group widths."""
        return self._intercept + sum(self.layer_ms(widths))
