"""Atomic file writes: every file a run writes goes to a temp name first and is renamed into place."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml


def ordinary_permissions(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a temp file (``mkstemp``: 0600) or temp folder (``mkdtemp``: 0700) the mode an ordinary ``open`` or
    ``mkdir`` would: 0666 / 0777 less the umask — outputs are shared like any other file the user writes."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same directory and ``os.replace`` (never half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        ordinary_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`write_bytes_atomic`)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def strict_json(obj: Any) -> Any:
    """``obj`` with every NaN / ±inf float replaced by None: JSON has no such numbers (Python's ``NaN`` token is
    not JSON, and strict readers reject the whole file), and a missing number is what they mean."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs) -> str:
    """``json.dumps`` that always writes strict JSON (see :func:`strict_json`)."""
    return json.dumps(strict_json(obj), allow_nan=False, default=str, **kwargs)


def json_text(obj: Any) -> str:
    """How tasft writes a JSON file: strict JSON, indented by 2, a final newline."""
    return dumps(obj, indent=2, sort_keys=False) + "\n"


def jsonl_text(rows: list[dict]) -> str:
    """How tasft writes a JSONL file: one strict JSON object per line, non-ASCII kept."""
    return "".join(dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(path, json_text(obj))


def write_jsonl_atomic(path: str | os.PathLike, rows: list[dict]) -> Path:
    """One JSON object per line (UTF-8, non-ASCII kept), written atomically."""
    return write_text_atomic(path, jsonl_text(rows))


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json_object(path: str | os.PathLike) -> dict:
    """A JSON file's object, or {} when it is missing, unreadable or not an object (for optional records)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The objects of a JSONL file written by this package (blank lines skipped)."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_yaml_atomic(path: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(path, yaml.safe_dump(obj, sort_keys=False))
