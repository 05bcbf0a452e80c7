"""The TRL-style API: TASFTConfig + TASFTTrainer on HF datasets in TRL's formats, on the tiny model; the same
numbers as the YAML route (which is built on it)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.conftest import BENIGN, HARMFUL


def _datasets():
    from datasets import Dataset

    benign = Dataset.from_list([{"prompt": p, "completion": c} for p, c in BENIGN])  # standard prompt/completion
    harmful = Dataset.from_list([{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": r}]}
                                 for p, r in HARMFUL])  # conversational "messages"
    return benign, harmful


def _args(out, **extra):
    from tasft import TASFTConfig

    base = dict(output_dir=str(out), max_steps=3, per_device_train_batch_size=2, harmful_batch_size=2,
                learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none", seed=0)
    return TASFTConfig(**(base | extra))


def _model(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_trainer_trains_on_trl_formats_and_logs_the_penalty(tiny_model_dir, tmp_path):
    from tasft import TASFTTrainer

    model, tok = _model(tiny_model_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    benign, harmful = _datasets()
    args = _args(tmp_path / "run", method="ta-sft", method_args={"penalty": "emd", "lambda": 1.0})
    trainer = TASFTTrainer(model, args, train_dataset=benign, harmful_dataset=harmful, processing_class=tok)
    trainer.train()
    logged = [r for r in trainer.state.log_history if "penalty_emd" in r]
    assert len(logged) == 3 and all(0 < r["penalty_emd"] <= 2 for r in logged)  # cosine cost lies in [0, 2]
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_conversational_prompt_completion_is_read():
    from tasft.data import parse_record

    row = {"prompt": [{"role": "user", "content": "Hi?"}], "completion": [{"role": "assistant", "content": "Hello."}]}
    record = parse_record(row, "row 0")
    assert record.prompt == row["prompt"] and record.response == "Hello."


@pytest.mark.parametrize("chunk", [None, 256])  # the plain and the fused loss path
def test_api_and_yaml_route_give_the_same_losses(tiny_model_dir, tiny_data, tmp_path, chunk):
    """`tasft train` builds a TASFTTrainer from its YAML config and files; the API from HF datasets in TRL's
    formats: the same pairs, seed and settings → the same logged losses."""
    from tasft import TASFTTrainer, load_train_config, train
    from tests.conftest import tiny_overrides

    cfg = load_train_config(None, tiny_overrides(tiny_model_dir, tiny_data, tmp_path / "yaml", max_steps=3,
                                                 measure="false", loss_chunk_size=json.dumps(chunk)))
    metrics = train(cfg, progress=False)
    yaml_losses = [r["loss"] for r in map(json.loads,
                                          (tmp_path / "yaml" / "log.jsonl").read_text().splitlines()) if "loss" in r]

    model, tok = _model(tiny_model_dir)
    benign, harmful = _datasets()
    args = _args(tmp_path / "api", learning_rate=cfg.learning_rate, max_length=cfg.max_length, loss_chunk_size=chunk,
                 lr_scheduler_type=cfg.lr_scheduler,
                 method_args={"penalty": "emd", "lambda": 1.0})
    trainer = TASFTTrainer(model, args, train_dataset=benign, harmful_dataset=harmful, processing_class=tok)
    trainer.train()
    api_losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert metrics["steps"] == 3 and len(api_losses) == len(yaml_losses) == 3
    assert all(math.isclose(a, b, rel_tol=1e-4) for a, b in zip(api_losses, yaml_losses))


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "nope"}, "unknown method 'nope'"),
    ({"method": "kto"}, "has a trainer of its own"),
    ({"method_args": {"lambada": 1.0}}, "unknown key 'lambada' (did you mean 'lambda'?)"),
    ({"method_args": {"penalty": "emd", "lambda": -1.0}}, "lambda"),
    ({"method": "sft", "method_args": {"penalty": "emd"}}, "has no settings"),
    ({"method_args": "emd"}, "a mapping of the method's settings"),
    ({"loss_chunk_size": 0}, "TASFTConfig.loss_chunk_size: an integer ≥ 1, got 0"),
    ({"harmful_batch_size": None}, "TASFTConfig.harmful_batch_size: an integer ≥ 1, got None"),
])
def test_bad_config_is_one_line_error(kwargs, message, tmp_path):
    from tasft import TasftError

    with pytest.raises(TasftError) as err:
        _args(tmp_path, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_or_bad_data_is_one_line_error(tiny_model_dir, tmp_path):
    from tasft import TasftError, TASFTTrainer

    model, tok = _model(tiny_model_dir)
    benign, _ = _datasets()
    with pytest.raises(TasftError, match="needs harmful_dataset"):
        TASFTTrainer(model, _args(tmp_path), train_dataset=benign, processing_class=tok)
    with pytest.raises(TasftError, match=r"harmful_dataset\[0\]: no response"):
        TASFTTrainer(model, _args(tmp_path), train_dataset=benign, harmful_dataset=[{"prompt": "How to x?"}],
                     processing_class=tok)


def test_sft_needs_no_harmful_data_and_lora_trains_the_adapter(tiny_model_dir, tmp_path):
    from peft import LoraConfig

    from tasft import TASFTTrainer

    model, tok = _model(tiny_model_dir)
    benign, _ = _datasets()
    trainer = TASFTTrainer(model, _args(tmp_path, method="sft"), train_dataset=benign, processing_class=tok,
                           peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    assert lora and any(not torch.equal(lora[n], p) for n, p in trainer.model.named_parameters() if n in lora)


def test_the_api_config_takes_its_defaults_from_train_config(tmp_path):
    """One default per setting: what TASFTConfig adds to TrainingArguments defaults to TrainConfig's value."""
    from tasft import TASFTConfig, TrainConfig

    cfg = TASFTConfig(output_dir=str(tmp_path))
    for name in ("method", "harmful_batch_size", "max_length", "loss_chunk_size"):
        assert getattr(cfg, name) == getattr(TrainConfig(), name), name
