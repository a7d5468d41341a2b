"""The rule table (speccas_kernels/rules.py) and what is derived from it: every per-rule table of the
project covers every rule, the README and the C++ enum match the table, a malformed row or an unknown
code fails loudly."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest
import torch

import speccas_kernels as sk
from speccas_kernels import backends, native, rules
from speccas_kernels.rules import RULE_INFO, RULES

import test_exactness
from helpers import native_call, with_args

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_rules_table_is_the_tables():
    text = (ROOT / "README.md").read_text()
    i, j = text.index(rules.README_BEGIN), text.index(rules.README_END)
    assert text[i + len(rules.README_BEGIN): j].strip() == rules.readme_table(), (
        "README's rules table is stale: run `python -m speccas_kernels.tables readme`")
    for r in RULES:
        assert f"| `{r}` |" in text


def test_generated_c_header_is_the_tables():
    path = ROOT / "build" / "generated" / "speccas_rules_gen.h"
    assert path.exists(), "setup.py writes build/generated/speccas_rules_gen.h when it builds the extension"
    assert path.read_text() == rules.c_header(), "the extension was built from another rule table: rebuild it"
    for r in RULES:
        assert f"kRule_{r} = {RULE_INFO[r].code}," in rules.c_header()


def test_per_rule_tables_cover_every_rule():
    """Per-rule tables outside rules.py: a rule missing from one of them would go untested."""
    assert set(test_exactness.ALPHA) == set(RULES), "tests/test_exactness.py ALPHA must hold every rule"
    for r in RULES:  # the independent law exists for every rule (it raises KeyError otherwise)
        test_exactness.Law(r, test_exactness.ALPHA[r], test_exactness.ZQ[0], test_exactness.ZP[0], 1.0)
    assert set(rules.ANALYSIS_GRIDS) == set(RULES) and set(sk.DEFAULT_ALPHA) == set(RULES)
    fams = {RULE_INFO[r].family for r in rules.representatives()}
    assert fams == set(rules.FAMILIES), "representatives() must cover every family"


@pytest.mark.parametrize("rule", RULES)
def test_formulas_run_on_tensors(rule):
    """The formula is plain arithmetic over broadcastable tensors (the reference calls it on [B, L, V] blocks,
    the kernels on Triton blocks) and gives a value per element."""
    info = RULE_INFO[rule]
    alpha = torch.full((2, 1, 1), info.default_alpha)
    x = torch.rand(2, 3, 5)
    if info.family == rules.FAMILY_A:
        r = info.weight(alpha, x[..., :1], x[..., 1:2], x[..., 2:3])
        assert torch.is_tensor(r) and torch.broadcast_shapes(r.shape, (2, 3, 1)) == (2, 3, 1)
        assert ((r.float() >= 0) & (r.float() <= 1)).all()
        if info.binary:
            assert r.dtype == torch.bool or set(r.unique().tolist()) <= {0.0, 1.0}
    elif info.family == rules.FAMILY_B:
        s = info.in_set(alpha, x, x.flip(-1), x.amax(-1, keepdim=True))
        assert s.dtype == torch.bool and s.shape == (2, 3, 5)
    else:
        assert info.weight is None and info.in_set is None


@pytest.mark.parametrize("rule", [r for r in RULES if RULE_INFO[r].family != rules.FAMILY_LOSSY])  # (no formula)
def test_formulas_read_exactly_what_their_row_declares(rule):
    """``Rule.reads`` is what the formula reads: changing a statistic it does not declare never changes the
    result, and changing one it declares does somewhere. The kernels trust it (a token set whose membership does
    not read p^ skips the target tile in its second look)."""
    info = RULE_INFO[rule]
    g = torch.Generator().manual_seed(3)
    names = ("max_qh", "max_ph", "tv") if info.family == rules.FAMILY_A else ("qh", "ph", "max_ph")
    fn = info.weight if info.family == rules.FAMILY_A else info.in_set
    args = {n: torch.rand(4096, generator=g) for n in names}
    lo, hi = max(info.alpha_range[0], -2.0), min(info.alpha_range[1], 2.0)
    alphas = torch.linspace(lo, hi - (1e-3 if info.high_open else 0.0), 4096)
    base = fn(alphas, *(args[n] for n in names)).float()
    for n in names:
        moved = dict(args, **{n: torch.rand(4096, generator=g)})
        changed = (fn(alphas, *(moved[m] for m in names)).float() != base).any()
        if n in info.reads:
            assert changed, f"{rule} declares {n} but ignores it"
        else:
            assert not changed, f"{rule} reads {n}, which its row does not declare"


def test_malformed_rows_fail_at_import():
    base = RULE_INFO["chow"]
    for bad in (dataclasses.replace(base, name="x", code=base.code),  # duplicate code
                dataclasses.replace(base, name="x", code=99, weight=None),  # family A without its formula
                dataclasses.replace(base, name="x", code=99, family=rules.FAMILY_B, in_set=None),
                dataclasses.replace(base, name="x", code=99, reads=("max_qh", "entropy")),
                dataclasses.replace(base, name="x", code=99, summary=""),
                dataclasses.replace(base, name="x", code=99, drafter_at=(2.0,)),  # a claimed end out of range
                dataclasses.replace(RULE_INFO["token_v2"], name="x", code=99,  # keeps a token, drops likelier ones
                                    in_set=lambda alpha, qh, ph, max_ph: ph <= max_ph - alpha),
                dataclasses.replace(RULE_INFO["token_v2"], name="x", code=99,  # a floor that is not the set's
                                    floor=lambda alpha, max_ph: max_ph - 2 * alpha),
                dataclasses.replace(RULE_INFO["token_v2"], name="x", code=99, reads=("max_ph", "qh", "ph"),
                                    in_set=lambda alpha, qh, ph, max_ph: (ph >= max_ph - alpha) & (qh >= 0.0)),
                dataclasses.replace(base, name="x", code=99, monotone_tv=True),  # chow reads no tv
                dataclasses.replace(RULE_INFO["opt"], name="x", code=99,  # r at tv = 0 and 2 says nothing between
                                    weight=lambda alpha, max_qh, max_ph, tv: (tv - 1.0) ** 2 < max_ph - alpha)):
        with pytest.raises(ValueError):
            rules._check_table(rules._RULES + (bad,))
    rules._check_table(rules._RULES)


@pytest.mark.skipif(not backends.available("cpp")[0], reason="the native extension is not built")
def test_native_op_rejects_a_rule_it_was_not_built_with():
    kw = dict(draft_logits=torch.randn(1, 1, 8), target_logits=torch.randn(1, 2, 8),
              draft_tokens=torch.zeros(1, 1, dtype=torch.int64))
    op, args = native_call("verify_native", lambda: sk.verify(**kw, rule="chow", backend="cpp"))
    flags, rng = native.rule_args(RULE_INFO["chow"])
    assert args[[a.name for a in op._schema.arguments].index("rule")] == flags
    for bad in ([99] + flags[1:], [flags[0], rules.FAMILY_CODE[rules.FAMILY_B]] + flags[2:]):
        with pytest.raises(ValueError, match="rebuild"):
            op(*with_args(op, args, rule=bad))
