"""Fast greedy decoding for evaluation: the same tokens as ``model.generate(do_sample=False)``, with less work.

What it saves over ``generate`` (measured in ``bench/bench_generate.py``):

- the KV cache is preallocated once per batch (prompt width + ``max_new_tokens`` slots per layer) and each step
  writes one slot — ``generate``'s dynamic cache concatenates the whole cache at every step of every layer
  (a copy that grows with the answer; ``bench/bench_generate.py --profile-steps N`` shows its share);
- a row that has produced an end-of-turn token leaves the batch once a quarter of the rows still running have
  finished (one gather of the cache then, instead of computing padding for every later step).

The inputs are built as ``generate`` builds them — left padding, ``position_ids = cumsum(mask) − 1`` (0 on pads),
the attention mask growing by one column per step, the next token = argmax of the last position's fp32 logits —
so greedy outputs match ``generate``'s token for token (``tests/test_decode.py`` and the bench check it).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer

COMPACT_SHARE = 0.25  # drop finished rows once this share of the running rows has finished


class PreallocatedLayer(DynamicLayer):
    """One layer's KV cache in a buffer of ``capacity`` positions: ``update`` writes the new positions and returns
    views of the filled part (no concatenation)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity, self.length = capacity, 0
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, _, d = key_states.shape
        self.device = key_states.device
        self._k = key_states.new_empty((b, h, self.capacity, d))
        self._v = value_states.new_empty((b, value_states.shape[1], self.capacity, value_states.shape[-1]))
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        if self.length + n > self.capacity:
            raise RuntimeError(f"KV cache full ({self.capacity} positions)")
        self._k[:, :, self.length : self.length + n] = key_states
        self._v[:, :, self.length : self.length + n] = value_states
        self.length += n
        self.keys, self.values = self._k[:, :, : self.length], self._v[:, :, : self.length]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self._k, self._v = self._k[indices], self._v[indices]
            self.keys, self.values = self._k[:, :, : self.length], self._v[:, :, : self.length]


def _eos_ids(model, tokenizer) -> set[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos if isinstance(eos, list) else [eos]) - {None}


@torch.no_grad()
def greedy_decode(model, tokenizer, encoded: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy continuations of the token-id prompts in ``encoded`` (one batch): per row the new tokens up to and
    including the first end-of-turn token, at most ``max_new_tokens``."""
    pad = tokenizer.pad_token_id
    device = next(model.parameters()).device
    width = max(len(ids) for ids in encoded)
    rows = len(encoded)
    input_ids = torch.full((rows, width), pad, dtype=torch.long)
    mask = torch.zeros((rows, width + max_new_tokens), dtype=torch.long)
    for i, ids in enumerate(encoded):
        input_ids[i, width - len(ids) :] = torch.tensor(ids)
        mask[i, width - len(ids) : width] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    position = (mask[:, :width].cumsum(-1) - 1).masked_fill(mask[:, :width] == 0, 0)
    n_layers = model.config.get_text_config(decoder=True).num_hidden_layers
    cache = Cache(layers=[PreallocatedLayer(width + max_new_tokens) for _ in range(n_layers)])
    eos = _eos_ids(model, tokenizer)
    out: list[list[int]] = [[] for _ in range(rows)]
    alive = torch.arange(rows)  # original row of each batch row
    finished = torch.zeros(rows, dtype=torch.bool)
    step_ids, length = input_ids, width
    for step in range(max_new_tokens):
        logits = model(input_ids=step_ids, attention_mask=mask[:, :length], position_ids=position,
                       cache=cache, use_cache=True, logits_to_keep=1).logits
        nxt = logits[:, -1, :].float().argmax(-1)
        for j, (row, tok) in enumerate(zip(alive.tolist(), nxt.tolist())):
            out[row].append(tok)  # a finished row waiting for compaction gets tokens that _cut drops
            if tok in eos:
                finished[j] = True
        if step + 1 == max_new_tokens or bool(finished.all()):
            break
        mask[:, length] = 1
        length += 1
        position = position[:, -1:] + 1
        step_ids = nxt[:, None]
        if finished.sum() >= max(1, COMPACT_SHARE * len(alive)):
            keep = (~finished).nonzero().flatten()
            cache.batch_select_indices(keep.to(device))
            keep_d = keep.to(device)
            alive, finished = alive[keep], finished[keep]
            mask, position, step_ids = mask[keep_d], position[keep_d], step_ids[keep_d]
    return [_cut(r, eos) for r in out]


def _cut(row: list[int], eos: set[int]) -> list[int]:
    for i, tok in enumerate(row):
        if tok in eos:
            return row[: i + 1]
    return row
