"""Browser-playable previews: H.264 (yuv420p) + AAC in MP4 with the index up front.

Browsers play neither MPEG-4 part 2 in AVI, nor ProRes in MOV, nor PCM audio; the preview is for
watching in a page, so it is scaled to at most 720 lines and encoded fast. A file that is already H.264
+ AAC in MP4 is used as it is. The corrected download always stays in the original container and codecs.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av

from syncnet.media import MediaError, open_container

log = logging.getLogger(__name__)

MAX_PREVIEW_HEIGHT = 720
PREVIEW_AUDIO_RATE = 44100


def browser_playable(path: Path) -> bool:
    """True for MP4/MOV holding only H.264 yuv420p video and AAC audio (no rotation to worry about)."""
    try:
        with open_container(path) as c:
            if "mp4" not in c.format.name:
                return False
            for s in c.streams:
                name = s.codec_context.name if s.codec_context else ""
                if s.type == "video" and (name != "h264" or s.codec_context.pix_fmt not in ("yuv420p", "yuvj420p")):
                    return False
                if s.type == "audio" and name != "aac":
                    return False
            return bool(c.streams.video)
    except MediaError:
        return False


def make_preview(src: Path, dst: Path) -> Path:
    """``src`` as a browser-playable MP4 at ``dst`` (or ``src`` itself when it already is one)."""
    if browser_playable(src):
        return src
    tmp = dst.with_name(dst.stem + ".partial.mp4")
    with open_container(src) as inp, av.open(str(tmp), "w", format="mp4",
                                             options={"movflags": "+faststart"}) as out:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        w, h = vin.codec_context.width, vin.codec_context.height
        scale = min(1.0, MAX_PREVIEW_HEIGHT / h) if h else 1.0
        ow, oh = int(w * scale) // 2 * 2, int(h * scale) // 2 * 2
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        vout = out.add_stream("libx264", rate=rate)
        vout.width, vout.height, vout.pix_fmt = ow, oh, "yuv420p"
        vout.options = {"preset": "veryfast", "crf": "23"}
        vout.time_base = vin.time_base
        vout.codec_context.time_base = vin.time_base
        ain = inp.streams.audio[0] if inp.streams.audio else None
        aout = resampler = None
        if ain is not None:
            aout = out.add_stream("aac", rate=PREVIEW_AUDIO_RATE)
            aout.layout = "stereo"
            resampler = av.AudioResampler(format="fltp", layout="stereo", rate=PREVIEW_AUDIO_RATE)
        streams = [vin] + ([ain] if ain is not None else [])
        first_rotation = None
        apts: int | None = None  # audio keeps its start time relative to the video
        for packet in inp.demux(streams):
            for frame in packet.decode():
                if packet.stream.type == "video":
                    if first_rotation is None:
                        first_rotation = int(round(getattr(frame, "rotation", 0) or 0))
                        if first_rotation:
                            vout.set_display_rotation(first_rotation)
                    img = frame.reformat(width=ow, height=oh, format="yuv420p")
                    img.pts, img.time_base = frame.pts, frame.time_base
                    out.mux(vout.encode(img))
                else:
                    if apts is None:
                        apts = int(round(float(frame.pts * frame.time_base) * PREVIEW_AUDIO_RATE)) \
                            if frame.pts is not None and frame.time_base else 0
                    for af in resampler.resample(frame):
                        af.pts, af.time_base = apts, Fraction(1, PREVIEW_AUDIO_RATE)
                        apts += af.samples
                        out.mux(aout.encode(af))
        out.mux(vout.encode(None))
        if aout is not None:
            apts = apts or 0
            for af in resampler.resample(None):
                af.pts, af.time_base = apts, Fraction(1, PREVIEW_AUDIO_RATE)
                apts += af.samples
                out.mux(aout.encode(af))
            out.mux(aout.encode(None))
    tmp.replace(dst)
    return dst
