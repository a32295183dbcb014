"""Removing a lag that changes along the clip: the plan (:class:`AudioWarp`) and the streaming stage that
carries it out on one audio stream (:class:`WarpStage`).

A lag ``lag(t) = lag_ms + ms_per_minute * t / 60`` (t in seconds of video) is a clock mismatch: the audio
runs ``1 + ms_per_minute / 60000`` times too slow, so it is resampled by exactly that ratio with libsoxr's
very-high-quality resampler (a 0.1 % clock fix changes the pitch by 1.7 cents: inaudible, and exactly what
the mismatch did). A step of the lag at an edit is undone by cutting out (lag grows) or inserting silence
(lag shrinks) at the quietest moment between the earliest and the latest time the timeline allows for the
step (and at least within a second of its best time), with 10 ms cross-fades. The constant
part is the writer's ordinary sample shift (:mod:`pipeline.correct`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

#: Cross-fade on each side of a cut or an inserted silence.
FADE_S = 0.010
#: A step's edit is placed at the quietest moment within its interval, and at least within this distance of
#: its best time.
QUIET_SEARCH_S = 1.0
#: Window over which "quiet" is judged.
QUIET_WINDOW_S = 0.020


@dataclass(frozen=True)
class WarpStep:
    at_s: float  #: video time of the step
    delta_ms: float  #: how much the lag grows there (negative: shrinks)
    #: the interval (video time) the step may lie in; the edit goes at its quietest moment (None: at_s +/- 1 s)
    earliest_s: float | None = None
    latest_s: float | None = None

    def search_s(self) -> tuple[float, float]:
        """How far before and after ``at_s`` the edit's quietest moment is looked for."""
        before = QUIET_SEARCH_S if self.earliest_s is None else max(QUIET_SEARCH_S, self.at_s - self.earliest_s)
        after = QUIET_SEARCH_S if self.latest_s is None else max(QUIET_SEARCH_S, self.latest_s - self.at_s)
        return before, after


@dataclass(frozen=True)
class AudioWarp:
    """The lag to remove, as a function of video time: constant + linear drift + steps."""

    lag_ms: float  #: the lag at t = 0
    ms_per_minute: float = 0.0
    steps: tuple[WarpStep, ...] = field(default_factory=tuple)

    @property
    def ratio(self) -> float:
        """Input samples per output sample: > 1 when the lag grows (the audio runs slow)."""
        return 1.0 + self.ms_per_minute / 60000.0

    @property
    def is_constant(self) -> bool:
        return self.ms_per_minute == 0 and not self.steps

    def lag_at(self, t_s: float) -> float:
        return self.lag_ms + self.ms_per_minute * t_s / 60.0 + sum(s.delta_ms for s in self.steps if t_s >= s.at_s)

    def to_dict(self) -> dict:
        return {"lag_ms": round(self.lag_ms, 3), "ms_per_minute": round(self.ms_per_minute, 3),
                "steps": [{"at_s": round(s.at_s, 3), "delta_ms": round(s.delta_ms, 3)} for s in self.steps]}


def quietest(x: np.ndarray, lo: int, hi: int, span: int, window: int) -> int:
    """The start p in ``lo..hi`` whose stretch ``x[:, p - window : p + span + window]`` has the least energy.

    ``x`` is (channels, n); ``span`` is what a cut removes (0 for an insert). Pure, so it is tested alone.
    """
    e = np.concatenate([[0.0], np.cumsum((x.astype(np.float64) ** 2).sum(axis=0))])
    lo, hi = max(lo, window), min(hi, x.shape[1] - span - window)
    if hi < lo:
        return int(np.clip((lo + hi) // 2, 0, x.shape[1]))
    p = np.arange(lo, hi + 1)
    energy = e[p + span + window] - e[p - window]
    return int(p[np.argmin(energy)])


def cut(x: np.ndarray, p: int, n: int, fade: int) -> np.ndarray:
    """``x`` without samples ``p .. p+n-1``: the part before fades out as the part after fades in."""
    fade = min(fade, p, x.shape[1] - p - n)
    if fade <= 0:
        return np.concatenate([x[:, :p], x[:, p + n :]], axis=1)
    w = np.linspace(0.0, 1.0, fade, endpoint=False)[None]
    mix = x[:, p - fade : p] * (1 - w) + x[:, p + n - fade : p + n] * w
    return np.concatenate([x[:, : p - fade], mix.astype(x.dtype), x[:, p + n :]], axis=1)


def insert_silence(x: np.ndarray, p: int, n: int, fade: int) -> np.ndarray:
    """``x`` with ``n`` samples of silence at ``p``: the sound fades out before it and back in after."""
    y = x.astype(np.float64, copy=True)
    f1, f2 = min(fade, p), min(fade, x.shape[1] - p)
    if f1 > 0:
        y[:, p - f1 : p] *= np.linspace(1.0, 0.0, f1)[None]
    if f2 > 0:
        y[:, p : p + f2] *= np.linspace(0.0, 1.0, f2)[None]
    return np.concatenate([y[:, :p], np.zeros((x.shape[0], n)), y[:, p:]], axis=1).astype(x.dtype)


class WarpStage:
    """One audio stream through the non-constant part of a warp: resampled by the clock ratio, then cut or
    padded at the steps. Samples in, samples out, as they stream (memory: a few seconds around a step).

    ``origin`` is the output index (at ``rate``, from video time 0) of the first sample that comes out, so
    steps given in video time land where they belong.
    """

    def __init__(self, warp: AudioWarp, rate: int, channels: int, dtype: np.dtype, origin: int) -> None:
        self.rate = rate
        self.dtype = np.dtype(dtype)
        self.channels = channels
        self.resampler = None
        if warp.ratio != 1.0:
            import soxr

            self.resampler = soxr.ResampleStream(rate * warp.ratio, rate, channels, dtype="float32", quality="VHQ")
        # steps as (output index, samples the lag grows by, samples searched before and after), in order
        self.edits = sorted((int(round(s.at_s * rate)) - origin, int(round(s.delta_ms * rate / 1000)),
                             *(int(round(x * rate)) for x in s.search_s())) for s in warp.steps)
        self.edits = [e for e in self.edits if e[1] != 0]
        self.fade = int(round(FADE_S * rate))
        self.window = int(round(QUIET_WINDOW_S * rate))
        self.buf = np.zeros((channels, 0), self.dtype)
        self.origin = origin
        self.base = 0  #: index (before edits) of buf[:, 0]
        self.removed = 0  #: samples removed (+) or added (-) by the edits so far
        self.applied: list[tuple[float, float]] = []  #: (video time s, ms) of each edit made

    def _resample(self, data: np.ndarray, last: bool) -> np.ndarray:
        if self.resampler is None:
            return data
        y = self.resampler.resample_chunk(np.ascontiguousarray(data.T, dtype=np.float32), last=last).T
        if np.issubdtype(self.dtype, np.integer):
            info = np.iinfo(self.dtype)
            y = np.clip(np.round(y), info.min, info.max)
        return y.astype(self.dtype)

    def push(self, data: np.ndarray, last: bool = False) -> np.ndarray:
        """Samples (channels, n) in; what is ready comes out (everything when ``last``)."""
        self.buf = np.concatenate([self.buf, self._resample(data, last)], axis=1)
        out = []
        while self.edits:
            p, n, before, after = self.edits[0]
            need = p + after + max(n, 0) + self.window + self.fade - self.base
            if self.buf.shape[1] < need and not last:
                break
            rel = p - self.base
            at = quietest(self.buf, rel - before, rel + after, max(n, 0), self.window)
            at = max(at, 0)
            self.buf = cut(self.buf, at, n, self.fade) if n > 0 else insert_silence(self.buf, at, -n, self.fade)
            t = (self.origin + self.base + at - self.removed) / self.rate
            self.applied.append((t, 1000.0 * n / self.rate))
            log.info("step of the lag undone at %.2f s: %s %.0f ms", t, "cut" if n > 0 else "inserted",
                     abs(1000.0 * n / self.rate))
            # everything before the edit is final; positions after it move by n
            keep = max(0, at - self.fade)
            out.append(self.buf[:, :keep])
            self.buf = self.buf[:, keep:]
            self.base += keep + n
            self.removed += n
            self.edits.pop(0)
            # the later steps are given in video time: in this stream they sit n samples further on
            self.edits = [(q + n, m, b, a) for q, m, b, a in self.edits]
        if not self.edits or last:
            out.append(self.buf)
            self.base += self.buf.shape[1]
            self.buf = self.buf[:, :0]
        else:  # hold back what the next edit may still need to look at
            p, _, before, _ = self.edits[0]
            hold = min(self.buf.shape[1], max(0, p - before - self.window - self.fade - self.base))
            out.append(self.buf[:, :hold])
            self.buf = self.buf[:, hold:]
            self.base += hold
        return np.concatenate(out, axis=1) if out else self.buf[:, :0]
