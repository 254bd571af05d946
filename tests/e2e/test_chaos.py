"""Resume under chaos (docs/output.md "Resume"): the two-phase part commit of
src/ledger/ against SIGKILL at random moments, a full disk and I/O errors.

- Kills: a job is killed with SIGKILL again and again, rerun each time with
  the same command, and must end with every input in exactly one committed
  part, the captions of an uninterrupted run (--parallel 1 is bit-identical
  run to run: docs/engine.md), and a ledger that PRAGMA integrity_check
  finds sound. Some kills come at random times; the others land inside a
  part commit on purpose: the test fault hook (src/core/fault.h,
  SLUICE_TEST_FAULTS) pauses one commit at a chosen step and the kill comes
  during the pause. Every run traces the commit steps it reaches, so each
  kill is classified by the last step before it, and the tally is printed.
  The schedule is drawn from a seed, printed; SLUICE_CHAOS_SEED=N replays it.
  A short version (3 kills) runs with the e2e suite; the full one (20 kills,
  2,000 images) only with SLUICE_CHAOS=1 (`make chaos`).
- A full disk: the output on a small tmpfs (mounting needs root; skipped
  otherwise) with a filler file; the job stops with exit 1 and "No space
  left on device" naming the file; with the filler removed the same command
  completes, every input once.
- I/O errors from the fault hook: a failed fsync (file or folder), rename,
  write or ledger record stops the job with exit 1 and a message naming the
  file and the cause; the rerun completes, every input once.
"""
import json
import math
import os
import pathlib
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from collections import Counter

import pytest

from conftest import SAMPLES, TINY, sample_copies, sample_images

ARGS = ("--max-tokens", "8", "--parallel", "1", "--temperature", "0", "--metrics-addr", "off",
        "--show", "0")
SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "runtime error:")

# Where a killed run was, by the last step it traced (src/job/caption.c
# commit_shard, src/io/shard.c sl_shard_publish, src/ledger/ledger.c);
# "commit.end", "ledger.reconciled", "ledger.add" and no step at all mean
# outside a commit.
PHASES = {
    "ledger.reconcile": "starting: the ledger's reconcile not yet durable",
    "commit.begin": "writing and syncing the part file",
    "commit.after_sync": "part synced, its rows not yet durable in the ledger",
    "commit.after_prepare": "part pending in the ledger, not renamed",
    "commit.after_rename": "part renamed, folder not synced",
    "commit.after_dir_sync": "part renamed and synced, not marked committed",
}
OUTSIDE = "outside a commit (starting, captioning, writing rows)"
TARGETS = ("commit.after_prepare", "commit.after_rename", "commit.after_sync",
           "commit.after_dir_sync", "commit.begin", "ledger.reconcile")
# A commit paused on purpose waits this long: the kill comes during the pause
# (after a random delay of at most KILL_DELAY_S), so a long pause costs
# nothing and leaves room for a slow, loaded machine.
PAUSE_MS = 20000
KILL_DELAY_S = 0.4
STEP_RE = re.compile(r"test fault point ((?:commit|ledger)\.\w+) ")


def expected_ids(copies: int) -> list[str]:
    return sorted(f"c{i:03d}/{p.relative_to(SAMPLES)}" for i in range(copies) for p in sample_images())


def command(sluice, src, out, *extra) -> list[str]:
    return [str(sluice.binary), "caption", str(src), "-o", str(out), "--model", str(TINY / "model.gguf"),
            "--mmproj", str(TINY / "mmproj.gguf"), *ARGS, *map(str, extra)]


def run(sluice, src, out, *extra, faults=None, timeout=900) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("SLUICE_TEST_FAULTS", None)
    if faults:
        env["SLUICE_TEST_FAULTS"] = faults
    return subprocess.run(command(sluice, src, out, *extra), capture_output=True, text=True,
                          timeout=timeout, env=env)


def committed_rows(out: pathlib.Path) -> list[dict]:
    """Every row of every committed part file, each parsed whole: a part cut
    short fails here."""
    rows = []
    for part in sorted(out.glob("part-*")):
        if part.suffix == ".parquet":
            import pyarrow.parquet as pq
            rows += [dict(r, _part=part.name) for r in pq.read_table(part).to_pylist()]
            continue
        text = part.read_text(encoding="utf-8")
        assert text == "" or text.endswith("\n"), f"{part.name} ends inside a row"
        for n, line in enumerate(text.splitlines(), 1):
            try:
                rows.append(dict(json.loads(line), _part=part.name))
            except json.JSONDecodeError:
                raise AssertionError(f"{part.name} line {n} is not a whole row: {line[:120]!r}")
    return rows


def assert_sound(out: pathlib.Path, want: list[str]) -> list[dict]:
    """The committed parts hold each row at most once, and only inputs."""
    rows = committed_rows(out)
    ids = [r["id"] for r in rows]
    dupes = [i for i, n in Counter(ids).items() if n > 1]
    assert not dupes, f"written twice: {dupes[:5]}"
    assert set(ids) <= set(want), f"unknown ids: {sorted(set(ids) - set(want))[:5]}"
    return rows


def assert_exactly_once(out: pathlib.Path, want: list[str]) -> list[dict]:
    rows = assert_sound(out, want)
    missing = sorted(set(want) - {r["id"] for r in rows})
    assert not missing, f"{len(missing)} inputs missing, e.g. {missing[:5]}"
    assert not list(out.glob(".part-*.tmp-*")), "a temporary part file was left behind"
    return rows


def assert_ledger_matches(out: pathlib.Path, rows: list[dict]):
    """PRAGMA integrity_check is ok, every part is committed, and the ledger
    maps each id to the part file that holds it."""
    db = sqlite3.connect(f"file:{out / '_sluice_ledger.sqlite'}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        parts = {number: (name, state, n)
                 for number, name, state, n in db.execute("SELECT number, name, state, rows FROM parts")}
        ledger = dict(db.execute("SELECT id, part FROM rows"))
    finally:
        db.close()
    files = Counter(r["_part"] for r in rows)
    assert {name for name, _, _ in parts.values()} == set(files), "ledger parts != part files"
    assert all(state == 1 for _, state, _ in parts.values()), "a part left pending"
    assert all(files[name] == n for name, _, n in parts.values()), "a part's row count differs"
    assert {i: parts[p][0] for i, p in ledger.items()} == {r["id"]: r["_part"] for r in rows}


def committed_in_ledger(out: pathlib.Path) -> int:
    """Rows of the parts the ledger marks committed (read after a run ended)."""
    db = sqlite3.connect(f"file:{out / '_sluice_ledger.sqlite'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT coalesce(sum(rows), 0) FROM parts WHERE state = 1").fetchone()[0]
    finally:
        db.close()


def assert_stopped_soundly(r: subprocess.CompletedProcess, out: pathlib.Path, want: list[str]):
    """After a run that stopped on an error: every part file is whole (one
    renamed before a failed folder sync is still pending, and the rerun
    commits it), no temporary is left, and the count the CLI gives is what
    the committed parts hold."""
    assert_sound(out, want)
    assert not list(out.glob(".part-*.tmp-*")), "a temporary part file was left behind"
    m = re.search(r"sluice: (\d+) rows? written", r.stderr)
    if m:
        assert int(m.group(1)) == committed_in_ledger(out), r.stderr[-2000:]


def no_sanitizer_report(text: str):
    assert not any(m in text for m in SANITIZER_MARKS), text[-3000:]


# --- kills ---------------------------------------------------------------------------


def where_killed(log: str) -> str:
    steps = STEP_RE.findall(log)
    return PHASES.get(steps[-1], OUTSIDE) if steps else OUTSIDE


def run_and_kill(cmd, out, faults, log_path, *, at=None, max_parts=None, step_paused=False,
                 delay=0.0):
    """Starts cmd with SLUICE_TEST_FAULTS=faults and SIGKILLs it `at` seconds
    after the start (or sooner, once it has committed `max_parts` parts), or
    `delay` seconds into the first pause the faults make. Returns the exit
    status (-9 when killed; else it ended first) and the seconds it ran."""
    env = dict(os.environ, SLUICE_TEST_FAULTS=faults)
    parts_before = len(list(out.glob("part-*")))
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
    start = time.monotonic()
    while proc.poll() is None:
        if time.monotonic() - start > 600:
            proc.kill()
            raise AssertionError(f"attempt hung: {log_path.read_text()[-2000:]}")
        if at is not None and time.monotonic() - start >= at:
            break
        if max_parts is not None and len(list(out.glob("part-*"))) - parts_before >= max_parts:
            break
        if step_paused and ": sleeping " in log_path.read_text(errors="replace"):
            time.sleep(delay)
            break
        time.sleep(0.005)
    if proc.poll() is None:
        proc.kill()
    return proc.wait(), time.monotonic() - start


def chaos(sluice, tmp_path, *, copies, kills, shard_rows, seed):
    src = tmp_path / "in"
    n = sample_copies(src, copies)
    want = expected_ids(copies)
    extra = ("--shard-rows", shard_rows)
    print(f"\nchaos: {n} images, {kills} kills, --shard-rows {shard_rows}, seed {seed} "
          f"(SLUICE_CHAOS_SEED={seed} replays the schedule)")

    # The uninterrupted run the result must equal, and the speed to time kills by.
    t0 = time.monotonic()
    r = run(sluice, src, tmp_path / "ref", *extra)
    rate = n / (time.monotonic() - t0)
    assert r.returncode == 0, r.stderr[-3000:]
    reference = {row["id"]: row for row in assert_exactly_once(tmp_path / "ref", want)}

    rng = random.Random(seed)
    n_targeted = max(2, round(kills * 0.6))
    plan = [TARGETS[i % len(TARGETS)] for i in range(n_targeted)] + ["time"] * (kills - n_targeted)
    plan = plan[:kills]
    rng.shuffle(plan)

    out = tmp_path / "out"
    cmd = command(sluice, src, out, *extra)
    tally = Counter()
    for i, target in enumerate(plan):
        done = len(assert_sound(out, want)) if out.exists() else 0
        left = n - done
        commits_left = math.ceil(left / shard_rows)
        share = left / (kills - i + 1)  # rows this attempt should get through, on average
        log = tmp_path / f"kill-{i + 1:02d}.log"
        if target == "time":
            # A random moment, but no later than the attempt's share of the
            # work (the machine's speed varies); the last commit waits, so
            # the job cannot end before the kill.
            at = rng.uniform(0.05, max(0.1, 1.8 * share / rate))
            faults = f"trace,commit.begin=sleep:600000@{commits_left}"
            rc, ran = run_and_kill(cmd, out, faults, log, at=at,
                                   max_parts=max(1, math.ceil(1.8 * share / shard_rows)))
            how = f"at {ran:.2f} s"
        else:
            k = min(commits_left, max(1, round(rng.uniform(0.2, 1.8) * share / shard_rows)))
            if target == "ledger.reconcile":
                k = 1  # once a run, at its start
            delay = rng.uniform(0.0, KILL_DELAY_S)
            faults = f"trace,{target}=sleep:{PAUSE_MS}@{k}"
            how = f"at {target}" if k == 1 and target.startswith("ledger") else \
                f"in commit {k} at {target}"
            how += f" (+{delay:.2f} s)"
            rc, _ = run_and_kill(cmd, out, faults, log, step_paused=True, delay=delay)
        text = log.read_text(errors="replace")
        assert rc == -9, f"kill {i + 1} ({how}): the run ended first with {rc}: {text[-2000:]}"
        no_sanitizer_report(text)
        where = where_killed(text)
        if target != "time":
            assert where == PHASES[target], f"kill {i + 1} ({how}) landed elsewhere: {where}"
        tally[where] += 1
        rows = assert_sound(out, want) if out.exists() else []
        print(f"  kill {i + 1:2d} {how:44s} -> {where}; {len(rows)} of {n} rows in part files")

    r = run(sluice, src, out, *extra)
    assert r.returncode == 0, r.stderr[-3000:]
    no_sanitizer_report(r.stderr)
    rows = assert_exactly_once(out, want)
    assert_ledger_matches(out, rows)
    fields = ("caption", "finish_reason", "prompt_tokens", "generated_tokens", "width", "height",
              "seed", "error")
    differ = [row["id"] for row in rows
              if any(row[f] != reference[row["id"]][f] for f in fields)]
    assert not differ, f"{len(differ)} rows differ from the uninterrupted run, e.g. {differ[:3]}"

    inside = sum(c for w, c in tally.items() if w not in (OUTSIDE, PHASES["ledger.reconcile"]))
    print(f"chaos: {kills} kills (seed {seed}), {inside} inside a part commit:")
    for where in (OUTSIDE, *PHASES.values()):
        print(f"  {tally[where]:3d}  {where}")
    assert sum(tally.values()) == kills
    assert inside >= sum(t.startswith("commit.") for t in plan)


def chaos_seed(default: int) -> int:
    return int(os.environ.get("SLUICE_CHAOS_SEED", default))


def test_kills_short(sluice, tmp_path):
    """3 kills (a part pending before its rename, one renamed but not
    committed, one at a random moment) on 64 images: part of make test."""
    chaos(sluice, tmp_path, copies=4, kills=3, shard_rows=4, seed=chaos_seed(11))


@pytest.mark.skipif(os.environ.get("SLUICE_CHAOS") != "1",
                    reason="the full chaos test (20 kills, 2,000 images, minutes): make chaos, "
                           "or SLUICE_CHAOS=1")
def test_kills_full(sluice, tmp_path):
    chaos(sluice, tmp_path, copies=125, kills=20, shard_rows=10,
          seed=chaos_seed(int(time.time()) % 100000))


# --- a full disk ---------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) mounts a tmpfs of `size` at tmp_path/disk and returns it;
    unmounted at the end. Skips when mounting is not permitted."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = []

    def mount(size: str) -> pathlib.Path:
        if not shutil.which("mount"):
            pytest.skip("no mount command: the full-disk test needs one (and root)")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs for the full-disk test (needs root, CAP_SYS_ADMIN): "
                        f"{r.stderr.strip()}")
        mounted.append(disk)
        return disk

    yield mount
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def fill(disk: pathlib.Path, leave: int) -> pathlib.Path:
    """A file that takes all of disk's free space but `leave` bytes."""
    st = os.statvfs(disk)
    size = st.f_bavail * st.f_frsize - leave
    filler = disk / "filler"
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb") as f:
        while size > 0:
            size -= f.write(chunk[:min(size, len(chunk))])
    return filler


@pytest.mark.parametrize("copies, size, leave, extra", [
    (6, "1m", 64 << 10, ("--shard-rows", "20")),        # small parts: the ledger tends to fill first
    (6, "1m", 64 << 10, ("--shard-rows", "1000")),      # one part: its file fills first
    (2, "4m", 1 << 20, ("--format", "parquet", "--include-image-bytes", "--shard-rows", "1000")),
], ids=["jsonl-small-parts", "jsonl-one-part", "parquet"])
def test_full_disk_stops_then_the_same_command_completes(sluice, tmp_path, small_disk, copies, size,
                                                         leave, extra):
    if "parquet" in extra:
        pytest.importorskip("pyarrow.parquet")
    src = tmp_path / "in"
    sample_copies(src, copies)
    want = expected_ids(copies)
    disk = small_disk(size)
    out = disk / "out"
    filler = fill(disk, leave)

    r = run(sluice, src, out, *extra)
    assert r.returncode == 1, r.stderr[-3000:]
    no_sanitizer_report(r.stderr)
    error = r.stderr.strip().splitlines()
    named = [line for line in error if line.startswith("sluice: ") and "warn:" not in line
             and "No space left on device" in line and str(out) in line]
    assert named, f"no line names a file in {out} and the cause: {r.stderr[-3000:]}"
    print(f"\nfull disk: {named[-1]}")
    # The final metrics are written whole or not at all (a temporary and a
    # rename): a truncated file would end inside its last family.
    metrics = out / "_metrics.prom"
    assert not (out / "_metrics.prom.tmp").exists()
    if metrics.exists():
        text = metrics.read_text()
        assert text.endswith("\n") and "vllm:time_to_first_token_seconds_count" in text, text[-300:]
    filler.unlink()  # first: reading the ledger needs room for its index
    assert_stopped_soundly(r, out, want)

    r = run(sluice, src, out, *extra)
    assert r.returncode == 0, r.stderr[-3000:]
    no_sanitizer_report(r.stderr)
    assert_exactly_once(out, want)


# --- I/O errors ----------------------------------------------------------------------

# (faults, extra options, what the message says). With --shard-rows 10 the
# syncs are: part 0's file (1), the folder after its rename (2), part 1's
# file (3), ...; a JSONL part is written out at 64 KiB and when committed.
IO_FAULTS = [
    ("fsync=eio@1", ("--shard-rows", "10"), "cannot sync '"),
    ("fsync=eio@2", ("--shard-rows", "10"), "cannot sync folder '"),
    ("fsync=eio@3", ("--shard-rows", "10"), "cannot sync '"),
    ("rename=eio@2", ("--shard-rows", "10"), "cannot rename '"),
    ("write=enospc@1", ("--shard-rows", "1000"), "cannot write '"),
    ("ledger.add=eio@15", ("--shard-rows", "10"), "cannot record a row"),
    ("fsync=eio@3", ("--shard-rows", "10", "--format", "parquet"), "cannot sync '"),
]


@pytest.mark.parametrize("faults, extra, says", IO_FAULTS,
                         ids=[f"{f}{'-parquet' if 'parquet' in e else ''}" for f, e, _ in IO_FAULTS])
def test_io_error_stops_then_the_same_command_completes(sluice, tmp_path, faults, extra, says):
    if "parquet" in extra:
        pytest.importorskip("pyarrow.parquet")
    copies = 8 if faults.startswith("write") else 2  # the write: a part past 64 KiB
    src = tmp_path / "in"
    sample_copies(src, copies)
    want = expected_ids(copies)
    out = tmp_path / "out"

    r = run(sluice, src, out, *extra, faults=faults)
    assert r.returncode == 1, r.stderr[-3000:]
    no_sanitizer_report(r.stderr)
    cause = "No space left on device" if "enospc" in faults else "Input/output error"
    lines = [line for line in r.stderr.splitlines() if line.startswith("sluice: ") and says in line
             and cause in line and str(out) in line and "warn:" not in line]
    assert lines, r.stderr[-3000:]
    assert_stopped_soundly(r, out, want)

    r = run(sluice, src, out, *extra)
    assert r.returncode == 0, r.stderr[-3000:]
    no_sanitizer_report(r.stderr)
    rows = assert_exactly_once(out, want)
    assert_ledger_matches(out, rows)


def test_stopped_run_whose_last_commit_fails_says_so(sluice, tmp_path):
    """Ctrl-C commits the rows finished; when that commit fails the run must
    not exit as merely stopped (130, 'run the same command again') but as
    failed (1), with the cause."""
    src = tmp_path / "in"
    sample_copies(src, 2)
    want = expected_ids(2)
    out = tmp_path / "out"
    log = tmp_path / "stopped.log"
    env = dict(os.environ, SLUICE_TEST_FAULTS="trace,fsync=eio@1")
    with open(log, "w") as err:
        proc = subprocess.Popen(command(sluice, src, out, "--shard-rows", "1000"),
                                stdout=subprocess.DEVNULL, stderr=err, env=env)
        # The stop once a row is recorded (its ledger.add), so that there
        # is a row to commit: a stop before any row is read commits nothing
        # and exits 130 (0.5 s after ledger.reconciled stood in for it).
        deadline = time.monotonic() + 300
        while "test fault point ledger.add" not in log.read_text() and \
                time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=300)
    text = log.read_text()
    no_sanitizer_report(text)
    assert "stop requested" in text, text[-3000:]
    assert rc == 1, text[-3000:]
    assert any(line.startswith("sluice: ") and "warn:" not in line and "cannot sync '" in line
               and "Input/output error" in line for line in text.splitlines()), text[-3000:]
    assert not list(out.glob("part-*")) and not list(out.glob(".part-*.tmp-*"))

    r = run(sluice, src, out, "--shard-rows", "1000")
    assert r.returncode == 0, r.stderr[-3000:]
    assert_exactly_once(out, want)


@pytest.mark.parametrize("faults", ["fsync=eio@1", "rename=eio@1"])
def test_a_run_whose_last_commit_fails_does_not_report_ok(sluice, tmp_path, faults):
    """The part committed as the run ends (one part: --shard-rows past the
    input) fails to sync or rename: the run exits 1 with the cause and
    commits nothing. Its _summary.json said "status": "ok" all the same (and
    _report.html nothing of an early end), so a pipeline or an operator
    reading the summary took a run that wrote no row for a finished one;
    and the message gave the cause alone, not the rows lost nor the way on."""
    src = tmp_path / "in"
    sample_copies(src, 1)
    want = expected_ids(1)
    out = tmp_path / "out"

    r = run(sluice, src, out, "--shard-rows", "1000", faults=faults)
    assert r.returncode == 1, r.stderr[-3000:]
    no_sanitizer_report(r.stderr)
    assert "Input/output error" in r.stderr, r.stderr[-3000:]
    # and what it cost, and what to do: the cause alone said neither
    assert f"the {len(want)} rows of that part are not in the output: run the same command " \
           "again once that is fixed" in r.stderr, r.stderr[-3000:]
    assert not list(out.glob("part-*"))
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["status"] == "io", summary["status"]
    assert summary["rows"]["total"] == 0 and summary["output_files"] == []
    assert 'id="status"' in (out / "_report.html").read_text(), "the report does not say it ended early"

    r = run(sluice, src, out, "--shard-rows", "1000")
    assert r.returncode == 0, r.stderr[-3000:]
    assert_exactly_once(out, want)
    assert json.loads((out / "_summary.json").read_text())["status"] == "ok"


@pytest.mark.parametrize("faults", ["commit.after_rename=eio@1", "commit.end=eio@1"])
def test_a_last_commit_that_fails_past_the_rename_says_the_rows_are_kept(sluice, tmp_path, faults):
    """Past its rename (the folder's sync, the ledger's commit) the part is
    whole under its name and the rerun keeps it: the message said its rows
    were "not in the output" (rev18's finding), while they were, and the
    rerun wrote none again."""
    src = tmp_path / "in"
    sample_copies(src, 1)
    want = expected_ids(1)
    out = tmp_path / "out"
    r = run(sluice, src, out, "--shard-rows", "1000", faults=faults)
    assert r.returncode == 1, r.stderr[-3000:]
    part = out / "part-00000.jsonl"
    assert f"the {len(want)} rows of that part are in '{part}' but not committed: run the same " \
           "command again once that is fixed (it keeps them)" in r.stderr, r.stderr[-3000:]
    assert "not in the output" not in r.stderr
    assert sorted(json.loads(line)["id"] for line in part.read_text().splitlines()) == want
    r = run(sluice, src, out, "--shard-rows", "1000")
    assert r.returncode == 0 and "already done" in r.stdout, r.stdout + r.stderr[-3000:]
    assert_exactly_once(out, want)
