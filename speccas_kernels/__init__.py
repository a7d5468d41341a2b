"""speccas_kernels: fused samplers for speculative cascades.

Public API: ``verify``, ``verify_ragged``, ``sample``, ``VerifyOutput``, ``RULES``, ``DEFAULT_ALPHA`` and the
``reference`` module (the same two functions in plain PyTorch). The math is SPEC.md.
"""

from . import reference
from .backends import available as backend_available
from .ops import sample, verify, verify_ragged
from .reference import VerifyOutput
from .rules import RULE_INFO, RULES

DEFAULT_ALPHA = {name: info.default_alpha for name, info in RULE_INFO.items()}

__version__ = "0.1.0"
__all__ = ["verify", "verify_ragged", "sample", "VerifyOutput", "RULES", "DEFAULT_ALPHA", "RULE_INFO", "reference",
           "backend_available", "__version__"]
