"""Numba kernels: pure functions over arrays and scalars. Nothing here imports the rest of abm."""
