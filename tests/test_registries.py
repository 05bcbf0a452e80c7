"""One entry each (issue 29, item 2): a throwaway method, penalty, judge and suite, each registered in its one
registry and nowhere else, reach the CLI's help, training, evaluation and the reports."""

from __future__ import annotations

import json

from tasft import suites
from tasft.cli import build_parser, main
from tasft.methods import METHODS
from tasft.methods.sft import Sft
from tasft.objectives import PENALTIES, Penalty, losses
from tasft.scoring import judges

from .conftest import HARMFUL, tiny_overrides


class EchoSft(Sft):
    name = "echo-sft"
    objective = "NLL(D_u), registered by a test"

    def describe(self, cfg, metrics) -> str:
        return "echo-sft: a test's method"


class VowelScorer:
    """Flags an answer with more than three vowels a (a judge with a threshold: flag = score ≥ ½)."""

    threshold = 0.5

    def score(self, prompts, responses, progress=True) -> list[float]:
        return [float(r.count("a") > 3) for r in responses]


def _help(parser, command: str) -> str:
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices[command].format_help()


def test_a_method_penalty_judge_and_suite_each_need_one_entry(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, "echo-sft", EchoSft())
    monkeypatch.setitem(PENALTIES, "half-nll", Penalty(
        "half-nll", -1.0, False, False, lambda lg, y, m, x: 0.5 * losses.nll_from_logits(lg, y, m, x.weights), None,
        "½·(−log P_t(y))"))
    monkeypatch.setitem(judges.JUDGES, "vowel", lambda options: judges.ScorerJudge("vowel", VowelScorer()))
    items = [{"id": f"mine-{i}", "prompt": p} for i, (p, _) in enumerate(HARMFUL)]
    monkeypatch.setitem(suites.SUITES, "mine", suites.Suite("mine", "harm", "a test's suite", lambda _dir: items,
                                                                ("mine.json",)))

    parser = build_parser()
    assert "echo-sft" in parser.format_help() and "vowel" in _help(parser, "evaluate")
    assert "mine" in _help(parser, "evaluate")

    method_run, penalty_run = tmp_path / "echo", tmp_path / "half"
    for out, extra in ((method_run, {"method": "echo-sft"}),
                       (penalty_run, {"method": "ta-sft", "ta_sft.penalty": "half-nll", "ta_sft.lambda": 0.5})):
        sets = [a for kv in tiny_overrides(tiny_model_dir, tiny_data, out, **extra) for a in ("--set", kv)]
        assert main(["train", *sets]) == 0
    trained = json.loads((method_run / "metrics.json").read_text())
    assert trained["method"] == "echo-sft" and "echo-sft: a test's method" in (method_run / "README.md").read_text()
    logs = [json.loads(line) for line in (penalty_run / "log.jsonl").read_text().splitlines()]
    assert any("penalty_half-nll" in r for r in logs)  # the penalty's own measure is logged as it trains

    evaluation = tmp_path / "eval"
    assert main(["evaluate", "--model", str(method_run), "--out", str(evaluation), "--suites", "mine",
                 "--harm-scorer", "vowel", "--max-new-tokens", "6"]) == 0
    metrics = json.loads((evaluation / "metrics.json").read_text())
    mine = metrics["suites"]["mine"]
    assert metrics["harm_scorer"].startswith("vowel") and mine["n"] == len(items)
    scored = [json.loads(line) for line in (evaluation / "scores" / "mine.jsonl").read_text().splitlines()]
    assert [r["harm_score"] for r in scored] == VowelScorer().score([], [r["response"] for r in scored])
    assert mine["harmful_rate"] == sum(r["harmful"] for r in scored) / len(scored)
    assert metrics["training"]["method"] == "echo-sft"
    assert main(["report", str(evaluation), "--out", str(tmp_path / "report")]) == 0
    assert "echo-sft" in (tmp_path / "report" / "report.md").read_text()
