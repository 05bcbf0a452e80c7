"""``tasft.train(config)``: data → model → TA-SFT trainer → checkpoints → final model, metrics and card."""

from __future__ import annotations

import copy
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import outputs
from ..config import TrainConfig, to_dict, validate
from ..data import Record, Tokenized, collate, load_source, tokenize_records
from ..errors import TasftError
from ..generation.generate import GenerationSettings, generate_jsonl
from ..generation.harvest import harvest_items
from ..io_utils import ordinary_permissions, read_jsonl, write_json_atomic, write_text_atomic, write_yaml_atomic
from ..objectives import losses
from .checkpoints import last_checkpoint, run_training
from .guard import nonfinite_parameter
from .measure import mean_token_logprob
from .method_data import CONTRASTIVE_FILE
from .model_card import render_model_card

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


#: what a training run writes into its directory before its first checkpoint; an attempt that holds only these
#: (and no checkpoint, no final metrics) was abandoned and is started afresh
ATTEMPT_FILES = (outputs.MARKER, "config.yaml", "log.jsonl", "runs", f"{HARVEST_FILE}*", f"{CONTRASTIVE_FILE}*",
                 ".tasft-prepared-*", ".*.tmp")


def prepare_output_dir(path: Path, overwrite: bool, resume: bool) -> outputs.DirectoryLock | None:
    """Claim ``output_dir`` for this run and lock it (returns the lock; None on processes other than the main one).

    A new or empty directory is claimed; a non-empty one is continued only with ``resume`` (and only if it is a
    tasft run), emptied only with ``overwrite`` (and only if tasft made it for a training run:
    :func:`tasft.outputs.check_replaceable`), and an attempt abandoned before its first checkpoint — tasft's, holding
    nothing but :data:`ATTEMPT_FILES`, no process using it — is emptied with a note, so the corrected re-run of a
    failed command just works. In a distributed launch the main process alone does this; the others wait.
    """
    if overwrite and resume:
        raise TasftError("--overwrite and --resume exclude each other (replace the run, or continue it)")
    return outputs.on_main_process_first(lambda: _prepare_output_dir(path, overwrite, resume))


def _check_output_dir(path: Path, overwrite: bool, resume: bool, locked: bool = False) -> str:
    """What a run will do with ``output_dir`` — ``new``, ``resume``, ``replace`` or ``restart`` (an attempt abandoned
    before its first checkpoint) — or the one-line error why it cannot; nothing is written. ``locked``: this process
    holds the directory's lock (so it is not probed)."""
    what = "output_dir"
    if path.exists() and not path.is_dir():
        raise TasftError(f"{what} {path} exists and is not a directory")
    if not path.is_dir() or outputs.is_empty(path):
        return "new"
    if not locked and outputs.in_use(path):
        raise TasftError(f"{what} {path} is in use by another tasft process")
    kind = outputs.owner_kind(path)
    if overwrite:
        outputs.check_replaceable(path, what, "train", locked=locked)
        return "replace"
    if resume:
        if kind not in (None, "train") or kind is None and not (path / "config.yaml").is_file():
            raise TasftError(f"{what} {path} holds no tasft training run to resume")
        return "resume"
    if (kind == "train" and not (path / "metrics.json").exists() and last_checkpoint(path) is None
            and not outputs.unexpected_entries(path, ATTEMPT_FILES)):
        return "restart"
    raise TasftError(f"{what} {path} already exists (use --overwrite to replace it or --resume)")


def _prepare_output_dir(path: Path, overwrite: bool, resume: bool) -> outputs.DirectoryLock:
    what = "output_dir"
    action = _check_output_dir(path, overwrite, resume)
    lock = outputs.claim(path, "train", what)
    try:
        if action in ("replace", "restart"):
            _check_output_dir(path, overwrite, resume, locked=True)  # still so, now that this process holds it
            if action == "restart":
                log.warning("output_dir %s holds an attempt that stopped before its first checkpoint: starting "
                            "afresh", path)
            outputs.empty_owned(path, what, "train")
        if resume and action == "new":
            log.warning("--resume: %s does not exist yet, starting a new run", path)
    except BaseException:
        lock.release()
        raise
    return lock


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
    stl: list[Record] | None = None


def read_sources(cfg: TrainConfig) -> Sources:
    """Read and select every data source of a run (one-line errors for missing, malformed or empty data), the STL
    pairs included; the contrastive safety data is read to check it."""
    from .method_data import check_contrastive_data, stl_records

    harmful = None
    if cfg.harmful_data is not None:
        harmful = load_source(cfg.harmful_data, "harmful_data", need_response=not cfg.harmful_data.harvest)
    evals = load_source(cfg.eval_data, "eval_data", need_response=True) if cfg.eval_data is not None else None
    if cfg.contrastive.enabled:
        check_contrastive_data(cfg)
    return Sources(load_source(cfg.train_data, "train_data", need_response=True), harmful, evals,
                   stl_records(cfg) if cfg.method == "stl" else None)


def check_sources(cfg: TrainConfig, tokenizer, sources: Sources) -> None:
    """Tokenise what can be tokenised before the model loads, so a prompt longer than ``max_length`` (or, for a
    D_h prompt to be harvested, than the generation limit) fails first."""
    from ..generation.generate import check_prompt_lengths

    harmful = [r for r in sources.harmful or [] if r.response is not None]
    for records in (sources.train, harmful, sources.eval or [], sources.stl or []):
        if records:
            tokenize_records(tokenizer, records, cfg.max_length, cfg.long_prompt)
    to_harvest = [r for r in sources.harmful or [] if r.response is None]
    if to_harvest:
        check_prompt_lengths(tokenizer, harvest_items(to_harvest), GenerationSettings().max_prompt_tokens)


def load_datasets(cfg: TrainConfig, tokenizer, model, out_dir: Path, sources: Sources | None = None) -> Datasets:
    """Select and tokenise D_u (+ STL or contrastive pairs), D_h (harvesting missing responses when asked) and the
    held-out split (``sources``: as read by :func:`read_sources`, read here when None)."""
    from .method_data import contrastive_records, stl_records

    sources = sources or read_sources(cfg)
    train_records = sources.train
    stats: dict = {"train_source_records": len(train_records)}
    harmful_records = sources.harmful
    if harmful_records is not None and cfg.harmful_data.harvest:
        harmful_records = _harvest_missing(cfg, harmful_records, model, tokenizer, out_dir)
    if cfg.method == "stl":
        extra = sources.stl if sources.stl is not None else stl_records(cfg)
        stats["stl_examples"] = len(extra)
        train_records = train_records + extra
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


#: config attributes that mark a mixture-of-experts model (experts a step does not route to get no gradient)
MOE_CONFIG_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")


def find_unused_parameters(cfg: TrainConfig, model) -> bool | None:
    """DDP's per-step search of the autograd graph for parameters without a gradient: ``cfg`` wins when set;
    otherwise off for sft / stl / ta-sft on dense models (their losses reach every trainable parameter every
    step), and transformers' default (None) for kto and for mixture-of-experts models."""
    if cfg.ddp_find_unused_parameters is not None:
        return cfg.ddp_find_unused_parameters
    config = getattr(model, "config", None)
    if cfg.method == "kto" or any(getattr(config, key, None) for key in MOE_CONFIG_KEYS):
        return None
    return False


def _training_kwargs(cfg: TrainConfig, out_dir: Path, model) -> dict:
    """``TrainingArguments`` keywords shared by every method (KTO adds its own on top)."""
    report_to = [r for r in cfg.report_to if r != "none"]
    if "tensorboard" in report_to:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            report_to.remove("tensorboard")
    return dict(
        output_dir=str(out_dir),
        max_steps=cfg.max_steps,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps,
        lr_scheduler_type=cfg.lr_scheduler,
        max_grad_norm=cfg.max_grad_norm,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=report_to or "none",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        bf16=cfg.dtype == "bfloat16" and torch.cuda.is_available(),
        ddp_find_unused_parameters=find_unused_parameters(cfg, model),
    )


def _tasft_trainer(cfg: TrainConfig, model, tokenizer, data: Datasets, out_dir: Path, callbacks: list):
    """The TA-SFT trainer for ``sft``, ``stl`` (both: NLL only) and ``ta-sft`` (NLL + λ·penalty)."""
    from transformers import TrainingArguments

    from ..models import token_embeddings
    from .trainer import TasftTrainer

    pad_id = tokenizer.pad_token_id
    ta_sft = cfg.method == "ta-sft"
    normalized = losses.normalize_embeddings(token_embeddings(model, cfg.embedding_source)) if ta_sft else None
    ref_model = None
    if ta_sft and cfg.target == "soft":
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    args = TrainingArguments(**_training_kwargs(cfg, out_dir, model), per_device_train_batch_size=cfg.batch_size)
    return TasftTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        data_collator=lambda batch: collate_train(batch, pad_id),
        processing_class=tokenizer,
        callbacks=callbacks,
        method="ta-sft" if ta_sft else "sft",
        penalty=cfg.penalty,
        lam=cfg.lambda_,
        harmful=data.harmful if ta_sft else None,
        harmful_batch_size=cfg.harmful_batch_size,
        pad_id=pad_id,
        normalized_embeddings=normalized,
        bound_constant=cfg.bound_constant,
        ref_model=ref_model,
        soft_top_k=cfg.soft_top_k,
        penalty_first_tokens=cfg.penalty_first_tokens,
        harmful_seed=cfg.seed,
        loss_chunk_size=cfg.loss_chunk_size,
    )


def method_summary(cfg: TrainConfig) -> dict:
    """What ``metrics.json`` and the model card say about the objective."""
    out = {"method": cfg.method,
           "penalty": cfg.penalty if cfg.method == "ta-sft" else None,
           "lambda": cfg.lambda_ if cfg.method == "ta-sft" else 0.0,
           "bound_constant": cfg.bound_constant,
           "target": cfg.target,
           "contrastive": cfg.contrastive.enabled}
    if cfg.method == "stl":
        out["stl"] = {"examples": cfg.stl.examples, "seed": cfg.seed if cfg.stl.seed is None else cfg.stl.seed}
    return out


def train(cfg: TrainConfig, overwrite: bool = False, resume: bool = False, progress: bool = True) -> dict:
    """Run one training job end to end; returns the metrics written to ``metrics.json``."""
    from ..models import check_loadable, load_tokenizer

    validate(cfg)
    out_dir = Path(cfg.output_dir).expanduser()
    if overwrite and resume:
        raise TasftError("--overwrite and --resume exclude each other (replace the run, or continue it)")
    if Path(cfg.model).expanduser().is_dir() and outputs.contains(out_dir, Path(cfg.model)):
        raise TasftError(f"output_dir {out_dir} would hold the starting model {cfg.model}: choose another directory")
    _distributed_cpu_env()
    if _is_main_process():  # bad input fails before anything is written: the directory, the model, the data
        _check_output_dir(out_dir, overwrite, resume)
    started, wall_started = time.perf_counter(), time.time() - 1.0
    check_loadable(cfg.model, cfg.trust_remote_code)
    tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
    sources = read_sources(cfg)
    check_sources(cfg, tokenizer, sources)
    lock = prepare_output_dir(out_dir, overwrite, resume)
    try:
        return _train(cfg, out_dir, resume, progress, tokenizer, sources, started, wall_started)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: TrainConfig, out_dir: Path, resume: bool, progress: bool, tokenizer, sources: Sources,
           started: float, wall_started: float) -> dict:
    from transformers import set_seed

    from ..models import add_lora, load_model
    from .trainer import JsonlLogCallback

    write_yaml_atomic(out_dir / "config.yaml", to_dict(cfg))
    set_seed(cfg.seed)
    model = load_model(cfg.model, cfg.dtype, cfg.trust_remote_code)
    data = load_datasets(cfg, tokenizer, model, out_dir, sources)
    pad_id = tokenizer.pad_token_id

    checkpoint = last_checkpoint(out_dir, drop_incomplete=_is_main_process()) if resume else None
    before = measure_all(model, data, pad_id, cfg.eval_batch_size) if cfg.measure else {}
    if cfg.lora is not None:
        model = add_lora(model, cfg.lora)
        for peft_cfg in model.peft_config.values():  # name the base portably (alias or id, not a cache path)
            peft_cfg.base_model_name_or_path = cfg.model
    model.train()

    callbacks = [JsonlLogCallback(out_dir / "log.jsonl")]
    extra: dict = {}
    if cfg.method == "kto":
        from ..methods.kto import build_kto_trainer, tokens_seen

        trainer, extra["kto"] = build_kto_trainer(cfg, model, tokenizer, data.train_records, data.harmful_records,
                                                  _training_kwargs(cfg, out_dir, model), callbacks)
    else:
        trainer = _tasft_trainer(cfg, model, tokenizer, data, out_dir, callbacks)
    if not progress:
        trainer.args.disable_tqdm = True
    trainer.set_guard(cfg.guard.collapse_steps, cfg.guard.min_grad_norm)
    if checkpoint is not None and hasattr(trainer, "restore_run_totals"):
        trainer.restore_run_totals(checkpoint)
    train_start = time.perf_counter()
    result = run_training(trainer, checkpoint, cfg.max_steps)
    train_seconds = time.perf_counter() - train_start
    if cfg.method == "kto":  # TRL counts tokens over the whole run; the loss: the mean of every logged one
        tokens = recent = tokens_seen(trainer)
        logged = [r["loss"] for r in trainer.state.log_history if "loss" in r]
        mean_loss = sum(logged) / len(logged) if logged else float(result.training_loss)
    else:
        totals, recent = trainer.run_totals(), trainer.tokens_processed
        tokens = totals["tokens"]
        mean_loss = totals["loss_sum"] / totals["micro_steps"] if totals["micro_steps"] else float(result.training_loss)

    model.eval()
    after = measure_all(model, data, pad_id, cfg.eval_batch_size) if cfg.measure else {}
    metrics = {
        **method_summary(cfg),
        **extra,
        "model": cfg.model,
        "seed": cfg.seed,
        "steps": int(result.global_step),
        "resumed_from": checkpoint,
        "data": data.stats,
        "before": before,
        "after": after,
        "train_seconds": round(train_seconds, 2),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "train_tokens": tokens,  # the whole run, across resumes (this process)
        "tokens_per_second": round(recent / max(train_seconds, 1e-9), 1) if recent else None,  # this invocation
        "final_train_loss": mean_loss,  # mean training loss over the whole run
    }
    bad = nonfinite_parameter(model)
    if bad is not None:
        raise trainer.divergence_error(int(result.global_step), f"parameter {bad} is not finite after the last step")
    if trainer.is_world_process_zero():
        trainer.save_model(str(out_dir))
        tokenizer.save_pretrained(str(out_dir))
        write_json_atomic(out_dir / "metrics.json", metrics)
        write_text_atomic(out_dir / "README.md", render_model_card(cfg, metrics))
        if not cfg.keep_checkpoints:
            for ckpt in out_dir.glob("checkpoint-*"):
                shutil.rmtree(ckpt, ignore_errors=True)
        for path in out_dir.rglob("*"):  # transformers writes weights via private temp files (0600): this run's
            if path.is_file() and path.stat().st_mode & 0o777 == 0o600 and path.stat().st_mtime >= wall_started:
                ordinary_permissions(path)
    return metrics


def _distributed_cpu_env() -> None:
    """A distributed launch (``WORLD_SIZE`` > 1) on a machine without CUDA: tell accelerate and the Trainer to set
    up a CPU (gloo) process group — ``torchrun`` and ``accelerate launch --multi_gpu`` do not say so themselves."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "ACCELERATE_USE_CPU" not in os.environ \
            and not torch.cuda.is_available():
        os.environ["ACCELERATE_USE_CPU"] = "true"


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def collate_train(batch: list[Tokenized], pad_id: int) -> dict[str, torch.Tensor]:
    return collate(batch, pad_id, mask="response")
