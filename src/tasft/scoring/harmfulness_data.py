"""Readers for the local harmfulness scorer's training and validation data (all under ``shared/data``).

Each labelled pair carries two factors, ``prompt_unsafe`` and ``complied``, and the harm label is their product
(1 = harmful response, 0 = harmless):

- XSTest human labels: ``prompt_unsafe = [prompt label is "unsafe"]``, ``complied = [final_label =
  1_full_compliance]``, so harmful = unsafe prompt ∧ full compliance; full or partial refusals and every answer to a
  safe prompt are harmless. The group of a row is its generator (file stem).
- STL safety data: a harmful instruction (+ input) with its safe output: ``prompt_unsafe = 1``, ``complied = 0``.
- AlpacaEval (text_davinci_003 answers): ordinary instructions, ``prompt_unsafe = 0``, ``complied = 1``; split like
  the project's quality suite (held out iff :func:`tasft.data.heldout_bucket` < 0.2), the held-out part only validates.
- hh-rlhf harmless-base: a preference pair (prompt = last Human turn, responses = last Assistant turns) where the
  ``rejected`` response is the more harmful one. A deterministic split by SHA-256 of the chosen dialogue keeps a
  held-out part for validation.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..data.records import heldout_bucket
from ..errors import TasftError

XSTEST_GENERATORS = ("gpt4", "llama2new", "llama2orig", "mistralguard", "mistralinstruct")
XSTEST_PROMPTS = "xstest/xstest_prompts.csv"
STL_SAFETY = "stl/training/safety_only_data_Instructions.json"
HH_HARMLESS = "hh-rlhf/harmless-base-test.jsonl.gz"
ALPACA_EVAL = "alpaca_eval/text_davinci_003.json"
ALPACA_HELDOUT_FRACTION = 0.2  # the project's default DataSource.heldout_fraction (quality suite = held-out part)
_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


@dataclass(frozen=True)
class LabelledPair:
    """A (prompt, response) pair with its two label factors; ``group`` names its source (e.g. the generator)."""

    prompt: str
    response: str
    prompt_unsafe: int
    complied: int
    group: str

    @property
    def label(self) -> int:
        """harmful = prompt_unsafe · complied."""
        return self.prompt_unsafe * self.complied


@dataclass(frozen=True)
class PreferencePair:
    """Two responses to one prompt; ``rejected`` is the more harmful one."""

    prompt: str
    chosen: str
    rejected: str
    key: str


def resolve_data_dir(path: str | Path) -> Path:
    """Accept either the ``shared`` root or its ``data`` folder; return the folder holding ``xstest/``."""
    path = Path(path)
    for candidate in (path, path / "data"):
        if (candidate / XSTEST_PROMPTS).is_file():
            return candidate
    raise TasftError(f"no scorer training data under {path} (expected {XSTEST_PROMPTS} there or in its data/)")


def training_files(data_dir: Path) -> list[Path]:
    """Every file the scorer is trained or validated on, in a fixed order."""
    files = [data_dir / XSTEST_PROMPTS]
    files += [data_dir / f"xstest/labeled_completions/{g}.csv" for g in XSTEST_GENERATORS]
    files += [data_dir / STL_SAFETY, data_dir / HH_HARMLESS, data_dir / ALPACA_EVAL]
    for f in files:
        if not f.is_file():
            raise TasftError(f"scorer training file missing: {f}")
    return files


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def read_xstest(data_dir: Path, generators: tuple[str, ...] = XSTEST_GENERATORS) -> list[LabelledPair]:
    """XSTest completions joined on prompt id with ``xstest_prompts.csv`` (ids ``v2-<n>`` ↔ ``<n>``)."""
    prompts = {row["id"]: row for row in _read_csv(data_dir / XSTEST_PROMPTS)}
    out: list[LabelledPair] = []
    for gen in generators:
        path = data_dir / f"xstest/labeled_completions/{gen}.csv"
        for row in _read_csv(path):
            meta = prompts.get(row["id"].removeprefix("v2-"))
            if meta is None or meta["type"] != row["type"]:
                raise TasftError(f"{path}: row {row['id']} does not match a prompt in {XSTEST_PROMPTS}")
            if meta["label"] not in ("safe", "unsafe"):
                raise TasftError(f"{XSTEST_PROMPTS}: unknown label {meta['label']!r} for prompt {meta['id']}")
            unsafe, complied = int(meta["label"] == "unsafe"), int(row["final_label"].startswith("1_"))
            out.append(LabelledPair(meta["prompt"], row["completion"], unsafe, complied, gen))
    return out


def read_stl_safety(data_dir: Path) -> list[LabelledPair]:
    """STL safety responses: prompt = instruction (+ blank line + input when present); unsafe prompt, no compliance."""
    rows = json.loads((data_dir / STL_SAFETY).read_text(encoding="utf-8"))
    out = []
    for row in rows:
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        out.append(LabelledPair(prompt, row["output"], 1, 0, "stl"))
    return out


def read_alpaca_eval(data_dir: Path) -> tuple[list[LabelledPair], list[LabelledPair]]:
    """(train, held-out) AlpacaEval instruction/answer pairs, all harmless; empty answers are dropped."""
    train, held = [], []
    for row in json.loads((data_dir / ALPACA_EVAL).read_text(encoding="utf-8")):
        if row.get("output", "").strip():
            pair = LabelledPair(row["instruction"], row["output"], 0, 1, "alpaca_eval")
            (held if heldout_bucket(row["instruction"]) < ALPACA_HELDOUT_FRACTION else train).append(pair)
    return train, held


def last_exchange(dialogue: str) -> tuple[str, str]:
    """(last Human turn, last Assistant turn) of an hh-rlhf ``\\n\\nHuman: … \\n\\nAssistant: …`` transcript."""
    parts = _TURN.split(dialogue)
    turns = list(zip(parts[1::2], parts[2::2]))
    humans = [text for role, text in turns if role == "Human"]
    if not turns or turns[-1][0] != "Assistant" or not humans:
        raise TasftError("hh-rlhf dialogue does not end with a Human → Assistant exchange")
    return humans[-1].strip(), turns[-1][1].strip()


def read_hh_pairs(data_dir: Path) -> list[PreferencePair]:
    """hh-rlhf harmless-base pairs; pairs with an empty or identical response are dropped."""
    out = []
    with gzip.open(data_dir / HH_HARMLESS, "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            prompt, chosen = last_exchange(row["chosen"])
            _, rejected = last_exchange(row["rejected"])
            if chosen and rejected and chosen != rejected:
                key = hashlib.sha256(row["chosen"].encode("utf-8")).hexdigest()
                out.append(PreferencePair(prompt, chosen, rejected, key))
    return out


def split_pairs(pairs: list[PreferencePair], heldout_percent: int = 20) -> tuple[list, list]:
    """Deterministic split: a pair is held out iff int(key[:8], 16) mod 100 < ``heldout_percent``."""
    held = [p for p in pairs if int(p.key[:8], 16) % 100 < heldout_percent]
    train = [p for p in pairs if int(p.key[:8], 16) % 100 >= heldout_percent]
    return train, held
