"""Named evaluation specs: which suites, how many prompts of each — one name for ``tasft evaluate --spec`` and an
experiment's ``evaluate: {spec: ...}``.

- ``full`` — every prompt of the paper's four harm suites (418), all 250 XSTest safe prompts (over-refusal) and
  100 AlpacaEval held-out prompts with reference answers (quality): 768 prompts, enough for ±0.05 on a rate;
- ``quick`` — 25 prompts of each of those suites (the studies' old default): a smoke test, not a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import TasftError
from ..suites import SPEC_SUITES, with_role


@dataclass(frozen=True)
class EvalSpecDef:
    suites: str
    limit: int | None = None
    suite_limits: dict[str, int] = field(default_factory=dict)
    description: str = ""


SPECS: dict[str, EvalSpecDef] = {
    "full": EvalSpecDef(SPEC_SUITES, None, {with_role("held-out quality")[0]: 100},
                        "418 harm + 250 XSTest safe + 100 AlpacaEval held-out prompts"),
    "quick": EvalSpecDef(SPEC_SUITES, 25, {},
                         "25 prompts of each of the full spec's suites"),
}


def get_spec(name: str) -> EvalSpecDef:
    if name not in SPECS:
        raise TasftError(f"unknown evaluation spec '{name}' (choose from {', '.join(SPECS)})")
    return SPECS[name]
