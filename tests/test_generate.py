"""speccas.generate on tiny random Llama / Qwen2 pairs (float64, so greedy ties cannot flip)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import LlamaForCausalLM  # noqa: E402

from helpers import V, drafter_of, tiny  # noqa: E402

import speccas  # noqa: E402
import importlib  # noqa: E402

gen_mod = importlib.import_module("speccas.generate")  # the module (speccas.generate is the function)
from speccas.generate import GenerationOutput, generate  # noqa: E402
from speccas.hostreads import count_host_reads  # noqa: E402

# One torch thread for the module (conftest.py): tiny models, where threads only add contention.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def pair(request):
    t = tiny(request.param, 0)
    return t, drafter_of(t)


@pytest.fixture(scope="module")
def llama_pair():
    t = tiny("llama", 0)
    return t, drafter_of(t)


def batch(lengths=(5, 9, 3), seed=7):
    g = torch.Generator().manual_seed(seed)
    P = max(lengths)
    ids = torch.randint(0, V, (len(lengths), P), generator=g)
    mask = torch.zeros_like(ids)
    for b, n in enumerate(lengths):
        mask[b, P - n:] = 1
    return ids * mask, mask


def oracle_greedy(models_for_pos, ids_row, n):
    """Greedy decode without any cache: models_for_pos(i) picks the model for new token i."""
    seq = ids_row.tolist()
    out = []
    with torch.no_grad():
        for i in range(n):
            logits = models_for_pos(i)(torch.tensor([seq])).logits[0, -1]
            t = int(torch.argmax(logits))
            out.append(t)
            seq.append(t)
    return out


def rows(ids, mask):
    return [ids[b][mask[b].bool()] for b in range(ids.shape[0])]


# ---------------------------------------------------------------------------------- exactness

def test_greedy_speculative_equals_target_batched(pair):
    target, drafter = pair
    ids, mask = batch()
    n = 14
    ref = generate(target, drafter, ids, mask, method="target", max_new_tokens=n)
    spec = generate(target, drafter, ids, mask, method="speculative", num_draft_tokens=3, draft_threshold=0,
                    max_new_tokens=n)
    assert spec.tokens == ref.tokens
    assert generate(target, drafter, ids, mask, method="speculative", max_new_tokens=n).tokens == ref.tokens  # defaults
    assert all(len(t) == n for t in ref.tokens)
    # the target's own greedy decode, row by row, without padding or cache
    for b, r in enumerate(rows(ids, mask)):
        assert ref.tokens[b] == oracle_greedy(lambda i: target, r, n)
    # and HF's generate on the left-padded batch
    hf = target.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n,
                         eos_token_id=None, pad_token_id=0)
    assert hf[:, ids.shape[1]:].tolist() == ref.tokens
    assert spec.target_forwards == spec.rounds and spec.host_syncs == spec.rounds
    assert spec.rounds < n  # some drafts were accepted


def test_right_padding_is_repacked(llama_pair):
    target, drafter = llama_pair
    ids, mask = batch((4, 7))
    # move each row's tokens to the left (right padding)
    rids, rmask = torch.zeros_like(ids), torch.zeros_like(mask)
    for b, r in enumerate(rows(ids, mask)):
        rids[b, :len(r)] = r
        rmask[b, :len(r)] = 1
    a = generate(target, drafter, ids, mask, method="speculative", max_new_tokens=8)
    c = generate(target, drafter, rids, rmask, method="speculative", max_new_tokens=8)
    assert a.tokens == c.tokens


@pytest.mark.parametrize("rule", ["chow", "token_v3"])
def test_never_defer_end_is_the_drafter(llama_pair, rule):
    target, drafter = llama_pair
    ids, mask = batch((6, 3))
    n = 6
    dr = generate(target, drafter, ids, mask, method="drafter", max_new_tokens=n)
    # K >= max_new_tokens: the round drafts only the n - 1 tokens still needed before the target's bonus
    cas = generate(target, drafter, ids, mask, method="cascade", rule=rule, alpha=1.0, num_draft_tokens=3 * n,
                   draft_threshold=0, max_new_tokens=n)
    assert cas.rounds == 1 and cas.drafter_forwards == n - 1 and cas.drafted == 2 * (n - 1)
    for b, r in enumerate(rows(ids, mask)):
        assert cas.tokens[b] == oracle_greedy(lambda i: target if i == n - 1 else drafter, r, n)
    assert [t[:n - 1] for t in cas.tokens] == [t[:n - 1] for t in dr.tokens]
    assert cas.accepted == cas.drafted and cas.deferral_rate == 0.0
    # K < max_new_tokens: drafts are all accepted, every (K+1)-th token is the target's bonus (SPEC 1.3)
    K, n = 2, 9
    cas = generate(target, drafter, ids, mask, method="cascade", rule=rule, alpha=1.0, num_draft_tokens=K,
                   draft_threshold=0, max_new_tokens=n)
    for b, r in enumerate(rows(ids, mask)):
        want = oracle_greedy(lambda i: target if i % (K + 1) == K else drafter, r, n)
        assert cas.tokens[b] == want
    assert cas.acceptance_histogram[K] == sum(cas.acceptance_histogram)


def test_token_cascade_ends(llama_pair):
    target, drafter = llama_pair
    ids, mask = batch()
    n = 8
    for T in (0.0, 1.0):
        seed = torch.tensor([3, 11, 5])
        dr = generate(target, drafter, ids, mask, method="drafter", max_new_tokens=n, temperature=T, seed=seed)
        tg = generate(target, drafter, ids, mask, method="target", max_new_tokens=n, temperature=T, seed=seed)
        never = generate(target, drafter, ids, mask, method="token_cascade", alpha=1.0, max_new_tokens=n,
                         temperature=T, seed=seed)
        always = generate(target, drafter, ids, mask, method="token_cascade", alpha=0.0, max_new_tokens=n,
                          temperature=T, seed=seed)
        assert never.tokens == dr.tokens and never.target_forwards == 0 and never.deferral_rate == 0.0
        assert always.tokens == tg.tokens and always.deferral_rate == 1.0
        assert always.target_forwards == always.rounds
    # in between: the target catches up on skipped positions in one forward
    mid = generate(target, drafter, ids, mask, method="token_cascade", alpha=0.3, max_new_tokens=n)
    assert 0 < mid.target_forwards <= mid.rounds


def test_lossy_alpha0_equals_speculative_sampling(llama_pair):
    target, drafter = llama_pair
    ids, mask = batch()
    kw = dict(max_new_tokens=10, temperature=1.0, seed=torch.tensor([1, 2, 3]), num_draft_tokens=3)
    a = generate(target, drafter, ids, mask, method="speculative", **kw)
    b = generate(target, drafter, ids, mask, method="lossy", alpha=0.0, **kw)
    assert a.tokens == b.tokens


# ------------------------------------------------------------------------------ batch invariance

@pytest.mark.parametrize("method,rule", [("cascade", "token_v3"), ("speculative", None), ("token_cascade", None),
                                         ("target", None)])
def test_batch_invariance_per_row_seeds(llama_pair, method, rule):
    target, drafter = llama_pair
    ids, mask = batch((5, 9, 3))
    seeds = torch.tensor([123, 7, 99])
    kw = dict(method=method, temperature=1.0, max_new_tokens=10, num_draft_tokens=3)
    if rule:
        kw["rule"] = rule
    full = generate(target, drafter, ids, mask, seed=seeds, **kw)
    for b, r in enumerate(rows(ids, mask)):
        alone = generate(target, drafter, r[None], seed=int(seeds[b]), **kw)
        assert alone.tokens[0] == full.tokens[b], f"row {b}"
    # a different seed for one row changes only that row
    other = generate(target, drafter, ids, mask, seed=torch.tensor([123, 8, 99]), **kw)
    assert other.tokens[0] == full.tokens[0] and other.tokens[2] == full.tokens[2]


# ------------------------------------------------------------------------------------------ EOS

@pytest.mark.parametrize("method", ["target", "speculative", "cascade", "token_cascade"])
def test_eos_per_row(llama_pair, method):
    target, drafter = llama_pair
    ids, mask = batch((5, 9, 3))
    n = 12
    ref = generate(target, drafter, ids, mask, method=method, max_new_tokens=n, eos_token_id=[], num_draft_tokens=3)
    eos = ref.tokens[0][3]  # row 0 emits it at step 3 (or earlier)
    out = generate(target, drafter, ids, mask, method=method, max_new_tokens=n, eos_token_id=eos, num_draft_tokens=3)
    for b in range(3):
        r = ref.tokens[b]
        want = r[:r.index(eos) + 1] if eos in r else r
        assert out.tokens[b] == want
        assert (out.sequences[b, len(want):] == -1).all()
    assert len(out.tokens[0]) <= 4
    assert any(len(t) > 4 for t in out.tokens), "the other rows continue"


def test_per_row_max_new_tokens(llama_pair):
    target, drafter = llama_pair
    ids, mask = batch()
    out = generate(target, drafter, ids, mask, method="speculative", max_new_tokens=torch.tensor([3, 9, 1]))
    ref = generate(target, drafter, ids, mask, method="target", max_new_tokens=9)
    assert [len(t) for t in out.tokens] == [3, 9, 1]
    assert [t for t in out.tokens] == [ref.tokens[0][:3], ref.tokens[1], ref.tokens[2][:1]]


# ---------------------------------------------------------------------------------------- stats

def test_stats_drafter_equals_target(llama_pair):
    target, _ = llama_pair
    ids, mask = batch((6,))
    K, n = 3, 12
    out = generate(target, target, ids, mask, method="speculative", num_draft_tokens=K, draft_threshold=0,
                   max_new_tokens=n)
    assert isinstance(out, GenerationOutput)
    assert out.target_forwards == out.rounds == n // (K + 1)
    assert out.tokens_per_target_forward == K + 1
    assert out.accepted == out.drafted == out.rounds * K and out.acceptance_rate == 1.0
    assert out.acceptance_histogram == [0, 0, 0, out.rounds]
    assert out.drafter_forwards == K * out.rounds
    assert out.target_tokens_processed == 6 + (K + 1) * out.rounds - 1
    assert out.new_tokens == n and out.tokens_per_second > 0 and out.wall_time > 0
    s = out.stats()
    assert s["deferral_rate"] == 1.0 and s["host_syncs"] == out.rounds


def test_stats_cascade(llama_pair):
    target, drafter = llama_pair
    ids, mask = batch()
    out = generate(target, drafter, ids, mask, method="cascade", rule="token_v3", max_new_tokens=10)
    assert out.target_forwards == out.rounds
    assert 0 < sum(out.acceptance_histogram) <= 3 * out.rounds  # one entry per active row per round
    assert 0.0 <= out.deferral_rate <= 1.0
    assert out.accepted == sum(k * c for k, c in enumerate(out.acceptance_histogram))
    tgt = generate(target, drafter, ids, mask, method="target", max_new_tokens=10)
    assert tgt.tokens_per_target_forward == 1.0 and tgt.drafter_forwards == 0


# ----------------------------------------------------------------------------------- host syncs

def _reads(target, drafter, ids, mask, n, **kw):
    with count_host_reads() as reads:
        out = generate(target, drafter, ids, mask, max_new_tokens=n, eos_token_id=[], **kw)
    return reads.total, out


@pytest.mark.parametrize("method", ["speculative", "cascade", "lossy", "target", "drafter", "token_cascade"])
def test_one_host_read_per_round_in_every_frame(pair, method):
    """Device-to-host reads counted in every frame (transformers' mask code included) over a short and a long
    run: the loop adds at most one per round (fixed draft length)."""
    target, drafter = pair
    ids, mask = batch()
    kw = dict(method=method, temperature=1.0, seed=torch.tensor([1, 2, 3]), num_draft_tokens=3, draft_threshold=0)
    if method == "token_cascade":
        kw.update(alpha=0.4, temperature=0.0)
    short, s_out = _reads(target, drafter, ids, mask, 4, **kw)
    long, l_out = _reads(target, drafter, ids, mask, 24, **kw)
    assert l_out.rounds > s_out.rounds + 5
    slope = (long - short) / (l_out.rounds - s_out.rounds)
    assert slope <= 1.0, f"{method}: {long - short} reads over {l_out.rounds - s_out.rounds} extra rounds"
    assert long - l_out.host_syncs == short - s_out.host_syncs  # the rest is the constant before/after the loop


def test_adaptive_drafting_reads_once_per_draft_decision(pair):
    """With draft_threshold > 0 each draft that may be followed by another costs one read: the total is the
    round's read plus one per such decision, and nothing else grows with the run."""
    target, drafter = pair
    ids, mask = batch()
    kw = dict(method="cascade", num_draft_tokens=4, draft_threshold=0.5)
    short, s_out = _reads(target, drafter, ids, mask, 4, **kw)
    long, l_out = _reads(target, drafter, ids, mask, 24, **kw)
    assert long - l_out.host_syncs == short - s_out.host_syncs
    assert l_out.rounds <= l_out.host_syncs <= l_out.rounds + l_out.drafter_forwards


def test_read_counter_sees_transformers_frames(llama_pair):
    """Negative control: the same counter catches the reads transformers makes when handed a 2-D padding mask
    (the form the loop avoids), and the read the loop would make if it called .item() itself."""
    from transformers import DynamicCache

    target, _ = llama_pair
    ids, mask = batch()
    with count_host_reads() as reads:
        target(input_ids=ids, attention_mask=mask, use_cache=True, **{_cache_kw(target): DynamicCache()})
    assert reads.total >= 1
    with count_host_reads() as reads:
        torch.ones(3).sum().item()
        bool(torch.ones(2).any())
        torch.arange(4).tolist()
        torch.arange(4)[torch.arange(4) > 1]
    assert reads.total == 4, dict(reads.by_kind)
    x = torch.tensor([3, 1, 3, 0])
    with count_host_reads(where=True) as reads:
        x.nonzero()
        torch.unique(x)
        x.masked_select(x > 1)
        torch.equal(x, x)
        torch.repeat_interleave(x)
        x.numpy()
        x.cpu()
        y = x + 1  # no read
        y[torch.tensor([0, 2])] = 5  # integer indexing: no read
    assert reads.total == 7 and len(reads.sites) == 7 and all("test_generate.py" in s for s in reads.sites), \
        (dict(reads.by_kind), reads.sites)


def _cache_kw(model):
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


# ----------------------------------------------------------------------------------- bad inputs

def test_bad_inputs(llama_pair):
    target, drafter = llama_pair
    ids, mask = batch()
    with pytest.raises(ValueError, match="vocabularies differ"):
        generate(target, tiny("llama", 2, vocab=V + 8), ids, mask, method="speculative")
    # vocab_size lets a pair with padded output layers share the first N ids
    out = generate(target, tiny("llama", 2, vocab=V + 8), ids, mask, method="speculative", vocab_size=V,
                   max_new_tokens=3)
    assert all(0 <= t < V for row in out.tokens for t in row)
    with pytest.raises(ValueError, match="empty"):
        generate(target, drafter, torch.zeros((2, 0), dtype=torch.long))
    bad_mask = mask.clone()
    bad_mask[1] = 0
    with pytest.raises(ValueError, match="empty prompts"):
        generate(target, drafter, ids, bad_mask)
    for n in (0, -3):
        with pytest.raises(ValueError, match="max_new_tokens"):
            generate(target, drafter, ids, mask, max_new_tokens=n)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(target, drafter, ids, mask, max_new_tokens=torch.tensor([3, 0, 2]))
    with pytest.raises(ValueError, match="unknown method"):
        generate(target, drafter, ids, mask, method="beam")
    with pytest.raises(ValueError, match="unknown rule"):
        generate(target, drafter, ids, mask, method="cascade", rule="nope")
    with pytest.raises(ValueError, match="alpha"):
        generate(target, drafter, ids, mask, method="cascade", rule="chow", alpha=3.0)
    with pytest.raises(ValueError, match="num_draft_tokens"):
        generate(target, drafter, ids, mask, method="speculative", num_draft_tokens=0)
    with pytest.raises(ValueError, match="outside"):
        generate(target, drafter, torch.tensor([[1, V + 5]]))
    with pytest.raises(ValueError, match="needs a drafter"):
        generate(target, None, ids, mask, method="cascade")
    assert generate(target, None, ids, mask, method="target", max_new_tokens=2).new_tokens == 6
    with torch.device("meta"):
        meta = LlamaForCausalLM(target.config)
    with pytest.raises(ValueError, match="different devices"):
        generate(target, meta, ids, mask, method="speculative")


def test_public_api():
    assert speccas.generate is generate
    assert speccas.GenerationOutput is GenerationOutput
    assert set(speccas.METHODS) >= {"target", "drafter", "speculative", "cascade", "lossy", "token_cascade"}


# ------------------------------------------------------------------------------ drop-in use

def test_hf_custom_generate(llama_pair):
    import speccas.hf as sh

    target, drafter = llama_pair
    ids, mask = batch()
    n = 8
    ref = target.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n,
                          eos_token_id=None, pad_token_id=0)
    out = target.generate(input_ids=ids, attention_mask=mask, custom_generate=sh.cascade_decoding, drafter=drafter,
                          speccas_method="speculative", max_new_tokens=n, pad_token_id=0)
    assert torch.equal(out, ref)
    # assisted generation's spelling, a cascade, with the statistics
    seq, stats = sh.cascade_generate(target, ids, attention_mask=mask, assistant_model=drafter, rule="token_v3",
                                     alpha=0.5, max_new_tokens=n, pad_token_id=0, return_speccas_output=True)
    want = generate(target, drafter, ids, mask, method="cascade", rule="token_v3", alpha=0.5, max_new_tokens=n,
                    eos_token_id=[])
    assert seq[:, ids.shape[1]:].tolist() == want.tokens and stats.rounds == want.rounds
    # EOS from the generation config: rows stop, the rest is padded with pad_token_id
    eos = ref[0, ids.shape[1] + 2].item()
    out = sh.cascade_generate(target, ids, attention_mask=mask, assistant_model=drafter, method="speculative",
                              max_new_tokens=n, eos_token_id=eos, pad_token_id=0)
    row0 = out[0, ids.shape[1]:].tolist()
    assert row0[:3] == ref[0, ids.shape[1]:ids.shape[1] + 3].tolist() and row0[3:] == [0] * (len(row0) - 3)
    with pytest.raises(ValueError, match="drafter"):
        target.generate(input_ids=ids, attention_mask=mask, custom_generate=sh.cascade_decoding, max_new_tokens=2)


def test_gpt_fast_style_example():
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "python", "examples", "gpt_fast_style_loop.py")
    spec = importlib.util.spec_from_file_location("gpt_fast_style_loop", path)
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    target, drafter = ex.tiny_pair()
    prompt = torch.randint(0, 128, (1, 5), generator=torch.Generator().manual_seed(3))
    out, forwards = ex.speculative_generate(target, drafter, prompt, 16, K=3)
    assert out == ex.greedy(target, prompt, 16) and forwards <= 16
    # the hand-written loop and speccas.generate agree (same seeds, same offsets), also when sampling
    for kw in (dict(rule="token_v3", alpha=0.5), dict(rule="speculative", temperature=1.0, seed=5)):
        mine, _ = ex.speculative_generate(target, drafter, prompt, 12, K=3, **kw)
        method = "cascade" if kw["rule"] != "speculative" else "speculative"
        ours = generate(target, drafter, prompt, method=method, num_draft_tokens=3, draft_threshold=0, max_new_tokens=12,
                        eos_token_id=[],
                        **{k: v for k, v in kw.items() if k != "rule" or method == "cascade"})
        assert ours.tokens[0] == mine


def test_bad_per_row_alpha_and_temperature_raise(llama_pair):
    """A per-row value the kernels would mark invalid must not make a row stop silently."""
    target, drafter = llama_pair
    ids, mask = batch()
    with pytest.raises(ValueError, match="alpha"):
        generate(target, drafter, ids, mask, method="cascade", rule="token_v3", alpha=torch.tensor([0.5, 1.5, 0.2]),
                 max_new_tokens=4)
    with pytest.raises(ValueError, match="alpha"):
        generate(target, drafter, ids, mask, method="token_cascade", alpha=torch.tensor([0.5, -0.1, 0.2]),
                 max_new_tokens=4)
    with pytest.raises(ValueError, match="temperature"):
        generate(target, drafter, ids, mask, method="speculative", temperature=torch.tensor([1.0, float("nan"), 0.0]),
                 max_new_tokens=4)
    out = generate(target, drafter, ids, mask, method="cascade", rule="token_v3", alpha=torch.tensor([0.5, 1.0, 0.0]),
                   max_new_tokens=4)
    assert (out.lengths == 4).all()


def test_sliding_window_models_are_rejected_when_slots_exceed_the_window():
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, sliding_window=16)
    target = MistralForCausalLM(cfg).eval()
    drafter = MistralForCausalLM(cfg).eval()
    ids, mask = batch()
    with pytest.raises(ValueError, match="sliding-window"):
        generate(target, drafter, ids, mask, method="speculative", num_draft_tokens=4, max_new_tokens=30)
    cfg_big = MistralConfig(**{**cfg.to_dict(), "sliding_window": 4096})
    t2, d2 = MistralForCausalLM(cfg_big).eval(), MistralForCausalLM(cfg_big).eval()
    spec = generate(t2, d2, ids, mask, method="speculative", num_draft_tokens=4, max_new_tokens=12)
    ref = generate(t2, d2, ids, mask, method="target", max_new_tokens=12)
    assert torch.equal(spec.sequences, ref.sequences)


# ------------------------------------------------------------------------- argument checks (issue 17)

_BAD_ARGS = [
    # (keyword arguments, exception, the argument the message names)
    (dict(max_new_tokens=torch.tensor([3, 4])), ValueError, "max_new_tokens"),
    (dict(max_new_tokens=torch.tensor([[3, 4, 5]])), ValueError, "max_new_tokens"),
    (dict(max_new_tokens=4.0), TypeError, "max_new_tokens"),
    (dict(max_new_tokens=np.float64(4)), TypeError, "max_new_tokens"),
    (dict(max_new_tokens=torch.tensor([3.0, 4.0, 5.0])), TypeError, "max_new_tokens"),
    (dict(max_new_tokens=True), TypeError, "max_new_tokens"),
    (dict(seed=1.5), TypeError, "seed"),
    (dict(seed=torch.tensor([1.0, 2.0, 3.0])), TypeError, "seed"),
    (dict(seed=torch.tensor([1, 2])), ValueError, "seed"),
    (dict(seed="7"), TypeError, "seed"),
    (dict(eos_token_id=1.0), TypeError, "eos_token_id"),
    (dict(eos_token_id=[1, "2"]), TypeError, "eos_token_id"),
    (dict(eos_token_id="</s>"), TypeError, "eos_token_id"),
    (dict(eos_token_id=[-1]), ValueError, "eos_token_id"),
    (dict(vocab_size=100.0), TypeError, "vocab_size"),
    (dict(vocab_size="192"), TypeError, "vocab_size"),
    (dict(temperature=math.inf), ValueError, "temperature"),
    (dict(temperature=np.float32("nan")), ValueError, "temperature"),
    (dict(temperature=-0.5), ValueError, "temperature"),
    (dict(temperature="hot"), TypeError, "temperature"),
    (dict(temperature=torch.tensor([1.0, math.inf, 0.0])), ValueError, "temperature"),
    (dict(temperature=torch.tensor([1.0, 0.5])), ValueError, "temperature"),
    (dict(alpha=np.float32(1.5)), ValueError, "alpha"),
    (dict(alpha=np.float64(math.inf)), ValueError, "alpha"),
    (dict(alpha=math.nan), ValueError, "alpha"),
    (dict(alpha="0.5"), TypeError, "alpha"),
    (dict(alpha=torch.tensor([0.5, 0.5])), ValueError, "alpha"),
    (dict(method="token_cascade", alpha=np.float32(-0.1)), ValueError, "alpha"),
    (dict(num_draft_tokens=2.0), TypeError, "num_draft_tokens"),
    (dict(num_draft_tokens=0), ValueError, "num_draft_tokens"),
    (dict(draft_threshold=1.5), ValueError, "draft_threshold"),
    (dict(draft_threshold="high"), TypeError, "draft_threshold"),
    (dict(compile="yes"), TypeError, "compile"),
    (dict(drafter_threads=1.0), TypeError, "drafter_threads"),
    (dict(drafter_threads=0), ValueError, "drafter_threads"),
]


@pytest.mark.parametrize("kw,exc,name", _BAD_ARGS, ids=[f"{n}-{i}" for i, (_, _, n) in enumerate(_BAD_ARGS)])
def test_bad_argument_names_itself(llama_pair, kw, exc, name):
    target, drafter = llama_pair
    ids, mask = batch()
    kw = {"method": "cascade", "rule": "chow", "max_new_tokens": 3, **kw}
    with pytest.raises(exc, match=name):
        generate(target, drafter, ids, mask, **kw)


def test_numpy_scalars_and_one_element_tensors_are_accepted(llama_pair):
    target, drafter = llama_pair
    ids, mask = batch()
    ref = generate(target, drafter, ids, mask, method="cascade", alpha=0.4, max_new_tokens=5, seed=3, temperature=1.0,
                   eos_token_id=[7], num_draft_tokens=2)
    out = generate(target, drafter, ids, mask, method="cascade", alpha=np.float32(0.4), max_new_tokens=np.int64(5),
                   seed=torch.tensor([3]), temperature=np.float64(1.0), eos_token_id=[np.int64(7)],
                   num_draft_tokens=np.int32(2))
    assert out.tokens == ref.tokens and out.alpha == pytest.approx(0.4)


def test_invalid_logits_stop_a_row_with_a_reason_and_a_warning(llama_pair):
    """A row whose logits turn NaN stops; the output says why instead of returning short rows silently."""
    import copy

    target, drafter = llama_pair
    ids, mask = batch()
    bad = copy.deepcopy(target)
    with torch.no_grad():
        bad.lm_head.weight[5] = math.nan  # every position's logit for id 5 is NaN: all rows invalid
    with pytest.warns(RuntimeWarning, match="NaN"):
        out = generate(bad, drafter, ids, mask, method="speculative", max_new_tokens=4)
    assert out.finish_reasons == ["invalid_logits"] * 3 and out.new_tokens == 0
    ok = generate(target, drafter, ids, mask, method="speculative", max_new_tokens=4)
    assert ok.finish_reasons == ["length"] * 3
    eos = ok.tokens[1][1]
    out = generate(target, drafter, ids, mask, method="speculative", max_new_tokens=4, eos_token_id=eos)
    assert out.finish_reasons[1] == "eos" and out.tokens[1][-1] == eos


# ------------------------------------------------------------------------------- adaptive drafting

def test_draft_threshold_ends(llama_pair):
    """threshold 0: exactly K drafts per round; threshold 1: one draft per round (a drafter is never that sure);
    in between, rounds draft between 1 and K. Greedy speculative output is the target's in every case."""
    target, drafter = llama_pair
    ids, mask = batch((7,))
    n, K = 20, 4
    ref = generate(target, None, ids, mask, method="target", max_new_tokens=n)
    fixed = generate(target, drafter, ids, mask, method="speculative", num_draft_tokens=K, draft_threshold=0.0,
                     max_new_tokens=n)
    one = generate(target, drafter, ids, mask, method="speculative", num_draft_tokens=K, draft_threshold=1.0,
                   max_new_tokens=n)
    mid = generate(target, drafter, ids, mask, method="speculative", num_draft_tokens=K, draft_threshold=0.6,
                   max_new_tokens=n)
    for out in (fixed, one, mid):
        assert out.tokens == ref.tokens
    # threshold 1: one draft per round (none in a last round that needs one token), one decision read each
    assert one.rounds - 1 <= one.drafted <= one.rounds and one.drafter_forwards == one.drafted
    assert one.rounds + one.drafted - 2 <= one.host_syncs <= one.rounds + one.drafted  # last rounds: K <= 1
    # threshold 0: K per round (fewer only where fewer tokens are still needed), no decision reads
    assert fixed.drafted > (fixed.rounds - 2) * K and fixed.host_syncs == fixed.rounds
    assert one.drafted <= mid.drafted <= fixed.drafted and one.rounds >= mid.rounds >= fixed.rounds
    assert mid.rounds <= mid.host_syncs <= mid.rounds + mid.drafter_forwards


def test_draft_threshold_stops_where_the_drafter_is_unsure(llama_pair):
    """Each round's last verified draft is the first one with max q^ below the threshold (or the K-th)."""
    target, drafter = llama_pair
    ids, mask = batch((6,))
    h, K = 0.55, 5
    confs = []
    orig = gen_mod._max_prob

    def spy(z, V):
        c = orig(z, V)
        confs.append(c.clone())
        return c

    gen_mod._max_prob = spy
    try:
        out = generate(target, drafter, ids, mask, method="cascade", rule="token_v3", num_draft_tokens=K,
                       draft_threshold=h, max_new_tokens=30)
    finally:
        gen_mod._max_prob = orig
    # the decisions the loop took: one confidence per draft that could be followed by another
    assert len(confs) == out.host_syncs - out.rounds
    unsure = sum(int(c[0] < h) for c in confs)
    assert 0 < unsure <= out.rounds  # a round stops at most once, and some rounds stopped early
    assert out.drafted < out.rounds * K


@pytest.mark.parametrize("method", ["speculative", "cascade"])
def test_batch_invariance_with_adaptive_drafting(llama_pair, method):
    target, drafter = llama_pair
    ids, mask = batch((5, 9, 3))
    seeds = torch.tensor([11, 22, 33])
    kw = dict(method=method, temperature=1.0, max_new_tokens=12, num_draft_tokens=5, draft_threshold=0.5)
    full = generate(target, drafter, ids, mask, seed=seeds, **kw)
    for b, r in enumerate(rows(ids, mask)):
        alone = generate(target, drafter, r[None], seed=int(seeds[b]), **kw)
        assert alone.tokens[0] == full.tokens[b], f"row {b}"


def test_draft_length_is_capped_by_the_tokens_still_needed(llama_pair):
    """K = 64 with max_new_tokens = 5: one round of 4 drafter forwards, not 64."""
    target, drafter = llama_pair
    ids, mask = batch((6,))
    out = generate(target, drafter, ids, mask, method="speculative", num_draft_tokens=64, draft_threshold=0,
                   max_new_tokens=5)
    ref = generate(target, None, ids, mask, method="target", max_new_tokens=5)
    assert out.tokens == ref.tokens and out.drafter_forwards <= 4 * out.rounds and out.drafted <= 4 * out.rounds
    one = generate(target, drafter, ids, mask, method="speculative", num_draft_tokens=64, max_new_tokens=1)
    assert one.drafter_forwards == 0 and one.target_forwards == 1 and one.tokens == [ref.tokens[0][:1]]


# ----------------------------------------------------------------------------------- cheaper drafter

@pytest.mark.parametrize("precision", ["int8", "bfloat16"])
def test_cheaper_drafter_keeps_greedy_speculative_exact(pair, precision):
    """The drafter's weights in int8 (dynamic quantization) or bf16: greedy speculative is still the target's."""
    import copy

    from speccas.models import set_precision

    target, drafter = pair
    ids, mask = batch()
    cheap = set_precision(copy.deepcopy(drafter), precision)
    ref = generate(target, None, ids, mask, method="target", max_new_tokens=12)
    out = generate(target, cheap, ids, mask, method="speculative", max_new_tokens=12, num_draft_tokens=3)
    assert out.tokens == ref.tokens and out.accepted > 0
    with pytest.raises(ValueError, match="precision"):
        set_precision(copy.deepcopy(drafter), "int4")


def test_no_transformers_warning(llama_pair, recwarn):
    target, drafter = llama_pair
    ids, mask = batch()
    for method in ("speculative", "target", "token_cascade"):
        generate(target, drafter, ids, mask, method=method, max_new_tokens=3)
    assert [str(w.message) for w in recwarn.list] == []


def test_compiled_steps_give_the_eager_tokens(llama_pair, monkeypatch):
    """``compile=True`` traces the drafter step and the full-round verification with torch.compile (here with
    the "eager" backend: dynamo's tracing and guards without inductor's C++ build, to keep the suite fast)."""
    target, drafter = llama_pair
    ids, mask = batch((6,))
    calls = []
    real = torch.compile

    def spy(fn, **kw):
        calls.append(kw)
        return real(fn, **{**kw, "backend": "eager"})

    monkeypatch.setattr(torch, "compile", spy)
    torch._dynamo.reset()
    for method, kw in (("speculative", dict(num_draft_tokens=3, draft_threshold=0)), ("cascade", {}),
                       ("target", {})):
        ref = generate(target, drafter, ids, mask, method=method, max_new_tokens=10, **kw)
        out = generate(target, drafter, ids, mask, method=method, max_new_tokens=10, compile=True, **kw)
        assert out.tokens == ref.tokens, method
    assert calls and all(c.get("dynamic") is False for c in calls)


def test_draft_length_defaults():
    """Adaptive on the CPU (a decision read there is host memory), a fixed length elsewhere (one read per round)."""
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert gen_mod._draft_length(None, None, cpu) == (gen_mod.DEFAULT_NUM_DRAFT_TOKENS, gen_mod.DEFAULT_DRAFT_THRESHOLD)
    assert gen_mod._draft_length(None, None, gpu) == (gen_mod.DEFAULT_FIXED_NUM_DRAFT_TOKENS, 0.0)
    assert gen_mod._draft_length(None, 0, cpu) == (gen_mod.DEFAULT_FIXED_NUM_DRAFT_TOKENS, 0.0)
    assert gen_mod._draft_length(None, 0.3, gpu) == (gen_mod.DEFAULT_NUM_DRAFT_TOKENS, 0.3)
    assert gen_mod._draft_length(np.int64(5), np.float32(0.25), cpu) == (5, 0.25)
    assert gen_mod.DEFAULT_DRAFT_THRESHOLD > 0 and gen_mod.DEFAULT_NUM_DRAFT_TOKENS > gen_mod.DEFAULT_FIXED_NUM_DRAFT_TOKENS


def test_drafter_threads(llama_pair):
    """The drafter's forwards run on the threads asked for, the target's on the caller's, restored after."""
    target, drafter = llama_pair
    ids, mask = batch()
    seen = {"target": set(), "drafter": set()}
    hooks = [m.register_forward_pre_hook(lambda mod, a, name=name: seen[name].add(torch.get_num_threads()))
             for name, m in (("target", target), ("drafter", drafter))]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        ref = generate(target, drafter, ids, mask, method="speculative", max_new_tokens=8)
        seen = {"target": set(), "drafter": set()}
        out = generate(target, drafter, ids, mask, method="speculative", max_new_tokens=8, drafter_threads=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
        for h in hooks:
            h.remove()
    assert seen == {"target": {2}, "drafter": {1}} and out.tokens == ref.tokens
