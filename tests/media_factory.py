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
               audio: np.ndarray | None = None, time_base: Fraction | None = None,
               options: dict[str, str] | None = None) -> Path:
    """Write a clip whose frame i shows i. ``times_s`` gives explicit (variable) frame times; ``options``
    replace the encoder's (libx264: ``crf`` 10, ``preset`` ultrafast, which makes no B-frames)."""
    fps = Fraction(fps)
    if times_s is None:
        times_s = [Fraction(i) / fps for i in range(n_frames)]
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height = size
        vs.pix_fmt = "yuv420p"
        if options is not None:
            vs.options = options
        elif codec == "libx264":
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


def speech(seconds: float, rate: int = 16000, channels: int = 1, source: Path | None = None) -> np.ndarray:
    """Real speech as (channels, n) int16: example.avi's audio, resampled to ``rate``.

    Channel c is the speech ``c * 0.37`` s further on (each with its own gain), so every channel has
    different content and a channel mixed up with another, or shifted differently, shows.
    """
    import os

    from syncnet.media import load_audio

    shared = Path(os.environ.get("SYNCFIX_SHARED", Path(__file__).resolve().parent.parent.parent / "shared"))
    src = source or shared / "fixtures" / "example.avi"
    mono = load_audio(src, sample_rate=rate, align_to_video=False)
    n = int(round(seconds * rate))
    step = int(round(0.37 * rate))
    out = np.zeros((channels, n), np.int16)
    for c in range(channels):
        piece = mono[c * step : c * step + n].astype(np.float64) * (1.0 - 0.08 * c)
        out[c, : len(piece)] = np.clip(piece, -32768, 32767).astype(np.int16)
    return out


def write_av_clip(path: Path, tracks: list[np.ndarray], *, audio_codecs: list[str] | str, rate: int = 16000,
                  layouts: list[str] | None = None, vcodec: str = "libx264", fps: int = 25,
                  size: tuple[int, int] = (96, 64), seconds: float | None = None, audio_start_s: float = 0.0,
                  rotation: float | None = None, subtitles: list[tuple[int, int, str]] | None = None,
                  chapters: list[tuple[int, int, str]] | None = None, metadata: dict[str, str] | None = None,
                  track_metadata: list[dict[str, str]] | None = None,
                  audio_options: dict[str, str] | None = None) -> Path:
    """A clip with index-bar video and one audio stream per ``tracks`` entry ((channels, n) int16 arrays).

    ``audio_start_s`` puts every audio stream's first sample that late after the first video frame.
    ``subtitles`` are (start_ms, end_ms, text) SubRip events; ``chapters`` (start_ms, end_ms, title).
    ``rotation`` writes a display matrix on the video stream. The video runs as long as the longest track.
    ``audio_options`` go to every audio encoder (e.g. ``{"strict": "experimental"}`` for FFmpeg's vorbis).
    """
    codecs = [audio_codecs] * len(tracks) if isinstance(audio_codecs, str) else list(audio_codecs)
    layouts = layouts or [{1: "mono", 2: "stereo", 6: "5.1"}[t.shape[0]] for t in tracks]
    if seconds is None:
        seconds = max(t.shape[1] for t in tracks) / rate
    n_frames = int(round(seconds * fps))
    with av.open(str(path), "w") as out:
        if metadata:
            out.metadata.update(metadata)
        vs = out.add_stream(vcodec, rate=fps)
        vs.width, vs.height = size
        vs.pix_fmt = "yuv420p"
        if vcodec == "libx264":
            vs.options = {"crf": "23", "preset": "ultrafast"}
        elif vcodec.startswith("libvpx"):
            vs.options = {"deadline": "realtime", "cpu-used": "8"}
        if rotation is not None:
            vs.set_display_rotation(rotation)
        streams = []
        for i, (codec, layout) in enumerate(zip(codecs, layouts)):
            a = out.add_stream(codec, rate=rate)
            a.layout = layout
            if audio_options:
                a.options = dict(audio_options)
            if track_metadata and i < len(track_metadata):
                a.metadata.update(track_metadata[i])
            streams.append(a)
        sub = out.add_mux_stream("subrip") if subtitles else None
        if sub is not None:
            sub.time_base = Fraction(1, 1000)
        if chapters:
            out.set_chapters([{"id": i + 1, "start": s, "end": e, "time_base": Fraction(1, 1000),
                               "metadata": {"title": title}} for i, (s, e, title) in enumerate(chapters)])
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(i % 256, *size), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(vs.encode(frame))
        out.mux(vs.encode())
        start = int(round(audio_start_s * rate))
        for a, track, layout in zip(streams, tracks, layouts):
            for s in range(0, track.shape[1], 1024):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(track[:, s : s + 1024]), format="s16p",
                                                layout=layout)
                af.sample_rate = rate
                af.pts = start + s
                af.time_base = Fraction(1, rate)
                out.mux(a.encode(af))
            out.mux(a.encode())
        for start_ms, end_ms, text in subtitles or ():
            packet = av.Packet(text.encode())
            packet.stream = sub
            packet.time_base = Fraction(1, 1000)
            packet.pts = packet.dts = start_ms
            packet.duration = end_ms - start_ms
            out.mux(packet)
    return path


def write_rotated(path: Path, frames: list[np.ndarray], rotation: int, fps: int = 25) -> Path:
    """Video only: ``frames`` (BGR) stored as they are, with a display matrix of ``rotation`` degrees."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        vs.set_display_rotation(rotation)
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="bgr24")
            f.pts = i
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
    return path


def write_gapped(path: Path, audio: np.ndarray, gap_at: int, gap: int, video_s: float) -> Path:
    """A black 64x64 video of ``video_s`` s with 16 kHz PCM ``audio`` whose timestamps jump by ``gap``
    samples at sample ``gap_at`` (the samples themselves are back to back, as a decoder hands them over)."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width = vs.height = 64
        vs.pix_fmt = "yuv420p"
        aus = out.add_stream("pcm_s16le", rate=16000)
        aus.layout = "mono"
        for i in range(int(video_s * 25)):
            f = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            f.pts = i
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        for start in range(0, len(audio), 1600):
            af = av.AudioFrame.from_ndarray(audio[None, start : start + 1600], format="s16", layout="mono")
            af.sample_rate, af.time_base = 16000, Fraction(1, 16000)
            af.pts = start + (gap if start >= gap_at else 0)
            for p in aus.encode(af):
                out.mux(p)
        for p in aus.encode():
            out.mux(p)
    return path


def with_audio(src: Path, dst: Path, audio: np.ndarray, rate: int = 16000) -> Path:
    """``src``'s video stream copied packet for packet, with ``audio`` (mono int16 at ``rate``, sample 0 at
    the first video frame) as its only sound, PCM in Matroska: a real clip with a soundtrack we control."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="matroska") as out:
        v = inp.streams.video[0]
        vs = out.add_stream_from_template(v)
        a = out.add_stream("pcm_s16le", rate=rate)
        a.layout = "mono"
        v0 = None
        for p in inp.demux(v):
            if p.dts is None:
                continue
            v0 = p.pts if v0 is None else v0
            p.stream = vs
            out.mux(p)
        track = np.asarray(audio, np.int16).reshape(1, -1)
        start = int(round((v0 or 0) * v.time_base * rate))
        for s in range(0, track.shape[1], 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(track[:, s : s + 1024]), format="s16p",
                                            layout="mono")
            af.sample_rate = rate
            af.pts = start + s
            af.time_base = Fraction(1, rate)
            out.mux(a.encode(af))
        out.mux(a.encode())
    return dst


def write_two_faces(src: Path, dst: Path, n_frames: int | None = None) -> Path:
    """``src``'s talking face on the left and its first frame, frozen, on the right (a second face that never
    speaks), with ``src``'s own sound: which face is measured must be the left one."""
    from syncnet.media import iter_video_frames, load_audio

    frames = list(iter_video_frames(src))[:n_frames]
    still = frames[0]
    audio = load_audio(src)[: len(frames) * 640]
    with av.open(str(dst), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 2 * still.shape[1], still.shape[0], "yuv420p"
        vs.options = {"crf": "18", "preset": "ultrafast"}
        aus = out.add_stream("aac", rate=16000)
        aus.layout = "mono"
        for f in frames:
            out.mux(vs.encode(av.VideoFrame.from_ndarray(np.concatenate([f, still], axis=1), format="bgr24")))
        out.mux(vs.encode())
        for start in range(0, len(audio), 1024):
            af = av.AudioFrame.from_ndarray(audio[None, start : start + 1024], format="s16", layout="mono")
            af.sample_rate, af.pts, af.time_base = 16000, start, Fraction(1, 16000)
            out.mux(aus.encode(af))
        out.mux(aus.encode())
    return dst
