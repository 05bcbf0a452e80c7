"""``tasft experiment STUDY --config FILE --out DIR``: a grid of train + evaluate points, resumable, tabulated, plotted.

An experiment file names a training config (``train_config``, relative to the experiment file) and a list of
``series``: each series fixes some training keys (``set``) and sweeps one key (``vary``) over ``values``; with
``checkpoints: true`` it instead trains once and evaluates every saved checkpoint (x = the step). A point is
(series, x, seed); its training run goes to ``DIR/runs/<slug>`` and its evaluation to ``DIR/evals/<slug>``.
A point whose ``metrics.json`` files exist is skipped, so re-running the command resumes an interrupted grid.
A series with ``starting_model: true`` evaluates the untrained starting model (the reference every curve moves from).
Studies written side by side (``results/<study>``) share points: a point whose resolved training config and
evaluation settings equal a finished point of a sibling study reuses that point's run and evaluation.

Outputs: ``results.csv`` (one row per point and seed), ``results.md`` (mean ± std over seeds per series and x),
one PNG per entry of ``plots`` and ``experiment.json`` (the resolved experiment); ``tasft report DIR`` renders them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import outputs
from ..config import _from_dict, _read_yaml, load_train_config, to_dict
from ..errors import TasftError
from ..io_utils import write_json_atomic, write_text_atomic

STUDIES = ("data-efficiency", "lambda", "stages", "contrastive")
METRICS = ("harm_suites_harmful_rate", "harm_suites_mean_harmfulness", "harm_suites_safe_rate",
           "harm_suites_degenerate_rate", "harm_suites_refusal_rate", "over_refusal", "reference_nll",
           "non_english_rate")


@dataclass
class Series:
    """One curve: training keys fixed by ``set``, one key (``vary``) swept over ``values`` (or checkpoints)."""

    name: str
    set: dict = field(default_factory=dict)
    vary: str | None = None
    values: list = field(default_factory=list)
    checkpoints: bool = False
    starting_model: bool = False


@dataclass
class PlotSpec:
    """A plot of metric ``y`` against ``x`` (``x`` = the swept value, or another metric), one line per series."""

    y: str
    x: str = "x"
    log_x: bool = False


@dataclass
class EvalSpec:
    suites: str = "malicious,cona,controversial,qharm,xstest-safe,alpaca"
    limit: int | None = 25
    suite_limits: dict = field(default_factory=dict)
    batch_size: int = 32
    max_new_tokens: int = 128
    harm_scorer: str = "local"
    data_dir: str | None = None


@dataclass
class ExperimentConfig:
    study: str
    train_config: str
    series: list[Series]
    x_label: str = "x"
    evaluate: EvalSpec = field(default_factory=EvalSpec)
    seeds: int = 1
    headline_values: list = field(default_factory=list)
    plots: list[PlotSpec] = field(default_factory=lambda: [PlotSpec("harm_suites_harmful_rate")])


@dataclass(frozen=True)
class Point:
    series: Series
    x: Any
    seed: int

    @property
    def slug(self) -> str:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.series.name).strip("-")
        return f"{name}__x{self.x}__seed{self.seed}" if not self.series.checkpoints else f"{name}__seed{self.seed}"


def load_experiment(path: str | Path) -> ExperimentConfig:
    """Read and check an experiment file; ``train_config`` is resolved against the file's directory."""
    path = Path(path)
    data = _read_yaml(path)
    exp = _from_dict(ExperimentConfig, data, where=str(path))
    if exp.study not in STUDIES:
        raise TasftError(f"{path}: study '{exp.study}' is not one of {', '.join(STUDIES)}")
    exp.train_config = str((path.parent / exp.train_config).resolve())
    if exp.evaluate.data_dir is not None:
        exp.evaluate.data_dir = str((path.parent / exp.evaluate.data_dir).resolve())
    if not exp.series:
        raise TasftError(f"{path}: series: at least one series is needed")
    names = [s.name for s in exp.series]
    if len(set(names)) != len(names):
        raise TasftError(f"{path}: series names must be unique")
    for s in exp.series:
        if not isinstance(s.set, dict):
            raise TasftError(f"{path}: series '{s.name}': set must be a mapping of training keys")
        if s.starting_model and (s.checkpoints or s.vary is not None or len(s.values) > 1):
            raise TasftError(f"{path}: series '{s.name}': starting_model takes at most one x value, no vary")
        if not s.checkpoints and not s.starting_model and (s.vary is None) != (not s.values):
            raise TasftError(f"{path}: series '{s.name}': give both vary and values (or neither)")
    if exp.seeds < 1:
        raise TasftError(f"{path}: seeds must be >= 1")
    for spec in exp.plots:
        for key in (spec.y, spec.x):
            if key != "x" and key not in METRICS:
                raise TasftError(f"{path}: plots: unknown metric '{key}' (choose from x, {', '.join(METRICS)})")
    return exp


def plan(exp: ExperimentConfig, seeds: int) -> list[Point]:
    """Every point: each series × value × seed; extra seeds only for ``headline_values`` (all values if empty)."""
    points = []
    for s in exp.series:
        values = [None] if s.checkpoints or not s.values else s.values
        for x in values:
            n = seeds if not exp.headline_values or x in exp.headline_values else 1
            points += [Point(s, x, seed) for seed in range(n)]
    return points


def _overrides(point: Point, run_dir: Path) -> list[str]:
    """``--set`` strings of a point: the series' keys, the swept value, the seed and the run directory."""
    values = dict(point.series.set)
    if point.series.vary is not None and point.x is not None:
        values[point.series.vary] = point.x
    values.update(seed=point.seed, output_dir=str(run_dir))
    if point.series.checkpoints:  # keep every checkpoint (save_steps from the series or the training config)
        values.update(save_total_limit=1_000_000, keep_checkpoints=True)
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]


class PointBusy(Exception):
    """The same point is being trained by a sibling study right now."""


def _finished(directory: Path) -> dict | None:
    """The ``metrics.json`` of a finished run or evaluation, or None."""
    path = directory / "metrics.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _evaluate(exp: ExperimentConfig, model: Path, out: Path, progress: bool) -> dict:
    from ..evaluation.evaluate import EvalSettings, evaluate
    from ..generation.generate import GenerationSettings

    if (done := _finished(out)) is not None:
        return done
    spec = exp.evaluate
    settings = EvalSettings(model=str(model), out=str(out), suites=spec.suites, limit=spec.limit,
                            suite_limits=dict(spec.suite_limits), data_dir=spec.data_dir, harm_scorer=spec.harm_scorer,
                            generation=GenerationSettings(max_new_tokens=spec.max_new_tokens,
                                                          batch_size=spec.batch_size))
    return evaluate(settings, progress=progress)


def _train(cfg, run_dir: Path, progress: bool) -> dict:
    from ..training.pipeline import train

    if (done := _finished(run_dir)) is not None:
        return done
    return train(cfg, resume=True, progress=progress)


def _row(point: Point, x: Any, training: dict, evaluation: dict, eval_dir: Path) -> dict:
    summary = evaluation.get("summary", {})
    return {"series": point.series.name, "x": x, "seed": point.seed,
            **{k: summary.get(k) for k in METRICS},
            "train_seconds": training.get("train_seconds"),
            "eval_dir": str(eval_dir)}


def _comparable(config: dict) -> dict:
    """A resolved training config as plain YAML data, without the output directory."""
    return {k: v for k, v in yaml.safe_load(yaml.safe_dump(config)).items() if k != "output_dir"}


def find_shared(exp: ExperimentConfig, cfg, out: Path) -> tuple[str, Path | None, Path | None]:
    """A sibling study's point with the same training config and evaluation settings as ``cfg``.

    Returns ("done", run_dir, eval_dir) when that point is finished, ("running", run_dir, None) when a live
    process is training or evaluating it, ("trained", run_dir, None) when its run finished but its evaluation did
    not (and nobody is evaluating it), and ("none", None, None) otherwise (also for an abandoned attempt).
    Siblings are the directories next to ``out``.
    """
    want = _comparable(to_dict(cfg))
    found: tuple[str, Path | None, Path | None] = ("none", None, None)
    for sibling in sorted(p for p in out.resolve().parent.iterdir() if p.is_dir() and p != out.resolve()):
        meta = sibling / "experiment.json"
        if not meta.is_file() or json.loads(meta.read_text(encoding="utf-8")).get("evaluate") != asdict(exp.evaluate):
            continue
        for config_file in sorted(sibling.glob("runs/*/config.yaml")):
            if _comparable(yaml.safe_load(config_file.read_text(encoding="utf-8"))) != want:
                continue
            run_dir, eval_dir = config_file.parent, sibling / "evals" / config_file.parent.name
            if (run_dir / "metrics.json").is_file() and (eval_dir / "metrics.json").is_file():
                return "done", run_dir, eval_dir
            # running: a live process holds its run or evaluation; trained: the run finished and nobody is
            # evaluating it (evaluated here); a run nobody holds that never finished was abandoned: not shared
            if outputs.in_use(run_dir) or outputs.in_use(eval_dir):
                found = ("running", run_dir, None)
            elif (run_dir / "metrics.json").is_file() and found[0] == "none":
                found = ("trained", run_dir, None)
    return found


WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")


def prune_weights(run_dir: Path) -> None:
    """Delete a finished run's checkpoints and weight files; metrics, logs, config and model card stay."""
    import shutil

    for ckpt in run_dir.glob("checkpoint-*"):
        shutil.rmtree(ckpt, ignore_errors=True)
    for f in run_dir.iterdir() if run_dir.is_dir() else []:
        if f.is_file() and (f.suffix in WEIGHT_SUFFIXES or f.suffix == ".bin" and f.name != "training_args.bin"):
            f.unlink()


def run_point(exp: ExperimentConfig, point: Point, out: Path, progress: bool = True,
              share: bool = True, prune: bool = False) -> list[dict]:
    """Train (or reuse) and evaluate (or reuse) one point; a checkpoint series gives one row per checkpoint."""
    run_dir = out / "runs" / point.slug
    if point.series.starting_model:
        model = load_train_config(exp.train_config, []).model
        eval_dir = out / "evals" / point.slug
        return [_row(point, point.x, {}, _evaluate(exp, Path(model), eval_dir, progress), eval_dir)]
    cfg = load_train_config(exp.train_config, _overrides(point, run_dir))
    if share and not point.series.checkpoints and not (run_dir / "config.yaml").exists():
        state, shared_run, shared_eval = find_shared(exp, cfg, out)
        if state == "done":
            return [_row(point, point.x, _finished(shared_run), _finished(shared_eval), shared_eval)]
        if state == "running":
            raise PointBusy(str(shared_run))
        if state == "trained":
            eval_dir = out / "evals" / point.slug
            return [_row(point, point.x, _finished(shared_run), _evaluate(exp, shared_run, eval_dir, progress),
                         eval_dir)]
    training = _train(cfg, run_dir, progress)
    if not point.series.checkpoints:
        eval_dir = out / "evals" / point.slug
        row = _row(point, point.x, training, _evaluate(exp, run_dir, eval_dir, progress), eval_dir)
        if prune:
            prune_weights(run_dir)
        return [row]
    rows = []
    # checkpoints on disk, and those already evaluated (a pruned run keeps their evaluations, not their weights)
    saved = {p.name.split("-")[1] for p in run_dir.glob("checkpoint-*")}
    saved |= {p.parent.name.rsplit("__step", 1)[1] for p in (out / "evals").glob(f"{point.slug}__step*/metrics.json")}
    steps = sorted(int(s) for s in saved if s.isdigit())
    for step in steps:
        eval_dir = out / "evals" / f"{point.slug}__step{step}"
        rows.append(_row(point, step, training, _evaluate(exp, run_dir / f"checkpoint-{step}", eval_dir, progress),
                         eval_dir))
    if prune:
        prune_weights(run_dir)
    return rows


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


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


def run_experiment(study: str, config: str, out: str | Path, seeds: int | None = None,
                   progress: bool = True, prune: bool = False) -> list[dict]:
    """Run (or resume) every point of the study and write its tables and plots after each point.

    ``prune`` deletes each point's checkpoints and weights once it is evaluated (a grid of full models fills a disk).
    """
    exp = load_experiment(config)
    if exp.study != study:
        raise TasftError(f"{config} describes study '{exp.study}', not '{study}'")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "experiment.json", asdict(exp))  # siblings see this study's runs from the start
    rows: list[dict] = []
    points, deferred = plan(exp, seeds or exp.seeds), []
    for point in points:  # a point a sibling study is training right now waits until the end, then is shared
        try:
            rows += run_point(exp, point, out, progress, prune=prune)
        except PointBusy:
            deferred.append(point)
            continue
        rows = ordered(exp, rows)
        write_outputs(exp, rows, out)
    for point in deferred:
        rows = ordered(exp, rows + _wait_and_run(exp, point, out, progress, prune=prune))
        write_outputs(exp, rows, out)
    return rows


def ordered(exp: ExperimentConfig, rows: list[dict]) -> list[dict]:
    """Rows in the experiment file's order: by series, then by the series' listed values (checkpoints by step)."""
    series = {s.name: i for i, s in enumerate(exp.series)}
    values = {s.name: list(s.values) for s in exp.series}

    def key(r: dict) -> tuple:
        listed = values.get(r["series"], [])
        return series.get(r["series"], len(series)), listed.index(r["x"]) if r["x"] in listed else 0, r["x"] or 0

    return sorted(rows, key=key)


def _wait_and_run(exp: ExperimentConfig, point: Point, out: Path, progress: bool, prune: bool = False,
                  poll_s: float = 60.0, patience_s: float = 3600.0) -> list[dict]:
    """Wait (up to ``patience_s``) for a sibling's run of this point to finish; then share it or train it here."""
    waited = 0.0
    while waited < patience_s:
        try:
            return run_point(exp, point, out, progress, prune=prune)
        except PointBusy:
            time.sleep(poll_s)
            waited += poll_s
    return run_point(exp, point, out, progress, share=False, prune=prune)
