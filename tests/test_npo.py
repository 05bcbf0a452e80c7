"""NPO and SimNPO, the two methods added through the registry: their losses equal a hand computation on the tiny
model, a few steps lower the D_h log-prob, NPO's reference stays frozen, and the fused D_u path changes nothing."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess

import pytest
import torch
from transformers import TrainingArguments

from tasft.data import Record, collate, tokenize_records
from tasft.methods.npo import NpoTerm
from tasft.methods.simnpo import SimNpoTerm
from tasft.models import load_model, load_tokenizer
from tasft.objectives.sequence import npo_loss, sequence_logprob, simnpo_loss
from tasft.run_config import load_train_config
from tasft.training.pipeline import train
from tasft.training.trainer import MethodTrainer, collate_train

from .conftest import BENIGN, HARMFUL, tiny_overrides


def test_the_formulas_on_known_numbers():
    logp, ref = torch.tensor([-2.0, -6.0]), torch.tensor([-3.0, -3.0])
    beta = 0.5
    want = (2 / beta) * sum(math.log(1 + math.exp(beta * (a - b))) for a, b in ((-2, -3), (-6, -3))) / 2
    assert npo_loss(logp, ref, beta).item() == pytest.approx(want, rel=1e-6)
    assert npo_loss(ref, ref, beta).item() == pytest.approx((2 / beta) * math.log(2), rel=1e-6)  # π = π_ref
    lengths, gamma = torch.tensor([4.0, 2.0]), 0.3
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    want = -(2 / beta) * sum(math.log(sig(-beta * a / n - gamma)) for a, n in ((-2, 4), (-6, 2))) / 2
    assert simnpo_loss(logp, lengths, beta, gamma).item() == pytest.approx(want, rel=1e-6)
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]]]))
    lp, n = sequence_logprob(logits, torch.tensor([[0, 1, 2]]), torch.tensor([[True, True, False]]))
    assert lp.item() == pytest.approx(math.log(0.5) + math.log(0.8), abs=1e-6) and n.item() == 2


def _batches(tokenizer):
    benign, _ = tokenize_records(tokenizer, [Record(p, r, "b") for p, r in BENIGN], 64)
    harmful, _ = tokenize_records(tokenizer, [Record(p, r, "h") for p, r in HARMFUL], 64)
    return benign, harmful


def _trainer(model, tokenizer, tmp_path, term, chunk):
    benign, harmful = _batches(tokenizer)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, per_device_train_batch_size=4)
    return MethodTrainer(model=model, args=args, train_dataset=benign, processing_class=tokenizer,
                        data_collator=lambda b: collate_train(b, tokenizer.pad_token_id), term=term, harmful=harmful,
                        harmful_batch_size=4, pad_id=tokenizer.pad_token_id, loss_chunk_size=chunk), benign, harmful


def _by_hand(model, tokenizer, benign, harmful):
    """(NLL of the first D_u batch, [(log π(y_h|x_h), |y_h|) per D_h answer]) computed here, one row at a time,
    from the model's logits (the sampler's first D_h batch of 4 holds all four answers)."""
    pad = tokenizer.pad_token_id
    b = collate(benign[:4], pad, mask="response")
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
    logp = torch.log_softmax(logits, -1).gather(-1, b["input_ids"][:, 1:, None])[..., 0]
    mask = b["loss_mask"][:, 1:]
    nll = -(logp * mask).sum() / mask.sum()
    h = collate(harmful, pad, mask="content")
    rows = []
    for i in range(h["input_ids"].shape[0]):
        n = int(h["attention_mask"][i].sum())  # right-padded: the real tokens come first
        ids, keep = h["input_ids"][i : i + 1, :n], h["loss_mask"][i, 1:n]
        lg = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
        rows.append(((lg.gather(-1, ids[0, 1:, None])[:, 0] * keep).sum(), keep.sum()))
    return nll, rows


@pytest.mark.parametrize("chunk", [None, 3])
def test_npo_loss_is_the_hand_computation_and_the_reference_is_frozen(tiny_model_dir, tmp_path, chunk):
    tokenizer, model = load_tokenizer(str(tiny_model_dir)), load_model(str(tiny_model_dir))
    reference = load_model(str(tiny_model_dir)).requires_grad_(False)
    frozen = {k: v.clone() for k, v in reference.state_dict().items()}
    with torch.no_grad():  # make the policy differ from the reference
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    beta = 0.1
    trainer, benign, harmful = _trainer(model, tokenizer, tmp_path, NpoTerm(beta, reference=reference), chunk)
    model.train()
    got = trainer.compute_loss(model, collate_train(benign[:4], tokenizer.pad_token_id))
    got.backward()
    model.eval()
    with torch.no_grad():
        nll, rows = _by_hand(model, tokenizer, benign, harmful)
        _, ref_rows = _by_hand(reference, tokenizer, benign, harmful)
        want = nll + (2 / beta) * torch.stack([torch.log1p(torch.exp(beta * (lp - rp)))
                                               for (lp, _), (rp, _) in zip(rows, ref_rows)]).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-4)
    assert all(p.grad is None and not p.requires_grad for p in reference.parameters())
    assert all(torch.equal(v, frozen[k]) for k, v in reference.state_dict().items())


def test_simnpo_loss_is_the_hand_computation(tiny_model_dir, tmp_path):
    tokenizer, model = load_tokenizer(str(tiny_model_dir)), load_model(str(tiny_model_dir))
    beta, gamma = 4.5, 0.5
    trainer, benign, harmful = _trainer(model, tokenizer, tmp_path, SimNpoTerm(beta, gamma), None)
    model.train()
    got = trainer.compute_loss(model, collate_train(benign[:4], tokenizer.pad_token_id))
    model.eval()
    with torch.no_grad():
        nll, rows = _by_hand(model, tokenizer, benign, harmful)
        want = nll - (2 / beta) * torch.stack([torch.nn.functional.logsigmoid(-beta * lp / n - gamma)
                                               for lp, n in rows]).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-4)


@pytest.mark.parametrize("method,extra", [("npo", {}), ("simnpo", {"simnpo.beta": 0.1})])
def test_a_few_steps_lower_the_harmful_logprob(tiny_model_dir, tiny_data, tmp_path, method, extra):
    """(SimNPO at its default β = 4.5 saturates on the random tiny model — log π/|y| ≈ −6 per token, so
    softplus(β·log π/|y|) has almost no gradient (at β = 0.5 SFT on D_u still wins): the test uses β = 0.1.)"""
    out = tmp_path / method
    cfg = load_train_config(None, tiny_overrides(tiny_model_dir, tiny_data, out, method=method, max_steps=6,
                                                 learning_rate=5e-3, save_steps=100, **extra))
    metrics = train(cfg, progress=False)
    assert metrics["after"]["harmful_logprob"] < metrics["before"]["harmful_logprob"] - 0.05
    assert metrics["label"].startswith(f"{method} β=") and metrics[method]["beta"] == cfg.method_settings.beta
    logs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert sum(method in r for r in logs) == 6  # the term is logged every step
    card = (out / "README.md").read_text()
    assert ("NPO" if method == "npo" else "SimNPO") in card


def test_npo_with_lora_uses_the_base_model_as_reference(tiny_model_dir, tiny_data, tmp_path):
    cfg = load_train_config(None, tiny_overrides(tiny_model_dir, tiny_data, tmp_path / "lora", method="npo",
                                                 max_steps=2, save_steps=100, **{"lora.r": 4}))
    metrics = train(cfg, progress=False)
    assert metrics["steps"] == 2 and (tmp_path / "lora" / "adapter_model.safetensors").exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate CLI not installed")
@pytest.mark.parametrize("method", ["npo", "simnpo"])
def test_two_process_ddp_runs(tiny_model_dir, tiny_data, tmp_path, method):
    out = tmp_path / method
    sets = [a for s in tiny_overrides(tiny_model_dir, tiny_data, out, method=method, batch_size=2,
                                      harmful_batch_size=2, max_steps=2, save_steps=100) for a in ("--set", s)]
    proc = subprocess.run(["accelerate", "launch", "--cpu", "--num_processes", "2", "-m", "tasft", "train", *sets],
                          cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    logs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert metrics["steps"] == 2 and [r["epoch"] for r in logs if method in r] == [0.5, 1.0]  # 2 × 2 of 8 rows
