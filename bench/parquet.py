"""Parquet write/read throughput: sluice (bench/parquet.c, built as
build/bench/parquet) against pyarrow on the same table.

    .venv/bin/python bench/parquet.py [--rows 1000000] [--codec snappy] [--bin build/bench/parquet]

The C program generates the table (ROWS x [string 50-70 chars, int64, double,
bool]), writes it with sluice and reads it back; pyarrow then loads that file
(so both sides see identical data) and times pq.write_table / pq.read_table
with the same codec, single-threaded (use_threads=False) like sluice. MB/s =
raw value bytes / seconds. Medians of 3 runs; the last line is JSON."""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import tempfile
import time

import pyarrow.parquet as pq

REPO = pathlib.Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--codec", default="snappy", choices=["none", "snappy", "zstd", "gzip"])
    ap.add_argument("--bin", default=str(REPO / "build" / "bench" / "parquet"))
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    # tmpfs when there is one, so neither side waits on a disk (sluice fsyncs on close).
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        ours = pathlib.Path(tmp) / "sluice.parquet"
        theirs = pathlib.Path(tmp) / "pyarrow.parquet"
        runs = []
        for _ in range(args.runs):
            out = subprocess.run([args.bin, str(ours), str(args.rows), args.codec], check=True,
                                 capture_output=True, text=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
        data_mb = runs[0]["data_bytes"] / 1e6
        table = pq.read_table(ours)
        assert table.num_rows == args.rows
        compression = None if args.codec == "none" else args.codec
        pw, pr = [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            pq.write_table(table, theirs, compression=compression, use_dictionary=False)
            pw.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            back = pq.read_table(theirs, use_threads=False)
            pr.append(time.perf_counter() - t0)
            assert back.num_rows == args.rows
        res = {
            "rows": args.rows,
            "codec": args.codec,
            "data_mb": round(data_mb, 1),
            "sluice_file_mb": round(ours.stat().st_size / 1e6, 1),
            "pyarrow_file_mb": round(theirs.stat().st_size / 1e6, 1),
            "sluice_write_mb_s": round(statistics.median(r["write_mb_s"] for r in runs), 1),
            "pyarrow_write_mb_s": round(data_mb / statistics.median(pw), 1),
            "sluice_read_mb_s": round(statistics.median(r["read_mb_s"] for r in runs), 1),
            "pyarrow_read_mb_s": round(data_mb / statistics.median(pr), 1),
        }
        res["write_ratio_sluice_over_pyarrow"] = round(res["sluice_write_mb_s"] / res["pyarrow_write_mb_s"], 2)
        res["read_ratio_sluice_over_pyarrow"] = round(res["sluice_read_mb_s"] / res["pyarrow_read_mb_s"], 2)
        print(json.dumps(res))


if __name__ == "__main__":
    main()
