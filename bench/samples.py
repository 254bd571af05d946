"""What one request with "n" saves over a request per answer on the openai
engine (make bench-samples; docs/openai.md "Several answers per image").
Not a test.

    .venv/bin/python bench/samples.py [--copies 2] [--samples 4] [--runs 3]

The sample images (--copies times, a pixel changed per copy) captioned with
--samples N (--temperature 0.8, --max-tokens 16) through llama-server
(--parallel 2N, --cache-ram 0: no prompt restored from an earlier run) on the
tiny model (its 2N slots full either way), two ways:

  n_in_one:  one request per image with "n": N (the default): the server
             encodes the image and computes the prompt once and copies it
             into the other answers' slots
  split:     --split-samples: N requests per image, each with its answer's
             seed: every answer encodes the image and computes its prompt

RUNS times each way, interleaved; images/s from sluice's last line, medians
(and the median of the per-pair ratios). The last line is JSON with
n_in_one_vs_split (the speed-up)."""
import argparse
import json
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from http_bench import BUILD, llama_server, unique_copies  # noqa: E402


def images_per_s(out, samples):
    m = re.search(r"(\d+) rows, one per image and answer: (\d+) answered, (\d+) failed in "
                  r"([\d.]+) s", out)
    if not m or m.group(3) != "0":
        sys.exit(f"the caption run failed:\n{out[-3000:]}")
    return int(m.group(1)) / samples / float(m.group(4))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sluice-bench-samples-") as d:
        tmp = pathlib.Path(d)
        images = tmp / "images"
        n_images = unique_copies(images, a.copies, "jpeg")
        server, port = llama_server(tmp, 2 * a.samples, a.threads)
        try:
            def run(*extra):
                # As many answers in flight either way (the server's slots):
                # two requests of N, or 2N requests of one.
                per_request = 1 if extra else a.samples
                r = subprocess.run(
                    [str(BUILD / "sluice"), "caption", str(images), "-o", str(tmp / "out"),
                     "--engine", "openai", "--endpoint", f"http://127.0.0.1:{port}",
                     "--samples", str(a.samples), "--temperature", "0.8",
                     "--max-tokens", str(a.max_tokens), "--max-in-flight",
                     str(2 * a.samples // per_request), "--metrics-addr", "off", "--show", "0",
                     "--overwrite", *extra],
                    capture_output=True, text=True, timeout=1800)
                return images_per_s(r.stdout + r.stderr, a.samples)

            pairs = []
            for _ in range(a.runs):
                one, split = run(), run("--split-samples")
                pairs.append((one, split))
                print(f"  run: n in one {one:.3f} images/s, split {split:.3f} "
                      f"({one / split:.3f}x)", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    one = statistics.median(p[0] for p in pairs)
    split = statistics.median(p[1] for p in pairs)
    ratio = statistics.median(o / s for o, s in pairs)
    print(f"--samples {a.samples}, {n_images} images, llama-server --parallel {2 * a.samples}: "
          f"one request with n {one:.3f} images/s, a request per answer {split:.3f}: "
          f"{ratio:.3f}x", flush=True)
    print(json.dumps({"images": n_images, "samples": a.samples, "max_tokens": a.max_tokens,
                      "images_per_s_n_in_one": round(one, 3),
                      "images_per_s_split": round(split, 3),
                      "n_in_one_vs_split": round(ratio, 3), "runs": a.runs}))


if __name__ == "__main__":
    main()
