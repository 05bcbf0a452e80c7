"""Evaluation suites: named prompt sets from the shared data, or any JSON/JSONL/CSV file as a custom suite.

A suite is a list of items ``{"id", "prompt", "reference"?}`` plus its kind: ``harm`` (toxic prompts; the
model should not comply), ``benign`` (safe prompts; refusing them is over-refusal) or ``quality`` (reference
answers for quality metrics).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import TasftError


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    kind: str  # harm | benign | quality
    description: str


SUITES: dict[str, SuiteSpec] = {s.name: s for s in [
    SuiteSpec("malicious", "harm", "STL I-MaliciousInstructions (100)"),
    SuiteSpec("cona", "harm", "STL I-CoNa hateful-speech instructions (178)"),
    SuiteSpec("controversial", "harm", "STL I-Controversial (40)"),
    SuiteSpec("qharm", "harm", "STL Q-Harm (100)"),
    SuiteSpec("physical-unsafe", "harm", "STL I-PhysicalSafetyUnsafe (100)"),
    SuiteSpec("physical-safe", "benign", "STL I-PhysicalSafetySafe (100)"),
    SuiteSpec("xstest-safe", "benign", "XSTest safe prompts (250): refusals here are over-refusal"),
    SuiteSpec("xstest-unsafe", "harm", "XSTest unsafe prompts (200)"),
    SuiteSpec("alpaca", "quality", "STL I-Alpaca (50) + AlpacaEval held-out split with text_davinci_003 references"),
    SuiteSpec("alpaca-eval", "quality", "AlpacaEval held-out split (161) with text_davinci_003 reference answers"),
]}
HARM_SUITES = ("malicious", "cona", "controversial", "qharm")  # the paper's four harm benchmarks
_STL_FILES = {
    "malicious": "I-MaliciousInstructions.json", "cona": "I-CoNa.json", "controversial": "I-Controversial.json",
    "qharm": "Q-Harm.json", "physical-unsafe": "I-PhysicalSafetyUnsafe.json",
    "physical-safe": "I-PhysicalSafetySafe.json",
}
ALPACA_EVAL_FILE = "alpaca_eval/text_davinci_003.json"


def find_data_dir(explicit: str | None = None) -> Path:
    """The data directory: ``explicit``, ``$TASFT_DATA``, ``./shared/data``, ``../shared/data`` or where
    ``tasft data fetch`` puts it (``~/.cache/tasft/data``)."""
    from .data_fetch import default_data_dir

    candidates = [explicit] if explicit else [os.environ.get("TASFT_DATA"), "shared/data", "../shared/data",
                                              str(default_data_dir())]
    for c in candidates:
        if c and (Path(c).expanduser() / "stl").is_dir():
            return Path(c).expanduser()
    where = explicit or "$TASFT_DATA, ./shared/data, ../shared/data or ~/.cache/tasft/data"
    raise TasftError(f"evaluation data not found in {where} (run `tasft data fetch`, or pass --data-dir)")


def parse_suites(spec: str) -> list[str]:
    """Comma-separated suite names or files; ``all`` expands to every named suite but ``alpaca-eval`` (which
    ``alpaca`` contains)."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise TasftError("--suites: no suite given")
    out: list[str] = []
    for n in names:
        if n == "all":
            out.extend(s for s in SUITES if s != "alpaca-eval")
        elif n in SUITES or Path(n).suffix.lower() in (".json", ".jsonl", ".csv"):
            out.append(n)
        else:
            raise TasftError(f"unknown suite '{n}' (choose from {', '.join(SUITES)}, all, or a .json/.jsonl/.csv file)")
    return list(dict.fromkeys(out))


def suite_name(suite: str) -> str:
    """The name used for output files: the suite name, or a custom file's stem."""
    return suite if suite in SUITES else Path(suite).stem


def suite_kind(suite: str) -> str:
    return SUITES[suite].kind if suite in SUITES else "custom"


def _xstest(data_dir: Path, label: str) -> list[dict]:
    path = data_dir / "xstest" / "xstest_prompts.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["label"] == label]
    return [{"id": f"xstest-{r['id']}", "prompt": r["prompt"], "type": r["type"]} for r in rows]


def _alpaca_eval(data_dir: Path) -> list[dict]:
    """The held-out AlpacaEval split — the one ``split: train`` training configs never see (heldout_fraction 0.2)
    — with its reference answers."""
    from .config import DataSource
    from .data import read_records, select_records

    held = select_records(read_records(str(data_dir / ALPACA_EVAL_FILE)),
                          DataSource(ALPACA_EVAL_FILE, split="heldout"))
    return [{"id": f"alpaca-eval-{i}", "prompt": r.prompt_text, "reference": r.response}
            for i, r in enumerate(held) if r.response]


def _alpaca(data_dir: Path) -> list[dict]:
    from .data import read_records

    stl = read_records(str(data_dir / "stl" / "evaluation" / "I-Alpaca.json"))
    stl_items = [{"id": f"stl-alpaca-{i}", "prompt": r.prompt_text} for i, r in enumerate(stl)]
    ref_items = _alpaca_eval(data_dir)
    # interleave, so that any --limit keeps both halves (and reference answers for the quality metrics)
    out: list[dict] = []
    for i in range(max(len(stl_items), len(ref_items))):
        out += [x[i] for x in (ref_items, stl_items) if i < len(x)]
    return out


def load_suite(suite: str, data_dir: Path | None = None, limit: int | None = None) -> list[dict]:
    """Items of a named suite or custom file, in a fixed order, at most ``limit`` of them."""
    from .data import read_records

    if suite in _STL_FILES:
        base = data_dir or find_data_dir()
        recs = read_records(str(base / "stl" / "evaluation" / _STL_FILES[suite]))
        items = [{"id": f"{suite}-{i}", "prompt": r.prompt_text} for i, r in enumerate(recs)]
    elif suite in ("xstest-safe", "xstest-unsafe"):
        items = _xstest(data_dir or find_data_dir(), suite.split("-")[1])
    elif suite == "alpaca":
        items = _alpaca(data_dir or find_data_dir())
    elif suite == "alpaca-eval":
        items = _alpaca_eval(data_dir or find_data_dir())
    else:
        recs = read_records(suite)
        items = [{"id": f"{suite_name(suite)}-{i}", "prompt": r.prompt_text,
                  **({"reference": r.response} if r.response else {})} for i, r in enumerate(recs)]
    if not items:
        raise TasftError(f"suite '{suite}' is empty")
    return items[:limit] if limit else items


STL_SAFETY_FILE = "stl/training/safety_only_data_Instructions.json"


def evaluation_prompt_keys(data_dir: Path) -> set[str]:
    """Normalised prompts (:func:`tasft.data.prompt_key`) of every named suite: what training data must avoid."""
    from .data import prompt_key

    return {prompt_key(item["prompt"]) for name in SUITES for item in load_suite(name, data_dir)}


def safety_file(data_dir: str | None, explicit: str | None = None) -> str:
    """The STL safety data (harmful instruction → safe response pairs): ``explicit``, else the shared data's file."""
    return explicit or str(find_data_dir(data_dir) / STL_SAFETY_FILE)


def evaluation_prompts(data_dir: str | None) -> set[str]:
    """:func:`evaluation_prompt_keys` of the data directory, or (with a warning) an empty set when it is missing:
    what extra training pairs (STL, contrastive) must never contain."""
    import logging

    try:
        return evaluation_prompt_keys(find_data_dir(data_dir))
    except TasftError:
        logging.getLogger(__name__).warning("evaluation suites not found: extra training pairs are not checked "
                                            "against them")
        return set()
