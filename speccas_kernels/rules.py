"""The deferral rules of SPEC.md section 3: one table that every backend, test grid and bench list reads.

A rule is one row of ``_RULES``. Its formula is written once, here, as a small function that works on
PyTorch tensors (the reference) and on Triton tensors (the kernels wrap it with ``triton.jit``): only
arithmetic and comparisons, no calls. The C++ backends receive the rule's code, family, flags and alpha
range as op arguments and evaluate the formula in ``csrc/rules.h`` (the one C++ switch on the rule code;
its enum is generated from this table at build time). ``docs/ADDING_A_RULE.md`` lists what a new rule
touches.

Families (SPEC.md section 3):

* ``"A"``, a blend per position: ``pi = (1 - r) q + r p`` with ``r = weight(alpha, max_qh, max_ph, tv)``
  in ``[0, 1]``. A *binary* weight is the paper's deferral bit (``r = 1``: defer to the target); a
  non-binary one is a static mixture (``ensemble``).
* ``"B"``, a token set: ``pi = q 1[A] + eta p`` with ``v in A iff in_set(alpha, qh(v), ph(v), max_ph)``
  and ``eta = q(not A)``.
* ``"lossy"``: Leviathan et al.'s lossy speculative decoding, accept with ``min(1, p / ((1 - alpha) q))``.

Statistics a formula may read (``Rule.reads``): ``max_qh`` = max q^ and ``max_ph`` = max p^ (free: they
come with the softmax normalizers), ``tv`` = TV(q, p) over the sampling distributions (a second look over
the vocabulary), and, per token for family B, ``qh`` = q^(v), ``ph`` = p^(v). Hats are the unscaled (T = 1)
distributions.

A rule's ``alpha_range`` is the closed (or half-open, ``high_open``) interval in which alpha is
meaningful. A scalar alpha outside it raises ``ValueError``; a per-row alpha outside it makes that row
invalid (``valid=False``), and ``validate=True`` raises instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

FAMILY_A = "A"
FAMILY_B = "B"
FAMILY_LOSSY = "lossy"
FAMILIES = (FAMILY_A, FAMILY_B, FAMILY_LOSSY)
FAMILY_CODE = {FAMILY_A: 0, FAMILY_B: 1, FAMILY_LOSSY: 2}  # what kernels switch on (constexpr / op argument)
STATISTICS = ("max_qh", "max_ph", "tv", "qh", "ph")


# --------------------------------------------------------------------------------------------------
# The formulas. Arguments are tensors that broadcast together (or Triton blocks); return a comparison or
# a float expression in the arguments, never a Python constant (Triton needs a tensor).

def _always(alpha, max_qh, max_ph, tv):
    return alpha * 0.0 + 1.0


def _chow(alpha, max_qh, max_ph, tv):
    return max_qh < 1.0 - alpha


def _diff(alpha, max_qh, max_ph, tv):
    return max_qh < max_ph - alpha


def _opt(alpha, max_qh, max_ph, tv):
    return max_qh < max_ph - alpha * tv


def _ensemble(alpha, max_qh, max_ph, tv):
    return 1.0 - alpha


def _token_v1(alpha, qh, ph, max_ph):
    return qh >= max_ph - alpha


def _token_v2(alpha, qh, ph, max_ph):
    return ph >= max_ph - alpha


def _token_v3(alpha, qh, ph, max_ph):
    return ph >= (1.0 - alpha) * max_ph


def _max_ph_less_alpha(alpha, max_ph):  # the floor of token_v1 (on q^) and token_v2 (on p^)
    return max_ph - alpha


def _token_v3_floor(alpha, max_ph):
    return (1.0 - alpha) * max_ph


@dataclass(frozen=True)
class Rule:
    name: str
    family: str  # FAMILY_A, FAMILY_B or FAMILY_LOSSY
    code: int  # stable integer id: Triton constexpr, C++ switch, native op argument
    default_alpha: float
    alpha_range: Tuple[float, float]  # (low, high)
    high_open: bool  # alpha must be strictly below `high`
    uses_alpha: bool  # False: alpha is ignored (read as 0)
    reads: Tuple[str, ...]  # the statistics the formula reads (STATISTICS)
    weight: Optional[Callable] = None  # family A: r(alpha, max_qh, max_ph, tv)
    binary: bool = True  # family A: r is 0 or 1 (a deferral bit); False for a continuous blend
    # family A reading tv: r is monotone in tv, so equal values at tv = 0 and tv = 2 (bounds of any TV the kernels
    # sum) mean TV cannot change it (the Triton kernel then skips the position's second look)
    monotone_tv: bool = False
    in_set: Optional[Callable] = None  # family B: v in A (alpha, qh(v), ph(v), max_ph)
    # family B whose set reads one hat (q^ or p^) besides max_ph: the least value of that hat in A, (alpha,
    # max_ph) -> t with in_set == (hat >= t) (the Triton kernel's second look then skips every chunk whose largest
    # logit on that side lies below it)
    floor: Optional[Callable] = None
    grid: Tuple[float, ...] = (0.0,)  # analysis grid, from the exact end (pi = p) towards pi = q
    summary: str = ""  # README: the deferral rule or token set, one line
    ends: str = ""  # README: the two ends of alpha, one line
    # The ends as claims the tests check: alphas that give exact speculative decoding on any logits
    # with max q^ < 1, and alphas that give the drafter alone (pi = q) at the temperatures listed.
    speculative_at: Tuple[float, ...] = ()
    drafter_at: Tuple[float, ...] = ()
    drafter_temps: Tuple[float, ...] = (1.0, 0.7, 0.0)

    @property
    def family_code(self) -> int:
        return FAMILY_CODE[self.family]

    @property
    def needs_tv(self) -> bool:
        """Reads TV(q, p): a second look over the vocabulary at every verified position."""
        return "tv" in self.reads

    @property
    def supports_token_drafts(self) -> bool:
        """Defined for drafts without drafter logits (q one-hot at the draft): the rule reads nothing of q
        that a one-hot q would fake (max q^ = 1 would always keep the draft; q^(v) would be 0 or 1)."""
        return not {"max_qh", "qh"} & set(self.reads)


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


_UNIT = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
_SIGNED = (-1.0, -0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)

_RULES = (
    Rule("speculative", FAMILY_A, 0, 0.0, (-math.inf, math.inf), False, False, (), weight=_always,
         summary="always defer", ends="pi = p: exact speculative decoding", speculative_at=(123.0,)),
    Rule("chow", FAMILY_A, 1, 0.5, (0.0, 1.0), False, True, ("max_qh",), weight=_chow, grid=_UNIT,
         summary="defer iff max q^ < 1 - alpha",
         ends="alpha = 1: never defers (pi = q); alpha = 0: defers unless max q^ = 1",
         speculative_at=(0.0,), drafter_at=(1.0,)),
    Rule("diff", FAMILY_A, 2, 0.0, (-1.0, 1.0), False, True, ("max_qh", "max_ph"), weight=_diff, grid=_SIGNED,
         summary="defer iff max q^ < max p^ - alpha",
         ends="alpha = -1: always defers (pi = p); alpha = 1: never (pi = q)",
         speculative_at=(-1.0,), drafter_at=(1.0,)),
    # opt: alpha >= 1 at T = 1 never defers because max p^ - max q^ <= TV(q, p); at alpha = 1 exactly this is
    # an equality whenever p exceeds q only at their common mode, and rounding decides, so the claim is above 1.
    Rule("opt", FAMILY_A, 3, 0.5, (-math.inf, math.inf), False, True, ("max_qh", "max_ph", "tv"), weight=_opt,
         monotone_tv=True, grid=(-20.0, -5.0, -2.0, -1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 0.9, 1.0),
         summary="defer iff max q^ < max p^ - alpha TV(q, p)",
         ends="alpha -> -inf: defers whenever q != p; alpha > 1 at T = 1: never (at exactly 1 rounding decides)",
         speculative_at=(-1e9,), drafter_at=(1.001, 3.0), drafter_temps=(1.0,)),
    Rule("token_v1", FAMILY_B, 4, 0.3, (-1.0, 1.0), False, True, ("max_ph", "qh"), in_set=_token_v1, grid=_SIGNED,
         floor=_max_ph_less_alpha,
         summary="v in A iff q^(v) >= max p^ - alpha",
         ends="alpha = -1: A empty (pi = p); alpha = 1: A = all (pi = q)",
         speculative_at=(-1.0,), drafter_at=(1.0,)),
    Rule("token_v2", FAMILY_B, 5, 0.3, (-1.0, 1.0), False, True, ("max_ph", "ph"), in_set=_token_v2,
         floor=_max_ph_less_alpha,
         grid=(-0.01, 0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9, 1.0),
         summary="v in A iff p^(v) >= max p^ - alpha",
         ends="alpha < 0: A empty (pi = p); alpha = 1: A = all (pi = q)",
         speculative_at=(-0.01, -1.0), drafter_at=(1.0,)),
    Rule("token_v3", FAMILY_B, 6, 0.5, (0.0, 1.0), False, True, ("max_ph", "ph"), in_set=_token_v3, grid=_UNIT,
         floor=_token_v3_floor,
         summary="v in A iff p^(v) >= (1 - alpha) max p^",
         ends="alpha = 0: A = p's modes (pi = p unless the draft is p's mode); alpha = 1: pi = q",
         drafter_at=(1.0,)),
    Rule("lossy", FAMILY_LOSSY, 7, 0.3, (0.0, 1.0), True, True, (),
         grid=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99),
         summary="accept with min(1, p / ((1 - alpha) q))",
         ends="alpha = 0: exact speculative decoding; alpha -> 1: accepts almost every draft",
         speculative_at=(0.0,)),
    Rule("ensemble", FAMILY_A, 8, 0.3, (0.0, 1.0), False, True, (), weight=_ensemble, binary=False,
         grid=(0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
         summary="no deferral: the static blend pi = (1 - alpha) p + alpha q (r = 1 - alpha)",
         ends="alpha = 0: pi = p, exact speculative decoding; alpha = 1: pi = q",
         speculative_at=(0.0,), drafter_at=(1.0,)),
)


def _alpha_grid(r: Rule):
    lo, hi = max(r.alpha_range[0], -2.0), min(r.alpha_range[1], 2.0)
    alphas = [lo + (hi - lo) * k / 16 for k in range(17)] + list(r.grid) + list(r.drafter_at) + list(r.speculative_at)
    return [a for a in alphas if alpha_in_range(r, a)]


def _floor_agrees(r: Rule) -> bool:
    """Whether ``floor`` gives ``in_set`` exactly (v in A iff its hat >= floor) on a grid, the floor included."""
    for alpha in _alpha_grid(r):
        for max_ph in (0.001, 0.05, 0.3, 0.7, 1.0):
            t = r.floor(alpha, max_ph)
            for x in [max_ph * k / 32 for k in range(33)] + [t, max(t, 0.0)]:
                if bool(r.in_set(alpha, x, x, max_ph)) != (x >= t):
                    return False
    return True


def _upward_closed(r: Rule) -> bool:
    """Whether a token set keeps every token that is more probable (in q^ and p^) than one it keeps, checked on a
    grid of alphas in range, max p^ and probabilities. The Triton kernel relies on it: where the formula holds at
    q^ = p^ = 0, A is the whole vocabulary (eta = 0) and a token set's second look reads nothing."""
    for alpha in _alpha_grid(r):
        for max_ph in (0.001, 0.05, 0.3, 0.7, 1.0):
            levels = [max_ph * k / 32 for k in range(33)]
            kept = [bool(r.in_set(alpha, x, x, max_ph)) for x in levels]
            if any(a and not b for a, b in zip(kept, kept[1:])):
                return False
    return True


def _monotone_in_tv(r: Rule) -> bool:
    """Whether a binary weight is monotone in tv on [0, 2] (either way, per alpha and statistics), checked on a grid
    of alphas in range, max q^, max p^ and tv. The Triton kernel relies on it: where r is the same at tv = 0 and 2,
    TV cannot change it, and the position's second look reads no tile."""
    levels = (0.0, 1e-3, 0.05, 0.3, 0.5, 0.7, 0.95, 1.0)
    tvs = [2.0 * k / 32 for k in range(33)]
    for alpha in _alpha_grid(r):
        for mq in levels:
            for mp in levels:
                steps = [float(r.weight(alpha, mq, mp, t)) for t in tvs]
                d = [b - a for a, b in zip(steps, steps[1:])]
                if any(x < 0 for x in d) and any(x > 0 for x in d):
                    return False
    return True


def _check_table(rules) -> None:
    """The table's own consistency: a malformed row fails at import, never later in a kernel."""
    names, codes = set(), set()
    for r in rules:
        if r.name in names or r.code in codes:
            raise ValueError(f"rules: duplicate name or code in {r}")
        names.add(r.name)
        codes.add(r.code)
        if r.family not in FAMILIES:
            raise ValueError(f"rules: {r.name}: unknown family {r.family!r}")
        if not set(r.reads) <= set(STATISTICS):
            raise ValueError(f"rules: {r.name}: unknown statistics {sorted(set(r.reads) - set(STATISTICS))}")
        if (r.family == FAMILY_A) != (r.weight is not None) or (r.family == FAMILY_B) != (r.in_set is not None):
            raise ValueError(f"rules: {r.name}: family {r.family} needs exactly its formula (weight or in_set)")
        if r.family == FAMILY_B and not {"qh", "ph"} & set(r.reads):
            raise ValueError(f"rules: {r.name}: a token set must read qh or ph")
        if r.family == FAMILY_B and not _upward_closed(r):
            raise ValueError(f"rules: {r.name}: a token set must keep every token more probable than one it keeps")
        if r.floor is not None and (r.family != FAMILY_B or {"qh", "ph"} <= set(r.reads) or not _floor_agrees(r)):
            raise ValueError(f"rules: {r.name}: floor must be the least q^ or p^ in A of a set that reads one of them")
        if r.monotone_tv and (r.family != FAMILY_A or not r.needs_tv or not r.binary or not _monotone_in_tv(r)):
            raise ValueError(f"rules: {r.name}: monotone_tv needs a binary weight that reads tv and is monotone in it")
        if not r.summary or not r.ends:
            raise ValueError(f"rules: {r.name}: summary and ends (the README line) are required")
        for a in r.speculative_at + r.drafter_at:
            if not alpha_in_range(r, a):
                raise ValueError(f"rules: {r.name}: claimed end alpha = {a} is outside its range")


_check_table(_RULES)

RULE_INFO = {r.name: r for r in _RULES}
RULE_BY_CODE = {r.code: r for r in _RULES}
RULES = tuple(r.name for r in _RULES)
DEFAULT_ALPHA = {r.name: r.default_alpha for r in _RULES}
ANALYSIS_GRIDS = {r.name: list(r.grid) for r in _RULES}

# SPEC.md section 5: the distinct random streams.
STREAM_DRAFT = 0  # the drafter's sampling (``sample``)
STREAM_ACCEPT = 1  # one acceptance uniform per verified position
STREAM_EMIT = 2  # the residual race at the rejected position, or the bonus race at position n_b


def get_rule(rule) -> Rule:
    if not isinstance(rule, str) or rule not in RULE_INFO:
        raise ValueError(f"rule: unknown rule {rule!r}; expected one of {', '.join(RULES)}")
    return RULE_INFO[rule]


def representatives() -> Tuple[str, ...]:
    """One rule per distinct code path of the kernels (family, reads TV), in table order: the subset that
    slow test grids and benchmarks on slow devices run."""
    seen, out = set(), []
    for r in _RULES:
        key = (r.family, r.needs_tv, r.binary)
        if key not in seen:
            seen.add(key)
            out.append(r.name)
    return tuple(out)


def rules_of(family: str) -> Tuple[str, ...]:
    if family not in FAMILIES:
        raise ValueError(f"family: unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    return tuple(r.name for r in _RULES if r.family == family)


# --------------------------------------------------------------------------------------------------
# Derived artefacts: the README's rules table and the C++ enum (written into the build by setup.py).

README_BEGIN = "<!-- rules table: generated by `python -m speccas_kernels.tables readme`; do not edit -->"
README_END = "<!-- end of rules table -->"


def readme_table() -> str:
    """The README's table of rules, from this table."""
    lines = ["| rule | family | deferral / token set | alpha range | default | the ends |",
             "|---|---|---|---|---|---|"]
    for r in _RULES:
        default = f"{r.default_alpha:g}" if r.uses_alpha else "-"
        fam = "-" if r.family == FAMILY_LOSSY else r.family
        lines.append(f"| `{r.name}` | {fam} | {r.summary} | {describe_range(r)} | {default} | {r.ends} |")
    return "\n".join(lines)


def c_header() -> str:
    """``speccas_rules_gen.h``: the rule codes as a C++ enum, so csrc never restates them."""
    lines = ["// Generated from speccas_kernels/rules.py by setup.py: do not edit.", "#pragma once", "",
             "namespace speccas {", "", "enum RuleCode : int {"]
    lines += [f"  kRule_{r.name} = {r.code}," for r in _RULES]
    lines += ["};", "", "enum FamilyCode : int {"]
    lines += [f"  kFamily{'Lossy' if f == FAMILY_LOSSY else f} = {c}," for f, c in FAMILY_CODE.items()]
    lines += ["};", "", "}  // namespace speccas", ""]
    return "\n".join(lines)


def update_readme(path: str) -> bool:
    """Rewrite the rules table between the README's markers; True when the file changed."""
    with open(path) as f:
        text = f.read()
    i, j = text.find(README_BEGIN), text.find(README_END)
    if i < 0 or j < i:
        raise SystemExit(f"{path}: the markers {README_BEGIN!r} ... {README_END!r} are missing")
    new = text[: i + len(README_BEGIN)] + "\n" + readme_table() + "\n" + text[j:]
    if new != text:
        with open(path, "w") as f:
            f.write(new)
    return new != text
