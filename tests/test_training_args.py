"""``training_args:`` — any TrainingArguments field passed through, tasft's own fields protected."""

import json
import re

import pytest

from tasft.config_checks import OWNED_TRAINING_ARGS as OWNED
from tasft.errors import TasftError
from tasft.run_config import load_train_config
from tasft.training.args import training_kwargs
from tasft.training.pipeline import train

from .conftest import tiny_overrides


def _losses(out):
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [r["total"] for r in logs if "total" in r]


@pytest.mark.parametrize(("override", "message"), [
    ("training_args.gradient_checkpointin=true",
     "not a TrainingArguments field (did you mean gradient_checkpointing?)"),
    ("training_args.learning_rate=0.1", "tasft sets it from its own setting — set learning_rate instead"),
    ("training_args.per_device_train_batch_size=8", "set batch_size instead"),
    ("training_args.remove_unused_columns=true", "tasft sets it itself"),
    ("training_args=3", "training_args: expected a mapping"),
])
def test_bad_training_args(override, message):
    with pytest.raises(TasftError, match=re.escape(message)):
        load_train_config(None, [override])


def test_the_block_reaches_training_arguments(tmp_path):
    cfg = load_train_config(None, ["training_args.optim=sgd", "training_args.adam_beta2=0.95"])
    kwargs = training_kwargs(cfg, tmp_path, model=None)
    assert kwargs["optim"] == "sgd" and kwargs["adam_beta2"] == 0.95
    assert not set(cfg.training_args) & set(OWNED) and set(OWNED) >= {k for k in kwargs if k not in cfg.training_args}


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated")
@pytest.mark.parametrize(("chunk", "name"), [("256", "activation_checkpointing"),  # the fused LM-head path,
                                             ("null", "activation_checkpointing"),  # the plain full-logits path
                                             ("256", "gradient_checkpointing")])  # transformers' older name
def test_gradient_checkpointing_gives_the_same_losses(tiny_model_dir, tiny_data, tmp_path, chunk, name,
                                                      monkeypatch):
    from transformers import modeling_utils  # binds torch's checkpoint function when checkpointing is enabled

    calls, plain = [], modeling_utils.checkpoint
    monkeypatch.setattr(modeling_utils, "checkpoint", lambda *a, **k: calls.append(1) or plain(*a, **k))
    runs, used = {}, {}
    for flag in ("false", "true"):
        calls.clear()
        out = tmp_path / f"gc-{flag}-{chunk}"
        train(load_train_config(None, tiny_overrides(
            tiny_model_dir, tiny_data, out, **{f"training_args.{name}": flag, "loss_chunk_size": chunk,
                                                "measure": "false", "ta_sft.penalty": "emd"})), progress=False)
        runs[flag], used[flag] = _losses(out), len(calls)
    assert used["false"] == 0 and used["true"] > 0  # the layers really were recomputed in backward
    assert len(runs["true"]) == 4 and runs["true"] == pytest.approx(runs["false"], abs=1e-5)


def test_an_optimizer_chosen_in_training_args_is_used(tiny_model_dir, tiny_data, tmp_path):
    curves = {}
    for optim in ("adamw_torch", "sgd"):
        out = tmp_path / optim
        train(load_train_config(None, tiny_overrides(tiny_model_dir, tiny_data, out, measure="false",
                                                     **{"training_args.optim": optim})), progress=False)
        curves[optim] = _losses(out)
    assert curves["adamw_torch"][0] == pytest.approx(curves["sgd"][0], abs=1e-6)  # same start
    assert curves["adamw_torch"][-1] != pytest.approx(curves["sgd"][-1], abs=1e-4)  # different updates


@pytest.mark.parametrize("chunk", ["256", "null"])
def test_lora_with_checkpointing_trains_the_adapter(tiny_model_dir, tiny_data, tmp_path, chunk):
    """Frozen base + checkpointed layers: the adapter still gets gradients (the inputs require grad) and moves."""
    from safetensors.torch import load_file

    curves = {}
    for flag in ("false", "true"):
        out = tmp_path / f"lora-{flag}-{chunk}"
        train(load_train_config(None, tiny_overrides(
            tiny_model_dir, tiny_data, out, measure="false", loss_chunk_size=chunk, max_steps=3, save_steps=10,
            **{"lora.r": 4, "lora.target_modules": "all-linear", "training_args.activation_checkpointing": flag})),
            progress=False)
        curves[flag] = _losses(out)
        adapter = load_file(str(out / "adapter_model.safetensors"))
        assert any(float(t.abs().max()) > 0 for n, t in adapter.items() if "lora_B" in n)  # B starts at 0
    assert curves["true"] == pytest.approx(curves["false"], abs=1e-5) and curves["true"][0] != curves["true"][-1]


@pytest.mark.parametrize("chunk", ["256", "null"])
def test_bf16_autocast_stays_close_to_fp32(tiny_model_dir, tiny_data, tmp_path, chunk):
    """precision: bf16 — autocast over fp32 master weights, on CPU too: the first step's loss (same weights) within
    2 % of fp32's, and the curve within 5 % after it (bf16 keeps 8 bits of mantissa: ~0.4 % per rounding)."""
    curves = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}-{chunk}"
        train(load_train_config(None, tiny_overrides(tiny_model_dir, tiny_data, out, measure="false",
                                                     loss_chunk_size=chunk, precision=precision,
                                                     **{"ta_sft.penalty": "emd"})), progress=False)
        curves[precision] = _losses(out)
    assert curves["bf16"][0] == pytest.approx(curves["fp32"][0], rel=0.02)
    assert curves["bf16"] == pytest.approx(curves["fp32"], rel=0.05) and curves["bf16"] != curves["fp32"]


def test_precision_errors(tiny_model_dir, tiny_data, tmp_path):
    with pytest.raises(TasftError, match="mixes two half formats"):
        load_train_config(None, ["precision=bf16", "dtype=float16"])
    with pytest.raises(TasftError, match="set precision instead"):
        load_train_config(None, ["training_args.bf16=true"])
    import torch

    if not torch.cuda.is_available():
        cfg = load_train_config(None, tiny_overrides(tiny_model_dir, tiny_data, tmp_path / "fp16", precision="fp16"))
        with pytest.raises(TasftError, match="fp16 autocast needs a CUDA GPU"):
            training_kwargs(cfg, tmp_path, model=None)
