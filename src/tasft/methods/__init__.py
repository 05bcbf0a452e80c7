"""The training methods, one module each, and their registry: ``method:`` in a config names one of them.

A method (:class:`~tasft.methods.base.Method`) owns its settings block, its checks, the training records it adds,
its trainer (tasft's own loop with its D_h term, or another library's trainer) and its lines in ``metrics.json``
and the model card. A new method is one module here and one line in :data:`METHODS`.
"""

from __future__ import annotations

from ..errors import TasftError
from .base import Method, TrainerInputs
from .kto import Kto
from .npo import Npo
from .sft import Sft
from .simnpo import SimNpo
from .stl import Stl
from .ta_sft import TaSft

METHODS: dict[str, Method] = {m.name: m for m in (Sft(), TaSft(), Stl(), Kto(), Npo(), SimNpo())}


def get_method(name: str) -> Method:
    """The registered method ``name``, or the one-line error listing them."""
    if name not in METHODS:
        raise TasftError(f"method: unknown method '{name}' (choose from {', '.join(METHODS)})")
    return METHODS[name]


__all__ = ["METHODS", "Method", "TrainerInputs", "get_method"]
