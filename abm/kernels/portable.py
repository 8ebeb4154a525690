"""Elementwise ``exp``, ``expm1``, ``log``, ``cos``, ``sin`` and a small matrix product that give the same bits on
every CPU.

numpy picks its SIMD loops for transcendental functions at run time from the CPU: on a machine with AVX-512 its
float64 ``exp``/``log`` (and, through SVML, ``expm1``, ``sin``, ``cos``, ...) differ in the last bit from the scalar C
library that the Numba kernels call, and BLAS (``@``, ``np.linalg``) picks its kernels the same way. A last-bit
difference in a plasma level or a patient's drawn weight moves a random draw across its threshold, and the run then
takes another path: the same seed gave another trajectory on an AVX-512 machine than on an AVX2 one (all nine
treated golden cases). Everything that feeds a simulation's state (pharmacokinetics, toxicity, cohort draws, sweep
designs, caliper directions) computes through these functions instead; they compile to
the C library's scalar functions (glibc on Linux), exactly as the kernels do, and their results equal numpy's on
CPUs whose numpy uses those scalar loops (AVX2 and older).

Analysis and plotting code may keep numpy's functions: it reads outputs, it does not make them.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_SIG = ["float64(float64)"]
_OPTS = {"cache": True, "nopython": True}


@numba.vectorize(_SIG, **_OPTS)
def _exp(x):
    return math.exp(x)


@numba.vectorize(_SIG, **_OPTS)
def _expm1(x):
    return math.expm1(x)


@numba.vectorize(_SIG, **_OPTS)
def _log(x):
    return math.log(x) if x > 0.0 else (-math.inf if x == 0.0 else math.nan)


@numba.vectorize(_SIG, **_OPTS)
def _cos(x):
    return math.cos(x)


@numba.vectorize(_SIG, **_OPTS)
def _sin(x):
    return math.sin(x)


def _wrap(f):
    def g(x):
        a = np.asarray(x, dtype=np.float64)
        out = f(a)
        return float(out) if a.ndim == 0 else out

    g.__doc__ = f"Elementwise {f.__name__[1:]} of a float or array (float64), the same bits on every CPU."
    g.__name__ = f.__name__[1:]
    return g


exp = _wrap(_exp)
expm1 = _wrap(_expm1)
log = _wrap(_log)
cos = _wrap(_cos)
sin = _wrap(_sin)


def matmul_t(z: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """``z @ lower.T`` for a small square ``lower``, summed in a fixed order (no BLAS)."""
    z = np.asarray(z, dtype=np.float64)
    out = np.zeros((z.shape[0], lower.shape[0]))
    for i in range(lower.shape[0]):
        for j in range(lower.shape[1]):
            if lower[i, j] != 0.0:
                out[:, i] += z[:, j] * lower[i, j]
    return out


def cholesky(a: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a small symmetric positive-definite matrix (no LAPACK); ``np.linalg.LinAlgError``
    if it is not positive definite."""
    a = np.asarray(a, dtype=np.float64)
    n = a.shape[0]
    lo = np.zeros((n, n))
    for j in range(n):
        d = a[j, j] - sum(lo[j, k] * lo[j, k] for k in range(j))
        if not d > 0.0:
            raise np.linalg.LinAlgError("matrix is not positive definite")
        lo[j, j] = math.sqrt(d)
        for i in range(j + 1, n):
            lo[i, j] = (a[i, j] - sum(lo[i, k] * lo[j, k] for k in range(j))) / lo[j, j]
    return lo
