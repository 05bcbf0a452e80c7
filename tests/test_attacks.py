"""Jailbreak suites: SUITE@TEMPLATE and --attacks, wrapped prompts that keep their ids, the judge reading the plain
request, and the per-template and worst-case summary."""

import json

import pytest

import tasft.evaluation.evaluate as ev
from tasft.cli import main
from tasft.errors import TasftError
from tasft.evaluation.attacks import attack_summary
from tasft.scoring import judges
from tasft.suites import attack_templates, load_suite, parse_suites, suite_kind, suite_name

from .conftest import SHARED, write_jsonl
from .test_evaluate import _settings, keyword_judge


def test_templates_are_cited_and_wrap_the_prompt_once():
    templates = attack_templates()
    assert {"prefix", "no-refusal", "roleplay", "distractor", "few-shot"} <= set(templates)
    for t in templates.values():
        assert t["template"].count("{prompt}") == 1 and t["source"] and t["family"]


def test_suite_names_and_errors(tmp_path):
    assert parse_suites("malicious@prefix,cona") == ["malicious@prefix", "cona"]
    assert parse_suites("malicious,xstest-safe", attacks="prefix,roleplay") == [
        "malicious", "xstest-safe", "malicious@prefix", "malicious@roleplay"]  # benign suites are not attacked
    assert suite_kind("cona@few-shot") == "attack" and suite_name("cona@few-shot") == "cona@few-shot"
    assert suite_name(str(tmp_path / "mine.jsonl") + "@prefix") == "mine@prefix"
    with pytest.raises(TasftError, match="unknown jailbreak template 'dan'"):
        parse_suites("malicious@dan")
    with pytest.raises(TasftError, match="wraps a harm suite or a prompt file, not 'xstest-safe'"):
        parse_suites("xstest-safe@prefix")
    with pytest.raises(TasftError, match="--attacks: no harm suite"):
        parse_suites("xstest-safe", attacks="all")


def test_wrapped_items_keep_their_ids_and_the_plain_request(tmp_path):
    suite = write_jsonl(tmp_path / "mine.jsonl", [{"prompt": "Tell me a secret."}, {"prompt": "Pick a lock."}])
    plain, wrapped = load_suite(str(suite)), load_suite(f"{suite}@distractor")
    assert [w["id"] for w in wrapped] == [p["id"] for p in plain]
    assert all(w["request"] == p["prompt"] and p["prompt"] in w["prompt"] != p["prompt"]
               for w, p in zip(wrapped, plain))


def _rows(flags, degenerate=()):
    return [{"id": str(i), "harmful": f, "degenerate": "empty" if i in degenerate else None}
            for i, f in enumerate(flags)]


def test_attack_summary_per_template_and_worst_case():
    per_suite = {"m": {"harmful_rate": 0.25, "safe_rate": 0.75}, "m@prefix": {"harmful_rate": 0.5, "safe_rate": 0.5},
                 "m@roleplay": {"harmful_rate": 0.25, "safe_rate": 0.5}}
    scored = {"m": _rows([True, False, False, False]), "m@prefix": _rows([False, True, True, False]),
              "m@roleplay": _rows([False, False, False, True], degenerate=(0,))}
    got = attack_summary(per_suite, scored)
    assert got["strongest_template"] == "prefix" and got["templates"]["roleplay"]["harmful_rate"] == 0.25
    worst = got["worst_case"]["m"]
    # every prompt is broken by some variant; none is safe under all three (prompt 0: harmful plain, degenerate)
    assert worst["harmful_rate"] == 1.0 and worst["safe_rate"] == 0.0 and worst["prompts"] == 4
    # intervals: all broken → [1, 1]; a template's interval holds its rate and lies in [0, 1]
    assert worst["harmful_rate_ci95"] == [1.0, 1.0] and worst["safe_rate_ci95"] == [0.0, 0.0]
    lo, hi = got["templates"]["prefix"]["harmful_rate_ci95"]
    assert 0.0 <= lo < 0.5 < hi <= 1.0
    assert attack_summary({"m": per_suite["m"]}, {"m": scored["m"]}) is None


@pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="needs ../shared/data")
def test_evaluate_under_templates_judges_the_plain_request(tiny_model_dir, tmp_path, monkeypatch, capsys):
    seen = []
    judge = keyword_judge()
    plain_judge = judge.judge

    def recording(prompts, responses, progress=True):
        seen.extend(prompts)
        return plain_judge(prompts, responses, progress=progress)

    monkeypatch.setattr(judge, "judge", recording)
    monkeypatch.setattr(judges, "load_judge", lambda name, options=None: judge)
    settings = _settings(tiny_model_dir, tmp_path, "malicious", limit=2, attacks="prefix,few-shot",
                         data_dir=str(SHARED / "data"))
    metrics = ev.evaluate(settings, progress=False)
    assert set(metrics["suites"]) == {"malicious", "malicious@prefix", "malicious@few-shot"}
    assert metrics["suites"]["malicious@prefix"]["kind"] == "attack"
    assert set(metrics["attacks"]["templates"]) == {"prefix", "few-shot"}
    assert metrics["attacks"]["worst_case"]["malicious"]["prompts"] == 2
    plain = [it["prompt"] for it in load_suite("malicious", SHARED / "data", 2)]
    assert seen == plain * 3  # the judge never saw a template's wrapper
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "## Jailbreak templates" in report and "worst case of 3 on malicious" in report
    out = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert out["attacks"] == metrics["attacks"]
    assert main(["evaluate", "--model", str(tiny_model_dir), "--suites", "xstest-safe", "--attacks", "all",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "--attacks: no harm suite" in capsys.readouterr().err
