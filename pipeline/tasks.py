"""One batch task: the settings every video is processed with, and the work a worker does for one video.

Kept apart from :mod:`pipeline.batch` (the driver: inputs, plan, report, summary) so that the executors
which run tasks import only this, and the driver imports the executors: imports run one way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import shutil
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from syncnet.media import MediaError
from syncnet.weights import WeightsError, sha256_of

from .errors import EngineUnavailable, UserError
from .fix import checked_input, fix_video
from .sync import SyncOptions

log = logging.getLogger(__name__)

#: Bumped when a change to the pipeline changes results: finished lines from another version are redone.
PIPELINE_VERSION = "0.1.0"


@dataclass(frozen=True)
class BatchSettings:
    """What every video is processed with: the measuring options plus what the batch adds around a fix.

    The fields that change results make up the fingerprint (not device, threads or the weights' path).
    """

    options: SyncOptions = field(default_factory=SyncOptions)
    force: bool = False
    max_duration_s: float | None = None
    max_size_mb: float | None = None
    copy_in_sync: bool = False
    threads: int = 1  #: CPU threads per worker (torch, onnxruntime, BLAS)
    weights_sha256: str | None = None  #: identity of the weights the engine reads (None: none used)

    def to_dict(self) -> dict:
        """Flat, as ``summary.json``'s ``settings`` has always been: the options' fields, then the batch's."""
        opts = {k: getattr(self.options, k) for k in _OPTION_FIELDS}
        default = SyncOptions()
        for k in SyncOptions.__dataclass_fields__:  # newer options only when changed: fingerprints stay comparable
            if k not in _OPTION_FIELDS and getattr(self.options, k) != getattr(default, k):
                opts[k] = getattr(self.options, k)
        rest = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "options"}
        return {**opts, **rest}

    def fingerprint(self) -> str:
        """Short hash of everything that changes a video's result (not device, threads or weights' path)."""
        relevant = {k: v for k, v in self.to_dict().items() if k not in ("device", "threads", "weights")}
        relevant["version"] = PIPELINE_VERSION
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


#: The measuring options as the batch reports them (``summary.json``), in this order.
_OPTION_FIELDS = ("engine", "weights", "device", "max_iterations", "tolerance_ms", "min_confidence", "search_ms")


# ---------------------------------------------------------------------------------------------- tasks

@dataclass(frozen=True)
class BatchTask:
    """What a worker needs for one video: plain strings, so it pickles to any process or node."""

    path: str
    output: str
    rel: str
    size: int = 0
    mtime_ns: int = 0
    sha256: str | None = None  #: None: the worker hashes the file
    key: str | None = None  #: content hash + settings fingerprint: equal keys, equal results
    missing: str | None = None
    fingerprint: str = ""

    def with_hash(self, sha256: str) -> BatchTask:
        return replace(self, sha256=sha256, key=f"{sha256}:{self.fingerprint}")


def base_record(task: BatchTask) -> dict:
    """Every line has every field, so the report reads as a table; a failure keeps the defaults."""
    return {"path": task.path, "rel": task.rel, "decision": "error", "audio_lag_ms": None, "confidence": None,
            "p_correct": None, "engine": None, "output": None, "error": None, "error_kind": None, "reason": None,
            "applied_shift_ms": None, "verified_shift_ms": None, "duration_s": None, "fps": None,
            "drift_kind": None, "drift_ms_per_minute": None, "drift_steps": None,
            "key": task.key, "sha256": task.sha256, "size": task.size, "mtime_ns": task.mtime_ns}


def failed_record(task: BatchTask, message: str, kind: str) -> dict:
    """The line for a video whose worker died, hung or could not run it."""
    return {**base_record(task), "error": message, "error_kind": kind,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _copy_into(src: Path, dst: Path) -> None:
    """``dst`` becomes a copy of ``src`` (a hard link when on the same file system), atomically."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.copying")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def process_task(task: BatchTask, settings: BatchSettings) -> dict:
    """Run ``fix`` on one video and return its report line. Never raises: a failure is a line too.

    Runs in a worker process (local pool or Ray task); imports nothing of the driver's state.
    """
    t0 = time.perf_counter()
    record = base_record(task)
    try:
        if task.missing:
            raise UserError(task.missing)
        if task.sha256 is None:
            try:
                task = task.with_hash(sha256_of(Path(task.path)))
            except OSError as exc:
                raise UserError(f"{task.path}: cannot read it ({exc.strerror})") from exc
            record.update(sha256=task.sha256, key=task.key)
        path, info = checked_input(task.path, settings.max_duration_s, settings.max_size_mb)
        out = Path(task.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        t_fix = time.perf_counter()
        report = fix_video(path, out, settings.options, info=info, force=settings.force, curves=False)
        timings = dict(report.get("timings") or {})
        timings["total_fix_s"] = round(time.perf_counter() - t_fix, 3)
        if report["output"] is None and settings.copy_in_sync and report["decision"] == "in_sync":
            _copy_into(path, out)
            report["output"] = str(out)
        record.update({k: report.get(k) for k in ("decision", "audio_lag_ms", "confidence", "p_correct", "engine",
                                                  "output", "reason", "applied_shift_ms", "verified_shift_ms",
                                                  "duration_s", "fps")})
        drift = report.get("drift") or {}
        record.update(drift_kind=drift.get("kind"), drift_ms_per_minute=drift.get("ms_per_minute"),
                      drift_steps=len(drift.get("steps") or []) if drift else None)
        record["timings"] = timings
        if report.get("warnings"):
            record["warnings"] = report["warnings"]
    except (UserError, MediaError) as exc:
        record.update(error=str(exc), error_kind="input")
    except (WeightsError, EngineUnavailable) as exc:
        record.update(error=str(exc), error_kind="setup")
    except Exception as exc:  # noqa: BLE001 - one bad video must never stop the batch: recorded, retried on rerun
        log.exception("internal error on %s", task.path)
        record.update(error=f"internal error: {type(exc).__name__}: {exc}", error_kind="internal")
    record.update(elapsed_s=round(time.perf_counter() - t0, 3), host=socket.gethostname(), pid=os.getpid(),
                  worker_peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return record
