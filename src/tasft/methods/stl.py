"""``method: stl`` (Safety-Tuned LLaMAs, Bianchi et al. 2024): L = NLL(D_u ∪ S) with S = ``stl.examples`` pairs
(harmful instruction → safe response) from the STL safety-only data, drawn with a seed and never a prompt of an
evaluation suite. D_h, when given, is only measured."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import TasftError
from .base import Method


@dataclass
class StlSettings:
    """``stl:`` — ``examples`` pairs drawn with ``seed`` (default: the run's seed) from ``data`` (default: the STL
    safety-only file in the shared data). STL released mixtures with 100, 300, 500, 1000, 1500 and 2000."""

    BLOCK: ClassVar[str] = "stl"
    PATH_FIELDS: ClassVar[tuple[str, ...]] = ("data",)

    examples: int = 100
    data: str | None = None
    seed: int | None = None


class Stl(Method):
    name = "stl"
    Settings = StlSettings
    objective = "NLL(D_u ∪ S), S = stl.examples STL safety pairs (harmful instruction → safe response)"

    def check(self, cfg) -> None:
        from ..config_checks import positive

        positive(cfg.method_settings, "stl.", "examples")

    def extra_records(self, cfg):
        """``stl.examples`` safety pairs: evaluation prompts removed, then a seeded shuffle, then the first N."""
        from ..config import DataSource
        from ..data.records import load_source, prompt_key
        from ..suites import evaluation_prompts, safety_file

        s = cfg.method_settings
        seed = cfg.seed if s.seed is None else s.seed
        src = DataSource(safety_file(cfg.data_dir, s.data), shuffle_seed=seed, missing_response="skip")
        banned = evaluation_prompts(cfg.data_dir)
        pool = [r for r in load_source(src, "stl.data", need_response=True) if prompt_key(r.prompt_text) not in banned]
        if len(pool) < s.examples:
            raise TasftError(f"stl.examples: asked for {s.examples} safety pairs, {src.path} has {len(pool)} "
                             "outside the evaluation suites")
        return pool[: s.examples], {"stl_examples": s.examples}

    def summary(self, cfg) -> dict:
        s = cfg.method_settings
        return {"stl": {"examples": s.examples, "seed": cfg.seed if s.seed is None else s.seed}}

    def label(self, cfg) -> str:
        return f"stl N={cfg.method_settings.examples}"

    def describe(self, cfg, metrics) -> str:
        return f"STL: NLL on D_u plus {cfg.method_settings.examples} safety (harmful instruction → safe response) pairs"
