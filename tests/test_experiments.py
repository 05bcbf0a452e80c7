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
from tasft.experiments import results, runner, spec
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
    exp = spec.load_experiment(_write(tmp_path, tiny_model_dir, tiny_data, headline_values=[0.5]))
    points = spec.plan(exp, seeds=3)
    assert [(p.series.name, p.x, p.seed) for p in points] == [
        ("emd", 0.0, 0), ("emd", 0.5, 0), ("emd", 0.5, 1), ("emd", 0.5, 2), ("stages sft", None, 0)]
    assert points[1].slug == "emd__x0.5__seed0" and points[-1].slug == "stages-sft__seed0"
    assert exp.train_config == str(tmp_path / "train.yaml")


@pytest.mark.parametrize(("extra", "expected"), [
    ({"study": "speed"}, "study 'speed' is not one of"),
    ({"series": []}, "at least one series"),
    ({"series": [{"name": "a", "vary": "lambda"}]}, "give both vary and values"),
    ({"series": [{"name": "a"}, {"name": "a"}]}, "series names must be unique"),
    ({"plots": [{"y": "accuracy"}]}, "unknown metric 'accuracy'"),
    ({"sieves": 2}, "unknown key 'sieves'"),
])
def test_bad_experiment_files(tmp_path, tiny_model_dir, tiny_data, extra, expected):
    with pytest.raises(TasftError, match=expected):
        spec.load_experiment(_write(tmp_path, tiny_model_dir, tiny_data, **extra))


def test_aggregate_mean_and_std_over_seeds():
    rows = [{"series": "a", "x": 1, "seed": s, "harm_suites_harmful_rate": v, "train_seconds": 10.0}
            for s, v in enumerate((0.2, 0.4))]
    (agg,) = results.aggregate(rows)
    assert agg["seeds"] == 2 and agg["harm_suites_harmful_rate"] == pytest.approx(0.3)
    assert agg["harm_suites_harmful_rate_std"] == pytest.approx(0.1414, abs=1e-4) and agg["over_refusal"] is None


@needs_data
def test_experiment_runs_resumes_and_reports(tmp_path, tiny_model_dir, tiny_data, monkeypatch, capsys):
    monkeypatch.setattr(judges, "load_judge", lambda name, options=None: keyword_judge())
    config, out = _write(tmp_path, tiny_model_dir, tiny_data), tmp_path / "results"
    assert main(["experiment", "lambda", "--config", str(config), "--out", str(out)]) == 0
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
    assert sorted(p.name for p in out.glob("*.png")) == ["harm_suites_harmful_rate_vs_x.png",
                                                         "over_refusal_vs_harm_suites_harmful_rate.png"]

    def fail(*args, **kwargs):
        raise AssertionError("a finished point was run again")

    monkeypatch.setattr("tasft.training.pipeline.train", fail)
    monkeypatch.setattr(ev, "evaluate", fail)
    assert main(["experiment", "lambda", "--config", str(config), "--out", str(out)]) == 0  # resumes: no work
    assert main(["experiment", "stages", "--config", str(config), "--out", str(out)]) == 2
    assert "describes study 'lambda', not 'stages'" in capsys.readouterr().err

    page = build_report([str(out)], tmp_path / "report")
    report = (page / "report.md").read_text()
    assert "## Experiment: lambda" in report and "(results/harm_suites_harmful_rate_vs_x.png)" in report
    assert (page / "report.html").read_text().count("data:image/png;base64,") == 2


def test_every_study_config_plans_valid_training_runs(tmp_path):
    from tasft.run_config import load_train_config

    files = sorted((Path(__file__).resolve().parents[1] / "configs" / "experiments").glob("*.yaml"))
    studies = set()
    for path in files:
        if path.name == "train_base.yaml":
            continue
        exp = spec.load_experiment(path)
        studies.add(exp.study)
        for point in spec.plan(exp, seeds=3):
            load_train_config(exp.train_config, runner._overrides(point, tmp_path / point.slug))
    assert studies == set(spec.STUDIES)
