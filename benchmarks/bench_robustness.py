"""Robustness figures: a 30-minute clip end to end, and 8 users at once through the app's API.

* 30 minutes: ``w2l_input2.mp4`` looped to 30 min (packet copy); ``detect --engine cca`` and ``fix
  --apply-ms 120`` in fresh processes; wall time and each process's peak RSS (memory must stay bounded).
* 8 users: an in-process app server (2 jobs at a time) and 8 simultaneous ``/sync`` calls through
  gradio_client, each with its own shifted copy of example.avi; wall time, peak RSS of this process (the
  server), and failures (each result is checked against its own shift).

    python benchmarks/bench_robustness.py [--minutes 30]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import timed  # noqa: E402
from clips import FIXTURES, ROOT, loop_clip  # noqa: E402


def long_clip(minutes: float, tmp: Path) -> None:
    clip = loop_clip(FIXTURES / "w2l_input2.mp4", tmp / "long.mp4", minutes * 60)
    print(f"{minutes:g}-minute clip (w2l_input2 looped, 1280x720 29.97 fps), {clip.stat().st_size / 1e6:.0f} MB")
    wall, rss, out = timed([sys.executable, "-m", "pipeline", "detect", str(clip), "--engine", "cca", "--json",
                            "--no-curves"])
    rep = json.loads(out)
    print(f"  detect --engine cca   {wall:7.1f} s  ({wall / (minutes * 60):.3f} s per s of video)  peak RSS "
          f"{rss:6.0f} MB  decision {rep['decision']} {rep['audio_lag_ms']} ms (conf {rep['confidence']})")
    print("     stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in rep["timings"].items()))
    wall, rss, out = timed([sys.executable, "-m", "pipeline", "fix", str(clip), "--apply-ms", "120", "-o",
                            str(tmp / "long.fixed.mp4"), "--json"])
    rep = json.loads(out)
    print(f"  fix --apply-ms 120    {wall:7.1f} s  peak RSS {rss:6.0f} MB  verified {rep['verified_shift_ms']} ms")


def eight_users(tmp: Path) -> None:
    import dataclasses

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    from gradio_client import Client, handle_file

    import app
    from pipeline.correct import write_shifted

    shifts = [-300.0, -190.0, -75.5, 0.0, 60.0, 145.5, 230.0, 310.0]
    clips = []
    for i, d in enumerate(shifts):
        dst = tmp / f"user{i}.avi"
        write_shifted(FIXTURES / "example.avi", dst, -d)
        clips.append((dst, -120.0 + d))
    settings = dataclasses.replace(app.SETTINGS, concurrency=2, queue_size=16)
    demo = app.build_demo(settings)
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    failures = 0
    try:
        client = Client(demo.local_url, verbose=False)
        t0 = time.perf_counter()
        jobs = [client.submit(handle_file(str(p)), "cca", 600, 3, None, 20, None, api_name="/sync") for p, _ in clips]
        for job, (_, expected) in zip(jobs, clips):
            try:
                rep = json.loads(Path(job.result(timeout=900)[5]).read_text())
                failures += abs(rep["audio_lag_ms"] - expected) > 20
            except Exception as exc:  # noqa: BLE001 - a failure is what we count
                print("  failure:", exc)
                failures += 1
        wall = time.perf_counter() - t0
    finally:
        demo.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"8 simultaneous /sync calls (12.7 s clips, 2 at a time): {wall:.1f} s, peak RSS {rss:.0f} MB, "
          f"failures: {failures}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        long_clip(args.minutes, Path(tmp))
        eight_users(Path(tmp))


if __name__ == "__main__":
    main()
