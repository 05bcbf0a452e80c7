"""What an evaluation is asked to do (:class:`EvalSettings`): the model, the output directory, the suites and their
limits, the judges and the decoding — and the one-line checks of those settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import TasftError
from ..generation.generate import GenerationSettings
from ..scoring import judges
from ..scoring.deberta import DEFAULT_MODEL as DEBERTA_MODEL


@dataclass
class EvalSettings:
    model: str
    out: str
    suites: str = "all"
    limit: int | None = None
    suite_limits: dict[str, int] = field(default_factory=dict)  # per-suite overrides of ``limit``
    data_dir: str | None = None
    harm_scorer: str = "local"
    scorer_path: str | None = None
    deberta_model: str = DEBERTA_MODEL
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    overwrite: bool = False
    spec: str | None = None  # the named spec (tasft.evaluation.specs) the suites and limits came from
    attacks: str | None = None  # jailbreak templates (all, or names) wrapping every harm suite given (tasft.suites)


def from_spec(name: str, **kwargs) -> EvalSettings:
    """Settings whose suites and limits are the named spec's (``full``, ``quick``)."""
    from .specs import get_spec

    spec = get_spec(name)
    return EvalSettings(suites=spec.suites, limit=spec.limit, suite_limits=dict(spec.suite_limits), spec=name,
                        **kwargs)


def check_settings(settings: EvalSettings) -> None:
    """One-line errors for impossible settings, before anything is loaded or written."""
    if settings.limit is not None and settings.limit < 1:
        raise TasftError(f"--limit: must be >= 1, got {settings.limit}")
    for name, value in settings.suite_limits.items():
        if value < 1:
            raise TasftError(f"--suite-limit {name}: must be >= 1, got {value}")
    judges.check_judge_name(settings.harm_scorer)
    settings.generation.check()
