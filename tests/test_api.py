"""The public Python API (``from pipeline import ...``), exactly as the README shows it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_python_example() -> str:
    text = README.read_text()
    section = text[text.index("From Python, the same"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_and_decides_as_detect(example_avi, tmp_path, capsys, monkeypatch):
    code = _readme_python_example().replace('"talk.mp4"', repr(str(example_avi)))
    code = code.replace('"talk.synced.mp4"', repr(str(tmp_path / "talk.synced.avi")))
    assert "fix_video(" in code and "sync_video(" in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own example, run as written
    printed = capsys.readouterr().out.splitlines()
    from pipeline.cli import main

    assert main(["detect", str(example_avi), "--json", "--no-curves"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert (tmp_path / "talk.synced.avi").is_file()
    decision_line = next(line for line in printed if line.startswith(cli["decision"]))
    assert f"{cli['audio_lag_ms']}" in decision_line


def test_sync_video_without_an_engine_chooses_as_detect_does(example_avi, capsys):
    from pipeline import SyncOptions, SyncResult, sync_video
    from pipeline.cli import main

    events = list(sync_video(example_avi, opts=SyncOptions(engine="auto")))
    result = events[-1]
    assert isinstance(result, SyncResult)
    assert main(["detect", str(example_avi), "--json", "--no-curves"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert (result.engine, result.engine_reason, result.decision) == (cli["engine"], cli["engine_reason"],
                                                                      cli["decision"])
    assert round(result.audio_lag_ms, 3) == cli["audio_lag_ms"]
    from pipeline import EngineChoice, make_engine

    choice = make_engine("auto")  # the documented way to hold the engines: the same choice, the same answer
    assert isinstance(choice, EngineChoice) and choice.reason == cli["engine_reason"]
    again = list(sync_video(example_avi, choice))[-1]
    assert (again.engine, again.decision, round(again.audio_lag_ms, 3)) == (cli["engine"], cli["decision"],
                                                                            cli["audio_lag_ms"])


def test_fix_video_writes_a_verified_copy(example_avi, tmp_path):
    from pipeline import SyncOptions, fix_video

    report = fix_video(example_avi, tmp_path / "out.avi", SyncOptions(engine="cca"))
    assert report["decision"] == "shift" and Path(report["output"]).is_file()
    assert report["verified_shift_ms"] == pytest.approx(report["applied_shift_ms"], abs=1.0)
    manual = fix_video(example_avi, tmp_path / "manual.avi", apply_ms=-40.0)
    assert manual["engine"] == "manual" and manual["applied_shift_ms"] == pytest.approx(-40.0, abs=0.1)


def test_bad_options_are_one_user_error_everywhere(example_avi):
    from pipeline import USER_FACING, SyncOptions, UserError

    for bad in (dict(search_ms=0), dict(search_ms=10001), dict(max_iterations=0), dict(engine="fast"),
                dict(tolerance_ms=-1)):
        with pytest.raises(UserError):
            SyncOptions(**bad)
    assert issubclass(UserError, USER_FACING)


def test_import_pipeline_is_cheap():
    import subprocess
    import sys

    code = "import sys, pipeline; print('numpy' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_imports_run_one_way():
    """No import cycle in the project (the shared tool prints each with the lines that close it)."""
    import subprocess
    import sys

    from conftest import SHARED

    tool = SHARED / "tools" / "import_cycles.py"
    if not tool.exists():
        pytest.skip(f"{tool} is absent (the shared folder beside the checkout)")
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, str(tool)], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_user_facing_error_has_one_base():
    from pipeline import USER_FACING, UserError
    from pipeline.errors import EngineUnavailable
    from syncnet.errors import UserFacingError
    from syncnet.inference import CropSizeError
    from syncnet.media import MediaError
    from syncnet.weights import WeightsError

    assert USER_FACING == (UserFacingError,)
    for cls in (UserError, EngineUnavailable, MediaError, WeightsError, CropSizeError):
        assert issubclass(cls, UserFacingError), cls
    assert issubclass(MediaError, ValueError) and issubclass(WeightsError, RuntimeError)  # older bases kept
