"""Comparing resolved run configs: whether a finished or interrupted run was made with the settings a command now
gives it (resume, shared points, restored points). Settings a config written by an older tasft lacks take today's
defaults, settings that cannot affect the run are left out, and a moved project's absolute paths are the same file.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .config import DataSource, TrainConfig, to_dict
from .errors import TasftError
from .methods import METHODS

#: settings that decide only where a run writes and which of its files it keeps, never its weights nor its
#: numbers: a finished run is the same run under any value of them
OUTPUT_KEYS = ("output_dir", "save_total_limit", "keep_checkpoints", "report_to")
#: settings a resumed run may change besides those: how long it runs, how often it saves and logs, what it measures
RESUMABLE_KEYS = (*OUTPUT_KEYS, "max_steps", "save_steps", "logging_steps", "eval_batch_size", "measure",
                  "log_heldout_nll")


def inert_settings(config: dict) -> set[str]:
    """The top-level settings of a resolved run config (plain data) that cannot affect its run given its other
    settings, so that a change of their value, or of their default, is not a change of the run: the in-run
    harvest's answer length when D_h is not harvested in the run."""
    harmful = config.get("harmful_data")
    return set() if isinstance(harmful, dict) and harmful.get("harvest") else {"harvest_max_new_tokens"}


def _plain(data):
    """Config data as YAML would read it back (tuples → lists, …): what two configs are compared as."""
    return yaml.safe_load(yaml.safe_dump(data))


def comparable(config: dict) -> dict:
    """A resolved training config as plain YAML data, without the settings of where it writes and what it keeps
    (:data:`OUTPUT_KEYS`); settings a config written by an older tasft lacks take today's defaults (so adding a
    setting does not orphan the runs already made), and settings that cannot affect the run (:func:`inert_settings`)
    are left out."""

    data = {k: v for k, v in _plain(config).items() if k not in OUTPUT_KEYS}
    defaults = {k: v for k, v in _plain(to_dict(TrainConfig())).items() if k not in OUTPUT_KEYS}
    source = _plain(to_dict(DataSource(path="")))
    for key, value in defaults.items():
        data.setdefault(key, value)
    for key in ("train_data", "harmful_data", "eval_data"):
        if isinstance(data.get(key), dict):
            data[key] = {**source, **data[key]}
    for method in METHODS.values():  # a method's block: its settings' defaults under what was written
        block = method.Settings.BLOCK if method.Settings is not None else None
        if block is not None and isinstance(data.get(block), dict):
            data[block] = {**_plain(to_dict(method.Settings())), **data[block]}
    for key in inert_settings(data):
        data.pop(key, None)
    return data


def config_changes(saved: dict, new: dict, allowed: tuple[str, ...] = ()) -> list[str]:
    """The settings in which two resolved configs differ, as ``key: old → new`` (dotted keys; top-level ``allowed``
    keys are ignored)."""
    a, b = comparable(saved), comparable(new)
    changes: list[str] = []

    def walk(x, y, prefix: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for key in sorted(set(x) | set(y), key=str):
                if not prefix and key in allowed:
                    continue
                walk(x.get(key), y.get(key), f"{prefix}{key}.")
        elif x != y and not relocated(x, y):
            changes.append(f"{prefix[:-1]}: {x!r} → {y!r}")

    walk(a, b, "")
    return changes


def relocated(old, new) -> bool:
    """Whether two absolute paths name the same file of a project that moved (a clone elsewhere, another worktree):
    they end in the same directory and file name (``/work/grid/runs/experiments/pool.jsonl`` and
    ``/home/me/tasft/runs/experiments/pool.jsonl``). The file's bytes are compared where the run recorded them
    (``inputs.json``: :func:`tasft.training.run_dir.check_same_inputs`)."""
    if not (isinstance(old, str) and isinstance(new, str) and old.startswith("/") and new.startswith("/")):
        return False
    a, b = Path(old).parts, Path(new).parts
    return len(a) > 2 and len(b) > 2 and a[-2:] == b[-2:]


def saved_config_changes(run_dir: Path, new: dict, allowed: tuple[str, ...] = ()) -> str | None:
    """How the settings saved in ``run_dir/config.yaml`` differ from ``new`` (:func:`config_changes`), as one
    phrase naming at most three (``None`` when the same, or when the run saved none); an unreadable file is an
    error, since then nobody can tell."""
    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        return None
    try:
        saved = yaml.safe_load(saved_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        saved = None
    if not isinstance(saved, dict):
        raise TasftError(f"{saved_file}: unreadable, so nobody can tell which settings the run was made with "
                         "(move the run away, or replace it)")
    changes = config_changes(saved, new, allowed)
    if not changes:
        return None
    more = f" and {len(changes) - 3} more" if len(changes) > 3 else ""
    return "; ".join(changes[:3]) + more
