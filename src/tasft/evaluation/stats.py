"""Uncertainty of evaluation numbers: seeded percentile bootstrap intervals and paired tests (pure functions).

Every headline number is a mean over suites of a per-prompt mean, ``m = (1/S) Σ_s (1/n_s) Σ_i v_si`` (one suite:
S = 1), or a ratio of sums (token-weighted NLL, ``Σ_i a_i / Σ_i b_i``). Its 95% interval is the 2.5 and 97.5
percentiles of the statistic over B resamples that draw, within each suite, n_s prompts with replacement — and,
where a point has k seeds evaluated on the same prompts, first k seeds with replacement (the prompts drawn once per
resample and shared by the seeds: prompts and seeds are crossed). A paired difference of two runs on the same
prompts resamples the per-prompt differences ``d_si = v_si(run) − v_si(reference)``, which keeps the pairing.
Across k > 1 training seeds, :func:`seeded_interval` and :func:`seeded_difference` give intervals over seeds ×
prompts (a random-effects decomposition with Student's t for the seeds: see there). McNemar's exact test on the
discordant pairs (b = run only, c = reference only) gives ``p = min(1, 2·P(X ≤ min(b, c)))``
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


def _seed_arrays(groups: Sequence[Sequence]) -> tuple[list[np.ndarray], int]:
    """The groups as (seeds, prompts) arrays and their common number of seeds k (one error line otherwise)."""
    arrays = [_as_seeds(g) for g in groups]
    if not arrays or any(a.shape[1] == 0 for a in arrays):
        raise ValueError("every group needs at least one value")
    k = arrays[0].shape[0]
    if any(a.shape[0] != k for a in arrays):
        raise ValueError("every group needs the same number of seeds")
    return arrays, k


def _percentiles(stats: np.ndarray, level: float) -> Interval:
    lo, hi = np.percentile(stats, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def resampled_means(groups: Sequence[Sequence], resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """B bootstrap replicates of ``(1/S) Σ_s mean(group_s)``; each group is (prompts,) or (seeds, prompts).

    All groups must have the same number of seeds k; the seeds are resampled once per replicate for every group.
    """
    arrays, k = _seed_arrays(groups)
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


def _quantiles(k: int, level: float) -> tuple[float, float]:
    """(t_{k−1}, z) at the two-sided ``level``: Student's t for the seed term (k training runs), normal for prompts."""
    from scipy.stats import norm, t

    q = 0.5 + level / 2
    return (float(t.ppf(q, k - 1)) if k > 1 else 0.0), float(norm.ppf(q))


def seeded_interval(groups: Sequence[Sequence], level: float = LEVEL, bounds: Interval | None = None) -> dict:
    """The mean over S suites of a (k seeds × n_s prompts) array's mean, with an interval over **seeds and
    prompts** — the uncertainty of a method, not of one training run (every seed evaluated on the same prompts).

    With x_s the suite's array, D_k = (1/S) Σ_s mean_i x_s,ki (seed k's value), C_s,i = mean_k x_s,ki (prompt i's
    value, averaged over seeds) and MSE_s = Σ_ki (x_ki − x̄_k· − x̄_·i + x̄)² / ((k−1)(n_s−1)) (the seed × prompt
    residual of suite s)::

        m        = (1/S) Σ_s x̄_s
        V_seed   = max(0, s²(D) − (1/S²) Σ_s MSE_s / n_s) / k      between-seed variance, less its prompt noise
        V_prompt = (1/S²) Σ_s s²(C_s) / n_s                         prompts drawn once, shared by every seed
        interval = m ± sqrt(t²_{k−1} V_seed + z² V_prompt)

    (a random-effects decomposition of the crossed seeds × prompts design). Student's t with k − 1 degrees of
    freedom carries the few seeds: a bootstrap over 3 seeds under-covers (its variance is biased by (k−1)/k and its
    quantiles are those of 3 values; ``tests/test_uncertainty.py`` measures both). One seed: V_seed is unknown
    and the interval is over prompts alone (``seeds`` = 1 says so). ``bounds``: the range the mean cannot leave
    (a rate's [0, 1]); the interval is cut to it."""
    arrays, k = _seed_arrays(groups)
    n_suites = len(arrays)
    mean = float(np.mean([a.mean() for a in arrays]))
    per_seed = np.mean([a.mean(axis=1) for a in arrays], axis=0)
    v_prompt = sum(a.mean(axis=0).var(ddof=1) / a.shape[1] if a.shape[1] > 1 else 0.0 for a in arrays) / n_suites**2
    v_seed = 0.0
    if k > 1:
        noise = 0.0
        for a in arrays:
            n = a.shape[1]
            if n > 1:
                resid = a - a.mean(axis=1, keepdims=True) - a.mean(axis=0, keepdims=True) + a.mean()
                noise += float((resid**2).sum()) / ((k - 1) * (n - 1)) / n
        v_seed = max(0.0, float(per_seed.var(ddof=1)) - noise / n_suites**2) / k
    t_q, z_q = _quantiles(k, level)
    half = math.sqrt(t_q**2 * v_seed + z_q**2 * v_prompt)
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"mean": mean, "ci95": [lo, hi], "seeds": k, "per_seed": [float(v) for v in per_seed],
            "seed_sd": float(per_seed.std(ddof=1)) if k > 1 else None}


def seeded_ratio_interval(numerators: Sequence, denominators: Sequence, level: float = LEVEL) -> dict:
    """``Σ a / Σ b`` (token-weighted NLL) of (k seeds × n prompts) arrays with an interval over seeds and prompts:
    r_k = Σ_i a_ki / Σ_i b_ki per seed, R = Σ a / Σ b; V_seed = s²(r) / k; V_prompt = s²(u) / n with the
    linearised prompt terms u_i = (ā_i − R b̄_i) / mean(b̄) of the seed-averaged values (the delta method);
    interval = R ± sqrt(t²_{k−1} V_seed + z² V_prompt), as :func:`seeded_interval` (its seed term is not
    corrected for prompt noise: slightly conservative)."""
    a, b = _as_seeds(numerators), _as_seeds(denominators)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("numerators and denominators need the same, non-zero shape")
    k, n = a.shape
    ratio = float(a.sum() / b.sum())
    per_seed = a.sum(axis=1) / b.sum(axis=1)
    u = (a.mean(axis=0) - ratio * b.mean(axis=0)) / b.mean()
    v_prompt = float(u.var(ddof=1)) / n if n > 1 else 0.0
    v_seed = float(per_seed.var(ddof=1)) / k if k > 1 else 0.0
    t_q, z_q = _quantiles(k, level)
    half = math.sqrt(t_q**2 * v_seed + z_q**2 * v_prompt)
    return {"mean": ratio, "ci95": [ratio - half, ratio + half], "seeds": k,
            "per_seed": [float(v) for v in per_seed], "seed_sd": float(per_seed.std(ddof=1)) if k > 1 else None}


def seeded_difference(run: Sequence[Sequence], reference: Sequence[Sequence], level: float = LEVEL,
                      bounds: Interval | None = None) -> dict:
    """run − reference, each a list of (k seeds × n_s prompts) arrays on the same prompts, seed j of the run paired
    with seed j of the reference: :func:`seeded_interval` of the per-prompt, per-seed differences
    d_s,ji = x_s,ji(run) − x_s,ji(reference). ``significant`` = the interval over seeds × prompts excludes 0."""
    if len(run) != len(reference):
        raise ValueError("run and reference need the same groups")
    diffs = []
    for r, f in zip(run, reference):
        r, f = _as_seeds(r), _as_seeds(f)
        if r.shape != f.shape:
            raise ValueError("paired groups need the same seeds and prompts")
        diffs.append(r - f)
    out = seeded_interval(diffs, level, bounds)
    lo, hi = out["ci95"]
    return {"difference": out["mean"], "ci95": [lo, hi], "n": sum(d.shape[1] for d in diffs), "seeds": out["seeds"],
            "per_seed": out["per_seed"], "significant": bool(lo > 0 or hi < 0)}


def seeded_ratio_difference(num_run: Sequence, den_run: Sequence, num_ref: Sequence, den_ref: Sequence,
                            level: float = LEVEL) -> dict:
    """``Σa/Σb (run) − Σa/Σb (reference)`` of (k × n) arrays, seeds paired: per-seed differences of the ratios for
    the seed term, differences of the linearised prompt terms (:func:`seeded_ratio_interval`) for the prompt term."""
    a, b, c, d = (_as_seeds(x) for x in (num_run, den_run, num_ref, den_ref))
    if not (a.shape == b.shape == c.shape == d.shape) or a.size == 0:
        raise ValueError("every array needs the same, non-zero shape")
    k, n = a.shape
    r_run, r_ref = float(a.sum() / b.sum()), float(c.sum() / d.sum())
    per_seed = a.sum(axis=1) / b.sum(axis=1) - c.sum(axis=1) / d.sum(axis=1)
    u = ((a.mean(axis=0) - r_run * b.mean(axis=0)) / b.mean()) - ((c.mean(axis=0) - r_ref * d.mean(axis=0)) / d.mean())
    v_prompt = float(u.var(ddof=1)) / n if n > 1 else 0.0
    v_seed = float(per_seed.var(ddof=1)) / k if k > 1 else 0.0
    t_q, z_q = _quantiles(k, level)
    half = math.sqrt(t_q**2 * v_seed + z_q**2 * v_prompt)
    diff = r_run - r_ref
    return {"difference": diff, "ci95": [diff - half, diff + half], "n": n, "seeds": k,
            "per_seed": [float(v) for v in per_seed], "significant": bool(diff - half > 0 or diff + half < 0)}


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
