"""Experiments — ``tasft experiment STUDY --config FILE --out DIR``: a grid of train + evaluate points,
resumable, tabulated, plotted.

An experiment file names a training config (``train_config``, relative to the experiment file) and a list of
``series``: each series fixes some training keys (``set``) and sweeps one key (``vary``) over ``values``; with
``checkpoints: true`` it instead trains once and evaluates every saved checkpoint (x = the step). A point is
(series, x, seed); its training run goes to ``DIR/runs/<slug>`` and its evaluation to ``DIR/evals/<slug>``.
A point whose ``metrics.json`` files exist is skipped, so re-running the command resumes an interrupted grid.
A series with ``starting_model: true`` evaluates the untrained starting model (the reference every curve moves from).
Studies written side by side (``results/<study>``) share points: a point whose resolved training config and
evaluation settings equal a finished point of a sibling study reuses that point's run and evaluation.

Outputs: ``results.csv`` (one row per point and seed), ``results.md`` (mean ± std over seeds per series and x),
one PNG per entry of ``plots`` and ``experiment.json`` (the resolved experiment); ``tasft report DIR`` renders them.
"""

from .runner import run_experiment, run_point
from .spec import STUDIES, ExperimentConfig, load_experiment, plan

__all__ = ["STUDIES", "ExperimentConfig", "load_experiment", "plan", "run_experiment", "run_point"]
