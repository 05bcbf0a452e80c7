"""A training run's output directory: what a run may do with it (new, resume, replace, restart an abandoned
attempt), done by the main process under the directory's lock (:mod:`tasft.outputs`)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from .. import outputs
from ..config import TrainConfig, to_dict
from ..errors import TasftError
from ..io_utils import sha256_file
from ..methods import get_method
from ..run_changes import RESUMABLE_KEYS, saved_config_changes
from .checkpoints import TORN_PREFIX, last_checkpoint
from .contrastive import CONTRASTIVE_FILE
from .datasets import HARVEST_FILE

log = logging.getLogger(__name__)


INPUTS_FILE = "inputs.json"  # what a run was made from: each input file's SHA-256, each model directory's weights
#: what a training run writes into its directory before its first checkpoint; an attempt that holds only these
#: (and no checkpoint, no final metrics) was abandoned and is started afresh
ATTEMPT_FILES = (outputs.MARKER, "config.yaml", INPUTS_FILE, "log.jsonl", "runs", f"{HARVEST_FILE}*",
                 f"{CONTRASTIVE_FILE}*", ".tasft-prepared-*", ".*.tmp")
#: checkpoints an attempt set aside (diverged, torn): they do not block the restart of an attempt that has no good
#: checkpoint, and the restart keeps them (to inspect; ``--overwrite`` removes them)
SET_ASIDE = ("diverged-checkpoint-*", f"{TORN_PREFIX}checkpoint-*")


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
    """What a run will do with ``output_dir`` — ``new``, ``resume``, ``finished`` (resumed, but it finished and kept
    no checkpoint: :func:`finished_run`), ``replace`` or ``restart`` (an attempt abandoned before its first
    checkpoint) — or the one-line error why it cannot; nothing is written. ``locked``: this process
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
        return "finished" if (path / "metrics.json").exists() and last_checkpoint(path) is None else "resume"
    if (kind == "train" and not (path / "metrics.json").exists() and last_checkpoint(path) is None
            and not outputs.unexpected_entries(path, ATTEMPT_FILES + SET_ASIDE)):
        return "restart"
    raise TasftError(f"{what} {path} already exists (use --overwrite to replace it or --resume)")


def _prepare_output_dir(path: Path, overwrite: bool, resume: bool) -> outputs.DirectoryLock:
    what = "output_dir"
    action = _check_output_dir(path, overwrite, resume)
    lock = outputs.claim(path, "train", what)
    try:
        if action in ("replace", "restart"):
            _check_output_dir(path, overwrite, resume, locked=True)  # still so, now that this process holds it
            kept = sorted(p.name for g in SET_ASIDE for p in path.glob(g)) if action == "restart" else []
            if action == "restart":
                log.warning("output_dir %s holds an attempt that stopped before its first checkpoint: starting "
                            "afresh%s", path, f" (its set-aside {', '.join(kept)} kept)" if kept else "")
            outputs.empty_owned(path, what, "train", keep=SET_ASIDE if action == "restart" else ())
        if resume and action == "new":
            log.warning("--resume: %s does not exist yet, starting a new run", path)
    except BaseException:
        lock.release()
        raise
    return lock


def check_same_run(path: Path, cfg: TrainConfig) -> None:
    """``--resume`` continues the run in ``path`` only under the settings it was started with (``config.yaml``)
    and from the same inputs (``inputs.json``: the files' hashes); what may change is how long it runs and what it
    saves, logs and measures (:data:`RESUMABLE_KEYS`). Anything else — another learning rate, data set, method, or
    a data file whose content changed under the same name — is a one-line error naming it, never a silent mix."""
    changes = saved_config_changes(path, to_dict(cfg), RESUMABLE_KEYS)
    if changes:
        raise TasftError(f"output_dir {path} holds a run with other settings ({changes}): --resume only continues "
                         "the same run (use another output_dir, or --overwrite)")
    check_same_inputs(path, cfg, "--resume only continues the same run (use another output_dir, or --overwrite)")


def finished_run(path: Path, cfg: TrainConfig) -> dict:
    """``--resume`` of a run that finished and kept no checkpoint (the default): its metrics when it ran the steps
    asked for — nothing to do, as for a run resumed at its last step — else the one-line error (no checkpoint to
    continue a longer run from; training it again from step 0 over the finished weights is ``--overwrite``'s)."""
    metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    if metrics.get("steps") == cfg.max_steps:
        log.info("output_dir %s: the run finished its %d steps already", path, cfg.max_steps)
        return metrics
    raise TasftError(f"output_dir {path} is a finished run of {metrics.get('steps')} steps that kept no checkpoint "
                     f"to continue to {cfg.max_steps} from (keep_checkpoints: true keeps them); use --overwrite to "
                     "train it again")


def check_same_inputs(path: Path, cfg: TrainConfig, advice: str, absent_ok: bool = False) -> None:
    """The one-line error when a file ``cfg`` reads is no longer what the run in ``path`` was made from (its
    ``inputs.json``; a run written before tasft recorded its inputs is not checked). An input the run recorded that
    is not on this machine now (a restored study's harvested D_h, say) is named as absent; ``absent_ok`` accepts
    it with a warning — for reading a finished run's results, which needs the run's record, not its inputs. An
    absent input is not checked at all: only its name in the settings is (and a moved run's paths match by their
    last two parts), so the warning says which inputs went unchecked."""
    changed, absent, paths = input_differences(path, cfg)
    if changed:
        more = f" and {len(changed) - 2} more" if len(changed) > 2 else ""
        raise TasftError(f"output_dir {path} holds a run made from other inputs ({', '.join(changed[:2])}{more} "
                         f"changed since): {advice}")
    named = ", ".join(f"{k} ({paths[k]})" for k in absent)
    if absent and not absent_ok:
        raise TasftError(f"output_dir {path}: the run's inputs {named} are not on this machine, so nobody can "
                         f"check them: {advice}")
    if absent:
        log.warning("%s: reading its recorded results; its inputs %s are not on this machine and were not checked",
                    path, named)


def input_differences(path: Path, cfg: TrainConfig, now: dict[str, str] | None = None
                      ) -> tuple[list[str], list[str], dict[str, Path]]:
    """(inputs that changed since the run in ``path`` recorded them, inputs it recorded that are not on this machine,
    every input's path) against ``cfg``'s files now (``now``: their :func:`input_hashes`, if already computed); a
    run that recorded no ``inputs.json`` has no differences. An unreadable record is a one-line error."""
    paths = run_inputs(cfg)
    saved_file = path / INPUTS_FILE
    if not saved_file.is_file():
        return [], [], paths
    try:
        saved = json.loads(saved_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise TasftError(f"{saved_file}: unreadable, so nobody can tell what the run was made from (move the run "
                         "away, or replace it)") from None
    now = input_hashes(cfg) if now is None else now
    absent = [k for k in sorted(saved) if k not in now and k in paths and not paths[k].exists()]
    changed = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k) and k not in absent]
    return changed, absent, paths


def run_inputs(cfg: TrainConfig) -> dict[str, Path]:
    """Everything a run reads from disk, by the key that names it: the starting model, its data sources (with their
    audit and exclude files), the contrastive data and the method's own files and models."""
    paths: dict[str, str] = {"the starting model": cfg.model}
    for key in ("train_data", "harmful_data", "eval_data"):
        source = getattr(cfg, key)
        if source is None:
            continue
        paths[key] = source.path
        if source.audit is not None:
            paths[f"{key}.audit"] = source.audit
        paths.update({f"{key}.exclude[{i}]": p for i, p in enumerate(source.exclude)})
    if cfg.contrastive.enabled and cfg.contrastive.safety_data:
        paths["contrastive.safety_data"] = cfg.contrastive.safety_data
    paths.update(get_method(cfg.method).input_paths(cfg))
    return {k: Path(v).expanduser() for k, v in paths.items() if isinstance(v, str) and v}


def input_hashes(cfg: TrainConfig) -> dict[str, str]:
    """What a run is made from, by input (:func:`run_inputs`): a file's SHA-256; a model directory's weights
    fingerprint (:func:`tasft.models.model_fingerprint`); another directory's files, each hashed; nothing for what
    is not on disk (an alias, a hub id, ``demo:`` data)."""
    from ..models import model_fingerprint

    out = {}
    for key, path in run_inputs(cfg).items():
        if path.is_file():
            out[key] = "sha256:" + sha256_file(path)
        elif path.is_dir():
            if (weights := model_fingerprint(str(path))) is not None:
                out[key] = "weights:" + weights
            else:
                digest = hashlib.sha256()
                for f in sorted(p for p in path.rglob("*") if p.is_file()):
                    digest.update(f"{f.relative_to(path)}\0{sha256_file(f)}\n".encode())
                out[key] = "files:" + digest.hexdigest()
    return out
