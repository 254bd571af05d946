"""What the Parquet writer's dictionary encoding buys on a table shaped like a
caption run's output: sluice's writer (tests/tools/parquet_tool write) with
dictionaries (the default) against --no-dictionary on the same rows, then
pyarrow and DuckDB reading each file.

    .venv/bin/python bench/parquet_dictionary.py [--rows 200000] [--runs 5] [--codec zstd]

The table, as `sluice caption --format parquet` writes it: id and path (unique,
a shared folder prefix), caption (unique text), finish_reason (stop or
length), prompt and generated token counts, width and height (a few sizes),
model (one name), seed, a label column passed through (20 classes) and error
(null but for 1 row in 500). Figures are medians of RUNS interleaved runs;
write time includes parquet_tool parsing the JSONL (the same for both).
Ratios are without / with. The last line is JSON."""
import argparse
import json
import pathlib
import random
import statistics
import subprocess
import tempfile
import time

import duckdb
import pyarrow.parquet as pq

REPO = pathlib.Path(__file__).resolve().parents[1]
SCHEMA = ("id:string,path:string,caption:string?,finish_reason:string?,prompt_tokens:int64?,"
          "generated_tokens:int64?,width:int64?,height:int64?,model:string,seed:int64,label:string?,error:string?")
WORDS = ("a the cat dog sits on under near red blue green small large old wooden table sofa street tree "
         "window light dark person holding looking at photo of with in").split()


def make_rows(n: int) -> str:
    rng = random.Random(7)
    sizes = [(512, 512), (512, 384), (384, 512), (448, 448)]
    out = []
    for k in range(n):
        w, h = sizes[k % len(sizes)]
        failed = k % 500 == 77
        out.append(json.dumps({
            "id": f"shard-{k // 10000:04d}/{k:08d}.jpg",
            "path": f"/data/laion/shard-{k // 10000:04d}/{k:08d}.jpg",
            "caption": None if failed else " ".join(rng.choices(WORDS, k=rng.randint(12, 40))) + ".",
            "finish_reason": None if failed else ("length" if k % 9 == 0 else "stop"),
            "prompt_tokens": None if failed else 80 + k % 3,
            "generated_tokens": None if failed else rng.randint(12, 64),
            "width": w, "height": h, "model": "SmolVLM 256M Instruct",
            "seed": rng.getrandbits(63), "label": f"class_{k % 20:02d}",
            "error": f"{k:08d}.jpg: not a JPEG (corrupt header)" if failed else None,
        }))
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--codec", default="zstd")
    ap.add_argument("--tool", default=str(REPO / "build" / "tests" / "tools" / "parquet_tool"))
    args = ap.parse_args()
    rows = make_rows(args.rows)
    figures = {v: {"write_s": [], "pyarrow_s": [], "duckdb_s": [], "bytes": 0} for v in ("dict", "plain")}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            for variant in ("dict", "plain") if run % 2 == 0 else ("plain", "dict"):
                out = pathlib.Path(tmp) / f"{variant}.parquet"
                cmd = [args.tool, "write", str(out), "--schema", SCHEMA, "--codec", args.codec]
                if variant == "plain":
                    cmd.append("--no-dictionary")
                t0 = time.perf_counter()
                subprocess.run(cmd, input=rows, text=True, check=True)
                f = figures[variant]
                f["write_s"].append(time.perf_counter() - t0)
                f["bytes"] = out.stat().st_size
                t0 = time.perf_counter()
                table = pq.read_table(out, use_threads=False)
                f["pyarrow_s"].append(time.perf_counter() - t0)
                assert table.num_rows == args.rows
                con = duckdb.connect()
                con.execute("set threads to 1")
                t0 = time.perf_counter()
                n = con.execute(f"select count(*), count(distinct label), sum(generated_tokens), "
                                f"max(length(caption)) from '{out}' where finish_reason = 'stop'").fetchone()
                f["duckdb_s"].append(time.perf_counter() - t0)
                f.setdefault("duckdb_answer", n)
    assert figures["dict"]["duckdb_answer"] == figures["plain"]["duckdb_answer"]
    result = {"rows": args.rows, "codec": args.codec, "runs": args.runs}
    for variant, f in figures.items():
        for key in ("write_s", "pyarrow_s", "duckdb_s"):
            result[f"{variant}_{key}"] = round(statistics.median(f[key]), 4)
        result[f"{variant}_bytes"] = f["bytes"]
        print(f"{variant:6s} {f['bytes'] / 1e6:8.2f} MB  write {result[f'{variant}_write_s']:.3f} s  "
              f"pyarrow {result[f'{variant}_pyarrow_s']:.3f} s  duckdb {result[f'{variant}_duckdb_s']:.3f} s")
    for key in ("bytes", "write_s", "pyarrow_s", "duckdb_s"):
        result[f"ratio_{key}"] = round(result[f"plain_{key}"] / result[f"dict_{key}"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
