"""The data of a run: read and check every source before anything is written (:func:`read_sources`,
:func:`check_sources`), then tokenise D_u (+ the method's extra pairs and any contrastive pairs), D_h (its
missing responses harvested from the starting model when asked) and the held-out split (:func:`load_datasets`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..config import TrainConfig
from ..data.batches import Tokenized, tokenize_records
from ..data.records import Record, load_source
from ..errors import TasftError
from ..generation.generate import GenerationSettings, generate_jsonl
from ..generation.harvest import harvest_items
from ..io_utils import read_jsonl
from ..methods import get_method
from ..objectives.measure import mean_token_logprob

log = logging.getLogger(__name__)
HARVEST_FILE = "harmful_responses_harvested.jsonl"


@dataclass
class Datasets:
    """Tokenised D_u (with any STL/contrastive pairs), D_h and held-out split, plus the records behind them."""

    train: list[Tokenized]
    harmful: list[Tokenized] | None
    eval: list[Tokenized] | None
    stats: dict
    train_records: list[Record]
    harmful_records: list[Record] | None


def _harvest_missing(cfg: TrainConfig, records: list[Record], model, tokenizer, out_dir: Path) -> list[Record]:
    """Fill missing D_h responses with the starting model's own greedy answers (saved to a clearly named
    file in the run directory and reused on resume)."""
    missing = [r for r in records if r.response is None]
    if not missing:
        return records
    items = harvest_items(records)
    settings = GenerationSettings(max_new_tokens=cfg.harvest_max_new_tokens, batch_size=cfg.eval_batch_size)
    target = out_dir / HARVEST_FILE
    generate_jsonl(model, tokenizer, items, target, settings, extra={"model": cfg.model, "seed": 0})  # or reuse
    harvested = {str(rec["id"]): rec.get("response") or "" for rec in read_jsonl(target)}
    filled, empty = [], 0
    for item, r in zip(items, records):
        response = r.response if r.response is not None else harvested.get(item["id"], "")
        if not response.strip():
            empty += 1  # an empty answer has no tokens to penalise
            continue
        filled.append(Record(r.prompt, response, r.origin))
    if not filled:
        raise TasftError(f"harmful_data: all {len(records)} harvested responses are empty (see {target})")
    if empty:
        log.warning("harmful_data: dropped %d empty harvested responses of %d", empty, len(records))
    return filled


def _kept(records: list[Record], tokenized: list[Tokenized]) -> list[Record]:
    """The records that survived tokenisation (a prompt longer than max_length may be skipped)."""
    origins = {t.origin for t in tokenized}
    return [r for r in records if r.origin in origins]


@dataclass
class Sources:
    """The records of D_u, D_h (responses may be missing when they are to be harvested) and the held-out split."""

    train: list[Record]
    harmful: list[Record] | None
    eval: list[Record] | None
    extra: list[Record] | None = None  # the method's own training pairs (e.g. STL's safety pairs)
    extra_stats: dict | None = None


def read_sources(cfg: TrainConfig) -> Sources:
    """Read and select every data source of a run (one-line errors for missing, malformed or empty data), the
    method's extra pairs included; the contrastive safety data is read to check it."""
    from .contrastive import check_contrastive_data

    harmful = None
    if cfg.harmful_data is not None:
        harmful = load_source(cfg.harmful_data, "harmful_data", need_response=not cfg.harmful_data.harvest)
    evals = load_source(cfg.eval_data, "eval_data", need_response=True) if cfg.eval_data is not None else None
    if cfg.contrastive.enabled:
        check_contrastive_data(cfg)
    extra, extra_stats = get_method(cfg.method).extra_records(cfg)
    return Sources(load_source(cfg.train_data, "train_data", need_response=True), harmful, evals, extra, extra_stats)


def check_sources(cfg: TrainConfig, tokenizer, sources: Sources) -> None:
    """Tokenise what can be tokenised before the model loads, so a prompt longer than ``max_length`` (or, for a
    D_h prompt to be harvested, than the generation limit) fails first."""
    from ..generation.generate import check_prompt_lengths

    harmful = [r for r in sources.harmful or [] if r.response is not None]
    for records in (sources.train, harmful, sources.eval or [], sources.extra or []):
        if records:
            tokenize_records(tokenizer, records, cfg.max_length, cfg.long_prompt)
    to_harvest = [r for r in sources.harmful or [] if r.response is None]
    if to_harvest:
        check_prompt_lengths(tokenizer, harvest_items(to_harvest), GenerationSettings().max_prompt_tokens)


def load_datasets(cfg: TrainConfig, tokenizer, model, out_dir: Path, sources: Sources | None = None) -> Datasets:
    """Select and tokenise D_u (+ STL or contrastive pairs), D_h (harvesting missing responses when asked) and the
    held-out split (``sources``: as read by :func:`read_sources`, read here when None)."""
    from .contrastive import contrastive_records

    sources = sources or read_sources(cfg)
    train_records = sources.train
    stats: dict = {"train_source_records": len(train_records)}
    harmful_records = sources.harmful
    if harmful_records is not None and cfg.harmful_data.harvest:
        harmful_records = _harvest_missing(cfg, harmful_records, model, tokenizer, out_dir)
    if sources.extra:
        stats.update(sources.extra_stats or {})
        train_records = train_records + sources.extra
    if cfg.contrastive.enabled:
        extra = contrastive_records(cfg, harmful_records, model, tokenizer, out_dir)
        stats["contrastive_pairs"] = len(extra)
        train_records = train_records + extra
    train, train_stats = tokenize_records(tokenizer, train_records, cfg.max_length, cfg.long_prompt)
    stats.update(train_records=len(train), train_truncated=train_stats["truncated"],
                 train_skipped_long_prompt=train_stats["skipped"])
    harmful = None
    if harmful_records is not None:
        harmful, h_stats = tokenize_records(tokenizer, harmful_records, cfg.max_length, cfg.long_prompt)
        stats.update(harmful_records=len(harmful), harmful_truncated=h_stats["truncated"],
                     harmful_skipped_long_prompt=h_stats["skipped"])
        harmful_records = _kept(harmful_records, harmful)
    evals = None
    if sources.eval is not None:
        evals, e_stats = tokenize_records(tokenizer, sources.eval, cfg.max_length, cfg.long_prompt)
        stats.update(eval_records=len(evals), eval_skipped_long_prompt=e_stats["skipped"])
    return Datasets(train, harmful, evals, stats, _kept(train_records, train), harmful_records)


def measure_all(model, data: Datasets, pad_id: int, batch_size: int) -> dict[str, float]:
    """Mean harmful-response token log-prob (D_h) and held-out NLL (eval split), where available."""
    out = {}
    if data.harmful:
        out["harmful_logprob"] = mean_token_logprob(
            model, data.harmful, pad_id, mask="content", batch_size=batch_size, desc="D_h log-prob")
    if data.eval:
        out["heldout_nll"] = -mean_token_logprob(
            model, data.eval, pad_id, mask="response", batch_size=batch_size, desc="held-out NLL")
    return out


