"""Peak resident memory of this process, for ``metrics.json`` (``peak_rss_gib``): the high-water mark of the
resident set since :func:`reset_peak_rss` (Linux's ``VmHWM`` after writing ``5`` to ``/proc/self/clear_refs``),
so a training run or an evaluation reports its own peak even when an experiment runs many in one process.
Where the kernel cannot reset it (other systems), the process's lifetime peak (``ru_maxrss``) is reported and
``peak_rss_scope`` says ``process``."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")
_reset_done = False


def reset_peak_rss() -> bool:
    """Restart the high-water mark at the current resident set; False where the system does not allow it."""
    global _reset_done
    try:
        _CLEAR.write_text("5")
    except OSError:
        return False
    _reset_done = True
    return True


def peak_rss_bytes() -> int:
    """The resident set's high-water mark in bytes (since the last reset where the system allows one)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # the kernel writes kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, kB elsewhere


def peak_rss_fields() -> dict:
    """``{"peak_rss_gib", "peak_rss_scope"}`` for a metrics file (scope: ``run`` after a reset, else ``process``)."""
    return {"peak_rss_gib": round(peak_rss_bytes() / 2**30, 3), "peak_rss_scope": "run" if _reset_done else "process"}
