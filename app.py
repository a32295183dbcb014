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
from pipeline.facepicture import TABLE_HEADERS as FACE_HEADERS  # noqa: E402
from pipeline.facepicture import face_rows, faces_picture  # noqa: E402
from pipeline.fix import FixDone, checked_input, fix_events, measure_events  # noqa: E402
from pipeline.jobs import JOB_PREFIX, Job, cleanup_stale, job  # noqa: E402
from pipeline.media import MediaInfo  # noqa: E402
from pipeline.outcome import error_headline, headline  # noqa: E402
from pipeline.plots import message_figure, sync_figure  # noqa: E402
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
    mcp_server: bool = True  #: /sync and /detect as MCP tools at /gradio_api/mcp/ (``SYNCFIX_MCP=0``: off)

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
            mcp_server=env.get("SYNCFIX_MCP", "1") != "0",
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


def _figures(result: SyncResult) -> str:
    """The reading's own figures: confidence, the calibrated chance of being right, the engine."""
    chance = "" if result.p_correct is None else f", {100 * result.p_correct:.0f} % likely within 40 ms"
    return f"(Confidence {result.confidence:.2f}{chance}, {result.engine}.)"


def _details(result: SyncResult | None, wrote: bool, verified: float | None) -> str:
    """What follows the headline in the status: the engine's figures, what was done, how it was checked."""
    if result is None:
        words = ""
    elif result.decision == "in_sync":
        words = "No new file was made."
    elif result.decision == "uncertain":
        words = "Nothing was changed; set a manual shift in Options to apply one anyway."
    else:
        words = _figures(result)
    if wrote and verified is not None:
        words += f" Checked in the written file: {verified:+.1f} ms."
    return words.strip()


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
    yield "Analysing faces and sound…", [], sync_figure([]), skip, skip, skip, None

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
                   f"confidence {ev.confidence:.2f}", _table(events), sync_figure(events), skip, skip, skip, None)
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
    wrote = done.output is not None
    corrected = None if not wrote else report.get("applied_drift") is not None
    along = describe_drift(report.get("drift"), corrected)
    head = headline(report, wrote)
    if corrected:  # one lag does not describe it: say what changes along the clip and how it was checked
        text = f"{head} {along} {_explain_along(report)}"
    else:
        text = f"{head} {_details(done.result, wrote, done.verified_shift_ms)} {along}"
    analysis = done.result.analysis if done.result is not None else None
    yield (" ".join(text.split()), _table(events), sync_figure(events, report=report, headline=head),
           str(video) if video else None, str(done.output) if done.output else None, str(report_path),
           (analysis, report))


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


def _sync_updates(video: str | None, engine: str, search_ms: float, max_iterations: int,
                  min_confidence: float | None, tolerance_ms: float, manual_ms: float | None,
                  progress: gr.Progress) -> Iterator[tuple]:
    """The fix flow's widget updates: /sync's six outputs, then (analysis, report) at the end, else None."""
    if not video:
        raise gr.Error("Please upload a video first.")
    opts = _options(engine, search_ms, max_iterations, min_confidence, tolerance_ms)
    yield from _in_job(video, lambda j, path: _run(j, path, opts, manual_ms, progress))


def sync(video: str | None, engine: str = "auto", search_ms: float = DEFAULT_SEARCH_MS,
         max_iterations: int = DEFAULT_MAX_ITERATIONS, min_confidence: float | None = None,
         tolerance_ms: float = DEFAULT_TOLERANCE_MS, manual_ms: float | None = None,
         progress: gr.Progress = gr.Progress()) -> Iterator[tuple]:  # noqa: B008 - Gradio's idiom
    """/sync: measure and fix (the MCP tool's description is :data:`SYNC_DOC`, set below)."""
    for update in _sync_updates(video, engine, search_ms, max_iterations, min_confidence, tolerance_ms, manual_ms,
                                progress):
        yield update[:6]


def _run_detect(j: Job, path: Path, opts: SyncOptions, progress: gr.Progress) -> Iterator[tuple]:
    """The library's measuring step (:func:`pipeline.fix.measure_events`), its events turned into updates."""
    skip = gr.skip()
    progress(0.0, desc="checking the file")
    path, info = checked_input(path, SETTINGS.max_duration_s, SETTINGS.max_upload_mb)
    events: list[IterationEvent] = []
    yield "Analysing faces and sound…", [], sync_figure([]), skip, None
    result: SyncResult | None = None
    for ev in _measure(path, opts, info):
        if isinstance(ev, IterationEvent):
            events.append(ev)
            yield (f"Iteration {ev.iteration}: audio lag {ev.audio_lag_ms:+.1f} ms (residual {ev.residual_ms:+.1f}), "
                   f"confidence {ev.confidence:.2f}", _table(events), sync_figure(events), skip, None)
        elif isinstance(ev, SyncResult):
            result = ev
    assert result is not None
    report = result.to_report(curves=False)
    report.update(job_id=j.id, job_log=j.lines)
    progress(1.0, desc="done")
    head = headline(report)
    details = "Nothing was written." if result.decision == "uncertain" else f"{_figures(result)} Nothing was written."
    text = " ".join(f"{head} {details} {describe_drift(report.get('drift'), None)}".split())
    yield (text, _table(events), sync_figure(events, report=report, headline=head), report,
           (result.analysis, report))


def _detect_updates(video: str | None, engine: str, search_ms: float, max_iterations: int,
                    min_confidence: float | None, tolerance_ms: float, progress: gr.Progress) -> Iterator[tuple]:
    """The measuring flow's widget updates: /detect's four outputs, then (analysis, report) at the end, else
    None."""
    opts = _options(engine, search_ms, max_iterations, min_confidence, tolerance_ms)
    yield from _in_job(video, lambda j, path: _run_detect(j, path, opts, progress))


def detect(video: str | None, engine: str = "auto", search_ms: float = DEFAULT_SEARCH_MS,
           max_iterations: int = DEFAULT_MAX_ITERATIONS, min_confidence: float | None = None,
           tolerance_ms: float = DEFAULT_TOLERANCE_MS,
           progress: gr.Progress = gr.Progress()) -> Iterator[tuple]:  # noqa: B008 - Gradio's idiom
    """/detect: measure only (the MCP tool's description is :data:`DETECT_DOC`, set below)."""
    for update in _detect_updates(video, engine, search_ms, max_iterations, min_confidence, tolerance_ms, progress):
        yield update[:4]


#: What the API parameters mean: the API page and the MCP tools' schemas read them from the docstrings,
#: one line per parameter (Gradio's docstring parser).
ARG_DOCS = {
    "video": "the video (MP4, M4V, MOV, MKV, WebM or AVI, within the server's size and length limits) with at "
             "least one visible talking face.",
    "engine": 'which estimator measures: "auto" (SyncNet when its weights are present, else the weight-free '
              '"cca"), "cca", "syncnet" or "both".',
    "search_ms": "how far to look for the offset, in ms either way (up to 10000); the weight-free engine always "
                 "looks at least 3000 ms.",
    "max_iterations": "measure-shift-verify rounds at most.",
    "min_confidence": "the confidence a reading needs before it is acted on; empty or 0: the engine's own "
                      "calibrated threshold.",
    "tolerance_ms": "a lag within this many ms counts as in sync (nothing is written).",
    "manual_ms": "apply this shift without measuring, in ms (> 0 moves the audio earlier, < 0 later); empty or "
                 "0: measure.",
}
_RESULT_DOCS = {
    "status": "the outcome in words; its first sentence is the decision (in sync; out of sync, and for /sync "
              "corrected; could not decide, with the reason; manual shift).",
    "iterations": "one row per iteration: audio lag in ms (> 0: the sound comes after the lips), residual, "
                  "confidence, engine, p_correct.",
    "plot": "the last iteration's score against lag (and the lag along the clip), as a picture.",
}
_REPORT_FIELDS = ("decision (in_sync, shift or uncertain), audio_lag_ms (> 0: the sound comes after the lips; "
                  "fixing it moves the audio earlier by that much), confidence, p_correct (the chance that the lag "
                  "is within 40 ms; null for SyncNet), reason, track (the measured face), tracks (every face with "
                  "its own reading), timeline and drift")


def _api_doc(summary: str, args: tuple[str, ...], results: Mapping[str, str]) -> str:
    lines = [summary, "", "Args:", *(f"    {a}: {ARG_DOCS[a]}" for a in args), "", "Returns:",
             *(f"    {k}: {v.rstrip('.')}" for k, v in results.items())]
    return "\n".join(lines)


SYNC_DOC = _api_doc(
    "Measure how far the sound of a video of someone talking is out of step with the lips, and fix it: the audio "
    "is shifted (or resampled, when the lag drifts along the clip) and a corrected copy is written in the "
    "input's own container and codecs. Streams one update per measuring iteration.",
    tuple(ARG_DOCS),
    {**_RESULT_DOCS,
     "synced video": "a browser-playable preview of the corrected file; empty when nothing was written.",
     "corrected file": "the corrected video, same container and codecs as the input; empty when in sync or "
                       "undecided.",
     "report": f"the JSON report file: {_REPORT_FIELDS}, applied_shift_ms and verified_shift_ms."})
DETECT_DOC = _api_doc(
    "Measure how far the sound of a video of someone talking is out of step with the lips, without writing "
    "anything. Streams one update per measuring iteration; the last one's measurement is the JSON report of "
    "`python -m pipeline detect`.",
    tuple(a for a in ARG_DOCS if a != "manual_ms"),
    {**_RESULT_DOCS, "measurement": f"the JSON report: {_REPORT_FIELDS}."})
sync.__doc__ = SYNC_DOC
detect.__doc__ = DETECT_DOC


def _with_faces(updates: Iterator[tuple], n: int) -> Iterator[tuple]:
    """The page's view of an event: its ``n`` outputs plus the face picture and table, drawn here from the
    last update's (analysis, report), so the API's events never draw them; on an error, the status and the
    plot both say it before Gradio shows the message."""
    skip = gr.skip()
    try:
        for update in updates:
            faces = update[n]
            if faces is None:
                yield (*update[:n], skip, skip)
            else:
                analysis, report = faces
                yield (*update[:n], faces_picture(analysis, report), face_rows(report))
    except gr.Error as exc:
        words = error_headline(exc.message)
        yield (words, skip, message_figure(words), *[skip] * (n - 3), None, [])
        raise


def sync_ui(video: str | None, engine: str = "auto", search_ms: float = DEFAULT_SEARCH_MS,
            max_iterations: int = DEFAULT_MAX_ITERATIONS, min_confidence: float | None = None,
            tolerance_ms: float = DEFAULT_TOLERANCE_MS, manual_ms: float | None = None,
            progress: gr.Progress = gr.Progress()) -> Iterator[tuple]:  # noqa: B008 - Gradio's idiom
    """The page's Sync button: /sync's outputs plus the face picture and table (not part of the API)."""
    yield from _with_faces(_sync_updates(video, engine, search_ms, max_iterations, min_confidence, tolerance_ms,
                                         manual_ms, progress), 6)


def detect_ui(video: str | None, engine: str = "auto", search_ms: float = DEFAULT_SEARCH_MS,
              max_iterations: int = DEFAULT_MAX_ITERATIONS, min_confidence: float | None = None,
              tolerance_ms: float = DEFAULT_TOLERANCE_MS,
              progress: gr.Progress = gr.Progress()) -> Iterator[tuple]:  # noqa: B008 - Gradio's idiom
    """The page's Measure only button: /detect's outputs plus the face picture and table."""
    yield from _with_faces(_detect_updates(video, engine, search_ms, max_iterations, min_confidence, tolerance_ms,
                                           progress), 4)


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
                plot = gr.Plot(label="Confidence", show_label=False, elem_id="plot")  # the figure has titles
                faces_img = gr.Image(label="Faces found (the measured one boxed in green)", type="numpy",
                                     interactive=False, show_label=False, elem_id="faces")
                faces_table = gr.Dataframe(headers=FACE_HEADERS, label="Faces: each one's own first reading",
                                           interactive=False, elem_id="faces_table")
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
        inputs = [in_file, engine, search, iters, conf, tol]
        limits = dict(concurrency_limit=settings.concurrency, concurrency_id="measure")
        # The page's buttons: the API's outputs plus the face picture and table (private events).
        button.click(sync_ui, [*inputs, manual], [status, table, plot, out_video, out_file, report, faces_img,
                                                   faces_table], api_visibility="private",
                     show_progress_on=[out_video], **limits)
        measure_btn.click(detect_ui, inputs, [status, table, plot, measured, faces_img, faces_table],
                          api_visibility="private", show_progress_on=[measured], **limits)
        # The public API (/sync, /detect; also the MCP tools): the same flows, outputs as documented.
        api_sync = gr.Button(visible=False, elem_id="api_sync")
        api_sync.click(sync, [*inputs, manual], [status, table, plot, out_video, out_file, report],
                       api_name="sync", **limits)
        api_detect = gr.Button(visible=False, elem_id="api_detect")
        api_detect.click(detect, inputs, [status, table, plot, measured], api_name="detect", **limits)
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=settings.concurrency)
    return demo


def launch_kwargs(settings: Settings = SETTINGS) -> dict:
    kw: dict = dict(server_name=settings.server_name, server_port=settings.server_port, share=settings.share,
                    max_file_size=f"{settings.max_upload_mb}mb", mcp_server=settings.mcp_server)
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
