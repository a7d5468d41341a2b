"""The README's code for engines ("Replacing your engine's sampler") runs as printed, its asserts included."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Replacing your engine's sampler"


def section_blocks(text: str, heading: str):
    """The ```python blocks between ``heading`` and the next level-2 heading."""
    start = text.index(heading)
    nxt = text.find("\n## ", start + len(heading))
    body = text[start:nxt if nxt >= 0 else len(text)]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_section_has_the_adapters_and_the_ragged_layout():
    blocks = section_blocks(README.read_text(), SECTION)
    code = "\n".join(blocks)
    assert len(blocks) == 2
    for name in ("verify_ragged", "vllm_rejection_sample", "flashinfer_chain_speculative_sampling", "top_k", "top_p",
                 "min_p", "verify_ragged(None"):
        assert name in code, name


def test_section_code_runs(monkeypatch):
    """The blocks run in order in one namespace (as a reader pastes them); each asserts what it shows."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    ns: dict = {}
    for i, block in enumerate(section_blocks(README.read_text(), SECTION)):
        exec(compile(block, f"README.md[{SECTION} block {i}]", "exec"), ns)
    assert ns["out"].tokens.shape[0] == 3


def test_section_code_is_not_vacuous():
    """Negative control: a wrong claim in the block fails the run (the exec really runs the asserts)."""
    block = section_blocks(README.read_text(), SECTION)[0]
    broken = block.replace("out.num_accepted[1] == 0", "out.num_accepted[1] == 1")
    assert broken != block
    with pytest.raises(AssertionError):
        exec(compile(broken, "broken", "exec"), {})
