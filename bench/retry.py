"""What --retry-failed costs at the start of a run (make bench-retry;
docs/output.md "Retrying failed rows").

    .venv/bin/python bench/retry.py [--rows 100000] [--failed 0.01] [--shard-rows 10000] [--runs 3]

Makes an output without a model: `sluice caption --dry-run` over a manifest
of ROWS lines naming one small JPEG (samples/variants/chelsea_thumb48.jpg),
a FAILED fraction of them naming files that do not exist (so each part
holds some failed rows), in parts of SHARD_ROWS. Then, RUNS times on a copy
of that output: `--retry-failed` (its `retrying:` line gives the time taken
to read the parts back and rewrite them, and the rows kept) against a
plain resume of the same output (nothing to do: the baseline of reading
the manifest and skipping done rows), per format (JSONL, Parquet).
Figures: medians of RUNS; the rewrite rate in rows/s; the whole retry run
against the plain resume. The last line is JSON."""
import argparse
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
BUILD = pathlib.Path(os.environ.get("BUILD", REPO / "build"))
IMAGE = REPO / "samples" / "variants" / "chelsea_thumb48.jpg"


def caption(manifest, out, fmt, shard_rows, *extra):
    t = time.monotonic()
    r = subprocess.run([str(BUILD / "sluice"), "caption", str(manifest), "-o", str(out),
                        "--dry-run", "--format", fmt, "--shard-rows", str(shard_rows),
                        "--metrics-addr", "off", "--show", "0", "--progress-every", "3600",
                        *extra], capture_output=True, text=True, timeout=3600)
    if r.returncode not in (0, 3):
        sys.exit(f"sluice failed ({r.returncode}): {r.stderr[-2000:]}")
    return time.monotonic() - t, r.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100000)
    ap.add_argument("--failed", type=float, default=0.01)
    ap.add_argument("--shard-rows", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    every = max(1, round(1 / a.failed))
    result = {"rows": a.rows, "failed_fraction": a.failed, "shard_rows": a.shard_rows,
              "runs": a.runs}
    with tempfile.TemporaryDirectory(prefix="sluice-bench-retry-") as tmp:
        tmp = pathlib.Path(tmp)
        manifest = tmp / "m.jsonl"
        with open(manifest, "w") as f:
            for i in range(a.rows):
                path = str(tmp / f"missing-{i}.jpg") if i % every == every - 1 else str(IMAGE)
                f.write(json.dumps({"image": path, "n": i}) + "\n")
        for fmt in ("jsonl", "parquet"):
            first = tmp / f"first-{fmt}"
            t_first, _ = caption(manifest, first, fmt, a.shard_rows)
            retry_s, kept, taken, plain_s, whole_s = [], None, None, [], []
            for _ in range(a.runs):
                for kind in ("plain", "retry"):
                    out = tmp / f"{kind}-{fmt}"
                    shutil.rmtree(out, ignore_errors=True)
                    shutil.copytree(first, out)
                    extra = ("--retry-failed",) if kind == "retry" else ()
                    t, err = caption(manifest, out, fmt, a.shard_rows, *extra)
                    if kind == "plain":
                        plain_s.append(t)
                        continue
                    whole_s.append(t)
                    m = re.search(r"retrying: (\d+) failed rows? taken out of (\d+) parts? to be "
                                  r"captioned again \((\d+) other rows? rewritten, ([0-9.]+) s\)",
                                  err)
                    if not m:
                        sys.exit(f"no retrying line: {err[-2000:]}")
                    taken, kept = int(m[1]), int(m[3])
                    retry_s.append(float(m[4]))
            med = statistics.median(retry_s)
            figures = {
                "first_run_s": round(t_first, 2), "failed_rows_taken_out": taken,
                "rows_kept_and_rewritten": kept, "retry_phase_s": round(med, 3),
                "rewrite_rows_per_s": round(kept / med) if med > 0 else None,
                "plain_resume_s": round(statistics.median(plain_s), 2),
                "retry_run_s": round(statistics.median(whole_s), 2),
                "retry_phase_vs_first_run": round(med / t_first, 3)}
            result[fmt] = figures
            print(f"{fmt:8s} first run {t_first:6.2f} s | --retry-failed: {taken} failed rows "
                  f"out, {kept} rows rewritten in {med:.3f} s ({figures['rewrite_rows_per_s']} "
                  f"rows/s; {figures['retry_phase_vs_first_run']:.1%} of the first run) | "
                  f"whole retry run {figures['retry_run_s']} s vs plain resume "
                  f"{figures['plain_resume_s']} s (medians of {a.runs})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
