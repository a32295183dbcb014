"""What the timeline costs on a long clip, and what it finds there: 10 minutes with a slow clock drift.

    .venv/bin/python benchmarks/bench_timeline.py [--minutes 10] [--drift 60]

Clip: the dev set's d12 (a 60 s 256x256 address, the clip the drift tests use) looped to ``--minutes`` by
packet copy, its audio then given a clock drift of ``--drift`` ms per minute by the product's own writer
(:func:`pipeline.correct.write_shifted` removing the opposite drift: a resampling by the clock ratio). A
small frame keeps decoding cheap, so the measuring is most of the time: the hardest case for "the timeline
costs little more than one measurement". Each command runs in a fresh process (wall time, peak RSS):

* ``detect --engine cca --segment-s 0``: today's single measurement;
* ``detect --engine cca``: the same with the timeline (10 s segments, half overlap) and its drift fit.

Printed: both runs' wall times and stage timings, the timeline's share, and the drift found against the
planted one (slope and the lag at both ends).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_pipeline import timed  # noqa: E402
from clips import FIXTURES, loop_clip  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--drift", type=float, default=60.0, help="planted drift, ms per minute (0.1 %% = 60)")
    args = ap.parse_args(argv)
    src = FIXTURES / "dev" / "d12.mp4"
    if not src.exists():
        print(f"needs {src} (the shared dev set beside the checkout)", file=sys.stderr)
        return 2
    from pipeline.correct import write_shifted
    from pipeline.warp import AudioWarp

    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        looped = loop_clip(src, Path(tmp) / "long.mp4", args.minutes * 60)
        clip = Path(tmp) / "long_drift.mp4"
        write_shifted(looped, clip, AudioWarp(0.0, -args.drift))  # removing -D adds +D ms per minute
        print(f"clip: d12 looped to {args.minutes:g} min (256x256 25 fps), audio drifting {args.drift:+g} ms per "
              f"minute; {os.cpu_count()} CPUs")
        base = [py, "-m", "pipeline", "detect", str(clip), "--engine", "cca", "--json", "--no-curves"]
        wall0, rss0, out0 = timed(base + ["--segment-s", "0"])
        one = json.loads(out0)
        wall1, rss1, out1 = timed(base)
        rep = json.loads(out1)
    stages = lambda r: ", ".join(f"{k} {v:.2f}" for k, v in r["timings"].items())  # noqa: E731
    print(f"  one measurement (--segment-s 0)  {wall0:7.2f} s  peak RSS {rss0:5.0f} MB")
    print(f"     stages (s): {stages(one)}")
    print(f"  with the timeline               {wall1:7.2f} s  peak RSS {rss1:5.0f} MB  "
          f"(+{wall1 - wall0:.2f} s, {100 * (wall1 / wall0 - 1):+.0f} %)")
    print(f"     stages (s): {stages(rep)}")
    t = rep["timings"]
    print(f"     timeline {t.get('timeline_s', 0):.2f} s for {len(rep['timeline'])} segments "
          f"({sum(s['audio_lag_ms'] is not None for s in rep['timeline'])} confident) beside scoring "
          f"{t['scoring_s']:.2f} s")
    d = rep["drift"]
    print(f"  drift found: {d['kind']}, {d['ms_per_minute']:+.1f} ms per minute (planted {args.drift:+g}), "
          f"{d['start_lag_ms']} -> {d['end_lag_ms']} ms over {d['start_s']}-{d['end_s']} s; {d['reason']}")
    print(f"  decision {rep['decision']}: {rep['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
