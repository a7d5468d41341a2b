"""speccas.calibrate: alpha from a target, on synthetic distributions with a known answer."""

import pytest
import torch

from speccas.analysis import LogitCorpus
from speccas.calibrate import choose_alpha

# max q^ of each position; the drafter's mode is token 0, the target's token 1
M = [0.42, 0.5, 0.55, 0.61, 0.67, 0.7, 0.78, 0.83, 0.9, 0.95]


def _corpus():
    zq = torch.tensor([[m, (1 - m) / 3, (1 - m) / 3, (1 - m) / 3] for m in M], dtype=torch.float64).log()
    zp = torch.tensor([[0.1, 0.7, 0.1, 0.1]] * len(M), dtype=torch.float64).log()
    return LogitCorpus([zq[:4], zq[4:]], [zp[:4], zp[4:]])


@pytest.mark.parametrize("j", [0, 3, 7])
def test_chow_deferral_exact(j):
    # chow defers iff max q^ < 1 - alpha; the deferral rate is at most j / N exactly when
    # alpha >= 1 - M_(j+1) (the (j+1)-th smallest), so that is the smallest such alpha.
    tol = 1e-6
    c = choose_alpha(_corpus(), "chow", deferral=j / len(M), tol=tol)
    expected = 1 - sorted(M)[j]
    assert c.feasible
    assert expected - 1e-9 <= c.alpha <= expected + tol + 1e-9, (c.alpha, expected)
    assert c.achieved["deferral"] <= j / len(M) + 1e-12


@pytest.mark.parametrize("j", [1, 4])
def test_chow_max_tv_exact_greedy(j):
    # T = 0: q, p one-hot on different tokens, so TV(law, p) is 1 where chow keeps the draft, 0 where it
    # defers; mean TV = #(max q^ >= 1 - alpha) / N <= j / N iff alpha < 1 - M_(j+1 largest).
    tol = 1e-6
    c = choose_alpha(_corpus(), "chow", max_tv=j / len(M), temperature=0.0, tol=tol)
    expected = 1 - sorted(M, reverse=True)[j]
    assert c.feasible
    assert expected - tol - 1e-9 <= c.alpha < expected, (c.alpha, expected)
    assert c.achieved["tv"] <= j / len(M) + 1e-12


def test_tokens_per_forward_meets_goal_minimally():
    corpus = _corpus()
    c = choose_alpha(corpus, "token_v3", tokens_per_forward=2.0, K=4, tol=1e-4)
    assert c.feasible and c.achieved["tokens_per_forward"] >= 2.0
    below = choose_alpha(corpus, "token_v3", tokens_per_forward=2.0, K=4, tol=1e-4,
                         grid=[0.0, c.alpha - 2e-4])
    assert not below.feasible or below.alpha > c.alpha - 2e-4


def test_infeasible_and_bad_requests():
    corpus = _corpus()
    c = choose_alpha(corpus, "chow", tokens_per_forward=100.0)
    assert not c.feasible
    with pytest.raises(ValueError, match="exactly one"):
        choose_alpha(corpus, "chow", deferral=0.1, max_tv=0.1)
    with pytest.raises(ValueError, match="lossy"):
        choose_alpha(corpus, "lossy", deferral=0.1)
    with pytest.raises(ValueError, match="no alpha"):
        choose_alpha(corpus, "speculative", max_tv=0.1)
    c = choose_alpha(corpus, "lossy", max_kl=0.05)
    assert c.feasible and c.achieved["kl"] <= 0.05
