"""The Kirschner–Panetta (1998) tumour–effector–IL-2 model, as a documented example of a mean-field immunotherapy
model (docs/meanfield.md).

Kirschner D, Panetta JC. Modeling immunotherapy of the tumor-immune interaction. J Math Biol 37:235-252 (1998).
Effector cells x, tumour cells y, IL-2 z (time in days)::

    dx/dt = c y - mu2 x + p1 x z / (g1 + z) + s1
    dy/dt = r2 y (1 - b y) - a x y / (g2 + y)
    dz/dt = p2 x y / (g3 + y) - mu3 z + s2

The constants are that paper's (its Table 1; the same values are in the curated BioModels entry BIOMD0000000732),
not abm's: they live in :class:`KPParams` and nowhere else. ``s1`` is adoptive cellular immunotherapy (effector
cells per day), ``s2`` IL-2 given as a constant source.

Two results of the paper are reproduced (tests/test_meanfield.py):

* adoptive therapy alone (``s2 = 0``) clears the tumour when ``s1`` exceeds ``r2 g2 mu2 / a`` (540 with the
  published values): the tumour-free state ``(s1 / mu2, 0, 0)`` is then stable, whatever the antigenicity c;
* IL-2 alone (``s1 = 0``) clears it only when ``s2`` exceeds ``mu3 mu2 g1 / (p1 - mu2)`` (6.3e7), the level at
  which IL-2-driven effector expansion ``p1 z / (g1 + z)`` outruns effector loss ``mu2``: the effector
  population then grows without bound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from scipy.integrate import solve_ivp


@dataclass(frozen=True)
class KPParams:
    """Kirschner & Panetta (1998), Table 1 (per day; cells and IL-2 in the paper's arbitrary volume units)."""

    c: float = 0.0  # antigenicity of the tumour (the paper varies it over 0-0.05)
    mu2: float = 0.03  # effector loss
    p1: float = 0.1245  # maximal IL-2-driven effector proliferation
    g1: float = 2e7  # IL-2 half-saturation of effector proliferation
    g2: float = 1e5  # tumour half-saturation of effector killing
    r2: float = 0.18  # tumour growth rate
    b: float = 1e-9  # inverse tumour carrying capacity
    a: float = 1.0  # maximal kill rate per effector
    mu3: float = 10.0  # IL-2 loss
    p2: float = 5.0  # maximal IL-2 production per effector
    g3: float = 1e3  # tumour half-saturation of IL-2 production
    s1: float = 0.0  # adoptive therapy: effector cells infused per day
    s2: float = 0.0  # IL-2 infused per day

    def with_(self, **changes: float) -> KPParams:
        return replace(self, **changes)


def rhs(t: float, u: np.ndarray, k: KPParams) -> list[float]:
    """The right-hand side ``(dx/dt, dy/dt, dz/dt)``."""
    x, y, z = u
    return [
        k.c * y - k.mu2 * x + k.p1 * x * z / (k.g1 + z) + k.s1,
        k.r2 * y * (1.0 - k.b * y) - k.a * x * y / (k.g2 + y),
        k.p2 * x * y / (k.g3 + y) - k.mu3 * z + k.s2,
    ]


def integrate(k: KPParams, days: float, u0: tuple[float, float, float] = (1.0, 1.0, 1.0), **kw):
    """Integrate from ``u0 = (x, y, z)`` for ``days`` with a stiff solver (IL-2 relaxes at mu3 = 10/day while the
    cells change over weeks). Returns the :func:`scipy.integrate.solve_ivp` result."""
    opts = {"method": "Radau", "rtol": 1e-7, "atol": 1e-9, "dense_output": False}
    opts.update(kw)
    return solve_ivp(rhs, (0.0, days), np.asarray(u0, dtype=float), args=(k,), **opts)


def adoptive_threshold(k: KPParams) -> float:
    """``s1`` above which the tumour-free state is stable with IL-2 source ``k.s2``: the tumour's growth rate at
    y = 0, r2, must fall below the kill rate a x* / g2 of the tumour-free effector level
    x* = s1 / (mu2 - p1 z* / (g1 + z*)), z* = s2 / mu3 (infinite when IL-2 alone runs the effectors away)."""
    z = k.s2 / k.mu3
    net_loss = k.mu2 - k.p1 * z / (k.g1 + z)
    return k.r2 * k.g2 * net_loss / k.a if net_loss > 0 else 0.0


def runaway_il2_threshold(k: KPParams) -> float:
    """``s2`` at which IL-2 alone makes the effectors grow without bound: p1 z* / (g1 + z*) = mu2, z* = s2 / mu3."""
    if k.p1 <= k.mu2:
        return float("inf")
    return k.mu3 * k.mu2 * k.g1 / (k.p1 - k.mu2)


RUNAWAY_EFFECTORS = 1e20
"""Effector level at which :func:`cleared` stops integrating: the population is running away (it grows
exponentially without bound) and the stiff solver would otherwise fail on it."""


def _runaway(t, u, k):
    return u[0] - RUNAWAY_EFFECTORS


_runaway.terminal = True


def cleared(k: KPParams, days: float = 1000.0, u0=(1.0, 1.0, 1.0), below: float = 1.0) -> bool:
    """Whether the tumour is below ``below`` cells (default: less than one cell) at ``days``, or when the
    effectors pass :data:`RUNAWAY_EFFECTORS` if that comes first."""
    sol = integrate(k, days, u0, events=_runaway)
    if sol.status < 0:
        raise RuntimeError(f"Kirschner-Panetta integration failed: {sol.message}")
    return bool(sol.y[1, -1] < below)


def bisect_threshold(
    is_cleared: Callable[[float], bool], lo: float, hi: float, rel_tol: float = 1e-3, max_iter: int = 60
) -> float:
    """The smallest value in ``[lo, hi]`` at which ``is_cleared`` turns True (``lo`` must not clear, ``hi`` must),
    to a relative tolerance ``rel_tol``."""
    if is_cleared(lo) or not is_cleared(hi):
        raise ValueError(f"no clearance transition in [{lo}, {hi}]")
    for _ in range(max_iter):
        if hi - lo <= rel_tol * hi:
            break
        mid = 0.5 * (lo + hi)
        if is_cleared(mid):
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)
