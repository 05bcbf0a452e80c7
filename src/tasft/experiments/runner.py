"""Running a study: each point trained (or shared, or resumed) and evaluated, the outputs written after each."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..config import to_dict
from ..errors import TasftError
from ..io_utils import write_json_atomic
from ..run_changes import saved_config_changes
from ..run_config import load_train_config
from .results import ordered, write_outputs
from .sharing import (
    PointBusy,
    _finished,
    check_evaluated,
    find_shared,
    find_shared_start,
    prune_weights,
    same_evaluation,
)
from .study import METRICS, ExperimentConfig, Point, load_experiment, plan, point_overrides


def _evaluate(exp: ExperimentConfig, model: Path, out: Path, progress: bool) -> dict:
    from ..evaluation.evaluate import EvalSettings, evaluate

    if (done := _finished(out)) is not None:
        check_evaluated(model, out)
        return done
    return evaluate(EvalSettings(model=str(model), out=str(out), **asdict(exp.evaluate) | {
        "generation": exp.evaluate.generation, "suite_limits": dict(exp.evaluate.suite_limits)}), progress=progress)


def _train(cfg, run_dir: Path, progress: bool) -> dict:
    from ..training.pipeline import train

    if (done := _finished(run_dir)) is not None:
        return done
    return train(cfg, resume=True, progress=progress)

def _check_unchanged(run_dir: Path, cfg, absent_ok: bool = False) -> None:
    """A point's run was made under the settings the experiment gives it now, from the same input files — else a
    one-line error: a finished point is never reused, nor a started one continued, under settings or from data it
    was not trained with. ``absent_ok``: an input not on this machine is accepted (reading results only)."""
    changes = saved_config_changes(run_dir, to_dict(cfg))
    if changes:
        raise TasftError(f"{run_dir}: trained with other settings than the experiment now gives this point "
                         f"({changes}); move its runs/ and evals/ directories away or use another --out")
    from ..training.run_dir import check_same_inputs

    check_same_inputs(run_dir, cfg, "move its runs/ and evals/ directories away or use another --out", absent_ok)


def _check_same_evaluation(exp: ExperimentConfig, out: Path, config: str) -> dict | None:
    """A study directory's points were evaluated as ``exp`` evaluates (its ``experiment.json``), else an error;
    returns that file's data (None when there is none): the study as its existing points were made."""
    meta = out / "experiment.json"
    if not meta.is_file():
        return None
    try:
        previous = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise TasftError(f"{meta}: unreadable (use another --out)") from None
    if isinstance(previous, dict) and "evaluate" in previous and not same_evaluation(exp, previous):
        raise TasftError(f"{out}: its points were evaluated with another evaluate: block than {config} has now "
                         "(use another --out, or restore the block)")
    return previous if isinstance(previous, dict) else None


def _training_of(run_dir: Path, eval_dir: Path) -> dict:
    """A finished point's training summary: its run's ``metrics.json``, or, for a restored point whose run
    directory was not archived, the summary its evaluation recorded."""
    return _finished(run_dir) or (_finished(eval_dir) or {}).get("training") or {}

def _row(point: Point, x: Any, training: dict, evaluation: dict, eval_dir: Path) -> dict:
    """One results.csv row: the point, its summary metrics with their 95% intervals (``<metric>_lo``/``_hi``),
    its training time and where its evaluation lives."""
    from ..evaluation.compare import ensure_intervals, interval, scored_rows

    summary = evaluation.get("summary", {})
    if "intervals" not in evaluation:
        ensure_intervals(evaluation, scored_rows(eval_dir))
    bounds = {}
    for k in METRICS:
        ci = interval(evaluation, k) or [None, None]
        bounds.update({f"{k}_lo": ci[0], f"{k}_hi": ci[1]})
    return {"series": point.series.name, "x": x, "seed": point.seed,
            **{k: summary.get(k) for k in METRICS}, **bounds,
            "train_seconds": training.get("train_seconds"),
            "eval_dir": str(eval_dir)}

def run_point(exp: ExperimentConfig, point: Point, out: Path, progress: bool = True,
              share: bool = True, prune: bool = False, own: dict | None = None) -> list[dict]:
    """Train (or reuse) and evaluate (or reuse) one point; a checkpoint series gives one row per checkpoint.
    ``own``: the study directory's ``experiment.json`` as it was before this run (its restored points count as
    finished, :func:`tasft.experiments.sharing.find_shared`)."""
    run_dir = out / "runs" / point.slug
    if point.series.starting_model:
        model = load_train_config(exp.train_config, []).model
        eval_dir = out / "evals" / point.slug
        if share and _finished(eval_dir) is None:  # a sibling study's evaluation of the same model is reused
            state, shared_eval = find_shared_start(exp, out, point.slug)
            if state == "running":
                raise PointBusy(str(shared_eval))
            if state == "done":
                return [_row(point, point.x, {}, _finished(shared_eval), shared_eval)]
        return [_row(point, point.x, {}, _evaluate(exp, Path(model), eval_dir, progress), eval_dir)]
    cfg = load_train_config(exp.train_config, point_overrides(point, run_dir))
    if share and not point.series.checkpoints and not (run_dir / "config.yaml").exists():
        state, shared_run, shared_eval = find_shared(exp, cfg, out, own=own)
        if state == "done":
            check_evaluated(shared_run, shared_eval)
            return [_row(point, point.x, _training_of(shared_run, shared_eval), _finished(shared_eval), shared_eval)]
        if state == "running":
            raise PointBusy(str(shared_run))
        if state == "trained":
            eval_dir = out / "evals" / point.slug
            return [_row(point, point.x, _finished(shared_run), _evaluate(exp, shared_run, eval_dir, progress),
                         eval_dir)]
    _check_unchanged(run_dir, cfg)
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

def finished_rows(exp: ExperimentConfig, point: Point, out: Path, own: dict | None = None) -> list[dict]:
    """The rows of a point that is finished here or in a sibling study (nothing is trained or evaluated); ``own``
    as in :func:`run_point`."""
    eval_dir = out / "evals" / point.slug
    if point.series.starting_model:
        if _finished(eval_dir) is None:
            state, eval_dir = find_shared_start(exp, out, point.slug)
            if state != "done":
                return []
        return [_row(point, point.x, {}, _finished(eval_dir), eval_dir)]
    run_dir = out / "runs" / point.slug
    if point.series.checkpoints:
        evals = sorted(out.glob(f"evals/{point.slug}__step*/metrics.json"))
        training = _finished(run_dir) or {}
        rows = []
        for e in evals:
            step = int(e.parent.name.rsplit("__step", 1)[1])
            check_evaluated(run_dir / f"checkpoint-{step}", e.parent)
            rows.append(_row(point, step, training, _finished(e.parent), e.parent))
        return rows
    cfg = load_train_config(exp.train_config, point_overrides(point, run_dir))
    if _finished(run_dir) is not None and _finished(eval_dir) is not None:
        _check_unchanged(run_dir, cfg, absent_ok=True)  # a restored study's tables need its points, not their data
        check_evaluated(run_dir, eval_dir)
        return [_row(point, point.x, _finished(run_dir), _finished(eval_dir), eval_dir)]
    state, shared_run, shared_eval = find_shared(exp, cfg, out, own=own)
    if state != "done":
        return []
    check_evaluated(shared_run, shared_eval)
    return [_row(point, point.x, _training_of(shared_run, shared_eval), _finished(shared_eval), shared_eval)]


def point_progress(echo: Callable[[str], None]) -> Callable[[int, int, Point, float], None]:
    """An ``on_point`` for :func:`run_experiment` that says a line per finished point: what it took and, from the
    points computed so far, about how long the rest takes."""
    spent: list[float] = []

    def on_point(done: int, total: int, point: Point, seconds: float) -> None:
        if seconds > 5:  # a point finished before (resumed, shared) says nothing about the time
            spent.append(seconds)
        left = (total - done) * sum(spent) / len(spent) if spent else None
        eta = "" if left is None or done == total else f"; about {left / 60:.0f} min left"
        at = "" if point.x is None else f" at {point.x}"
        echo(f"[{done}/{total}] {point.series.name}{at} seed {point.seed}: {seconds / 60:.1f} min{eta}")
    return on_point


def run_experiment(study: str, config: str, out: str | Path, seeds: int | None = None,
                   progress: bool = True, prune: bool = False, tables_only: bool = False,
                   on_point: Callable[[int, int, Point, float], None] | None = None) -> list[dict]:
    """Run (or resume) every point of the study and write its tables and plots after each point.

    ``prune`` deletes each point's checkpoints and weights once it is evaluated (a grid of full models fills a disk).
    ``tables_only`` runs nothing: it rewrites the tables and plots from the points already finished (here or in a
    sibling study), e.g. after an upgrade of tasft or while a sibling is still running. ``on_point(done, total,
    point, seconds)`` is called after each point (``seconds``: what it took here; ~0 for a finished or shared one).
    """
    if seeds is not None and seeds < 1:
        raise TasftError(f"--seeds: must be >= 1, got {seeds}")
    exp = load_experiment(config)
    if exp.study != study:
        raise TasftError(f"{config} describes study '{exp.study}', not '{study}'")
    out = Path(out)
    own = _check_same_evaluation(exp, out, config)  # read before this run rewrites it: restored points are in it
    if tables_only:
        if not out.is_dir():
            raise TasftError(f"{out}: no such study directory (run the experiment first)")
        rows = ordered(exp, [r for point in plan(exp, seeds or exp.seeds, every_point=seeds is not None)
                             for r in finished_rows(exp, point, out, own)])
        if not rows:
            raise TasftError(f"{out}: no finished point yet")
        write_outputs(exp, rows, out)
        return rows
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "experiment.json", asdict(exp))  # siblings see this study's runs from the start
    rows: list[dict] = []
    points, deferred = plan(exp, seeds or exp.seeds, every_point=seeds is not None), []
    done = 0

    def record(point: Point, new: list[dict], start: float) -> None:
        """A finished point: its rows into the tables (written at once), then ``on_point``."""
        nonlocal rows, done
        rows, done = ordered(exp, rows + new), done + 1
        write_outputs(exp, rows, out)
        if on_point is not None:
            on_point(done, len(points), point, time.perf_counter() - start)

    for point in points:  # a point a sibling study is training right now waits until the end, then is shared
        start = time.perf_counter()
        try:
            new = run_point(exp, point, out, progress, prune=prune, own=own)
        except PointBusy:
            deferred.append(point)
            continue
        record(point, new, start)
    for point in deferred:
        start = time.perf_counter()
        record(point, _wait_and_run(exp, point, out, progress, prune=prune, own=own), start)
    return rows

def _wait_and_run(exp: ExperimentConfig, point: Point, out: Path, progress: bool, prune: bool = False,
                  poll_s: float = 60.0, patience_s: float = 3600.0, own: dict | None = None) -> list[dict]:
    """Wait (up to ``patience_s``) for a sibling's run of this point to finish; then share it or train it here."""
    waited = 0.0
    while waited < patience_s:
        try:
            return run_point(exp, point, out, progress, prune=prune, own=own)
        except PointBusy:
            time.sleep(poll_s)
            waited += poll_s
    return run_point(exp, point, out, progress, share=False, prune=prune, own=own)
