"""One job over the ranks of mpirun (issue 16; docs/deploy.md, "MPI"): rank 0
hands out the input shards as ranks ask, holds the one ledger and writes the
one summary. Run with Open MPI on this machine (--oversubscribe: more ranks
than cores). Each check would fail if a shard were read by two ranks or by
none, if a part were recorded without its rows, or if a rerun after a rank
was killed wrote a row twice or lost one."""
import contextlib
import glob
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import time

import pytest

from conftest import TINY, sample_copies, sanitized

MPIRUN = shutil.which("mpirun")


def mpi_built(sluice_bin) -> bool:
    out = subprocess.run([str(sluice_bin), "--version"], capture_output=True, text=True).stdout
    return "(MPI)" in out


@pytest.fixture
def mpi(sluice_bin):
    if not MPIRUN or not mpi_built(sluice_bin):
        pytest.skip("sluice built without MPI, or no mpirun")
    return sluice_bin


def mpi_env() -> dict:
    env = dict(os.environ)
    # Open MPI leaks by design at exit; ASan's leak report would fail every rank.
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
    return env


def mpirun_args(n: int) -> list[str]:
    return [MPIRUN, "--allow-run-as-root", "--oversubscribe", "-n", str(n),
            "--mca", "btl", "self,vader,tcp"]


# Greedy captions equal across processes need --parallel 1: with more
# sequences the batch composition follows timing, and llama.cpp's batched sums
# can flip a near-tie (seen once in CI: one row of 128 differed).
ALONE = ("--parallel", "1")


def caption_args(sluice_bin, inputs, out, *extra) -> list[str]:
    return [str(sluice_bin), "caption", str(inputs), "-o", str(out),
            "--model", str(TINY / "model.gguf"), "--mmproj", str(TINY / "mmproj.gguf"),
            "--threads", "1", "--cpu-poll", "0", "--decode-workers", "1",
            "--metrics-addr", "off", "--show", "0", *map(str, extra)]


def rows_by_id(out: pathlib.Path) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for part in sorted(glob.glob(str(out / "part-*.jsonl"))):
        for line in pathlib.Path(part).read_text().splitlines():
            row = json.loads(line)
            row["_part"] = pathlib.Path(part).name
            rows.setdefault(row["id"], []).append(row)
    return rows


def expected_ids(root: pathlib.Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mpi_inputs")
    # More rows than one rank's queues hold, so that ranks starting later
    # still find shards left.
    n = sample_copies(root, 8)
    assert n >= 120
    return root


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, inputs, sluice_bin):
    """The same job in one process: the captions MPI must reproduce."""
    out = tmp_path_factory.mktemp("mpi_one") / "out"
    r = subprocess.run(caption_args(sluice_bin, inputs, out, *ALONE), capture_output=True,
                       text=True, timeout=900, env=mpi_env())
    assert r.returncode == 0, r.stderr[-2000:]
    return {k: v[0]["caption"] for k, v in rows_by_id(out).items()}


def test_parquet_output_of_a_manifest_loses_no_shard(mpi, inputs, tmp_path):
    """A Parquet output samples the first rows for its column types before
    the run: that look must read the whole input, not ask rank 0 for shards
    (a shard it was handed would then be skipped by the rank's run: rows
    lost), and every rank must see the same rows (one type per column).
    A column first seen after the sampled rows is counted in _summary.json's
    unfit_values over every rank's parts, not rank 0's alone."""
    import pyarrow.parquet as pq
    files = sorted(expected_ids(inputs))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"image": str(inputs / f), "k": i, "tag": f[:4],
                                            **({"late": "x"} if i >= 100 else {})}) + "\n"
                                for i, f in enumerate(files)))
    out = tmp_path / "out"
    r = subprocess.run(mpirun_args(3) + caption_args(mpi, manifest, out, "--input-shard-size", "2",
                                                     "--shard-rows", "7", "--format", "parquet",
                                                     "--max-tokens", "2"),
                       capture_output=True, text=True, timeout=900, env=mpi_env())
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    ks = []
    schemas = set()
    for part in sorted(out.glob("part-*.parquet")):
        t = pq.read_table(part)
        ks += t.column("k").to_pylist()
        schemas.add(str(t.schema.remove_metadata()))
    assert sorted(ks) == list(range(len(files)))
    assert len(schemas) == 1, schemas
    # The job's first and last parts by number, whichever ranks wrote them
    # (the line said only "N part files": rank 0's own interleave).
    parts = sorted(p.name for p in out.glob("part-*.parquet"))
    assert len(parts) > 2, parts
    assert f"output: {out} ({len(parts)} part files: {parts[0]} to {parts[-1]})" in r.stdout, \
        r.stdout[-2000:]
    late = json.loads((out / "_summary.json").read_text())["unfit_values"]["late"]
    assert late["rows"] == len(files) - 100, late
    assert late["first_id"] in {f"m.jsonl:{i + 1}" for i in range(100, len(files))}, late
    assert "first seen after" in late["why"], late


def test_the_answers_of_every_rank_are_counted(mpi, inputs, tmp_path):
    """With --choices, _summary.json's answers (and the console's line) count
    the rows of every rank: rank 0 sums what each part's commit carried. So
    do its answers_dropped, the choices of the rows a stage dropped (here
    those whose id's bytes sum to an odd number)."""
    out = tmp_path / "out"
    stage = tmp_path / "drop_odd.lua"
    stage.write_text("function process(row)\n"
                     "  local s = 0\n"
                     "  for i = 1, #row.id do s = s + row.id:byte(i) end\n"
                     "  if s % 2 == 1 then return nil end\n"
                     "  return row\n"
                     "end\n")
    r = subprocess.run(mpirun_args(3) + caption_args(mpi, inputs, out, "--input-shard-size", "4",
                                                     "--shard-rows", "6", "--choices",
                                                     "yes,no,maybe", "--stage",
                                                     json.dumps({"lua": str(stage),
                                                                 "after": "engine"})),
                       capture_output=True, text=True, timeout=900, env=mpi_env())
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = [v[0] for v in rows_by_id(out).values()]
    kept = {i for i in expected_ids(inputs) if sum(i.encode()) % 2 == 0}
    dropped = len(expected_ids(inputs)) - len(kept)
    assert {row["id"] for row in rows} == kept and dropped > 0
    assert len({row["_part"] for row in rows}) > 3  # parts of several ranks
    taken = {c: sum(row["caption"] == c for row in rows) for c in ("yes", "no", "maybe")}
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["answers"] == {"caption": taken}, (summary["answers"], taken)
    line = ", ".join(f"{c} {n} ({100 * n / len(rows):.0f}%)" for c, n in taken.items())
    assert f"answers: {line}\n" in r.stdout, r.stdout[-2000:]
    assert summary["rows"]["dropped"] == dropped, summary["rows"]
    assert sum(summary["answers_dropped"]["caption"].values()) == dropped, summary
    assert "answers dropped by a stage (not written): " in r.stdout, r.stdout[-2000:]


def test_the_failures_of_every_rank_are_listed(mpi, inputs, tmp_path):
    """_summary.json's failures (failed rows by stage and class) sum to its
    rows.failed under MPI too: rank 0 sums what each part's commit carried,
    as for the answers. It listed rank 0's own rows alone, so a job whose
    failed rows were another rank's said failed 12 beside failures []."""
    files = sorted(expected_ids(inputs))
    (tmp_path / "bad.jpg").write_bytes(b"not an image at all" * 20)
    lines, want = [], {}
    for i, f in enumerate(files):
        image, kind = str(inputs / f), None
        if i % 5 == 1:
            image, kind = str(tmp_path / f"missing{i}.jpg"), ("decode", "not_found")
        elif i % 5 == 3:
            image, kind = str(tmp_path / "bad.jpg"), ("decode", "decode")
        if kind:
            want[kind] = want.get(kind, 0) + 1
        lines.append(json.dumps({"id": f"r{i}", "image": image}) + "\n")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(lines))
    out = tmp_path / "out"
    r = subprocess.run(mpirun_args(2) + caption_args(mpi, manifest, out, "--dry-run",
                                                     "--input-shard-size", "5",
                                                     "--shard-rows", "5"),
                       capture_output=True, text=True, timeout=900, env=mpi_env())
    assert r.returncode == 3, r.stdout[-2000:] + r.stderr[-3000:]
    rows = [v[0] for v in rows_by_id(out).values()]
    assert len(rows) == len(files)
    # failed rows in the parts of both ranks (rank r's part numbers are r mod 2)
    assert {int(row["_part"][5:10]) % 2 for row in rows if row["error"]} == {0, 1}
    summary = json.loads((out / "_summary.json").read_text())
    got = {(f["stage"], f["class"]): f["rows"] for f in summary["failures"]}
    assert got == want, (got, want)
    assert summary["rows"]["failed"] == sum(want.values())


def test_four_ranks_read_every_input_once(mpi, inputs, one_process, tmp_path):
    out = tmp_path / "out"
    r = subprocess.run(mpirun_args(4) + caption_args(mpi, inputs, out, "--input-shard-size", "3",
                                                     "--shard-rows", "5", *ALONE),
                       capture_output=True, text=True, timeout=900, env=mpi_env())
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = rows_by_id(out)
    assert set(rows) == expected_ids(inputs)
    assert all(len(v) == 1 for v in rows.values()), [k for k, v in rows.items() if len(v) > 1]
    # Greedy captions do not depend on which rank made them.
    assert {k: v[0]["caption"] for k, v in rows.items()} == one_process
    # Parts are numbered first + rank + k * 4: more than one rank wrote.
    numbers = {int(v[0]["_part"][5:10]) for v in rows.values()}
    assert len({n % 4 for n in numbers}) >= 2, sorted(numbers)
    # One summary, for the whole job.
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows"]["total"] == len(rows)
    assert summary["rows"]["ok"] == len(rows)
    assert summary["rows"]["inputs_done"] == len(rows)  # every rank's parts counted
    # The rerun finds everything done, on any number of ranks.
    r = subprocess.run(mpirun_args(2) + caption_args(mpi, inputs, out, "--input-shard-size", "3"),
                       capture_output=True, text=True, timeout=900, env=mpi_env())
    assert r.returncode == 0, r.stderr[-3000:]
    assert rows_by_id(out).keys() == rows.keys()
    assert all(len(v) == 1 for v in rows_by_id(out).values())


def test_a_settings_warning_is_printed_by_rank_0_alone(mpi, tmp_path):
    """The settings are checked by every rank before MPI starts: a warning
    about them (here --max-tokens with --choices, which it does not apply
    to) came out once per rank, 4 ranks 4 copies. Rank 0 speaks for the job
    (an error of the command line: the test below)."""
    inputs = tmp_path / "in"
    sample_copies(inputs, 1)
    r = subprocess.run(mpirun_args(4) + caption_args(mpi, inputs, tmp_path / "out", "--choices",
                                                     "yes,no", "--max-tokens", "5", "--limit", "4"),
                       capture_output=True, text=True, timeout=600, env=mpi_env())
    assert r.returncode == 0, r.stderr[-3000:]
    warned = [line for line in r.stderr.splitlines()
              if "--max-tokens does not apply with --choices" in line]
    assert len(warned) == 1, r.stderr[-3000:]


def rank_pids(mpirun: subprocess.Popen) -> dict[int, int]:
    """rank -> pid of the ranks mpirun started on this machine."""
    found = {}
    for pid in subprocess.run(["pgrep", "-P", str(mpirun.pid)], capture_output=True,
                              text=True).stdout.split():
        try:
            env = pathlib.Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for kv in env:
            if kv.startswith(b"OMPI_COMM_WORLD_RANK="):
                found[int(kv.split(b"=")[1])] = int(pid)
    return found


def test_a_rank_killed_five_times_loses_nothing(mpi, tmp_path):
    inputs = tmp_path / "in"
    sample_copies(inputs, 60)  # a job long enough for five kills
    out = tmp_path / "out"
    # --parallel 1: slow enough that each run is killed early in the job.
    args = mpirun_args(3) + caption_args(mpi, inputs, out, "--input-shard-size", "2",
                                         "--shard-rows", "3", "--parallel", "1")
    rng = random.Random(int(os.environ.get("SLUICE_CHAOS_SEED", "16")))
    kills = 0
    for attempt in range(12):
        log = open(tmp_path / f"run{attempt}.log", "w")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=mpi_env())
        before = len(glob.glob(str(out / "part-*.jsonl")))
        deadline = time.monotonic() + 300
        killed = False
        # Kill a rank once the run has committed a few new parts.
        while proc.poll() is None and time.monotonic() < deadline and kills < 5:
            if len(glob.glob(str(out / "part-*.jsonl"))) > before:
                time.sleep(rng.uniform(0, 0.2))
                pids = rank_pids(proc)
                if len(pids) == 3:
                    rank = rng.choice(sorted(pids))
                    os.kill(pids[rank], signal.SIGKILL)
                    killed = True
                    kills += 1
                    break
            time.sleep(0.05)
        rc = proc.wait(timeout=300)
        log.close()
        if not killed and rc == 0:
            break
        assert killed or rc == 0, (tmp_path / f"run{attempt}.log").read_text()[-3000:]
    assert kills == 5, f"only {kills} kills landed before the job finished"
    assert rc == 0, (tmp_path / f"run{attempt}.log").read_text()[-3000:]
    rows = rows_by_id(out)
    assert set(rows) == expected_ids(inputs)
    twice = [k for k, v in rows.items() if len(v) > 1]
    assert not twice, twice
    assert not glob.glob(str(out / ".part-*"))  # no temporary left behind


def run_until_a_part_then(args, out, tmp_path, name, signal_it) -> subprocess.CompletedProcess:
    """Runs mpirun args in the background, calls signal_it(proc) once a part
    of this run is committed, and waits for the end."""
    log = tmp_path / f"{name}.log"
    before = set(out.glob("part-*.jsonl"))
    with open(log, "w") as f:
        proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=mpi_env())
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline and \
                not set(out.glob("part-*.jsonl")) - before:
            time.sleep(0.05)
        assert proc.poll() is None, f"the job ended before the signal: {log.read_text()[-2000:]}"
        signal_it(proc)
        rc = proc.wait(timeout=300)
    return subprocess.CompletedProcess(args, rc, log.read_text(), "")


def test_a_stop_under_mpi_exits_130_when_the_ranks_are_signalled(mpi, tmp_path):
    """docs/deploy.md, "Stopping a job": SIGTERM to the ranks (what a
    scheduler sends) stops each as one process stops, and mpirun passes their
    130 on; Ctrl-C on mpirun is Open MPI's own abort (SIGTERM to the ranks, a
    SIGKILL a second later, mpirun's own status 1), not a status sluice
    sets. Either way the same command again goes on with nothing twice."""
    inputs = tmp_path / "in"
    sample_copies(inputs, 60)
    out = tmp_path / "out"
    args = mpirun_args(3) + caption_args(mpi, inputs, out, "--input-shard-size", "2",
                                         "--shard-rows", "3", "--parallel", "1")
    r = run_until_a_part_then(args, out, tmp_path, "sigint", lambda p: p.send_signal(signal.SIGINT))
    assert r.returncode not in (0, 130), r.stdout[-3000:]  # mpirun's, not the ranks'

    def terminate_ranks(proc):
        pids = rank_pids(proc)
        assert len(pids) == 3, pids
        for pid in pids.values():
            os.kill(pid, signal.SIGTERM)
    r = run_until_a_part_then(args, out, tmp_path, "sigterm", terminate_ranks)
    assert r.returncode == 130, r.stdout[-3000:]
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["status"] == "stopped"
    assert 0 < len(rows_by_id(out)) < len(expected_ids(inputs))
    r = subprocess.run(args, capture_output=True, text=True, timeout=900, env=mpi_env())
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = rows_by_id(out)
    assert set(rows) == expected_ids(inputs)
    assert all(len(v) == 1 for v in rows.values()), [k for k, v in rows.items() if len(v) > 1]


def test_a_rank_with_other_settings_is_refused(mpi, inputs, tmp_path):
    out = tmp_path / "out"
    a = caption_args(mpi, inputs, out, "--limit", "3")
    b = caption_args(mpi, inputs, out, "--limit", "3", "--prompt", "Name the colours.")
    r = subprocess.run([MPIRUN, "--allow-run-as-root", "--oversubscribe", "--mca", "btl",
                        "self,vader,tcp", "-n", "1", *a, ":", "-n", "1", *b],
                       capture_output=True, text=True, timeout=600, env=mpi_env())
    assert r.returncode != 0
    assert "rank 1" in r.stderr and "'prompt'" in r.stderr, r.stderr[-2000:]


def test_a_rank_that_reads_another_model_file_at_the_same_path_is_refused(mpi, inputs,
                                                                         tmp_path):
    """Each node reads its own copy of --model at the path the command
    names; only rank 0's was compared with the ledger's. Two nodes, two
    folders of one name (here: each rank run in its own working folder,
    the model named relative to it), one file with its last MiB changed:
    the rank that read it is refused at its start, before it loads it (rank
    0 may have answered a row meanwhile), and the job stops."""
    import shutil
    model = (TINY / "model.gguf").read_bytes()
    for name, data in (("a", model), ("b", model[:-1] + bytes([model[-1] ^ 1]))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.gguf").write_bytes(data)
        shutil.copy(TINY / "mmproj.gguf", tmp_path / name / "mmproj.gguf")
    out = tmp_path / "out"

    def rank(folder):
        args = caption_args(mpi, inputs, out, "--limit", "3")
        args[args.index("--model") + 1] = "model.gguf"
        args[args.index("--mmproj") + 1] = "mmproj.gguf"
        return ["-n", "1", "-wdir", str(tmp_path / folder), *args]

    r = subprocess.run([MPIRUN, "--allow-run-as-root", "--oversubscribe", "--mca", "btl",
                        "self,vader,tcp", *rank("a"), ":", *rank("b")],
                       capture_output=True, text=True, timeout=600, env=mpi_env())
    assert r.returncode != 0
    assert "rank 1 read another model or projector file than rank 0 at the same path" \
        in r.stderr, r.stderr[-2000:]
    # The same file on both: the job runs.
    (tmp_path / "b" / "model.gguf").write_bytes(model)
    r = subprocess.run([MPIRUN, "--allow-run-as-root", "--oversubscribe", "--mca", "btl",
                        "self,vader,tcp", *rank("a"), ":", *rank("b")],
                       capture_output=True, text=True, timeout=600, env=mpi_env())
    assert r.returncode == 0, r.stderr[-2000:]
    rows = rows_by_id(out)
    # --limit counts this run's rows: those of the first, if any, are kept
    assert len(rows) >= 3 and all(len(v) == 1 for v in rows.values()), rows


def test_input_shard_is_refused_under_mpi(mpi, inputs, tmp_path):
    """Refused as the run starts, before the ranks agree to: each rank says
    so there, rank 0 alone aloud, and none is aborted."""
    r = subprocess.run(mpirun_args(2) + caption_args(mpi, inputs, tmp_path / "out",
                                                     "--input-shard", "0/2"),
                       capture_output=True, text=True, timeout=300, env=mpi_env())
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.count("drop --input-shard") == 1, r.stderr[-2000:]
    assert "MPI_ABORT" not in r.stderr, r.stderr[-2000:]


def said(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("sluice: ")]


@pytest.mark.parametrize("case", ["every rank", "rank 0", "rank 1"])
def test_a_job_that_cannot_start_says_why_once(mpi, tmp_path, case):
    """An error of the run's start check (an input that does not exist: every
    rank finds it; an output folder holding a part and no ledger: rank 0
    alone checks it; rank 1's own input missing) was said by each rank that
    found it, with "rank N cannot go on" and Open MPI's MPI_ABORT banner.
    Now the ranks agree to stop: the first rank that failed says what one
    process says, the others nothing, and mpirun exits as one process
    does."""
    inputs = tmp_path / "in"
    sample_copies(inputs, 1)
    out = tmp_path / "out"
    absent = tmp_path / "absent"
    if case == "rank 0":
        out.mkdir()
        (out / "part-00000.jsonl").write_text("")
    good = caption_args(mpi, inputs, out, "--dry-run")
    bad = caption_args(mpi, absent if case != "rank 0" else inputs, out, "--dry-run")
    one = subprocess.run(bad, capture_output=True, text=True, timeout=300, env=mpi_env())
    assert one.returncode == 2 and len(said(one.stderr)) == 1, one.stderr[-2000:]
    if case == "rank 1":  # rank 0 can start
        argv = [*mpirun_args(1), *good, ":", "-n", "1", *bad]
    else:
        argv = mpirun_args(2) + bad
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=mpi_env())
    assert r.returncode == one.returncode, r.stderr[-2000:]
    assert said(r.stderr) == said(one.stderr), r.stderr[-2000:]
    assert "MPI_ABORT" not in r.stderr, r.stderr[-2000:]


def test_a_node_whose_cpu_the_build_cannot_run_is_named(mpi, tmp_path):
    """A rank on a node without the SIMD extensions of a GGML_NATIVE build
    (here rank 1, its CPU flags a test's stand-in without avx2) refuses to
    start, as one process does. Under mpirun or srun each node's refusal
    read "this CPU": it names its machine now, so the one older node of a
    fleet is found. The other ranks stop with it at the start (mpirun left
    to let every rank finish, as srun does by default, ends too) and the job
    says it once."""
    import socket
    from conftest import native_flags
    have = native_flags()
    if "avx2" not in have:
        pytest.skip("this llama.cpp is not a GGML_NATIVE build on an AVX2 CPU")
    inputs = tmp_path / "in"
    sample_copies(inputs, 1)
    lacking = " ".join(f for f in have if f != "avx2")
    args = caption_args(mpi, inputs, tmp_path / "out", "-n", "4")
    bad = ["env", f"SLUICE_TEST_CPU_FLAGS={lacking}", *args]
    one = subprocess.run(bad, capture_output=True, text=True, timeout=300, env=mpi_env())
    named = f"may use avx2, which this CPU ({socket.gethostname()}) lacks"
    assert one.returncode == 2 and named in one.stderr, one.stderr[-2000:]
    for left_to_finish in (False, True):
        extra = ["--mca", "orte_abort_on_non_zero_status", "0"] if left_to_finish else []
        job = mpirun_args(1)
        r = subprocess.run([job[0], *extra, *job[1:], *args, ":", "-n", "1", *bad],
                           capture_output=True, text=True, timeout=300, env=mpi_env())
        if not left_to_finish:
            assert r.returncode == one.returncode, r.stderr[-2000:]
        refusal = [line for line in said(one.stderr) if named in line]
        assert [line for line in said(r.stderr) if "warn:" not in line] == refusal, \
            r.stderr[-2000:]
        assert "MPI_ABORT" not in r.stderr, r.stderr[-2000:]


@pytest.mark.parametrize("case", ["a wrong flag", "an unknown command", "a job file's key",
                                  "a model's download", "rank 1's flag alone"])
def test_a_job_refused_before_mpi_starts_says_why_once(mpi, tmp_path, case):
    """An error found before MPI starts (the command line, the job file, the
    model's download) was said by every rank that found it: a wrong flag on
    2 ranks came out twice. Now a rank that fails there joins the others
    only to agree, as at the run's start check, and the first rank that
    failed says why, once: what one process says, with its exit status. A
    rank whose error the others do not share (ranks started with other
    arguments, a file or model only its node cannot read) is not silenced:
    here rank 1 alone, rank 0 able to start. Run twice: as mpirun does by
    default (its exit status), and with orte_abort_on_non_zero_status 0,
    every rank left to finish, so that a second copy cannot be cut off by
    mpirun ending the job first."""
    from hubserver import Hub
    inputs = tmp_path / "in"
    sample_copies(inputs, 1)
    out = tmp_path / "out"
    good = caption_args(mpi, inputs, out, "--dry-run")
    bad = good + ["--bogus-flag"]
    if case == "an unknown command":
        bad = [str(mpi), "captoin", str(inputs)]
    elif case == "a job file's key":
        job = tmp_path / "job.yaml"
        job.write_text(f"input:\n  paths: [{inputs}]\noutput:\n  dir: {out}\nbogus_key: 1\n")
        bad = [str(mpi), "run", str(job), "--dry-run"]
    elif case == "a model's download":
        bad = [str(mpi), "caption", str(inputs), "-o", str(out), "--model", "hf://nobody/nothing",
               "--mmproj", str(TINY / "mmproj.gguf"), "--metrics-addr", "off"]
    with Hub({}) as hub:
        env = dict(mpi_env(), HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "hf"))
        one = subprocess.run(bad, capture_output=True, text=True, timeout=300, env=env)
        assert one.returncode == 2 and said(one.stderr), one.stderr[-2000:]
        job = mpirun_args(1) + good + [":", "-n", "1"] + bad if case.startswith("rank 1") \
            else mpirun_args(2) + bad
        for left_to_finish in (False, True):
            extra = ["--mca", "orte_abort_on_non_zero_status", "0"] if left_to_finish else []
            r = subprocess.run([job[0], *extra, *job[1:]], capture_output=True, text=True,
                               timeout=300, env=env)
            if not left_to_finish:  # (with it mpirun exits 0 whatever its ranks did)
                assert r.returncode == one.returncode, r.stderr[-2000:]
            for line in one.stderr.splitlines():
                assert r.stderr.splitlines().count(line) == 1, (line, r.stderr[-2000:])
            assert "MPI_ABORT" not in r.stderr, r.stderr[-2000:]
        # docs/deploy.md: mpirun -q leaves out its banners and keeps the
        # exit status: the job says what one process says.
        r = subprocess.run([job[0], "-q", *job[1:]], capture_output=True, text=True,
                           timeout=300, env=env)
        assert r.returncode == one.returncode, r.stderr[-2000:]
        assert said(r.stderr) == said(one.stderr), r.stderr[-2000:]
        assert "Primary job" not in r.stderr and "non-zero status" not in r.stderr, r.stderr


@pytest.mark.parametrize("command", ["--help", "", "--version", "caption --help",
                                     "run --version", "config", "config keys", "config check",
                                     "config check JOB", "config print JOB"])
def test_a_command_that_only_prints_prints_once(mpi, tmp_path, command):
    """Help, --version and config (keys, print, check: ok or what to
    change) read the same command line and files on every rank: each rank
    printed its whole output, 2 ranks 2 copies. Now rank 0 prints, the
    other ranks nothing, and mpirun exits as one process does. Every line
    one process prints comes out as often as there, no more."""
    job = tmp_path / "job.yaml"
    job.write_text(f"input:\n  paths: [{tmp_path}]\noutput:\n  dir: {tmp_path / 'out'}\n"
                   "pipeline:\n  dry_run: true\n")
    argv = [str(mpi), *(str(job) if w == "JOB" else w for w in command.split())]
    one = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=mpi_env())
    assert one.stdout.strip() or one.stderr.strip(), command
    r = subprocess.run(mpirun_args(2) + ["-q", *argv], capture_output=True, text=True,
                       timeout=120, env=mpi_env())
    assert r.returncode == one.returncode, r.stderr[-2000:]
    for ours, theirs in ((one.stdout, r.stdout), (one.stderr, r.stderr)):
        for line in set(ours.splitlines()) - {""}:
            assert theirs.splitlines().count(line) == ours.splitlines().count(line), \
                (line, theirs[-2000:])


HUB_REPO, HUB_MODEL, HUB_PROJECTOR = ("sluice-test/tiny-vlm", "tiny-vlm-Q8_0.gguf",
                                      "mmproj-tiny-vlm-f16.gguf")


def hub_caption_args(sluice_bin, inputs, out, *extra) -> tuple[dict, list[str]]:
    """The hub stand-in's repositories, and caption_args with the model
    (and its projector) from the hub."""
    repos = {HUB_REPO: {HUB_MODEL: (TINY / "model.gguf").read_bytes(),
                        HUB_PROJECTOR: (TINY / "mmproj.gguf").read_bytes()}}
    args = caption_args(sluice_bin, inputs, out, *extra)
    args[args.index("--model") + 1] = f"hf://{HUB_REPO}"
    del args[args.index("--mmproj"):args.index("--mmproj") + 2]
    return repos, args


def test_ranks_fetching_one_hub_model_into_one_cache_download_it_once(mpi, inputs, tmp_path):
    """Every rank fetches an hf:// model before the job starts, here into
    one cache (HF_HOME on a shared disk, or ranks on one node). Two ranks
    appended to the same .incomplete file and the job failed: "gave 7036640
    bytes but the hub lists 3579616: the download is corrupt". Now a rank
    waits for the cache's lock on the file (CACHE/.locks/...) and finds it
    fetched: each file is downloaded once, and the job captions."""
    from hubserver import Hub
    repo, model, projector = HUB_REPO, HUB_MODEL, HUB_PROJECTOR
    out = tmp_path / "out"
    repos, args = hub_caption_args(mpi, inputs, out, "--limit", "4")
    with Hub(repos) as hub:
        env = dict(mpi_env(), HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "hf"))
        r = subprocess.run(mpirun_args(2) + args, capture_output=True, text=True, timeout=300,
                           env=env)
        gets = [path for method, path, _ in hub.log if method == "GET" and path.startswith("/lfs/")]
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(gets) == sorted(f"/lfs/{repo}/{name}" for name in (model, projector)), gets
    assert len(rows_by_id(out)) == 4


def test_a_rank_refused_stops_the_others_before_they_download(mpi, inputs, tmp_path):
    """A rank whose command line is refused (here rank 1's alone) stopped
    the others only at their start check, after each had fetched its model
    from the hub: minutes of download before the job said why. Now the
    ranks agree on their command lines first: rank 1 says why, as one
    process does, with its exit status, and no rank asks the hub for
    anything."""
    from hubserver import Hub
    repos, good = hub_caption_args(mpi, inputs, tmp_path / "out")
    bad = good + ["--bogus-flag"]
    with Hub(repos) as hub:
        env = dict(mpi_env(), HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "hf"))
        one = subprocess.run(bad, capture_output=True, text=True, timeout=60, env=env)
        assert one.returncode == 2 and said(one.stderr), one.stderr[-2000:]
        r = subprocess.run(mpirun_args(1) + good + [":", "-n", "1"] + bad, capture_output=True,
                           text=True, timeout=300, env=env)
        asked = list(hub.log)
    assert r.returncode == one.returncode, r.stderr[-2000:]
    assert said(r.stderr) == said(one.stderr), r.stderr[-2000:]
    assert not asked, asked


def test_every_rank_serves_metrics_and_rank_0_the_jobs(mpi, tmp_path):
    """Rank r serves /metrics at the port + r; a real Prometheus scrapes both
    ranks of a live job, and the dashboard's MPI queries (its `rank`
    variable included) return data; rank 0's live page lists the ranks; at
    the end rank 0's _metrics.prom counts each rank's rows as its parts hold
    them."""
    import re
    import urllib.request

    from localserver import free_ports
    from prom import Prometheus
    dash_path = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "grafana" / \
        "sluice-dashboard.json"
    from test_dashboard import JOB_PREFIX, dashboard_targets, substitute

    inputs = tmp_path / "in"
    sample_copies(inputs, 120)  # with --parallel 1: long enough for 20 scrapes
    out = tmp_path / "out"
    port = free_ports(2)
    log = open(tmp_path / "run.log", "w")
    args = caption_args(mpi, inputs, out, "--input-shard-size", "4", "--shard-rows", "8",
                        "--parallel", "1", "--metrics-addr", f"127.0.0.1:{port}")
    proc = subprocess.Popen(mpirun_args(2) + args, stdout=log, stderr=subprocess.STDOUT,
                            env=mpi_env())
    targets = [f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"]
    dash = json.loads(dash_path.read_text())
    exprs = [(t, r, e) for t, r, e in dashboard_targets(dash) if JOB_PREFIX in e]
    assert len(exprs) >= 4
    values = {"__rate_interval": "10s", "job": "sluice", "instance": ".*", "rank": ".*"}
    try:
        with Prometheus(tmp_path / "prom", {"sluice": targets}, scrape_interval="1s") as prom:
            prom.wait_ready(seconds=30)

            def both_ranks_rows():
                assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
                up = prom.query('sum(up{job="sluice"})')
                rows = prom.query('sluice_job_rank_rows_total{job="sluice"}')
                return (up and up[0]["value"][1] == "2" and len(rows) == 2
                        and all(float(r["value"][1]) > 0 for r in rows))
            prom.wait_for("both ranks scraped and committing", both_ranks_rows, seconds=120)
            def scraped():  # rate() over 10 s needs two samples of each rank
                assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
                r = prom.query('sum_over_time(up{job="sluice"}[1m])')
                return len(r) == 2 and all(float(x["value"][1]) >= 5 for x in r)
            prom.wait_for("5 scrapes of each rank", scraped, seconds=60)
            empty = [f"{t}/{r}" for t, r, e in exprs
                     if not prom.query(substitute(e, values))]
            assert not empty, empty
            var = [v for v in dash["templating"]["list"] if v["name"] == "rank"][0]
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["definition"].strip())
            ranks = prom.api(f"label/{m.group(2)}/values",
                             **{"match[]": substitute(m.group(1), values)})
            assert sorted(ranks) == ["0", "1"], ranks
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=10) as r:
                status = json.loads(r.read())
            assert [k["rank"] for k in status["ranks"]] == [0, 1]
        assert proc.wait(timeout=600) == 0, (tmp_path / "run.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
    prom_text = (out / "_metrics.prom").read_text()
    by_rank = {int(m.group(1)): float(m.group(2)) for m in re.finditer(
        r'^sluice_job_rank_rows_total\{rank="(\d+)"\} (\S+)$', prom_text, re.M)}
    rows = rows_by_id(out)
    from_parts = {0: 0, 1: 0}
    for v in rows.values():
        from_parts[int(v[0]["_part"][5:10]) % 2] += 1
    assert by_rank == from_parts, (by_rank, from_parts)
    assert re.search(r"^sluice_job_ranks 2$", prom_text, re.M)


def test_a_scrape_does_not_wait_on_rank_0s_ledger_commit(mpi, tmp_path):
    """Rank 0's /metrics reads the job's figures from the coordinator, which
    held its one lock across each ledger write: a scrape waited out the
    commit (an fsync on a slow disk). With every commit held 1.5 s
    (SLUICE_TEST_FAULTS ledger.commit), the scrapes begun inside a commit
    answer in under half that (before: 0.9 s to 1.5 s each)."""
    import statistics
    import threading
    import urllib.request

    from localserver import free_ports
    delay_s = 1.5
    inputs = tmp_path / "in"
    sample_copies(inputs, 3)
    port = free_ports(2)
    args = [str(mpi), "caption", str(inputs), "-o", str(tmp_path / "out"), "--dry-run",
            "--input-shard-size", "4", "--shard-rows", "4", "--show", "0",
            "--metrics-addr", f"127.0.0.1:{port}"]
    env = dict(mpi_env(), SLUICE_TEST_FAULTS=f"ledger.commit=sleep:{int(delay_s * 1000)}")
    proc = subprocess.Popen(mpirun_args(2) + args, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    sleeps, err = [], []

    def read_stderr():
        for line in proc.stderr:
            err.append(line)
            if "test fault point ledger.commit" in line and "sleeping" in line:
                sleeps.append(time.monotonic())
    reader = threading.Thread(target=read_stderr)
    reader.start()
    scrapes = []  # (start, seconds)
    try:
        while proc.poll() is None:
            t = time.monotonic()
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                              timeout=30).read()
                if b"sluice_job_rows_total" in body:
                    scrapes.append((t, time.monotonic() - t))
            except OSError:
                pass  # not up yet, or gone
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        reader.join(timeout=60)
    text = "".join(err)
    assert proc.returncode == 0, text[-3000:]
    assert len(sleeps) >= 3, text[-3000:]
    # Begun inside a commit's first half (from 0.2 s before its line, which
    # comes through mpirun a moment late): waiting, they took the rest.
    inside = [d for t, d in scrapes if any(-0.2 <= t - s <= delay_s / 2 for s in sleeps)]
    assert len(inside) >= 3, (len(scrapes), sleeps)
    assert statistics.median(inside) < delay_s / 2, sorted(inside)
    assert max(inside) < delay_s, sorted(inside)


def test_the_jobs_shard_figures_are_gauges_of_the_shards_the_input_holds(mpi, tmp_path):
    """sluice_job_shards_handed and sluice_job_rank_shards{rank} are levels,
    not counters: a shard handed to a rank past the input's end, before the
    end was known, is taken back when its rank reports the end (dist/coord.c),
    and a counter that goes down reads to Prometheus as a reset. At the end
    of the job both count the shards the input holds: ceil(inputs / shard
    size), the ranks' figures summed included."""
    import math
    import re
    inputs = tmp_path / "in"
    n = sample_copies(inputs, 2)
    out = tmp_path / "out"
    r = subprocess.run(mpirun_args(2) + caption_args(mpi, inputs, out, "--input-shard-size", "3",
                                                     "--shard-rows", "4", *ALONE),
                       capture_output=True, text=True, timeout=600, env=mpi_env())
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    prom_text = (out / "_metrics.prom").read_text()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", prom_text, re.M))
    assert types.get("sluice_job_shards_handed") == "gauge", types
    assert types.get("sluice_job_rank_shards") == "gauge", types
    assert not [k for k in types if "shards" in k and k.endswith("_total")], types
    shards = math.ceil(n / 3)
    handed = re.search(r"^sluice_job_shards_handed (\S+)$", prom_text, re.M)
    assert handed and float(handed.group(1)) == shards, prom_text
    by_rank = {int(m.group(1)): float(m.group(2)) for m in re.finditer(
        r'^sluice_job_rank_shards\{rank="(\d+)"\} (\S+)$', prom_text, re.M)}
    assert sorted(by_rank) == [0, 1] and sum(by_rank.values()) == shards, by_rank
    assert re.search(rf"^sluice_job_shards {shards}$", prom_text, re.M), prom_text


AGENT = """#!/bin/sh
# Open MPI's rsh agent for this test: `AGENT HOST COMMAND...` runs COMMAND in
# the network namespace that holds HOST's address, as ssh would on HOST.
host=$1; shift
case "$host" in
{cases}
  *) echo "no namespace for $host" >&2; exit 1 ;;
esac
exec ip netns exec "$ns" /bin/sh -c "$*"
"""


def veth_bytes(ns: str, dev: str) -> int:
    """Bytes received and sent by `dev` in namespace `ns`."""
    out = subprocess.run(["ip", "netns", "exec", ns, "cat",
                          f"/sys/class/net/{dev}/statistics/rx_bytes",
                          f"/sys/class/net/{dev}/statistics/tx_bytes"],
                         capture_output=True, text=True, check=True).stdout.split()
    return sum(int(x) for x in out)


@pytest.fixture
def two_namespaces(tmp_path):
    """Two network namespaces joined by a veth pair (10.77.N.1 and .2):
    each rank gets its own network stack, so MPI's traffic crosses a real
    interface instead of shared memory or loopback."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 to make network namespaces")
    tag = f"sl{os.getpid() % 100000}"
    net = 10 + os.getpid() % 200
    names = [f"{tag}a", f"{tag}b"]
    devs = [f"{tag}va", f"{tag}vb"]
    addrs = [f"10.77.{net}.1", f"10.77.{net}.2"]
    steps = [["ip", "netns", "add", names[0]], ["ip", "netns", "add", names[1]],
             ["ip", "link", "add", devs[0], "type", "veth", "peer", "name", devs[1]]]
    for ns, dev, addr in zip(names, devs, addrs):
        steps += [["ip", "link", "set", dev, "netns", ns],
                  ["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev],
                  ["ip", "-n", ns, "link", "set", dev, "up"],
                  ["ip", "-n", ns, "link", "set", "lo", "up"]]
    try:
        for cmd in steps:
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                pytest.skip(f"cannot make network namespaces here: {' '.join(cmd)}: {r.stderr}")
        agent = tmp_path / "netns-agent.sh"
        agent.write_text(AGENT.format(cases="\n".join(
            f"  {a}) ns={n} ;;" for a, n in zip(addrs, names))))
        agent.chmod(0o755)
        hosts = tmp_path / "hostfile"
        hosts.write_text("".join(f"{a} slots=1\n" for a in addrs))
        yield {"names": names, "devs": devs, "addrs": addrs, "agent": agent, "hosts": hosts,
               "subnet": f"10.77.{net}.0/24"}
    finally:
        for ns in names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_ranks_in_separate_network_namespaces(mpi, two_namespaces, inputs, one_process,
                                              tmp_path):
    t = two_namespaces
    out = tmp_path / "out"
    before = veth_bytes(t["names"][0], t["devs"][0])
    cmd = ["ip", "netns", "exec", t["names"][0], MPIRUN, "--allow-run-as-root",
           "--hostfile", str(t["hosts"]), "-n", "2",
           "--mca", "plm_rsh_agent", str(t["agent"]), "--mca", "btl", "self,tcp",
           "--mca", "btl_tcp_if_include", t["subnet"], "--mca", "oob_tcp_if_include", t["subnet"],
           "-x", "ASAN_OPTIONS"] + caption_args(mpi, inputs, out, "--input-shard-size", "4",
                                                "--shard-rows", "5", *ALONE)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=mpi_env())
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = rows_by_id(out)
    assert set(rows) == expected_ids(inputs)
    assert all(len(v) == 1 for v in rows.values())
    assert {k: v[0]["caption"] for k, v in rows.items()} == one_process
    numbers = {int(v[0]["_part"][5:10]) for v in rows.values()}
    assert {n % 2 for n in numbers} == {0, 1}, sorted(numbers)  # both ranks wrote
    # The ranks spoke over the veth: rank 1's part records alone carry each
    # of its row ids with two 8-byte integers to rank 0.
    crossed = veth_bytes(t["names"][0], t["devs"][0]) - before
    records = sum(len(k.encode()) + 17 for k, v in rows.items()
                  if int(v[0]["_part"][5:10]) % 2 == 1)
    print(f"\n{crossed} bytes crossed the veth between the ranks' namespaces "
          f"(rank 1's part records: at least {records})")
    assert crossed > records > 0, (crossed, records)


# ---- sluice batch under MPI, and an s3:// output ---------------------------------------


def batch_line(custom_id: str, text: str) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"messages": [{"role": "user", "content": text}]}})


def batch_args(sluice_bin, requests, out, *extra) -> list[str]:
    return [str(sluice_bin), "batch", str(requests), "-o", str(out),
            "--model", str(TINY / "model.gguf"), "--mmproj", str(TINY / "mmproj.gguf"),
            "--threads", "1", "--cpu-poll", "0", "--max-tokens", "12",
            "--metrics-addr", "off", "--show", "0", *map(str, extra)]


def batch_outputs(out: pathlib.Path, pattern: str) -> dict[str, list[dict]]:
    by_id: dict[str, list[dict]] = {}
    for part in sorted(out.glob(pattern)):
        for text in part.read_text().splitlines():
            row = json.loads(text)
            row["_part"] = part.name
            # a line that is not JSON has no custom_id: its row id names it
            by_id.setdefault(row["custom_id"] or row["id"], []).append(row)
    return by_id


@pytest.fixture
def many_requests(tmp_path) -> tuple[pathlib.Path, list[str], list[int]]:
    """400 text requests and 3 broken lines among them: (file, the good
    custom_ids, the broken lines' numbers)."""
    lines, good, broken = [], [], []
    for i in range(400):
        if i in (17, 211, 390):
            lines.append("{this line is not JSON")
            broken.append(len(lines))
        cid = f"req-{i:04d}"
        lines.append(batch_line(cid, f"Count to {i % 37}."))
        good.append(cid)
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(t + "\n" for t in lines))
    return path, good, broken


def run_killing_a_rank(args, ranks, committed, log_dir, rng, env=None):
    """Runs `args` (an mpirun line of `ranks` ranks), SIGKILLs a rank chosen
    at random once committed() grew, and waits for the job's end. Returns
    (killed rank or None, mpirun's exit status)."""
    before = committed()
    log = open(log_dir / "killed.log", "w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env or mpi_env())
    deadline = time.monotonic() + 300
    killed = None
    try:
        while proc.poll() is None and time.monotonic() < deadline and killed is None:
            if committed() > before:
                pids = rank_pids(proc)
                if len(pids) == ranks:
                    killed = rng.choice(sorted(pids))
                    os.kill(pids[killed], signal.SIGKILL)
            time.sleep(0.05)
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
    return killed, rc


def test_batch_answers_each_custom_id_once_on_2_to_4_ranks(mpi, many_requests, tmp_path):
    """`sluice batch` under mpirun -n 4: every custom_id answered exactly
    once, the broken lines each failed once (in --errors-file, collected by
    rank 0 from every rank's parts), more than one rank answered; the same
    command on 2 ranks, then 3, writes nothing more."""
    requests, good, broken = many_requests
    out, errors = tmp_path / "out", tmp_path / "errors.jsonl"
    args = batch_args(mpi, requests, out, "--input-shard-size", "10", "--shard-rows", "10",
                      "--parallel", "2", "--errors-file", errors)
    r = subprocess.run(mpirun_args(4) + args, capture_output=True, text=True, timeout=900,
                       env=mpi_env())
    assert r.returncode == 3, r.stdout[-2000:] + r.stderr[-3000:]  # 3: some lines failed
    answered = batch_outputs(out, "part-*.jsonl")  # failed lines are in the errors file
    assert sorted(answered) == good
    assert all(len(v) == 1 and v[0]["error"] is None for v in answered.values())
    numbers = {int(v[0]["_part"][5:10]) for v in answered.values()}
    assert len({n % 4 for n in numbers}) >= 2, sorted(numbers)  # more than one rank answered
    failed = [json.loads(t) for t in errors.read_text().splitlines()]
    assert sorted(int(f["error"]["message"].split(f"{requests}:")[1].split(":")[0])
                  for f in failed) == broken
    for n in (2, 3):
        r = subprocess.run(mpirun_args(n) + args, capture_output=True, text=True, timeout=900,
                           env=mpi_env())
        assert r.returncode in (0, 3), r.stderr[-3000:]
        assert batch_outputs(out, "part-*.jsonl").keys() == answered.keys()
        assert all(len(v) == 1 for v in batch_outputs(out, "part-*.jsonl").values())
        assert len(errors.read_text().splitlines()) == len(broken)


def test_batch_with_a_rank_killed_then_rerun_answers_each_once(mpi, many_requests, tmp_path):
    """A rank (rank 0 included, chosen at random) SIGKILLed while the job
    answers; the job rerun on another number of ranks: each custom_id
    answered exactly once, each broken line failed once."""
    requests, good, broken = many_requests
    out = tmp_path / "out"
    rng = random.Random(int(os.environ.get("SLUICE_CHAOS_SEED", "16")))
    # 48 tokens a line (the others: 12): the tiny model answers ~370 lines a
    # second on 3 ranks, which finished the job before mpirun's abort reached
    # the ranks left running.
    args = batch_args(mpi, requests, out, "--input-shard-size", "5", "--shard-rows", "5",
                      "--parallel", "1", "--max-tokens", "48")
    killed, rc = run_killing_a_rank(mpirun_args(3) + args, 3,
                                    lambda: len(list(out.glob("part-*.jsonl"))), tmp_path, rng)
    assert killed is not None, "the job ended before a rank could be killed"
    assert rc != 0
    before = batch_outputs(out, "part-*.jsonl")
    assert 0 < len(before) < len(good) + len(broken), "the kill should land mid-job"
    r = subprocess.run(mpirun_args(2) + args, capture_output=True, text=True, timeout=900,
                       env=mpi_env())
    # 0 or 3: the broken lines may have failed in the killed run already
    assert r.returncode in (0, 3), r.stdout[-2000:] + r.stderr[-3000:]
    rows = batch_outputs(out, "part-*.jsonl")
    twice = [k for k, v in rows.items() if len(v) > 1]
    assert not twice, twice
    # every rank's skipped lines, summed (rank 0's alone before)
    assert f"resumed: {len(before)} inputs skipped" in r.stdout, r.stdout[-2000:]
    # what every rank committed before, as rank 0's ledger recorded it,
    # and of those the broken lines already failed
    failed = sum(1 for v in before.values() if v[0]["error"] is not None)
    said = f", {failed} failed: docs/batch.md#resume says how to answer them again" if failed \
        else ""
    assert f"resuming: {len(before)} inputs were already done by an earlier run " \
        f"({len(before)} rows in the output{said})" in r.stderr, r.stderr[-2000:]
    assert sorted(k for k, v in rows.items() if v[0]["error"] is None) == good
    assert len([k for k, v in rows.items() if v[0]["error"] is not None]) == len(broken)
    assert not glob.glob(str(out / ".part-*"))


def test_s3_output_under_mpi_exactly_once_after_a_kill(mpi, tmp_path):
    """Three ranks write their parts to a bucket (moto), the ledger in rank
    0's --state-dir; a rank is SIGKILLed mid-job and the job rerun on two
    ranks: every input in exactly one object line, more than one rank
    wrote, no multipart upload left behind, one summary in the bucket."""
    from s3_store import moto_store
    inputs = tmp_path / "in"
    sample_copies(inputs, 40)
    rng = random.Random(int(os.environ.get("SLUICE_CHAOS_SEED", "16")))
    with moto_store() as (env, client):
        env["ASAN_OPTIONS"] = mpi_env().get("ASAN_OPTIONS", "")
        client.create_bucket(Bucket="mpi-out")

        def parts():
            pages = client.get_paginator("list_objects_v2").paginate(Bucket="mpi-out",
                                                                      Prefix="job/part-")
            return [o["Key"] for p in pages for o in p.get("Contents", [])]

        def rows():
            by_id: dict[str, list[str]] = {}
            for key in parts():
                body = client.get_object(Bucket="mpi-out", Key=key)["Body"].read().decode()
                for text in body.splitlines():
                    by_id.setdefault(json.loads(text)["id"], []).append(key)
            return by_id

        args = caption_args(mpi, inputs, "s3://mpi-out/job", "--state-dir", tmp_path / "state",
                            "--input-shard-size", "4", "--shard-rows", "6", "--parallel", "1")
        killed, rc = run_killing_a_rank(mpirun_args(3) + args, 3, lambda: len(parts()),
                                        tmp_path, rng, env=env)
        assert killed is not None and rc != 0, (tmp_path / "killed.log").read_text()[-3000:]
        done_before, parts_before = len(rows()), set(parts())
        assert 0 < done_before < len(expected_ids(inputs))
        r = subprocess.run(mpirun_args(2) + args, capture_output=True, text=True, timeout=900,
                           env=env)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        got = rows()
        assert set(got) == expected_ids(inputs)
        twice = {k: v for k, v in got.items() if len(v) > 1}
        assert not twice, twice
        # the rerun's two ranks number their parts first + rank + 2k: both wrote
        numbers = {int(k.split("part-")[1][:5]) for k in set(parts()) - parts_before}
        assert {n % 2 for n in numbers} == {0, 1}, sorted(numbers)
        assert not client.list_multipart_uploads(Bucket="mpi-out").get("Uploads")
        summary = json.loads(client.get_object(Bucket="mpi-out",
                                               Key="job/_summary.json")["Body"].read())
        # the summary describes the last run: what it wrote, what it skipped
        assert summary["rows"]["total"] == len(got) - done_before
        assert summary["rows"]["inputs_done"] == len(got) - done_before
        assert summary["rows"]["skipped"] == done_before


def test_no_rank_commits_a_part_once_rank_0_lost_the_bucket_lock(mpi, tmp_path):
    """Rank 0 holds the s3:// output's lock; the store refuses its renewals
    (the lock object's PUT) past most of the lease: no rank commits a part
    then (rank 0 refuses every part a rank records), and the job fails
    saying the lock was lost. Only rank 0's own commits were checked: the
    other ranks went on uploading parts beside whatever run took the prefix."""
    from s3_store import CountingProxy, moto_store
    inputs = tmp_path / "in"
    sample_copies(inputs, 4)
    with moto_store() as (env, client):
        env["ASAN_OPTIONS"] = mpi_env().get("ASAN_OPTIONS", "")
        client.create_bucket(Bucket="mpi-lock")
        proxy = CountingProxy(env["AWS_ENDPOINT_URL"])
        try:
            env = dict(env, AWS_ENDPOINT_URL=proxy.url, SLUICE_S3_LOCK_LEASE="2",
                       SLUICE_TEST_FAULTS="trace,ledger.reconciled=sleep:4000")
            args = caption_args(mpi, inputs, "s3://mpi-lock/job", "--state-dir",
                                tmp_path / "state", "--input-shard-size", "2", "--shard-rows",
                                "2", *ALONE)
            run = subprocess.Popen(mpirun_args(2) + args, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
            err = []
            for line in run.stderr:
                err.append(line)
                if "test fault point ledger.reconciled" in line:
                    break
            proxy.refuse = lambda m, p, rng: m == "PUT" and p == "/mpi-lock/job/_sluice.lock"
            err.append(run.stderr.read())
            text = "".join(err)
            assert run.wait(timeout=300) != 0, text[-3000:]
            assert "lost the lock on s3://mpi-lock/job" in text, text[-3000:]
            keys = [o["Key"] for o in client.list_objects_v2(Bucket="mpi-lock",
                                                             Prefix="job/").get("Contents", [])]
            assert not [k for k in keys if "part-" in k], keys
        finally:
            proxy.close()


def test_batch_errors_file_with_an_s3_output_after_a_kill(mpi, tmp_path):
    """`sluice batch` on 3 ranks into a bucket (moto) with --errors-file,
    one request line in 5 broken on purpose (one in each input shard).
    Rank 2 pauses after uploading its first errors object, before its part
    (a test fault), and is SIGKILLed once ranks 0 and 1 committed parts
    numbered after it: its errors object stays in the bucket without a part
    and its number is not used again. The job rerun on 2 ranks, then once
    more: the file rank 0 gathers at the end from the errors objects of the
    committed parts (every rank's, both runs') holds each broken line once,
    the parts each good custom_id once."""
    from s3_store import moto_store
    lines, good, broken = [], [], []
    for i in range(120):
        if i % 5 == 2:
            lines.append("{this line is not JSON")
            broken.append(len(lines))
        else:
            lines.append(batch_line(f"req-{i:04d}", f"Count to {i % 37}."))
            good.append(f"req-{i:04d}")
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(t + "\n" for t in lines))
    with moto_store() as (env, client):
        env["ASAN_OPTIONS"] = mpi_env().get("ASAN_OPTIONS", "")
        bucket = ""

        def keys(start):
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                      Prefix="run/" + start)
            return [o["Key"] for p in pages for o in p.get("Contents", [])]

        def answered():
            by_id: dict[str, list[str]] = {}
            for key in keys("part-"):
                body = client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
                for text in body.splitlines():
                    by_id.setdefault(json.loads(text)["custom_id"], []).append(key)
            return by_id

        def later_parts():  # parts committed with numbers after rank 2's first (2)
            return [k for k in keys("part-") if int(k.split("part-")[1][:5]) > 2]

        # The kill needs rank 2 to have taken a shard: on a loaded machine
        # ranks 0 and 1 once read all 24 ahead while rank 2 started, and the
        # job ended unkilled. That setup is tried again (a new bucket), up to
        # 3 times; what is checked after the kill is the same.
        for attempt in range(3):
            bucket = f"mpi-batch-{attempt}"
            client.create_bucket(Bucket=bucket)
            # 48 tokens a line, as the batch kill test: the job outlasts the kill.
            # --ordered: a part is then one input shard, so rank 2's first errors
            # object holds its broken line; as they finish, a broken line can
            # overtake the good ones and fall into the part before (CI once saw
            # errors-00002 empty).
            state = tmp_path / f"state-{attempt}"
            errors = tmp_path / f"errors-{attempt}.jsonl"
            args = batch_args(mpi, requests, f"s3://{bucket}/run", "--state-dir", state,
                              "--input-shard-size", "5", "--shard-rows", "5", "--parallel", "1",
                              "--max-tokens", "48", "--errors-file", errors, "--ordered")
            paused = ["env", "SLUICE_TEST_FAULTS=commit.after_upload=sleep:600000@1", *args]
            log_path = tmp_path / f"killed-{attempt}.log"
            log = open(log_path, "w")
            proc = subprocess.Popen([MPIRUN, "--allow-run-as-root", "--oversubscribe", "--mca",
                                     "btl", "self,vader,tcp", "-n", "2", *args, ":", "-n", "1",
                                     *paused], stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                deadline = time.monotonic() + 300
                while proc.poll() is None and time.monotonic() < deadline and \
                        not (keys("errors-00002") and len(later_parts()) >= 2):
                    time.sleep(0.05)
                pids = rank_pids(proc)
                if proc.poll() is not None and not keys("errors-00002") and attempt < 2:
                    continue  # rank 2 took no shard: the job ended unkilled
                assert proc.poll() is None and 2 in pids, log_path.read_text()[-3000:]
                os.kill(pids[2], signal.SIGKILL)
                assert proc.wait(timeout=300) != 0
                break
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=30)
                log.close()
        assert not keys("part-00002"), "rank 2 was killed before its part"
        left = client.get_object(Bucket=bucket, Key="run/errors-00002.jsonl")["Body"].read()
        assert b"invalid JSON" in left  # a failed row of no committed part
        assert 0 < len(answered()) < len(good), "the kill should land mid-job"
        # The rerun, then the same once more (nothing left: the file gathered again).
        for n in (2, 2):
            r = subprocess.run(mpirun_args(n) + args, capture_output=True, text=True,
                               timeout=900, env=env)
            # 0 or 3: the broken lines may all have failed in the killed run
            assert r.returncode in (0, 3), r.stdout[-2000:] + r.stderr[-3000:]
            got = answered()
            assert sorted(got) == good
            assert not {k: v for k, v in got.items() if len(v) > 1}
            failed = [json.loads(t) for t in errors.read_text().splitlines()]
            assert sorted(int(f["error"]["message"].split(f"{requests}:")[1].split(":")[0])
                          for f in failed) == broken
            assert all(f["response"] is None and f["custom_id"] ==
                       f"{requests.name}:{f['error']['message'].split(f'{requests}:')[1].split(':')[0]}"
                       for f in failed)
        assert keys("errors-00002") and not keys("part-00002")  # never used again


def test_resuming_across_mpi_and_one_process_says_how(mpi, tmp_path):
    """An MPI job's output resumed by one process (or the reverse) is
    refused (mpi_shards differs): the message names the s3:// output, not
    the state folder it called the "output folder", and says that it is
    mpirun, not some other setting of "the earlier command", that differs."""
    from s3_store import moto_store
    inputs = tmp_path / "in"
    sample_copies(inputs, 1)
    state = tmp_path / "state"
    with moto_store() as (env, client):
        env["ASAN_OPTIONS"] = mpi_env().get("ASAN_OPTIONS", "")
        client.create_bucket(Bucket="mpi-resume")
        args = caption_args(mpi, inputs, "s3://mpi-resume/job", "--state-dir", state,
                            "--max-tokens", "2")
        r = subprocess.run(mpirun_args(2) + args, capture_output=True, text=True, timeout=300,
                           env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        r = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2
    assert "output 's3://mpi-resume/job' holds rows made with other settings" in r.stderr
    assert "resume it with mpirun and more than one rank" in r.stderr, r.stderr[-2000:]
    out = tmp_path / "out"
    args = caption_args(mpi, inputs, out, "--max-tokens", "2")
    r = subprocess.run(args, capture_output=True, text=True, timeout=300, env=mpi_env())
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run(mpirun_args(2) + args, capture_output=True, text=True, timeout=300,
                       env=mpi_env())
    assert r.returncode != 0
    assert "resume it without mpirun, or with one rank" in r.stderr, r.stderr[-2000:]


# The ranks' waits warn first after 30 s, in a test after WARN_S
# (SLUICE_TEST_FAULTS=dist.warn_s, docs/deploy.md): each test that waited
# for a warning took a minute. The schedule (30 s, 60, 120, ...) is scaled
# alike, and unit-tested (tests/unit/test_coord.c). Rank 0 tells the
# finished ranks it is alive every WARN_S / 3 s: 2 s.
WARN_S = 6


def warn_env(faults: str = "") -> dict:
    return dict(mpi_env(), SLUICE_TEST_FAULTS=f"{faults}dist.warn_s={WARN_S}")


@contextlib.contextmanager
def a_job_with_a_stopped_rank(mpi, tmp_path, rank, ready):
    """A 3-rank job over 240 inputs (shards and parts of 2 rows) in the
    background, `rank` stopped (SIGSTOP) once ready(ranks that committed a
    part) holds: yields the job's output lines as they come; then the rank
    continued, the job must end with every input once."""
    import threading
    inputs = tmp_path / "in"
    sample_copies(inputs, 40)
    out = tmp_path / "out"
    args = mpirun_args(3) + caption_args(mpi, inputs, out, "--input-shard-size", "2",
                                         "--shard-rows", "2", "--parallel", "1")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=warn_env())
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    stopped = None
    try:
        deadline = time.monotonic() + 120
        while stopped is None and proc.poll() is None and time.monotonic() < deadline:
            # rank r's parts are numbered r, r + 3, r + 6, ...
            if ready({int(p.name[5:10]) % 3 for p in out.glob("part-*.jsonl")}):
                pids = rank_pids(proc)
                if rank in pids:
                    os.kill(pids[rank], signal.SIGSTOP)
                    stopped = pids[rank]
            time.sleep(0.05)
        assert stopped, f"rank {rank} was not stopped before the job ended"
        yield lines
    except BaseException:
        proc.kill()
        raise
    finally:
        if stopped:
            os.kill(stopped, signal.SIGCONT)
    proc.wait(timeout=120)
    reader.join(timeout=30)
    assert proc.returncode == 0, "".join(lines)[-3000:]
    rows = rows_by_id(out)
    assert set(rows) == expected_ids(inputs)
    assert all(len(v) == 1 for v in rows.values())


def wait_for_lines(lines, wants, seconds):
    """Until every want is in a line, or `seconds` pass. Give well past the
    time the ranks wait before they speak: on a loaded 2-core machine (the
    suite beside three builds) a message due at 30 s came after the 50 s
    once given."""
    deadline = time.monotonic() + seconds
    while not all(any(w in line for line in lines) for w in wants) and \
            time.monotonic() < deadline:
        time.sleep(0.2)


def test_a_stuck_rank_is_named_while_rank_0_waits(mpi, tmp_path):
    """A rank that stops (SIGSTOP: a hung mount or GPU looks the same from
    rank 0) holds the job: rank 0 finishes its part and waits. It said so
    only at the info level (not shown): a job that hung said nothing of
    which rank. Now it warns after 30 s (WARN_S here), naming the rank;
    the rank continued, the job ends with every input once."""
    with a_job_with_a_stopped_rank(mpi, tmp_path, 2, lambda ranks: 2 in ranks) as lines:
        want = f"waiting {WARN_S} s so far for 1 rank: 2 (its last shard"
        wait_for_lines(lines, [want], 120)
        assert any(want in line and "a rank that is stuck holds the job" in line
                   for line in lines), "".join(lines)[-3000:]
        # Rank 1, done and waiting for the job's end (by now over WARN_S),
        # hears from rank 0 (TAG_ALIVE) and so does not take it for stuck.
        time.sleep(1.5 * WARN_S)
        assert not any("heard nothing from rank 0" in line for line in lines), \
            "".join(lines)[-3000:]


def test_the_ranks_waiting_on_a_stuck_rank_0_say_so(mpi, tmp_path):
    """Rank 0 stopped (SIGSTOP: a hung mount or GPU looks the same) holds
    the job: the other ranks wait for its answers. They waited without a
    word (the CLI shows them errors only); now each says after 30 s
    (WARN_S here) that it has heard nothing from rank 0 and what it waits
    for. Rank 0 continued, the job ends with every input once."""
    with a_job_with_a_stopped_rank(mpi, tmp_path, 0, lambda ranks: {1, 2} <= ranks) as lines:
        wants = [f"rank {r} has heard nothing from rank 0 for {WARN_S} s (waiting for "
                 for r in (1, 2)]
        wait_for_lines(lines, wants, 120)
        for w in wants:
            assert any(w in line and "run the same command again" in line for line in lines), \
                "".join(lines)[-3000:]


@pytest.mark.parametrize("stuck", [2, 0])
def test_one_rank_says_which_rank_the_start_waits_for(mpi, tmp_path, stuck):
    """A rank stuck before the ranks' start agreement (SLUICE_TEST_FAULTS
    pauses it there: a hung mount looks the same) holds the job. Every
    waiting rank said so after 30 s, alike, none naming the rank: 3 ranks, 2
    copies. Now rank 0 says it, naming the ranks it waits for; when rank 0
    is the one stuck, the lowest waiting rank, 1, says so. The verdict waits
    for the speaker's second warning (2 WARN_S): by then every other waiting
    rank had passed its own first (WARN_S) unless it reached the start
    agreement over WARN_S after the speaker; then it could not have warned,
    and the verdict holds too."""
    import threading
    inputs = tmp_path / "in"
    sample_copies(inputs, 1)
    args = caption_args(mpi, inputs, tmp_path / "out", "--dry-run")
    paused = ["-x", f"SLUICE_TEST_FAULTS=dist.start=sleep:600000,dist.warn_s={WARN_S}", *args]
    base = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "--mca", "btl", "self,vader,tcp"]
    argv = base + (["-n", "2", *args, ":", "-n", "1", *paused] if stuck == 2
                   else ["-n", "1", *paused, ":", "-n", "2", *args])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=warn_env())
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    speaker = 0 if stuck else 1
    second = f"rank {speaker} has waited {2 * WARN_S} s"
    try:
        wait_for_lines(lines, [second], 180)
    finally:
        for pid in rank_pids(proc).values():
            os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=60)
        reader.join(timeout=30)
    text = "".join(lines)
    if stuck == 2:
        want = (f"rank 0 has waited {WARN_S} s for 1 rank to finish their start check: 2: a "
                "rank that")
    else:
        want = (f"rank 1 has waited {WARN_S} s for the other ranks to finish their start check: "
                "rank 0 (it checks the output and opens its ledger there) has not")
    assert want in text, text[-3000:]
    assert second in text, text[-3000:]
    others = [line for line in lines if "has waited" in line and f"rank {speaker} " not in line]
    assert not others, text[-3000:]


def test_a_rank_whose_listing_fails_midway_ends_the_job(mpi, tmp_path):
    """Shards by item are runs of places in the input that every rank lists
    whole. A rank whose listing of a bucket folder failed after its first
    page (1,000 keys) read a shorter input and said nothing: the job
    exited 0 with no failed row, and the shards past the failure that rank
    had taken were lost (by hand, 2,100 keys: 2,000 rows, three runs of
    three). Now that rank ends the job naming the folder and the cause,
    and the rerun writes every key once."""
    import io
    from PIL import Image
    from s3_store import CountingProxy, moto_store
    with moto_store() as (env, client):
        env["ASAN_OPTIONS"] = mpi_env().get("ASAN_OPTIONS", "")
        client.create_bucket(Bucket="pages")
        png = io.BytesIO()
        Image.new("RGB", (16, 16), (200, 10, 10)).save(png, "PNG")
        keys = [f"p/{i:05d}.png" for i in range(1100)]
        for k in keys:
            client.put_object(Bucket="pages", Key=k, Body=png.getvalue())
        # The second page of the listing is refused to rank 1 alone.
        proxy = CountingProxy(env["AWS_ENDPOINT_URL"], log=False)
        proxy.refuse = lambda method, path, rng: "continuation-token" in path
        out = tmp_path / "out"
        args = caption_args(mpi, "s3://pages/p", out, "--dry-run", "--input-shard-size", "100",
                            "--shard-rows", "500")
        base = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "--mca", "btl",
                "self,vader,tcp"]
        try:
            r = subprocess.run(base + ["-n", "1", *args, ":", "-n", "1", "-x",
                                       f"AWS_ENDPOINT_URL={proxy.url}", *args],
                               capture_output=True, text=True, timeout=300, env=env)
        finally:
            proxy.close()
        assert r.returncode != 0, r.stderr[-2000:]
        assert "rank 1: source 'read' failed: input 's3://pages/p/'" in r.stderr, r.stderr[-2000:]
        assert "AccessDenied" in r.stderr and "run it again" in r.stderr
        r = subprocess.run(mpirun_args(2) + args, capture_output=True, text=True, timeout=300,
                           env=env)
        assert r.returncode == 0, r.stderr[-2000:]
    rows = rows_by_id(out)
    assert sorted(rows) == [k[2:] for k in keys]
    assert all(len(v) == 1 for v in rows.values())
