"""The deferral rules of SPEC.md section 3: names, families, alpha ranges and defaults.

One table, read by the input checks, the reference, every backend and the docs. A rule's
``alpha_range`` is the closed (or half-open, for ``lossy``) interval in which alpha is meaningful:
outside it the rule either stops changing (it is already at one of its ends) or is undefined.
A scalar alpha outside the range raises ``ValueError``; a per-row alpha outside it makes that row
invalid (``valid=False``), and ``validate=True`` raises instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    name: str
    family: str  # "A": one deferral bit per position; "B": a token set; "lossy": Leviathan App. A.5
    code: int  # the integer the kernels switch on (a constexpr in Triton, a switch in C++)
    default_alpha: float
    alpha_range: tuple  # (low, high)
    high_open: bool  # True when alpha must be strictly below `high`
    uses_alpha: bool
    ends: str  # one line for the README table


_RULES = (
    Rule("speculative", "A", 0, 0.0, (-math.inf, math.inf), False, False,
         "always defers: pi = p, exact speculative decoding (alpha ignored)"),
    Rule("chow", "A", 1, 0.5, (0.0, 1.0), False, True,
         "alpha = 1: never defers (pi = q); alpha = 0: defers unless max q^ = 1"),
    Rule("diff", "A", 2, 0.0, (-1.0, 1.0), False, True,
         "alpha = -1: always defers (pi = p); alpha = 1: never (pi = q)"),
    Rule("opt", "A", 3, 0.5, (-math.inf, math.inf), False, True,
         "alpha -> -inf: defers whenever q != p; alpha > 1 at T = 1: never (pi = q); alpha = 1 is a float tie"),
    Rule("token_v1", "B", 4, 0.3, (-1.0, 1.0), False, True,
         "alpha = -1: A empty (pi = p); alpha = 1: A = all (pi = q)"),
    Rule("token_v2", "B", 5, 0.3, (-1.0, 1.0), False, True,
         "alpha < 0: A empty (pi = p); alpha = 1: A = all (pi = q)"),
    Rule("token_v3", "B", 6, 0.5, (0.0, 1.0), False, True,
         "alpha = 0: A = modes of p^ (pi = p unless the draft is p's mode); alpha = 1: pi = q"),
    Rule("lossy", "lossy", 7, 0.3, (0.0, 1.0), True, True,
         "alpha = 0: exact speculative decoding; alpha -> 1: accepts almost every draft"),
)

RULE_INFO = {r.name: r for r in _RULES}
RULES = tuple(r.name for r in _RULES)

# SPEC.md section 5: the distinct random streams.
STREAM_DRAFT = 0  # the drafter's sampling (``sample``)
STREAM_ACCEPT = 1  # one acceptance uniform per verified position
STREAM_EMIT = 2  # the residual race at the rejected position, or the bonus race at position n_b


def get_rule(rule) -> Rule:
    if not isinstance(rule, str) or rule not in RULE_INFO:
        raise ValueError(f"rule: unknown rule {rule!r}; expected one of {', '.join(RULES)}")
    return RULE_INFO[rule]


def alpha_in_range(info: Rule, alpha: float) -> bool:
    if not info.uses_alpha:
        return True
    lo, hi = info.alpha_range
    if not math.isfinite(alpha):
        return False
    return lo <= alpha < hi if info.high_open else lo <= alpha <= hi


def describe_range(info: Rule) -> str:
    if not info.uses_alpha:
        return "ignored"
    lo, hi = info.alpha_range
    if lo == -math.inf and hi == math.inf:
        return "any finite number"
    return f"[{lo:g}, {hi:g}{')' if info.high_open else ']'}"
