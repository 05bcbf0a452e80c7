"""A study's finished points without their generated text: what can be committed, shared or archived, and restored.

``tasft experiment STUDY --config C --out results/X --export DIR`` writes, per finished point, the training run's
``config.yaml``, ``metrics.json`` and ``log.jsonl`` and the evaluation's ``metrics.json`` and ``scores/*.jsonl``
**with only the fields of** :data:`SCORE_FIELDS` (per-answer judge scores and flags, rule flags, reference-NLL sums,
the prompt id — never a prompt, an answer or a reference text), plus the study's ``experiment.json``. Copying DIR's
contents back into a study directory (``cp -r DIR/. results/X/``) makes those points finished there: the runner
neither retrains nor re-evaluates them, tables, paired differences and plots are rebuilt from them, and sibling
studies share them, as if they had run in place (no weights: they cannot be evaluated again or resumed).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..data.records import prompt_id
from ..errors import TasftError
from ..io_utils import read_jsonl, write_json_atomic, write_jsonl_atomic

#: the per-answer fields that are kept (everything a table, an interval or a paired test reads; no text)
SCORE_FIELDS = ("id", "suite", "kind", "template", "seed", "harm_score", "harmful", "judges", "refusal_score",
                "refusal", "non_english", "degenerate", "answer_class", "ref_nll_sum", "ref_nll_tokens")
RUN_FILES = ("config.yaml", "metrics.json", "log.jsonl")


def text_free(row: dict) -> dict:
    """A score row reduced to :data:`SCORE_FIELDS`, with the prompt's id (a hash) in place of its text; a row that
    is already text-free (a restored point exported again) keeps the id it carries."""
    out = {k: row[k] for k in SCORE_FIELDS if k in row}
    prompt = row.get("request") if isinstance(row.get("request"), str) else row.get("prompt")
    if isinstance(prompt, str):
        out["prompt_id"] = prompt_id(prompt)
    elif isinstance(row.get("prompt_id"), str):
        out["prompt_id"] = row["prompt_id"]
    return out


def export_points(out: Path, dest: Path) -> int:
    """Write the finished points of study directory ``out`` to ``dest`` (see the module docstring); returns how
    many runs and evaluations were written. ``dest`` must not be inside ``out`` (nor ``out`` itself)."""
    out, dest = Path(out), Path(dest)
    if not (out / "experiment.json").is_file():
        raise TasftError(f"{out}: not a study directory (no experiment.json)")
    if dest.resolve() == out.resolve() or out.resolve() in dest.resolve().parents:
        raise TasftError(f"--export {dest}: choose a directory outside the study directory {out}")
    count = 0
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(out / "experiment.json", dest / "experiment.json")
    for run in sorted((out / "runs").glob("*/metrics.json")):
        target = dest / "runs" / run.parent.name
        target.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            if (run.parent / name).is_file():
                shutil.copy2(run.parent / name, target / name)
        count += 1
    for evaluation in sorted((out / "evals").glob("*/metrics.json")):
        target = dest / "evals" / evaluation.parent.name
        metrics = json.loads(evaluation.read_text(encoding="utf-8"))
        write_json_atomic(target / "metrics.json", metrics)
        for scores in sorted((evaluation.parent / "scores").glob("*.jsonl")):
            write_jsonl_atomic(target / "scores" / scores.name, [text_free(r) for r in read_jsonl(scores)])
        count += 1
    return count
