import json
import shutil
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file

from tasft.errors import TasftError
from tasft.models import load_model
from tasft.run_config import load_train_config
from tasft.training.args import find_unused_parameters
from tasft.training.pipeline import train
from tasft.training.trainer import HarmfulBatchSampler

from .conftest import tiny_overrides


@pytest.mark.parametrize("world", [1, 2, 3])
def test_harmful_sampler_sees_each_example_once_per_epoch_across_processes(world):
    n, b = 10, 2
    sampler = HarmfulBatchSampler(n, b, seed=7)
    steps = n // b // world if n % (b * world) == 0 else n
    drawn = [i for s in range(steps) for r in range(world) for i in sampler.indices(s, r, world)]
    epochs = len(drawn) // n
    for e in range(epochs):
        assert sorted(drawn[e * n:(e + 1) * n]) == list(range(n))
    assert HarmfulBatchSampler(n, b, seed=7).indices(5, 1, world) == sampler.indices(5, 1, world)


def test_harmful_sampler_cycles_a_small_set():
    sampler = HarmfulBatchSampler(3, 4, seed=0)
    counts = Counter(i for s in range(6) for i in sampler.indices(s))
    assert set(counts) == {0, 1, 2} and set(counts.values()) == {8}


def _run(tiny_model_dir, tiny_data, out, **extra):
    cfg = load_train_config(None, tiny_overrides(tiny_model_dir, tiny_data, out, **extra))
    return train(cfg, progress=False)


def test_ta_sft_run_writes_every_output(tiny_model_dir, tiny_data, tmp_path):
    out = tmp_path / "run"
    metrics = _run(tiny_model_dir, tiny_data, out, **{"ta_sft.penalty": "emd_lb", "ta_sft.lambda": 0.5})
    for name in ("model.safetensors", "config.json", "tokenizer.json", "config.yaml", "metrics.json",
                 "README.md", "log.jsonl"):
        assert (out / name).exists(), name
    assert not list(out.glob("checkpoint-*"))  # they exist to resume; gone once the final model is written
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["method"] == "ta-sft" and saved["penalty"] == "emd_lb" and saved["lambda"] == 0.5
    assert saved["steps"] == 4 and saved["data"]["train_records"] == 8 and saved["data"]["harmful_records"] == 4
    assert set(saved["before"]) == {"harmful_logprob", "heldout_nll"} == set(saved["after"])
    assert saved["tokens_per_second"] > 0 and metrics == saved | {"resumed_from": None}
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    step_logs = [r for r in logs if "nll" in r]
    assert len(step_logs) == 4 and all({"penalty_emd_lb", "total", "loss"} <= set(r) for r in step_logs)
    # total = nll - lambda * penalty (what the trainer actually optimised)
    r = step_logs[0]
    assert r["total"] == pytest.approx(r["nll"] - 0.5 * r["penalty_emd_lb"], abs=1e-5)
    card = (out / "README.md").read_text()
    assert "emd_lb" in card and "λ = 0.5" in card and f"{saved['after']['heldout_nll']:.4f}" in card
    reloaded = load_model(str(out))
    weights = load_file(str(out / "model.safetensors"))
    assert torch.equal(reloaded.state_dict()["model.norm.weight"], weights["model.norm.weight"])


def test_ta_sft_pushes_harmful_logprob_down_more_than_sft(tiny_model_dir, tiny_data, tmp_path):
    common = dict(max_steps=8, learning_rate=5e-3, save_steps=100)
    sft = _run(tiny_model_dir, tiny_data, tmp_path / "sft", method="sft", **common)
    ta = _run(tiny_model_dir, tiny_data, tmp_path / "ta", **common, **{"ta_sft.penalty": "emd", "ta_sft.lambda": 5.0})
    assert sft["before"]["harmful_logprob"] == pytest.approx(ta["before"]["harmful_logprob"], abs=1e-6)
    assert ta["after"]["harmful_logprob"] < sft["after"]["harmful_logprob"] - 0.1
    assert ta["after"]["heldout_nll"] < 1.05 * sft["after"]["heldout_nll"]


@pytest.mark.parametrize("penalty", ["emd", "nlcl", "ga"])
def test_each_penalty_trains_and_logs_its_term(tiny_model_dir, tiny_data, tmp_path, penalty):
    metrics = _run(tiny_model_dir, tiny_data, tmp_path / penalty, max_steps=2, save_steps=10,
                   **{"ta_sft.penalty": penalty})
    logs = [json.loads(x) for x in (tmp_path / penalty / "log.jsonl").read_text().splitlines()]
    values = [r[f"penalty_{penalty}"] for r in logs if f"penalty_{penalty}" in r]
    assert len(values) == 2 and all(v == v and v >= 0 for v in values)
    assert metrics["steps"] == 2


def test_soft_target_and_first_tokens_options(tiny_model_dir, tiny_data, tmp_path):
    metrics = _run(tiny_model_dir, tiny_data, tmp_path / "soft", max_steps=2, save_steps=10,
                   **{"ta_sft.target": "soft", "ta_sft.penalty_first_tokens": 3, "ta_sft.soft_top_k": 8})
    assert metrics["target"] == "soft" and metrics["steps"] == 2


def test_resume_continues_from_the_last_checkpoint(tiny_model_dir, tiny_data, tmp_path):
    out = tmp_path / "r"
    _run(tiny_model_dir, tiny_data, out, max_steps=2, save_steps=2, keep_checkpoints="true")
    with (out / "log.jsonl").open("a") as fh:  # an attempt that got past the checkpoint before it was stopped
        fh.write(json.dumps({"step": 3, "nll": 99.0}) + "\n")
    cfg = load_train_config(None, tiny_overrides(tiny_model_dir, tiny_data, out, max_steps=4, save_steps=2))
    metrics = train(cfg, resume=True, progress=False)
    assert metrics["resumed_from"].endswith("checkpoint-2") and metrics["steps"] == 4
    logged = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if "nll" in json.loads(x)]
    assert [r["step"] for r in logged] == [1, 2, 3, 4] and logged[2]["nll"] != 99.0  # step 3 once, this run's


def test_a_run_started_afresh_under_resume_starts_an_empty_log(tiny_model_dir, tiny_data, tmp_path):
    """--resume on an attempt stopped before its first checkpoint trains from step 0: its log lists each step once
    (the stopped attempt's records used to stay in front of the new ones)."""
    out = tmp_path / "again"
    _run(tiny_model_dir, tiny_data, out, max_steps=2)
    for leftover in [p for p in out.iterdir() if p.name not in ("config.yaml", "log.jsonl", ".tasft-output")]:
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()  # as if stopped before step 2's save
    cfg = load_train_config(None, tiny_overrides(tiny_model_dir, tiny_data, out, max_steps=2))
    metrics = train(cfg, resume=True, progress=False)
    assert metrics["resumed_from"] is None
    logged_steps = [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()
                    if "nll" in json.loads(x)]
    assert logged_steps == [1, 2]


def test_resuming_a_checkpoint_at_max_steps_trains_no_extra_step(tiny_model_dir, tiny_data, tmp_path):
    """transformers' loop would run one step past max_steps when resumed at max_steps (it checks the limit only
    after a step): the checkpoint is the final model instead."""
    out = tmp_path / "done"
    first = _run(tiny_model_dir, tiny_data, out, max_steps=2, save_steps=2, keep_checkpoints="true")
    cfg = load_train_config(None, tiny_overrides(tiny_model_dir, tiny_data, out, max_steps=2, save_steps=2,
                                                 keep_checkpoints="true"))
    metrics = train(cfg, resume=True, progress=False)
    assert metrics["resumed_from"].endswith("checkpoint-2") and metrics["steps"] == 2
    assert not (out / "checkpoint-3").exists()
    logged_steps = [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()
                    if "nll" in json.loads(x)]
    assert logged_steps == [1, 2]
    assert metrics["final_train_loss"] == pytest.approx(first["final_train_loss"], abs=1e-3)
    final, saved = load_file(str(out / "model.safetensors")), load_file(str(out / "checkpoint-2" / "model.safetensors"))
    assert all(torch.equal(final[k], saved[k]) for k in saved)


def test_existing_output_dir_is_never_overwritten_without_asking(tiny_model_dir, tiny_data, tmp_path):
    out = tmp_path / "keep"
    out.mkdir()
    (out / "precious.txt").write_text("do not lose me")
    cfg = load_train_config(None, tiny_overrides(tiny_model_dir, tiny_data, out))
    with pytest.raises(TasftError, match="already exists"):
        train(cfg, progress=False)
    assert (out / "precious.txt").read_text() == "do not lose me"
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]


def test_lora_run_saves_an_adapter_that_reloads(tiny_model_dir, tiny_data, tmp_path):
    out = tmp_path / "lora"
    lora = {"lora.r": 4, "lora.target_modules": "all-linear"}
    _run(tiny_model_dir, tiny_data, out, max_steps=2, save_steps=10, **lora)
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    assert not (out / "model.safetensors").exists()
    model = load_model(str(out))
    assert any("lora_" in name for name, _ in model.named_parameters())


def test_harvest_fills_missing_harmful_responses_from_the_model(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    import tasft.training.datasets as datasets

    def fake_generate(model, tokenizer, items, out, settings, extra=None, progress=True):
        rows = [{**it, "response": "" if it["id"] == "0" else f"harmful answer {it['id']}"} for it in items]
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return out

    monkeypatch.setattr(datasets, "generate_jsonl", fake_generate)
    out = tmp_path / "h"
    metrics = _run(tiny_model_dir, tiny_data, out, max_steps=1, save_steps=10,
                   **{"harmful_data.path": str(tiny_data["toxic"]), "harmful_data.harvest": True})
    assert (out / "harmful_responses_harvested.jsonl").exists()
    assert metrics["data"]["harmful_records"] == 3  # the empty answer is dropped


def test_harvest_with_only_empty_answers_is_an_error(tiny_model_dir, tiny_data, tmp_path):
    # the random tiny model ends its turn at once: nothing to penalise
    with pytest.raises(TasftError, match="all 4 harvested responses are empty"):
        _run(tiny_model_dir, tiny_data, tmp_path / "e", max_steps=1, harvest_max_new_tokens=4,
             **{"harmful_data.path": str(tiny_data["toxic"]), "harmful_data.harvest": True})


@pytest.mark.parametrize("method,model_config,setting,want", [
    ("ta-sft", {}, None, False),  # every parameter gets a gradient each step: skip DDP's graph search
    ("sft", {}, None, False),
    ("kto", {}, None, None),  # transformers' default
    ("ta-sft", {"num_local_experts": 8}, None, None),  # experts a step does not route to get no gradient
    ("ta-sft", {}, True, True),  # the config wins
])
def test_ddp_unused_parameter_search(method, model_config, setting, want):
    from types import SimpleNamespace

    cfg = load_train_config(None, [f"method={method}"] + ([f"ddp_find_unused_parameters={setting}"]
                                                          if setting is not None else []))
    model = SimpleNamespace(config=SimpleNamespace(**model_config))
    assert find_unused_parameters(cfg, model) is want


def test_resume_under_other_settings_is_one_line_error_and_keeps_the_run(tiny_model_dir, tiny_data, tmp_path, capfd):
    from tasft.cli import main
    from tasft.run_changes import config_changes

    out = tmp_path / "run"
    base = tiny_overrides(tiny_model_dir, tiny_data, out, max_steps=2, save_steps=2, keep_checkpoints="true",
                          measure="false")
    argv = [a for o in base for a in ("--set", o)]
    assert main(["train", *argv]) == 0
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    capfd.readouterr()
    assert main(["train", *argv, "--set", "learning_rate=0.5", "--resume"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a run with other settings (learning_rate:" in err[0] and "0.5" in err[0]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == files  # nothing touched
    saved = {"learning_rate": 1e-4, "ta_sft": {"lambda": 1.0}, "max_steps": 2, "output_dir": "a"}
    assert config_changes(saved, {**saved, "max_steps": 4, "output_dir": "b"}, ("output_dir", "max_steps")) == []
    assert config_changes(saved, {**saved, "ta_sft": {"lambda": 3.0}}) == ["ta_sft.lambda: 1.0 → 3.0"]
    # where a run writes and which files it keeps are never a change of the run (a finished point stays reusable)
    kept = {**saved, "output_dir": "c", "keep_checkpoints": True, "save_total_limit": 9, "report_to": ["none"]}
    assert config_changes(saved, kept) == []
