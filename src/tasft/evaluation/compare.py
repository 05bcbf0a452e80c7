"""What a comparison of evaluations adds to bare numbers: the per-prompt rows behind each run, intervals for runs
written before metrics carried them, paired differences to a reference run, and the judges' agreement."""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import TasftError
from ..io_utils import read_jsonl
from . import uncertainty

Rows = list[dict]


def scored_rows(run_dir: str | Path) -> dict[str, Rows] | None:
    """``{suite: rows}`` from an evaluation directory's ``scores/*.jsonl`` (None if it has none)."""
    scores = Path(run_dir) / "scores"
    files = sorted(scores.glob("*.jsonl")) if scores.is_dir() else []
    return {f.stem: read_jsonl(f) for f in files} or None


def ensure_intervals(data: dict, rows: dict[str, Rows] | None) -> None:
    """Give an older ``metrics.json`` (no ``intervals``) its intervals, from its rows when they are at hand."""
    if "intervals" not in data and rows:
        data["intervals"] = uncertainty.intervals({s: rows[s] for s in data["suites"] if s in rows},
                                                  list(data["summary"]))


def interval(data: dict, key: str, suite: str | None = None) -> list[float] | None:
    """The stored 95% interval of a summary metric (or of a suite's metric), or None."""
    part = (data.get("intervals") or {}).get("suites" if suite else "summary", {})
    got = part.get(suite, {}).get(key) if suite else part.get(key)
    return got if isinstance(got, list) and len(got) == 2 else None


def fmt(value, ci: list[float] | None = None) -> str:
    """``0.412 [0.365, 0.460]`` (or just the value, or ``–``)."""
    if value is None or isinstance(value, float) and math.isnan(value):
        return "–"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _diff_cell(d: dict | None) -> str:
    if d is None:
        return "–"
    lo, hi = d["ci95"]
    text = f"{d['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}]" + ("*" if d["significant"] else "")
    return text + (f" p={d['mcnemar_p']:.3g}" if "mcnemar_p" in d else "")


SUITE_PAIRED = [("harmful", "harmful_rate"), ("safe", "safe_rate"), ("refusal", "refusal_rate"),
                ("degenerate", "degenerate_rate")]


def paired_table(runs: list[tuple[str, dict]], rows: list[dict[str, Rows] | None], reference: int,
                 keys: list[tuple[str, str]]) -> str:
    """Markdown: for each run but the reference, run − reference per summary metric and per suite on the shared
    prompts, with its paired bootstrap interval; ``*`` marks an interval that excludes 0, McNemar's p follows for
    rates."""
    ref_label, _ = runs[reference]
    ref_rows = rows[reference]
    if ref_rows is None:
        raise TasftError(f"--reference {ref_label}: no scores/ files to pair prompts with")
    header = ["run", *(label for label, _ in keys), "pairs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    suite_header = ["run", "suite", *(label for label, _ in SUITE_PAIRED), "pairs"]
    suite_lines = ["| " + " | ".join(suite_header) + " |", "|" + "---|" * len(suite_header)]
    for i, (label, _) in enumerate(runs):
        if i == reference:
            continue
        if rows[i] is None:
            lines.append("| " + " | ".join([label, *("no scores/" for _ in keys), "–"]) + " |")
            continue
        diffs = uncertainty.paired(rows[i], ref_rows, [k for _, k in keys])
        n = max((d["n"] for d in diffs.values()), default=0)
        lines.append("| " + " | ".join([label, *(_diff_cell(diffs.get(k)) for _, k in keys), str(n)]) + " |")
        for suite, cells in uncertainty.paired_suites(rows[i], ref_rows, [k for _, k in SUITE_PAIRED]).items():
            pairs = max(d["n"] for d in cells.values())
            suite_lines.append("| " + " | ".join([label, suite, *(_diff_cell(cells.get(k)) for _, k in SUITE_PAIRED),
                                                  str(pairs)]) + " |")
    return "\n".join(lines) + "\n\nPer suite:\n\n" + "\n".join(suite_lines)


def agreement_table(runs: list[tuple[str, dict]]) -> str:
    """Markdown: per run, pooled over its harm suites, how the judge's flag and the rule view split the answers."""
    header = ["run", "answers", "flagged harmful", "…but a refusal", "…but degenerate", "not flagged: refusal",
              "not flagged: degenerate", "not flagged: answer", "judges disagree"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, data in runs:
        tables = [m["judge_agreement"]["table"] for m in data["suites"].values() if "judge_agreement" in m]
        if not tables:
            continue
        pooled = {flag: {view: sum(t[flag][view] for t in tables) for view in tables[0][flag]} for flag in tables[0]}
        n = sum(sum(v.values()) for v in pooled.values())
        h, s = pooled["harmful"], pooled["not_harmful"]
        share = [x / n for x in (sum(h.values()), h["refusal"], h["degenerate"], s["refusal"], s["degenerate"],
                                 s["answer"], h["refusal"] + h["degenerate"])]
        lines.append("| " + " | ".join([label, str(n), *(f"{x:.3f}" for x in share)]) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def judges_table(runs: list[tuple[str, dict]]) -> str:
    """Markdown: per run, harm suite and extra judge (``--harm-scorer A,B``): B's harmful rate beside A's, their
    agreement and Cohen's κ."""
    header = ["run", "suite", "judge", "its harmful rate", "first judge's", "agreement", "κ", "n"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, data in runs:
        first = data.get("harm_scorer", "").split(",")[0]
        for suite, m in data["suites"].items():
            for name, c in m.get("judges", {}).items():
                lines.append("| " + " | ".join([label, suite, f"{name} (vs {first})", fmt(c.get("harmful_rate")),
                                                fmt(m.get("harmful_rate")), fmt(c.get("agreement")),
                                                fmt(c.get("kappa")), str(c.get("n"))]) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def validation_lines(runs: list[tuple[str, dict]]) -> list[str]:
    """One line per distinct judge validation the runs carry: how far to trust the numbers above."""
    seen, out = set(), []
    for _, data in runs:
        v = data.get("judge_validation") or {}
        text = []
        if "harm_scorer" in v:
            h = v["harm_scorer"]
            text.append(f"harm judge `{data.get('harm_scorer')}` on {h['check']}: AUROC {fmt(h.get('auroc'))}, "
                        f"balanced accuracy {fmt(h.get('balanced_accuracy'))}, precision {fmt(h.get('precision'))}")
        if "refusal_rule" in v:
            r = v["refusal_rule"]
            text.append(f"refusal rule on {r['check']}: accuracy {fmt(r.get('accuracy'))}, precision "
                        f"{fmt(r.get('precision'))}, recall {fmt(r.get('recall'))} (n = {r.get('n')})")
        line = "; ".join(text)
        if line and line not in seen:
            seen.add(line)
            out.append("- " + line)
    return out


def attack_table(runs: list[tuple[str, dict]]) -> str:
    """Markdown: per run, each jailbreak template's harmful and safe rate, then the worst case over templates per
    base suite (:mod:`tasft.evaluation.attacks`); empty when no run was evaluated under a template."""
    lines = []
    for label, data in runs:
        attacks = data.get("attacks")
        if not attacks:
            continue
        for name, t in attacks["templates"].items():
            strongest = " (strongest)" if name == attacks["strongest_template"] else ""
            lines.append(f"| {label} | {name}{strongest} | {fmt(t['harmful_rate'], t.get('harmful_rate_ci95'))} | "
                         f"{fmt(t['safe_rate'], t.get('safe_rate_ci95'))} | {', '.join(t['suites'])} |")
        for base, w in attacks["worst_case"].items():
            lines.append(f"| {label} | worst case of {len(w['variants'])} on {base} | "
                         f"{fmt(w['harmful_rate'], w.get('harmful_rate_ci95'))} | "
                         f"{fmt(w['safe_rate'], w.get('safe_rate_ci95'))} | {w['prompts']} prompts |")
    if not lines:
        return ""
    return "\n".join(["| run | template | harmful | safe | suites |", "|---|---|---|---|---|", *lines])
