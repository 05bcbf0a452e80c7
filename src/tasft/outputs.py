"""Output directories that tasft owns: claimed with a marker file, emptied only when marked, never a user's folder.

Every directory a command writes its results into (a training run's ``output_dir``, an evaluation's ``--out``)
gets the marker file :data:`MARKER` (recording which kind of output it holds) when tasft creates it or first
writes into it. A directory is emptied (``--overwrite``, or a training attempt abandoned before its first
checkpoint) only when

* it carries the marker of the same kind (a training run never replaces an evaluation, nor the reverse),
* it holds no other tasft output (a marker further down: an evaluation written into a run's folder, a run
  training into a sub-folder), finished, abandoned or in use,
* it is not the filesystem root, the home directory, the current directory, a parent of any of these, a folder
  with a ``.git`` inside, or the folder this package is installed from, and not a symbolic link, and
* no other process holds its lock.

Anything else is refused with a one-line :class:`TasftError`, so no spelling of a path (``.``, ``''``, ``..``,
``~/``, ``/``, a symlink) can reach ``rmtree`` on a folder tasft did not create. Emptying keeps the marker, and
happens while this process holds the lock.

An output never holds, nor lies inside, an input of the command that writes it (:func:`check_apart`: the model, a
reference run, data and prompt files, suites), whatever the flags: ``--overwrite`` then cannot delete what the
command reads, and a later replacement of the input cannot delete the output.

The lock is an advisory ``flock`` on the marker, held while a command writes into the directory and released by
the kernel when the process dies (``kill -9`` included), so a second command can tell a directory in use from an
attempt that was abandoned.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import TasftError

MARKER = ".tasft-output"
KIND_NAMES = {"train": "a tasft training run", "evaluate": "a tasft evaluation", "report": "a tasft report"}
_PACKAGE_DIR = Path(__file__).resolve().parent


def _protected(path: Path) -> str | None:
    """Why ``path`` must never be emptied, or None."""
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


def owner_kind(path: Path) -> str | None:
    """The kind of output the marker records (``train`` / ``evaluate``), ``unknown`` if unreadable, None if absent."""
    marker = Path(path) / MARKER
    if not marker.is_file():
        return None
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "unknown"
    return info.get("kind", "unknown") if isinstance(info, dict) else "unknown"


def is_empty(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _os_error(what: str, path: Path, exc: OSError) -> TasftError:
    return TasftError(f"{what} {path}: cannot write there ({exc.strerror or exc.__class__.__name__})")


class DirectoryLock:
    """An advisory exclusive lock on a directory's marker file, held while a command writes into it."""

    def __init__(self, path: Path):
        self.path = Path(path) / MARKER
        self._fd: int | None = None

    def acquire(self, wait_s: float = 1.0) -> bool:
        """Take the lock, retrying for ``wait_s`` (another process may be probing it); False when another process
        holds it. No locking on platforms without ``fcntl``."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return True
            except OSError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.05)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def in_use(path: Path) -> bool:
    """Whether another process holds ``path``'s lock right now (probed with a shared lock, read-only)."""
    marker = Path(path) / MARKER
    if not marker.is_file():
        return False
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return False
    try:
        fd = os.open(marker, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def claim(path: Path, kind: str, what: str) -> DirectoryLock:
    """Create ``path`` (parents too) if needed, mark it as tasft's ``kind`` output and lock it; an unwritable place
    or a directory another process holds is a one-line error. Returns the held lock."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not is_owned(path):
            info = {"created_by": "tasft", "kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            (path / MARKER).write_text(json.dumps(info) + "\n", encoding="utf-8")
        lock = DirectoryLock(path)
        locked = lock.acquire()
    except OSError as exc:
        raise _os_error(what, path, exc) from None
    if not locked:
        raise TasftError(f"{what} {path} is in use by another tasft process")
    return lock


def nested_outputs(path: Path) -> list[Path]:
    """Other tasft outputs inside ``path`` (folders below it holding a marker), symbolic links not followed."""
    found = []
    for root, dirs, files in os.walk(path):
        if MARKER in files and Path(root) != Path(path):
            found.append(Path(root))
        dirs.sort()
    return sorted(found)


def check_apart(target: Path, inputs: dict[str, Path], what: str) -> None:
    """The one-line error when the output ``target`` holds one of the command's ``inputs`` (by the name an error
    gives it) or lies inside an input folder; inputs that do not exist (a hub id, an alias) are skipped."""
    for name, path in inputs.items():
        path = Path(path).expanduser()
        if not path.exists():
            continue
        if Path(target).expanduser().resolve() == path.resolve():
            raise TasftError(f"{what} {target} is {name}, which this command reads: choose another place for its "
                             "output")
        if contains(target, path):
            raise TasftError(f"{what} {target} holds {name} ({path}), which this command reads: choose another "
                             "place for its output")
        if path.is_dir() and contains(path, target):
            raise TasftError(f"{what} {target} lies inside {name} ({path}), which this command reads: choose a "
                             "place outside it")


def check_replaceable(path: Path, what: str, kind: str, locked: bool = False) -> None:
    """The one-line error why ``path`` must not be emptied for a new ``kind`` output (see the module docstring);
    ``locked``: this process holds its lock."""
    path = Path(path)
    if path.is_symlink():
        raise TasftError(f"{what} {path} is a symbolic link: tasft never deletes through one (choose another path)")
    reason = _protected(path)
    if reason is not None:
        raise TasftError(f"{what} {path} is {reason}: tasft never deletes it (choose a new directory)")
    owner = owner_kind(path)
    if owner is None:
        raise TasftError(f"{what} {path} was not created by tasft (no {MARKER} file): --overwrite only replaces "
                         "tasft's own output (remove it yourself, or choose another directory)")
    if owner != kind:
        raise TasftError(f"{what} {path} holds {KIND_NAMES.get(owner, 'another kind of tasft output')}, not "
                         f"{KIND_NAMES.get(kind, kind)}: it is not replaced (choose another directory)")
    if not locked and in_use(path):
        raise TasftError(f"{what} {path} is in use by another tasft process")
    if nested := nested_outputs(path):
        inner = KIND_NAMES.get(owner_kind(nested[0]) or "", "another tasft output")
        raise TasftError(f"{what} {path} holds {inner} in {nested[0]}: it is not deleted with it (move it out "
                         "first, or choose another directory)")


def first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` (itself included) that does not exist yet: what creating it makes."""
    path = Path(path).expanduser().absolute()
    missing = None
    for place in (path, *path.parents):
        if place.exists() or place.is_symlink():
            break
        missing = place
    return missing


def discard_new(path: Path, created: Path | None) -> None:
    """Undo a claim that produced nothing: remove ``created`` (:func:`first_missing` before the claim: the folders
    this command made), else empty ``path`` (it was empty before, so everything in it is this command's). Call with
    the lock held; a failure to remove is left alone."""
    try:
        if created is not None:
            shutil.rmtree(created)
            return
        for child in Path(path).iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    except OSError:
        pass


def empty_owned(path: Path, what: str, kind: str, keep: Iterable[str] = ()) -> None:
    """Delete everything in ``path`` but its marker (and the names matching the glob patterns ``keep``), after
    :func:`check_replaceable`; call with the lock held."""
    path = Path(path)
    keep = list(keep)
    check_replaceable(path, what, kind, locked=True)
    try:
        for child in path.iterdir():
            if child.name == MARKER or any(fnmatch.fnmatch(child.name, g) for g in keep):
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    except OSError as exc:
        raise TasftError(f"{what} {path}: cannot empty it ({exc.strerror or exc.__class__.__name__})") from None


def unexpected_entries(path: Path, patterns: Iterable[str]) -> list[str]:
    """Names in ``path`` that match none of the glob ``patterns`` (what tasft itself would have written there)."""
    patterns = list(patterns)
    return sorted(p.name for p in Path(path).iterdir() if not any(fnmatch.fnmatch(p.name, g) for g in patterns))


def contains(outer: Path, inner: Path) -> bool:
    """Whether ``inner`` is ``outer`` or lies inside it (both resolved)."""
    outer, inner = Path(outer).expanduser().resolve(), Path(inner).expanduser().resolve()
    return inner == outer or outer in inner.parents


def _distributed_state():
    """accelerate's process state (initialises the process group of a distributed launch)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def on_main_process_first(prepare: Callable):
    """``prepare()`` in a single-process run; in a distributed launch (``WORLD_SIZE`` > 1) on the main process only,
    the others waiting at accelerate's barrier until it is done (and returning None) — otherwise a rank that creates
    the directory first would make the main process refuse it as "already exists"."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return prepare()
    state = _distributed_state()
    result = None
    with state.main_process_first():
        if state.is_main_process:
            result = prepare()
    return result
