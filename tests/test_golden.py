"""Golden trajectories: every shipped scenario reproduces its recorded fingerprint bit for bit (tests/golden.py)."""

from __future__ import annotations

import pytest

from tests.golden import CASES, compare, fingerprint, load_golden


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_golden_trajectory(case):
    expected = load_golden()[case[0]]
    diffs = compare(expected, fingerprint(case))
    assert not diffs, f"{case[0]} differs from its golden trajectory:\n" + "\n".join(diffs[:30])
