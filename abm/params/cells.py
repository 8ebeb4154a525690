"""Cell-type rules: tumour, CTL, NK and LAK cells (docs/model.md, submodels). Receptor uptake and secretion of
each diffusing species are properties of the species (:mod:`abm.params.species`), one table row per cell type."""

from __future__ import annotations

from abm.params.core import Group, P

_ISG = (
    "ISG-type responses to type I IFN (antiviral state, MHC-I) are half-maximal near 1-10 U/mL, 0.25-2.5 pM at "
    "about 5 pg/U; antiproliferative ones need about 100x more (Schreiber & Piehler 2015, Trends Immunol 36:139; "
    "docs/model.md 7.11)"
)


class TumourParams(Group):
    ifn_prolif_half_pM: float = P(
        50.0,
        "pM",
        "IFN-alpha that halves the division rate: factor 1/(1 + F/K)",
        gt=0,
        symbol="K_F,prolif",
        source="brief s4 (docs/model.md)",
    )
    mhc_ifn_half_pM: float = P(
        2.5,
        "pM",
        "IFN-alpha giving half of the MHC-I up-regulation",
        gt=0,
        symbol="K_F,MHC",
        source="estimate (was 10): " + _ISG,
    )
    mhc_relax_time_h: float = P(
        24.0,
        "h",
        "time constant of MHC-I relaxing toward its IFN-driven target",
        gt=0,
        symbol="tau_MHC",
        source="brief s4 (docs/model.md)",
    )
    ifn_lysis_gain: float = P(
        1.0,
        "-",
        "IFN-alpha sensitisation of tumour cells to NK/LAK lysis: kill probability x (1 + g S), S in [0, 1] the "
        "cell's sensitisation (0 switches the mechanism off)",
        ge=0,
        le=100,
        symbol="g_S",
        source="estimate: IFN-alpha before IL-2 makes tumour cells easier for LAK/NK cells to kill (brief s4, "
        "docs/model.md; Di Raimondo 1987)",
    )
    ifn_sensitisation_half_pM: float = P(
        2.5,
        "pM",
        "local IFN-alpha at which a tumour cell's sensitisation S tends to 1/2: S relaxes toward F / (F + K_S)",
        gt=0,
        symbol="K_S",
        source="estimate: " + _ISG,
    )
    ifn_sensitisation_time_h: float = P(
        24.0,
        "h",
        "time constant with which sensitisation builds up under IFN-alpha and decays after it",
        gt=0,
        symbol="tau_S",
        source="estimate: as MHC-I (tumour.mhc_relax_time_h); an induced protein programme of about a day",
    )
    drug_kill_per_uM_per_min: float = P(
        5e-6,
        "1/(uM min)",
        "drug kill rate of a cycling tumour cell: p = 1 - exp(-k C dt)",
        ge=0,
        symbol="k_drug",
        source="calibrated: about one log of the cycling rim per 4 weekly 5-FU doses (docs/therapy.md)",
    )
    death_rate_per_day: float = P(0.0, "1/day", "spontaneous tumour cell death", ge=0, le=100)


class CTLParams(Group):
    recruit_per_vessel_per_day: float = P(
        0.3,
        "1/day",
        "CTL entry rate per vessel site at saturating tumour burden and saturating local chemokine",
        ge=0,
        le=100,
        symbol="r_CTL",
        source="calibrated (docs/model.md 7.8): untreated tumours escape, high-dose IL-2 regresses them",
    )
    recruit_tumour_half_cells: float = P(
        1000.0, "cells", "tumour burden giving half-maximal CTL priming", gt=0, symbol="K_N", source="estimate"
    )
    il2_recruit_boost: float = P(
        4.0,
        "-",
        "maximal extra fold-recruitment driven by plasma IL-2",
        ge=0,
        le=1000,
        symbol="a_sys",
        source="estimate",
    )
    il2_recruit_half_pM: float = P(
        200.0, "pM", "plasma IL-2 giving half of the recruitment boost", gt=0, symbol="K_sys", source="estimate"
    )
    ifn_priming_boost: float = P(
        1.0,
        "-",
        "type I IFN help to CTL priming and expansion: CTL recruitment x (1 + b F_p / (F_p + K)), F_p plasma "
        "IFN-alpha (a whole-patient term; 0 switches it off)",
        ge=0,
        le=100,
        symbol="b_IFN",
        source="estimate: type I IFN is a third signal for CD8 T cell expansion and helps dendritic cells "
        "cross-prime (Curtsinger et al. 2005, J Immunol 174:4465; Le Bon et al. 2003, Nat Immunol 4:1009; "
        "brief s4, docs/model.md)",
    )
    ifn_priming_half_pM: float = P(
        5.0,
        "pM",
        "plasma IFN-alpha giving half of the priming boost",
        gt=0,
        symbol="K_IFN,prime",
        source="estimate: about half the s.c. 5 MIU/m^2 plasma peak (9 pM, brief s4)",
    )
    speed_um_per_min: float = P(
        8.0, "um/min", "migration speed", ge=0, le=100, symbol="v_CTL", source="brief s4 (docs/model.md)"
    )
    chemotaxis_sensitivity: float = P(
        20.0,
        "-",
        "chemotactic sensitivity chi: a move to a neighbour weighs exp(chi (rho' - rho)), rho the chemokine "
        "receptor occupancy c / (c + K_d) there and here (0 = unbiased random walk)",
        ge=0,
        le=1000,
        symbol="chi_CTL",
        source="calibrated (docs/model.md 7.6): recruits find a lesion a few hundred um away within days",
    )
    chemokine_receptor_kd_pM: float = P(
        500.0,
        "pM",
        "dissociation constant of the chemokine receptor (CXCR3 for CXCL9/10) that senses the gradient",
        gt=0,
        symbol="K_d,CXCR3",
        source="estimate: CXCL10 binds CXCR3 with nanomolar affinity (reported K_d about 0.1-5 nM)",
    )
    kill_prob: float = P(
        0.05,
        "-",
        "kill probability per contact interval ctl.kill_attempt_min at MHC-I m = 1 (p = p_CTL m)",
        ge=0,
        le=1,
        symbol="p_CTL",
        source="2-16 kills/day in vivo (brief s4, docs/model.md)",
    )
    kill_attempt_min: float = P(
        10.0,
        "min",
        "contact interval over which ctl.kill_prob applies: per agent step the kill probability is "
        "1 - (1 - p)^(dt / interval), so the kill rate does not depend on the step",
        gt=0,
        le=1440,
        symbol="tau_CTL",
        source="convention: the agent step on which kill_prob was calibrated (abm 0.1); a conjugate delivers "
        "its lethal hit within minutes to tens of minutes (docs/model.md 7.10)",
    )
    max_kills: int = P(
        10,
        "kills",
        "kills after which a CTL is exhausted",
        ge=1,
        le=10**6,
        symbol="n_max,CTL",
        source="brief s4 (docs/model.md)",
    )
    secretion_window_h: float = P(
        8.0,
        "h",
        "an engaged CTL stays activated (secretes IL-2, can proliferate) this long after its last engagement",
        ge=0,
        le=1000,
        symbol="T_sec",
        source="brief s4 (docs/model.md)",
    )
    prolif_requires_activation: bool = P(
        True,
        "-",
        "only CTL activated by an engagement (within their secretion window) proliferate on IL-2",
        source="choice: the high-affinity IL-2 receptor (CD25) is expressed after TCR activation",
    )
    prolif_time_h: float = P(
        12.0,
        "h",
        "mean time to divide at saturating IL-2",
        gt=0,
        symbol="tau_prolif",
        source="brief s4 (docs/model.md)",
    )
    il2_prolif_half_pM: float = P(
        10.0,
        "pM",
        "IL-2 giving half-maximal proliferation (high-affinity receptor)",
        gt=0,
        symbol="K_I,prolif",
        source="brief s4 (docs/model.md)",
    )
    lifespan_days: float = P(
        5.0, "day", "mean natural lifespan", gt=0, symbol="T_CTL", source="brief s4 (docs/model.md)"
    )
    aicd_rate_per_day: float = P(
        2.0,
        "1/day",
        "maximal activation-induced death rate of an engaged CTL under high IL-2",
        ge=0,
        le=1000,
        symbol="k_AICD",
        source="estimate",
    )
    aicd_half_pM: float = P(
        1000.0, "pM", "IL-2 giving half-maximal AICD", gt=0, symbol="K_AICD", source="brief s4 (docs/model.md)"
    )
    ifn_cd25_suppression: float = P(
        1.0,
        "-",
        "IFN-alpha present with IL-2 lowers CD25 (IL-2R alpha): the IL-2 half-proliferation constant is "
        "multiplied by 1 + q F / (F + K), F the local IFN-alpha (0 switches it off)",
        ge=0,
        le=100,
        symbol="q_CD25",
        source="estimate: given with IL-2, IFN-alpha suppresses IL-2R alpha (brief s4, docs/model.md)",
    )
    ifn_cd25_half_pM: float = P(
        2.5,
        "pM",
        "local IFN-alpha giving half of the CD25 suppression",
        gt=0,
        symbol="K_CD25",
        source="estimate: " + _ISG,
    )
    drug_kill_per_uM_per_min: float = P(
        5e-6,
        "1/(uM min)",
        "drug kill rate of a cycling CTL (one in its activation window, where it proliferates on IL-2): "
        "p = 1 - exp(-k C dt); 0 switches drug toxicity to lymphocytes off",
        ge=0,
        symbol="k_drug,CTL",
        source="estimate: as the cycling tumour cell (tumour.drug_kill_per_uM_per_min); 5-FU, cisplatin and "
        "dacarbazine kill cycling lymphocytes (brief s4, docs/model.md)",
    )


class NKParams(Group):
    recruit_per_vessel_per_day: float = P(
        0.15,
        "1/day",
        "NK entry rate per vessel site at saturating local chemokine",
        ge=0,
        le=100,
        symbol="r_NK",
        source="calibrated (docs/model.md 7.8): half the CTL rate, as before the chemokine",
    )
    il2_recruit_boost: float = P(
        4.0, "-", "maximal extra fold-recruitment driven by plasma IL-2", ge=0, le=1000, source="estimate"
    )
    il2_recruit_half_pM: float = P(200.0, "pM", "plasma IL-2 giving half of the boost", gt=0, source="estimate")
    speed_um_per_min: float = P(8.0, "um/min", "migration speed", ge=0, le=100, source="estimate (as CTL)")
    chemotaxis_sensitivity: float = P(
        20.0, "-", "chemotactic sensitivity chi (as ctl.chemotaxis_sensitivity)", ge=0, le=1000, source="as CTL"
    )
    chemokine_receptor_kd_pM: float = P(
        500.0, "pM", "dissociation constant of the chemokine receptor (CXCR3)", gt=0, source="as CTL"
    )
    kill_prob: float = P(
        0.05,
        "-",
        "kill probability per contact interval nk.kill_attempt_min for m = 0 and full activation",
        ge=0,
        le=1,
        symbol="p_NK",
        source="estimate",
    )
    kill_attempt_min: float = P(
        10.0,
        "min",
        "contact interval over which nk.kill_prob applies: per agent step the kill probability is "
        "1 - (1 - p)^(dt / interval), so the kill rate does not depend on the step",
        gt=0,
        le=1440,
        symbol="tau_NK",
        source="convention: the agent step on which kill_prob was calibrated (abm 0.1); a conjugate delivers "
        "its lethal hit within minutes to tens of minutes (docs/model.md 7.10)",
    )
    max_kills: int = P(10, "kills", "kills after which an NK cell stops killing", ge=1, le=10**6, source="estimate")
    baseline_activation: float = P(
        0.2, "-", "activation of a resting NK cell", ge=0, le=1, symbol="A_0", source="estimate"
    )
    il2_activation_half_pM: float = P(
        2000.0,
        "pM",
        "IL-2 giving half-maximal activation (intermediate-affinity receptor)",
        gt=0,
        symbol="K_A,IL2",
        source="brief s4 (docs/model.md)",
    )
    ifn_activation_half_pM: float = P(
        20.0, "pM", "IFN-alpha giving half-maximal activation", gt=0, symbol="K_A,IFN", source="estimate"
    )
    lak_threshold_pM: float = P(
        1000.0,
        "pM",
        "local IL-2 above which exposure toward LAK conversion accumulates",
        gt=0,
        symbol="theta_LAK",
        source="brief s4 (docs/model.md): LAK cells arise at 100-1,000 IU/mL",
    )
    ifn_lak_suppression: float = P(
        1.0,
        "-",
        "IFN-alpha present with IL-2 slows LAK generation: exposure accrues at rate 1 / (1 + q F / (F + K)), F "
        "the local IFN-alpha (0 switches it off)",
        ge=0,
        le=100,
        symbol="q_LAK",
        source="estimate: given at the same time as IL-2, IFN-alpha suppresses LAK generation (brief s4, "
        "docs/model.md)",
    )
    ifn_lak_suppression_half_pM: float = P(
        2.5, "pM", "local IFN-alpha giving half of the LAK suppression", gt=0, symbol="K_LAK,IFN", source="estimate"
    )
    lak_exposure_h: float = P(
        72.0,
        "h",
        "cumulative exposure above the threshold that converts an NK cell to LAK",
        gt=0,
        symbol="T_LAK",
        source="brief s4 (docs/model.md): over 3-5 days",
    )
    lifespan_days: float = P(10.0, "day", "mean natural lifespan", gt=0, source="estimate (NK half-life 1-2 weeks)")


class LAKParams(Group):
    kill_prob: float = P(
        0.1,
        "-",
        "kill probability per contact interval lak.kill_attempt_min on an adjacent tumour cell (MHC-independent)",
        ge=0,
        le=1,
        symbol="p_LAK",
        source="estimate",
    )
    kill_attempt_min: float = P(
        10.0,
        "min",
        "contact interval over which lak.kill_prob applies: per agent step the kill probability is "
        "1 - (1 - p)^(dt / interval), so the kill rate does not depend on the step",
        gt=0,
        le=1440,
        symbol="tau_LAK",
        source="convention: the agent step on which kill_prob was calibrated (abm 0.1); a conjugate delivers "
        "its lethal hit within minutes to tens of minutes (docs/model.md 7.10)",
    )
    max_kills: int = P(20, "kills", "kills after which a LAK cell stops killing", ge=1, le=10**6, source="estimate")
    speed_um_per_min: float = P(8.0, "um/min", "migration speed", ge=0, le=100, source="estimate")
    chemotaxis_sensitivity: float = P(
        20.0, "-", "chemotactic sensitivity chi (as ctl.chemotaxis_sensitivity)", ge=0, le=1000, source="as CTL"
    )
    chemokine_receptor_kd_pM: float = P(
        500.0, "pM", "dissociation constant of the chemokine receptor (CXCR3)", gt=0, source="as CTL"
    )
    homing_fraction: float = P(
        0.01,
        "-",
        "share of infused LAK cells that reach tumour deposits; a lesion receives this share in proportion to its "
        "part of the body's tumour burden (patient.tumour_burden_cells)",
        ge=0,
        le=1,
        symbol="f_home",
        source="estimate: labelled LAK cells localise mostly to lung, liver and spleen; about 1% of the dose "
        "reaches tumour",
    )
    withdrawal_threshold_pM: float = P(
        100.0,
        "pM",
        "local IL-2 below which a LAK cell dies of cytokine withdrawal",
        ge=0,
        symbol="theta_wd",
        source="brief s4 (docs/model.md)",
    )
    withdrawal_death_per_day: float = P(
        1.0, "1/day", "death rate below the withdrawal threshold", ge=0, le=1000, source="estimate"
    )
    lifespan_days: float = P(10.0, "day", "mean natural lifespan with IL-2", gt=0, source="estimate")
