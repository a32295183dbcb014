"""Speed and memory of the pipeline against issue 14's targets: ratios to the decode floor, peak RSS, stages.

Clip: ``../shared/fixtures/w2l_input2.mp4`` (1280x720, 29.97 fps H.264 + AAC) looped to 60 s (and, unless
``--no-long``, to 10 minutes) by packet copy (see clips.py). Each command runs in a fresh process, timed from
spawn to exit, with its peak RSS; each is run ``--repeat`` times (default 2) and the best is kept, and every
ratio is to the floor measured in the same run, alongside the command: the floor and the command run
alternately (floor, command, floor, command), best of each, because this shared machine's speed drifts by
more over a few minutes (the floor alone read 2.9 to 4.2 s within an hour) than the margins measured here.
The floor of the run's first minute is printed too:

* floor: FFmpeg's command line decoding the clip to nothing (imageio-ffmpeg's binary), else PyAV's decode;
* start-up: ``python -c "import pipeline.cli"`` (interpreter and the command's imports);
* ``detect --engine cca`` on the minute and on ten minutes;
* ``detect --engine syncnet`` with the random golden weights (speed does not depend on the values; with
  random weights the curve is flat, so the engine also takes its slowest path: every block, the search
  widened to +/-2 s);
* ``fix --engine cca --force`` (what fixing adds to detecting: ``detect`` and ``fix`` run alternately, best of
  each) and ``fix --apply-ms 120`` (writing and
  verifying only).

Each detect prints its stages from the report (decode and tracking, of which face detection and crops;
scoring; timeline). The last lines compare with the targets: PASS or MISS with the measured value.

    python benchmarks/bench_pipeline.py [--repeat 2] [--no-long]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clips import FIXTURES, ROOT, SHARED, loop_clip  # noqa: E402

WEIGHTS = SHARED / "golden" / "syncnet_v2_random.model"

#: Issue 14's targets: (what, limit, unit).
TARGETS = {
    "cca_60s_ratio": 3.0, "cca_60s_rss_mb": 600.0, "cca_10min_ratio": 3.5, "cca_10min_rss_mb": 800.0,
    "fix_adds_s": 1.5, "syncnet_ratio": 6.0, "syncnet_rss_mb": 900.0,
}


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


def best_of(cmd: list[str], repeat: int) -> tuple[float, float, str]:
    """The fastest of ``repeat`` runs (its stdout), and the largest peak RSS seen."""
    runs = [timed(cmd) for _ in range(max(1, repeat))]
    fastest = min(runs, key=lambda r: r[0])
    return fastest[0], max(r[1] for r in runs), fastest[2]


def pyav_decode_floor(clip: Path) -> float:
    import av

    t0 = time.perf_counter()
    with av.open(str(clip)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for _ in c.decode(s):
            pass
    return time.perf_counter() - t0


def floor_runner(clip: Path) -> tuple[Callable[[], float], str]:
    """One timed run of the decode floor of ``clip`` (FFmpeg's command line, else PyAV), and its name."""
    try:
        import imageio_ffmpeg

        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(clip), "-f", "null", "-"]
    except (ImportError, RuntimeError):  # no package, or no binary for this platform
        return (lambda: pyav_decode_floor(clip)), "PyAV decode (no ffmpeg CLI)"
    return (lambda: timed(cmd)[0]), "ffmpeg CLI"


def alongside(cmd: list[str], floor_once: Callable[[], float], repeat: int) -> tuple[float, float, str, float]:
    """``cmd`` and the decode floor run alternately ``repeat`` times: (best wall, largest peak RSS, stdout of
    the best run, best floor of those minutes)."""
    runs, floors = [], []
    for _ in range(max(1, repeat)):
        floors.append(floor_once())
        runs.append(timed(cmd))
    fastest = min(runs, key=lambda r: r[0])
    return fastest[0], max(r[1] for r in runs), fastest[2], min(floors)


def stages(report: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in report["timings"].items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=2, help="runs per command; the best is kept")
    ap.add_argument("--no-long", action="store_true", help="skip the 10-minute clip")
    args = ap.parse_args(argv)
    if not (FIXTURES / "w2l_input2.mp4").exists() or not WEIGHTS.exists():
        print(f"needs {FIXTURES / 'w2l_input2.mp4'} and {WEIGHTS} (the shared fixtures beside the checkout)",
              file=sys.stderr)
        return 2
    py, r = sys.executable, args.repeat
    got: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        clip = loop_clip(FIXTURES / "w2l_input2.mp4", Path(tmp) / "w2l_60s.mp4", 60.0)
        floor_once, how = floor_runner(clip)
        floor = min(floor_once() for _ in range(r))
        print(f"clip: w2l_input2.mp4 looped to 60 s, 1280x720 29.97 fps; {os.cpu_count()} CPUs; best of {r}")
        print(f"  floor: {how:28s} {floor:6.2f} s  (first minute of the run; each ratio below is to the floor "
              "run alongside the command)")
        start, _, _ = best_of([py, "-c", "import pipeline.cli"], r)
        print(f"  start-up and imports          {start:6.2f} s")

        def detect(name: str, target: Path, floor_once: Callable[[], float], *extra: str) -> dict:
            wall, rss, out, floor = alongside([py, "-m", "pipeline", "detect", str(target), "--json", "--no-curves",
                                               *extra], floor_once, r)
            rep = json.loads(out)
            print(f"  {name:29s} {wall:6.2f} s  ({wall / floor:4.2f}x the floor of {floor:.2f} s alongside)  "
                  f"peak RSS {rss:6.0f} MB")
            print(f"     stages (s): {stages(rep)}")
            print(f"     decision {rep['decision']}, lag {rep['audio_lag_ms']}, confidence {rep['confidence']}")
            return {"wall": wall, "rss": rss, "report": rep, "ratio": wall / floor}

        cca = detect("detect --engine cca", clip, floor_once, "--engine", "cca")
        got["cca_60s_ratio"], got["cca_60s_rss_mb"] = cca["ratio"], cca["rss"]
        sn = detect("detect --engine syncnet", clip, floor_once, "--engine", "syncnet", "--weights", str(WEIGHTS))
        got["syncnet_ratio"], got["syncnet_rss_mb"] = sn["ratio"], sn["rss"]
        est = sn["report"]["iterations"][0]["estimate"]
        print(f"     windows {est['windows']}, search +/-{est['search_ms']:.0f} ms (random weights: flat curve)")

        # What fixing adds: detect and fix run alternately, so both see the machine at the same speed (its
        # speed drifts by several percent over minutes here, as much as the difference being measured).
        out_path = Path(tmp) / "fixed.mp4"
        det_walls, fix_walls = [], []
        for _ in range(r):
            det_walls.append(timed([py, "-m", "pipeline", "detect", str(clip), "--engine", "cca", "--json",
                                    "--no-curves"])[0])
            out_path.unlink(missing_ok=True)
            fix_walls.append(timed([py, "-m", "pipeline", "fix", str(clip), "--engine", "cca", "--force", "-o",
                                    str(out_path), "--json", "--no-curves"])[0])
        got["fix_adds_s"] = min(fix_walls) - min(det_walls)
        pairs = ", ".join(f"{f - d:+.2f}" for d, f in zip(det_walls, fix_walls))
        print(f"  fix --engine cca --force      {min(fix_walls):6.2f} s  (adds {got['fix_adds_s']:+.2f} s to "
              f"detect's {min(det_walls):.2f} s run alternately; pair by pair {pairs})")
        walls = []
        for _ in range(r):
            out_path.unlink(missing_ok=True)
            walls.append(timed([py, "-m", "pipeline", "fix", str(clip), "--apply-ms", "120", "-o", str(out_path),
                                "--json"])[0])
        print(f"  fix --apply-ms 120            {min(walls):6.2f} s  (writing and verifying only)")

        if not args.no_long:
            long_clip = loop_clip(FIXTURES / "w2l_input2.mp4", Path(tmp) / "w2l_10min.mp4", 600.0)
            print("clip: the same looped to 10 minutes")
            long = detect("detect --engine cca (10 min)", long_clip, floor_runner(long_clip)[0], "--engine", "cca")
            got["cca_10min_ratio"], got["cca_10min_rss_mb"] = long["ratio"], long["rss"]

    print("\ntargets (issue 14):")
    for key, limit in TARGETS.items():
        if key in got:
            print(f"  {key:18s} {got[key]:8.2f}  target <= {limit:g}  {'PASS' if got[key] <= limit else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
