#!/usr/bin/env python3
"""The Python half of bench/gpu/run.sh (standard library only, Pillow for `images`).

    gpucheck.py images SRC_DIR DST_DIR N        N JPEG variants of SRC_DIR's photos
    gpucheck.py scrape PID URL PROM SERIES      scrape URL every 2 s while PID lives
    gpucheck.py result --name ... (see below)   one run's figures as a JSON line
    gpucheck.py final OUT_DIR META_JSON         the check's one JSON object

`scrape` keeps the latest /metrics text in PROM (replaced whole each time, so
a run killed mid-way still leaves its last scrape) and appends one line per
scrape to SERIES: unix time, rows done, generated tokens, mean GPU utilisation
(sluice's NVML gauge, absent on CPU).
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.request
from pathlib import Path

LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_prom(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text format -> (name, labels, value); comments and bad lines skipped."""
    out = []
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        if "{" in line:
            name, rest = line.split("{", 1)
            labels_txt, _, value_txt = rest.rpartition("}")
            labels = dict(LABEL.findall(labels_txt))
        else:
            parts = line.split()
            if len(parts) < 2:
                continue
            name, value_txt, labels = parts[0], parts[1], {}
        try:
            out.append((name.strip(), labels, float(value_txt.split()[0])))
        except (ValueError, IndexError):
            continue
    return out


def prom_sum(samples, name: str) -> float | None:
    vals = [v for n, _, v in samples if n == name]
    return sum(vals) if vals else None


def prom_mean(samples, name: str) -> float | None:
    vals = [v for n, _, v in samples if n == name]
    return sum(vals) / len(vals) if vals else None


# ---------------------------------------------------------------- images

def cmd_images(src: str, dst: str, n: str) -> int:
    from multiprocessing import Pool

    srcs = sorted(Path(src).glob("*.jpg"))
    if not srcs:
        sys.exit(f"gpucheck images: no .jpg in {src}")
    Path(dst).mkdir(parents=True, exist_ok=True)
    jobs = [(str(srcs[i % len(srcs)]), f"{dst}/img{i:05d}.jpg", i) for i in range(int(n))]
    with Pool(min(16, os.cpu_count() or 1)) as p:
        p.map(_variant, jobs)
    return 0


SIZES = [(500, 375), (375, 500), (640, 480), (500, 333), (448, 448), (800, 600)]


def _variant(job):
    import random
    from PIL import Image
    src, dst, i = job
    rng = random.Random(i)
    im = Image.open(src).convert("RGB")
    w, h = im.size
    f = rng.uniform(0.6, 1.0)
    cw, ch = int(w * f), int(h * f)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    im.crop((x, y, x + cw, y + ch)).resize(rng.choice(SIZES), Image.BICUBIC).save(dst, quality=90)


# ---------------------------------------------------------------- scrape

def cmd_scrape(pid: str, url: str, prom: str, series: str) -> int:
    pid_i = int(pid)
    with open(series, "a") as ser:
        while True:
            try:
                os.kill(pid_i, 0)
            except ProcessLookupError:
                return 0
            except PermissionError:
                pass
            try:
                text = urllib.request.urlopen(url, timeout=3).read().decode()
            except Exception:
                text = None
            if text:
                tmp = prom + ".tmp"
                with open(tmp, "w") as f:
                    f.write(text)
                os.replace(tmp, prom)
                s = parse_prom(text)
                util = prom_mean(s, "sluice_gpu_utilization_ratio")
                ser.write(f"{time.time():.2f}\t{prom_sum(s, 'sluice_rows_done_total') or 0:.0f}\t"
                          f"{prom_sum(s, 'vllm:generation_tokens_total') or 0:.0f}\t"
                          f"{'' if util is None else f'{util:.3f}'}\n")
                ser.flush()
            time.sleep(2)


# ---------------------------------------------------------------- result

def step_phases(samples) -> dict | None:
    """sluice_engine_step_seconds{phase} (a histogram): mean ms per observation
    and the observation count of each phase, summed over replicas."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for n, labels, v in samples:
        phase = labels.get("phase")
        if phase is None:
            continue
        if n == "sluice_engine_step_seconds_sum":
            sums[phase] = sums.get(phase, 0.0) + v
        elif n == "sluice_engine_step_seconds_count":
            counts[phase] = counts.get(phase, 0.0) + v
    if not sums:
        return None
    return {p: {"ms_mean": round(1000 * sums[p] / counts[p], 3) if counts.get(p) else None,
                "count": int(counts.get(p, 0)), "seconds": round(sums[p], 3)} for p in sorted(sums)}


def smi_busy(path: str, t0: float, start: float, end: float):
    """Mean utilization.gpu (%) of nvidia-smi samples inside [start, end]
    (unix times), all samples if none falls inside; the peak memory (MiB)."""
    import datetime as dt
    rows = []
    try:
        with open(path) as f:
            for line in f:
                p = [x.strip() for x in line.split(",")]
                if len(p) < 4:
                    continue
                try:
                    ts = dt.datetime.strptime(p[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
                    rows.append((ts, float(p[2]), float(p[3])))
                except ValueError:
                    continue
    except OSError:
        return None, None, 0
    if not rows:
        return None, None, 0
    inside = [r for r in rows if start <= r[0] <= end] or rows
    return (round(sum(r[1] for r in inside) / len(inside), 1), max(r[2] for r in rows), len(inside))


def cmd_result(argv: list[str]) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="gpucheck.py result")
    for a in ("name", "model", "rc", "t0", "t1", "run-out", "out", "stopped", "args"):
        ap.add_argument("--" + a, required=True)
    a = ap.parse_args(argv)
    t0, t1 = float(a.t0), float(a.t1)
    r: dict = {"run": a.name, "model": a.model, "args": a.args, "rc": int(a.rc),
               "stopped": a.stopped, "wall_s": round(t1 - t0, 1)}
    load = 0.0
    try:
        s = json.load(open(os.path.join(a.run_out, "_summary.json")))
        load = float(s["seconds"].get("model_load") or 0.0)
        run_s = float(s["seconds"]["run"])
        r.update(status=s.get("status"), rows_ok=s["rows"]["ok"], rows_failed=s["rows"]["failed"],
                 run_s=round(run_s, 2), load_s=round(load, 2),
                 images_per_s=round(s["throughput"]["rows_per_s"], 3),
                 generated_tok_per_s=round(s["throughput"]["generated_tokens_per_s"], 1),
                 generated_tokens=(s.get("tokens") or {}).get("generated"),
                 prompt_tokens=(s.get("tokens") or {}).get("prompt"))
        end = t0 + load + run_s
    except Exception as e:       # killed before it wrote _summary.json: the last scrape
        r["summary_error"] = repr(e)
        end = t1
        try:
            ser = [l.split("\t") for l in open(os.path.join(a.out, f"series-{a.name}.tsv"))]
            first, last = float(ser[0][0]), float(ser[-1][0])
            if last > first:
                r.update(rows_ok=int(float(ser[-1][1])), from_metrics=True,
                         images_per_s=round(float(ser[-1][1]) / (last - first), 3),
                         generated_tok_per_s=round(float(ser[-1][2]) / (last - first), 1))
        except Exception:
            pass
    busy, mem, n = smi_busy(os.path.join(a.out, f"smi-{a.name}.csv"), t0, t0 + load + 1.0, end)
    r["gpu_busy_pct"] = busy
    if mem is not None:
        r["gpu_mem_max_mib"] = mem
        r["gpu_samples"] = n
    try:
        utils = [float(l.rstrip("\n").split("\t")[3])
                 for l in open(os.path.join(a.out, f"series-{a.name}.tsv"))
                 if l.rstrip("\n").split("\t")[3:] != [""]]
        r["gpu_busy_sluice_pct"] = round(100 * sum(utils) / len(utils), 1) if utils else None
    except Exception:
        r["gpu_busy_sluice_pct"] = None
    final = os.path.join(a.run_out, "_metrics.prom")
    last = os.path.join(a.out, f"metrics-{a.name}.prom")
    for path in (final, last):
        try:
            samples = parse_prom(open(path).read())
            r["step_phases"] = step_phases(samples)
            r["graphs_reused"] = prom_sum(samples, "sluice_engine_graphs_reused_total")
            r["metrics_from"] = "final" if path == final else "last scrape"
            break
        except OSError:
            continue
    print(json.dumps(r), flush=True)
    return 0


# ---------------------------------------------------------------- final

# the baseline's model family (qwen3b-like: the idefics3 stand-in of runs
# before 2026-12-04's Qwen2.5-VL layout)
RATIO_MODELS = ("qwen25vl-3b", "qwen25vl-3b-2l", "qwen3b-like", "qwen3b-like-2l")


def cmd_final(out: str, meta_json: str) -> int:
    meta = json.loads(meta_json)
    runs, skipped = [], []
    try:
        for line in open(os.path.join(out, "results.jsonl")):
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            (skipped if "skipped" in r else runs).append(r)
    except OSError:
        pass
    base = None
    try:
        base = json.loads(open(os.path.join(out, "baseline.json")).read().strip().splitlines()[-1])
    except Exception as e:
        base = {"skipped": f"no baseline result ({e.__class__.__name__})"}
    ratios = {}
    bi, bt = (base or {}).get("images_per_s"), (base or {}).get("generated_tokens_per_s")
    for r in runs:
        if r.get("model") in RATIO_MODELS and r.get("images_per_s") is not None and bi:
            ratios[r["run"]] = {"images_per_s": round(r["images_per_s"] / bi, 2),
                                "generated_tok_per_s": round(r["generated_tok_per_s"] / bt, 2) if bt else None}
    keep = ("run", "model", "args", "rc", "stopped", "rows_ok", "rows_failed", "images_per_s",
            "generated_tok_per_s", "gpu_busy_pct", "gpu_busy_sluice_pct", "gpu_mem_max_mib",
            "run_s", "load_s", "from_metrics", "step_phases", "graphs_reused")
    doc = dict(meta)
    doc.update(runs=[{k: r[k] for k in keep if k in r} for r in runs], skipped=skipped,
               baseline=base, ratios=ratios)
    line = json.dumps(doc, separators=(",", ":"))
    with open(os.path.join(out, "final.json"), "w") as f:
        f.write(line + "\n")
    print(line, flush=True)
    return 0


def main() -> int:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "images" and len(args) == 3:
        return cmd_images(*args)
    if cmd == "scrape" and len(args) == 4:
        return cmd_scrape(*args)
    if cmd == "result":
        return cmd_result(args)
    if cmd == "final" and len(args) == 2:
        return cmd_final(*args)
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main())
