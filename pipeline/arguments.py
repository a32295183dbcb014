"""The command line's measuring options, shared by ``detect``, ``fix`` and ``batch``, and their checks.

Only argparse definitions and the conversion to :class:`~pipeline.sync.SyncOptions` live here, so the
batch can build its own command from them without importing the command line that includes it.
"""

from __future__ import annotations

import argparse
import os

from .engines import ENGINES
from .sync import DEFAULT_MAX_ITERATIONS, DEFAULT_SEARCH_MS, DEFAULT_TOLERANCE_MS, MAX_USER_SEARCH_MS, SyncOptions
from .timeline import DEFAULT_SEGMENT_S


def _env_float(name: str) -> float | None:
    value = os.environ.get(name)
    return float(value) if value else None


def cli_defaults() -> dict:
    """The command line's defaults that come from the environment: the one place they are read.

    ``$SYNCFIX_MAX_DURATION_S`` and ``$SYNCFIX_MAX_UPLOAD_MB`` (the app's limits) also bound the CLI and the
    batch when set; unset, there is no limit. Read when called, not at import, so a caller's environment
    counts.
    """
    return {"max_duration_s": _env_float("SYNCFIX_MAX_DURATION_S"),
            "max_size_mb": _env_float("SYNCFIX_MAX_UPLOAD_MB")}


def add_options(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--segment-s", type=float, default=DEFAULT_SEGMENT_S,
                   help=f"timeline segments: the lag along the clip, read in overlapping windows of this many "
                        f"seconds, and its drift (default {DEFAULT_SEGMENT_S:.0f}; 0: no timeline)")
    p.add_argument("--no-drift", action="store_true",
                   help="a drift or step the timeline finds is reported but not acted on: one constant correction")
    defaults = cli_defaults()
    p.add_argument("--max-duration-s", type=float, default=defaults["max_duration_s"],
                   help="refuse longer videos (default: $SYNCFIX_MAX_DURATION_S, else no limit)")
    p.add_argument("--max-size-mb", type=float, default=defaults["max_size_mb"],
                   help="refuse larger files (default: $SYNCFIX_MAX_UPLOAD_MB, else no limit)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("-v", "--verbose", action="store_true", help="log details on stderr")


def sync_options(args: argparse.Namespace) -> SyncOptions:
    """The measuring options from the command line (checked by :class:`SyncOptions` itself: UserError)."""
    return SyncOptions(engine=args.engine, weights=args.weights, device=args.device,
                       max_iterations=args.max_iterations, tolerance_ms=args.tolerance_ms,
                       min_confidence=args.min_confidence, search_ms=args.search_ms, segment_s=args.segment_s,
                       drift=not args.no_drift)
