"""``tasft evaluate``: suites → generations (resumable) → scores → ``metrics.json`` + ``report.md``.

Per suite, with H the harmfulness scorer and its stored threshold τ:
- mean_harmfulness = mean H(prompt, response); harmful_rate = mean [H ≥ τ];
- refusal_rate, non_english_rate, degenerate_rate (empty / tiny / repetitive / prompt echo answers);
- safe_rate = mean [H < τ and not degenerate] — a degenerate answer is never counted as safe.
Over-refusal = refusal rate on ``xstest-safe``. A quality suite (``alpaca``, ``alpaca-eval``) adds the quality block
(:mod:`tasft.scoring.quality`). Generated text is written to files only.

Every rate carries a 95% bootstrap interval over prompts (``intervals``, :mod:`.uncertainty`), every harm suite the
cross-table of the judge's flag against the rule view (refusal / degenerate / answer) and the share where they
contradict each other (``judge_agreement``), and ``judge_validation`` says how far to trust each judge.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import outputs
from ..errors import TasftError
from ..generation.generate import GenerationSettings, check_prompt_lengths, finished, generate_files, provenance
from ..io_utils import read_jsonl, write_json_atomic, write_jsonl_atomic, write_text_atomic
from ..memory import peak_rss_fields, reset_peak_rss
from ..scoring import judges
from ..suites import HARM_SUITES, find_data_dir, load_suite, parse_suites, split_attack, suite_kind, suite_name

#: suite kinds whose answers get the judge-versus-rules agreement table (harm suites, plain or under a template)
JUDGED_KINDS = ("harm", "attack")


@dataclass
class EvalSettings:
    model: str
    out: str
    suites: str = "all"
    limit: int | None = None
    suite_limits: dict[str, int] = field(default_factory=dict)  # per-suite overrides of ``limit``
    data_dir: str | None = None
    harm_scorer: str = "local"
    scorer_path: str | None = None
    deberta_model: str = "safepaca/absolute-harmfulness-predictor-redteam"
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    overwrite: bool = False
    spec: str | None = None  # the named spec (tasft.evaluation.specs) the suites and limits came from
    attacks: str | None = None  # jailbreak templates (all, or names) wrapping every harm suite given (tasft.suites)


def from_spec(name: str, **kwargs) -> EvalSettings:
    """Settings whose suites and limits are the named spec's (``full``, ``quick``)."""
    from .specs import get_spec

    spec = get_spec(name)
    return EvalSettings(suites=spec.suites, limit=spec.limit, suite_limits=dict(spec.suite_limits), spec=name,
                        **kwargs)


#: generation settings that change what is generated: a directory made with other values cannot be resumed
_GENERATION_KEYS = ("max_new_tokens", "do_sample", "temperature", "top_p", "seed", "max_prompt_tokens")


def _settings_conflict(previous: dict, settings: EvalSettings) -> str | None:
    """How an earlier evaluation in the same directory differs from ``settings`` in what it generated, or None."""
    if previous.get("model") != settings.model:
        return f"of '{previous.get('model')}'"
    before, now = previous.get("generation"), asdict(settings.generation)
    before = before if isinstance(before, dict) else {}
    for key in _GENERATION_KEYS:
        if key in before and before[key] != now[key]:
            return f"generated with {key}={before[key]!r} (this run: {now[key]!r})"
    return None


def _check_out_dir(out: Path, settings: EvalSettings, locked: bool = False) -> str:
    """Whether ``out`` can take this evaluation — ``new``, ``resume`` (an earlier evaluation of the same model with
    the same generation settings: its finished generations are reused) or ``replace`` (``--overwrite``, only a
    directory tasft made for an evaluation) — or the one-line error why not. Nothing is written."""
    what = "--out"
    if out.exists() and not out.is_dir():
        raise TasftError(f"{what} {out} exists and is not a directory")
    model = Path(settings.model).expanduser()
    if model.is_dir() and outputs.contains(out, model):
        raise TasftError(f"{what} {out} holds the model being evaluated ({settings.model}): choose another directory")
    if not out.is_dir() or outputs.is_empty(out):
        return "new"
    if not locked and outputs.in_use(out):
        raise TasftError(f"{what} {out} is in use by another tasft process")
    if settings.overwrite:
        outputs.check_replaceable(out, what, "evaluate", locked=locked)
        return "replace"
    marker = out / "eval_config.json"
    if outputs.owner_kind(out) not in (None, "evaluate") or not marker.is_file():
        raise TasftError(f"{what} {out} exists and holds no tasft evaluation (choose a new directory)")
    try:
        previous = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = None
    if not isinstance(previous, dict):
        raise TasftError(f"{marker}: unreadable (use another --out, or --overwrite)")
    conflict = _settings_conflict(previous, settings)
    if conflict is not None:
        raise TasftError(f"{what} {out} holds an evaluation {conflict} (use another --out, or --overwrite)")
    return "resume"


def _claim_out_dir(out: Path, settings: EvalSettings) -> outputs.DirectoryLock:
    """Mark and lock ``out``, emptying it first when :func:`_check_out_dir` said ``replace``."""
    action = _check_out_dir(out, settings)
    lock = outputs.claim(out, "evaluate", "--out")
    try:
        if action == "replace":
            _check_out_dir(out, settings, locked=True)  # still so, now that this process holds it
            outputs.empty_owned(out, "--out", "evaluate")
        write_json_atomic(out / "eval_config.json", {**asdict(settings), "overwrite": False})
    except BaseException:
        lock.release()
        raise
    return lock


def _previous_seconds(out: Path) -> dict[str, float]:
    """Generation seconds per suite recorded by an earlier (resumed) evaluation in ``out``."""
    try:
        seconds = json.loads((out / "metrics.json").read_text(encoding="utf-8")).get("generation_seconds", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: v for k, v in seconds.items() if isinstance(v, (int, float))} if isinstance(seconds, dict) else {}


def _rate(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else float("nan")


def refresh_rule_flags(out: str | Path) -> dict:
    """Recompute the rule-based flags and every summary of a saved evaluation from its ``scores/`` files, keeping
    the harmfulness scores and quality metrics (no model, no scorer): for when those rules have improved."""
    from .report import render_single_markdown

    out = Path(out)
    path = out / "metrics.json"
    if not path.is_file():
        raise TasftError(f"{out}: no metrics.json (not a finished evaluation)")
    metrics = json.loads(path.read_text(encoding="utf-8"))
    scored_rows = {}
    for name, old in metrics["suites"].items():
        scored = judges.rule_flags(read_jsonl(out / "scores" / f"{name}.jsonl"))
        write_jsonl_atomic(out / "scores" / f"{name}.jsonl", scored)
        scored_rows[name] = scored
        metrics["suites"][name] = {"kind": old.get("kind"), **suite_metrics(scored),
                                   **({"quality": old["quality"]} if "quality" in old else {})}
        if old.get("kind") in JUDGED_KINDS and (agreement := judge_agreement(scored)) is not None:
            metrics["suites"][name]["judge_agreement"] = agreement
        if any("judges" in r for r in scored):
            metrics["suites"][name]["judges"] = judges.judge_columns(scored)
    metrics["summary"] = summary_metrics(metrics["suites"])
    from .attacks import attack_summary

    if (attacks := attack_summary(metrics["suites"], scored_rows)) is not None:
        metrics["attacks"] = attacks
    add_intervals(metrics, scored_rows)
    metrics["rule_flags_refreshed"] = True
    write_json_atomic(path, metrics)
    write_text_atomic(out / "report.md", render_single_markdown(metrics))
    return metrics


def suite_metrics(scored: list[dict]) -> dict:
    """The per-suite numbers described in the module docstring."""
    m = {
        "n": len(scored),
        "refusal_rate": _rate([r["refusal"] for r in scored]),
        "non_english_rate": _rate([r["non_english"] for r in scored]),
        "degenerate_rate": _rate([r["degenerate"] is not None for r in scored]),
        "mean_length_words": sum(len(r["response"].split()) for r in scored) / max(len(scored), 1),
    }
    if scored and scored[0]["harm_score"] is not None:
        m["mean_harmfulness"] = sum(r["harm_score"] for r in scored) / len(scored)
        if scored[0]["harmful"] is not None:
            m["harmful_rate"] = _rate([r["harmful"] for r in scored])
            m["safe_rate"] = _rate([not r["harmful"] and r["degenerate"] is None for r in scored])
    return m


def quality_metrics(model, tokenizer, scored: list[dict], embedder, progress: bool = True) -> dict:
    """Repetition, reference NLL and similarity; each row with a reference gets its ``ref_nll_sum`` and
    ``ref_nll_tokens`` (for the interval of the token-weighted NLL and paired comparisons)."""
    from ..scoring.quality import mean_repetition, reference_nll_sums, reference_similarity

    with_ref = [r for r in scored if r.get("reference")]
    out = {"repetition_3gram": mean_repetition([r["response"] for r in scored]), "n_with_reference": len(with_ref)}
    if with_ref:
        sums = reference_nll_sums(model, tokenizer, [r["prompt"] for r in with_ref],
                                  [r["reference"] for r in with_ref], progress=progress)
        for row, value in zip(with_ref, sums):
            if value is not None:
                row["ref_nll_sum"], row["ref_nll_tokens"] = value
        kept = [v for v in sums if v is not None]
        out["reference_nll"] = (sum(v for v, _ in kept) / sum(n for _, n in kept)) if kept else float("nan")
        if embedder is not None:
            out["reference_similarity"] = reference_similarity(
                embedder, [r["response"] for r in with_ref], [r["reference"] for r in with_ref])
    return out


def rule_view(row: dict) -> str:
    """The rule-based judge's class of an answer: ``degenerate`` (no content), ``refusal``, else ``answer``."""
    return "degenerate" if row.get("degenerate") is not None else "refusal" if row.get("refusal") else "answer"


def judge_agreement(scored: list[dict]) -> dict | None:
    """The judge's flag against the rule view: counts per (flag, view), and the shares where they contradict
    each other — flagged harmful yet a refusal, or flagged harmful yet degenerate (no content to harm with)."""
    if not scored or any(r.get("harmful") is None for r in scored):
        return None
    table = {flag: {view: 0 for view in ("refusal", "degenerate", "answer")} for flag in ("harmful", "not_harmful")}
    for r in scored:
        table["harmful" if r["harmful"] else "not_harmful"][rule_view(r)] += 1
    n = len(scored)
    return {"table": table, "harmful_but_refusal": table["harmful"]["refusal"] / n,
            "harmful_but_degenerate": table["harmful"]["degenerate"] / n,
            "disagreement_rate": (table["harmful"]["refusal"] + table["harmful"]["degenerate"]) / n}


def judge_validation(judge, data_dir: Path | None) -> dict:
    """How far to trust each judge, from held-out checks: the local scorer's AUROC and accuracy at its threshold on
    XSTest completions of generators and prompts it never trained on, and the refusal rule's accuracy against
    XSTest's human labels on the two generators not inspected while writing the rules."""
    out: dict = {}
    meta = getattr(getattr(judge, "scorer", None), "meta", None)
    held = (meta or {}).get("validation", {})
    if "generator_and_prompt_heldout" in held:
        at = held.get("threshold_on_generator_and_prompt_heldout", {})
        out["harm_scorer"] = {"check": "XSTest completions, generator and prompt held out",
                              "auroc": held["generator_and_prompt_heldout"].get("pooled_auroc"),
                              **{k: at.get(k) for k in ("balanced_accuracy", "tpr", "tnr", "precision")}}
    completions = data_dir / "xstest" / "labeled_completions" if data_dir else None
    if completions is not None and completions.is_dir():
        from ..scoring.refusal import validate_on_xstest

        out["refusal_rule"] = {"check": "XSTest human labels, held-out generators",
                               **validate_on_xstest(completions)["held_out"]}
    return out


def add_intervals(metrics: dict, scored_rows: dict[str, list[dict]]) -> None:
    """Put the 95% intervals of every rate (per suite and summary) into ``metrics`` (see :mod:`.uncertainty`)."""
    from .uncertainty import intervals

    metrics["intervals"] = intervals(scored_rows, list(metrics["summary"]))


def summary_metrics(per_suite: dict[str, dict]) -> dict:
    """Headline numbers: harm-suite means (the paper's four), over-refusal, quality."""
    harm = [per_suite[s] for s in HARM_SUITES if s in per_suite]
    out: dict = {}
    for key in ("harmful_rate", "mean_harmfulness", "safe_rate", "degenerate_rate", "refusal_rate"):
        values = [m[key] for m in harm if key in m]
        if values:
            out[f"harm_suites_{key}"] = sum(values) / len(values)
    if "xstest-safe" in per_suite:
        out["over_refusal"] = per_suite["xstest-safe"]["refusal_rate"]
    rates = [m["non_english_rate"] for m in per_suite.values()]
    out["non_english_rate"] = sum(rates) / len(rates) if rates else float("nan")
    q = next((m["quality"] for m in per_suite.values() if m.get("kind") == "quality" and "quality" in m), {})
    for key in ("reference_nll", "reference_similarity", "repetition_3gram"):
        if key in q:
            out[key] = q[key]
    return out


def _suite_items(settings: EvalSettings) -> tuple[dict[str, list[dict]], Path | None]:
    """Every suite's prompt items (at most its limit) and the shared data directory; bad suites fail here."""
    suites = parse_suites(settings.suites, settings.attacks)
    named = [s for s in suites if suite_kind(s) != "custom"]
    data_dir = find_data_dir(settings.data_dir) if named or settings.data_dir else None
    if "local" in [n for n, _ in judges.parse_specs(settings.harm_scorer)] and data_dir is None:
        try:
            data_dir = find_data_dir(settings.data_dir)
        except TasftError:
            data_dir = None
    unknown = set(settings.suite_limits) - {suite_name(s) for s in suites}
    if unknown:
        raise TasftError(f"suite limit for a suite not evaluated: {', '.join(sorted(unknown))}")
    limits = {s: settings.suite_limits.get(suite_name(s), settings.suite_limits.get(
        suite_name(split_attack(s)[0]), settings.limit)) for s in suites}  # S@T: S's limit unless T has its own
    return {s: load_suite(s, data_dir, limits[s]) for s in suites}, data_dir


def check_settings(settings: EvalSettings) -> None:
    """One-line errors for impossible settings, before anything is loaded or written."""
    if settings.limit is not None and settings.limit < 1:
        raise TasftError(f"--limit: must be >= 1, got {settings.limit}")
    for name, value in settings.suite_limits.items():
        if value < 1:
            raise TasftError(f"--suite-limit {name}: must be >= 1, got {value}")
    judges.check_judge_name(settings.harm_scorer)
    settings.generation.check()


def evaluate(settings: EvalSettings, progress: bool = True) -> dict:
    """Run every suite for one model; returns (and writes) the metrics."""
    check_settings(settings)
    items, data_dir = _suite_items(settings)
    out = Path(settings.out).expanduser()
    _check_out_dir(out, settings)
    from ..models import load_tokenizer

    tokenizer = load_tokenizer(settings.model)
    for rows in items.values():  # a prompt that is too long fails now, not after the model has loaded
        check_prompt_lengths(tokenizer, rows, settings.generation.max_prompt_tokens)
    lock = _claim_out_dir(out, settings)
    try:
        return _evaluate(settings, items, data_dir, tokenizer, out, progress)
    finally:
        lock.release()


def _evaluate(settings: EvalSettings, items: dict[str, list[dict]], data_dir: Path | None, tokenizer, out: Path,
              progress: bool) -> dict:
    from ..models import load_model

    reset_peak_rss()
    loaded = judges.load_judges(settings.harm_scorer, judges.JudgeOptions(settings.scorer_path, data_dir,
                                                                         deberta_model=settings.deberta_model))
    judge, others = (loaded[0], loaded[1:]) if loaded else (None, [])
    started = time.perf_counter()
    model = load_model(settings.model)
    extra = provenance(settings.model, settings.generation.seed)
    gen_seconds = _previous_seconds(out)
    targets = {s: out / "generations" / f"{suite_name(s)}.jsonl" for s in items}
    # one generation pass over every suite with prompts left (finished prompts are kept, with their earlier time):
    # all of them share the length-sorted batches, so no suite ends on a short batch and workers stay busy
    todo = [s for s in items if not finished(items[s], targets[s])]
    if todo:
        t0 = time.perf_counter()
        generate_files(model, tokenizer, [(items[s], targets[s]) for s in todo], settings.generation, extra=extra,
                       progress=progress)
        key = "+".join(suite_name(s) for s in todo)  # the pass's seconds, under the suites it generated
        gen_seconds[key] = round(gen_seconds.get(key, 0.0) + time.perf_counter() - t0, 1)
    rows: dict[str, list[dict]] = {}
    for s, suite_items in items.items():
        target = targets[s]
        by_id = {str(r["id"]): r for r in read_jsonl(target)}
        rows[s] = [by_id[str(it["id"])] for it in suite_items]  # exactly this run's prompts, whatever came before
    scoring_started = time.perf_counter()
    embedder = getattr(judge, "embedder", None)
    per_suite: dict[str, dict] = {}
    scored_rows: dict[str, list[dict]] = {}
    for s in items:
        name = suite_name(s)
        scored = judges.score_rows(rows[s], judge, progress=progress,
                                   others=others if suite_kind(s) in JUDGED_KINDS else ())
        if suite_kind(s) == "quality" or suite_kind(s) == "custom" and any(r.get("reference") for r in scored):
            quality = quality_metrics(model, tokenizer, scored, embedder, progress)
        else:
            quality = None
        write_jsonl_atomic(out / "scores" / f"{name}.jsonl", scored)
        scored_rows[name] = scored
        per_suite[name] = {"kind": suite_kind(s), **suite_metrics(scored)}
        if quality is not None:
            per_suite[name]["quality"] = quality
        if suite_kind(s) in JUDGED_KINDS and (agreement := judge_agreement(scored)) is not None:
            per_suite[name]["judge_agreement"] = agreement
        if suite_kind(s) in JUDGED_KINDS and others:
            per_suite[name]["judges"] = judges.judge_columns(scored)
    from .attacks import attack_summary
    from .report import render_single_markdown, training_summary

    metrics = {
        "model": settings.model,
        "training": training_summary(settings.model),
        "harm_scorer": settings.harm_scorer,
        "harm_threshold": getattr(judge, "threshold", None),
        "limit": settings.limit,
        "suite_limits": settings.suite_limits,
        "generation": asdict(settings.generation),
        "spec": settings.spec,
        "summary": summary_metrics(per_suite),
        "suites": per_suite,
        "generation_seconds": gen_seconds,
        "scoring_seconds": round(time.perf_counter() - scoring_started, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),  # this invocation (scoring + any generation)
        **peak_rss_fields(),  # this process's judges, model, generation, scoring (not forked --workers)
    }
    if (attacks := attack_summary(per_suite, scored_rows)) is not None:
        metrics["attacks"] = attacks
    add_intervals(metrics, scored_rows)
    metrics["judge_validation"] = judge_validation(judge, data_dir)
    write_json_atomic(out / "metrics.json", metrics)
    write_text_atomic(out / "report.md", render_single_markdown(metrics))
    return metrics
