"""Each cell rule of docs/model.md (section 7; brief s4) in isolation (abm.kernels.cells), on hand-built lattices.

How: a fresh state (:func:`abm.state.initial_state` emptied), cells placed with :func:`abm.kernels.cells.spawn`,
concentrations written directly into ``conc`` (the field solver is not run), and :func:`step_cells` called alone.
Every other process is switched off through the parameter tree (speed 0, lifespans and division times of 1e9 h or
days, rates 0), so each test watches one rule. All numbers compared against come from :func:`abm.state.cell_rules`
of the parameters used, i.e. from the parameter tree.

Statistics: proportions are checked with an exact two-sided binomial test (scipy.stats.binomtest) at significance
ALPHA = 1e-3 per test; comparisons between two conditions (low vs high IL-2) with a one-sided Fisher exact test at
the same level. The draws are deterministic functions of (seed, step, index, purpose), so these tests cannot
flake: a given version either passes or fails. Where a rate is tested, the same sample must also reject a stated
wrong value (``assert_not_rate``), so each test shows it has the power to see the error it is about. Checked by
mutation (kernel edited in a scratch copy): m dropped from the CTL kill, (1 - m/2) for NK, ``>`` for ``>=`` in LAK
conversion, no cycling check for the drug, IL-2 dropped from AICD, ``<=`` for ``<`` in withdrawal, MHC relaxing
10% fast, IFN-alpha slowing halved: each made its test fail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest, fisher_exact

from abm import Model
from abm.kernels import cells as K
from abm.kernels.records import Scratch, StepKey
from abm.params import Params
from abm.rules import cell_rules
from abm.state import initial_state

ALPHA = 1e-3
OFF = "1e9"  # lifespans (days), division / proliferation times (h): effectively never

# everything that is not the rule under test, off
QUIET = [
    "patient.vessel_fraction=0",
    "init.tumour_radius_um=0",
    f"patient.tumour_division_time_h={1e4}",
    "tumour.death_rate_per_day=0",
    "ctl.speed_um_per_min=0",
    f"ctl.lifespan_days={OFF}",
    f"ctl.prolif_time_h={OFF}",
    "ctl.aicd_rate_per_day=0",
    "nk.speed_um_per_min=0",
    f"nk.lifespan_days={OFF}",
    "lak.speed_um_per_min=0",
    f"lak.lifespan_days={OFF}",
    "lak.withdrawal_death_per_day=0",
]


class Bench:
    """A hand-built state plus the kernel arguments; ``step()`` runs :func:`K.step_cells` once."""

    def __init__(self, nx: int, ny: int, nz: int = 1, sets: list[str] | tuple[str, ...] = (), seed: int = 1):
        self.params = Params.from_overrides(
            None, [f"lattice.nx={nx}", f"lattice.ny={ny}", f"lattice.nz={nz}", *QUIET, *sets]
        )
        self.state = initial_state(self.params, seed)
        c, occ = self.state.cells, self.state.occupancy
        occ[:] = K.FREE  # start from nothing: no tumour, no vessels
        c.ctype[:] = K.EMPTY
        c.n[0] = 0
        self.rules = cell_rules(self.params)
        self.lat = self.state.lattice
        self.geo = self.lat.geometry()
        n_offs = self.geo.offsets.shape[0]
        self.seed = seed
        self.k = 0
        self.scratch = Scratch(
            np.zeros(c.ctype.shape[0], dtype=np.int64),
            np.zeros(n_offs, dtype=np.int64),
            np.zeros(n_offs, dtype=np.int64),
            np.zeros(n_offs, dtype=np.float64),
            np.zeros(1, dtype=np.float64),
        )

    def put(self, x: int, y: int, kind: int, mhc: float | None = None, z: int = 0) -> int:
        site = int(self.lat.index(x, y, z))
        assert self.state.occupancy[site] == K.FREE
        m = self.params.patient.mhc_baseline if mhc is None else mhc
        return K.spawn(self.state.cells, self.state.occupancy, site, kind, m)

    def set_conc(self, species: str, value: float) -> None:
        self.state.conc[getattr(self.rules.species, species), :] = value

    def step(self) -> np.ndarray:
        s = self.state
        counters = K.empty_counters()
        key = StepKey(np.uint64(self.seed), np.int64(self.k))
        K.step_cells(s.tissue, self.geo, self.rules, key, counters, self.scratch)
        K.compact(s.cells, s.occupancy)
        self.k += 1
        assert K.check_consistency(s.cells, s.occupancy) == 0
        return counters

    def count(self, kind: int) -> int:
        c = self.state.cells
        return int(np.count_nonzero(c.ctype[: c.n[0]] == kind))


def pairs(b: Bench, kind: int) -> int:
    """Isolated (tumour, killer) pairs: tumour at (x, y), killer at (x + 1, y); pairs 4 apart in x, 3 in y, so
    each killer touches exactly one tumour cell and each tumour cell one killer."""
    n = 0
    for y in range(1, b.lat.ny - 1, 3):
        for x in range(1, b.lat.nx - 2, 4):
            b.put(x, y, K.TUMOUR)
            b.put(x + 1, y, kind)
            n += 1
    return n


def assert_rate(k: int, n: int, p: float, what: str) -> None:
    res = binomtest(k, n, p)
    assert res.pvalue > ALPHA, f"{what}: {k}/{n} = {k / n:.4g}, expected {p:.4g} (binomial p = {res.pvalue:.2g})"


def assert_not_rate(k: int, n: int, p: float, what: str) -> None:
    """The test has power: the observed proportion rejects a wrong value ``p``."""
    assert binomtest(k, n, p).pvalue < ALPHA, f"{what}: {k}/{n} cannot tell {p:.4g} apart"


# ----------------------------------------------------------------------------------------------------- CTL kill
@pytest.mark.parametrize("m", [1.0, 0.5, 0.2])
def test_ctl_kills_with_probability_p_times_m(m):
    """Per attempt (an engaged, non-exhausted CTL beside a tumour cell) P(kill) = p_CTL * m. The MHC-I baseline is
    set to m so that m stays put without IFN-alpha. About 4,000 attempts: a factor of 0.75 on the rate is rejected."""
    kills = attempts = 0
    for seed in (1, 2):
        b = Bench(120, 120, sets=["ctl.kill_prob=0.2", f"patient.mhc_baseline={m}"], seed=seed)
        pairs(b, K.CTL)
        for _ in range(8):
            c = b.step()
            kills += int(c[K.KILL_CTL])
            attempts += int(c[K.ENGAGED_CTL])
    p = b.rules.ctl.kill_prob * m
    assert attempts > 3000
    assert_rate(kills, attempts, p, f"CTL kill at m={m}")
    assert_not_rate(kills, attempts, 0.75 * p, f"CTL kill at m={m}")


@pytest.mark.parametrize(
    ("kind", "counter", "sets"),
    [
        (K.CTL, K.KILL_CTL, ["ctl.kill_prob=0.3", "patient.mhc_baseline=1"]),
        (K.NK, K.KILL_NK, ["nk.kill_prob=0.3", "nk.baseline_activation=1", "patient.mhc_baseline=0"]),
        (K.LAK, K.KILL_LAK, ["lak.kill_prob=0.3", "lak.withdrawal_threshold_pM=0"]),
    ],
)
def test_kill_probability_per_contact_interval_is_independent_of_the_step(kind, counter, sets):
    """docs/model.md 7.10: at dt = 2.5 min and a 10-min contact interval, a conjugate held for 4 steps (one
    interval) kills with probability p, not 1 - (1 - p)^4 as one attempt of p per step would give. 2,400 pairs;
    the per-step reading (0.76) and half the rate (0.16) are both rejected."""
    kills = n = 0
    for seed in (1, 2):
        b = Bench(120, 120, sets=["time.dt_min=2.5", *sets], seed=seed)
        n += pairs(b, kind)
        for _ in range(4):
            kills += int(b.step()[counter])
    p = 0.3
    assert_rate(kills, n, p, f"kills by one contact interval ({kind})")
    assert_not_rate(kills, n, 1.0 - (1.0 - p) ** 4, f"kills by one contact interval ({kind})")
    assert_not_rate(kills, n, 1.0 - math.sqrt(1.0 - p), f"kills by one contact interval ({kind})")


def test_ctl_exhausts_after_max_kills():
    """A CTL with n_max kills no longer engages or kills (tumour beside it survives every attempt)."""
    b = Bench(30, 30, sets=["ctl.kill_prob=1", "patient.mhc_baseline=1", "ctl.max_kills=3"])
    n = pairs(b, K.CTL)
    b.state.cells.kills[: b.state.cells.n[0]] = np.where(b.state.cells.ctype[: b.state.cells.n[0]] == K.CTL, 3, 0)
    for _ in range(5):
        c = b.step()
        assert c[K.KILL_CTL] == 0 and c[K.ENGAGED_CTL] == 0
    assert b.count(K.TUMOUR) == n


# -------------------------------------------------------------------------------------------- tumour division
def test_tumour_surrounded_never_divides():
    """Contact inhibition: on a fully packed lattice no tumour cell has a free neighbour, so none divides; every
    successful division draw is counted as blocked, at the per-step rate dt / tau_div."""
    b = Bench(8, 8, sets=["patient.tumour_division_time_h=1"])
    for y in range(8):
        for x in range(8):
            b.put(x, y, K.TUMOUR)
    blocked = 0
    steps = 40
    for _ in range(steps):
        c = b.step()
        assert c[K.DIV_TUMOUR] == 0
        blocked += int(c[K.DIV_TUMOUR_BLOCKED])
        assert b.count(K.TUMOUR) == 64
    assert_rate(blocked, 64 * steps, b.rules.tumour.division_prob_per_step, "blocked division draws")


def test_tumour_surrounded_by_immune_cells_never_divides():
    """A tumour cell whose 8 neighbours are other cells (NK cells that do not kill) never divides."""
    b = Bench(3, 3, sets=["patient.tumour_division_time_h=0.5", "nk.kill_prob=0"])
    for y in range(3):
        for x in range(3):
            b.put(x, y, K.TUMOUR if (x, y) == (1, 1) else K.NK)
    blocked = 0
    for _ in range(50):
        c = b.step()
        assert c[K.DIV_TUMOUR] == 0
        blocked += int(c[K.DIV_TUMOUR_BLOCKED])
    assert blocked > 0 and b.count(K.TUMOUR) == 1


@pytest.mark.parametrize("ifn_over_k", [0.0, 1.0, 3.0])
def test_division_rate_and_ifn_slowing(ifn_over_k):
    """A tumour cell with room divides with probability dt/tau_div / (1 + F/K_F,prolif) per step. Division draws
    (divisions + blocked) over cells alive at each step's start; ~6,000 trials per case."""
    tau_h = 1.0
    succ = trials = 0
    for seed in (1, 2, 3):
        b = Bench(90, 90, sets=[f"patient.tumour_division_time_h={tau_h}"], seed=seed)
        f = ifn_over_k * b.params.tumour.ifn_prolif_half_pM
        b.set_conc("ifna", f)
        for y in range(1, 90, 3):
            for x in range(1, 90, 3):
                b.put(x, y, K.TUMOUR)
        for _ in range(2):
            n0 = b.count(K.TUMOUR)
            c = b.step()
            trials += n0
            succ += int(c[K.DIV_TUMOUR] + c[K.DIV_TUMOUR_BLOCKED])
    r = b.rules
    p = r.tumour.division_prob_per_step / (1.0 + f / r.tumour.ifn_prolif_half_pM)
    assert r.tumour.division_prob_per_step == pytest.approx(b.params.time.dt_min / (tau_h * 60.0))
    assert_rate(succ, trials, p, f"division at F/K={ifn_over_k}")
    if ifn_over_k > 0:
        assert_not_rate(succ, trials, r.tumour.division_prob_per_step, "IFN-alpha must slow division")


# ------------------------------------------------------------------------------------------------------ MHC-I
@pytest.mark.parametrize("f_pM", [0.0, 10.0, 100.0])
def test_mhc_relaxes_to_target_with_time_constant(f_pM):
    """m relaxes toward m0 + (1 - m0) F/(F + K_F,MHC): after one time constant tau the gap is e^-1 of the start
    (exact in the discrete scheme: the per-step factor is exp(-dt/tau)); after 10 tau it is at the target."""
    b = Bench(6, 6)
    for y in range(6):
        for x in range(6):  # packed: no division, so every cell is an original
            b.put(x, y, K.TUMOUR, mhc=1.0 if f_pM == 0 else 0.0)
    b.set_conc("ifna", f_pM)
    p = b.params
    m0, kf = p.patient.mhc_baseline, p.tumour.mhc_ifn_half_pM
    target = m0 + (1 - m0) * f_pM / (f_pM + kf)
    start = 1.0 if f_pM == 0 else 0.0
    n_tau = int(round(p.tumour.mhc_relax_time_h * 60.0 / p.time.dt_min))
    for _ in range(n_tau):
        b.step()
    m = b.state.cells.mhc[: b.state.cells.n[0]]
    np.testing.assert_allclose(m, target + (start - target) * math.exp(-1.0), atol=2e-5)
    for _ in range(9 * n_tau):
        b.step()
    np.testing.assert_allclose(b.state.cells.mhc[: b.state.cells.n[0]], target, atol=1e-4)


# --------------------------------------------------------------------------------------------------------- NK
@pytest.mark.parametrize("m", [0.0, 0.4, 0.8])
def test_nk_kill_probability_falls_with_mhc(m):
    """P(NK kill) = p_NK (1 - m) A per attempt, with activation A = 1 here (baseline activation 1). ~2,400 attempts
    per m (one step, two seeds); each value rejects the neighbouring m's prediction."""
    kills = n = 0
    for seed in (1, 2):
        b = Bench(
            120, 120, sets=["nk.kill_prob=0.5", "nk.baseline_activation=1", f"patient.mhc_baseline={m}"], seed=seed
        )
        n += pairs(b, K.NK)
        kills += int(b.step()[K.KILL_NK])
    p = b.rules.nk.kill_prob * (1.0 - m)
    assert_rate(kills, n, p, f"NK kill at m={m}")
    other = m - 0.4 if m >= 0.4 else m + 0.4
    assert_not_rate(kills, n, b.rules.nk.kill_prob * (1.0 - other), f"NK kill at m={m} vs m={other}")


def test_nk_activation_by_il2():
    """With resting activation A0, IL-2 at its half-activation constant raises A to A0 + (1 - A0)/2."""
    kills = n = 0
    for seed in (1, 2):
        b = Bench(120, 120, sets=["nk.kill_prob=0.8", "patient.mhc_baseline=0"], seed=seed)
        b.set_conc("il2", b.params.nk.il2_activation_half_pM)
        n += pairs(b, K.NK)
        kills += int(b.step()[K.KILL_NK])
    r = b.rules
    a = r.nk.baseline_activation + (1 - r.nk.baseline_activation) * 0.5
    assert_rate(kills, n, r.nk.kill_prob * a, "NK kill at IL-2 = K_A")
    assert_not_rate(kills, n, r.nk.kill_prob * r.nk.baseline_activation, "IL-2 must activate NK cells")


# -------------------------------------------------------------------------------------------- LAK conversion
def test_lak_conversion_after_exact_exposure():
    """An NK cell above theta_LAK converts on the step at which its cumulative exposure reaches T_LAK (the default
    72 h = 432 steps of 10 min) and not one step before; exposure is cumulative, not consecutive."""
    b = Bench(20, 20)
    for y in range(0, 20, 2):
        for x in range(0, 20, 2):
            b.put(x, y, K.NK)
    n = b.count(K.NK)
    r = b.rules
    need = math.ceil(r.nk.lak_exposure_min / r.dt_min)
    assert need == 432
    above = r.nk.lak_threshold_pM * 1.01
    b.set_conc("il2", above)
    for _ in range(need // 2):
        assert b.step()[K.LAK_CONVERSION] == 0
    b.set_conc("il2", r.nk.lak_threshold_pM)  # at, not above: no exposure accrues
    for _ in range(100):
        assert b.step()[K.LAK_CONVERSION] == 0
    b.set_conc("il2", above)
    for _ in range(need - need // 2 - 1):
        assert b.step()[K.LAK_CONVERSION] == 0
    assert b.count(K.NK) == n and b.count(K.LAK) == 0
    c = b.step()
    assert c[K.LAK_CONVERSION] == n
    assert b.count(K.LAK) == n and b.count(K.NK) == 0


def test_nk_below_threshold_never_converts():
    b = Bench(10, 10)
    b.put(3, 3, K.NK)
    b.set_conc("il2", b.rules.nk.lak_threshold_pM * 0.99)
    for _ in range(1000):
        assert b.step()[K.LAK_CONVERSION] == 0
    assert b.count(K.NK) == 1


# ------------------------------------------------------------------------------------------------------- AICD
def test_aicd_rises_with_il2():
    """Engaged CTL (beside a tumour cell, kill probability 0 so they stay engaged) die of AICD with probability
    1 - exp(-k_AICD I/(I + K_AICD) dt) per step. Compared at I = K_AICD/100 and I = 10 K_AICD: each matches its
    prediction and high > low (Fisher). Unengaged CTL at high IL-2 never die of AICD."""
    sets = ["ctl.kill_prob=0", "ctl.aicd_rate_per_day=4"]
    out = {}
    for level in (0.01, 10.0):
        deaths = attempts = 0
        for seed in (1, 2):
            b = Bench(120, 120, sets=sets, seed=seed)
            i_pm = level * b.params.ctl.aicd_half_pM
            b.set_conc("il2", i_pm)
            pairs(b, K.CTL)
            for _ in range(10):
                c = b.step()
                deaths += int(c[K.DEATH_CTL_AICD])
                attempts += int(c[K.ENGAGED_CTL])
        r = b.rules
        p = -math.expm1(-r.ctl.aicd_rate_per_min * i_pm / (i_pm + r.ctl.aicd_half_pM) * r.dt_min)
        assert_rate(deaths, attempts, p, f"AICD at I={i_pm} pM")
        out[level] = (deaths, attempts)
    (d_lo, n_lo), (d_hi, n_hi) = out[0.01], out[10.0]
    assert d_hi > d_lo
    assert fisher_exact([[d_hi, n_hi - d_hi], [d_lo, n_lo - d_lo]], alternative="greater").pvalue < ALPHA
    # not engaged: no AICD whatever the IL-2
    b = Bench(30, 30, sets=sets)
    for y in range(0, 30, 3):
        for x in range(0, 30, 3):
            b.put(x, y, K.CTL)
    b.set_conc("il2", 10 * b.params.ctl.aicd_half_pM)
    for _ in range(50):
        c = b.step()
        assert c[K.DEATH_CTL_AICD] == 0 and c[K.ENGAGED_CTL] == 0


# ------------------------------------------------------------------------------------------- LAK withdrawal
def test_lak_withdrawal_death_only_below_threshold():
    """Below theta_wd a LAK cell dies of withdrawal with p = 1 - exp(-rate dt) per step (after surviving its
    natural death draw); at or above it, never of withdrawal, and natural deaths follow 1 - exp(-dt/lifespan).
    ~27,000 LAK-steps per case."""
    sets = ["lak.withdrawal_death_per_day=2", "lak.lifespan_days=5"]
    res = {}
    for rel in (0.5, 1.0, 2.0):
        wd = nat = trials = 0
        b = Bench(60, 60, sets=sets)
        b.set_conc("il2", rel * b.params.lak.withdrawal_threshold_pM)
        for y in range(0, 60, 2):
            for x in range(0, 60, 2):
                b.put(x, y, K.LAK)
        for _ in range(30):
            n0 = b.count(K.LAK)
            c = b.step()
            trials += n0
            nat += int(c[K.DEATH_LAK_NATURAL])
            wd += int(c[K.DEATH_LAK_WITHDRAWAL])
        res[rel] = (wd, nat, trials)
        r = b.rules
        assert_rate(nat, trials, r.lak.death_prob_per_step, f"LAK natural death at {rel} theta")
        if rel < 1.0:
            assert_rate(wd, trials - nat, r.lak.withdrawal_death_prob_per_step, "LAK withdrawal below theta")
        else:
            assert wd == 0
    assert res[0.5][0] > 50


# -------------------------------------------------------------------------------------------------------- drug
def test_drug_spares_non_cycling_tumour():
    """A tumour cell with no free neighbour is not cycling and the drug never kills it, whatever the dose."""
    b = Bench(8, 8)
    for y in range(8):
        for x in range(8):
            b.put(x, y, K.TUMOUR)
    b.set_conc("drug", 10.0 / (b.rules.tumour.drug_kill_per_uM_per_min * b.rules.dt_min))  # p = 1 - e^-10 if cycling
    for _ in range(20):
        assert b.step()[K.KILL_DRUG] == 0
    assert b.count(K.TUMOUR) == 64


def test_drug_kills_cycling_tumour_at_stated_rate():
    """Isolated tumour cells (all cycling) die with p = 1 - exp(-k_drug C dt) per step; ~2,400 cells, one step."""
    kills = n = 0
    for seed in (1, 2, 3):
        b = Bench(90, 90, seed=seed)
        c_drug = 0.3 / (b.rules.tumour.drug_kill_per_uM_per_min * b.rules.dt_min)
        b.set_conc("drug", c_drug)
        for y in range(1, 90, 3):
            for x in range(1, 90, 3):
                b.put(x, y, K.TUMOUR)
                n += 1
        kills += int(b.step()[K.KILL_DRUG])
    p = -math.expm1(-0.3)
    assert_rate(kills, n, p, "drug kill of cycling cells")


def test_drug_in_block_kills_rim_first():
    """In a packed block, a kill needs a free neighbour at the cell's turn: in one step at p ~ 1 only cells on the
    rim or beside a cell killed earlier in the same step can die, so the core (distance >= 2 from the rim,
    reachable only through two earlier kills in order) mostly survives and the first layer all die."""
    b = Bench(20, 20)
    for y in range(4, 16):
        for x in range(4, 16):
            b.put(x, y, K.TUMOUR)
    b.set_conc("drug", 40.0 / (b.rules.tumour.drug_kill_per_uM_per_min * b.rules.dt_min))
    b.step()
    alive = b.state.cell_type_map().reshape(20, 20) == K.TUMOUR
    assert not alive[4, 4:16].any() and not alive[15, 4:16].any()  # outer layer: all cycling, all killed
    assert not alive[4:16, 4].any() and not alive[4:16, 15].any()
    assert alive[7:13, 7:13].sum() > 0  # deep core: survives a step


# ------------------------------------------------------------------------------------ chemotaxis and trafficking
def _occupancy_gradient(b: Bench, kd: float, rho0: float, slope: float) -> None:
    """A chemokine field whose receptor occupancy rho = c / (c + kd) rises linearly along x: rho0 + slope x."""
    x, _, _ = b.lat.coords(np.arange(b.lat.n_sites))
    rho = rho0 + slope * x
    b.state.conc[b.rules.species.chemokine, :] = kd * rho / (1.0 - rho)


def _isolated(b: Bench, kind: int, spacing: int = 3) -> int:
    n = 0
    for y in range(2, b.lat.ny - 2, spacing):
        for x in range(2, b.lat.nx - 2, spacing):
            b.put(x, y, kind)
            n += 1
    return n


@pytest.mark.parametrize("kind", [K.CTL, K.NK, K.LAK], ids=["ctl", "nk", "lak"])
def test_chemotaxis_moves_up_the_receptor_occupancy_gradient(kind):
    """One move per step (v dt = h) among 8 free neighbours, weights exp(chi (rho' - rho)): with rho rising by b per
    site along x the three +x neighbours each weigh e^(chi b), the three -x ones e^(-chi b), the two others 1."""
    name = {K.CTL: "ctl", K.NK: "nk", K.LAK: "lak"}[kind]
    chi, kd, slope = 20.0, 500.0, 0.01
    moved_up = moves = 0
    for seed in (1, 2, 3):
        b = Bench(64, 64, sets=[f"{name}.speed_um_per_min=2", f"{name}.chemotaxis_sensitivity={chi}"], seed=seed)
        _occupancy_gradient(b, kd, 0.2, slope)
        n = _isolated(b, kind)
        x0 = b.lat.coords(b.state.cells.site[:n])[0].astype(int)
        b.step()
        dx = b.lat.coords(b.state.cells.site[:n])[0].astype(int) - x0
        moved_up += int(np.count_nonzero(dx == 1))
        moves += n
    e = np.exp(chi * slope)
    p_up = 3 * e / (3 * e + 2 + 3 / e)
    assert_rate(moved_up, moves, p_up, "moves up the gradient")
    assert_not_rate(moved_up, moves, 3 / 8, "chemotaxis must bias moves")


def test_no_gradient_or_no_sensitivity_is_an_unbiased_walk():
    """Uniform chemokine (or chi = 0 in a gradient): each of the 8 neighbours with probability 1/8."""
    for sets, gradient in ((["ctl.chemotaxis_sensitivity=20"], False), (["ctl.chemotaxis_sensitivity=0"], True)):
        up = moves = 0
        for seed in (1, 2):
            b = Bench(64, 64, sets=["ctl.speed_um_per_min=2", *sets], seed=seed)
            if gradient:
                _occupancy_gradient(b, 500.0, 0.2, 0.005)
            else:
                b.set_conc("chemokine", 300.0)
            n = _isolated(b, K.CTL)
            x0 = b.lat.coords(b.state.cells.site[:n])[0].astype(int)
            b.step()
            up += int(np.count_nonzero(b.lat.coords(b.state.cells.site[:n])[0].astype(int) - x0 == 1))
            moves += n
        assert_rate(up, moves, 3 / 8, f"unbiased walk {sets}")


def _vessel_bench(n_side: int, level_of) -> tuple[Bench, np.ndarray, np.ndarray]:
    """Vessels every third site (so their neighbourhoods do not overlap), chemokine level_of(i) at the i-th."""
    b = Bench(n_side, n_side)
    sites = []
    for y in range(1, n_side - 1, 3):
        for x in range(1, n_side - 1, 3):
            sites.append(int(b.lat.index(x, y)))
    vessels = np.array(sites, dtype=np.int64)
    b.state.occupancy[vessels] = K.VESSEL
    levels = np.array([level_of(i) for i in range(vessels.size)])
    b.state.conc[b.rules.species.chemokine, vessels] = levels
    return b, vessels, levels


def test_recruitment_follows_the_local_chemokine_at_each_vessel():
    """Entry probability at a vessel is 1 - exp(-r g dt), g = c / (c + K_rec) of the chemokine there; a vessel in
    chemokine-free tissue admits nobody."""
    from abm.kernels.records import Tissue, Trafficking

    k_rec = 20.0
    b, vessels, levels = _vessel_bench(90, lambda i: (0.0, k_rec, 9 * k_rec)[i % 3])
    s = b.state
    t = Tissue(s.cells, s.occupancy, s.conc, s.uptake, s.source, vessels)
    rate = 0.02  # per min: p = 1 - exp(-0.2 g)
    tr = Trafficking(rate, 0.0, 10.0, b.rules.species.chemokine, k_rec)
    entered = np.zeros(3, dtype=np.int64)
    trials = np.zeros(3, dtype=np.int64)
    for k in range(40):
        s.cells.ctype[:] = K.EMPTY
        s.cells.n[0] = 0
        s.occupancy[s.occupancy >= 0] = K.FREE
        counters = K.empty_counters()
        K.recruit(t, b.geo, tr, StepKey(np.uint64(3), np.int64(k)), counters, b.scratch)
        n = int(s.cells.n[0])
        near = {int(v): j for j, v in enumerate(vessels)}
        for site in s.cells.site[:n]:  # each entrant sits next to the vessel that let it in
            nb = [near[v] for v in b.lat.neighbours(int(site)) if int(v) in near]
            assert len(nb) == 1
            entered[nb[0] % 3] += 1
        trials += np.bincount(np.arange(vessels.size) % 3, minlength=3)
        assert counters[K.RECRUIT_CTL] == n
    assert entered[0] == 0
    for g, j in ((0.5, 1), (0.9, 2)):
        assert_rate(int(entered[j]), int(trials[j]), -np.expm1(-rate * g * 10.0), f"entry at g = {g}")
    assert_not_rate(int(entered[1]), int(trials[1]), -np.expm1(-rate * 10.0), "the local signal must gate entry")


def test_transferred_lak_cells_enter_where_the_chemokine_is():
    from abm.kernels.records import Tissue, Trafficking

    b, vessels, levels = _vessel_bench(60, lambda i: 50.0 if i % 4 == 0 else 0.0)
    s = b.state
    t = Tissue(s.cells, s.occupancy, s.conc, s.uptake, s.source, vessels)
    tr = Trafficking(0.0, 0.0, 10.0, b.rules.species.chemokine, 20.0)
    sc = b.scratch._replace(vessel_weight=np.zeros(vessels.size))
    counters = K.empty_counters()
    K.transfer_lak(t, b.geo, 150, tr, StepKey(np.uint64(1), np.int64(0)), counters, sc)
    n = int(s.cells.n[0])
    assert counters[K.TRANSFER_LAK] == n == 150
    signal = {int(v) for v, c in zip(vessels, levels, strict=True) if c > 0}
    for site in s.cells.site[:n]:
        assert any(int(v) in signal for v in b.lat.neighbours(int(site)))


def test_lesion_share_of_an_infusion():
    """dose x homing fraction x lesion / body burden, rounded at random to an integer whose mean is that share."""
    m = Model(
        sets=[
            "lattice.nx=40",
            "lattice.ny=40",
            "init.tumour_radius_um=100",
            "patient.tumour_burden_cells=1e9",
            "lak.homing_fraction=0.02",
        ],
        seed=4,
    )
    n_t = m.counts()["tumour"]
    m.n_tumour = n_t
    expected = 3e9 * 0.02 * n_t / 1e9
    draws = [m.lesion_share(3e9, StepKey(np.uint64(4), np.int64(k))) for k in range(400)]
    assert set(draws) <= {int(expected), int(expected) + 1}
    assert np.mean(draws) == pytest.approx(expected, abs=0.08)


# ------------------------------------------------------------------------------------------------- invariants
@st.composite
def configs(draw, three_d: bool):
    if three_d:
        nx, ny, nz = (draw(st.integers(3, 7)) for _ in range(3))
    else:
        nx, ny, nz = draw(st.integers(4, 16)), draw(st.integers(4, 16)), 1
    n_sites = nx * ny * nz
    radius = draw(st.sampled_from([0.0, 20.0, 40.0, 80.0]))
    free_guess = max(0, n_sites // 3)
    sets = [
        f"lattice.nx={nx}",
        f"lattice.ny={ny}",
        f"lattice.nz={nz}",
        f"lattice.boundary={draw(st.sampled_from(['closed', 'periodic']))}",
        f"init.tumour_radius_um={radius}",
        f"init.ctl_cells={draw(st.integers(0, free_guess // 3))}",
        f"init.nk_cells={draw(st.integers(0, free_guess // 3))}",
        f"init.lak_cells={draw(st.integers(0, free_guess // 3))}",
        f"patient.vessel_fraction={draw(st.sampled_from([0.0, 0.05, 0.2]))}",
        f"patient.tumour_division_time_h={draw(st.sampled_from([0.5, 5.0, 48.0]))}",
        f"ctl.kill_prob={draw(st.floats(0, 1))}",
        f"ctl.speed_um_per_min={draw(st.sampled_from([0.0, 3.0, 8.0, 30.0]))}",
        f"nk.speed_um_per_min={draw(st.sampled_from([0.0, 8.0, 30.0]))}",
        f"lak.kill_prob={draw(st.floats(0, 1))}",
        f"ctl.prolif_time_h={draw(st.sampled_from([0.5, 12.0]))}",
        f"ctl.recruit_per_vessel_per_day={draw(st.sampled_from([0.0, 5.0, 100.0]))}",
        f"nk.recruit_per_vessel_per_day={draw(st.sampled_from([0.0, 50.0]))}",
        f"nk.lak_exposure_h={draw(st.sampled_from([0.5, 72.0]))}",
        f"species.il2.cells.ctl.secretion_molecules_per_s={draw(st.sampled_from([0.0, 100.0]))}",
    ]
    plasma = [draw(st.sampled_from([0.0, 1.0, 1e3, 1e5])) for _ in range(3)]
    return sets, plasma, draw(st.integers(0, 2**63 - 1)), draw(st.integers(1, 5))


@pytest.mark.parametrize("three_d", [False, True], ids=["2d", "3d"])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_invariants(three_d, data):
    """One cell per site; occupancy and cell arrays agree; counts equal live cells; fields non-negative."""
    sets, plasma, seed, steps = data.draw(configs(three_d))
    try:
        m = Model(sets=sets, seed=seed)
    except ValueError as e:  # more immune cells than free sites: a clear refusal, not a broken state
        assert "free sites" in str(e)
        return
    m.plasma[:3] = plasma
    for _ in range(steps):
        m.step()
        s = m.state
        n = s.n_cells
        sites = s.cells.site[:n]
        assert np.unique(sites).size == n
        assert K.check_consistency(s.cells, s.occupancy) == 0
        assert (s.cells.ctype[:n] != K.EMPTY).all()
        assert np.count_nonzero(s.occupancy >= 0) == n
        assert (s.occupancy[s.vessels] == K.VESSEL).all()
        counts = m.counts()
        assert sum(counts.values()) == n
        assert counts["tumour"] == m.latest["n_tumour"] and counts["ctl"] == m.latest["n_ctl"]
        assert np.isfinite(s.conc).all() and (s.conc >= 0).all()
        assert ((s.cells.mhc[:n] >= 0) & (s.cells.mhc[:n] <= 1)).all()


# ------------------------------------------------------------------ IFN-alpha mechanisms (docs/model.md 7.11)
def test_ifn_sensitisation_builds_up_and_decays_with_its_time_constant():
    """S relaxes toward F / (F + K_S) with time constant tau_S under IFN-alpha and back to 0 after it: after one
    tau the gap is e^-1 of the start (exact in the discrete scheme); a daughter inherits its mother's S."""
    b = Bench(6, 6)
    for y in range(6):
        for x in range(6):  # packed: no division
            b.put(x, y, K.TUMOUR)
    p = b.params
    f = 2.0 * p.tumour.ifn_sensitisation_half_pM
    target = f / (f + p.tumour.ifn_sensitisation_half_pM)  # 2/3
    n_tau = int(round(p.tumour.ifn_sensitisation_time_h * 60.0 / p.time.dt_min))
    b.set_conc("ifna", f)
    for _ in range(n_tau):
        b.step()
    s = b.state.cells.sensitisation[: b.state.cells.n[0]]
    np.testing.assert_allclose(s, target * (1.0 - math.exp(-1.0)), atol=2e-5)
    b.set_conc("ifna", 0.0)
    for _ in range(n_tau):
        b.step()
    np.testing.assert_allclose(
        b.state.cells.sensitisation[: b.state.cells.n[0]], target * (1.0 - math.exp(-1.0)) * math.exp(-1.0), atol=2e-5
    )


def test_dividing_tumour_cell_passes_its_sensitisation_to_the_daughter():
    b = Bench(3, 3, sets=["patient.tumour_division_time_h=0.1", "tumour.ifn_sensitisation_time_h=1e9"])
    i = b.put(1, 1, K.TUMOUR)
    b.state.cells.sensitisation[i] = 0.4
    b.step()
    c = b.state.cells
    assert c.n[0] == 2
    np.testing.assert_allclose(c.sensitisation[:2], 0.4, atol=1e-6)


@pytest.mark.parametrize(("kind", "counter"), [(K.NK, K.KILL_NK), (K.LAK, K.KILL_LAK)])
def test_sensitised_targets_are_lysed_more_by_nk_and_lak(kind, counter):
    """P(kill) = p (1 + g S) for a target of sensitisation S (NK: times (1 - m) A, here 1). S = 0.5, g = 1,
    p = 0.2: 0.3, and the unsensitised 0.2 is rejected. 2,400 pairs, one step."""
    kills = n = 0
    sets = ["nk.kill_prob=0.2", "lak.kill_prob=0.2", "nk.baseline_activation=1", "patient.mhc_baseline=0"]
    sets += ["tumour.ifn_lysis_gain=1", "lak.withdrawal_threshold_pM=0", "tumour.ifn_sensitisation_time_h=1e9"]
    for seed in (1, 2):
        b = Bench(120, 120, sets=sets, seed=seed)
        n += pairs(b, kind)
        c = b.state.cells
        c.sensitisation[: c.n[0]] = np.where(c.ctype[: c.n[0]] == K.TUMOUR, 0.5, 0.0)
        kills += int(b.step()[counter])
    assert_rate(kills, n, 0.3, "kill of sensitised targets")
    assert_not_rate(kills, n, 0.2, "kill of sensitised targets")


def test_ifn_slows_lak_generation():
    """Exposure above theta_LAK accrues at dt / (1 + q F / (F + K)): at F = K and q = 1 at 2/3 of the rate, so an NK
    cell needs 1.5 T_LAK to convert."""
    b = Bench(10, 10)
    for y in range(0, 10, 2):
        for x in range(0, 10, 2):
            b.put(x, y, K.NK)
    r = b.rules
    b.set_conc("il2", r.nk.lak_threshold_pM * 1.01)
    b.set_conc("ifna", r.nk.ifn_lak_suppression_half_pM)
    rate = 1.0 / (1.0 + r.nk.ifn_lak_suppression * 0.5)
    for _ in range(50):
        b.step()
    c = b.state.cells
    np.testing.assert_allclose(c.exposure_min[: c.n[0]], 50 * r.dt_min * rate, rtol=1e-5)
    assert abs(rate - 2.0 / 3.0) < 1e-12


def test_ifn_lowers_cd25_and_slows_il2_driven_ctl_proliferation():
    """P(division) = p_max I / (I + K (1 + q F / (F + K_CD25))): at I = K and F = K_CD25 (q = 1), p_max * 0.4
    instead of p_max * 0.5. Isolated CTL with room, ~1,600 per condition, one step."""
    sets = ["ctl.prolif_time_h=0.2", "ctl.prolif_requires_activation=false"]
    got = {}
    for with_ifn in (False, True):
        div = n = 0
        for seed in (1, 2):
            b = Bench(120, 120, sets=sets, seed=seed)
            for y in range(1, 120, 4):
                for x in range(1, 120, 4):
                    b.put(x, y, K.CTL)
                    n += 1
            b.set_conc("il2", b.rules.ctl.il2_prolif_half_pM)
            b.set_conc("ifna", b.rules.ctl.ifn_cd25_half_pM if with_ifn else 0.0)
            div += int(b.step()[K.DIV_CTL])
        got[with_ifn] = (div, n)
    p_max = b.rules.ctl.prolif_prob_max_per_step
    assert_rate(*got[False], 0.5 * p_max, "CTL division without IFN")
    assert_rate(*got[True], p_max / (1.0 + 1.5), "CTL division with IFN")
    assert_not_rate(*got[True], 0.5 * p_max, "CTL division with IFN")


def test_drug_kills_ctl_only_in_their_proliferative_window():
    """A CTL in its activation window dies of the drug with p = 1 - exp(-k C dt); one outside it (timer 0, and
    proliferation requires activation) never does. ~1,600 CTL each, one step; no tumour, so no re-engagement."""
    out = {}
    for active in (True, False):
        kills = n = 0
        for seed in (1, 2):
            b = Bench(120, 120, seed=seed)
            for y in range(1, 120, 4):
                for x in range(1, 120, 4):
                    i = b.put(x, y, K.CTL)
                    b.state.cells.timer_min[i] = 60.0 if active else 0.0
                    n += 1
            b.set_conc("drug", 0.3 / (b.rules.ctl.drug_kill_per_uM_per_min * b.rules.dt_min))
            kills += int(b.step()[K.DEATH_CTL_DRUG])
        out[active] = (kills, n)
    assert_rate(*out[True], -math.expm1(-0.3), "drug kill of cycling CTL")
    assert out[False][0] == 0


def test_plasma_ifn_helps_ctl_priming():
    """CTL entry (whole-patient driver) x (1 + b F_p / (F_p + K)): at F_p = K and b = 1, x 1.5; NK entry unchanged."""
    m = Model("untreated", seed=1, sets=["lattice.nx=20", "lattice.ny=20", "run.days=1"])
    base = m.recruitment_rates_per_day()
    p = m.params
    m.plasma[m.rules.species.ifna] = p.ctl.ifn_priming_half_pM
    ctl, nk = m.recruitment_rates_per_day()
    assert ctl == pytest.approx(base[0] * (1.0 + 0.5 * p.ctl.ifn_priming_boost), rel=1e-12)
    assert nk == base[1]
    assert p.ctl.ifn_priming_boost > 0


def test_ifn_mechanisms_switch_off():
    """Each IFN-alpha mechanism and the drug toxicity to CTL has a switch that turns it off (its strength 0)."""
    off = [
        "tumour.ifn_lysis_gain=0",
        "ctl.ifn_priming_boost=0",
        "ctl.ifn_cd25_suppression=0",
        "nk.ifn_lak_suppression=0",
        "ctl.drug_kill_per_uM_per_min=0",
        "species.cxcl10.cells.tumour.induced_secretion_molecules_per_s=0",
    ]
    p = Params.from_overrides(None, off)
    r = cell_rules(p)
    assert r.nk.ifn_lysis_gain == r.lak.ifn_lysis_gain == 0.0
    assert r.ctl.ifn_cd25_suppression == r.nk.ifn_lak_suppression == r.ctl.drug_kill_per_uM_per_min == 0.0
    assert p.ctl.ifn_priming_boost == 0.0
