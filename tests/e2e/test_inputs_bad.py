"""Bad inputs met from the outside (found by black-box runs of the CLI):
each becomes one failed row naming the input and the cause, in words a
user can act on, and the run goes on; nothing hangs, nothing is dropped
in silence. Most run with --dry-run: the read and decode stages are the
real run's, no model is needed."""
import base64
import gzip
import io
import json
import os
import pathlib
import shutil
import struct
import subprocess
import tarfile
import tempfile

import pytest

from conftest import SAMPLES, read_rows, wds_shard

JPEG = (SAMPLES / "rocket.jpg").read_bytes()


def dry(sluice, inputs, out, *extra, timeout=120):
    inputs = inputs if isinstance(inputs, list) else [inputs]
    return sluice.run("caption", *inputs, "-o", out, "--dry-run", "--metrics-addr", "off", *extra,
                      timeout=timeout)


def rows_by_id(out):
    rows = read_rows(out)
    by_id = {r["id"]: r for r in rows}
    assert len(by_id) == len(rows), [r["id"] for r in rows]  # one row per input, none twice
    return by_id


def test_a_fifo_named_as_a_manifest_or_a_tar_fails_its_row_and_never_blocks(sluice, tmp_path):
    """A FIFO given as the input itself (nothing ever writes to it): opening
    it for reading waits for a writer forever, and the run and its count
    pass hung there (SIGTERM could not end them either). Each kind fails
    its one row at once, saying what the file is."""
    for name in ("list.jsonl", "list.csv", "list.json", "list.jsonl.gz", "shard.tar"):
        d = tmp_path / name.replace(".", "_")
        d.mkdir()
        os.mkfifo(d / name)
        out = tmp_path / f"out-{name}"
        r = dry(sluice, d / name, out, timeout=60)
        assert r.returncode == 3, (name, r.stderr)
        rows = rows_by_id(out)
        assert list(rows) == [name], rows
        err = rows[name]["error"]
        assert str(d / name) in err and "not a regular file but a FIFO" in err, err


def test_a_json_array_followed_by_more_text_fails_instead_of_dropping_it(sluice, tmp_path):
    """`cat a.json b.json > all.json` makes two arrays one after the other:
    the rows of the second were dropped in silence (exit 0). The first
    array's rows are read, then one failed row says the file goes on."""
    (tmp_path / "a.jpg").write_bytes(JPEG)
    two = tmp_path / "two.json"
    two.write_text(json.dumps([{"image": "a.jpg"}]) + "\n" + json.dumps([{"image": "a.jpg"}]) + "\n")
    out = tmp_path / "out"
    r = dry(sluice, two, out)
    assert r.returncode == 3, r.stderr
    rows = rows_by_id(out)
    assert set(rows) == {"two.json:1", "two.json"}, rows
    assert rows["two.json:1"]["error"] is None
    err = rows["two.json"]["error"]
    assert "two.json" in err and "goes on after its JSON array ends" in err, err
    # White space after the array is no more data.
    ws = tmp_path / "ws.json"
    ws.write_text(json.dumps([{"image": "a.jpg"}]) + "\n\n  \n")
    r = dry(sluice, ws, tmp_path / "out-ws")
    assert r.returncode == 0, r.stderr
    assert list(rows_by_id(tmp_path / "out-ws")) == ["ws.json:1"]


def test_a_csv_field_with_a_nul_byte_or_a_prompt_not_utf8_fails_its_row(sluice, tmp_path):
    """A field is a C string once read: a NUL byte ended it there, so
    'a.jpg<NUL>junk' read a.jpg and 'b<NUL>c' passed on as 'b', in silence.
    Such a record fails, naming the line and the field."""
    (tmp_path / "a.jpg").write_bytes(JPEG)
    m = tmp_path / "m.csv"
    m.write_bytes(b"image,label\na.jpg\x00junk,x\na.jpg,b\x00c\na.jpg,ok\n")
    out = tmp_path / "out"
    r = dry(sluice, m, out)
    assert r.returncode == 3, r.stderr
    rows = rows_by_id(out)
    assert set(rows) == {"m.csv:2", "m.csv:3", "m.csv:4"}, rows
    assert "m.csv:2" in rows["m.csv:2"]["error"] and "field 1 holds a NUL byte" in rows["m.csv:2"]["error"]
    assert "field 2 holds a NUL byte" in rows["m.csv:3"]["error"], rows["m.csv:3"]
    assert rows["m.csv:4"]["error"] is None and rows["m.csv:4"]["label"] == "ok"
    # A prompt column's bytes that are not UTF-8 (a Latin-1 file's 'caf<E9>')
    # became U+FFFD and the model was asked 'caf\ufffd' in silence (a JSONL
    # line fails as invalid JSON): such a row fails naming the field and the
    # byte; another column still passes through with U+FFFD (test_sources).
    m.write_bytes(b"image,prompt,who\na.jpg,caf\xe9?,x\na.jpg,ok?,caf\xe9\n")
    r = dry(sluice, m, tmp_path / "latin1")
    assert r.returncode == 3, r.stderr
    rows = rows_by_id(tmp_path / "latin1")
    assert set(rows) == {"m.csv:2", "m.csv:3"}, rows
    assert "m.csv:2: field 2: column 'prompt' holds byte 0xE9 at byte 3, which is not UTF-8" \
        in rows["m.csv:2"]["error"], rows["m.csv:2"]
    assert rows["m.csv:3"]["error"] is None and rows["m.csv:3"]["who"] == "caf\ufffd", rows
    # A column a prompt template fills in ({who}) likewise: it reached the
    # model as U+FFFD.
    r = dry(sluice, m, tmp_path / "field", "--prompt", "Is it {who}?")
    assert r.returncode == 3, r.stderr
    rows = rows_by_id(tmp_path / "field")
    assert "m.csv:3: field 3: column 'who' holds byte 0xE9 at byte 3, which is not UTF-8" \
        in rows["m.csv:3"]["error"], rows["m.csv:3"]


def run_not_utf8(sluice, tmp_path, name, n, flags, failed):
    """Runs over tmp_path/name (n rows) with flags; the rows in failed
    ({row: (column, byte, offset)}) fail naming them, the others do not.
    The rows by id."""
    out = tmp_path / f"o-{name}-{len(flags)}-{len(failed)}"
    r = dry(sluice, tmp_path / name, out, *flags)
    assert r.returncode == 3, r.stderr
    rows = rows_by_id(out)
    assert len(rows) == n, rows
    for k in range(n):
        row = rows[f"{name}:{k}"]
        if k in failed:
            col, byte, at = failed[k]
            assert row["error"].startswith(
                f"{tmp_path / name} row {k}: column '{col}' holds byte "
                f"0x{byte:02X} at byte {at}, which is not UTF-8"), (name, flags, row)
        else:
            assert row["error"] is None, (name, flags, row)
    return rows


def test_parquet_and_arrow_text_that_is_not_utf8_fails_its_row_in_a_prompt(sluice, tmp_path):
    """Parquet and Arrow strings are meant to be UTF-8, but a writer may
    not check: a prompt column's 'caf<E9>', or a column a template fills in
    ({topic}, {meta.topic}'s column), reached the model as U+FFFD in
    silence, where a CSV prompt column's failed its row. Now such a row
    fails naming the file, the row, the column and the byte offset; a
    column no prompt uses still passes through with U+FFFD."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    (tmp_path / "a.jpg").write_bytes(JPEG)
    bad = pa.array([b"caf\xe9?", b"ok?", b"ok?", b"ok?"], type=pa.binary()).view(pa.string())
    good = pa.array(["x", "x", "x", "x"])
    topic = pa.array([b"x", b"t\xffa", b"x", b"x"], type=pa.binary()).view(pa.string())
    note = pa.array([b"x", b"x", b"x", b"n\xe9"], type=pa.binary()).view(pa.string())
    table = pa.table({"image": ["a.jpg"] * 4, "prompt": bad, "topic": topic, "note": note,
                      "lang": good})
    pq.write_table(table, tmp_path / "t.parquet")
    with pa.OSFile(str(tmp_path / "t.arrow"), "wb") as f:
        with pa.ipc.new_file(f, table.schema) as w:
            w.write_table(table)
    # dictionary-encoded strings too
    pq.write_table(table, tmp_path / "d.parquet", use_dictionary=True)
    coded = pa.table({k: (table[k].combine_chunks().dictionary_encode() if k != "image"
                          else table[k]) for k in table.column_names})
    with pa.OSFile(str(tmp_path / "d.arrow"), "wb") as f:
        with pa.ipc.new_file(f, coded.schema) as w:
            w.write_table(coded)
    for name in ("t.parquet", "t.arrow", "d.parquet", "d.arrow"):
        for flags, failed in (((), {0: ("prompt", 0xE9, 3)}),
                              (("--prompt", "About {topic} in {lang}?"),
                               {0: ("prompt", 0xE9, 3), 1: ("topic", 0xFF, 1)}),
                              (("--system", "On {topic.x}.", "--prompt-column", "lang"),
                               {1: ("topic", 0xFF, 1)})):
            rows = run_not_utf8(sluice, tmp_path, name, 4, flags, failed)
            assert rows[f"{name}:3"]["note"] == "n\ufffd", rows


def test_a_webdataset_txt_that_is_not_utf8_fails_its_sample_in_a_prompt(sluice, tmp_path):
    """A sample's .txt of Latin-1 bytes reached the model as U+FFFD when it
    was the prompt (--prompt-column txt) or a template's field ({txt});
    now the sample fails naming the shard, the member and the byte offset.
    Where no prompt takes it, it still passes through as U+FFFD."""
    shard = tmp_path / "s.tar"
    shard.write_bytes(wds_shard([("a.jpg", JPEG), ("a.txt", b"caf\xe9?"),
                                 ("b.jpg", JPEG), ("b.txt", b"tea?")]))
    for flags, fails in (((), False), (("--prompt-column", "txt"), True),
                         (("--prompt", "About {txt}"), True)):
        out = tmp_path / f"o{len(flags)}{flags[:1]}"
        r = dry(sluice, shard, out, *flags)
        assert r.returncode == (3 if fails else 0), r.stderr
        rows = rows_by_id(out)
        assert rows["s.tar/b"]["error"] is None, rows
        error = rows["s.tar/a"]["error"]
        if fails:
            assert error.endswith("s.tar: member 'a.txt': column 'txt' holds byte 0xE9 at byte 3, "
                                  "which is not UTF-8: the prompt would reach the model altered "
                                  "(re-encode the file as UTF-8)"), error
        else:
            assert error is None and rows["s.tar/a"]["txt"] == "caf\ufffd?", rows


def test_json_rows_that_cannot_be_read_are_said_in_words(sluice, tmp_path):
    """jansson's own words called valid JSON that is no object invalid
    ("'[' or '{' expected near '5'") and a Latin-1 byte "unable to decode
    byte 0xe9": a line, an element of a .json array and a WebDataset
    sample's .json say what the value is and what to do (a sidecar's
    \\u0000 too, as a line's is said)."""
    (tmp_path / "a.jpg").write_bytes(JPEG)
    m = tmp_path / "m.jsonl"
    m.write_bytes(b'{"image": "a.jpg", "note": "x\\u0000y"}\n"a.jpg"\n5\n'
                  b'{"image": "caf\xe9.jpg"}\n{"image": "a.jpg"}\n')
    out = tmp_path / "out"
    r = dry(sluice, m, out)
    assert r.returncode == 3, r.stderr
    rows = rows_by_id(out)
    errs = {k: (v["error"] or "") for k, v in rows.items()}
    assert "JSON_ALLOW_NUL" not in errs["m.jsonl:1"] and "(NUL)" in errs["m.jsonl:1"], errs
    assert errs["m.jsonl:2"].endswith("m.jsonl:2: not a JSON object but a string"), errs
    assert errs["m.jsonl:3"].endswith("m.jsonl:3: not a JSON object but a number"), errs
    assert errs["m.jsonl:4"].endswith("byte 0xe9 is not UTF-8, which JSON text must be "
                                      "(re-encode the file as UTF-8)"), errs
    assert rows["m.jsonl:5"]["error"] is None
    arr = tmp_path / "arr.json"
    arr.write_text('[{"image": "a.jpg"}, 7, null]')
    r = dry(sluice, arr, tmp_path / "out-arr")
    rows = rows_by_id(tmp_path / "out-arr")
    assert rows["arr.json:2"]["error"].endswith("arr.json:2: not a JSON object but a number"), rows
    assert rows["arr.json:3"]["error"].endswith("arr.json:3: not a JSON object but null"), rows
    shard = io.BytesIO()
    with tarfile.open(fileobj=shard, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in [("0.jpg", JPEG), ("0.json", b"[1]"), ("1.jpg", JPEG),
                           ("1.json", b'{"a": "\\u0000"}'), ("2.jpg", JPEG)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "s.tar").write_bytes(shard.getvalue())
    r = dry(sluice, tmp_path / "s.tar", tmp_path / "out-tar")
    rows = rows_by_id(tmp_path / "out-tar")
    assert "member '0.json': not a JSON object but an array" in rows["s.tar/0"]["error"], rows
    assert "(NUL)" in rows["s.tar/1"]["error"], rows
    assert "JSON_ALLOW_NUL" not in rows["s.tar/1"]["error"]
    assert rows["s.tar/2"]["error"] is None


def test_an_image_over_the_pixel_limit_names_only_that_limit(sluice, tmp_path):
    """A local file refused by --max-image-pixels was said to be over
    "(--max-image-pixels) (--max-item-bytes)": the file-size flag was put
    on every SL_ERR_TOO_LARGE of the file's decode. A file over the size
    limit still names --max-item-bytes."""
    d = tmp_path / "in"
    d.mkdir()
    big = bytearray(JPEG)
    sof = big.find(b"\xff\xc0")
    assert sof > 0
    big[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)  # the header's height, width
    (d / "big.jpg").write_bytes(bytes(big))
    (d / "ok.jpg").write_bytes(JPEG)
    (d / "huge.jpg").write_bytes(JPEG + bytes(2 << 20))  # over a 1 MiB --max-item-bytes
    out = tmp_path / "out"
    r = dry(sluice, d, out)
    assert r.returncode == 3, r.stderr
    rows = rows_by_id(out)
    err = rows["big.jpg"]["error"]
    assert "60000x60000 pixels" in err and "(--max-image-pixels)" in err, err
    assert "--max-item-bytes" not in err, err
    assert rows["ok.jpg"]["error"] is None and rows["huge.jpg"]["error"] is None
    r = dry(sluice, d, tmp_path / "out-small", "--max-item-bytes", "1M")
    rows = rows_by_id(tmp_path / "out-small")
    assert "over the limit of 1048576 bytes (--max-item-bytes)" in rows["huge.jpg"]["error"], rows
    assert "--max-item-bytes" not in rows["big.jpg"]["error"], rows


def test_empty_compressed_manifests(sluice, tmp_path):
    """A gzip or zstd stream of no text is a manifest of no lines, as an
    empty .jsonl is (libarchive's raw reader bids on no bytes, and the
    input failed with its "Unrecognized archive format"); a 0-byte .gz
    holds no stream and fails saying so."""
    import pyarrow as pa
    (tmp_path / "e.jsonl.gz").write_bytes(gzip.compress(b""))
    (tmp_path / "e.jsonl.zst").write_bytes(pa.compress(b"", "zstd", asbytes=True))
    for name in ("e.jsonl.gz", "e.jsonl.zst"):
        out = tmp_path / f"out-{name}"
        r = dry(sluice, tmp_path / name, out)
        assert r.returncode == 0, (name, r.stderr)
        assert read_rows(out) == [], name
    zero = tmp_path / "z" / "zero.jsonl.gz"
    zero.parent.mkdir()
    zero.write_bytes(b"")
    r = dry(sluice, zero, tmp_path / "out-zero")
    assert r.returncode == 3, r.stderr
    rows = rows_by_id(tmp_path / "out-zero")
    err = rows["zero.jsonl.gz"]["error"]
    assert "empty file (0 bytes)" in err and "Unrecognized" not in err, err


def test_a_tar_member_skipped_past_the_shard_end_is_a_break_not_the_end(sluice, tmp_path):
    """A member sluice skips (one no sample uses, or one over
    --max-item-bytes) was skipped without looking whether its bytes were
    there: a shard cut inside such a member, or a header claiming more than
    follows (a pax size of 10^15), ended as if whole (exit 0 for the cut
    one), the samples after the break gone without a row. It ends as a
    truncated member does: one failed row SHARD@OFFSET naming the member."""
    npy = bytes(200_000)
    data = wds_shard([("0.jpg", JPEG), ("0.npy", npy), ("1.jpg", JPEG), ("1.npy", npy),
                      ("2.jpg", JPEG), ("2.npy", npy)])
    cut_at = data.index(b"1.npy") + 512 + 50_000  # inside sample 1's .npy
    d = tmp_path / "cut"
    d.mkdir()
    (d / "s.tar").write_bytes(data[:cut_at])
    out = tmp_path / "out-cut"
    r = dry(sluice, d / "s.tar", out)
    assert r.returncode == 3, r.stderr
    rows = rows_by_id(out)
    [broken] = [k for k in rows if k.startswith("s.tar@")]
    assert set(rows) == {"s.tar/0", broken}, rows
    err = rows[broken]["error"]
    assert "member '1.npy'" in err and "truncated" in err and "the rest of the shard is skipped" in err, err
    # A header that claims 10^15 bytes: its sample is refused for its size,
    # and the samples after it are told to be gone, not dropped in silence.
    p = tmp_path / "pax" / "p.tar"
    p.parent.mkdir()
    p.write_bytes(wds_shard([("0.jpg", JPEG), ("1.jpg", JPEG), ("2.jpg", JPEG)],
                            pax={"1.jpg": str(10**15)}))
    out = tmp_path / "out-pax"
    r = dry(sluice, p, out)
    assert r.returncode == 3, r.stderr
    rows = rows_by_id(out)
    [broken] = [k for k in rows if k.startswith("p.tar@")]
    assert set(rows) == {"p.tar/0", broken}, rows
    assert "member '1.jpg' (1000000000000000 bytes)" in rows[broken]["error"], rows


def test_a_sparse_member_ending_in_a_hole_is_read_as_its_zeros(sluice, tmp_path):
    """GNU tar --sparse stores a file's holes as a map, not bytes. A member
    that ends in a hole (a file of zeros; a JPEG padded with them) was
    taken for a short read: 'truncated or damaged', the rest of the shard
    skipped and its later samples gone. The hole is zeros: the member is
    read whole (zeros are no image: its row fails alone) and the shard
    goes on."""
    d = tmp_path / "files"
    d.mkdir()
    with open(d / "0.jpg", "wb") as f:
        f.truncate(1 << 20)  # all hole
    (d / "1.jpg").write_bytes(JPEG)
    shard = tmp_path / "s.tar"
    subprocess.run(["tar", "--sparse", "-cf", str(shard), "-C", str(d), "0.jpg", "1.jpg"],
                   check=True)
    with tarfile.open(shard) as t:
        members = {m.name: m for m in t}
        if not members["0.jpg"].issparse():
            pytest.skip("this file system made no hole for tar to keep")
        assert t.extractfile(members["0.jpg"]).read() == bytes(1 << 20)  # Python reads the zeros
    out = tmp_path / "out"
    r = dry(sluice, shard, out)
    assert r.returncode == 3, r.stderr
    rows = rows_by_id(out)
    assert set(rows) == {"s.tar/0", "s.tar/1"}, rows
    assert rows["s.tar/1"]["error"] is None and rows["s.tar/1"]["width"] > 0, rows
    assert "not an image" in rows["s.tar/0"]["error"], rows


def test_a_parquet_or_arrow_path_with_a_nul_byte_fails_its_row(sluice, tmp_path):
    """A path cell is copied into a C string: a NUL byte in it ended the
    path there, so 'a.jpg<NUL>x' read a.jpg and its row passed as that
    image, in silence. The row fails naming the file, row and column; in a
    list of paths, the element's row does."""
    import pyarrow as pa
    import pyarrow.feather as feather
    import pyarrow.parquet as pq
    (tmp_path / "a.jpg").write_bytes(JPEG)
    pq.write_table(pa.table({"image": ["a.jpg\x00x", "a.jpg"],
                             "images": [["a.jpg", "a.jpg\x00y"], ["a.jpg"]]}), tmp_path / "p.parquet")
    feather.write_feather(pa.table({"image": ["a.jpg\x00x", "a.jpg"]}), tmp_path / "f.arrow")
    for name, extra in (("p.parquet", ()), ("p.parquet", ("--image-column", "images")), ("f.arrow", ())):
        out = tmp_path / f"out-{name}-{len(extra)}"
        r = dry(sluice, tmp_path / name, out, *extra)
        assert r.returncode == 3, (name, extra, r.stderr)
        rows = rows_by_id(out)
        assert set(rows) == {f"{name}:0", f"{name}:1"}, rows
        err = rows[f"{name}:0"]["error"] or ""
        assert f"{name} row 0, column" in err and "holds a NUL byte after 'a.jpg" in err, (name, extra, err)
        assert rows[f"{name}:1"]["error"] is None


def test_a_shard_that_is_no_tar_says_so(sluice, tmp_path):
    """A 0-byte .tar or a text file named .tar failed with libarchive's own
    "Unrecognized archive format"; it says what the file is instead. A tar
    of nothing but its end blocks is a shard of no samples."""
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.tar").write_bytes(b"")
    (d / "b.tar").write_bytes(b"hello\n" * 50)
    (d / "c.tar").write_bytes(bytes(10240))
    out = tmp_path / "out"
    r = dry(sluice, [d / "a.tar", d / "b.tar", d / "c.tar"], out)
    assert r.returncode == 3, r.stderr
    rows = rows_by_id(out)
    assert set(rows) == {"a.tar", "b.tar"}, rows
    assert "empty file (0 bytes), not a tar archive" in rows["a.tar"]["error"], rows
    assert "not a tar archive (nor one compressed" in rows["b.tar"]["error"], rows
    assert not any("Unrecognized" in v["error"] for v in rows.values()), rows


def test_a_csv_whose_lines_end_in_cr_alone_fails_instead_of_reading_nothing(sluice, tmp_path):
    """Lines that end in CR alone (Excel's "CSV (Macintosh)") were one line:
    the whole file its header, no row written and exit 0. The manifest
    fails saying why; CRLF and LF files read as before."""
    (tmp_path / "a.jpg").write_bytes(JPEG)
    (tmp_path / "mac.csv").write_bytes(b"image,label\ra.jpg,x\ra.jpg,y\r")
    out = tmp_path / "out"
    r = dry(sluice, tmp_path / "mac.csv", out)
    assert r.returncode == 3, r.stderr
    rows = rows_by_id(out)
    assert list(rows) == ["mac.csv"], rows
    assert "lines that end in CR alone" in rows["mac.csv"]["error"], rows
    (tmp_path / "win.csv").write_bytes(b"image,label\r\na.jpg,x\r\na.jpg,\"y\rz\"\r\n")
    r = dry(sluice, tmp_path / "win.csv", tmp_path / "out-win")
    assert r.returncode == 0, r.stderr
    rows = rows_by_id(tmp_path / "out-win")
    assert rows["win.csv:3"]["label"] == "y\rz", rows  # a quoted CR is the field's


def test_a_utf16_manifest_fails_once_saying_it_is_utf16(sluice, tmp_path):
    """A manifest written as UTF-16 (PowerShell's `>` and Out-File) failed
    line by line as "byte 0xff is not UTF-8" or a NUL byte, never saying
    why: its byte order mark tells it, and the input fails once saying so."""
    (tmp_path / "a.jpg").write_bytes(JPEG)
    (tmp_path / "m.jsonl").write_bytes('{"image": "a.jpg"}\n{"image": "a.jpg"}\n'.encode("utf-16"))
    (tmp_path / "m.csv").write_bytes("image\na.jpg\n".encode("utf-16"))
    for name in ("m.jsonl", "m.csv"):
        out = tmp_path / f"out-{name}"
        r = dry(sluice, tmp_path / name, out)
        assert r.returncode == 3, r.stderr
        rows = rows_by_id(out)
        assert list(rows) == [name], rows
        assert "the file is UTF-16" in rows[name]["error"] and "save it as UTF-8" in rows[name]["error"]


def test_a_tar_sample_whose_image_is_a_symlink_fails_instead_of_vanishing(sluice, tmp_path):
    """`tar cf` of a folder of symlinks (a dataset linked from a cache)
    stores the links, not the files: links were no members to sluice, so
    such a sample said "has no image" (or, the link its only member, had no
    row at all, exit 0). It fails naming the link and what to do; an unused
    member that is a link (a .npy) leaves its sample alone."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        def link(name, target):
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
        def member(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link("0.jpg", "/cache/blobs/0.jpg")
        member("0.json", b'{"k": 0}')
        member("1.jpg", JPEG)
        link("1.npy", "/cache/blobs/1.npy")
    (tmp_path / "s.tar").write_bytes(buf.getvalue())
    out = tmp_path / "out"
    r = dry(sluice, tmp_path / "s.tar", out)
    assert r.returncode == 3, r.stderr
    rows = rows_by_id(out)
    assert set(rows) == {"s.tar/0", "s.tar/1"}, rows
    err = rows["s.tar/0"]["error"]
    assert "0.jpg: a symbolic link to '/cache/blobs/0.jpg'" in err and "--dereference" in err, err
    assert rows["s.tar/1"]["error"] is None


def test_nested_text_that_is_not_utf8_fails_its_row_in_a_prompt(sluice, tmp_path):
    """A struct's field ({meta.topic}) or a list's elements ({tags}, {meta})
    whose bytes are not UTF-8 reached the prompt as U+FFFD, where a
    top-level column's failed its row. Now the row fails naming the file,
    the row, the value ('meta.topic', 'tags[1]', 'items[0].caption') and the
    byte offset, in Parquet and Arrow alike; a field no template reaches
    ({meta.topic} leaves meta.other) still passes through with U+FFFD."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    (tmp_path / "a.jpg").write_bytes(JPEG)

    def text(values):
        return pa.array(values, type=pa.binary()).view(pa.string())

    meta = pa.StructArray.from_arrays([text([b"x", b"t\xffa", b"x", b"x", b"x"]),
                                       text([b"x", b"x", b"o\xe9", b"x", b"x"])], ["topic", "other"])
    tags = pa.ListArray.from_arrays(pa.array([0, 1, 2, 3, 5, 6], pa.int32()),
                                    text([b"a", b"b", b"c", b"d", b"\xc3", b"e"]))
    items = pa.ListArray.from_arrays(pa.array([0, 1, 2, 3, 4, 5], pa.int32()),
                                     pa.StructArray.from_arrays([text([b"a", b"b", b"c", b"d", b"\xe9!"])],
                                                                ["caption"]))
    table = pa.table({"image": ["a.jpg"] * 5, "meta": meta, "tags": tags, "items": items})
    pq.write_table(table, tmp_path / "t.parquet")
    with pa.OSFile(str(tmp_path / "t.arrow"), "wb") as f:
        with pa.ipc.new_file(f, table.schema) as w:
            w.write_table(table)
    for name in ("t.parquet", "t.arrow"):
        for prompt, failed in (("About {meta.topic}?", {1: ("meta.topic", 0xFF, 1)}),
                               ("About {meta} {tags} {items}?",
                                {1: ("meta.topic", 0xFF, 1), 2: ("meta.other", 0xE9, 1), 3: ("tags[1]", 0xC3, 0),
                                 4: ("items[0].caption", 0xE9, 0)})):
            rows = run_not_utf8(sluice, tmp_path, name, 5, ("--prompt", prompt), failed)
            if len(failed) == 1:
                assert rows[f"{name}:2"]["meta"]["other"] == "o\ufffd", rows


FAULT_POINT = {"jsonl": "manifest.read", "parquet": "ranged.read", "arrow": "ranged.read",
               "webdataset": "tar.read"}


def input_files(kind, d):
    """Two files of `kind` in d, of 10 rows and 4, their images paths (a
    manifest's, a column's) or bytes (a tar's); each read in several reads
    (64 KiB ones for a manifest and a tar, one per record batch or row
    group of a 1 MiB column nothing uses for Arrow and Parquet)."""
    import pyarrow as pa
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq
    image = str(SAMPLES / "rocket.jpg")
    names = []
    for f, n in (("a-000", 10), ("a-001", 4)):
        if kind == "jsonl":
            path = d / f"{f}.jsonl"
            path.write_text("".join(json.dumps({"image": image, "note": "x" * 40_000}) + "\n"
                                    for _ in range(n)))
        elif kind == "webdataset":
            path = d / f"{f}.tar"
            path.write_bytes(wds_shard([(f"s{k:02d}.jpg", JPEG) for k in range(n)]))
        else:
            table = pa.table({"image": [image] * n,
                              "blob": pa.array([os.urandom(1 << 20) for _ in range(n)])})
            path = d / f"{f}.{kind}"
            if kind == "parquet":
                pq.write_table(table, path, row_group_size=2, compression="none")
            else:
                with ipc.new_stream(path, table.schema) as w:
                    w.write_table(table, max_chunksize=2)
        names.append(path)
    return names


@pytest.mark.parametrize("kind", list(FAULT_POINT))
def test_a_local_file_unreadable_midway_under_item_sharding_ends_the_run(sluice, tmp_path, kind):
    """A local manifest, Parquet or Arrow file or tar shard whose reads fail
    (the disk's EIO, at a test fault point from the third read on: the
    run's or its count pass's, so the run ends at its first read or midway;
    tests/unit/test_source.c pins midway) while the input is shared out by
    item (--input-shard K/N with more runs than files): that run ends
    (exit 1, naming the file, the cause and 'run it again'), since going
    on it would count the items after the break where the other runs do
    not; run again with the disk well, it resumes and the three runs hold
    every row exactly once. No such local test was there."""
    d = tmp_path / "in"
    d.mkdir()
    files = input_files(kind, d)
    outs = [tmp_path / f"out-{k}" for k in range(3)]

    def run(k, faults=None):
        env = dict(os.environ, SLUICE_TEST_FAULTS=faults) if faults else None
        args = [str(sluice.binary), "caption", *map(str, files), "-o", str(outs[k]), "--dry-run",
                "--metrics-addr", "off", "--input-shard", f"{k}/3", "--input-shard-size", "2"]
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    for k in (0, 2):
        r = run(k)
        assert r.returncode == 0, (k, r.stderr[-3000:])
    r = run(1, f"{FAULT_POINT[kind]}=eio@3+")
    assert r.returncode == 1, (r.returncode, r.stderr[-3000:])
    assert "Input/output error" in r.stderr and "run it again" in r.stderr, r.stderr[-3000:]
    assert any(f"input '{f}'" in r.stderr for f in files), r.stderr[-3000:]
    r = run(1)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for out in outs for part in sorted(out.glob("part-*.jsonl"))
            for line in part.read_text().splitlines()]  # the resumed run's part too
    assert all(row["error"] is None for row in rows), [row["error"] for row in rows]
    ids = [row["id"] for row in rows]
    assert len(ids) == 14 and len(set(ids)) == 14, sorted(ids)


NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root, to run sluice as another user")
def test_files_and_folders_the_user_cannot_read_fail_their_rows(sluice, llama_prefix):
    """Root passes every permission check, so a file or folder the user
    running sluice cannot read is only seen as another user: sluice runs
    here as nobody. An unreadable image and an unreadable subfolder each
    fail a row naming it and the cause; the readable images are decoded;
    an output folder the user cannot create exits 2 saying so."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="sluice-eacces-"))  # pytest's tmp is 0700
    try:
        base.chmod(0o755)
        lib = base / "lib"  # the llama.cpp prefix is under /root, closed to nobody
        lib.mkdir()
        for so in (llama_prefix / "lib").glob("*.so*"):
            shutil.copy(so, lib / so.name, follow_symlinks=True)
        binary = base / "sluice"
        shutil.copy(sluice.binary, binary)
        inputs = base / "in"
        (inputs / "sub").mkdir(parents=True)
        for name in ("a.jpg", "b.jpg", "closed.jpg", "sub/c.jpg"):
            (inputs / name).write_bytes(JPEG)
        (inputs / "closed.jpg").chmod(0o000)
        (inputs / "sub").chmod(0o000)
        out = base / "out"
        out.mkdir()
        os.chown(out, NOBODY, NOBODY)

        def as_nobody(*args):
            env = dict(os.environ, LD_LIBRARY_PATH=str(lib), HOME=str(base))
            return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                                   "--clear-groups", str(binary), *map(str, args)],
                                  capture_output=True, text=True, timeout=120, env=env)

        r = as_nobody("caption", inputs, "-o", out, "--dry-run", "--metrics-addr", "off")
        assert r.returncode == 3, r.stderr  # rows failed, the run went on
        by_id = rows_by_id(out)
        assert set(by_id) == {"a.jpg", "b.jpg", "closed.jpg", "sub"}, sorted(by_id)
        assert by_id["a.jpg"]["error"] is None and by_id["b.jpg"]["error"] is None, by_id
        err = by_id["closed.jpg"]["error"]
        assert str(inputs / "closed.jpg") in err and "Permission denied" in err, err
        err = by_id["sub"]["error"]
        assert str(inputs / "sub") in err and "Permission denied" in err, err
        # A folder that cannot be listed is no fault of the data: io, at read;
        # an image that cannot be opened fails at decode.
        classes = {(f["stage"], f["class"]): f["rows"]
                   for f in json.loads((out / "_summary.json").read_text())["failures"]}
        assert classes.get(("read", "io")) == 1, classes

        closed = base / "closed"
        closed.mkdir()  # root's, 0755: nobody cannot create in it
        r = as_nobody("caption", inputs, "-o", closed / "out", "--dry-run", "--metrics-addr", "off")
        assert r.returncode == 2, r.stderr
        assert str(closed / "out") in r.stderr and "Permission denied" in r.stderr, r.stderr
        assert "-o" in r.stderr, r.stderr  # says what to change
    finally:
        (base / "in" / "sub").chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("url", ["https://example.com/data/train.parquet", "HTTP://example.com/m.jsonl"])
def test_an_http_url_given_as_an_input_is_refused_saying_what_an_input_may_be(sluice, tmp_path, url):
    """An http(s) URL on the command line was taken for a local path and
    refused with "No such file or directory", which says nothing of URLs:
    it now names the addresses an input may be and what to do instead."""
    r = dry(sluice, url, tmp_path / "out")
    assert r.returncode == 2, r.stderr
    assert f"input '{url}'" in r.stderr and "not an http(s) URL" in r.stderr, r.stderr
    assert "s3://" in r.stderr and "download the file" in r.stderr, r.stderr
    assert "No such file" not in r.stderr, r.stderr


def test_a_name_on_disk_in_another_unicode_form_says_so(sluice, tmp_path):
    """A manifest naming café.jpg (NFC, as most editors and Python write it)
    over files a macOS tarball unpacked (NFD: e + U+0301) failed "cannot
    open: No such file or directory", the two names alike in any message.
    The failure says the other form exists; a name missing in both forms
    says no more than before."""
    import unicodedata
    disk = tmp_path / "photos"
    disk.mkdir()
    nfc, nfd = unicodedata.normalize("NFC", "café.jpg"), unicodedata.normalize("NFD", "café.jpg")
    assert nfc.encode() != nfd.encode()
    (disk / nfd).write_bytes(JPEG)
    (disk / unicodedata.normalize("NFC", "señal.jpg")).write_bytes(JPEG)
    manifest = tmp_path / "list.jsonl"
    manifest.write_text("".join(json.dumps({"id": i, "image": str(disk / name)}, ensure_ascii=False) + "\n"
                                for i, name in (("a", nfc), ("b", unicodedata.normalize("NFD", "señal.jpg")),
                                                ("c", nfd), ("d", "gone.jpg"), ("e", "naïve.jpg"))),
                        encoding="utf-8")
    out = tmp_path / "out"
    r = dry(sluice, manifest, out, "--id-column", "id")
    assert r.returncode == 3, r.stderr[-2000:]
    rows = rows_by_id(out)
    for i, form in (("a", "NFD, as macOS writes names"), ("b", "NFC")):
        err = rows[i]["error"] or ""
        assert "No such file or directory" in err, (i, err)
        assert f"the same name in another Unicode form ({form}) exists" in err, (i, err)
    assert rows["c"]["error"] is None
    for i in ("d", "e"):
        err = rows[i]["error"] or ""
        assert "No such file or directory" in err and "Unicode form" not in err, (i, err)


def test_a_prompt_field_over_image_files_is_refused_at_the_start(sluice, tmp_path):
    """`--prompt 'List them as {…}.'` over a folder of images: each row
    failed "no column '…' for {…} in the prompt" (a run of failed rows, the
    model loaded for nothing), since image files give rows no column to
    fill. It is refused before anything runs, saying how to write braces;
    written as '{{…}}' it runs, and a manifest holding the column fills it."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(JPEG)
    for inputs in ([folder], [folder / "a.jpg"]):
        r = dry(sluice, inputs, tmp_path / "out-refused", "--prompt", "List them as {…}.")
        assert r.returncode == 2, r.stderr[-2000:]
        assert "a prompt holds {…}, a field filled from each row's columns, but the inputs are " \
               "image files, whose rows have none: write '{{' and '}}'" in r.stderr, r.stderr
        assert not (tmp_path / "out-refused").exists() or \
            not list((tmp_path / "out-refused").glob("part-*"))
    r = dry(sluice, folder, tmp_path / "out-braces", "--prompt", "List them as {{…}}.")
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": str(folder / "a.jpg"), "…": "words"},
                                   ensure_ascii=False) + "\n", encoding="utf-8")
    r = dry(sluice, manifest, tmp_path / "out-manifest", "--prompt", "List them as {…}.")
    assert r.returncode == 0, r.stderr[-2000:]


def test_a_bad_image_held_in_the_input_is_named_where_it_is(sluice, tmp_path):
    """Image bytes held by the input (a tar member, a Parquet or Arrow cell)
    that do not decode: the error named only the row id ('s.tar/a: not an
    image'), not which member or column held them; with two images to a
    sample, not which of them. Now the message names the member, or the
    file, row and column, where a user would look."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    junk = b"\x00junk, no image format" * 10
    (tmp_path / "s.tar").write_bytes(wds_shard([
        ("a.jpg", junk), ("a.txt", b"caption"), ("b.png", JPEG),
        ("c.left.jpg", JPEG), ("c.right.jpg", junk)]))
    table = pa.table({"id": ["p0", "p1"], "image": pa.array([JPEG, junk], pa.binary()),
                      "side": pa.array([junk, JPEG], pa.binary())})
    pq.write_table(table, tmp_path / "t.parquet")
    with pa.OSFile(str(tmp_path / "t.arrow"), "wb") as f:
        with pa.ipc.new_file(f, table.schema) as w:
            w.write_table(table)

    def errors(src, *flags):
        out = tmp_path / f"out-{src}-{len(flags)}"
        r = dry(sluice, tmp_path / src, out, *flags)
        assert r.returncode == 3, r.stderr[-3000:]
        return {k: v["error"] for k, v in rows_by_id(out).items() if v["error"]}

    tar = str(tmp_path / "s.tar")
    failed = errors("s.tar")
    assert set(failed) == {"s.tar/a"}, failed  # c's first image is its image, and decodes
    assert f"{tar}: member 'a.jpg': not an image" in failed["s.tar/a"], failed
    failed = errors("s.tar", "--image-column", "left.jpg,right.jpg")
    assert f"image 2 of 2: {tar}: member 'c.right.jpg': not an image" in failed["s.tar/c"], failed
    for name in ("t.parquet", "t.arrow"):
        path = str(tmp_path / name)
        failed = errors(name, "--id-column", "id")
        assert set(failed) == {"p1"}, failed
        assert f"{path} row 1, column 'image': not an image" in failed["p1"], failed
        if name == "t.parquet":  # several image columns: which one
            failed = errors(name, "--id-column", "id", "--image-column", "image,side")
            assert set(failed) == {"p0", "p1"}, failed
            assert f"image 2 of 2: {path} row 0, column 'side': not an image" in failed["p0"]
            assert f"image 1 of 2: {path} row 1, column 'image': not an image" in failed["p1"]


def failure_classes(out):
    summary = json.loads((out / "_summary.json").read_text())
    return {(f["stage"], f["class"]): f["rows"] for f in summary["failures"]}


def test_read_failures_are_classed_by_their_cause(sluice, tmp_path):
    """A null image cell in Parquet failed at read as `io` (a read error of
    the machine or the store, docs/metrics.md), as did every failure at
    read but a batch line's; user24 counted its bad data as disk trouble.
    Each is now classed by its cause: the row's own data (a null or empty
    image, a refused or unknown URL scheme, a malformed data: URL) is
    `invalid`, a value past --max-item-bytes `too_large`, a path that
    names nothing `not_found` (as decode classes one), and a file that
    cannot be read stays `io`. --retry-failed answers them again, as any
    failed row."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    limit = "1M"  # the least --max-item-bytes takes; 1 MiB or 1 MB, the rows are far from it
    big = JPEG + b"\0" * (2 << 20)
    assert len(JPEG) < 1_000_000
    cell = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "id": ["null", "neither", "gone", "big", "good"],
        "image": pa.array([None, {"bytes": None, "path": None},
                           {"bytes": None, "path": str(tmp_path / "gone.jpg")},
                           {"bytes": big, "path": None}, {"bytes": JPEG, "path": None}], cell)})
    pq.write_table(table, tmp_path / "cells.parquet")
    out = tmp_path / "out-parquet"
    r = dry(sluice, tmp_path / "cells.parquet", out, "--id-column", "id", "--max-item-bytes",
            limit)
    assert r.returncode == 3, r.stderr
    assert {k: v["error_stage"] for k, v in rows_by_id(out).items()} == \
        {"null": "read", "neither": "read", "gone": "read", "big": "read", "good": None}
    assert failure_classes(out) == {("read", "invalid"): 2, ("read", "not_found"): 1,
                                    ("read", "too_large"): 1}

    data_url = "data:image/jpeg;base64,"
    lines = {"empty": "", "file": "file:///etc/hostname", "ftp": "ftp://example.com/a.jpg",
             "null": None, "bad-data": data_url + "@@@",
             "big-data": data_url + base64.b64encode(big).decode(),
             "good": data_url + base64.b64encode(JPEG).decode(),
             "long": "x" * (5 << 20)}  # past --max-line-bytes 4M: its id is FILE:LINE
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": k, "image": v}) + "\n" for k, v in lines.items()))
    out = tmp_path / "out-jsonl"
    flags = ("--id-column", "id", "--max-item-bytes", limit, "--max-line-bytes", "4M")
    r = dry(sluice, manifest, out, *flags)
    assert r.returncode == 3, r.stderr
    rows = rows_by_id(out)
    assert set(rows) == set(lines) - {"long"} | {f"m.jsonl:{len(lines)}"}, sorted(rows)
    assert [k for k, v in rows.items() if v["error_stage"] != "read"] == ["good"], rows
    assert failure_classes(out) == {("read", "invalid"): 5, ("read", "too_large"): 2}
    r = dry(sluice, manifest, out, *flags, "--retry-failed")
    assert r.returncode == 3, r.stderr
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows"]["retried"] == 7, summary["rows"]
    assert failure_classes(out) == {("read", "invalid"): 5, ("read", "too_large"): 2}
