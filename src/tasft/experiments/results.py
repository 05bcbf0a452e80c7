"""A study's outputs: rows aggregated over seeds, ``results.csv``, ``results.md``, the PNG plots and
``experiment.json``."""

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
from .spec import METRICS, ExperimentConfig, PlotSpec


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation (over seeds) of every metric, per (series, x), in first-seen order."""
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
        out.append(agg)
    return out

def _cell(mean: float | None, std: float | None) -> str:
    if mean is None or isinstance(mean, float) and math.isnan(mean):
        return "–"
    return f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"

def results_markdown(exp: ExperimentConfig, rows: list[dict]) -> str:
    columns = [("harmful rate", "harm_suites_harmful_rate"), ("mean harm", "harm_suites_mean_harmfulness"),
               ("safe", "harm_suites_safe_rate"), ("degenerate", "harm_suites_degenerate_rate"),
               ("over-refusal", "over_refusal"), ("ref. NLL", "reference_nll"), ("non-English", "non_english_rate")]
    header = ["series", exp.x_label, "seeds", *(c for c, _ in columns), "train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for a in aggregate(rows):
        x = "–" if a["x"] is None else str(a["x"])
        cells = [a["series"], x, str(a["seeds"]), *(_cell(a[k], a[f"{k}_std"]) for _, k in columns),
                 "–" if a["train_seconds"] is None else f"{a['train_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return (f"# Experiment: {exp.study}\n\nTraining config `{Path(exp.train_config).name}`; evaluation suites "
            f"`{exp.evaluate.suites}` (limit {exp.evaluate.limit}); harm-suite means over the suites present; "
            "mean ± std over seeds where there are several.\n\n" + "\n".join(lines) + "\n")

def results_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()

def plot(exp: ExperimentConfig, rows: list[dict], spec: PlotSpec, path: Path) -> None:
    """One line per series (mean over seeds, error bars = std), points in x order."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 3.8), dpi=110)
    agg = aggregate(rows)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    unswept = {s.name for s in exp.series if s.starting_model or (s.vary is None and not s.checkpoints)}
    for i, name in enumerate(dict.fromkeys(a["series"] for a in agg)):
        color = colors[i % len(colors)]
        pts = [a for a in agg if a["series"] == name]
        xs = [a["x"] if spec.x == "x" else a[spec.x] for a in pts]
        ys = [a[spec.y] for a in pts]
        if spec.x == "x" and name in unswept and isinstance(ys[0], (int, float)):  # sft, the starting model:
            ax.axhline(ys[0], linestyle="--", linewidth=1.2, color=color, label=name)  # a line, not a point
            continue
        keep = [(x, y, a[f"{spec.y}_std"], a["x"]) for x, y, a in zip(xs, ys, pts)
                if isinstance(x, (int, float)) and isinstance(y, (int, float))]
        if not keep:
            continue
        if spec.x == "x":
            keep.sort()
        else:  # a trajectory through metric space: label each point with its x (e.g. the step)
            for x, y, _, label in keep:
                ax.annotate(str(label), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
        ax.errorbar([k[0] for k in keep], [k[1] for k in keep], yerr=[k[2] or 0.0 for k in keep],
                    marker="o", capsize=3, color=color, label=name)
    if spec.log_x:
        ax.set_xscale("log")
    ax.set_xlabel(exp.x_label if spec.x == "x" else spec.x)
    ax.set_ylabel(spec.y)
    ax.set_title(f"{exp.study}: {spec.y}", fontsize=10)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    save_figure(fig, path)


def write_outputs(exp: ExperimentConfig, rows: list[dict], out: Path) -> list[Path]:
    """results.csv, results.md, experiment.json and the PNG plots; returns the plot paths."""
    write_text_atomic(out / "results.csv", results_csv(rows))
    write_text_atomic(out / "results.md", results_markdown(exp, rows))
    write_json_atomic(out / "experiment.json", asdict(exp))
    images = []
    for spec in exp.plots:
        name = f"{spec.y}_vs_{spec.x}.png"
        plot(exp, rows, spec, out / name)
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
