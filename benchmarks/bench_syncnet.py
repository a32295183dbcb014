"""Benchmark `syncnet score` against a reference-style run: throughput and peak memory, printed.

Each measurement runs in a fresh child process (whole command: interpreter start, imports, weights
loading, decoding, inference, scoring), timed from spawn to exit, with the child's own peak RSS.

* ``ours``: ``python -m syncnet score CLIP --weights W --json``, exactly the public command.
* ``reference``: the reference ``SyncNetInstance.evaluate`` work re-enacted from the spec: every frame
  through a default-quality JPEG file and back, the whole clip stacked as float64 then float32, MFCC by
  python_speech_features, the reference-layout network (3-D convolutions, BatchNorm unfolded, no
  ``no_grad``) in batches of 20, and ``calc_pdist`` with ``pairwise_distance``.

Clips: ``../shared/fixtures/example.avi`` (12.7 s) and the same looped to 60 s (made here, in a temp dir).
Weights: the random golden weights (speed does not depend on the values).

    python benchmarks/bench_syncnet.py [--skip-reference-60s]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SYNCFIX_SHARED", ROOT.parent / "shared"))
CLIP = SHARED / "fixtures" / "example.avi"
WEIGHTS = SHARED / "golden" / "syncnet_v2_random.model"


def child_reference(clip: str, weights: str) -> dict:
    """The reference evaluate(), step by step as the spec describes it (section 2)."""
    import av
    import numpy as np
    import python_speech_features
    import torch

    sys.path.insert(0, str(ROOT))
    from syncnet.media import load_audio
    from syncnet.model import build_syncnet
    from syncnet.weights import read_state_dict

    torch.set_num_threads(os.cpu_count() or 1)
    net = build_syncnet(read_state_dict(Path(weights)))
    with tempfile.TemporaryDirectory() as tmp:
        # 1. frames -> JPEG files at ffmpeg's default MJPEG quality, then read back
        paths = []
        with av.open(clip) as c:
            for i, frame in enumerate(c.decode(video=0)):
                enc = av.CodecContext.create("mjpeg", "w")
                enc.width, enc.height, enc.pix_fmt = frame.width, frame.height, "yuvj420p"
                enc.time_base = c.streams.video[0].time_base or 1
                data = b"".join(bytes(p) for p in enc.encode(frame.reformat(format="yuvj420p")))
                data += b"".join(bytes(p) for p in enc.encode(None))
                p = Path(tmp) / f"{i + 1:06d}.jpg"
                p.write_bytes(data)
                paths.append(p)
        images = []
        for p in paths:
            with av.open(str(p)) as c:
                images.append(next(c.decode(video=0)).to_ndarray(format="bgr24"))
    # 2-3. audio; whole clip stacked as float64 then float32
    audio = load_audio(clip)
    im = np.stack(images, axis=3)
    im = np.expand_dims(im, axis=0)
    im = np.transpose(im, (0, 3, 4, 1, 2))
    imtv = torch.autograd.Variable(torch.from_numpy(im.astype(float)).float())
    # 4. MFCC
    mfcc = np.stack([np.array(i) for i in zip(*python_speech_features.mfcc(audio, 16000))])
    cc = np.expand_dims(np.expand_dims(mfcc, axis=0), axis=0)
    cct = torch.autograd.Variable(torch.from_numpy(cc.astype(float)).float())
    min_length = min(len(images), int(np.floor(len(audio) / 640)))
    lastframe = min_length - 5
    im_feat, cc_feat = [], []
    for i in range(0, lastframe, 20):
        im_batch = [imtv[:, :, v : v + 5, :, :] for v in range(i, min(lastframe, i + 20))]
        im_feat.append(net.forward_lip(torch.cat(im_batch, 0)).data.cpu())
        cc_batch = [cct[:, :, :, v * 4 : v * 4 + 20] for v in range(i, min(lastframe, i + 20))]
        cc_feat.append(net.forward_aud(torch.cat(cc_batch, 0)).data.cpu())
    im_feat, cc_feat = torch.cat(im_feat, 0), torch.cat(cc_feat, 0)
    # 8. calc_pdist
    vshift = 15
    win = vshift * 2 + 1
    feat2p = torch.nn.functional.pad(cc_feat, (0, 0, vshift, vshift))
    dists = [torch.nn.functional.pairwise_distance(im_feat[[i], :].repeat(win, 1), feat2p[i : i + win, :])
             for i in range(len(im_feat))]
    mdist = torch.mean(torch.stack(dists, 1), 1)
    minval, minidx = torch.min(mdist, 0)
    return {"windows": int(lastframe), "offset_frames": int(vshift - minidx), "min_dist": float(minval),
            "confidence": float(np.median(mdist.numpy()) - minval)}


def child_ours(clip: str, weights: str) -> dict:
    sys.path.insert(0, str(ROOT))
    sys.argv = ["python -m syncnet", "score", clip, "--weights", weights, "--json"]
    import contextlib
    import io

    from syncnet.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main()
    if code:
        raise SystemExit(code)
    out = json.loads(buf.getvalue())
    return {k: out[k] for k in ("windows", "offset_frames", "min_dist", "confidence")}


def run_child(kind: str, clip: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", kind, str(clip)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{kind} failed:\n{proc.stderr}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return out


def make_looped_clip(src: Path, dest: Path, seconds: float) -> Path:
    """``src`` (a 25 fps face crop) looped to ``seconds``, written as mpeg4 + PCM like the original."""
    import av
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from syncnet.media import iter_video_frames, load_audio

    frames = list(iter_video_frames(src, fmt="rgb24"))
    audio = load_audio(src)
    n_frames = int(seconds * 25)
    with av.open(str(dest), "w") as out:
        vs = out.add_stream("mpeg4", rate=25)
        vs.width, vs.height, vs.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        vs.options = {"qscale": "2"}
        aus = out.add_stream("pcm_s16le", rate=16000)
        aus.layout = "mono"
        for i in range(n_frames):
            for p in vs.encode(av.VideoFrame.from_ndarray(frames[i % len(frames)], format="rgb24")):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        reps = int(np.ceil(n_frames * 640 / len(audio)))
        looped = np.tile(audio, reps)[: n_frames * 640]
        for start in range(0, len(looped), 16000):
            af = av.AudioFrame.from_ndarray(looped[None, start : start + 16000], format="s16", layout="mono")
            af.sample_rate = 16000
            for p in aus.encode(af):
                out.mux(p)
        for p in aus.encode():
            out.mux(p)
    return dest


def report(name: str, r: dict, seconds: float) -> None:
    print(f"  {name:<10} wall {r['wall_s']:6.2f} s   {r['windows'] / r['wall_s']:6.1f} windows/s   "
          f"{r['wall_s'] / seconds:5.3f} s per s of video   peak RSS {r['maxrss_mb']:7.0f} MB   "
          f"offset {r['offset_frames']} min_dist {r['min_dist']:.4f} conf {r['confidence']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "CLIP"), help=argparse.SUPPRESS)
    parser.add_argument("--skip-reference-60s", action="store_true", help="do not run the reference on 60 s")
    args = parser.parse_args()
    if args.child:
        kind, clip = args.child
        out = (child_ours if kind == "ours" else child_reference)(clip, str(WEIGHTS))
        out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out))
        return
    if not CLIP.exists() or not WEIGHTS.exists():
        sys.exit(f"needs {CLIP} and {WEIGHTS} (the shared fixtures beside the checkout)")
    print(f"machine: {os.cpu_count()} CPUs; clip {CLIP.name} (12.7 s, 25 fps, 224x224); weights: random golden")
    ref = run_child("reference", CLIP)
    ours = run_child("ours", CLIP)
    report("reference", ref, 12.68)
    report("ours", ours, 12.68)
    same = ref["offset_frames"] == ours["offset_frames"] and abs(ref["min_dist"] - ours["min_dist"]) < 0.05
    print(f"  whole-command speed-up: {ref['wall_s'] / ours['wall_s']:.2f}x   same result: {same} "
          "(the reference's JPEG round trip moves distances by ~1.5 %)")
    with tempfile.TemporaryDirectory() as tmp:
        long_clip = make_looped_clip(CLIP, Path(tmp) / "example_60s.avi", 60.0)
        print("clip example.avi looped to 60 s:")
        ours60 = run_child("ours", long_clip)
        report("ours", ours60, 60.0)
        if not args.skip_reference_60s:
            ref60 = run_child("reference", long_clip)
            report("reference", ref60, 60.0)
        print(f"  peak RSS of ours on 60 s: {ours60['maxrss_mb']:.0f} MB (target < 600 MB)")


if __name__ == "__main__":
    main()
