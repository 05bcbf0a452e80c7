"""The fused, chunked measures equal the plain full-logits functions (values and gradients) and never hold a
(tokens × V) tensor larger than one chunk."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from tasft.objectives import PENALTIES, losses, penalty_from_logits
from tasft.objectives.fused import fused_linear_measure, fused_linear_objective, nll_chunk

V, D = 97, 16
PLAIN = {
    "nll": lambda lg, y, m, e: losses.nll_from_logits(lg, y, m),
    "ga": lambda lg, y, m, e: penalty_from_logits("ga", lg, y, m, e),
    "nlcl": lambda lg, y, m, e: penalty_from_logits("nlcl", lg, y, m, e),
    "emd": lambda lg, y, m, e: penalty_from_logits("emd", lg, y, m, e),
    "emd_lb": lambda lg, y, m, e: penalty_from_logits("emd_lb", lg, y, m, e, constant="tight"),
}
#: the chunk function of each measure: the NLL's, and each registered penalty's
CHUNK = {"nll": nll_chunk, **{name: spec.fused for name, spec in PENALTIES.items()}}


def _problem(seed: int, batch: int = 3, length: int = 11, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(batch, length, D, generator=g) * scale).requires_grad_()
    weight = torch.randn(V, D, generator=g).requires_grad_()
    targets = torch.randint(0, V, (batch, length), generator=g)
    mask = torch.rand(batch, length, generator=g) < 0.6
    mask[0, 0] = True
    normalized = losses.normalize_embeddings(torch.randn(V, D, generator=g))
    return hidden, weight, targets, mask, normalized


def _plain(name, hidden, weight, targets, mask, normalized):
    logits = hidden @ weight.T
    value = PLAIN[name](logits, targets, mask, normalized)
    gh, gw = torch.autograd.grad(value, (hidden, weight))
    return value.detach(), gh, gw


def _fused(name, hidden, weight, targets, mask, normalized, chunk, constant="tight"):
    value = fused_linear_measure(CHUNK[name], hidden[mask], weight, targets[mask], normalized, chunk_size=chunk,
                                 constant=constant)
    gh, gw = torch.autograd.grad(value, (hidden, weight))
    return value.detach(), gh, gw


@pytest.mark.parametrize("name", ["nll", "ga", "nlcl", "emd", "emd_lb"])
@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_values_and_gradients_match_plain(name, chunk):
    problem = _problem(seed=len(name) * 10 + chunk)
    want = _plain(name, *problem)
    got = _fused(name, *problem, chunk=chunk)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert want[1][~problem[3]].abs().max() == 0  # masked-out positions get no gradient on both paths
    assert got[1][~problem[3]].abs().max() == 0


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(["nll", "nlcl", "emd", "emd_lb"]),
    seed=st.integers(0, 10_000),
    chunk=st.integers(1, 40),
    scale=st.sampled_from([0.1, 1.0, 4.0]),
)
def test_matches_plain_for_any_chunking(name, seed, chunk, scale):
    problem = _problem(seed, scale=scale)
    for a, b in zip(_fused(name, *problem, chunk=chunk), _plain(name, *problem)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_paper_constant_matches_plain():
    hidden, weight, targets, mask, normalized = _problem(seed=3)
    logits = hidden @ weight.T
    want = losses.emd_lb_from_logits(logits, targets, mask, normalized, constant="paper")
    got = fused_linear_measure(CHUNK["emd_lb"], hidden[mask], weight, targets[mask], normalized, chunk_size=5,
                               constant="paper")
    torch.testing.assert_close(got, want.detach(), atol=1e-9, rtol=1e-5)
    tight = fused_linear_measure(CHUNK["emd_lb"], hidden[mask], weight, targets[mask], normalized)
    assert 0 < float(got.detach()) < float(tight.detach())


def test_no_grad_value_and_empty_selection():
    hidden, weight, targets, mask, normalized = _problem(seed=5)
    with torch.no_grad():
        value = fused_linear_measure(CHUNK["emd"], hidden[mask], weight, targets[mask], normalized, chunk_size=4)
    assert not value.requires_grad
    torch.testing.assert_close(value, _plain("emd", hidden, weight, targets, mask, normalized)[0])
    empty = torch.zeros_like(mask)
    zero = fused_linear_measure(CHUNK["emd_lb"], hidden[empty], weight, targets[empty], normalized)
    gh, gw = torch.autograd.grad(zero, (hidden, weight))
    assert float(zero.detach()) == 0.0 and gh.abs().max() == 0 and gw.abs().max() == 0


def test_needs_table_and_every_penalty_has_a_chunk_function():
    hidden, weight, targets, mask, _ = _problem(seed=1)
    for name in ("emd", "emd_lb"):
        with pytest.raises(ValueError, match=f"'{name}' needs the normalised embedding table"):
            fused_linear_measure(CHUNK[name], hidden[mask], weight, targets[mask], None)
    assert all(callable(fn) for fn in CHUNK.values()) and set(CHUNK) == {"nll", "emd", "emd_lb", "nlcl", "ga"}


class _LargestVocabTensor(TorchDispatchMode):
    """Records the largest number of rows of any op output whose last dimension is the vocabulary (not counting
    the (d, V) transpose of the weight itself)."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab, self.rows = vocab, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.dim() >= 1 and t.shape[-1] == self.vocab and t.shape != (D, V):
                self.rows = max(self.rows, t.numel() // self.vocab)
        return out


@pytest.mark.parametrize("name", ["nll", "nlcl", "emd", "emd_lb"])
def test_no_vocab_tensor_beyond_one_chunk(name):
    hidden, weight, targets, mask, normalized = _problem(seed=9, batch=4, length=30)
    sel_h, sel_y = hidden[mask], targets[mask]
    assert sel_h.shape[0] > 40  # many more tokens than one chunk
    with _LargestVocabTensor(V) as probe:
        value = fused_linear_measure(CHUNK[name], sel_h, weight, sel_y, normalized, chunk_size=8)
        value.backward()
    assert probe.rows == 8
    with _LargestVocabTensor(V) as plain_probe:  # the plain path, for contrast, holds every token's row
        PLAIN[name](hidden @ weight.T, targets, mask, normalized).backward()
    assert plain_probe.rows >= sel_h.shape[0]


class _WeightShapedOutputs(TorchDispatchMode):
    """Counts op outputs of the weight's (V, d) shape that are new buffers (not views of an input)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and out.shape == (V, D) and func.__name__.split(".")[0] in (
                "zeros", "empty", "new_zeros", "zeros_like", "empty_like", "clone"):
            self.count += 1
        return out


@pytest.mark.parametrize("penalty", ["emd_lb", "emd", "nlcl", "ga"])
@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_objective_equals_nll_plus_weighted_penalty_in_one_weight_buffer(penalty, chunk):
    """L = NLL(rows of D_u) + coef·penalty(rows of D_h) from one call: value, the two means and the gradients
    equal the plain functions on each part, and the forward allocates one (V, d) gradient buffer, not two."""
    hidden, weight, targets, mask, normalized = _problem(seed=3, batch=4, length=9)
    benign, harm = torch.zeros_like(mask), torch.zeros_like(mask)
    benign[:2], harm[2:] = mask[:2], mask[2:]
    coef = PENALTIES[penalty].sign * 0.7
    logits = hidden @ weight.T
    nll = PLAIN["nll"](logits, targets, benign, normalized)
    pen = PLAIN[penalty](logits, targets, harm, normalized)
    want_gh, want_gw = torch.autograd.grad(nll + coef * pen, (hidden, weight))
    segments = [(nll_chunk, int(benign.sum()), 1.0), (CHUNK[penalty], int(harm.sum()), coef)]
    with _WeightShapedOutputs() as buffers:
        loss, (got_nll, got_pen) = fused_linear_objective(hidden[mask], weight, targets[mask], segments,
                                                          normalized, chunk_size=chunk)
    gh, gw = torch.autograd.grad(loss, (hidden, weight))
    assert buffers.count == 1
    assert not got_nll.requires_grad and not got_pen.requires_grad
    torch.testing.assert_close(got_nll, nll.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_pen, pen.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss.detach(), (nll + coef * pen).detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gh, want_gh, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gw, want_gw, atol=1e-5, rtol=1e-5)


def test_objective_segments_must_cover_the_rows():
    hidden, weight, targets, mask, normalized = _problem(seed=2)
    n = int(mask.sum())
    with pytest.raises(ValueError, match="segments cover"):
        fused_linear_objective(hidden[mask], weight, targets[mask], [(nll_chunk, n - 1, 1.0)], normalized)
    loss, (empty_mean, nll) = fused_linear_objective(hidden[mask], weight, targets[mask],
                                                     [(CHUNK["emd_lb"], 0, -1.0), (nll_chunk, n, 1.0)], normalized)
    assert float(empty_mean) == 0.0
    torch.testing.assert_close(loss.detach(), nll)
