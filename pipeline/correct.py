"""Apply a measured lip-sync offset to a file, and check a written file against its source.

The fix moves the sound, never the picture: video (and subtitle, attachment) packets are copied untouched,
so the image quality and the frame timing cannot change, and every audio stream is decoded, shifted by a
whole number of samples at its own rate, and re-encoded with the codec it had. Shifting the samples instead
of the container's start offset matters: many players ignore or round per-stream offsets (Matroska keeps
whole milliseconds, AVI has none), while shifted samples play the same everywhere.

Sign convention (as everywhere in SyncFix): ``audio_lag_ms > 0`` means the sound comes after the lips;
removing a lag L moves the audio EARLIER by L ms (L ms are trimmed from the start of every audio stream and
silence is added at the end); a negative L delays the audio (|L| ms of silence are put in front and as much
is dropped at the end). Every audio stream keeps its length and its start time relative to the video.

Lossy encoders put "priming" samples in front of the sound (AAC 1024, Opus 312 at 48 kHz, LAME 1105), and
the decoded result still has to line up to the sample. MP4/MOV (an edit list, for a track that starts at 0)
and Matroska/WebM (CodecDelay) record the priming, so decoders drop it. AVI cannot, and neither can MP4/MOV
for a track that starts late (the empty edit that delays it takes the edit list's place): there the decoder
plays the priming, so as many of our samples are left out at the front for it to take their place. The
amount is measured on the spot for the encoder as configured (:func:`_encoder_priming` encodes silence and
reads the first packet's pts), not taken from a table. Matroska keeps timestamps in whole milliseconds, so
the packet the decoder starts from is put on that grid and the gap filled with silence (:func:`_shifter`);
MP4/MOV get a movie time scale that is a multiple of the audio rates, so a late start is not rounded to the
millisecond either. ``tests/test_correct.py`` checks every container/codec pair by decoding what was written.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from syncnet.media import MediaError, open_container

from .warp import AudioWarp, WarpStage

log = logging.getLogger(__name__)

#: Output container format by file suffix; others fall back to the input's own format name.
_FORMAT_BY_SUFFIX = {
    ".mp4": "mp4", ".m4v": "mp4", ".m4a": "ipod", ".mov": "mov", ".qt": "mov",
    ".mkv": "matroska", ".mka": "matroska", ".webm": "webm", ".avi": "avi", ".wav": "wav",
}
#: Containers whose muxer records the encoder's priming so that decoders drop it (edit list, CodecDelay);
#: measured with every encoder we use there. In any other container the priming is compensated by hand.
_PRIMING_RECORDED = frozenset({"mp4", "mov", "ipod", "matroska", "webm"})
#: The MP4/QuickTime muxers (edit lists, movie time scale).
_MOV_FAMILY = frozenset({"mp4", "mov", "ipod"})
#: Containers whose handling of priming and start offsets the tests cover.
_TESTED_FORMATS = _PRIMING_RECORDED | {"avi"}
#: Encoders to try for an input codec (by codec descriptor name), best first.
_ENCODERS: dict[str, tuple[str, ...]] = {
    "aac": ("aac",),
    "mp3": ("libmp3lame", "mp3"),
    "opus": ("libopus", "opus"),
    "vorbis": ("libvorbis", "vorbis"),
    "flac": ("flac",),
    "alac": ("alac",),
    "ac3": ("ac3",),
    "eac3": ("eac3",),
    "mp2": ("mp2",),
}
#: Codec to fall back on when the input's cannot be encoded (or not in this container).
_FALLBACK_ENCODER = {"mp4": "aac", "mov": "aac", "ipod": "aac", "matroska": "aac", "webm": "libopus",
                     "avi": "pcm_s16le", "wav": "pcm_s16le"}
#: Encoders FFmpeg marks experimental; they need ``strict=experimental`` to open.
_EXPERIMENTAL_OK = {"strict": "experimental"}
#: NumPy dtype of each planar sample format.
_DTYPES = {"u8p": "u1", "s16p": "i2", "s32p": "i4", "s64p": "i8", "fltp": "f4", "dblp": "f8"}
#: Samples per frame handed to the encoder (PyAV cuts them to the encoder's frame size itself).
_CHUNK = 4096
#: Jumps in an audio stream's timestamps beyond this are gaps (filled) or overlaps (trimmed), as in
#: :func:`syncnet.media.load_audio`; smaller ones are rounding.
GAP_TOLERANCE_S = Fraction(1, 50)


@dataclass(frozen=True)
class WriteResult:
    """What :func:`write_shifted` wrote: enough for a caller to report it and to verify it."""

    output: Path
    #: The shift applied to the first audio stream, in ms (the request rounded to whole samples).
    applied_shift_ms: float
    #: Audio streams shifted and re-encoded.
    audio_streams: int
    #: Other streams (video, subtitles, attachments...) copied packet by packet.
    copied_streams: int
    #: Streams left out because the output container cannot hold them, as "index:type/codec".
    skipped_streams: tuple[str, ...] = ()
    #: The encoder used for each audio stream, in stream order.
    audio_encoders: tuple[str, ...] = ()
    #: A changing lag removed as well (:class:`~pipeline.warp.AudioWarp`): the drift resampled away (ms per
    #: minute) and each step's edit as made in the first audio stream ``{"at_s", "delta_ms"}``; None: constant.
    drift: dict | None = None


def default_output_path(src: Path) -> Path:
    """``<stem>.synced<suffix>`` beside ``src``; ``.synced-1``, ``-2``... if taken, so nothing is overwritten."""
    src = Path(src)
    candidate = src.with_name(f"{src.stem}.synced{src.suffix}")
    n = 0
    while candidate.exists() or candidate == src:
        n += 1
        candidate = src.with_name(f"{src.stem}.synced-{n}{src.suffix}")
    return candidate


def _output_format(inp: av.container.InputContainer, dst: Path) -> str:
    """The muxer to write with: from ``dst``'s suffix (callers keep the input's), else the input's format."""
    by_suffix = _FORMAT_BY_SUFFIX.get(dst.suffix.lower())
    if by_suffix is not None:
        return by_suffix
    return inp.format.name.split(",")[0]


def _codec_name(stream: av.stream.Stream) -> str:
    """The codec's descriptor name ('mp3', not the decoder's 'mp3float')."""
    return stream.codec_context.codec.canonical_name


@dataclass(frozen=True)
class _AudioInfo:
    """What the first decoded frame and the first packet say about one input audio stream."""

    rate: int
    layout: str
    sample_format: str
    #: Presentation time of the first decoded sample, sharper than the frame's pts (see _first_sample_time).
    start: Fraction


def _encoder_available(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        return False
    return True


def _configure_audio(ctx: av.audio.codeccontext.AudioCodecContext | av.audio.stream.AudioStream, encoder: str,
                     info: _AudioInfo, bit_rate: int | None) -> None:
    """Set rate, layout, sample format and bit rate on an encoder (stream or bare context) before it opens."""
    codec = av.codec.Codec(encoder, "w")
    ctx.sample_rate = info.rate
    ctx.layout = info.layout
    formats = [f.name for f in codec.audio_formats or ()]
    # keep the decoded sample format when the encoder takes it (s32/flt input stays deep), else its first
    if info.sample_format in formats:
        ctx.format = info.sample_format
    elif formats:
        ctx.format = formats[0]
    if bit_rate and codec.lossy:
        ctx.bit_rate = bit_rate
    ctx.time_base = Fraction(1, info.rate)
    if codec.experimental:
        ctx.options = dict(_EXPERIMENTAL_OK)


def _encoder_priming(encoder: str, info: _AudioInfo, bit_rate: int | None) -> tuple[int, int]:
    """(priming, frame size): the samples ``encoder`` puts in front of the sound, measured by encoding
    silence from pts 0, and its samples per packet (0: any).

    The first packet of a priming encoder carries pts = -priming (FFmpeg's convention); PCM and other
    encoders without delay give 0. Raises ``av.FFmpegError`` when the encoder will not open with these
    settings (a rate or layout it does not take), which is how :func:`_choose_encoder` finds out.
    """
    ctx = av.CodecContext.create(encoder, "w")
    _configure_audio(ctx, encoder, info, bit_rate)
    ctx.open()
    n = ctx.frame_size or 1024
    channels = av.AudioLayout(info.layout).nb_channels
    silence = np.zeros((channels, n), np.float32)
    for i in range(64):
        frame = av.AudioFrame.from_ndarray(silence, format="fltp", layout=info.layout)
        frame.sample_rate, frame.pts, frame.time_base = info.rate, i * n, Fraction(1, info.rate)
        for packet in ctx.encode(frame):
            return max(0, -(packet.pts or 0)), ctx.frame_size
    for packet in ctx.encode(None):
        return max(0, -(packet.pts or 0)), ctx.frame_size
    return 0, ctx.frame_size


def _choose_encoder(out: av.container.OutputContainer, fmt: str, codec: str, info: _AudioInfo,
                    bit_rate: int | None) -> tuple[str, int | None, tuple[int, int]]:
    """(encoder, bit rate, (priming, frame size)) for one stream: the input's codec when an encoder for it
    exists, the container takes it and it opens with the stream's rate and layout; else the container's usual
    codec (with a warning). Raises :class:`~syncnet.media.MediaError` when nothing opens."""
    same = _ENCODERS.get(codec, (codec,) if codec.startswith("pcm_") else ())
    fallback = _FALLBACK_ENCODER.get(fmt, out.default_audio_codec)
    fallback = "libopus" if fallback == "opus" else fallback
    supported = out.supported_codecs
    tried: list[str] = []
    for name in dict.fromkeys((*same, fallback)):
        if not _encoder_available(name) or not (name in supported or av.codec.Codec(name, "w").name in supported):
            continue
        for rate in dict.fromkeys((bit_rate, None)):
            try:
                priming = _encoder_priming(name, info, rate)
            except (av.FFmpegError, ValueError) as exc:
                tried.append(f"{name}: {exc}")
                continue
            if name not in same:
                log.warning("%s audio cannot be re-encoded as such in %s here; using %s instead", codec, fmt, name)
            return name, rate, priming
    raise MediaError(f"no encoder for {codec} audio at {info.rate} Hz {info.layout} in {fmt}: "
                     + ("; ".join(tried) or "none available"))


def _planar(frame: av.AudioFrame) -> np.ndarray:
    """Samples of a decoded frame as (channels, n), whatever its packing."""
    data = frame.to_ndarray()
    if frame.format.is_planar:
        return data
    return data.reshape(-1, len(frame.layout.channels)).T


class _AudioShifter:
    """Shifts one audio stream while it streams through: decoded frames in, encoded packets out.

    The target is the input moved by ``shift`` samples (positive: earlier) and cut or padded to the input's
    length. ``lead`` more samples are left out at the front of it (negative: that much silence goes first),
    and the result goes to the encoder as frames from ``first_pts`` on (in 1/rate). Memory stays at about
    ``|shift|`` samples, so hour-long files stream through.
    """

    def __init__(self, stream: av.audio.stream.AudioStream, shift: int, lead: int, first_pts: int,
                 info: _AudioInfo) -> None:
        self.stream = stream
        self.shift = shift
        self.lead = lead
        self.first_pts = first_pts
        self.rate = info.rate
        self.layout = info.layout
        self.planar_format = av.AudioFormat(info.sample_format).planar.name
        self.channels = av.AudioLayout(info.layout).nb_channels
        self.dtype = np.dtype(_DTYPES[self.planar_format])
        self.resampler: av.AudioResampler | None = None
        drop = shift + lead  # input samples to discard (negative: silence to put first)
        self.skip = max(drop, 0)
        self.pending: deque[np.ndarray] = deque()
        self.pending_n = 0
        if drop < 0:
            self._queue(np.zeros((self.channels, -drop), self.dtype))
        self.consumed = 0  # input samples seen (with the silence put into gaps of the input's timestamps)
        self.emitted = 0  # samples given to the encoder
        self.origin: Fraction | None = None  # time of the first decoded sample
        self.gap_tolerance = int(self.rate * GAP_TOLERANCE_S)
        self.stage: WarpStage | None = None  # a changing lag's resampling and edits, after the constant shift

    def _queue(self, data: np.ndarray) -> None:
        if data.shape[1]:
            self.pending.append(data)
            self.pending_n += data.shape[1]

    def _take(self, n: int) -> np.ndarray:
        """The next ``n`` pending samples (n <= pending_n)."""
        parts, need = [], n
        while need:
            head = self.pending[0]
            if head.shape[1] <= need:
                parts.append(self.pending.popleft())
                need -= head.shape[1]
            else:
                parts.append(head[:, :need])
                self.pending[0] = head[:, need:]
                need = 0
        self.pending_n -= n
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    def _encode(self, data: np.ndarray) -> list[av.Packet]:
        packets: list[av.Packet] = []
        for start in range(0, data.shape[1], _CHUNK):
            piece = np.ascontiguousarray(data[:, start : start + _CHUNK])
            frame = av.AudioFrame.from_ndarray(piece, format=self.planar_format, layout=self.layout)
            frame.sample_rate = self.rate
            frame.time_base = Fraction(1, self.rate)
            frame.pts = self.first_pts + self.emitted
            self.emitted += piece.shape[1]
            packets.extend(self.stream.encode(frame))
        return packets

    def _ready(self) -> int:
        # never run ahead of the input: the output has to end where the input ends
        return min(self.pending_n, self.consumed - self.lead - self.emitted)

    def push(self, frame: av.AudioFrame) -> list[av.Packet]:
        if (frame.format.planar.name != self.planar_format or frame.layout.name != self.layout
                or frame.sample_rate != self.rate):
            # a stream that changes format on the way (rare: HE-AAC switches, broadcast captures):
            # bring the rest to the format it started with, as ffmpeg's auto-inserted resampler does
            if self.resampler is None:
                log.warning("audio stream #%d changes format mid-stream; resampling to %s %s %d Hz",
                            self.stream.index, self.planar_format, self.layout, self.rate)
                self.resampler = av.AudioResampler(format=self.planar_format, layout=self.layout, rate=self.rate)
            return [p for f in self.resampler.resample(frame) for p in self.push(f)]
        data = self._on_clock(frame, _planar(frame))
        self.consumed += data.shape[1]
        if self.skip:
            cut = min(self.skip, data.shape[1])
            data = data[:, cut:]
            self.skip -= cut
        if self.stage is not None:
            data = self.stage.push(data)
        self._queue(data)
        ready = self._ready()
        return self._encode(self._take(ready)) if ready > 0 else []

    def _on_clock(self, frame: av.AudioFrame, data: np.ndarray) -> np.ndarray:
        """Keep the samples on the input's clock: silence into a timestamp gap, an overlap trimmed.

        Decoders hand over samples back to back even where the stream's timestamps jump (edited or
        concatenated files, dropped packets); shifting that unchanged would move the sound after each jump.
        """
        if frame.pts is None or frame.time_base is None:
            return data
        t = frame.pts * frame.time_base
        if self.origin is None:
            self.origin = t
            return data
        gap = int(round((t - self.origin) * self.rate)) - self.consumed
        if gap > self.gap_tolerance:
            log.debug("audio stream #%d: %d samples missing at %.3f s, filled with silence", self.stream.index,
                      gap, float(t))
            return np.concatenate([np.zeros((self.channels, gap), self.dtype), data], axis=1)
        if gap < -self.gap_tolerance:
            return data[:, min(-gap, data.shape[1]) :]
        return data

    def finish(self) -> list[av.Packet]:
        """The rest of the stream, silence to the input's length after an advance, and the encoder's tail."""
        packets: list[av.Packet] = []
        if self.resampler is not None:
            packets += [p for f in self.resampler.resample(None) for p in self.push(f)]
        if self.stage is not None:
            self._queue(self.stage.push(np.zeros((self.channels, 0), self.dtype), last=True))
        ready = self._ready()
        if ready > 0:
            packets += self._encode(self._take(ready))
        missing = self.consumed - self.lead - self.emitted
        if missing > 0:
            packets += self._encode(np.zeros((self.channels, missing), self.dtype))
        packets += self.stream.encode(None)
        return packets


def _first_sample_time(first: av.AudioFrame, packet_time: Fraction | None, tick: Fraction | None, skip: int,
                       nominal: int) -> Fraction:
    """When the first decoded sample plays: the first frame's pts, sharpened where the time base is coarse.

    In Matroska a frame's pts is in whole milliseconds, but the decoder dropped priming samples from the
    front of the packet that gave the first frame (Opus: 312 of 960 at 48 kHz, 6.5 ms), so the exact time
    is that packet's timestamp plus the samples dropped from it: the frame's usual length (``nominal``)
    less its own, at most the ``skip`` the demuxer asked for. That is used when it agrees with the rounded
    pts to within one tick; otherwise (decoders that hold a packet back, edit lists that discard whole
    packets) the pts is the truth.
    """
    reported = first.pts * first.time_base if first.pts is not None and first.time_base else Fraction(0)
    if packet_time is None or not tick:
        return reported
    dropped = min(skip, max(0, nominal - first.samples))
    exact = packet_time + Fraction(dropped, first.sample_rate)
    return exact if abs(exact - reported) <= tick else reported


@dataclass
class _FirstFrames:
    """What the first packets of one audio stream say (filled in by :func:`_probe_audio`)."""

    skip: int | None = None  # priming samples the demuxer told the decoder to drop; None: no packet yet
    first: av.AudioFrame | None = None
    packet_time: Fraction | None = None  # timestamp of the packet that gave the first frame
    tick: Fraction | None = None
    nominal: int | None = None  # samples in the second frame: a frame's usual length


def _probe_audio(src: Path) -> dict[int, _AudioInfo]:
    """Format, layout, rate and exact start time of every decodable audio stream, from its first frames.

    A separate open rather than a seek back: a seek need not land on the very first packet.
    """
    with open_container(src) as probe:
        streams = list(probe.streams.audio)
        if not streams:
            raise MediaError(f"{src.name}: the file has no audio track, so there is nothing to shift")
        seen = {s.index: _FirstFrames() for s in streams}
        for packet in probe.demux(streams):
            st = seen[packet.stream.index]
            if st.nominal is not None:
                continue
            if st.skip is None and packet.size:
                st.skip = 0
                if packet.has_sidedata("skip_samples"):
                    st.skip = int.from_bytes(bytes(packet.get_sidedata("skip_samples"))[:4], "little")
            for frame in packet.decode():
                if st.first is None:
                    st.first = frame
                    if packet.pts is not None and packet.time_base:
                        st.packet_time, st.tick = packet.pts * packet.time_base, packet.time_base
                elif st.nominal is None:
                    st.nominal = frame.samples
            if all(v.nominal is not None for v in seen.values()):
                break
    infos: dict[int, _AudioInfo] = {}
    for index, st in seen.items():
        if st.first is None:
            log.warning("%s: audio stream #%d has no decodable audio and is left out", src.name, index)
            continue
        first = st.first
        start = _first_sample_time(first, st.packet_time, st.tick, st.skip or 0, st.nominal or first.samples)
        infos[index] = _AudioInfo(first.sample_rate, first.layout.name, first.format.name, start)
    if not infos:
        raise MediaError(f"{src.name}: no audio track could be decoded, so there is nothing to shift")
    return infos


def _stream_metadata(stream: av.stream.Stream, fmt: str, copied: bool) -> dict[str, str]:
    """The tags to write for ``stream``: all of them, less the old encoder's name on a re-encoded stream.

    The MP4/MOV demuxer reports a track's title as "name" but the muxer writes the "title" tag (into that
    same atom), so without the rename every track title would be lost.
    """
    tags = {k: v for k, v in stream.metadata.items() if copied or k.lower() != "encoder"}
    if fmt in _MOV_FAMILY and "name" in tags and "title" not in tags:
        tags["title"] = tags.pop("name")
    return tags


def _copy_stream(out: av.container.OutputContainer, fmt: str, stream: av.stream.Stream) -> av.stream.Stream:
    """An output stream that takes ``stream``'s packets as they are (codec parameters, side data such as the
    display matrix, metadata and disposition included)."""
    try:
        copied = out.add_stream_from_template(stream)
    except av.codec.codec.UnknownCodecError:
        # PyAV looks up an encoder of the codec for video templates; one without (hevc here) still remuxes
        copied = out.add_stream_from_template(stream, opaque=True)
    copied.metadata.update(_stream_metadata(stream, fmt, copied=True))
    copied.disposition = stream.disposition
    return copied


#: Our temporary output names (``.<stem>.<8 hex>.partial<suffix>``), to recognise a killed run's leftovers.
_PARTIAL = re.compile(r"^\..+\.[0-9a-f]{8}\.partial(\.[A-Za-z0-9]+)?$")


def remove_stale_partials(folder: Path, max_age_s: float | None = None) -> int:
    """Delete half-written outputs that a killed run left in ``folder`` (only our own temporary names, only
    older than ``max_age_s``: default 1 h or ``$SYNCFIX_PARTIAL_MAX_AGE_S``, so a run in progress is safe)."""
    if max_age_s is None:
        max_age_s = float(os.environ.get("SYNCFIX_PARTIAL_MAX_AGE_S", "3600"))
    now = time.time()
    removed = 0
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return 0
    for p in entries:
        try:
            if _PARTIAL.match(p.name) and p.is_file() and now - p.stat().st_mtime >= max_age_s:
                p.unlink()
                removed += 1
        except OSError:
            continue
    if removed:
        log.info("removed %d half-written files left by an interrupted run in %s", removed, folder)
    return removed


def write_shifted(src: Path, dst: Path, lag_ms: float | AudioWarp) -> WriteResult:
    """Write ``src`` to ``dst`` with every audio stream moved EARLIER by ``lag_ms`` (later if negative).

    ``lag_ms`` may be an :class:`~pipeline.warp.AudioWarp` instead: a lag that changes along the clip
    (drift resampled away, steps cut or padded at their quietest moment, see :mod:`pipeline.warp`), removed
    from every audio stream alike on top of its constant part.

    Video and the other streams are copied packet by packet; the audio is re-encoded with its own codec
    (see the module docstring for priming). The file is written under a temporary name in ``dst``'s folder
    and renamed only once complete, so ``dst`` is either the whole result or untouched; ``src`` is only read.
    Raises :class:`~syncnet.media.MediaError` for a source without audio, ``ValueError`` if ``dst`` is
    ``src``, ``FileNotFoundError`` if ``dst``'s folder does not exist.
    """
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise ValueError(f"{dst}: the output must not be the input (the source is never modified)")
    if not dst.parent.is_dir():
        raise FileNotFoundError(f"{dst.parent}: no such folder for the output")
    remove_stale_partials(dst.parent)
    tmp = dst.with_name(f".{dst.stem}.{secrets.token_hex(4)}.partial{dst.suffix}")
    try:
        result = _write(src, tmp, lag_ms)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("wrote %s: audio moved %+.3f ms (%d audio, %d copied streams)", dst, result.applied_shift_ms,
             result.audio_streams, result.copied_streams)
    return WriteResult(dst, result.applied_shift_ms, result.audio_streams, result.copied_streams,
                       result.skipped_streams, result.audio_encoders, result.drift)


def _container_options(fmt: str, infos: dict[int, _AudioInfo]) -> dict[str, str]:
    """MP4/MOV write the empty edit that delays a late-starting track in the movie time scale, 1/1000 s by
    default, rounded down: an audio track starting at 0.47867 s would start at 0.478 s. A time scale that
    is a multiple of every audio rate keeps such starts exact."""
    if fmt not in _MOV_FAMILY:
        return {}
    scale = math.lcm(*(info.rate for info in infos.values()))
    if scale > 2**31 - 1:
        scale = max(info.rate for info in infos.values())
    return {"movie_timescale": str(scale)}


def _write(src: Path, tmp: Path, lag_ms: float | AudioWarp) -> WriteResult:
    """The work of :func:`write_shifted`, into ``tmp``: one pass over the input, packets in file order."""
    infos = _probe_audio(src)
    with open_container(src) as inp:
        fmt = _output_format(inp, tmp)
        if fmt not in _TESTED_FORMATS:
            log.warning("%s output: the timing of re-encoded audio is not verified for this container", fmt)
        with av.open(str(tmp), "w", format=fmt, container_options=_container_options(fmt, infos)) as out:
            out.metadata.update({k: v for k, v in inp.metadata.items() if k.lower() != "encoder"})
            routes: dict[int, av.stream.Stream] = {}
            primings: dict[int, tuple[int, int]] = {}
            skipped: list[str] = []
            for stream in inp.streams:
                label = f"{stream.index}:{stream.type}/{stream.codec_context.name if stream.codec_context else '-'}"
                if stream.type == "audio" and stream.index not in infos:
                    skipped.append(label)
                elif stream.type == "audio":
                    routes[stream.index], primings[stream.index] = _add_audio_stream(out, fmt, stream,
                                                                                      infos[stream.index])
                elif stream.type == "data" or stream.discard == av.stream.Discard.all:
                    # data tracks (timecode, GPS, MP4's chapter text track, which set_chapters rewrites)
                    # carry codec-less payloads a muxer cannot be trusted to take back
                    log.warning("stream %s (data) is not copied", label)
                    skipped.append(label)
                else:
                    try:
                        routes[stream.index] = _copy_stream(out, fmt, stream)
                    except (ValueError, av.FFmpegError) as exc:
                        log.warning("stream %s cannot go into %s and is left out: %s", label, fmt, exc)
                        skipped.append(label)
            chapters = inp.chapters()
            if chapters:
                try:
                    out.set_chapters(chapters)
                except (ValueError, av.FFmpegError) as exc:
                    log.warning("%d chapters cannot be kept in %s: %s", len(chapters), fmt, exc)
            # the header fixes each stream's time base, which the audio placement below has to respect
            out.start_encoding()
            shifters = {i: _shifter(fmt, routes[i], primings[i], infos[i], lag_ms) for i in infos}

            for packet in inp.demux([inp.streams[i] for i in routes]):
                index = packet.stream.index
                if index in shifters:
                    for frame in packet.decode():
                        out.mux(shifters[index].push(frame))
                elif packet.size:  # zero-size packets are the demuxer's end-of-stream markers
                    packet.stream = routes[index]
                    out.mux(packet)
            for shifter in shifters.values():
                out.mux(shifter.finish())
    first = shifters[min(shifters)]
    drift = None
    if isinstance(lag_ms, AudioWarp) and not lag_ms.is_constant:
        edits = first.stage.applied if first.stage is not None else []
        drift = {"ms_per_minute": round(lag_ms.ms_per_minute, 3),
                 "steps": [{"at_s": round(t, 3), "delta_ms": round(ms, 3)} for t, ms in edits]}
    return WriteResult(tmp, first.shift * 1000 / first.rate, len(shifters), len(routes) - len(shifters),
                       tuple(skipped), tuple(s.stream.codec_context.name for s in shifters.values()), drift)


def _add_audio_stream(out: av.container.OutputContainer, fmt: str, stream: av.audio.stream.AudioStream,
                      info: _AudioInfo) -> tuple[av.audio.stream.AudioStream, tuple[int, int]]:
    """The output stream for one input audio stream (same codec if possible, its rate, layout, metadata),
    and the encoder's (priming, frame size) in samples."""
    encoder, bit_rate, priming = _choose_encoder(out, fmt, _codec_name(stream), info,
                                                 stream.codec_context.bit_rate or None)
    audio = out.add_stream(encoder, rate=info.rate)
    _configure_audio(audio, encoder, info, bit_rate)
    audio.metadata.update(_stream_metadata(stream, fmt, copied=False))
    audio.disposition = stream.disposition
    return audio, priming


def _shifter(fmt: str, audio: av.audio.stream.AudioStream, encoder_delay: tuple[int, int], info: _AudioInfo,
             lag_ms: float | AudioWarp) -> _AudioShifter:
    """Where the re-encoded samples go so that the decoded output starts where the input did, exactly.

    The encoder's packets start ``priming`` samples before the first frame it is given. Where the container
    records that (MP4/MOV when the packets start before 0 (an edit list), Matroska/WebM always (CodecDelay)),
    the decoder drops the priming and the first frame plays at its pts. The muxer rounds each packet's
    timestamp to the stream's time base (1/1000 s in Matroska), and a decoder plays the first sample it
    keeps at the timestamp of the packet it came from plus what it dropped of that packet: so that packet
    (the one holding the end of the priming) is put on the grid at or before the wanted time and the gap is
    filled with silence. Where the priming is not recorded (AVI; MP4/MOV when the track starts after 0, as
    an empty edit then takes the place of the edit list) the decoder plays it at the track's start, so it
    takes the place of as many samples of ours.
    """
    priming, frame_size = encoder_delay
    rate = info.rate
    start = info.start * rate  # in samples, may be fractional
    recorded = fmt in _PRIMING_RECORDED and not (fmt in _MOV_FAMILY and start - priming >= 0)
    if priming and not recorded:
        lead = priming  # our first `priming` samples are replaced by the encoder's
        log.info("%s does not record %s's priming here: its %d samples replace as many at the front", fmt,
                 audio.codec_context.name, priming)
    else:
        step = Fraction(audio.time_base) * rate if audio.time_base else Fraction(1)  # samples per tick
        kept_packet = start - (priming % frame_size if frame_size else priming)
        on_grid = math.floor(kept_packet / step) * step
        lead = -round(kept_packet - on_grid)  # negative: silence put in front
    first_pts = round(start) + lead
    warp = lag_ms if isinstance(lag_ms, AudioWarp) else None
    shift = round((warp.lag_ms if warp else lag_ms) * rate / 1000)
    log.debug("audio #%d: start %.6f s, priming %d, lead %d, shift %d samples", audio.index, float(info.start),
              priming, lead, shift)
    shifter = _AudioShifter(audio, shift, lead, first_pts, info)
    if warp is not None and not warp.is_constant:
        # the stage's first sample plays at first_pts + the silence put in front (video time 0 = sample 0);
        # the resampling starts there, which puts the drift's origin off by ratio error x that offset (< 2 ms
        # for starts under a second)
        origin = first_pts + max(0, -(shift + lead))
        shifter.stage = WarpStage(warp, rate, shifter.channels, shifter.dtype, origin)
    return shifter
