"""Evaluation suites: named prompt sets from the shared data, or any JSON/JSONL/CSV file as a custom suite.

A suite is a list of items ``{"id", "prompt", "reference"?}`` plus its kind: ``harm`` (toxic prompts; the
model should not comply), ``benign`` (safe prompts; refusing them is over-refusal) or ``quality`` (reference
answers for quality metrics).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import TasftError


@dataclass(frozen=True)
class Suite:
    """One named suite: the only place that names it. ``load(data_dir)`` returns its items; ``files`` are the
    data files it reads (under the data directory: what ``tasft data fetch`` must provide); ``role`` places it in
    the headline numbers: ``harm`` (one of the harm-suite rates' suites), ``over-refusal`` (its refusal rate is
    the over-refusal), ``quality`` (the studies' quality suite), ``held-out quality`` (the full spec's)."""

    name: str
    kind: str  # harm | benign | quality
    description: str
    load: Callable[[Path], list[dict]]
    files: tuple[str, ...]
    role: str | None = None


def _stl(name: str, file: str) -> tuple[Callable[[Path], list[dict]], tuple[str, ...]]:
    path = f"stl/evaluation/{file}"

    def load(data_dir: Path) -> list[dict]:
        from .data.records import read_records

        records = read_records(str(data_dir / path))
        return [{"id": f"{name}-{i}", "prompt": r.prompt_text} for i, r in enumerate(records)]
    return load, (path,)


XSTEST_FILE = "xstest/xstest_prompts.csv"
ALPACA_EVAL_FILE = "alpaca_eval/text_davinci_003.json"
STL_ALPACA_FILE = "stl/evaluation/I-Alpaca.json"


def _xstest(label: str) -> tuple[Callable[[Path], list[dict]], tuple[str, ...]]:
    def load(data_dir: Path) -> list[dict]:
        with (data_dir / XSTEST_FILE).open(encoding="utf-8", newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r["label"] == label]
        return [{"id": f"xstest-{r['id']}", "prompt": r["prompt"], "type": r["type"]} for r in rows]
    return load, (XSTEST_FILE,)


def _alpaca_eval(data_dir: Path) -> list[dict]:
    """The held-out AlpacaEval split — the one ``split: train`` training configs never see (heldout_fraction 0.2)
    — with its reference answers."""
    from .config import DataSource
    from .data.records import read_records, select_records

    held = select_records(read_records(str(data_dir / ALPACA_EVAL_FILE)),
                          DataSource(ALPACA_EVAL_FILE, split="heldout"))
    return [{"id": f"alpaca-eval-{i}", "prompt": r.prompt_text, "reference": r.response}
            for i, r in enumerate(held) if r.response]


def _alpaca(data_dir: Path) -> list[dict]:
    from .data.records import read_records

    stl = read_records(str(data_dir / STL_ALPACA_FILE))
    stl_items = [{"id": f"stl-alpaca-{i}", "prompt": r.prompt_text} for i, r in enumerate(stl)]
    ref_items = _alpaca_eval(data_dir)
    # interleave, so that any --limit keeps both halves (and reference answers for the quality metrics)
    out: list[dict] = []
    for i in range(max(len(stl_items), len(ref_items))):
        out += [x[i] for x in (ref_items, stl_items) if i < len(x)]
    return out


SUITES: dict[str, Suite] = {s.name: s for s in [
    Suite("malicious", "harm", "STL I-MaliciousInstructions (100)",
              *_stl("malicious", "I-MaliciousInstructions.json"), role="harm"),
    Suite("cona", "harm", "STL I-CoNa hateful-speech instructions (178)", *_stl("cona", "I-CoNa.json"),
              role="harm"),
    Suite("controversial", "harm", "STL I-Controversial (40)", *_stl("controversial", "I-Controversial.json"),
              role="harm"),
    Suite("qharm", "harm", "STL Q-Harm (100)", *_stl("qharm", "Q-Harm.json"), role="harm"),
    Suite("physical-unsafe", "harm", "STL I-PhysicalSafetyUnsafe (100)",
              *_stl("physical-unsafe", "I-PhysicalSafetyUnsafe.json")),
    Suite("physical-safe", "benign", "STL I-PhysicalSafetySafe (100)",
              *_stl("physical-safe", "I-PhysicalSafetySafe.json")),
    Suite("xstest-safe", "benign", "XSTest safe prompts (250): refusals here are over-refusal", *_xstest("safe"),
              role="over-refusal"),
    Suite("xstest-unsafe", "harm", "XSTest unsafe prompts (200)", *_xstest("unsafe")),
    Suite("alpaca", "quality", "STL I-Alpaca (50) + AlpacaEval held-out split with text_davinci_003 references",
              _alpaca, (STL_ALPACA_FILE, ALPACA_EVAL_FILE), role="quality"),
    Suite("alpaca-eval", "quality", "AlpacaEval held-out split (161) with text_davinci_003 reference answers",
              _alpaca_eval, (ALPACA_EVAL_FILE,), role="held-out quality"),
]}


def with_role(role: str) -> tuple[str, ...]:
    """The named suites of one role, in registry order."""
    return tuple(name for name, suite in SUITES.items() if suite.role == role)


#: what a prompt file may be declared as, ``ROLE:FILE`` (``harm:my_prompts.jsonl``): it then enters the headline
#: numbers like the named suites of that role — the harm-suite rates, the over-refusal, the quality measures
FILE_ROLES = {"harm": "harm", "over-refusal": "benign", "quality": "quality"}  # role -> the kind it is scored as
HARM_SUITES = with_role("harm")  # the paper's four harm benchmarks: the harm_suites_* headline rates
OVER_REFUSAL_SUITE = with_role("over-refusal")[0]
# the studies' default suites (25 prompts each) and the full spec's (every harm prompt, held-out quality)
STUDY_SUITES = ",".join([*HARM_SUITES, OVER_REFUSAL_SUITE, *with_role("quality")])
SPEC_SUITES = ",".join([*HARM_SUITES, OVER_REFUSAL_SUITE, *with_role("held-out quality")])


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


ATTACK = "@"  # SUITE@TEMPLATE: a harm suite's prompts wrapped in a jailbreak template


def attack_templates() -> dict[str, dict]:
    """The static jailbreak templates (``data_files/attack_templates.json``: name → template, family, source)."""
    import json
    from importlib import resources

    text = resources.files("tasft").joinpath("data_files/attack_templates.json").read_text(encoding="utf-8")
    return {t["name"]: t for t in json.loads(text)["templates"]}


FILE_SUFFIXES = (".json", ".jsonl", ".csv")


def split_role(suite: str) -> tuple[str | None, str]:
    """(declared role or None, the rest) of a suite: ``harm:mine.jsonl`` → (``harm``, ``mine.jsonl``)."""
    role, sep, rest = suite.partition(":")
    return (role, rest) if sep and role in FILE_ROLES else (None, suite)


def suite_file(suite: str) -> str | None:
    """The prompt file a suite reads (its role and template taken off), or None for a named suite."""
    base = split_role(split_attack(suite)[0])[1]
    return None if base in SUITES else base


def _unknown_role(n: str) -> bool:
    """``word:FILE`` with a word that is no role (a typo such as ``harmful:mine.jsonl``)."""
    prefix, sep, rest = split_attack(n)[0].partition(":")
    word = prefix.replace("-", "_").isidentifier()
    return bool(sep) and word and prefix not in FILE_ROLES and Path(rest).suffix.lower() in FILE_SUFFIXES


def _base_suite(n: str) -> bool:
    role, rest = split_role(n)
    return (role is None and n in SUITES) or Path(rest).suffix.lower() in FILE_SUFFIXES


def parse_suites(given: str, attacks: str | None = None) -> list[str]:
    """Comma-separated suite names or files; ``all`` expands to every named suite but ``alpaca-eval`` (which
    ``alpaca`` contains). ``SUITE@TEMPLATE`` is a harm suite (or file) under a jailbreak template; ``attacks``
    (``all`` or comma-separated template names) adds every harm suite given under each of those templates."""
    names = [s.strip() for s in given.split(",")]
    if not any(names):
        raise TasftError("--suites: no suite given")
    if not all(names):
        raise TasftError(f"--suites {given!r}: an empty name between commas")
    out: list[str] = []
    for n in names:
        if n == "all":
            out.extend(s for s in SUITES if SUITES[s].role != "held-out quality")  # alpaca holds it
        elif _unknown_role(n):
            raise TasftError(f"--suites {n}: unknown role '{n.partition(':')[0]}' for a prompt file (choose from "
                             f"{', '.join(FILE_ROLES)}: ROLE:FILE)")
        elif ATTACK in n and Path(n).suffix.lower() not in FILE_SUFFIXES:
            base, _, template = n.rpartition(ATTACK)
            _check_attack(base, template, n)
            out.append(n)
        elif _base_suite(n):
            out.append(n)
        else:
            raise TasftError(f"unknown suite '{n}' (choose from {', '.join(SUITES)}, all, or a .json/.jsonl/.csv file, "
                             f"as {'/'.join(FILE_ROLES)}:FILE to count it in the headline numbers)")
    if attacks:
        chosen = list(attack_templates()) if attacks == "all" else [a.strip() for a in attacks.split(",") if a.strip()]
        harm = [s for s in out if ATTACK not in s and suite_kind(s) in ("harm", "custom")]
        if not harm:
            raise TasftError("--attacks: no harm suite (or prompt file) among the suites to wrap")
        for template in chosen:
            for base in harm:
                _check_attack(base, template, f"--attacks {template}")
                out.append(f"{base}{ATTACK}{template}")
    return list(dict.fromkeys(out))


def _check_attack(base: str, template: str, given: str) -> None:
    templates = attack_templates()
    if template not in templates:
        raise TasftError(f"{given}: unknown jailbreak template '{template}' (choose from {', '.join(templates)})")
    if not _base_suite(base) or suite_kind(base) not in ("harm", "custom"):
        raise TasftError(f"{given}: a jailbreak template wraps a harm suite or a prompt file, not '{base}'")


def split_attack(suite: str) -> tuple[str, str | None]:
    """(base suite, template or None) of a suite name."""
    base, sep, template = suite.rpartition(ATTACK)
    return (base, template) if sep and template in attack_templates() else (suite, None)


def absolute_suites(given: str) -> str:
    """``--suites`` text with every prompt file as an absolute path (role and template kept): what a file written
    elsewhere (an experiment file in another folder) must hold to name the same files."""
    out = []
    for item in (s.strip() for s in given.split(",")):
        base, template = split_attack(item)
        role, rest = split_role(base)
        if rest not in SUITES and Path(rest).suffix.lower() in FILE_SUFFIXES:
            rest = str(Path(rest).expanduser().resolve())
        out.append((f"{role}:" if role else "") + rest + (f"{ATTACK}{template}" if template else ""))
    return ",".join(out)


def suite_name(suite: str) -> str:
    """The name used for output files: the suite name, or a custom file's stem (``@template`` kept; a declared
    role is not part of it)."""
    base, template = split_attack(suite)
    base = split_role(base)[1]
    name = base if base in SUITES else Path(base).stem
    return f"{name}{ATTACK}{template}" if template else name


def suite_kind(suite: str) -> str:
    """``harm`` / ``benign`` / ``quality`` (a prompt file: as its declared role says), ``custom`` for an undeclared
    prompt file, ``attack`` for a suite under a template."""
    base, template = split_attack(suite)
    if template:
        return "attack"
    role, base = split_role(base)
    if role is not None:
        return FILE_ROLES[role]
    return SUITES[base].kind if base in SUITES else "custom"


def suite_role(suite: str) -> str | None:
    """Where a suite enters the headline numbers: a named suite's role, a prompt file's declared one (``harm:FILE``),
    None for an undeclared file and for a suite under a jailbreak template (those have their own tables)."""
    base, template = split_attack(suite)
    if template:
        return None
    role, base = split_role(base)
    return role if role is not None else (SUITES[base].role if base in SUITES else None)


def in_role(roles: dict[str, str | None], role: str) -> list[str]:
    """The suites (by output name) of ``roles`` that have ``role``: the named ones in registry order, then the
    declared files in their given order (so that adding a file never reorders what the named suites compute)."""
    named = [n for n in SUITES if roles.get(n) == role]
    return named + [n for n, r in roles.items() if r == role and n not in SUITES]


def registry_role(name: str) -> str | None:
    """The role of a suite by its output name when nothing else recorded it (an evaluation made before roles were
    recorded): a named suite's, else None."""
    return SUITES[name].role if name in SUITES else None


def recorded_roles(per_suite: dict[str, dict]) -> dict[str, str | None]:
    """Each suite's role as an evaluation's per-suite metrics record it (``role``), else :func:`registry_role`."""
    return {name: m.get("role", registry_role(name)) for name, m in per_suite.items()}


def load_suite(suite: str, data_dir: Path | None = None, limit: int | None = None) -> list[dict]:
    """Items of a named suite or custom file, in a fixed order, at most ``limit`` of them. Under a jailbreak
    template each item keeps its id (so it pairs with the plain suite), its prompt is the wrapped text and
    ``request`` the plain prompt (what the harm judge sees)."""
    from .data.records import read_records

    base, template = split_attack(suite)
    if template:
        text = attack_templates()[template]["template"]
        return [{**it, "prompt": text.replace("{prompt}", it["prompt"]), "request": it["prompt"], "attack": template}
                for it in load_suite(base, data_dir, limit)]
    if suite in SUITES:
        items = SUITES[suite].load(data_dir or find_data_dir())
    else:
        recs = read_records(split_role(suite)[1])
        items = [{"id": f"{suite_name(suite)}-{i}", "prompt": r.prompt_text,
                  **({"reference": r.response} if r.response else {})} for i, r in enumerate(recs)]
    if not items:
        raise TasftError(f"suite '{suite}' is empty")
    return items[:limit] if limit else items


STL_SAFETY_FILE = "stl/training/safety_only_data_Instructions.json"


def evaluation_prompt_keys(data_dir: Path) -> set[str]:
    """Normalised prompts (:func:`tasft.data.prompt_key`) of every named suite: what training data must avoid."""
    from .data.records import prompt_key

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
