"""Hard inputs work and hostile ones are refused with one clear sentence (exit code 2), from tests/matrix.py."""

from __future__ import annotations

import pytest
from matrix import CASES, CORRUPT, run_case


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_input_matrix(case, fixtures_dir, tmp_path):
    outcome = run_case(case, fixtures_dir, tmp_path)
    if case.accept:
        assert outcome.rc == 0, outcome.stderr
        rep = outcome.report
        assert rep["decision"] in ("shift", "in_sync"), rep["reason"]
        assert rep["audio_lag_ms"] == pytest.approx(case.lag_ms, abs=20.0)
        if case.check:
            case.check(rep)
    else:
        assert outcome.rc == 2, (outcome.rc, outcome.stderr)
        assert case.message in outcome.stderr
        assert len(outcome.stderr.splitlines()) == 1 and "Traceback" not in outcome.stderr


def test_corrupt_stream_never_crashes(fixtures_dir, tmp_path):
    outcome = run_case(CORRUPT, fixtures_dir, tmp_path)
    assert outcome.rc in (0, 2), outcome.stderr
    if outcome.rc == 2:
        assert len(outcome.stderr.splitlines()) == 1
    else:
        assert outcome.report["decision"] in ("shift", "in_sync", "uncertain")
