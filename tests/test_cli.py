"""``python -m pipeline detect|fix``: the public JSON fields, exit codes, and corrected files."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

DETECT_FIELDS = ("audio_lag_ms", "confidence", "decision", "reason", "engine", "fps", "duration_s", "tracks",
                 "iterations", "elapsed_s")


def run(*args: str, check_rc: int | None = 0, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr
    return proc


def test_detect_json_with_syncnet_random_weights(example_avi, random_weights):
    out = json.loads(run("detect", str(example_avi), "--engine", "syncnet", "--weights", str(random_weights),
                         "--json").stdout)
    for f in DETECT_FIELDS:
        assert f in out, f
    assert out["engine"] == "syncnet" and out["fps"] == 25.0 and out["duration_s"] == pytest.approx(12.68)
    assert out["decision"] == "uncertain" and out["audio_lag_ms"] is None  # random weights: no clear match
    assert len(out["tracks"]) == 1 and out["tracks"][0]["scored"] is True
    it = out["iterations"][0]
    assert it["iteration"] == 1 and len(it["estimate"]["curve"]) == len(it["estimate"]["lags_ms"])
    assert out["input"]["streams"][0]["codec"] == "mpeg4"


@pytest.mark.parametrize("name,message", [("video_no_audio.avi", "no audio track"),
                                          ("video_no_video_stream.avi", "no video track")])
def test_bad_input_exit_2_one_line(fixtures_dir, random_weights, name, message):
    proc = run("detect", str(fixtures_dir / name), "--weights", str(random_weights), "--json", check_rc=2)
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""


def test_missing_file_and_missing_weights(tmp_path, example_avi):
    proc = run("detect", str(tmp_path / "nope.mp4"), check_rc=2)
    assert "no such file" in proc.stderr
    proc = run("detect", str(example_avi), "--weights", str(tmp_path / "none.model"), check_rc=2)
    assert "does not exist" in proc.stderr and "--engine cca" in proc.stderr
    proc = run("detect", str(example_avi), "--engine", "syncnet", check_rc=2,
               env={"SYNCNET_WEIGHTS_DIR": str(tmp_path)})
    assert "needs the SyncNet weights" in proc.stderr


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _shifted_copy(src: Path, dst: Path, lag_ms: float) -> Path:
    """``src`` with its sound made ``lag_ms`` late (audio moved later) by our own writer."""
    from pipeline.correct import write_shifted

    write_shifted(src, dst, -lag_ms)
    return dst


@pytest.mark.parametrize("lag", [+137.5, -66.3])
def test_fix_apply_ms_restores_a_shifted_copy(tmp_path, example_avi, lag):
    from pipeline.verify import measure_shift

    late = _shifted_copy(example_avi, tmp_path / "late.avi", lag)
    before = _sha(late)
    out = json.loads(run("fix", str(late), "--apply-ms", str(lag), "--json").stdout)
    assert _sha(late) == before, "the input is never modified"
    fixed = Path(out["output"])
    assert fixed.exists() and fixed.parent == late.parent and fixed != late
    assert out["applied_shift_ms"] == pytest.approx(lag, abs=0.07)
    assert out["verified_shift_ms"] == pytest.approx(lag, abs=1.0)
    assert measure_shift(example_avi, fixed) == pytest.approx(0.0, abs=1.0)  # back in step with the original
    for f in DETECT_FIELDS + ("output", "applied_shift_ms", "verified_shift_ms"):
        assert f in out, f
    with av.open(str(fixed)) as a, av.open(str(example_avi)) as b:
        assert [s.codec_context.name for s in a.streams] == [s.codec_context.name for s in b.streams]


def test_fix_never_overwrites(tmp_path, example_avi):
    src = tmp_path / "clip.avi"
    src.write_bytes(example_avi.read_bytes())
    first = json.loads(run("fix", str(src), "--apply-ms", "40", "--json").stdout)["output"]
    second = json.loads(run("fix", str(src), "--apply-ms", "40", "--json").stdout)["output"]
    assert first != second and Path(first).exists() and Path(second).exists()
    proc = run("fix", str(src), "--apply-ms", "40", "-o", str(src), check_rc=2)
    assert "must not be the input" in proc.stderr


def test_fix_uncertain_writes_nothing_unless_forced(tmp_path, example_avi, random_weights):
    src = tmp_path / "clip.avi"
    src.write_bytes(example_avi.read_bytes())
    out = json.loads(run("fix", str(src), "--engine", "syncnet", "--weights", str(random_weights), "--json",
                         "--no-curves").stdout)
    assert out["decision"] == "uncertain" and out["output"] is None and out["applied_shift_ms"] == 0.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi"]
    forced = json.loads(run("fix", str(src), "--engine", "syncnet", "--weights", str(random_weights), "--force",
                            "--json", "--no-curves").stdout)
    assert forced["output"] and "--force" in forced["reason"]
    assert forced["verified_shift_ms"] == pytest.approx(forced["applied_shift_ms"], abs=1.0)


RATES = [24, Fraction(24000, 1001), Fraction(30000, 1001), 30, 50, 60, "vfr"]


@pytest.mark.parametrize("rate", RATES, ids=[str(r) for r in RATES])
def test_fix_keeps_streams_at_any_frame_rate(tmp_path, example_avi, rate, capsys):
    """In process (same code as the command), to keep the matrix fast."""
    from media_factory import write_clip

    from pipeline.cli import main
    from pipeline.verify import measure_shift
    from syncnet.media import load_audio

    speech = load_audio(example_avi)[: 16000 * 4]
    if rate == "vfr":
        rng = np.random.default_rng(1)
        times = [Fraction(0)]
        while times[-1] < 3.9:
            times.append(times[-1] + Fraction(int(rng.integers(20, 60)), 1000))
        src = write_clip(tmp_path / "vfr.mkv", times, fps=30, audio=speech, audio_rate=16000)
    else:
        src = write_clip(tmp_path / "clip.mp4", fps=rate, n_frames=int(4 * rate), audio=speech, audio_rate=16000)
    assert main(["fix", str(src), "--apply-ms", "53.3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    fixed = Path(out["output"])
    assert out["verified_shift_ms"] == pytest.approx(53.3, abs=1.0)
    assert measure_shift(src, fixed) == pytest.approx(53.3, abs=1.0)
    with av.open(str(src)) as a, av.open(str(fixed)) as b:
        kinds = [(s.type, s.codec_context.name) for s in a.streams]
        assert kinds == [(s.type, s.codec_context.name) for s in b.streams]
        va = [(p.pts, bytes(p)) for p in a.demux(video=0) if p.size]
        vb = [(p.pts, bytes(p)) for p in b.demux(video=0) if p.size]
        assert va == vb, "the video is copied untouched"


def test_search_ms_accepts_up_to_ten_seconds_and_refuses_more(example_avi):
    from pipeline.cli import build_parser, sync_options

    args = build_parser().parse_args(["detect", str(example_avi), "--search-ms", "10000"])
    assert sync_options(args).search_ms == 10000.0
    proc = run("detect", str(example_avi), "--engine", "cca", "--search-ms", "10001", check_rc=2)
    assert "--search-ms must be between 0 and 10000" in proc.stderr and "Traceback" not in proc.stderr
