"""The allocator's two modes (pipeline.heap): frames by mmap while decoding, maths temporaries from the heap.

Measured in a fresh interpreter each time: glibc serves a block from free heap memory whatever its mmap
threshold, so a process that has run other tests (a fragmented heap) would say nothing about the modes.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from pathlib import Path

import pytest

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
