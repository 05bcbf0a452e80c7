"""TA-SFT's trust region (``ta_sft.trust_region`` μ): μ·KL(Q̃ ‖ P̃) to the frozen starting model on the D_h
positions, both distributions without the harmful token's own mass."""

from __future__ import annotations

import json

import pytest
import torch

from tasft.objectives.losses import kl_excluding_target
from tasft.run_config import load_train_config
from tasft.training.pipeline import train

from .conftest import tiny_overrides


def _case(seed=0, v=9):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 4, v, generator=g), torch.randn(2, 4, v, generator=g),
            torch.randint(0, v, (2, 4), generator=g), torch.rand(2, 4, generator=g) < 0.7)


def test_kl_off_the_target_by_hand():
    logits, ref, y, mask = _case()
    got = kl_excluding_target(logits, ref, y, mask)
    want = []
    for b, t in mask.nonzero().tolist():
        keep = torch.arange(logits.shape[-1]) != y[b, t]
        p, q = logits[b, t][keep].softmax(-1), ref[b, t][keep].softmax(-1)
        want.append(float((q * (q.log() - p.log())).sum()))
    assert float(got) == pytest.approx(sum(want) / len(want), abs=1e-6) and float(got) > 0


def test_kl_ignores_the_harmful_token_and_vanishes_at_the_reference():
    logits, ref, y, mask = _case(1)
    assert float(kl_excluding_target(logits, logits, y, mask)) == pytest.approx(0.0, abs=1e-7)
    pushed = logits.scatter(-1, y[..., None], -20.0)  # mass moved off the harmful token, the rest's shape kept
    assert float(kl_excluding_target(pushed, ref, y, mask)) == pytest.approx(
        float(kl_excluding_target(logits, ref, y, mask)), abs=1e-6)
    nothing = torch.zeros_like(mask)
    assert float(kl_excluding_target(logits, ref, y, nothing)) == 0.0


def _logs(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_a_trust_region_run_keeps_the_one_hot_penalty_and_adds_its_term(tiny_model_dir, tiny_data, tmp_path):
    runs = {}
    for mu in ("0.0", "5.0"):
        out = tmp_path / f"mu{mu}"
        metrics = train(load_train_config(None, tiny_overrides(
            tiny_model_dir, tiny_data, out, measure="false", **{"ta_sft.penalty": "emd", "ta_sft.trust_region": mu})),
            progress=False)
        runs[mu] = [r for r in _logs(out) if "penalty_emd" in r]
    assert metrics["trust_region"] == 5.0
    first_plain, first_tr = runs["0.0"][0], runs["5.0"][0]
    # step 1: same weights, so the same one-hot penalty (the reference's logits did not turn it into a soft one),
    # and the KL to the (identical) starting model is 0: the same total
    assert first_tr["penalty_emd"] == pytest.approx(first_plain["penalty_emd"], abs=1e-6)
    assert first_tr["total"] == pytest.approx(first_plain["total"], abs=1e-6)
    # later the model moves away from the reference: the totals part (total = nll − λ·emd + μ·KL)
    assert any(abs(a["total"] - (a["nll"] - a["penalty_emd"])) > 1e-4 for a in runs["5.0"][1:])
    assert all(abs(a["total"] - (a["nll"] - a["penalty_emd"])) < 1e-4 for a in runs["0.0"])
    with pytest.raises(Exception, match="trust_region: must be >= 0"):
        load_train_config(None, ["ta_sft.trust_region=-1"])
