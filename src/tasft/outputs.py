"""Output directories that tasft owns: claimed with a marker file, replaced only when marked, never a user's folder.

Every directory a command writes its results into (a training run's ``output_dir``, an evaluation's ``--out``)
gets the marker file :data:`MARKER` when tasft creates (or first writes into) it. ``--overwrite`` removes a
directory only when

* it carries the marker (tasft made it), and
* it is not the filesystem root, the home directory, the current directory, a parent of any of these, a git
  working tree, or the folder this package is installed from.

Anything else is refused with a one-line :class:`TasftError`, so no spelling of a path (``.``, ``''``, ``..``,
``~``, ``/``, a symlink) can reach ``rmtree`` on a folder tasft did not create.

While a command writes into a directory it holds an advisory lock on the marker (``flock``; released by the
kernel when the process dies, ``kill -9`` included), so a second command can tell a directory in use from an
attempt that was abandoned.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from .errors import TasftError

MARKER = ".tasft-output"
PREPARE_TIMEOUT_S = 1800.0  # how long other ranks wait for rank 0 to prepare a directory
_PACKAGE_DIR = Path(__file__).resolve().parent


def _protected(path: Path) -> str | None:
    """Why ``path`` must never be removed, or None."""
    resolved = path.resolve()
    if resolved == Path(resolved.anchor):
        return "the filesystem root"
    for name, place in (("the current directory", Path.cwd()), ("the home directory", Path.home())):
        place = place.resolve()
        if resolved == place:
            return name
        if resolved in place.parents:
            return f"a parent of {name}"
    if resolved == _PACKAGE_DIR or resolved in _PACKAGE_DIR.parents:
        return "a folder holding the tasft package itself"
    if (resolved / ".git").exists():
        return "a git working tree"
    return None


def is_owned(path: Path) -> bool:
    """Whether tasft created ``path`` (it holds the marker file)."""
    return (Path(path) / MARKER).is_file()


def _os_error(what: str, path: Path, exc: OSError) -> TasftError:
    return TasftError(f"{what} {path}: cannot write there ({exc.strerror or exc.__class__.__name__})")


def claim(path: Path, kind: str, what: str) -> None:
    """Create ``path`` (parents too) if needed and mark it as tasft's; an unwritable place is a one-line error."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not is_owned(path):
            info = {"created_by": "tasft", "kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            (path / MARKER).write_text(json.dumps(info) + "\n", encoding="utf-8")
    except OSError as exc:
        raise _os_error(what, path, exc) from None


def remove_owned(path: Path, what: str) -> None:
    """``--overwrite``: delete ``path`` only if tasft created it and it is no protected place (module docstring)."""
    path = Path(path)
    check_removable(path, what)
    try:
        shutil.rmtree(path)
    except OSError as exc:
        raise TasftError(f"{what} {path}: cannot remove it ({exc.strerror or exc.__class__.__name__})") from None


def check_removable(path: Path, what: str) -> None:
    """The one-line error :func:`remove_owned` would raise for ``path``, without removing anything."""
    path = Path(path)
    if path.is_symlink():
        raise TasftError(f"{what} {path} is a symbolic link: tasft never deletes through one (choose another path)")
    reason = _protected(path)
    if reason is not None:
        raise TasftError(f"{what} {path} is {reason}: --overwrite never deletes it (choose a new directory)")
    if not is_owned(path):
        raise TasftError(f"{what} {path} was not created by tasft (no {MARKER} file): --overwrite only replaces "
                         "tasft's own output (remove it yourself, or choose another directory)")
    if in_use(path):
        raise TasftError(f"{what} {path} is in use by another tasft process")


def is_empty(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


class DirectoryLock:
    """An advisory exclusive lock on a directory's marker file, held while a command writes into it."""

    def __init__(self, path: Path):
        self.path = Path(path) / MARKER
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock; False when another process holds it (no locking on platforms without ``fcntl``)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def in_use(path: Path) -> bool:
    """Whether another process holds ``path``'s lock right now."""
    if not is_owned(path):
        return False
    lock = DirectoryLock(path)
    if not lock.acquire():
        return True
    lock.release()
    return False


def _prepared_marker(path: Path) -> Path:
    run = os.environ.get("TORCHELASTIC_RUN_ID") or os.environ.get("MASTER_PORT", "run")
    return Path(path) / f".tasft-prepared-{run}"


def on_main_process_first(path: Path, prepare):
    """``prepare()`` (which claims ``path``) in a single-process run, or on rank 0 of a distributed launch
    (``WORLD_SIZE`` > 1) while the other ranks wait for its mark in ``path`` (returning None): otherwise a rank
    that creates the directory first would make rank 0 refuse it as "already exists"."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return prepare()
    import atexit

    marker, rank = _prepared_marker(path), int(os.environ.get("RANK", "0"))
    if rank == 0:
        result = prepare()
        marker.touch()
        atexit.register(marker.unlink, missing_ok=True)
        return result
    timeout_s = PREPARE_TIMEOUT_S
    deadline = time.monotonic() + timeout_s
    while not marker.exists():
        if time.monotonic() > deadline:
            raise TasftError(f"rank {rank}: rank 0 did not prepare {path} within {timeout_s:.0f} s")
        time.sleep(0.2)
    return None
