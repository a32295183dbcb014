"""The Gradio app through its public API (/sync) with gradio_client, against an in-process server."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import av
import pytest

gradio_client = pytest.importorskip("gradio_client", reason="gradio_client comes with gradio (requirements.txt)")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from pipeline.verify import measure_shift  # noqa: E402


@pytest.fixture(scope="module")
def server():
    import app

    demo = app.build_demo()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, max_file_size="50mb",
                **{k: v for k, v in app.launch_kwargs(app.SETTINGS).items() if k == "mcp_server"})
    yield demo.local_url, app
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server[0], verbose=False)


def _run(client: Client, path: Path, **kw) -> tuple[list, tuple]:
    args = dict(engine="cca", search_ms=600, max_iterations=3, min_confidence=None, tolerance_ms=20, manual_ms=None)
    args.update(kw)
    job = client.submit(handle_file(str(path)), *args.values(), api_name="/sync")
    outputs = list(job)
    return outputs, job.result()


def test_streams_every_iteration_then_a_corrected_file(client, example_avi):
    outputs, final = _run(client, example_avi)
    statuses = [o[0] for o in outputs]
    iterations = [s for s in statuses if s.startswith("Iteration")]
    assert statuses[0].startswith("Analysing")
    assert len(iterations) >= 2 and iterations[0].startswith("Iteration 1") and iterations[1].startswith("Iteration 2")
    assert outputs[1][2]["type"] == "matplotlib" and outputs[1][2]["plot"].startswith("data:image")
    status, table, plot, video, corrected, report = final
    assert "before the lips" in status and "Checked in the written file" in status
    assert len(table["data"]) == len(iterations)
    rep = json.loads(Path(report).read_text())
    assert rep["decision"] == "shift" and rep["engine"] == "cca" and rep["job_id"]
    assert any(rep["job_id"] in line for line in rep["job_log"]), "the job log goes into the report"
    # the download: same container and codecs as the upload, shifted as reported
    with av.open(corrected) as a, av.open(str(example_avi)) as b:
        assert [s.codec_context.name for s in a.streams] == [s.codec_context.name for s in b.streams]
    assert measure_shift(example_avi, Path(corrected)) == pytest.approx(rep["applied_shift_ms"], abs=1.0)
    # the inline video: browser-playable H.264 + AAC MP4 of the same length
    with av.open(video) as v:
        assert [s.codec_context.name for s in v.streams] == ["h264", "aac"]
        assert v.duration / 1e6 == pytest.approx(12.68, abs=0.1)


def _page_run(handler, *args) -> tuple[list[tuple], dict | None, Exception | None]:
    """Every update the page's own event (sync_ui / detect_ui, the handler as a plain generator) yields, the
    report (read while its job folder still exists) and the error it ended with, if any."""
    import gradio as gr

    updates: list[tuple] = []
    report = None
    try:
        for update in handler(*args):
            updates.append(update)
            for item in update:
                if isinstance(item, dict) and "decision" in item:
                    report = item
                elif isinstance(item, str) and item.endswith("report.json"):
                    report = json.loads(Path(item).read_text())
    except gr.Error as exc:
        return updates, report, exc
    return updates, report, None


def _says_the_same(status: str, fig, report: dict, wrote: bool | None) -> str:
    """The status's first sentence is the report's headline, and so is the plot's title."""
    from pipeline.outcome import headline

    head = headline(report, wrote)
    assert status.startswith(head), (status, head)
    assert " ".join(fig._suptitle.get_text().split()) == head
    return head


@pytest.mark.parametrize("clip,decision", [("synced_example.avi", "in_sync"), ("w2l_input4.mp4", "uncertain")])
def test_status_plot_and_report_agree_and_nothing_is_written(server, fixtures_dir, clip, decision):
    """In sync, and could not decide (with its reason): no file; the words, the plot's title and the report
    say the same; the page also shows the face that was measured."""
    app = server[1]
    updates, report, error = _page_run(app.sync_ui, str(fixtures_dir / clip), "cca", 600, 3, None, 20, None)
    assert error is None and report["decision"] == decision
    status, _, fig, video, corrected, _, picture, faces = updates[-1]
    assert video is None and corrected is None
    head = _says_the_same(status, fig, report, False)
    if decision == "in_sync":
        assert head.startswith("In sync") and "No new file" in status
    else:
        assert head == f"Could not decide: {report['reason']}." and "Nothing was changed" in status
        assert fig.axes[0].get_title().endswith("(not trusted)")  # the curve's best point is not a claim
    assert picture is not None and picture.ndim == 3
    assert [row[0] for row in faces] == [t["id"] for t in report["tracks"]]


def test_shift_manual_and_error_agree_too(server, fixtures_dir, example_avi, tmp_path):
    """Measured and corrected, a manual shift, and a refused file: the status and the plot say the same."""
    app = server[1]
    updates, report, _ = _page_run(app.detect_ui, str(example_avi), "cca", 600, 3, None, 20)
    status, _, fig, measured, picture, faces = updates[-1]
    assert _says_the_same(status, fig, measured, None).startswith("Out of sync: the sound comes")
    assert picture is not None and faces[0][-1].startswith("measured")
    updates, report, _ = _page_run(app.sync_ui, str(example_avi), "cca", 600, 3, None, 20, 30.0)
    status, _, fig, *_ = updates[-1]
    assert _says_the_same(status, fig, report, True).startswith("Applied the manual shift: the audio moved 30.0")
    assert fig.axes[0].texts[0].get_text() == "nothing was measured"
    updates, report, error = _page_run(app.sync_ui, str(fixtures_dir / "video_no_audio.avi"), "cca", 600, 3, None,
                                       20, None)
    status, _, fig, *_ = updates[-1]
    assert error is not None and status == f"Error: {error.message}" and "no audio track" in status
    assert fig.texts[0].get_text().replace("\n", " ") == status  # the plot no longer shows an earlier state


def test_manual_shift(client, example_avi):
    _, final = _run(client, example_avi, manual_ms=-40.0)
    assert final[0].startswith("Applied the manual shift")
    assert measure_shift(example_avi, Path(final[4])) == pytest.approx(-40.0, abs=1.0)


@pytest.mark.parametrize("name,message", [("video_no_audio.avi", "no audio track"),
                                          ("video_no_video_stream.avi", "no video track")])
def test_errors_arrive_as_app_errors(client, fixtures_dir, name, message):
    with pytest.raises(AppError, match=message):
        _run(client, fixtures_dir / name)


def test_garbage_upload_is_a_clear_error_and_the_app_keeps_serving(client, tmp_path, example_avi):
    junk = tmp_path / "notes.mp4"
    junk.write_text("not a video at all\n" * 100)
    with pytest.raises(AppError, match="not a readable video"):
        _run(client, junk)
    _, final = _run(client, example_avi, manual_ms=10.0)  # still serving
    assert final[4]


def test_job_folders_are_removed(client, server, example_avi):
    _run(client, example_avi, manual_ms=5.0)
    root = Path(os.environ["SYNCFIX_TEMP_DIR"])
    assert not [p for p in root.glob("job-*") if not p.name.startswith("job-preview-")]


def test_api_is_documented(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert "/sync" in api["named_endpoints"] and "/detect" in api["named_endpoints"]
    names = [p["parameter_name"] for p in api["named_endpoints"]["/sync"]["parameters"]]
    assert names == ["video", "engine", "search_ms", "max_iterations", "min_confidence", "tolerance_ms", "manual_ms"]
    assert len(api["named_endpoints"]["/sync"]["returns"]) == 6  # unchanged for existing clients
    detect = [p["parameter_name"] for p in api["named_endpoints"]["/detect"]["parameters"]]
    assert detect == names[:-1] and len(api["named_endpoints"]["/detect"]["returns"]) == 4


def test_the_upload_area_says_what_it_accepts():
    import app

    label = app.upload_label(app.Settings(max_upload_mb=200, max_duration_s=600))
    assert label == "Video (MP4, M4V, MOV, MKV, WEBM, AVI; up to 200 MB and 10 minutes)"
    demo = app.build_demo()
    files = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "in_file"]
    assert files and files[0].label == app.upload_label()


def test_detect_measures_and_writes_nothing(client, example_avi):
    """/detect: the iterations stream like /sync's, then the detect report; no file anywhere."""
    job = client.submit(handle_file(str(example_avi)), "cca", 600, 3, None, 20, api_name="/detect")
    outputs = list(job)
    status, table, plot, measured = job.result()
    assert any(o[0].startswith("Iteration 1") for o in outputs) and plot["type"] == "matplotlib"
    assert measured["decision"] == "shift" and measured["engine"] == "cca"
    assert measured["audio_lag_ms"] == pytest.approx(-120, abs=20) and 0 <= measured["p_correct"] <= 1
    assert len(measured["tracks"]) == 1 and "timeline" in measured and "drift" in measured
    assert "output" not in measured and "applied_shift_ms" not in measured
    assert status.startswith("Out of sync: the sound comes") and "Nothing was written" in status
    assert f"{abs(measured['audio_lag_ms']):.1f} ms before the lips" in status  # the status says what the report says
    assert len(table["data"]) == len(measured["iterations"])


def _plain_http(url: str, clip: Path, endpoint: str, options: list) -> str:
    """The README's curl flow: upload the clip, POST /gradio_api/call/ENDPOINT, read the whole event stream."""
    import urllib.request
    import uuid

    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"clip.avi\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + clip.read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"{url}/gradio_api/upload", data=body,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    uploaded = json.loads(urllib.request.urlopen(req, timeout=60).read())[0]
    call = {"data": [{"path": uploaded, "meta": {"_type": "gradio.FileData"}}, *options]}
    req = urllib.request.Request(f"{url}/gradio_api/call/{endpoint}", data=json.dumps(call).encode(),
                                 headers={"Content-Type": "application/json"})
    event_id = json.loads(urllib.request.urlopen(req, timeout=60).read())["event_id"]
    return urllib.request.urlopen(f"{url}/gradio_api/call/{endpoint}/{event_id}", timeout=300).read().decode()


def _last_data(stream: str) -> list:
    return json.loads([line for line in stream.splitlines() if line.startswith("data: ")][-1][6:])


def test_plain_http_upload_then_stream(server, example_avi):
    """The README's curl flow: upload, POST /gradio_api/call/sync, read the event stream."""
    stream = _plain_http(server[0].rstrip("/"), example_avi, "sync", ["cca", 600, 3, None, 20, None])
    events = [line.split(": ", 1)[1] for line in stream.splitlines() if line.startswith("event: ")]
    assert events.count("generating") >= 3 and events[-1] == "complete"
    final = _last_data(stream)
    assert "before the lips" in final[0] and final[4]["orig_name"] == "synced.avi"


def test_plain_http_detect(server, example_avi):
    """The README's curl flow for /detect: the last data line holds the four outputs, the report last."""
    final = _last_data(_plain_http(server[0].rstrip("/"), example_avi, "detect", ["cca", 600, 3, None, 20]))
    assert final[3]["decision"] == "shift" and final[3]["audio_lag_ms"] == pytest.approx(-120, abs=20)


def test_too_long_is_refused_with_the_limit(server, example_avi, monkeypatch):
    """The handler as a plain generator (same code the event runs), with a 5 s limit."""
    import dataclasses

    import gradio as gr

    app = server[1]
    monkeypatch.setattr(app, "SETTINGS", dataclasses.replace(app.SETTINGS, max_duration_s=5.0))
    with pytest.raises(gr.Error, match="the limit is 5.0 s. Trim it"):
        list(app.sync(str(example_avi), "cca"))


def test_too_large_is_refused_before_processing(server, tmp_path, example_avi):
    import urllib.error
    import urllib.request
    import uuid

    url = server[0].rstrip("/")
    big = example_avi.read_bytes() * 50  # 55 MB, over the 50 MB this test server allows
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.avi\"\r\n\r\n").encode() \
        + big + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"{url}/gradio_api/upload", data=body,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=60)
    assert err.value.code in (400, 413)
    assert b"size" in err.value.read().lower()


def test_the_app_and_the_cli_give_the_same_result_on_the_same_input(client, example_avi, capsys):
    from pipeline.cli import main

    _, final = _run(client, example_avi, search_ms=600)
    app_report = json.loads(Path(final[5]).read_text())
    assert main(["detect", str(example_avi), "--engine", "cca", "--search-ms", "600", "--json", "--no-curves"]) == 0
    cli_report = json.loads(capsys.readouterr().out)
    for key in ("decision", "audio_lag_ms", "confidence", "p_correct", "engine", "measured_lag_ms"):
        assert app_report[key] == cli_report[key], key


def test_the_app_and_the_cli_give_the_same_error_on_the_same_input(client, example_avi, capsys):
    from pipeline.cli import main

    assert main(["detect", str(example_avi), "--engine", "cca", "--search-ms", "20000", "--json"]) == 2
    cli_error = capsys.readouterr().err.strip().removeprefix("error: ")
    assert cli_error == "--search-ms must be between 0 and 10000"
    with pytest.raises(AppError, match=cli_error):
        _run(client, example_avi, search_ms=20000)


def _readme_mcp_example() -> str:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text[text.index("### MCP"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_mcp_lists_both_tools_and_measures_a_clip(server, example_avi, capsys):
    """The MCP server (on by default): the schema lists sync and detect with their parameters and what they
    mean, and the README's client example, run as written, measures a real clip (sent inline)."""
    import ast
    import asyncio

    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    url = server[0].rstrip("/") + "/gradio_api/mcp/"

    async def tools():
        async with streamable_http_client(url) as (read, write, _), ClientSession(read, write) as session:
            await session.initialize()
            return {t.name: t for t in (await session.list_tools()).tools}

    listed = asyncio.run(tools())
    assert set(listed) == {"sync", "detect"}
    params = ["video", "engine", "search_ms", "max_iterations", "min_confidence", "tolerance_ms", "manual_ms"]
    assert list(listed["sync"].inputSchema["properties"]) == params
    assert list(listed["detect"].inputSchema["properties"]) == params[:-1]
    assert listed["detect"].inputSchema["required"] == ["video"]
    for tool in listed.values():
        props = tool.inputSchema["properties"]
        assert "out of step with the lips" in tool.description and "audio_lag_ms" in tool.description
        assert all(props[p].get("description") for p in props), "every parameter says what it means"
        assert props["engine"]["enum"] == ["auto", "cca", "syncnet", "both"]
    assert "earlier" in listed["sync"].inputSchema["properties"]["manual_ms"]["description"]

    code = _readme_mcp_example().replace('"talk.mp4"', repr(str(example_avi)))
    code = code.replace('"http://127.0.0.1:7860/gradio_api/mcp/"', repr(url)).replace('"auto"', '"cca"')
    capsys.readouterr()
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})  # noqa: S102 - the README's example
    names, answer = capsys.readouterr().out.split("\n", 1)
    assert names == "['detect', 'sync']"
    status, _, _, report = ast.literal_eval(answer.strip())
    assert report["decision"] == "shift" and report["audio_lag_ms"] == pytest.approx(-120, abs=20)
    assert f"{abs(report['audio_lag_ms']):.1f} ms before the lips" in status


def test_mcp_can_be_turned_off():
    import app

    assert app.Settings.from_env({}).mcp_server and app.launch_kwargs(app.Settings())["mcp_server"] is True
    off = app.Settings.from_env({"SYNCFIX_MCP": "0"})
    assert off.mcp_server is False and app.launch_kwargs(off)["mcp_server"] is False


def test_settings_come_from_the_environment_in_one_place(tmp_path):
    import app

    got = app.Settings.from_env({"SYNCFIX_MAX_UPLOAD_MB": "20", "GRADIO_SERVER_PORT": "7999", "SYSTEM": "spaces",
                                 "SYNCFIX_TEMP_DIR": str(tmp_path), "SYNCFIX_SHARED": str(tmp_path / "sh")})
    assert (got.max_upload_mb, got.server_port, got.temp_dir) == (20, 7999, tmp_path)
    assert got.fetch_weights and got.examples_dir == tmp_path / "sh" / "fixtures"  # a Space fetches the weights
    assert app.Settings.from_env({}) == app.Settings()  # nothing set: the documented defaults
    assert app.launch_kwargs(got)["max_file_size"] == "20mb"
    with pytest.raises(SystemExit, match="SYNCFIX_MAX_DURATION_S='ten'"):
        app.Settings.from_env({"SYNCFIX_MAX_DURATION_S": "ten"})
