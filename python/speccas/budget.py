"""The quality budget: an online, per-row controller of a cascade rule's alpha (``generate(quality_budget=eps)``).

What it holds. A round's emitted token at verified position i follows a law pi_i; its expected divergence from the
target is TV(pi_i, p_i) (``verify(return_divergence=True)``, SPEC.md section 6; the bonus token is drawn from p
and counts 0). For row b the controller keeps the running mean of that divergence over the row's emitted tokens,

    D_b = (sum over emitted tokens of TV(law, p)) / (number of emitted tokens),

at or below ``eps``. At ``T = 0`` D_b is the fraction of emitted tokens expected to differ from the target's
greedy token at the same prefix; at ``T > 0`` it bounds, token by token, how far the sampled text's law is from
the target's. ``eps = 0`` is exact speculative decoding (the loop verifies with rule ``speculative``).

How. Alpha is moved on a monotone re-parametrisation ``u`` in ``[0, 1]`` of the rule's range, ``u = 0`` the rule's
exact speculative end (``Rule.speculative_at``) and ``u = 1`` its drafter end (``Rule.drafter_at``): linear between
two finite ends, and ``alpha = drafter_end - (1 - u) / u`` towards an end at minus infinity (``opt``). The
controller's state is the logit ``theta`` of ``u`` (``u = clip((1 + 2 d) sigmoid(theta) - d, 0, 1)``, so both
ends are reached exactly). After every round, on each row that emitted ``n > 0`` tokens spending ``s``:

    ratio = max(s / (eps n), S / (eps N)) / TARGET        (the round's and the running spend, 1 = on target)
    theta += STEP * clip(1 - ratio, -MAX_BACK, 1)         (dual ascent on the budget constraint)

where ``S``, ``N`` are the row's totals so far. Under budget both ratios are below 1 and alpha moves towards the
drafter by at most ``STEP`` per round; over budget it moves back towards the speculative end, up to ``MAX_BACK``
steps at once. ``TARGET < 1`` aims below the budget so that the controller's oscillation stays under it. The warm
start is the exact end (``theta = THETA_START``, ``u = 0``): the first round spends nothing, and the slack it
leaves is what the next rounds spend. The rows are independent (each has its own state); everything stays on
the device (no host read).

The spend guard. Dual ascent alone reacts to spending after it happened, and on a short row its first steps away
from the exact end can spend more than the row will ever win back. So the step is capped, per row, by what the row
can afford: the next round runs at no larger a ``u`` than the one at which its predicted cost is at most ``DELTA``
of the slack the row would hold after it,

    n_hat = N / R                                   (the row's mean emitted tokens per round, R its rounds)
    rate  = (S + PRIOR_RATE * PRIOR_WEIGHT) / (U + PRIOR_WEIGHT),   U = sum over rounds of n * u
                                                    (TV per token per unit of u: what the row spent for the u it ran)
    u    <= DELTA * (eps * (N + n_hat) - S) / (n_hat * rate)

and ``theta`` is clipped to that cap (so it does not wind up while the cap holds it). The prediction is linear in
``u`` through 0 (the exact end spends nothing); its prior is the worst case, ``PRIOR_RATE = 1`` (every token at the
drafter end diverges completely), worth ``PRIOR_WEIGHT`` tokens at ``u = 1``, so a row that has spent nothing moves
slowly and a row whose drafter agrees with the target learns it. ``DELTA = 1/4``: by Markov's inequality a round
whose cost follows the prediction puts the row over ``eps`` with probability at most 1/4, whatever its
distribution.

An expectation is not enough where single tokens are expensive: at ``T = 0`` a token costs 0 or 1, and a row that
spends 1 with less than 1 of slack is over ``eps`` whatever the odds were (on the real pair, HumanEval at ``T = 0``,
the guard above alone still left 2 of 6 rows at 96 tokens over 0.03). So the predicted cost must also fit in what
is left after one more token at its largest cost, even in a round that emits a single token:

    u <= min(DELTA * (eps * (N + n_hat) - S),  eps * (N + 1) - S - token_max) / (n_hat * rate)

``token_max`` is 1 on greedy rows. At ``T = 0`` the row therefore stays exact for its first ``1 / eps - 1`` tokens
and takes its k-th disagreement only after about ``k / eps`` tokens: a short greedy row, or ``eps = 0.01`` over
fewer than 100 tokens, is exact speculative decoding, because the budget cannot pay for a single disagreement
there. A row without slack runs at the exact end until its tokens make room again.

A token's largest cost at ``T > 0``. A token there costs ``TV(pi, p)``, anywhere in ``[0, 1]``, and what bounds it
is known before the rule is applied: ``TV(pi, p) <= TV(q, p)`` at the same position for the family A rules
(``chow``, ``diff``, ``opt``: 0 or ``TV(q, p)``; ``ensemble``: ``alpha TV(q, p)``), and
``TV(pi, p) <= d + ((1 + d) / 2)^2`` with ``d = TV(q, p)`` for the token sets (``token_v1``, ``token_v2``, whose law
is not a mixture of q and p and can spend 1/4 where ``q = p``; SPEC.md section 6). ``verify(return_divergence=True)``
reports ``TV(q, p)`` at every verified position (``draft_divergence``; on the ``cpp`` backend both divergences come
from the verify round itself: for 8 rows of 12 drafts over 151,936 ids at T = 1 on 2 shared CPU cores (load 3-5.6,
two runs), +0 ms for ``opt``, +23-36 ms for ``chow``, +44-48 ms for ``lossy`` and +102-147 ms for ``token_v1`` over a
42-84 ms round, where the reference's PyTorch ops after the round took 2.5-4.9 s, ``bench/bench_divergence.py``; a
round of the real pair takes about 9 s), so on sampled rows

    token_max = max(the largest cost the row has spent on one token, the largest bound over its drafts so far)

a running maximum over every position the row has had verified, deferred ones included. The guard decides ``u``
before the round's drafts exist, so the bound is the past rounds', not the coming round's: the first round runs at
the exact end (the warm start) and shows the row's drafts before anything can be spent, and a row whose drafter
once stood far from the target keeps that margin (a running maximum, not the last round's or a quantile: a token as
expensive as one the row has already shown is covered, whenever it comes). The price is the greedy rule's at a
smaller scale: a row whose drafts reached ``TV(q, p) = d`` stays exact until ``eps (N + 1) > d + S``, and spends
its budget only after that (on the real pair at ``T = 0.7`` the prose rows at ``eps = 0.01`` spent nothing in 96
tokens: at most 1.2e-7 per token, rounding at the exact end, with final alphas of 0 to 0.011).

What is not promised. The running mean is a random quantity and a round is decided before its spending is known,
so a row can still end over ``eps``: a round keeps several expensive tokens where the prediction (linear in ``u``,
learnt from the row's past) expected fewer, or a later draft is more expensive than every earlier one (the margin
covers one token as expensive as the largest the row has shown, not more), or the row stops early on EOS. The
synthetic tests pin the case the margin is for (a row's first expensive token after free rounds: over ``eps``
without the drafts' bound, held with it). On the real pair (``bench/results/quality_budget.md``: chow, 96 tokens,
8 prompts per domain, ``T = 0.7``) no row ended over ``eps`` with it: 0 of 8 on HumanEval and on prose at
``eps = 0.03`` (largest 0.018 and 0.025) and at ``eps = 0.01`` (largest 0.0024 and 0), where the guard learning a
token's largest cost only from the row's own spends had left 1 of 6 HumanEval rows over 0.03 and 3 of 6 prose rows
over 0.01 (the cause that run's notes give: a row's first expensive token, not yet seen). That is 32 rows, not a
bound: a row over ``eps`` stays possible. The margin costs savings where the drafts are far from the target and
the budget is small (prose at ``eps = 0.01``: exact speculative decoding). The output reports each row's spent
mean and final alpha (``GenerationOutput.divergence``, ``.final_alpha``).

Rules: those with alpha and both ends (``chow``, ``diff``, ``opt``, ``token_v1``, ``token_v2``, ``ensemble``).
``token_v3`` has no alpha that gives exact speculative decoding at ``T > 0`` (alpha = 0 keeps p's mode), so a
budget below its floor could not be held, and ``lossy`` has no drafter end; both raise.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Tuple

import torch

from speccas_kernels.rules import FAMILY_A, FAMILY_B, FAMILY_LOSSY, Rule, get_rule

TARGET = 0.8  # aim at 80% of the budget
STEP = 1.0  # theta per round when under budget (about six rounds from the exact end to the drafter's)
MAX_BACK = 4.0  # the largest step back, in STEPs
THETA_START = -4.0  # the warm start: u = 0, exact speculative decoding
THETA_MAX = 4.0  # u = 1 from about here on
DELTA = 0.25  # the spend guard: a round's predicted cost is at most this share of the slack it would leave
PRIOR_RATE = 1.0  # the guard's prior TV per token at the drafter end (u = 1), before the row has spent anything
PRIOR_WEIGHT = 0.5  # ... worth this many tokens emitted at u = 1
_D = 0.02  # the ends' margin in sigmoid space: theta <= -3.9 gives u = 0, theta >= 3.9 gives u = 1
_WIDE = 10.0  # ends further apart than this are treated as an infinite range (hyperbolic map)


def check_budget(quality_budget, method: str, rule: str, alpha) -> float:
    """``quality_budget``'s checks (ValueError / TypeError naming the argument); the budget as a float."""
    if isinstance(quality_budget, bool) or not isinstance(quality_budget, numbers.Real):
        raise TypeError(f"quality_budget: expected a number >= 0 (mean TV per emitted token), got "
                        f"{type(quality_budget).__name__} {quality_budget!r}")
    eps = float(quality_budget)
    if not (math.isfinite(eps) and 0.0 <= eps <= 1.0):
        raise ValueError(f"quality_budget: expected a number in [0, 1] (mean TV per emitted token), got {eps!r}")
    if method != "cascade":
        raise ValueError(f"quality_budget: adapts a cascade rule's alpha; it needs method='cascade', got {method!r}")
    if alpha is not None:
        raise ValueError("alpha: quality_budget sets alpha per row, online; pass one or the other, not both")
    ends(get_rule(rule))
    return eps


def ends(info: Rule) -> Tuple[float, float]:
    """(speculative end, drafter end) of a rule's alpha; ValueError naming ``rule`` when it has no such pair."""
    if not info.uses_alpha or not info.speculative_at or not info.drafter_at:
        missing = ("it has no alpha" if not info.uses_alpha else
                   "no alpha gives exact speculative decoding (SPEC.md section 3)" if not info.speculative_at else
                   "no alpha gives the drafter alone")
        raise ValueError(f"rule: quality_budget needs a rule with an exact speculative end and a drafter end; "
                         f"{info.name!r} has not ({missing}); use one of {', '.join(budget_rules())}")
    drafter = min(info.drafter_at, key=abs)
    spec = min(info.speculative_at, key=lambda a: abs(a - drafter))
    return spec, drafter


def budget_rules() -> Tuple[str, ...]:
    from speccas_kernels.rules import RULE_INFO

    return tuple(n for n, r in RULE_INFO.items() if r.uses_alpha and r.speculative_at and r.drafter_at)


def alpha_of(info: Rule, u: torch.Tensor) -> torch.Tensor:
    """The rule's alpha at ``u`` in ``[0, 1]`` (0: the exact speculative end, 1: the drafter end); monotone."""
    spec, drafter = ends(info)
    if abs(drafter - spec) <= _WIDE:
        return spec + u * (drafter - spec)
    sign = 1.0 if drafter > spec else -1.0
    far = drafter - sign * (1.0 - u) / u.clamp(min=1e-30)
    return torch.where(u > 0, far.clamp(min=min(spec, drafter), max=max(spec, drafter)), torch.full_like(u, spec))


def token_bound(info: Rule, draft_tv: torch.Tensor) -> torch.Tensor:
    """The largest ``TV(pi, p)`` a token of rule ``info`` can cost at a position where ``TV(q, p) = draft_tv``,
    whatever alpha (SPEC.md section 6): ``draft_tv`` for family A, ``d + ((1 + d) / 2)^2`` (at most 1) for the token
    sets."""
    if info.family == FAMILY_A:
        return draft_tv
    if info.family == FAMILY_B:
        return (draft_tv + ((1.0 + draft_tv) / 2.0) ** 2).clamp(max=1.0)
    if info.family == FAMILY_LOSSY:
        raise ValueError(f"rule: {info.name!r} has no bound of its divergence by TV(q, p) in the quality budget")
    raise ValueError(f"rule: unknown family {info.family!r} of {info.name!r}")


def u_of(theta: torch.Tensor) -> torch.Tensor:
    return ((1 + 2 * _D) * torch.sigmoid(theta) - _D).clamp(0.0, 1.0)


def theta_of(u: torch.Tensor) -> torch.Tensor:
    """The inverse of ``u_of`` on ``[0, 1]`` (``u = 0`` maps to ``THETA_START``, where ``u_of`` is exactly 0)."""
    x = ((u + _D) / (1 + 2 * _D)).clamp(1e-12, 1 - 1e-12)
    return torch.where(u > 0, torch.logit(x).clamp(min=THETA_START), torch.full_like(u, THETA_START))


class QualityBudget:
    """Per-row state of the controller (see the module docstring): ``alpha()`` before a round, ``update`` after.
    ``guard=False`` drops the spend guard (the dual ascent alone, as before the guard; kept for comparison)."""

    def __init__(self, rule: str, eps: float, B: int, device, guard: bool = True, greedy=False):
        """``greedy``: bool or ``[B]`` bool, the rows sampled at ``T = 0`` (a token there costs 0 or 1)."""
        self.info = get_rule(rule)
        ends(self.info)
        self.eps = float(eps)
        self.guard = bool(guard)
        self.theta = torch.full((B,), THETA_START, dtype=torch.float64, device=device)
        self.spent = torch.zeros(B, dtype=torch.float64, device=device)  # S: summed TV over emitted tokens
        self.emitted = torch.zeros(B, dtype=torch.long, device=device)  # N
        self.rounds = torch.zeros(B, dtype=torch.long, device=device)  # R: rounds that emitted a token
        self.exposure = torch.zeros(B, dtype=torch.float64, device=device)  # U: sum over rounds of n u
        # the largest cost one token can have: 1 on greedy rows, else the largest the row has spent on one token or
        # its drafts' TV(q, p) bound (update)
        self.greedy = torch.as_tensor(greedy, dtype=torch.bool, device=device).expand(B).clone()
        self.token_max = torch.where(self.greedy, 1.0, 0.0).double()

    def alpha(self) -> torch.Tensor:
        """``[B]`` float32 alpha for the next round."""
        return alpha_of(self.info, u_of(self.theta)).float()

    def update(self, divergence: torch.Tensor, n_emitted: torch.Tensor,
               draft_divergence: Optional[torch.Tensor] = None) -> None:
        """``divergence`` ``[B, K]`` from ``verify`` (TV(law, p) per verified position), ``n_emitted`` ``[B]``: the
        tokens the round emitted and kept (positions ``0 .. n - 1``; a kept bonus counts 0). ``draft_divergence``
        ``[B, K]`` (``verify``'s TV(q, p) per verified position, 0 beyond them): the guard's bound on a token's cost
        on sampled rows (module docstring); without it that bound is only what the row has spent on one token."""
        K = divergence.shape[1]
        pos = torch.arange(K, device=divergence.device)
        spent = torch.where(pos[None] < n_emitted[:, None], divergence.double(), 0.0)
        s = spent.sum(1)
        if K:
            self.token_max = torch.maximum(self.token_max, spent.amax(1))
            if draft_divergence is not None:
                bound = token_bound(self.info, draft_divergence.double()).amax(1)
                self.token_max = torch.maximum(self.token_max, bound)
        self.spent += s
        self.exposure += n_emitted.double() * u_of(self.theta)  # the u this round ran at
        self.emitted += n_emitted
        self.rounds += (n_emitted > 0).long()
        if self.eps == 0.0:
            return
        n, N = n_emitted.clamp(min=1).double(), self.emitted.clamp(min=1).double()
        ratio = torch.maximum(s / (self.eps * n), self.spent / (self.eps * N)) / TARGET
        step = STEP * (1.0 - ratio).clamp(-MAX_BACK, 1.0)
        theta = self.theta + step
        if self.guard:
            theta = torch.minimum(theta, theta_of(self.u_cap()))
        self.theta = torch.where(n_emitted > 0, theta, self.theta).clamp(THETA_START, THETA_MAX)

    def u_cap(self) -> torch.Tensor:
        """``[B]`` the spend guard: the largest ``u`` whose predicted round cost is at most ``DELTA`` of the slack
        the row will hold after the round and fits beside one token at its largest cost (module docstring)."""
        N = self.emitted.double()
        n_hat = N / self.rounds.clamp(min=1).double()  # the row's mean emitted tokens per round
        rate = (self.spent + PRIOR_RATE * PRIOR_WEIGHT) / (self.exposure + PRIOR_WEIGHT)  # TV per token per unit u
        per_u = (n_hat * rate).clamp(min=1e-12)  # the round's predicted cost per unit of u
        slack = self.eps * (N + n_hat) - self.spent
        # and after one token at its largest cost, even in a round that emits a single token, the prediction fits
        spare = self.eps * (N + 1) - self.spent - self.token_max
        return torch.minimum(DELTA * slack, spare).div(per_u).clamp(0.0, 1.0)

    def mean_divergence(self) -> torch.Tensor:
        """``[B]`` float64: each row's spent budget, the mean TV per emitted token (0 before any token)."""
        return self.spent / self.emitted.clamp(min=1).double()
