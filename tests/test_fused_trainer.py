"""The trainer's fused (chunked) loss path gives the plain path's loss and gradients on a real tiny model."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import TrainingArguments

from tasft.config import LoraSettings
from tasft.data import Record, tokenize_records
from tasft.methods.ta_sft import PenaltyTerm, TaSftSettings
from tasft.models import add_lora, load_model, load_tokenizer, token_embeddings
from tasft.objectives import losses
from tasft.objectives.fused import supports_fused
from tasft.training.trainer import MethodTrainer, collate_train

from .conftest import BENIGN, HARMFUL


def _trainer(model, tokenizer, tmp_path, method, penalty, chunk):
    benign = [Record(p, r, "benign") for p, r in BENIGN]
    harmful = [Record(p, r, "harmful") for p, r in HARMFUL]
    train, _ = tokenize_records(tokenizer, benign, 64)
    bad, _ = tokenize_records(tokenizer, harmful, 64)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, per_device_train_batch_size=4)
    return MethodTrainer(
        model=model, args=args, train_dataset=train, processing_class=tokenizer,
        data_collator=lambda b: collate_train(b, tokenizer.pad_token_id),
        term=_term(model, method, penalty), harmful=bad, harmful_batch_size=3, pad_id=tokenizer.pad_token_id,
        loss_chunk_size=chunk,
    ), train


def _term(model, method, penalty):
    """TA-SFT's D_h term as the method builds it (sft: none)."""
    if method == "sft":
        return None
    table = losses.normalize_embeddings(token_embeddings(model))
    return PenaltyTerm(TaSftSettings(penalty=penalty, lambda_=1.0), table)


def _loss_and_grads(model, tokenizer, tmp_path, method, penalty, chunk):
    """Loss, gradients and logged terms of one training micro-step; also checks which path ran: the fused path
    never asks the LM head for more than the last position's logits."""
    trainer, train = _trainer(model, tokenizer, tmp_path, method, penalty, chunk)
    model.train()
    model.zero_grad()
    widths = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: widths.append(o.shape[1]))
    batch = collate_train(train[:4], tokenizer.pad_token_id)
    loss = trainer.compute_loss(model, batch)
    hook.remove()
    assert len(widths) == (2 if method == "ta-sft" and chunk is None else 1)  # fused: one joint D_u + D_h forward
    assert all(w == 1 for w in widths) == (chunk is not None)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, dict(trainer._sums)


@pytest.mark.parametrize(
    "method,penalty", [("sft", "emd"), ("ta-sft", "emd_lb"), ("ta-sft", "emd"), ("ta-sft", "nlcl"), ("ta-sft", "ga")]
)
def test_fused_path_matches_plain_path(tiny_model_dir, tmp_path, method, penalty):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = load_model(str(tiny_model_dir))
    assert supports_fused(model)
    plain_loss, plain_grads, plain_terms = _loss_and_grads(model, tokenizer, tmp_path, method, penalty, None)
    fused_loss, fused_grads, fused_terms = _loss_and_grads(model, tokenizer, tmp_path, method, penalty, 5)
    torch.testing.assert_close(fused_loss, plain_loss, atol=1e-5, rtol=1e-5)
    assert fused_terms.keys() == plain_terms.keys()
    assert fused_grads.keys() == plain_grads.keys()
    assert "model.embed_tokens.weight" in plain_grads  # the tied LM head: gradients from the head and the input
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_fused_path_with_lora(tiny_model_dir, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = add_lora(load_model(str(tiny_model_dir)), LoraSettings(r=4, dropout=0.0))
    assert supports_fused(model)
    plain_loss, plain_grads, _ = _loss_and_grads(model, tokenizer, tmp_path, "ta-sft", "emd_lb", None)
    fused_loss, fused_grads, _ = _loss_and_grads(model, tokenizer, tmp_path, "ta-sft", "emd_lb", 3)
    torch.testing.assert_close(fused_loss, plain_loss, atol=1e-5, rtol=1e-5)
    assert plain_grads and all("lora_" in n for n in plain_grads)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_unsupported_heads_keep_the_plain_path(tiny_model_dir):
    model = load_model(str(tiny_model_dir))
    assert supports_fused(model)
    capped = copy.deepcopy(model)
    capped.config.final_logit_softcapping = 30.0
    assert not supports_fused(capped)
    biased = copy.deepcopy(model)
    biased.lm_head = torch.nn.Linear(biased.lm_head.in_features, biased.lm_head.out_features, bias=True)
    assert not supports_fused(biased)


def test_sharded_weights_keep_the_plain_path(tiny_model_dir):
    model = load_model(str(tiny_model_dir))
    model.lm_head.weight.ds_id = 7  # how DeepSpeed ZeRO-3 marks a partitioned parameter
    assert not supports_fused(model)
