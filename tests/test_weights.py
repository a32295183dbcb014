"""The weights manager against a real HTTP server on 127.0.0.1 serving the random golden weights."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from conftest import RANDOM_WEIGHTS_SHA256

from syncnet.weights import (
    SYNCNET,
    WeightsError,
    WeightsSpec,
    check_state_dict,
    download,
    ensure_weights,
    read_state_dict,
)


@dataclass
class Plan:
    """What the server sends: ``body``, and for the first ``cut_times`` requests only ``cut_at`` bytes."""

    body: bytes
    cut_at: int | None = None
    cut_times: int = 0
    honour_range: bool = True
    ranges: list[str | None] = field(default_factory=list)


def _handler(plan: Plan) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            rng = self.headers.get("Range")
            plan.ranges.append(rng)
            start = 0
            if rng and plan.honour_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(plan.body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(plan.body)}")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(plan.body) - 1}/{len(plan.body)}")
            else:
                self.send_response(200)
            payload = plan.body[start:]
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if plan.cut_times > 0 and plan.cut_at is not None:
                plan.cut_times -= 1
                self.wfile.write(payload[: plan.cut_at])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def serve() -> Iterator:
    servers: list[ThreadingHTTPServer] = []

    def start(plan: Plan) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(plan))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/syncnet_v2.model"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.fixture(scope="module")
def weights_bytes(random_weights: Path) -> bytes:
    data = random_weights.read_bytes()
    assert hashlib.sha256(data).hexdigest() == RANDOM_WEIGHTS_SHA256
    return data


def _spec(url: str, sha256: str | None = None) -> WeightsSpec:
    return WeightsSpec(SYNCNET.filename, url, SYNCNET.size_range, sha256)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_clean_download(serve, weights_bytes, tmp_path):
    plan = Plan(weights_bytes)
    dest = download(_spec(serve(plan), RANDOM_WEIGHTS_SHA256), tmp_path / "w" / "syncnet_v2.model", progress=False)
    assert _sha(dest) == RANDOM_WEIGHTS_SHA256
    assert not dest.with_name(dest.name + ".part").exists()
    assert plan.ranges == [None]


def test_interrupted_download_resumes(serve, weights_bytes, tmp_path):
    plan = Plan(weights_bytes, cut_at=20_000_000, cut_times=1)
    spec = _spec(serve(plan))
    dest = tmp_path / "syncnet_v2.model"
    with pytest.raises(WeightsError, match="broke off.*resume"):
        download(spec, dest, progress=False)
    part = dest.with_name(dest.name + ".part")
    assert not dest.exists(), "nothing may appear under the final name before it is complete"
    assert part.stat().st_size == 20_000_000
    download(spec, dest, progress=False)
    assert plan.ranges == [None, "bytes=20000000-"], "the second request must resume, not restart"
    assert _sha(dest) == RANDOM_WEIGHTS_SHA256 and not part.exists()


def test_server_without_range_support_restarts_cleanly(serve, weights_bytes, tmp_path):
    plan = Plan(weights_bytes, honour_range=False)
    dest = tmp_path / "syncnet_v2.model"
    dest.with_name(dest.name + ".part").write_bytes(b"\0" * 1000)  # junk from an older attempt
    download(_spec(serve(plan)), dest, progress=False)
    assert _sha(dest) == RANDOM_WEIGHTS_SHA256


def test_corrupt_file_is_refused(serve, weights_bytes, tmp_path):
    corrupt = bytearray(weights_bytes)
    corrupt[5_000_000:5_000_100] = b"\xff" * 100  # same size, damaged inside
    dest = tmp_path / "syncnet_v2.model"
    with pytest.raises(WeightsError, match="sha256"):
        download(_spec(serve(Plan(bytes(corrupt))), RANDOM_WEIGHTS_SHA256), dest, progress=False)
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_truncated_or_html_file_is_refused(serve, weights_bytes, tmp_path):
    dest = tmp_path / "syncnet_v2.model"
    with pytest.raises(WeightsError, match="not the SyncNet model"):
        download(_spec(serve(Plan(b"<html>Not found</html>"))), dest, progress=False)
    assert not dest.exists()


def test_wrong_structure_is_refused_with_the_key(tmp_path, weights_bytes, random_weights):
    state = read_state_dict(random_weights)
    bad = dict(state)
    bad["netcnnlip.4.weight"] = torch.zeros(256, 96, 1, 3, 3)
    with pytest.raises(WeightsError, match=r"netcnnlip\.4\.weight.*shape"):
        check_state_dict(bad)
    missing = {k: v for k, v in state.items() if k != "netfcaud.3.bias"}
    with pytest.raises(WeightsError, match=r"netfcaud\.3\.bias.*missing"):
        check_state_dict(missing)
    extra = {**state, "netcnnaud.99.weight": torch.zeros(1)}
    with pytest.raises(WeightsError, match="unexpected key 'netcnnaud.99.weight'"):
        check_state_dict(extra)
    # the reference loader tolerates absent num_batches_tracked; so do we
    check_state_dict({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")})
    # a file of the right size that loads but has a damaged shape is refused by the download too
    path = tmp_path / "shape.model"
    same_size = dict(state)
    same_size["netcnnlip.4.weight"] = state["netcnnlip.4.weight"].reshape(256, 96, 5, 5, 1)
    torch.save(same_size, path)
    with pytest.raises(WeightsError, match=r"netcnnlip\.4\.weight"):
        from syncnet.weights import verify_file

        verify_file(path)


def test_no_network_error_says_what_to_do(tmp_path, monkeypatch):
    # a port nobody listens on: connection refused, as with no network
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    monkeypatch.setenv("SYNCNET_WEIGHTS_DIR", str(tmp_path / "wdir"))
    monkeypatch.setenv("SYNCNET_WEIGHTS_URL", f"http://127.0.0.1:{port}/syncnet_v2.model")
    with pytest.raises(WeightsError) as err:
        ensure_weights(progress=False)
    msg = str(err.value)
    assert f"127.0.0.1:{port}/syncnet_v2.model" in msg
    assert str(tmp_path / "wdir" / "syncnet_v2.model") in msg
    assert "SYNCNET_WEIGHTS_DIR" in msg


def test_ensure_weights_downloads_into_weights_dir(serve, weights_bytes, tmp_path, monkeypatch):
    monkeypatch.setenv("SYNCNET_WEIGHTS_DIR", str(tmp_path / "wdir"))
    monkeypatch.setenv("SYNCNET_WEIGHTS_URL", serve(Plan(weights_bytes)))
    path = ensure_weights(progress=False)
    assert path == tmp_path / "wdir" / "syncnet_v2.model" and _sha(path) == RANDOM_WEIGHTS_SHA256
    assert ensure_weights(progress=False) == path  # present: no second download


def test_cli_download_and_missing_weights(serve, weights_bytes, tmp_path, fixtures_dir):
    env_url = serve(Plan(weights_bytes))
    import os

    env = {**os.environ, "SYNCNET_WEIGHTS_URL": env_url, "SYNCNET_WEIGHTS_DIR": str(tmp_path / "d")}
    out = subprocess.run([sys.executable, "-m", "syncnet", "download"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert _sha(tmp_path / "d" / "syncnet_v2.model") == RANDOM_WEIGHTS_SHA256
    assert "does not match the known checksum" in out.stderr and RANDOM_WEIGHTS_SHA256 in out.stderr
    out = subprocess.run([sys.executable, "-m", "syncnet", "score", str(fixtures_dir / "example.avi"), "--weights",
                          str(tmp_path / "nope.model"), "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_git_blob_id_is_what_git_computes(tmp_path):
    from syncnet.weights import file_digests

    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(256)) * 5000)
    git = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True).stdout.strip()
    sha256, blob = file_digests(path)
    assert blob == git and sha256 == _sha(path)


def test_a_file_unlike_the_known_checksum_is_warned_about_not_refused(random_weights, caplog):
    from syncnet.weights import SYNCNET_KNOWN_GIT_BLOB, checksum_report, verify_file

    report = checksum_report(random_weights, SYNCNET)
    assert report.matches_known is False and report.sha256 == RANDOM_WEIGHTS_SHA256
    assert SYNCNET_KNOWN_GIT_BLOB in report.message and report.git_blob in report.message
    assert "961e8696...5442" in report.message and RANDOM_WEIGHTS_SHA256 in report.message
    with caplog.at_level("WARNING", logger="syncnet.weights"):
        state = verify_file(random_weights, SYNCNET)  # the structural check decides: it is used
    assert state and any("does not match the known checksum" in r.getMessage() for r in caplog.records)


def test_a_file_matching_the_known_checksum_is_verified(random_weights, caplog):
    from dataclasses import replace

    from syncnet.weights import checksum_report, file_digests, verify_file

    sha256, blob = file_digests(random_weights)
    spec = replace(SYNCNET, known_git_blob=blob, known_sha256_ends=(sha256[:8], sha256[-4:]))
    assert checksum_report(random_weights, spec).matches_known is True
    with caplog.at_level("INFO", logger="syncnet.weights"):
        verify_file(random_weights, spec)
    assert any("verified against the known checksum" in r.getMessage() for r in caplog.records)
    wrong_end = replace(spec, known_sha256_ends=(sha256[:8], "0000"))
    assert checksum_report(random_weights, wrong_end).matches_known is False


def test_a_pinned_checksum_stays_a_hard_check(random_weights, monkeypatch):
    from syncnet.weights import verify_file

    monkeypatch.setenv("SYNCNET_WEIGHTS_SHA256", "0" * 64)
    with pytest.raises(WeightsError, match="expected 0000"):
        verify_file(random_weights, SYNCNET)
