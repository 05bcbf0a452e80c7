"""``tasft experiment``: grid planning, resumable train + evaluate points, tables, plots and the report page."""

import csv
import json
from pathlib import Path

import pytest
import yaml

import tasft.evaluation.evaluate as ev
from tasft.cli import main
from tasft.errors import TasftError
from tasft.evaluation.report import build_report
from tasft.experiments import results, study
from tasft.experiments.paired import paired_differences
from tasft.scoring import judges

from .conftest import SHARED, tiny_overrides
from .test_evaluate import keyword_judge

DATA = SHARED / "data"
needs_data = pytest.mark.skipif(not (DATA / "stl").is_dir(), reason="needs ../shared/data")


def _write(tmp_path, tiny_model_dir, tiny_data, **extra):
    train = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in tiny_overrides(
        tiny_model_dir, tiny_data, tmp_path / "unused", max_steps=4, save_steps=2))}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(train))
    exp = {"study": "lambda", "train_config": "train.yaml", "x_label": "λ",
           "evaluate": {"suites": "malicious,xstest-safe", "limit": 2,
                        "generation": {"max_new_tokens": 4, "batch_size": 4},
                        "data_dir": str(DATA)},
           "series": [{"name": "emd", "set": {"ta_sft.penalty": "emd"}, "vary": "ta_sft.lambda", "values": [0.0, 0.5]},
                      {"name": "stages sft", "set": {"method": "sft"}, "checkpoints": True}],
           "plots": [{"y": "harm_suites_harmful_rate"}, {"x": "harm_suites_harmful_rate", "y": "over_refusal"}]}
    exp.update(extra)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp, allow_unicode=True))
    return path


def test_plan_gives_extra_seeds_only_to_headline_values(tmp_path, tiny_model_dir, tiny_data):
    exp = study.load_experiment(_write(tmp_path, tiny_model_dir, tiny_data, headline_values=[0.5]))
    points = study.plan(exp, seeds=3)
    assert [(p.series.name, p.x, p.seed) for p in points] == [
        ("emd", 0.0, 0), ("emd", 0.5, 0), ("emd", 0.5, 1), ("emd", 0.5, 2), ("stages sft", None, 0)]
    assert points[1].slug == "emd__x0.5__seed0" and points[-1].slug == "stages-sft__seed0"
    assert exp.train_config == str(tmp_path / "train.yaml")
    every = study.plan(exp, seeds=2, every_point=True)  # tasft experiment --seeds 2: every point gets both seeds
    assert [(p.x, p.seed) for p in every] == [(0.0, 0), (0.0, 1), (0.5, 0), (0.5, 1), (None, 0), (None, 1)]


@pytest.mark.parametrize(("extra", "expected"), [
    ({"study": "speed"}, "study 'speed' is not one of"),
    ({"series": []}, "at least one series"),
    ({"series": [{"name": "a", "vary": "lambda"}]}, "give both vary and values"),
    ({"series": [{"name": "a"}, {"name": "a"}]}, "series names must be unique"),
    ({"plots": [{"y": "accuracy"}]}, "unknown metric 'accuracy'"),
    ({"sieves": 2}, "unknown key 'sieves'"),
    ({"reference": "sfx"}, "reference: no series named 'sfx'"),
])
def test_bad_experiment_files(tmp_path, tiny_model_dir, tiny_data, extra, expected):
    with pytest.raises(TasftError, match=expected):
        study.load_experiment(_write(tmp_path, tiny_model_dir, tiny_data, **extra))


def test_aggregate_mean_and_std_over_seeds():
    rows = [{"series": "a", "x": 1, "seed": s, "harm_suites_harmful_rate": v, "train_seconds": 10.0}
            for s, v in enumerate((0.2, 0.4))]
    (agg,) = results.aggregate(rows)
    assert agg["seeds"] == 2 and agg["harm_suites_harmful_rate"] == pytest.approx(0.3)
    assert agg["harm_suites_harmful_rate_std"] == pytest.approx(0.1414, abs=1e-4) and agg["over_refusal"] is None


def _scores(directory: Path, harmful: list[bool]) -> str:
    rows = [{"id": f"p{i}", "harmful": h, "harm_score": float(h), "refusal": False, "degenerate": None,
             "non_english": False} for i, h in enumerate(harmful)]
    (directory / "scores").mkdir(parents=True)
    (directory / "scores" / "malicious.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(directory)


def test_intervals_over_seeds_come_from_the_seeds_per_prompt_scores(tmp_path):
    """Two seeds, one all harmless and one all harmful, on the same 30 prompts: the prompt bootstrap of either seed
    alone has zero width, so an interval of [0, 1] can only come from resampling the seeds (their mean: 0.5)."""
    rows = [{"series": "a", "x": 1, "seed": s, "harm_suites_harmful_rate": float(s), "train_seconds": 1.0,
             "eval_dir": _scores(tmp_path / f"s{s}", [bool(s)] * 30)} for s in (0, 1)]
    rows.append({"series": "b", "x": 1, "seed": 0, "harm_suites_harmful_rate": 0.25,
                 "harm_suites_harmful_rate_lo": 0.2, "harm_suites_harmful_rate_hi": 0.3})
    two, one = results.aggregate(rows)
    assert two["harm_suites_harmful_rate"] == 0.5
    assert (two["harm_suites_harmful_rate_lo"], two["harm_suites_harmful_rate_hi"]) == (0.0, 1.0)
    assert (one["harm_suites_harmful_rate_lo"], one["harm_suites_harmful_rate_hi"]) == (0.2, 0.3)
    exp = study.ExperimentConfig(study="lambda", train_config="t.yaml", series=[study.Series("a"), study.Series("b")])
    md = results.results_markdown(exp, rows)
    assert "| a | 1 | 2 | 0.500 [0.000, 1.000] |" in md and "| b | 1 | 1 | 0.250 [0.200, 0.300] |" in md


def test_paired_differences_pair_the_same_prompts_with_the_reference(tmp_path):
    """Point − reference prompt by prompt: 10 of 40 prompts turn harmless → −0.25, all discordant pairs one way."""
    ref = [True] * 20 + [False] * 20
    run = [False] * 10 + [True] * 10 + [False] * 20
    rows = [{"series": "sft", "x": None, "seed": 0, "eval_dir": _scores(tmp_path / "ref", ref)},
            {"series": "emd", "x": 100, "seed": 0, "eval_dir": _scores(tmp_path / "run", run)}]
    exp = study.ExperimentConfig(study="lambda", train_config="t.yaml", compare_all=True,
                                series=[study.Series("sft"), study.Series("emd", vary="ta_sft.lambda", values=[100])])
    got = paired_differences(exp, rows)
    assert got["reference"] == "sft" and len(got["points"]) == 1
    diff = got["points"][0]["harm_suites_harmful_rate"]
    assert diff["difference"] == pytest.approx(-0.25) and diff["n"] == 40 and diff["significant"]
    assert diff["mcnemar_p"] == pytest.approx(2 / 2**10)
    (pair,) = got["between"]
    assert pair["a"] == ["sft", None] and pair["b"] == ["emd", 100]
    assert pair["harm_suites_harmful_rate"]["difference"] == pytest.approx(0.25)
    assert "| emd | 100 | 0 | -0.250 [" in results.results_markdown(exp, rows, got)


def test_seeded_points_are_paired_seed_by_seed_and_the_reference_spread_is_reported(tmp_path):
    """Three seeds of sft and of emd on the same 40 prompts; emd's seeds are 10 prompts less harmful than the same
    seed of sft. paired.json gains the difference over seeds × prompts (per seed: −0.25 each) and sft's own spread
    across its seeds; results.md shows both tables."""
    sft = {0: [True] * 20 + [False] * 20, 1: [True] * 24 + [False] * 16, 2: [True] * 16 + [False] * 24}
    rows = []
    for seed, flags in sft.items():
        rows.append({"series": "sft", "x": None, "seed": seed,
                     "eval_dir": _scores(tmp_path / f"sft{seed}", flags)})
        run = [False] * 10 + flags[10:]
        rows.append({"series": "emd", "x": 100, "seed": seed, "eval_dir": _scores(tmp_path / f"emd{seed}", run)})
    exp = study.ExperimentConfig(study="lambda", train_config="t.yaml", seeds=3,
                                series=[study.Series("sft"), study.Series("emd", vary="ta_sft.lambda", values=[100])])
    got = paired_differences(exp, rows)
    (seeded,) = got["seeded"]
    diff = seeded["harm_suites_harmful_rate"]
    assert seeded["seeds"] == [0, 1, 2] and diff["per_seed"] == pytest.approx([-0.25] * 3)
    assert diff["difference"] == pytest.approx(-0.25) and diff["significant"]
    spread = got["reference_spread"]
    assert spread["harm_suites_harmful_rate"]["per_seed"] == pytest.approx([0.5, 0.6, 0.4])
    assert spread["harm_suites_harmful_rate"]["seed_sd"] == pytest.approx(0.1)
    assert [v["seed"] for v in spread["versus_first_seed"]] == [1, 2]
    md = results.results_markdown(exp, rows, got)
    assert "## Across seeds: each point minus `sft`" in md and "| emd | 100 | 0,1,2 | -0.250 [" in md
    assert "## `sft`'s own seed-to-seed spread" in md and "| harmful rate | 0.500 | 0.600 | 0.400 | 0.100 |" in md


@needs_data
def test_a_grid_says_and_exports_each_point_as_it_finishes(tmp_path, tiny_model_dir, tiny_data, monkeypatch,
                                                            capsys):
    """A line per finished point, and --export after each one: a grid stopped at its third point has exported the
    first two. An --export inside --out is refused before anything runs."""
    from tasft.experiments import publish
    from tasft.training import pipeline

    monkeypatch.setattr(judges, "load_judge", lambda name, options=None: keyword_judge())
    config, out, pub = _write(tmp_path, tiny_model_dir, tiny_data), tmp_path / "results", tmp_path / "pub"
    argv = ["experiment", "lambda", "--config", str(config), "--out", str(out)]
    assert main([*argv, "--export", str(out / "pub")]) == 2
    assert "outside the study directory" in capsys.readouterr().err and not out.exists()
    real = pipeline.train

    def stop_at_the_third(cfg, **kwargs):
        if "stages" in cfg.output_dir:
            raise TasftError("no space left on device (simulated)")
        return real(cfg, **kwargs)

    monkeypatch.setattr(pipeline, "train", stop_at_the_third)
    assert main([*argv, "--export", str(pub)]) == 2
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert [line.split(":")[0] for line in said] == ["[1/3] emd at 0.0 seed 0", "[2/3] emd at 0.5 seed 0"]
    names = publish.read_archive(pub / "points.tar.xz")
    assert {n for n in names if n.endswith("metrics.json")} == {
        f"{d}/emd__x{x}__seed0/metrics.json" for d in ("runs", "evals") for x in ("0.0", "0.5")}
    monkeypatch.setattr(pipeline, "train", real)
    assert main([*argv, "--export", str(pub)]) == 0  # resumes: the two finished points are not run again
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert said[0].startswith("[1/3] emd at 0.0 seed 0: 0.0 min") and said[2].startswith("[3/3] stages sft seed 0")
    assert "stages-sft__seed0" in str(sorted(publish.read_archive(pub / "points.tar.xz")))


@needs_data
def test_experiment_runs_resumes_and_reports(tmp_path, tiny_model_dir, tiny_data, monkeypatch, capsys):
    monkeypatch.setattr(judges, "load_judge", lambda name, options=None: keyword_judge())
    config, out = _write(tmp_path, tiny_model_dir, tiny_data, reference="emd"), tmp_path / "results"
    assert main(["experiment", "lambda", "--config", str(config), "--out", str(out)]) == 0
    paired = json.loads((out / "paired.json").read_text())  # every point against emd λ=0 on the same 2+2 prompts
    assert paired["reference"] == "emd" and [(p["series"], p["x"]) for p in paired["points"]] == [
        ("emd", 0.5), ("stages sft", 2), ("stages sft", 4)]
    assert all(p["harm_suites_harmful_rate"]["n"] == 2 and p["over_refusal"]["n"] == 2 for p in paired["points"])
    rows = list(csv.DictReader((out / "results.csv").open()))
    # two λ points + the checkpoint series evaluated at steps 2 and 4
    assert [(r["series"], r["x"]) for r in rows] == [("emd", "0.0"), ("emd", "0.5"), ("stages sft", "2"),
                                                      ("stages sft", "4")]
    assert all(0.0 <= float(r["harm_suites_harmful_rate"]) <= 1.0 and r["over_refusal"] != "" for r in rows)
    saved = json.loads((out / "runs" / "emd__x0.5__seed0" / "metrics.json").read_text())
    assert saved["lambda"] == 0.5 and saved["penalty"] == "emd" and saved["seed"] == 0
    assert (out / "runs" / "stages-sft__seed0" / "checkpoint-2").is_dir()
    md = (out / "results.md").read_text()
    assert "| series | λ | seeds |" in md and "| stages sft | 4 | 1 |" in md
    assert "## Paired differences to `emd`" in md and all(r["harm_suites_harmful_rate_lo"] != "" for r in rows)
    assert sorted(p.name for p in out.glob("*.png")) == ["harm_suites_harmful_rate_vs_x.png",
                                                         "over_refusal_vs_harm_suites_harmful_rate.png"]

    def fail(*args, **kwargs):
        raise AssertionError("a finished point was run again")

    monkeypatch.setattr("tasft.training.pipeline.train", fail)
    monkeypatch.setattr(ev, "evaluate", fail)
    assert main(["experiment", "lambda", "--config", str(config), "--out", str(out)]) == 0  # resumes: no work
    (out / "results.md").unlink()
    assert main(["experiment", "lambda", "--config", str(config), "--out", str(out), "--tables-only"]) == 0
    assert (out / "results.md").read_text() == md and json.loads((out / "paired.json").read_text()) == paired
    assert main(["experiment", "lambda", "--config", str(config), "--out", str(tmp_path / "none"),
                 "--tables-only"]) == 2
    assert main(["experiment", "stages", "--config", str(config), "--out", str(out)]) == 2
    assert "describes study 'lambda', not 'stages'" in capsys.readouterr().err

    # a changed training config never reuses (nor retrains) the points made under the old one: one line, no loss
    train_yaml = tmp_path / "train.yaml"
    original, before = train_yaml.read_text(), sorted(p.relative_to(out) for p in out.rglob("*"))
    train_yaml.write_text(yaml.safe_dump({**yaml.safe_load(original), "learning_rate": 0.5}))
    for extra in ([], ["--tables-only"]):
        assert main(["experiment", "lambda", "--config", str(config), "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "trained with other settings" in err[0] and "learning_rate:" in err[0]
    train_yaml.write_text(original)
    exp_data = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**exp_data, "evaluate": {**exp_data["evaluate"], "limit": 3}}))
    assert main(["experiment", "lambda", "--config", str(config), "--out", str(out)]) == 2
    assert "evaluated with another evaluate: block" in capsys.readouterr().err
    config.write_text(yaml.safe_dump(exp_data, allow_unicode=True))
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before

    page = build_report([str(out)], tmp_path / "report")
    report = (page / "report.md").read_text()
    assert "## Experiment: lambda" in report and "(results/harm_suites_harmful_rate_vs_x.png)" in report
    assert (page / "report.html").read_text().count("data:image/png;base64,") == 2


def test_every_study_config_plans_valid_training_runs(tmp_path):
    from tasft.run_config import load_train_config

    files = sorted((Path(__file__).resolve().parents[1] / "configs" / "experiments").glob("*.yaml"))
    studies = set()
    for path in files:
        if path.name.startswith("train_"):  # training configs the studies share
            continue
        exp = study.load_experiment(path)
        studies.add(exp.study)
        for point in study.plan(exp, seeds=3):
            load_train_config(exp.train_config, study.point_overrides(point, tmp_path / point.slug))
    assert studies == set(study.STUDIES)


def test_pareto_front_and_figure(tmp_path):
    from tasft.experiments.pareto import not_safe, pareto_front, pareto_plot

    # (NLL, not-safe): (1.5, .6) and (1.4, .7) trade off; (1.6, .65) is dominated by (1.5, .6); (2.0, .2) is best safety
    assert pareto_front([(1.5, 0.6), (1.4, 0.7), (1.6, 0.65), (2.0, 0.2)]) == [1, 0, 3]
    assert pareto_front([(1.0, 0.5), (1.0, 0.5)]) == [0, 1]  # equal points do not dominate each other
    row = {"series": "a", "x": None, "harm_suites_safe_rate": 0.4, "harm_suites_safe_rate_lo": 0.3,
           "harm_suites_safe_rate_hi": 0.5, "reference_nll": 1.5, "reference_nll_lo": 1.4, "reference_nll_hi": 1.6,
           "over_refusal": 0.02}
    assert not_safe(row) == pytest.approx((0.6, 0.5, 0.7))
    other = {**row, "series": "b", "x": 3, "harm_suites_safe_rate": 0.8, "harm_suites_safe_rate_lo": 0.7,
             "harm_suites_safe_rate_hi": 0.9}
    pareto_plot("study", [row, other], tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0
    # labels of close points stack downwards from the highest; a far point keeps the default place
    from tasft.experiments.pareto import label_offsets

    offsets = label_offsets([1.43, 1.431, 1.9, 1.46, 1.465], [0.60, 0.605, 0.30, 0.452, 0.446])
    assert offsets == [(5.0, -5.0), (5.0, 4.0), (5.0, 4.0), (5.0, 4.0), (5.0, -5.0)]


def test_a_pareto_plot_is_a_plot_kind(tmp_path, tiny_model_dir, tiny_data):
    exp = study.load_experiment(_write(tmp_path, tiny_model_dir, tiny_data, plots=[{"kind": "pareto"}]))
    assert exp.plots[0].kind == "pareto"
    with pytest.raises(TasftError, match="kind"):
        study.load_experiment(_write(tmp_path, tiny_model_dir, tiny_data, plots=[{"kind": "pie"}]))


def test_the_committed_full_spec_verdict_follows_from_its_result_files():
    """docs/results/methods_full/verdict.md is what verdict.py computes from the committed paired.json and CSV."""
    import importlib.util

    folder = Path(__file__).resolve().parents[1] / "docs" / "results" / "methods_full"
    spec_ = importlib.util.spec_from_file_location("verdict_full", folder / "verdict.py")
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    assert module.render() == (folder / "verdict.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("study", ["variants", "gemma"])
def test_the_committed_variants_verdicts_follow_from_their_result_files(study):
    """Each model's variants verdict.md is what docs/results/variants/verdict.py computes from that study's
    committed paired.json and results.csv (the SmolLM2 study and the Gemma one, by the same rules)."""
    import importlib.util

    results = Path(__file__).resolve().parents[1] / "docs" / "results"
    spec_ = importlib.util.spec_from_file_location("verdict_variants", results / "variants" / "verdict.py")
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    assert module.render(results / study) == (results / study / "verdict.md").read_text(encoding="utf-8")


THREE_SEED_STUDIES = [  # (study under docs/results, its config, the labels its verdict's trust column reads)
    ("seeds3", "seeds3.yaml", None),
    ("gemma_seeds3", "gemma_seeds3.yaml", "labels/gemma_trained/agreement.json"),
]


@pytest.mark.parametrize("study, config, agreement", THREE_SEED_STUDIES)
def test_the_committed_three_seed_verdict_follows_from_its_result_files(study, config, agreement):
    """docs/results/<study>/verdict.md is what seeds3/verdict.py computes from the committed paired.json and the
    labelled answers' agreement table."""
    import importlib.util

    results = Path(__file__).resolve().parents[1] / "docs" / "results"
    spec_ = importlib.util.spec_from_file_location("verdict_seeds3", results / "seeds3" / "verdict.py")
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    extra = () if agreement is None else (results / agreement,)
    assert module.render(results / study, *extra) == (results / study / "verdict.md").read_text(encoding="utf-8")


@needs_data
@pytest.mark.parametrize("study, config, agreement", THREE_SEED_STUDIES)
def test_the_committed_three_seed_tables_rebuild_from_their_archive(tmp_path, monkeypatch, study, config, agreement):
    """Restoring a study's points archive (checked against docs/results/SHA256SUMS) and rebuilding with
    --tables-only gives the committed tables, paired differences and figures byte for byte; only results.csv's
    eval_dir column names where the study directory is. The files the points were trained from (a harvested D_h,
    a reference curve) are not in a clean clone: reading the points' results does not need them."""
    from tasft.experiments import publish, runner

    root = Path(__file__).resolve().parents[1]
    committed = root / "docs" / "results" / study
    monkeypatch.chdir(root)
    out = tmp_path / "results" / study
    publish.restore_points(committed, out)
    runner.run_experiment("variants", str(root / "configs" / "experiments" / config), out, seeds=3,
                          tables_only=True, progress=False)
    for name in ("results.md", "paired.json", "pareto_not_safe_vs_reference_nll.png",
                 "harm_suites_safe_rate_vs_harm_suites_degenerate_rate.png"):
        assert (out / name).read_bytes() == (committed / name).read_bytes(), name
    rebuilt = (out / "results.csv").read_text(encoding="utf-8").replace(str(tmp_path) + "/", "")
    assert rebuilt == (committed / "results.csv").read_text(encoding="utf-8")
