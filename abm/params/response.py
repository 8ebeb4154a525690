"""How a run's response is judged (RECIST-like, on the lesion's longest diameter)."""

from __future__ import annotations

from abm.params.core import Group, P


class ResponseParams(Group):
    """RECIST-like classification on the longest diameter."""

    partial_response_shrinkage: float = P(
        0.30, "-", "fractional shrinkage for a partial response", gt=0, lt=1, source="RECIST 1.1"
    )
    progression_growth: float = P(
        0.20, "-", "fractional growth over the nadir for progressive disease", gt=0, le=10, source="RECIST 1.1"
    )
    complete_response_cells: int = P(0, "cells", "tumour cells at or below which a response is complete", ge=0)
    lesion_min_tumour_neighbours: int = P(
        3,
        "cells",
        "a tumour cell counts toward the measured lesion if at least this many Moore neighbours are tumour cells "
        "(scattered survivors are not a measurable lesion; 0 = every cell)",
        ge=0,
        le=26,
        source="choice: a RECIST lesion is a contiguous mass seen on imaging",
    )
    stable_disease_min_days: float = P(
        42.0,
        "day",
        "stable disease counts as the best response only if no progression occurs before this time",
        ge=0,
        le=3650,
        source="RECIST 1.1 (minimum interval for SD, commonly 6-8 weeks)",
    )
