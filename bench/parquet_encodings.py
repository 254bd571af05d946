"""Parquet read throughput by encoding and codec: sluice's reader
(build/bench/parquet --read) against pyarrow (single-threaded) on files
pyarrow writes from one table, so both read identical bytes.

    .venv/bin/python bench/parquet_encodings.py [--rows 1000000] [--runs 3]

The table: ROWS x [string of 50-70 letters with a shared prefix, int64 ids
counting up, int32 small values, double]. Variants: PLAIN + snappy (the
baseline), dictionary + snappy, the format 2.x encodings (DELTA_BYTE_ARRAY,
DELTA_BINARY_PACKED, BYTE_STREAM_SPLIT) + snappy, and PLAIN under zstd, lz4
(LZ4_RAW) and brotli. MB/s = the table's raw value bytes / seconds. Medians
of RUNS interleaved runs; ratios: sluice / pyarrow on each file, and each
variant's sluice time over the baseline's. The last line is JSON."""
import argparse
import json
import os
import pathlib
import random
import statistics
import subprocess
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq

REPO = pathlib.Path(__file__).resolve().parents[1]
ENC_2X = {"text": "DELTA_BYTE_ARRAY", "id": "DELTA_BINARY_PACKED", "small": "DELTA_BINARY_PACKED",
          "score": "BYTE_STREAM_SPLIT"}
VARIANTS = [
    ("plain-snappy", dict(compression="snappy", use_dictionary=False)),
    ("dict-snappy", dict(compression="snappy", use_dictionary=True)),
    ("2x-snappy", dict(compression="snappy", use_dictionary=False, column_encoding=ENC_2X)),
    ("plain-zstd", dict(compression="zstd", use_dictionary=False)),
    ("plain-lz4", dict(compression="lz4", use_dictionary=False)),
    ("plain-brotli", dict(compression="brotli", use_dictionary=False)),
]


def make_table(rows: int) -> pa.Table:
    rng = random.Random(7)
    letters = "abcdefghijklmnopqrstuvwxyz"
    text = [f"images/shard-{k // 10000:05d}/" + "".join(rng.choices(letters, k=rng.randint(30, 50)))
            for k in range(rows)]
    return pa.table({
        "text": pa.array(text, pa.string()),
        "id": pa.array(range(10**12, 10**12 + rows), pa.int64()),
        "small": pa.array([rng.randint(0, 1000) for _ in range(rows)], pa.int32()),
        "score": pa.array([rng.random() for _ in range(rows)], pa.float64()),
    })


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bin", default=str(REPO / "build" / "bench" / "parquet"))
    args = ap.parse_args()
    table = make_table(args.rows)
    data_mb = (sum(len(s) for s in table["text"].to_pylist()) + 20 * args.rows) / 1e6
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    results = {}
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        files = {}
        for name, kw in VARIANTS:
            files[name] = pathlib.Path(tmp) / f"{name}.parquet"
            pq.write_table(table, files[name], row_group_size=256 * 1024, **kw)
        times = {name: ([], []) for name, _ in VARIANTS}
        pq.read_table(files["plain-snappy"], use_threads=False)  # warm-up: pyarrow's first read pays its setup
        for _ in range(args.runs):  # interleaved, so drift on a shared machine hits every variant alike
            for name, _ in VARIANTS:
                out = subprocess.run([args.bin, "--read", str(files[name])], check=True, capture_output=True,
                                     text=True).stdout
                got = json.loads(out.strip().splitlines()[-1])
                assert got["rows"] == args.rows, got
                times[name][0].append(got["read_s"])
                t0 = time.perf_counter()
                back = pq.read_table(files[name], use_threads=False)
                times[name][1].append(time.perf_counter() - t0)
                assert back.num_rows == args.rows
        base_s = statistics.median(times["plain-snappy"][0])
        for name, _ in VARIANTS:
            ours, theirs = statistics.median(times[name][0]), statistics.median(times[name][1])
            results[name] = {
                "file_mb": round(files[name].stat().st_size / 1e6, 1),
                "sluice_mb_s": round(data_mb / ours, 1),
                "pyarrow_mb_s": round(data_mb / theirs, 1),
                "sluice_over_pyarrow": round(theirs / ours, 2),
                "time_vs_plain_snappy": round(ours / base_s, 2),
            }
            print(f"{name:14s} file {results[name]['file_mb']:7.1f} MB  sluice {results[name]['sluice_mb_s']:7.1f} MB/s"
                  f"  pyarrow {results[name]['pyarrow_mb_s']:7.1f} MB/s  ratio {results[name]['sluice_over_pyarrow']:.2f}"
                  f"  time vs plain-snappy {results[name]['time_vs_plain_snappy']:.2f}")
    print(json.dumps({"rows": args.rows, "data_mb": round(data_mb, 1), "runs": args.runs, "variants": results}))


if __name__ == "__main__":
    main()
