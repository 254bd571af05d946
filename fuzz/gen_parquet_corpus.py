"""Writes the seed corpora of the `parquet` and `thrift` fuzz targets:
small Parquet files from sluice's own writer (tests/tools/parquet_tool) and
from pyarrow (several types, codecs none/snappy/gzip/zstd, dictionary and
plain, data pages v1 and v2, nulls, the Hugging Face image struct, list
columns; the DELTA_* and BYTE_STREAM_SPLIT encodings with lz4 and brotli;
decimals, INT96, FLOAT16, UUID and fixed-size binary), a few forged files (footers that lie about sizes,
an LZO chunk, BYTE_ARRAY decimals plain and dictionary-encoded, pages
whose headers name an encoding no decoder reads, v1 pages whose levels are
the deprecated BIT_PACKED or an unknown encoding), and for
`thrift` the footers (FileMetaData) and first page headers cut out of them.

    .venv/bin/python fuzz/gen_parquet_corpus.py build/tests/tools/parquet_tool
"""
import io
import json
import pathlib
import struct
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
from test_parquet import (byte_array_decimal_parquet, lying_parquet, page_header_fields,  # noqa: E402  (the e2e's)
                          page_headers, rewrite_levels_bit_packed)


def sluice_files(tool):
    rows = [{"s": None if k % 3 == 1 else f"r{k}", "i": k * 7 - 20, "d": None if k % 4 == 2 else k / 3,
             "b": None if k % 5 == 3 else k % 2 == 0, "x": None if k % 6 == 5 else "AAEC" * (k % 3)}
            for k in range(12)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    for codec in ["none", "snappy", "gzip", "zstd"]:
        out = HERE / "corpus" / "parquet" / f"sluice-{codec}.parquet"
        subprocess.run([tool, "write", out, "--schema", "s:string?,i:int64,d:double?,b:bool?,x:binary?",
                        "--codec", codec, "--row-group-bytes", "200", "--page-bytes", "64"],
                       input=text, text=True, check=True)
        yield out.name, out.read_bytes()


def arrow_files():
    n = 10
    img = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "i32": pa.array([None if k % 4 == 0 else k - 5 for k in range(n)], pa.int32()),
        "i64": pa.array([k * 1000 for k in range(n)], pa.int64()),
        "f32": pa.array([k / 3 for k in range(n)], pa.float32()),
        "f64": pa.array([None if k % 3 == 0 else k / 7 for k in range(n)], pa.float64()),
        "flag": pa.array([None if k % 5 == 0 else k % 2 == 0 for k in range(n)], pa.bool_()),
        "label": pa.array([["cat", "dog", None][k % 3] for k in range(n)], pa.string()),
        "image": pa.array([None if k % 7 == 3 else {"bytes": None if k % 4 == 1 else bytes([k, 1, 2]) * k,
                                                    "path": f"{k}.jpg"} for k in range(n)], img),
    })
    for codec in ["none", "snappy", "gzip", "zstd"]:
        for dictionary in [True, False]:
            for version in ["1.0", "2.0"]:
                if codec in ("gzip", "zstd") and not dictionary:
                    continue  # enough variety; keeps the corpus small
                buf = io.BytesIO()
                pq.write_table(table, buf, compression=codec, use_dictionary=dictionary,
                               data_page_version=version, row_group_size=6, data_page_size=64)
                yield f"arrow-{codec}-{'dict' if dictionary else 'plain'}-v{version[0]}.parquet", buf.getvalue()


def v2_files():
    """The encodings of format 2.x writers, on flat and list columns, with
    the codecs sluice only reads (lz4_raw, brotli) and none."""
    n = 40
    table = pa.table({
        "i32": pa.array([None if k % 4 == 0 else k * 7919 - 2**20 for k in range(n)], pa.int32()),
        "i64": pa.array([(2**63 - 1 - k) if k % 2 else (-2**63 + k) for k in range(n)], pa.int64()),
        "f32": pa.array([k / 3 for k in range(n)], pa.float32()),
        "f64": pa.array([None if k % 3 == 0 else k / 7 for k in range(n)], pa.float64()),
        "label": pa.array([None if k % 5 == 2 else f"label-{k % 6}-" + "x" * (k % 9) for k in range(n)]),
        "blob": pa.array([bytes([k % 256]) * (k % 11) for k in range(n)], pa.binary()),
        "tags": pa.array([None if k % 7 == 1 else [f"t{k % 3}{j}" for j in range(k % 4)] for k in range(n)],
                         pa.list_(pa.string())),
    })
    enc = {"i32": "DELTA_BINARY_PACKED", "i64": "DELTA_BINARY_PACKED", "f32": "BYTE_STREAM_SPLIT",
           "f64": "BYTE_STREAM_SPLIT", "label": "DELTA_BYTE_ARRAY", "blob": "DELTA_LENGTH_BYTE_ARRAY",
           "tags.list.element": "DELTA_BYTE_ARRAY"}
    for codec, version in [("none", "1.0"), ("lz4", "2.0"), ("brotli", "1.0")]:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression=codec, use_dictionary=False, column_encoding=enc,
                       data_page_version=version, row_group_size=25, data_page_size=128)
        yield f"v2enc-{codec}-v{version[0]}.parquet", buf.getvalue()


def typed_files():
    """The types sluice converts: DECIMAL (fixed bytes and integers), INT96,
    FLOAT16, UUID, fixed-size binary."""
    import datetime
    import decimal
    n = 20
    table = pa.table({
        "price": pa.array([None if k % 4 == 0 else decimal.Decimal(k * 123 - 900).scaleb(-2) for k in range(n)],
                          pa.decimal128(9, 2)),
        "wide": pa.array([decimal.Decimal(-k * 10**30 - 7).scaleb(-5) for k in range(n)], pa.decimal128(38, 5)),
        "ts": pa.array([None if k % 3 == 0 else datetime.datetime(1969, 12, 31) + datetime.timedelta(hours=k)
                        for k in range(n)], pa.timestamp("ns")),
        "half": pa.array([k / 4 for k in range(n)], pa.float32()).cast(pa.float16()),
        "id": pa.array([bytes(range(k, k + 16)) for k in range(n)], pa.uuid()),
        "digest": pa.array([bytes([k, 1, 2]) for k in range(n)], pa.binary(3)),
    })
    for dictionary, as_int in [(False, False), (True, True)]:
        buf = io.BytesIO()
        pq.write_table(table, buf, use_dictionary=dictionary, store_decimal_as_integer=as_int,
                       use_deprecated_int96_timestamps=True, data_page_size=128, row_group_size=12)
        yield f"typed-{'dict' if dictionary else 'plain'}.parquet", buf.getvalue()


def list_files():
    """List columns (lists of strings, of ints, of image structs; null and
    empty lists, null elements), from pyarrow and from the hand writer of
    tests/unit/gen_parquet_lists.py (rows across pages, 2-level forms)."""
    sys.path.insert(0, str(HERE.parent / "tests" / "unit"))
    import gen_parquet_lists as gl
    tags, nums, images, flat = gl.arrow_rows(12)
    table = pa.table({"tags": pa.array(tags, pa.list_(pa.string())), "nums": pa.array(nums, pa.list_(pa.int64())),
                      "images": pa.array(images, pa.list_(gl.IMG)), "n": pa.array(flat, pa.int32())})
    for codec, dictionary, version in [("none", True, "1.0"), ("snappy", False, "2.0"), ("zstd", True, "2.0")]:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression=codec, use_dictionary=dictionary, data_page_version=version,
                       row_group_size=5, data_page_size=64)
        yield f"list-{codec}-{'dict' if dictionary else 'plain'}-v{version[0]}.parquet", buf.getvalue()
    tmp = HERE / "corpus" / "parquet" / "tmp-lists"
    tmp.mkdir(parents=True, exist_ok=True)
    gl.hand_files(tmp, {})
    gl.nested_files(tmp, {})
    for f in sorted(tmp.glob("*.parquet")):
        if f.name.startswith(("hand-", "nested-")):
            yield "list-" + f.name, f.read_bytes()
        f.unlink()
    tmp.rmdir()


def forged_files():
    yield "lie-rows.parquet", lying_parquet(100_000_000, 100_000_000, 4, b"\0\0\0\0")
    yield "lie-page.parquet", lying_parquet(1, 1, 200 << 20, bytes([0x28, 0xB5, 0x2F, 0xFD, 0x20, 0x04, 0x21,
                                                                     0x00, 0x00]) + b"abcd", codec=6)
    body = b"\x02\x00\x00\x00\x02\x02" + b"\x02\x00\x00\x00ab"
    yield "lzo.parquet", lying_parquet(1, 1, len(body), body, codec=3)
    import decimal
    values = [decimal.Decimal("123.45"), None, decimal.Decimal("-99999999999999999999.99"), decimal.Decimal("0")]
    for dictionary in (False, True):
        yield (f"byte-array-decimal-{'dict' if dictionary else 'plain'}.parquet",
               byte_array_decimal_parquet(["a.png", "b.png", "c.png", "d.png"], values, 2, dictionary))


def undecodable_files():
    """pyarrow files (flat, list and struct columns, v1 with dictionaries and
    v2 plain) whose second page of each column chunk in the first row group
    (the dictionary page, where there is one) names encoding 63."""
    n = 16
    table = pa.table({"i": pa.array([None if k % 5 == 2 else k for k in range(n)], pa.int32()),
                      "s": [f"s{k % 3}" for k in range(n)],
                      "tags": pa.array([None if k % 6 == 1 else [f"t{j}" for j in range(k % 3)] for k in range(n)],
                                       pa.list_(pa.string())),
                      "st": pa.array([{"a": k, "b": None if k % 4 == 0 else f"b{k}"} for k in range(n)])})
    for dictionary, version in [(True, "1.0"), (False, "2.0")]:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="none", use_dictionary=dictionary, data_page_version=version,
                       row_group_size=8, data_page_size=16, write_batch_size=2)
        data = bytearray(buf.getvalue())
        md = pq.ParquetFile(io.BytesIO(bytes(data))).metadata
        for k in range(md.num_columns):
            pages = page_headers(data, md.row_group(0).column(k))
            at = pages[0 if md.row_group(0).column(k).has_dictionary_page else min(1, len(pages) - 1)][1]
            if data[at] < 0x80:  # a one-byte varint: 63 takes its place
                data[at] = 63 << 1
        yield f"page-encoding-63-v{version[0]}.parquet", bytes(data)


def bit_packed_files():
    """A v1 file (flat, struct and list columns) whose levels are rewritten
    as BIT_PACKED, as old parquet-mr writers left them."""
    n = 24
    table = pa.table({"i": pa.array([None if k % 3 == 1 else k for k in range(n)], pa.int32()),
                      "st": pa.array([None if k % 5 == 2 else {"b": None if k % 2 else f"b{k}"} for k in range(n)]),
                      "tags": pa.array([None if k % 4 == 3 else [None if e == 1 else f"t{e}" for e in range(k % 3)]
                                        for k in range(n)], pa.list_(pa.string()))})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="none", use_dictionary=False, data_page_version="1.0",
                   row_group_size=12, data_page_size=32, write_batch_size=4, write_statistics=False)
    data = bytearray(buf.getvalue())
    md = pq.ParquetFile(io.BytesIO(bytes(data))).metadata
    levels = {"i": (0, 1), "st.b": (0, 2), "tags.list.element": (1, 3)}
    for g in range(md.num_row_groups):
        for k in range(md.num_columns):
            col = md.row_group(g).column(k)
            rewrite_levels_bit_packed(data, col, *levels[col.path_in_schema])
    yield "bit-packed-levels-v1.parquet", bytes(data)


def unknown_level_files():
    """A v1 file (flat, struct and list columns) whose second data page of
    each column chunk names level encoding 63 (definition levels; a list's
    repetition levels too): a flat column's page is lost, a list's corrupt."""
    n = 24
    table = pa.table({"i": pa.array([None if k % 3 == 1 else k for k in range(n)], pa.int32()),
                      "st": pa.array([None if k % 5 == 2 else {"b": None if k % 2 else f"b{k}"} for k in range(n)]),
                      "tags": pa.array([None if k % 4 == 3 else [f"t{e}" for e in range(k % 3)] for k in range(n)],
                                       pa.list_(pa.string()))})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="none", use_dictionary=False, data_page_version="1.0",
                   row_group_size=12, data_page_size=32, write_batch_size=4, write_statistics=False)
    data = bytearray(buf.getvalue())
    md = pq.ParquetFile(io.BytesIO(bytes(data))).metadata
    for g in range(md.num_row_groups):
        for k in range(md.num_columns):
            pages = [p for p in page_header_fields(bytes(data), md.row_group(g).column(k)) if p["type"] == 0]
            page = pages[min(1, len(pages) - 1)]
            data[page["def"]] = 63 << 1
            if md.row_group(g).column(k).path_in_schema.startswith("tags") and g == 1:
                data[page["rep"]] = 63 << 1
    yield "level-encoding-63-v1.parquet", bytes(data)


def main():
    tool = sys.argv[1]
    pdir, tdir = HERE / "corpus" / "parquet", HERE / "corpus" / "thrift"
    pdir.mkdir(parents=True, exist_ok=True)
    tdir.mkdir(parents=True, exist_ok=True)
    files = (list(sluice_files(tool)) + list(arrow_files()) + list(v2_files()) + list(typed_files()) +
             list(list_files()) + list(forged_files()) + list(undecodable_files()) + list(bit_packed_files()) +
             list(unknown_level_files()))
    for name, data in files:
        (pdir / name).write_bytes(data)
        footer_len = struct.unpack("<I", data[-8:-4])[0]
        (tdir / (name.replace(".parquet", "") + ".footer")).write_bytes(data[-8 - footer_len:-8])
        (tdir / (name.replace(".parquet", "") + ".page")).write_bytes(data[4:4 + 200])
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
