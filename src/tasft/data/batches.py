"""Batches: a record's prompt rendered with the model's chat template (Alpaca's format for a base model without
one), tokenised as prompt + response + template suffix, and right-padded into masked, optionally weighted batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import TasftError
from .records import Prompt, Record

ALPACA_HEADER = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
)
_SENTINEL = "\x00TASFT_RESPONSE\x00"


# ---------------------------------------------------------------------------------------- formatting
def chat_messages(prompt: Prompt) -> list[dict]:
    """A prompt as chat messages: a plain string becomes one user turn."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def format_prompt(tokenizer, prompt: Prompt) -> str:
    """The text a model sees before answering: chat template with generation prompt, else Alpaca."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(chat_messages(prompt), tokenize=False, add_generation_prompt=True)
    text = prompt if isinstance(prompt, str) else Record(prompt, None, "").prompt_text
    return f"{ALPACA_HEADER}### Instruction:\n{text}\n\n### Response:\n"


def split_template(tokenizer, prompt: Prompt) -> tuple[str, str]:
    """(text before the response, text after it) as the template renders a full conversation."""
    if not getattr(tokenizer, "chat_template", None):
        return format_prompt(tokenizer, prompt), tokenizer.eos_token or ""
    msgs = chat_messages(prompt) + [{"role": "assistant", "content": _SENTINEL}]
    full = tokenizer.apply_chat_template(msgs, tokenize=False)
    if _SENTINEL not in full:
        raise TasftError("the tokenizer's chat template does not render the assistant's answer")
    before, after = full.split(_SENTINEL, 1)
    return before, after


@dataclass
class Tokenized:
    """Token ids of prompt + response + template suffix, with the part lengths (masks are built later)."""

    input_ids: list[int]
    prompt_len: int
    response_len: int
    suffix_len: int
    origin: str


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def bos_prefix(tokenizer) -> list[int]:
    """``[bos]`` for a tokenizer without a chat template that starts its text with BOS (Gemma, Llama base models),
    else ``[]`` (a chat template writes its own). Training and generation both put it before the prompt: a model
    trained after BOS and asked without it answers badly (Gemma loops)."""
    if getattr(tokenizer, "chat_template", None) or tokenizer.bos_token_id is None:
        return []
    probe = tokenizer("x")["input_ids"]
    return [tokenizer.bos_token_id] if probe and probe[0] == tokenizer.bos_token_id else []


def prompt_ids(tokenizer, prompt: Prompt) -> list[int]:
    """The token ids a model is given to answer ``prompt``: :func:`format_prompt`'s text after :func:`bos_prefix`."""
    return bos_prefix(tokenizer) + _ids(tokenizer, format_prompt(tokenizer, prompt))


def tokenize_record(tokenizer, record: Record, max_length: int) -> Tokenized | None:
    """Tokenise one pair; the response (then the suffix) is truncated to fit ``max_length``.

    Returns None when the prompt alone leaves no room for a single response token (the caller decides
    whether that is an error or a skip) — the whole response is never dropped silently.
    """
    before, after = split_template(tokenizer, record.prompt)
    prompt_part = bos_prefix(tokenizer) + _ids(tokenizer, before)
    response_ids = _ids(tokenizer, record.response or "")
    suffix_ids = _ids(tokenizer, after)
    room = max_length - len(prompt_part)
    if room < 1:
        return None
    response_ids = response_ids[:room]
    suffix_ids = suffix_ids[: max(0, room - len(response_ids))]
    ids = prompt_part + response_ids + suffix_ids
    return Tokenized(ids, len(prompt_part), len(response_ids), len(suffix_ids), record.origin)


def tokenize_records(
    tokenizer, records: list[Record], max_length: int, long_prompt: str = "error"
) -> tuple[list[Tokenized], dict[str, int]]:
    """Tokenise a data set; returns the examples and counts of ``truncated`` and ``skipped`` records."""
    out, stats = [], {"truncated": 0, "skipped": 0}
    for record in records:
        tok = tokenize_record(tokenizer, record, max_length)
        if tok is None:
            if long_prompt == "skip":
                stats["skipped"] += 1
                continue
            raise TasftError(
                f"{record.origin}: prompt is longer than max_length={max_length} tokens "
                f"(raise max_length or set long_prompt: skip)"
            )
        full_len = len(_ids(tokenizer, record.response or ""))
        if tok.response_len < full_len:
            stats["truncated"] += 1
        out.append(tok)
    if not out:
        raise TasftError(f"every record was skipped: all prompts are longer than max_length={max_length}")
    return out, stats


# ----------------------------------------------------------------------------------------- collation
def position_weights(length: int, decay: float) -> torch.Tensor:
    """w_t = exp(−t / τ) for the response positions t = 0 … length−1 (τ = ``decay`` tokens): the first tokens of
    an answer weigh most (after Qi et al. 2024, "Safety alignment should be made more than just a few tokens
    deep": a refusal is decided in the first few tokens)."""
    return torch.exp(-torch.arange(length, dtype=torch.float32) / decay)


def collate(
    batch: list[Tokenized], pad_id: int, mask: str = "response", first_tokens: int | None = None,
    position_decay: float | None = None, token_weights: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Right-pad a batch. ``loss_mask`` marks target tokens: the response plus template suffix
    (``mask="response"``, for SFT) or the response text only (``mask="content"``, for harmful sets),
    optionally only its first ``first_tokens`` tokens. With ``position_decay`` and/or ``token_weights`` (V,) also
    ``loss_weight`` (B, T): each marked token's :func:`position_weights` times the weight of its token id (0 on
    unmarked positions)."""
    width = max(len(t.input_ids) for t in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    loss = torch.zeros((len(batch), width), dtype=torch.bool)
    for i, t in enumerate(batch):
        n = len(t.input_ids)
        ids[i, :n] = torch.tensor(t.input_ids)
        attn[i, :n] = 1
        span = t.response_len + (t.suffix_len if mask == "response" else 0)
        if first_tokens is not None:
            span = min(span, first_tokens)
        loss[i, t.prompt_len : t.prompt_len + span] = True
    out = {"input_ids": ids, "attention_mask": attn, "loss_mask": loss}
    if position_decay is not None or token_weights is not None:
        weight = loss.float()
        if position_decay is not None:
            for i, row in enumerate(loss):
                where = row.nonzero().flatten()
                weight[i, where] = position_weights(len(where), position_decay)
        if token_weights is not None:  # the weight of the token each marked position predicts
            weight = weight * token_weights[ids]
        out["loss_weight"] = weight
    return out
