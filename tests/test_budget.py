"""The quality budget (``speccas.budget``, ``generate(quality_budget=eps)``): the controller on synthetic rounds with
known TV, and the decode loop on tiny random pairs (float64, so greedy ties cannot flip)."""

from __future__ import annotations

import math

import pytest
import torch

import speccas_kernels as sk
from speccas import budget
from speccas.budget import QualityBudget, alpha_of, budget_rules, ends, theta_of, u_of
from speccas_kernels.rules import RULE_INFO

pytestmark = pytest.mark.usefixtures("one_thread")

V = 12
TV = 0.25  # TV(q, p) at every synthetic position
CONFIDENCE = (0.30, 0.55, 0.75, 0.90, 0.97)  # the drafter's max q^ at the synthetic positions


def _pair(c: float, tv: float):
    """Logits of q and p over V ids with max q = c at id 0 and TV(q, p) = tv exactly: p moves mass tv from id 0
    to id 1 (q spreads the rest evenly)."""
    q = torch.full((V,), (1.0 - c) / (V - 1), dtype=torch.float64)
    q[0] = c
    p = q.clone()
    p[0] -= tv
    p[1] += tv
    assert p.min() > 0 and abs(0.5 * (q - p).abs().sum() - tv) < 1e-12
    return q.log(), p.log()


def _simulate(rule: str, eps, tv_rows, *, seeds=None, K=4, n_rounds=150, fixed_alpha=None, guard=True,
              temperature=1.0, schedule=None, prior=True):
    """``n_rounds`` rounds of ``verify`` on synthetic logits (row b: TV(q, p) = ``tv_rows[b]`` at every position,
    the drafter's confidence drawn from ``CONFIDENCE`` with the row's own seed; or, with ``schedule(round)`` a list
    of K TVs, those TVs on every row at confidence 0.99), alpha from the controller (or fixed). ``prior``: the
    controller reads the drafts' TV(q, p) too, as the decode loop does. Returns the controller (its totals) and the
    alpha trace ``[rounds, B]``."""
    B = len(tv_rows)
    seeds = torch.tensor(seeds if seeds is not None else [11 + b for b in range(B)])
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    levels = torch.tensor(CONFIDENCE, dtype=torch.float64)
    ctl = QualityBudget(rule, eps, B, "cpu", guard=guard, greedy=temperature == 0)
    trace = []
    for r in range(n_rounds):
        zq = torch.empty(B, K, V, dtype=torch.float64)
        zp = torch.empty(B, K + 1, V, dtype=torch.float64)
        for b in range(B):
            c = levels[torch.randint(0, len(CONFIDENCE), (K,), generator=gens[b])]
            tv = [tv_rows[b]] * K if schedule is None else schedule(r)
            for i in range(K):
                zq[b, i], zp[b, i] = _pair(0.99 if schedule else float(c[i]), tv[i])
            zp[b, K] = zp[b, K - 1]
        x = torch.stack([sk.sample(zq[:, i], temperature=1.0, seed=seeds, offset=r * 100 + i, backend="reference")
                         for i in range(K)], 1)
        alpha = ctl.alpha() if fixed_alpha is None else torch.full((B,), fixed_alpha)
        trace.append(alpha)
        out = sk.verify(zq, zp, x, rule=rule, alpha=alpha, temperature=temperature, seed=seeds, offset=r * 100,
                        return_divergence=True, backend="reference")
        ctl.update(out.divergence, out.num_accepted + 1, out.draft_divergence if prior else None)
    return ctl, torch.stack(trace)


# ------------------------------------------------------------------------------------ the controller

@pytest.mark.parametrize("rule", ["chow", "diff", "token_v2"])
def test_controller_holds_the_budget_and_spends_it(rule):
    eps = 0.03
    ctl, trace = _simulate(rule, eps, [TV, TV, TV])
    spent = ctl.mean_divergence()
    assert (ctl.emitted > 300).all(), ctl.emitted
    assert (spent <= eps).all(), f"{rule}: the running mean {spent.tolist()} is over the budget {eps}"
    # not by staying exact: the rows spend a real part of the budget, at alphas away from the speculative end
    assert (spent >= 0.4 * eps).all(), f"{rule}: spent only {spent.tolist()} of {eps}"
    spec, _ = ends(RULE_INFO[rule])
    assert (trace[-20:] != spec).any(0).all(), f"{rule}: the alpha never left the speculative end"


def test_fixed_alpha_at_the_drafter_end_breaks_the_budget():
    """Negative control: the same rounds at the drafter end. pi = q at every position, so every draft is accepted
    and spends TV, and the bonus spends 0: exactly TV K / (K + 1) per token, far over the budget."""
    ctl, _ = _simulate("chow", 0.03, [TV, TV, TV], fixed_alpha=1.0, n_rounds=60)
    assert ctl.mean_divergence().tolist() == pytest.approx([TV * 4 / 5] * 3, abs=1e-6)


def test_the_spend_guard_holds_short_rows():
    """Eight rounds (about 20-30 tokens a row): dual ascent alone steps away from the exact end before the row has
    the slack, and 2 of 8 rows end over eps; with the guard every row ends at or under eps and still spends part of
    the budget at alphas away from the exact end (it saves target forwards, it does not just stay exact)."""
    eps, seeds = 0.03, list(range(100, 108))
    free, _ = _simulate("chow", eps, [TV] * 8, seeds=seeds, n_rounds=8, guard=False)
    held, trace = _simulate("chow", eps, [TV] * 8, seeds=seeds, n_rounds=8)
    over = (free.mean_divergence() > eps).sum()
    assert over >= 2, f"the case no longer overspends without the guard: {free.mean_divergence().tolist()}"
    spent = held.mean_divergence()
    assert (spent <= eps).all(), f"guarded rows over eps {eps}: {spent.tolist()}"
    assert (spent > 0).sum() >= 4 and (trace[-3:] > 0).any(0).sum() >= 4, (spent.tolist(), trace[-3:].tolist())


def test_the_spend_guard_holds_greedy_rows():
    """T = 0, where a kept disagreement costs a whole token: with TV(q, p) = 0.28 the positions of confidence 0.30
    and 0.55 have p's argmax elsewhere (a disagreement once alpha keeps them), the others agree. In 16 rounds (20-40
    tokens) dual ascent alone takes a disagreement it cannot pay for; the guard takes none there, and in 30 rounds
    (45-70 tokens) it takes whole disagreements only when they fit: every row at or under eps."""
    eps, seeds, tv = 0.03, list(range(200, 208)), 0.28
    free, _ = _simulate("chow", eps, [tv] * 8, seeds=seeds, n_rounds=16, guard=False, temperature=0.0)
    assert (free.mean_divergence() > eps).sum() >= 2, free.mean_divergence().tolist()
    short, _ = _simulate("chow", eps, [tv] * 8, seeds=seeds, n_rounds=16, temperature=0.0)
    assert (short.mean_divergence() <= eps).all(), short.mean_divergence().tolist()
    held, _ = _simulate("chow", eps, [tv] * 8, seeds=seeds, n_rounds=30, temperature=0.0)
    spent = held.mean_divergence()
    assert (spent <= eps).all(), f"greedy rows over eps {eps}: {spent.tolist()}"
    assert (held.spent == held.spent.round()).all() and (held.spent >= 1).sum() >= 4, held.spent.tolist()


def test_the_drafts_prior_holds_the_first_expensive_token():
    """T = 1, eps = 0.01. The first round shows drafts with TV(q, p) = 0.5 (at the exact end: nothing spent), then
    the drafter equals the target (TV 0) except one position of TV 0.5 in round 6, all at confidence 0.99 (chow keeps
    them once alpha > 0.01). Learning a token's largest cost only from the row's own spends (0 until then), the guard
    lets alpha climb over the free rounds and the row pays 0.5 in about 35 tokens: every row over eps. Bounded by the
    drafts' TV(q, p), it stays exact until a 0.5 token fits (about 50 tokens), so the rows are held; over a longer run
    they then leave the exact end and spend, and a second expensive token (round 20) still fits."""
    eps, seeds = 0.01, list(range(300, 306))

    def schedule(r):
        return [0.5] * 4 if r == 0 else [0.5, 0.0, 0.0, 0.0] if r in (6, 20) else [0.0] * 4

    kw = dict(seeds=seeds, n_rounds=8, schedule=schedule)
    old, _ = _simulate("chow", eps, [0.0] * 6, prior=False, **kw)
    assert (old.mean_divergence() > eps).all(), f"the case no longer overspends: {old.mean_divergence().tolist()}"
    assert old.token_max.tolist() == pytest.approx([0.5] * 6, abs=1e-6)  # learnt from the token it paid for
    new, _ = _simulate("chow", eps, [0.0] * 6, **kw)
    assert (new.mean_divergence() <= eps).all(), new.mean_divergence().tolist()
    assert new.token_max.tolist() == pytest.approx([0.5] * 6, abs=1e-6)  # from round 0's drafts
    assert (new.spent < 1e-9).all(), new.spent.tolist()  # it stayed exact through round 6
    kw["n_rounds"] = 40
    held, trace = _simulate("chow", eps, [0.0] * 6, **kw)
    spent = held.mean_divergence()
    assert (spent <= eps).all(), f"rows over eps {eps}: {spent.tolist()}"
    assert (held.spent > 0.49).all() and (trace[-5:] > 0.5).all(), (held.spent.tolist(), trace[-5:].tolist())


def test_the_drafts_prior_leaves_greedy_rows_alone():
    """At T = 0 a token's largest cost is 1 from the start: the prior, a maximum with it, changes nothing (so the
    bench files greedy rows of either controller together)."""
    kw = dict(seeds=list(range(200, 204)), n_rounds=30, temperature=0.0)
    with_prior, trace = _simulate("chow", 0.03, [0.28] * 4, **kw)
    without, trace0 = _simulate("chow", 0.03, [0.28] * 4, prior=False, **kw)
    assert torch.equal(trace, trace0) and torch.equal(with_prior.spent, without.spent)
    assert (with_prior.token_max == 1.0).all() and (trace > 0).any()


@pytest.mark.parametrize("rule", budget_rules())
def test_a_tokens_cost_is_within_the_bound_from_tv_q_p(rule):
    """verify's ``draft_divergence`` is TV(q, p) over the sampling distributions, and the budget's ``token_bound``
    of it covers the divergence a token of the rule costs, at every alpha (SPEC.md section 6). For the token sets
    it must be more than TV(q, p): where q = p they still spend (q = p = (0.6, 0.4), A the first id: 0.24)."""
    g = torch.Generator().manual_seed(5)
    B, K = 6, 5
    zq = torch.randn(B, K, V, generator=g, dtype=torch.float64) * 2
    zp = torch.randn(B, K + 1, V, generator=g, dtype=torch.float64) * 2
    zp[:2, :K] = zq[:2]  # q = p on two rows
    x = torch.randint(0, V, (B, K), generator=g)
    info = RULE_INFO[rule]
    for u in (0.0, 0.2, 0.5, 0.8, 1.0):
        alpha = alpha_of(info, torch.full((B,), u, dtype=torch.float64))
        out = sk.verify(zq, zp, x, rule=rule, alpha=alpha, temperature=0.8, return_divergence=True,
                        backend="reference")
        q, p = torch.softmax(zq / 0.8, -1), torch.softmax(zp[:, :K] / 0.8, -1)
        torch.testing.assert_close(out.draft_divergence.double(), (q - p).clamp(min=0).sum(-1), atol=1e-6, rtol=0)
        bound = budget.token_bound(info, out.draft_divergence.double())
        assert (out.divergence.double() <= bound + 1e-6).all(), (rule, u, (out.divergence - bound).max())
    two = torch.tensor([[[math.log(0.6), math.log(0.4)] + [-math.inf] * (V - 2)]], dtype=torch.float64)
    edge = sk.verify(two, torch.cat([two, two], 1), torch.zeros(1, 1, dtype=torch.long), rule="token_v2",
                     alpha=0.1, return_divergence=True, backend="reference")  # A = {0}: pi(0) = 0.6 + 0.4 * 0.6
    assert edge.draft_divergence.item() == 0.0 and edge.divergence.item() == pytest.approx(0.24)
    assert budget.token_bound(RULE_INFO["token_v2"], torch.zeros(1)).item() == 0.25
    with pytest.raises(ValueError, match="rule"):
        budget.token_bound(RULE_INFO["lossy"], torch.zeros(1))


def test_the_spend_guard_caps_u_by_the_slack():
    """The cap on its own: no slack, the exact end; slack, the largest u whose predicted cost is DELTA of it."""
    ctl = QualityBudget("chow", 0.05, 3, "cpu")
    ctl.emitted[:] = 40
    ctl.rounds[:] = 8  # n_hat = 5
    ctl.spent[:] = torch.tensor([0.0, 2.25, 3.0], dtype=torch.float64)  # slack 2.25, 0, -0.75
    ctl.exposure[:] = torch.tensor([19.5, 0.0, 0.0], dtype=torch.float64)  # rate (0 + 0.5) / 20 = 0.025
    cap = ctl.u_cap()
    assert cap[0].item() == pytest.approx(min(1.0, budget.DELTA * 2.25 / (5 * 0.025)))
    ctl.spent[0] = 1.6  # slack 0.65; after one token of the row's largest cost (0 so far): 0.05 * 41 - 1.6 = 0.45
    rate = (1.6 + 0.5) / 20
    assert ctl.u_cap()[0].item() == pytest.approx(min(budget.DELTA * 0.65, 0.45) / (5 * rate))
    ctl.greedy[0], ctl.token_max[0] = True, 1.0
    assert ctl.u_cap()[0].item() == 0.0
    ctl.spent[0] = 0.0
    assert cap[1:].tolist() == [0.0, 0.0]
    # after an over-spending round the rows without slack are back at the exact end, whatever the dual step says
    ctl.theta[:] = 3.0
    div = torch.tensor([[0.0] * 4, [0.25] * 4, [0.25] * 4], dtype=torch.float64)  # rows 1, 2 spend 1.0 more
    ctl.update(div, torch.tensor([5, 5, 5]))
    assert ctl.alpha()[1:].tolist() == [0.0, 0.0] and ctl.alpha()[0].item() > 0.5, ctl.alpha().tolist()
    # and theta_of inverts u_of on [0, 1], 0 exactly at the exact end
    u = torch.tensor([0.0, 1e-6, 0.3, 1.0], dtype=torch.float64)
    assert u_of(theta_of(u)).tolist() == pytest.approx(u.tolist(), abs=1e-12) and u_of(theta_of(u))[0] == 0.0


def test_rows_are_independent():
    """A row whose drafter is the target spends nothing and ends at the drafter's end; the others stay lower and
    within budget, each at its own alpha."""
    eps = 0.03
    ctl, trace = _simulate("chow", eps, [0.0, TV, 0.15])
    spent = ctl.mean_divergence()
    assert spent[0] < 1e-12 and float(trace[-1, 0]) == 1.0, (spent.tolist(), trace[-1].tolist())
    assert (spent[1:] <= eps).all(), spent.tolist()
    # the row with the closer drafter gets the larger alphas
    assert trace[-50:, 2].mean() > trace[-50:, 1].mean() + 0.02, trace[-50:].mean(0).tolist()
    # and a row's trace does not depend on its neighbours: alone it is the same
    alone, trace1 = _simulate("chow", eps, [TV], seeds=[12])
    assert torch.equal(trace1[:, 0], trace[:, 1]) and torch.equal(alone.spent[0], ctl.spent[1])


def test_eps_zero_stays_at_the_exact_end():
    ctl, trace = _simulate("chow", 0.0, [TV], n_rounds=5)
    assert (trace == 0.0).all()


@pytest.mark.parametrize("rule", budget_rules())
def test_reparametrisation_is_monotone_between_the_ends(rule):
    info = RULE_INFO[rule]
    spec, drafter = ends(info)
    u = torch.linspace(0, 1, 101, dtype=torch.float64)
    a = alpha_of(info, u)
    assert float(a[0]) == spec and float(a[-1]) == drafter
    d = torch.diff(a) * (1 if drafter > spec else -1)
    assert (d > 0).all(), f"{rule}: alpha(u) is not strictly monotone"
    theta = torch.tensor([-4.0, -3.95, 0.0, 3.95, 4.0], dtype=torch.float64)
    assert u_of(theta).tolist()[0] == 0.0 and u_of(theta).tolist()[-1] == 1.0


def test_budget_rules_are_the_ones_with_both_ends():
    assert set(budget_rules()) == {"chow", "diff", "opt", "token_v1", "token_v2", "ensemble"}


# ------------------------------------------------------------------------------------- the decode loop

transformers = pytest.importorskip("transformers")

from helpers import drafter_of, tiny  # noqa: E402

from speccas.generate import generate  # noqa: E402


@pytest.fixture(scope="module")
def llama_pair():
    t = tiny("llama", 0)
    return t, drafter_of(t, noise=0.8)


def _prompts(B=3, P=6, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 192, (B, P), generator=g)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_budget_zero_is_exact_speculative_decoding(llama_pair, temperature):
    target, drafter = llama_pair
    ids = _prompts()
    kw = dict(temperature=temperature, max_new_tokens=14, num_draft_tokens=3, seed=torch.tensor([5, 6, 7]))
    spec = generate(target, drafter, ids, method="speculative", **kw)
    out = generate(target, drafter, ids, method="cascade", rule="chow", quality_budget=0.0, **kw)
    assert out.tokens == spec.tokens
    assert out.divergence == [0.0, 0.0, 0.0] and out.final_alpha == [0.0, 0.0, 0.0] and out.quality_budget == 0.0
    if temperature == 0.0:
        ref = generate(target, None, ids, method="target", **kw)
        assert out.tokens == ref.tokens


def test_spent_budget_at_greedy_is_the_disagreement_with_the_target(llama_pair):
    """At T = 0 the reported divergence is exactly the fraction of emitted tokens that differ from the target's
    greedy token at the same prefix: recomputed here by teacher-forcing the target on the output."""
    target, drafter = llama_pair
    ids = _prompts()
    out = generate(target, drafter, ids, method="cascade", rule="chow", quality_budget=0.2, temperature=0.0,
                   max_new_tokens=24, num_draft_tokens=4, draft_threshold=0.0)
    differ = []
    with torch.no_grad():
        for b, toks in enumerate(out.tokens):
            seq = torch.cat([ids[b], torch.tensor(toks)])[None]
            greedy = target(seq).logits[0, ids.shape[1] - 1:-1].argmax(-1)
            differ.append((greedy != torch.tensor(toks)).double().mean().item())
    assert out.divergence == pytest.approx(differ, abs=1e-12), (out.divergence, differ)
    assert max(differ) > 0, "the budget was never spent: the test would not see a miscount"
    assert out.alpha is None and len(out.final_alpha) == 3


def test_batch_invariance_with_a_budget(llama_pair):
    target, drafter = llama_pair
    ids = _prompts()
    seeds = torch.tensor([21, 22, 23])
    kw = dict(method="cascade", rule="diff", quality_budget=0.1, temperature=1.0, max_new_tokens=16,
              num_draft_tokens=3)
    full = generate(target, drafter, ids, seed=seeds, **kw)
    for b in range(ids.shape[0]):
        alone = generate(target, drafter, ids[b:b + 1], seed=int(seeds[b]), **kw)
        assert alone.tokens[0] == full.tokens[b], f"row {b}"
        # the divergence is summed in another order in a batch: equal up to rounding, and so is the controller
        assert alone.divergence[0] == pytest.approx(full.divergence[b], rel=1e-9, abs=1e-12)
        assert alone.final_alpha[0] == pytest.approx(full.final_alpha[b], rel=1e-6, abs=1e-9)
        assert alone.row_target_forwards[0] == full.row_target_forwards[b]
    assert sum(full.row_target_forwards) * full.tokens_per_target_forward == pytest.approx(full.new_tokens)


@pytest.mark.parametrize("kw,exc,name", [
    (dict(quality_budget=-0.01), ValueError, "quality_budget"),
    (dict(quality_budget=1.5), ValueError, "quality_budget"),
    (dict(quality_budget=math.nan), ValueError, "quality_budget"),
    (dict(quality_budget="0.1"), TypeError, "quality_budget"),
    (dict(quality_budget=True), TypeError, "quality_budget"),
    (dict(quality_budget=0.1, alpha=0.5), ValueError, "alpha"),
    (dict(quality_budget=0.1, method="speculative"), ValueError, "quality_budget"),
    (dict(quality_budget=0.1, method="token_cascade"), ValueError, "quality_budget"),
    (dict(quality_budget=0.1, rule="token_v3"), ValueError, "rule"),
    (dict(quality_budget=0.1, rule="lossy"), ValueError, "rule"),
    (dict(quality_budget=0.1, rule="speculative"), ValueError, "rule"),
    (dict(quality_budget=0.1, rule="nope"), ValueError, "rule"),
])
def test_bad_budget_arguments_name_themselves(llama_pair, kw, exc, name):
    target, drafter = llama_pair
    args = dict(method="cascade", rule="chow", max_new_tokens=2)
    args.update(kw)
    with pytest.raises(exc, match=name):
        generate(target, drafter, _prompts(1), **args)


def test_no_budget_leaves_the_fields_empty(llama_pair):
    target, drafter = llama_pair
    out = generate(target, drafter, _prompts(1), method="cascade", rule="chow", alpha=0.3, max_new_tokens=4)
    assert out.quality_budget is None and out.divergence is None and out.final_alpha is None
    assert out.stats()["divergence"] is None


def test_bench_report_pairs_rows_by_prompt():
    """bench/quality_budget.py's summary: spent budget pooled over tokens, savings paired with speculative."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "quality_budget.py"
    spec = importlib.util.spec_from_file_location("quality_budget_bench", path)
    qb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(qb)
    base = dict(domain="prose", temperature=0.7, rule="chow", max_new_tokens=8, commit="c", date="2026-12-01",
                load="1.0-1.0", machine="m", final_alpha=0.5, tokens=[1])
    rows = [dict(base, eps=0.0, config="speculative", rule="speculative", prompt="a", new_tokens=8,
                 target_forwards=4, divergence=0.0),
            dict(base, eps=0.0, config="speculative", rule="speculative", prompt="b", new_tokens=8,
                 target_forwards=4, divergence=0.0),
            dict(base, eps=0.03, config="budget0.03", prompt="a", new_tokens=8, target_forwards=2, divergence=0.05),
            dict(base, eps=0.03, config="budget0.03", prompt="b", new_tokens=4, target_forwards=2, divergence=0.02),
            dict(base, eps=0.03, config="budget0.03", prompt="c", new_tokens=8, target_forwards=1, divergence=0.0),
            # another length and controller: its own setting, no speculative rows of its length to pair with
            dict(base, eps=0.03, config="budget0.03", prompt="a", new_tokens=16, target_forwards=1, divergence=0.0,
                 max_new_tokens=16, controller="dual+guard")]
    (s,) = qb.summarize(rows)
    assert s["controller"] == "dual" and s["max_new_tokens"] == 8
    assert s["prompts"] == 2  # prompt c has no speculative row to pair with
    assert s["spent"] == pytest.approx((0.05 * 8 + 0.02 * 4) / 12) and s["over"] == 1
    assert s["fpt"] == pytest.approx(4 / 12) and s["fpt_spec"] == pytest.approx(0.5)
    assert 1 - s["ratio"] == pytest.approx(1 / 3)
    assert [qb.controller_of(e, T) for e, T in ((0.0, 0.7), (0.03, 0.0), (0.03, 0.7))] == [
        None, "dual+guard", qb.CONTROLLER]
    text = qb.report(rows)
    assert "| prose | 0.7 | 0.03 | chow | 8 | dual | 2 |" in text
    assert "| prose | 0.7 | 0.03 | 8 | dual | a | 0.0500 * | 0.50 | 8 (8) | 2 (4) |" in text
