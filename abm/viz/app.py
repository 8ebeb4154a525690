"""An interactive page: a Mesa SolaraViz app of a live abm model (``abm serve [SCENARIO]``).

Shows the lattice with a field overlay, Mesa's play / step / reset controls, inputs for the IL-2 dose level
(``regimen.dose_scale.il2``), IFN-alpha on/off (``regimen.dose_scale.ifna`` 1 or 0), the seed and the overlay,
and live time series from the model's DataCollector.

Run it with ``abm serve`` (which runs ``solara run abm/viz/serve_page.py``); the scenario, the lattice overrides
and the defaults come from environment variables set by ``abm serve``:

- ``ABM_SERVE_SCENARIO``: a shipped scenario name or a TOML path (default ``il2_ifna``);
- ``ABM_SERVE_SETS``: a JSON list of ``key=value`` overrides (default: a 60 x 60 lattice, see :data:`SERVE_SETS`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

import abm
from abm.kernels.cells import VESSEL
from abm.scenario import Scenario

from . import style as st
from .figures import draw_lattice

DEFAULT_SCENARIO = "il2_ifna"
# a small lattice keeps a step well under the play interval on a laptop; `abm serve --set` replaces these
SERVE_SETS = ("lattice.nx=60", "lattice.ny=60")
OVERLAY_CHOICES = ("il2", "ifna", "drug", "none")
PLAY_INTERVAL_MS = 150
DOSE_SCALE_RANGE = (0.0, 2.0, 0.05)  # min, max, step of the IL-2 dose-scale slider


def _config() -> tuple[str, list[str]]:
    scenario = os.environ.get("ABM_SERVE_SCENARIO", DEFAULT_SCENARIO)
    raw = os.environ.get("ABM_SERVE_SETS")
    if raw is None:
        return scenario, list(SERVE_SETS)
    sets = json.loads(raw)
    if not isinstance(sets, list) or not all(isinstance(s, str) for s in sets):
        raise ValueError(f"ABM_SERVE_SETS: expected a JSON list of 'key=value' strings, got {raw!r}")
    return scenario, sets


class ServeModel(abm.Model):
    """An :class:`abm.Model` built from a few page inputs (Mesa's Reset re-creates it with the current inputs)."""

    def __init__(
        self,
        scenario: str = DEFAULT_SCENARIO,
        il2_dose_scale: float = 1.0,
        ifna_on: bool = True,
        seed: int = 1,
        overlay: str = "il2",
        sets: tuple[str, ...] | list[str] = SERVE_SETS,
    ) -> None:
        if overlay not in OVERLAY_CHOICES:
            raise ValueError(f"overlay={overlay!r}: allowed {', '.join(OVERLAY_CHOICES)}")
        sc = Scenario.load(
            scenario,
            sets=[
                *sets,
                f"regimen.dose_scale.il2={float(il2_dose_scale)}",
                f"regimen.dose_scale.ifna={1.0 if ifna_on else 0.0}",
            ],
        )
        super().__init__(sc, seed=int(seed))
        self.overlay = overlay
        self.scenario_label = sc.name


def make_model_params(scenario: str, sets: list[str]) -> dict[str, Any]:
    from mesa.visualization import Slider

    lo, hi, step = DOSE_SCALE_RANGE
    return {
        "scenario": scenario,
        "sets": tuple(sets),
        "il2_dose_scale": Slider("IL-2 dose scale (regimen.dose_scale.il2)", 1.0, lo, hi, step),
        "ifna_on": {"type": "Checkbox", "value": True, "label": "IFN-alpha doses on"},
        "seed": {"type": "InputText", "value": 1, "label": "seed"},
        "overlay": {"type": "Select", "value": "il2", "values": list(OVERLAY_CHOICES), "label": "field overlay"},
    }


def lattice_figure(model: ServeModel):
    """The model's lattice (xy mid-slice in 3D) with the chosen field as a translucent log-scale heat map."""
    import matplotlib.cm as cm
    from matplotlib.figure import Figure

    codes = model.cell_type_map()
    lat = model.state.lattice
    vessels = (np.asarray(model.state.occupancy) == VESSEL).reshape(lat.shape)
    codes = st.display_codes(codes, vessels)
    field = None if model.overlay == "none" else np.asarray(model.fields()[model.overlay], dtype=float)
    if codes.ndim == 3:
        codes = codes[codes.shape[0] // 2]
        field = field[field.shape[0] // 2] if field is not None else None
    fig = Figure(figsize=(5.6, 4.8), layout="constrained")
    ax = fig.subplots()
    ext = st.extent(lat.nx, lat.ny, lat.spacing_um, "mm")
    norm = st.field_norm(field, log=True) if field is not None else None
    cmap = st.SPECIES_CMAPS.get(model.overlay, "Blues")
    draw_lattice(ax, codes, ext, field=field, norm=norm, cmap=cmap)
    if field is not None:
        cb = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.85)
        unit = "uM" if model.overlay == "drug" else "pM"
        cb.set_label(f"{st.SPECIES_LABELS[model.overlay]} ({unit})")
        st.tidy_colourbar(cb)
    ax.legend(handles=st.cell_legend_handles(), loc="upper left", fontsize=7, framealpha=0.8)
    st.add_scale_bar(ax, ext[1], "mm")
    ax.set(xlabel="x (mm)", ylabel="y (mm)", title=f"{model.scenario_label}: day {model.time_day:.2f}")
    return fig


def status_text(model: ServeModel) -> str:
    return f"step {model.step_index} - day {model.time_day:.2f} - " + ", ".join(
        f"{k} {v}" for k, v in model.counts().items()
    )


def lattice_component():
    """A Solara component showing the step counter and the lattice picture; redrawn on every Mesa update."""
    import solara
    from mesa.visualization.utils import update_counter

    @solara.component
    def Lattice(model):
        update_counter.get()
        solara.Text(status_text(model), classes=["abm-status"])
        solara.FigureMatplotlib(lattice_figure(model), format="png")

    return Lattice


def _components():
    from mesa.visualization import make_plot_component

    Lattice = lattice_component()
    counts = make_plot_component(
        {
            "n_tumour": st.CELL_COLOURS[st.TUMOUR],
            "n_ctl": st.CELL_COLOURS[st.CTL],
            "n_nk": st.CELL_COLOURS[st.NK],
            "n_lak": st.CELL_COLOURS[st.LAK],
        }
    )
    plasma = make_plot_component({"plasma_il2": st.SPECIES_COLOURS["il2"], "toxicity": st.OKABE_ITO["reddish_purple"]})
    return [Lattice, counts, plasma]


def make_page(scenario: str | None = None, sets: list[str] | None = None, model: ServeModel | None = None):
    """The SolaraViz page element for ``scenario`` (defaults from the environment, see the module docstring)."""
    from mesa.visualization import SolaraViz

    env_scenario, env_sets = _config()
    scenario = scenario or env_scenario
    sets = list(sets) if sets is not None else env_sets
    if model is None:
        model = ServeModel(scenario=scenario, sets=tuple(sets))
    return SolaraViz(
        model,
        components=_components(),
        model_params=make_model_params(scenario, sets),
        name=f"abm: {model.scenario_label}",
        play_interval=PLAY_INTERVAL_MS,
    )


def page_component():
    """A Solara page component: each browser session gets its own model (built once per session)."""
    import solara

    @solara.component
    def Page():
        scenario, sets = _config()
        model = solara.use_memo(lambda: ServeModel(scenario=scenario, sets=tuple(sets)), dependencies=[])
        return make_page(scenario, sets, model=model)

    return Page
