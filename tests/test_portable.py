"""The same seed gives the same trajectory on every CPU (abm.kernels.portable): numpy's CPU-dispatched SIMD loops must
not reach a simulation's state.

On an AVX-512 machine numpy's float64 exp/log differ from the C library in the last bit for about 5% of arguments;
before abm.kernels.portable, all nine treated golden cases took another path there than on an AVX2 machine. The
subprocess test below runs a treated case with numpy's dispatched loops on and off (NPY_DISABLE_CPU_FEATURES) and
compares the fingerprints; on a CPU with nothing to dispatch beyond numpy's baseline both runs use the same loops.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from abm.kernels import portable as pm

ROOT = Path(__file__).resolve().parents[1]


def test_portable_functions_are_the_c_library_elementwise():
    rng = np.random.default_rng(7)
    x = np.concatenate([np.linspace(-745.0, 709.0, 20001), rng.normal(0, 30, 20000), [0.0, -0.0, -np.inf, 1e-300]])
    for f, ref in ((pm.exp, math.exp), (pm.expm1, math.expm1), (pm.cos, math.cos), (pm.sin, math.sin)):
        vals = x[np.isfinite(x)] if f in (pm.cos, pm.sin) else x
        want = np.array([ref(v) for v in vals])
        assert np.array_equal(f(vals), want), f.__name__
    pos = np.abs(x[np.isfinite(x)]) + 1e-12
    assert np.array_equal(pm.log(pos), np.array([math.log(v) for v in pos]))
    assert np.isneginf(pm.log(0.0)) and math.isnan(pm.log(-1.0))
    assert isinstance(pm.exp(1.0), float) and pm.exp(np.ones((2, 3))).shape == (2, 3)


def test_cholesky_and_product_match_numpy_to_rounding_and_refuse_indefinite():
    a = np.array([[1.0, 0.9, 0.1], [0.9, 1.0, 0.2], [0.1, 0.2, 1.0]])
    lo = pm.cholesky(a)
    np.testing.assert_allclose(lo, np.linalg.cholesky(a), rtol=1e-14, atol=1e-15)
    z = np.random.default_rng(1).normal(size=(50, 3))
    np.testing.assert_allclose(pm.matmul_t(z, lo), z @ lo.T, rtol=1e-13, atol=1e-14)
    with pytest.raises(np.linalg.LinAlgError):
        pm.cholesky(np.array([[1.0, 2.0], [2.0, 1.0]]))


_CHILD = """
import json, sys
sys.path.insert(0, {root!r})
from tests.golden import CASES, fingerprint
case = [c for c in CASES if c[0] == "high_dose_il2"][0]
print(json.dumps(fingerprint(case), sort_keys=True))
"""


def _dispatched_features() -> list[str]:
    from numpy._core import _multiarray_umath as m

    return [f for f in m.__cpu_dispatch__ if m.__cpu_features__.get(f)]


@pytest.mark.slow  # numpy's SIMD dispatch off in a subprocess (15 s); the golden file runs on every CPU
def test_numpy_simd_dispatch_does_not_change_a_trajectory():
    """The high-dose IL-2 golden case (cohort-free; plasma PK, toxicity, caliper) in two processes: numpy's
    dispatched loops on, and all of them off. The fingerprints (every observable, the fields, the cells, the file)
    must be equal."""
    code = _CHILD.format(root=str(ROOT))

    def run(env_extra):
        env = {k: v for k, v in os.environ.items() if k != "NPY_DISABLE_CPU_FEATURES"}
        env.update({"NUMBA_NUM_THREADS": "1", **env_extra})
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    features = _dispatched_features()
    on = run({})
    off = run({"NPY_DISABLE_CPU_FEATURES": " ".join(features)} if features else {})
    diffs = [k for k in on if on[k] != off.get(k)]
    assert not diffs, f"numpy's {features} loops changed {diffs[:10]}"


def test_cohort_draws_do_not_depend_on_numpy_simd_or_blas():
    """Correlated lognormal patients (weight and body-surface area, rho 0.9) drawn with numpy's dispatched loops
    on and off: the same values, bit for bit."""
    code = (
        f"import sys, json; sys.path.insert(0, {str(ROOT)!r})\n"
        "from abm.trial.cohort import draw, load_cohort\n"
        "ps = draw(load_cohort('default'), 40, 12345)\n"
        "print(json.dumps([[p.seed, sorted((k, v.hex()) for k, v in p.values.items())] for p in ps]))\n"
    )
    outs = []
    features = _dispatched_features()
    for extra in ({}, {"NPY_DISABLE_CPU_FEATURES": " ".join(features)} if features else {}):
        env = {k: v for k, v in os.environ.items() if k != "NPY_DISABLE_CPU_FEATURES"} | extra
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        outs.append(r.stdout.strip().splitlines()[-1])
    assert outs[0] == outs[1]
