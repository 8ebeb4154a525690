"""Cohorts (abm.trial.cohort): documented distributions, draws per patient and parameter from one seed, the
Gaussian copula, truncation, relative parameters, validation that names the file and key."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from abm.errors import ParameterError
from abm.params.core import Layer, build
from abm.trial.cohort import CohortDoc, CohortSpec, ParamDist, check_cohort, draw, load_cohort, patient_seed

SRC = "estimate: test"


def cohort(params: dict, correlations: list | None = None) -> CohortSpec:
    return CohortSpec.model_validate(
        {"parameters": {k: {"source": SRC, **v} for k, v in params.items()}, "correlations": correlations or []}
    )


def values(c: CohortSpec, n: int, seed: int = 1) -> dict[str, np.ndarray]:
    ps = draw(c, n, seed)
    return {k: np.array([p.values[k] for p in ps]) for k in c.keys}


# ------------------------------------------------------------------------------------------------ the draws
def test_a_patient_is_the_same_whatever_the_cohort_size():
    c = load_cohort("default")
    small, big = draw(c, 5, 11), draw(c, 40, 11)
    assert [p.values for p in small] == [p.values for p in big[:5]]
    assert [p.seed for p in small] == [p.seed for p in big[:5]]
    assert draw(c, 3, 11, start=2)[0].values == big[2].values
    assert draw(c, 5, 12)[0].values != small[0].values
    assert len({p.seed for p in big}) == 40
    assert big[7].seed == patient_seed(11, 7)


def test_adding_an_uncorrelated_parameter_leaves_the_others_alone():
    a = cohort({"patient.antigenicity": {"dist": "lognormal", "median": 1.0, "cv": 0.5}})
    b = cohort(
        {
            "patient.antigenicity": {"dist": "lognormal", "median": 1.0, "cv": 0.5},
            "patient.mhc_baseline": {"dist": "logitnormal", "median": 0.3, "sd": 0.8},
        }
    )
    np.testing.assert_array_equal(values(a, 30)["patient.antigenicity"], values(b, 30)["patient.antigenicity"])


def test_a_changed_marginal_keeps_every_patient_at_the_same_quantile():
    a = cohort({"patient.antigenicity": {"dist": "lognormal", "median": 1.0, "cv": 0.5}})
    b = cohort({"patient.antigenicity": {"dist": "lognormal", "median": 2.0, "cv": 0.5}})
    np.testing.assert_allclose(values(b, 50)["patient.antigenicity"], 2 * values(a, 50)["patient.antigenicity"])


@pytest.mark.parametrize(
    "spec, ref",
    [
        ({"dist": "lognormal", "median": 2.0, "cv": 0.5}, stats.lognorm(s=math.sqrt(math.log1p(0.25)), scale=2.0)),
        ({"dist": "normal", "mean": 1.8, "sd": 0.2}, stats.norm(1.8, 0.2)),
        ({"dist": "uniform", "low": 0.1, "high": 0.4}, stats.uniform(0.1, 0.3)),
    ],
)
def test_marginals_follow_their_distribution(spec, ref):
    x = values(cohort({"patient.antigenicity": spec}), 3000, seed=5)["patient.antigenicity"]
    assert stats.kstest(x, ref.cdf).pvalue > 1e-3
    # and a wrong one is rejected (the test can fail)
    assert stats.kstest(x * 1.2, ref.cdf).pvalue < 1e-3


def test_truncation_holds_and_renormalises():
    d = {"dist": "lognormal", "median": 1.0, "cv": 1.0, "low": 0.5, "high": 3.0}
    x = values(cohort({"patient.antigenicity": d}), 3000, seed=2)["patient.antigenicity"]
    assert x.min() >= 0.5 and x.max() <= 3.0
    base = stats.lognorm(s=math.sqrt(math.log(2.0)), scale=1.0)
    lo, hi = base.cdf(0.5), base.cdf(3.0)
    assert stats.kstest(x, lambda v: (base.cdf(v) - lo) / (hi - lo)).pvalue > 1e-3


@pytest.mark.parametrize(
    "spec",
    [
        {"dist": "lognormal", "median": 1.0, "cv": 0.6, "low": 0.05, "high": 4.0},
        {"dist": "normal", "mean": 1.8, "sd": 0.2, "low": 1.5},
        {"dist": "logitnormal", "median": 0.3, "sd": 0.8},
        {"dist": "logitnormal", "median": 2.0, "sd": 0.5, "low": 1.0, "high": 4.0},
        {"dist": "uniform", "low": 0.1, "high": 0.4},
    ],
)
def test_densities_integrate_to_one_and_match_the_draws(spec):
    d = ParamDist.model_validate({"source": SRC, **spec})
    lo, hi = d.support
    lo, hi = max(lo, d.ppf(np.array([1e-9]))[0]), min(hi, d.ppf(np.array([1 - 1e-9]))[0])
    x = np.linspace(lo, hi, 200001)[1:-1]
    pdf = np.exp(d.logpdf(x))
    cdf = integrate.cumulative_trapezoid(pdf, x, initial=0.0)
    assert cdf[-1] == pytest.approx(1.0, abs=2e-3)
    # the quantile function inverts the density's CDF
    for u in (0.1, 0.5, 0.9):
        assert np.interp(d.ppf(np.array([u]))[0], x, cdf) == pytest.approx(u, abs=2e-3)


def test_gaussian_copula_gives_the_rank_correlation():
    c = cohort(
        {
            "patient.weight_kg": {"dist": "lognormal", "median": 78.0, "cv": 0.2},
            "patient.surface_area_m2": {"dist": "normal", "mean": 1.79, "sd": 0.2},
        },
        [{"a": "patient.weight_kg", "b": "patient.surface_area_m2", "rho": 0.9, "source": SRC}],
    )
    v = values(c, 4000, seed=3)
    rho_s = stats.spearmanr(v["patient.weight_kg"], v["patient.surface_area_m2"]).statistic
    assert rho_s == pytest.approx(6 / math.pi * math.asin(0.45), abs=0.02)  # Spearman of a Gaussian copula


def test_relative_parameter_multiplies_its_reference():
    c = load_cohort("default")
    v = values(c, 500, seed=9)
    ratio = v["patient.toxicity_dlt_threshold"] / v["patient.toxicity_hold_threshold"]
    assert ratio.min() >= 1.0 and ratio.max() <= 4.0
    assert np.median(ratio) == pytest.approx(2.0, rel=0.05)


def test_the_default_cohort_is_the_patient_group_with_sources():
    from abm.params.patient import PatientParams

    c = load_cohort("default")
    assert {k.removeprefix("patient.") for k in c.keys} == set(PatientParams.model_fields)
    assert all(c.parameters[k].source for k in c.keys)
    centre = c.centre()  # the cohort's typical patient is the default patient
    for k, v in PatientParams().model_dump().items():
        assert centre[f"patient.{k}"] == pytest.approx(v, rel=0.15), k


def test_the_default_cohort_is_accepted_by_every_trial_arm():
    import abm

    c = load_cohort("default")
    for name in ("high_dose_il2", "lak_il2", "il2_ci", "ifna_negrier", "il2_ifna_ci"):
        check_cohort(c, abm.Scenario.load(name), "default.toml")


def test_the_shipped_fitted_cohort_is_the_default_with_the_fitted_medians():
    """scenarios/trials/cohorts/atkins1999_fitted.toml (docs/validation.md, "Virtual trials"): the default cohort
    with the two medians abm calibrate fitted to the Atkins trial, and the fit's record; every arm accepts it."""
    import abm

    d, f = load_cohort("default"), load_cohort("atkins1999_fitted")
    fitted = {"patient.antigenicity": 0.0113, "patient.nk_recruitment_scale": 0.415}
    assert set(f.keys) == set(d.keys)
    for k in d.keys:
        a, b = (
            d.parameters[k].model_dump(exclude={"source", "median"}),
            f.parameters[k].model_dump(exclude={"source", "median"}),
        )
        assert a == b, k
        if k in fitted:
            assert f.parameters[k].median == pytest.approx(fitted[k], rel=0.01)
            assert "fitted by abm calibrate" in f.parameters[k].source
        else:
            assert f.parameters[k].median == d.parameters[k].median, k
    assert f.fit["trial"] == "atkins1999_hd_il2" and f.fit["pool"] == 100
    for name in ("high_dose_il2", "lak_il2", "il2_ci", "ifna_negrier", "il2_ifna_ci"):
        check_cohort(f, abm.Scenario.load(name), "atkins1999_fitted.toml")


# ------------------------------------------------------------------------------------------------ errors
def _build(data: dict):
    return build(CohortDoc, [Layer("c.toml", {"cohort": data})], "c.toml")


def test_errors_name_the_file_and_the_key():
    with pytest.raises(ParameterError, match=r"c\.toml: key 'cohort.parameters.x'.*source is required"):
        _build({"parameters": {"x": {"dist": "lognormal", "median": 1.0, "cv": 0.5}}})
    with pytest.raises(ParameterError, match=r"key 'cohort.parameters.x'.*'normal' takes.*median does not apply"):
        _build({"parameters": {"x": {"dist": "normal", "mean": 1, "sd": 1, "median": 1, "source": SRC}}})
    with pytest.raises(ParameterError, match=r"'lognormal' needs cv"):
        _build({"parameters": {"x": {"dist": "lognormal", "median": 1.0, "source": SRC}}})
    with pytest.raises(ParameterError, match=r"c\.toml: unknown key 'cohort.parameters.x.mediam'"):
        _build({"parameters": {"x": {"dist": "lognormal", "mediam": 1.0, "cv": 1, "source": SRC}}})
    with pytest.raises(ParameterError, match=r"key 'cohort.parameters.x.dist': invalid choice"):
        _build({"parameters": {"x": {"dist": "gamma", "source": SRC}}})


def test_inconsistent_correlations_and_references_are_refused():
    p = {k: {"dist": "normal", "mean": 0, "sd": 1, "source": SRC} for k in ("a", "b", "c")}
    bad = [
        {"a": "a", "b": "b", "rho": 0.95, "source": SRC},
        {"a": "a", "b": "c", "rho": 0.95, "source": SRC},
        {"a": "b", "b": "c", "rho": -0.95, "source": SRC},
    ]
    with pytest.raises(ParameterError, match="positive-definite"):
        _build({"parameters": p, "correlations": bad})
    with pytest.raises(ParameterError, match="'d' is not a cohort parameter"):
        _build({"parameters": p, "correlations": [{"a": "a", "b": "d", "rho": 0.5, "source": SRC}]})
    with pytest.raises(ParameterError, match="relative_to = 'z' is not a cohort parameter"):
        _build({"parameters": {"a": {**p["a"], "relative_to": "z"}}})


def test_a_cohort_outside_the_scenario_range_is_refused_before_any_run():
    import abm

    c = cohort({"patient.mhc_baseline": {"dist": "uniform", "low": 0.2, "high": 1.5}})
    with pytest.raises(ParameterError, match=r"c\.toml: key 'cohort.parameters.\"patient.mhc_baseline\"'.*1\.5"):
        check_cohort(c, abm.Scenario.load("high_dose_il2"), "c.toml")
    c = cohort({"patient.no_such_thing": {"dist": "uniform", "low": 0.2, "high": 0.5}})
    with pytest.raises(ParameterError, match="unknown key 'patient.no_such_thing'"):
        check_cohort(c, abm.Scenario.load("high_dose_il2"), "c.toml")


def test_a_cohort_round_trips_through_its_toml(tmp_path):
    c = load_cohort("default")
    c = CohortSpec.model_validate({**c.model_dump(), "fit": {"pool": 12, "theta": [0.5, 1.2], "note": 'a "q"'}})
    p = tmp_path / "fitted.toml"
    p.write_text(c.to_toml())
    back = load_cohort(p)
    assert back.model_dump() == c.model_dump()
    assert [x.values for x in draw(back, 4, 3)] == [x.values for x in draw(c, 4, 3)]
