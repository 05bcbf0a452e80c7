"""TA-SFT's position-weighted penalty (``ta_sft.penalty_position_decay``): w_t = exp(−t/τ) over each harmful answer's
penalised tokens, the penalty their weighted mean — the same on the plain and the fused path."""

from __future__ import annotations

import json

import pytest
import torch

from tasft.data import Tokenized, collate, position_weights
from tasft.objectives import PENALTIES, penalty_from_logits
from tasft.objectives.fused import fused_linear_objective
from tasft.run_config import load_train_config
from tasft.training.pipeline import train

from .conftest import tiny_overrides
from .test_chunked_penalty import _problem

NAMES = ["ga", "nlcl", "emd", "emd_lb"]


def test_position_weights_and_collation():
    assert position_weights(3, 2.0).tolist() == pytest.approx([1.0, 0.6065307, 0.3678794])
    rows = [Tokenized(input_ids=[5, 6, 7, 8, 9], prompt_len=2, response_len=3, suffix_len=0, origin="a"),
            Tokenized(input_ids=[5, 6, 7], prompt_len=1, response_len=2, suffix_len=0, origin="b")]
    batch = collate(rows, pad_id=0, mask="content", position_decay=1.0)
    w = batch["loss_weight"]
    assert w[0].tolist() == pytest.approx([0, 0, 1, torch.exp(torch.tensor(-1.0)).item(),
                                           torch.exp(torch.tensor(-2.0)).item()])
    assert w[1].tolist() == pytest.approx([0, 1, torch.exp(torch.tensor(-1.0)).item(), 0, 0])
    assert ((w > 0) == batch["loss_mask"]).all() and "loss_weight" not in collate(rows, 0, mask="content")


def _weights(mask: torch.Tensor, seed: int) -> torch.Tensor:
    return torch.rand(mask.shape, generator=torch.Generator().manual_seed(seed)) * mask


@pytest.mark.parametrize("name", NAMES)
def test_weighted_plain_penalty_is_the_weighted_mean_of_positions(name):
    hidden, weight, targets, mask, table = _problem(seed=3)
    logits = (hidden @ weight.T).detach()
    w = _weights(mask, 1)
    got = penalty_from_logits(name, logits, targets, mask, table, weights=w)
    ones = penalty_from_logits(name, logits, targets, mask, table, weights=mask.float())
    assert ones == pytest.approx(float(penalty_from_logits(name, logits, targets, mask, table)), abs=1e-6)
    per_position = {}
    for b, t in mask.nonzero().tolist():  # each masked position's value on its own
        alone = torch.zeros_like(mask)
        alone[b, t] = True
        per_position[(b, t)] = float(penalty_from_logits(name, logits, targets, alone, table))
    want = sum(w[b, t].item() * v for (b, t), v in per_position.items()) / float(w.sum())
    assert float(got) == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_weighted_fused_matches_weighted_plain(name, chunk):
    hidden, weight, targets, mask, table = _problem(seed=7 + chunk)
    w = _weights(mask, 2)
    plain = penalty_from_logits(name, hidden @ weight.T, targets, mask, table, weights=w)
    want = (plain.detach(), *torch.autograd.grad(plain, (hidden, weight)))
    segment = (PENALTIES[name].fused, int(mask.sum()), 1.0, w[mask])
    loss, (mean,) = fused_linear_objective(hidden[mask], weight, targets[mask], [segment], table, chunk_size=chunk)
    got = (mean, *torch.autograd.grad(loss, (hidden, weight)))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def _penalties(out):
    return [r["penalty_emd"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())
            if "penalty_emd" in r]


def test_a_run_with_position_decay_is_the_same_on_both_paths(tiny_model_dir, tiny_data, tmp_path):
    curves = {}
    for decay, chunk in (("null", "256"), ("2.0", "256"), ("2.0", "null")):
        out = tmp_path / f"{decay}-{chunk}"
        metrics = train(load_train_config(None, tiny_overrides(
            tiny_model_dir, tiny_data, out, measure="false", loss_chunk_size=chunk,
            **{"ta_sft.penalty": "emd", "ta_sft.penalty_position_decay": decay})), progress=False)
        curves[(decay, chunk)] = _penalties(out)
    assert metrics["penalty_position_decay"] == 2.0
    assert curves[("2.0", "256")] == pytest.approx(curves[("2.0", "null")], abs=1e-5)  # fused = plain
    assert curves[("2.0", "256")][0] != pytest.approx(curves[("null", "256")][0], abs=1e-4)  # the weights act
    with pytest.raises(Exception, match="penalty_position_decay: must be > 0"):
        load_train_config(None, ["ta_sft.penalty_position_decay=0"])


def test_log_odds_selectivity_weights():
    from tasft.objectives.selectivity import log_odds_weights, token_counts

    v = 6
    harmful = token_counts([[0, 1, 2, 2], [0, 2, 3]], v)  # 0 and 1 ordinary, 2 and 3 harmful-specific
    benign = token_counts([[0, 1, 0, 1], [0, 1, 4, 4]], v)
    assert harmful.tolist() == [2, 1, 3, 1, 0, 0] and benign.tolist() == [3, 3, 0, 0, 2, 0]
    w = log_odds_weights(harmful, benign)
    assert w[2] == 1.0 and 0 < w[3] < 1  # the most D_h-specific token weighs 1, a rarer one less
    assert w[0] == 0 and w[1] == 0 and w[4] == 0  # as frequent (or more) in D_u: weight 0
    assert float(w.min()) >= 0 and float(w.max()) == 1.0


def test_a_run_with_selectivity_is_the_same_on_both_paths(tiny_model_dir, tiny_data, tmp_path):
    curves = {}
    for chunk, rule in (("256", "log-odds"), ("null", "log-odds"), ("256", "none")):
        out = tmp_path / f"sel-{chunk}-{rule}"
        metrics = train(load_train_config(None, tiny_overrides(
            tiny_model_dir, tiny_data, out, measure="false", loss_chunk_size=chunk,
            **{"ta_sft.penalty": "emd", "ta_sft.penalty_selectivity": rule,
               "ta_sft.penalty_position_decay": "3.0"})), progress=False)
        curves[(chunk, rule)] = _penalties(out)
    assert metrics["penalty_selectivity"] == "none" and len(curves[("256", "log-odds")]) == 4
    assert curves[("256", "log-odds")] == pytest.approx(curves[("null", "log-odds")], abs=1e-5)  # fused = plain
    assert curves[("256", "log-odds")][0] != pytest.approx(curves[("256", "none")][0], abs=1e-4)  # weights act
