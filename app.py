"""SyncFix web app: a thin Gradio shell over the library.

This first version scores a 224x224 face-crop clip with SyncNet (what ``python -m syncnet score``
does); the full upload-measure-fix pipeline arrives with ``pipeline/``. Nothing here computes anything
itself: it validates input, calls the library, and turns library errors into Gradio errors.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before importing gradio: no phoning home
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import functools  # noqa: E402
import logging  # noqa: E402

import gradio as gr  # noqa: E402

from syncnet import Embedder, WeightsError, load_model  # noqa: E402
from syncnet.inference import CropSizeError  # noqa: E402
from syncnet.media import MediaError  # noqa: E402
from syncnet.score import score_video  # noqa: E402

log = logging.getLogger("syncfix.app")


@functools.lru_cache(maxsize=1)
def _model() -> Embedder:
    """Loaded once per process, not per request."""
    return load_model(os.environ.get("SYNCNET_WEIGHTS") or None)


def score(video: str | None) -> dict:
    if not video:
        raise gr.Error("Please upload a video first.")
    try:
        result = score_video(video, _model())
    except (MediaError, CropSizeError, WeightsError) as exc:
        raise gr.Error(str(exc)) from exc
    return result.to_dict()


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="SyncFix") as demo:
        gr.Markdown("# SyncFix\nScore the lip sync of a 224x224 face-crop clip with SyncNet.")
        video = gr.Video(label="Face-crop clip")
        button = gr.Button("Score", variant="primary")
        out = gr.JSON(label="SyncNet result")
        button.click(score, video, out, api_name="score")
    return demo


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("SYNCFIX_LOG_LEVEL", "INFO"))
    build_demo().queue(max_size=8).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        share=False,
    )
