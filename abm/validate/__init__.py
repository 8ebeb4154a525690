"""The validation suite: the clinical patterns P1-P6 (docs/model.md s1) measured on the default virtual patient.

``experiments`` declares each pattern as arms (shipped scenario names + documented overrides) and comparisons
(a statistic over seeds and a verdict rule); ``stats`` computes effects with 95% intervals and verdicts;
``runner`` runs the arms x seeds in worker processes; ``report`` writes the tables and one figure per pattern;
``cli`` adds ``abm validate``. See docs/validation.md.
"""

from __future__ import annotations
