"""The weights manager: find, download, verify and load ``syncnet_v2.model``.

The official file is only published on the authors' site, so a first run downloads it. The download
streams to ``<name>.part`` (resumed with an HTTP Range request when a previous attempt broke off),
checks the byte count against the server's length and the expected size, checks the SHA-256 when one is
pinned, loads the result and checks its structure key by key, and only then renames it into place, so a
half-written or wrong file never sits under the final name. When there is no network, the error says
exactly what to download and where to put it.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserFacingError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: The file the reference's ``download_model.sh`` fetches.
SYNCNET_URL = "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model"
SYNCNET_FILENAME = "syncnet_v2.model"
#: 13,640,256 float32 parameters and buffers are 54.56 MB; the pickle adds a little. Anything outside
#: this range cannot be the model (an HTML error page, a truncated transfer).
SYNCNET_SIZE_RANGE = (54_000_000, 56_000_000)
#: The official file's SHA-256 is not published; pin one with SYNCNET_WEIGHTS_SHA256 (a hard check).
SYNCNET_SHA256: str | None = None
#: What a public mirror that states its copy is byte-identical to the Oxford file records for it
#: (github nawta/SyncNet_py309_313, ``weights/syncnet_v2.model``): the git blob id, and the first and last
#: hex digits of the SHA-256 from its README. The claim cannot be confirmed from here, so a mismatch is a
#: warning naming both values, never a refusal; the structural check decides.
SYNCNET_KNOWN_GIT_BLOB = "d714bbf3b30324ced69e3815fc41ae6dc519303c"
SYNCNET_KNOWN_SHA256_ENDS = ("961e8696", "5442")
#: Entries the reference loader copies but eval mode never reads; a checkpoint may lack them.
OPTIONAL_SUFFIX = ".num_batches_tracked"
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "weights"
CHUNK = 1 << 20
TIMEOUT_S = 30


class WeightsError(UserFacingError, RuntimeError):
    """The weights are missing, could not be downloaded, or are not a valid SyncNet checkpoint."""


@dataclass(frozen=True)
class WeightsSpec:
    """Where a weights file comes from and how to recognise it."""

    filename: str
    url: str
    size_range: tuple[int, int]
    sha256: str | None = None  #: pinned: a mismatch refuses the file
    known_git_blob: str | None = None  #: reported: a match is "verified", a mismatch a warning
    known_sha256_ends: tuple[str, str] | None = None


SYNCNET = WeightsSpec(SYNCNET_FILENAME, SYNCNET_URL, SYNCNET_SIZE_RANGE, SYNCNET_SHA256,
                      SYNCNET_KNOWN_GIT_BLOB, SYNCNET_KNOWN_SHA256_ENDS)


@dataclass(frozen=True)
class ChecksumReport:
    """A weights file's digests against the known checksum of its spec."""

    sha256: str
    git_blob: str  #: git's blob id: SHA-1 of ``b"blob <size>\0"`` + the bytes
    matches_known: bool | None  #: None when the spec knows no checksum
    message: str


def weights_dir() -> Path:
    """``$SYNCNET_WEIGHTS_DIR`` when set, else the repository's ``weights/`` folder."""
    env = os.environ.get("SYNCNET_WEIGHTS_DIR")
    return Path(env).expanduser() if env else DEFAULT_DIR


def default_weights_path() -> Path:
    return weights_dir() / SYNCNET_FILENAME


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digests(path: Path) -> tuple[str, str]:
    """(SHA-256, git blob id) of ``path`` in one read."""
    sha256 = hashlib.sha256()
    blob = hashlib.sha1(f"blob {Path(path).stat().st_size}\0".encode())  # noqa: S324 - git's id, not security
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            sha256.update(block)
            blob.update(block)
    return sha256.hexdigest(), blob.hexdigest()


def checksum_report(path: Path, spec: WeightsSpec = SYNCNET) -> ChecksumReport:
    """Compare ``path`` with the checksum the spec knows: both the git blob id and the SHA-256's ends."""
    sha256, blob = file_digests(path)
    if not spec.known_git_blob:
        return ChecksumReport(sha256, blob, None, f"{path}: sha256 {sha256} (no known checksum to compare with)")
    head, tail = spec.known_sha256_ends or ("", "")
    ok = blob == spec.known_git_blob and sha256.startswith(head) and sha256.endswith(tail)
    if ok:
        msg = f"{path}: verified against the known checksum (git blob {blob}, sha256 {sha256})"
    else:
        msg = (f"{path} does not match the known checksum of {spec.filename}: git blob {blob} (known: "
               f"{spec.known_git_blob}), sha256 {sha256} (known: {head}...{tail}). It passed the structural "
               "check and is used; if it should be the official file, download it again")
    return ChecksumReport(sha256, blob, ok, msg)


def _manual_instructions(spec: WeightsSpec, dest: Path) -> str:
    return (
        f"Download {spec.url} yourself (about {spec.size_range[0] // 1_000_000} MB) and save it as {dest}, "
        f"or set SYNCNET_WEIGHTS_DIR to the folder that holds {spec.filename}."
    )


def _open(url: str, start: int) -> http.client.HTTPResponse:
    if not url.startswith(("http://", "https://")):
        raise WeightsError(f"weights URL must be http(s), got {url!r}")
    req = urllib.request.Request(url, headers={"User-Agent": "syncfix"})  # noqa: S310 - scheme checked above
    if start:
        req.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(req, timeout=TIMEOUT_S)  # noqa: S310 - the URL is ours, not a user's


def download(spec: WeightsSpec = SYNCNET, dest: Path | None = None, *, progress: bool = True) -> Path:
    """Download ``spec`` to ``dest`` (resuming a partial ``.part`` file), verify it and move it into place.

    Raises :class:`WeightsError` with manual instructions when the server cannot be reached or the
    file that arrives is not the model.
    """
    from tqdm import tqdm

    dest = Path(dest) if dest else weights_dir() / spec.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    if start > spec.size_range[1]:
        part.unlink()
        start = 0
    try:
        resp = _open(spec.url, start)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # the partial file is already complete (or longer than the file)
            resp = None
        else:
            raise WeightsError(f"Could not download {spec.filename}: HTTP {exc.code}. "
                               + _manual_instructions(spec, dest)) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsError(f"Could not download {spec.filename} ({reason}). "
                           + _manual_instructions(spec, dest)) from exc

    if resp is not None:
        with resp:
            resumed = start > 0 and resp.status == 206
            if start and not resumed:
                log.info("server ignored the range request; downloading %s from the start", spec.filename)
                start = 0
            length = resp.headers.get("Content-Length")
            total = start + int(length) if length is not None else None
            if start:
                log.info("resuming %s at byte %d", spec.filename, start)
            try:
                with open(part, "ab" if resumed else "wb") as fh, tqdm(
                    total=total, initial=start, unit="B", unit_scale=True, desc=spec.filename,
                    disable=not progress, leave=False,
                ) as bar:
                    for block in iter(lambda: resp.read(CHUNK), b""):
                        fh.write(block)
                        bar.update(len(block))
            except (OSError, http.client.HTTPException) as exc:
                raise WeightsError(
                    f"The download of {spec.filename} broke off after {part.stat().st_size} bytes ({exc}); "
                    "run the same command again to resume it. " + _manual_instructions(spec, dest)
                ) from exc
            got = part.stat().st_size
            if total is not None and got != total:
                raise WeightsError(
                    f"The download of {spec.filename} broke off at {got} of {total} bytes; run the same command "
                    "again to resume it. " + _manual_instructions(spec, dest)
                )
    try:
        verify_file(part, spec)
    except WeightsError:
        part.unlink(missing_ok=True)  # a wrong file would only be resumed into another wrong file
        raise
    os.replace(part, dest)
    log.info("saved %s (%d bytes, sha256 %s)", dest, dest.stat().st_size, sha256_of(dest))
    return dest


def verify_file(path: Path, spec: WeightsSpec = SYNCNET) -> dict[str, torch.Tensor]:
    """Check size, checksum (when pinned: hard) and structure; return the state dict.

    Without a pinned checksum, the file is also compared with the known one (:func:`checksum_report`):
    logged as verified, or warned about with both values; never refused for it.
    """
    size = path.stat().st_size
    lo, hi = spec.size_range
    if not lo <= size <= hi:
        raise WeightsError(
            f"{path} has {size} bytes, but {spec.filename} has {lo}-{hi}: it is not the SyncNet model "
            f"(truncated or an error page?). Delete it and download it again from {spec.url}."
        )
    want = os.environ.get("SYNCNET_WEIGHTS_SHA256") or spec.sha256
    if want:
        got = sha256_of(path)
        if got.lower() != want.lower():
            raise WeightsError(f"{path} has sha256 {got}, expected {want}. Delete it and download it again.")
    state = read_state_dict(path)
    check_state_dict(state)
    if spec.known_git_blob and not want:
        report = checksum_report(path, spec)
        (log.info if report.matches_known else log.warning)("%s", report.message)
    return state


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """``torch.load`` with ``weights_only=True`` (a checkpoint cannot run code), unwrapping common wrappers.

    Zip-format checkpoints are memory-mapped, so loading does not hold a second copy of the file.
    """
    import torch

    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc}). "
                           "Delete it and download it again.") from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a SyncNet state dict.")
    return dict(obj)


def check_state_dict(state: Mapping[str, object]) -> None:
    """Strict structural check: every key of the reference with its exact shape, nothing else.

    ``*.num_batches_tracked`` may be missing (the reference loader tolerates it and eval mode never
    reads it); every other one of the 102 entries must be present. The error names the first wrong key.
    """
    import torch

    from .model import expected_state_shapes

    expected = expected_state_shapes()
    for name, value in state.items():
        if name not in expected:
            raise WeightsError(f"unexpected key {name!r} in the checkpoint: not a SyncNet v2 model")
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"key {name!r} holds a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != expected[name]:
            raise WeightsError(f"key {name!r} has shape {tuple(value.shape)}, expected {expected[name]}")
        if not name.endswith(OPTIONAL_SUFFIX) and not value.is_floating_point():
            raise WeightsError(f"key {name!r} has dtype {value.dtype}, expected a float tensor")
    missing = [k for k in expected if k not in state and not k.endswith(OPTIONAL_SUFFIX)]
    if missing:
        raise WeightsError(f"key {missing[0]!r} is missing from the checkpoint ({len(missing)} missing in all)")


def ensure_weights(path: str | os.PathLike | None = None, *, download_missing: bool = True,
                   progress: bool = True) -> Path:
    """The path of a usable weights file: ``path`` if given, else the default, downloading it if missing."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise WeightsError(f"weights file {p} does not exist. " + _manual_instructions(SYNCNET, p))
        return p
    p = default_weights_path()
    if p.is_file():
        return p
    if not download_missing:
        raise WeightsError(f"SyncNet weights not found at {p}. " + _manual_instructions(SYNCNET, p))
    return download(syncnet_spec(), p, progress=progress)


def syncnet_spec() -> WeightsSpec:
    """The SyncNet spec, with ``$SYNCNET_WEIGHTS_URL`` (a mirror) in place of the official URL when set."""
    url = os.environ.get("SYNCNET_WEIGHTS_URL")
    return replace(SYNCNET, url=url) if url else SYNCNET


def weights_available(path: str | os.PathLike | None = None) -> bool:
    """Whether a weights file is present (without downloading or loading it)."""
    return (Path(path).expanduser() if path else default_weights_path()).is_file()
