"""``python -m pipeline batch``: whole collections on a local process pool and on a local Ray instance.

The collection is real: shared clips, shifted copies of them with known offsets, and broken files in the
middle. Batch results are compared with ``fix`` run on each video one by one (same decision, same numbers,
byte-identical corrected files); a batch killed midway is rerun and must not redo finished videos.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import batch as B
from pipeline.cli import UserError, main
from pipeline.correct import write_shifted
from pipeline.executors import LocalPool, default_workers, ray_resources, ray_slots
from pipeline.sync import SyncOptions

REPORT_FIELDS = ("path", "decision", "audio_lag_ms", "confidence", "engine", "output", "error")
COMPARED = ("decision", "audio_lag_ms", "confidence", "engine", "applied_shift_ms", "verified_shift_ms")


def run_cli(*args: str, timeout: float = 600, check_rc: int | None = 0,
            env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=Path(__file__).resolve().parent.parent, env=env)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr[-3000:]
    return proc


def batch_json(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["batch", *args, "--engine", "cca", "--json", "--no-progress"]) == 0
    return json.loads(capsys.readouterr().out)


def report_lines(outdir: Path) -> list[dict]:
    return [json.loads(line) for line in (outdir / "report.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def collection(tmp_path_factory, fixtures_dir, example_avi, synced_avi) -> tuple[Path, dict[str, str]]:
    """in/a: two shared clips; in/b: a clip, shifted copies (sound 300 ms late, 200 ms early), a truncated MP4
    and a text file named .mp4 in the middle. Returns the folder and, per clip, "ok" or "error"."""
    root = tmp_path_factory.mktemp("collection") / "in"
    (root / "a").mkdir(parents=True)
    (root / "b" / "deep").mkdir(parents=True)
    shutil.copy(example_avi, root / "a" / "example.avi")
    shutil.copy(synced_avi, root / "a" / "synced_example.avi")
    shutil.copy(fixtures_dir / "w2l_input2.mp4", root / "b" / "w2l.mp4")
    write_shifted(synced_avi, root / "b" / "late300.avi", -300.0)  # the sound 300 ms after the lips
    write_shifted(fixtures_dir / "w2l_input2.mp4", root / "b" / "deep" / "early200.mp4", 200.0)
    data = (fixtures_dir / "w2l_input2.mp4").read_bytes()
    (root / "b" / "broken_truncated.mp4").write_bytes(data[: len(data) // 50])
    (root / "b" / "notes_not_video.mp4").write_text("these are my notes, not a video\n")
    (root / "b" / ".hidden.mp4").write_bytes(data)  # hidden: never picked up by a folder search
    (root / "b" / "readme.txt").write_text("not a video\n")  # not a video extension: not picked up either
    expected = {"a/example.avi": "ok", "a/synced_example.avi": "ok", "b/w2l.mp4": "ok", "b/late300.avi": "ok",
                "b/deep/early200.mp4": "ok", "b/broken_truncated.mp4": "error", "b/notes_not_video.mp4": "error"}
    return root, expected


@pytest.fixture(scope="module")
def pool_run(collection, tmp_path_factory):
    """The collection through a 2-worker local pool (run once; several tests read it)."""
    root, _ = collection
    out = tmp_path_factory.mktemp("batch") / "out"
    proc = run_cli("batch", str(root), "-o", str(out), "--workers", "2", "--engine", "cca", "--json")
    return out, json.loads(proc.stdout), proc.stderr


# --------------------------------------------------------------------------------- inputs, pure parts

def test_collect_inputs_folders_globs_lists(collection, tmp_path, monkeypatch):
    root, expected = collection
    items = B.collect_inputs([str(root)])
    assert sorted(str(i.rel) for i in items) == sorted(expected)  # recursive, no hidden file, no .txt
    assert all(i.path.is_absolute() and i.missing is None for i in items)

    # two files from different folders: mirrored below their common folder, so no two outputs collide
    items = B.collect_inputs([str(root / "a" / "example.avi"), str(root / "b" / "deep" / "early200.mp4")])
    assert [str(i.rel) for i in items] == ["a/example.avi", "b/deep/early200.mp4"]

    monkeypatch.chdir(root)
    items = B.collect_inputs(["b/**/*.mp4"])
    assert {str(i.rel) for i in items} == {"w2l.mp4", "deep/early200.mp4", "broken_truncated.mp4",
                                           "notes_not_video.mp4"}

    # a text list (relative to the list's folder, comments, duplicates once) and a CSV with a path column
    lst = tmp_path / "list.txt"
    lst.write_text(f"# my clips\n{root}/a/example.avi\n\n{root}/a/example.avi\n{root}/a/missing.mp4\n")
    items = B.collect_inputs([str(lst)])
    assert [i.path.name for i in items] == ["example.avi", "missing.mp4"]
    assert items[0].missing is None and "listed but no such file" in items[1].missing
    (tmp_path / "clips").symlink_to(root / "b")
    csv = tmp_path / "list.csv"
    csv.write_text("speaker,path\nann,clips/w2l.mp4\nbob,clips/deep/early200.mp4\n")
    assert [str(i.rel) for i in B.collect_inputs([str(csv)])] == ["w2l.mp4", "deep/early200.mp4"]
    csv.write_text("clips/w2l.mp4,ann\n")  # no header: the first column
    assert [i.path.name for i in B.collect_inputs([str(csv)])] == ["w2l.mp4"]

    # OUTDIR inside the input folder is never searched (a rerun must not pick up its own outputs)
    assert all("a" != i.rel.parts[0] for i in B.collect_inputs([str(root)], exclude=root / "a"))


def test_collect_inputs_refuses_clearly(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        B.collect_inputs([str(tmp_path / "nope")])
    with pytest.raises(UserError, match="no file matches"):
        B.collect_inputs([str(tmp_path / "*.mp4")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no video files found"):
        B.collect_inputs([str(tmp_path / "empty")])


def test_fingerprint_follows_settings_that_change_results():
    def settings(**kw) -> B.BatchSettings:
        sync = {k: kw.pop(k) for k in list(kw) if k in SyncOptions.__dataclass_fields__}
        return B.BatchSettings(SyncOptions(**{"engine": "cca", **sync}), **kw)

    base = settings()
    assert base.fingerprint() == settings(threads=4, device="cuda").fingerprint()
    for change in ({"tolerance_ms": 30.0}, {"search_ms": 1000.0}, {"force": True}, {"engine": "syncnet"},
                   {"max_iterations": 1}, {"min_confidence": 9.0}, {"copy_in_sync": True},
                   {"weights_sha256": "ab" * 32}, {"max_duration_s": 60.0}, {"max_search_ms": 1000.0},
                   {"segment_s": 20.0}):
        assert settings(**change).fingerprint() != base.fingerprint(), change
    # holding the options changed nothing a finished report relies on: the same hash as the flat settings had
    assert base.fingerprint() == "c8cad84649d9073e"
    assert list(base.to_dict()) == ["engine", "weights", "device", "max_iterations", "tolerance_ms", "min_confidence",
                                    "search_ms", "force", "max_duration_s", "max_size_mb", "copy_in_sync", "threads",
                                    "weights_sha256"]


def test_report_reader_ignores_a_torn_last_line(tmp_path):
    p = tmp_path / "report.jsonl"
    p.write_text(json.dumps({"rel": "a.mp4", "decision": "shift"}) + "\n" + '{"rel": "b.mp4", "deci')
    assert [r["rel"] for r in B.load_report(p)] == ["a.mp4"]
    writer = B.ReportWriter(p)  # the next run appends after the torn line, not onto it
    writer.write({"rel": "c.mp4", "decision": "in_sync"})
    writer.close()
    assert [r["rel"] for r in B.load_report(p)] == ["a.mp4", "c.mp4"]


def test_ray_address_or_first_input():
    from pipeline.cli import build_parser

    for given, address, inputs in [("clips/", "local", ("clips/", "x")), ("auto", "auto", ("x",)),
                                   ("10.0.0.1:6379", "10.0.0.1:6379", ("x",)), ("local", "local", ("x",))]:
        args = build_parser().parse_args(["batch", "-o", "out", "--ray", given, "x"])
        request = B.request_from_args(args)
        assert (request.ray, request.inputs) == (address, inputs)


def test_workers_and_ray_resources_sizing():
    assert default_workers(cpus=8, memory=64 * 2**30) == 8
    assert default_workers(cpus=8, memory=3 * 2**30) == 2  # memory-bound
    assert default_workers(cpus=2, memory=2**28) == 1
    # the weight-free engine never holds GPUs; SyncNet on a GPU cluster takes a share unless told cpu
    gpu_node = {"CPU": 16, "GPU": 1}
    assert ray_resources(False, None, gpu_node, 1) == {"num_cpus": 1, "num_gpus": 0}
    assert ray_resources(True, None, gpu_node, 1) == {"num_cpus": 1, "num_gpus": 0.0625}  # every CPU busy
    assert ray_resources(True, None, gpu_node, 2, 0.25) == {"num_cpus": 2, "num_gpus": 0.25}
    assert ray_resources(True, "cuda", {"CPU": 4, "GPU": 8}, 1) == {"num_cpus": 1, "num_gpus": 1.0}
    assert ray_resources(True, "cpu", gpu_node, 1)["num_gpus"] == 0
    assert ray_resources(True, None, {"CPU": 16}, 1)["num_gpus"] == 0
    with pytest.raises(UserError, match="no GPUs"):
        ray_resources(True, "cuda", {"CPU": 16}, 1)
    with pytest.raises(UserError, match="gpus-per-task"):
        ray_resources(True, None, gpu_node, 1, 1.5)
    assert ray_slots({"num_cpus": 1, "num_gpus": 0.25}, {"CPU": 64, "GPU": 2}, None) == 8  # GPU-bound
    assert ray_slots({"num_cpus": 2, "num_gpus": 0}, {"CPU": 16}, None) == 8
    assert ray_slots({"num_cpus": 1, "num_gpus": 0}, {"CPU": 16}, 3) == 3


# ------------------------------------------------------------------------------------------ local pool

def test_pool_batch_matches_fix_one_by_one(collection, pool_run, tmp_path, capsys):
    root, expected = collection
    out, summary, stderr = pool_run
    lines = report_lines(out)
    assert sorted(r["rel"] for r in lines) == sorted(expected)  # one line per video, the broken ones included
    for r in lines:
        assert all(f in r for f in REPORT_FIELDS), r
    by_rel = {r["rel"]: r for r in lines}

    for rel, r in by_rel.items():
        video = root / rel
        capsys.readouterr()
        fixed = tmp_path / rel.replace("/", "_")
        rc = main(["fix", str(video), "-o", str(fixed), "--engine", "cca", "--json"])
        if expected[rel] == "error":
            assert rc == 2 and r["decision"] == "error" and r["error_kind"] == "input"
            assert r["error"] and r["error"] in capsys.readouterr().err  # the same one-line message as fix
            assert r["output"] is None
            continue
        one = json.loads(capsys.readouterr().out)
        for f in COMPARED:
            assert r[f] == one[f], (rel, f, r[f], one[f])
        if one["output"]:
            assert r["output"] == str(out / rel)
            assert Path(r["output"]).read_bytes() == fixed.read_bytes(), rel  # byte-identical corrected file
        else:
            assert r["output"] is None and not (out / rel).exists()

    # and the numbers are right, not merely equal
    assert by_rel["a/example.avi"]["audio_lag_ms"] == pytest.approx(-120, abs=20)
    assert by_rel["a/synced_example.avi"]["decision"] == "in_sync"
    assert by_rel["b/late300.avi"]["audio_lag_ms"] == pytest.approx(300, abs=20)
    w2l = by_rel["b/w2l.mp4"]["audio_lag_ms"]
    assert by_rel["b/deep/early200.mp4"]["audio_lag_ms"] == pytest.approx(w2l - 200, abs=20)
    assert "truncated" in by_rel["b/broken_truncated.mp4"]["error"]

    # summary.json and the table
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["videos"] == 7 and summary["processed"] == 7 and summary["skipped"] == 0
    assert summary["counts"] == {"in_sync": 1, "shift": 4, "uncertain": 0, "error": 2}
    assert summary["backend"] == "local" and summary["workers"] == 2 and summary["videos_per_min"] > 0
    assert {e["path"] for e in summary["errors"]} == {str(root / "b/broken_truncated.mp4"),
                                                      str(root / "b/notes_not_video.mp4")}
    assert 100 < summary["worker_peak_rss_mb"] < 4000
    assert len({r["pid"] for r in lines}) == 2  # both workers took videos
    assert stderr.count("[") >= 7 and "ETA" in stderr  # a line per video, with the time left


def test_rerun_skips_done_and_redoes_changed(collection, pool_run, tmp_path, capsys):
    root, _ = collection
    out, first, _ = pool_run
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.suffix != ".jsonl"
              and p.name != "summary.json"}
    again = batch_json(capsys, str(root), "-o", str(out), "--workers", "2")
    assert again["processed"] == 0 and again["skipped"] == 7 and again["counts"] == first["counts"]
    assert len(report_lines(out)) == 7  # nothing appended
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # finished files untouched

    # a copy of the collection where one clip's content changed: only that one is redone
    other = tmp_path / "in"
    shutil.copytree(root, other)
    shutil.copytree(out, tmp_path / "out")
    lines = [{**r, "path": r["path"].replace(str(root), str(other))} for r in report_lines(out)]
    (tmp_path / "out" / "report.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    touched = other / "a" / "example.avi"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))  # same content
    os.unlink(other / "b" / "late300.avi")
    write_shifted(other / "a" / "synced_example.avi", other / "b" / "late300.avi", -160.0)
    third = batch_json(capsys, str(other), "-o", str(tmp_path / "out"), "--workers", "1")
    assert third["processed"] == 1 and third["skipped"] == 6
    last = report_lines(tmp_path / "out")[-1]  # the touched one was hashed again, found the same, skipped
    assert last["rel"] == "b/late300.avi" and last["audio_lag_ms"] == pytest.approx(160, abs=20)

    # --retry-errors redoes the bad videos (and they are bad again)
    fourth = batch_json(capsys, str(other), "-o", str(tmp_path / "out"), "--workers", "2", "--retry-errors")
    assert fourth["processed"] == 2 and fourth["counts"]["error"] == 2


def test_killed_batch_resumes_without_redoing(collection, tmp_path, capsys):
    root, expected = collection
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipeline", "batch", str(root), "-o", str(out), "--workers", "1",
           "--engine", "cca", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parent.parent, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    report = out / "report.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if report.exists() and len(report.read_text().splitlines()) >= 3:
            break
        assert proc.poll() is None, "the batch ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its worker, as a closed terminal or OOM would
    proc.wait(30)
    before = B.load_report(report)
    assert 3 <= len(before) < len(expected), "killed midway"
    stamps = {r["rel"]: Path(r["output"]).stat().st_mtime_ns for r in before if r["output"]}

    summary = batch_json(capsys, str(root), "-o", str(out), "--workers", "2")
    assert summary["skipped"] == len(before) and summary["processed"] == len(expected) - len(before)
    after = report_lines(out)
    assert sorted(r["rel"] for r in after) == sorted(expected)  # each video exactly once: none redone
    assert all(Path(before_out).stat().st_mtime_ns == t for before_out, t in
               ((out / rel, t) for rel, t in stamps.items()))
    assert not [p for p in out.rglob(".*") if "partial" in p.name]  # no half-written file left
    assert summary["counts"] == {"in_sync": 1, "shift": 4, "uncertain": 0, "error": 2}


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_cleanly_and_says_so(collection, tmp_path, how):
    root, expected = collection
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "batch", str(root), "-o", str(out), "--workers", "1",
                             "--engine", "cca", "--no-progress"], cwd=Path(__file__).resolve().parent.parent,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not ((out / "report.jsonl").exists() and (out / "report.jsonl").read_text().count("\n") >= 1):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the driver and its workers
    else:
        proc.send_signal(signal.SIGTERM)  # a scheduler stopping the driver alone
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "INTERRUPTED: run the same command again" in stdout and "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["pending"] > 0
    assert summary["processed"] + summary["pending"] == len(expected)
    assert summary["processed"] == len(B.load_report(out / "report.jsonl"))  # the count matches the report
    assert not [p for p in out.rglob(".*") if "partial" in p.name]
    worker = B.load_report(out / "report.jsonl")[0]["pid"]  # the one worker, busy with the next video
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker), "a worker was left behind"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def crash_or_hang(task: B.BatchTask, settings: B.BatchSettings) -> dict:
    """A worker function for the pool test: dies on 'crash', hangs on 'hang', else the real work."""
    if "crash" in task.path:
        os.kill(os.getpid(), signal.SIGKILL)
    if "hang" in task.path:
        time.sleep(600)
    return B.process_task(task, settings)


def test_a_dying_or_hanging_worker_costs_only_its_video(example_avi, tmp_path):
    tasks = [B.BatchTask(str(example_avi), str(tmp_path / "example.avi"), "example.avi"),
             B.BatchTask("/x/crash.mp4", str(tmp_path / "crash.mp4"), "crash.mp4"),
             B.BatchTask("/x/hang.mp4", str(tmp_path / "hang.mp4"), "hang.mp4"),
             B.BatchTask("/x/missing.mp4", str(tmp_path / "m.mp4"), "missing.mp4", missing="/x/missing.mp4: gone")]
    pool = LocalPool(2, 1, timeout_s=20, fn=crash_or_hang)
    t0 = time.monotonic()
    got = {t.rel: r for t, r in pool.run(tasks, B.BatchSettings(SyncOptions(engine="cca")))}
    assert time.monotonic() - t0 < 120
    assert got["example.avi"]["decision"] == "shift" and Path(got["example.avi"]["output"]).is_file()
    assert got["crash.mp4"]["error_kind"] == "crash" and "killed by SIGKILL" in got["crash.mp4"]["error"]
    assert got["hang.mp4"]["error_kind"] == "timeout" and "--timeout-s" in got["hang.mp4"]["error"]
    assert got["missing.mp4"]["error_kind"] == "input" and got["missing.mp4"]["error"] == "/x/missing.mp4: gone"


def test_workers_are_retired_after_their_quota(tmp_path):
    tasks = [B.BatchTask(f"/x/{i}.mp4", str(tmp_path / f"{i}.mp4"), f"{i}.mp4", missing=f"/x/{i}.mp4: gone")
             for i in range(5)]
    lines = [r for _, r in LocalPool(1, 1, max_tasks=2).run(tasks, B.BatchSettings(SyncOptions(engine="cca")))]
    assert [r["rel"] for r in lines] == [t.rel for t in tasks]
    pids = [r["pid"] for r in lines]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]  # a fresh process every 2 videos


def test_python_entry_point(example_avi, tmp_path):
    summary = B.batch_fix([example_avi], tmp_path / "out", workers=1, engine="cca")
    assert summary.counts["shift"] == 1 and summary.processed == 1
    assert (tmp_path / "out" / "example.avi").is_file()
    assert B.batch_fix([example_avi], tmp_path / "out", workers=1, engine="cca").skipped == 1
    # a whole SyncOptions is the same request as its fields: same fingerprint, so the finished line is reused
    again = B.batch_fix([example_avi], tmp_path / "out", workers=1, options=SyncOptions(engine="cca"))
    assert again.skipped == 1 and again.settings["engine"] == "cca"
    with pytest.raises(TypeError, match="unknown option 'wokers'"):
        B.batch_fix([example_avi], tmp_path / "out", wokers=1)
    with pytest.raises(TypeError, match="not both"):
        B.batch_fix([example_avi], tmp_path / "out", options=SyncOptions(), engine="cca")
    with pytest.raises(UserError, match="--search-ms"):  # checked once, named as the command names it
        B.batch_fix([example_avi], tmp_path / "out", engine="cca", search_ms=0)
    with pytest.raises(UserError, match="--workers"):
        B.batch_fix([example_avi], tmp_path / "out", workers=0, engine="cca")


def test_copy_in_sync_and_usage_errors(synced_avi, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(synced_avi, src / "s.avi")
    summary = batch_json(capsys, str(src), "-o", str(tmp_path / "out"), "--copy-in-sync", "--workers", "1")
    assert summary["counts"]["in_sync"] == 1
    copied = tmp_path / "out" / "s.avi"
    assert copied.read_bytes() == synced_avi.read_bytes()

    def refused(*args: str) -> str:
        capsys.readouterr()
        assert main(["batch", *args, "--engine", "cca", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        return err

    assert "would be overwritten" in refused(str(src / "s.avi"), "-o", str(src))
    (tmp_path / "file").write_text("x")
    assert "not a folder" in refused(str(src), "-o", str(tmp_path / "file"))
    assert "at least one INPUT" in refused("-o", str(tmp_path / "o2"))
    assert "--workers" in refused(str(src), "-o", str(tmp_path / "o2"), "--workers", "0")
    capsys.readouterr()
    assert main(["batch", str(src), "-o", str(tmp_path / "o2"), "--engine", "syncnet", "--weights",
                 str(tmp_path / "none.model")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()  # nothing created for a refused command
    with B.locked(tmp_path / "out"):
        assert "another batch is writing" in refused(str(src), "-o", str(tmp_path / "out"))


# ----------------------------------------------------------------------------------------------- Ray

def test_local_ray_gives_the_same_results(collection, pool_run, tmp_path):
    pytest.importorskip("ray", reason="Ray is the optional extra: pip install -r requirements-ray.txt")
    root, expected = collection
    out_pool, pool_summary, _ = pool_run
    out = tmp_path / "out"
    proc = run_cli("batch", "--ray", str(root), "-o", str(out), "--workers", "2", "--engine", "cca", "--json")
    summary = json.loads(proc.stdout)
    assert summary["backend"] == "ray" and summary["counts"] == pool_summary["counts"]
    assert summary["ray_resources"] == {"num_cpus": 1, "num_gpus": 0}
    pool = {r["rel"]: r for r in report_lines(out_pool)}
    ray_lines = report_lines(out)
    assert sorted(r["rel"] for r in ray_lines) == sorted(expected)
    for r in ray_lines:
        p = pool[r["rel"]]
        assert r["key"] == p["key"] and r["error"] == p["error"]
        for f in COMPARED:
            assert r[f] == p[f], (r["rel"], f)
        if p["output"]:
            assert Path(r["output"]).read_bytes() == Path(p["output"]).read_bytes()
    assert len({r["pid"] for r in ray_lines}) == 2  # two Ray workers shared the work

    # and a rerun on Ray resumes like the pool does (no Ray start needed: nothing left to do)
    again = json.loads(run_cli("batch", "--ray", str(root), "-o", str(out), "--engine", "cca", "--json").stdout)
    assert again["processed"] == 0 and again["skipped"] == len(expected)


def test_ray_cluster_by_address_requests_gpus_for_syncnet(example_avi, synced_avi, random_weights, tmp_path):
    """A cluster started with `ray start` (1 CPU-declared GPU: the scheduling is what is tested) and joined by
    address, as on a real cluster: SyncNet tasks ask for a GPU share that lets both CPUs work."""
    pytest.importorskip("ray", reason="Ray is the optional extra: pip install -r requirements-ray.txt")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import tempfile

    ray_bin = Path(sys.executable).with_name("ray")
    import secrets

    # token authentication, as Ray 2.60 clusters have by default: the driver needs the mode and the token too
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    temp = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must fit in 107 bytes
    start = subprocess.run([str(ray_bin), "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=1",
                            "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats"],
                           capture_output=True, text=True, timeout=120, env=env)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        address = next(w for line in start.stdout.splitlines() for w in line.split("'")
                       if w.endswith(f":{port}") and "=" not in w)
        src = tmp_path / "in"
        src.mkdir()
        shutil.copy(example_avi, src / "a.avi")
        shutil.copy(synced_avi, src / "b.avi")
        wrong = run_cli("batch", str(src), "-o", str(tmp_path / "out"), "--ray", address, "--engine", "cca",
                        check_rc=2, env={**env, "RAY_AUTH_TOKEN": "0" * 64}, timeout=300)
        assert "cannot join the Ray cluster" in wrong.stderr and "RAY_AUTH" in wrong.stderr
        assert "Traceback" not in wrong.stderr
        proc = run_cli("batch", str(src), "-o", str(tmp_path / "out"), "--ray", address, "--engine", "syncnet",
                       "--weights", str(random_weights), "--json", env=env)
        summary = json.loads(proc.stdout)
        assert summary["ray_resources"] == {"num_cpus": 1, "num_gpus": 0.5}
        assert summary["counts"]["uncertain"] == 2  # random weights: flat curves, as with `fix`
        assert summary["settings"]["weights"] == str(random_weights.resolve())
    finally:
        subprocess.run([str(ray_bin), "stop", "--force"], capture_output=True, timeout=120, env=env)
        shutil.rmtree(temp, ignore_errors=True)


def test_progress_bar_with_eta_on_a_terminal(example_avi, synced_avi, tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(example_avi, src / "a.avi")
    shutil.copy(synced_avi, src / "b.avi")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "batch", str(src), "-o", str(tmp_path / "out"),
                             "--engine", "cca", "--workers", "1"], cwd=Path(__file__).resolve().parent.parent,
                            stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    data = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    assert proc.wait(300) == 0
    os.close(master)
    text = data.decode(errors="replace")
    assert "batch:  50%|" in text and "1/2 [" in text and "batch: 100%|" in text  # the bar, redrawn
    assert "<00:0" in text  # tqdm's remaining-time estimate
    assert "[1/2] " in text and "ETA" in text  # the per-video line with our estimate
