"""End-to-end tests of --id-column (docs/inputs.md, "Row ids"): a manifest's
(JSONL, CSV), a Parquet file's and an Arrow file's rows take their ids from
the column named, a string or an integer, and fall back to FILE:LINE /
FILE:ROW where it has no value; the column is taken out of the pass-through
columns as a manifest's `id` is; `none` ignores an `id` column; a Parquet
file without the column fails whole, naming it; the option is part of the
resume fingerprint (a rerun writes nothing new, also for a line an earlier
run failed under its place); a value repeated stops the run naming the
column. All dry runs: no model."""
import json

import pytest

from conftest import sample_images
from test_sources import by_id, jsonl_rows

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

QUIET = ("--metrics-addr", "off", "--show", "0")
JPEGS = [p for p in sample_images() if p.suffix == ".jpg"]


def dry(sluice, inputs, out, *extra):
    if not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    return sluice.run("caption", *inputs, "-o", out, "--dry-run", *QUIET, *extra)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_jsonl_integer_column_gives_the_ids(sluice, tmp_path):
    """COCO-style integer image_id: the ids are its values; a null, an empty
    string or no value gives FILE:LINE; the column is taken out where it
    gave the id (the output's `id` holds it) and the `id` column passes
    through as any other (input_id)."""
    src = write_jsonl(tmp_path / "coco.jsonl", [
        {"image_id": 139, "id": "x", "image": str(JPEGS[0])},
        {"image_id": 285, "image": str(JPEGS[1])},
        {"image_id": None, "image": str(JPEGS[2])},
        {"image_id": "", "image": str(JPEGS[0])},
        {"image": str(JPEGS[1])},
    ])
    r = dry(sluice, src, tmp_path / "o", "--id-column", "image_id")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = by_id(jsonl_rows(tmp_path / "o"))
    assert sorted(rows) == ["139", "285", "coco.jsonl:3", "coco.jsonl:4", "coco.jsonl:5"], rows
    assert "image_id" not in rows["139"] and rows["139"]["input_id"] == "x", rows["139"]
    assert rows["coco.jsonl:3"]["image_id"] is None  # a null passes through, as an `id` null does
    assert all(row["error"] is None for row in rows.values()), rows
    # Without the option the `id` column is the id, as before.
    r = dry(sluice, src, tmp_path / "plain")
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(by_id(jsonl_rows(tmp_path / "plain"))) == [
        "coco.jsonl:2", "coco.jsonl:3", "coco.jsonl:4", "coco.jsonl:5", "x"]


def test_a_csv_column_and_none(sluice, tmp_path):
    """A CSV column's text is the id (an empty field: FILE:LINE); the image
    column itself may be the id column; `none` gives FILE:LINE beside an
    `id` column, which then passes through."""
    src = tmp_path / "rows.csv"
    src.write_text("id,key,image\n"
                   f"a,k1,{JPEGS[0]}\n"
                   f"b,,{JPEGS[1]}\n"
                   f"c,k3,{JPEGS[2]}\n")
    r = dry(sluice, src, tmp_path / "key", "--id-column", "key")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = by_id(jsonl_rows(tmp_path / "key"))
    assert sorted(rows) == ["k1", "k3", "rows.csv:3"], rows
    assert "key" not in rows["k1"] and rows["k1"]["input_id"] == "a", rows["k1"]

    r = dry(sluice, src, tmp_path / "path", "--id-column", "image")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = by_id(jsonl_rows(tmp_path / "path"))
    assert sorted(rows) == sorted(str(p) for p in JPEGS[:3]), rows
    assert all(row["error"] is None and row["path"] == row["id"] for row in rows.values()), rows

    r = dry(sluice, src, tmp_path / "none", "--id-column", "none")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = by_id(jsonl_rows(tmp_path / "none"))
    assert sorted(rows) == ["rows.csv:2", "rows.csv:3", "rows.csv:4"], rows
    assert rows["rows.csv:2"]["input_id"] == "a" and rows["rows.csv:2"]["key"] == "k1", rows

    # The same for JSONL: the image column as the id column; `none` leaves
    # `id` a column like any other.
    jl = write_jsonl(tmp_path / "ids.jsonl", [{"id": 5, "image": str(JPEGS[0])}])
    r = dry(sluice, jl, tmp_path / "jpath", "--id-column", "image")
    assert r.returncode == 0, r.stderr[-2000:]
    (row,) = jsonl_rows(tmp_path / "jpath")
    assert row["id"] == row["path"] == str(JPEGS[0]) and row["error"] is None, row
    assert row["input_id"] == 5 and "image" not in row, row
    r = dry(sluice, jl, tmp_path / "jnone", "--id-column", "none")
    assert r.returncode == 0, r.stderr[-2000:]
    (row,) = jsonl_rows(tmp_path / "jnone")
    assert row["id"] == "ids.jsonl:1" and row["input_id"] == 5, row


def image_table(n, **columns):
    imgs = [JPEGS[i % len(JPEGS)] for i in range(n)]
    return pa.table({
        "image": pa.array([{"bytes": p.read_bytes(), "path": p.name} for p in imgs],
                          pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        **columns,
    })


def test_a_parquet_string_column_gives_the_ids(sluice, tmp_path):
    """A Hugging Face-style Parquet file keyed by `key`: the ids are its
    values (a null: FILE:ROW), the column leaves the pass-through columns
    (JSONL and Parquet output alike); without the option the ids stay
    FILE:ROW; a file without the column fails whole, naming the file and
    the column; an integer column of an Arrow file gives ids too."""
    table = image_table(4, key=pa.array(["a-0", None, "a-2", "a-3"], pa.string()),
                        label=pa.array([0, 1, 2, 3], pa.int64()))
    pq.write_table(table, tmp_path / "train.parquet")
    r = dry(sluice, tmp_path / "train.parquet", tmp_path / "o", "--id-column", "key")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = by_id(jsonl_rows(tmp_path / "o"))
    assert sorted(rows) == ["a-0", "a-2", "a-3", "train.parquet:1"], rows
    assert all("key" not in row and "input_key" not in row for row in rows.values()), rows
    assert rows["a-2"]["label"] == 2 and rows["train.parquet:1"]["label"] == 1, rows

    r = dry(sluice, tmp_path / "train.parquet", tmp_path / "pqo", "--id-column", "key",
            "--format", "parquet")
    assert r.returncode == 0, r.stderr[-2000:]
    (part,) = sorted((tmp_path / "pqo").glob("part-*.parquet"))
    got = pq.read_table(part)
    assert "key" not in got.column_names, got.column_names
    assert sorted(got.column("id").to_pylist()) == ["a-0", "a-2", "a-3", "train.parquet:1"]

    r = dry(sluice, tmp_path / "train.parquet", tmp_path / "plain")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = by_id(jsonl_rows(tmp_path / "plain"))
    assert sorted(rows) == [f"train.parquet:{i}" for i in range(4)]
    assert rows["train.parquet:0"]["key"] == "a-0", rows

    pq.write_table(image_table(2, other=pa.array(["x", "y"])), tmp_path / "nokey.parquet")
    r = dry(sluice, tmp_path / "nokey.parquet", tmp_path / "nokey", "--id-column", "key")
    assert r.returncode == 3, r.stderr[-2000:]
    (row,) = jsonl_rows(tmp_path / "nokey")
    assert "nokey.parquet: no id column 'key' (--id-column key)" in row["error"], row
    pq.write_table(image_table(2, key=pa.array([0.5, 1.5])), tmp_path / "real.parquet")
    r = dry(sluice, tmp_path / "real.parquet", tmp_path / "real", "--id-column", "key")
    (row,) = jsonl_rows(tmp_path / "real")
    assert "id column 'key' (--id-column key) is not a top-level string, integer or decimal" in row["error"]

    ipc = pytest.importorskip("pyarrow.ipc")
    arrow_table = pa.table({"path": pa.array([str(p) for p in JPEGS[:3]]),
                            "uid": pa.array([10, 11, None], pa.int32())})
    with ipc.new_file(str(tmp_path / "rows.arrow"), arrow_table.schema) as w:
        w.write_table(arrow_table)
    r = dry(sluice, tmp_path / "rows.arrow", tmp_path / "arrow", "--id-column", "uid")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = by_id(jsonl_rows(tmp_path / "arrow"))
    assert sorted(rows) == ["10", "11", "rows.arrow:2"], rows
    assert all("uid" not in row for row in rows.values()), rows


def test_an_unsigned_64_bit_column_past_int64_max_gives_its_exact_digits(sluice, tmp_path):
    """An Arrow uint64 and a Parquet UINT_64 (INTEGER(64, false)) id column:
    a value past INT64_MAX is the id as its exact decimal text (no double,
    which would round 2^64-1 and 2^64-2 together, and no fall back to
    FILE:ROW); one below is its digits as any integer's."""
    values = [2**64 - 1, 2**64 - 2, 2**63, 7, None]
    want = sorted(["18446744073709551615", "18446744073709551614", "9223372036854775808", "7"])
    ipc = pytest.importorskip("pyarrow.ipc")
    arrow_table = pa.table({"path": pa.array([str(JPEGS[i % len(JPEGS)]) for i in range(len(values))]),
                            "uid": pa.array(values, pa.uint64())})
    with ipc.new_file(str(tmp_path / "big.arrow"), arrow_table.schema) as w:
        w.write_table(arrow_table)
    r = dry(sluice, tmp_path / "big.arrow", tmp_path / "arrow", "--id-column", "uid")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = by_id(jsonl_rows(tmp_path / "arrow"))
    assert sorted(rows) == sorted(want + ["big.arrow:4"]), rows
    assert all("uid" not in row and row["error"] is None for row in rows.values()), rows

    pq.write_table(image_table(len(values), uid=pa.array(values, pa.uint64())), tmp_path / "big.parquet")
    assert pq.read_schema(tmp_path / "big.parquet").field("uid").type == pa.uint64()
    r = dry(sluice, tmp_path / "big.parquet", tmp_path / "pq", "--id-column", "uid")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = by_id(jsonl_rows(tmp_path / "pq"))
    assert sorted(rows) == sorted(want + ["big.parquet:4"]), rows
    assert all("uid" not in row and row["error"] is None for row in rows.values()), rows


def test_a_manifest_integer_past_int64_gives_its_exact_digits(sluice, tmp_path):
    """A JSONL (JSON) manifest's `id` (or --id-column's) integer no int64
    holds (a 64-bit hash): the id is its digits as written, not FILE:LINE;
    a column passing through keeps the double it is read as; a real stays
    no id."""
    src = write_jsonl(tmp_path / "big.jsonl", [])
    src.write_text(
        f'{{"id": 18446744073709551615, "h": 18446744073709551615, "image": "{JPEGS[0]}"}}\n'
        f'{{"id": 18446744073709551614, "image": "{JPEGS[1]}"}}\n'
        f'{{"id": -9223372036854775809, "image": "{JPEGS[2]}"}}\n'
        f'{{"id": 1.8446744073709552e19, "image": "{JPEGS[0]}"}}\n')
    r = dry(sluice, src, tmp_path / "o")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = by_id(jsonl_rows(tmp_path / "o"))
    assert sorted(rows) == sorted(["18446744073709551615", "18446744073709551614",
                                   "-9223372036854775809", "big.jsonl:4"]), rows
    assert rows["18446744073709551615"]["h"] == 18446744073709551615.0, rows
    assert rows["big.jsonl:4"]["input_id"] == 1.8446744073709552e19, rows
    r = dry(sluice, src, tmp_path / "h", "--id-column", "h")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = by_id(jsonl_rows(tmp_path / "h"))
    assert "18446744073709551615" in rows and "h" not in rows["18446744073709551615"], rows
    # A JSON array's records alike.
    arr = tmp_path / "big.json"
    arr.write_text(f'[{{"id": 18446744073709551615, "image": "{JPEGS[0]}"}},\n'
                   f' {{"id": 18446744073709551614, "image": "{JPEGS[1]}"}}]\n')
    r = dry(sluice, arr, tmp_path / "arr")
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(by_id(jsonl_rows(tmp_path / "arr"))) == ["18446744073709551614",
                                                           "18446744073709551615"]


def test_a_resume_with_the_column_writes_nothing_new(sluice, tmp_path):
    """The option is in the fingerprint: the same command again writes
    nothing (every row done under its column's id); a line the first run
    failed under its place (past --max-line-bytes) counts as done under that
    place too; the command without the option is refused, naming it."""
    rows = [{"image_id": 100 + i, "image": str(JPEGS[i % len(JPEGS)])} for i in range(5)]
    rows[2]["note"] = "x" * (1 << 20)
    src = write_jsonl(tmp_path / "list.jsonl", rows)
    out = tmp_path / "o"
    r = dry(sluice, src, out, "--id-column", "image_id", "--max-line-bytes", "1M")
    assert r.returncode == 3, r.stderr[-2000:]  # the long line failed
    first = by_id(jsonl_rows(out))
    assert sorted(first) == ["100", "101", "103", "104", "list.jsonl:3"], first
    r = dry(sluice, src, out, "--id-column", "image_id", "--max-line-bytes", "2M")
    assert r.returncode == 3, r.stderr[-2000:]  # its failed row is still the output's
    assert len(jsonl_rows(out)) == 5, "a row written again"
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows"]["skipped"] == 5, summary["rows"]
    r = dry(sluice, src, out)
    assert r.returncode == 2 and "id_column" in r.stderr, r.stderr[-2000:]


def test_a_repeated_value_stops_the_run_naming_the_column(sluice, tmp_path):
    src = write_jsonl(tmp_path / "dup.jsonl", [
        {"uid": "p", "image": str(JPEGS[0])},
        {"uid": "q", "image": str(JPEGS[1])},
        {"uid": "p", "image": str(JPEGS[2])},
    ])
    r = dry(sluice, src, tmp_path / "o", "--id-column", "uid")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "the inputs repeat the row id 'p' of column 'uid' (" in r.stderr, r.stderr[-2000:]
    assert "dup.jsonl:1, then " in r.stderr and "dup.jsonl:3)" in r.stderr, r.stderr[-2000:]
    assert "--id-column" in r.stderr, r.stderr[-2000:]


def test_an_empty_name_is_refused(sluice, tmp_path):
    src = write_jsonl(tmp_path / "l.jsonl", [{"image": str(JPEGS[0])}])
    r = dry(sluice, src, tmp_path / "o", "--id-column", "")
    assert r.returncode == 2 and "--id-column is empty" in r.stderr, r.stderr[-2000:]


def test_inputs_without_columns_refuse_it(sluice, tmp_path):
    """A folder, an image file and WebDataset shards name their rows by
    path and key: --id-column would change nothing, so it is refused (exit
    2) rather than ignored."""
    from conftest import wds_shard
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(JPEGS[0].read_bytes())
    shard = tmp_path / "s-000.tar"
    shard.write_bytes(wds_shard([("k1.jpg", JPEGS[0].read_bytes())]))
    for inputs, kind in ((folder, "a folder"), (folder / "a.jpg", "an image or video file"),
                         (shard, "a WebDataset shard")):
        out = tmp_path / f"o-{kind.replace(' ', '-')}"
        r = dry(sluice, inputs, out, "--id-column", "uid")
        assert r.returncode == 2, r.stderr[-2000:]
        assert (f"--id-column names a column of a manifest, Parquet or Arrow file; '{inputs}' "
                f"is {kind}, whose rows have no columns to take an id from: drop --id-column, "
                "or set it to none") in r.stderr, r.stderr[-2000:]
        assert not (out / "part-00000.jsonl").exists()


def test_none_cancels_a_job_files_id_column_for_inputs_without_columns(sluice, tmp_path):
    """A job file written for manifests (input.id_column: uid) could not be
    run over a folder: --id-column none, which asks for the ids a folder has
    anyway, was refused as the column was. It now runs, with the folder's
    ids, and the folder resumes with or without it (the option is no part
    of its fingerprint)."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(2):
        (folder / f"{k}.jpg").write_bytes(JPEGS[k].read_bytes())
    job = tmp_path / "job.yaml"
    job.write_text("version: 1\ninput:\n  id_column: uid\n")
    out = tmp_path / "out"
    r = sluice.run("run", job, folder, "-o", out, "--dry-run", *QUIET)
    assert r.returncode == 2 and ("job.yaml:3:14: input.id_column names a column" in r.stderr and
                                  "drop input.id_column, or set it to none" in r.stderr), r.stderr
    r = sluice.run("run", job, folder, "-o", out, "--dry-run", "--id-column", "none", "--limit", "1",
                   *QUIET)
    assert r.returncode == 0, r.stderr[-2000:]
    r = dry(sluice, folder, out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(row["id"] for row in jsonl_rows(out)) == ["0.jpg", "1.jpg"]
