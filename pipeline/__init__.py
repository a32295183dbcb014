"""The SyncFix pipeline: any video in, measured, corrected, verified file out.

Built on :mod:`syncnet`; knows nothing of Gradio. (Filled in by the pipeline issue: media probing and
writing, face tracking, the estimation engines, the iterate-shift-verify generator, CLI and batch.)
"""
