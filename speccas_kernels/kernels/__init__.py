"""Triton kernels of the ``triton`` backend (imported only by ``speccas_kernels.triton_backend``).

``philox``: the counter-based generator of ``speccas_kernels.random`` as ``@triton.jit`` helpers.
``sample``: the drafter step. ``verify``: one verification round (phases stats, merge, second look,
accept, race, emit: the names the CUDA C++ and docs/SPEC.md use too).
"""
