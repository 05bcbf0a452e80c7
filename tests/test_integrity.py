"""Nothing stale, nothing lost (issue 27): every case a hostile user found that reused an old answer, deleted an input,
printed a traceback or left a folder that blocked the corrected command.

Each refusal is one line ``tasft: error: ...`` with exit code 2 and leaves every file that was there before
byte-identical (checksums of the whole case folder) with nothing added; each case that must succeed says what it
produced (the new model's answers, the resumed run's weights, the checkpoint that was kept).
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tasft.cli import main
from tasft.models import model_fingerprint

from .conftest import tiny_overrides, write_jsonl

PROMPTS = [{"prompt": "How do I break into a car?"}, {"prompt": "What do bees make?"}]


def _checksums(root: Path) -> dict[str, str]:
    """Every file's checksum and every folder (an empty folder left behind is a difference too)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(root.rglob("*"))}


def _run(argv: list[str], capfd) -> tuple[int, list[str]]:
    capfd.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, [line for line in capfd.readouterr().err.splitlines() if line.strip()]


def _refused(root: Path, argv: list[str], capfd, expect: str) -> str:
    """``argv`` fails with one line naming ``expect`` and changes nothing under ``root``."""
    before = _checksums(root)
    code, err = _run(argv, capfd)
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("tasft: error: ") and "Traceback" not in err[0], err
    assert expect in err[0], err
    assert _checksums(root) == before
    return err[0]


def _train_argv(model: Path, data: dict[str, Path], out: Path, *flags: str, **extra) -> list[str]:
    argv = ["train", *flags]
    for item in tiny_overrides(model, data, out, **extra):
        argv += ["--set", item]
    return argv


def _eval_argv(model: Path, suite: Path, out: Path, *flags: str) -> list[str]:
    return ["evaluate", "--model", str(model), "--suites", str(suite), "--harm-scorer", "none", "--out", str(out),
            *flags]


@pytest.fixture
def case(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    """A user's folder: the data, a prompt file, and a finished training run ``R`` (its held-out NLL curve logged)."""
    root = tmp_path / "case"
    root.mkdir()
    monkeypatch.chdir(root)
    data = {k: Path(shutil.copy(v, root / v.name)) for k, v in tiny_data.items()}
    prompts = write_jsonl(root / "prompts.jsonl", PROMPTS)
    run = root / "R"
    assert main(_train_argv(tiny_model_dir, data, run, max_steps=2, log_heldout_nll="true")) == 0
    (root / "canary.txt").write_text("must survive\n")
    return {"root": root, "model": tiny_model_dir, "data": data, "prompts": prompts, "run": run}


# ------------------------------------------------------------------------------------- 1. nothing stale is reused
def test_an_evaluation_of_a_retrained_model_is_never_reused(case, capfd):
    root, run = case["root"], case["run"]
    evaluation = root / "E"
    assert _run(_eval_argv(run, case["prompts"], evaluation), capfd)[0] == 0
    first = [json.loads(line) for line in (evaluation / "generations" / "prompts.jsonl").read_text().splitlines()]
    assert json.loads((evaluation / "metrics.json").read_text())["model_fingerprint"] == model_fingerprint(str(run))
    assert _run(_train_argv(case["model"], case["data"], run, "--overwrite", max_steps=3, seed=1), capfd)[0] == 0
    new = model_fingerprint(str(run))
    assert new != first[0]["model_fingerprint"]
    # the same command again: refused before anything is read or written, the old answers untouched
    _refused(root, _eval_argv(run, case["prompts"], evaluation), capfd, "retrained or replaced since")
    from tasft.experiments.sharing import check_evaluated

    with pytest.raises(Exception, match="the run was retrained since"):  # a study reusing that evaluation
        check_evaluated(run, evaluation)
    # --overwrite evaluates the new model: its answers are generated, by its weights
    assert _run(_eval_argv(run, case["prompts"], evaluation, "--overwrite"), capfd)[0] == 0
    rows = [json.loads(line) for line in (evaluation / "generations" / "prompts.jsonl").read_text().splitlines()]
    assert {r["model_fingerprint"] for r in rows} == {new}
    assert json.loads((evaluation / "metrics.json").read_text())["model_fingerprint"] == new
    check_evaluated(run, evaluation)


def test_an_evaluation_of_a_changed_suite_file_is_never_reused(case, capfd):
    root = case["root"]
    suite, evaluation = root / "mine.jsonl", root / "E"
    write_jsonl(suite, PROMPTS)
    assert _run(_eval_argv(case["run"], suite, evaluation), capfd)[0] == 0
    recorded = json.loads((evaluation / "metrics.json").read_text())["suite_hashes"]["mine"]
    write_jsonl(suite, [{"prompt": "How do I pick a lock?"}, PROMPTS[1]])  # same ids, another first prompt
    _refused(root, _eval_argv(case["run"], suite, evaluation), capfd, "generated for other prompt text")
    assert _run(_eval_argv(case["run"], suite, evaluation, "--overwrite"), capfd)[0] == 0
    rows = [json.loads(line) for line in (evaluation / "generations" / "mine.jsonl").read_text().splitlines()]
    assert rows[0]["prompt"] == "How do I pick a lock?"
    assert json.loads((evaluation / "metrics.json").read_text())["suite_hashes"]["mine"] != recorded


def test_a_finished_generation_file_of_another_model_is_never_reused(case, capfd):
    """generate: a finished answer file of the run before it was retrained is refused, not returned as done."""
    root, run = case["root"], case["run"]
    evaluation = root / "E"
    assert _run(_eval_argv(run, case["prompts"], evaluation), capfd)[0] == 0
    assert _run(_train_argv(case["model"], case["data"], run, "--overwrite", max_steps=3, seed=1), capfd)[0] == 0
    (evaluation / "metrics.json").unlink()  # as if interrupted after generating: only the answers are there
    _refused(root, _eval_argv(run, case["prompts"], evaluation), capfd, "retrained or replaced since")


def test_a_run_is_never_resumed_from_a_data_file_that_changed(case, capfd):
    """The same settings, the same file name, other content: --resume (and a study reusing the run) refuses."""
    root, data = case["root"], case["data"]
    out = root / "run"
    assert _run(_train_argv(case["model"], data, out, max_steps=2, keep_checkpoints="true"), capfd)[0] == 0
    assert json.loads((out / "metrics.json").read_text())["inputs"]["train_data"].startswith("sha256:")
    (out / "metrics.json").unlink()  # as if stopped after its checkpoint
    write_jsonl(data["benign"], [{"prompt": "Name a colour.", "response": "Blue."}] * 8)
    err = _refused(root, _train_argv(case["model"], data, out, "--resume", max_steps=2), capfd,
                   "holds a run made from other inputs")
    assert "train_data" in err


def test_an_input_not_on_this_machine_is_named_and_only_reading_results_accepts_it(tmp_path, caplog):
    """A restored study's run recorded its harvested D_h, which a clean clone does not have: --resume and a study
    that would reuse the run name it as absent (not as changed); reading the finished run's results (--tables-only)
    accepts it; a file that is there but changed is refused either way."""
    from tasft.errors import TasftError
    from tasft.run_config import load_train_config
    from tasft.training.run_dir import INPUTS_FILE, check_same_inputs, input_hashes

    dh = tmp_path / "harmful_pool.jsonl"
    write_jsonl(dh, [{"prompt": "p", "response": "r"}])
    cfg = load_train_config(None, [f"harmful_data.path={dh}", "method=npo"])
    run = tmp_path / "run"
    run.mkdir()
    (run / INPUTS_FILE).write_text(json.dumps(input_hashes(cfg)))
    assert "harmful_data" in input_hashes(cfg)
    check_same_inputs(run, cfg, "advice")  # unchanged: nothing to say
    dh.unlink()
    with pytest.raises(TasftError, match=r"inputs harmful_data \(.*harmful_pool.jsonl\) are not on this machine"):
        check_same_inputs(run, cfg, "advice")
    with caplog.at_level("WARNING"):
        check_same_inputs(run, cfg, "advice", absent_ok=True)
    assert "harmful_data" in caplog.text and "were not checked" in caplog.text
    write_jsonl(dh, [{"prompt": "p", "response": "another"}])
    for absent_ok in (False, True):
        with pytest.raises(TasftError, match=r"\(harmful_data changed since\)"):
            check_same_inputs(run, cfg, "advice", absent_ok=absent_ok)


# ----------------------------------------------------------------------- 2, 3. --overwrite never takes an input
@pytest.mark.parametrize("setting, expect", [
    ("ta_sft.lambda_reference_run", "is ta_sft.lambda_reference_run, which this command reads"),
    ("ta_sft.lambda_reference_model", "is ta_sft.lambda_reference_model, which this command reads"),
])
def test_a_run_never_replaces_its_own_reference(case, capfd, setting, expect):
    run = case["run"]
    argv = _train_argv(case["model"], case["data"], run, "--overwrite", **{"ta_sft.lambda_budget": 0.02,
                                                                          setting: str(run)})
    _refused(case["root"], argv, capfd, expect)


def test_a_run_never_replaces_its_data(case, capfd):
    run = case["run"]
    shutil.copy(case["data"]["harmful"], run / "my_dh.jsonl")
    argv = _train_argv(case["model"], case["data"], run, "--overwrite", harmful_data=str(run / "my_dh.jsonl"))
    _refused(case["root"], argv, capfd, "holds harmful_data")


def test_an_evaluation_never_replaces_its_suite_or_lies_inside_its_model(case, capfd):
    root, run = case["root"], case["run"]
    evaluation = root / "E"
    assert _run(_eval_argv(run, case["prompts"], evaluation), capfd)[0] == 0
    shutil.copy(case["prompts"], evaluation / "mysuite.jsonl")
    _refused(root, _eval_argv(run, evaluation / "mysuite.jsonl", evaluation, "--overwrite"), capfd,
             "holds the suite file")
    _refused(root, _eval_argv(run, case["prompts"], run / "eval"), capfd, "lies inside the model being evaluated")


@pytest.mark.parametrize("command", ["generate", "harvest"])
def test_generate_and_harvest_never_replace_their_prompts(case, capfd, command):
    prompts = case["prompts"]
    argv = [command, "--model", str(case["model"]), "--prompts", str(prompts), "--out", str(prompts), "--overwrite"]
    _refused(case["root"], argv, capfd, "is the prompt file")


def test_audit_never_replaces_its_pool(case, capfd):
    harmful = case["data"]["harmful"]
    _refused(case["root"], ["audit", str(harmful), "--out", str(harmful), "--overwrite"], capfd, "is the D_h file")


@pytest.mark.parametrize("inner_kind", ["evaluate", "train"])
def test_overwrite_never_deletes_a_tasft_output_nested_inside(case, capfd, inner_kind):
    """An evaluation of another model written into R/eval, or a run trained into R/inner: replacing R is refused."""
    root, run = case["root"], case["run"]
    if inner_kind == "evaluate":
        assert _run(_eval_argv(case["model"], case["prompts"], run / "eval"), capfd)[0] == 0
        expect = f"holds a tasft evaluation in {run / 'eval'}"
    else:
        assert _run(_train_argv(case["model"], case["data"], run / "inner", max_steps=1), capfd)[0] == 0
        expect = f"holds a tasft training run in {run / 'inner'}"
    _refused(root, _train_argv(case["model"], case["data"], run, "--overwrite", max_steps=1), capfd, expect)


# --------------------------------------------------------------------------- 4. report follows the output rules
def test_report_never_writes_into_a_folder_it_did_not_make(case, capfd):
    root, run = case["root"], case["run"]
    evaluation = root / "E"
    assert _run(_eval_argv(run, case["prompts"], evaluation), capfd)[0] == 0
    (root / "userdir").mkdir()
    (root / "userdir" / "report.md").write_text("my own notes\n")
    _refused(root, ["report", str(evaluation), "--out", str(root / "userdir")], capfd, "holds no tasft report")
    _refused(root, ["report", str(evaluation), "--out", str(root / "userdir"), "--overwrite"], capfd,
             "was not created by tasft")
    _refused(root, ["report", str(evaluation), "--out", str(evaluation)], capfd, "is the input")
    assert _run(["report", str(evaluation), "--out", str(root / "rep")], capfd)[0] == 0
    _refused(root, ["report", str(evaluation), "--out", str(root / "rep")], capfd, "already holds a tasft report")
    assert _run(["report", str(evaluation), "--out", str(root / "rep"), "--overwrite"], capfd)[0] == 0
    assert (root / "rep" / "report.html").is_file()


# --------------------------------------------------------------------------------------- 5. one line, not a trace
def test_a_negative_seed_is_one_line_before_anything_is_written(case, capfd):
    argv = _train_argv(case["model"], case["data"], case["root"] / "new", seed=-1)
    _refused(case["root"], argv, capfd, "seed: must be in 0 .. 4294967295, got -1")


@pytest.mark.parametrize("damage, expect", [
    ("metrics", "metrics.json: unreadable"),
    ("scores", "prompts.jsonl:2: malformed JSON line"),
])
def test_rescore_of_a_damaged_evaluation_is_one_line_and_changes_nothing(case, capfd, damage, expect):
    root = case["root"]
    evaluation = root / "E"
    assert _run(_eval_argv(case["run"], case["prompts"], evaluation), capfd)[0] == 0
    if damage == "metrics":
        text = (evaluation / "metrics.json").read_text()
        (evaluation / "metrics.json").write_text(text[: len(text) // 2])
    else:
        path = evaluation / "scores" / "prompts.jsonl"
        path.write_text(path.read_text().splitlines()[0] + '\n{"prompt": cut\n')
    _refused(root, ["rescore", str(evaluation)], capfd, expect)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


@pytest.mark.parametrize("damage", ["weights", "optimizer", "totals"])
def test_a_checkpoint_torn_under_an_intact_state_is_set_aside_on_resume(case, capfd, caplog, damage):
    """trainer_state.json intact, another file of checkpoint-4 cut short or corrupt: --resume sets it aside as
    torn-checkpoint-4, continues from checkpoint-2 and ends with an uninterrupted run's weights."""
    root = case["root"]
    clean, torn = root / "clean", root / "torn"
    for out in (clean, torn):
        assert _run(_train_argv(case["model"], case["data"], out, max_steps=4, save_steps=2,
                                keep_checkpoints="true"), capfd)[0] == 0
    for name in ("model.safetensors", "metrics.json", "README.md"):  # the run never got to its end
        (torn / name).unlink()
    ckpt = torn / "checkpoint-4"
    target = {"weights": "model.safetensors", "optimizer": "optimizer.pt", "totals": "tasft_run_totals.json"}[damage]
    content = (ckpt / target).read_bytes()
    (ckpt / target).write_bytes(content[: len(content) // 2])
    code, err = _run(_train_argv(case["model"], case["data"], torn, "--resume", max_steps=4, save_steps=2), capfd)
    assert code == 0, err
    assert f"skipping {ckpt}: it was not completely written" in "\n".join(err) + caplog.text
    assert "set aside as torn-checkpoint-4" in "\n".join(err) + caplog.text
    assert (torn / "torn-checkpoint-4" / target).read_bytes() == content[: len(content) // 2]  # kept to inspect
    metrics = json.loads((torn / "metrics.json").read_text())
    assert metrics["resumed_from"] == str(torn / "checkpoint-2") and metrics["steps"] == 4
    a, b = _weights(clean), _weights(torn)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_full_disk_while_saving_a_checkpoint_is_one_line_and_keeps_the_last_good_one(case, capfd, monkeypatch):
    """The disk fills up while checkpoint-4's optimizer state is written: one line naming checkpoint-2, the partial
    checkpoint-4 removed (room is what is short); --resume then finishes with an uninterrupted run's weights."""
    from transformers import Trainer

    root = case["root"]
    clean, out = root / "clean", root / "full"
    assert _run(_train_argv(case["model"], case["data"], clean, max_steps=4, save_steps=2), capfd)[0] == 0
    original = Trainer._save_optimizer_and_scheduler

    def fill_up(self, output_dir):
        if output_dir.endswith("checkpoint-4"):
            Path(output_dir, "optimizer.pt").write_bytes(b"PK\x03\x04 cut short")
            raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing "
                               "file data/3: file write failed") from OSError(errno.ENOSPC, "No space left on device")
        return original(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", fill_up)
    code, err = _run(_train_argv(case["model"], case["data"], out, max_steps=4, save_steps=2), capfd)
    assert code == 2 and err[-1].startswith("tasft: error: ") and not any("Traceback" in line for line in err), err
    assert "no space left on device while saving checkpoint-4" in err[-1]
    assert "removed the partial checkpoint-4" in err[-1]
    assert f"the last good checkpoint is {out / 'checkpoint-2'}" in err[-1]
    assert sorted(p.name for p in out.glob("*checkpoint-*")) == ["checkpoint-2"]
    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", original)
    assert _run(_train_argv(case["model"], case["data"], out, "--resume", max_steps=4, save_steps=2), capfd)[0] == 0
    a, b = _weights(clean), _weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_on_a_full_disk_removes_torn_checkpoints_before_it_writes(case, capfd, caplog, monkeypatch):
    """A torn checkpoint-4 and a disk too full to keep it: --resume removes it (not set aside) before config.yaml
    is written, and resumes from checkpoint-2."""
    import tasft.training.checkpoints as checkpoints

    root = case["root"]
    out = root / "run"
    assert _run(_train_argv(case["model"], case["data"], out, max_steps=4, save_steps=2, keep_checkpoints="true"),
                capfd)[0] == 0
    for name in ("model.safetensors", "metrics.json", "README.md"):
        (out / name).unlink()
    weights = out / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    usage = shutil.disk_usage(out)
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    written = []
    import tasft.training.pipeline as pipeline

    original_write = pipeline.write_yaml_atomic

    def record(path, obj):
        written.append(sorted(p.name for p in Path(path).parent.glob("*checkpoint-*")))
        return original_write(path, obj)

    monkeypatch.setattr(pipeline, "write_yaml_atomic", record)
    code, err = _run(_train_argv(case["model"], case["data"], out, "--resume", max_steps=4, save_steps=2), capfd)
    assert code == 0, err
    assert written[0] == ["checkpoint-2"]  # the torn one was gone before the first write
    assert "removed to make room" in "\n".join(err) + caplog.text
    assert json.loads((out / "metrics.json").read_text())["resumed_from"] == str(out / "checkpoint-2")


# ------------------------------------------------------------- 6. validation first: a failed command leaves no trace
@pytest.mark.parametrize("setting, expect", [
    ("lora.dropout=2", "lora.dropout: must be in [0, 1), got 2"),
    ("lora.target_modules=[nope]", "lora.target_modules: Target modules {'nope'} not found"),
    ("precision=fp16", "precision: fp16 autocast needs a CUDA GPU"),
    ("lora.r=100000", "lora.r: 100000 is above the width of the layers it adapts"),
    ("lora.alpha=-16", "lora.alpha: must be > 0, got -16"),
    ("max_steps=1000000000000000000000000", "max_steps: 1000000000000000000000000 is beyond any run"),
    ("training_args.num_train_epochs=-3", "training_args.num_train_epochs: tasft sets it from its own setting"),
])
def test_an_invalid_setting_fails_before_anything_is_written(case, capfd, setting, expect):
    if setting == "precision=fp16" and torch.cuda.is_available():
        pytest.skip("fp16 runs on a CUDA machine")
    argv = [*_train_argv(case["model"], case["data"], case["root"] / "new"), "--set", setting]
    _refused(case["root"], argv, capfd, expect)


def test_a_model_whose_tokenizer_does_not_fit_it_fails_before_writing(case, capfd):
    model = case["root"] / "mismatched"
    shutil.copytree(case["model"], model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "vocab_size": 50}))
    argv = _train_argv(model, case["data"], case["root"] / "new")
    _refused(case["root"], argv, capfd, "its vocabulary only 50: the two do not belong together")


def test_an_evaluation_whose_model_does_not_load_leaves_nothing_to_block_the_corrected_one(case, capfd):
    root = case["root"]
    broken = root / "broken"
    shutil.copytree(case["model"], broken)
    (broken / "model.safetensors").write_bytes(b"\x00 not weights" * 40)
    _refused(root, _eval_argv(broken, case["prompts"], root / "E"), capfd, "does not load")
    assert _run(_eval_argv(case["model"], case["prompts"], root / "E"), capfd)[0] == 0


def test_a_diverged_attempt_does_not_block_the_corrected_command(case, capfd, caplog, monkeypatch):
    """As the README's learning_rate 1e3 example on the default model: the gradient vanishes from the first step,
    the run stops (exit 3) with every checkpoint set aside as collapsed and none to resume from; the corrected
    command (the same one, training normally) restarts, and the set-aside checkpoints are kept, byte for byte."""
    from tasft.training.trainer import MethodTrainer

    out = case["root"] / "run"
    original = MethodTrainer.compute_loss
    monkeypatch.setattr(MethodTrainer, "compute_loss", lambda self, *a, **k: original(self, *a, **k) * 0)
    assert _run(_train_argv(case["model"], case["data"], out, max_steps=8, save_steps=1), capfd)[0] == 3
    aside = sorted(p.name for p in out.glob("diverged-checkpoint-*"))
    assert aside and not list(out.glob("checkpoint-*"))
    sums = {name: _checksums(out / name) for name in aside}
    monkeypatch.setattr(MethodTrainer, "compute_loss", original)
    code, err = _run(_train_argv(case["model"], case["data"], out, max_steps=8, save_steps=1), capfd)
    assert code == 0, err
    assert "starting afresh" in "\n".join(err) + caplog.text and "kept" in "\n".join(err) + caplog.text
    assert json.loads((out / "metrics.json").read_text())["steps"] == 8
    assert {name: _checksums(out / name) for name in aside} == sums  # set aside, never lost


# ------------------------------------------------------------------------------ 7, 8. nothing accepted silently
def test_a_key_given_twice_in_a_config_is_one_line(case, capfd):
    config = case["root"] / "twice.yaml"
    config.write_text("learning_rate: 1.0e-4\nmax_steps: 2\nlearning_rate: 1.0\n")
    _refused(case["root"], ["train", "--config", str(config)], capfd, "twice.yaml:3: malformed YAML (key "
             "'learning_rate' is given twice")


@pytest.mark.parametrize("suites, expect", [("", "--suites: no suite given"), (",", "--suites: no suite given"),
                                            ("malicious,,cona", "an empty name between commas")])
def test_an_empty_suite_list_is_one_line(case, capfd, suites, expect):
    argv = ["evaluate", "--model", str(case["model"]), "--suites", suites, "--out", str(case["root"] / "E")]
    _refused(case["root"], argv, capfd, expect)


def test_trust_remote_code_from_an_included_config_needs_confirmation(case, capfd):
    root = case["root"]
    (root / "shared.yaml").write_text("trust_remote_code: true\n")
    (root / "mine.yaml").write_text("base: shared.yaml\nmax_steps: 1\n")
    argv = [*_train_argv(case["model"], case["data"], root / "new"), "--config", str(root / "mine.yaml")]
    _refused(root, argv, capfd, f"trust_remote_code: true comes from {root / 'shared.yaml'}")
    from tasft.run_config import load_train_config

    confirmed = load_train_config(str(root / "mine.yaml"), ["trust_remote_code=true"])
    assert confirmed.trust_remote_code is True
    (root / "own.yaml").write_text("trust_remote_code: true\nmax_steps: 1\n")  # the user's own file says it
    assert load_train_config(str(root / "own.yaml")).trust_remote_code is True
