"""End-to-end tests of resume (src/ledger/, docs/output.md "Resume"): a run
killed with SIGKILL or stopped with SIGINT, then run again with the same
command, ends with every input in exactly one committed row across the
part files; a finished run run again writes nothing; other settings are
refused (exit 2) and --overwrite starts over. JSONL and Parquet."""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import time
from collections import Counter

import pytest

from conftest import SAMPLES, TINY, sample_copies, sample_images, sanitized

COPIES = 40
ARGS = ("--max-tokens", "8", "--shard-rows", "20", "--metrics-addr", "off", "--show", "0")


def expected_ids(copies: int) -> list[str]:
    return sorted(f"c{i:03d}/{p.relative_to(SAMPLES)}" for i in range(copies) for p in sample_images())


def parts(out: pathlib.Path) -> list[pathlib.Path]:
    return sorted(out.glob("part-*"))


def part_ids(out: pathlib.Path) -> list[str]:
    """Every row id in the committed part files, as often as it occurs."""
    ids = []
    for part in parts(out):
        if part.suffix == ".parquet":
            import pyarrow.parquet as pq
            ids += pq.read_table(part, columns=["id"]).column("id").to_pylist()
        else:
            ids += [json.loads(line)["id"] for line in part.read_text(encoding="utf-8").splitlines()]
    return ids


def command(sluice, src, out, *extra) -> list[str]:
    return [str(sluice.binary), "caption", str(src), "-o", str(out), "--model", str(TINY / "model.gguf"),
            "--mmproj", str(TINY / "mmproj.gguf"), *ARGS, *map(str, extra)]


def run(sluice, src, out, *extra, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run(command(sluice, src, out, *extra), capture_output=True, text=True,
                          timeout=timeout)


def interrupt(sluice, src, out, sig, *extra, log: pathlib.Path) -> int:
    """Starts the run, waits until it has committed at least one part, sends
    `sig`, and returns the exit status. The run must still have been going."""
    with open(log, "w") as err:
        proc = subprocess.Popen(command(sluice, src, out, *extra), stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 300
        while not parts(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before it could be interrupted: {log.read_text()[-2000:]}"
        assert parts(out), "no part committed in time"
        proc.send_signal(sig)
        return proc.wait(timeout=300)


def assert_exactly_once(out: pathlib.Path, want: list[str]):
    ids = part_ids(out)
    dupes = [i for i, n in Counter(ids).items() if n > 1]
    assert not dupes, f"written twice: {dupes[:5]}"
    assert sorted(ids) == want, f"missing: {sorted(set(want) - set(ids))[:5]}"
    assert not list(out.glob(".part-*.tmp-*")), "a temporary part file was left behind"
    assert not list(out.glob(".errors-*.tmp-*")), "a temporary errors part was left behind"


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("resume") / "in"
    sample_copies(root, COPIES)
    return root


def test_kill_9_then_the_same_command_finishes_exactly_once(sluice, big, tmp_path):
    out = tmp_path / "out"
    want = expected_ids(COPIES)
    rc = interrupt(sluice, big, out, signal.SIGKILL, log=tmp_path / "killed.log")
    assert rc == -signal.SIGKILL
    before = part_ids(out)
    assert 0 < len(before) < len(want), "the kill should land mid-run"
    assert len(before) % 20 == 0, "only whole parts are committed"
    assert (out / "_sluice_ledger.sqlite").exists()
    kept = {p.name: p.read_bytes() for p in parts(out)}

    r = run(sluice, big, out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_exactly_once(out, want)
    assert "skipped" in r.stdout + r.stderr
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows"]["skipped"] == len(before)
    assert summary["rows"]["total"] == len(want) - len(before)
    # The parts that survived the kill are untouched; new ones continue after
    # the highest of them.
    assert {name: (out / name).read_bytes() for name in kept} == kept
    new = [p.name for p in parts(out) if p.name not in kept]
    assert new and min(new) > max(kept)

    # Done: the same command again writes nothing and says so.
    stamps = {p.name: p.stat().st_mtime_ns for p in parts(out)}
    r = run(sluice, big, out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "already done" in r.stdout and "nothing new" in r.stdout
    assert {p.name: p.stat().st_mtime_ns for p in parts(out)} == stamps
    assert_exactly_once(out, want)

    # Other settings into the same folder: refused, nothing touched.
    r = run(sluice, big, out, "--prompt", "Name the main object.")
    assert r.returncode == 2
    assert str(out) in r.stderr and "prompt" in r.stderr
    assert "--overwrite" in r.stderr and "-o" in r.stderr
    assert {p.name: p.stat().st_mtime_ns for p in parts(out)} == stamps

    # --overwrite starts over: the old parts go, the new run does everything.
    small = tmp_path / "small"
    sample_copies(small, 2)
    r = run(sluice, small, out, "--prompt", "Name the main object.", "--overwrite")
    assert r.returncode == 0, r.stderr[-3000:]
    assert_exactly_once(out, expected_ids(2))
    assert [p.name for p in parts(out)] == ["part-00000.jsonl", "part-00001.jsonl"]
    assert json.loads((out / "_summary.json").read_text())["rows"]["skipped"] == 0
    # ... and the new settings now resume.
    r = run(sluice, small, out, "--prompt", "Name the main object.")
    assert r.returncode == 0 and "already done" in r.stdout, r.stderr[-3000:]


def test_a_killed_run_leaves_a_running_summary_not_the_run_befores(sluice, tmp_path):
    """_summary.json says "running" from the start of a run until its end
    writes the real one: a run killed before its end (kill -9, mpirun's
    SIGKILL a second after its SIGTERM) left the run before's summary, which
    read "ok" as if it were this run's."""
    src, out = tmp_path / "in", tmp_path / "out"
    sample_copies(src / "a", 1)
    r = run(sluice, src, out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "_summary.json").read_text())["status"] == "ok"
    first = set(parts(out))
    sample_copies(src / "b", 6)  # the same command goes on with these
    proc = subprocess.Popen(command(sluice, src, out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while set(parts(out)) == first and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()
    assert proc.wait(timeout=300) == -signal.SIGKILL, "the run ended before the kill"
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["status"] == "running", summary
    assert summary["output_dir"] == str(out)
    r = run(sluice, src, out)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["status"] == "ok" and summary["rows"]["skipped"] > 16, summary
    assert_exactly_once(out, sorted(f"{d}/{i}" for d in ("a", "b") for i in expected_ids(
        1 if d == "a" else 6)))


def test_a_kill_leaves_no_errors_temporary_after_the_rerun(sluice, tmp_path):
    """--errors-file writes each part's failed rows to .errors-N.jsonl.tmp-PID
    beside the part's temporary; a kill -9 leaves both. The rerun removed the
    part's but kept the errors one for good (one more per kill, as large as
    a part's failed rows); it now goes too."""
    src = tmp_path / "in"
    sample_copies(src, 6, corrupt=True)
    want = sorted(expected_ids(6) + ["broken/corrupt.jpg"])
    out, errs = tmp_path / "out", tmp_path / "errors.jsonl"
    proc = subprocess.Popen(command(sluice, src, out, "--errors-file", errs),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(out.glob(".errors-*.jsonl.tmp-*")) and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    assert proc.wait(timeout=300) == -signal.SIGKILL, "the run ended before the kill"
    assert list(out.glob(".errors-*.jsonl.tmp-*")), "the kill should leave an errors temporary"
    r = run(sluice, src, out, "--errors-file", errs)
    assert r.returncode == 3, r.stderr[-3000:]
    assert not list(out.glob(".*.tmp-*")), sorted(p.name for p in out.iterdir())
    failed = [json.loads(line)["id"] for line in errs.read_text().splitlines()]
    assert failed == ["broken/corrupt.jpg"]
    assert sorted(part_ids(out) + failed) == want


def test_overwrite_removes_the_old_errors_parts_too(sluice, tmp_path):
    """--overwrite removed the part files but not the errors parts beside
    them (errors-N.jsonl): those numbered past the new run's parts stayed,
    holding another run's failed rows."""
    src = tmp_path / "in"
    sample_copies(src, 2, corrupt=True)
    out, errs = tmp_path / "out", tmp_path / "errors.jsonl"
    r = run(sluice, src, out, "--errors-file", errs, "--shard-rows", "4")
    assert r.returncode == 3, r.stderr[-3000:]
    assert len(list(out.glob("errors-*.jsonl"))) > 2
    small = tmp_path / "small"
    sample_copies(small, 1)
    r = run(sluice, small, out, "--errors-file", errs, "--shard-rows", "8", "--overwrite")
    assert r.returncode == 0, r.stderr[-3000:]
    numbers = lambda glob: sorted(p.name.split("-")[1].split(".")[0] for p in out.glob(glob))
    assert numbers("errors-*.jsonl") == numbers("part-*.jsonl") == ["00000", "00001"]
    assert all(p.read_text() == "" for p in out.glob("errors-*.jsonl"))
    assert errs.read_text() == ""


def test_sigint_then_the_same_command_finishes_exactly_once(sluice, big, tmp_path):
    out = tmp_path / "out"
    want = expected_ids(COPIES)
    rc = interrupt(sluice, big, out, signal.SIGINT, log=tmp_path / "stopped.log")
    assert rc == 130, (tmp_path / "stopped.log").read_text()[-2000:]
    assert "run the same command again" in (tmp_path / "stopped.log").read_text()
    before = part_ids(out)
    assert 0 < len(before) < len(want)
    assert len(set(before)) == len(before)
    r = run(sluice, big, out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_exactly_once(out, want)


def test_parquet_output_resumes_too(sluice, big, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "out"
    want = expected_ids(COPIES)
    rc = interrupt(sluice, big, out, signal.SIGKILL, "--format", "parquet", log=tmp_path / "killed.log")
    assert rc == -signal.SIGKILL
    assert 0 < len(part_ids(out)) < len(want)
    r = run(sluice, big, out, "--format", "parquet")
    assert r.returncode == 0, r.stderr[-3000:]
    assert all(p.suffix == ".parquet" for p in parts(out))
    assert_exactly_once(out, want)
    rows = [row for p in parts(out) for row in pq.read_table(p).to_pylist()]
    assert all(row["caption"] is not None and row["error"] is None for row in rows)
    # The output format is part of the settings.
    r = run(sluice, big, out)
    assert r.returncode == 2 and "format" in r.stderr


def test_failed_rows_count_as_done_and_the_rerun_still_exits_3(sluice, tmp_path):
    """A failed row is done: the rerun does not caption it again. While the
    output holds it, the same command exits 3 as the first run did: it
    exited 0 ("all inputs were already done"), so a scheduler retrying the
    exit 3 (a Kubernetes index, Slurm --requeue) marked the rows succeeded."""
    src = tmp_path / "in"
    n = sample_copies(src, 1, corrupt=True)
    out = tmp_path / "out"
    r = run(sluice, src, out)
    assert r.returncode == 3, r.stderr[-3000:]
    r = run(sluice, src, out)
    assert r.returncode == 3 and "already done" in r.stdout, r.stdout + r.stderr[-3000:]
    assert "1 of those rows failed: --retry-failed captions their inputs again" in r.stdout, r.stdout
    ids = part_ids(out)
    assert len(ids) == len(set(ids)) == n
    assert "broken/corrupt.jpg" in ids

    # A new input captioned well does not hide the earlier failure.
    new = src / "later" / "new.jpg"
    new.parent.mkdir()
    new.symlink_to(sample_images()[0])
    r = run(sluice, src, out)
    assert r.returncode == 3, r.stdout + r.stderr[-3000:]
    assert "the output also holds 1 failed row of earlier runs:" in r.stdout, r.stdout
    assert "later/new.jpg" in part_ids(out)

    # Once the input is fixed, --retry-failed captions it and the output is whole.
    bad = src / "broken" / "corrupt.jpg"
    bad.unlink()
    bad.symlink_to(sample_images()[0])
    r = run(sluice, src, out, "--retry-failed")
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    r = run(sluice, src, out)
    assert r.returncode == 0 and "already done" in r.stdout, r.stdout + r.stderr[-3000:]
    ids = part_ids(out)
    assert len(ids) == len(set(ids)) == n + 1


def test_a_run_whose_engine_did_not_load_leaves_no_part(sluice, tmp_path):
    """A model file llama.cpp cannot load stops the run (exit 2) before any
    row; it commits no part, so the corrected command runs in the same
    folder (it was refused as "model changed since" when an empty first
    part was committed)."""
    src = tmp_path / "in"
    sample_copies(src, 1)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF but not really" * 10)
    out = tmp_path / "out"
    r = sluice.run("caption", src, "-o", out, "--model", bad, "--mmproj", TINY / "mmproj.gguf",
                   *ARGS)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "bad.gguf" in r.stderr
    assert parts(out) == []
    r = run(sluice, src, out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert_exactly_once(out, expected_ids(1))


def test_a_path_spelled_another_way_resumes(sluice, tmp_path):
    """`photos/` (the shell completes a folder so) and `photos` name one
    folder and give the same ids, but the fingerprint held the inputs and
    the model as typed: the rerun was refused, 'inputs changed since'.
    A trailing '/', '//' and './' are now one spelling; a folder written
    before keeps its text and resumes with the command that wrote it."""
    src = tmp_path / "in"
    sample_copies(src, 1)
    model = TINY / "model.gguf"

    def again(inp, model_path):
        return subprocess.run([str(sluice.binary), "caption", inp, "-o", "out", "--model", model_path,
                               "--mmproj", str(TINY / "mmproj.gguf"), *ARGS],
                              capture_output=True, text=True, timeout=900, cwd=tmp_path)

    r = again("in", str(model))
    assert r.returncode == 0, r.stderr[-3000:]
    sample_copies(src / "more", 1)  # new inputs for the rerun to do
    r = again("./in/", f"{model.parent}//./{model.name}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "already done" in r.stderr, r.stderr[-3000:]
    assert_exactly_once(tmp_path / "out", sorted(expected_ids(1) + [f"more/{i}" for i in expected_ids(1)]))

    # A ledger of a sluice that kept paths as typed ("in/"): the same
    # command goes on; another spelling is still another job there. That
    # sluice (2026-12-06) held no KV cache types (nor fingerprint_form) either: a fingerprint
    # with them is today's and matches only in full.
    import sqlite3
    db = sqlite3.connect(tmp_path / "out" / "_sluice_ledger.sqlite")
    (fp,) = db.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
    lines = [line for line in fp.split("\n")
             if not line.startswith(("kv_cache_types\t", "fingerprint_form\t"))]
    assert len(lines) == len(fp.split("\n")) - 2, fp
    with db:
        db.execute("UPDATE meta SET value = replace(?, 'inputs	[\"in\"]', 'inputs	[\"in/\"]') "
                   "WHERE key = 'fingerprint'", ("\n".join(lines),))
    db.close()
    sample_copies(src / "last", 1)
    r = again("in/", str(model))
    assert r.returncode == 0, r.stderr[-3000:]
    r = again("in", str(model))
    # (named alone: the cache types that older form lacks are no change)
    assert r.returncode == 2 and "(inputs changed since)" in r.stderr, \
        r.stderr[-3000:]
    assert_exactly_once(tmp_path / "out", sorted(expected_ids(1) + [f"{d}/{i}" for d in ("more", "last")
                                                                    for i in expected_ids(1)]))


def assert_no_row_twice(out: pathlib.Path):
    ids = part_ids(out)
    assert len(ids) == len(set(ids)), "a row written twice"


def assert_refused_unknown(r, out, names, kept):
    """Exit 2, naming the folder, the parts the ledger does not know and
    what to do; the parts untouched and none added."""
    assert r.returncode == 2, r.stderr[-3000:]
    assert str(out) in r.stderr
    for name in names[:3]:
        assert name in r.stderr
    assert "--overwrite" in r.stderr and "move th" in r.stderr.lower()
    assert {p.name: p.read_bytes() for p in parts(out)} == kept


def test_parts_the_ledger_does_not_record_are_refused_not_written_twice(sluice, tmp_path):
    """A ledger emptied, deleted or swapped for a fresh one knows none of
    the folder's parts: a rerun used to caption their rows again into new
    parts, so the output held them twice. It is refused (exit 2) naming the
    parts; moved out of the way, the rest resumes exactly once."""
    src = tmp_path / "in"
    sample_copies(src, 2)
    want = expected_ids(2)
    out = tmp_path / "out"
    r = run(sluice, src, out)
    assert r.returncode == 0, r.stderr[-3000:]
    kept = {p.name: p.read_bytes() for p in parts(out)}
    assert len(kept) >= 2
    ledger = out / "_sluice_ledger.sqlite"

    # Emptied (a truncated file): SQLite opens it as a new ledger.
    ledger.write_bytes(b"")
    r = run(sluice, src, out)
    assert_refused_unknown(r, out, sorted(kept), kept)
    assert "does not record" in r.stderr
    # ... and refused again: the refusal recorded nothing.
    r = run(sluice, src, out)
    assert_refused_unknown(r, out, sorted(kept), kept)

    # Deleted: the parts are named too.
    for f in out.glob("_sluice_ledger.sqlite*"):
        f.unlink()
    r = run(sluice, src, out)
    assert_refused_unknown(r, out, sorted(kept), kept)
    assert "no resume ledger" in r.stderr
    assert_no_row_twice(out)

    # Moving the parts it does not know away lets the run go on: their
    # rows are captioned again, once.
    aside = tmp_path / "aside"
    aside.mkdir()
    for name in kept:
        (out / name).rename(aside / name)
    r = run(sluice, src, out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_exactly_once(out, want)


def test_a_ledger_that_lost_its_wal_after_a_kill_is_refused(sluice, big, tmp_path):
    """kill -9 leaves the ledger's last commits in its -wal file (SQLite
    folds them into the main file only at a clean close or a checkpoint).
    Without it the ledger misses the parts those commits recorded; a rerun
    is refused rather than writing their rows a second time."""
    out = tmp_path / "out"
    rc = interrupt(sluice, big, out, signal.SIGKILL, log=tmp_path / "killed.log")
    assert rc == -signal.SIGKILL
    wal = out / "_sluice_ledger.sqlite-wal"
    assert wal.exists(), "a killed run leaves its -wal file"
    kept = {p.name: p.read_bytes() for p in parts(out)}
    wal.unlink()
    r = run(sluice, big, out)
    assert_refused_unknown(r, out, sorted(kept), kept)
    assert_no_row_twice(out)


def test_sighup_stops_like_sigterm_and_the_rerun_goes_on(sluice, tmp_path):
    """A hangup (the terminal or ssh session of a long run closed) used to
    kill sluice with the rows in flight; it now stops as SIGINT/SIGTERM do:
    the rows in flight are finished and committed, the summary written, exit
    130, and the same command goes on exactly once."""
    src = tmp_path / "in"
    # 384 rows, about 4 s: at 96 (1 s) a loaded machine let the run finish
    # between the first part and the signal (exit 0, seen once).
    sample_copies(src, 24)
    want = expected_ids(24)
    out = tmp_path / "out"
    log = tmp_path / "hup.log"
    rc = interrupt(sluice, src, out, signal.SIGHUP, log=log)
    assert rc == 130, log.read_text()[-2000:]
    assert "run the same command again" in log.read_text()
    # ("running" stands from the start: the stop wrote the real one)
    assert json.loads((out / "_summary.json").read_text())["status"] == "stopped"
    before = part_ids(out)
    assert 0 < len(before) < len(want) and len(set(before)) == len(before)
    r = run(sluice, src, out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_exactly_once(out, want)


def test_under_nohup_a_hangup_does_not_stop_the_run(sluice, tmp_path):
    """nohup ignores SIGHUP for the run: sluice keeps it ignored."""
    src = tmp_path / "in"
    sample_copies(src, 2)
    out = tmp_path / "out"
    proc = subprocess.Popen(command(sluice, src, out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    deadline = time.monotonic() + 300
    while not parts(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before the hangup"
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    assert_exactly_once(out, expected_ids(2))


def test_a_console_whose_reader_ended_does_not_kill_the_run(sluice, tmp_path):
    """`sluice ... | tee log` with tee gone: SIGPIPE used to kill the run at
    its next line of output, losing the rows in flight. It is ignored: the
    run goes on to the end, its rows and summary written once."""
    src = tmp_path / "in"
    sample_copies(src, 2)
    out = tmp_path / "out"
    proc = subprocess.Popen(command(sluice, src, out, "--progress-every", "0.5"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the readers end before sluice prints anything
    proc.stderr.close()
    rc = proc.wait(timeout=600)
    assert rc == 0, f"exit {rc} (-13: killed by SIGPIPE)"
    assert_exactly_once(out, expected_ids(2))
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows"]["total"] == len(expected_ids(2))


def test_an_output_on_a_read_only_file_system_says_so(sluice, tmp_path):
    """The ledger's open on a read-only file system was reported as "No such
    file or directory" (a new ledger: SQLite's read-only retry's errno) or
    "Bad file descriptor" (an existing one, opened read-only and failing at
    the lock). Both now name the cause. And it exited 1, as a run that
    failed, though the command must change before any run can: now 2, a
    configuration error, as is a file on the path where a folder must be.
    Needs root to mount a tmpfs (a read-only mount refuses root too)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.strip()}")
    try:
        src = tmp_path / "in"
        sample_copies(src, 1)
        done = disk / "done"
        r = run(sluice, src, done, "--dry-run")
        assert r.returncode == 0, r.stderr[-2000:]
        (disk / "empty").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        for out in (disk / "empty", done, disk / "new" / "deeper"):
            r = run(sluice, src, out, "--dry-run")
            assert r.returncode == 2, r.stderr[-2000:]
            assert "Read-only file system" in r.stderr and str(out) in r.stderr, r.stderr[-2000:]
            assert "choose another -o, or make it writable" in r.stderr, r.stderr[-2000:]
            assert "No such file" not in r.stderr and "Bad file descriptor" not in r.stderr
        (tmp_path / "a-file").write_text("not a folder")
        out = tmp_path / "a-file" / "out"
        r = run(sluice, src, out, "--dry-run")
        assert r.returncode == 2, r.stderr[-2000:]
        assert (f"output folder '{out}' cannot be written (cannot create folder "
                f"'{out}': Not a directory)") in r.stderr, r.stderr[-2000:]
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_line_over_max_line_bytes_is_one_row_after_the_limit_is_raised(sluice, tmp_path):
    """A manifest line past --max-line-bytes fails under its line's id
    (m.jsonl:2): its own `id` was never read. Run again with a larger
    limit, the line parses and names itself `b`; it was written twice (the
    failed m.jsonl:2 and a new b) before the source told the ledger which
    line a row came from. Now the plain rerun counts it as done (a failed
    row is done), and --retry-failed replaces the failed row with the
    answered one: one row for the line either way."""
    src = tmp_path / "in"
    src.mkdir()
    img = sorted(SAMPLES.glob("*.jpg"))[0]
    rows = [{"id": "a", "image": str(img)}, {"id": "b", "image": str(img), "pad": "x" * (1 << 20)},
            {"id": "c", "image": str(img)}]
    (src / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    r = run(sluice, src / "m.jsonl", out, "--max-line-bytes", "1M")
    assert r.returncode == 3, r.stderr[-3000:]
    assert sorted(part_ids(out)) == ["a", "c", "m.jsonl:2"]
    r = run(sluice, src / "m.jsonl", out, "--max-line-bytes", "4M")
    # exit 3: the output still holds the failed row
    assert r.returncode == 3 and "3 inputs were already done" in r.stderr, r.stderr[-3000:]
    assert sorted(part_ids(out)) == ["a", "c", "m.jsonl:2"]
    r = run(sluice, src / "m.jsonl", out, "--max-line-bytes", "4M", "--retry-failed")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(part_ids(out)) == ["a", "b", "c"]
    for part in parts(out):
        for line in part.read_text(encoding="utf-8").splitlines():
            assert json.loads(line)["error"] is None, line


def test_a_resume_with_a_lower_max_line_bytes_is_refused(sluice, tmp_path):
    """A line answered under a larger limit would fail under a smaller one
    before its `id` is read, as m.jsonl:2, which is not done: a second row
    for the line. So a rerun with a lower limit stops (exit 2, naming both
    limits) before it writes anything, whether the limit is given or the
    default; the same limit, or a higher one, goes on."""
    src = tmp_path / "in"
    src.mkdir()
    img = sorted(SAMPLES.glob("*.jpg"))[0]
    rows = [{"id": "a", "image": str(img)}, {"id": "b", "image": str(img), "pad": "x" * (1 << 20)}]
    (src / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    r = run(sluice, src / "m.jsonl", out, "--max-line-bytes", "4M")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(part_ids(out)) == ["a", "b"]
    for lower in (("--max-line-bytes", "2M"), ()):
        r = run(sluice, src / "m.jsonl", out, *lower)
        limit = 2 << 20 if lower else 1 << 20
        assert r.returncode == 2, r.stderr[-3000:]
        assert (f"output folder '{out}' was written with --max-line-bytes {4 << 20}, and this "
                f"run's limit is {limit}") in r.stderr, r.stderr[-3000:]
        assert f"pass --max-line-bytes {4 << 20} or more" in r.stderr, r.stderr[-3000:]
        assert sorted(part_ids(out)) == ["a", "b"]
    for same_or_more in ("4M", "8M"):
        r = run(sluice, src / "m.jsonl", out, "--max-line-bytes", same_or_more)
        assert r.returncode == 0 and "2 inputs were already done" in r.stderr, r.stderr[-3000:]
    # the folder now keeps 8M: 4M is lower
    r = run(sluice, src / "m.jsonl", out, "--max-line-bytes", "4M")
    assert r.returncode == 2 and f"written with --max-line-bytes {8 << 20}" in r.stderr, r.stderr[-3000:]
    assert sorted(part_ids(out)) == ["a", "b"]


def model_copies(tmp_path: pathlib.Path) -> pathlib.Path:
    """The tiny model and projector copied into tmp_path/models, to be
    changed in place."""
    models = tmp_path / "models"
    models.mkdir()
    for name in ("model.gguf", "mmproj.gguf"):
        shutil.copyfile(TINY / name, models / name)
    return models


def caption_with(sluice, src, out, models, *extra):
    return subprocess.run([str(sluice.binary), "caption", str(src), "-o", str(out),
                           "--model", str(models / "model.gguf"),
                           "--mmproj", str(models / "mmproj.gguf"), *ARGS, *extra],
                          capture_output=True, text=True, timeout=900)


def test_a_model_file_changed_at_its_path_is_refused_on_resume(sluice, tmp_path):
    """The fingerprint holds the model's path: weights replaced at that path
    (trained again, another quantization under the same name) resumed in
    silence, one dataset answered by two models (eval18's finding). The
    file's size and first and last MiB are recorded beside it; a resume
    over another file is refused before the model loads, one over the same
    file goes on, and a folder that recorded none (an older sluice) takes
    the file it now finds."""
    import sqlite3
    models = model_copies(tmp_path)
    src = tmp_path / "in"
    sample_copies(src, 1)
    out = tmp_path / "out"

    def caption(*extra):
        return caption_with(sluice, src, out, models, *extra)

    def flip(path, at):
        data = bytearray(path.read_bytes())
        data[at] ^= 0x01
        path.write_bytes(bytes(data))

    # --limit N: N inputs more each run
    assert caption("--limit", "1").returncode == 0
    assert caption("--limit", "1").returncode == 0, "the same files resume"
    # A weight in the model's last tensor (its last byte): the file loads
    # as well, the answers change.
    flip(models / "model.gguf", -1)
    r = caption("--limit", "1")
    assert r.returncode == 2, r.stderr[-2000:]
    assert (f"output folder '{out}' holds rows answered by another model file than "
            f"'{models / 'model.gguf'}' is now") in r.stderr, r.stderr[-2000:]
    assert "the file changed at that path" in r.stderr, r.stderr[-2000:]
    assert len(part_ids(out)) == 2
    flip(models / "model.gguf", -1)
    # The projector is the other file told apart.
    flip(models / "mmproj.gguf", -1)
    r = caption("--limit", "1")
    assert r.returncode == 2 and "another mmproj file" in r.stderr, r.stderr[-2000:]
    # A folder whose ledger recorded no files goes on and records them.
    with sqlite3.connect(out / "_sluice_ledger.sqlite") as db:
        db.execute("delete from meta where key = 'model_files'")
    db.close()
    r = caption("--limit", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(part_ids(out)) == 3
    flip(models / "mmproj.gguf", -1)
    assert caption().returncode == 2


def test_a_model_path_that_is_no_file_is_refused_naming_its_flag(sluice, tmp_path):
    """A folder or a FIFO passes the engine's access() check; the model-file
    check is the first to open it, and refused it as "only regular files
    are read as inputs", naming neither --model nor --mmproj."""
    models = model_copies(tmp_path)
    src = tmp_path / "in"
    sample_copies(src, 1)
    folder = tmp_path / "a-folder"
    folder.mkdir()
    fifo = tmp_path / "a-fifo"
    os.mkfifo(fifo)
    cases = [(folder, models / "mmproj.gguf", f"--model '{folder}' is a folder, not a GGUF file"),
             (fifo, models / "mmproj.gguf", f"--model '{fifo}' is a FIFO (named pipe), not a GGUF"),
             (models / "model.gguf", fifo, f"--mmproj '{fifo}' is a FIFO (named pipe), not a GGUF")]
    for i, (model, mmproj, want) in enumerate(cases):
        r = subprocess.run([str(sluice.binary), "caption", str(src), "-o", str(tmp_path / f"out{i}"),
                            "--model", str(model), "--mmproj", str(mmproj), *ARGS],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, r.stderr[-2000:]
        assert want in r.stderr, r.stderr[-2000:]
        assert "read as inputs" not in r.stderr, r.stderr[-2000:]

def test_a_retry_refused_for_another_model_file_leaves_the_parts_as_they_were(sluice, tmp_path):
    """--retry-failed takes the failed rows out of their parts before the
    run captions them again; the model-file check came after it, so a run
    refused for another model file had already rewritten the part (its
    failed row gone from the file, exit 2 all the same). Refused first,
    the output is byte for byte what it was."""
    models = model_copies(tmp_path)
    src = tmp_path / "in"
    sample_copies(src, 1)
    (src / "broken.jpg").write_bytes(b"not a JPEG")  # one row that fails
    out = tmp_path / "out"

    def caption(*extra):
        return caption_with(sluice, src, out, models, *extra)

    r = caption()
    assert r.returncode == 3, r.stderr[-2000:]
    parts = sorted(out.glob("part-*.jsonl"))
    before = {p.name: p.read_bytes() for p in parts}
    rows = [json.loads(line) for p in parts for line in p.read_text().splitlines()]
    assert sum(1 for row in rows if row.get("error")) == 1
    data = bytearray((models / "model.gguf").read_bytes())
    data[-1] ^= 0x01
    (models / "model.gguf").write_bytes(bytes(data))
    r = caption("--retry-failed")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "another model file" in r.stderr, r.stderr[-2000:]
    after = {p.name: p.read_bytes() for p in sorted(out.glob("part-*.jsonl"))}
    assert after == before
