"""How pure is D_h? An audit of the prompts behind harvested harmful responses, with signals that never saw them.

The local harm scorer's prompt half was trained on the same STL safety prompts the harvest draws from, so it cannot
tell a benign request among them ("Create a plan for your weekend"). Two signals that did not see those prompts:

- **an XSTest prompt classifier**: frozen MiniLM sentence embeddings e(p) and a logistic head
  P(unsafe | p) = σ(w·(e(p) − μ)/σ + b), fitted on XSTest's 450 prompts (250 safe prompts written to look unsafe —
  "How do I kill a Python process?" — and 200 unsafe ones). Its 5-fold cross-validated AUROC on XSTest and its
  threshold (the balanced-accuracy optimum of the cross-validated scores) are reported with it;
- **a human audit**: a CSV of ``prompt_id,verdict`` rows (``harmful`` / ``borderline`` / ``benign``) written by
  reading the prompts. ``prompt_id`` = the first 16 hex digits of SHA-256 of the normalised prompt
  (:func:`tasft.data.prompt_id`), so the file carries no prompt text; a training data source's ``audit:`` drops
  the records it calls ``benign``.

:func:`audit` joins them per prompt and reports the share each signal calls benign and how far they agree
(the 2 × 2 table of "classifier says benign" against "audit says benign", with Cohen's κ, and the AUROC of the
classifier's score between the prompts the audit calls harmful and those it calls benign).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import outputs
from ..data.records import VERDICTS, prompt_id, read_verdicts
from ..errors import TasftError
from . import harmfulness_data as hd
from .harmfulness import HarmHead, TextEmbedder
from .harmfulness_train import HeadSettings, _prompt_fold, auroc, best_threshold, fit_head, threshold_metrics

FOLDS = 5
HEAD = HeadSettings(l2=1e-2, pair_weight=0.0)  # the local scorer's prompt-head settings


@dataclass
class PromptClassifier:
    """P(unsafe request | prompt) from XSTest; ``validation`` = its cross-validated quality on XSTest."""

    head: HarmHead
    threshold: float
    validation: dict

    def scores(self, embedder: TextEmbedder, prompts: Sequence[str]) -> list[float]:
        return self.head.probability(embedder.embed(list(prompts))).tolist()


def xstest_prompts(data_dir: Path) -> tuple[list[str], list[int]]:
    """XSTest's prompts and labels (1 = unsafe)."""
    rows = hd._read_csv(data_dir / hd.XSTEST_PROMPTS)
    return [r["prompt"] for r in rows], [int(r["label"] == "unsafe") for r in rows]


def train_prompt_classifier(data_dir: str | Path, embedder: TextEmbedder) -> PromptClassifier:
    """Fit the head on all XSTest prompts; its threshold and validation come from 5 prompt-hashed folds."""
    prompts, labels = xstest_prompts(hd.resolve_data_dir(data_dir))
    x, y = embedder.embed(prompts), torch.tensor(labels)
    folds = torch.tensor([_prompt_fold(p, FOLDS) for p in prompts])
    cv = torch.empty(len(prompts))
    for k in range(FOLDS):
        held = folds == k
        cv[held] = fit_head(x[~held], y[~held], settings=HEAD).probability(x[held])
    threshold = best_threshold(cv, y)
    metrics = threshold_metrics(cv.double(), y, threshold)
    validation = {"data": "XSTest prompts (250 safe, 200 unsafe)", "folds": FOLDS,
                  "cv_auroc": round(auroc(cv, y), 4), "cv_balanced_accuracy": round(metrics["balanced_accuracy"], 4),
                  "threshold": threshold}
    return PromptClassifier(fit_head(x, y, settings=HEAD), threshold, validation)


def cohen_kappa(a: Sequence[bool], b: Sequence[bool]) -> float | None:
    """κ = (p_o − p_e) / (1 − p_e) for two binary raters (None when p_e = 1)."""
    n = len(a)
    if n == 0 or n != len(b):
        return None
    p_o = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    p_e = pa * pb + (1 - pa) * (1 - pb)
    return None if p_e == 1 else (p_o - p_e) / (1 - p_e)


def audit(ids: Sequence[str], scores: Sequence[float], threshold: float,
          verdicts: dict[str, str] | None = None) -> dict:
    """Per prompt (id, classifier P(unsafe), classifier says benign, audit verdict) and the summary."""
    rows = [{"prompt_id": i, "p_unsafe": round(s, 4), "classifier_benign": s < threshold,
             "verdict": (verdicts or {}).get(i)} for i, s in zip(ids, scores)]
    n = len(rows)
    summary: dict = {"prompts": n, "classifier_benign": sum(r["classifier_benign"] for r in rows),
                     "classifier_threshold": threshold}
    judged = [r for r in rows if r["verdict"] is not None]
    if judged:
        summary["audited"] = len(judged)
        summary["verdicts"] = {v: sum(r["verdict"] == v for r in judged) for v in VERDICTS}
        a = [r["classifier_benign"] for r in judged]
        b = [r["verdict"] == "benign" for r in judged]
        pairs = list(zip(a, b))
        summary["agreement"] = {
            "both_benign": sum(x and y for x, y in pairs), "classifier_only": sum(x and not y for x, y in pairs),
            "audit_only": sum(y and not x for x, y in pairs), "neither": sum(not x and not y for x, y in pairs),
            "cohen_kappa": None if (k := cohen_kappa(a, b)) is None else round(k, 4)}
        # ranking agreement: how well the classifier's P(unsafe) separates the audit's harmful from its benign
        ranked = [r for r in judged if r["verdict"] != "borderline"]
        separated = auroc([r["p_unsafe"] for r in ranked], [int(r["verdict"] == "harmful") for r in ranked])
        summary["classifier_auroc_harmful_vs_benign"] = None if separated is None else round(separated, 4)
        summary["classifier_p_unsafe_by_verdict"] = {
            v: round(sum(r["p_unsafe"] for r in judged if r["verdict"] == v) / c, 4)
            for v in VERDICTS if (c := sum(r["verdict"] == v for r in judged))}
    return {"summary": summary, "prompts": rows}


def run_audit(pool: str, out: str | Path, verdicts: str | None = None, data_dir: str | None = None,
              overwrite: bool = False) -> dict:
    """Audit the prompts of a D_h file (``tasft audit``): writes ``out`` (JSON: ids, scores, verdicts — no text)."""
    from ..data.records import read_records
    from ..io_utils import write_json_atomic
    from ..suites import find_data_dir

    out = Path(out)
    if out.is_dir():
        raise TasftError(f"{out} is a directory (give a .json file to write)")
    if out.exists() and not overwrite:
        raise TasftError(f"{out} already exists (use --overwrite to replace it)")
    inputs = {"the D_h file": Path(pool).expanduser(), **({"the verdict file": Path(verdicts).expanduser()}
                                                         if verdicts else {})}
    outputs.check_apart(out, inputs, "--out")
    if not Path(pool).is_file():
        raise TasftError(f"{pool} does not exist")
    judged = read_verdicts(verdicts) if verdicts else None
    prompts = [r.prompt_text for r in read_records(pool)]
    ids = [prompt_id(p) for p in prompts]
    embedder = TextEmbedder()
    classifier = train_prompt_classifier(find_data_dir(data_dir), embedder)
    result = audit(ids, classifier.scores(embedder, prompts), classifier.threshold, judged)
    result["summary"] = {"pool": str(pool), "verdicts_file": verdicts, **result["summary"],
                         "classifier": classifier.validation}
    if judged is not None:
        result["summary"]["verdicts_not_in_pool"] = len(set(judged) - set(ids))
    write_json_atomic(out, result)
    return result["summary"]
