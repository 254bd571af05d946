"""Writes the seeds of fuzz/corpus/arrow/: small Arrow IPC files from
pyarrow (the stream format Hugging Face datasets writes, the file format,
several record batches, nulls, the image struct, a list of images, nested
lists, structs and maps; dictionary-encoded columns; string and binary
views, inline and in several data buffers; lz4 and zstd-compressed
batches), and with polars when it is installed, what its write_ipc and
write_ipc_stream write (views, categoricals of views, the file format with
its schema message unprefixed).

    .venv/bin/python fuzz/gen_arrow_corpus.py
"""
import io
from decimal import Decimal
import pathlib

import pyarrow as pa
import pyarrow.ipc as ipc

HERE = pathlib.Path(__file__).resolve().parent
IMG = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415478"
                    "9c63f8cfc0000003010100c9fe92ef0000000049454e44ae426082")


def tables():
    yield "hf", pa.table({
        "image": pa.array([{"bytes": PNG, "path": "a.png"}, None, {"bytes": None, "path": "b.png"}], IMG),
        "label": pa.array([1, None, 3], pa.int64()),
        "text": pa.array(["x", "y", None]),
        "conversations": pa.array([[{"from": "human", "value": "Q?"}], None, []],
                                  pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
    })
    yield "nested", pa.table({
        "images": pa.array([[{"bytes": PNG, "path": None}] * 2, [], None], pa.list_(IMG)),
        "ll": pa.array([[[1.5, None]], None, [[], [2.0]]], pa.list_(pa.list_(pa.float32()))),
        "m": pa.array([[("k", 1)], None, []], pa.map_(pa.string(), pa.int32())),
        "s": pa.array([{"a": 1, "b": "x"}, None, {"a": None, "b": None}],
                      pa.struct([("a", pa.int16()), ("b", pa.large_string())])),
        "t": pa.array([0, None, 2], pa.timestamp("ms")),
    })
    yield "dict", pa.table({
        "path": pa.array(["a.png", "b.png", None]),
        "kind": pa.array(["x", None, "x"]).dictionary_encode(),
        "tags": pa.array([["p", "q"], None, []]).cast(pa.list_(pa.dictionary(pa.int8(), pa.string()))),
    })
    long = [f"{'z' * 20}{i}" for i in range(3)]
    yield "views", pa.table({
        "image": pa.array(["a.png", "b-a-longer-name-than-twelve.png", None], pa.string_view()),
        "text": pa.array([long[0], None, "short"], pa.string_view()),
        "raw": pa.array([PNG, b"x", None], pa.binary_view()),
        "kinds": pa.array([[long[1], "k"], None, [long[2]]], pa.list_(pa.string_view())),
    })
    yield "paths", pa.table({"url": pa.array(["https://example.com/a.jpg", "b.jpg", None]),
                             "u": pa.array([1, 2, 2 ** 63], pa.uint64()), "f": pa.array([True, None, False])})
    yield "decimals", pa.table({
        "path": pa.array(["a.png", None, "b.png"]),
        "d128": pa.array([Decimal("19.99"), None, Decimal("-0.10")], pa.decimal128(10, 2)),
        "d256": pa.array([Decimal("1" * 30 + ".5"), Decimal("-1.5"), None], pa.decimal256(40, 1)),
        "d32": pa.array([Decimal("0.1"), None, Decimal("-9.9")], pa.decimal32(5, 1)),
        "d64": pa.array([Decimal("123456789012"), Decimal("-1"), None], pa.decimal64(12, 0)),
        "ld": pa.array([[Decimal("1.5")], None, []], pa.list_(pa.decimal128(4, 1))),
    })

    # nanoarrow's IPC reader refuses these; the file is failed naming the column
    yield "unreadable", pa.table({
        "path": pa.array(["a.png", None, "b.png"]),
        "run": pa.RunEndEncodedArray.from_arrays(pa.array([2, 3], pa.int32()), pa.array(["x", "y"])),
        "s": pa.StructArray.from_arrays([pa.array([[1], [], None], pa.list_view(pa.int32()))], ["lv"]),
    })


def main():
    out = HERE / "corpus" / "arrow"
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables():
        buf = io.BytesIO()
        with ipc.new_stream(buf, table.schema) as w:
            w.write_table(table, max_chunksize=2)
        (out / f"{name}-stream.arrow").write_bytes(buf.getvalue())
        buf = io.BytesIO()
        with ipc.new_file(buf, table.schema) as w:
            w.write_table(table)
        (out / f"{name}-file.arrow").write_bytes(buf.getvalue())
        for codec in ("lz4", "zstd"):
            buf = io.BytesIO()
            with ipc.new_stream(buf, table.schema, options=ipc.IpcWriteOptions(compression=codec)) as w:
                w.write_table(table, max_chunksize=2)
            (out / f"{name}-{codec}.arrow").write_bytes(buf.getvalue())
        print(name, len(buf.getvalue()))
    try:
        import polars as pl
    except ImportError:
        return
    df = pl.DataFrame({"image": ["a.png", "b-a-longer-name-than-twelve.png"], "text": ["t" * 30, None],
                       "kind": pl.Series(["x", "y"], dtype=pl.Categorical),
                       "tags": [["p" * 13, "q"], []], "s": [{"k": "v" * 20}, {"k": None}]})
    df.write_ipc(out / "polars-file.arrow")
    df.write_ipc(out / "polars-zstd.arrow", compression="zstd")
    df.write_ipc_stream(out / "polars-stream.arrow")


if __name__ == "__main__":
    main()
