"""A user's own prompt files count like the named suites once declared (``harm:FILE``, ``over-refusal:FILE``,
``quality:FILE``): they enter the headline rates, their intervals and the paired differences of a report; an
undeclared file stays a per-suite table only, and a mistyped role is a one-line error."""

import pytest

import tasft.evaluation.evaluate as ev
from tasft.cli import main
from tasft.errors import TasftError
from tasft.scoring import judges
from tasft.suites import parse_suites, suite_kind, suite_name, suite_role

from .conftest import write_jsonl
from .test_evaluate import keyword_judge


def _evaluate(tmp_path, tiny_model_dir, monkeypatch, name: str, suites: str, word: str) -> dict:
    """A real evaluation of the tiny model (generation patched: its answers are random tokens), judged by a
    keyword stand-in that flags answers containing "bad"."""
    monkeypatch.setattr(judges, "load_judge", lambda n, options=None: keyword_judge())

    def fake_batch(model, tokenizer, encoded, settings, seed, decode=True):
        return [f"{word if len(e) % 2 else 'fine'} answer with enough words to count" for e in encoded]

    monkeypatch.setattr("tasft.generation.generate.generate_batch", fake_batch)
    settings = ev.EvalSettings(model=str(tiny_model_dir), out=str(tmp_path / name), suites=suites,
                               generation=ev.GenerationSettings(max_new_tokens=4, batch_size=8))
    return ev.evaluate(settings, progress=False)


@pytest.fixture
def prompt_files(tmp_path):
    harm = write_jsonl(tmp_path / "mine.jsonl", [{"prompt": f"Question number {i}?"} for i in range(24)])
    benign = write_jsonl(tmp_path / "polite.jsonl", [{"prompt": f"Please help with task {i}."} for i in range(10)])
    return harm, benign


def test_a_declared_harm_file_enters_the_headline_rates_and_the_paired_table(tmp_path, tiny_model_dir, monkeypatch,
                                                                             prompt_files, capsys):
    harm, benign = prompt_files
    suites = f"harm:{harm},over-refusal:{benign}"
    bad = _evaluate(tmp_path, tiny_model_dir, monkeypatch, "bad", suites, "bad")
    good = _evaluate(tmp_path, tiny_model_dir, monkeypatch, "good", suites, "good")
    assert set(bad["suites"]) == {"mine", "polite"} and bad["suites"]["mine"]["role"] == "harm"
    rate = bad["suites"]["mine"]["harmful_rate"]
    assert rate > 0 and bad["summary"]["harm_suites_harmful_rate"] == rate  # the headline is the file's rate
    assert bad["summary"]["over_refusal"] == bad["suites"]["polite"]["refusal_rate"]
    assert bad["intervals"]["summary"]["harm_suites_harmful_rate"][0] <= rate
    assert good["summary"]["harm_suites_harmful_rate"] == 0
    assert main(["report", str(tmp_path / "bad"), str(tmp_path / "good"), "--reference", str(tmp_path / "bad"),
                 "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    summary = md.split("## Summary")[1].split("##")[0]
    assert f"| harmful rate | {rate:.3f}" in summary  # not "–": the file counts like a named harm suite
    paired = md.split("Paired differences to the reference")[1].split("Per suite")[0]
    assert f"{-rate:+.3f}" in paired
    capsys.readouterr()


def test_an_undeclared_file_stays_out_of_the_headline(tmp_path, tiny_model_dir, monkeypatch, prompt_files):
    harm, _ = prompt_files
    metrics = _evaluate(tmp_path, tiny_model_dir, monkeypatch, "plain", str(harm), "bad")
    assert metrics["suites"]["mine"]["role"] is None and metrics["suites"]["mine"]["harmful_rate"] > 0
    assert "harm_suites_harmful_rate" not in metrics["summary"]


def test_suite_roles_parse_and_a_mistyped_role_is_one_line(tmp_path):
    assert parse_suites("malicious,harm:a.jsonl", attacks="prefix") == [
        "malicious", "harm:a.jsonl", "malicious@prefix", "harm:a.jsonl@prefix"]
    assert [(suite_name(s), suite_kind(s), suite_role(s)) for s in
            ("harm:d/a.jsonl", "over-refusal:b.csv", "quality:q.json", "a.jsonl", "harm:a.jsonl@prefix")] == [
        ("a", "harm", "harm"), ("b", "benign", "over-refusal"), ("q", "quality", "quality"), ("a", "custom", None),
        ("a@prefix", "attack", None)]
    with pytest.raises(TasftError, match="unknown role 'harmful' for a prompt file"):
        parse_suites("harmful:a.jsonl")


def test_answers_to_a_declared_harm_file_can_be_labelled(tmp_path, tiny_model_dir, monkeypatch, prompt_files):
    """`tasft labels sample` offers a declared harm file's answers like a named harm suite's; an undeclared file's
    answers are not harm-suite answers."""
    from tasft.evaluation.labels import sample_sheet

    harm, benign = prompt_files
    _evaluate(tmp_path, tiny_model_dir, monkeypatch, "declared", f"harm:{harm},{benign}", "bad")
    counts = sample_sheet([tmp_path / "declared"], 5, 0, tmp_path / "sheet")
    assert counts["items"] == 5
    _evaluate(tmp_path, tiny_model_dir, monkeypatch, "plain", str(harm), "bad")
    with pytest.raises(TasftError, match="no harm-suite answers"):
        sample_sheet([tmp_path / "plain"], 5, 0, tmp_path / "sheet2")


def test_suite_files_become_absolute_with_role_and_template_kept(tmp_path, monkeypatch):
    from tasft.suites import absolute_suites

    monkeypatch.chdir(tmp_path)
    assert absolute_suites("malicious, harm:mine.jsonl@prefix,polite.csv,xstest-safe@roleplay") == (
        f"malicious,harm:{tmp_path / 'mine.jsonl'}@prefix,{tmp_path / 'polite.csv'},xstest-safe@roleplay")
