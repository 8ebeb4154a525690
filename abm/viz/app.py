"""An interactive page of a live abm model (``abm serve [SCENARIO]``), built with Solara.

The page talks to the model through a small adapter, :class:`PageModel`: a thin ``mesa.Model`` that *owns* an
:class:`abm.Model` (composition, not subclassing) and exposes only what the page draws, through abm.Model's public
API (``step``, ``cell_type_map``, ``fields``, ``counts``, ``time_day``, ``step_index``, ``state.lattice``,
``state.occupancy`` and ``latest``). Everything the page draws comes from an immutable :class:`Frame` copied
from the adapter under its lock, so a frame is never drawn while the model is half-way through a step.

Speed: the model advances several steps per drawn frame (the "simulated hours per frame" control; 12 h = 72
steps of 10 min by default), and "jump to day" runs the model forward without drawing at all, so a simulated week plays
in seconds rather than hours (one redraw per model step, as Mesa's SolaraViz does, managed about one step per
second). Every time plot is against days; plasma levels (pM, log) and toxicity (score 0-1) have axes of their own.

Run it with ``abm serve`` (which runs ``solara run abm/viz/serve_page.py``); the scenario, the lattice overrides
and the defaults come from environment variables set by ``abm serve``:

- ``ABM_SERVE_SCENARIO``: a shipped scenario name or a TOML path (default ``il2_ifna``);
- ``ABM_SERVE_SETS``: a JSON list of ``key=value`` overrides (default: a 60 x 60 lattice, see :data:`SERVE_SETS`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import mesa
import numpy as np

from . import style as st

DEFAULT_SCENARIO = "il2_ifna"
# a small lattice keeps a step well under a millisecond; `abm serve --set` replaces these
SERVE_SETS = ("lattice.nx=60", "lattice.ny=60")
OVERLAY_CHOICES = ("il2", "ifna", "drug", "cxcl10", "none")
DOSE_SCALE_RANGE = (0.0, 2.0, 0.05)  # min, max, step of the IL-2 dose slider (multiples of the label dose)
HOURS_PER_FRAME = (1, 24, 12)  # min, max, default simulated hours per drawn frame
FIGURE_DPI = 80
COUNT_KEYS = ("n_tumour", "n_ctl", "n_nk", "n_lak")
PLASMA_KEYS = ("plasma_il2", "plasma_ifna", "plasma_drug")
HISTORY_KEYS = (*COUNT_KEYS, *PLASMA_KEYS, "toxicity")
PLASMA_UNITS = {"il2": "pM", "ifna": "pM", "drug": "uM", "cxcl10": "pM"}  # abm's plasma units (docs/output-format.md)


def _config() -> tuple[str, list[str]]:
    scenario = os.environ.get("ABM_SERVE_SCENARIO", DEFAULT_SCENARIO)
    raw = os.environ.get("ABM_SERVE_SETS")
    if raw is None:
        return scenario, list(SERVE_SETS)
    sets = json.loads(raw)
    if not isinstance(sets, list) or not all(isinstance(s, str) for s in sets):
        raise ValueError(f"ABM_SERVE_SETS: expected a JSON list of 'key=value' strings, got {raw!r}")
    return scenario, sets


# ------------------------------------------------------------------------------------------------ the adapter
@dataclass(frozen=True)
class Frame:
    """What the page draws at one moment: copies, safe to draw while the model runs on."""

    step_index: int
    time_day: float
    codes: np.ndarray  # 2D display codes (xy mid-slice in 3D), vessels as style.VESSEL_CODE
    fields: dict[str, np.ndarray]  # 2D, species units
    extent_mm: tuple[float, float, float, float]
    counts: dict[str, int]
    history: dict[str, np.ndarray]  # "time_day" and HISTORY_KEYS, one value per step so far
    label: str = ""
    thresholds: dict[str, float] = field(default_factory=dict)


def _mid(a: np.ndarray) -> np.ndarray:
    return a[a.shape[0] // 2] if a.ndim == 3 else a


class PageModel(mesa.Model):
    """The page's adapter: a thin ``mesa.Model`` owning an :class:`abm.Model` (``self.sim``) built from the page
    inputs, recording the few observables the page plots, and handing out :class:`Frame` copies.

    Mesa's contract holds at this edge (``seed=``, ``step()``, ``steps``, ``running``); ``advance_hours`` and
    ``run_to_day`` advance many model steps without drawing.
    """

    def __init__(
        self,
        scenario: str = DEFAULT_SCENARIO,
        il2_dose_scale: float = 1.0,
        ifna_on: bool = True,
        seed: int = 1,
        sets: tuple[str, ...] | list[str] = SERVE_SETS,
    ) -> None:
        import abm
        from abm.kernels.cells import VESSEL

        super().__init__(seed=int(seed))
        self.inputs = {
            "scenario": scenario,
            "il2_dose_scale": float(il2_dose_scale),
            "ifna_on": bool(ifna_on),
            "seed": int(seed),
            "sets": tuple(sets),
        }
        extra = [
            f"regimen.dose_scale.il2={float(il2_dose_scale)}",
            f"regimen.dose_scale.ifna={1.0 if ifna_on else 0.0}",
        ]
        self.sim = abm.Model(scenario, seed=int(seed), sets=[*sets, *extra])
        self.scenario = abm.Scenario.load(scenario, sets=[*sets, *extra])
        self.label = getattr(self.scenario, "name", str(scenario))
        self.lock = threading.RLock()
        lat = self.sim.state.lattice
        self._vessels = (np.asarray(self.sim.state.occupancy) == VESSEL).reshape(lat.shape)
        nx, ny = lat.shape[-1], lat.shape[-2]
        self._extent = st.extent(nx, ny, float(lat.spacing_um), "mm")
        self._hist: dict[str, list[float]] = {k: [] for k in ("time_day", *HISTORY_KEYS)}
        self._record()
        self.thresholds = _thresholds(self.scenario)

    # -------------------------------------------------------------------------------- advancing the model
    def _record(self) -> None:
        latest = self.sim.latest
        self._hist["time_day"].append(float(self.sim.time_day))
        for k in HISTORY_KEYS:
            self._hist[k].append(float(latest.get(k, 0.0)))

    def step(self) -> None:
        """One model step (Mesa counts it in ``steps``)."""
        with self.lock:
            self.sim.step()
            self._record()

    def run_to_day(self, day: float, should_stop=None) -> int:
        """Step until the model reaches ``day`` (no drawing); returns the steps taken. ``should_stop()`` is
        polled every 100 steps (the page's pause button)."""
        n = 0
        with self.lock:
            while self.sim.time_day < day - 1e-9:
                self.step()
                n += 1
                if should_stop is not None and n % 100 == 0 and should_stop():
                    break
        return n

    def advance_hours(self, hours: float) -> int:
        """Advance ``hours`` simulated hours (at least one step)."""
        with self.lock:
            target = self.sim.time_day + float(hours) / 24.0
            n = self.run_to_day(target)
            if n == 0:
                self.step()
                n = 1
            return n

    @property
    def time_day(self) -> float:
        return float(self.sim.time_day)

    @property
    def step_index(self) -> int:
        return int(self.sim.step_index)

    def frame(self) -> Frame:
        """A copy of everything the page draws, taken under the lock."""
        with self.lock:
            codes = st.display_codes(self.sim.cell_type_map(), self._vessels)
            flds = {k: np.array(_mid(np.asarray(v)), dtype=np.float64) for k, v in self.sim.fields().items()}
            return Frame(
                step_index=self.step_index,
                time_day=self.time_day,
                codes=_mid(codes).copy(),
                fields=flds,
                extent_mm=self._extent,
                counts=dict(self.sim.counts()),
                history={k: np.asarray(v, dtype=np.float64) for k, v in self._hist.items()},
                label=self.label,
                thresholds=dict(self.thresholds),
            )


def _thresholds(scenario: Any) -> dict[str, float]:
    """The toxicity hold and DLT thresholds of the scenario's patient, where the parameter tree names them."""
    out = {}
    pat = getattr(getattr(scenario, "params", None), "patient", None)
    for key, name in (("hold", "toxicity_hold_threshold"), ("DLT", "toxicity_dlt_threshold")):
        v = getattr(pat, name, None)
        if isinstance(v, int | float):
            out[key] = float(v)
    return out


def dose_label(scenario: Any, scale: float, drug: str = "il2") -> str:
    """The IL-2 dose a slider value means in the clinic's units, from the scenario's regimen blocks."""
    blocks = [b for b in getattr(getattr(scenario, "regimen", None), "doses", []) if getattr(b, "drug", "") == drug]
    doses = sorted({(float(b.dose), str(b.unit)) for b in blocks})
    if not doses:
        return f"x {scale:g} (no {st.SPECIES_LABELS.get(drug, drug)} in this regimen)"
    return " / ".join(f"{st.fmt_amount(scale * d)} {u}" for d, u in doses) + " per dose"


# ------------------------------------------------------------------------------------------------ drawing
def lattice_figure(frame: Frame, overlay: str = "il2"):
    """The lattice with the chosen field as a translucent log-scale heat map (a field that is zero everywhere is
    drawn as empty, with a note)."""
    import matplotlib.cm as cm
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    from .figures import draw_lattice

    if overlay not in OVERLAY_CHOICES:
        raise ValueError(f"overlay={overlay!r}: allowed {', '.join(OVERLAY_CHOICES)}")
    fig = Figure(figsize=(5.6, 4.6))  # a fixed layout: constrained layout would double the drawing time
    ax = fig.add_axes((0.11, 0.1, 0.6, 0.8))
    ext = frame.extent_mm
    values = None if overlay == "none" else frame.fields.get(overlay)
    empty = values is not None and st.field_is_empty(values)
    if empty:
        values = None
    norm = st.field_norm(values, log=True) if values is not None else None
    cmap = st.SPECIES_CMAPS.get(overlay, "Blues")
    draw_lattice(ax, frame.codes, ext, field=values, norm=norm, cmap=cmap)
    if values is not None:
        cb = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), cax=fig.add_axes((0.75, 0.15, 0.03, 0.7)))
        cb.set_label(f"{st.SPECIES_LABELS[overlay]} ({PLASMA_UNITS.get(overlay, '')}, log)")
        st.tidy_colourbar(cb)
        cb.ax.yaxis.set_minor_locator(NullLocator())
    elif empty:
        st.empty_field_note(ax, overlay, PLASMA_UNITS.get(overlay, ""))
    ax.legend(handles=st.cell_legend_handles(), loc="upper left", fontsize=7, framealpha=0.8)
    st.add_scale_bar(ax, ext[1], "mm")
    ax.set(xlabel="x (mm)", ylabel="y (mm)", title=f"{frame.label}: day {frame.time_day:.2f}")
    return fig


def series_figure(frame: Frame):
    """Cells by type, plasma levels (log, own axis per unit) and the toxicity score (0-1), all against days."""
    from matplotlib.figure import Figure

    h = frame.history
    t = h["time_day"]
    fig = Figure(figsize=(5.4, 6.4))
    ax_c, ax_p, ax_t = fig.subplots(3, 1, sharex=True)
    fig.subplots_adjust(left=0.14, right=0.86, top=0.95, bottom=0.08, hspace=0.3)
    for code, key in st.CELL_OBSERVABLE.items():
        ax_c.plot(t, h[key], color=st.CELL_COLOURS[code], label=st.CELL_LABELS[code], lw=1.2)
    ax_c.set(ylabel="cells", yscale="symlog", title="cells by type")
    ax_c.legend(fontsize=7, loc="upper left", ncol=4, framealpha=0.8)
    axes_by_unit: dict[str, Any] = {}
    peak: dict[str, float] = {}
    for key in PLASMA_KEYS:
        sp = key.removeprefix("plasma_")
        y = h[key]
        if not np.any(y > 0):
            continue
        unit = PLASMA_UNITS.get(sp, "")
        if unit not in axes_by_unit:
            axes_by_unit[unit] = ax_p if not axes_by_unit else ax_p.twinx()
            axes_by_unit[unit].set_ylabel(f"plasma ({unit}, log)")
            axes_by_unit[unit].set_yscale("log")
        a = axes_by_unit[unit]
        peak[unit] = max(peak.get(unit, 0.0), float(y.max()))
        a.plot(t, np.where(y > 0, y, np.nan), color=st.SPECIES_COLOURS.get(sp), label=st.SPECIES_LABELS.get(sp, sp))
    for unit, a in axes_by_unit.items():
        a.set_ylim(peak[unit] / st.LOG_DYNAMIC_RANGE, peak[unit] * 2.0)
    if axes_by_unit:
        lines = [li for a in axes_by_unit.values() for li in a.get_lines()]
        ax_p.legend(lines, [li.get_label() for li in lines], fontsize=7, loc="upper right", framealpha=0.8)
    else:
        ax_p.set_ylabel("plasma")
        ax_p.text(0.5, 0.5, "no drug in plasma yet", transform=ax_p.transAxes, ha="center", va="center", color="0.3")
    ax_p.set_title("plasma levels")
    ax_t.plot(t, h["toxicity"], color=st.OKABE_ITO["reddish_purple"], label="toxicity score")
    for (name, v), ls in zip(frame.thresholds.items(), ("--", ":")):
        ax_t.axhline(v, color=st.OKABE_ITO["vermillion"], ls=ls, lw=1, label=f"{name} threshold ({v:g})")
    ax_t.set(ylabel="score (0-1)", xlabel="time (days)", title="systemic toxicity")
    ax_t.set_ylim(0, max(1.05, float(h["toxicity"].max()) * 1.05 if len(t) else 1.05))
    ax_t.legend(fontsize=7, loc="upper left", framealpha=0.8)
    ax_t.set_xlim(0, max(float(t[-1]) if len(t) else 0.0, 1.0))
    for a in (ax_c, *axes_by_unit.values()):
        _plain_log_ticks(a)
    return fig


def _plain_log_ticks(ax) -> None:
    """Decade ticks labelled as plain numbers, no minor ticks: mathtext labels and minor-tick objects are most of
    the cost of drawing a log axis, and the page redraws every frame."""
    from matplotlib.ticker import FuncFormatter, NullLocator

    ax.yaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
    ax.yaxis.set_minor_locator(NullLocator())


def png_bytes(fig) -> bytes:
    """The figure as PNG (fast zlib level: the page redraws often and sends over a local socket)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIGURE_DPI, pil_kwargs={"compress_level": 1})
    return buf.getvalue()


def status_text(frame: Frame) -> str:
    return f"step {frame.step_index} - day {frame.time_day:.2f} - " + ", ".join(
        f"{k} {v}" for k, v in frame.counts.items()
    )


# ------------------------------------------------------------------------------------------------ the page
def page_component(scenario: str | None = None, sets: list[str] | None = None):
    """The Solara page component: each browser session gets its own model. ``scenario``/``sets`` default to the
    environment (see the module docstring)."""
    import solara
    import solara.lab

    @solara.component
    def Page():
        env_scenario, env_sets = _config()
        sc = scenario or env_scenario
        ss = tuple(sets if sets is not None else env_sets)
        il2 = solara.use_reactive(1.0)
        ifna_on = solara.use_reactive(True)
        seed = solara.use_reactive(1)
        overlay = solara.use_reactive("il2")
        hours = solara.use_reactive(HOURS_PER_FRAME[2])
        jump_day = solara.use_reactive(7.0)
        playing = solara.use_reactive(False)
        message = solara.use_reactive("")
        speed = solara.use_reactive("")
        model = solara.use_memo(lambda: [PageModel(sc, sets=ss)], dependencies=[])  # a mutable holder
        first = solara.use_memo(lambda: model[0].frame(), dependencies=[])
        frame = solara.use_reactive(first)  # (a fresh value here on every render would re-render forever)
        drawn = solara.use_memo(threading.Event, dependencies=[])

        def rebuild(*_args) -> None:
            playing.value = False
            with model[0].lock:
                model[0] = PageModel(sc, il2.value, ifna_on.value, int(seed.value), ss)
            frame.value = model[0].frame()
            message.value = "model rebuilt at day 0"

        def play_loop() -> None:
            t0, s0, d0 = time.perf_counter(), model[0].step_index, model[0].time_day
            while playing.value:
                m = model[0]
                m.advance_hours(hours.value)
                drawn.clear()
                frame.value = m.frame()
                drawn.wait(10.0)  # one drawn frame per advance: the film shows every interval
                dt = time.perf_counter() - t0
                if dt > 0:
                    speed.value = (
                        f"{(m.step_index - s0) / dt:.0f} steps/s, {(m.time_day - d0) / dt * 60:.1f} simulated "
                        f"days per minute ({7 * dt / max(m.time_day - d0, 1e-9):.1f} s per simulated week)"
                    )

        solara.lab.use_task(play_loop, dependencies=[playing.value], prefer_threaded=True)

        def jump() -> None:
            target = float(jump_day.value)
            playing.value = False
            if target < model[0].time_day:  # backwards: the same seed from day 0
                with model[0].lock:
                    model[0] = PageModel(sc, il2.value, ifna_on.value, int(seed.value), ss)
            m = model[0]
            message.value = f"running to day {target:g} ..."
            t0, s0 = time.perf_counter(), m.step_index
            m.run_to_day(target)
            dt = time.perf_counter() - t0
            frame.value = m.frame()
            message.value = (
                f"ran to day {m.time_day:.2f}: {m.step_index - s0} steps in {dt:.2f} s "
                f"({(m.step_index - s0) / max(dt, 1e-9):.0f} steps/s, without drawing)"
            )

        jump_task = solara.lab.use_task(jump, dependencies=None, prefer_threaded=True)

        def one_frame() -> None:
            model[0].advance_hours(hours.value)
            frame.value = model[0].frame()

        f = frame.value
        with solara.Columns([1, 3]):
            with solara.Column(style={"min-width": "300px"}):
                with solara.Card("Run"):
                    with solara.Row():
                        solara.Button(
                            "Pause" if playing.value else "Play",
                            color="primary",
                            on_click=lambda: playing.set(not playing.value),
                            classes=["abm-play"],
                        )
                        solara.Button("Step", color="primary", on_click=one_frame, disabled=playing.value)
                        solara.Button("Reset", on_click=rebuild)
                    solara.Text(f"simulated hours per frame: {hours.value} h", classes=["abm-hours-label"])
                    with solara.Column(classes=["abm-hours"], style={"width": "100%", "padding-top": "28px"}):
                        solara.SliderInt(
                            "", value=hours, min=HOURS_PER_FRAME[0], max=HOURS_PER_FRAME[1], thumb_label="always"
                        )
                    with solara.Row():
                        solara.InputFloat("jump to day", value=jump_day, continuous_update=True, classes=["abm-jump"])
                        solara.Button(
                            f"Go to day {jump_day.value:g}",
                            color="primary",
                            on_click=jump_task,
                            disabled=jump_task.pending,
                            classes=["abm-go"],
                        )
                    solara.Text(message.value, classes=["abm-message"], style={"display": "block"})
                    solara.Text(speed.value, classes=["abm-speed"], style={"display": "block", "margin-top": "6px"})
                with solara.Card("Model (a change restarts at day 0)"):
                    solara.Text(
                        f"IL-2 dose: {il2.value:.2f} x label = {dose_label(model[0].scenario, il2.value)}",
                        classes=["abm-dose-label"],
                    )
                    with solara.Column(classes=["abm-dose"], style={"width": "100%", "padding-top": "28px"}):
                        solara.SliderFloat(
                            "",
                            value=il2.value,
                            on_value=lambda v: (il2.set(v), rebuild()),
                            min=DOSE_SCALE_RANGE[0],
                            max=DOSE_SCALE_RANGE[1],
                            step=DOSE_SCALE_RANGE[2],
                            thumb_label="always",
                        )
                    solara.Checkbox(
                        label="IFN-alpha doses on", value=ifna_on.value, on_value=lambda v: (ifna_on.set(v), rebuild())
                    )
                    solara.InputInt("seed", value=seed.value, on_value=lambda v: (seed.set(v), rebuild()))
                with solara.Card("View"):
                    solara.Select("field overlay", value=overlay, values=list(OVERLAY_CHOICES))
            with solara.Column():
                solara.Text(status_text(f), classes=["abm-status"])
                with solara.Row():
                    DrawnFigure(lambda: lattice_figure(f, overlay.value), [id(f), overlay.value], drawn)
                    DrawnFigure(lambda: series_figure(f), [id(f)], None)

    @solara.component
    def DrawnFigure(make, key, drawn):
        # drawn once per frame (and overlay): a re-render for a status text does not redraw the figures
        png = solara.use_memo(lambda: png_bytes(make()), dependencies=key)
        solara.Image(png, classes=["abm-figure"])

        def done():
            if drawn is not None:
                drawn.set()

        solara.use_effect(done, dependencies=None)

    return Page
