"""Points shared between sibling studies (``results/<study>`` side by side) and pruning a finished point's weights."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import yaml

from .. import outputs
from ..config import from_dict, to_dict
from ..errors import TasftError
from ..io_utils import read_json_object
from ..run_changes import comparable
from ..run_config import load_train_config
from ..training.run_dir import input_differences, input_hashes
from .study import ExperimentConfig, StudyEvaluation, plan, point_overrides

log = logging.getLogger(__name__)


class PointBusy(Exception):
    """The same point is being trained by a sibling study right now."""

def _finished(directory: Path) -> dict | None:
    """The ``metrics.json`` of a finished run or evaluation, or None."""
    path = directory / "metrics.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

def model_identity(model_dir: Path) -> str | None:
    """Which weights a run or checkpoint directory holds: their fingerprint (:func:`tasft.models.model_fingerprint`),
    or, once pruned, the one its run recorded in ``metrics.json`` when it saved them; None when neither is known."""
    from ..models import model_fingerprint

    if (now := model_fingerprint(str(model_dir))) is not None:
        return now
    recorded = (_finished(model_dir) or {}).get("model_fingerprint")
    return recorded if isinstance(recorded, str) else None


def evaluated_identity(eval_dir: Path) -> str | None:
    """The weights' fingerprint an evaluation recorded (``metrics.json``; an older one: its ``eval_config.json`` or
    the first answer it generated), None when it recorded none (an alias or hub model, an older export)."""
    for record in (_finished(eval_dir) or {}, read_json_object(eval_dir / "eval_config.json")):
        if isinstance(record.get("model_fingerprint"), str):
            return record["model_fingerprint"]
    for answers in sorted((eval_dir / "generations").glob("*.jsonl")):
        with answers.open(encoding="utf-8") as fh:
            try:
                first = json.loads(fh.readline() or "{}")
            except ValueError:
                continue
        if isinstance(first, dict) and isinstance(first.get("model_fingerprint"), str):
            return first["model_fingerprint"]
    return None


def check_evaluated(model_dir: Path, eval_dir: Path) -> None:
    """A finished evaluation is reused for ``model_dir`` only if it measured the weights the directory holds now
    (or recorded when they were pruned); otherwise a one-line error — a retrained point never reports its earlier
    model's numbers. Where either side is unknown (an archive without either record) there is nothing to compare."""
    now, then = model_identity(model_dir), evaluated_identity(eval_dir)
    if now is not None and then is not None and now != then:
        raise TasftError(f"{eval_dir}: evaluates other weights than {model_dir} holds now (fingerprint {then}, now "
                         f"{now}: the run was retrained since); move that evaluation away (it is evaluated again) or "
                         "use another --out")


def _evaluation(block: dict | None) -> dict | None:
    """An ``evaluate:`` block as comparable data: today's defaults for what an older tasft did not write, without
    the settings that cannot change an answer (``generation.workers``); None if it does not read as one."""
    try:
        data = asdict(from_dict(StudyEvaluation, block or {}, where="evaluate"))
    except (TasftError, TypeError):
        return None
    data["generation"].pop("workers", None)
    return data


def same_evaluation(exp: ExperimentConfig, other: dict) -> bool:
    """Whether a sibling's ``experiment.json`` evaluates as ``exp`` does."""
    mine = _evaluation(asdict(exp.evaluate))
    return mine is not None and mine == _evaluation(other.get("evaluate"))


def _siblings(exp: ExperimentConfig, out: Path):
    """(directory, experiment.json data) of each sibling study of ``out`` that evaluates as ``exp`` does."""
    for sibling in sorted(p for p in out.resolve().parent.iterdir() if p.is_dir() and p != out.resolve()):
        meta = sibling / "experiment.json"
        if meta.is_file() and same_evaluation(exp, other := json.loads(meta.read_text(encoding="utf-8"))):
            yield sibling, other


def _evaluations_of(exp: ExperimentConfig, out: Path, run_dir: Path) -> list[Path]:
    """Every sibling's evaluation directory of the model ``run_dir`` (a sibling that found a run trained but not
    evaluated evaluates it in its own ``evals/``)."""
    target = str(run_dir.resolve())
    found = []
    for sibling, _ in _siblings(exp, out):
        for config in sorted(sibling.glob("evals/*/eval_config.json")):
            model = json.loads(config.read_text(encoding="utf-8")).get("model")
            if isinstance(model, str) and str(Path(model).resolve()) == target:
                found.append(config.parent)
    return found


def find_shared(exp: ExperimentConfig, cfg, out: Path, own: dict | None = None
                ) -> tuple[str, Path | None, Path | None]:
    """A sibling study's point with the same training config and evaluation settings as ``cfg``.

    Returns ("done", run_dir, eval_dir) when that point is finished, ("running", run_dir, None) when a live
    process is training or evaluating it, ("trained", run_dir, None) when its run finished but its evaluation did
    not (and nobody is evaluating it), and ("none", None, None) otherwise (also for an abandoned attempt).
    Siblings are the directories next to ``out``; a restored point whose run directory was not archived is matched
    through its sibling's ``experiment.json`` (:func:`_archived_match`) — and so is one restored into ``out`` itself,
    through ``own``, ``out``'s ``experiment.json`` as it was before this run rewrote it.
    """
    want = comparable(to_dict(cfg))
    if own is not None and (archived := _archived_match(out, own, want)) is not None:
        return "done", *archived
    found: tuple[str, Path | None, Path | None] = ("none", None, None)
    now: dict[str, str] | None = None  # cfg's input files' hashes, computed once a sibling's settings match
    for sibling, other in _siblings(exp, out):
        if (archived := _archived_match(sibling, other, want)) is not None:
            return "done", *archived
        for config_file in sorted(sibling.glob("runs/*/config.yaml")):
            if comparable(yaml.safe_load(config_file.read_text(encoding="utf-8"))) != want:
                continue
            run_dir = config_file.parent
            now = input_hashes(cfg) if now is None else now
            try:
                changed = input_differences(run_dir, cfg, now)[0]
            except TasftError:  # its record of its inputs is unreadable: nobody can tell what it was made from
                changed = ["inputs.json"]
            if changed:  # the same settings, but made from other data (a file changed under the same name)
                log.info("%s: same settings, made from other inputs (%s): not shared", run_dir, ", ".join(changed))
                continue
            evals = [sibling / "evals" / run_dir.name, *_evaluations_of(exp, out, run_dir)]
            done = next((e for e in evals if (e / "metrics.json").is_file()), None)
            if (run_dir / "metrics.json").is_file() and done is not None:
                return "done", run_dir, done
            # running: a live process holds its run or an evaluation of it; trained: the run finished and nobody
            # is evaluating it (evaluated here); a run nobody holds that never finished was abandoned: not shared
            if outputs.in_use(run_dir) or any(outputs.in_use(e) for e in evals):
                found = ("running", run_dir, None)
            elif (run_dir / "metrics.json").is_file() and has_weights(run_dir) and found[0] == "none":
                found = ("trained", run_dir, None)  # (pruned weights, e.g. a checkpoint series': nothing to evaluate)
    return found

def _archived_match(sibling: Path, other: dict, want: dict) -> tuple[Path, Path] | None:
    """A sibling's restored point that has its evaluation but no run directory (an export whose runs were pruned
    before it was written) and whose series in the sibling's ``experiment.json`` resolves, under today's tasft, to
    the training config ``want``: (run directory, evaluation directory). The run directory holds no files; the
    evaluation's ``metrics.json`` carries the training summary that the tables read."""
    try:
        sibling_exp = from_dict(ExperimentConfig, other, where=str(sibling / "experiment.json"))
        points = plan(sibling_exp, sibling_exp.seeds)
    except (TasftError, TypeError):
        return None
    for point in points:
        run_dir, eval_dir = sibling / "runs" / point.slug, sibling / "evals" / point.slug
        if point.series.starting_model or (run_dir / "config.yaml").exists() or _finished(eval_dir) is None:
            continue
        try:
            cfg = load_train_config(sibling_exp.train_config, point_overrides(point, run_dir))
        except TasftError:
            continue
        if comparable(to_dict(cfg)) == want:
            return run_dir, eval_dir
    return None


def find_shared_start(exp: ExperimentConfig, out: Path, slug: str) -> tuple[str, Path | None]:
    """A sibling study's evaluation of the same starting model (same training config, same evaluation settings):
    ("done", eval_dir), ("running", eval_dir) while a live process writes it, or ("none", None)."""
    for sibling, other in _siblings(exp, out):
        if other.get("train_config") != exp.train_config:
            continue
        eval_dir = sibling / "evals" / slug
        if (eval_dir / "metrics.json").is_file():
            return "done", eval_dir
        if outputs.in_use(eval_dir):
            return "running", eval_dir
    return "none", None


WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")

def _weight_file(f: Path) -> bool:
    return f.is_file() and (f.suffix in WEIGHT_SUFFIXES or f.suffix == ".bin" and f.name != "training_args.bin")


def has_weights(run_dir: Path) -> bool:
    """Whether a finished run still has its final weights (not pruned) to evaluate."""
    return run_dir.is_dir() and any(_weight_file(f) for f in run_dir.iterdir())


def prune_weights(run_dir: Path) -> None:
    """Delete a finished run's checkpoints and weight files; metrics, logs, config and model card stay."""
    import shutil

    for ckpt in run_dir.glob("checkpoint-*"):
        shutil.rmtree(ckpt, ignore_errors=True)
    for f in run_dir.iterdir() if run_dir.is_dir() else []:
        if _weight_file(f):
            f.unlink()
