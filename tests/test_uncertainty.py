"""Intervals, paired differences and the report pages built on them: checked against cases with known answers."""

import json
import math
import random

import numpy as np
import pytest

import tasft.evaluation.evaluate as ev
from tasft.cli import main
from tasft.evaluation import stats, uncertainty
from tasft.evaluation.samples import sample_rows
from tasft.scoring import judges

from .conftest import write_jsonl
from .test_evaluate import keyword_judge


def test_constant_outcomes_have_a_zero_width_interval():
    assert stats.mean_interval([[0.0] * 50]) == (0.0, 0.0)
    assert stats.mean_interval([[1.0] * 50]) == (1.0, 1.0)
    assert stats.ratio_interval([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]) == pytest.approx((2.0, 2.0))


def test_bootstrap_spread_matches_the_binomial_standard_error():
    n, ones = 400, 120  # p = 0.3: SE = sqrt(p (1 - p) / n) = 0.0229
    values = [1.0] * ones + [0.0] * (n - ones)
    reps = stats.resampled_means([values], resamples=4000)
    se = math.sqrt(0.3 * 0.7 / n)
    assert reps.std() == pytest.approx(se, rel=0.06)
    lo, hi = stats.mean_interval([values], resamples=4000)
    assert lo < 0.3 < hi and hi - lo == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_intervals_are_seeded_and_suites_are_resampled_within_themselves():
    rng = random.Random(1)
    a = [float(rng.random() < 0.4) for _ in range(100)]
    assert stats.mean_interval([a], seed=3) == stats.mean_interval([a], seed=3)
    assert stats.mean_interval([a], seed=3) != stats.mean_interval([a], seed=4)
    # a constant second suite shifts the macro mean by its value and halves the spread of the first
    lo, hi = stats.mean_interval([a])
    lo2, hi2 = stats.mean_interval([a, [1.0] * 30])
    assert stats.point([a, [1.0] * 30]) == pytest.approx((np.mean(a) + 1) / 2)
    assert hi2 - lo2 == pytest.approx((hi - lo) / 2, rel=0.15)


def test_seeds_add_their_own_spread():
    rng = random.Random(2)
    base = [float(rng.random() < 0.5) for _ in range(200)]
    shifted = [base, [min(1.0, v + (rng.random() < 0.3)) for v in base], [v * (rng.random() < 0.6) for v in base]]
    one = stats.mean_interval([base])
    three = stats.mean_interval([shifted])
    assert three[1] - three[0] > one[1] - one[0]
    with pytest.raises(ValueError, match="same number of seeds"):
        stats.resampled_means([shifted, base])


def _crossed(rng: np.random.Generator, k: int, n: int, seed_sd: float, prompt_sd: float, noise_sd: float,
             mean: float = 0.3) -> np.ndarray:
    """Synthetic per-seed, per-prompt scores x_ji = mean + a_j + b_i + e_ji: a training seed's shift a_j (the
    between-seed variance is seed_sd²), a prompt's difficulty b_i shared by every seed, and noise."""
    return (mean + rng.normal(0, seed_sd, (k, 1)) + rng.normal(0, prompt_sd, (1, n))
            + rng.normal(0, noise_sd, (k, n)))


def test_the_interval_over_seeds_and_prompts_covers_the_method_mean():
    """Coverage, known answer: 3 seeds × 300 prompts whose seeds differ (seed sd 0.05, the size of SFT's own seed
    spread) — the mean over the population of seeds and prompts is 0.3. The interval over seeds × prompts covers it
    at about its nominal 95 %; an interval over the prompts of one run covers it far less often, and a bootstrap
    that resamples the 3 seeds (with prompts crossed) falls short too — why Student's t carries the seed term."""
    rng = np.random.default_rng(11)
    trials, hits, one_run, boot = 300, 0, 0, 0
    for _ in range(trials):
        x = _crossed(rng, 3, 300, seed_sd=0.05, prompt_sd=0.15, noise_sd=0.3)
        lo, hi = stats.seeded_interval([x])["ci95"]
        hits += lo <= 0.3 <= hi
        lo1, hi1 = stats.mean_interval([x[0]], resamples=400)
        one_run += lo1 <= 0.3 <= hi1
        lob, hib = stats.mean_interval([x], resamples=400)
        boot += lob <= 0.3 <= hib
    assert 0.90 <= hits / trials <= 0.99
    assert one_run / trials < 0.75 and boot / trials < hits / trials
    # no seed effect at all: the interval is not inflated by Student's t (its seed term is only the prompt noise)
    x = _crossed(rng, 3, 300, seed_sd=0.0, prompt_sd=0.15, noise_sd=0.3)
    width = np.diff(stats.seeded_interval([x])["ci95"])[0]
    assert width < 1.3 * np.diff(stats.mean_interval([x.mean(axis=0)], resamples=400))[0]


def test_a_seeded_difference_is_significant_only_if_the_seeds_agree():
    """Each seed of a method 0.1 below its paired reference seed: significant over seeds × prompts. The same size
    of difference in one seed only (the other two at 0): every one-seed interval of that seed excludes 0, the
    interval over the seeds does not."""
    rng = np.random.default_rng(5)
    ref = _crossed(rng, 3, 400, seed_sd=0.05, prompt_sd=0.15, noise_sd=0.1)
    steady = stats.seeded_difference([ref - 0.1], [ref])
    assert steady["difference"] == pytest.approx(-0.1) and steady["significant"] and steady["seeds"] == 3
    lucky = ref.copy()
    lucky[0] -= 0.1
    one = stats.paired_difference([lucky[0]], [ref[0]])
    assert one["significant"]  # one run alone looks like a finding
    across = stats.seeded_difference([lucky], [ref])
    assert not across["significant"] and across["per_seed"] == pytest.approx([-0.1, 0.0, 0.0])
    bounded = stats.seeded_interval([[[0.0] * 10, [1.0] * 10]], bounds=(0.0, 1.0))["ci95"]
    assert bounded == [0.0, 1.0]  # two seeds that disagree completely: anything in the rate's range


def test_paired_difference_pairs_prompts_and_is_narrower_than_unpaired():
    rng = random.Random(3)
    ref = [float(rng.random() < 0.5) for _ in range(300)]
    run = [v if rng.random() < 0.9 else 1 - v for v in ref]  # agrees with the reference on ~90% of prompts
    same = stats.paired_difference([ref], [ref])
    assert same["difference"] == 0 and same["ci95"] == [0.0, 0.0] and not same["significant"]
    d = stats.paired_difference([run], [ref])
    assert d["difference"] == pytest.approx(np.mean(run) - np.mean(ref)) and d["n"] == 300
    lo_a, hi_a = stats.mean_interval([run])
    lo_b, hi_b = stats.mean_interval([ref])
    unpaired = math.hypot(hi_a - lo_a, hi_b - lo_b)
    assert d["ci95"][1] - d["ci95"][0] < unpaired / 2
    all_ones = stats.paired_difference([[1.0] * 50], [[0.0] * 50])
    assert all_ones["ci95"] == [1.0, 1.0] and all_ones["significant"]


def test_mcnemar_exact_p():
    assert stats.mcnemar_p([True] * 10, [False] * 10) == pytest.approx(2 / 2**10)
    assert stats.mcnemar_p([True, False] * 5, [False, True] * 5) == 1.0
    assert stats.mcnemar_p([True] * 4, [True] * 4) == 1.0  # no discordant pair


def _rows(flags, prefix="p"):
    return [{"id": f"{prefix}{i}", "prompt": "q", "response": "an answer of several words here", "harmful": f,
             "harm_score": 0.9 if f else 0.1, "refusal": False, "non_english": False, "degenerate": None}
            for i, f in enumerate(flags)]


def test_uncertainty_pairs_rows_by_prompt_id_not_by_position():
    flags = [i % 3 == 0 for i in range(60)]
    ref = {"malicious": _rows(flags)}
    shuffled = {"malicious": list(reversed(_rows(flags)))}  # same answers, other order
    d = uncertainty.paired(shuffled, ref, ["harm_suites_harmful_rate"])["harm_suites_harmful_rate"]
    assert d["difference"] == 0 and d["ci95"] == [0.0, 0.0] and d["mcnemar_p"] == 1.0
    # only the shared prompts are paired
    fewer = {"malicious": _rows(flags)[:40]}
    assert uncertainty.paired(fewer, ref, ["harm_suites_harmful_rate"])["harm_suites_harmful_rate"]["n"] == 40


def _evaluation(tmp_path, tiny_model_dir, monkeypatch, name, word):
    """A real evaluation of the tiny model on a custom harm-like suite, judged by a keyword stand-in; ``word``
    decides which answers are flagged (the tiny model's answers are random tokens, so we patch generation)."""
    monkeypatch.setattr(judges, "load_judge", lambda n, options=None: keyword_judge())
    suite = write_jsonl(tmp_path / "mine.jsonl", [{"prompt": f"Question number {i}?"} for i in range(24)])

    def fake_batch(model, tokenizer, encoded, settings, seed, decode=True):
        return [f"{word if len(e) % 2 else 'fine'} answer with enough words to count" for e in encoded]

    monkeypatch.setattr("tasft.generation.generate.generate_batch", fake_batch)
    settings = ev.EvalSettings(model=str(tiny_model_dir), out=str(tmp_path / name), suites=str(suite),
                               generation=ev.GenerationSettings(max_new_tokens=4, batch_size=8))
    return ev.evaluate(settings, progress=False)


def test_metrics_carry_intervals_and_the_report_pairs_runs(tiny_model_dir, tmp_path, monkeypatch, capsys):
    a = _evaluation(tmp_path, tiny_model_dir, monkeypatch, "a", "bad")
    b = _evaluation(tmp_path, tiny_model_dir, monkeypatch, "b", "good")
    ci = a["intervals"]["suites"]["mine"]["harmful_rate"]
    assert ci[0] <= a["suites"]["mine"]["harmful_rate"] <= ci[1]
    assert b["suites"]["mine"]["harmful_rate"] == 0 and b["intervals"]["suites"]["mine"]["harmful_rate"] == [0, 0]
    json.loads((tmp_path / "a" / "metrics.json").read_text())  # strict JSON
    main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "rep"),
          "--reference", str(tmp_path / "a"), "--samples", "3"])
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Paired differences to the reference" in md and "| b |" in md
    diff = -a["suites"]["mine"]["harmful_rate"]
    assert f"{diff:+.3f}" in md.split("Paired differences")[1]
    page = (tmp_path / "rep" / "samples.html").read_text()
    assert page.count("<details>") == 3 and "content warning" in page  # 3 prompts of the one suite
    for opened in page.split("<details>")[1:]:  # each prompt once, both runs' answers to it side by side
        assert opened.count("<b>Prompt</b>") == 1 and "<b>a</b>" in opened and "<b>b</b>" in opened
    assert "answer with enough words" not in capsys.readouterr().out  # answers never reach stdout


def test_report_flag_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r"), "--samples", "0"]) == 2
    assert "--samples: must be >= 1" in capsys.readouterr().err and not (tmp_path / "r").exists()
    (tmp_path / "x").mkdir()
    assert main(["report", str(tmp_path / "x"), "--out", str(tmp_path / "r"), "--reference", str(tmp_path)]) == 2
    assert "no metrics.json" in capsys.readouterr().err


def test_samples_draw_the_same_prompts_for_every_run():
    rows_a, rows_b = _rows([True] * 30), list(reversed(_rows([False] * 30)))
    ids_a = [r["id"] for r in sample_rows(rows_a, 5, salt="malicious")]
    assert sorted(ids_a) == sorted(r["id"] for r in sample_rows(rows_b, 5, salt="malicious"))
    assert len(set(ids_a)) == 5


def test_judge_agreement_counts_contradictions():
    rows = _rows([True, True, False, False])
    rows[0]["refusal"] = True
    rows[2]["degenerate"] = "too short"
    agree = ev.judge_agreement(rows)
    assert agree["table"]["harmful"] == {"refusal": 1, "degenerate": 0, "answer": 1}
    assert agree["table"]["not_harmful"] == {"refusal": 0, "degenerate": 1, "answer": 1}
    assert agree["harmful_but_refusal"] == 0.25 and agree["disagreement_rate"] == 0.25
