"""Choosing alpha: the alpha of a rule that meets a user's target on a calibration corpus.

The corpus is the teacher-forced logits of ``speccas.analysis`` (``LogitCorpus``: one forward of
each model per calibration text). Every rule in ``speccas_kernels.rules`` moves from the target's
end (pi = p) towards the drafter's end (pi = q) as alpha grows, so cost falls and divergence from
the target rises with alpha. ``choose_alpha`` meets exactly one target:

* ``deferral=d``: the smallest alpha whose deferral rate is at most d (the best quality that
  defers no more often than d). Family A: the fraction of positions with r = 1; family B: the
  probability that a draft lands outside A. Not defined for ``speculative``/``lossy``.
* ``tokens_per_forward=g``: the smallest alpha that emits at least g tokens per target forward
  (``1 / forwards_per_token`` of the analysis, draft length ``K``).
* ``max_tv=m`` / ``max_kl=m``: the largest alpha whose emitted law stays within m of the target's
  (mean TV(law, p), or mean KL(law || p)) — the cheapest setting within the quality budget.

Search: the rule's alpha grid brackets the boundary, then bisection narrows it to ``tol``,
assuming the metric is monotone in alpha between the bracketing grid points (it is for the
deferral of every family A rule and ``token_v*``; it holds empirically for the others). The answer
is always on the side that meets the target; ``feasible`` is False when no alpha in the range does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from speccas_kernels.rules import RULE_INFO, RULES

from .analysis import DEFAULT_GRIDS, LogitCorpus, analyze_rule


@dataclass
class Calibration:
    rule: str
    alpha: float
    target: str  # "deferral", "tokens_per_forward", "max_tv" or "max_kl"
    goal: float
    achieved: dict  # the metrics at the chosen alpha: deferral, accept, tokens_per_forward, tv, kl, loglik
    feasible: bool
    evaluations: int


def evaluate_alpha(corpus: LogitCorpus, rule: str, alpha: float, *, K: int = 4, temperature: float = 1.0,
                   budget_elems: int = 1 << 23, _cat=None) -> dict:
    """The corpus means at one alpha (a dict of floats)."""
    c = analyze_rule(corpus, rule, alphas=[alpha], Ks=(K,), temperature=temperature, budget_elems=budget_elems,
                     _cat=_cat)
    fpt = float(c.forwards_per_token[K][0])
    return dict(deferral=float(c.deferral[0]), accept=float(c.accept[0]), forwards_per_token=fpt,
                tokens_per_forward=1.0 / fpt if fpt > 0 else math.inf, tv=float(c.tv[0]), kl=float(c.kl[0]),
                loglik=float(c.loglik[0]))


def _search_grid(rule: str, grid):
    info = RULE_INFO[rule]
    g = sorted(float(a) for a in (grid if grid is not None else DEFAULT_GRIDS[rule]))
    if info.high_open:  # lossy: alpha < 1
        g = [a for a in g if a < info.alpha_range[1]]
    return g


def choose_alpha(corpus: LogitCorpus, rule: str, *, deferral: Optional[float] = None,
                 tokens_per_forward: Optional[float] = None, max_tv: Optional[float] = None,
                 max_kl: Optional[float] = None, K: int = 4, temperature: float = 1.0, tol: float = 1e-4,
                 grid=None, budget_elems: int = 1 << 23) -> Calibration:
    """The alpha of ``rule`` that meets one target on ``corpus`` (see the module docstring)."""
    if rule not in RULE_INFO:
        raise ValueError(f"choose_alpha: unknown rule {rule!r}; expected one of {', '.join(RULES)}")
    targets = {k: v for k, v in dict(deferral=deferral, tokens_per_forward=tokens_per_forward, max_tv=max_tv,
                                     max_kl=max_kl).items() if v is not None}
    if len(targets) != 1:
        raise ValueError(f"choose_alpha: give exactly one of deferral, tokens_per_forward, max_tv, max_kl "
                         f"(got {sorted(targets) or 'none'})")
    (name, goal), = targets.items()
    goal = float(goal)
    info = RULE_INFO[rule]
    if not info.uses_alpha:
        raise ValueError(f"choose_alpha: rule {rule!r} has no alpha to choose")
    if name == "deferral" and info.family == "lossy":
        raise ValueError("choose_alpha: 'lossy' defers at every position whatever alpha; calibrate it with "
                         "tokens_per_forward, max_tv or max_kl")
    if name == "max_kl" and temperature == 0:
        raise ValueError("choose_alpha: KL(law || p) is undefined at temperature 0 (p is one-hot); use max_tv")

    import torch

    cat = (torch.cat(corpus.zq, 0), torch.cat(corpus.zp, 0))
    cache = {}

    def metrics(a):
        if a not in cache:
            cache[a] = evaluate_alpha(corpus, rule, a, K=K, temperature=temperature, budget_elems=budget_elems,
                                      _cat=cat)
        return cache[a]

    # ok(alpha): the target is met. For "min" targets ok is False...True along alpha (take the first
    # alpha that meets it); for "max" targets ok is True...False (take the last).
    if name == "deferral":
        ok, kind = (lambda m: m["deferral"] <= goal), "min"
    elif name == "tokens_per_forward":
        ok, kind = (lambda m: m["tokens_per_forward"] >= goal), "min"
    elif name == "max_tv":
        ok, kind = (lambda m: m["tv"] <= goal), "max"
    else:
        ok, kind = (lambda m: m["kl"] <= goal), "max"

    g = _search_grid(rule, grid)
    flags = [ok(metrics(a)) for a in g]
    if kind == "min":
        if not any(flags):
            a = g[-1]
            return Calibration(rule, a, name, goal, metrics(a), False, len(cache))
        i = flags.index(True)
        if i == 0:
            return Calibration(rule, g[0], name, goal, metrics(g[0]), True, len(cache))
        lo, hi = g[i - 1], g[i]  # ok(lo) False, ok(hi) True
    else:
        if not flags[0]:
            return Calibration(rule, g[0], name, goal, metrics(g[0]), False, len(cache))
        i = len(flags) - 1 - flags[::-1].index(True)
        if i == len(g) - 1:
            return Calibration(rule, g[-1], name, goal, metrics(g[-1]), True, len(cache))
        lo, hi = g[i], g[i + 1]  # ok(lo) True, ok(hi) False
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        good = ok(metrics(mid))
        if kind == "min":
            lo, hi = (lo, mid) if good else (mid, hi)
        else:
            lo, hi = (mid, hi) if good else (lo, mid)
    a = hi if kind == "min" else lo
    return Calibration(rule, a, name, goal, metrics(a), True, len(cache))
