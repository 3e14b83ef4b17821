"""``host table show``: what a latency table holds, and a heatmap per layer type (latency over in/out channels)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Dict, List

import numpy as np


def family_name(k) -> str:
    fused = "+".join(k.fused) or "plain"
    return (f"{k.op}_k{k.kernel[0]}_s{k.stride[0]}_{k.in_hw[0]}x{k.in_hw[1]}_{fused}" if k.op == "conv2d"
            else f"{k.op}_{k.in_hw[0]}x{k.in_hw[1]}_{fused}")


def summarize(table) -> Dict[str, object]:
    """Device, backend, precision, entry counts by source and by layer type."""
    by_source = Counter(e.source for e in table.entries)
    fams = Counter(family_name(e.key) for e in table.entries)
    return {"device": table.device, "backend": table.backend, "precision": table.precision, "threads": table.threads,
            "input_shape": table.input_shape, "statistic": table.statistic, "entries": len(table.entries),
            "by_source": dict(by_source),
            "layer_types": dict(sorted(fams.items())), "overhead_ms": table.overhead_ms,
            "granularity": table.build.get("granularity"), "derived_from": table.derived_from,
            "smoothing": table.smoothing, "calibration_method": table.calibration.get("method")}


def heatmaps(table, out_dir: str) -> List[str]:
    """One PNG per layer type with more than one entry: latency (ms, the table's statistic) over (in, out) channels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from host.io import atomic_path

    fams: Dict[str, list] = {}
    for e in table.entries:
        fams.setdefault(family_name(e.key), []).append(e)
    written = []
    Path(out_dir).mkdir(parents=True, exist_ok=True)
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
        with atomic_path(path) as tmp:
            fig.savefig(str(tmp), format="png", dpi=100)
        plt.close(fig)
        written.append(path)
    return written
