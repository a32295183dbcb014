"""pipeline.correct on real media: the written file is checked by decoding it, never by trusting the writer.

Every case shifts real speech (example.avi's audio) in a real container, then decodes the result and checks
that the audio moved by the requested amount to within 1 ms (``measure_shift``, and sample for sample where
the codec is PCM), that the video packets are the input's bytes, and that the rest of the file (streams,
codecs, start times, duration, metadata, chapters, subtitles, rotation) is as it was.
"""

from __future__ import annotations

import hashlib
import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from media_factory import speech, write_av_clip

from pipeline.correct import WriteResult, default_output_path, write_shifted
from pipeline.verify import measure_shift
from syncnet.media import MediaError, load_audio

TOL_MS = 1.0
LAGS_MS = (53.3, -91.7)  # sub-frame and sub-millisecond amounts, one each way


# --- helpers ---------------------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def video_packets(path: Path) -> list[tuple[bytes, int | None]]:
    with av.open(str(path)) as c:
        return [(bytes(p), p.pts) for p in c.demux(c.streams.video[0]) if p.size]


def stream_summary(path: Path) -> list[tuple[str, str | None]]:
    with av.open(str(path)) as c:
        return [(s.type, s.codec_context.name if s.codec_context else None) for s in c.streams]


def planar(frame: av.AudioFrame) -> np.ndarray:
    data = frame.to_ndarray()
    return data if frame.format.is_planar else data.reshape(-1, len(frame.layout.channels)).T


def decode_audio(path: Path, index: int = 0) -> tuple[Fraction, np.ndarray, str, int]:
    """(time of the first sample, samples as (channels, n), layout, rate) of the index-th audio stream."""
    with av.open(str(path)) as c:
        stream = c.streams.audio[index]
        start, chunks, layout, rate = None, [], "", 0
        for frame in c.decode(stream):
            if start is None:
                start = frame.pts * frame.time_base
                layout, rate = frame.layout.name, frame.sample_rate
            chunks.append(planar(frame))
    return start, np.concatenate(chunks, axis=1), layout, rate


def lag_ms(ref: np.ndarray, got: np.ndarray, rate: int, max_ms: float = 300.0) -> tuple[float, float]:
    """(how far ``got`` is moved EARLIER than ``ref`` in ms, normalised correlation at the peak)."""
    a = ref.astype(np.float64) - ref.mean()
    b = got.astype(np.float64) - got.mean()
    nfft = 1 << (len(a) + len(b)).bit_length()
    xc = np.fft.irfft(np.fft.rfft(a, nfft) * np.conj(np.fft.rfft(b, nfft)), nfft)
    m = int(max_ms * rate / 1000)
    window = np.concatenate([xc[-m:], xc[: m + 1]])
    i = int(np.argmax(window))
    offset = 0.0
    if 0 < i < len(window) - 1:
        left, mid, right = window[i - 1], window[i], window[i + 1]
        if left - 2 * mid + right < 0:
            offset = 0.5 * (left - right) / (left - 2 * mid + right)
    return (i - m + offset) * 1000 / rate, float(window[i] / np.sqrt((a * a).sum() * (b * b).sum()))


def shifted(x: np.ndarray, k: int) -> np.ndarray:
    """``x`` (channels, n) moved k samples earlier (later if negative), silence in, same length."""
    out = np.zeros_like(x)
    n = x.shape[1]
    if k >= 0:
        out[:, : n - k] = x[:, k:]
    else:
        out[:, -k:] = x[:, : n + k]
    return out


def no_partials(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".partial" in p.name]


def need_encoder(name: str) -> None:
    try:
        av.codec.Codec(name, "w")
    except Exception:  # noqa: BLE001 - any failure means: not in this FFmpeg build
        pytest.skip(f"PyAV's FFmpeg has no {name} encoder")


@pytest.fixture(scope="module")
def voice(example_avi: Path):
    """Real speech as (channels, n) int16 at a rate, each channel different."""

    def make(seconds: float = 4.0, rate: int = 16000, channels: int = 1) -> np.ndarray:
        return speech(seconds, rate, channels, source=example_avi)

    return make


# --- example.avi and synced_example.avi ------------------------------------------------------------------


@pytest.mark.parametrize("lag", [137.5, -73.0, 0.0])
def test_example_avi_shift_is_measured_back(example_avi: Path, tmp_path: Path, lag: float):
    before = sha256(example_avi)
    out = tmp_path / "fixed.avi"
    result = write_shifted(example_avi, out, lag)
    assert sha256(example_avi) == before  # the source is only read
    assert isinstance(result, WriteResult)
    assert result.output == out and out.is_file() and no_partials(tmp_path)
    assert result.applied_shift_ms == pytest.approx(lag, abs=1000 / 16000)
    assert (result.audio_streams, result.copied_streams) == (1, 1)
    assert measure_shift(example_avi, out) == pytest.approx(lag, abs=TOL_MS)
    # PCM in, PCM out: the samples are the input's, moved by exactly round(lag * 16) samples
    src, got = load_audio(example_avi), load_audio(out)
    np.testing.assert_array_equal(got[None], shifted(src[None], round(lag * 16)))
    assert video_packets(out) == video_packets(example_avi)


def test_synced_example_is_example_moved_120_ms_later(example_avi: Path, synced_avi: Path):
    assert measure_shift(example_avi, synced_avi) == pytest.approx(-120.0, abs=TOL_MS)
    assert measure_shift(synced_avi, example_avi) == pytest.approx(120.0, abs=TOL_MS)


def test_delaying_example_by_120_ms_gives_synced_example(example_avi: Path, synced_avi: Path, tmp_path: Path):
    out = write_shifted(example_avi, tmp_path / "delayed.avi", -120.0).output
    assert measure_shift(synced_avi, out) == pytest.approx(0.0, abs=TOL_MS)
    got, want = load_audio(out), load_audio(synced_avi)
    np.testing.assert_array_equal(got, want[: len(got)])  # synced is 1920 zero samples + example's audio


def test_advancing_synced_example_by_120_ms_undoes_it(example_avi: Path, synced_avi: Path, tmp_path: Path):
    out = write_shifted(synced_avi, tmp_path / "advanced.avi", 120.0).output
    assert measure_shift(example_avi, out) == pytest.approx(0.0, abs=TOL_MS)
    assert measure_shift(synced_avi, out) == pytest.approx(120.0, abs=TOL_MS)
    got, want = load_audio(out), load_audio(example_avi)
    n = min(len(got), len(want)) - 1920
    np.testing.assert_array_equal(got[:n], want[:n])
    assert video_packets(out) == video_packets(synced_avi)


def test_real_h264_aac_48k_clip(fixtures_dir: Path, tmp_path: Path):
    """w2l_input3.mp4: B-frames (negative dts, an edit list on the video) and 48 kHz AAC with its priming."""
    src = fixtures_dir / "w2l_input3.mp4"
    if not src.exists():
        pytest.skip(f"{src} is absent")
    for lag in LAGS_MS:
        out = write_shifted(src, tmp_path / f"w2l{lag}.mp4", lag).output
        assert measure_shift(src, out) == pytest.approx(lag, abs=TOL_MS)
        assert video_packets(out) == video_packets(src)
        assert stream_summary(out) == stream_summary(src)
        assert decode_audio(out)[0] == decode_audio(src)[0]


# --- containers and codecs --------------------------------------------------------------------------------

#: (suffix, video codec, audio codec, sample rate, channels): every pair write_shifted is meant to handle.
CASES = [
    ("mp4", "libx264", "aac", 48000, 1),
    ("mp4", "libx264", "aac", 16000, 1),
    ("mp4", "libx264", "libmp3lame", 48000, 1),
    ("mov", "libx264", "aac", 48000, 1),
    ("mov", "libx264", "pcm_s16le", 48000, 1),
    ("mkv", "libx264", "aac", 44100, 1),
    ("mkv", "libx264", "pcm_s16le", 48000, 1),
    ("mkv", "libx264", "libopus", 48000, 1),
    ("mkv", "libx264", "flac", 48000, 1),
    ("mkv", "libx264", "libmp3lame", 44100, 1),
    ("mkv", "libx264", "vorbis", 48000, 2),  # FFmpeg's own (experimental) vorbis encoder: stereo only
    ("avi", "mpeg4", "pcm_s16le", 16000, 1),
    ("avi", "mpeg4", "libmp3lame", 48000, 1),
    ("avi", "mpeg4", "libmp3lame", 16000, 1),
    ("webm", "libvpx-vp9", "libopus", 48000, 1),
    ("webm", "libvpx", "libopus", 48000, 1),
]


@pytest.mark.parametrize(("ext", "vcodec", "acodec", "rate", "channels"), CASES,
                         ids=[f"{e}-{v}-{a}-{r}" for e, v, a, r, _ in CASES])
def test_container_codec_pairs(voice, tmp_path: Path, ext: str, vcodec: str, acodec: str, rate: int,
                               channels: int):
    need_encoder(acodec)
    need_encoder(vcodec)
    options = {"strict": "experimental"} if acodec == "vorbis" else None
    src = write_av_clip(tmp_path / f"src.{ext}", [voice(4.0, rate, channels)], audio_codecs=acodec, rate=rate,
                        vcodec=vcodec, audio_options=options)
    before = sha256(src)
    src_start, src_audio, src_layout, src_rate = decode_audio(src)
    for lag in LAGS_MS:
        out = tmp_path / f"out{lag}.{ext}"
        result = write_shifted(src, out, lag)
        assert result.output == out and no_partials(tmp_path)
        assert result.applied_shift_ms == pytest.approx(round(lag * src_rate / 1000) * 1000 / src_rate)
        assert stream_summary(out) == stream_summary(src)  # same streams, same codecs
        assert video_packets(out) == video_packets(src)  # copied, not re-encoded
        start, audio, layout, out_rate = decode_audio(out)
        assert (layout, out_rate) == (src_layout, src_rate)
        assert abs(start - src_start) < Fraction(1, 1000)  # the track starts where it did
        # the length is kept to within one frame (MP3 gains one: LAME pads the end and MP3 has no field for it)
        frame = {"aac": 1024, "libopus": 960, "libmp3lame": 1152 if rate >= 32000 else 576, "vorbis": 2048,
                 "flac": 4608}.get(acodec, 0)
        assert abs(audio.shape[1] - src_audio.shape[1]) <= frame
        assert measure_shift(src, out) == pytest.approx(lag, abs=TOL_MS)
    assert sha256(src) == before


# --- channels, several audio streams ----------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["mkv", "mov", "avi"])
@pytest.mark.parametrize("channels", [2, 6])
def test_every_channel_moves_by_the_same_exact_samples(voice, tmp_path: Path, ext: str, channels: int):
    """48 kHz PCM stereo and 5.1, each channel different: decoded at 48 kHz, each is its input shifted by
    exactly round(lag * 48) samples, in its own place."""
    src = write_av_clip(tmp_path / f"src.{ext}", [voice(3.0, 48000, channels)], audio_codecs="pcm_s16le",
                        rate=48000, vcodec="mpeg4" if ext == "avi" else "libx264")
    _, want, src_layout, _ = decode_audio(src)
    for lag in LAGS_MS:
        out = write_shifted(src, tmp_path / f"out{lag}.{ext}", lag).output
        _, got, layout, rate = decode_audio(out)
        assert (layout, rate) == (src_layout, 48000)
        np.testing.assert_array_equal(got, shifted(want, round(lag * 48)))


@pytest.mark.parametrize(("ext", "vcodec", "acodec"), [("mp4", "libx264", "aac"),
                                                       ("webm", "libvpx-vp9", "libopus")])
def test_lossy_5_1_keeps_every_channel_in_place(voice, tmp_path: Path, ext: str, vcodec: str, acodec: str):
    src = write_av_clip(tmp_path / f"src.{ext}", [voice(3.0, 48000, 6)], audio_codecs=acodec, rate=48000,
                        vcodec=vcodec)
    _, want, src_layout, _ = decode_audio(src)
    lag = LAGS_MS[0]
    out = write_shifted(src, tmp_path / f"out.{ext}", lag).output
    _, got, layout, _ = decode_audio(out)
    assert layout == src_layout and got.shape[0] == 6
    n = min(want.shape[1], got.shape[1])
    for c in range(6):
        moved, peak = lag_ms(want[c, :n], got[c, :n], 48000)
        assert moved == pytest.approx(lag, abs=TOL_MS), f"channel {c}"
        assert peak > 0.9, f"channel {c} does not match its input"
        other = (c + 1) % 6  # and it is not some other channel's content
        assert lag_ms(want[other, :n], got[c, :n], 48000)[1] < peak


@pytest.mark.parametrize(("ext", "acodec"), [("mkv", "aac"), ("mkv", "pcm_s16le"), ("mp4", "aac")])
def test_two_audio_streams_are_both_kept_and_shifted(voice, tmp_path: Path, ext: str, acodec: str):
    tracks = [voice(3.0, 48000, 2), voice(3.0, 48000, 6)[3:4]]  # stereo, and a mono track of other speech
    meta = [{"language": "eng", "title": "Main"}, {"language": "fra", "title": "Commentary"}]
    src = write_av_clip(tmp_path / f"src.{ext}", tracks, audio_codecs=acodec, rate=48000, track_metadata=meta)
    lag = LAGS_MS[1]
    result = write_shifted(src, tmp_path / f"out.{ext}", lag)
    assert (result.audio_streams, result.copied_streams) == (2, 1)
    assert stream_summary(result.output) == stream_summary(src)
    with av.open(str(src)) as a, av.open(str(result.output)) as b:
        assert [s.metadata.get("language") for s in b.streams.audio] == ["eng", "fra"]
        titles = [s.metadata.get("title", s.metadata.get("name")) for s in b.streams.audio]
        assert titles == [s.metadata.get("title", s.metadata.get("name")) for s in a.streams.audio]
    for index in (0, 1):
        _, want, _, _ = decode_audio(src, index)
        _, got, _, _ = decode_audio(result.output, index)
        n = min(want.shape[1], got.shape[1])
        moved, peak = lag_ms(want[0, :n], got[0, :n], 48000)
        assert moved == pytest.approx(lag, abs=TOL_MS), f"audio stream {index}"
        assert peak > 0.9
        if acodec.startswith("pcm"):
            np.testing.assert_array_equal(got, shifted(want, round(lag * 48)))


# --- what else the file carries ---------------------------------------------------------------------------


def test_mkv_keeps_subtitles_chapters_and_tags(voice, tmp_path: Path):
    subs = [(500, 1500, "Hello"), (2000, 2600, "World")]
    chapters = [(0, 1000, "Intro"), (1000, 3000, "Main")]
    try:
        src = write_av_clip(tmp_path / "src.mkv", [voice(3.0)], audio_codecs="aac", subtitles=subs,
                            chapters=chapters, metadata={"title": "A film", "comment": "tagged"},
                            track_metadata=[{"language": "deu", "title": "Deutsch"}])
    except (ValueError, av.FFmpegError) as exc:
        pytest.skip(f"PyAV cannot write a SubRip stream into Matroska here: {exc}")
    out = write_shifted(src, tmp_path / "out.mkv", 40.0).output
    assert stream_summary(out) == stream_summary(src) == [("video", "h264"), ("audio", "aac"),
                                                          ("subtitle", "srt")]
    with av.open(str(src)) as a, av.open(str(out)) as b:
        assert b.metadata["title"] == "A film" and b.metadata.get("COMMENT", b.metadata.get("comment")) == "tagged"
        assert b.streams.audio[0].metadata["language"] == "deu"
        assert b.streams.audio[0].metadata["title"] == "Deutsch"

        def chapter_list(c):
            return [(float(ch["start"] * ch["time_base"]), float(ch["end"] * ch["time_base"]),
                     ch["metadata"].get("title")) for ch in c.chapters()]

        assert chapter_list(b) == chapter_list(a) == [(0.0, 1.0, "Intro"), (1.0, 3.0, "Main")]

        def subtitle_packets(c):
            return [(bytes(p), p.pts, p.duration) for p in c.demux(c.streams.subtitles[0]) if p.size]

        assert subtitle_packets(b) == subtitle_packets(a) == [(b"Hello", 500, 1000), (b"World", 2000, 600)]
    assert measure_shift(src, out) == pytest.approx(40.0, abs=TOL_MS)


def test_mp4_keeps_chapters_and_track_titles(voice, tmp_path: Path):
    src = write_av_clip(tmp_path / "src.mp4", [voice(3.0)], audio_codecs="aac", chapters=[(0, 1500, "One"),
                        (1500, 3000, "Two")], track_metadata=[{"language": "spa", "title": "Espanol"}])
    out = write_shifted(src, tmp_path / "out.mp4", -30.0).output
    assert stream_summary(out) == stream_summary(src)  # MP4 keeps chapters in a text track of its own
    with av.open(str(src)) as a, av.open(str(out)) as b:
        assert [(float(c["start"] * c["time_base"]), c["metadata"]["title"]) for c in b.chapters()] == [
            (0.0, "One"), (1.5, "Two")]
        assert len(b.chapters()) == len(a.chapters())
        assert b.streams.audio[0].metadata["language"] == "spa"
        assert b.streams.audio[0].metadata.get("name") == a.streams.audio[0].metadata.get("name") == "Espanol"


@pytest.mark.parametrize(("ext", "vcodec"), [("mp4", "libx264"), ("mov", "libx264"), ("mkv", "libx264"),
                                             ("webm", "libvpx-vp9")])
def test_rotation_is_kept(voice, tmp_path: Path, ext: str, vcodec: str):
    acodec = "libopus" if ext == "webm" else "aac"
    src = write_av_clip(tmp_path / f"src.{ext}", [voice(2.0)], audio_codecs=acodec, vcodec=vcodec, rotation=90)

    def rotation(path: Path) -> int:
        with av.open(str(path)) as c:
            return next(c.decode(video=0)).rotation

    assert rotation(src) != 0
    out = write_shifted(src, tmp_path / f"out.{ext}", 25.0).output
    assert rotation(out) == rotation(src)
    assert video_packets(out) == video_packets(src)


@pytest.mark.parametrize(("ext", "acodec"), [("mkv", "aac"), ("mp4", "aac"), ("mov", "pcm_s16le"),
                                             ("webm", "libopus")])
def test_audio_that_starts_late_keeps_its_start(voice, tmp_path: Path, ext: str, acodec: str):
    """The audio starts 0.5 s after the first video frame (a container offset, not silence)."""
    src = write_av_clip(tmp_path / f"src.{ext}", [voice(3.0, 48000)], audio_codecs=acodec, rate=48000,
                        audio_start_s=0.5, vcodec="libvpx-vp9" if ext == "webm" else "libx264", seconds=3.5)
    src_start = decode_audio(src)[0]
    # the container may put it a little earlier (AAC's 21 ms of priming, when MP4 cannot record it)
    assert 0.47 <= src_start <= 0.502
    for lag in LAGS_MS:
        out = write_shifted(src, tmp_path / f"out{lag}.{ext}", lag).output
        assert abs(decode_audio(out)[0] - src_start) < Fraction(1, 1000)
        assert measure_shift(src, out) == pytest.approx(lag, abs=TOL_MS)
        if acodec.startswith("pcm"):
            np.testing.assert_array_equal(decode_audio(out)[1], shifted(decode_audio(src)[1], round(lag * 48)))


# --- safety: the source, temporary files, failures --------------------------------------------------------


def test_refuses_to_overwrite_the_source(voice, tmp_path: Path):
    src = write_av_clip(tmp_path / "src.mkv", [voice(2.0)], audio_codecs="aac")
    before = sha256(src)
    with pytest.raises(ValueError, match="must not be the input"):
        write_shifted(src, src, 10.0)
    link = tmp_path / "link.mkv"  # the same file under another name is the same file
    link.symlink_to(src)
    with pytest.raises(ValueError, match="must not be the input"):
        write_shifted(src, link, 10.0)
    assert sha256(src) == before and no_partials(tmp_path)


def test_missing_output_folder_raises_and_leaves_nothing(example_avi: Path, tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        write_shifted(example_avi, tmp_path / "nope" / "out.avi", 10.0)
    assert list(tmp_path.iterdir()) == []


def test_source_without_audio_raises_and_leaves_nothing(fixtures_dir: Path, tmp_path: Path):
    src = fixtures_dir / "video_no_audio.avi"
    if not src.exists():
        pytest.skip(f"{src} is absent")
    with pytest.raises(MediaError, match="no audio track"):
        write_shifted(src, tmp_path / "out.avi", 10.0)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(MediaError, match="no audio track"):
        measure_shift(src, src)


def test_failure_while_writing_removes_the_partial_file(voice, tmp_path: Path):
    """Break a real write half-way (a log handler that raises once the temporary file exists): the
    temporary file goes, and an existing output is left as it was."""
    src = write_av_clip(tmp_path / "src.mp4", [voice(2.0)], audio_codecs="aac")
    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"previous result")
    seen: list[str] = []

    class Boom(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            partials = [p.name for p in tmp_path.iterdir() if ".partial" in p.name]
            if partials:
                seen.extend(partials)
                raise RuntimeError("simulated failure while writing")

    logger = logging.getLogger("pipeline.correct")
    handler, level = Boom(level=logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with pytest.raises(RuntimeError, match="simulated"):
            write_shifted(src, dst, 20.0)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert seen and seen[0].startswith(".out.") and seen[0].endswith(".mp4")  # it was there, beside dst
    assert no_partials(tmp_path)
    assert dst.read_bytes() == b"previous result"


def test_measure_shift_refuses_silence(voice, tmp_path: Path):
    silent = write_av_clip(tmp_path / "silent.mkv", [np.zeros((1, 48000 * 2), np.int16)],
                           audio_codecs="pcm_s16le")
    talking = write_av_clip(tmp_path / "talking.mkv", [voice(2.0)], audio_codecs="pcm_s16le")
    with pytest.raises(MediaError, match="silent"):
        measure_shift(talking, silent)
    with pytest.raises(MediaError, match="silent"):
        measure_shift(silent, talking)


@pytest.mark.parametrize("len_a,len_b", [(16000, 16000), (24000, 9000), (7000, 30001)])
def test_correlation_size_gives_the_linear_correlation_at_every_lag_searched(len_a: int, len_b: int):
    from pipeline.verify import correlation_size

    rng = np.random.default_rng(len_a + len_b)
    a, b = rng.standard_normal(len_a), rng.standard_normal(len_b)
    max_lag = 4000
    n = correlation_size(len_a, len_b, max_lag)
    assert max(len_a, len_b) + max_lag < n <= 2 * (max(len_a, len_b) + max_lag)
    circ = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)
    full = np.correlate(a, b, mode="full")  # full[k] = sum_n a[n + k - (len_b - 1)] b[n]
    for lag in (-max_lag, -1, 0, 1, 733, max_lag):
        assert circ[lag % n] == pytest.approx(full[lag + len_b - 1], abs=1e-9)


def test_measure_shift_with_the_originals_audio_already_read(example_avi: Path, tmp_path: Path):
    out = write_shifted(example_avi, tmp_path / "fixed.avi", 61.25).output
    known = load_audio(example_avi)
    assert measure_shift(example_avi, out, original_audio=known) == measure_shift(example_avi, out)
    assert measure_shift(example_avi, out, original_audio=known) == pytest.approx(61.25, abs=TOL_MS)


def test_default_output_path_never_clobbers(tmp_path: Path):
    src = tmp_path / "talk.mp4"
    src.write_bytes(b"x")
    first = default_output_path(src)
    assert first == tmp_path / "talk.synced.mp4"
    first.write_bytes(b"taken")
    second = default_output_path(src)
    assert second == tmp_path / "talk.synced-1.mp4"
    second.write_bytes(b"taken")
    (tmp_path / "talk.synced-3.mp4").write_bytes(b"taken")
    third = default_output_path(src)
    assert third == tmp_path / "talk.synced-2.mp4"
    for p in (first, second, third):
        assert p != src and p.parent == src.parent and p.suffix == src.suffix
    assert not third.exists()
    # an input that already carries the marker gets a fresh name too, never itself
    again = tmp_path / "talk.synced.mp4"
    assert default_output_path(again) not in (again, first, second) and not default_output_path(again).exists()


def test_gap_in_audio_timestamps_stays_on_the_clock(tmp_path: Path, fixtures_dir: Path):
    """A 0.5 s hole in the audio's timestamps: the shifted copy keeps the hole where the clock puts it."""
    from media_factory import write_gapped

    speech_16k = load_audio(fixtures_dir / "example.avi")[: 16000 * 4]
    src = write_gapped(tmp_path / "gap.mkv", speech_16k, gap_at=32000, gap=8000, video_s=5.0)
    dst = tmp_path / "gap.fixed.mkv"
    write_shifted(src, dst, 53.3)
    assert measure_shift(src, dst) == pytest.approx(53.3, abs=1.0)
    before, after = load_audio(src), load_audio(dst)
    d = int(round(53.3 * 16))
    # the second half (after the hole) is shifted by the same amount as the first
    np.testing.assert_array_equal(after[40000 - d : 56000 - d], before[40000:56000])
