"""Animate a loaded run: the lattice (with an optional field) beside the cell counts, one frame per snapshot.

The figure is built once; each frame only updates artists (``set_data``), draws the canvas and hands the RGB
buffer to the writer: MP4 through imageio-ffmpeg (its wheel carries an ffmpeg binary), GIF through Pillow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from . import style as st
from .figures import _check_field, draw_lattice

FORMATS = (".mp4", ".gif")
MACRO_BLOCK = 16  # H.264 encoders want frame sides that are multiples of 16
DPI = 100
FRAME_CHUNK = 32  # snapshots read from the file at a time


def _even_figsize(width_in: float, height_in: float) -> tuple[float, float]:
    w = int(round(width_in * DPI / MACRO_BLOCK)) * MACRO_BLOCK
    h = int(round(height_in * DPI / MACRO_BLOCK)) * MACRO_BLOCK
    return w / DPI, h / DPI


def field_range(run: Any, field: str, frames: np.ndarray | None = None) -> tuple[float, float]:
    """(maximum, smallest positive value) of ``field`` over every site of the given snapshots (default: all),
    read from the file in chunks of FRAME_CHUNK frames; (0, nan) when the field is zero throughout. In 3D the whole
    volume counts, not only the mid-slice a film shows."""
    import h5py

    n = run.n_snapshots
    sel = np.arange(n) if frames is None else np.asarray(frames, dtype=np.int64)
    top, low = 0.0, np.inf
    with h5py.File(run.path, "r") as f:
        ds = f[f"fields/{field}/value"]
        for lo in range(0, len(sel), FRAME_CHUNK):
            idx = sel[lo : lo + FRAME_CHUNK]
            block = np.asarray(ds[int(idx[0]) : int(idx[-1]) + 1], dtype=np.float64)[idx - idx[0]]
            if block.size:
                top = max(top, float(np.nanmax(block)))
                pos = block[block > 0]
                if pos.size:
                    low = min(low, float(pos.min()))
    return top, (low if np.isfinite(low) else float("nan"))


def film_norm(run: Any, field: str, log: bool, frames: np.ndarray | None = None):
    """The colour norm of a film of ``field``: fixed over the frames shown, from their true maximum (log scale:
    down to their smallest positive value, at most LOG_DYNAMIC_RANGE below the maximum and at least a decade);
    None when the field is zero in every frame (the film then says so instead of inventing a range)."""
    top, low = field_range(run, field, frames)
    if top <= 0:
        return None
    return st.field_norm(np.array([top]), log, vmax=top, vmin_pos=low)


class _Frames:
    """Snapshot frames read in chunks (one file open per chunk, not per frame)."""

    def __init__(self, run: Any, field: str | None) -> None:
        self.run, self.field = run, field
        self._lo, self._codes, self._vals = 0, None, None

    def __call__(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        if self._codes is None or not self._lo <= i < self._lo + len(self._codes):
            import h5py

            self._lo = i
            hi = min(i + FRAME_CHUNK, self.run.n_snapshots)
            with h5py.File(self.run.path, "r") as f:
                self._codes = f["particles/lattice/cell_type/value"][i:hi]
                self._vals = f[f"fields/{self.field}/value"][i:hi] if self.field else None
        k = i - self._lo
        return self._codes[k], (self._vals[k] if self._vals is not None else None)


def animate(
    run: Any,
    out: str | os.PathLike,
    *,
    field: str | None = None,
    fps: float = 10.0,
    log: bool = True,
    units: str = "mm",
    progress: bool = True,
    max_frames: int | None = None,
) -> Path:
    """Write an animation of ``run`` (from :func:`abm.load`) to ``out`` (``.mp4`` or ``.gif``); returns the path.

    One frame per lattice snapshot (at most ``max_frames``, evenly spaced). ``field`` ("il2", "ifna", "drug")
    adds a translucent heat map with a colour bar fixed over the whole film, from the field's true range over every
    site of every frame shown (:func:`film_norm`; log scale unless ``log=False``); a field that is zero throughout
    is drawn as empty, with a note.
    A 3D run shows its xy mid-slice.
    """
    st.use_agg()
    import matplotlib.pyplot as plt

    out = Path(out)
    ext = out.suffix.lower()
    if ext not in FORMATS:
        raise ValueError(f"{out}: allowed animation formats are {', '.join(FORMATS)}")
    if not (np.isfinite(fps) and 0 < fps <= 120):
        raise ValueError(f"fps={fps}: allowed range 0 < fps <= 120")
    if out.parent and not out.parent.exists():
        raise ValueError(f"{out}: the directory {out.parent} does not exist")
    _check_field(run, field)
    n = run.n_snapshots
    if n == 0:
        raise ValueError(f"{run.path}: the run has no lattice snapshots to animate")
    frames = np.arange(n)
    if max_frames is not None and n > max_frames:
        frames = np.unique(np.linspace(0, n - 1, int(max_frames)).round().astype(int))

    nx, ny, nz = run.shape_xyz
    vess = st.vessel_mask(run)
    read = _Frames(run, field)

    def frame_2d(i: int):
        c, v = read(i)
        c = st.display_codes(c, vess)
        if nz > 1:
            c, v = c[nz // 2], (v[nz // 2] if v is not None else None)
        return c, v

    norm = None
    cmap = st.SPECIES_CMAPS.get(field or "", "Blues")
    empty = False
    if field is not None:  # one colour scale for the whole film, from every site of every frame shown
        norm = film_norm(run, field, log, frames)
        empty = norm is None

    fig = plt.figure(figsize=_even_figsize(11.0, 5.0), dpi=DPI)
    ax, axc = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1.0]})
    fig.subplots_adjust(left=0.06, right=0.97, bottom=0.12, top=0.88, wspace=0.35)
    extent = st.extent(nx, ny, run.spacing_um, units)
    c0, v0 = frame_2d(int(frames[0]))
    arts = draw_lattice(ax, c0, extent, field=None if empty else v0, norm=norm, cmap=cmap)
    if norm is not None:
        cb = fig.colorbar(arts["field"], ax=ax, shrink=0.85, pad=0.02)
        cb.set_label(st.field_label(run, field))
        st.tidy_colourbar(cb)
    elif empty:
        st.empty_field_note(ax, field, run.field_units.get(field, ""))
    ax.legend(handles=st.cell_legend_handles(), loc="upper left", fontsize=7, framealpha=0.8)
    st.add_scale_bar(ax, extent[1], units)
    u = "µm" if units == "um" else units
    ax.set(xlabel=f"x ({u})", ylabel=f"y ({u})")
    title = ax.set_title("")
    t = np.asarray(run.time_min, dtype=float) / st.MIN_PER_DAY
    for code, key in st.CELL_OBSERVABLE.items():
        if key in run.observables:
            axc.plot(t, run.observables[key], color=st.CELL_COLOURS[code], label=st.CELL_LABELS[code])
    axc.set(xlabel="time (days)", ylabel="cells", yscale="symlog", title="cells by type")
    axc.legend(fontsize=7, loc="upper left")
    cursor = axc.axvline(0.0, color="0.3", lw=1.0)
    fig.suptitle(f"{st.scenario_name(run)} (seed {run.attrs.get('seed', '?')})")
    snap_days = np.asarray(run.snapshot_time_min, dtype=float) / st.MIN_PER_DAY

    def render(i: int) -> np.ndarray:
        c, v = frame_2d(i)
        arts["cells"].set_data(np.ma.masked_equal(c, st.EMPTY))
        if v is not None and "field" in arts:
            arts["field"].set_data(v)
        cursor.set_xdata([snap_days[i], snap_days[i]])
        title.set_text(f"day {snap_days[i]:.2f}" + (" (z mid-slice)" if nz > 1 else ""))
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(frames), desc=f"animate {out.name}", unit="frame")
    try:
        if ext == ".mp4":
            _write_mp4(out, frames, render, fps, bar)
        else:
            _write_gif(out, frames, render, fps, bar)
    finally:
        if bar is not None:
            bar.close()
        plt.close(fig)
    return out


def _write_mp4(out: Path, frames, render, fps: float, bar) -> None:
    try:
        import imageio_ffmpeg
    except ImportError as e:  # pragma: no cover - depends on the installed extras
        raise RuntimeError(
            'MP4 output needs imageio-ffmpeg: in the abm clone, python -m pip install -e ".[viz]" (or write a .gif)'
        ) from e
    first = render(int(frames[0]))
    h, w = first.shape[:2]
    writer = imageio_ffmpeg.write_frames(
        str(out), (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=MACRO_BLOCK, quality=7
    )
    writer.send(None)
    try:
        writer.send(np.ascontiguousarray(first))
        if bar is not None:
            bar.update(1)
        for i in frames[1:]:
            writer.send(np.ascontiguousarray(render(int(i))))
            if bar is not None:
                bar.update(1)
    finally:
        writer.close()


def _write_gif(out: Path, frames, render, fps: float, bar) -> None:
    from PIL import Image

    images = []
    for i in frames:
        images.append(Image.fromarray(render(int(i))).quantize(colors=128, method=Image.Quantize.MEDIANCUT))
        if bar is not None:
            bar.update(1)
    images[0].save(
        out,
        save_all=True,
        append_images=images[1:],
        duration=int(round(1000.0 / fps)),
        loop=0,
        optimize=False,
        disposal=1,
    )
