"""The parameter tree: every model number, with its default, unit, allowed range, symbol and source.

Built on pydantic v2: typed fields with bounds give validation and JSON round trips, ``extra="forbid"`` catches
misspelt keys, and the field metadata (unit, symbol, source) generates the parameter table of ``docs/model.md``.
Imports run one way: :mod:`~abm.params.core` (fields, layers, validation, messages) <- the groups
(:mod:`~abm.params.space`, :mod:`~abm.params.patient`, :mod:`~abm.params.cells`, :mod:`~abm.params.species`,
:mod:`~abm.params.therapy`, :mod:`~abm.params.response`) <- :mod:`~abm.params.tree` (:class:`Params`).

Groups: ``lattice``, ``time``, ``init``, ``patient`` (everything that varies between virtual patients), ``tumour``,
``ctl``, ``nk``, ``lak``, ``species`` (one entry per diffusing substance, with its uptake and secretion by cell
type), ``vessels``, ``pk`` (one entry per dosed drug), ``toxicity``, ``response``.
"""

from abm.errors import ParameterError
from abm.params.cells import CTLParams, LAKParams, NKParams, TumourParams
from abm.params.core import Group, Layer, P, all_keys, describe_range, parameter_rows, parse_set, read_toml
from abm.params.patient import PatientParams
from abm.params.response import ResponseParams
from abm.params.space import InitParams, LatticeParams, TimeParams, VesselParams
from abm.params.species import CELL_TYPE_NAMES, REQUIRED_SPECIES, CellExchange, SpeciesParams
from abm.params.therapy import DrugPK, ToxicityParams
from abm.params.tree import Params, parameter_table_markdown

__all__ = [
    "CELL_TYPE_NAMES",
    "CTLParams",
    "CellExchange",
    "DrugPK",
    "Group",
    "InitParams",
    "LAKParams",
    "Layer",
    "LatticeParams",
    "NKParams",
    "P",
    "ParameterError",
    "Params",
    "PatientParams",
    "REQUIRED_SPECIES",
    "ResponseParams",
    "SpeciesParams",
    "TimeParams",
    "ToxicityParams",
    "TumourParams",
    "VesselParams",
    "all_keys",
    "describe_range",
    "parameter_rows",
    "parameter_table_markdown",
    "parse_set",
    "read_toml",
]
