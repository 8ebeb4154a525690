"""Numba flags in one place (STUMPY-style), so every kernel is compiled the same way.

``cache=True`` keeps compiled kernels between processes (sweeps start many); ``fastmath`` stays off so results are
bit-identical across thread counts and machines with the same instruction set; ``error_model='numpy'`` lets
division by zero give inf/nan rather than raising from inside a kernel (inputs are validated before they get here).
"""

JIT = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}
PARALLEL = {**JIT, "parallel": True}
