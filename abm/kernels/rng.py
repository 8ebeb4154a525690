"""Counter-based random numbers: a draw is a pure function of (seed, step, index, purpose).

No generator state is carried between draws, so a result never depends on the order in which cells, sites or
threads are visited: the same key gives the same number on any thread count. The mixer is SplitMix64's finaliser
applied over the key words; its output passes BigCrush when used as a counter-based generator.
"""

import numba
import numpy as np

from abm.kernels.config import JIT

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_K_IDX = np.uint64(0xD6E8FEB86659FD93)
_K_PURPOSE = np.uint64(0xA0761D6478BD642F)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_ONE = np.uint64(1)
_INV53 = 1.0 / 9007199254740992.0  # 2**-53

# purposes: one per kind of draw, so two rules never share a number
ORDER = 1
DIVIDE = 2
DIVIDE_SITE = 3
DEATH = 4
DRUG_KILL = 5
KILL = 6
KILL_TARGET = 7
MOVE = 8
AICD = 9
PROLIF = 10
PROLIF_SITE = 11
RECRUIT_CTL = 12
RECRUIT_NK = 13
RECRUIT_SITE = 14
WITHDRAWAL = 15
TRANSFER = 16
INIT = 17
MOVE_COUNT = 18
TRANSFER_ROUND = 19
BLOCK_COLOUR = 20


@numba.njit(inline="always", **JIT)
def mix64(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@numba.njit(inline="always", **JIT)
def hash4(seed, step, index, purpose):
    """64 random bits for the key (seed, step, index, purpose); all arguments are non-negative integers."""
    h = mix64(np.uint64(seed) + _GOLDEN * (np.uint64(step) + _ONE))
    h = mix64(h ^ (np.uint64(index) * _K_IDX))
    return mix64(h ^ (np.uint64(purpose) * _K_PURPOSE))


@numba.njit(inline="always", **JIT)
def uniform(seed, step, index, purpose):
    """A float64 in [0, 1) for the key (seed, step, index, purpose)."""
    return np.float64(hash4(seed, step, index, purpose) >> _S11) * _INV53


@numba.njit(inline="always", **JIT)
def randint(seed, step, index, purpose, n):
    """An integer in [0, n) for the key; n >= 1."""
    return np.int64(uniform(seed, step, index, purpose) * n)


@numba.njit(**JIT)
def uniform_array(seed, step, purpose, out):
    """Fill ``out`` with draws keyed by (seed, step, i, purpose); for tests and initialisation."""
    for i in range(out.shape[0]):
        out[i] = uniform(seed, step, i, purpose)
    return out
