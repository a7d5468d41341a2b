"""A speculative cascade through Hugging Face ``model.generate`` (transformers 5.x ``custom_generate``).

    python python/examples/hf_custom_generate.py            # tiny random models, runs anywhere
    python python/examples/hf_custom_generate.py --real     # the Qwen2.5-Coder pair (fetched on first use)
"""

import argparse

import torch

import speccas.hf


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--real", action="store_true")
    a = ap.parse_args()
    if a.real:
        from speccas.cli import encode_prompts
        from speccas.models import load_real_pair

        target, drafter, tok = load_real_pair()
        ids, mask = encode_prompts(tok, ["Write a Python function that reverses a list."])
    else:
        from gpt_fast_style_loop import tiny_pair

        target, drafter = tiny_pair()
        tok = None
        ids = torch.randint(0, 128, (2, 6))
        mask = torch.ones_like(ids)
    # one call, the same spelling as assisted generation
    seq, stats = speccas.hf.cascade_generate(target, ids, attention_mask=mask, assistant_model=drafter,
                                             rule="token_v3", alpha=0.5, max_new_tokens=32, do_sample=False,
                                             return_speccas_output=True)
    # or directly: target.generate(ids, attention_mask=mask, custom_generate=speccas.hf.cascade_decoding,
    #                              drafter=drafter, rule="token_v3", alpha=0.5, max_new_tokens=32)
    new = seq[:, ids.shape[1]:]
    print(tok.batch_decode(new, skip_special_tokens=True) if tok else new.tolist())
    print({k: v for k, v in stats.stats().items() if k in ("rounds", "target_forwards", "tokens_per_target_forward",
                                                          "acceptance_rate", "deferral_rate", "tokens_per_second")})


if __name__ == "__main__":
    main()
