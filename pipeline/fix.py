"""The one fix flow: probe a video within the limits, measure, decide, write, verify, report.

:func:`fix_events` yields what :func:`pipeline.sync.sync_video` yields (every iteration, then the
decision) and ends with a :class:`FixDone` (the written file, applied and verified shift, the report).
``python -m pipeline fix`` and every batch task run it to the end through :func:`fix_video`; the app turns
its events into widgets; ``--apply-ms`` and the app's manual shift are its ``apply_ms``. ``detect`` runs
:func:`measure`. All of them select the engines the same way (:func:`measure_events`), so the cross-check
of ``auto`` is never kept on one path and lost on another.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .analysis import Analysis
from .errors import UserError
from .media import MediaInfo
from .sync import IterationEvent, ProgressFn, SyncOptions, SyncResult, sync_video
from .timeline import Drift
from .warp import AudioWarp, WarpStep

log = logging.getLogger(__name__)

#: How close the window-by-window check of a changing lag's correction must come to the plan (envelopes
#: resolve about a millisecond; a resampled window moves a few ms within itself).
VERIFY_ALONG_MS = 5.0

#: A measuring step: (path, options, probed facts, progress, analysis=None) -> the events of ``sync_video``.
#: The app passes its GPU-scheduled wrapper of :func:`measure_events`; everything else uses it directly.
MeasureFn = Callable[..., Iterator[IterationEvent | SyncResult]]


@dataclass(frozen=True)
class FixDone:
    """The end of :func:`fix_events`: what was written (if anything) and the report."""

    report: dict  #: the ``detect`` fields plus ``output``, ``applied_shift_ms``, ``verified_shift_ms``
    result: SyncResult | None  #: None when a known shift was applied without measuring
    output: Path | None
    applied_shift_ms: float
    verified_shift_ms: float | None


def measure_events(path: Path, opts: SyncOptions, info: MediaInfo | None = None,
                   progress: ProgressFn | None = None,
                   analysis: Analysis | None = None) -> Iterator[IterationEvent | SyncResult]:
    """``sync_video`` with the engines the options ask for (``auto``: SyncNet and its cca cross-check, or cca).

    ``analysis``: the video's faces, already found (re-measuring a written copy, whose video is the input's
    packet for packet): nothing is decoded or detected again."""
    yield from sync_video(path, None, opts, info=info, progress=progress, analysis=analysis)


def _progress_bar(enabled: bool):
    """A tqdm bar on stderr driven by the generator's (stage, fraction) progress calls."""
    if not enabled:
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=100, file=sys.stderr, leave=False, bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}")

    def update(stage: str, frac: float) -> None:
        bar.set_description_str(stage)
        bar.n = int(frac * 100)
        bar.refresh()

    return bar, update


def _drain(make: Callable[[ProgressFn | None], Iterator], progress: bool) -> object:
    """Run the event stream ``make(progress_fn)`` to its last item, with a progress bar on stderr when asked."""
    bar, update = _progress_bar(progress)
    last = None
    try:
        for ev in make(update):
            if isinstance(ev, IterationEvent):
                log.info("iteration %d: lag %+.1f ms (residual %+.1f), confidence %.3f", ev.iteration,
                         ev.audio_lag_ms, ev.residual_ms, ev.confidence)
            last = ev
    finally:
        if bar is not None:
            bar.close()
    return last


def measure(path: Path, opts: SyncOptions, progress: bool = False, info: MediaInfo | None = None) -> SyncResult:
    """``detect``: measure and decide, nothing written."""
    result = _drain(lambda update: measure_events(path, opts, info, update), progress)
    assert isinstance(result, SyncResult)
    return result


def checked_input(video: str | Path, max_duration_s: float | None = None,
                  max_size_mb: float | None = None) -> tuple[Path, MediaInfo]:
    """The input path and its facts, probed once and within the limits (UserError/MediaError otherwise)."""
    from .media import check_limits, probe

    path = _input(str(video))
    info = probe(path)
    max_bytes = int(max_size_mb * 1e6) if max_size_mb is not None else None
    check_limits(info, max_duration_s, max_bytes)
    return path, info


def _input(video: str) -> Path:
    p = Path(video)
    if not p.exists():
        raise UserError(f"{video}: no such file")
    if p.is_dir():
        raise UserError(f"{video}: is a folder, not a video file")
    return p


def manual_report(info: MediaInfo, apply_ms: float) -> dict:
    """The report of a known shift applied without measuring (``--apply-ms``, the app's manual shift)."""
    return {"audio_lag_ms": apply_ms, "confidence": None, "p_correct": None, "decision": "shift",
            "reason": f"applied as requested: remove {apply_ms:+.1f} ms (--apply-ms)",
            "engine": "manual", "engine_reason": "--apply-ms given: nothing measured",
            "fps": info.video.fps if info.video else None, "duration_s": info.duration_s, "tracks": [],
            "iterations": [], "input": info.to_dict()}


def warp_from_drift(drift: Drift) -> AudioWarp:
    """The correction that removes what :func:`pipeline.timeline.fit_drift` found: the line's lag at t = 0 and
    its slope, or the lag before the first step and each step's change."""
    if drift.kind not in ("linear", "steps"):
        raise ValueError(f"no warp for a drift of kind {drift.kind!r}")
    at_zero = drift.start_lag_ms - drift.ms_per_minute * (drift.start_s or 0.0) / 60.0
    return AudioWarp(at_zero, drift.ms_per_minute,
                     steps=tuple(WarpStep(s.at_s, s.after_ms - s.before_ms, s.earliest_s, s.latest_s)
                                      for s in drift.steps))


def _verify_along(path: Path, written: Path, warp: AudioWarp) -> dict:
    """The written audio against the input, window by window: moved as the warp says, at every time? Each
    window's reading is held to the plan averaged as that reading averages (:meth:`WindowShift.expected`)."""
    from .verify import windows_along

    found = windows_along(path, written)
    planned = [w.expected(warp.lag_at) for w in found]
    errors = [abs(w.shift_ms - p) for w, p in zip(found, planned)]
    return {"windows": [{"at_s": round(w.at_s, 3), "shift_ms": round(w.shift_ms, 3), "planned_ms": round(p, 3)}
                        for w, p in zip(found, planned)],
            "max_error_ms": round(max(errors), 3) if errors else None}


def _verified_timeline(result: SyncResult, tolerance_ms: float) -> tuple[list[dict], str]:
    """The written file's own timeline (read from the lips again) and what it says, in words."""
    segs = [s for s in result.timeline if s.audio_lag_ms is not None]
    inside = [s for s in segs if abs(s.audio_lag_ms) <= tolerance_ms]
    if not segs:
        words = "no segment of the written file could be read confidently, so the correction is not verified"
    elif len(inside) == len(segs):
        words = f"verified: all {len(segs)} confident segments of the written file are within +/-{tolerance_ms:.0f} ms"
    else:
        worst = max(segs, key=lambda s: abs(s.audio_lag_ms))
        words = (f"{len(inside)} of {len(segs)} confident segments of the written file are within "
                 f"+/-{tolerance_ms:.0f} ms; the worst reads {worst.audio_lag_ms:+.0f} ms at "
                 f"{worst.start_s:.0f}-{worst.end_s:.0f} s")
    return [s.to_dict() for s in result.timeline], words


def fix_events(path: Path, out: Path, opts: SyncOptions | None, *, info: MediaInfo, apply_ms: float | None = None,
               drift_ms_per_min: float | None = None, force: bool = False, curves: bool = True,
               progress: ProgressFn | None = None,
               measure_fn: MeasureFn = measure_events) -> Iterator[IterationEvent | SyncResult | FixDone]:
    """Measure (unless ``apply_ms`` is given), decide, and write the corrected copy to ``out`` when it shifts.

    Yields every iteration and the decision as ``sync_video`` does, then one :class:`FixDone`. Only a
    "shift" writes (or, with ``force``, an uncertain reading). The written file is decoded again and its
    shift measured against the input. A lag that changes along the clip (the result's ``drift``, unless
    ``opts.drift`` is off; or ``apply_ms`` with ``drift_ms_per_min``) is removed along the clip
    (:mod:`pipeline.warp`); then the shift is checked window by window (``verified_drift``) and the written
    file's timeline is read again from the lips (``verified_timeline``). Raises :class:`UserError` for an
    output that would replace the input or change its container.
    """
    from .correct import write_shifted
    from .verify import measure_shift

    if out.resolve() == path.resolve():
        raise UserError("the output must not be the input file: choose another -o")
    if out.suffix.lower() != path.suffix.lower():
        raise UserError(f"the output keeps the input's container: use a {path.suffix} name for -o")
    stage = progress or (lambda name, frac: None)
    result: SyncResult | None = None
    warp: AudioWarp | None = None
    if drift_ms_per_min is not None and apply_ms is None:
        raise UserError("--drift-ms-per-min needs --apply-ms (the lag at the start of the clip)")
    if apply_ms is not None:
        summary = manual_report(info, apply_ms)
        lag: float | None = apply_ms
        if drift_ms_per_min:
            warp = AudioWarp(apply_ms, float(drift_ms_per_min))
            summary["reason"] = (f"applied as requested: remove {apply_ms:+.1f} ms at the start, drifting "
                                 f"{drift_ms_per_min:+.1f} ms per minute (--apply-ms, --drift-ms-per-min)")
    else:
        assert opts is not None, "options are needed to measure"
        for ev in measure_fn(path, opts, info, progress):
            yield ev
            if isinstance(ev, SyncResult):
                result = ev
        assert result is not None
        summary = result.to_report(curves=curves)
        lag = result.audio_lag_ms
        if result.decision == "uncertain" and force and result.measured_lag_ms is not None:
            lag = result.measured_lag_ms
            summary["reason"] += f"; applied anyway (--force): {lag:+.1f} ms"
        elif result.decision != "shift":
            lag = None
        drift = result.drift
        if lag is not None and opts.drift and drift is not None and drift.kind != "none":
            warp = warp_from_drift(drift)
    summary.update(output=None, applied_shift_ms=0.0, verified_shift_ms=None, applied_drift=None,
                   verified_drift=None, verified_timeline=None)
    if lag is None:
        yield FixDone(summary, result, None, 0.0, None)
        return
    stage("writing", 0.0)
    written = write_shifted(path, out, warp if warp is not None else lag)
    stage("verifying", 0.0)
    if warp is None:
        # the input's audio as the analysis read it (the same call, the same samples), when there was one
        known = result.analysis.audio if result is not None and result.analysis is not None else None
        verified = measure_shift(path, written.output, original_audio=known)
    else:  # the constant part, as verified window by window once the planned change is taken off
        along = _verify_along(path, written.output, warp)
        parts = [w["shift_ms"] - (w["planned_ms"] - warp.lag_ms) for w in along["windows"]]
        verified = float(np.median(parts)) if parts else float("nan")
    summary.update(output=str(written.output), applied_shift_ms=round(written.applied_shift_ms, 3),
                   verified_shift_ms=round(verified, 3) if np.isfinite(verified) else None)
    if warp is not None:
        summary["applied_drift"] = {**warp.to_dict(), "edits": (written.drift or {}).get("steps", [])}
        summary["verified_drift"] = along
        if opts is not None and opts.segment_s and result is not None and result.analysis is not None:
            from syncnet.media import load_audio

            stage("verifying", 0.5)
            # the written video is the input's, packet for packet: its faces are the ones already found, so
            # only the new soundtrack is read
            again = replace(result.analysis, audio=load_audio(written.output))
            check = None
            for ev in measure_fn(written.output, replace(opts, drift=False), None, None, analysis=again):
                if isinstance(ev, SyncResult):
                    check = ev
            if check is not None:
                summary["verified_timeline"], words = _verified_timeline(check, opts.tolerance_ms)
                summary["reason"] += f"; {words}"
        log.info("changing lag removed: %s", summary["verified_drift"])
    if not abs(verified - written.applied_shift_ms) <= (1.0 if warp is None else VERIFY_ALONG_MS):
        log.warning("the written file measures %+.2f ms against the input, expected %+.2f ms", verified,
                    written.applied_shift_ms)
    yield FixDone(summary, result, written.output, written.applied_shift_ms, verified)


def fix_video(path: str | Path, out: str | Path | None = None, opts: SyncOptions | None = None, *,
              info: MediaInfo | None = None, apply_ms: float | None = None, drift_ms_per_min: float | None = None,
              force: bool = False, curves: bool = True, progress: bool = False, max_duration_s: float | None = None,
              max_size_mb: float | None = None) -> dict:
    """:func:`fix_events` run to the end; returns its report (``fix``'s JSON).

    This is the whole of ``fix``: the command and every batch task run exactly this, so a batch and ``fix``
    one by one give the same results. ``out`` defaults to ``NAME.synced.EXT`` beside the input (never
    overwriting anything); ``info`` is probed (within the limits) when not given; ``opts`` defaults to
    :class:`SyncOptions` () unless ``apply_ms`` skips measuring.
    """
    from .correct import default_output_path

    if info is None:
        path, info = checked_input(path, max_duration_s, max_size_mb)
    path = Path(path)
    out = Path(out) if out is not None else default_output_path(path)
    if opts is None and apply_ms is None:
        opts = SyncOptions()
    done = _drain(lambda update: fix_events(path, out, opts, info=info, apply_ms=apply_ms,
                                            drift_ms_per_min=drift_ms_per_min, force=force, curves=curves,
                                            progress=update), progress)
    assert isinstance(done, FixDone)
    return done.report
