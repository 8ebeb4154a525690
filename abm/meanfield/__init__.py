"""Mean-field (well-mixed) ODE models (docs/meanfield.md): the limit of abm's own rules
(:mod:`abm.meanfield.abm_limit`) and the Kirschner–Panetta 1998 model as a documented example
(:mod:`abm.meanfield.kirschner_panetta`)."""

from abm.meanfield.abm_limit import MeanField, MeanFieldSolution
from abm.meanfield.kirschner_panetta import KPParams

__all__ = ["KPParams", "MeanField", "MeanFieldSolution"]
