"""tasft — Toxicity-Avoiding SFT: data-efficient safety fine-tuning of causal LMs.

Public API: :func:`train` (one run from a :class:`TrainConfig`), :func:`load_train_config`, the TRL-style
:class:`TASFTConfig` / :class:`TASFTTrainer` (:mod:`tasft.training.api`), :func:`harvest`,
:func:`generate_texts`, and :mod:`tasft.objectives.losses` (the penalties).
"""

from .config import DataSource, LoraSettings, TrainConfig
from .errors import TasftError

__version__ = "0.1.0"


def train(config: TrainConfig, overwrite: bool = False, resume: bool = False, progress: bool = True) -> dict:
    """Run one training job (see :func:`tasft.pipeline.train`); returns its metrics."""
    from .training.pipeline import train as _train

    return _train(config, overwrite=overwrite, resume=resume, progress=progress)


def load_train_config(path: str | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """A validated :class:`TrainConfig` from a YAML file and ``key=value`` overrides (see :mod:`tasft.run_config`)."""
    from .run_config import load_train_config as _load

    return _load(path, overrides)


def __getattr__(name: str):
    if name in ("harvest", "HarvestSettings"):
        from .generation import harvest as _h

        return getattr(_h, name)
    if name in ("TASFTConfig", "TASFTTrainer"):
        from .training import api as _api

        return getattr(_api, name)
    if name in ("generate_texts", "GenerationSettings"):
        from .generation import generate as _g

        return getattr(_g, name)
    raise AttributeError(name)


__all__ = ["DataSource", "GenerationSettings", "HarvestSettings", "LoraSettings", "TASFTConfig", "TASFTTrainer",
           "TasftError", "TrainConfig",
           "generate_texts", "harvest", "load_train_config", "train"]
