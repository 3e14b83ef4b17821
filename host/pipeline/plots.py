"""Plots of prunes (matplotlib, Agg; PNG written atomically): the per-group widths before and after one prune, and
``host compare``'s Pareto plot of test top-1 over measured latency."""

from __future__ import annotations

from typing import Dict, List, Optional

from edgeshrink.host.latency.plots import _pyplot, _save


def plot_widths(space, before: Dict[str, int], after: Dict[str, int], path: str, title: str) -> None:
    """Bars of every channel group's width before and after, in network order (where a method cut)."""
    plt = _pyplot()
    names = [g.name for g in space.groups]
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(names) + 2), 3.6))
    ax.bar([i - 0.2 for i in x], [before[n] for n in names], width=0.4, label="before", color="#bbbbbb")
    ax.bar([i + 0.2 for i in x], [after[n] for n in names], width=0.4, label="after", color="#1f77b4")
    ax.set_xticks(list(x))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("output channels")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path, 110)


def plot_pareto(rows: List[Dict[str, object]], baseline: Dict[str, object], budgets: List[float], path: str,
                title: str, noise: Optional[float] = None) -> None:
    """Test top-1 (%) over measured median latency (ms): one marker per method, the baseline as a star, each budget
    as a vertical line at that fraction of the baseline's measured latency; ``noise`` (a relative spread of repeated
    measurements) as a band around each line."""
    plt = _pyplot()
    markers = "osD^v<>pXh*"
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    rows = [r for r in rows if not r.get("error")]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    base_ms = baseline.get("latency_ms_measured")
    for i, m in enumerate(methods):
        pts = [(r["latency_ms_measured"], r["top1"]) for r in rows if r["method"] == m and r["latency_ms_measured"]]
        if pts:
            ax.scatter(*zip(*pts), marker=markers[i % len(markers)], s=45, label=m)
    if base_ms:
        ax.scatter([base_ms], [baseline["top1"]], marker="*", s=160, color="k", label="baseline")
        for b in budgets:
            ax.axvline(b * base_ms, color="#999999", ls="--", lw=0.8)
            if noise:
                ax.axvspan(b * base_ms * (1 - noise), b * base_ms * (1 + noise), color="#dddddd", alpha=0.5)
            ax.text(b * base_ms, ax.get_ylim()[0], f" budget {b:g}", fontsize=7, va="bottom", color="#666666")
    ax.set_xlabel("measured latency, median (ms)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    _save(fig, path, 120)
