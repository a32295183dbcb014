"""The input matrix: hard inputs that must work and hostile ones that must be refused clearly.

Every case is built here from the shared clips (example.avi: a talking face whose sound is 120 ms early,
so a correct measurement reads about -120 ms whatever the wrapping), run through the real command line
(``python -m pipeline detect --engine cca``, in process), and checked. ``tests/test_inputs.py`` asserts
the outcomes; ``benchmarks/acceptance_table.py`` prints the README's "What it accepts and what it refuses"
table from the same cases.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

EXAMPLE_LAG_MS = -120.0


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path, Path], Path]  #: (fixtures dir, work dir) -> the file to run
    accept: bool
    lag_ms: float | None = None  #: expected audio_lag_ms (+/-20 ms) for accepted cases
    message: str | None = None  #: expected part of the one-line refusal
    args: tuple[str, ...] = ()
    note: str = ""
    check: Callable[[dict], None] | None = field(default=None, compare=False)  #: extra check on the report


@dataclass
class Outcome:
    rc: int
    report: dict | None
    stderr: str


def run_case(case: Case, fixtures: Path, work: Path) -> Outcome:
    from pipeline.cli import main

    path = case.build(fixtures, work)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["detect", str(path), "--engine", "cca", "--json", "--no-curves", *case.args])
    report = json.loads(out.getvalue()) if rc == 0 and out.getvalue().strip() else None
    return Outcome(rc, report, err.getvalue().strip())


# ----------------------------------------------------------------------------------------------- building

def _example(fixtures: Path) -> tuple[list[np.ndarray], np.ndarray]:
    from syncnet.media import iter_video_frames, load_audio

    return list(iter_video_frames(fixtures / "example.avi")), load_audio(fixtures / "example.avi")


def write(path: Path, frames: list[np.ndarray], times: list[Fraction], tracks: list[tuple[np.ndarray, int, str]], *,
          vcodec: str = "libx264", pix_fmt: str = "yuv420p", rotation: int | None = None,
          audio_start_s: float = 0.0, fmt: str | None = None, video_rate: Fraction | int = 25) -> Path:
    """BGR ``frames`` at ``times`` (s) plus audio ``tracks`` of (samples (channels, n) int16, rate, codec)."""
    with av.open(str(path), "w", format=fmt) as out:
        vs = out.add_stream(vcodec, rate=video_rate)
        vs.width, vs.height, vs.pix_fmt = frames[0].shape[1], frames[0].shape[0], pix_fmt
        vs.time_base = Fraction(1, 1000) if path.suffix in (".mkv", ".webm") else Fraction(1, 90000)
        vs.codec_context.time_base = vs.time_base
        if vcodec == "libx264":
            vs.options = {"crf": "18", "preset": "ultrafast"}
        if rotation is not None:
            vs.set_display_rotation(rotation)
        astreams = []
        for samples, rate, codec in tracks:
            a = out.add_stream(codec, rate=rate)
            a.layout = {1: "mono", 2: "stereo", 6: "5.1"}[samples.shape[0]]
            astreams.append(a)
        for img, t in zip(frames, times):
            f = av.VideoFrame.from_ndarray(img, format="bgr24")
            f.pts, f.time_base = int(round(t / vs.time_base)), vs.time_base
            out.mux(vs.encode(f))
        out.mux(vs.encode())
        for a, (samples, rate, _) in zip(astreams, tracks):
            start = int(round(audio_start_s * rate))
            for s in range(0, samples.shape[1], 1024):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, s : s + 1024]), format="s16p",
                                                layout=a.layout.name)
                af.sample_rate, af.time_base, af.pts = rate, Fraction(1, rate), start + s
                out.mux(a.encode(af))
            out.mux(a.encode())
    return path


def _retimed(fixtures: Path, work: Path, name: str, fps: Fraction | None, vfr: bool = False, **kw) -> Path:
    """example.avi shown at another (or a variable) frame rate: each new frame shows the frame of its time."""
    frames, audio = _example(fixtures)
    duration = Fraction(len(frames), 25)
    if vfr:
        rng = np.random.default_rng(7)
        times = [Fraction(0)]
        while times[-1] < duration - Fraction(1, 10):
            times.append(times[-1] + Fraction(int(rng.integers(17, 70)), 1000))
    else:
        times = [Fraction(i) / fps for i in range(int(duration * fps))]
    shown = [frames[min(len(frames) - 1, int(round(t * 25)))] for t in times]
    return write(work / name, shown, times, [(audio[None], 16000, kw.pop("acodec", "aac"))],
                 video_rate=fps or 30, **kw)


def _same(fixtures: Path, work: Path, name: str, *, frames_fn=None, audio_fn=None, **kw) -> Path:
    frames, audio = _example(fixtures)
    if frames_fn:
        frames = frames_fn(frames)
    tracks = audio_fn(fixtures, audio) if audio_fn else [(audio[None], 16000, "aac")]
    return write(work / name, frames, [Fraction(i, 25) for i in range(len(frames))], tracks, **kw)


def _at_fps(label: str, fps: Fraction) -> Callable[[Path, Path], Path]:
    return lambda f, w: _retimed(f, w, f"fps{label}.mp4", fps)


def _rotated(deg: int) -> Callable[[Path, Path], Path]:
    # stored turned the other way, so that applying the display matrix shows the face upright
    k = {90: -1, 180: 2, 270: 1}[deg]
    return lambda f, w: _same(f, w, f"rot{deg}.mp4", frames_fn=lambda fr: [np.ascontiguousarray(np.rot90(x, k))
                                                                         for x in fr], rotation=deg)


def _odd_size(fixtures: Path, work: Path) -> Path:
    import cv2

    def frames_fn(frames):
        out = []
        for f in frames:
            canvas = np.full((359, 641, 3), 40, np.uint8)
            canvas[:, 141:500] = cv2.resize(f, (359, 359))
            out.append(canvas)
        return out

    return _same(fixtures, work, "odd 641x359.mp4", frames_fn=frames_fn, pix_fmt="yuv444p")


def _rate(rate: int) -> Callable[[Path, Path], Path]:
    def build(fixtures: Path, work: Path) -> Path:
        from syncnet.media import load_audio

        a = load_audio(fixtures / "example.avi", sample_rate=rate)
        return _same(fixtures, work, f"audio{rate}.mkv", audio_fn=lambda f, _: [(a[None], rate, "pcm_s16le")])

    return build


def _surround(fixtures: Path, audio: np.ndarray) -> list:
    rng = np.random.default_rng(1)
    six = (rng.standard_normal((6, len(audio))) * 60).astype(np.int16)
    six[0] = six[1] = six[2] = audio  # the voice in front (FL, FR, FC), quiet hiss behind
    return [(six, 16000, "aac")]


def _two_tracks(fixtures: Path, audio: np.ndarray) -> list:
    from syncnet.media import load_audio

    other = np.resize(load_audio(fixtures / "w2l_input3.mp4"), len(audio))
    return [(audio[None], 16000, "aac"), (other[None], 16000, "aac")]


def _with_subtitles(fixtures: Path, work: Path) -> Path:
    src = _same(fixtures, work, "plain.mkv")
    dst = work / "subs.mkv"
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        routes = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        sub = out.add_mux_stream("subrip")
        sub.time_base = Fraction(1, 1000)
        out.set_chapters([{"id": 1, "start": 0, "end": 6000, "time_base": Fraction(1, 1000),
                           "metadata": {"title": "one"}},
                          {"id": 2, "start": 6000, "end": 12000, "time_base": Fraction(1, 1000),
                           "metadata": {"title": "two"}}])
        for p in inp.demux():
            if p.dts is None:
                continue
            p.stream = routes[p.stream.index]
            out.mux(p)
        for i, text in enumerate(["Hello", "World"]):
            pk = av.Packet(text.encode())
            pk.stream, pk.time_base, pk.pts, pk.dts, pk.duration = sub, Fraction(1, 1000), 1000 + 4000 * i, \
                1000 + 4000 * i, 2000
            out.mux(pk)
    return dst


def _scene_cut(fixtures: Path, work: Path) -> Path:
    return _same(fixtures, work, "cut.mp4", frames_fn=lambda fr: fr[:160] + [np.ascontiguousarray(
        255 - x[:, ::-1]) for x in fr[160:]])


def _two_faces(fixtures: Path, work: Path) -> Path:
    return _same(fixtures, work, "two faces.mp4", frames_fn=lambda fr: [np.concatenate([x, fr[0]], axis=1)
                                                                        for x in fr])


def _hostile_name(fixtures: Path, work: Path) -> Path:
    dst = work / "tëst ü 'q' \"dq\" $(echo pwned) ; & `x` |.avi"
    shutil.copy(fixtures / "example.avi", dst)
    return dst


def _long_clip(fixtures: Path, work: Path) -> Path:
    return _same(fixtures, work, "x.mp4")


def _truncated(suffix: str, keep: float) -> Callable[[Path, Path], Path]:
    def build(fixtures: Path, work: Path) -> Path:
        src = _same(fixtures, work, f"whole{suffix}") if suffix != ".avi" else fixtures / "example.avi"
        data = src.read_bytes()
        dst = work / f"cut{suffix}"
        dst.write_bytes(data[: int(len(data) * keep)])
        return dst

    return build


def _corrupt(fixtures: Path, work: Path) -> Path:
    src = _same(fixtures, work, "clean.mkv")
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(3)
    mid = len(data) // 2
    data[mid : mid + 20000] = rng.integers(0, 256, 20000, dtype=np.uint8).tobytes()
    dst = work / "corrupt.mkv"
    dst.write_bytes(bytes(data))
    return dst


def _text(fixtures: Path, work: Path) -> Path:
    p = work / "notes.mp4"
    p.write_text("Meeting notes\n" * 200)
    return p


def _image(fixtures: Path, work: Path) -> Path:
    import cv2

    p = work / "photo.mp4"
    ok, png = cv2.imencode(".png", _example(fixtures)[0][0])
    p.write_bytes(png.tobytes())
    return p


def _empty(fixtures: Path, work: Path) -> Path:
    p = work / "empty.mp4"
    p.write_bytes(b"")
    return p


def _short(fixtures: Path, work: Path) -> Path:
    frames, audio = _example(fixtures)
    return write(work / "short.mp4", frames[:15], [Fraction(i, 25) for i in range(15)],
                 [(audio[None, : 15 * 640], 16000, "aac")])


def _unknown_codec(fixtures: Path, work: Path) -> Path:
    p = work / "unknown.avi"
    p.write_bytes((fixtures / "example.avi").read_bytes().replace(b"FMP4", b"QQQQ"))
    return p


def _copy(name: str) -> Callable[[Path, Path], Path]:
    return lambda fixtures, work: fixtures / name


def _two_faces_check(report: dict) -> None:
    left = min(report["tracks"], key=lambda t: t["id"])
    assert len(report["tracks"]) == 2, report["tracks"]
    assert report["track"] == left["id"] or report["tracks"][report["track"]]["estimate"]["confident"]


def _truncated_check(report: dict) -> None:
    assert report["warnings"] and "could be decoded" in report["warnings"][0]


CASES: list[Case] = [
    Case("variable frame rate (phone-style, 17-70 ms frame gaps)",
         lambda f, w: _retimed(f, w, "vfr.mkv", None, vfr=True), True, EXAMPLE_LAG_MS),
    *[Case(f"{label} fps", _at_fps(label, fps), True, EXAMPLE_LAG_MS)
      for label, fps in [("23.976", Fraction(24000, 1001)), ("24", Fraction(24)), ("29.97", Fraction(30000, 1001)),
                         ("50", Fraction(50)), ("60", Fraction(60))]],
    *[Case(f"rotation {deg} degrees (portrait phone video)", _rotated(deg), True, EXAMPLE_LAG_MS)
      for deg in (90, 180, 270)],
    Case("odd size 641x359 (H.264 4:4:4)", _odd_size, True, EXAMPLE_LAG_MS),
    Case("10-bit H.264 (yuv420p10le)", lambda f, w: _same(f, w, "tenbit.mp4", pix_fmt="yuv420p10le"), True,
         EXAMPLE_LAG_MS),
    Case("MOV with ProRes video and PCM audio",
         lambda f, w: _same(f, w, "prores.mov", vcodec="prores_ks", pix_fmt="yuv422p10le",
                            audio_fn=lambda fx, a: [(a[None], 16000, "pcm_s16le")]), True, EXAMPLE_LAG_MS),
    Case("WebM with VP9 video and Opus audio",
         lambda f, w: _same(f, w, "vp9.webm", vcodec="libvpx-vp9",
                            audio_fn=lambda fx, a: [(_up(a, 48000)[None], 48000, "libopus")]), True, EXAMPLE_LAG_MS),
    *[Case(f"{rate / 1000:g} kHz audio", _rate(rate), True, EXAMPLE_LAG_MS) for rate in (8000, 22050, 44100, 48000)],
    Case("5.1 audio", lambda f, w: _same(f, w, "surround.mp4", audio_fn=_surround), True, EXAMPLE_LAG_MS),
    Case("two audio tracks (the first is measured, both are shifted by fix)",
         lambda f, w: _same(f, w, "two tracks.mkv", audio_fn=_two_tracks), True, EXAMPLE_LAG_MS),
    Case("subtitles and chapters (MKV)", _with_subtitles, True, EXAMPLE_LAG_MS),
    Case("audio stream starting 200 ms after the video",
         lambda f, w: _same(f, w, "late start.mkv", audio_start_s=0.2), True, EXAMPLE_LAG_MS + 200),
    Case("a scene cut in the middle", _scene_cut, True, EXAMPLE_LAG_MS),
    Case("two faces, one of them speaking", _two_faces, True, EXAMPLE_LAG_MS, check=_two_faces_check),
    Case("unicode, spaces and shell metacharacters in the file name", _hostile_name, True, EXAMPLE_LAG_MS),
    Case("AVI cut off in the middle (the readable 70 % is used, with a warning)", _truncated(".avi", 0.7), True,
         EXAMPLE_LAG_MS, check=_truncated_check),
    Case("empty file", _empty, False, message="the file is empty"),
    Case("text renamed .mp4", _text, False, message="not a readable video file"),
    Case("image renamed .mp4", _image, False, message="still image"),
    Case("MP4 cut off in the middle (index lost)", _truncated(".mp4", 0.5), False, message="not a readable video"),
    Case("audio only", _copy("video_no_video_stream.avi"), False, message="no video track"),
    Case("video only", _copy("video_no_audio.avi"), False, message="no audio track"),
    Case("video shorter than one second", _short, False, message="at least 1 s"),
    Case("unsupported codec", _unknown_codec, False, message="cannot decode"),
    Case("over the duration limit (--max-duration-s 5)", _long_clip, False, message="the limit is",
         args=("--max-duration-s", "5")),
    Case("over the size limit (--max-size-mb 0.1)", _long_clip, False, message="the limit is",
         args=("--max-size-mb", "0.1")),
]


def _up(audio: np.ndarray, rate: int) -> np.ndarray:
    """16 kHz int16 -> ``rate`` by linear interpolation (enough for a test signal)."""
    n = int(len(audio) * rate / 16000)
    return np.interp(np.arange(n) * 16000 / rate, np.arange(len(audio)), audio).astype(np.int16)


#: A stream damaged in the middle: decoders conceal or skip; either a measurement or a clear refusal is
#: acceptable, a crash is not.
CORRUPT = Case("a corrupt stream (20 KB of random bytes in the middle)", _corrupt, True, None)
