"""``python -m pipeline detect|fix``: measure a video's lip-sync offset, or write a corrected copy.

Public interface (names and JSON fields are contracts):

* ``detect VIDEO [--engine syncnet|auto] [--weights PATH] [--segment-s S] --json``: one JSON object with at
  least ``audio_lag_ms`` (null when uncertain), ``confidence``, ``decision`` (in_sync|shift|uncertain),
  ``reason``, ``engine``, ``fps``, ``duration_s``, ``tracks``, ``iterations``, ``elapsed_s``, ``timeline``
  (the lag per segment) and ``drift`` (none|linear|steps, see :mod:`pipeline.timeline`).
* ``fix VIDEO [-o OUT] [--apply-ms MS [--drift-ms-per-min D]] [--no-drift] [--force] --json``: the same
  plus ``output``, ``applied_shift_ms`` and ``verified_shift_ms``; where a changing lag was removed,
  ``applied_drift``, ``verified_drift`` (window by window) and ``verified_timeline`` (read again).
* ``batch INPUT... -o OUTDIR [--workers N] [--ray [ADDRESS]] --json``: ``fix`` over collections, resumable
  (see :mod:`pipeline.batch`).

Exit codes: 0 done (in sync and uncertain included), 2 bad input (one line on stderr), 1 a bug.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from .arguments import add_options, sync_options
from .errors import USER_FACING, UserError
from .fix import checked_input, fix_video, measure
from .media import MediaInfo

__all__ = ["UserError", "build_parser", "checked_input", "fix_video", "main", "measure", "sync_options"]

log = logging.getLogger(__name__)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="the video file")
    add_options(p)
    p.add_argument("--no-curves", action="store_true", help="leave the score curves out of the JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description="Measure and fix lip-sync offsets.")
    sub = parser.add_subparsers(dest="command", required=True)
    det = sub.add_parser("detect", help="measure the offset between lips and sound")
    _add_common(det)
    det.add_argument("--faces-png", metavar="FILE",
                     help="also write a picture of the faces that were tracked, the measured one boxed in green "
                          "(the app's face picture)")
    fix = sub.add_parser("fix", help="write a copy with the audio shifted into sync")
    _add_common(fix)
    fix.add_argument("-o", "--output", help="output file (default: beside the input, never overwriting it)")
    fix.add_argument("--apply-ms", type=float,
                     help="skip measuring and remove this known lag (an audio_lag_ms: > 0 moves the audio earlier)")
    fix.add_argument("--drift-ms-per-min", type=float, metavar="D",
                     help="with --apply-ms LAG: remove lag(t) = LAG + D * t / 60 (t in s from the start): a known "
                          "clock drift, resampled away")
    fix.add_argument("--force", action="store_true", help="apply the measured shift even when it is uncertain")
    from .batch import add_batch_parser

    add_batch_parser(sub, add_options)
    return parser


def _checked(args: argparse.Namespace) -> tuple[Path, MediaInfo]:
    return checked_input(args.video, args.max_duration_s, args.max_size_mb)


def run_detect(args: argparse.Namespace) -> dict:
    path, info = _checked(args)
    if args.faces_png and Path(args.faces_png).suffix.lower() != ".png":
        raise UserError(f"--faces-png writes a PNG: give a .png name, not {Path(args.faces_png).name!r}")
    result = measure(path, sync_options(args), sys.stderr.isatty(), info)
    report = result.to_report(curves=not args.no_curves)
    if args.faces_png:
        report["faces_png"] = _write_faces_png(result, report, Path(args.faces_png))
    return report


def _write_faces_png(result, report: dict, out: Path) -> str | None:
    """The face picture as a PNG (None, and a warning, when no face was tracked)."""
    import matplotlib.image

    from .facepicture import faces_picture

    picture = faces_picture(result.analysis, report)
    if picture is None:
        log.warning("no face was tracked: %s not written", out)
        return None
    matplotlib.image.imsave(out, picture)
    return str(out)


def run_fix(args: argparse.Namespace) -> dict:
    from .correct import default_output_path

    t0 = time.perf_counter()
    path, info = _checked(args)
    out = Path(args.output) if args.output else default_output_path(path)
    report = fix_video(path, out, None if args.apply_ms is not None else sync_options(args), info=info,
                       apply_ms=args.apply_ms, drift_ms_per_min=args.drift_ms_per_min, force=args.force,
                       curves=not args.no_curves,
                       progress=sys.stderr.isatty())
    report["elapsed_s"] = round(time.perf_counter() - t0, 3)
    return report


def _print_human(report: dict) -> None:
    lag = report.get("audio_lag_ms")
    print(f"decision: {report['decision']} ({report['reason']})")
    if lag is not None:
        print(f"audio lag: {lag:+.1f} ms (> 0: the sound comes after the lips)")
    elif report.get("measured_lag_ms") is not None and report["decision"] == "uncertain":
        print(f"best match, not acted on: {report['measured_lag_ms']:+.1f} ms")
    if report.get("confidence") is not None:
        chance = "" if report.get("p_correct") is None else f", p_correct {report['p_correct']:.2f}"
        print(f"confidence: {report['confidence']:.3f} ({report['engine']}{chance})")
    if report.get("output"):
        print(f"written: {report['output']} (shifted {report['applied_shift_ms']:+.1f} ms, "
              f"verified {report['verified_shift_ms']:+.1f} ms)")
    if len(report.get("tracks") or []) > 1:  # which face was measured matters only when there is a choice
        from .facepicture import face_rows

        for face, scene, when, _, px, lag_ms, conf, _, status in face_rows(report):
            reading = "" if lag_ms is None else f", {lag_ms:+.1f} ms at confidence {conf:.2f}"
            print(f"face {face} (scene {scene}, {when} s, {px} px{reading}): {status}")
    if report.get("faces_png"):
        print(f"faces: {report['faces_png']}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    code = 0
    try:
        if args.command == "batch":
            from .batch import format_summary, request_from_args, run_batch

            summary, code = run_batch(request_from_args(args))
            report = summary.to_dict()
        else:
            report = run_detect(args) if args.command == "detect" else run_fix(args)
    except USER_FACING as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - a bug: say so, with the traceback for the report
        log.exception("unexpected failure")
        return 1
    if args.json:
        print(json.dumps(report))
    elif args.command == "batch":
        print(format_summary(summary))
    else:
        _print_human(report)
    return code
