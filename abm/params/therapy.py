"""Pharmacokinetics and systemic toxicity. Drugs are data: ``pk`` maps a species name to its :class:`DrugPK`, so a
new drug is a ``[pk.<species>]`` table (with a ``[species.<species>]`` field to diffuse in), not new code.

Body weight, surface area and the toxicity thresholds are patient properties (:mod:`abm.params.patient`).
"""

from __future__ import annotations

from pydantic import field_validator, model_validator

from abm.params.core import Group, P


class DrugPK(Group):
    """Linear plasma PK of one drug: a sum-of-exponentials disposition, optional s.c. absorption, unit conversion.

    The unit impulse response is ``(1/V) sum_i f_i exp(-ln2 t / t_i)`` with ``t_i = half_lives_min[i]``, the
    fractions ``f_i = phase_fractions[i]`` for every phase but the last, which takes the rest (so one phase needs
    none). A subcutaneous dose is absorbed first order (half-life ``sc_absorption_half_life_min``) with
    bioavailability ``sc_bioavailability``.
    """

    description: str = P("", "-", "what this drug is")
    iu_per_mg: float = P(0.0, "IU/mg", "specific activity, to convert IU doses (0: dosed by mass only)", ge=0)
    molar_mass_g_per_mol: float = P(1000.0, "g/mol", "molar mass (15.3 kDa = 15,300 g/mol)", gt=0)
    volume_l: float = P(10.0, "L", "initial (plasma) volume of distribution", gt=0, symbol="V")
    half_lives_min: list[float] = P([60.0], "min", "half-life of each disposition phase, fastest first")
    phase_fractions: list[float] = P(
        [], "-", "share of the unit response in each phase but the last (which takes the rest)"
    )
    sc_absorption_half_life_min: float = P(
        0.0, "min", "s.c. absorption half-life (0: no subcutaneous route)", ge=0, symbol="ln2/ka"
    )
    sc_bioavailability: float = P(1.0, "-", "s.c. bioavailability", gt=0, le=1, symbol="F")
    source: str = P("", "-", "where these numbers come from")

    @field_validator("half_lives_min")
    @classmethod
    def _positive_half_lives(cls, v: list[float]) -> list[float]:
        if not v or any(not (t > 0) for t in v):
            raise ValueError(f"half_lives_min must list at least one half-life, each > 0 (got {v})")
        return v

    @model_validator(mode="after")
    def _fractions(self) -> DrugPK:
        f = self.phase_fractions
        if len(f) != len(self.half_lives_min) - 1:
            raise ValueError(
                f"phase_fractions must have one entry fewer than half_lives_min ({len(self.half_lives_min) - 1}), "
                f"got {len(f)}"
            )
        if any(x < 0 or x > 1 for x in f) or sum(f) > 1:
            raise ValueError(f"phase_fractions must be in [0, 1] and sum to at most 1 (got {f})")
        return self

    @property
    def dosed_in_iu(self) -> bool:
        return self.iu_per_mg > 0

    @property
    def has_sc(self) -> bool:
        return self.sc_absorption_half_life_min > 0


def default_pk() -> dict[str, DrugPK]:
    return {
        "il2": DrugPK(
            description="aldesleukin (recombinant IL-2)",
            iu_per_mg=1.64e7,
            molar_mass_g_per_mol=15300.0,
            volume_l=3.0,
            half_lives_min=[13.0, 85.0],
            phase_fractions=[0.7],
            sc_absorption_half_life_min=360.0,
            sc_bioavailability=0.3,
            source="specific activity and 15.3 kDa: Proleukin label (18 MIU = 1.1 mg); i.v. distribution and "
            "elimination half-lives 13 and 85 min: Proleukin label; fast-phase share 0.7 an estimate; V calibrated "
            "so that 720,000 IU/kg over 15 min peaks at 51 nM (observed 40-70 nM), about the plasma volume of 70 kg; "
            "s.c. bioavailability 0.3 and absorption calibrated to a plasma plateau of about 2% of the i.v. peak "
            "per unit dose over 8 h (docs/therapy.md)",
        ),
        "ifna": DrugPK(
            description="interferon-alpha-2b",
            iu_per_mg=2.6e8,
            molar_mass_g_per_mol=19300.0,
            volume_l=26.5,
            half_lives_min=[174.0],
            sc_absorption_half_life_min=760.0,
            sc_bioavailability=0.9,
            source="specific activity and 19.3 kDa: Intron A label; elimination half-life 2.9 h; absorption and V "
            "calibrated so that 5 MIU/m^2 s.c. peaks at 9 pM at 8 h (Intron A label; docs/therapy.md); "
            "bioavailability 0.9 an estimate",
        ),
        "drug": DrugPK(
            description="5-fluorouracil (a cytotoxic small molecule)",
            molar_mass_g_per_mol=130.08,
            volume_l=20.0,
            half_lives_min=[120.0],
            source="5-FU molar mass 130.08 g/mol; half-life of hours and V of about 0.25-0.3 L/kg are estimates "
            "(docs/therapy.md)",
        ),
    }


class ToxicityParams(Group):
    """Systemic toxicity score S: dS/dt = k_tox C/(C + K_tox) - S/tau_rec, C the plasma level of ``drug``
    (IL-2: capillary leak syndrome is its dose-limiting toxicity; docs/therapy.md)."""

    drug: str = P("il2", "-", "the species whose plasma level drives the score (a key of pk)")
    rate_per_day: float = P(
        25.0,
        "1/day",
        "maximal rise rate of the toxicity score at saturating plasma IL-2",
        ge=0,
        le=1e4,
        symbol="k_tox",
        source="calibrated: 720,000 IU/kg q8h gives 7 of 14 doses per cycle and no DLT, twice that dose a DLT",
    )
    il2_half_pM: float = P(
        1.0e5,
        "pM",
        "plasma IL-2 giving half the maximal rise rate",
        gt=0,
        symbol="K_tox",
        source="calibrated: above the high-dose peak (51 nM), so toxicity keeps rising with dose (P2)",
    )
    recovery_time_h: float = P(
        24.0,
        "h",
        "time constant of recovery",
        gt=0,
        le=1e4,
        symbol="tau_rec",
        source="recovers over about a day (docs/therapy.md)",
    )
