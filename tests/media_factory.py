"""Generate test clips with PyAV: frames that carry their own index, and tone/noise audio.

Each frame shows its source index as 8 black/white vertical bars (bit 7 on the left), which survives
lossy codecs, so a test can tell exactly which source frame a decoder handed back.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

BITS = 8


def index_frame(index: int, width: int = 224, height: int = 224) -> np.ndarray:
    img = np.zeros((height, width, 3), np.uint8)
    bar = width // BITS
    for b in range(BITS):
        if (index >> (BITS - 1 - b)) & 1:
            img[:, b * bar : (b + 1) * bar] = 255
    return img


def read_index(frame: np.ndarray) -> int:
    bar = frame.shape[1] // BITS
    value = 0
    for b in range(BITS):
        value = (value << 1) | int(frame[:, b * bar + bar // 4 : (b + 1) * bar - bar // 4].mean() > 128)
    return value


def write_clip(path: Path, times_s: list[Fraction] | None = None, *, fps: Fraction | int = 25, n_frames: int = 50,
               size: tuple[int, int] = (224, 224), codec: str = "libx264", audio_rate: int | None = 16000,
               audio: np.ndarray | None = None, time_base: Fraction | None = None) -> Path:
    """Write a clip whose frame i shows i. ``times_s`` gives explicit (variable) frame times."""
    fps = Fraction(fps)
    if times_s is None:
        times_s = [Fraction(i) / fps for i in range(n_frames)]
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height = size
        vs.pix_fmt = "yuv420p"
        if codec == "libx264":
            vs.options = {"crf": "10", "preset": "ultrafast"}
        vs.time_base = time_base or Fraction(1, 1000)
        vs.codec_context.time_base = vs.time_base  # else the encoder rounds pts to 1/fps (no real VFR)
        astream = None
        if audio_rate:
            astream = out.add_stream("aac" if path.suffix in (".mp4", ".mov", ".mkv") else "pcm_s16le",
                                     rate=audio_rate)
            astream.layout = "mono"
        for i, t in enumerate(times_s):
            frame = av.VideoFrame.from_ndarray(index_frame(i, *size), format="rgb24")
            frame.pts = int(round(t / vs.time_base))
            frame.time_base = vs.time_base
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        if astream is not None:
            duration = float(times_s[-1]) + 1 / float(fps)
            if audio is None:
                t = np.arange(int(duration * audio_rate)) / audio_rate
                audio = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
            chunk = 1024
            for start in range(0, len(audio), chunk):
                piece = audio[start : start + chunk]
                af = av.AudioFrame.from_ndarray(piece.reshape(1, -1).astype(np.int16), format="s16", layout="mono")
                af.sample_rate = audio_rate
                af.pts = start
                af.time_base = Fraction(1, audio_rate)
                for packet in astream.encode(af):
                    out.mux(packet)
            for packet in astream.encode():
                out.mux(packet)
    return path
