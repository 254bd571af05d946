"""End-to-end tests of Arrow IPC inputs (docs/inputs.md, io/source_arrow.c):
a Hugging Face dataset as save_to_disk leaves it (stream-format .arrow
shards, several record batches), pyarrow's file format, Feather's lz4 and
zstd-compressed batches, dictionary-encoded columns (pandas categoricals),
what polars writes (string views, its file format read by the footer),
every kind of image column, every column passed
through as pyarrow reads it, and broken files as failed rows naming the
file and the cause, with no sanitizer report. test_s3.py reads one from a
bucket."""
import datetime
import io
import json
import pathlib
import struct

import pytest

from conftest import read_rows, sample_images

pa = pytest.importorskip("pyarrow")
ipc = pytest.importorskip("pyarrow.ipc")

SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "Segmentation fault")
JPEGS = [p for p in sample_images() if p.suffix == ".jpg"]
IMG = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def dry_run(sluice, inputs, out, *extra):
    if not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    r = sluice.run("caption", *map(str, inputs), "-o", out, "--dry-run", "--metrics-addr", "off", "-q", *extra)
    assert not any(m in r.stderr for m in SANITIZER_MARKS), r.stderr
    return r


def by_id(rows):
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), f"a row twice: {ids}"
    return {r["id"]: r for r in rows}


def write_stream(path, table, batch_rows):
    with ipc.new_stream(str(path), table.schema) as w:
        w.write_table(table, max_chunksize=batch_rows)


def dataset_table(start, n, folder):
    """A Hugging Face image dataset's columns, and the pass-through columns
    of every kind pyarrow has that sluice writes as JSON."""
    rows = range(start, start + n)
    images = []
    for i in rows:
        p = JPEGS[i % len(JPEGS)]
        if i % 5 == 3:  # the path alone, relative to the shard's folder
            (folder / p.name).write_bytes(p.read_bytes())
            images.append({"bytes": None, "path": p.name})
        else:
            images.append({"bytes": p.read_bytes(), "path": p.name})
    conv = pa.struct([("from", pa.string()), ("value", pa.string())])
    return pa.table({
        "image": pa.array(images, IMG),
        "label": pa.array([i if i % 4 else None for i in rows], pa.int64()),
        "score": pa.array([i / 8 for i in rows], pa.float32()),
        "ok": pa.array([i % 3 == 0 for i in rows]),
        "text": pa.array([f"row {i} \"quoted\" \u00e9" for i in rows], pa.large_string()),
        "tags": pa.array([[f"t{i}", None] if i % 2 else [] for i in rows], pa.list_(pa.string())),
        "bbox": pa.array([[[i, 1.5, 2.0, 3.0]] * (i % 3) for i in rows], pa.list_(pa.list_(pa.float64(), 4))),
        "meta": pa.array([{"w": i, "src": None if i % 2 else "web"} for i in rows],
                         pa.struct([("w", pa.int16()), ("src", pa.string())])),
        "attrs": pa.array([[("k", i), ("j", None)] for i in rows], pa.map_(pa.string(), pa.int32())),
        "codes": pa.array([[(i, "a")] for i in rows], pa.map_(pa.int32(), pa.string())),
        "taken": pa.array([datetime.datetime(2024, 1, 1) + datetime.timedelta(seconds=i) for i in rows],
                          pa.timestamp("ms")),
        "big": pa.array([2 ** 63 + i for i in rows], pa.uint64()),
        "blob": pa.array([b"\x00\x01" for _ in rows], pa.binary()),
        "conversations": pa.array([[{"from": "human", "value": f"<image>\nQ{i}?"}] for i in rows], pa.list_(conv)),
    })


def expected(table):
    """Each row's pass-through columns as sluice writes them: maps with
    string keys objects, others {key, value} pairs; timestamps integers."""
    taken = table["taken"].cast(pa.int64()).to_pylist()
    want = []
    for k, row in enumerate(table.to_pylist()):
        row.pop("image")
        row.pop("blob")
        row["attrs"] = dict(row["attrs"])
        row["codes"] = [{"key": a, "value": b} for a, b in row["codes"]]
        row["taken"] = taken[k]
        want.append(row)
    return want


def check_rows(rows, name, table, folder_offset=0):
    """rows (by id) hold name's rows as expected(table) says, each with its
    image read."""
    for i, want in enumerate(expected(table)):
        row = rows[f"{name}:{i}"]
        assert row["error"] is None, row
        assert "blob" not in row and "image" not in row
        for col, value in want.items():
            got = row[col]
            if col in ("score", "big"):  # float32; uint64 past 2^63 is a double in JSON
                assert got == pytest.approx(value), (col, got, value)
            else:
                assert got == value, (name, i, col, got, value)
        src = JPEGS[(folder_offset + i) % len(JPEGS)]
        assert row["input_bytes"] == src.stat().st_size


def test_a_dataset_saved_to_disk(sluice, tmp_path):
    ds = tmp_path / "ds"
    ds.mkdir()
    tables = [dataset_table(0, 7, ds), dataset_table(7, 5, ds)]
    for k, t in enumerate(tables):
        write_stream(ds / f"data-0000{k}-of-00002.arrow", t, 3)
    (ds / "dataset_info.json").write_text("{}")
    r = dry_run(sluice, ds / "*.arrow", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    rows = by_id(read_rows(tmp_path / "o"))
    assert len(rows) == 12
    # The progress total comes from the record batches' headers alone.
    r = sluice.run("caption", str(ds / "*.arrow"), "-o", tmp_path / "p", "--dry-run", "--metrics-addr", "off",
                   "--progress-every", "0.05")
    assert r.returncode == 0, r.stderr
    last = [l for l in r.stderr.splitlines() if l.startswith("progress:")][-1]
    assert "12 of 12 (100%)" in last, last
    for k, t in enumerate(tables):
        check_rows(rows, f"data-0000{k}-of-00002.arrow", t, 7 * k)


def test_images_not_embedded_fail_naming_the_path_they_had(sluice, tmp_path):
    """datasets keeps only an image's path when it did not embed it (bytes
    null): a path that is not on this machine fails its row at read, naming
    the row, the path and what to do, not as a bare "cannot open"."""
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "here.jpg").write_bytes(JPEGS[0].read_bytes())
    write_stream(ds / "data-00000-of-00001.arrow", pa.table({"image": pa.array(
        [{"bytes": None, "path": "here.jpg"}, {"bytes": None, "path": "/home/someone/.cache/a.jpg"},
         {"bytes": b"", "path": "elsewhere/b.jpg"}], IMG)}), 3)
    r = dry_run(sluice, ds / "*.arrow", tmp_path / "o")
    assert r.returncode == 3, r.stderr
    rows = by_id(read_rows(tmp_path / "o"))
    shard = ds / "data-00000-of-00001.arrow"
    assert rows["data-00000-of-00001.arrow:0"]["error"] is None
    assert rows["data-00000-of-00001.arrow:1"]["error"] == (
        f"{shard} row 1, column 'image': the image's bytes are null, and its path "
        "'/home/someone/.cache/a.jpg' cannot be opened: No such file or directory (a dataset "
        "saved without its images keeps only the paths they had where it was made: put them "
        "there, or save the dataset with its images embedded)")
    assert rows["data-00000-of-00001.arrow:2"]["error"].startswith(
        f"{shard} row 2, column 'image': the image's bytes are empty, and its path "
        f"'{ds / 'elsewhere/b.jpg'}' cannot be opened")
    assert rows["data-00000-of-00001.arrow:2"]["error"].endswith("pass --image-root FOLDER where they are)")
    assert {row["error_stage"] for row in rows.values() if row["error"]} == {"read"}


def test_compressed_batches(sluice, tmp_path):
    """Feather as pandas and pyarrow write it by default (the file format,
    lz4-compressed buffers) and a zstd-compressed stream: every row and
    column as in an uncompressed file, progress totals from the headers."""
    import pyarrow.feather as feather
    table = dataset_table(0, 9, tmp_path)
    feather.write_feather(table, str(tmp_path / "lz4.feather"), chunksize=4)
    assert ipc.open_file(str(tmp_path / "lz4.feather")).num_record_batches == 3
    with ipc.new_stream(str(tmp_path / "zstd.arrow"), table.schema,
                        options=ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(table, max_chunksize=2)
    # Compression took: the bytes of the images (much alike) are not stored plain.
    assert JPEGS[0].read_bytes()[:4096] not in (tmp_path / "lz4.feather").read_bytes()
    r = sluice.run("caption", str(tmp_path / "lz4.feather"), str(tmp_path / "zstd.arrow"), "-o", tmp_path / "o",
                   "--dry-run", "--metrics-addr", "off", "--progress-every", "0.05")
    assert r.returncode == 0, r.stderr
    assert not any(m in r.stderr for m in SANITIZER_MARKS), r.stderr
    last = [l for l in r.stderr.splitlines() if l.startswith("progress:")][-1]
    assert "18 of 18 (100%)" in last, last
    rows = by_id(read_rows(tmp_path / "o"))
    assert len(rows) == 18
    check_rows(rows, "lz4.feather", table)
    check_rows(rows, "zstd.arrow", table)


def test_the_file_format_and_every_image_kind(sluice, tmp_path):
    """pyarrow's file format (ARROW1 magic, footer), image bytes in a binary
    column, paths and URLs in a string column, a list of image structs
    (Sequence(Image())); a null image fails its row naming the column."""
    p = JPEGS[0]
    (tmp_path / p.name).write_bytes(p.read_bytes())
    cases = {
        "png.arrow": pa.table({"png": pa.array([p.read_bytes(), None], pa.binary())}),
        "path.arrow": pa.table({"file_name": pa.array([p.name, str(tmp_path / "missing.jpg")])}),
        "images.arrow": pa.table({"images": pa.array([[{"bytes": p.read_bytes(), "path": None},
                                                       {"bytes": None, "path": p.name}], None], pa.list_(IMG))}),
    }
    for name, table in cases.items():
        with ipc.new_file(str(tmp_path / name), table.schema) as w:
            w.write_table(table)
    r = dry_run(sluice, tmp_path / "png.arrow", tmp_path / "o1", "--image-column", "png")
    assert r.returncode == 3, r.stderr
    rows = by_id(read_rows(tmp_path / "o1"))
    assert rows["png.arrow:0"]["error"] is None and rows["png.arrow:0"]["input_bytes"] == p.stat().st_size
    assert "column 'png' holds no image bytes or path" in rows["png.arrow:1"]["error"]
    r = dry_run(sluice, tmp_path / "path.arrow", tmp_path / "o2")
    assert r.returncode == 3, r.stderr
    rows = by_id(read_rows(tmp_path / "o2"))
    assert rows["path.arrow:0"]["error"] is None and rows["path.arrow:0"]["file_name"] == p.name
    assert "missing.jpg" in rows["path.arrow:1"]["error"]
    r = dry_run(sluice, tmp_path / "images.arrow", tmp_path / "o3")
    assert r.returncode == 3, r.stderr
    rows = by_id(read_rows(tmp_path / "o3"))
    assert rows["images.arrow:0"]["error"] is None and rows["images.arrow:0"]["image_count"] == 2
    assert "a null list, no images" in rows["images.arrow:1"]["error"]


def categorical_table(kinds):
    images = [JPEGS[i % len(JPEGS)] for i in range(len(kinds))]
    return pa.table({
        "image": pa.array([{"bytes": p.read_bytes(), "path": p.name} for p in images], IMG),
        "kind": pa.array(kinds).dictionary_encode(),
        "tags": pa.array([["x", "y"], ["y"], [], None][:len(kinds)]).cast(
            pa.list_(pa.dictionary(pa.int8(), pa.string()))),
    })


def test_dictionary_encoded_columns(sluice, tmp_path):
    """A pandas DataFrame with categorical columns as to_feather writes it
    (dictionary batches, lz4-compressed), a stream whose second batch
    replaces the dictionaries, and one that adds to them by a delta (refused
    after the rows before it, naming the file): values as pyarrow reads
    them, a categorical column of image paths read as paths."""
    import pyarrow.feather as feather
    first = categorical_table(["cat", "dog", "cat", None])
    second = categorical_table(["emu", "emu", "fox", "cat"])
    # What DataFrame.to_feather hands pyarrow for pd.Categorical columns:
    # the image paths one of them (two rows share a file).
    df = pa.table({"path": pa.array([JPEGS[0].name, JPEGS[1].name, JPEGS[0].name]).dictionary_encode(),
                   "split": pa.array(["train", "test", "train"]).dictionary_encode().cast(
                       pa.dictionary(pa.int8(), pa.string())),
                   "n": [1, 2, 3]})
    for p in JPEGS[:3]:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    feather.write_feather(df, str(tmp_path / "pandas.feather"))
    with ipc.new_stream(str(tmp_path / "replaced.arrow"), first.schema,
                        options=ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(first)
        w.write_table(second)
    with ipc.new_stream(str(tmp_path / "delta.arrow"), first.schema,
                        options=ipc.IpcWriteOptions(emit_dictionary_deltas=True)) as w:
        w.write_table(first)
        more = pa.DictionaryArray.from_arrays(pa.array([0, 1, 2, 3], pa.int32()), pa.array(["cat", "dog", "hen", "owl"]))
        w.write_table(pa.table({"image": first["image"], "kind": more, "tags": first["tags"]}))
    r = dry_run(sluice, [tmp_path / "pandas.feather", tmp_path / "*.arrow"], tmp_path / "o")
    assert r.returncode == 3, r.stderr
    rows = by_id(read_rows(tmp_path / "o"))
    for i, want in enumerate(df.to_pylist()):
        row = rows[f"pandas.feather:{i}"]
        assert row["error"] is None and row["split"] == want["split"] and row["n"] == want["n"], row
        assert row["path"] == str(tmp_path / want["path"]) and row["input_bytes"] == (tmp_path / want["path"]).stat().st_size
    for i, want in enumerate(first.to_pylist() + second.to_pylist()):
        row = rows[f"replaced.arrow:{i}"]
        assert row["error"] is None and row["kind"] == want["kind"] and row["tags"] == want["tags"], (i, row)
    for i, want in enumerate(first.to_pylist()):
        row = rows[f"delta.arrow:{i}"]
        assert row["error"] is None and row["kind"] == want["kind"] and row["tags"] == want["tags"], (i, row)
    bad = rows["delta.arrow:4"]["error"]
    assert "delta.arrow" in bad and "a delta dictionary batch" in bad, bad
    assert len(rows) == 3 + 8 + 5


def test_what_datasets_and_pandas_write(sluice, tmp_path):
    """The files themselves: a Dataset with an Image, a ClassLabel and a
    LLaVA conversation saved by the datasets library's save_to_disk (two
    shards), and a DataFrame with a categorical column written by pandas'
    to_feather (lz4, dictionary batches): every row, its image and columns
    as the libraries read them back."""
    datasets = pytest.importorskip("datasets")
    pd = pytest.importorskip("pandas")
    from datasets import ClassLabel, Dataset, Features, Image, Value
    paths = [str(p) for p in JPEGS[:6]]
    ds = Dataset.from_dict(
        {"image": paths, "text": [f"t{i}" for i in range(6)], "label": [i % 2 for i in range(6)],
         "conversations": [[{"from": "human", "value": f"<image>\nQ{i}?"}, {"from": "gpt", "value": "A"}]
                           for i in range(6)]},
        features=Features({"image": Image(), "text": Value("string"), "label": ClassLabel(names=["a", "b"]),
                           "conversations": [{"from": Value("string"), "value": Value("string")}]}))
    ds.save_to_disk(str(tmp_path / "saved"), num_shards=2)
    df = pd.DataFrame({"path": paths, "kind": pd.Categorical(["x", "y"] * 3), "n": range(6)})
    df.to_feather(tmp_path / "pandas.feather")
    r = sluice.run("caption", str(tmp_path / "saved" / "*.arrow"), "-o", tmp_path / "o", "--dry-run",
                   "--metrics-addr", "off", "-q")
    assert r.returncode == 0, r.stderr
    rows = by_id(read_rows(tmp_path / "o"))
    back = datasets.load_from_disk(str(tmp_path / "saved"))
    assert len(rows) == len(back) == 6
    shard_rows = [len(datasets.Dataset.from_file(str(f))) for f in sorted((tmp_path / "saved").glob("*.arrow"))]
    ids = [f"data-0000{k}-of-00002.arrow:{i}" for k, n in enumerate(shard_rows) for i in range(n)]
    for i, want in zip(ids, back.cast_column("image", Image(decode=False))):
        row = rows[i]
        assert row["error"] is None, row
        assert row["input_bytes"] == len(want["image"]["bytes"])
        assert (row["text"], row["label"], row["conversations"]) == (want["text"], want["label"],
                                                                     want["conversations"])
    r = dry_run(sluice, tmp_path / "pandas.feather", tmp_path / "p")
    assert r.returncode == 0, r.stderr
    rows = by_id(read_rows(tmp_path / "p"))
    for i, want in enumerate(pd.read_feather(tmp_path / "pandas.feather").to_dict("records")):
        row = rows[f"pandas.feather:{i}"]
        assert row["error"] is None and row["path"] == want["path"], row
        assert (row["kind"], row["n"]) == (want["kind"], want["n"])
        assert row["input_bytes"] == pathlib.Path(want["path"]).stat().st_size


def test_what_polars_writes(sluice, tmp_path):
    """polars' write_ipc and write_ipc_stream as they are by default: string
    and binary views (their data in several buffers: a batch's strings past
    polars' buffer size), categoricals and enums as dictionaries of views,
    lists and structs of views, the file format read through its footer
    (polars writes the schema message after the magic without its length
    prefix), uncompressed, lz4 and zstd: every row as polars reads it back,
    progress totals from the headers. Parquet output keeps the view columns
    as strings (DuckDB reads them)."""
    pl = pytest.importorskip("polars")
    n = 40
    paths = [str(JPEGS[i % len(JPEGS)]) for i in range(n)]
    df = pl.DataFrame({
        "image": paths,
        # 40 strings of 3000 bytes: more than one of polars' data buffers
        "long": [f"{i:04d}" + "x" * 2996 for i in range(n)],
        "short": [f"s{i}" if i % 3 else None for i in range(n)],
        "raw": [bytes([i]) * 20 for i in range(n)],
        "kind": pl.Series(["cat", "dog-with-a-long-name"] * (n // 2), dtype=pl.Categorical),
        "split": pl.Series(["train", "test"] * (n // 2), dtype=pl.Enum(["train", "test"])),
        "tags": [[f"tag-number-{i}", "t"] if i % 2 else [] for i in range(n)],
        "meta": [{"src": f"source-{i}-long-enough", "w": i} for i in range(n)],
    })
    df.write_ipc(tmp_path / "plain.arrow")
    df.write_ipc(tmp_path / "zstd.arrow", compression="zstd")
    df.write_ipc(tmp_path / "lz4.ipc", compression="lz4")
    df.write_ipc_stream(tmp_path / "stream.arrows")
    schema = ipc.open_file(str(tmp_path / "plain.arrow")).schema
    assert schema.field("image").type == pa.string_view()
    assert schema.field("kind").type.value_type == pa.string_view()
    blob = (tmp_path / "plain.arrow").read_bytes()
    assert blob[8:12] != b"\xff\xff\xff\xff"  # no stream after the magic: only the footer reads it
    stream = ipc.open_stream(str(tmp_path / "stream.arrows")).read_all()
    views = stream.column("long").chunks[0]
    assert len(views.buffers()) > 3  # validity, views and more than one data buffer
    files = ["plain.arrow", "zstd.arrow", "lz4.ipc", "stream.arrows"]
    r = sluice.run("caption", *[str(tmp_path / f) for f in files], "-o", tmp_path / "o", "--dry-run",
                   "--metrics-addr", "off", "--progress-every", "0.05")
    assert r.returncode == 0, r.stderr
    assert not any(m in r.stderr for m in SANITIZER_MARKS), r.stderr
    last = [l for l in r.stderr.splitlines() if l.startswith("progress:")][-1]
    assert f"{4 * n} of {4 * n} (100%)" in last, last
    rows = by_id(read_rows(tmp_path / "o"))
    assert len(rows) == 4 * n
    for f in files:
        back = (pl.read_ipc_stream if f.endswith(".arrows") else pl.read_ipc)(tmp_path / f)
        for i, want in enumerate(back.to_dicts()):
            row = rows[f"{f}:{i}"]
            assert row["error"] is None, row
            assert row["path"] == want["image"] and row["input_bytes"] == pathlib.Path(want["image"]).stat().st_size
            for col in ("long", "short", "kind", "split", "tags", "meta"):
                assert row[col] == want[col], (f, i, col, row[col], want[col])
            assert "raw" not in row
    r = dry_run(sluice, tmp_path / "zstd.arrow", tmp_path / "pq", "--format", "parquet")
    assert r.returncode == 0, r.stderr
    duckdb = pytest.importorskip("duckdb")
    got = duckdb.sql(f"SELECT long, kind, tags, meta.src FROM '{tmp_path / 'pq'}/*.parquet' ORDER BY id").fetchall()
    want = df.select("long", "kind", "tags", "meta").to_dicts()
    assert len(got) == n
    assert sorted(got) == sorted((w["long"], w["kind"], w["tags"], w["meta"]["src"]) for w in want)


def test_views_outside_their_buffers_fail_the_file(sluice, tmp_path):
    """A string view whose offset or buffer index points outside the data
    buffers (nanoarrow's validation does not look) fails the rest of its
    file naming it and the cause, with no sanitizer report; the batch
    before it is read."""
    long = "Z" * 40
    table = pa.table({"image": pa.array([str(JPEGS[0])] * 4, pa.string_view()),
                      "text": pa.array(["a", "b", "c", long], pa.string_view())})
    first = pa.table({"image": pa.array([str(JPEGS[1])] * 2, pa.string_view()),
                      "text": pa.array(["ok", "fine"], pa.string_view())})
    head = struct.pack("<i", 40) + b"ZZZZ"
    for name, index, offset in (("offset.arrow", 0, 1 << 30), ("index.arrow", 7, 0), ("negative.arrow", -1, 0)):
        with ipc.new_stream(str(tmp_path / name), table.schema) as w:
            w.write_table(first)
            w.write_table(table)
        data = (tmp_path / name).read_bytes()
        assert data.count(head) == 1
        at = data.index(head) + len(head)
        (tmp_path / name).write_bytes(data[:at] + struct.pack("<ii", index, offset) + data[at + 8:])
    r = dry_run(sluice, tmp_path / "*.arrow", tmp_path / "o")
    assert r.returncode == 3, r.stderr
    rows = by_id(read_rows(tmp_path / "o"))
    for name in ("offset.arrow", "index.arrow", "negative.arrow"):
        assert rows[f"{name}:0"]["error"] is None and rows[f"{name}:1"]["text"] == "fine"
        err = rows[f"{name}:2"]["error"]
        assert name in err and "record batch 2 is corrupt" in err and "outside its data buffers" in err, err
        assert f"{name}:3" not in rows


def test_parquet_output_keeps_the_arrow_types(sluice, tmp_path):
    """Written as Parquet, an Arrow input's pass-through columns take the
    types its schema gives, not what its first rows' values suggest: a map
    with two keys is a map (a struct of the keys seen from samples), a
    column null in every row keeps its float type, a dictionary of strings
    is a string, a map of integer keys a list of key/value structs; a
    uint64 column past 2^63 is a double as its values are; nothing is left
    out."""
    ds = tmp_path / "ds"
    ds.mkdir()
    table = dataset_table(0, 6, ds)
    table = table.append_column("never", pa.array([None] * 6, pa.float32())) \
        .append_column("kind", pa.array(["x", "y"] * 3).dictionary_encode())
    write_stream(ds / "data.arrow", table, 4)
    r = dry_run(sluice, ds / "data.arrow", tmp_path / "o", "--format", "parquet")
    assert r.returncode == 0, r.stderr
    pq = pytest.importorskip("pyarrow.parquet")
    out = pq.read_table(tmp_path / "o" / "part-00000.parquet")
    types = {f.name: str(f.type) for f in out.schema}
    assert types["attrs"].startswith("map<string, int64"), types
    assert types["never"] == "double" and types["kind"] == "string", types
    assert types["codes"] == "list<element: struct<key: int64, value: string>>", types
    assert types["meta"] == "struct<w: int64, src: string>" and types["big"] == "double", types
    assert types["bbox"] == "list<element: list<element: double>>", types
    assert types["conversations"] == "list<element: struct<from: string, value: string>>", types
    assert types["label"] == "int64" and types["taken"] == "int64" and types["ok"] == "bool", types
    assert "blob" not in types
    summary = json.loads((tmp_path / "o" / "_summary.json").read_text())
    assert summary["unfit_values"] == {}, summary["unfit_values"]
    rows = by_id(out.to_pylist())
    for i, want in enumerate(expected(table)):
        row = rows[f"data.arrow:{i}"]
        assert dict(row["attrs"]) == want["attrs"] and row["codes"] == want["codes"], row
        assert row["never"] is None and row["kind"] == want["kind"] and row["meta"] == want["meta"]


def test_broken_files_fail_alone(sluice, tmp_path):
    """A stream cut inside a batch gives the rows before it and one failed
    row; a file that is no Arrow, a compressed one whose buffer claims to
    decompress to 2^40 bytes (refused before anything is allocated for it),
    one whose dictionary index points past its dictionary, one without an
    image column and an empty one (it said "an Arrow IPC stream begins with
    its schema") each fail as one row naming the file and the cause; the
    good file beside them is read whole."""
    good = dataset_table(0, 6, tmp_path)
    write_stream(tmp_path / "good.arrow", good, 2)
    data = (tmp_path / "good.arrow").read_bytes()
    (tmp_path / "cut.arrow").write_bytes(data[:len(data) * 2 // 3])
    (tmp_path / "noise.arrow").write_bytes(b"not an arrow file at all " * 10)
    # One int64 column of 1000 values: its data buffer's 8-byte size prefix
    # (8000) is the one such value in the file.
    paths = pa.table({"path": pa.array([f"p{i}.jpg" for i in range(1000)]),
                      "x": pa.array(range(1000), pa.int64())})
    buf = io.BytesIO()
    with ipc.new_stream(buf, paths.schema, options=ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(paths)
    data = buf.getvalue()
    assert data.count(struct.pack("<q", 8000)) == 1
    (tmp_path / "huge.arrow").write_bytes(data.replace(struct.pack("<q", 8000), struct.pack("<q", 1 << 40)))
    # Indices 0..5 into a dictionary of two: the index buffer holds the one
    # run of bytes 00..05 as int32s.
    indices = pa.DictionaryArray.from_arrays(pa.array([0, 1, 0, 1, 0, 1], pa.int32()), pa.array(["a", "b"]))
    write_stream(tmp_path / "dict.arrow", pa.table({"image": good["image"], "kind": indices}), 6)
    data = (tmp_path / "dict.arrow").read_bytes()
    run = struct.pack("<6i", 0, 1, 0, 1, 0, 1)
    assert data.count(run) == 1
    (tmp_path / "dict.arrow").write_bytes(data.replace(run, struct.pack("<6i", 0, 1, 0, 1, 0, 5)))
    write_stream(tmp_path / "noimage.arrow", pa.table({"x": [1, 2]}), 2)
    (tmp_path / "empty.arrow").write_bytes(b"")  # a copy that never started
    r = dry_run(sluice, tmp_path / "*.arrow", tmp_path / "o")
    assert r.returncode == 3, r.stderr
    rows = read_rows(tmp_path / "o")
    by = {}
    for row in rows:
        by.setdefault(row["id"].split(":")[0], []).append(row)
    assert len(by["good.arrow"]) == 6 and all(row["error"] is None for row in by["good.arrow"])
    cut_ok = [row for row in by["cut.arrow"] if row["error"] is None]
    cut_bad = [row for row in by["cut.arrow"] if row["error"]]
    assert 2 <= len(cut_ok) < 6 and len(cut_bad) == 1
    assert "cut.arrow" in cut_bad[0]["error"] and "past the file's end (truncated" in cut_bad[0]["error"]
    causes = {"noise.arrow": "not an Arrow IPC file", "huge.arrow": "claiming more than the limit",
              "dict.arrow": "dictionary index", "noimage.arrow": "no image column",
              "empty.arrow": "empty file (0 bytes), not an Arrow file"}
    for name, cause in causes.items():
        assert len(by[name]) == 1, by[name]
        err = by[name][0]["error"]
        assert name in err and cause in err, err


def left_out_run(sluice, tmp_path):
    """A dry run over tmp_path/*.arrow that must end well: (its rows by
    file, its stderr's 'left out of the output' warnings)."""
    r = sluice.run("caption", tmp_path / "*.arrow", "-o", tmp_path / "o", "--dry-run", "--metrics-addr", "off")
    assert r.returncode == 0, r.stderr
    assert not any(m in r.stderr for m in SANITIZER_MARKS), r.stderr
    by = {}
    for row in read_rows(tmp_path / "o"):
        by.setdefault(row["id"].split(":")[0], []).append(row)
    return by, [line for line in r.stderr.splitlines() if "left out of the output" in line]


def test_run_end_encoded_and_list_view_columns_are_left_out(sluice, tmp_path):
    """nanoarrow 0.9.0's IPC reader refuses the whole schema for one run-end
    encoded or list view column (pyarrow writes both), and the file failed
    as one row. Such a column only passing through is now left out of the
    output with one warning naming the file, the column and why, and the
    rest of each row is read (the columns after it too, a string view and
    numbers; the struct left out holds a dictionary and a string view),
    file and stream format
    alike. A column the job needs (the image, a prompt's field) still fails
    the file as one row naming the file, the column (its dotted path inside
    a struct) and the type, and saying what to write instead."""
    good = dataset_table(0, 3, tmp_path)
    write_stream(tmp_path / "good.arrow", good, 3)
    ree = pa.RunEndEncodedArray.from_arrays(pa.array([2, 3], pa.int32()), pa.array(["x", "y"]))
    lv = pa.array([[1, 2], [3], []], pa.list_view(pa.int32()))
    llv = pa.array([["a"], [], ["b", "c"]], pa.large_list_view(pa.string()))
    cat = pa.array(["p", "q", "p"]).dictionary_encode()
    after = {"label": pa.array(["l0", "l1", "l2"], pa.string_view()), "n": pa.array([10, 11, 12], pa.int64())}
    kept = [{"label": f"l{k}", "n": 10 + k} for k in range(3)]
    cases = {  # name: table, column left out, why
        "ree.arrow": (pa.table({"image": good["image"], "run": ree, **after}), "run",
                      "run-end encoded, which sluice cannot read: write it decoded (pyarrow: cast it to its "
                      "values' type)"),
        "lv.arrow": (pa.table({"image": good["image"], "meta": pa.StructArray.from_arrays(
                         [cat, lv, pa.array(["a long string view, not inlined", "s", ""], pa.string_view())],
                         ["cat", "ids", "note"]),
                               **after}), "meta",
                     "its 'meta.ids' is a list view, which sluice cannot read: write it as a list (pyarrow: cast "
                     "it to pa.list_)"),
        "llv.arrow": (pa.table({"tags": llv, "image": good["image"], **after}), "tags",
                      "a list view, which sluice cannot read: write it as a list (pyarrow: cast it to pa.list_)"),
    }
    for name, (table, *_rest) in cases.items():
        if name.startswith("l"):
            with ipc.new_file(str(tmp_path / name), table.schema) as w:
                w.write_table(table, max_chunksize=2)
        else:
            write_stream(tmp_path / name, table, 2)
    by, warnings = left_out_run(sluice, tmp_path)
    assert len(by["good.arrow"]) == 3 and all(row["error"] is None for row in by["good.arrow"])
    for name, (_table, column, why) in cases.items():
        rows = sorted(by[name], key=lambda row: row["id"])
        assert [row["error"] for row in rows] == [None] * 3, rows
        assert [{"label": row["label"], "n": row["n"]} for row in rows] == kept, rows
        assert all(column not in row for row in rows), rows
        assert [w for w in warnings if str(tmp_path / name) in w] == [
            f"sluice: warn: {tmp_path / name}: left out of the output, as sluice cannot read them: "
            f"column '{column}' ({why})"], warnings
    # needed: the image itself, or a prompt's field
    (tmp_path / "need").mkdir()
    write_stream(tmp_path / "need" / "ree_image.arrow", pa.table({"image": pa.RunEndEncodedArray.from_arrays(
        pa.array([3], pa.int32()), pa.array([JPEGS[0].name]))}), 3)
    for name, prompt, column, kind, todo in [
            ("ree_image.arrow", None, "image", "run-end encoded", "decoded"),
            ("ree.arrow", "x {run}", "run", "run-end encoded", "cast it to its values' type"),
            ("lv.arrow", "x {meta.ids}", "meta.ids", "a list view", "cast it to pa.list_")]:
        path = tmp_path / "need" / name if name == "ree_image.arrow" else tmp_path / name
        out = tmp_path / f"need-{name}"
        r = dry_run(sluice, path, out, *(("--prompt", prompt) if prompt else ()))
        assert r.returncode == 3, r.stderr
        rows = read_rows(out)
        assert len(rows) == 1, rows
        err = rows[0]["error"]
        assert err.startswith(f"{path}: column '{column}' is {kind}, which sluice cannot read"), err
        assert todo in err, err


def test_an_unreadable_column_of_a_later_usual_image_name_is_left_out(sluice, tmp_path):
    """Without --image-column every usual image name counted as needed: a
    run-end encoded `url` or a list view `images` beside a readable `image`
    failed the whole file as one row. The job takes `image` (the first usual
    name that holds images): the other is left out with the warning and each
    row is read. An unreadable column of a name before the readable one (a
    run-end encoded `image` beside `path`) is still the image: the file fails
    naming it."""
    images = pa.array([{"bytes": p.read_bytes(), "path": p.name} for p in JPEGS[:3]], IMG)
    url = pa.RunEndEncodedArray.from_arrays(pa.array([3], pa.int32()), pa.array(["http://x/a.jpg"]))
    lv = pa.array([["a.jpg"], [], ["b.jpg", "c.jpg"]], pa.list_view(pa.string()))
    n = pa.array([10, 11, 12], pa.int64())
    cases = {"url.arrow": (pa.table({"url": url, "image": images, "n": n}), "url", "run-end encoded"),
             "images.arrow": (pa.table({"image": images, "images": lv, "n": n}), "images", "a list view")}
    for name, (table, _column, _what) in cases.items():
        with ipc.new_file(str(tmp_path / name), table.schema) as w:
            w.write_table(table)
    by, warnings = left_out_run(sluice, tmp_path)
    for name, (_table, column, what) in cases.items():
        rows = sorted(by[name], key=lambda row: row["id"])
        assert [(row["error"], row["n"], row["width"] > 0) for row in rows] == \
            [(None, 10 + k, True) for k in range(3)], rows
        assert all(column not in row for row in rows), rows
        assert [w for w in warnings if str(tmp_path / name) in w] == [
            f"sluice: warn: {tmp_path / name}: left out of the output, as sluice cannot read them: "
            f"column '{column}' ({what}, which sluice cannot read: "
            + ("write it decoded (pyarrow: cast it to its values' type))" if column == "url" else
               "write it as a list (pyarrow: cast it to pa.list_))")], warnings
    first = tmp_path / "first" / "image_before_path.arrow"
    first.parent.mkdir()
    with ipc.new_file(str(first), pa.schema([("image", url.type), ("path", pa.string())])) as w:
        w.write_table(pa.table({"image": pa.RunEndEncodedArray.from_arrays(
            pa.array([3], pa.int32()), pa.array([str(JPEGS[0])])), "path": [str(JPEGS[0])] * 3}))
    r = dry_run(sluice, first, tmp_path / "o-first")
    assert r.returncode == 3, r.stderr
    (row,) = read_rows(tmp_path / "o-first")
    assert row["error"].startswith(f"{first}: column 'image' is run-end encoded, which sluice cannot read"), row


def test_decimals_pass_through_as_their_exact_digits(sluice, tmp_path):
    """Decimal columns of every width pass through to JSONL as their exact
    digits, the scale kept, as pyarrow's and DuckDB's JSON of a decimal
    column: they were doubles, so a decimal128(38,10)
    12345678901234567.1234567890 lost its last 10 digits and 1.10 came out
    1.1. Negatives, values past 2^64 unscaled, a negative scale, a null as
    null. Written as Parquet they were still doubles (the double nearest
    the value): now each is a DECIMAL of its precision and scale that
    pyarrow and DuckDB read back as the same Decimal, except where Parquet
    has none (a precision past 38, a negative scale): there its exact text."""
    from decimal import Decimal
    ds = tmp_path / "ds"
    ds.mkdir()
    values = {
        "price": (pa.decimal128(10, 2), [Decimal("19.99"), Decimal("-0.10"), None]),
        "exact": (pa.decimal128(38, 10), [Decimal("12345678901234567.1234567890"), Decimal("1.1000000000"),
                                          Decimal("-0.0000000001")]),
        "wide": (pa.decimal256(40, 5),
                 [Decimal("123456789012345678901234567890.12345"), Decimal("-1.00001"),
                  Decimal("0.00000")]),
        "small": (pa.decimal32(5, 1), [Decimal("0.1"), Decimal("-9999.9"), Decimal("7.0")]),
        "mid": (pa.decimal64(12, 0), [Decimal("123456789012"), Decimal("-1"), None]),
        "hundreds": (pa.decimal128(5, -2), [Decimal("12300"), Decimal("-100"), None]),
    }
    texts = {"price": ["19.99", "-0.10", "null"],
             "exact": ["12345678901234567.1234567890", "1.1000000000", "-0.0000000001"],
             "wide": ["123456789012345678901234567890.12345", "-1.00001", "0.00000"],
             "small": ["0.1", "-9999.9", "7.0"], "mid": ["123456789012", "-1", "null"],
             "hundreds": ["12300", "-100", "null"]}
    table = pa.table({"image": pa.array([{"bytes": p.read_bytes(), "path": p.name}
                                         for p in JPEGS[:3]], IMG),
                      **{k: pa.array(v, t) for k, (t, v) in values.items()}})
    write_stream(ds / "data.arrow", table, 2)
    for fmt in ("jsonl", "parquet"):
        out = tmp_path / fmt
        r = dry_run(sluice, ds / "data.arrow", out, "--format", fmt)
        assert r.returncode == 0, r.stderr
        if fmt == "jsonl":
            lines = (out / "part-00000.jsonl").read_text().splitlines()
            rows = by_id([json.loads(line, parse_float=Decimal) for line in lines])
            text = {json.loads(line)["id"]: line for line in lines}
        else:
            pq = pytest.importorskip("pyarrow.parquet")
            got = pq.read_table(out / "part-00000.parquet")
            want_types = {"price": "decimal128(10, 2)", "exact": "decimal128(38, 10)", "wide": "string",
                          "small": "decimal128(5, 1)", "mid": "decimal128(12, 0)", "hundreds": "string"}
            assert {k: str(got.schema.field(k).type) for k in values} == want_types, got.schema
            rows = by_id(got.to_pylist())
            duckdb = pytest.importorskip("duckdb")
            duck = duckdb.sql(f"SELECT id, exact, price FROM '{out / 'part-00000.parquet'}' ORDER BY id").fetchall()
            assert duck == [(f"data.arrow:{i}", values["exact"][1][i], values["price"][1][i]) for i in range(3)]
        for i in range(3):
            row = rows[f"data.arrow:{i}"]
            for k, (_, v) in values.items():
                if fmt == "jsonl":
                    assert f'"{k}":{texts[k][i]}' in text[f"data.arrow:{i}"], (k, i, text[f"data.arrow:{i}"])
                    assert row[k] == v[i], (fmt, k, i, row[k], v[i])
                elif want_types[k] == "string":
                    assert row[k] == (None if v[i] is None else texts[k][i]), (fmt, k, i, row[k], v[i])
                else:
                    assert row[k] == v[i] and str(row[k]) == str(v[i]), (fmt, k, i, row[k], v[i])
    # pyarrow reads the lines back as the decimals they were
    import pyarrow.json as pj
    back = pj.read_json(tmp_path / "jsonl" / "part-00000.jsonl", parse_options=pj.ParseOptions(
        explicit_schema=pa.schema([("id", pa.string()), ("exact", pa.decimal128(38, 10))])))
    order = sorted(range(back.num_rows), key=lambda k: back["id"][k].as_py())
    assert back["exact"].take(order).to_pylist() == values["exact"][1]


def test_decimals_inside_structs_lists_and_maps_stay_decimals_in_parquet(sluice, tmp_path):
    """A struct's decimal field, a list of decimals inside it and a map's
    decimal values were doubles in the Parquet output; each is now the
    Arrow type's DECIMAL (decimal64(3,1) as decimal128(3,1)), its values
    the same Decimals, nulls null."""
    from decimal import Decimal
    pq = pytest.importorskip("pyarrow.parquet")
    s_type = pa.struct([("p", pa.decimal128(5, 2)), ("q", pa.list_(pa.decimal64(3, 1)))])
    m_type = pa.map_(pa.string(), pa.decimal128(4, 2))
    s = [{"p": Decimal("1.10"), "q": [Decimal("-3.5"), None]}, None, {"p": None, "q": []}]
    m = [[("k", Decimal("2.00"))], None, [("a", Decimal("-0.01")), ("b", None)]]
    table = pa.table({"image": pa.array([{"bytes": p.read_bytes(), "path": p.name} for p in JPEGS[:3]], IMG),
                      "s": pa.array(s, s_type), "m": pa.array(m, m_type)})
    write_stream(tmp_path / "data.arrow", table, 2)
    r = dry_run(sluice, tmp_path / "data.arrow", tmp_path / "out", "--format", "parquet")
    assert r.returncode == 0, r.stderr
    got = pq.read_table(tmp_path / "out" / "part-00000.parquet")
    assert got.schema.field("s").type == pa.struct([("p", pa.decimal128(5, 2)),
                                                    ("q", pa.list_(pa.decimal128(3, 1)))]), got.schema
    assert got.schema.field("m").type == m_type, got.schema
    rows = by_id(got.to_pylist())
    for i in range(3):
        assert (rows[f"data.arrow:{i}"]["s"], rows[f"data.arrow:{i}"]["m"]) == (s[i], m[i]), rows[f"data.arrow:{i}"]
    assert str(rows["data.arrow:0"]["s"]["p"]) == "1.10"


def test_a_decimal_id_column_gives_its_exact_text(sluice, tmp_path):
    """--id-column naming a decimal column of an Arrow file stopped the
    file ("not a string or integer column") while a Parquet file's decimal
    id column gave its exact text. Now the same: every width, the scale
    kept (-7.0, not -7), a null the row's FILE:ROW, in the file and the
    stream format; the column is the id, not passed through too."""
    from decimal import Decimal
    values = [Decimal("1001.5"), Decimal("-7.0"), None]
    widths = [pa.decimal128(6, 1), pa.decimal256(6, 1)]
    widths += [t(6, 1) for t in (getattr(pa, "decimal32", None), getattr(pa, "decimal64", None)) if t]
    for n, kind in enumerate(widths):
        table = pa.table({"image": pa.array([{"bytes": p.read_bytes(), "path": p.name}
                                             for p in JPEGS[:3]], IMG),
                          "key": pa.array(values, kind)})
        for fmt in ("file", "stream"):
            path = tmp_path / f"k{n}-{fmt}.arrow"
            if fmt == "file":
                with ipc.new_file(str(path), table.schema) as w:
                    w.write_table(table)
            else:
                write_stream(path, table, 2)
            out = tmp_path / f"out{n}-{fmt}"
            r = dry_run(sluice, path, out, "--format", "jsonl", "--id-column", "key")
            assert r.returncode == 0, (kind, fmt, r.stderr)
            rows = [json.loads(line) for line in (out / "part-00000.jsonl").read_text().splitlines()]
            assert sorted(row["id"] for row in rows) == sorted(["1001.5", "-7.0", f"{path.name}:2"]), \
                (kind, fmt, rows)
            assert all("key" not in row for row in rows), (kind, fmt, rows)


def test_float_columns_pass_through_as_their_shortest_text(sluice, tmp_path):
    """A float32 column's 0.1 came out in the JSONL as 0.10000000149011612
    (the float's exact value) and a double's 19.99 as 19.989999999999998:
    each is now the shortest text that reads back as the same float, or
    double."""
    floats = [0.1, 19.99, -0.0]
    doubles = [19.99, 1e300, 0.1]
    table = pa.table({"image": pa.array([{"bytes": p.read_bytes(), "path": p.name} for p in JPEGS[:3]], IMG),
                      "f": pa.array(floats, pa.float32()), "d": pa.array(doubles, pa.float64())})
    write_stream(tmp_path / "data.arrow", table, 2)
    r = dry_run(sluice, tmp_path / "data.arrow", tmp_path / "out", "--format", "jsonl")
    assert r.returncode == 0, r.stderr
    lines = {json.loads(line)["id"]: line for line in (tmp_path / "out" / "part-00000.jsonl").read_text().splitlines()}
    for i, (f_text, d_text) in enumerate([("0.1", "19.99"), ("19.99", "1e300"), ("-0.0", "0.1")]):
        line = lines[f"data.arrow:{i}"]
        assert f'"f":{f_text},' in line or f'"f":{f_text}}}' in line, line
        assert f'"d":{d_text},' in line or f'"d":{d_text}}}' in line, line
        row = json.loads(line)
        assert struct.pack("<f", row["f"]) == struct.pack("<f", floats[i]) and row["d"] == doubles[i]


def test_a_float16_column_is_the_halfs_shortest_text(sluice, tmp_path):
    """A float16 column's 0.1 came out as 0.099975586 (the shortest text of
    the float holding the half), and a subnormal half as nanoarrow's float
    of it (6.1e-5 as 1.1743464e-38): each is now the shortest text that reads
    back as the same half, as numpy writes it."""
    np = pytest.importorskip("numpy")
    halves = np.array([0.1, 65504.0, 6.1e-5, -0.0, 2.0 ** -24, 1 / 3], dtype=np.float16)
    texts = ["0.1", "65500.0", "6.1e-5", "-0.0", "6e-8", "0.3333"]
    table = pa.table({"image": pa.array([{"bytes": JPEGS[k % len(JPEGS)].read_bytes(), "path": f"{k}.jpg"}
                                         for k in range(len(halves))], IMG),
                      "h": pa.array(halves, pa.float16())})
    write_stream(tmp_path / "data.arrow", table, 4)
    r = dry_run(sluice, tmp_path / "data.arrow", tmp_path / "out", "--format", "jsonl")
    assert r.returncode == 0, r.stderr
    lines = {json.loads(line)["id"]: line for line in (tmp_path / "out" / "part-00000.jsonl").read_text().splitlines()}
    for i, text in enumerate(texts):
        line = lines[f"data.arrow:{i}"]
        assert f'"h":{text},' in line or f'"h":{text}}}' in line, (text, line)
        assert np.float16(json.loads(line)["h"]).tobytes() == halves[i].tobytes(), line


def test_a_decimal_in_a_text_column_is_its_digits(sluice, tmp_path):
    """A column one file types decimal and another string is a string in
    the Parquet output: the decimal's value is its exact text there, not
    the bytes it is carried in."""
    from decimal import Decimal
    for name, values in [("a", pa.array([Decimal("1.10")], pa.decimal128(5, 2))), ("b", pa.array(["x"]))]:
        write_stream(tmp_path / f"{name}.arrow", pa.table({"image": pa.array(
            [{"bytes": JPEGS[0].read_bytes(), "path": f"{name}.jpg"}], IMG), "v": values}), 1)
    r = dry_run(sluice, [tmp_path / "a.arrow", tmp_path / "b.arrow"], tmp_path / "out", "--format", "parquet")
    assert r.returncode == 0, r.stderr
    pq = pytest.importorskip("pyarrow.parquet")
    got = pq.read_table(tmp_path / "out" / "part-00000.parquet")
    assert str(got.schema.field("v").type) == "string", got.schema
    assert sorted(got.column("v").to_pylist()) == ["1.10", "x"]


def test_decimals_two_files_type_apart_are_the_decimal_that_holds_both(sluice, tmp_path):
    """A column two Arrow files type decimal32(5,2) and decimal64(10,4) was
    typed from its values, a double, in the Parquet output. It is now
    decimal128(10,4), 123.45 and 123456.7891 both exact; a decimal in one
    file and an int64 in the other is still a double."""
    from decimal import Decimal
    pq = pytest.importorskip("pyarrow.parquet")
    for k, (dec, n) in enumerate([(pa.array([Decimal("123.45")], pa.decimal32(5, 2)), 1),
                                  (pa.array([Decimal("123456.7891")], pa.decimal64(10, 4)), 7)]):
        write_stream(tmp_path / f"{k}.arrow", pa.table({
            "image": pa.array([{"bytes": JPEGS[k].read_bytes(), "path": JPEGS[k].name}], IMG), "v": dec,
            "n": pa.array([Decimal("1.5")], pa.decimal128(3, 1)) if k == 0 else pa.array([n], pa.int64())}), 1)
    out = tmp_path / "out"
    r = dry_run(sluice, [tmp_path / "0.arrow", tmp_path / "1.arrow"], out, "--format", "parquet")
    assert r.returncode == 0, r.stderr
    got = pq.read_table(out / "part-00000.parquet")
    assert (got.schema.field("v").type, got.schema.field("n").type) == (pa.decimal128(10, 4), pa.float64())
    rows = by_id(got.to_pylist())
    assert (rows["0.arrow:0"]["v"], rows["1.arrow:0"]["v"]) == (Decimal("123.4500"), Decimal("123456.7891"))
    assert (rows["0.arrow:0"]["n"], rows["1.arrow:0"]["n"]) == (1.5, 7.0)
