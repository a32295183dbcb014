"""Where a batch's videos run: a local process pool, or Ray tasks on a local instance or a cluster.

Both take the same tasks and the same worker function (:func:`pipeline.batch.process_task`) and yield
``(task, report line)`` as videos finish, in any order. A worker that dies (killed, out of memory, a crash in
native code) or overruns ``timeout_s`` costs only the video it held: that video gets an error line, the
worker is replaced, the batch goes on.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection, wait
from pathlib import Path

from .tasks import BatchSettings, BatchTask, failed_record, process_task

log = logging.getLogger(__name__)

#: Peak RSS of one worker on a 60 s 720p clip is ~0.8 GB (benchmarks/bench_batch.py); 1.5 GB leaves room
#: for longer clips, whose kept mouth crops grow ~6 KB a frame.
WORKER_MEMORY_BYTES = int(1.5e9)
#: Environment that caps the native thread pools of a worker (read when torch/numpy/onnxruntime load).
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

Worker = Callable[[BatchTask, BatchSettings], dict]
#: How often a Ray batch looks at the cluster's resources again, to use nodes that joined.
RESIZE_EVERY_S = 30.0
#: Videos a worker process runs before a fresh one replaces it: the model stays loaded across videos, but
#: heap fragmentation over thousands of videos does not accumulate (Ray's own default for GPU tasks, one
#: video per process, would reload torch and the model for every video).
WORKER_MAX_TASKS = 200


def available_memory() -> int:
    """MemAvailable from /proc/meminfo in bytes (what new processes can use without swapping)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def default_workers(cpus: int | None = None, memory: int | None = None) -> int:
    """As many workers as there are CPUs, fewer when memory would not hold them, at least one."""
    cpus = cpus or len(os.sched_getaffinity(0))
    memory = available_memory() if memory is None else memory
    return max(1, min(cpus, memory // WORKER_MEMORY_BYTES))


@contextmanager
def _thread_env(threads: int) -> Iterator[None]:
    """The thread caps set while workers start (a spawned process copies the environment at start)."""
    saved = {k: os.environ.get(k) for k in THREAD_VARS}
    os.environ.update({k: str(threads) for k in THREAD_VARS})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _worker_main(conn: Connection, fn: Worker, settings: BatchSettings, log_level: int) -> None:
    """A pool worker: take a task, send back its line, until told to stop or the driver is gone."""
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s[%(process)d]: %(message)s")
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if task is None:
            return
        try:
            conn.send(("started", None))  # the clock of --timeout-s starts now, not at the worker's imports
            record = fn(task, settings)
            conn.send(("done", record))
        except (BrokenPipeError, OSError, KeyboardInterrupt):
            return


class _Slot:
    """One worker process and the task it holds."""

    def __init__(self, ctx, fn: Worker, settings: BatchSettings, threads: int):
        self.conn, child = ctx.Pipe()
        with _thread_env(threads):
            self.process = ctx.Process(target=_worker_main, args=(child, fn, settings, logging.getLogger().level),
                                       daemon=True, name="syncfix-batch-worker")
            self.process.start()
        child.close()
        self.task: BatchTask | None = None
        self.started = 0.0
        self.tasks_run = 0

    def give(self, task: BatchTask) -> None:
        self.conn.send(task)
        self.task, self.started = task, float("inf")  # until the worker says it has started
        self.tasks_run += 1

    def receive(self) -> dict | None:
        """The finished task's line, or None (only a start notice, or nothing: the worker is gone)."""
        try:
            while self.conn.poll():
                kind, payload = self.conn.recv()
                if kind == "started":
                    self.started = time.monotonic()
                else:
                    return payload
        except (EOFError, OSError):
            pass
        return None

    def stop(self, kill: bool = False) -> None:
        if self.process.is_alive() and not kill:
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()


def _death(process: mp.process.BaseProcess) -> str:
    """How a worker ended, in words: a signal by name (SIGKILL is what the kernel's OOM killer sends)."""
    import signal

    code = process.exitcode
    if code is None:
        return "it closed its pipe"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}" + (": out of memory?" if -code == signal.SIGKILL else "")
    return f"exit code {code}"


class LocalPool:
    """N spawned worker processes, one video at a time each, fed from the driver.

    Not :class:`concurrent.futures.ProcessPoolExecutor`: when one of its workers dies it breaks the whole
    pool and cannot say which video killed it. Here each worker holds a known task, so a death or an
    overrun costs exactly that video.
    """

    name = "local"

    def __init__(self, workers: int, threads: int = 1, timeout_s: float | None = None, fn: Worker = process_task,
                 max_tasks: int = WORKER_MAX_TASKS):
        self.workers, self.threads, self.timeout_s, self.fn = workers, threads, timeout_s, fn
        self.max_tasks = max_tasks

    def run(self, tasks: list[BatchTask], settings: BatchSettings) -> Iterator[tuple[BatchTask, dict]]:
        ctx = mp.get_context("spawn")  # fork would copy the driver's threads and locks
        queue = list(reversed(tasks))
        slots = [_Slot(ctx, self.fn, settings, self.threads) for _ in range(min(self.workers, len(tasks)))]
        try:
            while queue or any(s.task for s in slots):
                for i, s in enumerate(slots):
                    if s.task is None and queue:
                        if s.tasks_run >= self.max_tasks:  # retire it, start afresh
                            s.stop()
                            slots[i] = s = _Slot(ctx, self.fn, settings, self.threads)
                        s.give(queue.pop())
                busy = [s for s in slots if s.task]
                deadlines = [s.started + self.timeout_s for s in busy if self.timeout_s and s.started < float("inf")]
                timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
                ready = wait([s.conn for s in busy] + [s.process.sentinel for s in busy], timeout)
                for i, s in enumerate(slots):
                    if s.task is None:
                        continue
                    task = s.task
                    if s.conn in ready or s.process.sentinel in ready:
                        record = s.receive()
                        if record is not None:
                            s.task = None
                            yield task, record
                            continue
                        if s.process.is_alive():
                            continue  # a start notice
                        s.process.join(1)
                        kind, message = "crash", f"the worker process died while on this video ({_death(s.process)})"
                    elif self.timeout_s and time.monotonic() - s.started >= self.timeout_s:
                        kind, message = "timeout", f"gave up after {self.timeout_s:g} s (--timeout-s)"
                    else:
                        continue
                    log.warning("%s: %s; starting a new worker", task.path, message)
                    s.stop(kill=True)
                    slots[i] = _Slot(ctx, self.fn, settings, self.threads)
                    yield task, failed_record(task, message, kind)
        finally:
            for s in slots:
                s.stop(kill=s.task is not None)


def ray_resources(uses_syncnet: bool, device: str | None, cluster: dict[str, float], threads: int,
                  gpus_per_task: float | None = None) -> dict[str, float]:
    """Per-task Ray resources: CPUs always; a GPU share when SyncNet will run on CUDA.

    SyncNet runs on CUDA when the device says so, or by default when the cluster has GPUs; the weight-free
    engine and face detection are CPU work, so a cca batch never holds GPUs. The default GPU share lets every
    CPU of the cluster work: decoding and face tracking, not SyncNet, bound the throughput (one GPU scores
    ~30x faster than one core decodes and tracks: see the README), so a GPU is shared by its node's CPUs.
    """
    from .errors import UserError

    gpus = cluster.get("GPU", 0)
    if not uses_syncnet or device == "cpu" or (gpus <= 0 and not (device and device.startswith("cuda"))):
        return {"num_cpus": threads, "num_gpus": 0}
    if gpus <= 0:
        raise UserError("--device cuda was asked for but the Ray cluster has no GPUs")
    if gpus_per_task is None:
        gpus_per_task = min(1.0, max(0.01, gpus / max(1.0, cluster.get("CPU", 1) // threads)))
    if not 0 < gpus_per_task <= 1:
        raise UserError("--gpus-per-task must be in (0, 1]")
    return {"num_cpus": threads, "num_gpus": round(gpus_per_task, 4)}


def ray_slots(resources: dict[str, float], cluster: dict[str, float], cap: int | None) -> int:
    """How many tasks the cluster runs at once with these resources (at most ``cap``)."""
    n = int(cluster.get("CPU", 1) // max(resources["num_cpus"], 1e-9))
    if resources["num_gpus"]:
        n = min(n, int(cluster.get("GPU", 0) / resources["num_gpus"] + 1e-9))
    return max(1, min(n, cap) if cap else n)


class RayRunner:
    """The same tasks as Ray tasks: on the cluster at ``address``, or on a local instance started here.

    The code (``pipeline`` and ``syncnet``) travels with the job (``py_modules``); the nodes need the
    requirements installed, and the inputs, OUTDIR and weights on paths every node can reach.
    """

    name = "ray"

    def __init__(self, address: str | None, workers: int | None, threads: int = 1, gpus_per_task: float | None = None,
                 timeout_s: float | None = None, fn: Worker = process_task):
        self.address, self.workers, self.threads = address, workers, threads
        self.gpus_per_task, self.timeout_s, self.fn = gpus_per_task, timeout_s, fn
        self.resources: dict[str, float] = {}
        self.slots = 0  #: tasks in flight at once, known once joined

    def _init(self):
        try:
            import ray
        except ImportError as exc:
            from .errors import UserError

            raise UserError("--ray needs Ray: pip install -r requirements-ray.txt") from exc
        here = Path(__file__).resolve().parent
        runtime_env = {"py_modules": [str(here), str(here.parent / "syncnet")],
                       "env_vars": {k: str(self.threads) for k in THREAD_VARS}}
        if self.address is None:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a local instance phones nobody
            # "local": a new instance even when `ray start` left one on this machine (None would join it)
            ray.init(address="local", num_cpus=self.workers or None, include_dashboard=False, log_to_driver=False,
                     runtime_env=runtime_env, logging_level=logging.WARNING)
        else:
            try:
                ray.init(address=self.address, log_to_driver=False, runtime_env=runtime_env,
                         logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ray.exceptions.RayError) as exc:
                from .errors import UserError

                first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
                hint = ("; a cluster with token authentication needs RAY_AUTH_MODE=token and its token "
                        "(RAY_AUTH_TOKEN or ~/.ray/auth_token) here too"
                        if "auth" in str(exc).lower() or "auth" in repr(exc.__cause__).lower() else
                        "; check the address (`ray status` on the head node shows it) and that this machine "
                        "can reach it")
                raise UserError(f"cannot join the Ray cluster at {self.address}: {first}{hint}") from exc
        return ray

    def run(self, tasks: list[BatchTask], settings: BatchSettings) -> Iterator[tuple[BatchTask, dict]]:
        if not tasks:
            return
        ray = self._init()
        try:
            cluster = ray.cluster_resources()
            opts = settings.options
            self.resources = ray_resources(opts.engine != "cca", opts.device, cluster, self.threads, self.gpus_per_task)
            self.slots = ray_slots(self.resources, cluster, self.workers)
            log.info("Ray: %s per video, %d at once (cluster: %s)", self.resources, self.slots, cluster)
            remote = ray.remote(max_calls=WORKER_MAX_TASKS)(self.fn).options(max_retries=1, retry_exceptions=False,
                                                                            **self.resources)
            queue = list(reversed(tasks))
            running: dict = {}  # ref -> (task, submitted)
            looked = time.monotonic()
            while queue or running:
                if time.monotonic() - looked > RESIZE_EVERY_S:  # nodes join and leave (autoscaling)
                    self.slots = ray_slots(self.resources, ray.cluster_resources(), self.workers)
                    looked = time.monotonic()
                while queue and len(running) < self.slots:
                    task = queue.pop()
                    running[remote.remote(task, settings)] = (task, time.monotonic())
                deadlines = [looked + RESIZE_EVERY_S]
                deadlines += [t0 + self.timeout_s for _, t0 in running.values() if self.timeout_s and t0 < float("inf")]
                done, _ = ray.wait(list(running), num_returns=1, timeout=max(0.0, min(deadlines) - time.monotonic()))
                for ref in done:
                    task, _t0 = running.pop(ref)
                    try:
                        yield task, ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        cancelled = isinstance(exc, ray.exceptions.TaskCancelledError)
                        message = (f"gave up after {self.timeout_s:g} s (--timeout-s)" if cancelled
                                   else f"the Ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
                        yield task, failed_record(task, message, "timeout" if cancelled else "crash")
                if self.timeout_s:
                    now = time.monotonic()
                    for ref, (task, t0) in list(running.items()):
                        if now - t0 >= self.timeout_s:
                            ray.cancel(ref, force=True)
                            running[ref] = (task, float("inf"))
        finally:
            ray.shutdown()
