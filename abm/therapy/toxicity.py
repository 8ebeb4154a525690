"""Systemic toxicity score driven by plasma IL-2 (capillary leak syndrome, IL-2's dose-limiting toxicity).

    dS/dt = k_tox * C(t) / (C(t) + K_tox) - S / tau_rec

with C the plasma IL-2 (pM), k_tox = ``rate_per_day`` / 1440 (1/min), K_tox = ``il2_half_pM`` and
tau_rec = ``recovery_time_h`` x 60 (min). The equation is linear in S, so over any interval

    S(b) = S(a) exp(-(b - a)/tau) + integral_a^b k f(C(s)) exp(-(b - s)/tau) ds

is exact; the integral (of a smooth curve once the interval is split at dose starts and infusion ends) is taken by
3-point Gauss-Legendre quadrature on sub-steps of at most ``SUBSTEP_MIN`` minutes, far more accurate than needed
(tests compare with a stiff ODE solver).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from abm.kernels import portable as pm

if TYPE_CHECKING:  # pragma: no cover
    from abm.params import ToxicityParams
    from abm.therapy.pk import Terms

SUBSTEP_MIN = 2.0
"""Longest quadrature sub-step (min); the fastest IL-2 phase has a 13-min half-life."""

_GL_X = np.array([-math.sqrt(3.0 / 5.0), 0.0, math.sqrt(3.0 / 5.0)])
_GL_W = np.array([5.0 / 9.0, 8.0 / 9.0, 5.0 / 9.0])


def toxicity_drive_per_min(c_il2_pM: float | np.ndarray, tox: ToxicityParams) -> float | np.ndarray:
    """Rise rate of the score (1/min) at plasma IL-2 ``c_il2_pM`` (pM): ``k_tox C / (C + K_tox)``."""
    c = np.maximum(np.asarray(c_il2_pM, dtype=float), 0.0)
    return tox.rate_per_day / 1440.0 * c / (c + tox.il2_half_pM)


def recovery_time_min(tox: ToxicityParams) -> float:
    return tox.recovery_time_h * 60.0


def advance_toxicity(
    s: float, t0: float, t1: float, il2: Terms, tox: ToxicityParams, threshold: float | None = None
) -> tuple[float, float | None]:
    """Integrate the score from ``t0`` to ``t1`` (min) under the plasma IL-2 curve ``il2``.

    Returns ``(S(t1), t_cross)``, where ``t_cross`` is the end of the first sub-step at which S >= ``threshold``
    (None if it is not reached or no threshold is given).
    """
    if t1 <= t0:
        return s, (t0 if threshold is not None and s >= threshold else None)
    tau = recovery_time_min(tox)
    if len(il2) == 0 or tox.rate_per_day == 0.0:
        return s * math.exp(-(t1 - t0) / tau), (t0 if threshold is not None and s >= threshold else None)
    edges = [t0, *il2.breakpoints(t0, t1), t1]
    bounds: list[float] = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        n = max(1, math.ceil((b - a) / SUBSTEP_MIN - 1e-9))
        bounds.extend(np.linspace(a, b, n + 1)[:-1].tolist())
    bounds.append(t1)
    lo = np.asarray(bounds[:-1])
    hi = np.asarray(bounds[1:])
    half = (hi - lo) / 2.0
    nodes = (lo + hi)[:, None] / 2.0 + half[:, None] * _GL_X[None, :]
    drive = toxicity_drive_per_min(il2.value(nodes.ravel()), tox).reshape(nodes.shape)
    weight = pm.exp(-(hi[:, None] - nodes) / tau) * _GL_W[None, :] * half[:, None]
    gain = np.sum(drive * weight, axis=1)
    decay = pm.exp(-(hi - lo) / tau)
    t_cross = t0 if threshold is not None and s >= threshold else None
    for i in range(len(lo)):
        s = s * decay[i] + gain[i]
        if t_cross is None and threshold is not None and s >= threshold:
            t_cross = float(hi[i])
    return float(s), t_cross
