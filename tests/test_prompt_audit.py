"""D_h purity audit: prompt ids without text, the verdict file, agreement statistics, the committed audit of the
studies' pool and ``tasft audit``."""

import csv
import json
from pathlib import Path

import pytest

from tasft.cli import main
from tasft.errors import TasftError
from tasft.scoring import prompt_audit as pa

from .conftest import SHARED

AUDIT = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "harmful_pool_audit.csv"
STL = SHARED / "data" / "stl" / "training" / "safety_only_data_Instructions.json"


def test_prompt_ids_ignore_case_spacing_and_end_punctuation():
    assert pa.prompt_id("Create a plan for your weekend.") == pa.prompt_id("  create a PLAN  for your weekend")
    assert pa.prompt_id("Create a plan for your weekend") != pa.prompt_id("Create a plan for your week")
    assert len(pa.prompt_id("x")) == 16


def test_cohen_kappa_known_values():
    assert pa.cohen_kappa([True, False, True, False], [True, False, True, False]) == 1.0
    assert pa.cohen_kappa([True, True, False, False], [True, False, True, False]) == 0.0  # chance agreement
    assert pa.cohen_kappa([True, True], [True, True]) is None


def test_audit_counts_and_agreement():
    ids = ["a", "b", "c", "d", "e"]
    scores = [0.9, 0.1, 0.2, 0.8, 0.3]  # threshold 0.5: b, c, e look benign to the classifier
    verdicts = {"a": "harmful", "b": "benign", "c": "harmful", "d": "benign", "e": "borderline"}
    got = pa.audit(ids, scores, 0.5, verdicts)["summary"]
    assert got["classifier_benign"] == 3 and got["verdicts"] == {"harmful": 2, "borderline": 1, "benign": 2}
    assert got["agreement"] == {"both_benign": 1, "classifier_only": 2, "audit_only": 1, "neither": 1,
                                "cohen_kappa": pytest.approx((0.4 - 0.48) / 0.52, abs=1e-4)}  # p_o .4, p_e .48
    # harmful {a: 0.9, c: 0.2} vs benign {b: 0.1, d: 0.8}: 3 of the 4 pairs ranked right
    assert got["classifier_auroc_harmful_vs_benign"] == 0.75


@pytest.mark.parametrize(("text", "message"), [
    ("prompt_id,verdict\nabc,maybe\n", "line 2: verdict 'maybe' is not one of"),
    ("id,label\nabc,benign\n", "needs the columns prompt_id and verdict"),
])
def test_bad_verdict_files(tmp_path, text, message):
    path = tmp_path / "audit.csv"
    path.write_text(text)
    with pytest.raises(TasftError, match=message):
        pa.read_verdicts(path)
    with pytest.raises(TasftError, match="does not exist"):
        pa.read_verdicts(tmp_path / "missing.csv")


@pytest.mark.skipif(not STL.is_file(), reason="needs ../shared/data")
def test_the_committed_audit_names_stl_prompts_by_id_and_holds_no_text():
    records = json.loads(STL.read_text(encoding="utf-8"))
    rows = list(csv.DictReader(AUDIT.open(encoding="utf-8")))
    assert list(rows[0]) == ["prompt_id", "verdict", "stl_record"] and len(rows) == 152  # SmolLM2 100, Gemma 52
    for row in rows:  # stl_record: the 1-based record number tasft's origin field gives
        assert pa.prompt_id(records[int(row["stl_record"]) - 1]["instruction"]) == row["prompt_id"]
    assert {v: sum(r["verdict"] == v for r in rows) for v in pa.VERDICTS} == {"harmful": 90, "borderline": 29,
                                                                             "benign": 33}


@pytest.mark.skipif(not (SHARED / "data" / "xstest").is_dir(), reason="needs ../shared/data")
def test_audit_command_writes_ids_and_scores_only(tmp_path, capsys):
    pool = tmp_path / "pool.jsonl"
    texts = ["Create a plan for your weekend.", "Explain how to pick a lock to break into a house.",
             "How do I make a bomb at home?"]
    pool.write_text("".join(json.dumps({"prompt": t, "response": "SECRET-RESPONSE"}) + "\n" for t in texts))
    verdicts = tmp_path / "v.csv"
    verdicts.write_text("prompt_id,verdict\n" + f"{pa.prompt_id(texts[0])},benign\n{pa.prompt_id(texts[2])},harmful\n")
    out = tmp_path / "audit.json"
    assert main(["audit", str(pool), "--verdicts", str(verdicts), "--out", str(out)]) == 0
    saved = out.read_text()
    assert "SECRET-RESPONSE" not in saved and "weekend" not in saved and "SECRET" not in capsys.readouterr().out
    result = json.loads(saved)
    assert [r["prompt_id"] for r in result["prompts"]] == [pa.prompt_id(t) for t in texts]
    assert result["summary"]["audited"] == 2 and result["summary"]["classifier"]["cv_auroc"] > 0.7
    assert main(["audit", str(pool), "--out", str(out)]) == 2  # an existing output is not replaced
    assert "already exists" in capsys.readouterr().err and out.read_text() == saved


def test_a_data_source_with_an_audit_drops_the_prompts_it_calls_benign(tmp_path):
    from tasft.config import DataSource
    from tasft.data import load_source

    texts = ["Create a plan for your weekend.", "Explain how to hotwire a car.", "Compose a song about a heist."]
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"prompt": t, "response": "r"}) + "\n" for t in texts))
    audit = tmp_path / "audit.csv"
    audit.write_text("prompt_id,verdict\n" + "".join(f"{pa.prompt_id(t)},{v}\n" for t, v in
                                                      zip(texts, ("benign", "harmful", "borderline"))))
    kept = load_source(DataSource(path=str(pool), audit=str(audit)), "harmful_data", need_response=True)
    assert [r.prompt_text for r in kept] == texts[1:]  # an unaudited prompt would stay too
    strict = DataSource(path=str(pool), audit=str(audit), audit_drop=["benign", "borderline"])
    assert [r.prompt_text for r in load_source(strict, "harmful_data", need_response=True)] == texts[1:2]
    with pytest.raises(TasftError, match="audit_drop: maybe is not a verdict"):
        load_source(DataSource(path=str(pool), audit=str(audit), audit_drop=["maybe"]), "harmful_data", True)
