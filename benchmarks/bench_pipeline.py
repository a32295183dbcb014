"""Benchmark the pipeline on the 60 s 720p clip: stage times, ratio to the decode floor, peak RSS.

Clip: ``../shared/fixtures/w2l_input2.mp4`` (1280x720, 29.97 fps H.264 + AAC) looped to 60 s by packet
copy (see clips.py). Each command runs in a fresh process, timed from spawn to exit, with its peak RSS:

* floor: FFmpeg's command line decoding the clip to nothing (imageio-ffmpeg's binary), and PyAV's decode;
* ``python -m pipeline detect --engine cca`` (the weight-free engine) and ``--engine both``;
* ``python -m pipeline detect --engine syncnet`` with the random golden weights (speed does not depend on
  the values; with random weights the curve is flat, so the engine also takes its slowest path: the
  search widened to +/-2 s);
* ``python -m pipeline fix --apply-ms 120`` (writing and verifying only) and ``fix`` with estimation.

    python benchmarks/bench_pipeline.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clips import FIXTURES, ROOT, SHARED, loop_clip  # noqa: E402

WEIGHTS = SHARED / "golden" / "syncnet_v2_random.model"


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """(wall s, peak RSS MB of this child alone, stdout), via wait4 on the child."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.read()[-2000:]}")
        return wall, usage.ru_maxrss / 1024, out.read()


def pyav_decode_floor(clip: Path) -> float:
    import av

    t0 = time.perf_counter()
    with av.open(str(clip)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for _ in c.decode(s):
            pass
    return time.perf_counter() - t0


def main() -> None:
    if not (FIXTURES / "w2l_input2.mp4").exists() or not WEIGHTS.exists():
        sys.exit(f"needs {FIXTURES / 'w2l_input2.mp4'} and {WEIGHTS} (the shared fixtures beside the checkout)")
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        clip = loop_clip(FIXTURES / "w2l_input2.mp4", Path(tmp) / "w2l_60s.mp4", 60.0)
        print(f"clip: w2l_input2.mp4 looped to 60 s, 1280x720 29.97 fps; {os.cpu_count()} CPUs")
        try:
            import imageio_ffmpeg

            ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
            floor, _, _ = timed([ffmpeg, "-v", "error", "-i", str(clip), "-f", "null", "-"])
            print(f"  floor: ffmpeg CLI decode        {floor:6.2f} s")
        except (ImportError, RuntimeError) as exc:
            floor = None
            print(f"  floor: ffmpeg CLI not available ({exc})")
        av_floor = pyav_decode_floor(clip)
        print(f"  floor: PyAV decode (in process) {av_floor:6.2f} s")
        floor = floor or av_floor

        wall, rss, out = timed([py, "-m", "pipeline", "detect", str(clip), "--engine", "syncnet", "--weights",
                                str(WEIGHTS), "--json", "--no-curves"])
        rep = json.loads(out)
        stages = ", ".join(f"{k} {v:.2f}" for k, v in rep["timings"].items())
        print(f"  detect --engine syncnet      {wall:6.2f} s  ({wall / floor:4.1f}x floor)  peak RSS {rss:6.0f} MB")
        print(f"     stages (s): {stages}")
        print(f"     decision {rep['decision']}, windows {rep['iterations'][0]['estimate']['windows']}, "
              f"search +/-{rep['iterations'][0]['estimate']['search_ms']:.0f} ms (random weights: flat curve)")

        wall_cca, rss_cca, out = timed([py, "-m", "pipeline", "detect", str(clip), "--engine", "cca", "--json",
                                        "--no-curves"])
        rep = json.loads(out)
        stages = ", ".join(f"{k} {v:.2f}" for k, v in rep["timings"].items())
        print(f"  detect --engine cca          {wall_cca:6.2f} s  ({wall_cca / floor:4.1f}x floor)  peak RSS "
              f"{rss_cca:6.0f} MB  (target: 10 s)")
        print(f"     stages (s): {stages}")
        print(f"     decision {rep['decision']}, audio_lag_ms {rep['audio_lag_ms']}, confidence {rep['confidence']}")
        wall_both, rss_both, out = timed([py, "-m", "pipeline", "detect", str(clip), "--engine", "both", "--weights",
                                          str(WEIGHTS), "--json", "--no-curves"])
        print(f"  detect --engine both         {wall_both:6.2f} s  peak RSS {rss_both:6.0f} MB")

        out_path = Path(tmp) / "fixed.mp4"
        wall_fix, rss_fix, out = timed([py, "-m", "pipeline", "fix", str(clip), "--apply-ms", "120", "-o",
                                        str(out_path), "--json"])
        rep = json.loads(out)
        print(f"  fix --apply-ms 120           {wall_fix:6.2f} s  peak RSS {rss_fix:6.0f} MB  "
              f"applied {rep['applied_shift_ms']} verified {rep['verified_shift_ms']}")
        out_path.unlink()
        wall_full, rss_full, out = timed([py, "-m", "pipeline", "fix", str(clip), "--engine", "syncnet", "--weights",
                                          str(WEIGHTS), "--force", "-o", str(out_path), "--json", "--no-curves"])
        print(f"  fix (measure + write, forced) {wall_full:6.2f} s  peak RSS {rss_full:6.0f} MB  "
              f"(adds {wall_full - wall:+.2f} s to detect; target: at most 3 s)")


if __name__ == "__main__":
    main()
