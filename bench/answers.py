"""What n answers in one request save over n one-answer requests (make
bench-answers; docs/batch.md `body.n`). Not a test.

    .venv/bin/python bench/answers.py [--model-dir models/qwen3b-like-2l] [--requests 4] [--n 8] [--runs 3]

The same REQUESTS text-only prompts (~510 tokens: "Summarize:" and a
paragraph) answered N times each (8 tokens, temperature 0.8) by `sluice
batch` on the same model with --parallel N, two ways:

  n_in_one:   REQUESTS lines with "n": N: the llama engine computes each
              prompt once and copies all but its last token into the other
              answers' sequences
  one_each:   REQUESTS * N lines of one answer each (the same prompts, a
              seed each): every answer computes its prompt

RUNS times each way, interleaved; seconds from each run's _summary.json (the
model load not counted), medians. The last line is JSON with
n_in_one_vs_one_each (the speed-up)."""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
BUILD = pathlib.Path(os.environ.get("BUILD", REPO / "build"))
WORDS = ("the river carried silt from the hills to the plain where farmers "
         "planted barley and the market town grew around a stone bridge ").split()


def prompt(i):
    words = [WORDS[(i * 7 + k) % len(WORDS)] for k in range(220)]
    return f"Summarize in one line, text {i}: " + " ".join(words)


def body(i, n, seed):
    return {"messages": [{"role": "user", "content": prompt(i)}], "max_tokens": 8, "n": n,
            "temperature": 0.8, "seed": seed}


def run(model_dir, requests, out, parallel):
    r = subprocess.run([str(BUILD / "sluice"), "batch", str(requests), "-o", str(out),
                        "--model", str(model_dir / "model.gguf"), "--ignore-model",
                        "--parallel", str(parallel), "--metrics-addr", "off"],
                       capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        sys.exit(f"sluice batch failed ({r.returncode}): {r.stderr[-2000:]}")
    summary = json.loads((out / "_summary.json").read_text())
    return summary


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default=str(REPO / "models" / "qwen3b-like-2l"))
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    model_dir = pathlib.Path(a.model_dir)
    with tempfile.TemporaryDirectory(prefix="sluice-bench-answers-") as tmp:
        tmp = pathlib.Path(tmp)
        ways = {"n_in_one": tmp / "n_in_one.jsonl", "one_each": tmp / "one_each.jsonl"}
        with ways["n_in_one"].open("w") as f:
            for i in range(a.requests):
                f.write(json.dumps({"custom_id": f"r{i}", "method": "POST",
                                    "url": "/v1/chat/completions",
                                    "body": body(i, a.n, 1000 + i)}) + "\n")
        with ways["one_each"].open("w") as f:
            for i in range(a.requests):
                for k in range(a.n):
                    f.write(json.dumps({"custom_id": f"r{i}-{k}", "method": "POST",
                                        "url": "/v1/chat/completions",
                                        "body": body(i, 1, 1000 + i * a.n + k)}) + "\n")
        seconds = {w: [] for w in ways}
        for r in range(a.runs):
            for w, requests in ways.items():  # interleaved: drift hits each way alike
                s = run(model_dir, requests, tmp / f"{w}-{r}", a.n)
                seconds[w].append(s["seconds"]["run"])
        result = {"model": model_dir.name, "requests": a.requests, "n": a.n, "runs": a.runs}
        for w in ways:
            result[f"{w}_s"] = round(statistics.median(seconds[w]), 2)
            print(f"{w:>9}: {result[f'{w}_s']:7.2f} s (median of {a.runs}: "
                  f"{[round(t, 2) for t in seconds[w]]})")
        result["n_in_one_vs_one_each"] = round(result["one_each_s"] / result["n_in_one_s"], 2)
        print(f"n answers in one request: {result['n_in_one_vs_one_each']:.2f}x as fast as "
              f"{a.n} one-answer requests")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
