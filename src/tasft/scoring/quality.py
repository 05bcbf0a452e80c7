"""Response quality against reference answers: reference NLL, embedding similarity, repetition, length.

- reference NLL = −(1/N) Σ_t log π_θ(r_t | x, r_<t) over the reference answers' tokens (teacher forcing;
  lower is better; the same token-weighted mean as training's held-out NLL);
- similarity = mean cos(e(generated), e(reference)) with frozen MiniLM sentence embeddings;
- repetition = mean repeated-3-gram rate of the generated answers; length = mean words per answer.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..config import MEASURE_BATCH_SIZE
from ..data.batches import tokenize_record
from ..data.records import Record
from ..objectives.measure import token_logprob_sums
from .degenerate import repetition_rate


def reference_nll_sums(model, tokenizer, prompts: Sequence[str], references: Sequence[str], max_length: int = 512,
                       batch_size: int = MEASURE_BATCH_SIZE, progress: bool = True) -> list[tuple[float, int] | None]:
    """Per reference answer: (Σ_t −log π_θ(r_t | x, r_<t), #tokens), or None where the prompt leaves no room."""
    records = [Record(p, r, f"reference {i + 1}") for i, (p, r) in enumerate(zip(prompts, references))]
    tokenized = [tokenize_record(tokenizer, rec, max_length) for rec in records]
    kept = [i for i, t in enumerate(tokenized) if t is not None]
    sums = token_logprob_sums(model, [tokenized[i] for i in kept], tokenizer.pad_token_id, mask="content",
                              batch_size=batch_size, progress=progress, desc="reference NLL")
    out: list[tuple[float, int] | None] = [None] * len(records)
    for i, (logprob, count) in zip(kept, sums):
        out[i] = (-logprob, count)
    return out


def reference_nll(model, tokenizer, prompts: Sequence[str], references: Sequence[str], max_length: int = 512,
                  batch_size: int = MEASURE_BATCH_SIZE, progress: bool = True) -> float:
    """Token-weighted NLL of the references under the model (prompts that leave no room are skipped)."""
    sums = [s for s in reference_nll_sums(model, tokenizer, prompts, references, max_length, batch_size, progress)
            if s is not None]
    return sum(s for s, _ in sums) / max(sum(n for _, n in sums), 1) if sums else float("nan")


def reference_similarity(embedder, responses: Sequence[str], references: Sequence[str]) -> float:
    """Mean cosine similarity of generated and reference answers (unit-norm sentence embeddings)."""
    if not responses:
        return float("nan")
    a = embedder.embed(list(responses))
    b = embedder.embed(list(references))
    return float((a * b).sum(-1).mean())


def mean_repetition(responses: Sequence[str], n: int = 3) -> float:
    return sum(repetition_rate(r, n) for r in responses) / max(len(responses), 1)


def mean_length_words(responses: Sequence[str]) -> float:
    return sum(len(r.split()) for r in responses) / max(len(responses), 1)
