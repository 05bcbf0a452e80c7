"""``method: sft`` — plain supervised fine-tuning on D_u: L = NLL(D_u). D_h, when given, is only measured."""

from __future__ import annotations

from .base import Method


class Sft(Method):
    name = "sft"
    objective = "NLL(D_u)"

    def describe(self, cfg, metrics) -> str:
        return "SFT: NLL(D_u) only"
