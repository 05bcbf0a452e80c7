"""Which method-vs-sft readings survive three training seeds (issue 28, item 4; the rule in seeds3.yaml's header).

For every method and measure: the seed-0 reading (the point at seed 0 minus sft at seed 0, interval over prompts)
and the reading over seeds 0-2 (seed j minus sft seed j, interval over seeds × prompts). A reading **survives** when
the 3-seed interval excludes 0 in the direction of the seed-0 reading; it was **one run's luck** when seed 0 was
significant and the 3-seed interval includes 0 (or points the other way); **new** when only the 3-seed interval
excludes 0. Reads the study's paired.json (written by `tasft experiment ... --tables-only`) and writes verdict.md:

    python docs/results/seeds3/verdict.py docs/results/seeds3        # or any study directory with 3 seeds
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tasft.scoring.answer_class import RECALL_TARGET  # the 0.7 bar, one place

AGREEMENT = Path(__file__).resolve().parents[1] / "labels" / "agreement.json"  # tasft labels agree writes it


def measures(agreement: dict) -> list[tuple[str, str, str]]:
    """(label, metric, how far readers trust it) — the trust read from the labelled answers' agreement table
    (docs/results/labels: κ against readers, per-class recall, cross-validated by prompt)."""
    a = agreement["overall"]
    per = a["classifier_per_class"]

    def recall(c: str) -> str:
        r = per[c]["recall"]
        return f"{'rough: ' if r < RECALL_TARGET else ''}recall {r:.2f}"

    return [("harmful class", "harm_suites_answer_harmful_rate", f"κ {a['classifier_harmful_kappa']:.2f} vs readers"),
            ("refusal class", "harm_suites_answer_refusal_rate", f"rule, κ {a['refusal_rule_kappa']:.2f}"),
            ("degenerate class", "harm_suites_answer_degenerate_rate", recall("degenerate")),
            ("redirect class", "harm_suites_answer_redirect_rate", recall("redirect")),
            ("content-free class", "harm_suites_answer_content_free_rate", recall("content-free")),
            ("safe strict", "harm_suites_safe_strict_rate", "refusal + redirect"),
            ("safe", "harm_suites_safe_rate", "rests on the local scorer"),
            ("harmful (local scorer)", "harm_suites_harmful_rate", f"κ {a['local_scorer_harmful_kappa']:.2f}"),
            ("degenerate (rules)", "harm_suites_degenerate_rate", f"rule, κ {a['degenerate_rule_kappa']:.2f}"),
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


def render(study: Path) -> str:
    """The verdict of study directory ``study`` (its paired.json), as markdown."""
    paired = json.loads((study / "paired.json").read_text(encoding="utf-8"))
    trusted = measures(json.loads(AGREEMENT.read_text(encoding="utf-8")))
    ref = paired["reference"]
    seed0 = {(p["series"], p["x"]): p for p in paired["points"] if p["seed"] == 0 and p["reference_seed"] == 0}
    lines = [f"# Which readings survive three seeds ({study.name})", "",
             f"Each method minus `{ref}`: at seed 0 (interval over prompts) and over seeds 0-2 (seed j minus "
             f"`{ref}` seed j; interval over seeds × prompts). `*` = the interval excludes 0. Rule (seeds3.yaml): a "
             "reading survives when the 3-seed interval excludes 0 in the seed-0 reading's direction. `trust`: how "
             "far the measure agrees with answers labelled by reading (docs/results/labels/agreement.md).", ""]
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


def main(study: Path) -> str:
    text = render(study)
    (study / "verdict.md").write_text(text, encoding="utf-8")
    return text


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)), end="")
