"""The outcome of a measurement or a fix in one sentence, from the report alone.

The app's status line and the plot's title both start from :func:`headline`, so the two cannot say
different things, and both say what the JSON report says (its ``decision``, ``audio_lag_ms``, ``reason``,
``engine``, and for a fix whether a file was written).
"""

from __future__ import annotations

from collections.abc import Mapping


def _side(lag_ms: float) -> str:
    return "after" if lag_ms > 0 else "before"


def headline(report: Mapping, wrote: bool | None = None) -> str:
    """The outcome in one sentence. ``wrote``: None for a measurement only (``detect``); for a fix, whether a
    corrected file was written."""
    decision = report.get("decision")
    lag = report.get("audio_lag_ms")
    if report.get("engine") == "manual":
        moved = float(report.get("applied_shift_ms", lag) or 0.0)
        return (f"Applied the manual shift: the audio moved {abs(moved):.1f} ms "
                f"{'earlier' if moved > 0 else 'later'}, nothing was measured.")
    if decision == "in_sync":
        return f"In sync: the sound is {lag:+.1f} ms from the lips, within the tolerance."
    if decision == "uncertain" or lag is None:
        return f"Could not decide: {report.get('reason') or 'no reading'}."
    if wrote is None:
        return f"Out of sync: the sound comes {abs(lag):.1f} ms {_side(lag)} the lips."
    if not wrote:
        return f"Out of sync: the sound comes {abs(lag):.1f} ms {_side(lag)} the lips; no file was written."
    if report.get("applied_drift"):
        return "Out of sync, and the lag changes along the clip: corrected along it."
    return (f"Out of sync: the sound came {abs(lag):.1f} ms {_side(lag)} the lips; the audio was moved "
            f"{'earlier' if lag > 0 else 'later'} by that much.")


def error_headline(message: str) -> str:
    """The words for a refused or failed job (the library's own message)."""
    return f"Error: {message}"
