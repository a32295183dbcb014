"""Batched, streaming embedding of lip and audio windows with a loaded SyncNet.

Frames arrive one at a time and leave as 1024-d embeddings: only the current batch of windows is
ever held as floats, so a long clip costs memory for its embeddings (8 KB per window) and nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np
import torch

from .audio import audio_windows
from .errors import UserFacingError
from .model import CROP_SIZE_RANGE, WINDOW_FRAMES, FastSyncNet, SyncNet, pick_device

log = logging.getLogger(__name__)

#: Lip windows per forward pass. Small batches stay in cache on a CPU (116 windows/s at 5 against 97 at
#: the reference's 20, on 2 cores) and cap the activations at ~40 MB; a GPU wants large ones.
CPU_BATCH = 5
CUDA_BATCH = 64
#: Audio windows per forward pass (the audio stream is ~6x cheaper than the lip stream).
AUDIO_BATCH = 100


class CropSizeError(UserFacingError, ValueError):
    """Frames are not the square ~224 px face crops the lip stream needs."""


def check_crop_shape(shape: tuple[int, ...]) -> None:
    """Raise a clear error unless ``shape`` is ``(S, S, 3)`` with S in 211..242 (224 intended)."""
    lo, hi = CROP_SIZE_RANGE
    if len(shape) != 3 or shape[2] != 3 or shape[0] != shape[1] or not lo <= shape[0] <= hi:
        h, w = (shape[0], shape[1]) if len(shape) >= 2 else (0, 0)
        raise CropSizeError(
            f"SyncNet scores square face crops of 224x224 pixels (it accepts {lo}-{hi}); this video is {w}x{h}. "
            "Crop the face first (python -m pipeline detect does it for a whole video)."
        )


class Embedder:
    """Runs a :class:`FastSyncNet` built from reference weights on CPU or CUDA, in batches."""

    def __init__(self, net: SyncNet, device: str | torch.device | None = None, batch_size: int | None = None):
        self.device = pick_device(str(device) if device else None)
        self.net = FastSyncNet.from_syncnet(net).to(self.device)
        self.batch_size = batch_size or (CPU_BATCH if self.device.type == "cpu" else CUDA_BATCH)

    @torch.inference_mode()
    def embed_audio(self, mfcc_feat: np.ndarray, n_windows: int, first: int = 0) -> np.ndarray:
        """Audio embeddings ``(n_windows, 1024)`` of windows ``first .. first+n_windows-1`` of an MFCC matrix."""
        out = np.empty((n_windows, 1024), np.float32)
        for i in range(0, n_windows, AUDIO_BATCH):
            count = min(AUDIO_BATCH, n_windows - i)
            x = torch.from_numpy(audio_windows(mfcc_feat, first + i, count)).to(self.device)
            out[i : i + count] = self.net.forward_aud(x).float().cpu().numpy()
        return out

    @torch.inference_mode()
    def _lip_batch(self, frames: list[np.ndarray]) -> np.ndarray:
        """Embeddings of the ``len(frames) - 4`` windows that start in ``frames``."""
        f = torch.from_numpy(np.stack(frames)).to(self.device, non_blocking=True).float()  # (T, H, W, 3)
        n = f.shape[0] - WINDOW_FRAMES + 1
        win = f.unfold(0, WINDOW_FRAMES, 1)  # (n, H, W, 3, 5): window v, frame v+t in the last dim
        h, w = win.shape[1], win.shape[2]
        # channel c*5+t, laid out channels-last: exactly the folded first conv's input
        x = win.contiguous().reshape(n, h, w, 3 * WINDOW_FRAMES).permute(0, 3, 1, 2)
        if self.device.type != "cpu":
            x = x.contiguous()
        return self.net.forward_lip(x).float().cpu().numpy()

    def embed_frames(self, frames: Iterable[np.ndarray], max_windows: int | None = None,
                     on_progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Lip embeddings of a frame stream, as the reference counts windows.

        With N frames the reference scores N - 5 windows (window v = frames v .. v+4; the last possible
        window is dropped), so window v is computed once frame v+5 has arrived. ``max_windows`` stops
        early (the audio may be shorter than the video).
        """
        out: list[np.ndarray] = []
        buf: list[np.ndarray] = []
        done = 0
        need = self.batch_size + WINDOW_FRAMES  # batch windows + the frame that proves the last one counts
        for frame in frames:
            if not buf and not done:
                check_crop_shape(frame.shape)
            buf.append(frame)
            if max_windows is not None and done + len(buf) - WINDOW_FRAMES >= max_windows:
                break
            if len(buf) == need:
                out.append(self._lip_batch(buf[:-1]))
                done += self.batch_size
                buf = buf[self.batch_size :]
                if on_progress:
                    on_progress(done)
        n_left = len(buf) - WINDOW_FRAMES  # windows whose following frame exists
        if max_windows is not None:
            n_left = min(n_left, max_windows - done)
        if n_left > 0:
            out.append(self._lip_batch(buf[: n_left + WINDOW_FRAMES - 1]))
            done += n_left
            if on_progress:
                on_progress(done)
        return np.concatenate(out) if out else np.zeros((0, 1024), np.float32)
