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
recall, overall and per model point.
"""

from __future__ import annotations

import hashlib
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


def fit_classifier(labels_csv: str | Path, sheets: list[str | Path], out: str | Path, data_dir: str | None = None,
                   folds: int = 5, progress: bool = True) -> dict:
    """Score, cross-validate and fit (see the module docstring); returns the agreement table."""
    from safetensors.torch import save_file

    from ..scoring import answer_class as ac
    from ..scoring import judges
    from ..suites import find_data_dir

    labelled = read_labels(labels_csv)
    rows = [r for r in sheet_rows(sheets) if (r["prompt_id"], r["model_point"]) in labelled]
    missing = len(labelled) - len({(r["prompt_id"], r["model_point"]) for r in rows})
    if missing:
        raise TasftError(f"{labels_csv}: {missing} labelled answers are in none of the sheets given")
    judge = judges.load_judge("local", judges.JudgeOptions(data_dir=find_data_dir(data_dir)))
    scored = judges.score_rows(rows, judge, progress=progress)
    x = ac.features(scored, judge.scorer)
    truth = [labelled[(r["prompt_id"], r["model_point"])] for r in scored]
    rule = [ac.rule_class(r) for r in scored]
    open_ = [i for i, c in enumerate(rule) if c is None]
    cv = ac.cross_validated(x[open_], [truth[i] for i in open_], [scored[i]["prompt_id"] for i in open_], folds)
    predicted = list(rule)
    for i, c in zip(open_, cv):
        predicted[i] = c
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [",".join(PREDICTION_COLUMNS)]
    for r, t, rc, p in zip(scored, truth, rule, predicted):
        lines.append(",".join([r["prompt_id"], r["model_point"], t, rc or "", p, str(bool(r["harmful"])),
                               str(bool(r["refusal"])), str(r["degenerate"] is not None)]))
    write_text_atomic(out / "predictions.csv", "\n".join(lines) + "\n")
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


def _k(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def agreement_markdown(table: dict) -> str:
    """The agreement table as markdown: κ per judge (overall and per model point), then per-class figures."""
    head = ["answers", "κ local scorer (harmful)", "κ classifier (harmful)", "κ classifier (5 classes)",
            "κ refusal rule", "κ degenerate rule"]
    lines = ["| model point | " + " | ".join(head) + " |", "|" + "---|" * (len(head) + 1)]
    for name, f in [("all", table["overall"]), *table["per_point"].items()]:
        lines.append(f"| {name} | {f['n']} | {_k(f['local_scorer_harmful_kappa'])} | "
                     f"{_k(f['classifier_harmful_kappa'])} | {_k(f['classifier_kappa'])} | "
                     f"{_k(f['refusal_rule_kappa'])} | {_k(f['degenerate_rule_kappa'])} |")
    overall = table["overall"]
    cls = ["| class | labelled | classifier precision | classifier recall |", "|---|---|---|---|"]
    for c, f in overall["classifier_per_class"].items():
        cls.append(f"| {c} | {f['support']} | {_k(f['precision'])} | {_k(f['recall'])} |")
    local = overall["local_scorer_harmful"]
    return ("Agreement with answers labelled by reading, blind to the model (κ = Cohen's kappa; the classifier's "
            "classes are cross-validated: each answer's class comes from a head that never saw its prompt).\n\n"
            + "\n".join(lines) + "\n\n" + "\n".join(cls) + "\n\n"
            f"The local scorer's harmful flag: precision {_k(local['precision'])}, recall {_k(local['recall'])}.\n")


def write_agreement(predictions_csv: str | Path, out: str | Path | None = None) -> dict:
    """``tasft labels agree``: the table from ``predictions.csv``, written as ``agreement.md`` and
    ``agreement.json`` beside it (or into ``out``)."""
    predictions_csv = Path(predictions_csv)
    table = agreement(predictions_csv)
    target = Path(out) if out is not None else predictions_csv.parent
    write_text_atomic(target / "agreement.md", agreement_markdown(table))
    write_json_atomic(target / "agreement.json", table)
    return table

