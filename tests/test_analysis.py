"""speccas.analysis: the teacher-forced quality/cost math on hand-computed cases, and a smoke test
of the pipeline on tiny random models (no real weights)."""

import math

import numpy as np
import pytest
import torch

from speccas import analysis as an


def _logits(*rows):
    """Probability rows -> float64 logits [N, V] (log-probabilities)."""
    return torch.tensor(rows, dtype=torch.float64).log()


Q = (0.5, 0.3, 0.2)
P = (0.2, 0.5, 0.3)


def _kl(a, b):
    return sum(x * math.log(x / y) for x, y in zip(a, b) if x > 0)


def _ll(a, b):
    return sum(x * math.log(y) for x, y in zip(a, b) if x > 0)


def _tv(a, b):
    return 0.5 * sum(abs(x - y) for x, y in zip(a, b))


def _one(rule, alpha, temperature=1.0, q=Q, p=P):
    m = an.position_metrics(_logits(q), _logits(p), rule=rule, alphas=[alpha], temperature=temperature)
    return {k: float(v[0, 0]) for k, v in m.items()}


def test_speculative_by_hand():
    m = _one("speculative", 0.0)
    assert m["deferral"] == pytest.approx(1.0)
    assert m["accept"] == pytest.approx(0.2 + 0.3 + 0.2)  # sum min(q, p)
    assert m["tv"] == pytest.approx(0.0, abs=1e-12)
    assert m["kl"] == pytest.approx(0.0, abs=1e-12)
    assert m["loglik"] == pytest.approx(_ll(P, P))


def test_chow_by_hand():
    # max q^ = 0.5: defers iff 0.5 < 1 - alpha
    m = _one("chow", 0.4)
    assert m["deferral"] == pytest.approx(1.0) and m["tv"] == pytest.approx(0.0, abs=1e-12)
    m = _one("chow", 0.6)  # pi = q
    assert m["deferral"] == pytest.approx(0.0)
    assert m["accept"] == pytest.approx(1.0)
    assert m["tv"] == pytest.approx(0.3)
    assert m["kl"] == pytest.approx(_kl(Q, P))
    assert m["loglik"] == pytest.approx(_ll(Q, P))


def test_token_v3_by_hand():
    # max p^ = 0.5, threshold (1 - 0.5) 0.5 = 0.25: A = {1, 2}, eta = q(0) = 0.5
    pi = (0.5 * 0.2, 0.3 + 0.5 * 0.5, 0.2 + 0.5 * 0.3)
    m = _one("token_v3", 0.5)
    assert m["deferral"] == pytest.approx(0.5)  # P_{x~q}(x not in A)
    assert m["accept"] == pytest.approx(0.3 + 0.2 + 0.5 * min(1.0, 0.5 * 0.2 / 0.5))
    assert m["tv"] == pytest.approx(_tv(pi, P)) and m["tv"] == pytest.approx(0.1)
    assert m["kl"] == pytest.approx(_kl(pi, P))
    assert m["loglik"] == pytest.approx(_ll(pi, P))


def test_lossy_by_hand():
    # accept(v) = min(1, p / (0.5 q)) = (0.8, 1, 1); residual max(0, p - q) = (0, 0.2, 0.1) normalized
    acc = 0.5 * 0.8 + 0.3 + 0.2
    law = (0.4, 0.3 + (1 - acc) * 2 / 3, 0.2 + (1 - acc) / 3)
    m = _one("lossy", 0.5)
    assert m["deferral"] == pytest.approx(1.0)
    assert m["accept"] == pytest.approx(acc)
    assert m["tv"] == pytest.approx(_tv(law, P)) and m["tv"] == pytest.approx(0.2)
    assert m["kl"] == pytest.approx(_kl(law, P))
    assert m["loglik"] == pytest.approx(_ll(law, P))


def test_greedy_tv_and_nan_kl():
    # T = 0: q one-hot at 0, p one-hot at 1; the drafter's law disagrees with the target's greedy token
    m = _one("chow", 1.0, temperature=0.0)
    assert m["tv"] == pytest.approx(1.0) and m["accept"] == pytest.approx(1.0)
    assert math.isnan(m["kl"]) and math.isnan(m["loglik"])
    m = _one("speculative", 0.0, temperature=0.0)
    assert m["tv"] == pytest.approx(0.0) and m["accept"] == pytest.approx(0.0)


def test_rule_ends_reach_target_and_drafter():
    g = torch.Generator().manual_seed(0)
    zq = torch.randn(7, 5, generator=g, dtype=torch.float64) * 2
    zp = torch.randn(7, 5, generator=g, dtype=torch.float64) * 2
    drafter = an.position_metrics(zq, zp, rule="chow", alphas=[1.0])
    for rule, a_p, a_q in (("diff", -1.0, 1.0), ("token_v1", -1.0, 1.0), ("token_v2", -0.01, 1.0),
                           ("token_v3", 1.0, 1.0), ("lossy", 0.0, None)):
        m = an.position_metrics(zq, zp, rule=rule, alphas=[a_p])
        if rule != "token_v3":
            torch.testing.assert_close(m["tv"], torch.zeros_like(m["tv"]), atol=1e-12, rtol=0)
        if a_q is not None:
            m = an.position_metrics(zq, zp, rule=rule, alphas=[a_q])
            for k in ("tv", "kl", "loglik"):
                torch.testing.assert_close(m[k], drafter[k], msg=f"{rule} alpha={a_q}: {k} differs from drafter's")
            torch.testing.assert_close(m["accept"], torch.ones_like(m["accept"]))


def test_chunking_does_not_change_results():
    g = torch.Generator().manual_seed(1)
    zq = torch.randn(13, 11, generator=g)
    zp = torch.randn(13, 11, generator=g)
    a = an.position_metrics(zq, zp, rule="token_v3", alphas=[0.1, 0.5, 0.9], budget_elems=1)
    b = an.position_metrics(zq, zp, rule="token_v3", alphas=[0.1, 0.5, 0.9], budget_elems=1 << 20)
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_round_tokens_by_hand_K2():
    a = np.array([0.5, 0.8, 0.4, 0.9])
    # E_t = 1 + a_t + a_t a_{t+1}, at most L - 1 - t acceptances
    expected = [1 + 0.5 + 0.5 * 0.8, 1 + 0.8 + 0.8 * 0.4, 1 + 0.4, 1.0]
    np.testing.assert_allclose(an.expected_round_tokens(a, 2), expected)
    # R(4) = 0, R(3) = 1, R(2) = 1 + 0.6 R(3) + 0.4 R(4) = 1.6,
    # R(1) = 1 + 0.2 R(2) + 0.8 * 0.6 R(3) + 0.32 R(4) = 1.8,
    # R(0) = 1 + 0.5 R(1) + 0.5 * 0.2 R(2) + 0.4 R(3) = 2.46
    assert an.expected_forwards(a, 2) == pytest.approx(2.46)
    # batched over leading dims
    np.testing.assert_allclose(an.expected_forwards(np.stack([a, a]), 2), [2.46, 2.46])


def test_round_ends():
    assert an.expected_forwards(np.ones(10), 3) == pytest.approx(3.0)  # ceil(10 / 4)
    assert an.expected_forwards(np.zeros(10), 3) == pytest.approx(10.0)
    np.testing.assert_allclose(an.expected_round_tokens(np.ones(6), 2), [3, 3, 3, 3, 2, 1])
    assert an.expected_forwards(np.array([0.3, 0.7]), 0) == pytest.approx(2.0)


def test_forwards_match_simulation():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.2, 1.0, size=9)
    K, n = 3, 40000
    rounds = np.zeros(n)
    for s in range(n):
        t = 0
        while t < len(a):
            M = min(K, len(a) - 1 - t)
            m = 0
            while m < M and rng.random() < a[t + m]:
                m += 1
            t += m + 1
            rounds[s] += 1
    se = rounds.std() / math.sqrt(n)
    assert abs(rounds.mean() - an.expected_forwards(a, K)) < 5 * se


def test_prune_preserves_masses():
    g = torch.Generator().manual_seed(2)
    zq = torch.randn(5, 50, generator=g) * 3
    zp = torch.randn(5, 50, generator=g) * 3
    pq, pp, tq, tp = an.prune_logits(zq, zp, 8)
    assert pq.shape == (5, 9)
    sq = pq.double().softmax(-1)
    torch.testing.assert_close(sq[:, -1], tq, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(sq.sum(-1), torch.ones(5, dtype=torch.float64))
    top = torch.topk(torch.maximum(zq.log_softmax(-1), zp.log_softmax(-1)), 8).indices
    torch.testing.assert_close(sq[:, :-1].float(), zq.softmax(-1).gather(-1, top), atol=1e-6, rtol=1e-4)
    # keeping every token but one: metrics equal the full vocabulary's up to the one-token bucket
    pq, pp, _, _ = an.prune_logits(zq, zp, 49)
    full = an.position_metrics(zq, zp, rule="lossy", alphas=[0.3])
    pr = an.position_metrics(pq, pp, rule="lossy", alphas=[0.3])
    torch.testing.assert_close(full["tv"], pr["tv"], atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def tiny_pair():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=128)
    target = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg)).eval()
    torch.manual_seed(1)
    drafter = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg)).eval()
    return target, drafter


def test_pipeline_on_tiny_models(tiny_pair, tmp_path):
    target, drafter = tiny_pair
    g = torch.Generator().manual_seed(3)
    texts = [(torch.randint(0, 64, (5,), generator=g), torch.randint(0, 64, (L,), generator=g)) for L in (7, 12)]
    corpus = an.teacher_forced_logits(target, drafter, texts, names=["a", "b"])
    assert corpus.lengths == [7, 12] and corpus.zq[0].shape == (7, 64)
    # the kept logits are those of the full forward at the completion positions
    ids = torch.cat(texts[0])[None]
    with torch.no_grad():
        torch.testing.assert_close(corpus.zp[0], target(ids).logits[0, 4:11], atol=1e-5, rtol=1e-5)
    path = tmp_path / "c.pt"
    corpus.save(path)
    corpus = an.LogitCorpus.load(path)
    grids = {r: [g[0], g[len(g) // 2], g[-1]] for r, g in an.DEFAULT_GRIDS.items()}
    res = an.analyze(corpus, grids=grids, Ks=(2, 4))
    spec = res.curves["speculative"]
    assert spec.tv[0] == pytest.approx(0.0, abs=1e-6)
    for K in (2, 4):
        assert 1.0 / (K + 1) - 1e-9 <= spec.forwards_per_token[K][0] <= 1.0
        for c in res.curves.values():
            assert np.all(c.forwards_per_token[K] <= 1.0 + 1e-9)
    assert res.curves["chow"].tv[-1] == pytest.approx(res.drafter["tv"])
    an.write_csv(res, tmp_path / "r.csv")
    assert "token_cascade" in an.markdown_table(res, 4)
    an.plot(res, tmp_path / "r.png", K=4)
    assert (tmp_path / "r.png").stat().st_size > 0
    pruned = an.teacher_forced_logits(target, drafter, texts, top_k=16)
    assert pruned.zq[0].shape == (7, 17) and pruned.tail_q.shape == (19,)
