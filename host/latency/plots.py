"""Plots of latency tables and their validations (matplotlib, Agg; written atomically as PNG)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List

import numpy as np

from edgeshrink.host.io import atomic_path, prepare_dir
from edgeshrink.host.latency.key import family_name


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str, dpi: int) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), format="png", dpi=dpi)
    _pyplot().close(fig)


def heatmaps(table, out_dir: str) -> List[str]:
    """One PNG per layer type with more than one entry: latency (ms, the table's statistic) over (in, out) channels."""
    plt = _pyplot()
    fams: Dict[str, list] = {}
    for e in table.entries:
        fams.setdefault(family_name(e.key), []).append(e)
    written = []
    prepare_dir(out_dir, "heatmap folder")
    for name, ents in sorted(fams.items()):
        if len(ents) < 2:
            continue
        ins = sorted({e.key.in_channels for e in ents})
        outs = sorted({e.key.out_channels for e in ents})
        grid = np.full((len(outs), len(ins)), np.nan)
        for e in ents:
            grid[outs.index(e.key.out_channels), ins.index(e.key.in_channels)] = e.ms(table.statistic)
        fig, ax = plt.subplots(figsize=(5, 4))
        im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis",
                       extent=(ins[0] - 0.5, ins[-1] + 0.5, outs[0] - 0.5, outs[-1] + 0.5))
        fig.colorbar(im, ax=ax, label=f"{table.statistic} latency (ms)")
        ax.set_xlabel("input channels")
        ax.set_ylabel("output channels")
        ax.set_title(f"{name}\n{table.device.get('board') or table.device.get('cpu')} | {table.backend}", fontsize=8)
        fig.tight_layout()
        path = str(Path(out_dir) / (re.sub(r"[^A-Za-z0-9_.+-]", "_", name) + ".png"))
        _save(fig, path, 100)
        written.append(path)
    return written


def plot_validation(doc: Dict[str, object], path: str) -> None:
    """Scatter of predicted vs measured latency with the y = x line."""
    plt = _pyplot()
    rows = doc["architectures"]
    x = [r["measured_ms"] for r in rows]
    y = [r["predicted_ms"] for r in rows]
    lo, hi = min(x + y) * 0.95, max(x + y) * 1.05
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, label="predicted = measured")
    ax.scatter(x, y, s=14)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"measured latency, {doc.get('statistic', 'median')} (ms)")
    ax.set_ylabel("table prediction (ms)")
    ax.set_title(f"{doc['model']}: {doc['samples']} pruned networks\nmean |err| {doc['mean_abs_rel_error']:.1%}, "
                 f"max {doc['max_abs_rel_error']:.1%}, r {doc['pearson_r']:.4f}", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    _save(fig, path, 120)
