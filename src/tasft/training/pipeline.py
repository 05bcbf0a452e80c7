"""``tasft.train(config)``: check everything → claim the run directory → data → model → the method's trainer →
checkpoints → final model, ``metrics.json`` and model card. No method-specific branch: the method
(:mod:`tasft.methods`) adds its records, builds its trainer and writes its lines."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import torch

from .. import outputs
from ..config import TrainConfig, to_dict
from ..errors import TasftError
from ..io_utils import ordinary_permissions, write_json_atomic, write_text_atomic, write_yaml_atomic
from ..memory import peak_rss_fields, reset_peak_rss
from ..methods import TrainerInputs, get_method
from ..run_config import validate
from .api import loop_trainer
from .args import training_kwargs
from .checkpoints import disk_full_error, last_checkpoint, no_space, run_training
from .datasets import Sources, check_sources, load_datasets, measure_all, read_sources
from .guard import nonfinite_parameter
from .model_card import render_model_card
from .run_dir import (
    INPUTS_FILE,
    _check_output_dir,
    check_same_run,
    finished_run,
    input_hashes,
    prepare_output_dir,
    run_inputs,
)

log = logging.getLogger(__name__)


def method_summary(cfg: TrainConfig) -> dict:
    """What ``metrics.json`` and the model card say about the objective: the method, its label and settings."""
    method = get_method(cfg.method)
    return {"method": cfg.method, "label": method.label(cfg), **method.summary(cfg),
            "contrastive": cfg.contrastive.enabled}


def train(cfg: TrainConfig, overwrite: bool = False, resume: bool = False, progress: bool = True) -> dict:
    """Run one training job end to end; returns the metrics written to ``metrics.json``.

    Everything that can be checked is checked before the run writes anything: the settings, the output directory
    (never holding nor inside an input, :func:`run_inputs`; a resumed run's settings), the models, the data, the
    precision, the tokenizer against the model and the LoRA adapter against its layers. A new run that still fails
    with an error before its first checkpoint leaves no trace (a diverged one keeps what it wrote, to inspect)."""
    from ..models import check_fit, check_loadable, load_tokenizer
    from .args import check_precision
    from .guard import TrainingDiverged

    validate(cfg)
    out_dir = Path(cfg.output_dir).expanduser()
    if overwrite and resume:
        raise TasftError("--overwrite and --resume exclude each other (replace the run, or continue it)")
    _distributed_cpu_env()
    # bad input fails before anything is written: the directory (and a resumed run's settings), the model, the data
    action = _check_output_dir(out_dir, overwrite, resume) if _is_main_process() else None
    outputs.check_apart(out_dir, run_inputs(cfg), "output_dir")
    if action in ("resume", "finished"):
        check_same_run(out_dir, cfg)
    if action == "finished":
        return finished_run(out_dir, cfg)
    started, wall_started = time.perf_counter(), time.time() - 1.0
    check_precision(cfg)
    check_loadable(cfg.model, cfg.trust_remote_code)
    method = get_method(cfg.method)
    for other in method.other_models(cfg):
        check_loadable(other, cfg.trust_remote_code)
    method.check_inputs(cfg)
    tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
    check_fit(cfg.model, tokenizer, cfg.lora, cfg.trust_remote_code)
    sources = read_sources(cfg)
    check_sources(cfg, tokenizer, sources)
    created = outputs.first_missing(out_dir)
    lock = prepare_output_dir(out_dir, overwrite, resume)
    try:
        return _train(cfg, out_dir, resume, progress, tokenizer, sources, started, wall_started)
    except TasftError as exc:
        if (action in ("new", "restart", "replace") and not isinstance(exc, TrainingDiverged)
                and not (out_dir / "metrics.json").exists() and last_checkpoint(out_dir) is None
                and not list(out_dir.glob("diverged-checkpoint-*"))):
            outputs.discard_new(out_dir, created)  # nothing made: the corrected command starts where this one did
        raise
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: TrainConfig, out_dir: Path, resume: bool, progress: bool, tokenizer, sources: Sources,
           started: float, wall_started: float) -> dict:
    from transformers import set_seed

    from ..models import add_lora, load_model
    from .trainer import TRAINER_MIXINS, JsonlLogCallback

    # torn checkpoints are set aside (or, on a full disk, removed) before anything is written
    checkpoint = last_checkpoint(out_dir, drop_incomplete=_is_main_process()) if resume else None
    write_yaml_atomic(out_dir / "config.yaml", to_dict(cfg))
    inputs = input_hashes(cfg)
    write_json_atomic(out_dir / INPUTS_FILE, inputs)
    set_seed(cfg.seed)
    reset_peak_rss()
    model = load_model(cfg.model, cfg.dtype, cfg.trust_remote_code)
    data = load_datasets(cfg, tokenizer, model, out_dir, sources)
    pad_id = tokenizer.pad_token_id

    before = measure_all(model, data, pad_id, cfg.eval_batch_size) if cfg.measure else {}
    if cfg.lora is not None:
        model = add_lora(model, cfg.lora)
        for peft_cfg in model.peft_config.values():  # name the base portably (alias or id, not a cache path)
            peft_cfg.base_model_name_or_path = cfg.model
    model.train()

    callbacks = [JsonlLogCallback(out_dir / "log.jsonl")]
    if cfg.log_heldout_nll:
        from ..methods.dual import HELDOUT_FILE, HeldoutNllLog

        callbacks.append(HeldoutNllLog(data.eval, pad_id, out_dir / HELDOUT_FILE))
    method = get_method(cfg.method)
    trainer = method.build_trainer(TrainerInputs(cfg, model, tokenizer, data, training_kwargs(cfg, out_dir, model),
                                                 callbacks, out_dir, loop_trainer, TRAINER_MIXINS))
    if not progress:
        trainer.args.disable_tqdm = True
    trainer.set_guard(cfg.guard.collapse_steps, cfg.guard.min_grad_norm)
    if checkpoint is not None and hasattr(trainer, "restore_run_totals"):
        trainer.restore_run_totals(checkpoint)
    train_start = time.perf_counter()
    result = run_training(trainer, checkpoint, cfg.max_steps)
    train_seconds = time.perf_counter() - train_start
    tokens, recent, mean_loss = method.totals(trainer, result)
    # the whole run's training time: a resumed run's earlier invocations count (saved with each checkpoint)
    run_seconds = trainer.run_totals()["train_seconds"] if hasattr(trainer, "run_totals") else train_seconds

    model.eval()
    after = measure_all(model, data, pad_id, cfg.eval_batch_size) if cfg.measure else {}
    metrics = {
        **method_summary(cfg),
        **getattr(trainer, "tasft_summary", {}),
        "model": cfg.model,
        "seed": cfg.seed,
        "steps": int(result.global_step),
        "resumed_from": checkpoint,
        "data": data.stats,
        "inputs": inputs,  # each input file's SHA-256, each model directory's weights (inputs.json)
        "before": before,
        "after": after,
        "train_seconds": round(run_seconds, 2),  # the whole run, across resumes
        "train_seconds_this_invocation": round(train_seconds, 2),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "train_tokens": tokens,  # the whole run, across resumes (this process)
        "tokens_per_second": round(recent / max(train_seconds, 1e-9), 1) if recent else None,  # this invocation
        "final_train_loss": mean_loss,  # mean training loss over the whole run
        **peak_rss_fields(),  # this invocation: model, data, training and the measurements
    }
    bad = nonfinite_parameter(model)
    if bad is not None:
        raise trainer.divergence_error(int(result.global_step), f"parameter {bad} is not finite after the last step")
    if trainer.is_world_process_zero():
        from ..models import model_fingerprint

        try:
            trainer.save_model(str(out_dir))
            tokenizer.save_pretrained(str(out_dir))
        except Exception as exc:  # torch, safetensors and json each raise their own kind
            if not no_space(exc, out_dir):
                raise
            raise disk_full_error(out_dir, "the final model") from None
        # which weights these are (an evaluation records the same; a retrained run differs), kept after pruning
        metrics["model_fingerprint"] = model_fingerprint(str(out_dir))
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
