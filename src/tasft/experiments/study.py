"""An experiment file: its study, training config, series of points, evaluation block and plots (see
:mod:`tasft.experiments`), read and checked into :class:`ExperimentConfig`; :func:`plan` lists its points."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import GenerationSettings, from_dict
from ..errors import TasftError
from ..run_config import read_yaml
from ..scoring.answer_class import CLASSES, metric_name
from ..suites import STUDY_SUITES

STUDIES = ("data-efficiency", "lambda", "stages", "contrastive", "variants")

#: the harm-suite answer classes' shares and safe_strict (refusal or redirect), per point
CLASS_METRICS = (*(f"harm_suites_{metric_name(c)}" for c in CLASSES), "harm_suites_safe_strict_rate")
METRICS = ("harm_suites_harmful_rate", "harm_suites_mean_harmfulness", "harm_suites_safe_rate",
           "harm_suites_degenerate_rate", "harm_suites_refusal_rate", "over_refusal", "reference_nll",
           "non_english_rate", *CLASS_METRICS)

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
class PlotSettings:
    """A plot of metric ``y`` against ``x`` (``x`` = the swept value, or another metric), one line per series;
    ``kind: pareto`` is instead the trade-off figure of :mod:`tasft.experiments.pareto` (x and y unused)."""

    y: str = "harm_suites_harmful_rate"
    x: str = "x"
    log_x: bool = False
    kind: Literal["line", "pareto"] = "line"

@dataclass
class StudyEvaluation:
    """A study's ``evaluate:`` block: :class:`tasft.evaluation.evaluate.EvalSettings` without the model and the
    output directory (each point has its own), with the study's default of 25 prompts per suite; ``spec: full`` (a
    named spec of :mod:`tasft.evaluation.specs`) sets the suites and limits instead."""

    suites: str = STUDY_SUITES
    limit: int | None = 25
    suite_limits: dict = field(default_factory=dict)
    harm_scorer: str = "local"
    data_dir: str | None = None
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    spec: str | None = None

@dataclass
class ExperimentConfig:
    study: str
    train_config: str
    series: list[Series]
    x_label: str = "x"
    evaluate: StudyEvaluation = field(default_factory=StudyEvaluation)
    seeds: int = 1
    headline_values: list = field(default_factory=list)
    plots: list[PlotSettings] = field(default_factory=lambda: [PlotSettings("harm_suites_harmful_rate")])
    reference: str | None = None  # the series the paired table compares with; None: the one named sft, if any
    compare_all: bool = False  # paired.json also pairs every two points (for a verdict between methods)

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
    data = read_yaml(path)
    exp = from_dict(ExperimentConfig, data, where=str(path))
    if exp.study not in STUDIES:
        raise TasftError(f"{path}: study '{exp.study}' is not one of {', '.join(STUDIES)}")
    exp.train_config = str((path.parent / exp.train_config).resolve())
    block = data.get("evaluate") if isinstance(data.get("evaluate"), dict) else {}
    if exp.evaluate.spec is not None:
        from ..evaluation.specs import get_spec

        given = [k for k in ("suites", "limit", "suite_limits") if k in block]
        if given:
            raise TasftError(f"{path}: evaluate: spec {exp.evaluate.spec} sets the suites and limits; drop "
                             + ", ".join(given))
        named = get_spec(exp.evaluate.spec)
        exp.evaluate.suites, exp.evaluate.limit = named.suites, named.limit
        exp.evaluate.suite_limits = dict(named.suite_limits)
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
        s.set = {k: _resolve_set_path(k, v, path.parent) for k, v in s.set.items()}
        if s.starting_model and (s.checkpoints or s.vary is not None or len(s.values) > 1):
            raise TasftError(f"{path}: series '{s.name}': starting_model takes at most one x value, no vary")
        if not s.checkpoints and not s.starting_model and (s.vary is None) != (not s.values):
            raise TasftError(f"{path}: series '{s.name}': give both vary and values (or neither)")
    if exp.reference is not None and exp.reference not in names:
        raise TasftError(f"{path}: reference: no series named '{exp.reference}' (series: {', '.join(names)})")
    if exp.seeds < 1:
        raise TasftError(f"{path}: seeds must be >= 1")
    for spec in exp.plots:
        for key in (spec.y, spec.x):
            if key != "x" and key not in METRICS:
                raise TasftError(f"{path}: plots: unknown metric '{key}' (choose from x, {', '.join(METRICS)})")
    return exp

DATA_KEYS = ("train_data", "harmful_data", "eval_data")


def _resolve_set_path(key: str, value: Any, base: Path) -> Any:
    """A series' file setting (``harmful_data``, ``harmful_data.path``, ``harmful_data.audit``, …) relative to the
    experiment file, as the training config's own paths are relative to it."""
    parts = key.split(".")
    is_path = parts[0] in DATA_KEYS and (len(parts) == 1 or parts[1] in ("path", "audit"))
    if not is_path or not isinstance(value, str) or ":" in value.split("/")[0] or Path(value).is_absolute():
        return value
    return str((base / value).resolve())


def plan(exp: ExperimentConfig, seeds: int, every_point: bool = False) -> list[Point]:
    """Every point: each series × value × seed 0 .. seeds − 1 — for every point with ``every_point`` (``tasft
    experiment --seeds N``), else the file's ``headline_values`` alone get the extra seeds (all values if it lists
    none)."""
    points = []
    for s in exp.series:
        values = [None] if s.checkpoints or not s.values else s.values
        for x in values:
            n = seeds if every_point or not exp.headline_values or x in exp.headline_values else 1
            points += [Point(s, x, seed) for seed in range(n)]
    return points


def point_overrides(point: Point, run_dir: Path) -> list[str]:
    """``--set`` strings of a point: the series' keys, the swept value, the seed and the run directory."""
    values = dict(point.series.set)
    if point.series.vary is not None and point.x is not None:
        values[point.series.vary] = point.x
    values.update(seed=point.seed, output_dir=str(run_dir))
    if point.series.checkpoints:  # keep every checkpoint (save_steps from the series or the training config)
        values.update(save_total_limit=1_000_000, keep_checkpoints=True)
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]
