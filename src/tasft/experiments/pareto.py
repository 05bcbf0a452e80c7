"""The trade-off figure of a study: every point's not-safe rate against its reference NLL, over-refusal as colour,
and, beside it, each point's harm-suite answers by class.

not-safe = 1 − safe rate (harmful or degenerate: a broken answer is not a safe one), its interval
[1 − safe_hi, 1 − safe_lo]; both axes carry the points' 95% intervals as error bars. A point is on the Pareto front
when no other point has both a lower (or equal) not-safe rate and a lower (or equal) reference NLL, one of them
strictly; the front is drawn as a step line.
"""

from __future__ import annotations

from pathlib import Path

from ..plotting import pyplot, save_figure


def not_safe(agg: dict) -> tuple[float, float, float] | None:
    """(1 − safe, lower, upper) of an aggregated row, or None without a safe rate."""
    safe = agg.get("harm_suites_safe_rate")
    if not isinstance(safe, (int, float)):
        return None
    lo, hi = agg.get("harm_suites_safe_rate_lo"), agg.get("harm_suites_safe_rate_hi")
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
        return 1 - safe, 1 - hi, 1 - lo
    return 1 - safe, 1 - safe, 1 - safe


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (x, y) that no other point dominates (lower is better on both), by increasing x."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def label_offsets(xs: list[float], ys: list[float], near: tuple[float, float] = (0.12, 0.04),
                  step: float = 9.0) -> list[tuple[float, float]]:
    """Where each point's label goes (offset in points from the marker): 5 right and 4 up, moved ``step`` points
    further down for every label already placed near it — within ``near`` of the axes' ranges in x and y, labels
    placed from the highest point down — so close points' names do not print over each other."""
    def scaled(v: list[float]) -> list[float]:
        lo, hi = min(v, default=0.0), max(v, default=0.0)
        return [(u - lo) / (hi - lo) if hi > lo else 0.0 for u in v]

    sx, sy = scaled(xs), scaled(ys)
    offsets: list[tuple[float, float]] = [(5.0, 4.0)] * len(xs)
    placed: list[int] = []
    for i in sorted(range(len(xs)), key=lambda i: (-sy[i], sx[i])):
        crowd = sum(abs(sx[i] - sx[j]) < near[0] and abs(sy[i] - sy[j]) < near[1] for j in placed)
        offsets[i] = (5.0, 4.0 - step * crowd)
        placed.append(i)
    return offsets


def _label(agg: dict) -> str:
    return agg["series"] if agg["x"] is None or agg["series"] in ("starting model",) else f"{agg['series']} {agg['x']}"


CLASS_COLOURS = {"refusal": "tab:green", "redirect": "tab:olive", "content-free": "tab:gray",
                 "harmful": "tab:red", "degenerate": "tab:purple"}


def _class_panel(ax, aggregated: list[dict]) -> None:
    """Stacked bars of each point's answer classes (harm suites), safe classes first."""
    from ..scoring.answer_class import metric_name

    rows = [a for a in aggregated if isinstance(a.get(f"harm_suites_{metric_name('harmful')}"), (int, float))]
    names = [_label(a) for a in rows]
    left = [0.0] * len(rows)
    for answer_class, colour in CLASS_COLOURS.items():
        widths = [float(a.get(f"harm_suites_{metric_name(answer_class)}") or 0.0) for a in rows]
        ax.barh(names, widths, left=left, color=colour, label=answer_class, height=0.7)
        left = [lo + w for lo, w in zip(left, widths)]
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of harm-suite answers")
    ax.set_title("answer classes", fontsize=10)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=6, frameon=False, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    ax.spines[["top", "right"]].set_visible(False)


def pareto_plot(title: str, aggregated: list[dict], path: Path) -> None:
    """Draw the figure (see the module) from :func:`tasft.experiments.results.aggregate` rows; where the points
    carry answer classes, a panel beside it shows each point's classes as stacked bars."""
    plt = pyplot()
    classes = any(isinstance(a.get("harm_suites_answer_harmful_rate"), (int, float)) for a in aggregated)
    if classes:
        fig, (ax, side) = plt.subplots(1, 2, figsize=(11.5, 4.6), dpi=110, gridspec_kw={"width_ratios": [1.6, 1]})
        _class_panel(side, aggregated)
    else:
        fig, ax = plt.subplots(figsize=(7.2, 4.4), dpi=110)
    pts = [(a, ns) for a in aggregated if (ns := not_safe(a)) and isinstance(a.get("reference_nll"), (int, float))]
    if not pts:
        ax.text(0.5, 0.5, "no point has a safe rate and a reference NLL yet", ha="center", transform=ax.transAxes)
    xs = [a["reference_nll"] for a, _ in pts]
    ys = [ns[0] for _, ns in pts]
    refusal = [a.get("over_refusal") if isinstance(a.get("over_refusal"), (int, float)) else 0.0 for a, _ in pts]
    for (a, (y, ylo, yhi)), x, offset in zip(pts, xs, label_offsets(xs, ys)):
        lo, hi = a.get("reference_nll_lo"), a.get("reference_nll_hi")
        xerr = [[max(0.0, x - lo)], [max(0.0, hi - x)]] \
            if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) else None
        yerr = [[max(0.0, y - ylo)], [max(0.0, yhi - y)]]
        ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="none", ecolor="0.6", elinewidth=1, capsize=2, zorder=1)
        ax.annotate(_label(a), (x, y), textcoords="offset points", xytext=offset, fontsize=7)
    if pts:
        sc = ax.scatter(xs, ys, c=refusal, cmap="viridis", vmin=0.0, vmax=max(0.1, max(refusal)), s=42,
                        edgecolors="black", linewidths=0.5, zorder=3)
        fig.colorbar(sc, ax=ax, label="over-refusal (XSTest safe)")
        front = pareto_front(list(zip(xs, ys)))
        ax.step([xs[i] for i in front], [ys[i] for i in front], where="post", color="tab:red", linewidth=1,
                alpha=0.6, zorder=2, label="Pareto front")
        ax.legend(fontsize=7, frameon=False, loc="upper right")
    ax.set_xlabel("reference NLL (AlpacaEval held-out; lower = better language)")
    ax.set_ylabel("not-safe rate = 1 − safe (harm suites)")
    ax.set_title(f"{title}: safety against quality (95% intervals)", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    save_figure(fig, path)
