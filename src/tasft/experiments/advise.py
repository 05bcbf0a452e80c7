"""A plain recommendation from a comparison's paired differences (``tasft compare``): which method kept the most
safety against plain SFT within the user's quality budget, how sure that is, and what the judge can tell.

The rule, fixed before any comparison runs: a method *kept more safety* when its harm-suite harmful share (the
answer class read by the head trained on labelled answers; the harm judge's flag where there are no classes) is
lower than plain SFT's with a paired 95 % interval that excludes 0 — over seeds × prompts with several seeds, over
prompts with one. It is *within the budget* when its reference NLL is at most (1 + budget) × SFT's (point
estimate). Among the methods that do both, the largest cut wins; with none, the answer says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

HARM_CLASS = "harm_suites_answer_harmful_rate"
HARM_FLAG = "harm_suites_harmful_rate"


@dataclass
class Reading:
    """One method against plain SFT."""

    series: str
    harm_key: str
    harm: dict
    safe_strict: dict | None
    over_refusal: dict | None
    nll: dict | None
    nll_relative: float | None  # reference NLL difference / SFT's reference NLL

    @property
    def safer(self) -> bool:
        return bool(self.harm.get("significant")) and self.harm["difference"] < 0

    def within(self, budget: float) -> bool:
        return self.nll_relative is None or self.nll_relative <= budget


def _entries(paired: dict[str, Any]) -> list[dict]:
    """The method-vs-reference entries: across seeds when the comparison has several, else seed 0's."""
    return paired.get("seeded") or [p for p in paired.get("points", []) if p.get("seed", 0) == 0]


def readings(paired: dict[str, Any], reference_nll: float | None) -> list[Reading]:
    """Every method's reading against the reference series (``paired.json`` of a study with ``reference: sft``)."""
    out = []
    for entry in _entries(paired):
        harm_key = HARM_CLASS if entry.get(HARM_CLASS) else HARM_FLAG
        if not entry.get(harm_key):
            continue
        nll = entry.get("reference_nll")
        relative = nll["difference"] / reference_nll if nll and reference_nll else None
        out.append(Reading(entry["series"], harm_key, entry[harm_key], entry.get("harm_suites_safe_strict_rate"),
                           entry.get("over_refusal"), nll, relative))
    return out


def choose(found: list[Reading], budget: float) -> Reading | None:
    """The method that kept significantly more safety within the budget, the largest cut first; None if none."""
    fit = [r for r in found if r.safer and r.within(budget)]
    return min(fit, key=lambda r: r.harm["difference"]) if fit else None


def _points(d: dict | None) -> str:
    """A difference of shares in percentage points with its interval (``*``: excludes 0)."""
    if not d:
        return "–"
    lo, hi = d["ci95"]
    return f"{_pp(d['difference'])} [{_pp(lo)}, {_pp(hi)}]" + ("*" if d.get("significant") else "")


def _pp(share: float) -> str:
    """A share as signed percentage points, one decimal (never "-0.0")."""
    return f"{round(100 * share, 1) + 0.0:+.1f}"


def _percent(r: Reading) -> str:
    return "–" if r.nll_relative is None else f"{_pp(r.nll_relative)} %"


def recommendation(paired: dict[str, Any], reference_nll: float | None, budget: float, seeds: int,
                   judge_note: str = "") -> str:
    """The recommendation page (markdown): the answer, the table behind it, and what the measure can tell."""
    reference = paired.get("reference", "sft")
    found = readings(paired, reference_nll)
    best = choose(found, budget)
    measure = "harmful answer class" if any(r.harm_key == HARM_CLASS for r in found) else "judge's harmful flag"
    lines = ["# Which method keeps this fine-tune safe?", ""]
    if not found:
        return "\n".join([*lines, f"No method could be compared with `{reference}` yet.", ""])
    if best is not None:
        lines.append(f"**Use `{best.series}`.** Against plain `{reference}` it cut the {measure} by "
                     f"{_points(best.harm)} points at {_percent(best)} reference NLL (the budget: "
                     f"+{100 * budget:.0f} %)" + (
                         f"; over-refusal {_points(best.over_refusal)} points" if best.over_refusal else "") + ".")
    else:
        lines.append(f"**No method kept significantly more safety than plain `{reference}` within the budget "
                     f"(+{100 * budget:.0f} % reference NLL).**")
        costly = [r for r in found if r.safer and not r.within(budget)]
        if costly:
            lines.append("Safer, but over the quality budget: " + "; ".join(
                f"`{r.series}` ({measure} {_points(r.harm)} points at {_percent(r)} NLL)" for r in costly) + ".")
        fitting = [r for r in found if r.within(budget) and not r.safer]
        if fitting:
            lean = min(fitting, key=lambda r: r.harm["difference"])
            lines.append(f"The best point estimate within the budget is `{lean.series}` ({_points(lean.harm)} "
                         "points), but its interval includes no effect: not a difference this comparison can tell.")
    lines += ["", f"Each method against plain `{reference}` on the same prompts"
              + (f", seed j against seed j over {seeds} seeds (intervals over seeds × prompts)" if seeds > 1
                 else " (one training run: intervals over prompts only — re-run with `--seeds 3` before relying on "
                      "it)") + "; differences in percentage points, `*` where the 95 % interval excludes 0:", "",
              f"| method | {measure} | safe strict (refusal + redirect) | over-refusal | reference NLL "
              "| within budget |",
              "|---|---|---|---|---|---|"]
    for r in found:
        lines.append(f"| {r.series} | {_points(r.harm)} | {_points(r.safe_strict)} | {_points(r.over_refusal)} | "
                     f"{_percent(r)} | {'yes' if r.within(budget) else 'no'} |")
    lines += ["", "What the measure can and cannot tell: " + (judge_note or "no agreement figures for this judge."),
              "A safe-looking share can hide content-free compliance or broken answers; `results.md` has every "
              "answer class, and `tasft report … --samples 5` shows the answers side by side.", ""]
    return "\n".join(lines)
