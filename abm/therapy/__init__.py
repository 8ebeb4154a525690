"""Therapy: plasma pharmacokinetics, dosing schedules, toxicity and dose holds (plain Python/numpy, once per step).

Public API: :class:`Regimen` (validated, in the clinic's units), :class:`Therapy` (one ``advance(step)`` per agent
step -> :class:`TherapyStep`), :class:`ScheduledDose`, :class:`ScheduledTransfer`; the PK closed forms and unit
conversions are in :mod:`abm.therapy.pk`, the toxicity score in :mod:`abm.therapy.toxicity`.

The names are imported lazily: ``abm.params`` imports ``abm.therapy.params`` while it is itself still loading, so
this package must not import the modules that need the finished ``abm.params`` at import time.
"""

from __future__ import annotations

import importlib
from typing import Any

import abm.params  # noqa: F401  (loads the parameter tree, and with it abm.therapy.params, in the right order)

_EXPORTS = {
    "PKParams": "abm.therapy.params",
    "ToxicityParams": "abm.therapy.params",
    "DoseBlock": "abm.therapy.regimen",
    "DoseScale": "abm.therapy.regimen",
    "Regimen": "abm.therapy.regimen",
    "ScheduledDose": "abm.therapy.regimen",
    "ScheduledTransfer": "abm.therapy.regimen",
    "Transfer": "abm.therapy.regimen",
    "EVENT_KEYS": "abm.therapy.therapy",
    "EVENT_KINDS": "abm.therapy.therapy",
    "Therapy": "abm.therapy.therapy",
    "TherapyStep": "abm.therapy.therapy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'abm.therapy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
