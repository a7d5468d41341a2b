"""speccas: speculative cascades for PyTorch decode loops (the thin wrapper over speccas_kernels).

``speccas.generate(target, drafter, input_ids, ...)`` runs a drafter/target pair of Hugging Face
causal LMs with any method of ``speccas.METHODS`` (``drafter="prompt_lookup"``: n-gram drafts, no model); ``speccas.models`` loads models (and the real
Qwen2.5-Coder pair); ``speccas.hf`` plugs into ``model.generate``.
"""

from speccas_kernels import RULES, DEFAULT_ALPHA, sample, verify  # noqa: F401

from .generate import METHODS, GenerationOutput, generate  # noqa: F401
from .lookup import PromptLookupDrafter  # noqa: F401

__version__ = "0.1.0"
__all__ = ["generate", "GenerationOutput", "METHODS", "PromptLookupDrafter", "RULES", "DEFAULT_ALPHA", "sample", "verify", "__version__"]
