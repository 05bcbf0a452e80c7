"""What every judge returns (:class:`Verdicts`) and what a judge is (:class:`Judge`): the interface of
:mod:`.judges`' registry, in a module of its own so that a judge's module needs nothing else from the registry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass
class Verdicts:
    """A judge's answer for N pairs."""

    scores: list[float]
    flags: list[bool | None]
    threshold: float | None


class Judge(Protocol):
    name: str
    threshold: float | None

    def judge(self, prompts: Sequence[str], responses: Sequence[str], progress: bool = True) -> Verdicts: ...
