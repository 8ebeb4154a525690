"""Every Mesa call in abm lives here: Mesa's API is moving between 3.3 and 4.0, so this is the one place to adapt.

abm's state is arrays, not agents; Mesa gives the user-facing contract ABM users know: ``Model(seed=...)``,
``model.step()``, ``model.steps``, ``model.running``, a ``DataCollector`` and ``batch_run``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import mesa
import numpy as np

MesaModel = mesa.Model

HEADLINE = ("n_tumour", "n_ctl", "n_nk", "n_lak", "tumour_lesion_diameter_mm", "il2_mean", "plasma_il2", "toxicity")


def _latest(model: Any, name: str) -> float:
    """The latest value of one observable (module-level and wrapped in ``partial``, so it pickles)."""
    return model.latest[name]


def headline_datacollector() -> mesa.DataCollector:
    """A DataCollector of the headline counts and levels, collected once per step by the model."""
    return mesa.DataCollector(model_reporters={name: partial(_latest, name=name) for name in HEADLINE})


def mesa_init(model: Any, seed: int | None, rng: Any) -> None:
    """Run ``mesa.Model.__init__`` with Mesa's seeding conventions (seed or rng, not both)."""
    if seed is not None and rng is not None:
        raise ValueError("pass either seed or rng, not both (Mesa's convention)")
    if seed is not None:
        MesaModel.__init__(model, seed=seed)
    else:
        MesaModel.__init__(model, rng=rng)


def property_layers(model: Any) -> dict[str, Any]:
    """The fields and the cell-type map as Mesa ``PropertyLayer`` objects (2D only; {} where Mesa lacks them)."""
    try:
        from mesa.discrete_space.property_layer import PropertyLayer
    except ImportError:  # pragma: no cover - older/newer Mesa without property layers
        return {}
    if model.state.lattice.ndim != 2:
        return {}
    out = {}
    for name, arr in model.fields().items():
        out[name] = PropertyLayer.from_data(name, np.ascontiguousarray(arr.T))  # Mesa grids index (x, y)
    out["cell_type"] = PropertyLayer.from_data("cell_type", np.ascontiguousarray(model.cell_type_map().T))
    return out


def batch_run(model_cls: type, parameters: dict[str, Any], **kwargs: Any) -> list[dict[str, Any]]:
    """``mesa.batch_run`` (parameters with dotted keys may be written ``ctl__kill_prob``)."""
    return mesa.batch_run(model_cls, parameters=parameters, **kwargs)
