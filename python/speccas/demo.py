"""A short demonstration of ``verify`` on synthetic logits: acceptance and deferral per rule.

The drafter and target logits are correlated Gaussians (the target = the drafter + noise), so the
numbers mean something: the drafter agrees with the target often, not always.
"""

from __future__ import annotations

import time

import torch

import speccas_kernels as sk


def synthetic_round(B: int, K: int, V: int, *, agreement: float = 2.0, generator_seed: int = 0):
    g = torch.Generator().manual_seed(generator_seed)
    base = torch.randn(B, K + 1, V, generator=g) * 3.0
    target = base + torch.randn(B, K + 1, V, generator=g) * (3.0 / agreement)
    draft = base[:, :K] + torch.randn(B, K, V, generator=g) * (3.0 / agreement)
    return draft, target


def run(B: int = 256, K: int = 4, V: int = 4096, temperature: float = 1.0, backend: str = "auto") -> list:
    draft_logits, target_logits = synthetic_round(B, K, V)
    seeds = torch.arange(B)
    drafts = torch.stack(
        [sk.sample(draft_logits[:, i], temperature=temperature, seed=seeds, offset=i, backend=backend) for i in range(K)], 1
    )
    rows = []
    for rule in sk.RULES:
        t0 = time.perf_counter()
        out = sk.verify(draft_logits, target_logits, drafts, rule=rule, temperature=temperature, seed=seeds,
                        offset=0, backend=backend)
        dt = time.perf_counter() - t0
        rows.append({
            "rule": rule,
            "alpha": sk.DEFAULT_ALPHA[rule],
            "accepted_per_round": out.num_accepted.double().mean().item(),
            "tokens_per_round": (out.num_accepted + 1).double().mean().item(),
            "accept_rate": out.accept_prob.double().mean().item(),
            "deferral_rate": out.deferred.double().mean().item(),
            "ms": dt * 1e3,
        })
    return rows


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--draft-tokens", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--backend", default="auto")
    a = ap.parse_args(argv)
    rows = run(a.batch, a.draft_tokens, a.vocab, a.temperature, a.backend)
    print(f"verify on synthetic logits: B={a.batch} K={a.draft_tokens} V={a.vocab} T={a.temperature}")
    print(f"{'rule':<12} {'alpha':>6} {'accepted/round':>15} {'tokens/round':>13} {'E[a_i]':>7} {'deferral':>9} {'ms':>8}")
    for r in rows:
        print(f"{r['rule']:<12} {r['alpha']:>6.2f} {r['accepted_per_round']:>15.3f} {r['tokens_per_round']:>13.3f} "
              f"{r['accept_rate']:>7.3f} {r['deferral_rate']:>9.3f} {r['ms']:>8.1f}")


if __name__ == "__main__":
    main()
