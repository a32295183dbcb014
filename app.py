"""SyncFix web app: upload a video, watch each iteration, play and download the synced video.

A thin Gradio shell over the library: it reads its settings from the environment, turns the pipeline's
events into a status line, a table and a plot, and the library's errors into Gradio errors. The same event
is the public API ``/sync`` (see README: gradio_client and curl). Runs unchanged as a Hugging Face Space.
"""

from __future__ import annotations

import os

# Before gradio is imported: no analytics, no telemetry, unless asked for.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "True" if os.environ.get("SYNCFIX_ANALYTICS") == "1" else "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import json  # noqa: E402
import logging  # noqa: E402
import logging.handlers  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable, Iterator, Mapping  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")

from pipeline.engines import ENGINES  # noqa: E402
from pipeline.errors import USER_FACING, EngineUnavailable, UserError  # noqa: E402
from pipeline.fix import FixDone, checked_input, fix_events, measure_events  # noqa: E402
from pipeline.jobs import JOB_PREFIX, Job, cleanup_stale, job  # noqa: E402
from pipeline.media import MediaInfo  # noqa: E402
from pipeline.plots import sync_figure  # noqa: E402
from pipeline.preview import make_preview  # noqa: E402
from pipeline.sync import (  # noqa: E402
    DEFAULT_MAX_ITERATIONS,
    DEFAULT_SEARCH_MS,
    DEFAULT_TOLERANCE_MS,
    MAX_USER_SEARCH_MS,
    IterationEvent,
    SyncOptions,
    SyncResult,
)
from pipeline.timeline import describe_drift  # noqa: E402
from syncnet.media import MediaError  # noqa: E402
from syncnet.weights import WeightsError  # noqa: E402

log = logging.getLogger("syncfix.app")

ROOT = Path(__file__).resolve().parent
#: Containers we write back; an upload's name is never used for output files, only this suffix.
CONTAINERS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")


def _env_value(env: Mapping[str, str], name: str, default, kind: type):
    """``env[name]`` as ``kind``, or ``default`` when unset; a value that is not a ``kind`` is a start-up error
    that names the variable (not a traceback from deep inside the app)."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a valid {kind.__name__}: unset it or give a number") from None


@dataclass(frozen=True)
class Settings:
    """Everything configurable about the app (the README's table): built from the environment by
    :meth:`from_env`, the one place the app reads it; the defaults here are the documented ones."""

    server_name: str = "127.0.0.1"
    server_port: int = 7860
    max_upload_mb: int = 500
    max_duration_s: float = 1800.0
    queue_size: int = 16
    concurrency: int = 1
    temp_dir: Path = Path(tempfile.gettempdir()) / "syncfix"
    retention_s: float = 3600.0
    auth: str | None = None
    share: bool = False
    log_level: str = "INFO"
    log_file: str | None = None
    fetch_weights: bool = False  #: on by default on a Hugging Face Space (``SYSTEM=spaces``)
    examples_dir: Path = ROOT.parent / "shared" / "fixtures"  #: the development clips offered as examples

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings ``env`` (default: ``os.environ``) asks for, with the defaults above for the rest."""
        env = os.environ if env is None else env
        d = cls()
        shared = env.get("SYNCFIX_SHARED")
        return cls(
            server_name=env.get("GRADIO_SERVER_NAME") or d.server_name,
            server_port=_env_value(env, "GRADIO_SERVER_PORT", d.server_port, int),
            max_upload_mb=_env_value(env, "SYNCFIX_MAX_UPLOAD_MB", d.max_upload_mb, int),
            max_duration_s=_env_value(env, "SYNCFIX_MAX_DURATION_S", d.max_duration_s, float),
            queue_size=_env_value(env, "SYNCFIX_QUEUE_SIZE", d.queue_size, int),
            concurrency=_env_value(env, "SYNCFIX_CONCURRENCY", d.concurrency, int),
            temp_dir=Path(env["SYNCFIX_TEMP_DIR"]) if env.get("SYNCFIX_TEMP_DIR") else d.temp_dir,
            retention_s=_env_value(env, "SYNCFIX_RETENTION_S", d.retention_s, float),
            auth=env.get("SYNCFIX_AUTH") or None,
            share=env.get("SYNCFIX_SHARE", "0") == "1",
            log_level=env.get("SYNCFIX_LOG_LEVEL") or d.log_level,
            log_file=env.get("SYNCFIX_LOG_FILE") or None,
            fetch_weights=env.get("SYNCFIX_FETCH_WEIGHTS", "1" if env.get("SYSTEM") == "spaces" else "0") == "1",
            examples_dir=Path(shared) / "fixtures" if shared else d.examples_dir,
        )


SETTINGS = Settings.from_env()


def configure_logging(settings: Settings = SETTINGS) -> None:
    """One configuration: level, stderr, and an optional rotating log file."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if settings.log_file:
        handlers.append(logging.handlers.RotatingFileHandler(settings.log_file, maxBytes=10_000_000, backupCount=3))
    logging.basicConfig(level=settings.log_level.upper(), handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


try:  # ZeroGPU: only the measuring runs on the GPU; off ZeroGPU spaces.GPU returns the function unchanged
    import spaces

    gpu = spaces.GPU(duration=120)
except ImportError:  # pragma: no cover - spaces is in requirements.txt
    def gpu(fn):
        return fn


@gpu
def _measure(path: Path, opts: SyncOptions, info: MediaInfo | None = None, progress=None,
             analysis=None) -> Iterator[IterationEvent | SyncResult]:
    """The GPU part: the library's measuring step (SyncNet and its cross-check, or cca), nothing else."""
    yield from measure_events(path, opts, info, progress, analysis=analysis)


def _table(events: list[IterationEvent]) -> list[list]:
    return [[e.iteration, round(e.audio_lag_ms, 1), round(e.residual_ms, 1), round(e.confidence, 3),
             e.estimate.engine, None if e.estimate.p_correct is None else round(e.estimate.p_correct, 3)]
            for e in events]


TABLE_HEADERS = ["iteration", "audio lag (ms)", "residual (ms)", "confidence", "engine", "p_correct"]


def _explain(result: SyncResult | None, lag: float | None, applied: bool, verified: float | None) -> str:
    """The outcome in plain words."""
    if result is None:
        head = f"Applied the manual shift: the audio moved {abs(lag):.1f} ms {'earlier' if lag > 0 else 'later'}."
    elif result.decision == "in_sync":
        return (f"In sync: the sound is {result.audio_lag_ms:+.1f} ms from the lips, within the tolerance. "
                "No new file was made.")
    elif result.decision == "uncertain":
        return (f"Could not decide ({result.reason}). Nothing was changed; set a manual shift in Options to "
                "apply one anyway.")
    else:
        side = "after" if lag > 0 else "before"
        chance = "" if result.p_correct is None else f", {100 * result.p_correct:.0f} % likely within 40 ms"
        head = (f"The sound came {abs(lag):.1f} ms {side} the lips (confidence {result.confidence:.2f}{chance}, "
                f"{result.engine}); the audio was moved {'earlier' if lag > 0 else 'later'} by that much.")
    if applied and verified is not None:
        head += f" Checked in the written file: {verified:+.1f} ms."
    return head


def _explain_along(report: dict) -> str:
    """How a lag that changes along the clip was removed, and what the written file says: the report's own
    figures (the plan's start lag, the window-by-window check, the written file's timeline)."""
    start = float((report.get("applied_drift") or {}).get("lag_ms", report["applied_shift_ms"]))
    words = f"At the start the audio was moved {abs(start):.1f} ms {'earlier' if start > 0 else 'later'}."
    check = (report.get("verified_drift") or {}).get("max_error_ms")
    if check is not None:
        words += f" Checked in the written file window by window: within {check:.0f} ms of the plan"
        after = [s for s in report.get("verified_timeline") or [] if s.get("audio_lag_ms") is not None]
        if after:
            worst = max(abs(s["audio_lag_ms"]) for s in after)
            words += f"; read again from the lips, {len(after)} confident segments, the worst {worst:.0f} ms off"
        words += "."
    return words


def _output_name(src: Path) -> str:
    """A generated output name: ``synced`` plus the input's container suffix (never the upload's name)."""
    suffix = src.suffix.lower()
    return "synced" + (suffix if suffix in CONTAINERS else ".mp4")


def _run(j: Job, path: Path, opts: SyncOptions, manual_ms: float | None, progress: gr.Progress) -> Iterator[tuple]:
    """The library's fix flow (:func:`pipeline.fix.fix_events`), its events turned into widget updates."""
    skip = gr.skip()
    progress(0.0, desc="checking the file")
    path, info = checked_input(path, SETTINGS.max_duration_s, SETTINGS.max_upload_mb)
    j.log.info("input %s: %.1f s, %s, %d streams", info.format, info.duration_s, info.video.codec, len(info.streams))
    events: list[IterationEvent] = []
    yield "Analysing faces and sound…", [], sync_figure([]), skip, skip, skip

    def stage(name: str, frac: float) -> None:
        at = {"analysing": 0.05 + 0.55 * frac, "scoring": 0.6 + 0.2 * frac, "writing": 0.8, "verifying": 0.9}
        progress(at.get(name, 0.0), desc=name)

    done: FixDone | None = None
    manual = float(manual_ms) if manual_ms else None  # the field's "0 or empty: measure"
    for ev in fix_events(path, j.dir / _output_name(path), opts, info=info, apply_ms=manual,
                         progress=None if os.environ.get("SPACES_ZERO_GPU") else stage, measure_fn=_measure):
        if isinstance(ev, IterationEvent):
            events.append(ev)
            j.log.info("iteration %d: lag %+.1f ms, confidence %.3f", ev.iteration, ev.audio_lag_ms, ev.confidence)
            yield (f"Iteration {ev.iteration}: audio lag {ev.audio_lag_ms:+.1f} ms (residual {ev.residual_ms:+.1f}), "
                   f"confidence {ev.confidence:.2f}", _table(events), sync_figure(events), skip, skip, skip)
        elif isinstance(ev, SyncResult):
            j.log.info("decision %s: %s", ev.decision, ev.reason)
        else:
            done = ev
    assert done is not None
    report = done.report
    video = None
    if done.output is not None:
        video = make_preview(done.output, j.dir / "synced_preview.mp4")
        report["output"] = done.output.name  # the job folder is the app's business, not the client's
        j.log.info("wrote %s, shifted %+.2f ms, verified %+.2f ms", done.output.name, done.applied_shift_ms,
                   done.verified_shift_ms)
    report.update(job_id=j.id, job_log=j.lines)
    report_path = j.dir / "report.json"
    report_path.write_text(json.dumps(report, indent=1))
    progress(1.0, desc="done")
    lag = report["audio_lag_ms"] if done.output is not None else None
    corrected = None if done.output is None else report.get("applied_drift") is not None
    along = describe_drift(report.get("drift"), corrected)
    if corrected:  # one lag does not describe it: say what changes along the clip and how it was checked
        text = f"{along} {_explain_along(report)}"
    else:
        text = f"{_explain(done.result, lag, done.output is not None, done.verified_shift_ms)} {along}".strip()
    yield (text, _table(events), sync_figure(events, report=report),
           str(video) if video else None, str(done.output) if done.output else None, str(report_path))


def _options(engine: str, search_ms: float, max_iterations: int, min_confidence: float | None,
             tolerance_ms: float) -> SyncOptions:
    """The events' options, checked by the library with the command line's limits and words."""
    try:
        return SyncOptions(engine=engine or "auto", max_iterations=int(max_iterations or DEFAULT_MAX_ITERATIONS),
                           tolerance_ms=float(tolerance_ms or DEFAULT_TOLERANCE_MS),
                           min_confidence=float(min_confidence) if min_confidence else None,
                           search_ms=float(search_ms or DEFAULT_SEARCH_MS))
    except UserError as exc:
        raise gr.Error(str(exc)) from exc
    except (TypeError, ValueError) as exc:
        raise gr.Error(f"An option is not a number: {exc}") from exc


def _in_job(video: str | None, run: Callable[[Job, Path], Iterator[tuple]]) -> Iterator[tuple]:
    """One job folder and one way of reporting errors for every event: the library's words for bad input,
    a job id (and the server log) for a bug."""
    if not video:
        raise gr.Error("Please upload a video first.")
    cleanup_stale(SETTINGS.temp_dir, SETTINGS.retention_s)
    with job(SETTINGS.temp_dir) as j:
        try:
            yield from j.follow(run(j, Path(video)))
        except gr.Error:
            raise
        except USER_FACING as exc:
            j.log.info("refused: %s", exc)
            raise gr.Error(str(exc)) from exc
        except Exception as exc:
            log.exception("job %s failed", j.id)
            raise gr.Error(f"Something went wrong while processing this video (job {j.id}); the server log has "
                           "the details. Try another file, or report the job id.") from exc


def sync(video: str | None, engine: str = "auto", search_ms: float = DEFAULT_SEARCH_MS,
         max_iterations: int = DEFAULT_MAX_ITERATIONS, min_confidence: float | None = None,
         tolerance_ms: float = DEFAULT_TOLERANCE_MS, manual_ms: float | None = None,
         progress: gr.Progress = gr.Progress()) -> Iterator[tuple]:  # noqa: B008 - Gradio's idiom
    """The /sync event: yields (status, iterations table, plot, synced video, corrected file, report)."""
    if not video:
        raise gr.Error("Please upload a video first.")
    opts = _options(engine, search_ms, max_iterations, min_confidence, tolerance_ms)
    yield from _in_job(video, lambda j, path: _run(j, path, opts, manual_ms, progress))


def _explain_measured(result: SyncResult) -> str:
    """What a measurement found, in plain words (nothing is written by /detect)."""
    if result.decision == "uncertain":
        return f"Could not decide ({result.reason})."
    chance = "" if result.p_correct is None else f", {100 * result.p_correct:.0f} % likely within 40 ms"
    lag = result.audio_lag_ms
    where = "in sync, within the tolerance" if result.decision == "in_sync" else "out of sync"
    side = "after" if lag > 0 else "before"
    return (f"Measured: the sound comes {abs(lag):.1f} ms {side} the lips ({where}; confidence "
            f"{result.confidence:.2f}{chance}, {result.engine}). Nothing was written.")


def _run_detect(j: Job, path: Path, opts: SyncOptions, progress: gr.Progress) -> Iterator[tuple]:
    """The library's measuring step (:func:`pipeline.fix.measure_events`), its events turned into updates."""
    skip = gr.skip()
    progress(0.0, desc="checking the file")
    path, info = checked_input(path, SETTINGS.max_duration_s, SETTINGS.max_upload_mb)
    events: list[IterationEvent] = []
    yield "Analysing faces and sound…", [], sync_figure([]), skip
    result: SyncResult | None = None
    for ev in _measure(path, opts, info):
        if isinstance(ev, IterationEvent):
            events.append(ev)
            yield (f"Iteration {ev.iteration}: audio lag {ev.audio_lag_ms:+.1f} ms (residual {ev.residual_ms:+.1f}), "
                   f"confidence {ev.confidence:.2f}", _table(events), sync_figure(events), skip)
        elif isinstance(ev, SyncResult):
            result = ev
    assert result is not None
    report = result.to_report(curves=False)
    report.update(job_id=j.id, job_log=j.lines)
    progress(1.0, desc="done")
    text = f"{_explain_measured(result)} {describe_drift(report.get('drift'), None)}".strip()
    yield text, _table(events), sync_figure(events, report=report), report


def detect(video: str | None, engine: str = "auto", search_ms: float = DEFAULT_SEARCH_MS,
           max_iterations: int = DEFAULT_MAX_ITERATIONS, min_confidence: float | None = None,
           tolerance_ms: float = DEFAULT_TOLERANCE_MS,
           progress: gr.Progress = gr.Progress()) -> Iterator[tuple]:  # noqa: B008 - Gradio's idiom
    """The /detect event: measure only. Yields (status, iterations table, plot, measurement): the last is
    the JSON report of ``python -m pipeline detect`` (decision, audio_lag_ms, confidence, p_correct, timeline,
    drift, every face in ``tracks``), and no file is written."""
    opts = _options(engine, search_ms, max_iterations, min_confidence, tolerance_ms)
    yield from _in_job(video, lambda j, path: _run_detect(j, path, opts, progress))


def input_preview(video: str | None) -> str | None:
    """A browser-playable copy of the upload (AVI, MOV/ProRes, MKV and WebM do not all play in a page)."""
    if not video:
        return None
    try:
        cleanup_stale(SETTINGS.temp_dir, SETTINGS.retention_s)
        folder = Path(tempfile.mkdtemp(prefix=f"{JOB_PREFIX}preview-", dir=SETTINGS.temp_dir))
        return str(make_preview(Path(video), folder / "input_preview.mp4"))
    except (MediaError, OSError, ValueError) as exc:
        log.info("no preview for the upload: %s", exc)
        return None


def upload_label(settings: Settings = SETTINGS) -> str:
    """What the upload area accepts, in its own words: the containers and the limits that are enforced."""
    kinds = ", ".join(c.lstrip(".").upper() for c in CONTAINERS)
    minutes = settings.max_duration_s / 60
    return f"Video ({kinds}; up to {settings.max_upload_mb} MB and {minutes:g} minutes)"


def build_demo(settings: Settings = SETTINGS) -> gr.Blocks:
    settings.temp_dir.mkdir(parents=True, exist_ok=True)
    with gr.Blocks(title="SyncFix", delete_cache=(int(settings.retention_s), int(settings.retention_s))) as demo:
        gr.Markdown("# SyncFix\nUpload a video of someone talking: SyncFix measures how far the sound is out of "
                    "step with the lips, shifts the audio to fix it, and hands the corrected video back.")
        with gr.Row():
            with gr.Column():
                in_file = gr.File(label=upload_label(settings), file_types=list(CONTAINERS), type="filepath",
                                  elem_id="in_file")
                in_preview = gr.Video(label="Your upload", interactive=False, elem_id="in_preview")
                with gr.Accordion("Options", open=False):
                    engine = gr.Dropdown(list(ENGINES), value="auto", label="Engine",
                                         info="auto: SyncNet when its weights are present, else the weight-free cca")
                    # No widget limits: SyncOptions checks the values, with the command line's words.
                    search = gr.Number(DEFAULT_SEARCH_MS, label=f"Search range (± ms, up to {MAX_USER_SEARCH_MS:.0f})")
                    iters = gr.Number(DEFAULT_MAX_ITERATIONS, label="Maximum iterations", precision=0)
                    conf = gr.Number(None, label="Confidence threshold (0 or empty: the engine's own)")
                    tol = gr.Number(DEFAULT_TOLERANCE_MS, label="Tolerance (ms)")
                    manual = gr.Number(None, label="Manual shift in ms (0 or empty: measure; > 0 moves the audio "
                                                   "earlier, < 0 later, without measuring)")
                with gr.Row():
                    button = gr.Button("Sync", variant="primary", elem_id="sync_btn")
                    measure_btn = gr.Button("Measure only", elem_id="detect_btn")
            with gr.Column():
                status = gr.Textbox(label="Status", interactive=False, lines=3, elem_id="status")
                table = gr.Dataframe(headers=TABLE_HEADERS, label="Iterations", interactive=False, elem_id="table")
                plot = gr.Plot(label="Confidence", elem_id="plot")
                out_video = gr.Video(label="Synced video", interactive=False, elem_id="out_video")
                out_file = gr.File(label="Corrected file (original container and codecs)", elem_id="out_file")
                report = gr.File(label="Report (JSON)", elem_id="report")
                measured = gr.JSON(label="Measurement (Measure only)", elem_id="measurement")
        examples = settings.examples_dir
        if examples.is_dir():
            clips = [str(examples / n) for n in ("example.avi", "w2l_input2.mp4", "synced_example.avi")
                     if (examples / n).exists()]
            if clips:
                gr.Examples([[c] for c in clips], inputs=[in_file], label="Examples (development clips)")
        in_file.change(input_preview, in_file, in_preview, api_visibility="private")
        button.click(sync, [in_file, engine, search, iters, conf, tol, manual],
                     [status, table, plot, out_video, out_file, report], api_name="sync",
                     show_progress_on=[out_video], concurrency_limit=settings.concurrency)
        measure_btn.click(detect, [in_file, engine, search, iters, conf, tol], [status, table, plot, measured],
                          api_name="detect", show_progress_on=[measured], concurrency_limit=settings.concurrency)
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=settings.concurrency)
    return demo


def launch_kwargs(settings: Settings = SETTINGS) -> dict:
    kw: dict = dict(server_name=settings.server_name, server_port=settings.server_port, share=settings.share,
                    max_file_size=f"{settings.max_upload_mb}mb")
    if settings.examples_dir.is_dir():
        kw["allowed_paths"] = [str(settings.examples_dir)]
    if settings.auth:
        user, _, password = settings.auth.partition(":")
        if not user or not password:
            raise SystemExit("SYNCFIX_AUTH must be user:password")
        kw["auth"] = (user, password)
    return kw


def prepare_weights(settings: Settings = SETTINGS) -> None:
    """On a Space (or with SYNCFIX_FETCH_WEIGHTS=1): fetch the SyncNet weights at start-up and load them
    once; without them the app runs on the weight-free engine."""
    from syncnet.weights import ensure_weights

    if settings.fetch_weights:
        try:
            ensure_weights(progress=False)
        except WeightsError as exc:
            log.warning("SyncNet weights unavailable: %s", exc)
    try:
        from pipeline.engines import syncnet_embedder
        from syncnet.weights import weights_available

        if weights_available():
            syncnet_embedder()
            log.info("SyncNet loaded")
    except EngineUnavailable as exc:
        log.warning("SyncNet not loaded: %s", exc)


if __name__ == "__main__":
    configure_logging()
    cleanup_stale(SETTINGS.temp_dir, SETTINGS.retention_s)
    prepare_weights()
    build_demo().launch(**launch_kwargs())
