"""speccas: speculative cascades for PyTorch decode loops (the thin wrapper over speccas_kernels)."""

from speccas_kernels import RULES, DEFAULT_ALPHA, sample, verify  # noqa: F401

__version__ = "0.1.0"
