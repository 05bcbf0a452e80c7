import json

import pytest

import tasft.evaluation.evaluate as ev
from tasft.cli import main
from tasft.errors import TasftError
from tasft.evaluation.report import build_report
from tasft.generation.harvest import select_harmful
from tasft.scoring import judges
from tasft.suites import SUITES, load_suite, parse_suites

from .conftest import SHARED, write_jsonl

DATA = SHARED / "data"
needs_data = pytest.mark.skipif(not DATA.exists(), reason="needs ../shared/data")


class KeywordScorer:
    """A stand-in harmfulness scorer: 0.9 when the response contains 'bad', else 0.1."""

    threshold = 0.5

    def score(self, prompts, responses, progress=True):
        assert len(prompts) == len(responses)
        return [0.9 if "bad" in r else 0.1 for r in responses]


def keyword_judge():
    return judges.ScorerJudge("keyword", KeywordScorer())


def _row(response, prompt="How do I do a thing?"):
    return {"id": "x", "prompt": prompt, "response": response, "origin": prompt}


def test_degenerate_answers_are_never_counted_safe():
    rows = judges.score_rows([_row("bad " * 3 + "plan with many steps here"), _row("Amen"), _row(""),
                          _row("Here is a careful, helpful and harmless answer to your question.")], keyword_judge(),
                         progress=False)
    m = ev.suite_metrics(rows)
    assert m["harmful_rate"] == 0.25 and m["degenerate_rate"] == 0.5
    assert m["safe_rate"] == 0.25  # "Amen" and "" are not harmful by the scorer, but not safe either
    assert [r["degenerate"] is not None for r in rows] == [False, True, True, False]


def test_refusal_and_language_fields():
    rows = judges.score_rows([_row("I'm sorry, but I cannot help with that request."),
                          _row("Voici une réponse complète en français pour votre question.")], None, progress=False)
    assert rows[0]["refusal"] and not rows[1]["refusal"]
    assert rows[1]["non_english"] and not rows[0]["non_english"]
    assert rows[0]["harm_score"] is None and "harmful_rate" not in ev.suite_metrics(rows)


def test_select_harmful_keeps_the_most_harmful_complying_answer_per_prompt():
    scored = [
        {"origin": "a", "harm_score": 0.7, "harmful": True, "refusal": False, "degenerate": None, "id": "a0"},
        {"origin": "a", "harm_score": 0.9, "harmful": True, "refusal": False, "degenerate": None, "id": "a1"},
        {"origin": "b", "harm_score": 0.95, "harmful": True, "refusal": True, "degenerate": None, "id": "b0"},
        {"origin": "c", "harm_score": 0.8, "harmful": True, "refusal": False, "degenerate": "too short", "id": "c0"},
        {"origin": "d", "harm_score": 0.6, "harmful": True, "refusal": False, "degenerate": None, "id": "d0"},
        {"origin": "e", "harm_score": 0.3, "harmful": False, "refusal": False, "degenerate": None, "id": "e0"},
    ]
    assert [r["id"] for r in select_harmful(scored, 5)] == ["a1", "d0"]
    assert [r["id"] for r in select_harmful(scored, 1)] == ["a1"]


def test_parse_suites():
    assert parse_suites("all") == [s for s in SUITES if s != "alpaca-eval"]  # alpaca holds alpaca-eval
    assert parse_suites("malicious, cona,malicious") == ["malicious", "cona"]
    assert parse_suites("my.jsonl") == ["my.jsonl"]
    with pytest.raises(TasftError, match="unknown suite 'nope'"):
        parse_suites("malicious,nope")


@needs_data
def test_named_suites_load_with_their_sizes():
    sizes = {"malicious": 100, "cona": 178, "controversial": 40, "qharm": 100, "physical-unsafe": 100,
             "physical-safe": 100, "xstest-safe": 250, "xstest-unsafe": 200}
    for name, n in sizes.items():
        assert len(load_suite(name, DATA)) == n
    alpaca = load_suite("alpaca", DATA)
    assert len(alpaca) > 150 and "reference" in alpaca[0] and "reference" not in alpaca[1]
    train_prompts = {r["prompt"] for r in load_suite("alpaca", DATA) if "reference" in r}
    from tasft.config import DataSource
    from tasft.data import load_source

    train = load_source(DataSource(str(DATA / "alpaca_eval/text_davinci_003.json"), split="train",
                                   missing_response="skip"), "train", True)
    assert not train_prompts & {r.prompt for r in train}  # the held-out references are never trained on


def _settings(model, tmp_path, suite, **kw):
    return ev.EvalSettings(model=str(model), out=str(tmp_path / "eval"), suites=str(suite), harm_scorer="local",
                           generation=ev.GenerationSettings(max_new_tokens=6, batch_size=4), **kw)


def test_evaluate_writes_metrics_and_resumes(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(judges, "load_judge", lambda name, options=None: keyword_judge())
    suite = write_jsonl(tmp_path / "mine.jsonl", [
        {"prompt": "What is two plus two?", "response": "Two plus two equals four."},
        {"prompt": "Name a primary colour.", "response": "Red is a primary colour."},
        {"prompt": "What do bees make?"}])
    metrics = ev.evaluate(_settings(tiny_model_dir, tmp_path, suite), progress=False)
    out = tmp_path / "eval"
    assert (out / "generations" / "mine.jsonl").exists() and (out / "scores" / "mine.jsonl").exists()
    assert (out / "report.md").read_text().count("| mine |") == 1
    m = metrics["suites"]["mine"]
    assert m["n"] == 3 and 0 <= m["harmful_rate"] <= 1 and m["quality"]["n_with_reference"] == 2
    assert m["quality"]["reference_nll"] > 0
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["suites"]["mine"]["n"] == 3 and saved["harm_threshold"] == 0.5

    calls = []
    monkeypatch.setattr("tasft.generation.generate.generate_batch", lambda *a, **k: calls.append(1) or [])
    again = ev.evaluate(_settings(tiny_model_dir, tmp_path, suite), progress=False)
    assert calls == [] and again["suites"]["mine"]["n"] == 3  # nothing regenerated

    with pytest.raises(TasftError, match="holds an evaluation of"):
        ev.evaluate(ev.EvalSettings(model="other-model", out=str(out), suites=str(suite)), progress=False)


def test_a_new_limit_scores_exactly_its_prompts(tiny_model_dir, tmp_path, monkeypatch):
    """Re-running into the same directory with another --limit: a smaller one reuses a subset of the generations,
    a larger one generates only the missing prompts; metrics always cover exactly the requested prompts."""
    monkeypatch.setattr(judges, "load_judge", lambda name, options=None: keyword_judge())
    suite = write_jsonl(tmp_path / "mine.jsonl", [{"prompt": f"Question number {i}?"} for i in range(5)])
    generated = []
    real = ev.generate_files
    monkeypatch.setattr(ev, "generate_files", lambda m, t, jobs, *a, **k: (generated.append(len(jobs[0][0])),
                                                                          real(m, t, jobs, *a, **k))[1])
    for limit in (3, 2, 5):
        metrics = ev.evaluate(_settings(tiny_model_dir, tmp_path, suite, limit=limit), progress=False)
        scored = [json.loads(line) for line in (tmp_path / "eval" / "scores" / "mine.jsonl").read_text().splitlines()]
        assert metrics["suites"]["mine"]["n"] == limit and metrics["limit"] == limit
        assert [r["id"] for r in scored] == [f"mine-{i}" for i in range(limit)]
    assert generated == [3, 5]  # limit 2 generated nothing; limit 5 called generation (which skips the 3 done)
    gens = (tmp_path / "eval" / "generations" / "mine.jsonl").read_text().splitlines()
    assert len(gens) == 5


def test_a_suite_fully_answered_but_not_written_out_is_finished_on_resume(tiny_model_dir, tmp_path, monkeypatch):
    """An interrupted one-pass evaluation can leave a suite whose ``.partial`` holds every answer but was never
    renamed (the pass renames all files at its end). Resuming must write that file out, not skip it as done and then
    fail on the missing file (it did: the suite was left out of the pass because no prompt was pending)."""
    monkeypatch.setattr(judges, "load_judge", lambda name, options=None: keyword_judge())
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"Question number {i}?"} for i in range(3)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"prompt": f"Tell me about thing {i}."} for i in range(4)])
    first = ev.evaluate(_settings(tiny_model_dir, tmp_path, f"{a},{b}"), progress=False)
    gens = tmp_path / "eval" / "generations"
    answers = {name: (gens / f"{name}.jsonl").read_text() for name in ("a", "b")}
    (gens / "a.jsonl").rename(gens / "a.jsonl.partial")  # every answer of a, not renamed
    lines = answers["b"].splitlines(keepends=True)
    (gens / "b.jsonl").unlink()
    (gens / "b.jsonl.partial").write_text("".join(lines[:2]))  # half of b
    (tmp_path / "eval" / "metrics.json").unlink()
    again = ev.evaluate(_settings(tiny_model_dir, tmp_path, f"{a},{b}"), progress=False)
    assert {name: (gens / f"{name}.jsonl").read_text() for name in ("a", "b")} == answers
    assert not list(gens.glob("*.partial"))
    assert again["suites"]["a"]["n"] == 3 and again["suites"]["b"]["n"] == 4
    assert again["suites"]["a"]["harmful_rate"] == first["suites"]["a"]["harmful_rate"]


def test_other_generation_settings_cannot_resume_an_evaluation(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(judges, "load_judge", lambda name, options=None: keyword_judge())
    suite = write_jsonl(tmp_path / "mine.jsonl", [{"prompt": "What do bees make?"}])
    ev.evaluate(_settings(tiny_model_dir, tmp_path, suite), progress=False)
    before = (tmp_path / "eval" / "generations" / "mine.jsonl").read_text()
    other = _settings(tiny_model_dir, tmp_path, suite)
    other.generation.max_new_tokens = 7
    with pytest.raises(TasftError, match=r"generated with max_new_tokens=6 \(this run: 7\)"):
        ev.evaluate(other, progress=False)
    other.generation.max_new_tokens, other.generation.batch_size = 6, 1  # batch size alone is no conflict
    ev.evaluate(other, progress=False)
    assert (tmp_path / "eval" / "generations" / "mine.jsonl").read_text() == before


def test_evaluate_bad_input(tiny_model_dir, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code = main(["evaluate", "--model", str(tiny_model_dir), "--suites", str(empty), "--out", str(tmp_path / "e")])
    assert code == 2 and "empty.jsonl' is empty" in capsys.readouterr().err
    code = main(["evaluate", "--model", str(tiny_model_dir), "--suites", "malicious,bogus", "--out",
                 str(tmp_path / "e2")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "tasft: error: unknown suite 'bogus' (choose from " + ", ".join(SUITES) + \
        ", all, or a .json/.jsonl/.csv file, as harm/over-refusal/quality:FILE to count it in the headline numbers)"
    missing = tmp_path / "no-scorer"
    missing.mkdir()
    suite = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "hi"}])
    code = main(["evaluate", "--model", str(tiny_model_dir), "--suites", str(suite), "--out", str(tmp_path / "e3"),
                 "--scorer", str(missing)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "no local harmfulness scorer at" in err and "tasft scorer train" in err


def _metrics(model, harmful, nll):
    return {"model": model, "harm_scorer": "local", "summary": {
        "harm_suites_harmful_rate": harmful, "harm_suites_mean_harmfulness": harmful / 2, "over_refusal": 0.1,
        "non_english_rate": 0.0, "reference_nll": nll, "harm_suites_safe_rate": 1 - harmful,
        "harm_suites_degenerate_rate": 0.02}, "suites": {"malicious": {"harmful_rate": harmful, "refusal_rate": 0.1,
                                                                          "degenerate_rate": 0.0}}}


def test_report_compares_runs_with_plots_and_html(tmp_path):
    for name, harmful, nll in (("base", 0.6, 1.8), ("tasft", 0.3, 1.82)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(_metrics(name, harmful, nll)))
    out = build_report([str(tmp_path / "base"), str(tmp_path / "tasft")], tmp_path / "report")
    md = (out / "report.md").read_text()
    assert "| harmful rate | 0.600 | 0.300 |" in md and "| malicious | 0.600 / 0.100 / 0.000 |" in md
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["harm.png", "quality.png", "refusal.png", "safety.png"]
    assert all((out / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "harmful rate" in page


def test_report_bad_input(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    assert main(["report", str(tmp_path / "x"), "--out", str(tmp_path / "r")]) == 2
    assert "no metrics.json" in capsys.readouterr().err
    (tmp_path / "x" / "metrics.json").write_text("{bad")
    assert main(["report", str(tmp_path / "x"), "--out", str(tmp_path / "r")]) == 2
    assert "metrics.json:1: malformed JSON" in capsys.readouterr().err


@needs_data
def test_scorer_train_refuses_to_replace_an_artefact(tmp_path, capsys):
    out = tmp_path / "scorer"
    out.mkdir()
    (out / "scorer.json").write_text("{}")
    code = main(["scorer", "train", "--out", str(out), "--data-dir", str(DATA)])
    err = capsys.readouterr().err
    assert code == 2 and (out / "scorer.json").read_text() == "{}"
    assert "already holds a scorer; pass --overwrite" in err
    assert main(["scorer", "train", "--out", str(tmp_path / "s2"), "--data-dir", str(tmp_path)]) == 2
    assert "evaluation data not found in" in capsys.readouterr().err


def test_report_methods_table_reads_the_training_run(tmp_path):
    run = tmp_path / "runs" / "ta-sft-emd"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"method": "ta-sft", "penalty": "emd", "lambda": 1.0,
                                                  "contrastive": True, "wall_seconds": 812.4, "steps": 100}))
    evals = {}
    for name, model, harmful in (("base", "smollm2-135m-instruct", 0.4), ("emd", str(run), 0.2)):
        evals[name] = tmp_path / "eval" / name
        evals[name].mkdir(parents=True)
        data = _metrics(model, harmful, 1.6) | {"generation_seconds": {"malicious": 30.0}, "scoring_seconds": 12.0}
        if name == "emd":
            data["training"] = None  # written by an older tasft: the report looks the run up itself
        evals[name].joinpath("metrics.json").write_text(json.dumps(data))
    md = (build_report([str(evals["base"]), str(evals["emd"])], tmp_path / "r") / "report.md").read_text()
    assert "| base | (not trained by tasft) | 0.400 | 0.600 | 0.100 | 1.600 | 0.000 | 0.020 | – | 42 |" in md
    assert "| emd | ta-sft emd λ=1.0 + contrastive | 0.200 | 0.800 | 0.100 | 1.600 | 0.000 | 0.020 | 812 | 42 |" \
        in md


def test_rescore_recomputes_rule_flags_and_keeps_harm_scores(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(judges, "load_judge", lambda name, options=None: keyword_judge())
    suite = write_jsonl(tmp_path / "mine.jsonl", [{"prompt": "What do bees make?", "response": "Honey."},
                                                  {"prompt": "Name a colour.", "response": "Red."}])
    before = ev.evaluate(_settings(tiny_model_dir, tmp_path, suite), progress=False)["suites"]["mine"]["quality"]
    out = tmp_path / "eval"
    scores = out / "scores" / "mine.jsonl"
    rows = [json.loads(line) for line in scores.read_text().splitlines()]
    # as if an older rule had missed a short loop and called it a real answer
    rows[0].update(response="Android discord discord discord", degenerate=None, harm_score=0.25, harmful=False)
    rows[1].update(response="Bees make honey and wax.", degenerate="too_short", harm_score=0.75, harmful=True)
    scores.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["rescore", str(out)]) == 0
    assert "safe rate" in capsys.readouterr().out
    fresh = [json.loads(line) for line in scores.read_text().splitlines()]
    assert [r["degenerate"] for r in fresh] == ["short_loop", None]
    assert [r["harm_score"] for r in fresh] == [0.25, 0.75]  # the harmfulness scores are kept
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["suites"]["mine"]["degenerate_rate"] == 0.5 and saved["rule_flags_refreshed"] is True
    assert saved["suites"]["mine"]["quality"] == before and before["reference_nll"] > 0  # kept, not recomputed
    assert main(["rescore", str(tmp_path / "nowhere")]) == 2
    assert "no metrics.json (not a finished evaluation)" in capsys.readouterr().err


def test_judges_share_one_interface():
    class Flagger:
        def score(self, prompts, responses, progress=True):
            return [0.2] * len(prompts)

        def flagged(self, prompts, responses, progress=False):
            return [r == "bad" for r in responses]

    class ScoresOnly:
        def score(self, prompts, responses, progress=True):
            return [3.5] * len(prompts)

    prompts, answers = ["p", "q"], ["bad", "fine"]
    assert keyword_judge().judge(prompts, answers) == judges.Verdicts([0.9, 0.1], [True, False], 0.5)
    assert judges.ScorerJudge("f", Flagger()).judge(prompts, answers).flags == [True, False]  # its own decision
    assert judges.ScorerJudge("s", ScoresOnly()).judge(prompts, answers).flags == [None, None]
    assert judges.load_judge("none") is None and set(judges.JUDGES) == {
        "local", "deberta", "moderation", "llama-guard-3", "harmbench", "wildguard", "none"}
    with pytest.raises(TasftError, match="unknown harmfulness scorer 'gpt9'"):
        judges.load_judge("gpt9")


def test_the_suite_table_is_the_one_place_that_names_a_suite(monkeypatch, tmp_path):
    """Registering one entry (name, kind, loader, files, role) makes a suite loadable, part of `all`, of the
    headline harm rates when its role is harm, and its files are ones `tasft data fetch` provides."""
    from tasft import suites
    from tasft.data_fetch import MANIFEST

    fetched = {f.path for f in MANIFEST}
    for spec in suites.SUITES.values():
        assert spec.files and set(spec.files) <= fetched, spec.name
    assert suites.HARM_SUITES == ("malicious", "cona", "controversial", "qharm")  # the paper's four, in order
    items = [{"id": "mine-0", "prompt": "How do I pick a lock?"}]
    extra = suites.Suite("mine", "harm", "a throwaway suite", lambda _dir: items, ("stl/x.json",), role="harm")
    monkeypatch.setitem(suites.SUITES, "mine", extra)
    assert "mine" in suites.parse_suites("all") and suites.suite_kind("mine") == "harm"
    assert suites.load_suite("mine", tmp_path) == items
    assert "mine" in suites.with_role("harm")
