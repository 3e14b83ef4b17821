"""Cheaper latency tables: measure a coarse channel grid, interpolate the rest, refine where checks disagree.

Every layer type (a *family*: op, resolution, kernel, stride, padding, groups, fusion) is a function of its
input and output channels. The build measures, per family, the channel counts on a coarse grid (multiples of
``coarse``, the smallest and the full width), then:

1. **Checks.** In a share of the coarse cells (``check_fraction``), the grid point nearest the cell's centre
   is measured too.
2. **Interpolant per family, chosen by the checks.** The interpolants of the measured points compete:
   ``linear`` (piecewise-linear over a Delaunay triangulation in (in, out), scipy's ``LinearNDInterpolator``;
   ``np.interp`` for one varying axis; NetAdapt's code used scipy's RBF the same way), ``ceil`` (the least
   latency among measured points with at least as many channels on both axes) and, given the runtime's channel
   block ``align``, ``block``. ``ceil`` and ``block`` are what runtimes that work on channel blocks do: ONNX
   Runtime's NCHWc kernels work on blocks of 16 channels on AVX-512 (8 on AVX2), so a partial block costs about
   what a whole one does, an aligned count can cost a little less, and counts below one block take another path
   whose cost grows with the channels (docs/latency.md has the measurements). ``block`` reads an
   unaligned count above ``align`` at the measured unaligned count of the same block, and interpolates linearly
   elsewhere (see :meth:`Interpolant.block`). The family takes the interpolant with the smallest mean check
   error.
3. **Refinement.** A cell whose check is off by more than ``tol`` is split in four: its edge midpoints are
   measured and the sub-cells are checked in the next round (``rounds`` at most).

The remaining configurations of the target grid are interpolated; their entries say ``"source":
"interpolated"`` and name the method. The build block reports measurements taken, interpolated vs measured
entries, the check errors and the reduction against the exhaustive per-channel grid.
"""

from __future__ import annotations

import random
from dataclasses import astuple, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgeshrink.host.latency.key import LayerKey, family, family_name

Family = LayerKey  # a key with its channel counts zeroed (host.latency.key.family)
Point = Tuple[int, int]


@dataclass
class FamilyGrid:
    """One family's target points and the axes along which they vary."""

    fam: Family
    keys: Dict[Point, LayerKey]
    vary_in: bool
    vary_out: bool
    tied: bool  # in == out (add, bn)

    @property
    def axes(self) -> Tuple[List[int], List[int]]:
        return sorted({p[0] for p in self.keys}), sorted({p[1] for p in self.keys})


def group_families(keys: Sequence[LayerKey]) -> List[FamilyGrid]:
    fams: Dict[Family, Dict[Point, LayerKey]] = {}
    for k in keys:
        fams.setdefault(family(k), {})[(k.in_channels, k.out_channels)] = k
    out = []
    for f, pts in fams.items():
        ins, outs = {p[0] for p in pts}, {p[1] for p in pts}
        tied = all(a == b for a, b in pts) and len(pts) > 1
        out.append(FamilyGrid(f, pts, len(ins) > 1 and not tied, len(outs) > 1 and not tied, tied))
    return out


def coarse_axis(values: Sequence[int], coarse: int) -> List[int]:
    """The coarse points of one axis: multiples of ``coarse``, the smallest and the largest value."""
    vs = sorted(set(values))
    return sorted({v for v in vs if v % coarse == 0} | {vs[0], vs[-1]})


def coarse_points(fg: FamilyGrid, coarse: int) -> List[Point]:
    ins, outs = fg.axes
    if fg.tied:
        return [(v, v) for v in coarse_axis(ins, coarse)]
    if not (fg.vary_in and fg.vary_out):
        ci = coarse_axis(ins, coarse) if fg.vary_in else ins
        co = coarse_axis(outs, coarse) if fg.vary_out else outs
        return [(i, o) for i in ci for o in co if (i, o) in fg.keys]
    # rows and columns on their own: a family's points need not fill a rectangle (the stem's 3 input channels
    # sit in the family of the 3x3 convs at full resolution), and its hull must cover every target point
    pts = set()
    for o in coarse_axis(outs, coarse):
        pts |= {(i, o) for i in coarse_axis([i for i, oo in fg.keys if oo == o], coarse)}
    for i in coarse_axis(ins, coarse):
        pts |= {(i, o) for o in coarse_axis([o for ii, o in fg.keys if ii == i], coarse)}
    return sorted(pts)


METHODS = ("linear", "ceil", "block")


class Interpolant:
    """Latency of a family at any (in, out) from its measured points.

    ``align``: the runtime's channel block (0: unknown, ``block`` is then ``linear``).
    """

    def __init__(self, fg: FamilyGrid, measured: Dict[Point, float], align: int = 0):
        self.fg = fg
        self.align = align
        self.measured = dict(measured)
        self.pts = sorted(measured)
        self.vals = np.array([measured[p] for p in self.pts])
        self._lin = None
        if fg.vary_in and fg.vary_out and len(self.pts) >= 3:
            from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator

            xy = np.array(self.pts, dtype=float)
            try:
                self._lin = LinearNDInterpolator(xy, self.vals)
            except Exception:  # noqa: BLE001 - degenerate (collinear) points: nearest only
                self._lin = None
            self._near = NearestNDInterpolator(xy, self.vals)

    def _axis(self) -> int:
        return 1 if (self.fg.vary_out and not self.fg.vary_in) else 0

    def linear(self, p: Point) -> float:
        if self.fg.vary_in and self.fg.vary_out:
            v = float(self._lin(p[0], p[1])) if self._lin is not None else float("nan")
            return v if np.isfinite(v) else float(self._near(p[0], p[1]))
        ax = self._axis()
        xs = np.array([q[ax] for q in self.pts], dtype=float)
        order = np.argsort(xs)
        return float(np.interp(p[ax], xs[order], self.vals[order]))

    def ceil(self, p: Point) -> float:
        """The least latency among measured points with at least as many input and output channels: the
        least upper bound when latency does not decrease with channels."""
        up = [v for q, v in zip(self.pts, self.vals) if q[0] >= p[0] and q[1] >= p[1]]
        return float(min(up)) if up else self.linear(p)

    def block(self, p: Point) -> float:
        """Channel-block interpolation: a partial block costs what any partial count of that block costs.

        A channel count ``c > align`` that is not a multiple of ``align`` stands for every such count of its
        block (``ceil(c / align)``); other counts stand for themselves. Of the measured points whose channel
        counts stand for the point's, the nearest (L1) gives the value. Where none was measured, :meth:`linear`
        at the point with its partial blocks moved to the nearest partial counts measured on their axis (below
        ``align`` the cost grows with the channels, and linear interpolation follows it).
        """
        if not self.align:
            return self.linear(p)
        fg, A = self.fg, self.align
        ins_all, outs_all = fg.axes
        ins = _block_mates(p[0], A, ins_all) if (fg.vary_in or fg.tied) else [p[0]]
        outs = _block_mates(p[1], A, outs_all) if fg.vary_out else [p[1]]
        cands = [(c, c) for c in ins] if fg.tied else [(i, o) for i in ins for o in outs]
        got = [q for q in cands if q in self.measured]
        if got:
            return float(self.measured[min(got, key=lambda q: (abs(q[0] - p[0]) + abs(q[1] - p[1]), -q[0], -q[1]))])
        axis_vals = [sorted({q[ax] for q in self.measured}) for ax in (0, 1)]
        moved = tuple(min((v for v in mates if v in axis_vals[ax]), key=lambda v: (abs(v - p[ax]), -v), default=p[ax])
                      for ax, mates in ((0, ins), (1, outs)))
        return self.linear((moved[0], moved[0]) if fg.tied else moved)

    def __call__(self, p: Point, method: str) -> float:
        if method == "ceil":
            return self.ceil(p)
        return self.block(p) if method == "block" else self.linear(p)


def _block_mates(c: int, align: int, values: Sequence[int]) -> List[int]:
    """The channel counts among ``values`` that ``c`` stands for: for a partial block above ``align``, every
    partial count of that block; else ``c`` alone."""
    if c <= align or c % align == 0:
        return [c]
    blk = -(-c // align)
    return sorted({v for v in values if v % align and -(-v // align) == blk} | {c})


def _cells(fg: FamilyGrid, pts: Sequence[Point]) -> List[Tuple[Point, Point]]:
    """Cells between consecutive coarse points: ``((i0, o0), (i1, o1))``."""
    ci = sorted({p[0] for p in pts})
    co = sorted({p[1] for p in pts})
    if fg.tied or not fg.vary_out:
        return [((a, co[0] if not fg.tied else a), (b, co[0] if not fg.tied else b)) for a, b in zip(ci, ci[1:])]
    if not fg.vary_in:
        return [((ci[0], a), (ci[0], b)) for a, b in zip(co, co[1:])]
    return [((a, c), (b, d)) for a, b in zip(ci, ci[1:]) for c, d in zip(co, co[1:])]


def _nearest_target(fg: FamilyGrid, target: Tuple[float, float]) -> Optional[Point]:
    best, bd = None, None
    for p in fg.keys:
        d = abs(p[0] - target[0]) + abs(p[1] - target[1])
        if bd is None or d < bd:
            best, bd = p, d
    return best


def _center(fg: FamilyGrid, cell: Tuple[Point, Point]) -> Optional[Point]:
    (i0, o0), (i1, o1) = cell
    if fg.tied:
        c = _nearest_target(fg, ((i0 + i1) / 2, (i0 + i1) / 2))
    else:
        c = _nearest_target(fg, ((i0 + i1) / 2, (o0 + o1) / 2))
    inside = c is not None and i0 <= c[0] <= i1 and o0 <= c[1] <= o1 and c not in ((i0, o0), (i1, o1), (i0, o1), (i1, o0))
    return c if inside else None


def _split(fg: FamilyGrid, cell: Tuple[Point, Point], mid: Point) -> Tuple[List[Point], List[Tuple[Point, Point]]]:
    """New points (edge midpoints) and sub-cells of a cell split at ``mid``."""
    (i0, o0), (i1, o1) = cell
    mi, mo = mid
    if fg.tied or not fg.vary_out or not fg.vary_in:
        return [], [((i0, o0), mid), (mid, (i1, o1))]
    new = [p for p in ((mi, o0), (mi, o1), (i0, mo), (i1, mo)) if p in fg.keys]
    subs = [((i0, o0), (mi, mo)), ((mi, o0), (i1, mo)), ((i0, mo), (mi, o1)), ((mi, mo), (i1, o1))]
    return new, subs


@dataclass
class Plan:
    """The state of an interpolated build: what is measured, per family."""

    families: List[FamilyGrid]
    measured: Dict[LayerKey, float] = field(default_factory=dict)
    method: Dict[Family, str] = field(default_factory=dict)
    checks: List[Dict[str, object]] = field(default_factory=list)

    def values(self, fg: FamilyGrid) -> Dict[Point, float]:
        return {p: self.measured[k] for p, k in fg.keys.items() if k in self.measured}


def build_interpolated(keys: Sequence[LayerKey], measure: Callable[[List[LayerKey]], Dict[LayerKey, float]],
                       coarse: int, tol: float = 0.03, check_fraction: float = 0.25, rounds: int = 2,
                       seed: int = 0, log: Optional[Callable[[str], None]] = None, align: int = 0) -> Tuple[Dict[LayerKey, Tuple[float, str]], Dict[str, object]]:
    """Measure a coarse grid of ``keys``, check, refine, and interpolate the rest.

    Args:
        keys: the target configurations (e.g. ``enumerate_keys(space, granularity)``).
        measure: measures a list of keys on the device and returns their latency (ms) by the table's statistic.
        coarse: coarse grid step in channels (a multiple of the target granularity).
        tol: a check whose interpolation is off by more than this relative error refines its cell.
        check_fraction: share of coarse cells that get a check measurement (at least one per family).
        rounds: refinement rounds at most.
        align: the runtime's channel block (e.g. 16 for ONNX Runtime's NCHWc kernels on AVX-512, 8 on AVX2);
            > 0 adds the ``block`` interpolant to the candidates. With ``coarse = align / 2`` the coarse grid
            holds an aligned and an unaligned count of every block.

    Returns:
        ``({key: (latency ms, source)}, report)``; source is ``measured`` or ``interpolated-<method>``
        (``linear``, ``ceil``, ``block``); the report has the counts and check errors.

    Raises:
        ValueError: ``coarse < 1``, ``tol <= 0``, ``check_fraction`` outside (0, 1] or ``align < 0``.
    """
    if coarse < 1 or tol <= 0 or not (0 < check_fraction <= 1) or align < 0:
        raise ValueError("coarse must be >= 1, tol > 0, check fraction in (0, 1] and align >= 0")
    say = log or (lambda _m: None)
    rng = random.Random(seed)
    plan = Plan(group_families(keys))
    methods = METHODS if align else METHODS[:2]
    first = [fg.keys[p] for fg in plan.families for p in coarse_points(fg, coarse)]
    plan.measured.update(measure(first))
    say(f"coarse grid: {len(first)} configurations measured")
    pending: Dict[int, List[Tuple[Point, Point]]] = {}
    for n, fg in enumerate(plan.families):
        cells = _cells(fg, coarse_points(fg, coarse))
        k = max(1, int(round(len(cells) * check_fraction))) if cells else 0
        pending[n] = rng.sample(cells, min(k, len(cells)))
    for r in range(rounds + 1):
        probes: List[Tuple[int, Tuple[Point, Point], Point]] = []
        for n, cells in pending.items():
            fg = plan.families[n]
            for cell in cells:
                c = _center(fg, cell)
                if c is not None and fg.keys[c] not in plan.measured:
                    probes.append((n, cell, c))
        if not probes:
            break
        # interpolants from what was measured before the checks
        interps = {n: Interpolant(plan.families[n], plan.values(plan.families[n]), align)
                   for n in {p[0] for p in probes}}
        got = measure([plan.families[n].keys[c] for n, _, c in probes])
        plan.measured.update(got)
        by_fam: Dict[int, List[Tuple[Tuple[Point, Point], Point, float, float]]] = {}
        for n, cell, c in probes:
            fg = plan.families[n]
            m = got[fg.keys[c]]
            by_fam.setdefault(n, []).append((cell, c, {meth: interps[n](c, meth) / m - 1 for meth in methods}))
        new_points: List[LayerKey] = []
        pending = {}
        failed = 0
        for n, rows in by_fam.items():
            fg = plan.families[n]
            if fg.fam not in plan.method:  # the first checks of a family choose its interpolant
                plan.method[fg.fam] = min(methods, key=lambda meth: float(np.mean([abs(x[2][meth]) for x in rows])))
            for cell, c, errs in rows:
                err = errs[plan.method[fg.fam]]
                plan.checks.append({"round": r, "family": family_name(fg.fam), "in": c[0], "out": c[1],
                                    **{f"rel_error_{meth}": e for meth, e in errs.items()},
                                    "method": plan.method[fg.fam]})
                if abs(err) > tol and r < rounds:
                    failed += 1
                    pts, subs = _split(fg, cell, c)
                    new_points += [fg.keys[p] for p in pts if fg.keys[p] not in plan.measured]
                    pending.setdefault(n, []).extend(subs)
        say(f"round {r}: {len(probes)} checks, {failed} off by more than {tol:.0%}; {len(new_points)} points added")
        if new_points:
            plan.measured.update(measure(sorted(set(new_points), key=astuple)))
    out: Dict[LayerKey, Tuple[float, str]] = {}
    for fg in plan.families:
        method = plan.method.get(fg.fam, "linear")
        interp = None
        for p, k in fg.keys.items():
            if k in plan.measured:
                out[k] = (plan.measured[k], "measured")
            else:
                interp = interp or Interpolant(fg, plan.values(fg), align)
                out[k] = (interp(p, method), f"interpolated-{method}")
    errs = [abs(c[f"rel_error_{c['method']}"]) for c in plan.checks]
    report = {
        "coarse": coarse, "align": align, "refine_tol": tol, "check_fraction": check_fraction, "refine_rounds": rounds,
        "families": len(plan.families),
        "methods": {m: sum(1 for v in plan.method.values() if v == m) for m in methods},
        "checks": len(plan.checks),
        "check_mean_abs_rel_error": float(np.mean(errs)) if errs else None,
        "check_max_abs_rel_error": float(np.max(errs)) if errs else None,
        "measured": sum(1 for v in out.values() if v[1] == "measured"),
        "interpolated": sum(1 for v in out.values() if v[1] != "measured"),
        "check_detail": plan.checks[:400],
    }
    return out, report
