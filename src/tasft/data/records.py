"""Records: read them (every format below), select them (exclude / audit / split / shuffle / limit), and the prompt
keys and ids that exclusion, audits and the harvest share. Formatting and tokenising is :mod:`tasft.data.batches`.

Accepted record shapes (JSON list, JSONL, CSV or a Hugging Face dataset):
``{"prompt", "response"}`` (also ``completion``), Alpaca ``{"instruction", "input", "output"}``, chat
``{"messages": [...]}`` (the last assistant turn is the response), plain strings, and STL's
``{"instructions": [...]}`` files as prompt-only sets. Every record keeps its origin (``file:line``) so
errors can name it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..config import DataSource
from ..errors import TasftError

Prompt = str | list[dict]


@dataclass
class Record:
    """One example: ``prompt`` (text, or chat messages before the answer) and optional ``response``."""

    prompt: Prompt
    response: str | None
    origin: str

    @property
    def prompt_text(self) -> str:
        """The prompt as plain text (the user turns joined), for keys, dedup and display."""
        if isinstance(self.prompt, str):
            return self.prompt
        return "\n".join(str(m.get("content", "")) for m in self.prompt if m.get("role") != "system")


# ------------------------------------------------------------------------------------------ reading
def resolve_path(path: str) -> Path:
    """``demo:NAME`` → the packaged demo file; anything else → a filesystem path."""
    if path.startswith("demo:"):
        name = path.split(":", 1)[1]
        ref = resources.files("tasft") / "demo_data" / name
        return Path(str(ref))
    return Path(path).expanduser()


def parse_record(obj: Any, origin: str) -> Record:
    """One example from a row: prompt/response (or completion, output, answer), instruction/input/output, chat
    ``messages`` (the last assistant turn the response), or TRL's conversational prompt/completion message lists;
    a bad row is a one-line error naming ``origin``."""
    if isinstance(obj, str):
        if not obj.strip():
            raise TasftError(f"{origin}: empty prompt")
        return Record(obj, None, origin)
    if not isinstance(obj, dict):
        raise TasftError(f"{origin}: expected an object or a string, got {type(obj).__name__}")
    if "messages" in obj:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
            raise TasftError(f"{origin}: 'messages' must be a non-empty list of {{role, content}} objects")
        if msgs[-1].get("role") == "assistant":
            return Record(msgs[:-1], _text(msgs[-1].get("content"), origin), origin)
        return Record(msgs, None, origin)
    if "instruction" in obj:
        prompt = _text(obj["instruction"], origin)
        extra = obj.get("input")
        if isinstance(extra, str) and extra.strip():
            prompt = f"{prompt}\n\n{extra}"
        return Record(prompt, _optional_text(obj.get("output"), origin), origin)
    if isinstance(obj.get("prompt"), list):  # TRL's conversational prompt/completion: lists of messages
        msgs, completion = obj["prompt"], obj.get("completion")
        if not msgs or not all(isinstance(m, dict) for m in msgs):
            raise TasftError(f"{origin}: 'prompt' must be text or a non-empty list of {{role, content}} objects")
        if isinstance(completion, list):
            completion = completion[-1].get("content") if completion and isinstance(completion[-1], dict) else None
        return Record(msgs, _optional_text(completion, origin), origin)
    for key in ("prompt", "question", "query"):
        if key in obj:
            prompt = _text(obj[key], origin)
            for rkey in ("response", "completion", "output", "answer"):
                if rkey in obj:
                    return Record(prompt, _optional_text(obj[rkey], origin), origin)
            return Record(prompt, None, origin)
    keys = ", ".join(sorted(map(str, obj))[:6])
    raise TasftError(
        f"{origin}: record has no prompt (expected prompt/response, instruction/input/output or messages; "
        f"got keys {keys})"
    )


def _text(value: Any, origin: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TasftError(f"{origin}: empty or non-text prompt")
    return value


def _optional_text(value: Any, origin: str) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    if not isinstance(value, str):
        raise TasftError(f"{origin}: response must be text, got {type(value).__name__}")
    return value if value.strip() else None


def _read_json(path: Path, text: str) -> list[Record]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TasftError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from None
    if isinstance(data, dict):
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        key = "instructions" if "instructions" in lists else next(iter(lists), None)
        if key is None or len(lists) > 1 and key != "instructions":
            raise TasftError(f"{path}: expected a list of records or an object with one list of records")
        data = lists[key]
        inputs = lists.get("inputs") if key == "instructions" else None
        if inputs and len(inputs) == len(data):  # STL files: parallel "instructions" and "inputs" lists
            data = [{"instruction": i, "input": x} for i, x in zip(data, inputs)]
    if not isinstance(data, list):
        raise TasftError(f"{path}: expected a list of records")
    return [parse_record(obj, f"{path}:record {i + 1}") for i, obj in enumerate(data)]


def _read_jsonl(path: Path, text: str) -> list[Record]:
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TasftError(f"{path}:{lineno}: malformed JSON line ({exc.msg})") from None
        records.append(parse_record(obj, f"{path}:{lineno}"))
    return records


def _read_csv(path: Path, text: str) -> list[Record]:
    rows = csv.DictReader(text.splitlines())
    if not rows.fieldnames:
        raise TasftError(f"{path}: CSV file has no header row")
    return [parse_record(dict(row), f"{path}:{i + 2}") for i, row in enumerate(rows)]


def _read_hf(spec: str) -> list[Record]:
    name, _, split = spec.partition(":")
    try:
        import datasets

        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as exc:  # noqa: BLE001 - any loader failure becomes one line
        first = str(exc).splitlines()[0][:160] if str(exc) else exc.__class__.__name__
        raise TasftError(f"hf:{spec}: cannot load Hugging Face dataset ({first})") from None
    return [parse_record(dict(row), f"hf:{spec}:row {i + 1}") for i, row in enumerate(ds)]


def read_records(path: str) -> list[Record]:
    """Read every record of a JSON / JSONL / CSV file, a ``demo:`` file or an ``hf:ID[:SPLIT]`` dataset."""
    if path.startswith("hf:"):
        return _read_hf(path[3:])
    p = resolve_path(path)
    if not p.exists():
        raise TasftError(f"{path}: data file not found")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TasftError(f"{path}: cannot read data file ({exc.__class__.__name__})") from None
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(p, text)
    if suffix == ".json":
        return _read_json(p, text)
    if suffix == ".csv":
        return _read_csv(p, text)
    raise TasftError(f"{path}: unsupported data format '{suffix}' (use .json, .jsonl, .csv or hf:ID)")


# ---------------------------------------------------------------------------------------- selection
def prompt_key(text: str) -> str:
    """Normalised prompt for deduplication: lower case, single spaces, no surrounding punctuation."""
    return re.sub(r"\s+", " ", text.lower()).strip(" \t\n.?!\"'")


def prompt_id(text: str) -> str:
    """A prompt's id in audit files: the first 16 hex digits of SHA-256 of :func:`prompt_key` (no text kept)."""
    return hashlib.sha256(prompt_key(text).encode("utf-8")).hexdigest()[:16]


#: verdicts of a prompt audit (``tasft audit``; a data source's ``audit:`` file)
VERDICTS = ("harmful", "borderline", "benign")


def read_verdicts(path: str | Path) -> dict[str, str]:
    """``{prompt_id: verdict}`` from an audit CSV (columns ``prompt_id``, ``verdict``; others are kept for people)."""
    path = Path(path)
    if not path.is_file():
        raise TasftError(f"audit: {path} does not exist")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"prompt_id", "verdict"} <= set(rows[0]):
        raise TasftError(f"audit: {path} needs the columns prompt_id and verdict")
    out = {}
    for i, row in enumerate(rows, start=2):
        if row["verdict"] not in VERDICTS:
            raise TasftError(f"audit: {path} line {i}: verdict {row['verdict']!r} is not one of {', '.join(VERDICTS)}")
        out[row["prompt_id"]] = row["verdict"]
    return out


def heldout_bucket(text: str) -> float:
    """A stable pseudo-random number in [0, 1) from the prompt (SHA-256), independent of file order."""
    digest = hashlib.sha256(prompt_key(text).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _exclusion_keys(paths: Iterable[str]) -> set[str]:
    keys: set[str] = set()
    for raw in paths:
        p = resolve_path(raw)
        files = sorted(p.glob("*.json*")) + sorted(p.glob("*.csv")) if p.is_dir() else [p]
        for f in files:
            keys.update(prompt_key(r.prompt_text) for r in read_records(str(f)))
    return keys


def select_records(records: list[Record], src: DataSource) -> list[Record]:
    """Apply ``exclude`` → ``audit`` → ``split`` → ``shuffle_seed`` → ``limit`` (in that order), deterministically."""
    if src.exclude:
        banned = _exclusion_keys(src.exclude)
        records = [r for r in records if prompt_key(r.prompt_text) not in banned]
    if src.audit:
        unknown = sorted(set(src.audit_drop) - set(VERDICTS))
        if unknown:
            raise TasftError(f"audit_drop: {', '.join(unknown)} is not a verdict ({', '.join(VERDICTS)})")
        verdicts = read_verdicts(src.audit)
        records = [r for r in records if verdicts.get(prompt_id(r.prompt_text)) not in src.audit_drop]
    # drop exact duplicate prompts (keep the first), so splits and counts are honest
    seen: set[str] = set()
    unique = []
    for r in records:
        key = prompt_key(r.prompt_text)
        if key not in seen:
            seen.add(key)
            unique.append(r)
    records = unique
    if src.split != "all":
        held = src.split == "heldout"
        records = [r for r in records if (heldout_bucket(r.prompt_text) < src.heldout_fraction) == held]
    if src.shuffle_seed is not None:
        records = list(records)
        random.Random(src.shuffle_seed).shuffle(records)
    if src.limit is not None:
        records = records[: src.limit]
    return records


def load_source(src: DataSource, name: str, need_response: bool) -> list[Record]:
    """Read and select a data source; error if it ends up empty or lacks responses where needed."""
    records = read_records(src.path)
    if need_response and src.missing_response == "skip":
        records = [r for r in records if r.response is not None]
    records = select_records(records, src)
    if not records:
        raise TasftError(f"{name}: no records in {src.path} (after split/exclude/limit)")
    if need_response:
        for r in records:
            if r.response is None:
                raise TasftError(f"{r.origin}: record has no response ({name} needs prompt/response pairs)")
    return records
