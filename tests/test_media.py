"""Decoding onto the 25 fps grid by timestamp, and audio decoding."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from media_factory import read_index, write_clip

from syncnet.media import MediaError, iter_video_frames, load_audio, resample_times


def _nearest(times: list[Fraction], n_out: int) -> list[int]:
    """Independent expectation: for each 25 fps slot the source frame nearest in time (ties: earlier)."""
    t0 = times[0]
    return [min(range(len(times)), key=lambda i: (abs(times[i] - (t0 + Fraction(k, 25))), i)) for k in range(n_out)]


@pytest.mark.parametrize("fps", [25, 24, Fraction(30000, 1001), 30, 50, 60])
def test_constant_rates_map_to_nearest_frame(fps):
    times = [Fraction(i) / Fraction(fps) for i in range(90)]
    pairs = list(resample_times(iter(times)))
    duration = len(times) / Fraction(fps)
    assert [k for _, k in pairs] == list(range(len(pairs)))
    assert len(pairs) == int(np.ceil(float(duration * 25) - 1e-9))
    assert [s for s, _ in pairs] == _nearest(times, len(pairs))


def test_identity_at_25_fps():
    times = [Fraction(i, 25) for i in range(40)]
    assert list(resample_times(iter(times))) == [(i, i) for i in range(40)]


def test_variable_frame_rate_follows_timestamps():
    rng = np.random.default_rng(0)
    gaps = rng.choice([Fraction(1, 30), Fraction(1, 15), Fraction(1, 60), Fraction(1, 24)], size=120)
    times = [Fraction(0)]
    for g in gaps:
        times.append(times[-1] + g)
    pairs = list(resample_times(iter(times)))
    assert [s for s, _ in pairs] == _nearest(times, len(pairs))


def test_decoded_25fps_clip_is_frame_exact(tmp_path):
    path = write_clip(tmp_path / "c25.mp4", fps=25, n_frames=40)
    got = [read_index(f) for f in iter_video_frames(path)]
    assert got == list(range(40))


@pytest.mark.parametrize("fps,expected", [(50, lambda k: 2 * k), (30, lambda k: round(1.2 * k))])
def test_decoded_other_rates_pick_by_timestamp(tmp_path, fps, expected):
    path = write_clip(tmp_path / f"c{fps}.mkv", fps=fps, n_frames=60)
    got = [read_index(f) for f in iter_video_frames(path)]
    assert len(got) == 60 * 25 // fps
    assert got == [expected(k) for k in range(len(got))]


def test_decoded_vfr_clip(tmp_path):
    times = [Fraction(0)]
    rng = np.random.default_rng(3)
    for _ in range(80):
        times.append(times[-1] + Fraction(int(rng.integers(15, 70)), 1000))
    path = write_clip(tmp_path / "vfr.mkv", times, fps=30)
    got = [read_index(f) for f in iter_video_frames(path)]
    assert got == _nearest(times, len(got))
    assert len(got) >= int(float(times[-1]) * 25)


def test_scaling_during_decode(tmp_path):
    path = write_clip(tmp_path / "big.mp4", fps=25, n_frames=5, size=(448, 256))
    frames = list(iter_video_frames(path, size=(224, 128)))
    assert frames[0].shape == (128, 224, 3)
    assert [read_index(f) for f in frames] == list(range(5))


def test_audio_resampled_to_16k_mono(tmp_path):
    rate = 48000
    t = np.arange(rate * 2) / rate
    tone = (np.sin(2 * np.pi * 1000 * t) * 10000).astype(np.int16)
    path = write_clip(tmp_path / "a48.avi", fps=25, n_frames=50, codec="mpeg4", audio_rate=rate, audio=tone)
    audio = load_audio(path)
    assert audio.dtype == np.int16
    assert abs(len(audio) - 32000) <= 64
    spectrum = np.abs(np.fft.rfft(audio[1000:17000].astype(float)))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 1000) <= 2  # 1 kHz tone survives, 1 Hz bins


def test_missing_streams_and_bad_files(tmp_path, fixtures_dir):
    with pytest.raises(MediaError, match="no audio track"):
        load_audio(fixtures_dir / "video_no_audio.avi")
    with pytest.raises(MediaError, match="no video track"):
        next(iter_video_frames(fixtures_dir / "video_no_video_stream.avi"))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        load_audio(empty)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(MediaError, match="not a readable video"):
        load_audio(text)


def test_audio_gaps_become_silence_and_keep_the_clock(tmp_path):
    """A stream with a 0.5 s hole in its timestamps decodes onto the right clock, not 0.5 s early."""
    from media_factory import write_gapped

    rng = np.random.default_rng(4)
    noise = (rng.standard_normal(48000) * 3000).astype(np.int16)  # 3 s at 16 kHz
    path = write_gapped(tmp_path / "gap.mkv", noise, gap_at=16000, gap=8000, video_s=4.0)
    audio = load_audio(path)
    assert len(audio) == pytest.approx(56000, abs=200)
    np.testing.assert_array_equal(audio[:16000], noise[:16000])
    assert np.abs(audio[16000 + 100 : 24000 - 100]).max() == 0  # the hole is silent
    np.testing.assert_array_equal(audio[24000:56000], noise[16000:48000])  # then back on the clock


def _packet_order_and_frame_times(path) -> tuple[list[int], list[Fraction]]:
    """The video packets' pts in the file's order, and the decoded frames' times (presentation order)."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        pts = [p.pts for p in c.demux(s) if p.size]
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        times = [f.pts * s.time_base for f in c.decode(s)]
    return pts, times


def test_probe_tells_the_frame_rate_from_packets_as_decoding_would(tmp_path):
    """The probe reads packet timestamps instead of decoding 120 frames: a variable rate is still found, and
    B-frames (packets out of presentation order) do not make a constant rate look variable."""
    from pipeline.media import frame_rate_varies, probe

    rng = np.random.default_rng(5)
    times = [Fraction(0)]
    for _ in range(150):
        times.append(times[-1] + Fraction(int(rng.integers(15, 70)), 1000))
    vfr = write_clip(tmp_path / "vfr.mkv", times, fps=30)
    cfr = write_clip(tmp_path / "bframes.mp4", fps=Fraction(30000, 1001), n_frames=150,
                     options={"crf": "18", "preset": "medium", "bf": "3"})
    pts, frame_times = _packet_order_and_frame_times(cfr)
    assert pts != sorted(pts), "the encoder made no B-frames: the test would not test the reordering"
    assert not frame_rate_varies(frame_times[:120])
    assert probe(cfr).variable_frame_rate is False
    _, frame_times = _packet_order_and_frame_times(vfr)
    assert frame_rate_varies(frame_times[:120])
    assert probe(vfr).variable_frame_rate is True


@pytest.mark.parametrize("rotation", [90, 180])
def test_probe_reads_the_rotation_from_the_first_frame(tmp_path, rotation):
    from media_factory import write_rotated

    from pipeline.media import _inspect_video

    img = np.zeros((64, 96, 3), np.uint8)
    path = write_rotated(tmp_path / f"rot{rotation}.mp4", [img] * 30, rotation)
    vfr, got, decodable = _inspect_video(path)
    assert decodable and not vfr
    assert got in (rotation, (360 - rotation) % 360)  # the container's sign convention; applied in test_analysis


def test_one_decoder_thread_gives_ffmpegs_frames(fixtures_dir):
    """The analysis decodes on one thread on two cores (pipeline.analysis.decode_threads): the same frames as
    FFmpeg's frame threads, plane for plane, on a real H.264 clip with B-frames."""
    import hashlib

    from syncnet.media import decode_on_grid

    clip = fixtures_dir / "w2l_input2.mp4"

    def digests(threads: int) -> list[tuple[int, str]]:
        return [(k, hashlib.md5(np.ascontiguousarray(f.to_ndarray()).tobytes()).hexdigest())
                for k, f in decode_on_grid(clip, 25, "yuv420p", threads=threads)]

    one, auto = digests(1), digests(0)
    assert len(one) > 100
    assert one == auto


def test_decoder_threads_leave_the_detector_a_core():
    from pipeline.analysis import decode_threads

    assert decode_threads("cpu", 2) == 1
    assert decode_threads("cpu", 1) == 1
    assert decode_threads("cpu", 16) == 15
    assert decode_threads("cuda", 2) == 0  # FFmpeg's own choice when the detector needs no core
