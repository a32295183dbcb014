"""Score a face-crop clip like the reference demo (the ``python -m syncnet score`` command is :mod:`syncnet.cli`).

This is the reference ``SyncNetInstance.evaluate`` done properly: frames decoded straight to BGR
(no JPEG round trip) and resampled to 25 fps by timestamp, audio decoded to 16 kHz mono int16, windows
streamed through the network in batches, and the reference's statistics plus a sub-frame lag.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .audio import mfcc
from .inference import Embedder
from .media import MediaError, iter_video_frames, load_audio
from .model import SAMPLES_PER_FRAME, WINDOW_FRAMES
from .scoring import DEFAULT_VSHIFT, OffsetScore, score_embeddings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipScore:
    """A scored clip: the reference statistics and what went in."""

    score: OffsetScore
    frames: int  #: 25 fps frames used (the reference's min_length)
    audio_samples: int
    elapsed_s: float

    def to_dict(self, include_dists: bool = False) -> dict:
        return {**self.score.to_dict(include_dists), "frames": self.frames, "audio_samples": self.audio_samples,
                "elapsed_s": round(self.elapsed_s, 3)}


def score_video(path: str | Path, embedder: Embedder, vshift: int = DEFAULT_VSHIFT,
                progress: bool = False) -> ClipScore:
    """Score a ~224x224 face-crop video. Raises MediaError / CropSizeError with a user-facing message."""
    t0 = time.perf_counter()
    audio = load_audio(path)
    audio_frames = len(audio) // SAMPLES_PER_FRAME
    if audio_frames <= WINDOW_FRAMES:
        raise MediaError(f"{Path(path).name}: the audio is too short to score (need more than 0.2 s)")
    feat = mfcc(audio)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=audio_frames - WINDOW_FRAMES, unit="win", desc="lip windows", leave=False, file=sys.stderr)

    def tick(done: int) -> None:
        if bar is not None:
            bar.n = done
            bar.refresh()

    try:
        video_emb = embedder.embed_frames(iter_video_frames(path), max_windows=audio_frames - WINDOW_FRAMES,
                                          on_progress=tick)
    finally:
        if bar is not None:
            bar.close()
    n = len(video_emb)
    if n == 0:
        raise MediaError(f"{Path(path).name}: the video is too short to score (need more than 5 frames at 25 fps)")
    audio_emb = embedder.embed_audio(feat, n)
    score = score_embeddings(video_emb, audio_emb, vshift)
    return ClipScore(score=score, frames=n + WINDOW_FRAMES, audio_samples=len(audio),
                     elapsed_s=time.perf_counter() - t0)
