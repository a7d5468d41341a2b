"""A hand-written speculative-cascade loop in the style of gpt-fast's ``speculative_decode``.

The two ops are all a decode loop needs:

* ``speccas_kernels.sample(logits, temperature, seed, offset)`` draws each draft (``offset`` = the
  absolute position of the drafted token), so ``verify`` later sees the very q it came from;
* ``speccas_kernels.verify(draft_logits, target_logits, drafts, rule, alpha, ...)`` accepts a prefix
  of the drafts and emits one more token (residual or bonus), for the whole batch, with no host sync.

Batch size 1 here, to keep the loop short (``speccas.generate`` is the batched version). Run it:

    python python/examples/gpt_fast_style_loop.py

It builds two tiny random Llama models (the drafter is the target plus noise), and checks that greedy
speculative decoding reproduces the target's own greedy tokens.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

import speccas_kernels as sk


def _cache_kw(model) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"  # transformers 5


def prefill(model, ids, cache):
    return model(input_ids=ids, use_cache=True, **{_cache_kw(model): cache}).logits[:, -1]


def decode(model, tokens, cache):
    """Feed ``tokens`` [1, n] after the cache; return logits [1, n, V]."""
    return model(input_ids=tokens, use_cache=True, **{_cache_kw(model): cache}).logits


def crop(cache, length):
    n = cache.get_seq_length()
    if n > length:
        cache.crop(length - n)  # transformers 5: a negative count removes that many entries


@torch.no_grad()
def speculative_generate(target, drafter, prompt_ids, max_new_tokens=32, K=4, rule="speculative", alpha=None,
                         temperature=0.0, seed=0):
    """Return (new tokens, number of target forwards). ``prompt_ids``: [1, P]."""
    tc, dc = DynamicCache(), DynamicCache()
    P = prompt_ids.shape[1]
    prefill(target, prompt_ids[:, :-1], tc) if P > 1 else None
    prefill(drafter, prompt_ids[:, :-1], dc) if P > 1 else None
    last = prompt_ids[:, -1:]  # the pending token: in the sequence, not yet in either cache
    pending_drafter = last  # tokens the drafter has not seen yet (one, or two after a full acceptance)
    pos = P - 1  # absolute position of `last`
    out, target_forwards = [], 0
    V = target.get_output_embeddings().weight.shape[0]
    while len(out) < max_new_tokens:
        # 1. draft k tokens with the drafter: K, or fewer when fewer are still needed (the round's last
        #    token is the target's)
        k = min(K, max_new_tokens - len(out) - 1)
        draft_logits = [torch.empty(1, 0, V, dtype=next(drafter.parameters()).dtype)]
        drafts = [torch.empty(1, 0, dtype=torch.long)]
        feed = pending_drafter
        for i in range(k):
            z = decode(drafter, feed, dc)[:, -1]
            x = sk.sample(z, temperature=temperature, seed=seed, offset=pos + 1 + i)
            draft_logits.append(z[:, None])
            drafts.append(x[:, None])
            feed = x[:, None]
        draft_logits = torch.cat(draft_logits, 1)  # [1, k, V]
        drafts = torch.cat(drafts, 1)  # [1, k]
        # 2. the target scores the pending token and the K drafts in one forward
        target_logits = decode(target, torch.cat([last, drafts], 1), tc)  # [1, k + 1, V]
        target_forwards += 1
        # 3. verify: accepted prefix + one emitted token
        res = sk.verify(draft_logits, target_logits, drafts, rule=rule, alpha=alpha, temperature=temperature,
                        seed=seed, offset=pos + 1)
        m = int(res.num_accepted[0])  # the loop's one host sync per round
        emitted = res.tokens[0, :m + 1].tolist()
        out.extend(emitted)
        # 4. roll back the caches: keep the pending token and the m accepted drafts
        crop(tc, pos + 1 + m)
        crop(dc, pos + 1 + m)
        pos += m + 1
        last = res.tokens[:, m:m + 1]
        # the drafter saw drafts 1..k-1 only: after a full acceptance it also needs draft k
        pending_drafter = torch.cat([feed if k else pending_drafter, last], 1) if m == k else last
    return out[:max_new_tokens], target_forwards


@torch.no_grad()
def greedy(model, prompt_ids, n):
    cache = DynamicCache()
    z = prefill(model, prompt_ids, cache)
    out = []
    for _ in range(n):
        t = z.argmax(-1, keepdim=True)
        out.append(int(t))
        z = decode(model, t, cache)[:, -1]
    return out


def tiny_pair(vocab=128, seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    target = LlamaForCausalLM(cfg).eval().double()
    with torch.no_grad():
        target.lm_head.weight.mul_(25.0)
    drafter = LlamaForCausalLM(cfg).eval().double()
    drafter.load_state_dict(target.state_dict())
    with torch.no_grad():
        for p in drafter.parameters():
            p.add_(torch.randn_like(p) * 0.3 * p.std().clamp(min=1e-3))
    return target, drafter


def main():
    target, drafter = tiny_pair()
    prompt = torch.randint(0, 128, (1, 6))
    n = 24
    spec, tf = speculative_generate(target, drafter, prompt, n, K=4)
    ref = greedy(target, prompt, n)
    print("target greedy     :", ref)
    print("speculative greedy:", spec, f"({tf} target forwards for {n} tokens)")
    assert spec == ref, "greedy speculative decoding must reproduce the target"
    cas, tf2 = speculative_generate(target, drafter, prompt, n, K=4, rule="token_v3", alpha=0.5)
    print("cascade token_v3  :", cas, f"({tf2} target forwards)")
    sampled, _ = speculative_generate(target, drafter, prompt, n, K=4, rule="token_v3", temperature=1.0, seed=7)
    print("cascade T=1 seed 7:", sampled)
    print("ok")


if __name__ == "__main__":
    main()
