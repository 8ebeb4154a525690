"""Parameter groups owned by the therapy package: pharmacokinetics and systemic toxicity.

They are part of the one parameter tree (``abm.params.Params.pk`` and ``.toxicity``); body weight, surface area
and the toxicity thresholds are patient properties and live in ``Params.patient``.
"""

from __future__ import annotations

from abm.params import Group, P


class PKParams(Group):
    # IL-2 (aldesleukin)
    il2_iu_per_mg: float = P(
        1.64e7, "IU/mg", "IL-2 specific activity (18 MIU = 1.1 mg)", gt=0, source="Proleukin label"
    )
    il2_mw_kda: float = P(15.3, "kDa", "IL-2 molecular weight", gt=0, source="Proleukin label")
    il2_iv_half_life_alpha_min: float = P(
        13.0, "min", "IL-2 i.v. distribution half-life", gt=0, symbol="t1/2,alpha", source="SCIENCE.md s4"
    )
    il2_iv_half_life_beta_min: float = P(
        85.0, "min", "IL-2 i.v. elimination half-life", gt=0, symbol="t1/2,beta", source="SCIENCE.md s4"
    )
    il2_iv_alpha_fraction: float = P(
        0.7,
        "-",
        "share of the i.v. bi-exponential in the fast phase",
        ge=0,
        le=1,
        source="estimate (fast phase dominates the early decline)",
    )
    il2_volume_l: float = P(
        3.0,
        "L",
        "IL-2 initial (plasma) volume of distribution",
        gt=0,
        symbol="V_IL2",
        source="calibrated: 720,000 IU/kg over 15 min peaks at 51 nM (SCIENCE.md s4: 40-70 nM); "
        "about the plasma volume of 70 kg",
    )
    il2_sc_bioavailability: float = P(0.3, "-", "IL-2 s.c. bioavailability", gt=0, le=1, source="SCIENCE.md s4")
    il2_sc_absorption_half_life_min: float = P(
        360.0,
        "min",
        "IL-2 s.c. absorption half-life",
        gt=0,
        symbol="ln2/ka,IL2",
        source="calibrated: s.c. peak 1.9% of the i.v. peak per unit dose, >= 70% of it from 0.8 h to 8.3 h",
    )
    # IFN-alpha
    ifna_iu_per_mg: float = P(2.6e8, "IU/mg", "IFN-alpha-2b specific activity", gt=0, source="Intron A label")
    ifna_mw_kda: float = P(19.3, "kDa", "IFN-alpha molecular weight", gt=0, source="Intron A label")
    ifna_half_life_min: float = P(174.0, "min", "IFN-alpha elimination half-life (2.9 h)", gt=0, source="SCIENCE.md s4")
    ifna_sc_absorption_half_life_min: float = P(
        760.0,
        "min",
        "IFN-alpha s.c. absorption half-life (flip-flop: slower than elimination)",
        gt=0,
        symbol="ln2/ka,IFN",
        source="calibrated: 5 MIU/m^2 s.c. peaks at 8.0 h (SCIENCE.md s4)",
    )
    ifna_sc_bioavailability: float = P(
        0.9,
        "-",
        "IFN-alpha s.c. bioavailability",
        gt=0,
        le=1,
        source="estimate (s.c. absorption of IFN-alpha is nearly complete)",
    )
    ifna_volume_l: float = P(
        26.5,
        "L",
        "IFN-alpha apparent volume of distribution",
        gt=0,
        symbol="V_IFN",
        source="calibrated: 5 MIU/m^2 s.c. peaks at 9.0 pM (SCIENCE.md s4)",
    )
    # cytotoxic drug
    drug_mw_g_per_mol: float = P(130.08, "g/mol", "cytotoxic drug molecular weight (5-FU)", gt=0)
    drug_half_life_min: float = P(120.0, "min", "cytotoxic drug plasma half-life", gt=0, source="SCIENCE.md s4")
    drug_volume_l: float = P(
        20.0,
        "L",
        "cytotoxic drug volume of distribution",
        gt=0,
        symbol="V_drug",
        source="estimate (5-FU: about 0.25-0.3 L/kg)",
    )


class ToxicityParams(Group):
    """Systemic toxicity score S: dS/dt = k_tox C/(C + K_tox) - S/tau_rec, C the plasma IL-2 (docs/therapy.md)."""

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
        source="SCIENCE.md s4 (recovers over about a day)",
    )
