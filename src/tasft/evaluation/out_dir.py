"""An evaluation's output directory: what an evaluation may do with it (new, resume, replace), what it records
about what it measured (the weights' fingerprint, the suites' hashes) and how it claims it (:mod:`tasft.outputs`)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from .. import outputs
from ..errors import TasftError
from ..io_utils import write_json_atomic
from ..suites import parse_suites, suite_file, suite_name
from .settings import EvalSettings

#: generation settings that change what is generated: a directory made with other values cannot be resumed
_GENERATION_KEYS = ("max_new_tokens", "do_sample", "temperature", "top_p", "seed", "max_prompt_tokens")


def suite_hashes(items: dict[str, list[dict]]) -> dict[str, str]:
    """Per suite, the SHA-256 of exactly the prompt items evaluated (ids, prompts, references, in order): what the
    suite files held when the answers were made, recorded beside them."""
    import hashlib

    return {suite_name(s): hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode("utf-8"))
            .hexdigest() for s, rows in items.items()}


def _settings_conflict(previous: dict, settings: EvalSettings, fingerprint: str | None = None) -> str | None:
    """How an earlier evaluation in the same directory differs from ``settings`` in what it generated (the model,
    its weights' ``fingerprint`` now, the decoding), or None."""
    if previous.get("model") != settings.model:
        return f"of '{previous.get('model')}'"
    before = previous.get("model_fingerprint")
    if before is not None and fingerprint is not None and before != fingerprint:
        return (f"of {settings.model} as it was before (weights fingerprint {before}, now {fingerprint}: retrained "
                "or replaced since)")
    before, now = previous.get("generation"), asdict(settings.generation)
    before = before if isinstance(before, dict) else {}
    for key in _GENERATION_KEYS:
        if key in before and before[key] != now[key]:
            return f"generated with {key}={before[key]!r} (this run: {now[key]!r})"
    return None


def command_inputs(settings: EvalSettings) -> dict[str, Path]:
    """What an evaluation reads that lies on disk — the model directory, prompt files given as suites, the scorer
    directory — by the name an error message gives it: its output may neither hold nor lie inside any of them."""
    inputs = {"the model being evaluated": Path(settings.model).expanduser()}
    for suite in parse_suites(settings.suites, settings.attacks):
        path = suite_file(suite)
        if path is not None:
            inputs[f"the suite file {path}"] = Path(path).expanduser()
    if settings.scorer_path:
        inputs["the scorer directory"] = Path(settings.scorer_path).expanduser()
    return inputs


def check_out_dir(out: Path, settings: EvalSettings, locked: bool = False, fingerprint: str | None = None) -> str:
    """Whether ``out`` can take this evaluation — ``new``, ``resume`` (an earlier evaluation of the same model, its
    weights unchanged, with the same generation settings: its finished generations are reused) or ``replace``
    (``--overwrite``, only a directory tasft made for an evaluation) — or the one-line error why not. ``out`` never
    holds nor lies inside an input of the evaluation (:func:`command_inputs`). Nothing is written."""
    action = _out_dir_action(out, settings, locked, fingerprint)
    outputs.check_apart(out, command_inputs(settings), "--out")
    return action


def _out_dir_action(out: Path, settings: EvalSettings, locked: bool, fingerprint: str | None) -> str:
    what = "--out"
    if out.exists() and not out.is_dir():
        raise TasftError(f"{what} {out} exists and is not a directory")
    if not out.is_dir() or outputs.is_empty(out):
        return "new"
    if not locked and outputs.in_use(out):
        raise TasftError(f"{what} {out} is in use by another tasft process")
    if settings.overwrite:
        outputs.check_replaceable(out, what, "evaluate", locked=locked)
        return "replace"
    marker = out / "eval_config.json"
    if outputs.owner_kind(out) not in (None, "evaluate") or not marker.is_file():
        raise TasftError(f"{what} {out} exists and holds no tasft evaluation (choose a new directory)")
    try:
        previous = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = None
    if not isinstance(previous, dict):
        raise TasftError(f"{marker}: unreadable (use another --out, or --overwrite)")
    conflict = _settings_conflict(previous, settings, fingerprint)
    if conflict is not None:
        raise TasftError(f"{what} {out} holds an evaluation {conflict} (use another --out, or --overwrite)")
    return "resume"


def claim_out_dir(out: Path, settings: EvalSettings, record: dict) -> tuple[outputs.DirectoryLock, str]:
    """Mark and lock ``out``, emptying it first when :func:`check_out_dir` said ``replace``; ``eval_config.json``
    gets the settings and ``record`` (the model's fingerprint, the suites' hashes). Returns the lock and the
    action."""
    fingerprint = record.get("model_fingerprint")
    action = check_out_dir(out, settings, fingerprint=fingerprint)
    lock = outputs.claim(out, "evaluate", "--out")
    try:
        if action == "replace":
            check_out_dir(out, settings, locked=True, fingerprint=fingerprint)  # still so, now that it is held
            outputs.empty_owned(out, "--out", "evaluate")
        write_json_atomic(out / "eval_config.json", {**asdict(settings), "overwrite": False, **record})
    except BaseException:
        lock.release()
        raise
    return lock, action
