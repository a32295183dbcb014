"""Benchmark clips made from the shared fixtures (never committed): e.g. a clip looped to 60 s by remuxing.

Looping copies packets (no re-encode): loop k is shifted by k times the video's length, so lips and
sound stay in step within each loop; audio packets that would overlap the next loop are dropped.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SYNCFIX_SHARED", ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures"


def loop_clip(src: Path, dest: Path, seconds: float) -> Path:
    """``src`` repeated and cut to ``seconds``, by packet copy (cut at the packet level)."""
    with av.open(str(src)) as inp:
        v = inp.streams.video[0]
        period = Fraction(v.duration or 0) * v.time_base if v.duration else Fraction(inp.duration, 1_000_000)
    with av.open(str(src)) as inp, av.open(str(dest), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams if s.type in ("video", "audio")}
        last_dts: dict[int, int] = {}
        loops = int(-(-Fraction(seconds) // period))
        for k in range(loops):
            inp.seek(0)
            for p in inp.demux():
                if p.stream.index not in streams or p.dts is None:
                    continue
                if k and p.stream.type == "audio" and p.pts is not None and p.pts < 0:
                    continue  # encoder priming of a later loop
                off = int(round(k * period / p.stream.time_base))
                dts = p.dts + off
                if dts <= last_dts.get(p.stream.index, -(1 << 62)):
                    continue
                if p.stream.type == "audio" and Fraction(dts) * p.stream.time_base >= (k + 1) * period:
                    continue  # audio that runs past this loop's video
                if p.pts is not None and Fraction(p.pts + off) * p.stream.time_base >= seconds:
                    continue  # past the requested length
                last_dts[p.stream.index] = dts
                p.pts = p.pts + off if p.pts is not None else None
                p.dts = dts
                p.stream = streams[p.stream.index]
                out.mux(p)
    return dest
