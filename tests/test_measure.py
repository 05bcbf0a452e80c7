"""Teacher-forced log-probabilities: the fused path (masked positions only, chunked LM head) gives the plain path's
numbers without ever building (B, T, V) logits."""

from __future__ import annotations

import pytest

from tasft.data.batches import tokenize_record
from tasft.data.records import Record
from tasft.models import load_model, load_tokenizer
from tasft.objectives import fused, measure

from .conftest import BENIGN


@pytest.mark.parametrize("mask", ["response", "content"])
def test_fused_sums_equal_the_full_logits_sums_and_build_no_full_logits(tiny_model_dir, monkeypatch, mask):
    model, tokenizer = load_model(str(tiny_model_dir)).eval(), load_tokenizer(str(tiny_model_dir))
    examples = [tokenize_record(tokenizer, Record(p, r, f"r{i}"), 64) for i, (p, r) in enumerate(BENIGN)]
    assert fused.supports_fused(model)
    head_shapes = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: head_shapes.append(tuple(o.shape)))
    monkeypatch.setattr(measure, "CHUNK_ROWS", 7)  # several chunks, one of them short
    got = measure.token_logprob_sums(model, examples, tokenizer.pad_token_id, mask=mask, batch_size=3,
                                     progress=False)
    assert head_shapes and all(shape[1] == 1 for shape in head_shapes)  # the model's head: last position only
    hook.remove()
    monkeypatch.setattr(fused, "supports_fused", lambda m: False)
    want = measure.token_logprob_sums(model, examples, tokenizer.pad_token_id, mask=mask, batch_size=3,
                                      progress=False)
    assert [n for _, n in got] == [n for _, n in want] and all(n > 0 for _, n in got)
    assert [s for s, _ in got] == pytest.approx([s for s, _ in want], rel=1e-5, abs=1e-4)
