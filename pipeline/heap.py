"""How glibc's allocator serves big blocks: by mmap while frames are decoded, from the heap otherwise.

The two phases of a measurement want opposite things of ``malloc``:

* Decoding allocates short-lived multi-MB blocks (colour pictures for detection, the regions SyncNet's crops
  are cut from; every frame, when frames were converted to BGR arrays) while small crops are kept between
  them. glibc raises its mmap threshold after the first freed multi-MB block; from then on those blocks come
  from the heap, the kept crops pin it, and RSS grew by about a frame per frame (3.4 GB on a 70 s 720p clip).
  A fixed 128 KiB threshold keeps it flat (0.7 GB): every such block is mapped and unmapped.
* The engines' maths makes many short-lived temporaries of 0.1-10 MB (FFT cross-correlations, prefix sums).
  Mapped and unmapped one by one, each costs fresh zeroed pages: 1.4 M page faults, and scoring a minute took
  8.1 s instead of 2.8 s. From the heap, they are reused.

:func:`decoding_heap` sets the first while any analysis runs (threads of one server may analyse at once)
and the second once none does. A no-op off glibc. (glibc maps a block only when no free heap memory fits
it; in a long-lived server, frames may still come from what earlier jobs freed, which costs no growth.)
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

log = logging.getLogger(__name__)

#: glibc's mallopt parameter numbers.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: While decoding: blocks of 128 KiB and more are mapped, and the heap's top is returned above 128 KiB.
DECODING_MMAP_THRESHOLD = 128 * 1024
DECODING_TRIM_THRESHOLD = 128 * 1024
#: Otherwise: blocks up to 32 MiB (glibc's own ceiling for its dynamic threshold) come from the heap, and
#: up to 64 MiB of free heap top is kept for the next temporaries.
WORKING_MMAP_THRESHOLD = 32 * 1024 * 1024
WORKING_TRIM_THRESHOLD = 64 * 1024 * 1024

_lock = threading.Lock()
_decoding = 0
_libc: ctypes.CDLL | None | bool = False  # False: not looked up yet; None: not glibc


def _mallopt(param: int, value: int) -> None:
    global _libc
    if _libc is False:
        try:
            _libc = ctypes.CDLL("libc.so.6")
            _libc.mallopt  # noqa: B018 - raises AttributeError where there is no mallopt
        except (OSError, AttributeError):
            _libc = None
    if _libc is not None:
        _libc.mallopt(param, value)


@contextmanager
def decoding_heap() -> Iterator[None]:
    """Serve big blocks by mmap for the duration (frames go back to the OS when freed); from the heap again
    when the last concurrent analysis ends."""
    global _decoding
    with _lock:
        _decoding += 1
        if _decoding == 1:
            _mallopt(M_MMAP_THRESHOLD, DECODING_MMAP_THRESHOLD)
            _mallopt(M_TRIM_THRESHOLD, DECODING_TRIM_THRESHOLD)
    try:
        yield
    finally:
        with _lock:
            _decoding -= 1
            if _decoding == 0:
                _mallopt(M_MMAP_THRESHOLD, WORKING_MMAP_THRESHOLD)
                _mallopt(M_TRIM_THRESHOLD, WORKING_TRIM_THRESHOLD)


_scratch = threading.local()


def scratch(name: str, shape: tuple[int, ...], dtype: type = np.uint8) -> np.ndarray:
    """A reusable buffer of ``shape`` for this thread, valid until this thread asks for ``name`` again.

    While frames are decoded every block of 128 KiB and more is mapped fresh (:func:`decoding_heap`), so a
    short-lived temporary of a megabyte costs its pages' faults and zeroing each time: converting a 720p
    frame to colour took 2.9 ms instead of 0.4 ms, cutting one SyncNet crop 2 ms instead of 0.5 ms. The
    transient pictures of a crop or of the detector's input are made in these buffers instead (contents
    identical; the buffer only grows, to the largest region asked for).
    """
    dt = np.dtype(dtype)
    need = int(np.prod(shape)) * dt.itemsize
    bufs = getattr(_scratch, "bufs", None)
    if bufs is None:
        bufs = _scratch.bufs = {}
    buf = bufs.get(name)
    if buf is None or buf.nbytes < need:
        buf = bufs[name] = np.empty(need, np.uint8)
    return buf[:need].view(dt).reshape(shape)
