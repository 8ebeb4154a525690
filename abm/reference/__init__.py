"""A plain-Mesa implementation of the model's cell rules, for equivalence tests and benchmarks.

See :mod:`abm.reference.model`; ``ReferenceModel`` is a ``mesa.Model`` with one ``CellAgent`` per cell on an
``OrthogonalMooreGrid``, sharing only the parameters, initial placement, field solver and therapy with
:class:`abm.Model`.
"""

from abm.reference.model import CTL, LAKCell, NKCell, ReferenceModel, TumourCell, Vessel, run_reference

__all__ = ["CTL", "LAKCell", "NKCell", "ReferenceModel", "TumourCell", "Vessel", "run_reference"]
