"""Experiment points shared between sibling studies, the starting-model series, pruning and per-suite limits."""

import dataclasses
import json

import pytest
import yaml

import tasft.evaluation.evaluate as ev
from tasft import config, outputs
from tasft.cli import main
from tasft.errors import TasftError
from tasft.experiments import results, runner, sharing, study
from tasft.run_changes import comparable
from tasft.run_config import load_train_config
from tasft.scoring import judges

from .conftest import tiny_overrides
from .test_evaluate import _settings, keyword_judge
from .test_experiments import DATA, _write, needs_data

ONE_POINT = [{"name": "emd", "set": {"ta_sft.penalty": "emd"}, "vary": "ta_sft.lambda", "values": [0.5]}]


def _study(tmp_path, tiny_model_dir, tiny_data, name, study, series):
    folder = tmp_path / name
    folder.mkdir()
    return _write(folder, tiny_model_dir, tiny_data, study=study, series=series, plots=[{"y": "over_refusal"}])


@needs_data
def test_sibling_study_reuses_a_finished_point_and_prunes(tmp_path, tiny_model_dir, tiny_data, monkeypatch):
    monkeypatch.setattr(judges, "load_judge", lambda name, options=None: keyword_judge())
    first = _study(tmp_path, tiny_model_dir, tiny_data, "a", "lambda", ONE_POINT)
    results = tmp_path / "results"
    runner.run_experiment("lambda", str(first), results / "lambda", progress=False, prune=True)
    run_dir = results / "lambda" / "runs" / "emd__x0.5__seed0"
    assert (run_dir / "metrics.json").is_file() and (run_dir / "config.yaml").is_file()
    assert not list(run_dir.glob("checkpoint-*")) and not list(run_dir.glob("*.safetensors"))

    def fail(*args, **kwargs):
        raise AssertionError("a point finished by a sibling study was run again")

    monkeypatch.setattr("tasft.training.pipeline.train", fail)
    monkeypatch.setattr(ev, "evaluate", fail)
    renamed = [{**ONE_POINT[0], "name": "emd again"}]
    second = _study(tmp_path, tiny_model_dir, tiny_data, "b", "contrastive", renamed)
    (row,) = runner.run_experiment("contrastive", str(second), results / "contrastive", progress=False)
    first_row = json.loads((results / "lambda" / "evals" / "emd__x0.5__seed0" / "metrics.json").read_text())
    assert row["series"] == "emd again" and row["eval_dir"].endswith("lambda/evals/emd__x0.5__seed0")
    assert row["harm_suites_harmful_rate"] == first_row["summary"]["harm_suites_harmful_rate"]
    assert not (results / "contrastive" / "runs").exists()  # nothing trained here

    different = [{**ONE_POINT[0], "values": [0.25]}]  # another λ is not the same point: it must train
    third = _study(tmp_path, tiny_model_dir, tiny_data, "c", "contrastive", different)
    with pytest.raises(AssertionError, match="run again"):
        runner.run_experiment("contrastive", str(third), results / "other", progress=False)


@needs_data
def test_a_siblings_point_made_from_another_data_file_is_not_shared(tmp_path, tiny_model_dir, tiny_data,
                                                                     monkeypatch):
    """The same settings and file name, but the D_h file changed since the sibling trained on it: the point is
    trained again here, not passed off as finished; the sibling's own points stay as they are."""
    monkeypatch.setattr(judges, "load_judge", lambda name, options=None: keyword_judge())
    data = {**tiny_data, "harmful": tmp_path / "dh.jsonl"}
    data["harmful"].write_bytes(tiny_data["harmful"].read_bytes())
    results = tmp_path / "results"
    runner.run_experiment("lambda", str(_study(tmp_path, tiny_model_dir, data, "a", "lambda", ONE_POINT)),
                          results / "lambda", progress=False)
    lines = data["harmful"].read_text().splitlines()
    data["harmful"].write_text("\n".join(reversed(lines)) + "\n")  # other content under the same name

    def fail(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr("tasft.training.pipeline.train", fail)
    second = _study(tmp_path, tiny_model_dir, data, "b", "contrastive", [{**ONE_POINT[0], "name": "emd again"}])
    with pytest.raises(AssertionError, match="trained again"):
        runner.run_experiment("contrastive", str(second), results / "contrastive", progress=False)
    data["harmful"].write_text("\n".join(lines) + "\n")  # the file as the sibling's point was made from: shared
    (row,) = runner.run_experiment("contrastive", str(second), results / "contrastive2", progress=False)
    assert row["eval_dir"].endswith("lambda/evals/emd__x0.5__seed0")


def test_a_point_a_sibling_is_training_waits_then_trains_here(tmp_path, tiny_model_dir, tiny_data, monkeypatch):
    exp = study.load_experiment(_study(tmp_path, tiny_model_dir, tiny_data, "a", "lambda", ONE_POINT))
    results = tmp_path / "results"
    (point,) = study.plan(exp, 1)
    busy = results / "lambda" / "runs" / point.slug  # a sibling's run that has started (config.yaml, no metrics)
    outputs.claim(busy, "train", "test").release()
    cfg = load_train_config(exp.train_config, study.point_overrides(point, busy))
    (busy / "config.yaml").write_text(yaml.safe_dump(comparable(config.to_dict(cfg))))
    (results / "lambda" / "experiment.json").write_text(json.dumps(dataclasses.asdict(exp)))
    here = results / "contrastive"
    here.mkdir()
    assert sharing.find_shared(exp, cfg, here)[0] == "none"  # nobody holds it: an abandoned attempt is not waited for
    (busy / "metrics.json").write_text("{}")  # finished, not evaluated: shared to evaluate only with its weights
    assert sharing.find_shared(exp, cfg, here)[0] == "none"  # pruned (e.g. a checkpoint series'): nothing to evaluate
    (busy / "model.safetensors").write_bytes(b"weights")
    assert sharing.find_shared(exp, cfg, here)[:2] == ("trained", busy)
    sharing.prune_weights(busy)
    assert not sharing.has_weights(busy) and (busy / "metrics.json").exists()
    (busy / "metrics.json").unlink()
    lock = outputs.DirectoryLock(busy)
    assert lock.acquire()  # the sibling's process, alive and training
    try:
        with pytest.raises(sharing.PointBusy):
            runner.run_point(exp, point, here, progress=False)
    finally:
        lock.release()
    trained = []
    monkeypatch.setattr(runner, "run_point", lambda *a, share=True, **k: trained.append(share) or [])
    assert runner._wait_and_run(exp, point, here, progress=False, poll_s=0.0, patience_s=0.0) == []
    assert trained == [False]  # the patience ran out: trained here, not shared


@needs_data
def test_starting_model_series_evaluates_the_untrained_model(tmp_path, tiny_model_dir, tiny_data, monkeypatch):
    monkeypatch.setattr(judges, "load_judge", lambda name, options=None: keyword_judge())
    monkeypatch.setattr("tasft.training.pipeline.train",
                        lambda *a, **k: pytest.fail("the starting model is not trained"))
    series = [{"name": "starting model", "starting_model": True, "values": [0]}]
    config = _study(tmp_path, tiny_model_dir, tiny_data, "a", "stages", series)
    (row,) = runner.run_experiment("stages", str(config), tmp_path / "out", progress=False)
    saved = json.loads((tmp_path / "out" / "evals" / "starting-model__x0__seed0" / "metrics.json").read_text())
    assert row["x"] == 0 and row["train_seconds"] is None and saved["model"] == str(tiny_model_dir)
    assert (tmp_path / "out" / "over_refusal_vs_x.png").stat().st_size > 0
    # a sibling study with the same training config and evaluation reuses that evaluation instead of repeating it
    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: pytest.fail("the sibling's evaluation was repeated"))
    (again,) = runner.run_experiment("stages", str(config), tmp_path / "out2", progress=False)
    assert again["eval_dir"] == str(tmp_path / "out" / "evals" / "starting-model__x0__seed0")
    assert again["harm_suites_harmful_rate"] == row["harm_suites_harmful_rate"]
    lock = outputs.DirectoryLock(tmp_path / "out" / "evals" / "starting-model__x0__seed0")
    (tmp_path / "out" / "evals" / "starting-model__x0__seed0" / "metrics.json").unlink()
    assert lock.acquire()  # the sibling's process, alive and evaluating it: this study waits
    try:
        with pytest.raises(sharing.PointBusy):
            runner.run_point(study.load_experiment(config), study.plan(study.load_experiment(config), 1)[0],
                             tmp_path / "out3", progress=False)
    finally:
        lock.release()


def test_starting_model_series_takes_no_sweep(tmp_path, tiny_model_dir, tiny_data):
    series = [{"name": "s", "starting_model": True, "vary": "lambda", "values": [1, 2]}]
    with pytest.raises(TasftError, match="starting_model takes at most one x value, no vary"):
        study.load_experiment(_study(tmp_path, tiny_model_dir, tiny_data, "a", "stages", series))


def test_rows_follow_the_experiment_file_order():
    exp = study.ExperimentConfig(study="lambda", train_config="t.yaml", series=[
        study.Series("b", vary="lambda", values=[3, 1]), study.Series("a", checkpoints=True)])
    rows = [{"series": "a", "x": 20}, {"series": "b", "x": 1}, {"series": "a", "x": 10}, {"series": "b", "x": 3}]
    assert [(r["series"], r["x"]) for r in results.ordered(exp, rows)] == [("b", 3), ("b", 1), ("a", 10), ("a", 20)]


@needs_data
def test_per_suite_limits_override_the_global_limit(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(judges, "load_judge", lambda name, options=None: keyword_judge())
    settings = _settings(tiny_model_dir, tmp_path, "malicious,xstest-safe", limit=2,
                         suite_limits={"xstest-safe": 3}, data_dir=str(DATA))
    metrics = ev.evaluate(settings, progress=False)
    assert metrics["suites"]["malicious"]["n"] == 2 and metrics["suites"]["xstest-safe"]["n"] == 3
    assert metrics["suite_limits"] == {"xstest-safe": 3}
    with pytest.raises(TasftError, match="suite limit for a suite not evaluated: alpaca"):
        ev.evaluate(_settings(tiny_model_dir, tmp_path, "malicious", suite_limits={"alpaca": 1},
                              data_dir=str(DATA)), progress=False)
    capsys.readouterr()
    code = main(["evaluate", "--model", str(tiny_model_dir), "--suites", "malicious", "--out",
                 str(tmp_path / "e"), "--suite-limit", "malicious"])
    assert code == 2 and capsys.readouterr().err.strip() == \
        "tasft: error: --suite-limit 'malicious': expected SUITE=N with N >= 1"


def test_contrastive_source_is_validated(tiny_model_dir, tiny_data, tmp_path):
    with pytest.raises(TasftError, match="contrastive.source: must be auto or generated, got 'llm'"):
        load_train_config(None, tiny_overrides(tiny_model_dir, tiny_data, tmp_path, **{"contrastive.source": "llm"}))



@needs_data
def test_a_pruned_checkpoint_series_resumes_from_its_evaluations(tmp_path, tiny_model_dir, tiny_data, monkeypatch):
    monkeypatch.setattr(judges, "load_judge", lambda name, options=None: keyword_judge())
    series = [{"name": "stages sft", "set": {"method": "sft"}, "checkpoints": True}]
    config = _study(tmp_path, tiny_model_dir, tiny_data, "a", "stages", series)
    first = runner.run_experiment("stages", str(config), tmp_path / "out", progress=False, prune=True)
    assert [r["x"] for r in first] == [2, 4] and not list((tmp_path / "out" / "runs").glob("*/checkpoint-*"))
    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: pytest.fail("an evaluated checkpoint was evaluated again"))
    again = runner.run_experiment("stages", str(config), tmp_path / "out", progress=False, prune=True)
    assert [(r["x"], r["over_refusal"]) for r in again] == [(r["x"], r["over_refusal"]) for r in first]


def test_unswept_series_are_reference_lines_and_one_value_sweeps_are_points(tmp_path, monkeypatch):
    import matplotlib.axes

    lines = []
    original = matplotlib.axes.Axes.axhline
    monkeypatch.setattr(matplotlib.axes.Axes, "axhline",
                        lambda self, y, **k: lines.append((k.get("label"), y)) or original(self, y, **k))
    exp = study.ExperimentConfig(study="data-efficiency", train_config="t.yaml", series=[
        study.Series("sft"), study.Series("base", starting_model=True, values=[0]),
        study.Series("kto", vary="harmful_data.limit", values=[100]),
        study.Series("emd", vary="lambda", values=[1, 3])])
    rows = [{"series": "sft", "x": None, "seed": 0, "over_refusal": 0.1},
            {"series": "base", "x": 0, "seed": 0, "over_refusal": 0.2},
            {"series": "kto", "x": 100, "seed": 0, "over_refusal": 0.3},
            *({"series": "emd", "x": x, "seed": 0, "over_refusal": 0.4} for x in (1, 3))]
    results.plot(exp, rows, study.PlotSettings("over_refusal", log_x=True), tmp_path / "p.png")
    assert lines == [("sft", 0.1), ("base", 0.2)] and (tmp_path / "p.png").stat().st_size > 0


def test_a_config_written_before_a_setting_existed_still_matches():
    cfg = config.to_dict(load_train_config(None, ["model=m", "train_data=a.jsonl", "harmful_data=h.jsonl"]))
    older = {k: v for k, v in cfg.items() if k != "measure"}
    older["harmful_data"] = {k: v for k, v in cfg["harmful_data"].items() if k not in ("audit", "audit_drop")}
    assert comparable(older) == comparable(cfg)
    changed = {**cfg, "harmful_data": {**cfg["harmful_data"], "audit": "x.csv"}}
    assert comparable(changed) != comparable(cfg)
    older["ta_sft"] = {k: v for k, v in cfg["ta_sft"].items() if k not in ("trust_region", "penalty_selectivity")}
    assert comparable(older) == comparable(cfg)  # a method setting added later: its default
    assert comparable({**cfg, "ta_sft": {**cfg["ta_sft"], "trust_region": 1.0}}) != comparable(cfg)


def test_an_evaluation_written_before_a_setting_existed_still_matches(tmp_path, tiny_model_dir, tiny_data):
    exp = study.load_experiment(_study(tmp_path, tiny_model_dir, tiny_data, "a", "lambda", ONE_POINT))
    block = dataclasses.asdict(exp.evaluate)
    older = {**block, "generation": {k: v for k, v in block["generation"].items() if k != "workers"}}
    assert sharing.same_evaluation(exp, {"evaluate": older})
    more_workers = {**block, "generation": {**block["generation"], "workers": 2}}  # cannot change an answer
    assert sharing.same_evaluation(exp, {"evaluate": more_workers})
    assert not sharing.same_evaluation(exp, {"evaluate": {**block, "limit": 3}})
    assert not sharing.same_evaluation(exp, {"evaluate": {**block, "nonsense": 1}})


def test_series_file_settings_are_relative_to_the_experiment_file(tmp_path, tiny_model_dir, tiny_data):
    series = [{"name": "pure", "set": {"harmful_data.audit": "audit.csv", "ta_sft.penalty": "emd"},
               "vary": "ta_sft.lambda", "values": [1.0]}]
    exp = study.load_experiment(_study(tmp_path, tiny_model_dir, tiny_data, "a", "lambda", series))
    assert exp.series[0].set == {"harmful_data.audit": str(tmp_path / "a" / "audit.csv"), "ta_sft.penalty": "emd"}


@needs_data
def test_exported_points_hold_no_text_and_restore_as_finished(tmp_path, tiny_model_dir, tiny_data, monkeypatch):
    from tasft.experiments import publish
    from tasft.experiments.publish import export_points

    monkeypatch.setattr(judges, "load_judge", lambda name, options=None: keyword_judge())
    study = _study(tmp_path, tiny_model_dir, tiny_data, "a", "lambda", ONE_POINT)
    out = tmp_path / "results" / "lambda"
    (row,) = runner.run_experiment("lambda", str(study), out, progress=False, prune=True)
    pub = tmp_path / "published"
    assert export_points(out, pub)[0] == 2  # one run, one evaluation
    assert sorted(p.name for p in pub.iterdir()) == ["points.sha256", "points.tar.xz"]
    archived = publish.read_archive(pub / "points.tar.xz")
    texts = [r[k] for f in (out / "evals").glob("*/generations/*.jsonl") for r in map(json.loads, f.read_text(
        ).splitlines()) for k in ("prompt", "response") if len(r[k].strip()) > 3]  # the tiny model answers little
    assert len(texts) >= 4
    exported = "".join(data.decode("utf-8") for data in archived.values())
    assert not any(t in exported for t in texts) and '"response"' not in exported and '"prompt"' not in exported
    assert not any("generations" in name for name in archived)

    def fail(*args, **kwargs):
        raise AssertionError("a restored point was run again")

    monkeypatch.setattr("tasft.training.pipeline.train", fail)
    monkeypatch.setattr(ev, "evaluate", fail)
    restored = tmp_path / "elsewhere" / "lambda"
    assert publish.restore_points(pub, restored) == len(archived)
    (again,) = runner.run_experiment("lambda", str(study), restored, progress=False)
    keys = [k for k in row if k != "eval_dir"]
    assert {k: again[k] for k in keys} == {k: row[k] for k in keys}
    assert export_points(restored, tmp_path / "republished")[0] == 2  # a restored point exports to the same bytes
    assert (tmp_path / "republished" / "points.tar.xz").read_bytes() == (pub / "points.tar.xz").read_bytes()
    assert publish.restore_points(pub, restored) == 0  # restoring again writes nothing (same bytes)
    orphan = out / "runs" / "emd__x9.0__seed0"  # a run whose evaluation never finished: not a point to export
    orphan.mkdir()
    (orphan / "metrics.json").write_text("{}")
    assert export_points(out, tmp_path / "again")[0] == 2
    assert '"prompt_id"' in exported
    with pytest.raises(TasftError, match="outside the study directory"):
        export_points(out, out / "pub")


@needs_data
def test_a_restored_point_without_its_run_is_shared_through_its_study_file(tmp_path, tiny_model_dir, tiny_data,
                                                                          monkeypatch):
    """An archive whose runs were pruned before export (evaluations only): a sibling study still shares its point
    when the archived study's series resolves to the same training config, and only then."""
    import shutil

    monkeypatch.setattr(judges, "load_judge", lambda name, options=None: keyword_judge())
    study = _study(tmp_path, tiny_model_dir, tiny_data, "a", "lambda", ONE_POINT)
    out = tmp_path / "results" / "lambda"
    (row,) = runner.run_experiment("lambda", str(study), out, progress=False, prune=True)
    shutil.rmtree(out / "runs")  # what an evaluation-only archive restores

    def fail(*args, **kwargs):
        raise AssertionError("a restored point was run again")

    monkeypatch.setattr("tasft.training.pipeline.train", fail)
    monkeypatch.setattr(ev, "evaluate", fail)
    renamed = [{**ONE_POINT[0], "name": "emd again"}]
    second = _study(tmp_path, tiny_model_dir, tiny_data, "b", "contrastive", renamed)
    (shared,) = runner.run_experiment("contrastive", str(second), tmp_path / "results" / "contrastive", progress=False)
    assert shared["eval_dir"].endswith("lambda/evals/emd__x0.5__seed0")
    assert shared["harm_suites_harmful_rate"] == row["harm_suites_harmful_rate"]
    assert shared["train_seconds"] == row["train_seconds"] is not None  # from the evaluation's training summary

    different = [{**ONE_POINT[0], "values": [0.25]}]
    third = _study(tmp_path, tiny_model_dir, tiny_data, "c", "contrastive", different)
    with pytest.raises(AssertionError, match="run again"):
        runner.run_experiment("contrastive", str(third), tmp_path / "results" / "other", progress=False)


@needs_data
def test_an_evaluation_only_archive_restored_in_place_is_not_run_again(tmp_path, tiny_model_dir, tiny_data,
                                                                       monkeypatch):
    """The committed archives hold evaluations only (git ignores runs/): restored into the study's own --out, the
    documented command finds its points finished through the restored experiment.json — even though the run
    rewrites that file — and a series whose settings changed since is trained, not passed off as restored."""
    import shutil

    monkeypatch.setattr(judges, "load_judge", lambda name, options=None: keyword_judge())
    study = _study(tmp_path, tiny_model_dir, tiny_data, "a", "lambda", ONE_POINT)
    out = tmp_path / "results" / "lambda"
    (row,) = runner.run_experiment("lambda", str(study), out, progress=False, prune=True)
    shutil.rmtree(out / "runs")  # an evaluation-only archive, restored where it was made

    def fail(*args, **kwargs):
        raise AssertionError("a restored point was run again")

    monkeypatch.setattr("tasft.training.pipeline.train", fail)
    monkeypatch.setattr(ev, "evaluate", fail)
    for _ in range(2):  # the second time, experiment.json is the one the first run rewrote
        (again,) = runner.run_experiment("lambda", str(study), out, progress=False)
        assert again["harm_suites_harmful_rate"] == row["harm_suites_harmful_rate"]
        assert again["eval_dir"] == row["eval_dir"] and not (out / "runs").exists()
    (table,) = runner.run_experiment("lambda", str(study), out, progress=False, tables_only=True)
    assert table["harm_suites_harmful_rate"] == row["harm_suites_harmful_rate"]
    changed = _study(tmp_path, tiny_model_dir, tiny_data, "b", "lambda",
                     [{**ONE_POINT[0], "set": {"ta_sft.penalty": "emd_lb"}}])
    with pytest.raises(AssertionError, match="run again"):
        runner.run_experiment("lambda", str(changed), out, progress=False)


@needs_data
def test_a_run_evaluated_by_another_sibling_is_shared_with_a_third(tmp_path, tiny_model_dir, tiny_data, monkeypatch):
    """a trains a point but dies before evaluating it; b finds it trained and evaluates it in its own evals/; c then
    shares a's run with b's evaluation instead of evaluating it a second time."""
    monkeypatch.setattr(judges, "load_judge", lambda name, options=None: keyword_judge())
    real_evaluate = ev.evaluate

    def dies(*args, **kwargs):
        raise RuntimeError("killed before the evaluation")

    results = tmp_path / "results"
    first = _study(tmp_path, tiny_model_dir, tiny_data, "a", "lambda", ONE_POINT)
    monkeypatch.setattr(ev, "evaluate", dies)
    with pytest.raises(RuntimeError):
        runner.run_experiment("lambda", str(first), results / "a", progress=False)
    monkeypatch.setattr(ev, "evaluate", real_evaluate)
    second = _study(tmp_path, tiny_model_dir, tiny_data, "b", "lambda", ONE_POINT)
    (row_b,) = runner.run_experiment("lambda", str(second), results / "b", progress=False)
    assert row_b["eval_dir"].endswith("b/evals/emd__x0.5__seed0") and not (results / "b" / "runs").exists()

    def fail(*args, **kwargs):
        raise AssertionError("evaluated a second time")

    monkeypatch.setattr(ev, "evaluate", fail)
    monkeypatch.setattr("tasft.training.pipeline.train", fail)
    third = _study(tmp_path, tiny_model_dir, tiny_data, "c", "lambda", ONE_POINT)
    (row_c,) = runner.run_experiment("lambda", str(third), results / "c", progress=False)
    assert row_c["eval_dir"] == row_b["eval_dir"]


def test_a_points_archive_restores_only_when_it_checks_out(tmp_path):
    """--restore verifies the archive against its checksum, never writes outside the study directory and never
    overwrites a file that differs: each refusal is one line and leaves the study directory as it was."""
    import gzip
    import hashlib
    import io
    import tarfile

    from tasft.experiments import publish

    files = {"experiment.json": b"{}\n", "evals/p/metrics.json": b'{"summary": {}}\n'}
    src = tmp_path / "pub"
    src.mkdir()
    data = publish.tar_xz(files)
    assert data == publish.tar_xz(dict(reversed(files.items())))  # reproducible: order, times, owners fixed
    (src / "points.tar.xz").write_bytes(data)
    with pytest.raises(TasftError, match="no checksum for it"):
        publish.restore_points(src, tmp_path / "a")
    (src / "points.sha256").write_text(f"{hashlib.sha256(data + b'x').hexdigest()}  points.tar.xz\n")
    with pytest.raises(TasftError, match="does not match"):
        publish.restore_points(src, tmp_path / "a")
    (src / "points.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  points.tar.xz\n")
    out = tmp_path / "a"
    (out / "evals" / "p").mkdir(parents=True)
    (out / "evals" / "p" / "metrics.json").write_text("mine")
    with pytest.raises(TasftError, match="exists with other contents"):
        publish.restore_points(src, out)
    assert (out / "evals" / "p" / "metrics.json").read_text() == "mine" and not (out / "experiment.json").exists()
    assert publish.restore_points(src, tmp_path / "b") == 2

    old = tmp_path / "old"  # an earlier export: gzip, checksum beside it
    old.mkdir()
    gz = gzip.compress(publish.tar_bytes(files), mtime=0)
    (old / "points.tar.gz").write_bytes(gz)
    (old / "points.sha256").write_text(f"{hashlib.sha256(gz).hexdigest()}  points.tar.gz\n")
    assert publish.restore_points(old, tmp_path / "from_old") == 2

    buffer = io.BytesIO()  # a hostile archive: a member that climbs out of the study directory
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "points.tar.gz").write_bytes(buffer.getvalue())  # an older export's format
    (bad / "points.sha256").write_text(f"{hashlib.sha256(buffer.getvalue()).hexdigest()}  points.tar.gz\n")
    with pytest.raises(TasftError, match="not a plain file inside the study"):
        publish.restore_points(bad, tmp_path / "c")
    assert not (tmp_path / "escape.txt").exists()


def test_a_results_tree_keeps_one_manifest_for_its_archives(tmp_path):
    """Where the parent folder keeps a SHA256SUMS (as docs/results does), an export records its archive there,
    keeping the other lines, and restore verifies against it: by the study folder or by the archive's path."""
    import hashlib

    from tasft.experiments import publish

    tree = tmp_path / "docs_results"
    (tree / "old").mkdir(parents=True)
    (tree / "old" / "records.tar.xz").write_bytes(b"x")
    (tree / "SHA256SUMS").write_text(f"{hashlib.sha256(b'x').hexdigest()}  old/records.tar.xz\n")
    files = {"experiment.json": b"{}\n", "evals/p/metrics.json": b'{"summary": {}}\n'}
    data = publish.tar_xz(files)
    (tree / "study").mkdir()
    (tree / "study" / "points.tar.xz").write_bytes(data)
    assert publish.record_checksum(tree / "study" / "points.tar.xz", data) == tree / "SHA256SUMS"
    assert not (tree / "study" / "points.sha256").exists()
    lines = (tree / "SHA256SUMS").read_text().splitlines()
    assert lines == [f"{hashlib.sha256(b'x').hexdigest()}  old/records.tar.xz",
                     f"{hashlib.sha256(data).hexdigest()}  study/points.tar.xz"]
    assert publish.restore_points(tree / "study", tmp_path / "a") == 2
    assert publish.restore_points(tree / "study" / "points.tar.xz", tmp_path / "b") == 2
    (tree / "study" / "points.tar.xz").write_bytes(data + b"!")
    with pytest.raises(TasftError, match="does not match"):
        publish.restore_points(tree / "study", tmp_path / "c")


def test_a_moved_project_keeps_its_points_but_another_file_is_a_change():
    """Restored points were trained in another clone or worktree: the same file of the project at another root is
    not a change of settings; a file in another folder, or another file, still is."""
    from tasft.run_changes import config_changes, relocated

    assert relocated("/work/grid/runs/experiments/pool.jsonl", "/home/me/tasft/runs/experiments/pool.jsonl")
    assert not relocated("/work/grid/runs/a/pool.jsonl", "/work/grid/runs/b/pool.jsonl")
    assert not relocated("/work/grid/runs/experiments/pool.jsonl", "/work/grid/runs/experiments/other.jsonl")
    assert not relocated("runs/experiments/pool.jsonl", "/x/runs/experiments/pool.jsonl")  # absolute paths only
    saved = {"harmful_data": {"path": "/work/grid/runs/experiments/pool.jsonl"}, "learning_rate": 2e-5}
    moved = {"harmful_data": {"path": "/home/me/tasft/runs/experiments/pool.jsonl"}, "learning_rate": 2e-5}
    assert config_changes(saved, moved) == []
    other = {"harmful_data": {"path": "/home/me/tasft/runs/mine/pool.jsonl"}, "learning_rate": 2e-5}
    assert config_changes(saved, other) and "harmful_data.path" in config_changes(saved, other)[0]


def test_a_setting_that_cannot_affect_the_run_is_not_a_change():
    """The in-run harvest's answer length matters only when D_h is harvested in the run: a run that read D_h from a
    file keeps its finished points when that setting (or its default) changes; a harvesting run does not."""
    from tasft.run_changes import config_changes

    from_file = {"harmful_data": {"path": "pool.jsonl", "harvest": False}, "harvest_max_new_tokens": 96}
    assert config_changes(from_file, {**from_file, "harvest_max_new_tokens": 128}) == []
    harvested = {"harmful_data": {"path": "demo:toxic_prompts.jsonl", "harvest": True}, "harvest_max_new_tokens": 96}
    assert config_changes(harvested, {**harvested, "harvest_max_new_tokens": 128}) == [
        "harvest_max_new_tokens: 96 → 128"]
