"""Intervals and paired differences of an evaluation's metrics, from its per-prompt rows (``scores/*.jsonl``).

Which per-prompt value each metric averages (the math is in :mod:`.stats`):

- ``harmful_rate`` = [judge flag], ``safe_rate`` = [not flagged and not degenerate], ``refusal_rate``,
  ``degenerate_rate``, ``non_english_rate`` = the rule flags, ``mean_harmfulness`` = the judge's score;
- summary ``harm_suites_<metric>`` = the mean over the harm suites present (each resampled within itself),
  ``over_refusal`` = xstest-safe's refusal rate, ``non_english_rate`` = the mean over every suite,
  ``reference_nll`` = Σ NLL / Σ tokens over the quality suite's reference answers (rows carrying ``ref_nll_sum``).
"""

from __future__ import annotations

from collections.abc import Callable

from ..scoring.answer_class import CLASSES, SAFE_STRICT, metric_name
from ..suites import in_role, registry_role
from . import stats

Rows = list[dict]

#: per-suite metric → the value of one row (None when the row cannot give it)
ROW_VALUES: dict[str, Callable[[dict], float | bool | None]] = {
    "harmful_rate": lambda r: r.get("harmful"),
    "safe_rate": lambda r: None if r.get("harmful") is None else (not r["harmful"] and r.get("degenerate") is None),
    "refusal_rate": lambda r: r.get("refusal"),
    "degenerate_rate": lambda r: r.get("degenerate") is not None,
    "non_english_rate": lambda r: r.get("non_english"),
    "mean_harmfulness": lambda r: r.get("harm_score"),
}

def _class_value(answer_class: str | tuple[str, ...]):
    wanted = (answer_class,) if isinstance(answer_class, str) else answer_class
    return lambda r: None if r.get("answer_class") is None else r["answer_class"] in wanted


ROW_VALUES.update({metric_name(c): _class_value(c) for c in CLASSES})
ROW_VALUES["safe_strict_rate"] = _class_value(SAFE_STRICT)
BINARY = frozenset(ROW_VALUES) - {"mean_harmfulness"}

#: the summary metrics a paired comparison reports (label, key): ``tasft report --reference`` and experiment tables
#: (the answer classes' rates: every class, from the registry in tasft.scoring.answer_class)
PAIRED_METRICS = [("harmful rate", "harm_suites_harmful_rate"), ("safe rate", "harm_suites_safe_rate"),
                  ("safe strict", "harm_suites_safe_strict_rate"),
                  *((f"{c} class", f"harm_suites_{metric_name(c)}") for c in CLASSES),
                  ("degenerate", "harm_suites_degenerate_rate"), ("refusal", "harm_suites_refusal_rate"),
                  ("over-refusal", "over_refusal"), ("reference NLL", "reference_nll")]


def row_values(rows: Rows, metric: str) -> list[float] | None:
    """The per-prompt values of ``metric`` (None if any row lacks it, e.g. no judge)."""
    values = [ROW_VALUES[metric](r) for r in rows]
    return None if not values or any(v is None for v in values) else [float(v) for v in values]


def row_roles(per_suite: dict[str, Rows]) -> dict[str, str | None]:
    """Each suite's role in the headline numbers, as its score rows record it (``role``; a declared prompt file's
    lives only there), else as the registry gives it (rows scored before roles were recorded)."""
    return {name: next((r["role"] for r in rows if "role" in r), registry_role(name))
            for name, rows in per_suite.items()}


def summary_suites(metric: str, per_suite: dict[str, Rows]) -> tuple[str, list[str]] | None:
    """(per-suite metric, suites averaged) behind a summary metric, or None when it is not a mean of rows."""
    if metric.startswith("harm_suites_"):
        return metric.removeprefix("harm_suites_"), in_role(row_roles(per_suite), "harm")
    if metric == "over_refusal":
        return "refusal_rate", in_role(row_roles(per_suite), "over-refusal")
    if metric == "non_english_rate":
        return "non_english_rate", list(per_suite)
    return None


def _groups(per_suite: dict[str, Rows], metric: str) -> list[list[float]] | None:
    spec = summary_suites(metric, per_suite)
    if spec is None or not spec[1]:
        return None
    groups = [row_values(per_suite[s], spec[0]) for s in spec[1]]
    return None if any(g is None for g in groups) else groups


def nll_rows(per_suite: dict[str, Rows]) -> Rows:
    """Rows of the quality suites that carry a reference answer's NLL sum and token count."""
    return [r for rows in per_suite.values() for r in rows if r.get("ref_nll_tokens")]


def intervals(per_suite: dict[str, Rows], summary_keys: list[str], resamples: int = stats.RESAMPLES,
              seed: int = stats.SEED) -> dict:
    """95% intervals of every per-suite rate and of the summary metrics (``metrics.json["intervals"]``)."""
    out: dict = {"level": stats.LEVEL, "method": "percentile bootstrap over prompts (per suite)",
                 "resamples": resamples, "seed": seed, "suites": {}, "summary": {}}
    for name, rows in per_suite.items():
        cis = {}
        for metric in ROW_VALUES:
            values = row_values(rows, metric)
            if values is not None:
                cis[metric] = list(stats.mean_interval([values], resamples, seed))
        out["suites"][name] = cis
    for key in summary_keys:
        groups = _groups(per_suite, key)
        if groups is not None:
            out["summary"][key] = list(stats.mean_interval(groups, resamples, seed))
    refs = nll_rows(per_suite)
    if "reference_nll" in summary_keys and refs:
        out["summary"]["reference_nll"] = list(stats.ratio_interval(
            [r["ref_nll_sum"] for r in refs], [r["ref_nll_tokens"] for r in refs], resamples, seed))
    return out


def _aligned(run: Rows, ref: Rows) -> tuple[Rows, Rows]:
    """The rows of both runs for the prompts they share, in the same order (pairing is by prompt id)."""
    by_id = {str(r["id"]): r for r in ref}
    shared = [r for r in run if str(r["id"]) in by_id]
    return shared, [by_id[str(r["id"])] for r in shared]


def paired(run: dict[str, Rows], reference: dict[str, Rows], summary_keys: list[str],
           resamples: int = stats.RESAMPLES, seed: int = stats.SEED) -> dict[str, dict]:
    """For each summary metric both runs have: run − reference on the prompts they share (paired bootstrap
    interval; McNemar's exact p pooled over the suites' pairs for rates)."""
    suites = [s for s in run if s in reference]
    pairs = {s: _aligned(run[s], reference[s]) for s in suites}
    pairs = {s: p for s, p in pairs.items() if p[0]}
    out: dict[str, dict] = {}
    for key in summary_keys:
        if key == "reference_nll":
            a, b = _aligned(nll_rows(run), nll_rows(reference))
            if a:
                out[key] = stats.paired_ratio_difference(
                    [r["ref_nll_sum"] for r in a], [r["ref_nll_tokens"] for r in a],
                    [r["ref_nll_sum"] for r in b], [r["ref_nll_tokens"] for r in b], resamples, seed)
            continue
        spec = summary_suites(key, {s: run_rows for s, (run_rows, _) in pairs.items()})
        if spec is None or not spec[1]:
            continue
        metric, names = spec
        run_groups = [row_values(pairs[s][0], metric) for s in names]
        ref_groups = [row_values(pairs[s][1], metric) for s in names]
        if any(g is None for g in run_groups + ref_groups):
            continue
        result = stats.paired_difference(run_groups, ref_groups, resamples, seed)
        if metric in BINARY:
            result["mcnemar_p"] = stats.mcnemar_p([v > 0.5 for g in run_groups for v in g],
                                                  [v > 0.5 for g in ref_groups for v in g])
        out[key] = result
    return out


def paired_suites(run: dict[str, Rows], reference: dict[str, Rows], metrics: list[str],
                  resamples: int = stats.RESAMPLES, seed: int = stats.SEED) -> dict[str, dict[str, dict]]:
    """Per suite both runs have, per metric: run − reference on the shared prompts (as :func:`paired`)."""
    out: dict[str, dict[str, dict]] = {}
    for suite in (s for s in run if s in reference):
        a, b = _aligned(run[suite], reference[suite])
        cells = {}
        for metric in metrics:
            va, vb = (row_values(a, metric), row_values(b, metric)) if a else (None, None)
            if va is None or vb is None:
                continue
            cells[metric] = stats.paired_difference([va], [vb], resamples, seed)
            if metric in BINARY:
                cells[metric]["mcnemar_p"] = stats.mcnemar_p([v > 0.5 for v in va], [v > 0.5 for v in vb])
        if cells:
            out[suite] = cells
    return out


def _by_seed(per_seed: list[Rows]) -> list[Rows]:
    """The seeds' rows of one suite restricted to the prompts every seed has, in one order (by prompt id)."""
    shared = set.intersection(*({str(r["id"]) for r in rows} for rows in per_seed))
    order = sorted(shared)
    return [[{str(r["id"]): r for r in rows}[i] for i in order] for rows in per_seed]


def _seed_groups(per_seed: list[dict[str, Rows]]) -> tuple[list[str], dict[str, list[Rows]]]:
    """The suites every seed has, each as its seeds' rows on the prompts every seed answered (one order)."""
    suites = [s for s in per_seed[0] if all(s in rows for rows in per_seed)]
    return suites, {s: _by_seed([rows[s] for rows in per_seed]) for s in suites}


def _metric_arrays(aligned: dict[str, list[Rows]], suites: list[str], key: str) -> list[list[list[float]]] | None:
    """Per suite behind summary metric ``key``, its (seeds × prompts) values; None when the rows cannot give it."""
    spec = summary_suites(key, {s: aligned[s][0] for s in suites})
    if spec is None or not spec[1]:
        return None
    groups = [[row_values(rows, spec[0]) for rows in aligned[s]] for s in spec[1]]
    return None if any(v is None or not v for g in groups for v in g) else groups


def _nll_arrays(aligned: dict[str, list[Rows]], suites: list[str], k: int) -> tuple[list, list] | None:
    seeds = [nll_rows({s: aligned[s][j] for s in suites}) for j in range(k)]
    if not seeds[0] or any(len(x) != len(seeds[0]) for x in seeds):
        return None
    return [[r["ref_nll_sum"] for r in x] for x in seeds], [[r["ref_nll_tokens"] for r in x] for x in seeds]


def seed_intervals(per_seed: list[dict[str, Rows]], summary_keys: list[str]) -> dict[str, list[float]]:
    """95% intervals of the summary metrics of a point trained with several seeds and evaluated on the same
    prompts, over seeds × prompts (:func:`stats.seeded_interval`); a prompt counts where every seed answered it."""
    return {key: value["ci95"] for key, value in seed_summary(per_seed, summary_keys).items()}


def seed_summary(per_seed: list[dict[str, Rows]], summary_keys: list[str]) -> dict[str, dict]:
    """Per summary metric: its mean over seeds × prompts, interval, per-seed values and seed-to-seed standard
    deviation (:func:`stats.seeded_interval`, :func:`stats.seeded_ratio_interval` for the reference NLL)."""
    if not per_seed:
        return {}
    suites, aligned = _seed_groups(per_seed)
    out: dict[str, dict] = {}
    for key in summary_keys:
        if key == "reference_nll":
            if (arrays := _nll_arrays(aligned, suites, len(per_seed))) is not None:
                out[key] = stats.seeded_ratio_interval(*arrays)
            continue
        if (groups := _metric_arrays(aligned, suites, key)) is not None:
            out[key] = stats.seeded_interval(groups, bounds=(0.0, 1.0))  # rates and judge scores
    return out


def seed_paired(run: list[dict[str, Rows]], reference: list[dict[str, Rows]], summary_keys: list[str]
                ) -> dict[str, dict]:
    """run − reference over k seeds (run's seed j paired with the reference's seed j, the same prompts), with the
    interval over seeds × prompts (:func:`stats.seeded_difference`); a prompt counts where every run answered it."""
    if not run or len(run) != len(reference):
        raise ValueError("run and reference need the same, non-zero number of seeds")
    suites, aligned = _seed_groups([*run, *reference])
    k = len(run)
    out: dict[str, dict] = {}
    for key in summary_keys:
        if key == "reference_nll":
            a = _nll_arrays({s: v[:k] for s, v in aligned.items()}, suites, k)
            b = _nll_arrays({s: v[k:] for s, v in aligned.items()}, suites, k)
            if a is not None and b is not None and len(a[0][0]) == len(b[0][0]):
                out[key] = stats.seeded_ratio_difference(a[0], a[1], b[0], b[1])
            continue
        if (groups := _metric_arrays(aligned, suites, key)) is not None:
            out[key] = stats.seeded_difference([g[:k] for g in groups], [g[k:] for g in groups], bounds=(-1.0, 1.0))
    return out
