"""How far each judge agrees with answers labelled by reading (:mod:`.labels`), and the answer-class head fitted on
those labels (:mod:`tasft.scoring.answer_class`).

``tasft labels fit LABELS.csv SHEET... --out DIR`` reads the labelled answers' text from the sheets, scores them
as an evaluation does (the local harmfulness scorer, the rules), predicts each answer's class with a head that never
saw its prompt (nested cross-validation split by prompt) and writes, with no text:

* ``DIR/predictions.csv`` — per labelled answer: its label, the rules' class, the cross-validated class, the local
  scorer's harmful flag, the refusal and degenerate rules' flags;
* ``DIR/answer_head.safetensors`` + ``answer_head.json`` — the head fitted on every label (what evaluations use
  once copied into the package's ``data_files/answer_head``), with its cross-validated figures.

``tasft labels agree DIR/predictions.csv`` recomputes the agreement table from that file alone: Cohen's κ of each
judge against the labels (the local scorer's harmful flag and the classifier's harmful class, harmful vs not; the
refusal rule, refusal vs not; the degenerate rule; the classifier's five classes) and each class's precision and
recall, overall and per model point, with the share of answers read as harmful beside the share the classifier
calls harmful on the same answers (a point's harmful rate is only as good as these two agree; with 30 answers a
point, either share carries about ±0.15 of sampling noise).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import TasftError
from ..io_utils import read_jsonl, write_json_atomic, write_text_atomic
from .labels import ANSWER_CLASSES, SHEET_ANSWERS, SHEET_KEY, _read_csv, cohen_kappa, per_class, read_labels

PREDICTION_COLUMNS = ("prompt_id", "model_point", "label", "rule_class", "predicted", "local_harmful", "refusal_rule",
                      "degenerate_rule")
HEAD_NAME = "answer_head"


def sheet_rows(sheets: list[str | Path]) -> list[dict]:
    """The answers of labelling sheets with their prompt ids and model points (text: kept in memory only)."""
    rows = []
    for sheet in map(Path, sheets):
        key = {r["item"]: r for r in _read_csv(sheet / SHEET_KEY, ("item", "prompt_id", "model_point"))}
        for answer in read_jsonl(sheet / SHEET_ANSWERS):
            k = key.get(str(answer["item"]))
            if k is not None:
                rows.append({"prompt": answer["prompt"], "response": answer["answer"], "prompt_id": k["prompt_id"],
                             "model_point": k["model_point"]})
    return rows


def _scored(labels_csv: str | Path, sheets: list[str | Path], data_dir: str | None, progress: bool):
    """The labelled answers of ``sheets`` scored as an evaluation scores them: (rows, their labels, the judge)."""
    from ..scoring import judges
    from ..suites import find_data_dir

    labelled = read_labels(labels_csv)
    rows = [r for r in sheet_rows(sheets) if (r["prompt_id"], r["model_point"]) in labelled]
    missing = len(labelled) - len({(r["prompt_id"], r["model_point"]) for r in rows})
    if missing:
        raise TasftError(f"{labels_csv}: {missing} labelled answers are in none of the sheets given")
    judge = judges.load_judge("local", judges.JudgeOptions(data_dir=find_data_dir(data_dir)))
    scored = judges.score_rows(rows, judge, progress=progress)
    return scored, [labelled[(r["prompt_id"], r["model_point"])] for r in scored], judge


def _write_predictions(out: Path, scored: list[dict], truth: list[str], rule: list, predicted: list) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = [",".join(PREDICTION_COLUMNS)]
    for r, t, rc, p in zip(scored, truth, rule, predicted):
        lines.append(",".join([r["prompt_id"], r["model_point"], t, rc or "", p, str(bool(r["harmful"])),
                               str(bool(r["refusal"])), str(r["degenerate"] is not None)]))
    write_text_atomic(out / "predictions.csv", "\n".join(lines) + "\n")


def fit_classifier(labels_csv: str | Path, sheets: list[str | Path], out: str | Path, data_dir: str | None = None,
                   folds: int = 5, progress: bool = True) -> dict:
    """Score, cross-validate and fit (see the module docstring); returns the agreement table."""
    from safetensors.torch import save_file

    from ..scoring import answer_class as ac

    scored, truth, judge = _scored(labels_csv, sheets, data_dir, progress)
    x = ac.features(scored, judge.scorer)
    rule = [ac.rule_class(r) for r in scored]
    open_ = [i for i, c in enumerate(rule) if c is None]
    cv = ac.cross_validated(x[open_], [truth[i] for i in open_], [scored[i]["prompt_id"] for i in open_], folds)
    predicted = list(rule)
    for i, c in zip(open_, cv):
        predicted[i] = c
    out = Path(out)
    _write_predictions(out, scored, truth, rule, predicted)
    (out / CLASSIFIED_BY).unlink(missing_ok=True)  # an earlier check's: these classes are cross-validated
    table = agreement(out / "predictions.csv")
    l2 = ac.choose_l2(x[open_], [truth[i] for i in open_], [scored[i]["prompt_id"] for i in open_], folds)
    head = ac.fit_head(x[open_], [truth[i] for i in open_], l2)
    save_file({"weight": head.weight.contiguous(), "bias": head.bias, "mean": head.mean, "std": head.std,
               "center": head.center.contiguous(), "components": head.components.contiguous()},
              str(out / f"{HEAD_NAME}.safetensors"))
    digest = hashlib.sha256(Path(labels_csv).read_bytes()).hexdigest()
    write_json_atomic(out / f"{HEAD_NAME}.json", {
        "classes": list(ac.HEAD_CLASSES), "features": list(ac.FEATURE_NAMES) + ["e(r)", "e(p)*e(r)"],
        "pca_components": ac.PCA_COMPONENTS, "class_weights": "balanced",
        "embedding_model": getattr(judge.scorer, "meta", {}).get("embedding_model"),
        "local_scorer_threshold": judge.threshold, "l2": l2, "labels_sha256": digest,
        "labels": len(truth), "fitted_on": len(open_), "cross_validated": table["overall"]})
    write_text_atomic(out / "agreement.md", agreement_markdown(table))
    write_json_atomic(out / "agreement.json", table)
    return table


CLASSIFIED_BY = "classified_by.json"  # beside a predictions.csv whose classes came from a head as is (not refit)


def check_classifier(labels_csv: str | Path, sheets: list[str | Path], out: str | Path,
                     head_dir: str | Path | None = None, data_dir: str | None = None, progress: bool = True) -> dict:
    """``tasft labels check``: how far the answer classes every evaluation writes agree with these labels — the
    rules, then the head of ``head_dir`` (default: the shipped one) **as it is**, not refit: on answers it was not
    fitted on (another model's, your own) this is the held-out agreement. Writes ``predictions.csv``,
    ``classified_by.json`` (which head: its metadata and SHA-256, and whether these are the very labels it was
    fitted on, which makes the figures in-sample) and the agreement table; returns the table."""
    from ..scoring import answer_class as ac

    named = "shipped (tasft/data_files/answer_head)" if head_dir is None else str(head_dir)
    if (Path(out) / f"{HEAD_NAME}.safetensors").exists():
        raise TasftError(f"{out}: holds a head fitted by tasft labels fit, whose figures are of its own predictions; "
                         "write the check to another --out")
    head_dir = Path(str(head_dir if head_dir is not None else ac.default_head_dir()))
    head = ac.load_head(head_dir)
    if head is None:
        raise TasftError(f"{head_dir}: no answer-class head there ({ac.HEAD_FILE}.safetensors and .json)")
    scored, truth, judge = _scored(labels_csv, sheets, data_dir, progress)
    rule = [ac.rule_class(r) for r in scored]
    predicted = ac.classify(scored, judge.scorer, head)
    out = Path(out)
    _write_predictions(out, scored, truth, rule, predicted)
    meta = json.loads((head_dir / f"{ac.HEAD_FILE}.json").read_text(encoding="utf-8"))
    write_json_atomic(out / CLASSIFIED_BY, {
        "head": named, "labels_fitted_on": meta.get("labels"), "labels_sha256": meta.get("labels_sha256"),
        "weights_sha256": hashlib.sha256((head_dir / f"{ac.HEAD_FILE}.safetensors").read_bytes()).hexdigest(),
        "in_sample": meta.get("labels_sha256") == hashlib.sha256(Path(labels_csv).read_bytes()).hexdigest()})
    return write_agreement(out / "predictions.csv")


def _rows(path: Path) -> list[dict]:
    rows = _read_csv(path, PREDICTION_COLUMNS)
    if not rows:
        raise TasftError(f"{path}: no predictions")
    return rows


def _figures(rows: list[dict]) -> dict:
    truth = [r["label"] for r in rows]
    harmful = [t == "harmful" for t in truth]
    flag = {"True": True, "False": False}
    out = {"n": len(rows), "labels": {c: truth.count(c) for c in ANSWER_CLASSES}}
    out["local_scorer_harmful_kappa"] = cohen_kappa(harmful, [flag[r["local_harmful"]] for r in rows])
    out["refusal_rule_kappa"] = cohen_kappa([t == "refusal" for t in truth], [flag[r["refusal_rule"]] for r in rows])
    out["degenerate_rule_kappa"] = cohen_kappa([t == "degenerate" for t in truth],
                                               [flag[r["degenerate_rule"]] for r in rows])
    predicted = [r["predicted"] for r in rows]
    out["harmful_share_read"] = sum(harmful) / len(rows)  # a rate's bias: what reading finds vs the classifier
    out["harmful_share_classified"] = predicted.count("harmful") / len(rows)
    out["classifier_harmful_kappa"] = cohen_kappa(harmful, [p == "harmful" for p in predicted])
    out["classifier_kappa"] = cohen_kappa(truth, predicted)
    out["classifier_per_class"] = per_class(truth, predicted)
    out["local_scorer_harmful"] = per_class(["harmful" if h else "other" for h in harmful],
                                            ["harmful" if flag[r["local_harmful"]] else "other" for r in rows],
                                            classes=("harmful",))["harmful"]
    return out


def agreement(predictions_csv: str | Path) -> dict:
    """The agreement table (see the module docstring) from a ``predictions.csv``."""
    rows = _rows(Path(predictions_csv))
    points = sorted({r["model_point"] for r in rows})
    return {"overall": _figures(rows), "per_point": {p: _figures([r for r in rows if r["model_point"] == p])
                                                     for p in points}}


def shown(value: float | None) -> str:
    """A figure as printed: two decimals, or a dash where it is undefined (e.g. a κ with one side constant)."""
    return "–" if value is None else f"{value:.2f}"


def _classes_from(by: dict | None) -> str:
    """Where the classifier's classes of an agreement table came from, as a phrase."""
    if by is None:
        return ("the classifier's classes are cross-validated: each answer's class comes from a head that never saw "
                "its prompt")
    where = (f"the head as it is (fitted on {by.get('labels_fitted_on')} labels; weights SHA-256 "
             f"{str(by.get('weights_sha256'))[:12]})")
    if by.get("in_sample"):
        return f"the classifier's classes come from {where}, fitted on these very labels: in-sample, optimistic"
    return f"the classifier's classes come from {where}, not refit on these labels"


def agreement_markdown(table: dict, classified_by: dict | None = None) -> str:
    """The agreement table as markdown: per model point (and overall) the share of answers read as harmful beside
    the share the classifier calls harmful on the same answers (how far a point's harmful rate is off, up to the
    sample's own noise), κ per judge; then per-class figures.
    ``classified_by``: where the classifier's classes came from (:data:`CLASSIFIED_BY`; None: cross-validated)."""
    head = ["answers", "harmful: read / classified", "κ local scorer (harmful)", "κ classifier (harmful)",
            "κ classifier (5 classes)", "κ refusal rule", "κ degenerate rule"]
    lines = ["| model point | " + " | ".join(head) + " |", "|" + "---|" * (len(head) + 1)]
    for name, f in [("all", table["overall"]), *table["per_point"].items()]:
        lines.append(f"| {name} | {f['n']} | {shown(f['harmful_share_read'])} / "
                     f"{shown(f['harmful_share_classified'])} | {shown(f['local_scorer_harmful_kappa'])} | "
                     f"{shown(f['classifier_harmful_kappa'])} | {shown(f['classifier_kappa'])} | "
                     f"{shown(f['refusal_rule_kappa'])} | {shown(f['degenerate_rule_kappa'])} |")
    overall = table["overall"]
    cls = ["| class | labelled | classifier precision | classifier recall |", "|---|---|---|---|"]
    for c, f in overall["classifier_per_class"].items():
        cls.append(f"| {c} | {f['support']} | {shown(f['precision'])} | {shown(f['recall'])} |")
    local = overall["local_scorer_harmful"]
    return ("Agreement with answers labelled by reading, blind to the model (κ = Cohen's kappa; "
            f"{_classes_from(classified_by)}).\n\n"
            + "\n".join(lines) + "\n\n" + "\n".join(cls) + "\n\n"
            f"The local scorer's harmful flag: precision {shown(local['precision'])}, "
            f"recall {shown(local['recall'])}.\n")


def write_agreement(predictions_csv: str | Path, out: str | Path | None = None) -> dict:
    """``tasft labels agree``: the table from ``predictions.csv``, written as ``agreement.md`` and
    ``agreement.json`` beside it (or into ``out``)."""
    predictions_csv = Path(predictions_csv)
    table = agreement(predictions_csv)
    by_file = predictions_csv.parent / CLASSIFIED_BY
    by = json.loads(by_file.read_text(encoding="utf-8")) if by_file.is_file() else None
    if by is not None:
        table["classified_by"] = by
    target = Path(out) if out is not None else predictions_csv.parent
    write_text_atomic(target / "agreement.md", agreement_markdown(table, by))
    write_json_atomic(target / "agreement.json", table)
    return table

