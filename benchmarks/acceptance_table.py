"""Print the README's "What it accepts and what it refuses" table, by running the test matrix.

Each row is a case from ``tests/matrix.py`` (the same cases ``tests/test_inputs.py`` asserts), built from
the shared clips and run through ``python -m pipeline detect --engine cca``.

    python benchmarks/acceptance_table.py > /tmp/table.md
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from clips import FIXTURES  # noqa: E402
from matrix import CASES, CORRUPT, run_case  # noqa: E402


def row(case, outcome) -> str:
    if outcome.rc == 0:
        rep = outcome.report
        lag = "n/a" if rep["audio_lag_ms"] is None else f"{rep['audio_lag_ms']:+.1f} ms"
        extra = f"; warning: {rep['warnings'][0]}" if rep.get("warnings") else ""
        outcome_word = "works" if rep["decision"] != "uncertain" else "read, no decision"
        return f"| {case.name} | {outcome_word} | {rep['decision']}, {lag}{extra} |"
    return f"| {case.name} | refused (exit {outcome.rc}) | {outcome.stderr.removeprefix('error: ')} |"


def main() -> None:
    print("| input | outcome | what `detect --engine cca` says (example.avi's true lag: about -120 ms) |")
    print("|---|---|---|")
    for case in [*CASES, CORRUPT]:
        with tempfile.TemporaryDirectory() as tmp:
            print(row(case, run_case(case, FIXTURES, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
