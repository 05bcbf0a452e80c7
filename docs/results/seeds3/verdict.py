"""Which method-vs-sft readings survive three training seeds (issue 28, item 4; the rule in seeds3.yaml's header).

For every method and measure: the seed-0 reading (the point at seed 0 minus sft at seed 0, interval over prompts)
and the reading over seeds 0-2 (seed j minus sft seed j, interval over seeds × prompts). A reading **survives** when
the 3-seed interval excludes 0 in the direction of the seed-0 reading; it was **one run's luck** when seed 0 was
significant and the 3-seed interval includes 0 (or points the other way); **new** when only the 3-seed interval
excludes 0. Reads the study's paired.json (written by `tasft experiment ... --tables-only`) and writes verdict.md:

    python docs/results/seeds3/verdict.py docs/results/seeds3        # or any study directory with 3 seeds
    python docs/results/seeds3/verdict.py docs/results/gemma_seeds3 docs/results/labels/gemma_trained/agreement.json

The optional second argument is the agreement table the `trust` column reads (default: the labels the answer-class
head was fitted on, cross-validated; for Gemma, the held-out answers of trained Gemma models).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tasft.evaluation.agreement import shown as _k
from tasft.scoring.answer_class import RECALL_TARGET  # the 0.7 bar, one place

AGREEMENT = Path(__file__).resolve().parents[1] / "labels" / "agreement.json"  # tasft labels agree writes it


def measures(agreement: dict) -> list[tuple[str, str, str]]:
    """(label, metric, how far readers trust it) — the trust read from the labelled answers' agreement table
    (docs/results/labels: κ against readers, per-class recall; cross-validated by prompt, or for held-out labels
    the head as it is)."""
    a = agreement["overall"]
    per = a["classifier_per_class"]

    def recall(c: str) -> str:
        r = per[c]["recall"]
        if r is None:
            return "none labelled"
        return f"{'rough: ' if r < RECALL_TARGET else ''}recall {r:.2f}"

    return [("harmful class", "harm_suites_answer_harmful_rate", f"κ {_k(a['classifier_harmful_kappa'])} vs readers"),
            ("refusal class", "harm_suites_answer_refusal_rate", f"rule, κ {_k(a['refusal_rule_kappa'])}"
             if a["labels"].get("refusal") else "rule; no refusal among the labels"),
            ("degenerate class", "harm_suites_answer_degenerate_rate", recall("degenerate")),
            ("redirect class", "harm_suites_answer_redirect_rate", recall("redirect")),
            ("content-free class", "harm_suites_answer_content_free_rate", recall("content-free")),
            ("safe strict", "harm_suites_safe_strict_rate", "refusal + redirect"),
            ("safe", "harm_suites_safe_rate", "rests on the local scorer"),
            ("harmful (local scorer)", "harm_suites_harmful_rate", f"κ {_k(a['local_scorer_harmful_kappa'])}"),
            ("degenerate (rules)", "harm_suites_degenerate_rate", f"rule, κ {_k(a['degenerate_rule_kappa'])}"),
            ("over-refusal", "over_refusal", "refusal rule on XSTest safe"),
            ("reference NLL", "reference_nll", "teacher-forced, exact")]


def _sign(d: dict | None) -> int:
    """+1 / −1 when the interval excludes 0 above / below, 0 when it includes 0 (or there is none)."""
    if not d:
        return 0
    lo, hi = d["ci95"]
    return 1 if lo > 0 else -1 if hi < 0 else 0


def reading(one: dict | None, three: dict | None) -> str:
    a, b = _sign(one), _sign(three)
    if three is None:
        return "–"
    if a and a == b:
        return "survives"
    if a and not b:
        return "one run's luck"
    if a and b == -a:
        return "reversed"
    return "new" if b else "no effect either way"


def cell(d: dict | None) -> str:
    if not d:
        return "–"
    lo, hi = d["ci95"]
    return f"{d['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}]" + ("*" if _sign(d) else "")


def render(study: Path, agreement: Path = AGREEMENT) -> str:
    """The verdict of study directory ``study`` (its paired.json), as markdown; ``trust`` from ``agreement``."""
    paired = json.loads((study / "paired.json").read_text(encoding="utf-8"))
    trusted = measures(json.loads(agreement.read_text(encoding="utf-8")))
    ref = paired["reference"]
    seed0 = {(p["series"], p["x"]): p for p in paired["points"] if p["seed"] == 0 and p["reference_seed"] == 0}
    lines = [f"# Which readings survive three seeds ({study.name})", "",
             f"Each method minus `{ref}`: at seed 0 (interval over prompts) and over seeds 0-2 (seed j minus "
             f"`{ref}` seed j; interval over seeds × prompts). `*` = the interval excludes 0. Rule (seeds3.yaml): a "
             "reading survives when the 3-seed interval excludes 0 in the seed-0 reading's direction. `trust`: how "
             f"far the measure agrees with answers labelled by reading ({_shown(agreement)}).", ""]
    header = ["method", "measure", "trust", "seed 0", "seeds 0-2", "reading"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for p in paired.get("seeded", []):
        one = seed0.get((p["series"], p["x"]), {})
        for label, key, trust in trusted:
            if key in p or key in one:
                lines.append(f"| {p['series']} | {label} | {trust} | {cell(one.get(key))} | {cell(p.get(key))} | "
                             f"{reading(one.get(key), p.get(key))} |")
    spread = paired.get("reference_spread")
    if spread:
        lines += ["", f"`{ref}`'s own spread across seeds {spread['seeds']} (sd of the per-seed values):", ""]
        for label, key, _trust in trusted:
            if key in spread:
                values = ", ".join(f"{v:.3f}" for v in spread[key]["per_seed"])
                sd = spread[key]["seed_sd"]
                lines.append(f"- {label}: {values} (sd {sd:.3f})" if sd is not None else f"- {label}: {values}")
    return "\n".join(lines) + "\n"


def _shown(agreement: Path) -> str:
    """The agreement table's markdown file, named from the repository root when it lies inside it."""
    md = agreement.resolve().with_suffix(".md")
    root = Path(__file__).resolve().parents[3]
    return str(md.relative_to(root)) if root in md.parents else str(md)


def main(study: Path, agreement: Path = AGREEMENT) -> str:
    text = render(study, agreement)
    (study / "verdict.md").write_text(text, encoding="utf-8")
    return text


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent),
               Path(sys.argv[2]) if len(sys.argv) > 2 else AGREEMENT), end="")
