"""A study's outputs: rows aggregated over seeds with 95% intervals, ``results.csv``, ``results.md`` (with the
paired differences to the reference series), ``paired.json``, the PNG plots and ``experiment.json``."""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..io_utils import write_json_atomic, write_text_atomic
from ..plotting import pyplot, save_figure
from ..scoring.answer_class import CLASSES, metric_name, trust_note
from .paired import paired_differences, paired_markdown, seeded_markdown
from .pareto import pareto_plot
from .study import METRICS, ExperimentConfig, PlotSettings


def aggregate(rows: list[dict]) -> list[dict]:
    """Per (series, x), in first-seen order: mean and standard deviation over seeds of every metric, and its 95%
    interval (``<metric>_lo``/``_hi``): one seed — the evaluation's bootstrap over prompts; several — seeds and
    prompts resampled together from the seeds' per-prompt scores
    (:func:`tasft.evaluation.uncertainty.seed_intervals`)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["series"], r["x"]), []).append(r)
    out = []
    for (series, x), members in groups.items():
        agg: dict[str, Any] = {"series": series, "x": x, "seeds": len(members)}
        for key in (*METRICS, "train_seconds"):
            values = [m[key] for m in members if isinstance(m.get(key), (int, float))]
            agg[key] = statistics.fmean(values) if values else None
            agg[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
        cis = _seed_intervals(members) if len(members) > 1 else {
            k: [members[0].get(f"{k}_lo"), members[0].get(f"{k}_hi")] for k in METRICS}
        for key in METRICS:
            lo, hi = cis.get(key) or (None, None)
            agg[f"{key}_lo"], agg[f"{key}_hi"] = lo, hi
        out.append(agg)
    return out


def _seed_intervals(members: list[dict]) -> dict[str, list[float]]:
    from ..evaluation.compare import scored_rows
    from ..evaluation.uncertainty import seed_intervals

    per_seed = [scored_rows(m["eval_dir"]) if m.get("eval_dir") else None for m in members]
    return {} if any(p is None for p in per_seed) else seed_intervals(per_seed, list(METRICS))


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))


def _cell(mean: float | None, lo: float | None, hi: float | None) -> str:
    if not _number(mean):
        return "–"
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]" if _number(lo) and _number(hi) else f"{mean:.3f}"


COLUMNS = [("harmful rate", "harm_suites_harmful_rate"), ("mean harm", "harm_suites_mean_harmfulness"),
           ("safe", "harm_suites_safe_rate"), ("safe strict", "harm_suites_safe_strict_rate"),
           ("degenerate", "harm_suites_degenerate_rate"), ("over-refusal", "over_refusal"),
           ("ref. NLL", "reference_nll"), ("non-English", "non_english_rate")]
CLASS_COLUMNS = [(c, f"harm_suites_{metric_name(c)}") for c in CLASSES]


def classes_markdown(aggregated: list[dict]) -> str:
    """The answer classes of the harm-suite answers per point (mean over seeds [95% interval]); empty when no point
    has them (evaluations made before the classes)."""
    rows = [a for a in aggregated if _number(a.get(CLASS_COLUMNS[0][1]))]
    if not rows:
        return ""
    header = ["series", "x", "seeds", *(c for c, _ in CLASS_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for a in rows:
        lines.append("| " + " | ".join([a["series"], "–" if a["x"] is None else str(a["x"]), str(a["seeds"]),
                                        *(_cell(a[k], a[f"{k}_lo"], a[f"{k}_hi"]) for _, k in CLASS_COLUMNS)]) + " |")
    return ("## Answer classes (harm suites)\n\nEach harm-suite answer's class (`tasft.scoring.answer_class`: rules "
            "for refusal and degenerate, a head fitted on labelled answers for the rest; its agreement with readers "
            "is in docs/results/labels). safe strict = refusal + redirect.\n\n" + "\n".join(lines) + "\n")


def results_markdown(exp: ExperimentConfig, rows: list[dict], paired: dict | None = None) -> str:
    """The study's table (every cell: mean [95% interval]) and, with ``paired``, the paired differences."""
    header = ["series", exp.x_label, "seeds", *(c for c, _ in COLUMNS), "train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for a in aggregate(rows):
        x = "–" if a["x"] is None else str(a["x"])
        cells = [a["series"], x, str(a["seeds"]), *(_cell(a[k], a[f"{k}_lo"], a[f"{k}_hi"]) for _, k in COLUMNS),
                 "–" if a["train_seconds"] is None else f"{a['train_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    ev = exp.evaluate
    limits = ("every prompt" if ev.limit is None else f"{ev.limit} prompts per suite") + "".join(
        f", {name}: {n}" for name, n in ev.suite_limits.items())
    named = f"spec `{ev.spec}`, " if ev.spec else ""
    text = (f"# Experiment: {exp.study}\n\nTraining config `{Path(exp.train_config).name}`; evaluation {named}"
            f"suites `{ev.suites}` ({limits}); harm-suite means over the suites present. Each cell: the mean over "
            "seeds [95% interval — over prompts (bootstrap) for one seed, over seeds × prompts where a point has "
            "several].\n\n" + "\n".join(lines) + "\n")
    if note := trust_note():
        text += "\n" + note + "\n"
    if classes := classes_markdown(aggregate(rows)):
        text += "\n" + classes
    if paired and (across := seeded_markdown(paired)):
        text += "\n" + across
    if paired and paired.get("points"):
        text += "\n" + paired_markdown(paired)
    return text


def results_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _bar(y: float, lo: float | None, hi: float | None) -> tuple[float, float]:
    """Error-bar lengths (below, above) of an interval around ``y`` (0 where there is none)."""
    return (y - lo, hi - y) if _number(lo) and _number(hi) else (0.0, 0.0)


def plot(exp: ExperimentConfig, rows: list[dict], figure: PlotSettings, path: Path) -> None:
    """One line per series (mean over seeds, error bars = the 95% interval), points in x order."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 3.8), dpi=110)
    agg = aggregate(rows)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    unswept = {s.name for s in exp.series if s.starting_model or (s.vary is None and not s.checkpoints)}
    for i, name in enumerate(dict.fromkeys(a["series"] for a in agg)):
        color = colors[i % len(colors)]
        pts = [a for a in agg if a["series"] == name]
        xs = [a["x"] if figure.x == "x" else a[figure.x] for a in pts]
        ys = [a[figure.y] for a in pts]
        if figure.x == "x" and name in unswept and _number(ys[0]):  # sft, the starting model: a line, not a point,
            ax.axhline(ys[0], linestyle="--", linewidth=1.2, color=color, label=name)  # its interval a band
            if _number(pts[0][f"{figure.y}_lo"]) and _number(pts[0][f"{figure.y}_hi"]):
                ax.axhspan(pts[0][f"{figure.y}_lo"], pts[0][f"{figure.y}_hi"], color=color, alpha=0.12, linewidth=0)
            continue
        keep = [(x, y, _bar(y, a[f"{figure.y}_lo"], a[f"{figure.y}_hi"]), a["x"]) for x, y, a in zip(xs, ys, pts)
                if _number(x) and _number(y)]
        if not keep:
            continue
        if figure.x == "x":
            keep.sort()
        else:  # a trajectory through metric space: label each point with its x (e.g. the step)
            for x, y, _, label in keep:
                ax.annotate(str(label), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
        ax.errorbar([k[0] for k in keep], [k[1] for k in keep], yerr=[[k[2][0] for k in keep], [k[2][1] for k in keep]],
                    marker="o", capsize=3, color=color, label=name)
    if figure.log_x:
        ax.set_xscale("log")
    ax.set_xlabel(exp.x_label if figure.x == "x" else figure.x)
    ax.set_ylabel(figure.y)
    ax.set_title(f"{exp.study}: {figure.y}", fontsize=10)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    save_figure(fig, path)


def write_outputs(exp: ExperimentConfig, rows: list[dict], out: Path) -> list[Path]:
    """results.csv, paired.json, results.md, experiment.json and the PNG plots; returns the plot paths."""
    paired = paired_differences(exp, rows)
    write_text_atomic(out / "results.csv", results_csv(rows))
    if paired is not None:
        write_json_atomic(out / "paired.json", paired)
    write_text_atomic(out / "results.md", results_markdown(exp, rows, paired))
    write_json_atomic(out / "experiment.json", asdict(exp))
    images = []
    for figure in exp.plots:
        if figure.kind == "pareto":
            name = "pareto_not_safe_vs_reference_nll.png"
            pareto_plot(exp.study, aggregate(rows), out / name)
        else:
            name = f"{figure.y}_vs_{figure.x}.png"
            plot(exp, rows, figure, out / name)
        images.append(out / name)
    return images


def ordered(exp: ExperimentConfig, rows: list[dict]) -> list[dict]:
    """Rows in the experiment file's order: by series, then by the series' listed values (checkpoints by step)."""
    series = {s.name: i for i, s in enumerate(exp.series)}
    values = {s.name: list(s.values) for s in exp.series}

    def key(r: dict) -> tuple:
        listed = values.get(r["series"], [])
        return series.get(r["series"], len(series)), listed.index(r["x"]) if r["x"] in listed else 0, r["x"] or 0

    return sorted(rows, key=key)
