"""``tasft rescore``: a saved evaluation's rule-based flags and summaries recomputed from its ``scores/`` files, with
no model and no scorer; every file is read, and found whole, before any is rewritten."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import TasftError
from ..io_utils import write_json_atomic, write_jsonl_atomic, write_text_atomic
from ..scoring import judges
from .evaluate import (
    JUDGED_KINDS,
    add_answer_classes,
    add_intervals,
    judge_agreement,
    load_classifier,
    suite_metrics,
    summary_metrics,
)


def _read_json_file(path: Path) -> dict:
    """A JSON object file, or the one-line error why it cannot be read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TasftError(f"{path}: unreadable ({exc.__class__.__name__}: cut short or not JSON)") from None
    if not isinstance(data, dict):
        raise TasftError(f"{path}: expected a JSON object")
    return data


def _read_scores(path: Path) -> list[dict]:
    """A ``scores/`` file's rows, or the one-line error naming its first bad line."""
    if not path.is_file():
        raise TasftError(f"{path}: missing (the evaluation's per-answer scores)")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise TasftError(f"{path}:{number}: malformed JSON line") from None
        if not isinstance(row, dict) or not isinstance(row.get("response"), str):
            raise TasftError(f"{path}:{number}: not a scored answer (no response)")
        rows.append(row)
    return rows


def _local_classifier(metrics: dict):
    """The answer-class head with the local scorer, for an evaluation whose primary judge was ``local`` (the cached
    scorer, built from the shared data if missing); None for another judge (the rules' classes only)."""
    if str(metrics.get("harm_scorer", "")).split(",")[0].strip() != "local":
        return None
    from ..suites import find_data_dir

    try:
        data_dir = find_data_dir()
    except TasftError:
        data_dir = None
    return load_classifier(judges.load_judge("local", judges.JudgeOptions(data_dir=data_dir)))


def refresh_rule_flags(out: str | Path) -> dict:
    """Recompute the rule-based flags, the answer classes and every summary of a saved evaluation from its
    ``scores/`` files, keeping the harmfulness scores and quality metrics (no model): for when those rules, or the
    answer-class head, have improved."""
    from .report import render_single_markdown

    out = Path(out)
    path = out / "metrics.json"
    if not path.is_file():
        raise TasftError(f"{out}: no metrics.json (not a finished evaluation)")
    metrics = _read_json_file(path)
    if not isinstance(metrics.get("suites"), dict) or not all(isinstance(v, dict) for v in metrics["suites"].values()):
        raise TasftError(f"{path}: holds no per-suite metrics (not written by tasft evaluate)")
    # every file read (and found whole) before any is rewritten
    saved = {name: _read_scores(out / "scores" / f"{name}.jsonl") for name in metrics["suites"]}
    judged = [name for name, old in metrics["suites"].items() if old.get("kind") in JUDGED_KINDS]
    classifier = _local_classifier(metrics) if judged else None
    scored_rows = {}
    for name, old in metrics["suites"].items():
        scored = judges.rule_flags(saved[name])
        if name in judged:  # the answer classes follow the rules (and the head, from the local scorer's view)
            add_answer_classes(scored, classifier)
        write_jsonl_atomic(out / "scores" / f"{name}.jsonl", scored)
        scored_rows[name] = scored
        metrics["suites"][name] = {"kind": old.get("kind"), **suite_metrics(scored),
                                   **({"quality": old["quality"]} if "quality" in old else {})}
        if old.get("kind") in JUDGED_KINDS and (agreement := judge_agreement(scored)) is not None:
            metrics["suites"][name]["judge_agreement"] = agreement
        if any("judges" in r for r in scored):
            metrics["suites"][name]["judges"] = judges.judge_columns(scored)
    metrics["summary"] = summary_metrics(metrics["suites"])
    from .attacks import attack_summary

    if (attacks := attack_summary(metrics["suites"], scored_rows)) is not None:
        metrics["attacks"] = attacks
    add_intervals(metrics, scored_rows)
    metrics["rule_flags_refreshed"] = True
    write_json_atomic(path, metrics)
    write_text_atomic(out / "report.md", render_single_markdown(metrics))
    return metrics
