"""The engines' call shapes (speccas_kernels.compat) agree with the native API and keep the peers' conventions."""

from __future__ import annotations

import pytest
import torch

import speccas_kernels as sk
from speccas_kernels import compat


def _probs(*shape, seed=0, zero_frac=0.2):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(*shape, generator=g) ** 3
    p = p.masked_fill(torch.rand(*shape, generator=g) < zero_frac, 0.0)
    p[..., 0] += 1e-3  # no all-zero row
    return p / p.sum(-1, keepdim=True)


def test_flashinfer_documented_example():
    """FlashInfer's docstring example: draft 2 accepted (p/q = 2), draft 1 rejected (p = 0), the residual is token 0
    with certainty; whatever the seed."""
    draft = torch.tensor([[[0.1, 0.2, 0.3, 0.4], [0.2, 0.3, 0.4, 0.1]]])
    tokens = torch.tensor([[2, 1]], dtype=torch.int32)
    target = torch.tensor([[[0.0, 0.1, 0.6, 0.3], [1.0, 0.0, 0.0, 0.0], [0.7, 0.1, 0.1, 0.1]]])
    for seed in range(5):
        out, acc, emitted = compat.flashinfer_chain_speculative_sampling(draft, tokens, target, seed=seed)
        assert out.dtype == torch.int32 and out.tolist() == [[2, 0, -1]]
        assert acc.tolist() == [1] and emitted.tolist() == [1]


def test_flashinfer_agrees_with_verify_and_accumulates_in_place():
    B, n, V = 16, 3, 50
    dp, tp = _probs(B, n, V, seed=1), _probs(B, n + 1, V, seed=2)
    x = torch.multinomial(dp.reshape(-1, V), 1).reshape(B, n)
    seed, offset = torch.arange(B), torch.arange(B) * 7
    acc = torch.zeros(B, dtype=torch.int32)
    emitted = torch.full((B,), 5, dtype=torch.int32)
    out, acc2, em2 = compat.flashinfer_chain_speculative_sampling(dp, x, tp, acc, emitted, seed=seed, offset=offset)
    ref = sk.verify(dp.log(), tp.log(), x, rule="speculative", temperature=1.0, seed=seed, offset=offset)
    assert torch.equal(out, ref.tokens.to(torch.int32))
    assert acc2 is acc and em2 is emitted, "the counts are added in place to the tensors given"
    assert torch.equal(emitted, ref.num_accepted.to(torch.int32) + 5)
    assert (acc >= ref.num_accepted.to(torch.int32)).all() and (acc <= n).all()
    with pytest.raises(TypeError, match="seed and offset"):
        compat.flashinfer_chain_speculative_sampling(dp, x, tp, generator=torch.Generator())


def _vllm_inputs(counts, V=40, seed=0, greedy=None):
    B, N = len(counts), sum(counts)
    g = torch.Generator().manual_seed(seed)
    dp, tp = _probs(N, V, seed=seed), _probs(N, V, seed=seed + 1)
    x = torch.multinomial(dp, 1, generator=g).flatten()
    bonus = torch.randint(0, V, (B, 1), generator=g)
    cu = torch.tensor(counts).cumsum(0)
    T = torch.ones(B) if greedy is None else torch.where(torch.tensor(greedy), 0.0, 1.0)
    return dict(draft_token_ids=x, num_draft_tokens=counts, max_spec_len=max(counts), cu_num_draft_tokens=cu,
                draft_probs=dp, target_probs=tp, bonus_token_ids=bonus, temperature=T)


def _padded(kw):
    """The same round on speccas' padded layout: target positions plus a one-hot bonus position per row."""
    counts, K = kw["num_draft_tokens"], kw["max_spec_len"]
    B, V = len(counts), kw["target_probs"].shape[1]
    zq = torch.zeros(B, K, V)
    zp = torch.full((B, K + 1, V), float("-inf"))
    x = torch.zeros(B, K, dtype=torch.int64)
    s = 0
    for b, c in enumerate(counts):
        if kw["draft_probs"] is not None:
            zq[b, :c] = kw["draft_probs"][s:s + c].log()
        zp[b, :c] = kw["target_probs"][s:s + c].log()
        zp[b, c, kw["bonus_token_ids"][b, 0]] = 0.0
        x[b, :c] = kw["draft_token_ids"][s:s + c]
        s += c
    return zq, zp, x, torch.tensor(counts)


def test_vllm_sampled_rows_agree_with_verify():
    kw = _vllm_inputs([3, 0, 2, 4, 1])
    out = compat.vllm_rejection_sample(**kw, seed=3, offset=11)
    zq, zp, x, n = _padded(kw)
    ref = sk.verify(zq, zp, x, num_draft_tokens=n, rule="speculative", temperature=1.0, seed=3, offset=11)
    assert out.dtype == torch.int32 and out.shape == (5, 5)
    assert torch.equal(out, ref.tokens.to(torch.int32))
    for b, c in enumerate(kw["num_draft_tokens"]):  # all accepted: the engine's bonus token follows
        if int(ref.num_accepted[b]) == c:
            assert int(out[b, c]) == int(kw["bonus_token_ids"][b, 0])


def test_vllm_greedy_rows_accept_iff_target_argmax():
    counts = [4, 3, 2]
    kw = _vllm_inputs(counts, greedy=[True, True, True])
    am = kw["target_probs"].argmax(-1)
    x = am.clone()
    x[4 + 1] = (am[4 + 1] + 1) % 40  # row 1 second draft differs from the target's argmax
    kw["draft_token_ids"] = x
    out = compat.vllm_rejection_sample(**kw)
    assert out[0].tolist() == am[:4].tolist() + [int(kw["bonus_token_ids"][0, 0])]
    assert out[1].tolist() == [int(am[4]), int(am[5]), -1, -1, -1]
    assert out[2].tolist() == am[7:9].tolist() + [int(kw["bonus_token_ids"][2, 0]), -1, -1]


def test_vllm_token_only_drafts_and_zero_probabilities():
    kw = _vllm_inputs([2, 3], seed=4)
    kw["draft_probs"] = None
    out = compat.vllm_rejection_sample(**kw, seed=torch.tensor([1, 2]), offset=0)
    zq, zp, x, n = _padded(kw)
    ref = sk.verify(None, zp, x, num_draft_tokens=n, rule="speculative", temperature=1.0, seed=torch.tensor([1, 2]))
    assert torch.equal(out, ref.tokens.to(torch.int32))
    assert (out >= -1).all() and (out[:, 0] >= 0).all(), "zero probabilities are masked entries, not invalid rows"
