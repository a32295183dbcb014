"""A real browser: Debian's headless Chromium driven by Playwright (no `playwright install`).

Upload a clip, press Sync, wait for the synced video, check that it plays (duration > 0) and that the plot
and the table rendered, and save a screenshot next to the test results. Every request the page makes must
stay on 127.0.0.1: the page aborts others and the test fails if there were any.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
RESULTS = Path(__file__).resolve().parent.parent / "test-results"


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def app_url():
    import app

    demo = app.build_demo()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield demo.local_url
    demo.close()


def test_upload_sync_play(browser, app_url, example_avi):
    page = browser.new_page(viewport={"width": 1400, "height": 1300})
    outside: list[str] = []

    def guard(route):
        host = urlparse(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", guard)
    page.goto(app_url, wait_until="networkidle")
    page.locator("#in_file input[type=file]").set_input_files(str(example_avi))
    # the AVI upload gets a playable preview
    page.wait_for_function("() => { const v = document.querySelector('#in_preview video');"
                           " return v && v.readyState >= 1 && v.duration > 0; }", timeout=60_000)
    # the engine that needs no weights, so the run is real without the SyncNet download
    page.get_by_text("Options").click()
    page.get_by_role("combobox", name="Engine").click()
    page.get_by_role("option", name="cca").click()
    page.locator("#sync_btn").click()
    video = page.locator("#out_video video")
    video.wait_for(state="attached", timeout=120_000)
    page.wait_for_function("() => { const v = document.querySelector('#out_video video');"
                           " return v && v.readyState >= 1 && v.duration > 0; }", timeout=60_000)
    duration = page.evaluate("() => document.querySelector('#out_video video').duration")
    assert duration == pytest.approx(12.68, abs=0.2)
    status = page.locator("#status textarea").input_value()
    assert "before the lips" in status
    assert page.locator("#plot img").count() >= 1 or page.locator("#plot canvas, #plot svg").count() >= 1
    assert page.locator("#table").get_by_text("cca").count() >= 2  # one row per iteration
    RESULTS.mkdir(exist_ok=True)
    page.screenshot(path=str(RESULTS / "app_synced.png"), full_page=True)
    assert outside == [], f"the page tried to reach outside 127.0.0.1: {outside}"
    page.close()


def test_measure_only_shows_which_face(browser, app_url, example_avi, tmp_path):
    """The "Measure only" button (/detect) on a clip with two faces (the speaker left, a frozen face right):
    the status and the measurement appear, no video is made, and the face picture and table show both faces
    with the speaker marked as the measured one."""
    from media_factory import write_two_faces

    clip = write_two_faces(example_avi, tmp_path / "two faces.mp4")
    page = browser.new_page(viewport={"width": 1400, "height": 1500})
    page.goto(app_url, wait_until="networkidle")
    page.locator("#in_file input[type=file]").set_input_files(str(clip))
    page.get_by_text("Options").click()
    page.get_by_role("combobox", name="Engine").click()
    page.get_by_role("option", name="cca").click()
    page.locator("#detect_btn").click()
    page.wait_for_function("() => { const t = document.querySelector('#status textarea');"
                           " return t && t.value.startsWith('Out of sync'); }", timeout=120_000)
    status = page.locator("#status textarea").input_value()
    assert "before the lips" in status and "Nothing was written" in status
    measurement = page.locator("#measurement")
    measurement.get_by_text("decision").first.wait_for(timeout=30_000)
    assert measurement.get_by_text("shift").count() >= 1
    assert page.locator("#out_video video").count() == 0  # nothing to play: nothing was written
    picture = page.locator("#faces img")
    picture.wait_for(state="visible", timeout=30_000)
    size = page.evaluate("() => { const i = document.querySelector('#faces img');"
                         " return [i.naturalWidth, i.naturalHeight]; }")
    assert size[0] >= 400 and size[1] >= 150  # a real picture, not a placeholder
    table = page.locator("#faces_table")
    assert table.get_by_text("measured (the speaking face)").count() >= 1
    assert table.get_by_text("read once, scored lower").count() >= 1  # the frozen face: read, not chosen
    RESULTS.mkdir(exist_ok=True)
    page.locator("#faces").screenshot(path=str(RESULTS / "app_faces.png"))
    page.screenshot(path=str(RESULTS / "app_measured.png"), full_page=True)
    page.close()
