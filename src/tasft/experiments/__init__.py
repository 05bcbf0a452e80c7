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

Outputs: ``results.csv`` (one row per point and seed, each metric with its 95% interval ``_lo``/``_hi``),
``results.md`` (per series and x: the mean over seeds [95% interval over prompts, and seeds where there are several],
then each point's paired difference to the ``reference`` series on the same prompts), ``paired.json`` (those
differences with McNemar's p), one PNG per entry of ``plots`` (error bars = the intervals) and ``experiment.json``
(the resolved experiment); ``tasft report DIR`` renders them.
"""

from .runner import run_experiment, run_point
from .study import STUDIES, ExperimentConfig, load_experiment, plan

__all__ = ["STUDIES", "ExperimentConfig", "load_experiment", "plan", "run_experiment", "run_point"]
