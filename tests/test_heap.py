"""The allocator's two modes (pipeline.heap): frames by mmap while decoding, maths temporaries from the heap.

Measured in a fresh interpreter each time: glibc serves a block from free heap memory whatever its mmap
threshold, so a process that has run other tests (a fragmented heap) would say nothing about the modes.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from pipeline import heap

ROOT = Path(__file__).resolve().parent.parent
BLOCK = 1024 * 1024  #: 1 MiB: above the decoding threshold, below the working one, too small for a huge page
PAGES = BLOCK // 4096


def _glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and hasattr(ctypes.CDLL("libc.so.6"), "mallopt")
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _glibc(), reason="the allocator's modes are glibc's (mallopt)")

PRELUDE = f"""
import json, resource, threading
import numpy as np
from pipeline import heap

def faults(n=40):
    '''Minor page faults while making and dropping n 1 MiB temporaries (touched, as maths does).'''
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        a = np.ones({BLOCK} // 8)
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
"""


def _run(body: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PRELUDE + body], capture_output=True, text=True, cwd=ROOT,
                         check=True)
    return json.loads(out.stdout)


def test_temporaries_reuse_memory_outside_decoding_and_are_unmapped_inside():
    got = _run("""
with heap.decoding_heap():
    pass
faults(2)  # the heap grows once
working = faults()
with heap.decoding_heap():
    decoding = faults()
after = faults()
print(json.dumps({"working": working, "decoding": decoding, "after": after}))
""")
    pages = 40 * PAGES
    assert got["decoding"] > 0.8 * pages  # every block mapped afresh: its memory goes back to the OS when freed
    assert got["working"] < 0.1 * pages and got["after"] < 0.1 * pages  # reused: no fresh pages per temporary


def test_concurrent_analyses_keep_decoding_mode_until_the_last_ends():
    got = _run("""
inside, release = threading.Event(), threading.Event()
def other():
    with heap.decoding_heap():
        inside.set()
        release.wait(10)
t = threading.Thread(target=other)
t.start()
inside.wait(10)
with heap.decoding_heap():
    pass
still = faults(10)  # this one ended, the other still decodes
release.set()
t.join()
faults(2)
done = faults(10)
print(json.dumps({"still": still, "done": done}))
""")
    assert got["still"] > 0.8 * 10 * PAGES
    assert got["done"] < 0.1 * 10 * PAGES


def test_scratch_buffers_are_reused_per_thread_and_grow():
    a = heap.scratch("t", (10, 20, 3))
    b = heap.scratch("t", (5, 4))
    assert a.shape == (10, 20, 3) and b.shape == (5, 4) and np.shares_memory(a, b)  # the same memory again
    assert not np.shares_memory(a, heap.scratch("other", (10, 20, 3)))  # each name its own
    big = heap.scratch("t", (100, 100, 3))
    assert big.shape == (100, 100, 3) and big.flags.c_contiguous
    assert heap.scratch("f", (4, 4), np.float32).dtype == np.float32
    seen = []
    t = threading.Thread(target=lambda: seen.append(heap.scratch("t", (10, 20, 3))))
    t.start()
    t.join()
    assert not np.shares_memory(seen[0], heap.scratch("t", (10, 20, 3)))  # another thread, another buffer


def test_cutting_syncnet_crops_while_decoding_maps_no_fresh_pictures():
    """A crop's region (1 MB here) and its padded copy live in scratch buffers: cutting crops while frames
    are decoded costs the kept 224x224 crop's pages, not a megabyte of fresh pages per transient picture."""
    clip = ROOT.parent / "shared" / "fixtures" / "w2l_input2.mp4"
    if not clip.exists():
        pytest.skip("../shared/fixtures is not beside the checkout")
    got = _run(f"""
from pipeline.media import iter_grid_frames
from pipeline.tracking import cut_face_crop
gf = next(iter_grid_frames({str(clip)!r}))
with heap.decoding_heap():
    cut_face_crop(gf, 640, 600, 210)  # the buffers grow once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    kept = [cut_face_crop(gf, 640, 600, 210) for _ in range(20)]  # 588 x 588 px, padded below the frame
    per_crop = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20
print(json.dumps({{"per_crop": per_crop}}))
""")
    region_pages = 588 * 588 * 3 / 4096  # 253: the converted region alone, were it made afresh
    assert got["per_crop"] < 0.5 * region_pages
