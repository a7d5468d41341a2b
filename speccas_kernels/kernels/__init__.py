"""Triton kernels of the ``triton`` backend (imported only by ``speccas_kernels.triton_backend``).

``philox``: the counter-based generator of ``speccas_kernels.random`` as ``@triton.jit`` helpers.
``sample``: the drafter step. ``verify``: one verification round, in four phases.
"""
