"""``python -m pipeline batch``: measure and fix whole collections, resumably, on a process pool or Ray.

Public interface (names and JSON fields are contracts)::

    python -m pipeline batch INPUT... -o OUTDIR [--workers N] [--ray [ADDRESS]] [--engine ...] [--json]

* INPUT: video files, folders (searched recursively for video extensions), globs, or lists of paths
  (``.txt``/``.lst``: one per line, ``#`` comments; ``.csv``: a ``path``/``video``/``file`` column or the
  first one). Paths in a list are relative to the list's folder.
* Each video goes through :func:`pipeline.fix.fix_video`, the code of ``python -m pipeline fix``. A shifted
  video is written to ``OUTDIR/<its path relative to the inputs' common folder>``; one JSON line per video
  goes to ``OUTDIR/report.jsonl`` with at least ``path``, ``decision`` (in_sync|shift|uncertain|error),
  ``audio_lag_ms``, ``confidence``, ``engine``, ``output`` and ``error``. The last line for a path is its
  current state.
* At the end: a summary table and ``OUTDIR/summary.json`` (counts by decision, time, videos per minute).
* Resumable: a video whose content (SHA-256) and settings match a finished line of the report is skipped,
  so a killed batch continues where it stopped. A bad video is recorded as an error; the batch goes on.

Only the driver writes the report (one process, appends fsync'ed line by line, a lock file against a second
batch on the same OUTDIR); workers only read their input and write their own output, so the same code runs
in a local process pool (:class:`pipeline.executors.LocalPool`) and as Ray tasks
(:class:`pipeline.executors.RayRunner`), where inputs and OUTDIR must be on storage every node can reach.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import glob
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from syncnet.weights import sha256_of

from .arguments import cli_defaults, sync_options
from .errors import UserError
from .sync import SyncOptions
from .tasks import (  # noqa: F401 - the task types and process_task are part of the batch API
    PIPELINE_VERSION,
    BatchSettings,
    BatchTask,
    base_record,
    failed_record,
    process_task,
)

log = logging.getLogger(__name__)

#: What a folder search picks up (any file named on the command line is tried whatever its extension).
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
                              ".m2ts", ".flv", ".wmv", ".3gp", ".ogv", ".mxf", ".dv", ".vob"})
LIST_EXTENSIONS = frozenset({".txt", ".lst", ".list", ".csv"})
LIST_COLUMNS = ("path", "video", "file", "filename")
REPORT_NAME = "report.jsonl"
SUMMARY_NAME = "summary.json"
LOCK_NAME = ".batch.lock"
DECISIONS = ("in_sync", "shift", "uncertain", "error")
#: Error kinds that a rerun does not retry: the video itself is bad, and will be bad again.
FINAL_ERROR_KINDS = frozenset({"input"})


# ---------------------------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class BatchItem:
    """One video of the batch: where it is, where its output goes (relative), or why it cannot be read."""

    path: Path  #: absolute (symlinks kept, so the mirrored layout is the one the user sees)
    rel: Path  #: the path under OUTDIR
    missing: str | None = None  #: set for a listed path that does not exist: recorded as an error


def is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def find_videos(folder: Path, exclude: Path | None = None) -> list[Path]:
    """Video files under ``folder``, recursively, sorted; hidden files and folders and ``exclude`` skipped."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (exclude is None or os.path.abspath(here / d) != str(exclude)))
        found.extend(here / f for f in sorted(files)
                     if not f.startswith(".") and Path(f).suffix.lower() in VIDEO_EXTENSIONS)
    return found


def read_list(list_file: Path) -> list[str]:
    """The entries of a list file: text (one per line, ``#`` comments) or CSV (a path column, else the first)."""
    try:
        text = list_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{list_file}: cannot read this list of videos ({exc})") from exc
    if list_file.suffix.lower() != ".csv":
        return [s for line in text.splitlines() if (s := line.strip()) and not s.startswith("#")]
    rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
    if not rows:
        return []
    header = [c.strip().lower() for c in rows[0]]
    column = next((header.index(name) for name in LIST_COLUMNS if name in header), None)
    if column is not None:
        rows = rows[1:]
    return [r[column or 0].strip() for r in rows if len(r) > (column or 0) and r[column or 0].strip()]


def _expand(entry: str, base: Path, exclude: Path | None, from_list: bool,
            roots: list[Path], files: list[tuple[Path, str | None]]) -> None:
    """Add what one INPUT names to ``files`` (and folder roots to ``roots``)."""
    p = Path(entry).expanduser()
    if not p.is_absolute():
        p = base / p
    p = Path(os.path.abspath(p))
    if p.is_dir():
        roots.append(p)
        files.extend((f, None) for f in find_videos(p, exclude))
    elif p.is_file():
        if p.suffix.lower() in LIST_EXTENSIONS and not from_list:
            for sub in read_list(p):
                _expand(sub, p.parent, exclude, True, roots, files)
        else:
            files.append((p, None))
    elif is_glob(entry):
        matches = sorted(glob.glob(str(p), recursive=True))
        if not matches and not from_list:
            raise UserError(f"{entry}: no file matches this pattern")
        for m in matches:
            _expand(m, base, exclude, from_list, roots, files)
    elif from_list:
        files.append((p, f"{p}: listed but no such file"))
    else:
        raise UserError(f"{entry}: no such file or folder")


def collect_inputs(inputs: Iterable[str], exclude: Path | None = None) -> list[BatchItem]:
    """Every video that ``inputs`` name, once each, with its path relative to the inputs' common folder.

    The common folder is the deepest one holding every named folder and every file's folder, so folder
    structure is mirrored under OUTDIR and two inputs can never map to the same output. ``exclude`` (OUTDIR)
    is never searched, so a rerun does not pick up its own outputs.
    """
    roots: list[Path] = []
    files: list[tuple[Path, str | None]] = []
    cwd = Path.cwd()
    exclude = Path(os.path.abspath(exclude)) if exclude else None
    for entry in inputs:
        _expand(entry, cwd, exclude, False, roots, files)
    seen: set[str] = set()
    unique: list[tuple[Path, str | None]] = []
    for f, missing in files:
        key = os.path.realpath(f)
        if key not in seen:
            seen.add(key)
            unique.append((f, missing))
    if not unique:
        raise UserError("no video files found in " + ", ".join(inputs)
                        + f" (folders are searched for {', '.join(sorted(VIDEO_EXTENSIONS))})")
    base = Path(os.path.commonpath([str(r) for r in roots] + [str(f.parent) for f, _ in unique]))
    return [BatchItem(f, f.relative_to(base), missing) for f, missing in unique]


# -------------------------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class BatchRequest:
    """One batch as asked for: what the command line parses into, and what :func:`batch_fix` builds from its
    keywords. :func:`run_batch` checks it (``UserError`` with the flag's name) and runs it."""

    inputs: tuple[str, ...]
    output: str
    options: SyncOptions = field(default_factory=SyncOptions)
    workers: int | None = None
    ray: str | None = None  #: None: a local process pool; "local", "auto", host:port or ray://...: Ray
    gpus_per_task: float | None = None
    threads: int | None = None
    timeout_s: float | None = None
    force: bool = False
    copy_in_sync: bool = False
    retry_errors: bool = False
    max_duration_s: float | None = None
    max_size_mb: float | None = None
    progress: bool = True  #: the bar and per-video lines on stderr


def request_from_args(args: argparse.Namespace) -> BatchRequest:
    """The parsed ``batch`` command as a :class:`BatchRequest` (the measuring options checked as fix checks them)."""
    inputs, ray = list(args.inputs), args.ray
    # ``--ray clips/`` means a local Ray instance and the input ``clips/``: argparse takes the first INPUT as
    # the optional ADDRESS; an address is ``auto``, ``local`` or has a ``:`` and is not an existing path.
    if ray is not None and ray not in ("local", "auto") and not (":" in ray and not Path(ray).exists()):
        inputs.insert(0, ray)
        ray = "local"
    return BatchRequest(inputs=tuple(inputs), output=args.output, options=sync_options(args), workers=args.workers,
                        ray=ray, gpus_per_task=args.gpus_per_task, threads=args.threads, timeout_s=args.timeout_s,
                        force=args.force, copy_in_sync=args.copy_in_sync, retry_errors=args.retry_errors,
                        max_duration_s=args.max_duration_s, max_size_mb=args.max_size_mb,
                        progress=not args.no_progress)


def resolve_settings(request: BatchRequest, threads: int) -> BatchSettings:
    """The batch's settings with ``auto`` and the weights made definite, once, in the driver.

    ``auto`` becomes ``cca`` when no weights are present (as it would in each worker), and the weights'
    path is made absolute so that Ray workers on other nodes read the same file.
    """
    from syncnet.weights import default_weights_path

    from .engines import resolve_engine

    opts = request.options
    engine, weights, sha = resolve_engine(opts.engine, opts.weights), None, None
    if engine != "cca":
        path = Path(opts.weights).expanduser() if opts.weights else default_weights_path()
        weights, sha = str(path.resolve()), sha256_of(path)
    return BatchSettings(options=replace(opts, engine=engine, weights=weights), force=request.force,
                         max_duration_s=request.max_duration_s, max_size_mb=request.max_size_mb,
                         copy_in_sync=request.copy_in_sync, threads=threads, weights_sha256=sha)


# --------------------------------------------------------------------------------------------- report

def load_report(path: Path) -> list[dict]:
    """The lines of an earlier report; a line torn by a kill (the last one) is ignored."""
    if not path.is_file():
        return []
    records = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s line %d is incomplete (a killed run): ignored", path, n)
                continue
            if isinstance(rec, dict) and "rel" in rec:
                records.append(rec)
    return records


def is_finished(record: dict, retry_errors: bool = False) -> bool:
    """Whether a line means "done, nothing to redo": a result whose output still exists, or a bad video."""
    if record.get("decision") == "error":
        return not retry_errors and record.get("error_kind") in FINAL_ERROR_KINDS
    out = record.get("output")
    return out is None or Path(out).is_file()


def plan(items: list[BatchItem], outdir: Path, fingerprint: str, previous: list[dict],
         retry_errors: bool = False, hashing_bar: bool = False) -> tuple[list[BatchTask], dict[str, dict]]:
    """Split the batch into tasks to run and videos already done (their last line, by relative path).

    Hashing a large collection takes long, so the driver hashes only what it must to decide: a video with no
    earlier line is hashed by its worker (which reads it anyway); one whose line has the same size and
    modification time reuses that line's SHA-256; only a video whose file changed since is hashed here.
    """
    last: dict[str, dict] = {}
    for rec in previous:
        last[rec["rel"]] = rec
    todo: list[BatchTask] = []
    done: dict[str, dict] = {}
    to_hash = []
    for item in items:
        rel, out = str(item.rel), str(outdir / item.rel)
        if item.missing:
            todo.append(BatchTask(str(item.path), out, rel, missing=item.missing, fingerprint=fingerprint))
            continue
        try:
            st = item.path.stat()
        except OSError as exc:
            todo.append(BatchTask(str(item.path), out, rel, missing=f"{item.path}: cannot read it ({exc.strerror})",
                                  fingerprint=fingerprint))
            continue
        task = BatchTask(str(item.path), out, rel, st.st_size, st.st_mtime_ns, fingerprint=fingerprint)
        prev = last.get(rel)
        if prev is None or prev.get("path") != str(item.path) or not prev.get("sha256"):
            todo.append(task)  # new here: its worker hashes it
        elif prev.get("size") == st.st_size and prev.get("mtime_ns") == st.st_mtime_ns:
            _decide(task.with_hash(prev["sha256"]), prev, retry_errors, todo, done)
        else:
            to_hash.append((task, prev))
    total = sum(task.size for task, _ in to_hash)
    with _bar(hashing_bar and total > 256e6, total=total, unit="B", unit_scale=True, desc="hashing") as bar:
        for task, prev in to_hash:
            try:
                sha = sha256_of(Path(task.path))
            except OSError:
                todo.append(task)  # its worker will say what is wrong
                continue
            bar.update(task.size)
            _decide(task.with_hash(sha), prev, retry_errors, todo, done)
    return todo, done


def _decide(task: BatchTask, prev: dict, retry_errors: bool, todo: list[BatchTask], done: dict[str, dict]) -> None:
    if prev.get("key") == task.key and is_finished(prev, retry_errors):
        done[task.rel] = prev
    else:
        todo.append(task)


@contextmanager
def _bar(enabled: bool, **kwargs):
    from tqdm import tqdm

    bar = tqdm(disable=not enabled, file=sys.stderr, dynamic_ncols=True, **kwargs)
    try:
        yield bar
    finally:
        bar.close()


class ReportWriter:
    """Appends one line per video to ``report.jsonl``, flushed and fsync'ed, so a kill loses at most one."""

    def __init__(self, path: Path):
        self.path = path
        torn = False
        if path.is_file() and path.stat().st_size > 0:
            with open(path, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                torn = fh.read(1) != b"\n"
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if torn:  # a kill mid-line: end that line, so that the next one is whole
            self._fh.write("\n")

    def write(self, record: dict) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


@contextmanager
def locked(outdir: Path) -> Iterator[None]:
    """Hold ``OUTDIR/.batch.lock`` for the batch: two batches on one OUTDIR would interleave their reports."""
    fh = open(outdir / LOCK_NAME, "a+")  # noqa: SIM115 - closed below
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another batch is writing to {outdir}: wait for it to finish or choose another -o") \
                from None
        yield
    finally:
        fh.close()


def remove_partials(outdir: Path) -> int:
    """Half-written outputs of a killed run under OUTDIR (safe: the lock says no batch is writing now)."""
    from .correct import remove_stale_partials

    removed = 0
    for root, _dirs, files in os.walk(outdir):
        for f in files:
            if f.endswith(".copying"):
                Path(root, f).unlink(missing_ok=True)
                removed += 1
        removed += remove_stale_partials(Path(root), max_age_s=0)
    return removed


# -------------------------------------------------------------------------------------------- summary

@dataclass
class Summary:
    """The batch in numbers: ``summary.json`` and the table."""

    outdir: str
    backend: str
    workers: int
    fingerprint: str
    settings: dict
    videos: int = 0
    processed: int = 0  #: run now
    skipped: int = 0  #: done by an earlier run with the same content and settings
    pending: int = 0  #: not reached (an interrupted batch)
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)
    elapsed_s: float = 0.0
    videos_per_min: float | None = None
    worker_peak_rss_mb: float | None = None
    ray_resources: dict | None = None  #: what each Ray task asked for
    interrupted: bool = False
    started_at: str = ""
    finished_at: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def summarise(summary: Summary, results: dict[str, dict], total: int, processed: int, elapsed_s: float) -> Summary:
    """Fill ``summary`` from every video's current line (earlier runs' included)."""
    counts = Counter(rec.get("decision", "error") for rec in results.values())
    summary.videos = total
    summary.processed = processed
    summary.skipped = len(results) - processed
    summary.pending = total - len(results)
    summary.counts = {d: counts.get(d, 0) for d in DECISIONS}
    summary.errors = [{"path": r["path"], "error": r.get("error"), "error_kind": r.get("error_kind")}
                      for r in results.values() if r.get("decision") == "error"]
    summary.elapsed_s = round(elapsed_s, 3)
    summary.videos_per_min = round(processed / (elapsed_s / 60), 2) if processed and elapsed_s > 0 else None
    rss = [r["worker_peak_rss_mb"] for r in results.values() if r.get("worker_peak_rss_mb")]
    summary.worker_peak_rss_mb = max(rss) if rss else None
    summary.finished_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return summary


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else f"{s // 60} min {s % 60:02d} s"


def format_summary(s: Summary) -> str:
    width = max(len(d) for d in DECISIONS)
    lines = [f"{'decision':<{width}}  videos"]
    lines += [f"{d:<{width}}  {s.counts.get(d, 0):>6}" for d in DECISIONS]
    lines.append(f"{'total':<{width}}  {s.videos:>6}  ({s.processed} processed now, {s.skipped} done before"
                 + (f", {s.pending} not reached)" if s.pending else ")"))
    rate = f"{s.videos_per_min:.1f} videos/min" if s.videos_per_min else "nothing processed"
    lines.append(f"time {_duration(s.elapsed_s)}, {rate} ({s.workers} worker{'s' * (s.workers != 1)}, {s.backend})"
                 + (", INTERRUPTED: run the same command again to continue" if s.interrupted else ""))
    for e in s.errors[:10]:
        lines.append(f"error: {e['path']}: {e['error']}")
    if len(s.errors) > 10:
        lines.append(f"... and {len(s.errors) - 10} more errors (see {SUMMARY_NAME})")
    lines.append(f"report: {Path(s.outdir) / REPORT_NAME}  summary: {Path(s.outdir) / SUMMARY_NAME}")
    return "\n".join(lines)


def _describe(rec: dict) -> str:
    d = rec.get("decision")
    if d == "error":
        return f"error: {rec.get('error')}"
    lag = rec.get("audio_lag_ms")
    conf = rec.get("confidence")
    text = d + (f" {lag:+.1f} ms" if lag is not None else "") + (f" (confidence {conf:.1f})" if conf else "")
    if rec.get("drift_kind") == "linear":
        text += f", drifting {rec['drift_ms_per_minute']:+.1f} ms/min"
    elif rec.get("drift_kind") == "steps":
        text += f", {rec['drift_steps']} step(s) in the lag"
    return text + (f" -> {rec['output']}" if rec.get("output") else "")


# ------------------------------------------------------------------------------------------------ run

class Eta:
    """Time left, from the bytes still to process: videos differ in length and size far more than in
    cost per byte, so this is steadier than counting videos."""

    def __init__(self, tasks: list[BatchTask]):
        self.total = sum(t.size for t in tasks)
        self.count = len(tasks)
        self.bytes_done = 0
        self.n_done = 0

    def left_s(self, finished: BatchTask, elapsed_s: float) -> float | None:
        self.bytes_done += finished.size
        self.n_done += 1
        if self.n_done >= self.count:
            return None
        if self.bytes_done > 0 and self.total > 0:
            return elapsed_s / self.bytes_done * (self.total - self.bytes_done)
        return elapsed_s / self.n_done * (self.count - self.n_done)


class Interrupts:
    """Ctrl-C and SIGTERM (a scheduler's stop, `kill`) end the batch cleanly: workers stopped, summary written.

    Both raise KeyboardInterrupt wherever the driver waits, except inside :meth:`held` (writing a line and
    counting it), where the interrupt is held until the bookkeeping is whole.
    """

    def __init__(self) -> None:
        self._held = False
        self._pending = False
        self._previous: dict = {}

    def _handler(self, signum, frame) -> None:
        if self._held:
            self._pending = True
        else:
            raise KeyboardInterrupt

    def __enter__(self) -> Interrupts:
        import signal

        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def __exit__(self, *exc) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @contextmanager
    def held(self) -> Iterator[None]:
        self._held = True
        try:
            yield
        finally:
            self._held = False
        if self._pending:
            raise KeyboardInterrupt


def add_batch_parser(sub: argparse._SubParsersAction, add_options) -> None:
    b = sub.add_parser("batch", help="fix many videos: folders, globs, lists; resumable; local pool or Ray",
                       description="Measure and fix every video named; rerun the same command to continue.")
    b.add_argument("inputs", nargs="*", metavar="INPUT",  # "*": `--ray clips/` must parse (see below)
                   help="video files, folders (recursive), globs, or .txt/.csv lists of paths")
    b.add_argument("-o", "--output", required=True, metavar="OUTDIR",
                   help="where corrected videos (mirroring the input folders), report.jsonl and summary.json go")
    b.add_argument("--workers", type=int, help="parallel videos (default: as many as the CPUs and memory hold)")
    b.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run as Ray tasks: on the cluster at ADDRESS (auto, host:port, ray://host:10001), or on a "
                        "local Ray instance when no ADDRESS is given; needs requirements-ray.txt")
    b.add_argument("--gpus-per-task", type=float,
                   help="with --ray and SyncNet on CUDA: GPU share per video (default: the cluster's GPUs over "
                        "its CPU slots, so that every CPU works; e.g. 1/16 with 16 CPUs per GPU)")
    b.add_argument("--threads", type=int, help="CPU threads per video (default: the CPUs shared among workers)")
    b.add_argument("--timeout-s", type=float, help="give up on a video after this long (recorded as an error)")
    b.add_argument("--force", action="store_true", help="apply the measured shift even when it is uncertain")
    b.add_argument("--copy-in-sync", action="store_true",
                   help="also put videos already in sync into OUTDIR (hard link or copy), so it holds the whole "
                        "usable collection")
    b.add_argument("--retry-errors", action="store_true", help="redo videos that failed as bad input last time")
    b.add_argument("--no-progress", action="store_true", help="no progress bar or per-video lines on stderr")
    add_options(b)


def run_batch(request: BatchRequest) -> tuple[Summary, int]:
    """Run the whole batch; returns the summary and the exit code (0 done, 130 interrupted)."""
    from .executors import LocalPool, RayRunner, default_workers

    if not request.inputs:
        raise UserError("name at least one INPUT: a video, a folder, a glob or a list of paths")
    if request.workers is not None and request.workers < 1:
        raise UserError("--workers must be at least 1")
    if request.timeout_s is not None and request.timeout_s <= 0:
        raise UserError("--timeout-s must be positive")
    outdir = Path(os.path.abspath(request.output))
    if outdir.exists() and not outdir.is_dir():
        raise UserError(f"{request.output}: exists and is not a folder: -o takes the output folder")
    items = collect_inputs(list(request.inputs), exclude=outdir)
    for item in items:
        if os.path.abspath(outdir / item.rel) == os.path.abspath(item.path):
            raise UserError(f"{item.path} would be overwritten: -o must not be the inputs' own folder")

    cpus = len(os.sched_getaffinity(0))
    if request.threads is not None and request.threads < 1:
        raise UserError("--threads must be at least 1")
    if request.ray:
        # a local instance gets this machine's CPUs; a cluster runs as many tasks as its resources hold
        workers = request.workers or (cpus if request.ray == "local" else 0)
        threads = request.threads or 1
        runner = RayRunner(None if request.ray == "local" else request.ray, workers, threads, request.gpus_per_task,
                           request.timeout_s)
    else:
        workers = request.workers or default_workers()
        threads = request.threads or max(1, cpus // workers)
        runner = LocalPool(workers, threads, request.timeout_s)
    settings = resolve_settings(request, threads)
    outdir.mkdir(parents=True, exist_ok=True)
    show = request.progress
    tty = sys.stderr.isatty() and show

    with locked(outdir):
        if remove_partials(outdir):
            log.info("removed half-written outputs of an interrupted run")
        report_path = outdir / REPORT_NAME
        previous = load_report(report_path)
        todo, done = plan(items, outdir, settings.fingerprint(), previous, request.retry_errors, hashing_bar=tty)
        summary = Summary(str(outdir), runner.name, workers, settings.fingerprint(), settings.to_dict(),
                          started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        results: dict[str, dict] = dict(done)
        order = {str(item.rel): i for i, item in enumerate(items)}
        if done and show:
            print(f"{len(done)} of {len(items)} videos already done with these settings: skipped", file=sys.stderr)
        t0 = time.perf_counter()
        processed = 0
        eta = Eta(todo)
        writer = ReportWriter(report_path)
        code = 0
        try:
            with _bar(tty, total=len(items), initial=len(done), unit="video", desc="batch") as bar, \
                    Interrupts() as interrupts:
                for task, record in runner.run(todo, settings):
                    with interrupts.held():
                        writer.write(record)
                        results[task.rel] = record
                        processed += 1
                    bar.update(1)
                    if show:
                        left = eta.left_s(task, time.perf_counter() - t0)
                        line = (f"[{len(done) + processed}/{len(items)}] {task.rel}: {_describe(record)}"
                                + (f"  (ETA {_duration(left)})" if left is not None else ""))
                        (bar.write(line, file=sys.stderr) if tty else print(line, file=sys.stderr, flush=True))
        except KeyboardInterrupt:
            summary.interrupted = True
            code = 130
        finally:
            writer.close()
            ordered = dict(sorted(results.items(), key=lambda kv: order.get(kv[0], 0)))
            summarise(summary, ordered, len(items), processed, time.perf_counter() - t0)
            summary.ray_resources = getattr(runner, "resources", None) or None
            summary.workers = getattr(runner, "slots", 0) or workers
            tmp = outdir / f".{SUMMARY_NAME}.tmp"
            tmp.write_text(json.dumps(summary.to_dict(), indent=2, ensure_ascii=False))
            os.replace(tmp, outdir / SUMMARY_NAME)
    return summary, code


#: The :class:`~pipeline.sync.SyncOptions` fields that :func:`batch_fix` takes as keywords.
_SYNC_KEYWORDS = frozenset(SyncOptions.__dataclass_fields__)
#: The batch's own keywords (the command's options with underscores).
_BATCH_KEYWORDS = frozenset(BatchRequest.__dataclass_fields__) - {"inputs", "output", "options"}


def batch_fix(inputs: Iterable[str | os.PathLike], outdir: str | os.PathLike, *,
              options: SyncOptions | None = None, **keywords: Any) -> Summary:
    """The batch from Python, exactly as the command runs it (same defaults, same report and resume).

    ``keywords`` are the command's long options with underscores: the batch's (``workers=2``, ``ray="auto"``,
    ``copy_in_sync=True``, ``timeout_s=600``, ``progress=True``...) and the measuring ones (``engine="cca"``,
    ``search_ms=3000``..., or a whole ``options=SyncOptions(...)``). ``max_duration_s`` and ``max_size_mb``
    default as the command's do (:func:`pipeline.arguments.cli_defaults`). Raises :class:`TypeError` for an
    unknown keyword, :class:`UserError` for a bad value, as the command exits 2; a summary with
    ``interrupted`` set when Ctrl-C stopped it.
    """
    unknown = sorted(set(keywords) - _SYNC_KEYWORDS - _BATCH_KEYWORDS)
    if unknown:
        raise TypeError(f"batch_fix() got an unknown option {unknown[0]!r}")
    sync_kw = {k: v for k, v in keywords.items() if k in _SYNC_KEYWORDS}
    if options is not None and sync_kw:
        raise TypeError("batch_fix() takes options=SyncOptions(...) or its fields as keywords, not both")
    batch_kw = {**cli_defaults(), "progress": False,
                **{k: v for k, v in keywords.items() if k in _BATCH_KEYWORDS}}
    request = BatchRequest(inputs=tuple(map(os.fspath, inputs)), output=os.fspath(outdir),
                           options=options or SyncOptions(**sync_kw), **batch_kw)
    summary, _code = run_batch(request)
    return summary
