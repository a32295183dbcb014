"""The SyncFix pipeline: any video in, measured, corrected, verified file out. Knows nothing of Gradio.

The public Python API (served lazily, so ``import pipeline`` is cheap)::

    from pipeline import SyncOptions, sync_video, fix_video, batch_fix

* :func:`sync_video` (path, opts=SyncOptions(...)): a generator of :class:`IterationEvent` then one
  :class:`SyncResult`, with the engines ``opts.engine`` names chosen as ``detect`` chooses them;
* :func:`fix_video` (path, out=None, opts=None, apply_ms=None, force=False): ``fix``'s report as a dict;
  :func:`fix_events` is the same flow as events, ending with a :class:`FixDone`;
* :func:`make_engine` (name): the engines ``name`` stands for, as ``detect`` chooses them (an
  :class:`EngineChoice`: the deciding engine, its cross-check, why), for ``sync_video(path, choice)``;
* :func:`batch_fix` (inputs, outdir, options=None, **keywords): ``batch`` without building a command
  line, returning its :class:`Summary`;
* :class:`UserError` and ``USER_FACING``: the errors every entry point reports to the user.

Modules, bottom up: media (probe, decode), faces and tracking, analysis (one decoding pass), estimates (the
estimate type and engine protocol), engines (SyncNet's engine, selection) and cca (the weight-free engine),
sync (the iterate-shift-verify generator), correct (writing the shifted file), fix (the one fix flow),
arguments and cli (``python -m pipeline``), tasks, executors and batch (collections, on a local process
pool or Ray), plots, preview and jobs (for the app).
"""

from __future__ import annotations

__all__ = [
    "USER_FACING", "EngineChoice", "FixDone", "IterationEvent", "Summary", "SyncOptions", "SyncResult", "UserError",
    "batch_fix", "fix_events", "fix_video", "make_engine", "sync_video",
]

_LAZY = {
    "SyncOptions": "sync", "SyncResult": "sync", "IterationEvent": "sync", "sync_video": "sync",
    "fix_video": "fix", "fix_events": "fix", "FixDone": "fix", "batch_fix": "batch", "Summary": "batch",
    "UserError": "errors", "USER_FACING": "errors", "make_engine": "engines", "EngineChoice": "engines",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
