"""Therapy: plasma pharmacokinetics, dosing schedules, toxicity and dose holds (plain Python/numpy, once per step).

Public API: :class:`Regimen` (validated, in the clinic's units), :class:`Therapy` (one ``advance(step)`` per agent
step -> :class:`TherapyStep`), :class:`ScheduledDose`, :class:`ScheduledTransfer`; the PK closed forms and unit
conversions are in :mod:`abm.therapy.pk`, the toxicity score in :mod:`abm.therapy.toxicity`. The PK and toxicity
parameters are part of the one parameter tree (:mod:`abm.params.therapy`).
"""

from abm.therapy.regimen import DoseBlock, Regimen, ScheduledDose, ScheduledTransfer, Transfer
from abm.therapy.therapy import EVENT_KEYS, EVENT_KINDS, Therapy, TherapyStep

__all__ = [
    "EVENT_KEYS",
    "EVENT_KINDS",
    "DoseBlock",
    "Regimen",
    "ScheduledDose",
    "ScheduledTransfer",
    "Therapy",
    "TherapyStep",
    "Transfer",
]
