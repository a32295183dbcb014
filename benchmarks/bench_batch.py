"""Batch throughput: videos per minute with 1 and 2 local workers and on a local Ray instance; memory per worker.

Collection (built in a temp folder from ../shared/fixtures, never committed), 12 videos, ~6 minutes of media:

* w2l_input2 (1280x720 29.97 fps H.264/AAC, 14.2 s) with the sound moved by -200, -80, +120, +300 ms;
* w2l_input2 looped to 60 s (packet copy), twice, moved by +150 and -250 ms;
* example.avi and synced_example.avi (224x224 25 fps MPEG-4/PCM, 12.7 s) and two shifted copies (+240, -100 ms);
* w2l_input3 (600x480, 7.4 s) and w2l_input4 (850x480, 7.0 s) as they are.

Each configuration is one ``python -m pipeline batch`` process into a fresh OUTDIR (wall time from spawn to
exit, so worker start-up and Ray's start count). Memory per worker is the peak RSS each worker process
reports with its lines (``worker_peak_rss_mb``). Also: the SyncNet engine (random golden weights: speed
does not depend on the values) on 2 workers, the time a finished batch takes to resume (hashing only), and
where a worker's time goes (stage timings summed over the videos), which is what the GPU estimate in the
README starts from.

    python benchmarks/bench_batch.py [--skip-ray] [--skip-syncnet]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import WEIGHTS, timed  # noqa: E402
from clips import FIXTURES, ROOT, loop_clip  # noqa: E402

sys.path.insert(0, str(ROOT))


def build_collection(root: Path) -> float:
    """The 12 videos under ``root``; returns their total duration in seconds."""
    from pipeline.correct import write_shifted
    from pipeline.media import probe

    (root / "hd").mkdir(parents=True)
    (root / "long").mkdir()
    (root / "small").mkdir()
    w2l = FIXTURES / "w2l_input2.mp4"
    for ms in (-200, -80, 120, 300):
        write_shifted(w2l, root / "hd" / f"w2l_{ms:+d}.mp4", -ms)  # a lag of ms: the sound ms after the lips
    looped = loop_clip(w2l, root / "long" / "loop60.mp4", 60)
    for ms in (150, -250):
        write_shifted(looped, root / "long" / f"loop60_{ms:+d}.mp4", -ms)
    looped.unlink()
    for name in ("example.avi", "synced_example.avi"):
        (root / "small" / name).write_bytes((FIXTURES / name).read_bytes())
    for ms in (240, -100):
        write_shifted(FIXTURES / "synced_example.avi", root / "small" / f"synced_{ms:+d}.avi", -ms)
    for name in ("w2l_input3.mp4", "w2l_input4.mp4"):
        (root / "small" / name).write_bytes((FIXTURES / name).read_bytes())
    return sum(probe(p).duration_s for p in root.rglob("*") if p.is_file())


def run(collection: Path, out: Path, *extra: str) -> tuple[float, float, dict, list[dict]]:
    cmd = [sys.executable, "-m", "pipeline", "batch", str(collection), "-o", str(out), "--json", "--no-progress",
           *extra]
    wall, driver_rss, stdout = timed(cmd)
    lines = [json.loads(line) for line in (out / "report.jsonl").read_text().splitlines()]
    return wall, driver_rss, json.loads(stdout), lines


def describe(label: str, media_s: float, wall: float, driver_rss: float, summary: dict, lines: list[dict]) -> None:
    per_worker: dict[int, float] = defaultdict(float)
    for r in lines:
        per_worker[r["pid"]] = max(per_worker[r["pid"]], r.get("worker_peak_rss_mb") or 0)
    busy = sum(r["elapsed_s"] for r in lines)
    rss = sorted(per_worker.values())
    print(f"{label:<28} {wall:6.1f} s  {len(lines) / (wall / 60):5.1f} videos/min  "
          f"{media_s / wall:5.2f} s of media per s  worker peak RSS {rss[0]:.0f}-{rss[-1]:.0f} MB "
          f"({len(rss)} workers)  driver and waited children {driver_rss:.0f} MB  busy {busy:.0f} s  "
          f"counts {summary['counts']}")


def stages(lines: list[dict]) -> str:
    total: dict[str, float] = defaultdict(float)
    for r in lines:
        for k, v in (r.get("timings") or {}).items():
            total[k] += v
    return ", ".join(f"{k} {v:.1f}" for k, v in total.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--skip-syncnet", action="store_true")
    args = ap.parse_args()
    if not (FIXTURES / "w2l_input2.mp4").exists():
        sys.exit(f"needs {FIXTURES} (the shared fixtures beside the checkout)")
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        col = Path(tmp) / "collection"
        media_s = build_collection(col)
        n = sum(1 for p in col.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in col.rglob("*") if p.is_file()) / 1e6
        print(f"collection: {n} videos, {media_s:.0f} s of media, {size:.0f} MB; engine cca unless stated\n")
        configs = [("local pool, 1 worker", ["--workers", "1", "--engine", "cca"]),
                   ("local pool, 2 workers", ["--workers", "2", "--engine", "cca"])]
        if not args.skip_ray:
            configs.append(("local Ray, 2 CPUs", ["--ray", "--workers", "2", "--engine", "cca"]))
        if not args.skip_syncnet and WEIGHTS.exists():
            configs.append(("syncnet engine, 2 workers", ["--workers", "2", "--engine", "syncnet", "--weights",
                                                          str(WEIGHTS)]))
        for i, (label, extra) in enumerate(configs):
            out = Path(tmp) / f"out{i}"
            wall, drss, summary, lines = run(col, out, *extra)
            describe(label, media_s, wall, drss, summary, lines)
            print(f"{'':<28} stage seconds summed over videos: {stages(lines)}")
            if i == 1:
                wall2, _, again, _ = run(col, out, *extra)
                print(f"{'  rerun of a finished batch':<28} {wall2:6.1f} s  (skipped {again['skipped']}, "
                      f"processed {again['processed']})")


if __name__ == "__main__":
    main()
