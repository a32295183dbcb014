"""``python -m pipeline detect|fix``: measure a video's lip-sync offset, or write a corrected copy.

Public interface (names and JSON fields are contracts):

* ``detect VIDEO [--engine syncnet|auto] [--weights PATH] --json``: one JSON object with at least
  ``audio_lag_ms`` (null when uncertain), ``confidence``, ``decision`` (in_sync|shift|uncertain),
  ``reason``, ``engine``, ``fps``, ``duration_s``, ``tracks``, ``iterations``, ``elapsed_s``.
* ``fix VIDEO [-o OUT] [--apply-ms MS] [--force] [--max-iterations N] --json``: the same plus ``output``,
  ``applied_shift_ms`` and ``verified_shift_ms``.
* ``batch INPUT... -o OUTDIR [--workers N] [--ray [ADDRESS]] --json``: ``fix`` over collections, resumable
  (see :mod:`pipeline.batch`).

Exit codes: 0 done (in sync and uncertain included), 2 bad input (one line on stderr), 1 a bug.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from syncnet.media import MediaError
from syncnet.weights import WeightsError

from .engines import ENGINES, EngineUnavailable, select_engines
from .media import MediaInfo
from .sync import (
    DEFAULT_MAX_ITERATIONS,
    DEFAULT_SEARCH_MS,
    DEFAULT_TOLERANCE_MS,
    MAX_USER_SEARCH_MS,
    SyncOptions,
    SyncResult,
    sync_video,
)

log = logging.getLogger(__name__)


class UserError(Exception):
    """Bad input or environment: reported in one line, exit code 2."""


def _env_float(name: str) -> float | None:
    value = os.environ.get(name)
    return float(value) if value else None


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="the video file")
    _add_options(p)
    p.add_argument("--no-curves", action="store_true", help="leave the score curves out of the JSON")


def _add_options(p: argparse.ArgumentParser) -> None:
    """The measuring options that detect, fix and batch share."""
    p.add_argument("--engine", default="auto", choices=list(ENGINES),
                   help="auto (default): SyncNet when its weights are present (cca cross-checks), else the "
                        "weight-free cca; both: SyncNet and cca, reporting their agreement")
    p.add_argument("--weights", help="syncnet_v2.model (default: weights/ or $SYNCNET_WEIGHTS_DIR)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--max-iterations", type=int, default=DEFAULT_MAX_ITERATIONS,
                   help=f"measure-shift-verify iterations (default {DEFAULT_MAX_ITERATIONS})")
    p.add_argument("--tolerance-ms", type=float, default=DEFAULT_TOLERANCE_MS,
                   help=f"|lag| below this is in sync (default {DEFAULT_TOLERANCE_MS:.0f})")
    p.add_argument("--min-confidence", type=float, help="confidence needed to act (default: the engine's)")
    p.add_argument("--search-ms", type=float, default=DEFAULT_SEARCH_MS,
                   help=f"initial search range +/-ms, up to {MAX_USER_SEARCH_MS:.0f}; SyncNet widens it up to 2000 at "
                        f"need, cca always searches at least +/-3000 (default {DEFAULT_SEARCH_MS:.0f})")
    p.add_argument("--max-duration-s", type=float, default=_env_float("SYNCFIX_MAX_DURATION_S"),
                   help="refuse longer videos (default: $SYNCFIX_MAX_DURATION_S, else no limit)")
    p.add_argument("--max-size-mb", type=float, default=_env_float("SYNCFIX_MAX_UPLOAD_MB"),
                   help="refuse larger files (default: $SYNCFIX_MAX_UPLOAD_MB, else no limit)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("-v", "--verbose", action="store_true", help="log details on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description="Measure and fix lip-sync offsets.")
    sub = parser.add_subparsers(dest="command", required=True)
    det = sub.add_parser("detect", help="measure the offset between lips and sound")
    _add_common(det)
    fix = sub.add_parser("fix", help="write a copy with the audio shifted into sync")
    _add_common(fix)
    fix.add_argument("-o", "--output", help="output file (default: beside the input, never overwriting it)")
    fix.add_argument("--apply-ms", type=float,
                     help="skip measuring and remove this known lag (an audio_lag_ms: > 0 moves the audio earlier)")
    fix.add_argument("--force", action="store_true", help="apply the measured shift even when it is uncertain")
    from .batch import add_batch_parser

    add_batch_parser(sub, _add_options)
    return parser


def sync_options(args: argparse.Namespace) -> SyncOptions:
    """The measuring options from the command line, checked (UserError for a value out of range)."""
    if args.max_iterations < 1:
        raise UserError("--max-iterations must be at least 1")
    if not 0 < args.search_ms <= MAX_USER_SEARCH_MS:
        raise UserError(f"--search-ms must be between 0 and {MAX_USER_SEARCH_MS:.0f}")
    return SyncOptions(engine=args.engine, weights=args.weights, device=args.device,
                       max_iterations=args.max_iterations, tolerance_ms=args.tolerance_ms,
                       min_confidence=args.min_confidence, search_ms=args.search_ms)


def _progress_bar(enabled: bool):
    """A tqdm bar on stderr driven by the generator's (stage, fraction) progress calls."""
    if not enabled:
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=100, file=sys.stderr, leave=False, bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}")

    def update(stage: str, frac: float) -> None:
        bar.set_description_str(stage)
        bar.n = int(frac * 100)
        bar.refresh()

    return bar, update


def measure(path: Path, opts: SyncOptions, progress: bool, info: MediaInfo | None = None) -> SyncResult:
    choice = select_engines(opts.engine, opts.weights, opts.device, opts.min_confidence)
    bar, update = _progress_bar(progress)
    result = None
    try:
        for ev in sync_video(path, choice.primary, opts, engine_reason=choice.reason, cross_check=choice.cross_check,
                             info=info, progress=update):
            if isinstance(ev, SyncResult):
                result = ev
            else:
                log.info("iteration %d: lag %+.1f ms (residual %+.1f), confidence %.3f", ev.iteration,
                         ev.audio_lag_ms, ev.residual_ms, ev.confidence)
    finally:
        if bar is not None:
            bar.close()
    assert result is not None
    return result


def _checked(args: argparse.Namespace) -> tuple[Path, MediaInfo]:
    return checked_input(args.video, args.max_duration_s, args.max_size_mb)


def checked_input(video: str | Path, max_duration_s: float | None = None,
                  max_size_mb: float | None = None) -> tuple[Path, MediaInfo]:
    """The input path and its facts, probed once and within the limits (UserError/MediaError otherwise)."""
    from .media import check_limits, probe

    path = _input(str(video))
    info = probe(path)
    max_bytes = int(max_size_mb * 1e6) if max_size_mb is not None else None
    check_limits(info, max_duration_s, max_bytes)
    return path, info


def run_detect(args: argparse.Namespace) -> dict:
    path, info = _checked(args)
    result = measure(path, sync_options(args), sys.stderr.isatty(), info)
    return result.to_report(curves=not args.no_curves)


def run_fix(args: argparse.Namespace) -> dict:
    from .correct import default_output_path

    t0 = time.perf_counter()
    path, info = _checked(args)
    out = Path(args.output) if args.output else default_output_path(path)
    report = fix_video(path, info, out, None if args.apply_ms is not None else sync_options(args),
                       apply_ms=args.apply_ms, force=args.force, curves=not args.no_curves,
                       progress=sys.stderr.isatty())
    report["elapsed_s"] = round(time.perf_counter() - t0, 3)
    return report


def fix_video(path: Path, info: MediaInfo, out: Path, opts: SyncOptions | None, *, apply_ms: float | None = None,
              force: bool = False, curves: bool = True, progress: bool = False) -> dict:
    """Measure (unless ``apply_ms`` is given), decide, and write the corrected copy to ``out`` when it shifts.

    This is the whole of ``fix`` once its input is probed: the batch runs exactly this per video, so a batch
    and ``fix`` one by one give the same results. Returns the report (the ``detect`` fields plus ``output``,
    ``applied_shift_ms`` and ``verified_shift_ms``). Raises :class:`UserError` for an output that would
    replace the input or change its container.
    """
    from .correct import measure_shift, write_shifted

    if out.resolve() == path.resolve():
        raise UserError("the output must not be the input file: choose another -o")
    if out.suffix.lower() != path.suffix.lower():
        raise UserError(f"the output keeps the input's container: use a {path.suffix} name for -o")
    if apply_ms is not None:
        report = {"audio_lag_ms": apply_ms, "confidence": None, "p_correct": None, "decision": "shift",
                  "reason": f"applied as requested: remove {apply_ms:+.1f} ms (--apply-ms)",
                  "engine": "manual", "engine_reason": "--apply-ms given: nothing measured",
                  "fps": info.video.fps if info.video else None, "duration_s": info.duration_s, "tracks": [],
                  "iterations": [], "input": info.to_dict()}
        lag: float | None = apply_ms
    else:
        assert opts is not None, "options are needed to measure"
        result = measure(path, opts, progress, info)
        report = result.to_report(curves=curves)
        lag = result.audio_lag_ms
        if result.decision == "uncertain" and force and result.measured_lag_ms is not None:
            lag = result.measured_lag_ms
            report["reason"] += f"; applied anyway (--force): {lag:+.1f} ms"
        elif result.decision != "shift":
            lag = None
    report.update(output=None, applied_shift_ms=0.0, verified_shift_ms=None)
    if lag is not None:
        written = write_shifted(path, out, lag)
        verified = measure_shift(path, written.output)
        report.update(output=str(written.output), applied_shift_ms=round(written.applied_shift_ms, 3),
                      verified_shift_ms=round(verified, 3))
        if abs(verified - written.applied_shift_ms) > 1.0:
            log.warning("the written file measures %+.2f ms against the input, expected %+.2f ms", verified,
                        written.applied_shift_ms)
    return report


def _input(video: str) -> Path:
    p = Path(video)
    if not p.exists():
        raise UserError(f"{video}: no such file")
    if p.is_dir():
        raise UserError(f"{video}: is a folder, not a video file")
    return p


def _print_human(report: dict) -> None:
    lag = report.get("audio_lag_ms")
    print(f"decision: {report['decision']} ({report['reason']})")
    if lag is not None:
        print(f"audio lag: {lag:+.1f} ms (> 0: the sound comes after the lips)")
    if report.get("confidence") is not None:
        chance = "" if report.get("p_correct") is None else f", p_correct {report['p_correct']:.2f}"
        print(f"confidence: {report['confidence']:.3f} ({report['engine']}{chance})")
    if report.get("output"):
        print(f"written: {report['output']} (shifted {report['applied_shift_ms']:+.1f} ms, "
              f"verified {report['verified_shift_ms']:+.1f} ms)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    code = 0
    try:
        if args.command == "batch":
            from .batch import format_summary, run_batch

            summary, code = run_batch(args)
            report = summary.to_dict()
        else:
            report = run_detect(args) if args.command == "detect" else run_fix(args)
    except (UserError, MediaError, WeightsError, EngineUnavailable) as exc:
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
