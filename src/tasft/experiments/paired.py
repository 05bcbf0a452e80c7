"""Paired differences of a study's points to its reference series (``reference:``, default the series named
``sft``; a swept reference is taken at its first x): each point's evaluation against the reference's on the same
prompts (:func:`tasft.evaluation.uncertainty.paired`: paired bootstrap interval, McNemar's exact p for rates).
Each seed of a point is paired with the same seed of the reference where the reference has it, else with the
reference's lowest seed; ``paired.json`` records which. With ``compare_all: true`` its ``between`` list holds
every other pair of points too (a − b, each at its first-run seed), for verdicts that compare two methods directly
(quadratic in the points: meant for a comparison of a few methods, not a long sweep)."""

from __future__ import annotations

from typing import Any

from ..evaluation import uncertainty
from ..evaluation.uncertainty import PAIRED_METRICS as PAIRED
from .study import ExperimentConfig


def reference_series(exp: ExperimentConfig) -> str | None:
    """The series every other point is paired with: ``exp.reference``, else one named ``sft``, else none."""
    if exp.reference is not None:
        return exp.reference
    return "sft" if any(s.name == "sft" for s in exp.series) else None


def paired_differences(exp: ExperimentConfig, rows: list[dict]) -> dict[str, Any] | None:
    """``{"reference": name, "keys": [...], "points": [{series, x, seed, reference_seed, <metric>: {...}}]}``
    for every finished point that is not the reference (None without a reference or its evaluation)."""
    from ..evaluation.compare import scored_rows

    name = reference_series(exp)
    mine = [r for r in rows if r["series"] == name]
    refs = {r["seed"]: r for r in mine if r["x"] == mine[0]["x"]} if mine else {}  # a swept reference: its first x
    if name is None or not refs:
        return None
    cache: dict[str, Any] = {}

    def scores(row: dict):
        path = row.get("eval_dir")
        if path and path not in cache:
            cache[path] = scored_rows(path)
        return cache.get(path) if path else None

    keys = [k for _, k in PAIRED]
    seeded = _seeded(rows, name, refs, scores, keys)
    points = []
    for row in rows:
        if row in refs.values():
            continue
        ref = refs.get(row["seed"]) or refs[min(refs)]
        run_rows, ref_rows = scores(row), scores(ref)
        if run_rows is None or ref_rows is None:
            continue
        diffs = uncertainty.paired(run_rows, ref_rows, keys)
        points.append({"series": row["series"], "x": row["x"], "seed": row["seed"], "reference_seed": ref["seed"],
                       **diffs})
    found = {"reference": name, "keys": keys, "points": points, **seeded}
    if not exp.compare_all:
        return found
    # every other pair of points too (lowest seed of each), for verdicts that compare two methods directly
    first = {}
    for row in rows:
        first.setdefault((row["series"], row["x"]), row)
    between = []
    for i, (a_key, a) in enumerate(first.items()):
        for b_key, b in list(first.items())[i + 1 :]:
            ra, rb = scores(a), scores(b)
            if ra is not None and rb is not None:
                between.append({"a": list(a_key), "b": list(b_key), **uncertainty.paired(ra, rb, keys)})
    return {**found, "between": between}


def _seeded(rows: list[dict], name: str, refs: dict[int, dict], scores, keys: list[str]) -> dict[str, Any]:
    """Across training seeds: ``seeded`` — each point with ≥ 2 seeds the reference also has, minus the reference,
    seed j with seed j, with the interval over seeds × prompts (:func:`uncertainty.seed_paired`; ``significant``
    only when that interval excludes 0) — and ``reference_spread``: the reference's own seed-to-seed spread (its
    per-seed values and standard deviation, and each other seed minus its lowest seed on the same prompts), the size
    a one-run difference must beat."""
    out: dict[str, Any] = {}
    if len(refs) > 1 and all(scores(r) is not None for r in refs.values()):
        ordered_refs = [refs[k] for k in sorted(refs)]
        spread = uncertainty.seed_summary([scores(r) for r in ordered_refs], keys)
        first = ordered_refs[0]
        out["reference_spread"] = {
            "seeds": sorted(refs),
            **{k: {"per_seed": v["per_seed"], "seed_sd": v["seed_sd"]} for k, v in spread.items()},
            "versus_first_seed": [{"seed": r["seed"], "reference_seed": first["seed"],
                                   **uncertainty.paired(scores(r), scores(first), keys)} for r in ordered_refs[1:]],
        }
    groups: dict[tuple, dict[int, dict]] = {}
    for row in rows:
        if row["series"] != name:
            groups.setdefault((row["series"], row["x"]), {})[row["seed"]] = row
    seeded = []
    for (series, x), by_seed in groups.items():
        common = sorted(set(by_seed) & set(refs))
        if len(common) < 2 or any(scores(by_seed[j]) is None or scores(refs[j]) is None for j in common):
            continue
        diffs = uncertainty.seed_paired([scores(by_seed[j]) for j in common], [scores(refs[j]) for j in common], keys)
        seeded.append({"series": series, "x": x, "seeds": common, **diffs})
    if seeded:
        out["seeded"] = seeded
    return out


def _cell(d: dict | None) -> str:
    if not d:
        return "–"
    lo, hi = d["ci95"]
    return f"{d['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}]" + ("*" if d["significant"] else "")


def _sd(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def seeded_markdown(paired: dict[str, Any]) -> str:
    """The tables across seeds: each point minus the reference over seeds × prompts, and the reference's own
    seed-to-seed spread (empty when the study has one seed)."""
    text = ""
    ref = paired["reference"]
    if paired.get("seeded"):
        header = ["series", "x", "seeds", *(label for label, _ in PAIRED)]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for p in paired["seeded"]:
            lines.append("| " + " | ".join([str(p["series"]), "–" if p["x"] is None else str(p["x"]),
                                            ",".join(map(str, p["seeds"])), *(_cell(p.get(k)) for _, k in PAIRED)])
                         + " |")
        text += (f"## Across seeds: each point minus `{ref}`\n\nSeed j of a point paired with seed j of `{ref}` on "
                 "the same prompts; 95% interval over seeds × prompts (random effects, Student's t for the seeds: "
                 "`tasft.evaluation.stats.seeded_interval`); `*` = it excludes 0. A reading is a finding only here: "
                 "one run's difference (the per-seed table below) can be the seed's.\n\n" + "\n".join(lines) + "\n")
    spread = paired.get("reference_spread")
    if spread:
        header = ["metric", *(f"seed {j}" for j in spread["seeds"]), "sd over seeds",
                  *(f"seed {v['seed']} − seed {v['reference_seed']}" for v in spread["versus_first_seed"])]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for label, key in PAIRED:
            if key not in spread:
                continue
            cells = [label, *(f"{v:.3f}" for v in spread[key]["per_seed"]), _sd(spread[key]["seed_sd"]),
                     *(_cell(v.get(key)) for v in spread["versus_first_seed"])]
            lines.append("| " + " | ".join(cells) + " |")
        text += ("\n" if text else "") + (
            f"## `{ref}`'s own seed-to-seed spread\n\nThe reference retrained with only the seed changed, on the same "
            "prompts (paired bootstrap over prompts; `*` = excludes 0): a one-seed difference of this size is not a "
            "finding.\n\n" + "\n".join(lines) + "\n")
    return text


def paired_markdown(paired: dict[str, Any]) -> str:
    """The paired-difference table: point − reference on the same prompts; ``*`` = the interval excludes 0."""
    header = ["series", "x", "seed", *(label for label, _ in PAIRED), "harm-suite pairs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for p in paired["points"]:
        first = p.get("harm_suites_harmful_rate") or next((p[k] for k in paired["keys"] if isinstance(p.get(k), dict)),
                                                          {"n": 0})
        n = first["n"]
        lines.append("| " + " | ".join([str(p["series"]), "–" if p["x"] is None else str(p["x"]), str(p["seed"]),
                                        *(_cell(p.get(k)) for _, k in PAIRED), str(n)]) + " |")
    return (f"## Paired differences to `{paired['reference']}`\n\nEach point minus `{paired['reference']}` on the "
            "same prompts, with a paired bootstrap 95% interval; `*` marks an interval that excludes 0 (McNemar's "
            "exact p for each rate is in `paired.json`).\n\n" + "\n".join(lines) + "\n")
