"""Jobs: a fresh temporary folder and a log of their own, removed when the job ends.

Every request works in ``<root>/job-<id>/`` (nothing shared through fixed names); the folder goes when the
job ends, whatever the outcome, and folders left by a killed process are removed at the next start once
older than the retention time. The job's log records (its stages and timings, from the library's loggers,
in the job's own threads) are collected so that they can go into the job's report.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

JOB_PREFIX = "job-"
#: Loggers whose records belong in a job's log.
JOB_LOGGERS = ("pipeline", "syncnet", "syncfix")


class _JobLogHandler(logging.Handler):
    """Keeps the records emitted by the job's threads (the job thread and its decoding helper)."""

    def __init__(self, job_id: str, threads: set[int]):
        super().__init__(logging.DEBUG)
        self.job_id = job_id
        self.threads = threads
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
                                            "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread in self.threads or getattr(record, "job_id", None) == self.job_id:
            self.lines.append(self.format(record))


@dataclass
class Job:
    """One request's workspace: ``dir`` to write in, ``log`` to narrate, ``lines`` collected for the report."""

    id: str
    dir: Path
    started: float = field(default_factory=time.time)
    _handler: _JobLogHandler | None = None

    @property
    def log(self) -> logging.LoggerAdapter:
        return logging.LoggerAdapter(logging.getLogger("syncfix.job"), {"job_id": self.id})

    @property
    def lines(self) -> list[str]:
        return list(self._handler.lines) if self._handler else []

    def adopt_thread(self) -> None:
        """Count the calling thread's records as this job's (e.g. a worker thread it started)."""
        if self._handler is not None:
            self._handler.threads.add(threading.get_ident())

    def release_thread(self) -> None:
        if self._handler is not None:
            self._handler.threads.discard(threading.get_ident())

    def follow(self, steps: Iterator) -> Iterator:
        """Run a generator whose steps may each run on another thread (a web server's worker pool),
        counting each step's thread as this job's only while that step runs."""
        while True:
            self.adopt_thread()
            try:
                item = next(steps)
            except StopIteration:
                return
            finally:
                self.release_thread()
            yield item


def default_root() -> Path:
    return Path(tempfile.gettempdir()) / "syncfix"


@contextmanager
def job(root: Path | None = None) -> Iterator[Job]:
    """A fresh job folder and log; both are gone (the folder) or detached (the log) when the block ends."""
    root = Path(root or default_root())
    root.mkdir(parents=True, exist_ok=True)
    job_id = uuid.uuid4().hex[:12]
    folder = Path(tempfile.mkdtemp(prefix=f"{JOB_PREFIX}{job_id}-", dir=root))
    handler = _JobLogHandler(job_id, {threading.get_ident()})
    loggers = [logging.getLogger(name) for name in JOB_LOGGERS]
    for lg in loggers:
        lg.addHandler(handler)
        if lg.level == logging.NOTSET or lg.level > logging.INFO:
            lg.setLevel(logging.INFO)
    j = Job(job_id, folder, _handler=handler)
    j.log.info("job %s started in %s", job_id, folder)
    try:
        yield j
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
        shutil.rmtree(folder, ignore_errors=True)


def cleanup_stale(root: Path | None = None, older_than_s: float = 3600.0) -> int:
    """Remove job folders older than ``older_than_s`` (left by a killed process); returns how many."""
    root = Path(root or default_root())
    if not root.is_dir():
        return 0
    now = time.time()
    removed = 0
    for p in root.glob(f"{JOB_PREFIX}*"):
        try:
            if p.is_dir() and now - p.stat().st_mtime > older_than_s:
                shutil.rmtree(p, ignore_errors=True)
                removed += 1
        except OSError:
            continue
    if removed:
        log.info("removed %d stale job folders from %s", removed, root)
    return removed
