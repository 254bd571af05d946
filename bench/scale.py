"""Peak memory of the whole program at N and 10N rows, per input format and
per side path (docs/executor.md "The whole program at 10x the rows").

    .venv/bin/python bench/scale.py [--rows 20000] [--factor 10] [--only NAME,...]

Each case runs the real CLI twice, over ROWS and ROWS x FACTOR rows, and
reports the run's peak RSS (its own rusage, from wait4), wall time per row
and the sizes of what it wrote. Without a model: `--dry-run` over inputs
that all name one 908-byte JPEG (samples/variants/chelsea_thumb48.jpg), so
every row is read, decoded and written; or rows naming files that do not
exist, which fail at read and reach the writer, the errors file and the
ledger without decoding. `engine-missing` loads the tiny model (models/tiny)
and fails every row before it: the engine stage in place, nothing for it.
A bounded program shows the same peak at both sizes (what grows is a few
MB of SQLite page cache and allocator slack, not per row). The last line
is JSON."""
import argparse
import csv
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
BUILD = pathlib.Path(os.environ.get("BUILD", REPO / "build"))
IMAGE = REPO / "samples" / "variants" / "chelsea_thumb48.jpg"
TINY = REPO / "models" / "tiny"
QUIET = ["--metrics-addr", "off", "--show", "0", "--progress-every", "3600"]


# Peak RSS is read by a small parent of its own: a child's ru_maxrss counts
# the pages it shared with its parent before exec, so a child of this
# process, grown by pyarrow and its inputs, would report this one's size.
PROBE = ("import os, resource, subprocess, sys, time\n"
         "t = time.monotonic()\n"
         "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
         "sys.stderr.buffer.write(r.stderr)\n"
         "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
         " time.monotonic() - t)\n")


def run(args, timeout=3600):
    """The sluice command's exit status, peak RSS (MB), seconds, stderr."""
    r = subprocess.run([sys.executable, "-c", PROBE, str(BUILD / "sluice"), *args],
                       capture_output=True, text=True, timeout=timeout)
    rc, kb, secs = r.stdout.split()
    return int(rc), int(kb) / 1024, float(secs), r.stderr


def size_of(d):
    """Bytes of the parts, the ledger and the rest of an output folder."""
    parts = ledger = rest = 0
    for f in pathlib.Path(d).rglob("*"):
        if not f.is_file():
            continue
        n = f.stat().st_size
        if f.name.startswith("part-"):
            parts += n
        elif f.name.startswith("_sluice_ledger"):
            ledger += n
        else:
            rest += n
    return {"parts_mb": round(parts / 1e6, 2), "ledger_mb": round(ledger / 1e6, 2),
            "other_mb": round(rest / 1e6, 2)}


# --- inputs ------------------------------------------------------------------------------

def jsonl(tmp, n, image):
    f = tmp / f"m{n}.jsonl"
    with open(f, "w") as out:
        for i in range(n):
            out.write(json.dumps({"image": image(i), "n": i}) + "\n")
    return [str(f)]


def csv_manifest(tmp, n, image):
    f = tmp / f"m{n}.csv"
    with open(f, "w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["image", "n"])
        for i in range(n):
            w.writerow([image(i), i])
    return [str(f)]


def image_tables(n, per):
    """The rows as pyarrow tables of PER rows: a Hugging Face image struct
    holding the JPEG's bytes, and a number."""
    import pyarrow as pa
    data = IMAGE.read_bytes()
    typ = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("image", typ), ("n", pa.int64())])
    tables = (pa.table({"image": pa.array([{"bytes": data, "path": f"{i}.jpg"}
                                           for i in range(lo, min(n, lo + per))], typ),
                        "n": pa.array(range(lo, min(n, lo + per)), pa.int64())})
              for lo in range(0, n, per))
    return schema, tables


def parquet(tmp, n, _image):
    import pyarrow.parquet as pq
    f = tmp / f"t{n}.parquet"
    schema, tables = image_tables(n, 10000)
    with pq.ParquetWriter(f, schema) as w:
        for t in tables:
            w.write_table(t)
    return [str(f)]


def arrow(tmp, n, _image):
    import pyarrow as pa
    f = tmp / f"t{n}.arrow"
    schema, tables = image_tables(n, 1000)
    with pa.OSFile(str(f), "wb") as sink, pa.ipc.new_stream(sink, schema) as w:
        for t in tables:
            w.write_table(t)
    return [str(f)]


def wds(tmp, n, _image):
    data = IMAGE.read_bytes()
    f = tmp / f"s{n}.tar"
    with tarfile.open(f, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(n):
            for name, body in ((f"{i:09d}.jpg", data), (f"{i:09d}.json", b'{"n": %d}' % i)):
                info = tarfile.TarInfo(name)
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
    return [str(f)]


def folder(tmp, n, _image):
    """One flat folder of N symlinks to the JPEG (followed; a hard link
    has too few links to spare): the listing is N names."""
    d = tmp / f"d{n}"
    d.mkdir()
    for i in range(n):
        os.symlink(IMAGE, d / f"{i:09d}.jpg")
    return [str(d)]


def good(_i):
    return str(IMAGE)


def missing(tmp):
    return lambda i: str(tmp / "nowhere" / f"{i}.jpg")


# --- cases ---------------------------------------------------------------------------------
MODEL = ["--model", str(TINY / "model.gguf"), "--mmproj", str(TINY / "mmproj.gguf"), "-n", "1"]
# name: (input maker, image of row i (tmp -> function), flags, the second run's flags)
# The second run is by default the same command: a resume of a done run,
# every row skipped (the ledger read, the input read again).
CASES = {
    "jsonl-dry": (jsonl, lambda tmp: good, ["--dry-run"], None),
    "csv-dry": (csv_manifest, lambda tmp: good, ["--dry-run"], None),
    "parquet-dry": (parquet, None, ["--dry-run"], None),
    "arrow-dry": (arrow, None, ["--dry-run"], None),
    "wds-dry": (wds, None, ["--dry-run"], None),
    "folder-dry": (folder, None, ["--dry-run"], None),
    "out-parquet": (jsonl, lambda tmp: good, ["--dry-run", "--format", "parquet"], None),
    "out-webdataset": (jsonl, lambda tmp: good, ["--dry-run", "--format", "webdataset",
                                                  "--include-image-bytes"], None),
    "missing": (jsonl, missing, ["--dry-run"], None),
    "missing-errors-file": (jsonl, missing, ["--dry-run", "--errors-file", "ERRORS"], None),
    "retry-failed": (jsonl, missing, ["--dry-run"], ["--dry-run", "--retry-failed"]),
    "engine-missing": (jsonl, missing, MODEL, None),
    "engine": (jsonl, lambda tmp: good, MODEL, None),
}


def metric_series(out):
    """Lines of samples in the run's _metrics.prom: labels that grew with
    the rows or files would show here."""
    f = pathlib.Path(out) / "_metrics.prom"
    return sum(1 for line in f.read_text().splitlines() if line and not line.startswith("#"))


def one(name, tmp, n):
    make, image, extra, again = CASES[name]
    inputs = make(tmp, n, image(tmp) if image else None)
    out = tmp / f"out-{name}-{n}"
    errors = str(tmp / f"errors-{n}.jsonl")
    extra = [errors if a == "ERRORS" else a for a in extra]
    rc, rss, secs, err = run(["caption", *inputs, "-o", str(out), *QUIET, *extra])
    if rc not in (0, 3):
        sys.exit(f"{name} at {n} rows: exit {rc}: {err[-2000:]}")
    r = {"rows": n, "rc": rc, "peak_rss_mb": round(rss, 1), "s": round(secs, 2),
         "us_per_row": round(secs / n * 1e6, 1), **size_of(out),
         "stderr_bytes": len(err), "metric_series": metric_series(out)}
    rc2, rss2, secs2, err2 = run(["caption", *inputs, "-o", str(out), *QUIET,
                                  *(again if again is not None else extra)])
    if rc2 not in (0, 3):
        sys.exit(f"{name} at {n} rows, again: exit {rc2}: {err2[-2000:]}")
    r.update(again_s=round(secs2, 2), again_peak_rss_mb=round(rss2, 1))
    shutil.rmtree(out)
    for p in [*inputs, errors]:
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.remove(p)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--only", default="", help="comma-separated case names")
    a = ap.parse_args()
    names = [c for c in a.only.split(",") if c] or list(CASES)
    result = {}
    with tempfile.TemporaryDirectory(prefix="sluice-bench-scale-") as tmp:
        tmp = pathlib.Path(tmp)
        for name in names:
            small = one(name, tmp, a.rows)
            large = one(name, tmp, a.rows * a.factor)
            result[name] = {"small": small, "large": large,
                            "rss_ratio": round(large["peak_rss_mb"] / small["peak_rss_mb"], 2)}
            print(f"{name:22} {small['peak_rss_mb']:7.1f} MB at {a.rows} rows, "
                  f"{large['peak_rss_mb']:7.1f} MB at {a.rows * a.factor}; "
                  f"{small['us_per_row']:.0f}/{large['us_per_row']:.0f} us a row; "
                  f"again {small['again_s']}/{large['again_s']} s "
                  f"{small['again_peak_rss_mb']}/{large['again_peak_rss_mb']} MB; "
                  f"parts {small['parts_mb']}/{large['parts_mb']} MB, "
                  f"ledger {small['ledger_mb']}/{large['ledger_mb']} MB; "
                  f"series {small['metric_series']}/{large['metric_series']}; "
                  f"stderr {small['stderr_bytes']}/{large['stderr_bytes']} B", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
