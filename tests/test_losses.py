"""Property tests for :mod:`tasft.objectives.losses` (semantic EMD penalties and their baselines).

Reference values are computed independently in numpy / float64: the cost matrix
M[i, j] = 1 − cos(e_i, e_j) is built here from the raw embeddings and the exact EMD is POT's
``ot.emd2`` on numpy arrays, never through tasft helpers.
"""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasft import objectives
from tasft.objectives import losses as L

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

vocab = st.integers(min_value=2, max_value=64)
dim = st.integers(min_value=2, max_value=16)
batch = st.integers(min_value=1, max_value=4)
seeds = st.integers(min_value=0, max_value=2**32 - 1)
PENALTIES = tuple(objectives.PENALTIES)


# ------------------------------------------------------------------------------------------ helpers
def make_embeddings(rng: np.random.Generator, vocab_size: int, d: int) -> np.ndarray:
    e = rng.normal(size=(vocab_size, d))
    small = np.linalg.norm(e, axis=1) < 1e-3  # keep every row well away from the zero vector
    e[small] = 1.0
    return e


def make_dists(
    rng: np.random.Generator, shape: tuple[int, ...], vocab_size: int, sparse: bool, peaked: bool = True
) -> np.ndarray:
    """Random probability rows (float64); ``sparse`` zeros out about half of each row (never all).

    ``peaked=False`` keeps every entry ≥ ~0.05/V relative mass, so rows stay away from point masses, where
    the exact EMD and the Jensen bound coincide and fp32 rounding (~1e-7) could decide a 1e-9 comparison.
    """
    if peaked:
        w = rng.exponential(size=(*shape, vocab_size)) ** rng.choice([1.0, 3.0]) + 1e-12
    else:
        w = rng.exponential(size=(*shape, vocab_size)) + 0.05
    if sparse:
        keep = rng.random(size=w.shape) < 0.5
        keep[..., 0] |= ~keep.any(-1)  # at least one entry survives in each row
        w = np.where(keep, w, 0.0)
    return w / w.sum(-1, keepdims=True)


def ref_cost(emb: np.ndarray) -> np.ndarray:
    n = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    return 1.0 - n @ n.T


def ref_unit(emb: np.ndarray) -> np.ndarray:
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def pot_rows(p: np.ndarray, q: np.ndarray, cost: np.ndarray) -> np.ndarray:
    return np.array([ot.emd2(a, b, cost, numItermax=1_000_000) for a, b in zip(p, q)], dtype=np.float64)


def softmax64(x: np.ndarray) -> np.ndarray:
    z = x - x.max(-1, keepdims=True)
    ez = np.exp(z)
    return ez / ez.sum(-1, keepdims=True)


def logsumexp64(x: np.ndarray) -> np.ndarray:
    m = x.max(-1)
    return m + np.log(np.exp(x - m[..., None]).sum(-1))


def t64(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))


def as_np(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().cpu().numpy()


def make_logit_problem(rng: np.random.Generator, b: int, t: int, vocab_size: int, scale: float):
    logits = torch.from_numpy(rng.normal(scale=scale, size=(b, t, vocab_size)).astype(np.float32))
    targets = torch.from_numpy(rng.integers(0, vocab_size, size=(b, t)))
    mask = torch.from_numpy(rng.random(size=(b, t)) < 0.5)
    return logits, targets, mask


def per_row_reference(name: str, logits: np.ndarray, targets: np.ndarray, unit: np.ndarray, constant: str):
    """The per-row measure computed directly in float64 from the formulas (no tasft helpers)."""
    p = softmax64(logits)
    rows = np.arange(len(targets))
    if name == "emd":
        return 1.0 - ((p @ unit) * unit[targets]).sum(-1)
    if name == "emd_lb":
        c = 0.5 if constant == "tight" else 1.0 / (2.0 * unit.shape[0] ** 2)
        return c * ((p @ unit - unit[targets]) ** 2).sum(-1)
    if name == "nlcl":
        return -np.log1p(-p[rows, targets])
    if name == "ga":
        return -np.log(p[rows, targets])
    raise AssertionError(name)


# ---------------------------------------------------------------------------- 1. exact EMD vs POT
@SETTINGS
@given(v=vocab, d=dim, b=batch, seed=seeds, sparse=st.booleans())
def test_emd_matches_pot_lp(v, d, b, seed, sparse):
    rng = np.random.default_rng(seed)
    emb = make_embeddings(rng, v, d)
    p = make_dists(rng, (b,), v, sparse)
    q = make_dists(rng, (b,), v, sparse)
    want = pot_rows(p, q, ref_cost(emb))

    got = L.emd(t64(p), t64(q), t64(emb))
    assert got.shape == (b,)
    np.testing.assert_allclose(as_np(got), want, atol=1e-6, rtol=0)
    # symmetric cost => symmetric distance; and EMD(P, P) = 0
    np.testing.assert_allclose(as_np(L.emd(t64(q), t64(p), t64(emb))), want, atol=1e-6, rtol=0)
    np.testing.assert_allclose(as_np(L.emd(t64(p), t64(p), t64(emb))), 0.0, atol=1e-6)


@FEW
@given(v=st.integers(2, 24), d=dim, seed=seeds)
def test_emd_keeps_leading_batch_shape(v, d, seed):
    rng = np.random.default_rng(seed)
    emb = make_embeddings(rng, v, d)
    p = make_dists(rng, (2, 3), v, sparse=False)
    q = make_dists(rng, (2, 3), v, sparse=False)
    got = L.emd(t64(p), t64(q), t64(emb))
    assert got.shape == (2, 3)
    want = pot_rows(p.reshape(-1, v), q.reshape(-1, v), ref_cost(emb)).reshape(2, 3)
    np.testing.assert_allclose(as_np(got), want, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------- 2. lower bound
@SETTINGS
@given(v=vocab, d=dim, b=batch, seed=seeds)
def test_lower_bounds_below_exact_emd(v, d, b, seed):
    rng = np.random.default_rng(seed)
    emb = make_embeddings(rng, v, d)
    p = make_dists(rng, (b,), v, sparse=False, peaked=False)
    q = make_dists(rng, (b,), v, sparse=False, peaked=False)
    exact = pot_rows(p, q, ref_cost(emb))

    paper = as_np(L.emd_lower_bound(t64(p), t64(q), t64(emb), constant="paper"))
    tight = as_np(L.emd_lower_bound(t64(p), t64(q), t64(emb), constant="tight"))
    assert paper.shape == tight.shape == (b,)
    assert np.all(paper >= 0.0) and np.all(tight >= 0.0)
    assert np.all(tight <= exact + 1e-9), (tight, exact)
    assert np.all(paper <= tight + 1e-12), (paper, tight)
    # the bound itself, recomputed from its definition
    unit = ref_unit(emb)
    jensen = 0.5 * ((p @ unit - q @ unit) ** 2).sum(-1)
    np.testing.assert_allclose(tight, jensen, rtol=1e-5, atol=1e-7)
    # fp32 cancellation in m_P − m_Q: the absolute error of the tight bound is ~1e-7, scaled by 1/V² here
    np.testing.assert_allclose(paper, jensen / v**2, rtol=1e-5, atol=2e-7 / v**2)
    np.testing.assert_allclose(paper, tight / v**2, rtol=1e-6)

    # q given as integer token ids (point masses)
    ids = rng.integers(0, v, size=b)
    exact_ids = pot_rows(p, np.eye(v)[ids], ref_cost(emb))
    paper_ids = as_np(L.emd_lower_bound(t64(p), torch.from_numpy(ids), t64(emb), constant="paper"))
    tight_ids = as_np(L.emd_lower_bound(t64(p), torch.from_numpy(ids), t64(emb), constant="tight"))
    assert np.all(tight_ids <= exact_ids + 1e-9), (tight_ids, exact_ids)
    assert np.all(paper_ids <= tight_ids + 1e-12)
    np.testing.assert_allclose(tight_ids, 0.5 * ((p @ unit - unit[ids]) ** 2).sum(-1), rtol=1e-5, atol=1e-7)


@FEW
@given(v=vocab, d=dim, seed=seeds)
def test_tight_bound_is_attained_by_point_masses(v, d, seed):
    # EMD(δ_a, δ_b) = 1 − ê_a·ê_b = ½‖ê_a − ê_b‖²: the Jensen bound is an equality here. The bound is
    # computed in fp32, so the comparison allows fp32 rounding (1e-6) rather than 1e-9.
    rng = np.random.default_rng(seed)
    emb = make_embeddings(rng, v, d)
    a, bb = rng.integers(0, v, size=2)
    p = np.eye(v)[[a]]
    exact = pot_rows(p, np.eye(v)[[bb]], ref_cost(emb))
    tight = as_np(L.emd_lower_bound(t64(p), torch.tensor([bb]), t64(emb), constant="tight"))
    np.testing.assert_allclose(tight, exact, atol=1e-6, rtol=0)


def test_unknown_bound_constant_raises():
    with pytest.raises(ValueError):
        L.bound_constant("loose", 10)  # type: ignore[arg-type]
    assert L.bound_constant("paper", 10) == pytest.approx(1.0 / 200.0)
    assert L.bound_constant("tight", 10) == 0.5


# ------------------------------------------------------------------------- 3. one-hot closed form
@SETTINGS
@given(v=vocab, d=dim, b=batch, seed=seeds, sparse=st.booleans())
def test_onehot_closed_form_matches_lp(v, d, b, seed, sparse):
    rng = np.random.default_rng(seed)
    emb = make_embeddings(rng, v, d)
    p = make_dists(rng, (b,), v, sparse)
    ids = rng.integers(0, v, size=b)
    onehot = np.eye(v)[ids]
    lp = pot_rows(p, onehot, ref_cost(emb))
    closed = 1.0 - (p @ ref_unit(emb) * ref_unit(emb)[ids]).sum(-1)
    np.testing.assert_allclose(lp, closed, atol=1e-9)  # sanity of the reference itself

    by_ids = as_np(L.emd(t64(p), torch.from_numpy(ids), t64(emb)))
    by_onehot = as_np(L.emd(t64(p), t64(onehot), t64(emb)))
    direct = as_np(L.emd_onehot(t64(p), torch.from_numpy(ids), L.normalize_embeddings(t64(emb))))
    for got in (by_ids, by_onehot, direct):
        assert got.shape == (b,)
        np.testing.assert_allclose(got, lp, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------ 4. gradients
@FEW
@given(v=vocab, d=dim, b=batch, seed=seeds)
def test_emd_gradients_finite_and_subgradient(v, d, b, seed):
    rng = np.random.default_rng(seed)
    emb = make_embeddings(rng, v, d)
    p_np = make_dists(rng, (b,), v, sparse=False)
    q_np = make_dists(rng, (b,), v, sparse=False)

    # dense Q (POT path), gradient w.r.t. the probabilities
    p = t64(p_np).requires_grad_(True)
    val = L.emd(p, t64(q_np), t64(emb))
    val.sum().backward()
    assert p.grad is not None and torch.isfinite(p.grad).all()
    # The gradient is a dual potential, hence a subgradient of the convex map P -> EMD(P, Q):
    # EMD(P') >= EMD(P) + <g, P' - P> for every P' on the simplex.
    p2 = make_dists(rng, (b,), v, sparse=False)
    lhs = pot_rows(p2, q_np, ref_cost(emb))
    rhs = as_np(val) + ((p2 - p_np) * as_np(p.grad)).sum(-1)
    assert np.all(lhs >= rhs - 1e-6), (lhs, rhs)

    # dense Q, gradient w.r.t. logits
    logits = torch.from_numpy(rng.normal(size=(b, v))).requires_grad_(True)
    L.emd(logits.softmax(-1), t64(q_np), t64(emb)).sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()

    # one-hot closed form: d/dP(w) (1 − m_P·ê_y) = −ê_w·ê_y exactly
    ids = rng.integers(0, v, size=b)
    p1 = t64(p_np).requires_grad_(True)
    L.emd(p1, torch.from_numpy(ids), t64(emb)).sum().backward()
    unit = ref_unit(emb)
    np.testing.assert_allclose(as_np(p1.grad), -(unit[ids] @ unit.T), atol=1e-6)

    # lower bound, both constants, dense and id targets
    for constant in ("paper", "tight"):
        for q in (t64(q_np), torch.from_numpy(ids)):
            pl = t64(p_np).requires_grad_(True)
            L.emd_lower_bound(pl, q, t64(emb), constant=constant).sum().backward()
            assert pl.grad is not None and torch.isfinite(pl.grad).all()
    # tight bound gradient: d/dP ½‖m_P − ê_y‖² = (m_P − ê_y)·ê_w
    pl = t64(p_np).requires_grad_(True)
    L.emd_lower_bound(pl, torch.from_numpy(ids), t64(emb), constant="tight").sum().backward()
    np.testing.assert_allclose(as_np(pl.grad), (p_np @ unit - unit[ids]) @ unit.T, atol=1e-6)


@SETTINGS
@given(v=vocab, d=dim, b=batch, t=st.integers(1, 5), seed=seeds, scale=st.sampled_from([0.5, 3.0, 10.0]))
def test_training_form_gradients_finite(v, d, b, t, seed, scale):
    rng = np.random.default_rng(seed)
    normalized = L.normalize_embeddings(torch.from_numpy(make_embeddings(rng, v, d)))
    logits, targets, mask = make_logit_problem(rng, b, t, v, scale)
    mask[0, 0] = True
    ref = torch.from_numpy(rng.normal(size=(b, t, v)).astype(np.float32))
    calls = {
        "emd": lambda z: L.emd_from_logits(z, targets, mask, normalized),
        "emd_soft": lambda z: L.emd_from_logits(z, targets, mask, normalized, ref_logits=ref, soft_top_k=v),
        "emd_lb_tight": lambda z: L.emd_lb_from_logits(z, targets, mask, normalized, "tight"),
        "emd_lb_paper": lambda z: L.emd_lb_from_logits(z, targets, mask, normalized, "paper"),
        "emd_lb_soft": lambda z: L.emd_lb_from_logits(z, targets, mask, normalized, "tight", ref_logits=ref),
        "nlcl": lambda z: L.nlcl_from_logits(z, targets, mask),
        "nll": lambda z: L.nll_from_logits(z, targets, mask),
    }
    for name, fn in calls.items():
        z = logits.clone().requires_grad_(True)
        val = fn(z)
        assert val.ndim == 0 and torch.isfinite(val), name
        val.backward()
        assert z.grad is not None and torch.isfinite(z.grad).all(), name
        # every measure depends on the logits only through softmax: shift invariance => rows sum to 0
        np.testing.assert_allclose(z.grad.double().sum(-1).numpy(), 0.0, atol=1e-5, err_msg=name)


@SETTINGS
@given(v=vocab, b=batch, t=st.integers(1, 5), seed=seeds)
def test_nlcl_matches_float64_moderate(v, b, t, seed):
    rng = np.random.default_rng(seed)
    logits, targets, _ = make_logit_problem(rng, b, t, v, scale=2.0)
    mask = torch.ones(b, t, dtype=torch.bool)
    z = logits.clone().requires_grad_(True)
    val = L.nlcl_from_logits(z, targets, mask)
    val.backward()
    flat = logits.double().numpy().reshape(-1, v)
    y = targets.numpy().reshape(-1)
    p_y = softmax64(flat)[np.arange(len(y)), y]
    want = float(np.mean(-np.log1p(-p_y)))
    assert val.item() == pytest.approx(want, abs=1e-6, rel=1e-6)
    assert torch.isfinite(z.grad).all()
    # analytic gradient of −log(1 − P(y)) = lse(z) − lse_{w≠y}(z) w.r.t. the logits:
    # softmax(z) − softmax_{w≠y}(z), divided by the number of rows (the mean)
    p = softmax64(flat)
    others = p.copy()
    others[np.arange(len(y)), y] = 0.0
    others /= others.sum(-1, keepdims=True)
    grad_want = (p - others) / len(y)
    np.testing.assert_allclose(z.grad.double().numpy().reshape(-1, v), grad_want, atol=1e-6)


@FEW
@given(v=vocab, b=batch, t=st.integers(1, 4), seed=seeds, gap=st.sampled_from([30.0, 50.0, 80.0]))
def test_nlcl_extreme_logit_is_finite_and_exact(v, b, t, seed, gap):
    rng = np.random.default_rng(seed)
    logits, targets, _ = make_logit_problem(rng, b, t, v, scale=1.0)
    top = logits.max(-1).values
    logits.scatter_(-1, targets.unsqueeze(-1), (top + gap).unsqueeze(-1))  # P(y) == 1 in fp32
    p_y32 = logits.softmax(-1).gather(-1, targets.unsqueeze(-1))
    assert torch.all(p_y32 == 1.0)  # the naive −log(1 − p) would be +inf here
    mask = torch.ones(b, t, dtype=torch.bool)
    z = logits.clone().requires_grad_(True)
    val = L.nlcl_from_logits(z, targets, mask)
    val.backward()
    assert torch.isfinite(val) and torch.isfinite(z.grad).all()
    flat = logits.double().numpy().reshape(-1, v)
    y = targets.numpy().reshape(-1)
    others = flat.copy()
    others[np.arange(len(y)), y] = -np.inf
    want = float(np.mean(logsumexp64(flat) - logsumexp64(others)))  # −log(1 − P(y)) in float64
    assert val.item() > gap - math.log(v) - 5.0
    assert val.item() == pytest.approx(want, rel=1e-6)
    # gradient stays bounded: each row's gradient is a difference of two distributions, divided by rows
    assert z.grad.abs().max().item() <= 2.0 / len(y) + 1e-6


# ------------------------------------------------------------------------------------ 5. masking
@SETTINGS
@given(
    name=st.sampled_from(PENALTIES),
    constant=st.sampled_from(["paper", "tight"]),
    v=vocab,
    d=dim,
    b=batch,
    t=st.integers(1, 6),
    seed=seeds,
)
def test_masked_positions_contribute_nothing(name, constant, v, d, b, t, seed):
    rng = np.random.default_rng(seed)
    emb = make_embeddings(rng, v, d)
    normalized = L.normalize_embeddings(torch.from_numpy(emb))
    logits, targets, mask = make_logit_problem(rng, b, t, v, scale=2.0)
    mask[rng.integers(0, b), rng.integers(0, t)] = True  # at least one computed position

    z = logits.clone().requires_grad_(True)
    val = objectives.penalty_from_logits(name, z, targets, mask, normalized, constant=constant)
    val.backward()
    assert torch.all(z.grad[~mask] == 0.0)

    changed = logits.clone()
    changed[~mask] = torch.from_numpy(rng.normal(scale=20.0, size=(int((~mask).sum()), v)).astype(np.float32))
    targets2 = targets.clone()
    targets2[~mask] = torch.from_numpy(rng.integers(0, v, size=int((~mask).sum())))
    z2 = changed.clone().requires_grad_(True)
    val2 = objectives.penalty_from_logits(name, z2, targets2, mask, normalized, constant=constant)
    val2.backward()
    assert val2.item() == val.item()
    assert torch.all(z2.grad[~mask] == 0.0)
    assert torch.equal(z2.grad[mask], z.grad[mask])

    m = mask.numpy()
    rows = per_row_reference(name, logits.double().numpy()[m], targets.numpy()[m], ref_unit(emb), constant)
    c = 0.5 if constant == "tight" else 1.0 / (2.0 * v**2)
    tol = 4e-7 * c if name == "emd_lb" else 1e-6  # emd_lb: fp32 cancellation error scales with c
    assert val.item() == pytest.approx(float(rows.mean()), rel=1e-5, abs=tol)


@pytest.mark.parametrize("name", PENALTIES)
@pytest.mark.parametrize("soft", [False, True])
def test_all_false_mask_returns_zero_with_zero_gradient(name, soft):
    rng = np.random.default_rng(0)
    v, d = 7, 3
    normalized = L.normalize_embeddings(torch.from_numpy(make_embeddings(rng, v, d)))
    logits, targets, _ = make_logit_problem(rng, 2, 3, v, scale=2.0)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    ref = torch.randn(2, 3, v) if soft and name in ("emd", "emd_lb") else None
    z = logits.clone().requires_grad_(True)
    kwargs = {"ref_logits": ref}
    if name == "emd":
        kwargs["soft_top_k"] = v
    val = objectives.penalty_from_logits(name, z, targets, mask, normalized, **kwargs)
    assert val.item() == 0.0 and not torch.isnan(val)
    val.backward()
    assert z.grad is not None and torch.all(z.grad == 0.0)


def test_penalty_argument_errors():
    z = torch.zeros(1, 1, 3)
    y = torch.zeros(1, 1, dtype=torch.long)
    m = torch.ones(1, 1, dtype=torch.bool)
    for name in ("emd", "emd_lb"):
        with pytest.raises(ValueError):
            objectives.penalty_from_logits(name, z, y, m, None)
    with pytest.raises(ValueError):
        objectives.penalty_from_logits("bogus", z, y, m, L.normalize_embeddings(torch.eye(3)))
    # nlcl and ga need no embedding table; uniform logits over 3 tokens give exact numbers
    assert objectives.penalty_from_logits("nlcl", z, y, m).item() == pytest.approx(-math.log(2.0 / 3.0), abs=1e-6)
    assert objectives.penalty_from_logits("ga", z, y, m).item() == pytest.approx(math.log(3.0), abs=1e-6)


# ----------------------------------------------------------------------- 6. lower bound from logits
@SETTINGS
@given(v=vocab, d=dim, b=batch, t=st.integers(1, 5), seed=seeds)
def test_emd_lb_from_logits_formula(v, d, b, t, seed):
    rng = np.random.default_rng(seed)
    emb = make_embeddings(rng, v, d)
    normalized = L.normalize_embeddings(torch.from_numpy(emb))
    logits, targets, mask = make_logit_problem(rng, b, t, v, scale=2.0)
    mask[0, 0] = True
    m = mask.numpy()
    unit = ref_unit(emb)
    p = softmax64(logits.double().numpy()[m])
    sq = ((p @ unit - unit[targets.numpy()[m]]) ** 2).sum(-1).mean()
    tight = L.emd_lb_from_logits(logits, targets, mask, normalized, constant="tight").item()
    paper = L.emd_lb_from_logits(logits, targets, mask, normalized, constant="paper").item()
    assert tight == pytest.approx(0.5 * sq, rel=1e-5, abs=1e-7)
    assert paper == pytest.approx(sq / (2.0 * v**2), rel=1e-5, abs=2e-7 / v**2)
    assert paper == pytest.approx(tight / v**2, rel=1e-6)
    # and it lower-bounds the one-hot EMD of the same logits
    exact = L.emd_from_logits(logits, targets, mask, normalized).item()
    assert paper <= tight <= exact + 1e-6


# --------------------------------------------------------------------------------- 7. soft targets
@SETTINGS
@given(v=st.integers(2, 32), d=dim, b=st.integers(1, 3), t=st.integers(1, 3), seed=seeds)
def test_soft_target_emd_matches_exact(v, d, b, t, seed):
    rng = np.random.default_rng(seed)
    emb = make_embeddings(rng, v, d)
    normalized = L.normalize_embeddings(torch.from_numpy(emb))
    logits, targets, mask = make_logit_problem(rng, b, t, v, scale=2.0)
    ref = torch.from_numpy(rng.normal(scale=2.0, size=(b, t, v)).astype(np.float32))
    mask[0, 0] = True
    m = mask.numpy()
    p = softmax64(logits.double().numpy()[m])
    q = softmax64(ref.double().numpy()[m])
    want = float(pot_rows(p, q, ref_cost(emb)).mean())
    via_tasft = float(L.emd(t64(p), t64(q), torch.from_numpy(emb)).mean())

    # soft_top_k == V: the restricted support is the whole vocabulary, so the value is the exact EMD
    got = L.emd_from_logits(logits, targets, mask, normalized, ref_logits=ref, soft_top_k=v).item()
    assert got == pytest.approx(want, abs=1e-6)
    assert got == pytest.approx(via_tasft, abs=1e-6)
    for constant in ("paper", "tight"):
        lb = L.emd_lb_from_logits(logits, targets, mask, normalized, constant=constant, ref_logits=ref).item()
        assert 0.0 <= lb <= want + 1e-9
    # the soft lower bound is ½‖m_P − m_Q‖² averaged, recomputed here
    unit = ref_unit(emb)
    lb_tight = L.emd_lb_from_logits(logits, targets, mask, normalized, constant="tight", ref_logits=ref).item()
    assert lb_tight == pytest.approx(0.5 * ((p @ unit - q @ unit) ** 2).sum(-1).mean(), rel=1e-5, abs=1e-7)


def test_soft_target_top_k_larger_than_vocab():
    rng = np.random.default_rng(3)
    v = 5
    emb = make_embeddings(rng, v, 3)
    normalized = L.normalize_embeddings(torch.from_numpy(emb))
    logits, targets, _ = make_logit_problem(rng, 1, 2, v, scale=2.0)
    ref = torch.from_numpy(rng.normal(size=(1, 2, v)).astype(np.float32))
    mask = torch.ones(1, 2, dtype=torch.bool)
    p = softmax64(logits.double().numpy().reshape(-1, v))
    q = softmax64(ref.double().numpy().reshape(-1, v))
    want = float(pot_rows(p, q, ref_cost(emb)).mean())
    got = L.emd_from_logits(logits, targets, mask, normalized, ref_logits=ref)  # soft_top_k=64 > V=5
    assert got.item() == pytest.approx(want, abs=1e-6)


# ------------------------------------------------------------------------------------ 8. objective
@SETTINGS
@given(
    nll=st.floats(-10, 10, allow_nan=False),
    measure=st.floats(0, 10, allow_nan=False),
    lam=st.floats(0, 5, allow_nan=False),
)
def test_objective_signs(nll, measure, lam):
    n = torch.tensor(nll, dtype=torch.float64)
    m = torch.tensor(measure, dtype=torch.float64)
    for name in ("emd", "emd_lb", "ga"):
        assert objectives.objective(n, m, name, lam).item() == pytest.approx(nll - lam * measure, abs=1e-12)
    assert objectives.objective(n, m, "nlcl", lam).item() == pytest.approx(nll + lam * measure, abs=1e-12)
    assert {n: p.sign for n, p in objectives.PENALTIES.items()} == {"emd": -1, "emd_lb": -1, "nlcl": 1, "ga": -1}


def test_objective_concrete_numbers():
    n, m = torch.tensor(2.0), torch.tensor(0.5)
    assert objectives.objective(n, m, "emd", 0.1).item() == pytest.approx(1.95)
    assert objectives.objective(n, m, "emd_lb", 2.0).item() == pytest.approx(1.0)
    assert objectives.objective(n, m, "ga", 1.0).item() == pytest.approx(1.5)
    assert objectives.objective(n, m, "nlcl", 1.0).item() == pytest.approx(2.5)


# ------------------------------------------------------------------------------------ 9. bounded
@SETTINGS
@given(v=vocab, d=dim, b=batch, seed=seeds, sparse=st.booleans(), antipodal=st.booleans())
def test_emd_is_bounded(v, d, b, seed, sparse, antipodal):
    rng = np.random.default_rng(seed)
    emb = make_embeddings(rng, v, d)
    if antipodal:  # half the vocabulary points opposite the other half: costs reach 2
        half = max(1, v // 2)
        emb[half : 2 * half] = -emb[:half]
    p = make_dists(rng, (b,), v, sparse=False, peaked=False)
    q = make_dists(rng, (b,), v, sparse)
    dense = as_np(L.emd(t64(p), t64(q), t64(emb)))
    ids = as_np(L.emd(t64(p), torch.from_numpy(rng.integers(0, v, size=b)), t64(emb)))
    for vals in (dense, ids):
        assert np.all(vals >= -1e-9) and np.all(vals <= 2.0 + 1e-9), vals


def test_onehot_closed_form_bounded_at_degenerate_points():
    e = torch.ones(1, 7, dtype=torch.float64)
    emb = torch.cat([e, -e])
    p = torch.eye(2, dtype=torch.float64)
    same = L.emd(p, torch.tensor([0, 1]), emb)
    opposite = L.emd(p, torch.tensor([1, 0]), emb)
    assert torch.all(same >= -1e-9) and torch.all(opposite <= 2.0 + 1e-9), (same, opposite)
