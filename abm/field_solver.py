"""The diffusion–reaction field solver: validation and bookkeeping around the kernels in :mod:`abm.kernels.fields`
(split scheme) and :mod:`abm.kernels.coupled` (coupled scheme).

One call to :meth:`FieldSolver.step` advances every species by ``dt_min``. Per sub-step, each species takes one of
two backward-Euler steps:

- split (the default): a pointwise reaction step (decay, uptake, secretion, vessel exchange) followed by locally
  one-dimensional diffusion in x, then y, then z;
- coupled (``coupled=True`` for that species): reaction and diffusion in one implicit solve,
  ``(1 + dt (k + U + m P) - D dt Lap) c' = c + dt (S + m P C_p)``, by multigrid-preconditioned conjugate gradients
  to a relative residual ``rtol``. Use it for species with strong site-local uptake (IL-2 under receptor uptake),
  where the split step lets a cell absorb its own secretion before any of it spreads.

See docs/solver.md for both schemes, their order, their properties and their verification.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from abm import threads as _threads
from abm.kernels import coupled as _c
from abm.kernels import fields as _k

_threads.fit_to_cpus()

__all__ = ["FieldSolver"]

SMOOTHING_SWEEPS = 2  # red-black Gauss-Seidel sweeps before and after each coarse-grid correction

# Column-block width target for the strided (y, z) sweeps: a block of ``n`` rows must stay in cache between the
# forward and the backward pass. Only a function of the grid shape, never of the thread count.
_BLOCK_BYTES = 512 * 1024


def _block_width(n: int, n_inner: int) -> int:
    width = max(8, (_BLOCK_BYTES // (8 * max(n, 1))) // 8 * 8)
    return int(min(width, n_inner))


def _coupled_flags(coupled: bool | Sequence[bool], n: int) -> tuple[bool, ...]:
    if isinstance(coupled, bool | np.bool_):
        return (bool(coupled),) * n
    try:
        flags = tuple(coupled)
    except TypeError:
        raise ValueError(f"coupled must be a bool or one bool per species, got {coupled!r}") from None
    if len(flags) != n or not all(isinstance(f, bool | np.bool_) for f in flags):
        raise ValueError(f"coupled must be a bool or one bool per species ({n}), got {coupled!r}")
    return tuple(bool(f) for f in flags)


def _param_vector(name: str, values: Sequence[float], n: int | None) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of floats, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} must have one entry per species ({n}), got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must be finite and >= 0, got {arr.tolist()}")
    return arr


class FieldSolver:
    """Implicit diffusion–reaction solver for ``n_species`` fields on a 2D or 3D lattice.

    Parameters
    ----------
    shape_xyz : (nx, ny, nz) or (nx, ny)
        Lattice shape; ``nz = 1`` (or a 2-tuple) for 2D. Site ``i = x + nx*(y + ny*z)``.
    spacing_um : float
        Lattice spacing h, um.
    dt_min : float
        Step, min. The tridiagonal factors are computed for this step (divided by ``substeps``) once, here.
    diffusion_um2_per_min : sequence of float
        Diffusion coefficient per species, um^2/min (>= 0).
    decay_per_min : sequence of float
        First-order decay rate per species, 1/min (>= 0).
    periodic : bool
        Periodic in every axis; otherwise no-flux (closed) boundaries.
    substeps : int
        Equal sub-steps per :meth:`step` (for accuracy studies); sources, uptake and plasma are held over the step.
    coupled : bool or sequence of bool
        Per species (or one value for all): take the coupled backward-Euler step (reaction and diffusion in one
        implicit solve) instead of the split one. Default False: every species is split, as before.
    rtol : float
        Coupled species: stop when ``||b - A c'||_2 <= rtol ||b||_2``; ``0 < rtol < 1``. Since every eigenvalue of
        ``A`` is at least 1, this also bounds the error: ``||c' - c'_exact||_2 <= rtol ||b||_2``.
    max_iterations : int
        Coupled species: conjugate-gradient iterations allowed per solve; reaching it raises ``RuntimeError``.

    Attributes
    ----------
    coupled : tuple of bool
        The scheme of each species.
    last_iterations : int64 (n_species,)
        Conjugate-gradient iterations of the last :meth:`step`, summed over its sub-steps (0 for split species).
    last_residual : float64 (n_species,)
        The largest final relative residual of the last :meth:`step`'s solves (0 for split species).
    last_initial_residual : float64 (n_species,)
        The largest relative residual of the warm start (the previous field) in the last :meth:`step`.

    Notes
    -----
    Split: backward-Euler reaction then LOD backward-Euler diffusion (x, y, z). Coupled: backward Euler of the whole
    operator. Both are first order in time, second order in space, unconditionally stable, non-negative for
    non-negative inputs and mass conserving (no-flux or periodic); the coupled step is also accurate where the
    uptake rate times the step is large. A step is a pure function of its arguments: the warm start is the field
    passed in, no state is carried between steps.
    """

    def __init__(
        self,
        shape_xyz: tuple[int, int, int],
        spacing_um: float,
        dt_min: float,
        diffusion_um2_per_min: Sequence[float],
        decay_per_min: Sequence[float],
        periodic: bool = False,
        substeps: int = 1,
        coupled: bool | Sequence[bool] = False,
        rtol: float = 1e-8,
        max_iterations: int = 100,
    ) -> None:
        shape = tuple(shape_xyz)
        if len(shape) == 2:
            shape = (*shape, 1)
        if len(shape) != 3 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in shape):
            raise ValueError(f"shape_xyz must be (nx, ny, nz) or (nx, ny) of ints, got {shape_xyz!r}")
        if any(v < 1 for v in shape):
            raise ValueError(f"shape_xyz entries must be >= 1, got {shape_xyz!r}")
        self.shape_xyz: tuple[int, int, int] = tuple(int(v) for v in shape)
        self.ndim = 2 if self.shape_xyz[2] == 1 else 3
        if not np.isfinite(spacing_um) or spacing_um <= 0:
            raise ValueError(f"spacing_um must be finite and > 0, got {spacing_um!r}")
        if not np.isfinite(dt_min) or dt_min <= 0:
            raise ValueError(f"dt_min must be finite and > 0, got {dt_min!r}")
        if isinstance(substeps, bool) or not isinstance(substeps, (int, np.integer)) or substeps < 1:
            raise ValueError(f"substeps must be an int >= 1, got {substeps!r}")
        self.spacing_um = float(spacing_um)
        self.dt_min = float(dt_min)
        self.substeps = int(substeps)
        self.periodic = bool(periodic)
        self.diffusion_um2_per_min = _param_vector("diffusion_um2_per_min", diffusion_um2_per_min, None)
        self.n_species = int(self.diffusion_um2_per_min.shape[0])
        self.decay_per_min = _param_vector("decay_per_min", decay_per_min, self.n_species)
        nx, ny, nz = self.shape_xyz
        self.n_sites = nx * ny * nz

        # Everything below is a pure function of (shape, h, dt/substeps, D, periodic): computed once, explicitly.
        self.dt_sub_min = self.dt_min / self.substeps
        r = self.diffusion_um2_per_min * self.dt_sub_min / self.spacing_um**2
        self.r = r
        self._axes = tuple(_k.thomas_factors(n, r, self.periodic) for n in self.shape_xyz)
        self._block_y = _block_width(ny, nx)
        self._block_z = _block_width(nz, nx * ny)
        self._vmask = np.zeros(self.n_sites, dtype=np.uint8)
        self._zeros: np.ndarray | None = None  # float32 (n_species, n_sites), made on first use of None
        self._perm_plasma = np.zeros(self.n_species)

        # The coupled scheme: validated options, the multigrid hierarchy and per-species scratch, all made here.
        self.coupled = _coupled_flags(coupled, self.n_species)
        if isinstance(rtol, bool) or not isinstance(rtol, int | float | np.floating) or not (0.0 < rtol < 1.0):
            raise ValueError(f"rtol must be a float with 0 < rtol < 1, got {rtol!r}")
        if isinstance(max_iterations, bool) or not isinstance(max_iterations, int | np.integer) or max_iterations < 1:
            raise ValueError(f"max_iterations must be an int >= 1, got {max_iterations!r}")
        self.rtol = float(rtol)
        self.max_iterations = int(max_iterations)
        self._split_active = np.array([not f for f in self.coupled], dtype=np.uint8)
        self._any_split = bool(self._split_active.any())
        # the split sweeps run in parallel only for lattices where that pays (a measured threshold, same bits)
        self._split_parallel = self.n_sites * int(self._split_active.sum()) >= _k.PARALLEL_MIN_UPDATES
        self._coupled_species = tuple(s for s, f in enumerate(self.coupled) if f)
        self._levels = _c.build_levels(self.shape_xyz, self.periodic) if self._coupled_species else None
        self._work = {s: _c.make_work(self._levels) for s in self._coupled_species}
        self._control = _c.Control(self.rtol, self.max_iterations, SMOOTHING_SWEEPS, _c.PARALLEL_MIN_SITES)
        self._control_threads = 0  # the thread count self._control was made for
        self._coef = np.zeros((self.n_species, 5))
        self._coef[:, _c.C_DT] = self.dt_sub_min
        self._coef[:, _c.C_R] = self.r
        self._coef[:, _c.C_DECAY] = self.decay_per_min
        self._stats = np.zeros((self.n_species, 3))
        self.last_iterations = np.zeros(self.n_species, dtype=np.int64)
        self.last_residual = np.zeros(self.n_species)
        self.last_initial_residual = np.zeros(self.n_species)

    def __repr__(self) -> str:
        return (
            f"FieldSolver(shape_xyz={self.shape_xyz}, spacing_um={self.spacing_um}, dt_min={self.dt_min}, "
            f"n_species={self.n_species}, periodic={self.periodic}, substeps={self.substeps}, "
            f"coupled={self.coupled}, rtol={self.rtol})"
        )

    # ------------------------------------------------------------------ validation
    def _check_field(self, name: str, arr: np.ndarray | None, dtype: type, allow_none: bool) -> np.ndarray:
        if arr is None:
            if not allow_none:
                raise ValueError(f"{name} must be an array, got None")
            if self._zeros is None:
                self._zeros = np.zeros((self.n_species, self.n_sites), dtype=np.float32)
            return self._zeros
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"{name} must be a numpy array, got {type(arr).__name__}")
        if arr.dtype != dtype:
            raise ValueError(f"{name} must have dtype {np.dtype(dtype).name}, got {arr.dtype}")
        if arr.shape != (self.n_species, self.n_sites):
            raise ValueError(f"{name} must have shape {(self.n_species, self.n_sites)}, got {arr.shape}")
        if not arr.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous")
        return arr

    def _check_species_vector(self, name: str, arr: np.ndarray) -> np.ndarray:
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float64 or arr.shape != (self.n_species,):
            got = f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
            raise ValueError(f"{name} must be a float64 array of shape ({self.n_species},), got {got}")
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ValueError(f"{name} must be finite and >= 0, got {arr.tolist()}")
        return arr

    # ------------------------------------------------------------------ stepping
    def step(
        self,
        conc: np.ndarray,
        uptake_per_min: np.ndarray | None,
        source_per_min: np.ndarray | None,
        vessel_sites: np.ndarray,
        vessel_exchange_per_min: np.ndarray,
        plasma: np.ndarray,
        *,
        check_values: bool = False,
    ) -> None:
        """Advance ``conc`` in place by ``dt_min``.

        Parameters
        ----------
        conc : float64 (n_species, n_sites), C-contiguous
            Concentrations, modified in place.
        uptake_per_min : float32 (n_species, n_sites) or None
            Per-site first-order uptake rate, 1/min (>= 0); None means zero.
        source_per_min : float32 (n_species, n_sites) or None
            Per-site secretion, concentration units per min (>= 0); None means zero.
        vessel_sites : int64 (n_vessels,)
            Flat site indices of vessels; a site listed twice exchanges twice.
        vessel_exchange_per_min : float64 (n_species,)
            Permeability P, 1/min: flux ``P (plasma - c)`` at each vessel site.
        plasma : float64 (n_species,)
            Plasma concentration over this step.
        check_values : bool
            Also scan uptake and source for negative or non-finite entries (one extra pass over them).

        Raises
        ------
        ValueError
            A malformed argument (named in the message); nothing is changed.
        RuntimeError
            A coupled solve did not reach ``rtol`` within ``max_iterations``; ``conc`` then holds the last iterate.
        """
        if not isinstance(conc, np.ndarray) or conc.dtype != np.float64:
            raise ValueError(f"conc must be a float64 numpy array, got {getattr(conc, 'dtype', type(conc).__name__)}")
        if conc.shape != (self.n_species, self.n_sites):
            raise ValueError(f"conc must have shape {(self.n_species, self.n_sites)}, got {conc.shape}")
        if not conc.flags.c_contiguous or not conc.flags.writeable:
            raise ValueError("conc must be C-contiguous and writeable")
        uptake = self._check_field("uptake_per_min", uptake_per_min, np.float32, True)
        source = self._check_field("source_per_min", source_per_min, np.float32, True)
        if check_values:
            for name, arr in (("uptake_per_min", uptake), ("source_per_min", source)):
                if not np.all(np.isfinite(arr)) or np.any(arr < 0):
                    raise ValueError(f"{name} must be finite and >= 0 everywhere")
        if not isinstance(vessel_sites, np.ndarray) or vessel_sites.dtype != np.int64 or vessel_sites.ndim != 1:
            got = (
                f"{vessel_sites.dtype} ndim={vessel_sites.ndim}"
                if isinstance(vessel_sites, np.ndarray)
                else type(vessel_sites).__name__
            )
            raise ValueError(f"vessel_sites must be a 1-D int64 array, got {got}")
        perm = self._check_species_vector("vessel_exchange_per_min", vessel_exchange_per_min)
        plasma = self._check_species_vector("plasma", plasma)
        np.multiply(perm, plasma, out=self._perm_plasma)

        bad = _k.mark_vessels(self._vmask, vessel_sites, self.n_sites)
        if bad >= 0:
            raise ValueError(
                f"vessel_sites[{bad}] = {int(vessel_sites[bad])} is out of range [0, {self.n_sites}) "
                "or listed more than 255 times"
            )
        try:
            self._advance(conc, uptake, source, perm)
        finally:
            _k.clear_vessels(self._vmask, vessel_sites)

    def _advance(self, conc: np.ndarray, uptake: np.ndarray, source: np.ndarray, perm: np.ndarray) -> None:
        nx, ny, nz = self.shape_xyz
        ax, ay, az = self._axes
        dt = self.dt_sub_min
        self.last_iterations[:] = 0
        self.last_residual[:] = 0.0
        self.last_initial_residual[:] = 0.0
        if self._any_split:
            rx = _k.Reaction(uptake, source, self._vmask, perm, self._perm_plasma, self.decay_per_min)
            act = self._split_active
        if self._coupled_species:
            terms = _c.SiteTerms(uptake, source, self._vmask)
            self._coef[:, _c.C_PERM] = perm
            self._coef[:, _c.C_PERM_PLASMA] = self._perm_plasma
        threads = numba.get_num_threads()
        if threads != self._control_threads:  # on one thread no parallel region is entered at all
            par_min = _c.PARALLEL_MIN_SITES if threads > 1 else np.iinfo(np.int64).max
            self._control = self._control._replace(par_min=np.int64(par_min))
            self._control_threads = threads
        if self._split_parallel and threads > 1:
            react_x, strided = _k.react_sweep_x, _k.sweep_strided
        else:
            react_x, strided = _k.react_sweep_x_serial, _k.sweep_strided_serial
        for _ in range(self.substeps):
            if self._any_split:
                react_x(conc, rx, dt, nx, ax, act)
                strided(conc, nz, ny, nx, self._block_y, ay, act)
                strided(conc, 1, nz, nx * ny, self._block_z, az, act)
            for s in self._coupled_species:
                stats = self._stats[s]
                status = _c.solve(conc[s], s, terms, self._coef[s], self._levels, self._work[s], self._control, stats)
                self.last_iterations[s] += int(stats[0])
                self.last_initial_residual[s] = max(self.last_initial_residual[s], stats[1])
                self.last_residual[s] = max(self.last_residual[s], stats[2])
                if status != 0:
                    raise RuntimeError(
                        f"coupled solve of species {s} did not reach rtol={self.rtol:g} in {self.max_iterations} "
                        f"iterations (relative residual {stats[2]:.3e})"
                    )
