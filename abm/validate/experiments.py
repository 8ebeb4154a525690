"""One declarative experiment per clinical pattern (docs/model.md s1, P1-P6).

An experiment is a set of **arms** (a shipped scenario name plus documented ``key=value`` overrides, nothing else:
no rule reads an arm's name, and a change to the model's rules reaches every arm) and a list of **comparisons**
(a statistic computed per seed, its 95% interval across seeds and a verdict rule fixed before any run). Every arm
runs on the same seeds, so two arms with the same seed share the initial lesion, vessels and random streams
(common random numbers) and comparisons are paired by seed.

Effect measure used throughout: the fraction of the untreated tumour burden an arm removes,

    E(arm, seed) = 1 - AUC(arm, seed) / AUC(untreated, seed),

with AUC the tumour cell-days over the run (summary ``tumour_auc_cell_days``); E = 0 is no effect, 1 the whole
burden. Differences of E are differences of burden in units of the untreated burden of the same seed.

Verdict rules (``expect``):

- ``above``: the pattern emerges when the 95% interval lies above ``margin`` (0 unless stated);
- ``below``: it emerges when the interval lies below ``margin`` (a bound on a gain: "no more than");
- ``bliss``: the Bliss excess; emerges (additive or synergistic) unless the interval lies below 0; the text says
  which of synergy (above 0), independence (contains 0) or antagonism (below 0) it is.

A pattern emerges when every one of its comparisons does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

UNTREATED = "untreated"
"""The arm every effect E is relative to (it is run whenever any pattern is)."""


@dataclass(frozen=True)
class Arm:
    """A shipped scenario with overrides (``key=value`` strings as ``abm run --set`` takes them)."""

    scenario: str
    sets: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class Comparison:
    """One row of the table.

    ``stat`` and ``arms``:

    - ``"value"``, (a,): metric(a) per seed, minus ``offset``;
    - ``"diff"``, (a, b): metric(a) - metric(b) per seed;
    - ``"log_ratio"``, (a, b): log(metric(a) / metric(b)) per seed, reported as the ratio (geometric mean);
    - ``"bliss"``, (combo, a, b): E(combo) - [E(a) + E(b) - E(a) E(b)] per seed (Bliss independence).
    """

    key: str
    claim: str
    stat: str
    metric: str
    arms: tuple[str, ...]
    expect: str = "above"
    margin: float = 0.0
    offset: float = 0.0
    sign: float = 1.0
    """Multiplies the per-seed value before the interval (``-1`` turns "lower is better" into "above")."""


@dataclass(frozen=True)
class Pattern:
    key: str
    title: str
    claim: str
    arms: tuple[str, ...]
    comparisons: tuple[Comparison, ...]
    doses: tuple[tuple[str, float], ...] = field(default=())
    """For a dose-response figure: (arm, IL-2 dose as a multiple of the label dose) in dose order."""


# the drug block of scenarios/il2_ifna_5fu.toml (5-FU 1,000 mg/m^2 i.v.; weeks 5-8 there); the schedule arms move it
FU_BLOCK = 5
_FU = f"regimen.doses.{FU_BLOCK}"

ARMS: dict[str, Arm] = {
    UNTREATED: Arm("untreated", (), "no treatment"),
    "hd_il2": Arm("high_dose_il2", (), "high-dose i.v. IL-2, 720,000 IU/kg q8h (the label dose, 1x)"),
    "hd_il2_x0.1": Arm("high_dose_il2", ("regimen.dose_scale.il2=0.1",), "the high-dose schedule at 0.1x"),
    "hd_il2_x0.3": Arm("high_dose_il2", ("regimen.dose_scale.il2=0.3",), "the high-dose schedule at 0.3x"),
    "hd_il2_x2": Arm("high_dose_il2", ("regimen.dose_scale.il2=2",), "the high-dose schedule at 2x"),
    "atz_il2_ifna": Arm("il2_ifna", (), "Atzpodien s.c. IL-2 + IFN-alpha"),
    "atz_il2": Arm("il2_ifna", ("regimen.dose_scale.ifna=0",), "the Atzpodien schedule, IL-2 only (IFN-alpha x0)"),
    "atz_ifna": Arm("il2_ifna", ("regimen.dose_scale.il2=0",), "the Atzpodien schedule, IFN-alpha only (IL-2 x0)"),
    "atz_5fu_before": Arm(
        "il2_ifna_5fu",
        (f"{_FU}.weeks=[1,4]", f"{_FU}.weekdays=[1]"),
        "Atzpodien + 5-FU 1,000 mg/m^2 on day 1 of weeks 1 and 4 (two days before each IL-2 pulse)",
    ),
    "atz_5fu_during": Arm(
        "il2_ifna_5fu",
        (f"{_FU}.weeks=[1,4]", f"{_FU}.weekdays=[4]"),
        "Atzpodien + 5-FU 1,000 mg/m^2 on day 4 of weeks 1 and 4 (inside each IL-2 pulse, days 3-5)",
    ),
    "lak_il2": Arm("lak_il2", (), "LAK transfer (3 x 2e10 cells) with high-dose IL-2"),
    "lak_il2_x0.1": Arm("lak_il2", ("regimen.dose_scale.il2=0.1",), "LAK transfer with the IL-2 schedule at 0.1x"),
}

SATURATION_MARGIN = 0.05
"""P2: a dose step "adds nothing" when its gain in E is below 0.05 (5% of the untreated burden) at the upper bound."""

PATTERNS: dict[str, Pattern] = {
    p.key: p
    for p in (
        Pattern(
            "P1",
            "Established tumours regress under IL-2; untreated, they grow",
            "untreated the lesion grows; high-dose IL-2 shrinks it and removes burden",
            (UNTREATED, "hd_il2"),
            (
                Comparison(
                    "P1a",
                    "untreated: final / initial tumour cells - 1 (growth)",
                    "value",
                    "growth",
                    (UNTREATED,),
                    offset=1.0,
                ),
                Comparison(
                    "P1b",
                    "high-dose IL-2: 1 - final / initial tumour cells (regression)",
                    "value",
                    "growth",
                    ("hd_il2",),
                    offset=1.0,
                    sign=-1.0,
                ),
                Comparison("P1c", "E(high-dose IL-2): burden removed vs untreated", "value", "effect", ("hd_il2",)),
            ),
        ),
        Pattern(
            "P2",
            "IL-2 dose-response: the effect saturates while toxicity keeps rising",
            "from 0.3x to 1x and from 1x to 2x of the label dose the effect gains less than the margin, while the "
            "peak toxicity score rises",
            (UNTREATED, "hd_il2_x0.1", "hd_il2_x0.3", "hd_il2", "hd_il2_x2"),
            (
                Comparison(
                    "P2a",
                    "E(1x) - E(0.3x): effect gained by tripling the dose",
                    "diff",
                    "effect",
                    ("hd_il2", "hd_il2_x0.3"),
                    expect="below",
                    margin=SATURATION_MARGIN,
                ),
                Comparison(
                    "P2b",
                    "E(2x) - E(1x): effect gained above the label dose",
                    "diff",
                    "effect",
                    ("hd_il2_x2", "hd_il2"),
                    expect="below",
                    margin=SATURATION_MARGIN,
                ),
                Comparison(
                    "P2c",
                    "peak toxicity score, 1x - 0.3x",
                    "diff",
                    "toxicity_max",
                    ("hd_il2", "hd_il2_x0.3"),
                ),
                Comparison(
                    "P2d",
                    "peak toxicity score, 2x - 1x",
                    "diff",
                    "toxicity_max",
                    ("hd_il2_x2", "hd_il2"),
                ),
            ),
            doses=(("hd_il2_x0.1", 0.1), ("hd_il2_x0.3", 0.3), ("hd_il2", 1.0), ("hd_il2_x2", 2.0)),
        ),
        Pattern(
            "P3",
            "IL-2 + IFN-alpha does better than either alone",
            "on the Atzpodien schedule the combination removes more burden than each of its own components, and "
            "at least what Bliss independence predicts",
            (UNTREATED, "atz_il2_ifna", "atz_il2", "atz_ifna"),
            (
                Comparison(
                    "P3a",
                    "E(IL-2 + IFN-alpha) - E(IL-2 alone)",
                    "diff",
                    "effect",
                    ("atz_il2_ifna", "atz_il2"),
                ),
                Comparison(
                    "P3b",
                    "E(IL-2 + IFN-alpha) - E(IFN-alpha alone)",
                    "diff",
                    "effect",
                    ("atz_il2_ifna", "atz_ifna"),
                ),
                Comparison(
                    "P3c",
                    "Bliss excess: E(both) - [E(IL-2) + E(IFN) - E(IL-2) E(IFN)]",
                    "bliss",
                    "effect",
                    ("atz_il2_ifna", "atz_il2", "atz_ifna"),
                    expect="bliss",
                ),
            ),
        ),
        Pattern(
            "P4",
            "Adding a cytotoxic drug improves the response; the schedule matters",
            "5-FU added to the cytokines removes more burden; given inside an IL-2 pulse (when lymphocytes "
            "divide) it removes less than given before it",
            (UNTREATED, "atz_il2_ifna", "atz_5fu_before", "atz_5fu_during"),
            (
                Comparison(
                    "P4a",
                    "E(cytokines + 5-FU before the pulses) - E(cytokines)",
                    "diff",
                    "effect",
                    ("atz_5fu_before", "atz_il2_ifna"),
                ),
                Comparison(
                    "P4b",
                    "E(5-FU before the IL-2 pulses) - E(5-FU inside them)",
                    "diff",
                    "effect",
                    ("atz_5fu_before", "atz_5fu_during"),
                ),
            ),
        ),
        Pattern(
            "P5",
            "LAK cells with IL-2 beat IL-2 alone",
            "LAK transfer with high-dose IL-2 removes more burden than the same IL-2 alone",
            (UNTREATED, "hd_il2", "lak_il2"),
            (Comparison("P5a", "E(LAK + IL-2) - E(IL-2 alone)", "diff", "effect", ("lak_il2", "hd_il2")),),
        ),
        Pattern(
            "P6",
            "IL-2 alone works only at doses that make effectors run away; a combination works at modest doses",
            "IL-2 at 0.1x falls short of 1x, the high dose raises the peak CTL count, and LAK + IL-2 at 0.1x "
            "beats IL-2 alone at 0.1x",
            (UNTREATED, "hd_il2_x0.1", "hd_il2", "lak_il2_x0.1"),
            (
                Comparison(
                    "P6a",
                    "E(IL-2 1x) - E(IL-2 0.1x)",
                    "diff",
                    "effect",
                    ("hd_il2", "hd_il2_x0.1"),
                ),
                Comparison(
                    "P6b",
                    "peak CTL count, IL-2 1x / 0.1x",
                    "log_ratio",
                    "max_n_ctl",
                    ("hd_il2", "hd_il2_x0.1"),
                ),
                Comparison(
                    "P6c",
                    "E(LAK + IL-2 0.1x) - E(IL-2 0.1x)",
                    "diff",
                    "effect",
                    ("lak_il2_x0.1", "hd_il2_x0.1"),
                ),
            ),
        ),
    )
}


def select(keys: str | None) -> list[Pattern]:
    """The patterns named in a comma-separated list (``"P1,P3"``; case-insensitive); all of them for None.

    Raises ``ValueError`` naming the unknown keys and the valid ones."""
    if keys is None:
        return list(PATTERNS.values())
    want = [k.strip().upper() for k in keys.split(",") if k.strip()]
    bad = [k for k in want if k not in PATTERNS]
    if bad or not want:
        raise ValueError(
            f"unknown pattern{'s' * (len(bad) > 1)} {', '.join(bad) or repr(keys)}; choose from {', '.join(PATTERNS)}"
        )
    return [PATTERNS[k] for k in dict.fromkeys(want)]


def arms_of(patterns: list[Pattern]) -> list[str]:
    """Every arm the patterns need (the untreated one first), each once."""
    out = [UNTREATED]
    for p in patterns:
        for a in p.arms:
            if a not in out:
                out.append(a)
    return out
