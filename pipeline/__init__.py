"""The SyncFix pipeline: any video in, measured, corrected, verified file out.

Built on :mod:`syncnet`; knows nothing of Gradio. media (probe, decode), faces and tracking, analysis (one
decoding pass), engines and cca (estimation), sync (the iterate-shift-verify generator), correct (writing the
shifted file), cli (``python -m pipeline detect|fix|batch``), batch and executors (collections, on a local
process pool or Ray), plots, preview and jobs (for the app).
"""
