"""``python -m syncnet``: ``score`` a face-crop clip as the reference demo does, ``download`` the weights.

Exit codes: 0 done, 2 bad input or missing weights (one line on stderr), 1 a bug.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from .inference import CropSizeError
from .media import MediaError
from .score import ClipScore, score_video
from .scoring import DEFAULT_VSHIFT
from .weights import WeightsError

log = logging.getLogger(__name__)


def _format_text(result: ClipScore) -> str:
    s = result.score
    return (f"AV offset:  {s.offset_frames:d}\nMin dist:   {s.min_dist:.3f}\nConfidence: {s.confidence:.3f}\n"
            f"Audio lag:  {s.audio_lag_ms:+.1f} ms{'  (at the edge of the search range)' if s.edge else ''}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m syncnet", description="SyncNet audio-visual sync scoring.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)
    sc = sub.add_parser("score", help="score a 224x224 face-crop clip like the reference demo")
    sc.add_argument("video", help="a square ~224x224 face-crop video with audio")
    sc.add_argument("--weights",
                    help="syncnet_v2.model (default: weights/ or $SYNCNET_WEIGHTS_DIR, downloaded if missing)")
    sc.add_argument("--vshift", type=int, default=DEFAULT_VSHIFT, help="search +/-N frames of 40 ms (default 15)")
    sc.add_argument("--dists", action="store_true", help="include the windows x shifts distance matrix")
    sc.add_argument("--json", action="store_true", help="print one JSON object")
    sc.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    sc.add_argument("--batch-size", type=int, help="lip windows per forward pass (default: 5 on CPU, 64 on CUDA)")
    dl = sub.add_parser("download", help="download and verify syncnet_v2.model")
    dl.add_argument("--dir", help="folder to save it in (default: weights/ or $SYNCNET_WEIGHTS_DIR)")
    dl.add_argument("--force", action="store_true", help="download again even if a valid file is present")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 2 bad input or missing weights (one line on stderr), 1 a bug."""
    from . import load_model
    from .weights import checksum_report, default_weights_path, download, syncnet_spec, verify_file

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "download":
            spec = syncnet_spec()
            dest = Path(args.dir) / spec.filename if args.dir else default_weights_path()
            if dest.is_file() and not args.force:
                verify_file(dest, spec)
                print(f"{dest} is present and valid")
            else:
                dest = download(spec, dest, progress=sys.stderr.isatty())
                print(dest)
            report = checksum_report(dest, spec)
            print(report.message, file=sys.stdout if report.matches_known is not False else sys.stderr)
            return 0
        if args.vshift < 1:
            raise ValueError("--vshift must be at least 1")
        embedder = load_model(args.weights, device=args.device, batch_size=args.batch_size,
                              progress=sys.stderr.isatty())
        result = score_video(args.video, embedder, vshift=args.vshift, progress=sys.stderr.isatty())
    except (MediaError, CropSizeError, WeightsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        out = result.to_dict(include_dists=args.dists)
        out["device"] = str(embedder.device)
        print(json.dumps(out))
    else:
        print(_format_text(result))
        if args.dists:
            np.savetxt(sys.stdout, result.score.dists, fmt="%.5f")
    return 0
