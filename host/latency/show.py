"""``host table show``: what a latency table holds (device, backend, entries by source and by layer type); the
heatmaps are :func:`edgeshrink.host.latency.plots.heatmaps`."""

from __future__ import annotations

from collections import Counter
from typing import Dict

from edgeshrink.host.latency.key import family_name


def summarize(table) -> Dict[str, object]:
    """Device, backend, precision, entry counts by source and by layer type (:func:`family_name`)."""
    by_source = Counter(e.source for e in table.entries)
    fams = Counter(family_name(e.key) for e in table.entries)
    return {"device": table.device, "backend": table.backend, "precision": table.precision, "threads": table.threads,
            "input_shape": table.input_shape, "statistic": table.statistic, "entries": len(table.entries),
            "by_source": dict(by_source),
            "layer_types": dict(sorted(fams.items())), "overhead_ms": table.overhead_ms,
            "granularity": table.build.get("granularity"), "derived_from": table.derived_from,
            "smoothing": table.smoothing, "calibration_method": table.calibration.get("method")}
