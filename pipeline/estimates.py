"""What every engine returns and promises: the :class:`Estimate`, the :class:`Engine` protocol, the audio shift.

The iteration loop (:mod:`pipeline.sync`) and every engine (SyncNet's in :mod:`pipeline.engines`, the
weight-free one in :mod:`pipeline.cca`) import these from here, so no engine depends on another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from syncnet.constants import SAMPLE_RATE

from .analysis import Analysis, FaceTrack


@dataclass(frozen=True)
class Estimate:
    """One engine's reading of one track at one audio shift."""

    engine: str
    audio_lag_ms: float  #: residual lag of the shifted audio (> 0 = sound still after the lips)
    confidence: float
    confident: bool
    edge: bool  #: the best lag is at the end of the searched range
    search_ms: float
    lags_ms: np.ndarray  #: x of the curve: candidate residual lags
    curve: np.ndarray  #: y of the curve
    curve_label: str
    best_is_min: bool  #: True when the best lag is the curve's minimum (distances), False for a maximum
    windows: int  #: analysis windows that went into it
    window_times_s: np.ndarray = field(default_factory=lambda: np.zeros(0))  #: times along the clip
    window_confidence: np.ndarray = field(default_factory=lambda: np.zeros(0))  #: confidence there
    extra: dict[str, Any] = field(default_factory=dict)
    #: The chance that ``audio_lag_ms`` is within 40 ms, from a calibration measured on the dev set; None for
    #: an engine whose calibration cannot be measured here (SyncNet: its weights are not available).
    p_correct: float | None = None

    def to_dict(self, curve: bool = True) -> dict:
        out = {"engine": self.engine, "audio_lag_ms": round(float(self.audio_lag_ms), 3),
               "confidence": round(float(self.confidence), 4), "confident": bool(self.confident),
               "p_correct": None if self.p_correct is None else round(float(self.p_correct), 4),
               "edge": bool(self.edge), "search_ms": float(self.search_ms), "windows": int(self.windows),
               "curve_label": self.curve_label, "best_is_min": bool(self.best_is_min), **self.extra}
        if curve:
            out["lags_ms"] = [round(float(x), 3) for x in self.lags_ms]
            out["curve"] = [round(float(x), 5) for x in self.curve]
        return out


class Engine(Protocol):
    name: str
    min_confidence: float
    min_frames: int  #: shortest face track (grid frames, with speech) the engine can read

    def prepare(self, analysis: Analysis, track: FaceTrack) -> Any: ...

    def measure(self, prepared: Any, shift_ms: float, search_ms: float) -> Estimate: ...

    def extend(self, prepared: Any, estimate: Estimate | None = None) -> bool: ...


def shift_audio(audio: np.ndarray, shift_ms: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """The audio moved earlier by ``shift_ms`` (later when negative), sample-exact, same length, silence-filled."""
    d = int(round(shift_ms * rate / 1000.0))
    if d == 0:
        return audio
    out = np.zeros_like(audio)
    if d > 0:
        out[: max(0, len(audio) - d)] = audio[d:]
    else:
        out[-d:] = audio[: len(audio) + d] if len(audio) + d > 0 else out[-d:]
    return out
