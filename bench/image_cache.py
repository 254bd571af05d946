"""What the image cache and the prefix cache save (make bench-image-cache;
docs/engine.md "The image cache", "The prefix cache").

    .venv/bin/python bench/image_cache.py [--model-dir models/smolvlm-256m-e512-bf16] [--questions 4] [--runs 3]

A VQA-shaped dataset: three sample images, each asked QUESTIONS different
questions, a row each (VQAv2 asks ~5 of an image, GQA more), rows in
dataset order (an image's questions together); and the same questions as
one --turns all conversation a row. Each run RUNS times with both caches
(the defaults), with --prefix-cache off (the image cache alone) and with
both off, 8 tokens an answer. Figures: rows/s (questions/s for the
conversations), medians of RUNS; the ratios image cache / neither and
both / image cache; vision encodes and prompt positions computed, from
each run's _metrics.prom. The last line is JSON."""
import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
BUILD = pathlib.Path(os.environ.get("BUILD", REPO / "build"))
IMAGES = sorted(p for p in (REPO / "samples").iterdir() if p.suffix == ".jpg")[:3]


def run(model_dir, manifest, out, *extra):
    t = time.monotonic()
    r = subprocess.run([str(BUILD / "sluice"), "caption", str(manifest), "-o", str(out),
                        "--overwrite", "--model", str(model_dir / "model.gguf"), "--mmproj",
                        str(model_dir / "mmproj.gguf"), "--max-tokens", "8", "--max-image-edge", "512", "--metrics-addr",
                        "off", "--show", "0", "--progress-every", "3600", *extra],
                       capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        sys.exit(f"sluice failed ({r.returncode}): {r.stderr[-2000:]}")
    took = time.monotonic() - t
    prom = (out / "_metrics.prom").read_text()
    m = re.search(r'^sluice_engine_step_seconds_count\{[^}]*phase="encode"[^}]*\} (\S+)$', prom, re.M)
    # Prompt positions computed: the rows' own less what was not computed.
    fed = 0
    for part in out.glob("*.jsonl"):
        for line in part.read_text().splitlines():
            row = json.loads(line)
            fed += (row.get("prompt_tokens") or 0) - (row.get("cached_tokens") or 0)
    return took, int(float(m.group(1))) if m else 0, fed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default=str(REPO / "models" / "smolvlm-256m-e512-bf16"))
    ap.add_argument("--questions", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    model_dir = pathlib.Path(a.model_dir)
    qs = [f"Question {k + 1}: what is in this picture, and where?" for k in range(a.questions)]
    with tempfile.TemporaryDirectory(prefix="sluice-bench-image-cache-") as tmp:
        tmp = pathlib.Path(tmp)
        rows = tmp / "rows.jsonl"
        rows.write_text("".join(json.dumps({"id": f"{p.stem}-{k}", "image": str(p), "prompt": q}) + "\n"
                                for p in IMAGES for k, q in enumerate(qs)))
        convs = tmp / "convs.jsonl"
        turns = []
        for k, q in enumerate(qs):
            turns += [{"from": "human", "value": q}, {"from": "gpt", "value": "x"}]
        convs.write_text("".join(json.dumps({"id": p.stem, "image": str(p), "conversations": turns}) + "\n"
                                 for p in IMAGES))
        ways = {"rows": (rows, []), "turns_all": (convs, ["--prompt-column", "conversations",
                                                          "--turns", "all"])}
        caches = {"both": [], "image_only": ["--prefix-cache", "off"],
                  "neither": ["--prefix-cache", "off", "--image-cache", "0"]}
        figures = {}
        for name, (manifest, extra) in ways.items():
            n = len(IMAGES) * a.questions
            for cache, flags in caches.items():
                times, encodes, fed = [], 0, 0
                for i in range(a.runs):
                    took, encodes, fed = run(model_dir, manifest, tmp / "out", *flags, *extra)
                    times.append(took)
                key = f"{name}_{cache}"
                figures[key + "_per_s"] = round(n / statistics.median(times), 3)
                figures[key + "_encodes"] = encodes
                figures[key + "_prompt_computed"] = fed
                print(f"{key}: {figures[key + '_per_s']} questions/s (median of {a.runs}), "
                      f"{encodes} encodes, {fed} prompt positions computed", flush=True)
            per_s = {c: figures[f"{name}_{c}_per_s"] for c in caches}
            figures[f"{name}_image_cache_ratio"] = round(per_s["image_only"] / per_s["neither"], 3)
            figures[f"{name}_prefix_cache_ratio"] = round(per_s["both"] / per_s["image_only"], 3)
            print(f"{name}: image cache / neither = {figures[f'{name}_image_cache_ratio']}x, "
                  f"both / image cache = {figures[f'{name}_prefix_cache_ratio']}x", flush=True)
        figures.update(images=len(IMAGES), questions=a.questions, model=model_dir.name)
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
