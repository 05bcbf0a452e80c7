"""A training run's output directory: what a run may do with it (new, resume, replace, restart an abandoned
attempt), done by the main process under the directory's lock (:mod:`tasft.outputs`)."""

from __future__ import annotations

import logging
from pathlib import Path

from .. import outputs
from ..config import TrainConfig, to_dict
from ..errors import TasftError
from ..run_config import RESUMABLE_KEYS, saved_config_changes
from .checkpoints import last_checkpoint
from .contrastive import CONTRASTIVE_FILE
from .datasets import HARVEST_FILE

log = logging.getLogger(__name__)


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


def check_same_run(path: Path, cfg: TrainConfig) -> None:
    """``--resume`` continues the run in ``path`` only under the settings it was started with (``config.yaml``);
    what may change is how long it runs and what it saves, logs and measures (:data:`RESUMABLE_KEYS`). Anything else
    — another learning rate, data set, method — is a one-line error naming the settings, never a silent mix."""
    changes = saved_config_changes(path, to_dict(cfg), RESUMABLE_KEYS)
    if changes:
        raise TasftError(f"output_dir {path} holds a run with other settings ({changes}): --resume only continues "
                         "the same run (use another output_dir, or --overwrite)")
