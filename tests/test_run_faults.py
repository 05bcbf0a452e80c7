"""Faults in a training run on the tiny model: divergence stops it (exit 3, one line, no final model, only finite
checkpoints to resume from), a torn checkpoint is skipped on resume, a failed attempt does not block the corrected
re-run, and every JSON file a run writes is strict JSON."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tasft.cli import main
from tasft.io_utils import write_json_atomic

from .conftest import tiny_overrides


def _argv(tiny_model_dir, tiny_data, out: Path, *flags: str, **extra) -> list[str]:
    args = ["train", *flags]
    for item in tiny_overrides(tiny_model_dir, tiny_data, out, **extra):
        args += ["--set", item]
    return args


def _strict(path: Path):
    """Parse a JSON or JSONL file, refusing NaN / Infinity (Python's json module accepts them by default)."""
    def refuse(token):
        raise ValueError(f"{path}: non-JSON number {token}")

    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line, parse_constant=refuse) for line in text.splitlines() if line.strip()]
    return json.loads(text, parse_constant=refuse)


def _one_error_line(capfd) -> str:
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert err[-1].startswith("tasft: error: "), err
    assert not any("Traceback" in line for line in err)
    return err[-1]


def _finite(checkpoint: Path) -> bool:
    return all(torch.isfinite(t).all() for t in load_file(checkpoint / "model.safetensors").values())


def test_exploding_learning_rate_stops_at_the_first_nonfinite_gradient(tiny_model_dir, tiny_data, tmp_path, capfd):
    out = tmp_path / "run"
    code = main(_argv(tiny_model_dir, tiny_data, out, learning_rate=1e3, max_steps=8, save_steps=1))
    msg = _one_error_line(capfd)
    assert code == 3
    assert "training diverged at step 2: the gradient norm is nan" in msg and "no final model written" in msg
    assert f"last good checkpoint: {out / 'checkpoint-1'}" in msg
    assert not (out / "model.safetensors").exists() and not (out / "metrics.json").exists()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"] and _finite(out / "checkpoint-1")
    _strict(out / "log.jsonl")  # the NaN grad norm of the last logged step, if any, is null


def test_nonfinite_loss_stops_before_the_optimizer_step(tiny_model_dir, tiny_data, tmp_path, capfd, monkeypatch):
    from tasft.training.trainer import MethodTrainer

    original = MethodTrainer.compute_loss

    def poisoned(self, model, inputs, *args, **kwargs):
        loss = original(self, model, inputs, *args, **kwargs)
        return loss * float("nan") if self.state.global_step == 2 else loss  # the 3rd step's loss

    monkeypatch.setattr(MethodTrainer, "compute_loss", poisoned)
    out = tmp_path / "run"
    assert main(_argv(tiny_model_dir, tiny_data, out, max_steps=6, save_steps=2)) == 3
    msg = _one_error_line(capfd)
    assert "training diverged at step 3: the loss is nan" in msg and "checkpoint-2" in msg
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"] and _finite(out / "checkpoint-2")
    assert not (out / "model.safetensors").exists()


def test_collapse_stops_and_sets_collapsed_checkpoints_aside(tiny_model_dir, tiny_data, tmp_path, capfd, monkeypatch):
    """No gradient from step 3 on (loss detached): the weights that gave it came out of step 2, so checkpoints 2-4
    are collapsed and renamed; checkpoint-1 is the one to resume from."""
    from tasft.training.trainer import MethodTrainer

    original = MethodTrainer.compute_loss

    def frozen(self, model, inputs, *args, **kwargs):
        loss = original(self, model, inputs, *args, **kwargs)
        return loss * 0 if self.state.global_step >= 2 else loss

    monkeypatch.setattr(MethodTrainer, "compute_loss", frozen)
    out = tmp_path / "run"
    assert main(_argv(tiny_model_dir, tiny_data, out, max_steps=8, save_steps=1, save_total_limit=10)) == 3
    msg = _one_error_line(capfd)
    assert "training diverged at step 5: collapsed: gradient norm 0 <= guard.min_grad_norm for 3 steps since step 3" \
        in msg
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert sorted(p.name for p in out.glob("diverged-checkpoint-*")) == [
        "diverged-checkpoint-2", "diverged-checkpoint-3", "diverged-checkpoint-4"]
    assert f"last good checkpoint: {out / 'checkpoint-1'}" in msg
    assert main(_argv(tiny_model_dir, tiny_data, out, max_steps=8)) == 2  # the set-aside ones are never cleared
    assert "already exists" in _one_error_line(capfd) and len(list(out.glob("diverged-checkpoint-*"))) == 3


def test_collapse_check_can_be_switched_off(tiny_model_dir, tiny_data, tmp_path, capfd, monkeypatch):
    from tasft.training.trainer import MethodTrainer

    original = MethodTrainer.compute_loss
    monkeypatch.setattr(MethodTrainer, "compute_loss", lambda self, *a, **k: original(self, *a, **k) * 0)
    out = tmp_path / "run"
    assert main(_argv(tiny_model_dir, tiny_data, out, max_steps=4, **{"guard.collapse_steps": "null"})) == 0
    assert (out / "model.safetensors").exists()
    capfd.readouterr()


def test_nonfinite_weights_are_never_written(tiny_model_dir, tiny_data, tmp_path, capfd, monkeypatch):
    """Weights poisoned right after step 2's update: the checkpoint due at step 2 is refused, nothing is saved."""
    from transformers import TrainerCallback

    from tasft.methods.ta_sft import TaSft

    class Poison(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 2:
                with torch.no_grad():
                    next(model.parameters()).fill_(float("inf"))

    real = TaSft.build_trainer
    monkeypatch.setattr(TaSft, "build_trainer",
                        lambda self, inputs: real(self, replace(inputs, callbacks=[*inputs.callbacks, Poison()])))
    out = tmp_path / "run"
    assert main(_argv(tiny_model_dir, tiny_data, out, max_steps=4, save_steps=2)) == 3
    msg = _one_error_line(capfd)
    assert "training diverged at step 2: parameter model.embed_tokens.weight is not finite" in msg
    assert "no checkpoint was saved before it" in msg
    assert not list(out.glob("*checkpoint-*")) and not (out / "model.safetensors").exists()


def test_metrics_json_is_strict_json(tmp_path):
    path = write_json_atomic(tmp_path / "m.json", {"a": float("nan"), "b": [float("inf"), 1.5], "c": {"d": -1e999}})
    assert _strict(path) == {"a": None, "b": [None, 1.5], "c": {"d": None}}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def test_a_torn_checkpoint_is_skipped_on_resume(tiny_model_dir, tiny_data, tmp_path, capfd, caplog):
    """kill -9 while checkpoint-4 was written (its weights cut short, no trainer_state.json): --resume says so,
    continues from checkpoint-2 and ends with the weights of an uninterrupted run."""
    clean, torn = tmp_path / "clean", tmp_path / "torn"
    assert main(_argv(tiny_model_dir, tiny_data, clean, max_steps=4, save_steps=2)) == 0
    assert main(_argv(tiny_model_dir, tiny_data, torn, max_steps=4, save_steps=2, keep_checkpoints="true")) == 0
    for name in ("model.safetensors", "metrics.json", "README.md"):  # the run never got to its end
        (torn / name).unlink()
    ckpt = torn / "checkpoint-4"
    (ckpt / "trainer_state.json").unlink()
    weights = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(weights[: len(weights) // 3])
    capfd.readouterr()

    assert main(_argv(tiny_model_dir, tiny_data, torn, "--resume", max_steps=4, save_steps=2)) == 0
    assert f"skipping {ckpt}: it was not completely written" in capfd.readouterr().err + caplog.text
    metrics = _strict(torn / "metrics.json")
    assert metrics["resumed_from"] == str(torn / "checkpoint-2") and metrics["steps"] == 4
    a, b = _weights(clean), _weights(torn)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_failed_attempt_does_not_block_the_corrected_rerun(tiny_model_dir, tiny_data, tmp_path, capfd, caplog):
    out = tmp_path / "run"
    assert main(_argv(tiny_model_dir, tiny_data, out, learning_rate=1e3, save_steps=100)) == 3  # diverges at step 2
    assert "no checkpoint was saved before it" in _one_error_line(capfd)
    assert (out / "config.yaml").exists() and (out / "log.jsonl").exists()  # what it left: no checkpoint
    assert main(_argv(tiny_model_dir, tiny_data, out, max_steps=2)) == 0
    assert "stopped before its first checkpoint: starting afresh" in capfd.readouterr().err + caplog.text
    assert _strict(out / "metrics.json")["steps"] == 2


def test_bad_input_leaves_no_output_dir_behind(tiny_model_dir, tiny_data, tmp_path, capfd):
    out = tmp_path / "run"
    assert main(_argv(tiny_model_dir, tiny_data, out, max_length=8)) == 2  # every prompt is too long
    assert "prompt is longer than max_length=8" in _one_error_line(capfd)
    assert not out.exists()


def test_a_finished_run_still_needs_overwrite_or_resume(tiny_model_dir, tiny_data, tmp_path, capfd):
    out = tmp_path / "run"
    assert main(_argv(tiny_model_dir, tiny_data, out, max_steps=2)) == 0
    before = (out / "model.safetensors").read_bytes()
    assert main(_argv(tiny_model_dir, tiny_data, out, max_steps=2)) == 2
    assert "already exists (use --overwrite to replace it or --resume)" in _one_error_line(capfd)
    # its checkpoints went with the final model (the default), so there is nothing to continue: --resume says so
    # rather than training it again from step 0 over the finished weights
    assert not list(out.glob("checkpoint-*"))
    assert main(_argv(tiny_model_dir, tiny_data, out, "--resume", max_steps=4)) == 2
    assert "is a finished run of 2 steps that kept no checkpoint to continue to 4 from" in _one_error_line(capfd)
    assert (out / "model.safetensors").read_bytes() == before
    # resumed at the steps it ran: nothing to do (a requeue script that always says --resume), nothing touched
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert main(_argv(tiny_model_dir, tiny_data, out, "--resume", max_steps=2)) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == files


def test_overwrite_and_resume_exclude_each_other(tiny_model_dir, tiny_data, tmp_path, capfd):
    assert main(_argv(tiny_model_dir, tiny_data, tmp_path / "run", "--overwrite", "--resume")) == 2
    assert "exclude each other" in _one_error_line(capfd)
    assert not (tmp_path / "run").exists()


def test_a_resumed_run_reports_whole_run_totals_without_a_false_alarm(tiny_model_dir, tiny_data, tmp_path, capfd,
                                                                     caplog):
    """2 steps, then --resume to 4: train_tokens, final_train_loss and train_seconds cover all 4 steps, as in one run
    of 4 (the seconds: the first invocation's as its checkpoint saved them, plus this one's); the tied lm_head is not
    reported as a missing key."""
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(_argv(tiny_model_dir, tiny_data, whole, max_steps=4, save_steps=2)) == 0
    assert main(_argv(tiny_model_dir, tiny_data, split, max_steps=2, save_steps=2, keep_checkpoints="true")) == 0
    first = _strict(split / "metrics.json")
    saved = json.loads((split / "checkpoint-2" / "tasft_run_totals.json").read_text())["train_seconds"]
    (split / "metrics.json").unlink()
    capfd.readouterr()
    caplog.clear()
    assert main(_argv(tiny_model_dir, tiny_data, split, "--resume", max_steps=4, save_steps=2)) == 0
    assert "missing keys" not in capfd.readouterr().err + caplog.text
    a, b = _strict(whole / "metrics.json"), _strict(split / "metrics.json")
    assert b["resumed_from"].endswith("checkpoint-2") and b["train_tokens"] == a["train_tokens"]
    assert b["train_tokens"] > first["train_tokens"] > 0
    assert b["final_train_loss"] == pytest.approx(a["final_train_loss"], rel=1e-6)
    assert 0 < saved <= first["train_seconds"] + 0.01 and 0 < b["train_seconds_this_invocation"] < b["train_seconds"]
    assert b["train_seconds"] == pytest.approx(saved + b["train_seconds_this_invocation"], abs=0.5)


def test_outputs_have_ordinary_permissions_and_checkpoints_can_go(tiny_model_dir, tiny_data, tmp_path, capfd):
    import os

    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        assert main(_argv(tiny_model_dir, tiny_data, out, max_steps=2, save_steps=1)) == 0
    finally:
        os.umask(old)
    for name in ("metrics.json", "README.md", "config.yaml", "model.safetensors"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name
    assert not list(out.glob("checkpoint-*"))  # deleted once the final model was written (the default)
    capfd.readouterr()
