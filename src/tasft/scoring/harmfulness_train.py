"""Training and validation of the ``local`` harmfulness scorer (two heads on frozen MiniLM features).

Each head (logit s_θ) minimises, by full-batch Adam,
    L(θ) = Σ_i c_i · BCE(s_θ(x_i), y_i)  +  α · mean_j softplus(s_θ(x_j^chosen) − s_θ(x_j^rejected))  +  λ·Σ‖W‖²
with class-balanced weights c_i ∝ 1 / n_{y_i} (Σ c_i = 1) and, for the response head only, the pairwise logistic
loss over hh-rlhf preference pairs (the rejected response should score higher; α = 0 for the prompt head).
- prompt head, x = e(p): y = prompt unsafe (XSTest prompt labels, one row per completion; STL instructions = 1;
  AlpacaEval train-split instructions = 0);
- response head, x = φ(p, r): y = full compliance (XSTest final labels; STL safe outputs = 0) + hh-rlhf pairs.
  (AlpacaEval answers are left out: as compliance examples they taught the head to call short or off-topic
  answers to harmful prompts compliant.)

Validation, on data the evaluated heads never saw (harmful = unsafe prompt ∧ full compliance):
- leave-one-generator-out on XSTest: train without generator g, AUROC on g (undefined when g has one class only);
- generator-and-prompt held out: additionally drop a fold of XSTest prompts from training and score only g's
  answers to those prompts (the five generators answer the same 450 prompts, so this removes prompt memorisation);
- hh-rlhf pairwise accuracy = mean_j [s(rejected_j) > s(chosen_j)] (ties ½) on a deterministic held-out split;
- AlpacaEval held-out split (benign): mean score and the share flagged harmful (a false-positive rate).
The threshold maximises balanced accuracy ½(TPR + TNR) on the generator-and-prompt-held-out predictions.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import TasftError
from ..io_utils import sha256_file
from . import harmfulness_data as hd
from .harmfulness import (
    EMBEDDING_MODEL_ID,
    FEATURE_RECIPE,
    META_FILE,
    HarmHead,
    TextEmbedder,
    pair_features,
    save_artefact,
)


@dataclass(frozen=True)
class HeadSettings:
    """Hyper-parameters of one head and its full-batch Adam optimisation (λ = ``l2``, α = ``pair_weight``)."""

    hidden: int = 0
    epochs: int = 200
    lr: float = 1e-2
    l2: float = 1e-2
    pair_weight: float = 1.0
    dropout: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class ScorerSettings:
    """Both heads' settings plus the validation splits."""

    prompt_head: HeadSettings = field(default_factory=lambda: HeadSettings(l2=1e-2, pair_weight=0.0))
    response_head: HeadSettings = field(default_factory=lambda: HeadSettings(l2=0.3, pair_weight=1.0))
    prompt_folds: int = 5
    hh_heldout_percent: int = 20


def auroc(scores: list[float] | torch.Tensor, labels: list[int] | torch.Tensor) -> float | None:
    """AUROC = P(s⁺ > s⁻) + ½·P(s⁺ = s⁻) (Mann–Whitney U / (n⁺n⁻), average ranks); None if a class is absent."""
    s = torch.as_tensor(scores, dtype=torch.float64)
    y = torch.as_tensor(labels).bool()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = torch.argsort(s)
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.float64)
    for value in torch.unique(s):  # average ranks over ties
        tied = s == value
        if int(tied.sum()) > 1:
            ranks[tied] = ranks[tied].mean()
    u = float(ranks[y].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def pairwise_accuracy(s_rejected: torch.Tensor, s_chosen: torch.Tensor) -> float:
    """mean_j ([s_rej > s_cho] + ½[s_rej = s_cho])."""
    wins = (s_rejected > s_chosen).double() + 0.5 * (s_rejected == s_chosen).double()
    return float(wins.mean()) if len(wins) else float("nan")


def threshold_metrics(scores: torch.Tensor, labels: torch.Tensor, t: float) -> dict:
    """Confusion-derived figures for the rule harmful ⇔ score ≥ t."""
    pred, y = scores >= t, labels.bool()
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    fn, tn = int((~pred & y).sum()), int((~pred & ~y).sum())
    tpr, tnr = tp / max(tp + fn, 1), tn / max(tn + fp, 1)
    precision = tp / max(tp + fp, 1)
    f1 = 2 * precision * tpr / max(precision + tpr, 1e-12)
    return {"threshold": t, "balanced_accuracy": (tpr + tnr) / 2, "tpr": tpr, "tnr": tnr, "precision": precision,
            "f1": f1, "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def best_threshold(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """argmax_t ½(TPR(t) + TNR(t)) over t ∈ observed scores; returned as the midpoint to the next lower score."""
    values = torch.unique(scores.double()).sort(descending=True).values
    best, best_ba = 0.5, -1.0
    for i, value in enumerate(values.tolist()):
        t = (value + values[i + 1].item()) / 2 if i + 1 < len(values) else value
        ba = threshold_metrics(scores.double(), labels, t)["balanced_accuracy"]
        if ba > best_ba:
            best, best_ba = t, ba
    return float(best)


def fit_head(x: torch.Tensor, y: torch.Tensor, x_rejected: torch.Tensor | None = None,
             x_chosen: torch.Tensor | None = None, settings: HeadSettings = HeadSettings()) -> HarmHead:
    """Minimise the module-level objective L(θ) by full-batch Adam; μ, σ come from all training features."""
    torch.manual_seed(settings.seed)
    head = HarmHead(x.shape[1], settings.hidden, settings.dropout)
    has_pairs = x_rejected is not None and x_chosen is not None and len(x_rejected) > 0
    head.set_standardisation(torch.cat([x, x_rejected, x_chosen]) if has_pairs else x)
    y = y.float()
    n_pos, n_neg = float(y.sum()), float((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        raise TasftError("a scorer head needs both positive and negative training labels")
    c = torch.where(y > 0, 1 / (2 * n_pos), 1 / (2 * n_neg))
    c = c / c.sum()
    z = (x - head.mu) / head.sigma  # standardised once, not per epoch
    z_pairs = (torch.cat([x_chosen, x_rejected]) - head.mu) / head.sigma if has_pairs else None
    weights = [p for n, p in head.named_parameters() if n.endswith("weight")]
    opt = torch.optim.Adam(head.parameters(), lr=settings.lr)
    head.train()
    for _ in range(settings.epochs):
        opt.zero_grad()
        s = head.net(z).squeeze(-1)
        loss = (c * (F.softplus(s) - y * s)).sum()  # BCE(s, y); F.binary_cross_entropy_with_logits is ~100× slower
        if z_pairs is not None:
            s_cho, s_rej = head.net(z_pairs).squeeze(-1).chunk(2)
            loss = loss + settings.pair_weight * F.softplus(s_cho - s_rej).mean()
        loss = loss + settings.l2 * sum((w**2).sum() for w in weights)
        loss.backward()
        opt.step()
    return head.eval()


def _prompt_fold(prompt: str, folds: int) -> int:
    """Fold of an XSTest prompt: int(SHA-256(prompt)[:8], 16) mod folds."""
    return int(hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:8], 16) % folds


def _features(embedder: TextEmbedder, prompts: list[str], responses: list[str]) -> torch.Tensor:
    return pair_features(embedder.embed(prompts), embedder.embed(responses))


def _heldout_report(pred: torch.Tensor, y: torch.Tensor, groups: list[str]) -> dict:
    per = {}
    for g in hd.XSTEST_GENERATORS:
        idx = torch.tensor([i for i, gi in enumerate(groups) if gi == g])
        a = auroc(pred[idx], y[idx])
        per[g] = {"auroc": None if a is None else round(a, 4), "n_harmful": int(y[idx].sum()),
                  "n_harmless": int(len(idx) - y[idx].sum())}
    defined = [v["auroc"] for v in per.values() if v["auroc"] is not None]
    return {"per_generator": per, "pooled_auroc": round(auroc(pred, y), 4),
            "mean_defined_auroc": round(sum(defined) / len(defined), 4) if defined else None}


def train_local_scorer(out_dir: str | Path, shared_data_dir: str | Path, settings: ScorerSettings | None = None,
                       overwrite: bool = False, progress: bool = True, embedder: TextEmbedder | None = None) -> dict:
    """Train both heads on all data, validate on held-out data, save the artefact in ``out_dir``; return the meta."""
    start = time.time()
    settings = settings or ScorerSettings()
    out_dir = Path(out_dir)
    if (out_dir / META_FILE).exists() and not overwrite:
        raise TasftError(f"{out_dir} already holds a scorer; pass --overwrite to replace it")
    data_dir = hd.resolve_data_dir(shared_data_dir)
    files = hd.training_files(data_dir)
    xs, stl = hd.read_xstest(data_dir), hd.read_stl_safety(data_dir)
    hh_train, hh_held = hd.split_pairs(hd.read_hh_pairs(data_dir), settings.hh_heldout_percent)
    alpaca, alpaca_held = hd.read_alpaca_eval(data_dir)

    embedder = embedder or TextEmbedder()
    every = [r.prompt for r in xs + stl + alpaca + alpaca_held] + [r.response for r in xs + stl + alpaca_held]
    every += [t for p in hh_train + hh_held for t in (p.prompt, p.chosen, p.rejected)]
    embedder.embed(every, progress=progress, desc="embed training texts")
    e_xs, e_more = embedder.embed([r.prompt for r in xs]), embedder.embed([r.prompt for r in stl + alpaca])
    x_xs = _features(embedder, [r.prompt for r in xs], [r.response for r in xs])
    x_stl = _features(embedder, [r.prompt for r in stl], [r.response for r in stl])
    u_more = torch.tensor([r.prompt_unsafe for r in stl + alpaca])
    c_stl = torch.tensor([r.complied for r in stl])
    x_rej = _features(embedder, [p.prompt for p in hh_train], [p.rejected for p in hh_train])
    x_cho = _features(embedder, [p.prompt for p in hh_train], [p.chosen for p in hh_train])
    unsafe, complied = torch.tensor([r.prompt_unsafe for r in xs]), torch.tensor([r.complied for r in xs])
    y_xs = unsafe * complied
    groups = [r.group for r in xs]
    gen = torch.tensor([hd.XSTEST_GENERATORS.index(g) for g in groups])
    folds = torch.tensor([_prompt_fold(r.prompt, settings.prompt_folds) for r in xs])

    def fit(keep: torch.Tensor) -> tuple[HarmHead, HarmHead]:
        prompt_head = fit_head(torch.cat([e_xs[keep], e_more]), torch.cat([unsafe[keep], u_more]),
                               settings=settings.prompt_head)
        response_head = fit_head(torch.cat([x_xs[keep], x_stl]), torch.cat([complied[keep], c_stl]), x_rej, x_cho,
                                 settings.response_head)
        return prompt_head, response_head

    def predict(heads: tuple[HarmHead, HarmHead], rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return heads[0].probability(e_xs[rows]), heads[1].probability(x_xs[rows])

    logo, strict_u, strict_c = torch.zeros(len(xs)), torch.zeros(len(xs)), torch.zeros(len(xs))
    steps = [(g, k) for g in range(len(hd.XSTEST_GENERATORS)) for k in (None, *range(settings.prompt_folds))]
    for g, k in tqdm(steps, desc="validate scorer", disable=not progress, leave=False):
        held = gen == g
        if k is None:
            p_u, p_c = predict(fit(~held), held)
            logo[held] = p_u * p_c
        else:
            rows = held & (folds == k)
            strict_u[rows], strict_c[rows] = predict(fit(~held & (folds != k)), rows)
    strict = strict_u * strict_c

    threshold = best_threshold(strict, y_xs)
    prompt_head, response_head = fit(torch.ones(len(xs), dtype=torch.bool))

    def final_score(prompts: list[str], responses: list[str]) -> torch.Tensor:
        return prompt_head.probability(embedder.embed(prompts)) * response_head.probability(
            _features(embedder, prompts, responses))

    held_prompts = [p.prompt for p in hh_held]
    s_rej = final_score(held_prompts, [p.rejected for p in hh_held])
    s_cho = final_score(held_prompts, [p.chosen for p in hh_held])
    s_alpaca = final_score([r.prompt for r in alpaca_held], [r.response for r in alpaca_held])
    validation = {
        "leave_one_generator_out": _heldout_report(logo, y_xs, groups),
        "generator_and_prompt_heldout": _heldout_report(strict, y_xs, groups),
        "generator_and_prompt_heldout_factor_auroc": {"prompt_unsafe": round(auroc(strict_u, unsafe), 4),
                                                      "complied": round(auroc(strict_c, complied), 4)},
        "threshold_on_generator_and_prompt_heldout": threshold_metrics(strict.double(), y_xs, threshold),
        "threshold_on_leave_one_generator_out": threshold_metrics(logo.double(), y_xs, threshold),
        "hh_rlhf_heldout_pairwise_accuracy": round(pairwise_accuracy(s_rej, s_cho), 4),
        "hh_rlhf_heldout_pairs": len(hh_held),
        "hh_rlhf_heldout_flagged_rate": {"rejected": round(float((s_rej >= threshold).double().mean()), 4),
                                         "chosen": round(float((s_cho >= threshold).double().mean()), 4)},
        "alpaca_eval_heldout": {"pairs": len(alpaca_held), "mean_score": round(float(s_alpaca.mean()), 4),
                                "flagged_rate": round(float((s_alpaca >= threshold).double().mean()), 4)},
    }
    meta = {
        "scorer": "local", "embedding_model": EMBEDDING_MODEL_ID, "feature_recipe": FEATURE_RECIPE,
        "settings": asdict(settings), "threshold": threshold,
        "threshold_rule": "max balanced accuracy on generator-and-prompt-held-out XSTest predictions",
        "validation": validation,
        "training_counts": {"xstest": len(xs), "xstest_harmful": int(y_xs.sum()), "stl": len(stl),
                            "alpaca_eval_train": len(alpaca), "hh_rlhf_train_pairs": len(hh_train)},
        "training_data_sha256": {str(f.relative_to(data_dir)): sha256_file(f) for f in files},
        "train_seconds": round(time.time() - start, 1),
    }
    save_artefact(out_dir, prompt_head, response_head, meta)
    return meta
