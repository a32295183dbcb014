"""The iterate-shift-verify generator: ``sync_video`` yields every iteration, then the decision.

Faces are found and embeddings computed once (:func:`pipeline.analysis.analyse`, ``engine.prepare``);
each iteration moves the audio in memory by the lag found so far and re-scores it, so the residual should
fall to about zero, and a minimum at the edge of the searched range widens the search (up to +/-2 s, or
the ``search_ms`` asked for, up to +/-10 s; the weight-free engine always searches at least +/-3 s). With a
second engine, a confident reading of it beyond the first engine's window re-centres the first there.
Then a careful editor's decision: confident and within tolerance = "in_sync", confident and beyond it =
"shift", anything else = "uncertain" with the reason. "In sync" is never said of something not measured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .analysis import MIN_TRACK_FRAMES, Analysis, FaceTrack, analyse, scorable, speech_frames
from .cca import REBALANCE_OVERLAP
from .engines import ENGINES, EngineChoice, select_engines
from .errors import UserError
from .estimates import Engine, Estimate
from .media import GRID_FPS, MediaInfo
from .timeline import DEFAULT_SEGMENT_S, MIN_SEGMENT_S, Drift, Segment, fit_drift, locate_steps, measure_timeline

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE_MS = 20.0
DEFAULT_SEARCH_MS = 600.0  #: SyncNet's +/-15 frames
MAX_SEARCH_MS = 2000.0  #: how far an edge widens the search on its own
#: The widest search a user may ask for (``--search-ms``, the app's field), for every engine.
MAX_USER_SEARCH_MS = 10000.0
DEFAULT_MAX_ITERATIONS = 3
#: A residual this small means the shift landed; no further iteration is needed.
CONVERGED_MS = 5.0
#: Audio quieter than this (RMS, int16 units) has nothing to sync.
SILENCE_RMS = 30.0
#: Two confident engines that disagree by more than this make the answer uncertain.
ENGINES_AGREE_MS = 40.0
#: A second engine's confident lag this close to (or beyond) the first engine's window edge re-centres it.
SEED_MARGIN_MS = 40.0
#: The longest timeline segment one may ask for (``--segment-s``).
MAX_SEGMENT_S = 600.0

ProgressFn = Callable[[str, float], None]


@dataclass(frozen=True)
class SyncOptions:
    engine: str = "auto"  #: auto | cca | syncnet | both (auto: SyncNet when its weights are present, else cca)
    weights: str | None = None
    device: str | None = None
    max_iterations: int = DEFAULT_MAX_ITERATIONS
    tolerance_ms: float = DEFAULT_TOLERANCE_MS
    min_confidence: float | None = None  #: None = the engine's own threshold
    search_ms: float = DEFAULT_SEARCH_MS
    max_search_ms: float = MAX_SEARCH_MS
    #: timeline segments (s): the lag along the clip and its drift; 0 = no timeline
    segment_s: float = DEFAULT_SEGMENT_S
    #: act on a drift or step the timeline finds (``--no-drift``: False, the constant correction only)
    drift: bool = True

    def __post_init__(self) -> None:
        """One set of limits for every entry point: the CLI, the batch, the app and Python callers get the
        same :class:`~pipeline.errors.UserError` (named by the command-line flag) for the same bad value."""
        if self.engine not in ENGINES:
            raise UserError(f"--engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if self.max_iterations < 1:
            raise UserError("--max-iterations must be at least 1")
        if not 0 < self.search_ms <= MAX_USER_SEARCH_MS:
            raise UserError(f"--search-ms must be between 0 and {MAX_USER_SEARCH_MS:.0f}")
        if self.tolerance_ms < 0:
            raise UserError("--tolerance-ms must not be negative")
        if self.segment_s != 0 and not MIN_SEGMENT_S <= self.segment_s <= MAX_SEGMENT_S:
            raise UserError(f"--segment-s must be 0 (no timeline) or between {MIN_SEGMENT_S:.0f} and "
                            f"{MAX_SEGMENT_S:.0f}")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class IterationEvent:
    """One measurement: the audio moved earlier by ``shift_ms``, and what was read there."""

    iteration: int
    track_id: int
    shift_ms: float  #: shift already applied to the audio in memory
    residual_ms: float  #: lag still measured after that shift
    audio_lag_ms: float  #: the estimate of the original file's lag: shift + residual
    confidence: float
    estimate: Estimate
    elapsed_s: float

    def to_dict(self, curve: bool = True) -> dict:
        return {"iteration": self.iteration, "track": self.track_id, "shift_ms": round(self.shift_ms, 3),
                "residual_ms": round(self.residual_ms, 3), "audio_lag_ms": round(self.audio_lag_ms, 3),
                "confidence": round(self.confidence, 4), "elapsed_s": round(self.elapsed_s, 3),
                "estimate": self.estimate.to_dict(curve)}


@dataclass(frozen=True)
class SyncResult:
    """The decision and everything behind it; ``to_report`` is the public JSON."""

    decision: str  #: in_sync | shift | uncertain
    reason: str
    audio_lag_ms: float | None  #: None when uncertain
    confidence: float | None
    engine: str
    engine_reason: str
    info: MediaInfo | None
    duration_s: float
    iterations: list[IterationEvent] = field(default_factory=list)
    tracks: list[dict] = field(default_factory=list)
    track_id: int | None = None
    elapsed_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    measured_lag_ms: float | None = None  #: the estimate even when uncertain (what --force would apply)
    cross_check: dict[str, Any] | None = None  #: the second engine's reading and the agreement
    warnings: list[str] = field(default_factory=list)  #: e.g. only part of a truncated file was readable
    #: the deciding estimate's calibrated chance of being within 40 ms (None: not calibrated, e.g. SyncNet)
    p_correct: float | None = None
    timeline: list[Segment] = field(default_factory=list)  #: the lag along the clip, segment by segment
    drift: Drift | None = None  #: what the timeline says (None: no timeline was measured)
    #: the decoded faces and audio behind the result (not reported): a written copy is re-measured on them
    analysis: Analysis | None = field(default=None, repr=False, compare=False)

    def to_report(self, curves: bool = True) -> dict:
        return {
            "audio_lag_ms": None if self.audio_lag_ms is None else round(self.audio_lag_ms, 3),
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "p_correct": self.p_correct,
            "decision": self.decision,
            "reason": self.reason,
            "engine": self.engine,
            "engine_reason": self.engine_reason,
            "fps": self.info.video.fps if self.info and self.info.video else None,
            "duration_s": round(self.duration_s, 3),
            "track": self.track_id,
            "tracks": self.tracks,
            "iterations": [it.to_dict(curves) for it in self.iterations],
            "measured_lag_ms": None if self.measured_lag_ms is None else round(self.measured_lag_ms, 3),
            "cross_check": self.cross_check,
            "timeline": [seg.to_dict() for seg in self.timeline],
            "drift": (self.drift or Drift("none", "no timeline: nothing was measured")).to_dict(),
            "warnings": self.warnings,
            "elapsed_s": round(self.elapsed_s, 3),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "options": self.options,
            "input": self.info.to_dict() if self.info else None,
        }


def decide(estimate: Estimate | None, audio_lag_ms: float | None, tolerance_ms: float,
           max_search_ms: float) -> tuple[str, str]:
    """(decision, reason) from the final estimate; pure, so it is tested on its own."""
    if estimate is None or audio_lag_ms is None or estimate.windows == 0:
        return "uncertain", "nothing could be measured"
    if not estimate.confident:
        return "uncertain", not_confident_reason(estimate, audio_lag_ms)
    if estimate.edge and estimate.search_ms >= max_search_ms:
        return "uncertain", f"the best match lies at the edge of the +/-{estimate.search_ms:.0f} ms search range"
    if abs(audio_lag_ms) < tolerance_ms:
        return "in_sync", f"in sync: measured {audio_lag_ms:+.1f} ms, within the +/-{tolerance_ms:.0f} ms tolerance"
    later = "after" if audio_lag_ms > 0 else "before"
    return "shift", f"the sound comes {abs(audio_lag_ms):.1f} ms {later} the lips"


#: Below this much talking face (seconds), an unconfident reading is put down to the clip's length first: the
#: benchmark's natural clips with 4 s of face are answered 96 % of the time, 3-s stretches about half.
SHORT_FACE_S = 4.0
#: An unconfident peak whose two halves of the track support it less than this (their smaller z) is put down
#: to the halves disagreeing rather than to a flat curve.
HALVES_AGREE_Z = 1.0


def not_confident_reason(estimate: Estimate, audio_lag_ms: float) -> str:
    """Why an estimate is not acted on, in words a user can act on: the score against its threshold, the best
    match that was found anyway, and the likeliest cause the estimate itself shows (too little face, a lag that
    leaves little of the face meeting the sound, halves of the clip that disagree, or no lag standing out)."""
    x = estimate.extra
    if estimate.p_correct is not None and "p_threshold" in x:
        score = (f"{estimate.engine} confidence {estimate.confidence:.2f}, p_correct {estimate.p_correct:.2f}, "
                 f"is below the threshold {x['p_threshold']:.2f}")
    else:
        p = "" if estimate.p_correct is None else f", p_correct {estimate.p_correct:.2f},"
        score = f"{estimate.engine} confidence {estimate.confidence:.2f}{p} is below the threshold"
    seconds = estimate.windows / GRID_FPS
    overlap = x.get("overlap_frames")
    if "z" not in x:  # an engine without the weight-free engine's evidence fields (SyncNet)
        why = "flat score curve: no clear lip-sound match"
    elif seconds < SHORT_FACE_S:
        why = (f"only {seconds:.1f} s of talking face, too little to tell this peak from chance; a longer clip of "
               "the speaker, face in view, helps")
    elif overlap is not None and overlap < REBALANCE_OVERLAP * estimate.windows:  # as the engine reads it
        why = (f"at that lag only {overlap / GRID_FPS:.1f} s of the face meets the sound, too little to tell it "
               "from chance")
    elif x.get("z_halves", HALVES_AGREE_Z) < HALVES_AGREE_Z:
        why = ("the two halves of the clip do not agree on it: another voice, music, a dubbed or edited "
               "soundtrack, or a face that is not the one speaking")
    else:
        why = ("no lag stands out: the lips and the sound barely match (is the face the one speaking, and the "
               "sound its own recording?)")
    return f"not confident: {score}; best match {audio_lag_ms:+.0f} ms, not acted on: {why}"


def _iterate(engine: Engine, prepared: Any, opts: SyncOptions, first: Estimate, track_id: int, t0: float,
             start_iteration: int, first_shift_ms: float = 0.0) -> Iterator[IterationEvent]:
    """Iterations 2..N on one track: shift by the total so far, re-score, stop when the residual is ~0."""
    total = first_shift_ms + first.audio_lag_ms
    search = first.search_ms
    for i in range(start_iteration, opts.max_iterations + 1):
        est = engine.measure(prepared, total, search)
        residual = est.audio_lag_ms
        total += residual
        yield IterationEvent(i, track_id, total - residual, residual, total, est.confidence, est,
                             time.perf_counter() - t0)
        if abs(residual) <= CONVERGED_MS:
            return


def _first_estimate(engine: Engine, prepared: Any, opts: SyncOptions) -> list[Estimate]:
    """Iteration 1 at no shift: widen the search while the best lag sits at its edge, add windows while unsure."""
    out = []
    search = opts.search_ms
    est = engine.measure(prepared, 0.0, search)
    out.append(est)
    limit = max(opts.max_search_ms, opts.search_ms)
    while est.edge and est.search_ms < limit:
        search = min(limit, max(search, est.search_ms) * 2)
        est = engine.measure(prepared, 0.0, search)
        out.append(est)
    while not est.confident and engine.extend(prepared, est):
        est = engine.measure(prepared, 0.0, search)
        out.append(est)
    return out


def sync_video(path: str | Path, engine: Engine | EngineChoice | None = None, opts: SyncOptions | None = None, *,
               engine_reason: str = "", cross_check: Engine | None = None, analysis: Analysis | None = None,
               info: MediaInfo | None = None,
               progress: ProgressFn | None = None) -> Iterator[IterationEvent | SyncResult]:
    """Measure ``path``: yield an :class:`IterationEvent` per iteration, then one :class:`SyncResult`.

    ``engine`` None: the engines ``opts.engine`` names, chosen as ``detect`` chooses them
    (:func:`pipeline.engines.select_engines`: ``auto`` is SyncNet with its cca cross-check, or cca), so
    this Python path and the command line decide alike; an :class:`~pipeline.engines.EngineChoice` (what
    ``make_engine`` returns) is used as it is, cross-check included; a bare engine runs alone.
    ``cross_check`` is a second engine read once on the chosen face: two confident readings more than
    40 ms apart make the answer uncertain; when only the second is confident, it decides (and iterates).
    Raises ``MediaError`` for input that cannot be used (no audio, no video, unreadable),
    ``EngineUnavailable`` for an engine that cannot run here.
    """
    opts = opts or SyncOptions()
    if engine is None:
        engine = select_engines(opts.engine, opts.weights, opts.device, opts.min_confidence)
    if isinstance(engine, EngineChoice):
        engine, cross_check, engine_reason = engine.primary, engine.cross_check, engine.reason
    if opts.min_confidence is not None:
        engine.min_confidence = opts.min_confidence
    t0 = time.perf_counter()
    report = progress or (lambda stage, frac: None)
    report("analysing", 0.0)
    if analysis is None:
        from .media import probe

        info = info or probe(path)
        probe_s = time.perf_counter() - t0
        total = max(1, int(info.duration_s * 25))
        crops = any(getattr(e, "needs_face_crops", True) for e in (engine, cross_check) if e is not None)
        analysis = analyse(path, info, on_frame=lambda i: report("analysing", min(1.0, i / total)) if i % 25 == 0
                           else None, face_crops=crops)
        analysis.timings["probe_s"] = probe_s
    warnings = []
    info = analysis.info
    if analysis.video_truncated or info.truncated:
        whole = info.declared_duration_s if info.truncated else info.duration_s
        warnings.append(f"only the first {analysis.duration_s:.1f} s of {whole:.1f} s of video could be decoded "
                        "(the file is cut off or damaged there); the measurement uses that part")
    base = dict(engine_reason=engine_reason, info=analysis.info, duration_s=analysis.duration_s,
                options=opts.to_dict(), timings=dict(analysis.timings), warnings=warnings, analysis=analysis)

    def finish(decision: str, reason: str, lag: float | None, conf: float | None, used: Engine = engine,
               **kw: Any) -> SyncResult:
        return SyncResult(decision=decision, reason=reason, audio_lag_ms=lag, confidence=conf, engine=used.name,
                          elapsed_s=time.perf_counter() - t0, **base, **kw)

    tracks_report = [t.summary() for t in analysis.tracks]
    rms = float(np.sqrt(np.mean(analysis.audio.astype(np.float64) ** 2))) if len(analysis.audio) else 0.0
    if rms < SILENCE_RMS:
        yield finish("uncertain", "no sound: the audio track is silent", None, None, tracks=tracks_report)
        return
    if not analysis.tracks:
        yield finish("uncertain", "no face found in the video", None, None, tracks=tracks_report)
        return
    speech = speech_frames(analysis.audio, analysis.n_frames + 1)

    def why_not(e: Engine, t: FaceTrack) -> str | None:
        need = getattr(e, "min_frames", MIN_TRACK_FRAMES)
        return scorable(t, need, speech, int(need * 0.8))

    candidates: list[FaceTrack] = []
    for t, rep in zip(analysis.tracks, tracks_report):
        why = why_not(engine, t)
        rep["scored"] = why is None
        if why:
            rep["reason"] = why
        else:
            candidates.append(t)
    if not candidates:
        best = max(analysis.tracks, key=lambda t: t.n_frames)
        yield finish("uncertain", why_not(engine, best) or "nothing to measure", None, None, tracks=tracks_report)
        return

    # Iteration 1 on every scorable face; the speaking face is the one that scores best.
    report("scoring", 0.0)
    ts = time.perf_counter()
    firsts: dict[int, tuple[Any, Estimate]] = {}
    for k, t in enumerate(candidates):
        prepared = engine.prepare(analysis, t)
        est = _first_estimate(engine, prepared, opts)[-1]
        firsts[t.id] = (prepared, est)
        next(r for r in tracks_report if r["id"] == t.id)["estimate"] = est.to_dict(curve=False)
        report("scoring", (k + 1) / len(candidates))
    chosen = max(candidates, key=lambda t: (firsts[t.id][1].confident, firsts[t.id][1].confidence))
    prepared, first = firsts[chosen.id]

    # The second engine, read once on the same face.
    second: Estimate | None = None
    seed_ms = 0.0  #: where the deciding engine's first reading was centred (moved by a confident second engine)
    second_prep: Any = None
    cross: dict[str, Any] | None = None
    if cross_check is not None:
        why = why_not(cross_check, chosen)
        if why:
            cross = {"engine": cross_check.name, "skipped": why}
        else:
            second_prep = cross_check.prepare(analysis, chosen)
            second = _first_estimate(cross_check, second_prep, opts)[-1]
            cross = {**second.to_dict(curve=False)}
            if second.confident and not second.edge and abs(second.audio_lag_ms) >= first.search_ms - SEED_MARGIN_MS:
                # Beyond (or at the rim of) the first engine's window: look again, centred where the second found it.
                seed_ms = second.audio_lag_ms
                first = engine.measure(prepared, seed_ms, first.search_ms)
                cross["seeded_ms"] = round(seed_ms, 3)
                base["engine_reason"] += (f"; {cross_check.name} found {seed_ms:+.0f} ms, beyond {engine.name}'s "
                                          f"+/-{first.search_ms:.0f} ms window, so {engine.name} looked there")
            if first.confident and second.confident:
                cross["agreement_ms"] = round(abs(seed_ms + first.audio_lag_ms - second.audio_lag_ms), 3)
                cross["agree"] = bool(cross["agreement_ms"] <= ENGINES_AGREE_MS)

    deciding, deciding_prep, deciding_first = engine, prepared, first
    if not first.confident and second is not None and second.confident:
        deciding, deciding_prep, deciding_first = cross_check, second_prep, second
        base["engine_reason"] += f"; {engine.name} was not confident, {cross_check.name} was and decides"
        seed_ms = 0.0

    lag1 = seed_ms + deciding_first.audio_lag_ms
    iterations = [IterationEvent(1, chosen.id, seed_ms, deciding_first.audio_lag_ms, lag1,
                                 deciding_first.confidence, deciding_first, time.perf_counter() - t0)]
    yield iterations[0]
    if deciding_first.confident and deciding_first.windows:
        for ev in _iterate(deciding, deciding_prep, opts, deciding_first, chosen.id, t0, 2, seed_ms):
            iterations.append(ev)
            yield ev
    base["timings"]["scoring_s"] = time.perf_counter() - ts
    last = iterations[-1]
    timeline: list[Segment] = []
    drift = None if opts.segment_s else Drift("none", "no timeline: segments were turned off (segment_s 0)")
    if opts.segment_s and deciding_first.windows:
        report("timeline", 0.0)
        tt = time.perf_counter()
        search = deciding_first.search_ms
        # centre the segments' search on a far lag the clip reads confidently; an unconfident reading is no
        # evidence of where the lag lies, so the segments look around no shift (and reuse its features)
        far = deciding_first.confident and abs(last.audio_lag_ms) > search / 2
        at = last.audio_lag_ms if far else 0.0
        timeline = measure_timeline(deciding, deciding_prep, chosen, at, search, opts.segment_s)
        drift = fit_drift(timeline) if timeline else Drift("none", f"{deciding.name} reads no timeline")
        drift = locate_steps(deciding, deciding_prep, chosen, drift, at)
        base["timings"]["timeline_s"] = time.perf_counter() - tt
    decision, reason = decide(deciding_first, last.audio_lag_ms, opts.tolerance_ms, opts.max_search_ms)
    if cross and cross.get("agree") is False:
        decision = "uncertain"
        reason = (f"the two engines disagree: {engine.name} {seed_ms + first.audio_lag_ms:+.1f} ms, "
                  f"{cross_check.name} {second.audio_lag_ms:+.1f} ms (more than {ENGINES_AGREE_MS:.0f} ms apart)")
    confident = decision != "uncertain"
    lag = last.audio_lag_ms if confident else None
    if drift is not None and drift.kind != "none" and opts.drift:
        # a lag that changes is a finding of its own, held to its own margins (pipeline.timeline): it is what
        # has to be corrected, whatever one constant over the whole clip said
        if not confident:
            lag = float(np.median([s.audio_lag_ms for s in timeline if s.audio_lag_ms is not None]))
        decision, confident = "shift", True
        reason = f"{drift.reason}: the lag changes along the clip, so it is corrected along the clip"
    p_correct = None if deciding_first.p_correct is None else round(float(deciding_first.p_correct), 4)
    yield finish(decision, reason, lag, deciding_first.confidence,
                 p_correct=p_correct, used=deciding, iterations=iterations, tracks=tracks_report, track_id=chosen.id,
                 measured_lag_ms=last.audio_lag_ms if deciding_first.windows else None, cross_check=cross,
                 timeline=timeline, drift=drift)


def run_to_result(events: Iterator[IterationEvent | SyncResult]) -> SyncResult:
    """Drain a ``sync_video`` generator and return its result."""
    result = None
    for ev in events:
        if isinstance(ev, SyncResult):
            result = ev
    assert result is not None
    return result
