"""--retry-failed (docs/output.md "Retrying failed rows", src/job/retry.c):
the failed rows of an output's committed parts are taken out (each part
rewritten without them) and their inputs captioned again, so that after a
fix the output holds every input exactly once, now answered; the good rows
stay where they were, byte for byte. JSONL, Parquet (pyarrow and DuckDB),
WebDataset, --errors-file, --rows-per-task, MPI's rank 0 (an s3:// output:
tests/e2e/test_s3.py), a crash at each
step of the retry (finished by the next run whatever its flags), and the
refusals."""
import io
import json
import os
import pathlib
import shutil
import subprocess
import tarfile
from collections import Counter

import pytest

from conftest import SAMPLES, TINY, sanitized

ARGS = ("--max-tokens", "4", "--shard-rows", "3", "--metrics-addr", "off", "--show", "0",
        "--parallel", "1", "--ordered")
N_GOOD, MISSING = 9, ("m1.jpg", "m2.png", "m3.jpg")


def command(sluice, src, out, *extra) -> list[str]:
    return [str(sluice.binary), "caption", str(src), "-o", str(out), "--model",
            str(TINY / "model.gguf"), "--mmproj", str(TINY / "mmproj.gguf"), *ARGS,
            *map(str, extra)]


def run(sluice, src, out, *extra, env=None):
    return subprocess.run(command(sluice, src, out, *extra), capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.fixture
def broken(tmp_path) -> pathlib.Path:
    """A manifest of good images with three that are missing, in parts 0,
    1 and 3 (3 rows a part, in order: part 2 holds none)."""
    root = tmp_path / "in"
    root.mkdir()
    images = (sorted(SAMPLES.glob("*.jpg")) + sorted(SAMPLES.glob("variants/*.jpg")))[:N_GOOD]
    assert len(images) == N_GOOD
    names = []
    for i, p in enumerate(images):
        (root / f"g{i}{p.suffix}").symlink_to(p)
        names.append(f"g{i}{p.suffix}")
    names[1:1] = [MISSING[0]]
    names[5:5] = [MISSING[1]]
    names.append(MISSING[2])
    (root / "m.jsonl").write_text("".join(json.dumps({"image": n, "n": k}) + "\n"
                                          for k, n in enumerate(names)))
    return root


def fix(root: pathlib.Path, names=MISSING):
    """Makes the missing images exist (copies of a sample)."""
    for n in names:
        shutil.copy(SAMPLES / ("variants/astronaut.png" if n.endswith(".png") else "coffee.jpg"),
                    root / n)


def jsonl_rows(out: pathlib.Path) -> dict[str, list[dict]]:
    """Every row of the committed parts by id, as often as it occurs."""
    rows = {}
    for part in sorted(out.glob("part-*.jsonl")):
        for line in part.read_text().splitlines():
            row = json.loads(line)
            rows.setdefault(row["id"], []).append(dict(row, _part=part.name))
    return rows


def by_path(rows):
    return {v[0]["path"]: v for v in rows.values()}


def test_failed_rows_are_captioned_again_and_good_rows_stay(sluice, broken, tmp_path):
    out = tmp_path / "out"
    m = broken / "m.jsonl"
    r = run(sluice, m, out)
    assert r.returncode == 3, r.stderr
    first = jsonl_rows(out)
    assert len(first) == N_GOOD + 3
    failed = sorted(k for k, v in first.items() if v[0]["error"])
    assert len(failed) == 3 and all("No such file" in first[k][0]["error"] or
                                    "not found" in first[k][0]["error"] for k in failed)
    before = {p.name: p.read_bytes() for p in out.glob("part-*.jsonl")}
    # Without the flag a rerun does nothing: failed rows count as done; it
    # says how many failed and what to do, and exits 3 as the output holds them.
    fix(broken)
    r = run(sluice, m, out)
    assert r.returncode == 3 and "nothing new written" in r.stdout, r.stdout + r.stderr
    assert "3 of those rows failed: --retry-failed captions their inputs again" in r.stdout
    assert {p.name: p.read_bytes() for p in out.glob("part-*.jsonl")} == before
    # Only parts that hold failed rows are read back: a clean part with a
    # line sluice could not parse is left alone.
    clean = [n for n, data in before.items()
             if not any(json.loads(x)["error"] for x in data.decode().splitlines())]
    assert clean, before.keys()
    with open(out / clean[0], "ab") as f:
        f.write(b"not a row\n")
    before[clean[0]] += b"not a row\n"

    r = run(sluice, m, out, "--retry-failed")
    assert r.returncode == 0, r.stderr
    assert "retrying: 3 failed rows taken out of 3 parts to be captioned again" in r.stderr, r.stderr
    assert f"resuming: {N_GOOD} inputs were already done by an earlier run ({N_GOOD} rows in " \
        "the output);" in r.stderr, r.stderr  # counted after the failed rows went
    garbled = (out / clean[0]).read_bytes()
    assert garbled == before[clean[0]]  # never read back, never rewritten
    before[clean[0]] = garbled[:-len(b"not a row\n")]
    (out / clean[0]).write_bytes(before[clean[0]])
    after = jsonl_rows(out)
    assert sorted(after) == sorted(first)
    assert all(len(v) == 1 for v in after.values()), after
    assert all(v[0]["error"] is None and v[0]["generated_tokens"] > 0 for v in after.values())
    for k in failed:  # in a new part, not the old one
        assert after[k][0]["_part"] not in before
    for k, v in first.items():  # good rows: the same line in the same part
        if k not in failed:
            assert after[k][0]["_part"] == v[0]["_part"]
            assert {x: y for x, y in after[k][0].items()} == v[0]
    # Old parts keep their good lines in order, byte for byte.
    for name, data in before.items():
        kept = [line for line in data.decode().splitlines()
                if json.loads(line)["id"] not in failed]
        assert (out / name).read_text().splitlines() == kept
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows"]["retried"] == 3
    assert summary["rows"]["total"] == 3 and summary["rows"]["failed"] == 0
    assert summary["rows"]["skipped"] == N_GOOD
    # Again: nothing failed, nothing to take out, nothing written.
    snapshot = {p.name: p.read_bytes() for p in out.glob("part-*.jsonl")}
    r = run(sluice, m, out, "--retry-failed")
    assert r.returncode == 0 and "retrying: 0 failed rows taken out of 0 parts" in r.stderr, r.stderr
    assert {p.name: p.read_bytes() for p in out.glob("part-*.jsonl")} == snapshot


def test_a_row_that_fails_again_is_written_once(sluice, broken, tmp_path):
    out = tmp_path / "out"
    m = broken / "m.jsonl"
    assert run(sluice, m, out).returncode == 3
    fix(broken, MISSING[:2])
    r = run(sluice, m, out, "--retry-failed")
    assert r.returncode == 3, r.stderr  # m3 still missing
    rows = jsonl_rows(out)
    assert all(len(v) == 1 for v in rows.values())
    assert [pathlib.Path(p).name for p, v in by_path(rows).items() if v[0]["error"]] == \
        [MISSING[2]]
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows"]["retried"] == 3 and summary["rows"]["failed"] == 1


def test_parquet_parts_are_rewritten_with_their_schema(sluice, broken, tmp_path):
    import duckdb
    import pyarrow.parquet as pq
    out = tmp_path / "out"
    m = broken / "m.jsonl"
    assert run(sluice, m, out, "--format", "parquet").returncode == 3
    schemas = {p.name: pq.read_schema(p) for p in out.glob("part-*.parquet")}
    good = {}
    for p in out.glob("part-*.parquet"):
        for row in pq.read_table(p).to_pylist():
            if row["error"] is None:
                good[row["id"]] = (p.name, row)
    fix(broken)
    r = run(sluice, m, out, "--format", "parquet", "--retry-failed")
    assert r.returncode == 0, r.stderr
    for name, schema in schemas.items():  # the rewritten parts: same columns and types
        assert pq.read_schema(out / name).equals(schema), name
        for row in pq.read_table(out / name).to_pylist():
            assert good[row["id"]] == (name, row)
    con = duckdb.connect()
    ids = con.execute(f"SELECT id, count(*), max(error) FROM read_parquet('{out}/part-*.parquet') "
                      "GROUP BY id").fetchall()
    assert len(ids) == N_GOOD + 3
    assert all(n == 1 and err is None for _, n, err in ids), ids
    # The pass-through column survived the copy.
    ns = sorted(con.execute(f"SELECT n FROM read_parquet('{out}/part-*.parquet')").fetchall())
    assert ns == [(k,) for k in range(N_GOOD + 3)]


def test_parquet_parts_keep_their_nested_columns(sluice, broken, tmp_path):
    """Lists, lists of lists, lists of structs and structs holding lists
    (typed columns, parquet_sink.c's shapes in the file's metadata) come
    back from a part's rewrite as they were, nulls and empty lists too (a
    null struct, and a null struct element, stay null, not structs of
    nulls, beside a struct whose fields are null); a
    flat column named like a struct's leaf ("a.b" beside a {b}) and a leaf
    path past 1 KiB are told apart and kept; a list longer than the
    reader's batch is read back whole."""
    import pyarrow.parquet as pq
    m = broken / "m.jsonl"
    rows = [json.loads(line) for line in m.read_text().splitlines()]
    for k, row in enumerate(rows):
        row["tags"] = [f"t{k}", None] if k % 3 else ([] if k % 2 else None)
        row["boxes"] = [[k, 1.5], []] if k % 2 else [None]
        row["conv"] = [{"from": "human", "value": f"q{k}"}, None,
                       {"from": None, "value": None}] if k % 4 else []
        row["meta"] = {"w": k, "parts": [True, False][: k % 3]} if k % 5 else None
        row["size"] = {"w": k, "h": None} if k % 3 else (None if k % 2 else {"w": None, "h": None})
        row["a.b"] = f"flat {k}"  # a flat column named like struct a's leaf, before it
        row["a"] = {"b": f"field {k}"}
        row["long"] = [{"k" * 1100: k}]  # a leaf's path past 1 KiB
        # a list longer than the reader's batch (65,536), in every part: the
        # rewrite reads it back whole
        row["counts"] = list(range(70_000 + k)) if k % 3 == 0 else [k]
    m.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out"
    assert run(sluice, m, out, "--format", "parquet").returncode == 3
    schemas = {p.name: pq.read_schema(p) for p in out.glob("part-*.parquet")}
    some = next(iter(schemas.values()))
    assert str(some.field("conv").type) == "list<element: struct<from: string, value: string>>"
    assert str(some.field("meta").type) == "struct<w: int64, parts: list<element: bool>>"
    assert str(some.field("size").type) == "struct<w: int64, h: string>"
    good = {}
    for p in out.glob("part-*.parquet"):
        for row in pq.read_table(p).to_pylist():
            if row["error"] is None:
                good[row["id"]] = (p.name, row)
                want = rows[row["n"]]
                assert (row["tags"], row["boxes"], row["conv"], row["meta"]) == \
                    (want["tags"], want["boxes"], want["conv"], want["meta"]), row
                assert (row["a.b"], row["a"], row["long"]) == (want["a.b"], want["a"], want["long"]), row
                assert row["counts"] == want["counts"], row["id"]
                assert row["size"] == want["size"], row
    # Null structs and structs of nulls in parts the retry rewrites.
    rewritten = {name for name, row in good.values()} & {
        p.name for p in out.glob("part-*.parquet")
        if any(row["error"] for row in pq.read_table(p).to_pylist())}
    kept = [row for name, row in good.values() if name in rewritten]
    assert any(row["meta"] is None for row in kept)
    assert any(row["size"] is None for row in kept)
    assert any(row["size"] == {"w": None, "h": None} for row in kept)
    fix(broken)
    r = run(sluice, m, out, "--format", "parquet", "--retry-failed")
    assert r.returncode == 0, r.stderr
    for name, schema in schemas.items():
        assert pq.read_schema(out / name).equals(schema), name
        for row in pq.read_table(out / name).to_pylist():
            assert good[row["id"]] == (name, row)
    again = [row for p in out.glob("part-*.parquet") for row in pq.read_table(p).to_pylist()
             if row["id"] not in good]
    assert len(again) == 3 and all(row["error"] is None for row in again)
    for row in again:
        want = rows[row["n"]]
        assert (row["tags"], row["boxes"], row["conv"], row["meta"], row["size"]) == \
            (want["tags"], want["boxes"], want["conv"], want["meta"], want["size"]), row


def test_a_dotted_field_deep_in_a_declared_shape_survives_a_retry(sluice, broken, tmp_path):
    """A struct field named with a '.' 15 groups deep (a declared shape: a
    list of 12 nested structs) is written as the field, and a retry's
    rewrite reads it back as the field, not split at its dot; one deeper
    than the reader lists groups is refused at the command line, naming it
    (it would come back split)."""
    import pyarrow.parquet as pq

    def shape(k):
        return {"struct": [["x.y", "int64"], ["z", "string"]]} if k == 0 else {"struct": [[f"s{k}", shape(k - 1)]]}

    def val(k, i):
        return {"x.y": i, "z": f"z{i}"} if k == 0 else {f"s{k}": val(k - 1, i)}

    m = broken / "m.jsonl"
    rows = [json.loads(line) for line in m.read_text().splitlines()]
    for k, row in enumerate(rows):
        row["deep"] = [val(12, k)]
    m.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out"
    cols = "n,deep:" + json.dumps({"list": shape(12)}, separators=(",", ":"))
    assert run(sluice, m, out, "--format", "parquet", "--columns", cols).returncode == 3
    fix(broken)
    r = run(sluice, m, out, "--format", "parquet", "--columns", cols, "--retry-failed")
    assert r.returncode == 0, r.stderr
    got = {row["n"]: row["deep"] for p in out.glob("part-*.parquet") for row in pq.read_table(p).to_pylist()}
    assert got == {k: [val(12, k)] for k in range(len(rows))}
    deeper = "n,deep:" + json.dumps({"list": shape(13)}, separators=(",", ":"))
    r = run(sluice, m, tmp_path / "deeper", "--format", "parquet", "--columns", deeper)
    assert r.returncode == 2 and "'x.y'" in r.stderr and "under 16 or more groups" in r.stderr, r.stderr


def test_webdataset_parts_lose_the_failed_samples(sluice, broken, tmp_path):
    out = tmp_path / "out"
    m = broken / "m.jsonl"
    extra = ("--format", "webdataset", "--include-image-bytes")
    assert run(sluice, m, out, *extra).returncode == 3
    fix(broken)
    r = run(sluice, m, out, *extra, "--retry-failed")
    assert r.returncode == 0, r.stderr
    ids = Counter()
    for part in sorted(out.glob("part-*.tar")):
        with tarfile.open(part) as t:
            members = t.getmembers()
            keys = [x.name.split(".", 1)[0] for x in members]
            for x in members:
                if x.name.endswith(".json"):
                    row = json.loads(t.extractfile(x).read())
                    ids[row["id"]] += 1
                    assert row["error"] is None
                    # every good sample keeps its caption's and its image's member
                    key = x.name.split(".", 1)[0]
                    exts = {y.name.split(".", 1)[1] for y in members
                            if y.name.startswith(key + ".")}
                    assert len(exts) == 3 and {"json", "txt"} < exts, [y.name for y in members]
    assert len(ids) == N_GOOD + 3 and set(ids.values()) == {1}, ids


def test_errors_file_keeps_only_what_still_fails(sluice, broken, tmp_path):
    out = tmp_path / "out"
    errors = tmp_path / "errors.jsonl"
    m = broken / "m.jsonl"
    assert run(sluice, m, out, "--errors-file", errors).returncode == 3
    assert len(errors.read_text().splitlines()) == 3
    assert len([e for e in out.glob("errors-*.jsonl") if e.stat().st_size]) == 3
    fix(broken, MISSING[1:])
    r = run(sluice, m, out, "--errors-file", errors, "--retry-failed")
    assert r.returncode == 3, r.stderr
    lines = [json.loads(x) for x in errors.read_text().splitlines()]
    assert [pathlib.Path(x["path"]).name for x in lines] == [MISSING[0]]  # once, not twice
    rows = jsonl_rows(out)  # the output holds the rows that succeeded
    assert str(broken / MISSING[0]) not in by_path(rows)
    assert len(rows) == N_GOOD + 2 and all(len(v) == 1 for v in rows.values())
    assert all(v[0]["error"] is None for v in rows.values())


def test_rows_per_task_retry_every_task_of_the_input(sluice, broken, tmp_path):
    out = tmp_path / "out"
    m = broken / "m.jsonl"
    tasks = ("--task", "a=Describe.", "--task", "b=Colours?", "--rows-per-task")
    assert run(sluice, m, out, *tasks).returncode == 3
    fix(broken)
    r = run(sluice, m, out, *tasks, "--retry-failed")
    assert r.returncode == 0, r.stderr
    rows = jsonl_rows(out)
    assert len(rows) == N_GOOD + 3
    for k, v in rows.items():
        assert sorted(x["task"] for x in v) == ["a", "b"], (k, v)
        assert all(x["error"] is None for x in v)


@pytest.mark.parametrize("point", ["retry.after_begin", "retry.after_rename", "retry.finish"])
def test_a_crash_inside_a_retry_is_finished_by_the_next_run(sluice, broken, tmp_path, point):
    """The run fails at a step of the retry (as a crash there would leave
    it); the next run, without --retry-failed, finishes that part's retry
    from what the ledger recorded and captions its rows again."""
    out = tmp_path / "out"
    m = broken / "m.jsonl"
    assert run(sluice, m, out).returncode == 3
    fix(broken)
    env = dict(os.environ, SLUICE_TEST_FAULTS=f"{point}=eio@1")
    r = run(sluice, m, out, "--retry-failed", env=env)
    assert r.returncode == 1, r.stderr
    assert "Input/output error" in r.stderr, r.stderr
    r = run(sluice, m, out)
    assert r.returncode == 3, r.stderr  # the other two parts' rows still failed
    rows = jsonl_rows(out)
    assert len(rows) == N_GOOD + 3 and all(len(v) == 1 for v in rows.values()), rows
    # the one part whose retry was begun: its row answered; the other two
    # parts' failed rows are still failed (their retry never began)
    answered = [p for p in MISSING if by_path(rows)[str(broken / p)][0]["error"] is None]
    assert len(answered) == 1, by_path(rows)


def test_a_retry_that_never_became_durable_changes_nothing(sluice, broken, tmp_path):
    out = tmp_path / "out"
    m = broken / "m.jsonl"
    assert run(sluice, m, out).returncode == 3
    before = {p.name: p.read_bytes() for p in out.glob("part-*.jsonl")}
    fix(broken)
    env = dict(os.environ, SLUICE_TEST_FAULTS="retry.begin=eio@1")
    r = run(sluice, m, out, "--retry-failed", env=env)
    assert r.returncode == 1, r.stderr
    r = run(sluice, m, out)
    assert r.returncode == 3 and "nothing new written" in r.stdout, r.stdout + r.stderr
    assert {p.name: p.read_bytes() for p in out.glob("part-*.jsonl")} == before
    assert not list(out.glob(".part-*"))  # the temporary is gone


def test_refusals(sluice, broken, tmp_path):
    m = broken / "m.jsonl"
    r = run(sluice, m, tmp_path / "o", "--retry-failed", "--overwrite")
    assert r.returncode == 2 and "drop one" in r.stderr, r.stderr
    r = subprocess.run([str(sluice.binary), "batch", str(m), "-o", str(tmp_path / "b"),
                        "--engine", "openai", "--endpoint", "http://127.0.0.1:9",
                        "--retry-failed"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "a batch file of them" in r.stderr, r.stderr
    # A fresh folder: nothing to retry, the job runs.
    r = run(sluice, m, tmp_path / "fresh", "--retry-failed")
    assert r.returncode == 3 and "retrying: 0 failed rows taken out of 0 parts" in r.stderr, r.stderr


def test_mpi_rank_zero_takes_the_failed_rows_out(sluice, broken, tmp_path):
    """Under mpirun, rank 0 holds the ledger and rewrites the parts before
    handing out shards; the other rank then captions retried inputs too."""
    from test_mpi import MPIRUN, mpi_built, mpi_env, mpirun_args
    if not MPIRUN or not mpi_built(sluice.binary):
        pytest.skip("sluice built without MPI, or no mpirun")
    out = tmp_path / "out"
    m = broken / "m.jsonl"
    args = ("--input-shard-size", "2", "--threads", "1", "--decode-workers", "1")
    r = subprocess.run(mpirun_args(2) + command(sluice, m, out, *args), capture_output=True,
                       text=True, timeout=600, env=mpi_env())
    assert r.returncode == 3, r.stdout[-2000:] + r.stderr[-3000:]
    fix(broken)
    r = subprocess.run(mpirun_args(2) + command(sluice, m, out, *args, "--retry-failed"),
                       capture_output=True, text=True, timeout=600, env=mpi_env())
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = jsonl_rows(out)
    assert len(rows) == N_GOOD + 3 and all(len(v) == 1 for v in rows.values()), rows
    assert all(v[0]["error"] is None for v in rows.values())
    assert json.loads((out / "_summary.json").read_text())["rows"]["retried"] == 3


@pytest.mark.parametrize("codec", ["snappy", "gzip", "none"])
def test_parquet_compression_is_chosen_and_kept_by_a_retry(sluice, broken, tmp_path, codec):
    """--compression picks the Parquet parts' codec (pyarrow reads it from
    each column chunk); the parts --retry-failed rewrites keep it."""
    import pyarrow.parquet as pq
    out = tmp_path / "out"
    m = broken / "m.jsonl"
    args = ("--format", "parquet", "--compression", codec)
    assert run(sluice, m, out, *args).returncode == 3
    want = {"snappy": "SNAPPY", "gzip": "GZIP", "none": "UNCOMPRESSED"}[codec]

    def codecs():
        return {pq.ParquetFile(p).metadata.row_group(0).column(c).compression
                for p in out.glob("part-*.parquet") if pq.ParquetFile(p).metadata.num_rows
                for c in range(pq.ParquetFile(p).metadata.num_columns)}
    assert codecs() == {want}
    fix(broken)
    r = run(sluice, m, out, *args, "--retry-failed")
    assert r.returncode == 0, r.stderr
    assert codecs() == {want}
    rows = [row for p in out.glob("part-*.parquet") for row in pq.read_table(p).to_pylist()]
    assert len(rows) == N_GOOD + 3 and all(row["error"] is None for row in rows)
    r = run(sluice, m, tmp_path / "j", "--compression", codec)
    assert r.returncode == 2 and "add --format parquet" in r.stderr, r.stderr


def test_ctrl_c_during_the_retry_stops_between_parts(sluice, tmp_path):
    """Ctrl-C while --retry-failed rewrites the parts used to be ignored
    until every part was done (minutes over a large output). It now stops
    between two parts (exit 130): each part taken out whole or not at all,
    no retry left begun in the ledger, and the same command goes on to
    every input exactly once. A dry run over 1000 missing images, a part
    each, so that the rewrite takes seconds."""
    import signal
    import sqlite3
    import time
    src = tmp_path / "m.jsonl"
    n = 1000
    src.write_text("".join(json.dumps({"image": f"x{k}.jpg"}) + "\n" for k in range(n)))
    out = tmp_path / "out"
    args = [str(sluice.binary), "caption", str(src), "-o", str(out), "--dry-run",
            "--shard-rows", "1", "--metrics-addr", "off", "--show", "0", "-q"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 3, r.stderr[-2000:]
    first = out / "part-00000.jsonl"
    inodes = {p.name: p.stat().st_ino for p in out.glob("part-*.jsonl")}
    assert len(inodes) == n
    proc = subprocess.Popen(args + ["--retry-failed"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while first.stat().st_ino == inodes[first.name] and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the retry ended before it could be stopped"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "stopped while taking the failed rows out" in err
    untouched = [k for k, ino in inodes.items() if (out / k).stat().st_ino == ino]
    assert 0 < len(untouched) < n, "the stop should land mid-retry"
    assert not list(out.glob(".part-*.tmp-*"))
    db = sqlite3.connect(f"file:{out / '_sluice_ledger.sqlite'}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT count(*) FROM retry_parts").fetchone()[0] == 0
    finally:
        db.close()
    # Every row is still in the output once, before and after going on.
    assert all(len(v) == 1 for v in jsonl_rows(out).values())
    r = subprocess.run(args + ["--retry-failed"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 3, r.stderr[-2000:]
    rows = jsonl_rows(out)
    assert len(rows) == n and all(len(v) == 1 for v in rows.values())


def cut_to_first_row(part: pathlib.Path):
    """A part cut by hand to its first row, under the same name."""
    if part.suffix == ".jsonl":  # `head -n 1 part > tmp && mv tmp part`
        part.write_text(part.read_text().splitlines(keepends=True)[0])
    elif part.suffix == ".parquet":
        import pyarrow.parquet as pq
        pq.write_table(pq.read_table(part).slice(0, 1), part)
    else:  # the first sample's members, as a whole tar
        with tarfile.open(part) as t:
            members = t.getmembers()
            key = members[0].name.split(".", 1)[0]
            keep = [(m, t.extractfile(m).read()) for m in members
                    if m.name.split(".", 1)[0] == key]
        with tarfile.open(part, "w", format=tarfile.USTAR_FORMAT) as t:
            for m, data in keep:
                t.addfile(m, io.BytesIO(data))


def part_ids(out: pathlib.Path) -> Counter:
    """How often each id is a row of the output's parts, in any format."""
    import pyarrow.parquet as pq
    ids = Counter(row["id"] for rows in jsonl_rows(out).values() for row in rows)
    for p in out.glob("part-*.parquet"):
        ids.update(pq.read_table(p, columns=["id"]).column("id").to_pylist())
    for p in out.glob("part-*.tar"):
        with tarfile.open(p) as t:
            ids.update(json.loads(t.extractfile(m).read())["id"] for m in t.getmembers()
                       if m.name.endswith(".json"))
    return ids


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "webdataset"])
def test_a_part_cut_by_hand_is_refused_not_lost(sluice, broken, tmp_path, fmt):
    """A part cut short by hand keeps its name, and the ledger counted its
    cut rows done: a resume (with or without --retry-failed) would leave
    them in no file. It is refused, naming the part and the counts; once
    the part is deleted its rows are captioned again, each once. Another
    size alone is no loss: a part edited by hand that keeps its rows is
    taken as it is."""
    out = tmp_path / "out"
    m = broken / "m.jsonl"
    extra = ("--format", fmt)
    assert run(sluice, m, out, *extra).returncode == 3
    fix(broken)
    ext = {"jsonl": "jsonl", "parquet": "parquet", "webdataset": "tar"}[fmt]
    part = out / f"part-00002.{ext}"  # three good rows
    cut_to_first_row(part)
    if fmt == "jsonl":  # a caption edited by hand: longer, as many rows
        edited = out / "part-00000.jsonl"
        lines = edited.read_text().splitlines(keepends=True)
        row = dict(json.loads(lines[0]), caption="edited by hand, and longer than it was")
        edited.write_text(json.dumps(row) + "\n" + "".join(lines[1:]))
    for flags in ((), ("--retry-failed",)):
        r = run(sluice, m, out, *extra, *flags)
        assert r.returncode == 2, r.stderr
        assert f"output part '{part}' holds 1 row, and the resume ledger" in r.stderr, r.stderr
        assert "committed 3 in it" in r.stderr and "2 missing rows" in r.stderr, r.stderr
        assert "delete it to have all its rows captioned again" in r.stderr, r.stderr
    part.unlink()
    r = run(sluice, m, out, *extra, "--retry-failed")
    assert r.returncode == 0, r.stderr
    ids = part_ids(out)
    assert len(ids) == N_GOOD + 3 and set(ids.values()) == {1}, ids
    if fmt == "jsonl":
        assert "edited by hand" in (out / "part-00000.jsonl").read_text()



def test_retry_failed_takes_a_new_token_limit(sluice, tmp_path):
    """An answer cut at the token limit fails its JSON schema, and the
    error says to allow more tokens; but the limit is one of the settings a
    folder resumes with, so --retry-failed --max-tokens N was refused as
    another job (a 1M-row run had to start over for its 2% cut answers).
    Now --retry-failed takes a new token limit (--max-tokens, a task's
    max_tokens) where nothing else changed: the failed rows are answered
    under it, said on stderr, and the folder goes on with it. Without
    --retry-failed the refusal says this is the way."""
    src = tmp_path / "in"
    src.mkdir()
    for p in sorted(SAMPLES.glob("*.jpg"))[:2]:
        (src / p.name).symlink_to(p)
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"keep": {"type": "boolean"}},
                                  "required": ["keep"]}))
    out = tmp_path / "out"

    def caption(*extra):
        return subprocess.run([str(sluice.binary), "caption", str(src), "-o", str(out),
                               "--model", str(TINY / "model.gguf"), "--mmproj",
                               str(TINY / "mmproj.gguf"), "--metrics-addr", "off", "--show",
                               "0", "--json-schema", str(schema), *map(str, extra)],
                              capture_output=True, text=True, timeout=600)

    def rows() -> dict:
        got = [json.loads(l) for p in sorted(out.glob("part-*.jsonl"))
               for l in p.read_text().splitlines()]
        assert sorted(r["id"] for r in got) == sorted(p.name for p in src.iterdir()), got
        return {r["id"]: r for r in got}

    r = caption("--max-tokens", "2")
    assert r.returncode == 3, r.stderr
    assert all(row["error"] and row["generated_tokens"] == 2 for row in rows().values())
    r = caption("--max-tokens", "40")
    assert r.returncode == 2, r.stderr
    assert "(max_tokens changed since)" in r.stderr and \
        "only the token limit changed: add --retry-failed" in r.stderr, r.stderr
    r = caption("--max-tokens", "40", "--retry-failed")
    assert r.returncode in (0, 3), r.stderr
    assert "another token limit (max_tokens 2, now 40): --retry-failed retries its failed " \
        "rows with the new one" in r.stderr, r.stderr
    assert "retrying: 2 failed rows taken out" in r.stderr, r.stderr
    # answered anew under 40: a greedy answer cut at 2 needs more than 2
    assert all(2 < row["generated_tokens"] <= 40 for row in rows().values()), rows()
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["settings"]["max_tokens"] == 40, summary["settings"]
    # The folder goes on with 40: the first command is now the other job.
    r = caption("--max-tokens", "2")
    assert r.returncode == 2 and "(max_tokens changed since)" in r.stderr, r.stderr
    # Anything else changed beside the limit is still another job.
    r = caption("--max-tokens", "41", "--retry-failed", "--temperature", "0.5")
    assert r.returncode == 2 and "only the token limit" not in r.stderr, r.stderr
    assert "max_tokens" in r.stderr and "temperature" in r.stderr, r.stderr


def test_retry_failed_takes_a_tasks_new_token_limit(sluice, tmp_path):
    """As above, for a task's own limit (its "sampling" "max_tokens" in a
    --tasks file): another task's settings unchanged, the rows whose task
    answer was cut are answered anew under the new limit."""
    src = tmp_path / "in"
    src.mkdir()
    for p in sorted(SAMPLES.glob("*.jpg"))[:2]:
        (src / p.name).symlink_to(p)
    schema = {"type": "object", "properties": {"keep": {"type": "boolean"}}, "required": ["keep"]}

    def spec(limit: int) -> pathlib.Path:
        path = tmp_path / f"tasks{limit}.json"
        path.write_text(json.dumps({
            "tags": {"prompt": "JSON?", "sampling": {"max_tokens": limit}, "json_schema": schema},
            "short": {"prompt": "Describe it.", "sampling": {"max_tokens": 3}}}))
        return path

    out = tmp_path / "out"

    def caption(*extra):
        return subprocess.run([str(sluice.binary), "caption", str(src), "-o", str(out),
                               "--model", str(TINY / "model.gguf"), "--mmproj",
                               str(TINY / "mmproj.gguf"), "--metrics-addr", "off", "--show",
                               "0", *map(str, extra)], capture_output=True, text=True, timeout=600)

    r = caption("--tasks", spec(2))
    assert r.returncode == 3, r.stderr
    r = caption("--tasks", spec(40))
    assert r.returncode == 2 and "(tasks changed since)" in r.stderr and \
        "only the token limit changed" in r.stderr, r.stderr
    r = caption("--tasks", spec(40), "--retry-failed")
    assert r.returncode in (0, 3), r.stderr
    assert "another token limit (a task's max_tokens)" in r.stderr, r.stderr
    got = [json.loads(l) for p in sorted(out.glob("part-*.jsonl"))
           for l in p.read_text().splitlines()]
    assert sorted(r["id"] for r in got) == sorted(p.name for p in src.iterdir()), got
    assert all(2 < row["tags_generated_tokens"] <= 40 for row in got), got
    # a task's prompt changed beside a limit: another job
    changed = spec(41)
    other = json.loads(changed.read_text())
    other["short"]["prompt"] = "Describe it briefly."
    changed.write_text(json.dumps(other))
    r = caption("--tasks", changed, "--retry-failed")
    assert r.returncode == 2 and "(tasks changed since)" in r.stderr, r.stderr
    assert "only the token limit" not in r.stderr and "another token limit" not in r.stderr, \
        r.stderr
