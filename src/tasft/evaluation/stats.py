"""Uncertainty of evaluation numbers: seeded percentile bootstrap intervals and paired tests (pure functions).

Every headline number is a mean over suites of a per-prompt mean, ``m = (1/S) Σ_s (1/n_s) Σ_i v_si`` (one suite:
S = 1), or a ratio of sums (token-weighted NLL, ``Σ_i a_i / Σ_i b_i``). Its 95% interval is the 2.5 and 97.5
percentiles of the statistic over B resamples that draw, within each suite, n_s prompts with replacement — and,
where a point has k seeds evaluated on the same prompts, first k seeds with replacement (the prompts drawn once per
resample and shared by the seeds: prompts and seeds are crossed). A paired difference of two runs on the same
prompts resamples the per-prompt differences ``d_si = v_si(run) − v_si(reference)``, which keeps the pairing.
McNemar's exact test on the discordant pairs (b = run only, c = reference only) gives ``p = min(1, 2·P(X ≤ min(b, c)))``
with X ~ Binomial(b + c, 1/2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

LEVEL = 0.95
RESAMPLES = 2000
SEED = 0

Interval = tuple[float, float]


def _as_seeds(group: Sequence) -> np.ndarray:
    """A suite's values as a (seeds, prompts) float array (a flat sequence is one seed)."""
    arr = np.asarray(group, dtype=float)
    return arr[None, :] if arr.ndim == 1 else arr


def _percentiles(stats: np.ndarray, level: float) -> Interval:
    lo, hi = np.percentile(stats, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def resampled_means(groups: Sequence[Sequence], resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """B bootstrap replicates of ``(1/S) Σ_s mean(group_s)``; each group is (prompts,) or (seeds, prompts).

    All groups must have the same number of seeds k; the seeds are resampled once per replicate for every group.
    """
    arrays = [_as_seeds(g) for g in groups]
    if not arrays or any(a.shape[1] == 0 for a in arrays):
        raise ValueError("every group needs at least one value")
    k = arrays[0].shape[0]
    if any(a.shape[0] != k for a in arrays):
        raise ValueError("every group needs the same number of seeds")
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, k, size=(resamples, k)) if k > 1 else np.zeros((resamples, 1), dtype=int)
    total = np.zeros(resamples)
    for a in arrays:
        prompts = rng.integers(0, a.shape[1], size=(resamples, a.shape[1]))
        # replicate b: mean over its drawn seeds of the mean over its drawn prompts
        total += a[seeds[:, :, None], prompts[:, None, :]].mean(axis=(1, 2))
    return total / len(arrays)


def mean_interval(groups: Sequence[Sequence], resamples: int = RESAMPLES, seed: int = SEED,
                  level: float = LEVEL) -> Interval:
    """Percentile bootstrap interval of the mean over groups (suites) of the per-group mean (see the module)."""
    return _percentiles(resampled_means(groups, resamples, seed), level)


def point(groups: Sequence[Sequence]) -> float:
    """The estimate itself: mean over groups of the group's mean over seeds and prompts."""
    return float(np.mean([_as_seeds(g).mean() for g in groups]))


def ratio_interval(numerators: Sequence, denominators: Sequence, resamples: int = RESAMPLES,
                   seed: int = SEED, level: float = LEVEL) -> Interval:
    """Percentile bootstrap interval of ``Σ a_i / Σ b_i`` (e.g. token-weighted NLL: a = NLL sum, b = tokens).

    ``(seeds, prompts)`` arrays resample seeds and prompts crossed, as :func:`resampled_means` does:
    replicate = Σ over drawn seeds and drawn prompts of a / the same sum of b.
    """
    a, b = _as_seeds(numerators), _as_seeds(denominators)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("numerators and denominators need the same, non-zero shape")
    rng = np.random.default_rng(seed)
    k, n = a.shape
    if k == 1:
        idx = rng.integers(0, n, size=(resamples, n))
        return _percentiles(a[0][idx].sum(1) / b[0][idx].sum(1), level)
    seeds = rng.integers(0, k, size=(resamples, k))
    prompts = rng.integers(0, n, size=(resamples, n))
    pick = (seeds[:, :, None], prompts[:, None, :])
    return _percentiles(a[pick].sum(axis=(1, 2)) / b[pick].sum(axis=(1, 2)), level)


def paired_ratio_difference(num_run: Sequence[float], den_run: Sequence[float], num_ref: Sequence[float],
                            den_ref: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED,
                            level: float = LEVEL) -> dict:
    """``Σa/Σb (run) − Σa/Σb (reference)`` over the same items, with a paired bootstrap interval."""
    arrays = [np.asarray(x, dtype=float) for x in (num_run, den_run, num_ref, den_ref)]
    n = arrays[0].size
    if n == 0 or any(x.size != n for x in arrays):
        raise ValueError("every sequence needs the same, non-zero length")
    a, b, c, d = arrays
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    reps = a[idx].sum(1) / b[idx].sum(1) - c[idx].sum(1) / d[idx].sum(1)
    lo, hi = _percentiles(reps, level)
    return _difference(float(a.sum() / b.sum() - c.sum() / d.sum()), lo, hi, n)


def _difference(diff: float, lo: float, hi: float, n: int) -> dict:
    return {"difference": diff, "ci95": [lo, hi], "n": n, "significant": bool(lo > 0 or hi < 0)}


def paired_difference(run: Sequence[Sequence], reference: Sequence[Sequence], resamples: int = RESAMPLES,
                      seed: int = SEED, level: float = LEVEL) -> dict:
    """The difference run − reference of the mean over groups, paired prompt by prompt (each group of ``run``
    aligned with the same group of ``reference``): its value, percentile bootstrap interval of the per-prompt
    differences, the number of pairs and whether the interval excludes 0."""
    if len(run) != len(reference):
        raise ValueError("run and reference need the same groups")
    diffs = []
    for r, f in zip(run, reference):
        r, f = np.asarray(r, dtype=float), np.asarray(f, dtype=float)
        if r.shape != f.shape:
            raise ValueError("paired groups need the same prompts")
        diffs.append(r - f)
    lo, hi = mean_interval(diffs, resamples, seed, level)
    return _difference(point(diffs), lo, hi, sum(d.size for d in diffs))


def mcnemar_p(run: Sequence[bool], reference: Sequence[bool]) -> float:
    """Exact two-sided McNemar p-value for paired binary outcomes (see the module docstring)."""
    if len(run) != len(reference):
        raise ValueError("paired outcomes need the same length")
    b = sum(bool(x) and not bool(y) for x, y in zip(run, reference))
    c = sum(bool(y) and not bool(x) for x, y in zip(run, reference))
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)
